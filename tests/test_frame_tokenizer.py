"""Frame tokenizers: the shared-convolution one of the `fast` preset, and the per-frame presets left untouched."""

from __future__ import annotations

import copy
import hashlib

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from models.frame_backbone import MultiScaleFrameBackbone, SharedConvFrameBackbone
from models.lora import LoraSettings
from models.neuronet import PRESETS, NeuroNetConfig, build_neuronet, count_parameters, neuronet_config
from models.synthsleepnet import ChannelEncoder

# sha256 (first 16 hex digits) of "name:shape" per state_dict entry, and the entry count, of every per-frame
# preset as published before the shared-convolution tokenizer existed: their checkpoints must keep loading
STATE_DICT_LISTING = {"tiny": (289, "7d06876165500e47"), "T": (313, "8ddfff7841f1643d"), "B": (337, "d911e13fc45ccd46")}


@pytest.fixture(scope="module")
def fast():
    torch.manual_seed(0)
    return build_neuronet("fast")


def _listing(model: torch.nn.Module) -> tuple[int, str]:
    state = model.state_dict()
    text = "\n".join(f"{name}:{tuple(value.shape)}" for name, value in state.items())
    return len(state), hashlib.sha256(text.encode()).hexdigest()[:16]


def test_parameter_counts_and_per_frame_checkpoints_unchanged():
    counts = {}
    for preset in PRESETS:
        model = build_neuronet(preset)
        counts[preset] = (count_parameters(model), count_parameters(model.frame_backbone))
        print(f"{preset}: {counts[preset][0] / 1e6:.3f} M parameters, frame CNN {counts[preset][1] / 1e6:.3f} M")
        if preset in STATE_DICT_LISTING:
            assert isinstance(model.frame_backbone, MultiScaleFrameBackbone)
            assert _listing(model) == STATE_DICT_LISTING[preset], preset
    assert "fast" in PRESETS and isinstance(build_neuronet("fast").frame_backbone, SharedConvFrameBackbone)
    assert counts["fast"][0] < 1e6


def test_per_frame_outputs_for_a_seed_and_old_configs_unchanged():
    torch.manual_seed(0)
    model = build_neuronet("tiny")
    out = model(torch.randn(2, 3000), generator=torch.Generator().manual_seed(1))
    assert out["loss"].item() == pytest.approx(3.6346700191497803, rel=1e-5)  # value before the option existed
    saved = neuronet_config("tiny").to_dict()  # a checkpoint written before the option has neither key
    for key in ("frame_tokenizer", "frame_segments"):
        del saved[key]
    restored = build_neuronet(NeuroNetConfig.from_dict(saved))
    assert restored.config.frame_tokenizer == "per_frame"
    restored.load_state_dict(model.state_dict())  # strict: same names and shapes


def test_fast_forward_backward_on_random_input(fast):
    fast.train()
    fast.zero_grad()
    out = fast(torch.randn(4, 3000))
    assert all(torch.isfinite(v) for v in out.values())
    out["loss"].backward()
    for name, parameter in fast.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
    for name in (
        "frame_backbone.stem.0.weight",
        "frame_backbone.branches.2.3.conv2.weight",
        "frame_backbone.head.2.weight",
        "autoencoder.encoder.blocks.0.attn.proj.weight",
    ):
        assert dict(fast.named_parameters())[name].grad.abs().sum() > 0, name


def test_fast_token_depends_only_on_its_frame_and_the_stated_margin(fast):
    fast.eval()
    backbone = fast.frame_backbone
    margin = backbone.receptive_margin  # samples beyond each side of the frame
    assert backbone.stride == 20 and margin == 387
    k = 13
    first, end = k * 100 - margin, k * 100 + 400 + margin  # frame k = samples [1300, 1700)
    torch.manual_seed(1)
    epochs = torch.randn(2, 3000)
    outside = epochs.clone()
    outside[:, :first] += 5.0 * torch.randn(2, first)
    outside[:, end:] += 5.0 * torch.randn(2, 3000 - end)
    with torch.no_grad():
        tokens = fast.frame_tokens(epochs)
        assert tokens.shape == (2, 27, backbone.token_dim)
        assert torch.equal(fast.frame_tokens(outside)[:, k], tokens[:, k])
        for sample in (first, end - 1, k * 100 + 200):  # the margin's edges and the frame's middle do count
            inside = epochs.clone()
            inside[:, sample] += 50.0
            assert not torch.allclose(fast.frame_tokens(inside)[:, k], tokens[:, k]), sample
    fast.train()


def test_fast_encode_has_the_downstream_shape_contract(fast):
    fast.eval()
    epochs = torch.randn(3, 3000)
    with torch.no_grad():
        pooled, tokens = fast.encode(epochs)
        single, _ = fast.encode(epochs[1:2])
    assert pooled.shape == (3, fast.embed_dim) and tokens.shape == (3, fast.n_frames, fast.embed_dim)
    assert fast.n_frames == 27 and torch.allclose(pooled, tokens.mean(1))
    assert torch.allclose(single[0], pooled[1], atol=1e-5)
    encoder = ChannelEncoder(copy.deepcopy(fast), LoraSettings(rank=4, alpha=16, dropout=0.0))
    with torch.no_grad():
        assert torch.allclose(encoder(epochs), tokens, atol=1e-5)  # the multimodal model sees the same tokens
    fast.train()


def test_fast_tokenizer_costs_less_than_the_per_frame_cnn():
    epochs = torch.randn(2, 3000)
    flops = {}
    for preset in ("tiny", "fast"):
        model = build_neuronet(preset).eval()
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model.frame_tokens(epochs)
        flops[preset] = counter.get_total_flops()
    print(f"frame tokens per epoch: tiny {flops['tiny'] / 2e6:.1f} MFLOP, fast {flops['fast'] / 2e6:.1f} MFLOP")
    assert flops["fast"] * 2.5 < flops["tiny"]


def test_shared_conv_rejects_frames_off_its_feature_grid():
    with pytest.raises(ValueError, match="multiples of its feature stride"):
        build_neuronet(neuronet_config("fast", frame_window_s=3.0, frame_step_s=0.375))
    with pytest.raises(ValueError, match="frame_segments"):
        build_neuronet(neuronet_config("fast", frame_segments=3))
    with pytest.raises(ValueError, match="frame_tokenizer"):
        neuronet_config("tiny", frame_tokenizer="strided")
