"""NeuroNet model: framing, masking, objectives, presets, encode, config (CPU, seconds each)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from models.frames import EpochFramer, frame_starts
from models.neuronet import PRESETS, NeuroNetConfig, build_neuronet, count_parameters, neuronet_config
from models.objectives import MaskedTokenMSE, NTXentLoss
from models.transformer import Block, n_kept, random_masking, sincos_positions, unshuffle


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return build_neuronet("tiny")


def _reference_frames(epochs: torch.Tensor, window: int, step: float) -> torch.Tensor:
    """Plain Python slicing: frame k = epochs[:, round(k*step) : round(k*step) + window] while it fits."""
    frames, k = [], 0
    while True:
        start = int(round(k * step))
        piece = epochs[:, start : start + window]
        if piece.shape[-1] < window:
            break
        frames.append(piece)
        k += 1
    return torch.stack(frames, dim=1)


# ---------------------------------------------------------------- frames


@pytest.mark.parametrize("window_s, step_s, n_frames, frame_len", [(4.0, 1.0, 27, 400), (3.0, 0.375, 73, 300)])
def test_frames_equal_reference_slicing(window_s, step_s, n_frames, frame_len):
    framer = EpochFramer(fs=100, epoch_s=30, window_s=window_s, step_s=step_s)
    epochs = torch.randn(3, 3000)
    frames = framer(epochs)
    assert frames.shape == (3, n_frames, frame_len) and framer.n_frames == n_frames
    expected = _reference_frames(epochs, frame_len, step_s * 100)
    assert torch.equal(frames, expected)


def test_fractional_step_rounds_starts_and_rejects_bad_input():
    assert frame_starts(3000, 300, 37.5)[:4] == [0, 38, 75, 112]  # round half to even, as Python round
    assert frame_starts(3000, 300, 37.5)[-1] == 2700
    framer = EpochFramer(100, 30, 4, 1)
    with pytest.raises(ValueError, match="expects epochs of shape"):
        framer(torch.randn(2, 2999))
    with pytest.raises(ValueError, match="longer than the epoch"):
        EpochFramer(100, 30, 31, 1)


# ---------------------------------------------------------------- masking and positions


@pytest.mark.parametrize("n_tokens, ratio, keep", [(27, 0.8, 5), (73, 0.8, 15), (10, 0.4, 6), (27, 0.0, 27)])
def test_random_masking_keeps_exactly_round_n_times_one_minus_r(n_tokens, ratio, keep):
    assert n_kept(n_tokens, ratio) == keep
    tokens = torch.randn(4, n_tokens, 6)
    kept, mask, ids_restore = random_masking(tokens, ratio)
    assert kept.shape == (4, keep, 6)
    assert torch.equal(mask.sum(1), torch.full((4,), float(n_tokens - keep)))
    # every kept token is an unmasked original token, and unshuffle puts them back in place
    restored = unshuffle(kept, torch.full((1, 1, 6), 99.0), ids_restore)
    visible = mask == 0
    assert torch.equal(restored[visible], tokens[visible])
    assert bool((restored[~visible] == 99.0).all())


def test_masks_differ_between_samples_and_views(tiny):
    _, mask, _ = random_masking(torch.randn(64, 27, 2), 0.8)
    assert len({tuple(m.tolist()) for m in mask}) > 32  # independent per sample
    with pytest.raises(ValueError, match="mask_ratio"):
        n_kept(27, 1.0)


def test_sincos_positions_are_fixed_and_distinct():
    table = sincos_positions(27, 64)
    assert table.shape == (27, 64)
    assert torch.allclose(table[0, :32], torch.zeros(32)) and torch.allclose(table[0, 32:], torch.ones(32))
    assert torch.cdist(table, table).add(torch.eye(27)).min() > 0.1  # every position differs


# ---------------------------------------------------------------- objectives


def test_masked_mse_counts_masked_tokens_only():
    torch.manual_seed(1)
    prediction = torch.randn(3, 27, 8, requires_grad=True)
    target = torch.randn(3, 27, 8)
    _, mask, _ = random_masking(torch.zeros(3, 27, 1), 0.8)
    loss, parts = MaskedTokenMSE()(prediction, target, mask)
    by_hand = sum(((prediction[b, n] - target[b, n]) ** 2).mean() for b in range(3) for n in range(27) if mask[b, n])
    assert torch.allclose(loss, by_hand / mask.sum()) and parts["n_masked"] == 3 * 22

    b, n = (mask == 0).nonzero()[0].tolist()  # a visible token
    perturbed = target.clone()
    perturbed[b, n] += 100.0
    assert torch.equal(MaskedTokenMSE()(prediction, perturbed, mask)[0], loss)
    perturbed[b, n] = float("nan")  # not even a NaN on a visible token leaks in
    assert torch.equal(MaskedTokenMSE()(prediction, perturbed, mask)[0], loss)

    b, n = mask.nonzero()[0].tolist()  # a masked token
    perturbed = target.clone()
    perturbed[b, n] += 1.0
    assert MaskedTokenMSE()(prediction, perturbed, mask)[0] > loss

    loss.backward()
    assert prediction.grad[mask == 0].abs().max() == 0 and prediction.grad[mask == 1].abs().max() > 0


def test_ntxent_equals_hand_computed_loops():
    torch.manual_seed(2)
    z1, z2 = torch.randn(3, 5), torch.randn(3, 5)
    tau = 0.05
    loss, _ = NTXentLoss(tau)(z1, z2)

    z = [v / v.norm() for v in torch.cat([z1, z2]).double()]
    total = 0.0
    for i in range(6):
        positive = (i + 3) % 6
        denominator = sum(math.exp(float(z[i] @ z[j]) / tau) for j in range(6) if j != i)  # 2B - 1 candidates
        total += -(float(z[i] @ z[positive]) / tau - math.log(denominator))
    assert loss.item() == pytest.approx(total / 6, rel=1e-5)


def test_ntxent_is_minimal_for_aligned_views():
    torch.manual_seed(3)
    z = torch.linalg.qr(torch.randn(16, 16))[0][:8]  # 8 orthonormal rows
    ntxent = NTXentLoss(0.05)
    aligned, parts = ntxent(z, z.clone())
    assert parts["accuracy"] == 1.0 and aligned < 1e-6
    assert ntxent(z, z[torch.roll(torch.arange(8), 1)])[0] > aligned + 10
    assert ntxent(z, torch.randn(8, 16))[0] > aligned + 1
    assert NTXentLoss(0.05)(torch.randn(1, 4), torch.randn(1, 4))[0] == 0  # batch 1: the positive is the only candidate


# ---------------------------------------------------------------- presets and model


def test_every_preset_builds_with_expected_size():
    counts = {}
    for preset in PRESETS:
        model = build_neuronet(preset)
        counts[preset] = count_parameters(model)
        assert model.n_frames == 27 and f"NeuroNet[{preset}]" in model.summary()
        for block in model.modules():
            if isinstance(block, Block):
                assert isinstance(block.attn.proj, torch.nn.Linear)  # LoRA target "attn.proj"
    assert counts["tiny"] < 1e6 < counts["T"] < counts["B"]
    assert 71.0e6 < counts["B"] < 72.0e6  # published NeuroNet-B: 71.6 M
    b = build_neuronet("B")
    assert b.frame_backbone.flat_dim == 6656 and b.frame_backbone.token_dim == 3328


def test_tiny_forward_backward(tiny):
    tiny.train()
    tiny.zero_grad()
    out = tiny(torch.randn(6, 3000))
    assert set(out) >= {"loss", "recon_1", "recon_2", "contrastive"}
    assert all(torch.isfinite(v) for v in out.values())
    assert torch.allclose(out["loss"], out["recon_1"] + out["recon_2"] + out["contrastive"])
    out["loss"].backward()
    grads = {n: p.grad for n, p in tiny.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    for name in (
        "frame_backbone.stem.0.weight",
        "autoencoder.encoder.blocks.0.attn.proj.weight",
        "autoencoder.decoder_pred.weight",
        "projector.0.weight",
        "autoencoder.cls_token",
    ):
        assert grads[name].abs().sum() > 0, name


def test_views_are_masked_independently(tiny):
    embedded = tiny.autoencoder.embed(torch.randn(4, 27, tiny.frame_backbone.token_dim)).repeat(2, 1, 1)
    latent, mask, _ = tiny.autoencoder.forward_encoder(embedded, 0.8)
    assert latent.shape == (8, 1 + 5, 64)
    assert not torch.equal(mask[:4], mask[4:])


@pytest.mark.parametrize("preset", ["T", "B"])
def test_larger_presets_train_at_batch_1(preset):
    torch.manual_seed(4)
    model = build_neuronet(preset)
    out = model(torch.randn(1, 3000))
    assert torch.isfinite(out["loss"]) and out["contrastive"] == 0  # one sample: no negatives
    out["loss"].backward()
    assert model.frame_backbone.head[0].weight.grad.abs().sum() > 0
    pooled, tokens = model.encode(torch.randn(1, 3000))
    assert pooled.shape == (1, model.embed_dim) and tokens.shape == (1, 27, model.embed_dim)


def test_detach_target_changes_only_gradients():
    def run(detach):
        torch.manual_seed(5)
        model = build_neuronet(neuronet_config("tiny", detach_target=detach, alpha=0.0))
        out = model(torch.randn(4, 3000), generator=torch.Generator().manual_seed(0))
        out["loss"].backward()
        return out["loss"].detach(), model.frame_backbone.head[2].weight.grad.clone()

    loss_a, grad_a = run(False)
    loss_b, grad_b = run(True)
    assert torch.allclose(loss_a, loss_b) and not torch.allclose(grad_a, grad_b)


def test_paper_framing_73_frames_trains():
    model = build_neuronet(neuronet_config("tiny", frame_window_s=3.0, frame_step_s=0.375))
    assert model.n_frames == 73
    out = model(torch.randn(3, 3000))
    out["loss"].backward()
    assert torch.isfinite(out["loss"])


def test_encode_is_deterministic_and_mask_free(tiny):
    tiny.eval()
    epochs = torch.randn(5, 3000)
    with torch.no_grad():
        torch.manual_seed(10)
        pooled, tokens = tiny.encode(epochs)
        torch.manual_seed(11)
        pooled_again, tokens_again = tiny.encode(epochs)
        single, _ = tiny.encode(epochs[2:3])  # no batch coupling in eval mode
    assert tokens.shape == (5, 27, 64) and pooled.shape == (5, 64)
    assert torch.equal(pooled, pooled_again) and torch.equal(tokens, tokens_again)
    assert torch.allclose(pooled, tokens.mean(1))
    assert torch.allclose(single[0], pooled[2], atol=1e-5)
    # every frame is encoded: changing the last 4 s changes the last frame's token
    changed = epochs.clone()
    changed[:, -400:] += 1.0
    with torch.no_grad():
        _, tokens_changed = tiny.encode(changed)
    assert not torch.allclose(tokens_changed[:, -1], tokens[:, -1])
    tiny.train()


def test_lora_attaches_to_attn_proj(tiny):
    peft = pytest.importorskip("peft")
    model = build_neuronet("tiny")
    config = peft.LoraConfig(r=4, lora_alpha=16, use_rslora=True, target_modules=["attn.proj"])
    model = peft.inject_adapter_in_model(config, model)
    wrapped = [n for n, m in model.named_modules() if n.endswith("attn.proj") and hasattr(m, "lora_A")]
    assert len(wrapped) == 2 + 1  # encoder blocks + decoder block of the tiny preset
    model.eval()
    with torch.no_grad():
        assert model.encode(torch.randn(2, 3000))[0].shape == (2, 64)


# ---------------------------------------------------------------- config


def test_config_round_trip_and_overrides():
    config = neuronet_config("T", mask_ratio=0.6, detach_target=True)
    restored = NeuroNetConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert restored == config and restored.backbone_channels == (32, 64, 64, 128)
    assert count_parameters(build_neuronet(neuronet_config("tiny").to_dict())) == count_parameters(
        build_neuronet("tiny")
    )
    with pytest.raises(ValueError, match="unknown keys"):
        NeuroNetConfig.from_dict({**config.to_dict(), "encoder_width": 3})
    with pytest.raises(ValueError, match="unknown NeuroNet preset"):
        neuronet_config("XL")
    with pytest.raises(ValueError, match="divisible"):
        neuronet_config("tiny", encoder_heads=3)
    with pytest.raises(ValueError, match="masks none"):
        build_neuronet(neuronet_config("tiny", mask_ratio=0.01))
