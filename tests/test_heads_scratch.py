"""The supervised-from-scratch path: EpochEncoder mode "full" trains every weight and every BatchNorm,
with bias-corrected running statistics so eval-mode predictions are usable after a few steps; the probe
script's --init random defaults."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from downstream.linear_probing import train as linear_probing
from models.heads import EpochClassifier, EpochEncoder, MLPHead
from models.neuronet import build_neuronet, neuronet_config
from models.synthsleepnet import build_synthsleepnet, synthsleepnet_config
from utils.batchnorm import debias_batchnorm

# A NeuroNet smaller than the tiny preset (14 frames, narrow CNN), as in tests/test_downstream.py.
SMALL = dict(frame_step_s=2.0, stem_channels=4, backbone_channels=(4, 8, 8, 16), frame_token_dim=32, encoder_depth=1)
CHANNELS = ("eeg_c4", "eog_l")


def norms_of(module: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def random_classifier(seed: int = 0, debias: bool = True) -> EpochClassifier:
    """A randomly initialised SynthSleepNet over two channels + head, mode "full" (as --init random builds it)."""
    torch.manual_seed(seed)
    net = build_neuronet(neuronet_config("tiny", **SMALL))
    backbone = build_synthsleepnet(
        synthsleepnet_config("tiny", channels=CHANNELS, fusion_depth=1), {ch: net for ch in CHANNELS}
    )
    encoder = EpochEncoder(backbone, CHANNELS, "full")
    model = EpochClassifier(encoder, MLPHead(encoder.embed_dim, 5))
    if debias:  # as the training engine does; without: PyTorch's plain momentum, the behaviour before the fix
        debias_batchnorm(model)
    return model


def test_debias_batchnorm_averages_the_first_batches_then_uses_the_momentum():
    torch.manual_seed(0)
    norm = nn.BatchNorm1d(3)
    assert debias_batchnorm(nn.Sequential(norm)) == 1 and debias_batchnorm(norm) == 1  # twice: one hook
    assert len(norm._forward_pre_hooks) == 1
    batches = [torch.randn(16, 3) * 4.0 + 7.0 for _ in range(30)]  # (16, 3), mean 7, sd 4: far from (0, 1)
    norm.train()(batches[0])
    assert torch.allclose(norm.running_mean, batches[0].mean(0), atol=1e-5)  # no pull towards 0
    for batch in batches[1:5]:
        norm(batch)
    assert torch.allclose(norm.running_mean, torch.stack([b.mean(0) for b in batches[:5]]).mean(0), atol=1e-4)
    for batch in batches[5:]:
        norm(batch)
    assert norm.momentum == pytest.approx(0.1)  # after 10 batches: the usual exponential average
    with torch.no_grad():
        norm.eval()(batches[0])
    assert int(norm.num_batches_tracked) == 30  # eval mode updates nothing
    assert set(norm.state_dict()) == set(nn.BatchNorm1d(3).state_dict())  # checkpoints unchanged


def test_full_mode_trains_every_weight_and_every_batchnorm():
    model = random_classifier()
    assert all(p.requires_grad for p in model.parameters())
    norms = norms_of(model)
    assert len(norms) > 20 and all(len(m._forward_pre_hooks) == 1 for m in norms)
    assert debias_batchnorm(model) == len(norms) and all(len(m._forward_pre_hooks) == 1 for m in norms)  # idempotent
    model.train()
    assert all(m.training for m in norms)  # the ChannelEncoder's frozen-eval rule does not apply in "full"
    before = {id(m): m.running_var.clone() for m in norms}
    x = {ch: torch.randn(8, 3000) for ch in CHANNELS}
    labels = torch.randint(0, 5, (8,))
    nn.functional.cross_entropy(model(x), labels).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert all(not torch.equal(before[id(m)], m.running_var) for m in norms)  # every running statistic moved
    model.eval()
    assert not any(m.training for m in model.modules())
    frozen = EpochEncoder(build_neuronet(neuronet_config("tiny", **SMALL)), ["eeg_c4"], "frozen")
    running = [m.running_mean.clone() for m in norms_of(frozen)]
    debias_batchnorm(frozen)
    frozen.train()({"eeg_c4": torch.randn(4, 3000)})
    assert all(torch.equal(a, m.running_mean) for a, m in zip(running, norms_of(frozen)))  # frozen stays frozen


def eval_train_gap(model: EpochClassifier, steps: int) -> float:
    """Relative difference of eval-mode and train-mode encoder outputs on the batch just trained on."""
    torch.manual_seed(1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4)
    x = {ch: torch.randn(16, 3000) for ch in CHANNELS}  # (16, 3000) per channel
    labels = torch.randint(0, 5, (16,))
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), labels).backward()
        optimizer.step()
    with torch.no_grad():
        train_out = model.encoder(x)  # (16, D), batch statistics (one more update, same batch)
        model.eval()
        eval_out = model.encoder(x)  # (16, D), running statistics
    return float((eval_out - train_out).norm() / train_out.norm())


def test_eval_mode_matches_train_mode_after_few_steps_from_random_init():
    # With plain momentum the eval-mode representation of a freshly trained random network is far
    # from what training saw (every val prediction one class); bias-corrected statistics close the gap.
    fixed, plain = eval_train_gap(random_classifier(debias=True), 3), eval_train_gap(random_classifier(debias=False), 3)
    assert fixed < 0.25 and plain > 0.5 and plain > 4 * fixed, (fixed, plain)  # measured 0.12 vs 0.91


def test_scratch_defaults_apply_to_init_random_only(tmp_path):
    def parsed(*argv):
        argv = ["--data", str(tmp_path), "--task", "sleep_stage", *argv]
        return linear_probing.build_probe_parser(linear_probing.init_of(argv)).parse_args(argv)

    probe, scratch = parsed(), parsed("--init", "random")
    assert (probe.batch_size, probe.base_lr, probe.passes) == (32, 8e-3, 100)
    assert (scratch.batch_size, scratch.base_lr, scratch.warmup_passes) == (32, 4e-3, 0.1)
    assert parsed("--init", "random", "--batch-size", "64").batch_size == 64  # explicit flags win
    config = tmp_path / "scratch.json"
    config.write_text(json.dumps({"init": "random"}))
    assert linear_probing.init_of(["--config", str(config)]) == "random"
