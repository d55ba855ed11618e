"""SynthSleepNet model (docs/models.md §3.2): built from tiny unimodal checkpoints; frozen encoders stay frozen and in
eval mode; decoder m reconstructs channel m's detached tokens; channel subsets; encode with missing channels;
load_backbone round trip; LoRA helpers. CPU, tiny presets, seconds each."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch

from dataset.constants import EPHYS_CHANNELS
from models.loading import load_backbone, load_neuronet, read_checkpoint
from models.lora import LoraSettings, add_lora, lora_layers, lora_parameters, merge_lora
from models.neuronet import NeuroNet, build_neuronet, neuronet_config
from models.synthsleepnet import (
    DEFAULT_CHANNELS,
    ChannelEncoder,
    SynthSleepNet,
    SynthSleepNetConfig,
    build_synthsleepnet,
    synthsleepnet_config,
)
from models.transformer import n_kept
from utils.checkpoint import save_model_checkpoint

MODALITY_OF = {"eeg_c4": "eeg", "eeg_c3": "eeg", "eog_l": "eog", "eog_r": "eog", "emg": "emg", "ecg": "ecg"}
BATCH = 4


def save_engine_checkpoint(path, kind: str, model_config: dict, model: torch.nn.Module, metadata: dict) -> None:
    """A checkpoint with the keys utils/engine.py writes (optimizer state left empty)."""
    save_model_checkpoint(path, kind, model_config, model.state_dict(), metadata=metadata)


@pytest.fixture(scope="module")
def unimodal_checkpoints(tmp_path_factory) -> dict[str, str]:
    """Tiny NeuroNet checkpoints for eeg/eog/emg/ecg, each with moved BatchNorm statistics; the ECG model
    uses 3-s frames (28 tokens instead of 27) so channel chunks differ in size."""
    root = tmp_path_factory.mktemp("unimodal")
    paths = {}
    for seed, modality in enumerate(("eeg", "eog", "emg", "ecg")):
        torch.manual_seed(seed)
        overrides = {"frame_window_s": 3.0} if modality == "ecg" else {}
        net = build_neuronet(neuronet_config("tiny", **overrides))
        with torch.no_grad():
            net.train()(torch.randn(8, 3000))  # one pass in train mode: BatchNorm running stats move off 0/1
        paths[modality] = str(root / f"{modality}.pt")
        save_engine_checkpoint(paths[modality], "neuronet", net.config.to_dict(), net, {"modality": modality})
    return paths


@pytest.fixture(scope="module")
def unimodal_nets(unimodal_checkpoints) -> dict[str, NeuroNet]:
    return {modality: load_neuronet(path) for modality, path in unimodal_checkpoints.items()}


def build(nets, channels=DEFAULT_CHANNELS, seed: int = 0, **overrides) -> SynthSleepNet:
    torch.manual_seed(seed)
    config = synthsleepnet_config("tiny", channels=tuple(channels), **overrides)
    return build_synthsleepnet(config, {ch: nets[MODALITY_OF[ch]] for ch in channels})


def distinct_inputs(channels, seed: int = 1) -> dict[str, torch.Tensor]:
    """A different random (B, 3000) epoch batch per channel."""
    generator = torch.Generator().manual_seed(seed)
    return {ch: torch.randn(BATCH, 3000, generator=generator) * (1 + i) for i, ch in enumerate(channels)}


# ---------------------------------------------------------------- config


def test_default_channels_are_the_dataset_electrophysiology_channels():
    assert DEFAULT_CHANNELS == EPHYS_CHANNELS


def test_presets_and_config_round_trip():
    b = synthsleepnet_config("B")
    assert (b.fusion_dim, b.fusion_heads, b.fusion_depth, b.adapter_width) == (512, 8, 4, 512)
    assert (b.decoder_dim, b.decoder_heads, b.decoder_depth, b.mask_ratio, b.temperature) == (256, 8, 3, 0.4, 0.1)
    assert (b.lora_rank, b.lora_alpha, b.lora_dropout, b.lora_rslora, b.lora_targets) == (
        4,
        16,
        0.05,
        True,
        ("attn.proj",),
    )
    assert b.lora_settings().scaling == 8.0 and b.channels == DEFAULT_CHANNELS
    tiny = synthsleepnet_config("tiny", channels=["eog_l", "ecg"], mask_ratio=0.5)
    assert SynthSleepNetConfig.from_dict(tiny.to_dict()) == tiny and tiny.channels == ("eog_l", "ecg")
    with pytest.raises(ValueError, match="unknown keys"):
        SynthSleepNetConfig.from_dict({**tiny.to_dict(), "fusion_width": 3})
    with pytest.raises(ValueError, match="unknown SynthSleepNet preset"):
        synthsleepnet_config("XL")
    with pytest.raises(ValueError, match="twice"):
        synthsleepnet_config("tiny", channels=["emg", "emg"])
    with pytest.raises(ValueError, match="mask_ratio"):
        synthsleepnet_config("tiny", mask_ratio=1.0)


# ---------------------------------------------------------------- building and freezing


def test_builds_from_unimodal_checkpoints_with_frozen_copies_and_lora(unimodal_nets, unimodal_checkpoints):
    model = build(unimodal_nets)
    assert model.channels == DEFAULT_CHANNELS
    assert set(model.config.encoders) == set(DEFAULT_CHANNELS)
    assert model.config.encoders["ecg"]["frame_window_s"] == 3.0
    eeg_state = read_checkpoint(unimodal_checkpoints["eeg"])["model"]
    c4, c3 = model.encoders["eeg_c4"], model.encoders["eeg_c3"]
    assert c4 is not c3 and c4.frame_backbone is not c3.frame_backbone  # one copy per channel
    for name, value in c3.frame_backbone.state_dict().items():  # frozen weights and BN stats = the EEG checkpoint
        assert torch.equal(value, eeg_state[f"frame_backbone.{name}"]), name
    for channel, encoder in model.encoders.items():
        trainable = {n for n, p in encoder.named_parameters() if p.requires_grad}
        assert trainable == set(lora_parameters(encoder)), channel  # only LoRA trains in an encoder
        adapted = [name for name, _ in lora_layers(encoder)]
        assert adapted == [f"autoencoder.encoder.blocks.{i}.attn.proj" for i in range(2)], adapted
        assert not hasattr(encoder.autoencoder, "decoder")  # unused NeuroNet decoder dropped
    # LoRA B starts at zero: the adapted encoder reproduces the unimodal model's tokens exactly
    x = torch.randn(BATCH, 3000)
    model.eval()
    with torch.no_grad():
        assert torch.allclose(model.encoders["eog_r"](x), unimodal_nets["eog"].encode(x)[1], atol=1e-6)
    assert "LoRA" in model.summary() and "frozen encoders" in model.summary()


def test_training_step_changes_only_trainable_parts(unimodal_nets):
    model = build(unimodal_nets)
    model.train()
    for channel, encoder in model.encoders.items():
        norms = [m for m in encoder.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        assert norms and not any(m.training for m in norms), channel  # frozen BN in eval mode in train()
        assert all(layer.lora_dropout.training for _, layer in lora_layers(encoder))
    assert model.adapters["emg"].norm.training
    frozen_before = {k: v.clone() for k, v in model.encoders.state_dict().items() if "lora_" not in k}
    trainable_before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    adapter_stats_before = model.adapters["eeg_c4"].norm.running_mean.clone()

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    out = model(distinct_inputs(DEFAULT_CHANNELS))
    assert set(out) >= {"loss", "recon", "contrastive", "contrastive_accuracy"} | {
        f"recon_{c}" for c in DEFAULT_CHANNELS
    }
    assert torch.isclose(out["loss"], out["recon"] + model.config.alpha * out["contrastive"])
    assert torch.isclose(out["recon"], torch.stack([out[f"recon_{c}"] for c in DEFAULT_CHANNELS]).mean())
    out["loss"].backward()
    optimizer.step()

    for key, value in model.encoders.state_dict().items():
        if key in frozen_before:
            assert torch.equal(value, frozen_before[key]), f"frozen {key} changed"
    changed = {n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p, trainable_before[n])}
    for part in (
        "encoders.eeg_c4.autoencoder.encoder.blocks.0.attn.proj.lora_B.default.weight",
        "encoders.ecg.autoencoder.encoder.blocks.1.attn.proj.lora_A.default.weight",
        "adapters.eeg_c3.fc1.weight",
        "modality_embed",
        "fusion.blocks.0.attn.qkv.weight",
        "decoders.emg.blocks.0.mlp.fc1.weight",
        "decoder_preds.eog_l.weight",
        "mask_token",
        "fusion_projector.0.weight",
        "channel_projectors.ecg.0.weight",
    ):
        assert part in changed, part
    assert not torch.equal(model.adapters["eeg_c4"].norm.running_mean, adapter_stats_before)  # adapter BN trains
    model.eval()
    assert not any(layer.lora_dropout.training for e in model.encoders.values() for _, layer in lora_layers(e))


class RecordingMSE(torch.nn.Module):
    """Wraps the model's reconstruction loss and keeps each call's (prediction, target, mask)."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner, self.calls = inner, []

    def forward(self, prediction, target, mask):
        self.calls.append((prediction, target, mask))
        return self.inner(prediction, target, mask)


def test_decoder_m_reconstructs_channel_m_tokens_at_its_masked_positions(unimodal_nets):
    """With a 0-block fusion (a per-token LayerNorm, no mixing) decoder m sees exactly channel m's chunk of the
    fusion output: its prediction moves with channel m's input only. Chunks differ in size (ECG 28 tokens)."""
    channels = ("eeg_c4", "eog_l", "ecg", "emg")
    model = build(unimodal_nets, channels, fusion_depth=0).eval()  # eval: deterministic LoRA and BatchNorm
    model.reconstruction = RecordingMSE(model.reconstruction)
    inputs = distinct_inputs(channels)
    parts = model.forward_parts(inputs, generator=torch.Generator().manual_seed(3))
    out = model.forward_loss(parts)
    with torch.no_grad():
        tokens = {ch: model.encoders[ch](inputs[ch]) for ch in channels}  # (B, N_m, E)
    assert [call[0] is parts.predictions[ch] for call, ch in zip(model.reconstruction.calls, channels)] == [True] * 4
    for (prediction, target, mask), ch in zip(model.reconstruction.calls, channels):
        assert not target.requires_grad and parts.tokens[ch].requires_grad  # detached target, trainable source
        assert torch.equal(target, tokens[ch]) and torch.equal(mask, parts.masks[ch])
        n = tokens[ch].shape[1]
        assert mask.shape == (BATCH, n) and (mask.sum(1) == n - n_kept(n, 0.4)).all()
        per_token = (prediction - tokens[ch]).pow(2).mean(-1)  # (B, N)
        assert torch.isclose(out[f"recon_{ch}"], per_token[mask.bool()].mean())
        others = [tokens[o] for o in channels if o != ch and tokens[o].shape == tokens[ch].shape]
        assert all(not torch.allclose(target, other) for other in others)
    assert parts.fused.shape[1] == sum(n_kept(tokens[ch].shape[1], 0.4) for ch in channels)

    for changed in channels:  # perturb one channel: only its own decoder's prediction moves
        perturbed = dict(inputs, **{changed: inputs[changed] + torch.randn(BATCH, 3000)})
        again = model.forward_parts(perturbed, generator=torch.Generator().manual_seed(3))
        for ch in channels:
            same = torch.allclose(again.predictions[ch], parts.predictions[ch], atol=1e-6)
            assert same == (ch != changed), (changed, ch)


def test_any_channel_subset_trains(unimodal_nets):
    for channels in (("eeg_c4",), ("eog_l", "ecg")):
        model = build(unimodal_nets, channels).train()
        assert set(model.encoders) == set(channels) and model.modality_embed.shape[0] == len(channels)
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
        out = model(distinct_inputs(channels))
        assert set(k for k in out if k.startswith("recon_")) == {f"recon_{c}" for c in channels}
        assert torch.isfinite(out["loss"])
        out["loss"].backward()
        optimizer.step()
        assert model.fusion.blocks[0].attn.qkv.weight.grad is not None
    with pytest.raises(ValueError, match=r"channel\(s\) \['ecg'\] missing from the training input"):
        model({"eog_l": torch.randn(BATCH, 3000)})
    with pytest.raises(ValueError, match="channel eog_l must be a"):
        model({"eog_l": torch.randn(BATCH, 2999), "ecg": torch.randn(BATCH, 3000)})
    with pytest.raises(ValueError, match="at least 2 epochs"):
        model({"eog_l": torch.randn(1, 3000), "ecg": torch.randn(1, 3000)})
    with pytest.raises(ValueError, match="no pretrained encoder given for channel 'emg'"):
        build_synthsleepnet(synthsleepnet_config("tiny", channels=("emg",)), {"ecg": unimodal_nets["ecg"]})


def test_encode_fuses_available_channels_and_reports_missing_ones(unimodal_nets):
    model = build(unimodal_nets).eval()
    inputs = distinct_inputs(DEFAULT_CHANNELS)
    with torch.no_grad():
        pooled, tokens = model.encode({**inputs, "label": torch.zeros(BATCH), "recording": "x"})  # extra keys ignored
        assert pooled.shape == (BATCH, 128) and tokens.shape == (BATCH, 5 * 27 + 28, 128)
        assert torch.allclose(pooled, tokens.mean(1))
        subset = {"eeg_c4": inputs["eeg_c4"], "emg": inputs["emg"], "ecg": None}
        with pytest.warns(UserWarning, match=r"\['eeg_c3', 'eog_l', 'eog_r', 'ecg'\] missing.*not zero-filled"):
            part_pooled, part_tokens, used = model.encode(subset, return_channels=True)
        assert used == ("eeg_c4", "emg") and part_tokens.shape == (BATCH, 2 * 27, 128)
        assert not torch.allclose(part_pooled, pooled, atol=1e-3)  # a different fusion input, not zeros filled in
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # reported once per set of missing channels
            model.encode(subset)
        with pytest.raises(ValueError, match="none of the model's channels"):
            model.encode({"airflow": torch.randn(BATCH, 300)})
        with pytest.raises(TypeError, match="input must be a dict channel"):  # one batch schema: no stacked tensor
            model.encode(torch.randn(BATCH, 6, 3000))


def test_load_backbone_round_trip(unimodal_nets, unimodal_checkpoints, tmp_path):
    model = build(unimodal_nets, seed=5).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model(distinct_inputs(DEFAULT_CHANNELS))["loss"].backward()  # LoRA B and adapter BN stats move off init
    optimizer.step()
    path = tmp_path / "last.pt"
    save_engine_checkpoint(path, "synthsleepnet", model.config.to_dict(), model, {"channels": list(DEFAULT_CHANNELS)})
    loaded = load_backbone(tmp_path)  # a run directory → best.pt, else last.pt
    assert isinstance(loaded, SynthSleepNet) and not loaded.training and loaded.channels == DEFAULT_CHANNELS
    model.eval()
    inputs = distinct_inputs(DEFAULT_CHANNELS, seed=9)
    subset = {ch: inputs[ch] for ch in ("eog_r", "ecg")}
    with torch.no_grad(), pytest.warns(UserWarning):
        for batch in (inputs, subset):
            for a, b in zip(model.encode(batch), loaded.encode(batch)):
                assert torch.equal(a, b)
    unimodal = load_backbone(unimodal_checkpoints["emg"])
    assert isinstance(unimodal, NeuroNet)
    x = torch.randn(BATCH, 3000)
    with torch.no_grad():
        assert torch.equal(unimodal.encode(x)[0], unimodal_nets["emg"].encode(x)[0])

    state = read_checkpoint(path)
    del state["model"]["fusion.norm.weight"]
    state["model"]["surplus.weight"] = torch.zeros(1)
    broken = tmp_path / "broken.pt"
    torch.save(state, broken)
    with pytest.raises(
        ValueError,
        match=r"broken.pt: state does not match SynthSleepNet: 1 missing key\(s\) "
        r"\['fusion.norm.weight'\], 1 unexpected key\(s\) \['surplus.weight'\]",
    ):
        load_backbone(broken)
    with pytest.raises(ValueError, match="holds a 'synthsleepnet' model"):
        load_neuronet(path)
    empty = tmp_path / "empty_run"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="empty_run: run directory holds no checkpoint"):
        load_backbone(empty)


# ---------------------------------------------------------------- LoRA helpers


def test_lora_merge_keeps_the_function_and_allows_new_adapters(unimodal_nets):
    encoder = ChannelEncoder(copy.deepcopy(unimodal_nets["eeg"]), LoraSettings(rank=4, alpha=16, dropout=0.0))
    for name, param in lora_parameters(encoder).items():
        with torch.no_grad():
            param.normal_(0, 0.05)  # non-zero B: the adapter changes the output
    x = torch.randn(BATCH, 3000)
    with torch.no_grad():
        adapted = encoder(x)
        assert not torch.allclose(adapted, unimodal_nets["eeg"].encode(x)[1], atol=1e-4)
        assert merge_lora(encoder) == 2 and not lora_layers(encoder)
        assert torch.allclose(encoder(x), adapted, atol=1e-5)
    assert "autoencoder.encoder.blocks.0.attn.proj.weight" in encoder.state_dict()
    added = add_lora(encoder, LoraSettings(rank=4, alpha=8, rslora=False), adapter_name="finetune")
    assert len(added) == 4 and all(".finetune." in name for name in added)
    assert {n for n, p in encoder.named_parameters() if p.requires_grad} == set(added)
    with pytest.raises(ValueError, match="matches targets"):
        add_lora(torch.nn.Sequential(torch.nn.Linear(2, 2)), LoraSettings(targets=("attn.proj",)))


def test_benchmark_chunk_means_are_the_parts_of_the_mean_fusion_token(unimodal_nets):
    """benchmarks/multimodal_learning.py scores the mean fusion token and the fusion's output tokens per channel
    from one pass: part 0 is the mean fusion token, chunk m the mean over channel m's positions, so the
    token-count-weighted average of the chunks is the mean fusion token."""
    from benchmarks.multimodal_learning import FusionParts

    channels = ("eeg_c4", "emg", "ecg")  # the ECG model has 28 tokens, the others 27
    model = build(unimodal_nets, channels).eval()
    inputs = distinct_inputs(channels)
    with torch.no_grad():
        parts = FusionParts(model).encode(inputs).reshape(BATCH, 1 + len(channels), model.embed_dim)
        pooled, tokens = model.encode(inputs)
    assert torch.equal(parts[:, 0], pooled)
    chunks = parts[:, 1:]
    sizes = torch.tensor([model.encoders[ch].n_frames for ch in channels], dtype=torch.float32)
    assert sizes.tolist() == [27, 27, 28] and tokens.shape[1] == 82
    assert torch.allclose((chunks * sizes[None, :, None]).sum(1) / sizes.sum(), pooled, atol=1e-5)
    assert torch.allclose(chunks[:, 2], tokens[:, 54:].mean(dim=1), atol=1e-6)
