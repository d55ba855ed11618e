"""The NeuroNet reconstruction targets (raw frames, log spectrum) and benchmarks/ssl_variants.py: its sample and
table logic on hand-made inputs (fast) and the whole benchmark at its tiny size (slow)."""

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from benchmarks import ssl_variants
from models.neuronet import build_neuronet, frame_targets, neuronet_config

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------- model option
@pytest.mark.parametrize("preset", ["tiny", "fast"])
@pytest.mark.parametrize("target, width", [("raw", 400), ("spectrum", 200)])
def test_fixed_targets_forward_backward(preset, target, width):
    torch.manual_seed(0)
    model = build_neuronet(neuronet_config(preset, reconstruction_target=target))
    assert model.autoencoder.decoder_pred.out_features == width  # 4-s frames at 100 Hz
    epochs = torch.randn(3, 3000)
    out = model(epochs)
    assert all(torch.isfinite(v) for v in out.values())
    out["loss"].backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.frame_backbone.parameters())
    _, tokens = model.encode(epochs)
    assert tokens.shape == (3, 27, model.embed_dim)


@pytest.mark.parametrize(
    "target, detach, reaches_backbone",
    [
        ("tokens", False, True),
        ("tokens", True, False),
        ("raw", False, False),
        ("spectrum", False, False),
        ("raw", True, False),
    ],
)
def test_gradient_through_the_target_only_for_attached_tokens(target, detach, reaches_backbone):
    """With the encoder cut from the frame tokens (patch embedding zeroed) and no contrastive term, the frame CNN
    can only get a gradient through the reconstruction target."""
    torch.manual_seed(0)
    model = build_neuronet(neuronet_config("tiny", reconstruction_target=target, detach_target=detach, alpha=0.0))
    with torch.no_grad():
        model.autoencoder.patch_embed.weight.zero_()
    model(torch.randn(4, 3000))["loss"].backward()
    grad = sum(float(p.grad.abs().sum()) for p in model.frame_backbone.parameters() if p.grad is not None)
    assert (grad > 0) == reaches_backbone


def test_frame_targets_values():
    t = torch.arange(400) / 100.0
    sine = lambda hz, amplitude: amplitude * torch.sin(2 * math.pi * hz * t)  # noqa: E731
    frames = torch.stack([sine(10, 1.0), sine(10, 3.0), sine(20, 1.0)])[None]  # (1, 3, 400) at 100 Hz
    frames.requires_grad_(True)
    raw, spectrum = frame_targets(frames, "raw"), frame_targets(frames, "spectrum")
    assert not raw.requires_grad and not spectrum.requires_grad
    assert torch.equal(raw, frames.detach()) and spectrum.shape == (1, 3, 200)
    at_10hz, at_20hz = spectrum[0, :, 10 * 4 - 1], spectrum[0, :, 20 * 4 - 1]  # bin k is (k + 1) x 0.25 Hz
    assert at_10hz[1] > at_10hz[0] > at_10hz[2] and at_20hz[2] > max(at_20hz[0], at_20hz[1])  # absolute power kept
    assert torch.allclose(spectrum.flatten(0, 1).mean(dim=0), torch.zeros(200), atol=1e-3)  # standardised per bin
    with pytest.raises(ValueError, match="raw' or 'spectrum"):
        frame_targets(frames, "tokens")


def test_published_config_unchanged_and_bad_target_rejected():
    config = neuronet_config("B")
    assert config.reconstruction_target == "tokens" and config.detach_target is False and config.mask_ratio == 0.8
    with pytest.raises(ValueError, match="reconstruction_target must be one of"):
        neuronet_config("tiny", reconstruction_target="pixels")


# ---------------------------------------------------------------------------------------- benchmark logic
class FakeDataset:
    """`sample_index` of two recordings; the second has a gap after epoch 14."""

    split = "train"

    def sample_index(self):
        epochs = np.concatenate([np.arange(30), np.r_[np.arange(15), np.arange(16, 40)]])
        return np.array(["a"] * 30 + ["b"] * 39, dtype=object), epochs


def test_chunk_sample_draws_whole_runs_of_consecutive_epochs():
    index = ssl_variants.chunk_sample(FakeDataset(), 10, seed=0)
    recordings, epochs = FakeDataset().sample_index()
    chunk = ssl_variants.CHUNK
    # a: chunks at rows 0 and 12 (24..29 is short); b: rows 30..41 hold epochs 0..11, rows 42..53 hold 12..14 and
    # 16..24 (a gap: not drawn), rows 54..65 hold epochs 25..36
    assert index.shape == (4, chunk) and index[:, 0].tolist() == [0, 12, 30, 54]
    for row in index:
        assert len(set(recordings[row])) == 1 and np.all(np.diff(epochs[row]) == 1)
    assert ssl_variants.chunk_sample(FakeDataset(), 2, seed=0).shape == (2, chunk)


def test_context_vectors_are_the_neighbours():
    chunk = ssl_variants.CHUNK
    vectors = np.arange(2 * chunk, dtype=float).reshape(2, chunk, 1)  # value = position
    context = ssl_variants.with_context(vectors)
    assert context.shape == (2 * (chunk - 2), 3)
    assert context[0].tolist() == [0, 1, 2] and context[-1].tolist() == [2 * chunk - 3, 2 * chunk - 2, 2 * chunk - 1]
    assert ssl_variants.inner(vectors)[:, 0].tolist() == context[:, 1].tolist()


def record(variant, preset, steps, kappa):
    return {
        "variant": variant,
        "preset": preset,
        "model_args": "(published)",
        "steps": steps,
        "pretrain_cpu_s": 10.0 * steps,
        "knn_kappa": kappa,
        "linear_kappa": kappa + 0.01,
        "hgb_kappa": kappa + 0.03,
        "knn_kappa_ctx": kappa + 0.05,
        "linear_kappa_ctx": kappa + 0.06,
        "hgb_kappa_ctx": kappa + 0.07,
        "linear_kappa_iqr": kappa + 0.02,
        "recon_loss": 0.01,
        "contrastive_loss": 2.0,
        "eval_cpu_s": 3.0,
    }


def test_table_rows_and_outputs(tmp_path):
    records = [
        record("tiny", "tiny", 300, 0.5),
        record("fast", "fast", 300, 0.6),
        record("fast", "fast", 100, 0.4),
        record("random-init", "tiny", 0, 0.3),
    ]
    references = [{"variant": "features", "model_args": "scaled", "hgb_kappa": 0.61, "hgb_kappa_ctx": 0.7}]
    rows = ssl_variants.variant_rows(records, references)
    assert [(r["variant"], r["steps"]) for r in rows[1:]] == [
        ("random-init", 0),
        ("fast", 100),
        ("fast", 300),
        ("tiny", 300),
    ]
    assert list(rows[0]) == list(ssl_variants.TABLE_COLUMNS) and math.isnan(rows[0]["knn_kappa"])
    assert rows[0]["preset"] == "" and math.isnan(rows[0]["steps"]) and rows[0]["hgb_kappa_ctx"] == 0.7

    ssl_variants.write_results(rows, tmp_path, "hand-made")
    table = pd.read_csv(tmp_path / "results.csv")
    assert list(table.columns) == list(ssl_variants.TABLE_COLUMNS) and len(table) == 5
    assert table.loc[3, "linear_kappa_ctx"] == pytest.approx(0.66)
    markdown = (tmp_path / "results.md").read_text()
    assert "| features |  | scaled | – | – | – | – | 0.610 | – | – | 0.700 | – | – | – |" in markdown
    assert (
        "| fast | fast | (published) | 300 | 3000 | 0.600 | 0.610 | 0.630 | 0.650 | 0.660 | 0.670 | 0.620 | "
        "0.010 | 2.000 |" in markdown
    )
    assert not list(tmp_path.glob(".*.tmp"))


def test_collect_reads_every_finished_evaluation(tmp_path):
    for name, steps in (("fast", 100), ("fast", 300), ("tiny", 100)):
        run = tmp_path / "runs" / name / f"steps{steps}"
        run.mkdir(parents=True)
        (run / "eval.json").write_text(json.dumps(record(name, name, steps, 0.5)))
    (tmp_path / "runs" / "tiny" / ".steps300.tmp").mkdir()  # an unfinished run: no eval.json
    assert sorted((r["variant"], r["steps"]) for r in ssl_variants.collect(tmp_path)) == [
        ("fast", 100),
        ("fast", 300),
        ("tiny", 100),
    ]


def test_another_training_seed_gets_its_own_rows():
    args = ssl_variants.build_parser().parse_args(["--seed", "11"])
    args.train_seed = 11
    assert ssl_variants.run_label(args, "fast") == "fast"
    args.train_seed = 12
    assert ssl_variants.run_label(args, "fast") == "fast+seed12"


def test_variant_list_rejects_unknown_names():
    assert ssl_variants.variant_list("fast, tiny") == ["fast", "tiny"]
    with pytest.raises(Exception, match="unknown variant"):
        ssl_variants.variant_list("fast,huge")


# ---------------------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_benchmark_end_to_end_tiny_and_resumes(tmp_path, capsys):
    out = tmp_path / "bench"
    argv = ["--out", str(out), "--size", "tiny", "--variants", "random-init,fast-spectrum"]
    assert ssl_variants.main(argv) == 0
    table = pd.read_csv(out / "results.csv")
    assert table["variant"].tolist()[-2:] == ["random-init", "fast-spectrum"]
    trained = table.iloc[-1]
    assert trained["steps"] == 3 and trained["pretrain_cpu_s"] > 0 and -1 <= trained["linear_kappa_ctx"] <= 1
    assert table["variant"].tolist()[:2] == ["features"] * 2 and np.isfinite(table.loc[0, "hgb_kappa_ctx"])
    cpu = out / "runs" / "fast-spectrum" / "steps3" / "cpu.json"
    stamp = cpu.stat().st_mtime_ns
    capsys.readouterr()
    assert ssl_variants.main(argv) == 0  # resumes: nothing is trained or evaluated again
    assert cpu.stat().st_mtime_ns == stamp and "train.py" not in capsys.readouterr().out
