"""SynthSleepNet: multimodal fusion of frozen, LoRA-adapted NeuroNet encoders (docs/models.md §3.2).

Per channel m (any subset of the ten channels, in the configured order: the six 100-Hz electrophysiology
channels, the default and published configuration, and the four 10-Hz respiratory ones, whose encoders take
(B, 300) epochs and give 12 tokens where the others give 27):

    tokens_m   = encoder_m(x_m)                        (B, N_m, E_m)  frozen NeuroNet encoder + LoRA on attn.proj
    embedded_m = adapter_m(tokens_m) + modality_m + pos (B, N_m, F)    Linear → BN → ELU → Linear; sin-cos positions
    kept_m     = random_masking(embedded_m, 0.4)        (B, K_m, F)    independent mask per channel

The fusion transformer sees the concatenation [kept_1, ..., kept_M] (B, ΣK, F) (no CLS token: the
representation is the mean fusion token). Its output is split back into per-channel chunks of K_m tokens
in input order (the published code slices these wrongly); decoder m (shared 256-d projection and mask
token, its own blocks and prediction head) reconstructs channel m's encoder tokens at its masked positions,
with the targets detached. The contrastive term pulls the projected mean fusion token towards the projected
mean encoder token of every channel (per-channel projectors, NT-Xent τ 0.1), averaged over channels:

    loss = mean_m recon_m + alpha * mean_m NT-Xent(P_fusion(mean fused), P_m(mean tokens_m))

Frozen encoders stay in eval mode whatever the model's mode (their frame-CNN BatchNorm statistics never
move); only the LoRA dropout follows `train()`. Downstream representation: `encode(batch)` without masking
→ mean fusion token (B, F); a channel missing from the input is dropped from the fusion and reported.

Differences from the published code, on purpose: per-channel modality embedding is one learnable vector
(positions are the shared fixed sin-cos table, not a learnable per-channel table); no CLS token; the
reconstruction is the mean of per-channel masked MSEs (identical to one pooled MSE when channels mask
equally many tokens); the channels' mean tokens exclude the encoder's CLS; targets are detached.
"""

from __future__ import annotations

import copy
import dataclasses
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch import nn

from models.config_fields import check_field_types
from models.lora import LoraSettings, add_lora, freeze, lora_parameters, set_lora_dropout_mode
from models.neuronet import (
    NeuroNet,
    NeuroNetConfig,
    build_neuronet,
    count_parameters,
    epoch_frame_tokens,
    projector_mlp,
)
from models.objectives import MaskedTokenMSE, NTXentLoss
from models.transformer import TransformerStack, init_vit_weights, random_masking, sincos_positions, unshuffle

# The six 100-Hz electrophysiology channels, in the order of dataset.constants.EPHYS_CHANNELS (models may not
# import dataset/; tests/test_synthsleepnet.py checks that the two agree).
DEFAULT_CHANNELS: tuple[str, ...] = ("eeg_c4", "eeg_c3", "eog_l", "eog_r", "emg", "ecg")
MASK_MODES = ("independent", "shared", "channel")
# Parts of a NeuroNet's masked autoencoder that the multimodal model does not use (removed from its copies).
_UNUSED_AUTOENCODER_PARTS = ("decoder_embed", "mask_token", "decoder", "decoder_pred", "decoder_pos_embed")


@dataclass
class SynthSleepNetConfig:
    """Every size and training constant of one SynthSleepNet; saved in checkpoints via `to_dict`.

    `encoders` maps each channel to the `NeuroNetConfig.to_dict()` of its unimodal model; it is filled in
    when the model is built from pretrained NeuroNets, so a checkpoint can rebuild every encoder.
    """

    preset: str = "B"
    channels: tuple[str, ...] = DEFAULT_CHANNELS
    # per-channel adapter and fusion encoder
    fusion_dim: int = 512
    fusion_heads: int = 8
    fusion_depth: int = 4
    adapter_hidden: int | None = None  # None: fusion_dim (published)
    # per-channel decoders (shared input projection and mask token)
    decoder_dim: int = 256
    decoder_heads: int = 8
    decoder_depth: int = 3
    mlp_ratio: float = 4.0
    mask_ratio: float = 0.4
    # independent (published): each channel its own random frames; shared: the same frame positions in every
    # channel of one token count; channel: whole channels, round(ratio x C) of them (at least 1, at most C - 1)
    mask_mode: str = "independent"
    # contrastive heads and loss
    projector_hidden: tuple[int, ...] = (512, 256)
    temperature: float = 0.1
    alpha: float = 1.0
    # LoRA on the frozen encoders
    lora_rank: int = 4
    lora_alpha: float = 16.0
    lora_dropout: float = 0.05
    lora_rslora: bool = True
    lora_targets: tuple[str, ...] = ("attn.proj",)
    encoders: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_field_types(self, "SynthSleepNet config", text_tuples=("channels", "lora_targets"))
        self.encoders = {str(k): dict(v) for k, v in dict(self.encoders).items()}
        if not self.channels:
            raise ValueError("SynthSleepNet config: channels is empty; name at least one, e.g. ['eeg_c4']")
        if len(set(self.channels)) != len(self.channels):
            raise ValueError(f"SynthSleepNet config: channels {list(self.channels)} lists a channel twice")
        bad = [c for c in self.channels if not c or "." in c]
        if bad:
            raise ValueError(f"SynthSleepNet config: channel names {bad} must be non-empty and contain no '.'")
        extra = sorted(set(self.encoders) - set(self.channels))
        if extra:
            raise ValueError(
                f"SynthSleepNet config: encoder configs for {extra}, which are not in channels {list(self.channels)}"
            )
        for dim, heads, what in (
            (self.fusion_dim, self.fusion_heads, "fusion"),
            (self.decoder_dim, self.decoder_heads, "decoder"),
        ):
            if dim <= 0 or heads <= 0 or dim % heads or dim % 2:
                raise ValueError(
                    f"SynthSleepNet config: {what} width {dim} must be even and divisible by {heads} heads"
                )
        if self.fusion_depth < 0 or self.decoder_depth < 0:
            raise ValueError(
                f"SynthSleepNet config: depths must be >= 0, got fusion {self.fusion_depth}, "
                f"decoder {self.decoder_depth}"
            )
        if not 0.0 <= self.mask_ratio < 1.0:
            raise ValueError(f"SynthSleepNet config: mask_ratio must be in [0, 1), got {self.mask_ratio}")
        if self.mask_mode not in MASK_MODES:
            raise ValueError(
                f"SynthSleepNet config: mask_mode must be one of {', '.join(MASK_MODES)}, got {self.mask_mode!r}"
            )
        if self.mask_mode == "channel" and len(self.channels) < 2:
            raise ValueError("SynthSleepNet config: mask_mode channel masks whole channels and needs at least two")
        if not self.projector_hidden:
            raise ValueError("SynthSleepNet config: projector_hidden needs at least one layer width")
        if self.temperature <= 0:
            raise ValueError(f"SynthSleepNet config: temperature must be positive, got {self.temperature}")
        self.lora_settings()  # validates the LoRA fields

    @property
    def adapter_width(self) -> int:
        return self.adapter_hidden or self.fusion_dim

    def lora_settings(self) -> LoraSettings:
        return LoraSettings(self.lora_rank, self.lora_alpha, self.lora_dropout, self.lora_rslora, self.lora_targets)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (tuples become lists)."""
        values = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> SynthSleepNetConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"SynthSleepNet config: unknown keys {unknown}; known keys are {sorted(known)}")
        return cls(**dict(values))


_PRESETS: dict[str, dict[str, Any]] = {
    # CPU tests and the demo, over NeuroNet tiny encoders (64-d): the fusion width is 1/3 of six channels' widths
    # (B: 512 of 6 x 768); at 64 the fused vector stayed below concatenated unimodal vectors on the benchmark
    "tiny": dict(
        fusion_dim=128,
        fusion_heads=4,
        fusion_depth=2,
        decoder_dim=64,
        decoder_heads=4,
        decoder_depth=1,
        projector_hidden=(128, 64),
    ),
    # narrower fusion for T encoders or small GPUs
    "T": dict(
        fusion_dim=384,
        fusion_heads=8,
        fusion_depth=4,
        decoder_dim=192,
        decoder_heads=8,
        decoder_depth=2,
        projector_hidden=(384, 192),
    ),
    # published SynthSleepNet
    "B": dict(),
}
# over NeuroNet `fast` encoders (64-d, like tiny's): tiny's fusion, so that `--preset fast --channels ...` builds the
# architecture of the CPU recipe (fast encoders + tiny fusion), e.g. for the from-scratch baseline
_PRESETS["fast"] = _PRESETS["tiny"]
_PRESETS["spectral"] = _PRESETS["tiny"]  # over NeuroNet `spectral` encoders (64-d), likewise
PRESETS: tuple[str, ...] = tuple(_PRESETS)


def synthsleepnet_config(preset: str = "B", **overrides: Any) -> SynthSleepNetConfig:
    """Config of a named preset ('tiny', 'fast', 'spectral', 'T', 'B'), with any field overridden by keyword."""
    if preset not in _PRESETS:
        raise ValueError(f"unknown SynthSleepNet preset {preset!r}; choose one of {list(_PRESETS)}")
    return SynthSleepNetConfig.from_dict({**_PRESETS[preset], "preset": preset, **overrides})


class ChannelEncoder(nn.Module):
    """The encoder path of one pretrained NeuroNet (framer, frame CNN, patch embedding, ViT encoder), frozen,
    with LoRA on the ViT's attention output projections. (B, n_samples) → encoder tokens (B, N, E).

    The NeuroNet passed in is taken over (its decoder and projector are dropped): pass a copy. Its frozen
    parts stay in eval mode in `train()`; only the LoRA dropout follows the requested mode.
    """

    def __init__(self, neuronet: NeuroNet, lora: LoraSettings):
        super().__init__()
        self.config: NeuroNetConfig = neuronet.config
        self.framer = neuronet.framer
        self.frame_backbone = neuronet.frame_backbone
        autoencoder = neuronet.autoencoder
        for name in _UNUSED_AUTOENCODER_PARTS:
            delattr(autoencoder, name)
        self.autoencoder = autoencoder
        freeze(self)
        add_lora(self.autoencoder.encoder, lora)
        self.train(False)

    @property
    def n_frames(self) -> int:
        return self.framer.n_frames

    @property
    def embed_dim(self) -> int:
        return self.config.encoder_dim

    def train(self, mode: bool = True) -> ChannelEncoder:
        super().train(False)  # frozen weights: BatchNorm uses its running statistics, always
        self.training = mode
        set_lora_dropout_mode(self, mode)
        return self

    def forward(self, epochs: torch.Tensor) -> torch.Tensor:
        """(B, n_samples) at fs Hz, robust-scaled → final-normed encoder tokens (B, N, E), CLS excluded."""
        frame_tokens = epoch_frame_tokens(self.framer, self.frame_backbone, epochs)  # (B, N, token_dim)
        return self.autoencoder.encode(frame_tokens)[:, 1:]  # (B, N, E)


class TokenAdapter(nn.Module):
    """Linear → BatchNorm1d over the token features (statistics over batch and tokens) → ELU → Linear.

    (B, N, in_dim) → (B, N, out_dim).
    """

    def __init__(self, in_dim: int, hidden: int, out_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(in_dim, hidden)
        self.norm = nn.BatchNorm1d(hidden)
        self.act = nn.ELU()
        self.fc2 = nn.Linear(hidden, out_dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        batch, n_tokens, _ = tokens.shape
        hidden = self.fc1(tokens)  # (B, N, H)
        hidden = self.norm(hidden.reshape(batch * n_tokens, -1)).reshape(batch, n_tokens, -1)  # (B, N, H)
        return self.fc2(self.act(hidden))  # (B, N, out_dim)


class MaskedFusion(NamedTuple):
    """Intermediates of one masked training pass; dicts are keyed by channel, in input order."""

    tokens: dict[str, torch.Tensor]  # (B, N_m, E_m) encoder tokens (the reconstruction targets, before detaching)
    masks: dict[str, torch.Tensor]  # (B, N_m) 1 = masked
    fused: torch.Tensor  # (B, ΣK_m, F) fusion output over the visible tokens of all channels
    predictions: dict[str, torch.Tensor]  # (B, N_m, E_m) decoder m's prediction at every position


class SynthSleepNet(nn.Module):
    """Multimodal SynthSleepNet over `config.channels`; inputs are dicts channel → (B, n_samples) epochs: 3000 at
    100 Hz, 300 for the 10-Hz respiratory channels (each encoder's `framer.n_samples`).

    Args:
        config: the architecture; `config.encoders` (channel → NeuroNet config dict) is used when `encoders`
            is None (e.g. rebuilding from a checkpoint, weights loaded afterwards).
        encoders: channel → pretrained NeuroNet. Each channel gets its own deep copy (the EEG model can serve
            eeg_c4 and eeg_c3), frozen, with its own LoRA adapters.
    """

    def __init__(self, config: SynthSleepNetConfig, encoders: Mapping[str, NeuroNet] | None = None):
        super().__init__()
        lora = config.lora_settings()
        self.encoders = nn.ModuleDict()
        encoder_configs: dict[str, dict[str, Any]] = {}
        for channel in config.channels:
            if encoders is not None:
                if channel not in encoders:
                    raise ValueError(
                        f"SynthSleepNet: no pretrained encoder given for channel {channel!r} "
                        f"(given: {sorted(encoders)})"
                    )
                if not isinstance(encoders[channel], NeuroNet):
                    raise TypeError(
                        f"SynthSleepNet: encoder for {channel!r} must be a NeuroNet, "
                        f"got {type(encoders[channel]).__name__}"
                    )
                neuronet = copy.deepcopy(encoders[channel])
            elif channel in config.encoders:
                neuronet = build_neuronet(config.encoders[channel])
            else:
                raise ValueError(
                    f"SynthSleepNet: config has no encoder config for channel {channel!r} and no "
                    "pretrained encoder was given"
                )
            encoder_configs[channel] = neuronet.config.to_dict()
            self.encoders[channel] = ChannelEncoder(neuronet, lora)
        self.config = dataclasses.replace(config, encoders=encoder_configs)
        self.channels: tuple[str, ...] = tuple(config.channels)

        c = self.config
        max_frames = max(encoder.n_frames for encoder in self.encoders.values())
        self.adapters = nn.ModuleDict(
            {ch: TokenAdapter(enc.embed_dim, c.adapter_width, c.fusion_dim) for ch, enc in self.encoders.items()}
        )
        self.modality_embed = nn.Parameter(torch.zeros(len(self.channels), c.fusion_dim))  # (M, F), row = channel
        self.register_buffer(
            "pos_embed", sincos_positions(max_frames, c.fusion_dim)[None], persistent=False
        )  # (1, N, F)
        self.fusion = TransformerStack(c.fusion_dim, c.fusion_heads, c.fusion_depth, c.mlp_ratio)
        self.decoder_embed = nn.Linear(c.fusion_dim, c.decoder_dim)  # shared by every channel's decoder
        self.mask_token = nn.Parameter(torch.zeros(1, 1, c.decoder_dim))
        self.register_buffer(
            "decoder_pos_embed", sincos_positions(max_frames, c.decoder_dim)[None], persistent=False
        )  # (1, N, F_dec)
        self.decoders = nn.ModuleDict(
            {ch: TransformerStack(c.decoder_dim, c.decoder_heads, c.decoder_depth, c.mlp_ratio) for ch in self.channels}
        )
        self.decoder_preds = nn.ModuleDict(
            {ch: nn.Linear(c.decoder_dim, enc.embed_dim) for ch, enc in self.encoders.items()}
        )
        self.fusion_projector = projector_mlp(c.fusion_dim, c.projector_hidden)
        self.channel_projectors = nn.ModuleDict(
            {ch: projector_mlp(enc.embed_dim, c.projector_hidden) for ch, enc in self.encoders.items()}
        )
        self.reconstruction = MaskedTokenMSE()
        self.contrastive = NTXentLoss(c.temperature)
        for part in (
            self.adapters,
            self.fusion,
            self.decoder_embed,
            self.decoders,
            self.decoder_preds,
            self.fusion_projector,
            self.channel_projectors,
        ):  # never the pretrained encoders
            part.apply(init_vit_weights)
        nn.init.normal_(self.modality_embed, std=0.02)
        nn.init.normal_(self.mask_token, std=0.02)
        self._reported_missing: set[tuple[str, ...]] = set()

    # ------------------------------------------------------------------ inputs
    def _inputs(self, batch: Mapping[str, torch.Tensor], require_all: bool) -> dict[str, torch.Tensor]:
        """The model's channels found in `batch` (the one batch schema, {channel: (B, samples)}: 3000 samples at
        100 Hz, 300 at 10 Hz; other keys are ignored), in config order; checks shapes."""
        if not isinstance(batch, Mapping):
            raise TypeError(
                f"SynthSleepNet: input must be a dict channel -> (batch, samples) tensor, got {type(batch).__name__}"
            )
        signals = {ch: batch[ch] for ch in self.channels if batch.get(ch) is not None}
        missing = [ch for ch in self.channels if ch not in signals]
        if not signals:
            raise ValueError(
                f"SynthSleepNet: the input holds none of the model's channels {list(self.channels)} "
                f"(keys: {sorted(batch)})"
            )
        if missing and require_all:
            raise ValueError(
                f"SynthSleepNet: channel(s) {missing} missing from the training input; the model was "
                f"built for {list(self.channels)} (build it with fewer channels to train on a subset)"
            )
        sizes = set()
        for ch, signal in signals.items():
            expected = self.encoders[ch].framer.n_samples
            if not isinstance(signal, torch.Tensor) or signal.dim() != 2 or signal.shape[1] != expected:
                shape = tuple(signal.shape) if isinstance(signal, torch.Tensor) else type(signal).__name__
                raise ValueError(f"SynthSleepNet: channel {ch} must be a (batch, {expected}) tensor, got {shape}")
            sizes.add(signal.shape[0])
        if len(sizes) > 1:
            raise ValueError(
                f"SynthSleepNet: channels have different batch sizes { {c: s.shape[0] for c, s in signals.items()} }"
            )
        return signals

    def _embed(self, channel: str, tokens: torch.Tensor) -> torch.Tensor:
        """Encoder tokens (B, N, E) → fusion-width tokens (B, N, F) with modality embedding and positions."""
        index = self.channels.index(channel)
        adapted = self.adapters[channel](tokens)  # (B, N, F)
        return adapted + self.modality_embed[index] + self.pos_embed[:, : tokens.shape[1]]

    # ------------------------------------------------------------------ training pass
    def forward_encoder(
        self, signals: Mapping[str, torch.Tensor], mask_ratio: float, generator: torch.Generator | None = None
    ):
        """Encode every channel, mask (by `config.mask_mode`), fuse the visible tokens.

        Returns tokens {ch: (B, N, E)}, masks {ch: (B, N)}, ids_restore {ch: (B, N)}, fused (B, ΣK, F),
        kept {ch: K} (chunk sizes of `fused`, in input order; 0 for a channel masked whole).
        """
        tokens, masks, ids_restore, visible, kept = {}, {}, {}, [], {}
        mode = self.config.mask_mode
        hidden: set[str] = set()
        if mode == "channel" and mask_ratio > 0:
            n_hidden = min(len(signals) - 1, max(1, round(mask_ratio * len(signals))))
            order = torch.randperm(len(signals), generator=generator, device=generator.device if generator else "cpu")
            hidden = {list(signals)[int(i)] for i in order[:n_hidden]}
        noise: dict[int, torch.Tensor] = {}  # shared mode: one draw per token count, for every channel of that count
        for channel, signal in signals.items():
            tokens[channel] = self.encoders[channel](signal)  # (B, N, E)
            embedded = self._embed(channel, tokens[channel])  # (B, N, F)
            batch, n_tokens, _ = embedded.shape
            if mode == "channel":  # a channel is hidden whole (no token kept) or seen whole
                hide = channel in hidden
                channel_kept = embedded[:, :0] if hide else embedded
                masks[channel] = embedded.new_full((batch, n_tokens), float(hide))
                ids_restore[channel] = torch.arange(n_tokens, device=embedded.device).expand(batch, -1)
            else:
                draw = None
                if mode == "shared":
                    if n_tokens not in noise:
                        noise[n_tokens] = torch.rand(batch, n_tokens, device=embedded.device, generator=generator)
                    draw = noise[n_tokens]
                channel_kept, masks[channel], ids_restore[channel] = random_masking(
                    embedded, mask_ratio, generator, noise=draw
                )
            visible.append(channel_kept)  # (B, K, F)
            kept[channel] = channel_kept.shape[1]
        fused = self.fusion(torch.cat(visible, dim=1))  # (B, ΣK, F)
        return tokens, masks, ids_restore, fused, kept

    def forward_decoder(
        self, fused: torch.Tensor, ids_restore: Mapping[str, torch.Tensor], kept: Mapping[str, int]
    ) -> dict[str, torch.Tensor]:
        """Split `fused` (B, ΣK, F) into per-channel chunks in input order; decoder m predicts channel m's
        encoder tokens at every position → {ch: (B, N, E)}. A channel masked whole (`mask_mode` channel) has no
        chunk: its decoder reads every fused token followed by its N mask tokens and predicts from those."""
        chunks = torch.split(fused, [kept[ch] for ch in kept], dim=1)  # (B, K_m, F) each, same order as `kept`
        context = self.decoder_embed(fused) if any(k == 0 for k in kept.values()) else None  # (B, ΣK, F_dec)
        predictions = {}
        for channel, chunk in zip(kept, chunks):
            restore = ids_restore[channel]
            if kept[channel] == 0:
                n_tokens = restore.shape[1]
                queries = self.mask_token.to(context.dtype).expand(context.shape[0], n_tokens, -1)
                x = torch.cat([context, queries + self.decoder_pos_embed[:, :n_tokens]], dim=1)  # (B, ΣK + N, F_dec)
                predictions[channel] = self.decoder_preds[channel](self.decoders[channel](x)[:, -n_tokens:])
                continue
            visible = self.decoder_embed(chunk)  # (B, K, F_dec)
            x = (
                unshuffle(visible, self.mask_token, restore) + self.decoder_pos_embed[:, : restore.shape[1]]
            )  # (B, N, F_dec)
            predictions[channel] = self.decoder_preds[channel](self.decoders[channel](x))  # (B, N, E)
        return predictions

    def forward_parts(
        self,
        batch: Mapping[str, torch.Tensor],
        mask_ratio: float | None = None,
        generator: torch.Generator | None = None,
    ) -> MaskedFusion:
        """The masked pass without the losses (every configured channel required)."""
        ratio = self.config.mask_ratio if mask_ratio is None else mask_ratio
        signals = self._inputs(batch, require_all=True)
        n_epochs = next(iter(signals.values())).shape[0]
        if self.training and n_epochs < 2:
            raise ValueError(
                "SynthSleepNet: training needs at least 2 epochs per batch (contrastive negatives, "
                f"BatchNorm), got {n_epochs}"
            )
        tokens, masks, ids_restore, fused, kept = self.forward_encoder(signals, ratio, generator)
        return MaskedFusion(tokens, masks, fused, self.forward_decoder(fused, ids_restore, kept))

    def forward_loss(self, parts: MaskedFusion) -> dict[str, torch.Tensor]:
        """Losses of a masked pass: `loss` = `recon` + alpha * `contrastive`, per-channel `recon_<ch>` and
        `contrastive_<ch>`, and the detached `contrastive_accuracy` (mean over channels)."""
        out: dict[str, torch.Tensor] = {}
        recon, contrastive, accuracy = [], [], []
        fusion_z = self.fusion_projector(parts.fused.mean(dim=1))  # (B, P) from the mean fusion token
        for channel, tokens in parts.tokens.items():
            target = tokens.detach()  # stop-gradient: the encoder is not pulled towards the prediction
            recon_m, _ = self.reconstruction(parts.predictions[channel], target, parts.masks[channel])
            channel_z = self.channel_projectors[channel](tokens.mean(dim=1))  # (B, P) from the mean encoder token
            contrastive_m, info = self.contrastive(fusion_z, channel_z)
            out[f"recon_{channel}"], out[f"contrastive_{channel}"] = recon_m, contrastive_m
            recon.append(recon_m)
            contrastive.append(contrastive_m)
            accuracy.append(info["accuracy"])
        # the mean over channels with a masked token (all but the seen ones of `channel` mode), weighted rather than
        # selected: no host sync, and every decoder stays in the graph (zero gradient), as distributed runs need
        has_masked = torch.stack([mask.amax() for mask in parts.masks.values()]).to(recon[0].dtype)  # (M,)
        out["recon"] = (torch.stack(recon) * has_masked).sum() / has_masked.sum().clamp_min(1.0)
        out["contrastive"] = torch.stack(contrastive).mean()
        out["contrastive_accuracy"] = torch.stack(accuracy).mean().detach()
        out["loss"] = out["recon"] + self.config.alpha * out["contrastive"]
        return out

    def forward(
        self,
        batch: Mapping[str, torch.Tensor],
        mask_ratio: float | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        """Hybrid self-supervised loss of a batch: dict channel → (B, 3000) or (B, 300) (every configured channel).
        B >= 2 in train mode (BatchNorm, in-batch negatives)."""
        return self.forward_loss(self.forward_parts(batch, mask_ratio, generator))

    # ------------------------------------------------------------------ representation
    def encode(self, batch: Mapping[str, torch.Tensor], return_channels: bool = False):
        """Representation without masking: pooled (B, F) = mean fusion token, tokens (B, ΣN, F).

        `batch`: dict channel → (B, 3000) or (B, 300) epochs (other keys are ignored). A configured channel that is
        absent (or None) is dropped from the fusion input, never zero-filled; a warning names it (once per set of
        missing channels). With `return_channels=True` the channels actually used are returned as a third element.
        """
        signals = self._inputs(batch, require_all=False)
        used = tuple(signals)
        missing = tuple(ch for ch in self.channels if ch not in signals)
        if missing and missing not in self._reported_missing:
            self._reported_missing.add(missing)
            warnings.warn(
                f"SynthSleepNet.encode: channel(s) {list(missing)} missing from the input; the fusion "
                f"uses {list(used)} only (dropped, not zero-filled)",
                stacklevel=2,
            )
        embedded = [self._embed(ch, self.encoders[ch](signal)) for ch, signal in signals.items()]  # (B, N, F) each
        tokens = self.fusion(torch.cat(embedded, dim=1))  # (B, ΣN, F)
        pooled = tokens.mean(dim=1)  # (B, F)
        return (pooled, tokens, used) if return_channels else (pooled, tokens)

    @property
    def embed_dim(self) -> int:
        return self.config.fusion_dim

    # ------------------------------------------------------------------ bookkeeping
    def summary(self) -> str:
        """One line for the start of a script: preset, channels and encoders, parameter counts, widths."""
        c = self.config
        frozen = sum(count_parameters(e) - count_parameters(e, trainable_only=True) for e in self.encoders.values())
        lora = sum(p.numel() for e in self.encoders.values() for p in lora_parameters(e).values())
        encoders = ", ".join(f"{ch}:{e.config.preset}/{e.embed_dim}d/{e.n_frames}f" for ch, e in self.encoders.items())
        return (
            f"SynthSleepNet[{c.preset}] {count_parameters(self) / 1e6:.2f} M params "
            f"({count_parameters(self, trainable_only=True) / 1e6:.2f} M trainable; frozen encoders "
            f"{frozen / 1e6:.2f} M, LoRA {lora / 1e3:.1f} k: rank {c.lora_rank}, alpha {c.lora_alpha:g}"
            f"{', rs' if c.lora_rslora else ''}); channels {encoders}; fusion {c.fusion_dim}/{c.fusion_heads}h"
            f" x{c.fusion_depth}, decoders {c.decoder_dim}/{c.decoder_heads}h x{c.decoder_depth}, mask "
            f"{c.mask_ratio:g}{'' if c.mask_mode == 'independent' else f' ({c.mask_mode})'}, tau {c.temperature:g}, "
            f"alpha {c.alpha:g}"
        )


def build_synthsleepnet(
    config: SynthSleepNetConfig | Mapping[str, Any] | str, encoders: Mapping[str, NeuroNet] | None = None
) -> SynthSleepNet:
    """SynthSleepNet from a config, a config dict (as saved in a checkpoint) or a preset name, with pretrained
    `encoders` (channel → NeuroNet) or, without them, encoders rebuilt from `config.encoders`."""
    if isinstance(config, str):
        config = synthsleepnet_config(config)
    elif isinstance(config, Mapping):
        config = SynthSleepNetConfig.from_dict(config)
    elif not isinstance(config, SynthSleepNetConfig):
        raise TypeError(
            f"build_synthsleepnet needs a SynthSleepNetConfig, dict or preset name, got {type(config).__name__}"
        )
    return SynthSleepNet(config, encoders)
