"""The log-spectrum frame tokenizer and the `spectral` preset (models/frame_backbone.py, docs/models.md §3.1)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from benchmarks import ssl_variants
from models.frame_backbone import LogSpectrumFrameBackbone
from models.neuronet import PRESETS, build_neuronet, neuronet_config_for_rate
from models.synthsleepnet import PRESETS as FUSION_PRESETS
from models.synthsleepnet import build_synthsleepnet, synthsleepnet_config


def test_token_is_a_function_of_its_own_frame_only():
    torch.manual_seed(0)
    tokenizer = LogSpectrumFrameBackbone(400, 32).eval()
    frames = torch.randn(2, 5, 400)
    tokens = tokenizer(frames)
    assert tokens.shape == (2, 5, 32) and torch.isfinite(tokens).all()
    changed = frames.clone()
    changed[:, 3] = torch.randn(2, 400)
    after = tokenizer(changed)
    assert torch.equal(after[:, [0, 1, 2, 4]], tokens[:, [0, 1, 2, 4]]) and not torch.allclose(
        after[:, 3], tokens[:, 3]
    )


def test_absolute_power_and_its_spectrum_reach_the_token():
    """A per-bin norm over frames, never within one: a louder frame, or the same power at another frequency,
    gives another token (a LayerNorm over the bins would map a frame and its double to the same token)."""
    torch.manual_seed(0)
    tokenizer = LogSpectrumFrameBackbone(400, 16)
    tokenizer.train()(torch.randn(64, 4, 400))  # running statistics of the bins
    tokenizer.eval()
    t = torch.arange(400) / 100.0
    slow, fast_wave = torch.sin(2 * math.pi * 2.0 * t), torch.sin(2 * math.pi * 12.0 * t)
    frames = torch.stack([slow, 3 * slow, fast_wave]).unsqueeze(0)  # (1, 3, 400)
    tokens = tokenizer(frames)[0]
    assert not torch.allclose(tokens[0], tokens[1], atol=1e-3)  # amplitude kept
    assert not torch.allclose(tokens[0], tokens[2], atol=1e-3)  # frequency kept
    with pytest.raises(ValueError, match="400"):
        tokenizer(torch.randn(1, 3, 300))


@pytest.mark.parametrize("fs, samples, frames, bins", [(100.0, 3000, 27, 200), (10.0, 300, 12, 40)])
def test_spectral_preset_at_both_rates(fs, samples, frames, bins):
    assert "spectral" in PRESETS and "spectral" in FUSION_PRESETS
    torch.manual_seed(0)
    model = build_neuronet(neuronet_config_for_rate("spectral", fs))
    assert isinstance(model.frame_backbone, LogSpectrumFrameBackbone) and model.frame_backbone.n_bins == bins
    assert model.config.reconstruction_target == "spectrum" and model.n_frames == frames
    out = model(torch.randn(4, samples))
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and model.frame_backbone.head[0].weight.grad is not None
    pooled, tokens = model.eval().encode(torch.randn(3, samples))
    assert pooled.shape == (3, 64) and tokens.shape == (3, frames, 64)


def test_spectral_fusion_over_spectral_encoders():
    torch.manual_seed(0)
    encoders = {
        "eeg_c4": build_neuronet("spectral"),
        "airflow": build_neuronet(neuronet_config_for_rate("spectral", 10.0)),
    }
    fusion = build_synthsleepnet(synthsleepnet_config("spectral", channels=tuple(encoders)), encoders).eval()
    pooled, tokens = fusion.encode({"eeg_c4": torch.randn(2, 3000), "airflow": torch.randn(2, 300)})
    assert pooled.shape == (2, fusion.embed_dim) and tokens.shape[1] == 27 + 12


def test_untrained_variants_are_built_with_their_model_arguments(monkeypatch, tmp_path):
    """benchmarks/ssl_variants.py: a random-init row is the variant's own architecture, not its bare preset."""
    built = []
    real = ssl_variants.build_neuronet
    monkeypatch.setattr(ssl_variants, "build_neuronet", lambda config: built.append(config) or real(config))

    class Sample:
        def vectors(self, model):
            return {}

        def probe(self, vectors):
            return {probe: 0.5 for probe in ssl_variants.PROBES}

    run = tmp_path / "steps0"
    run.mkdir()
    record = ssl_variants.evaluate_run(Sample(), run, "random-init-logspec", 0, "random-init-logspec")
    assert built[0].frame_tokenizer == "log_spectrum" and record["steps"] == 0
    assert json.loads((run / "eval.json").read_text())["model_args"] == "frame_tokenizer=log_spectrum"
