"""SynthSleepNet's masking options (docs/models.md §3.2, `mask_mode`): `independent` (published: each channel its
own frames), `shared` (the same frame positions in every channel of one token count) and `channel` (whole
channels hidden, reconstructed from the others). CPU, tiny presets."""

from __future__ import annotations

import pytest
import torch

from models.synthsleepnet import MASK_MODES, SynthSleepNetConfig, synthsleepnet_config
from models.transformer import n_kept
from tests.test_synthsleepnet import BATCH, build, distinct_inputs, unimodal_checkpoints, unimodal_nets  # noqa: F401

CHANNELS = ("eeg_c4", "eog_l", "emg", "ecg")  # ECG: 28 tokens, the others 27


def masked_pass(nets, mode: str, seed: int = 3, **overrides):
    model = build(nets, CHANNELS, mask_mode=mode, **overrides).eval()  # eval: deterministic LoRA and BatchNorm
    inputs = distinct_inputs(CHANNELS)
    return model, inputs, model.forward_parts(inputs, generator=torch.Generator().manual_seed(seed))


def test_config_takes_the_three_modes_and_refuses_others():
    assert MASK_MODES == ("independent", "shared", "channel")
    assert synthsleepnet_config("tiny").mask_mode == "independent"  # the published default
    config = synthsleepnet_config("tiny", mask_mode="shared")
    assert SynthSleepNetConfig(**config.to_dict()).mask_mode == "shared"
    with pytest.raises(ValueError, match="mask_mode must be one of independent, shared, channel"):
        synthsleepnet_config("tiny", mask_mode="Shared")
    with pytest.raises(ValueError, match="needs at least two"):
        synthsleepnet_config("tiny", channels=("eeg_c4",), mask_mode="channel")


def test_independent_masks_differ_and_shared_masks_agree_across_channels(unimodal_nets):
    _, _, independent = masked_pass(unimodal_nets, "independent")
    _, _, shared = masked_pass(unimodal_nets, "shared")
    for parts in (independent, shared):
        for ch, mask in parts.masks.items():
            n = mask.shape[1]
            assert (mask.sum(1) == n - n_kept(n, 0.4)).all(), ch  # the ratio holds in every mode
    same_count = ("eeg_c4", "eog_l", "emg")
    assert all(torch.equal(shared.masks[ch], shared.masks["eeg_c4"]) for ch in same_count)
    assert not all(torch.equal(independent.masks[ch], independent.masks["eeg_c4"]) for ch in same_count)
    assert shared.masks["ecg"].shape[1] == 28  # its own draw over its own frames
    assert not torch.equal(shared.masks["eeg_c4"][0], shared.masks["eeg_c4"][1])  # still random per epoch


def test_channel_mode_hides_whole_channels_and_rebuilds_them_from_the_others(unimodal_nets):
    model, inputs, parts = masked_pass(unimodal_nets, "channel", fusion_depth=1)
    hidden = [ch for ch, mask in parts.masks.items() if bool(mask.all())]
    seen = [ch for ch, mask in parts.masks.items() if not bool(mask.any())]
    assert len(hidden) == round(0.4 * len(CHANNELS)) == 2 and sorted(hidden + seen) == sorted(CHANNELS)
    assert parts.fused.shape[1] == sum(27 if ch != "ecg" else 28 for ch in seen)  # only the seen channels fuse
    for ch in hidden:
        assert parts.predictions[ch].shape == parts.tokens[ch].shape
    out = model.forward_loss(parts)
    assert all(out[f"recon_{ch}"] == 0 for ch in seen)  # nothing of theirs to rebuild
    assert torch.isclose(out["recon"], torch.stack([out[f"recon_{ch}"] for ch in hidden]).mean())
    # a hidden channel's prediction comes from the seen channels, not from its own input
    again = model.forward_parts(
        dict(inputs, **{hidden[0]: torch.randn(BATCH, 3000)}), generator=torch.Generator().manual_seed(3)
    )
    assert torch.allclose(again.predictions[hidden[0]], parts.predictions[hidden[0]], atol=1e-6)
    moved = model.forward_parts(
        dict(inputs, **{seen[0]: inputs[seen[0]] + torch.randn(BATCH, 3000)}),
        generator=torch.Generator().manual_seed(3),
    )
    assert not torch.allclose(moved.predictions[hidden[0]], parts.predictions[hidden[0]], atol=1e-6)


@pytest.mark.parametrize("mode", ["shared", "channel"])
def test_each_mode_trains_and_draws_other_channels_each_step(unimodal_nets, mode):
    model = build(unimodal_nets, CHANNELS, mask_mode=mode).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    drawn = []
    for _ in range(4):
        parts = model.forward_parts(distinct_inputs(CHANNELS), generator=generator)
        out = model.forward_loss(parts)
        assert torch.isfinite(out["loss"])
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
        drawn.append(tuple(bool(m.all()) for m in parts.masks.values()))
    if mode == "channel":
        assert len(set(drawn)) > 1  # other channels hidden at other steps
    assert model.fusion.blocks[0].attn.qkv.weight.grad is not None


def test_channel_mode_keeps_every_decoder_in_the_graph(unimodal_nets):
    """The seen channels' decoders add nothing to the loss but still get a (zero) gradient: a distributed run
    without unused-parameter detection needs every trainable parameter to take part in each step."""
    model, _, parts = masked_pass(unimodal_nets, "channel", fusion_depth=1)
    model.train()
    model.forward_loss(parts)["loss"].backward()
    seen = [ch for ch, mask in parts.masks.items() if not bool(mask.any())]
    for ch in seen:
        grads = [p.grad for p in model.decoders[ch].parameters()]
        assert all(g is not None for g in grads) and all(float(g.abs().sum()) == 0 for g in grads)
