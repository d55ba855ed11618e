"""Downstream models (docs/models.md §3.3; docs/evaluation.md §5): MLP head, backbone-as-epoch-encoder, per-epoch and temporal classifiers.

    EpochEncoder        backbone (NeuroNet or SynthSleepNet) → one pooled vector per 30-s epoch, (N, D)
    MLPHead             (..., D) → (..., C): Linear → BN → ELU → Dropout per hidden width, then Linear
    EpochClassifier     EpochEncoder → MLPHead                       (linear probe; supervised from scratch)
    TemporalClassifier  EpochEncoder per epoch → s = norm(v); y = s + Mamba2(s) [+ R(Mamba2_b(R(s))), R: time
                        reversed] → MLPHead at every position (fine-tuning over windows of T consecutive epochs
                        of one recording)

An `EpochEncoder` has one of three modes:
- `frozen`: nothing trains, every submodule stays in eval mode (BatchNorm statistics never move); the linear
  probe runs it once per split under no_grad and trains the head on the cached vectors.
- `lora`: the pretrained encoders' earlier LoRA adapters (SynthSleepNet pretraining) are merged into their
  weights and new LoRA adapters (default rank 4, alpha 8) are added on the attention output projections; the
  encoders' other weights stay frozen and in eval mode. A SynthSleepNet's adapters and fusion transformer train
  unless `tune_fusion=False`; every BatchNorm of the backbone stays in eval mode (pretrained statistics): batches
  of a few windows of consecutive, strongly correlated epochs give batch statistics unlike the population's, so
  training in batch-statistics mode would learn a representation that eval mode does not reproduce.
- `full`: every weight trains and every submodule follows train()/eval() (supervised from scratch: random init).
  (The training scripts give every BatchNorm bias-corrected running statistics, `--debias-batchnorm`,
  `utils.batchnorm`, so a randomly initialised encoder is usable in eval mode after a few steps.)
The mode decides train/eval of every part in one place, `EpochEncoder.train()`: code that evaluates a model
calls `model.eval()` and later `model.train(mode)`, and never sets a submodule's flag itself.
A unimodal NeuroNet serves exactly one channel (of its rate: a respiratory NeuroNet takes a 10-Hz channel); a
SynthSleepNet serves its channels, electrophysiology and respiratory alike (a subset may be given;
a channel missing from the input is dropped from the fusion, as `SynthSleepNet.encode` documents). The
SynthSleepNet's pretraining-only parts (decoders, projectors, mask token, losses) are removed.

Every model returns its `to_config()`; `build_downstream_model(kind, config)` rebuilds the same module structure
(random weights) from a checkpoint's `model_kind` and `model_config`, so a run's checkpoint loads by itself.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from models.frames import frame_starts
from models.loading import (
    BUILDERS,
    EPOCH_CLASSIFIER,
    MLP_HEAD,
    NEURONET,
    SYNTHSLEEPNET,
    TEMPORAL_CLASSIFIER,
)
from models.lora import LoraSettings, add_lora, freeze, merge_lora
from models.mamba import MAMBA_DEFAULTS, ResidualMamba
from models.neuronet import NeuroNet
from models.synthsleepnet import ChannelEncoder, SynthSleepNet

ENCODER_MODES: tuple[str, ...] = ("frozen", "lora", "full")
TOKEN_SOURCES: tuple[str, ...] = ("fusion", "encoder")  # what `EpochEncoder.frame_tokens` reads
# how `EpochEncoder` pools a SynthSleepNet's fused tokens into one vector per epoch: "mean" over every token (D
# numbers); "channel": the mean token of each channel, concatenated (C·D), as the hand-crafted features keep
# channels apart; "channel_stats": each channel's mean and standard deviation over its frames (2·C·D), so what
# changes within the 30 s (a spindle, a K-complex, an eye movement in one 4-s frame) is not averaged away
POOLINGS: tuple[str, ...] = ("mean", "channel", "channel_stats")
PER_CHANNEL_POOLINGS: tuple[str, ...] = ("channel", "channel_stats")  # a SynthSleepNet with every channel present
NIGHT_NORMS = ("none", "zscore")  # how a night's vectors are standardised before a head (downstream.cache)
FINE_TUNING_LORA = LoraSettings(rank=4, alpha=8.0)  # docs/models.md §3.3: new LoRA (rank 4, alpha 8) while fine-tuning
# SynthSleepNet attributes used only by the self-supervised objective (removed for downstream use).
_PRETRAINING_PARTS: tuple[str, ...] = (
    "decoder_embed",
    "mask_token",
    "decoders",
    "decoder_preds",
    "fusion_projector",
    "channel_projectors",
    "reconstruction",
    "contrastive",
)


class MLPHead(nn.Module):
    """Classifier head: per hidden width Linear → BatchNorm1d → ELU → Dropout, then Linear to `n_classes`.

    Input (..., in_dim) → logits (..., n_classes); leading dimensions are flattened for the BatchNorm, so a
    (B, T, D) sequence is normalised over all B·T positions. Train mode needs at least 2 vectors per call.
    With `neighbour_epochs` K > 0 each input is an epoch's `in_dim`-d vector with those of its K neighbours on
    each side, (..., (2K + 1) in_dim) as `downstream.cache.neighbour_vectors` lays them out: such a head
    classifies the vectors of whole recordings, never an epoch alone. With `night_norm` "zscore" it reads vectors
    standardised over their night (`downstream.cache.night_normalised`): whole recordings again.
    """

    def __init__(
        self,
        in_dim: int,
        n_classes: int,
        hidden: Sequence[int] = (256, 256),
        dropout: float = 0.5,
        neighbour_epochs: int = 0,
        night_norm: str = "none",
    ):
        super().__init__()
        if in_dim < 1 or n_classes < 2:
            raise ValueError(f"MLPHead: need in_dim >= 1 and n_classes >= 2, got {in_dim}, {n_classes}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"MLPHead: dropout must be in [0, 1), got {dropout}")
        if isinstance(neighbour_epochs, bool) or not isinstance(neighbour_epochs, int) or neighbour_epochs < 0:
            raise ValueError(f"MLPHead: neighbour_epochs must be an integer >= 0, got {neighbour_epochs!r}")
        self.in_dim, self.n_classes, self.neighbour_epochs = int(in_dim), int(n_classes), int(neighbour_epochs)
        self.input_dim = self.in_dim * (2 * self.neighbour_epochs + 1)  # the epoch's vector and its neighbours'
        if night_norm not in NIGHT_NORMS:
            raise ValueError(f"MLPHead: night_norm must be one of {NIGHT_NORMS}, got {night_norm!r}")
        self.night_norm = night_norm  # how the vectors it reads were standardised over their night
        self.hidden, self.dropout = tuple(int(h) for h in hidden), float(dropout)
        layers: list[nn.Module] = []
        width = self.input_dim
        for size in self.hidden:
            layers += [nn.Linear(width, size), nn.BatchNorm1d(size), nn.ELU(), nn.Dropout(self.dropout)]
            width = size
        layers.append(nn.Linear(width, self.n_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if features.shape[-1] != self.input_dim:
            layout = (
                f" = (2 x {self.neighbour_epochs} + 1) x {self.in_dim}: this head reads {self.neighbour_epochs} "
                "neighbouring epochs on each side (lay vectors out with downstream.cache.neighbour_vectors)"
                if self.neighbour_epochs
                else ""
            )
            raise ValueError(f"MLPHead: expected (..., {self.input_dim}) features{layout}, got {tuple(features.shape)}")
        flat = features.reshape(-1, self.input_dim)  # (N, (2K + 1) D), N = product of leading dimensions
        return self.layers(flat).reshape(*features.shape[:-1], self.n_classes)  # (..., C)

    def to_config(self) -> dict[str, Any]:
        return {
            "in_dim": self.in_dim,
            "n_classes": self.n_classes,
            "hidden": list(self.hidden),
            "dropout": self.dropout,
            # only when set, so a head without neighbours keeps the config that earlier code reads
            **({"neighbour_epochs": self.neighbour_epochs} if self.neighbour_epochs else {}),
            **({"night_norm": self.night_norm} if self.night_norm != "none" else {}),
        }


class EpochEncoder(nn.Module):
    """A pretrained (or randomly initialised) backbone as an epoch encoder: {channel: (N, n_samples)} → (N, D).

    Args:
        backbone: a NeuroNet (one channel) or a SynthSleepNet. It is taken over (modified in place).
        channels: the channels read from the input dict; a NeuroNet takes exactly one.
        mode: "frozen", "lora" or "full" (module docstring).
        lora: settings of the new adapters in "lora" mode (default rank 4, alpha 8, rsLoRA, on attn.proj).
        tune_fusion: "lora" mode with a SynthSleepNet: whether its adapters and fusion transformer train.
        pooling: "mean" (the mean fused token, D), "channel" (each channel's mean fused token, C·D) or
            "channel_stats" (each channel's mean and standard deviation, 2·C·D); the per-channel ones need a
            SynthSleepNet, and every input must then hold every channel; see POOLINGS.
    """

    def __init__(
        self,
        backbone: NeuroNet | SynthSleepNet,
        channels: Sequence[str],
        mode: str = "frozen",
        lora: LoraSettings | None = None,
        tune_fusion: bool = True,
        pooling: str = "mean",
    ):
        super().__init__()
        if mode not in ENCODER_MODES:
            raise ValueError(f"EpochEncoder: mode must be one of {ENCODER_MODES}, got {mode!r}")
        if pooling not in POOLINGS:
            raise ValueError(f"EpochEncoder: pooling must be one of {POOLINGS}, got {pooling!r}")
        if pooling in PER_CHANNEL_POOLINGS and not isinstance(backbone, SynthSleepNet):
            raise ValueError("EpochEncoder: per-channel pooling needs a SynthSleepNet; a NeuroNet reads one channel")
        self.pooling = pooling
        self.channels: tuple[str, ...] = tuple(channels)
        self.mode, self.tune_fusion = mode, bool(tune_fusion)
        self.lora = lora if lora is not None else FINE_TUNING_LORA
        if not self.channels:
            raise ValueError("EpochEncoder: no channel given")
        if isinstance(backbone, NeuroNet):
            self.backbone_kind = NEURONET
            if len(self.channels) != 1:
                raise ValueError(
                    f"EpochEncoder: a unimodal NeuroNet encodes one channel, got {list(self.channels)}; "
                    "use a SynthSleepNet backbone for several channels"
                )
            self.backbone_config = backbone.config.to_dict()
            self.net: nn.Module = ChannelEncoder(backbone, self.lora)  # frozen, new LoRA on attn.proj
            if mode != "lora":
                merge_lora(self.net)  # B = 0: exactly the pretrained weights
            self._dim = backbone.config.encoder_dim
        elif isinstance(backbone, SynthSleepNet):
            self.backbone_kind = SYNTHSLEEPNET
            unknown = [c for c in self.channels if c not in backbone.channels]
            if unknown:
                raise ValueError(
                    f"EpochEncoder: channel(s) {unknown} are not channels of the SynthSleepNet "
                    f"{list(backbone.channels)}"
                )
            self.backbone_config = backbone.config.to_dict()
            for part in _PRETRAINING_PARTS:
                if hasattr(backbone, part):
                    delattr(backbone, part)
            for encoder in backbone.encoders.values():
                merge_lora(encoder)  # fold the pretraining adapters into the frozen weights
                if mode == "lora":
                    with warnings.catch_warnings():  # peft notes the merged adapter's leftover config: expected
                        warnings.filterwarnings("ignore", message=".*Already found a `peft_config` attribute")
                        add_lora(encoder.autoencoder.encoder, self.lora)
            if mode == "lora" and not self.tune_fusion:
                for part in (backbone.adapters, backbone.fusion):
                    freeze(part)
                backbone.modality_embed.requires_grad_(False)
            self.net = backbone
            self._dim = backbone.config.fusion_dim
        else:
            raise TypeError(
                f"EpochEncoder: backbone must be a NeuroNet or SynthSleepNet, got {type(backbone).__name__}"
            )
        if mode == "frozen":
            self.requires_grad_(False)
        elif mode == "full":
            self.requires_grad_(True)
        self.train(False)

    @property
    def embed_dim(self) -> int:
        """Width of `forward`'s vectors: the backbone's, times the channels with per-channel pooling."""
        per_channel = {"channel": 1, "channel_stats": 2}.get(self.pooling, 0)
        return self._dim * (per_channel * len(self.channels) if per_channel else 1)

    def train(self, mode: bool = True) -> EpochEncoder:
        super().train(mode)  # ChannelEncoder keeps its frozen weights in eval mode here
        if self.mode == "frozen":
            for module in self.modules():
                module.training = False
        elif self.mode == "full":  # nothing is frozen: every BatchNorm and dropout follows `mode`
            for module in self.modules():
                module.training = mode
        else:  # "lora": BatchNorm keeps the pretrained statistics (its affine weights may still train)
            for module in self.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.training = False
        return self

    def forward(self, signals: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """{channel: (N, n_samples)} robust-scaled epochs (3000 samples at 100 Hz, 300 for the 10-Hz respiratory
        channels) → pooled representation (N, embed_dim): the mean token (D), or with per-channel pooling
        `channel_vectors` (C·D, or 2·C·D with the spread)."""
        if self.pooling in PER_CHANNEL_POOLINGS:
            return self.channel_vectors(signals, spread=self.pooling == "channel_stats")
        if self.backbone_kind == NEURONET:
            channel = self.channels[0]
            if signals.get(channel) is None:
                raise ValueError(f"EpochEncoder: input has no channel {channel!r} (keys: {sorted(signals)})")
            return self.net(signals[channel]).mean(dim=1)  # tokens (N, n_frames, D) → (N, D)
        present = {ch: signals[ch] for ch in self.channels if signals.get(ch) is not None}
        return self.net.encode(present)[0]  # mean fusion token (N, D)

    def channel_encoder(self, channel: str) -> ChannelEncoder:
        """The frozen (LoRA-adapted) encoder that reads `channel`."""
        return self.net if self.backbone_kind == NEURONET else self.net.encoders[channel]

    def frame_centres_s(self, channel: str) -> torch.Tensor:
        """Centre of each of `channel`'s frames, in seconds from the epoch start: (N,) float64 (the framer's
        frame starts + half a window)."""
        framer = self.channel_encoder(channel).framer
        starts = torch.tensor(
            frame_starts(framer.n_samples, framer.window_samples, framer.step_samples), dtype=torch.float64
        )
        return (starts + framer.window_samples / 2) / self.channel_encoder(channel).config.fs  # (N,)

    def token_dim(self, source: str) -> int:
        """Width of one per-frame token: "encoder" (a channel encoder's width; the first channel's) or "fusion"."""
        if source == "fusion" and self.backbone_kind == SYNTHSLEEPNET:
            return self._dim
        return self.channel_encoder(self.channels[0]).embed_dim

    def frame_tokens(self, signals: Mapping[str, torch.Tensor], source: str = "fusion") -> dict[str, torch.Tensor]:
        """Per-frame tokens of each present channel: {channel: (N_epochs, N_frames, D)}, in channel order.

        `source` "encoder": each channel's encoder tokens (CLS excluded), before any fusion; "fusion" (a
        SynthSleepNet only): the fusion transformer's output tokens at that channel's frame positions, every
        present channel fused together (no masking), as in `forward`."""
        present = {ch: signals[ch] for ch in self.channels if signals.get(ch) is not None}
        if not present:
            raise ValueError(
                f"EpochEncoder: input holds none of the channels {list(self.channels)} (keys: {sorted(signals)})"
            )
        if source not in TOKEN_SOURCES:
            raise ValueError(f"EpochEncoder: token source must be one of {TOKEN_SOURCES}, got {source!r}")
        if source == "fusion" and self.backbone_kind == NEURONET:
            raise ValueError("EpochEncoder: fusion tokens need a SynthSleepNet; a NeuroNet has encoder tokens only")
        if source == "encoder":
            return {ch: self.channel_encoder(ch)(x) for ch, x in present.items()}  # (n, N_m, E) each
        _, tokens, used = self.net.encode(present, return_channels=True)  # (n, ΣN_m, F), chunks in `used` order
        sizes = [self.net.encoders[ch].n_frames for ch in used]
        return dict(zip(used, torch.split(tokens, sizes, dim=1)))  # (n, N_m, F) each

    def channel_vectors(self, signals: Mapping[str, torch.Tensor], spread: bool = False) -> torch.Tensor:
        """{channel: (N, n_samples)} → (N, C·D): the mean fused token of each of `channels` (a SynthSleepNet; every
        channel present), concatenated in that order; with `spread`, (N, 2·C·D): each channel's mean, then each
        channel's standard deviation over its frames (biased). `forward` averages the same tokens over all
        channels at once; this keeps the channels apart, as the hand-crafted features do."""
        if self.backbone_kind != SYNTHSLEEPNET:
            raise ValueError("EpochEncoder: per-channel vectors need a SynthSleepNet; a NeuroNet reads one channel")
        missing = [ch for ch in self.channels if signals.get(ch) is None]
        if missing:
            raise ValueError(f"EpochEncoder: per-channel vectors need every channel; input lacks {missing}")
        tokens = self.frame_tokens(signals, "fusion")  # {channel: (N, N_m, D)}
        means = [tokens[ch].mean(dim=1) for ch in self.channels]
        spreads = [tokens[ch].std(dim=1, unbiased=False) for ch in self.channels] if spread else []
        return torch.cat(means + spreads, dim=1)

    def to_config(self) -> dict[str, Any]:
        return {
            "backbone_kind": self.backbone_kind,
            "backbone_config": self.backbone_config,
            "channels": list(self.channels),
            "mode": self.mode,
            "lora": self.lora.to_dict(),
            "tune_fusion": self.tune_fusion,
            # only when set, so a mean-pooled encoder keeps the config that earlier code reads
            **({"pooling": self.pooling} if self.pooling != "mean" else {}),
        }


def build_epoch_encoder(config: Mapping[str, Any]) -> EpochEncoder:
    """The EpochEncoder structure of `EpochEncoder.to_config()` with random weights (load a state dict next)."""
    kind = config["backbone_kind"]
    if kind not in BUILDERS:
        raise ValueError(f"EpochEncoder config: unknown backbone kind {kind!r}; expected one of {sorted(BUILDERS)}")
    backbone = BUILDERS[kind](dict(config["backbone_config"]))
    return EpochEncoder(
        backbone,
        config["channels"],
        config["mode"],
        LoraSettings(**config["lora"]),
        config.get("tune_fusion", True),
        config.get("pooling", "mean"),
    )


class EpochClassifier(nn.Module):
    """EpochEncoder → MLPHead: {channel: (N, n_samples)} → logits (N, C)."""

    def __init__(self, encoder: EpochEncoder, head: MLPHead):
        super().__init__()
        if head.in_dim != encoder.embed_dim:
            raise ValueError(f"EpochClassifier: head takes {head.in_dim}-d vectors, encoder gives {encoder.embed_dim}")
        self.encoder, self.head = encoder, head

    def forward(self, signals: Mapping[str, torch.Tensor]) -> torch.Tensor:
        if self.head.night_norm != "none":
            raise ValueError(
                f"EpochClassifier: the head reads vectors standardised over their night ({self.head.night_norm}); "
                "classify a recording's encoder vectors (downstream.cache.night_normalised), not single epochs"
            )
        if self.head.neighbour_epochs:
            raise ValueError(
                f"EpochClassifier: the head reads {self.head.neighbour_epochs} neighbouring epochs on each side; "
                "classify a recording's encoder vectors (downstream.cache.neighbour_vectors), not single epochs"
            )
        return self.head(self.encoder(signals))  # (N, C)

    def to_config(self) -> dict[str, Any]:
        return {"encoder": self.encoder.to_config(), "head": self.head.to_config()}


class TemporalClassifier(nn.Module):
    """Per-epoch encoder, residual Mamba2 temporal context, shared head at every position (docs/models.md §3.3).

    {channel: (B, T, n_samples)} windows of T consecutive epochs → logits (B, T, C). `context` holds
    `ResidualMamba` arguments: norm ("layer" or "batch"), direction ("forward": one causal Mamba2 scan, the
    published model and the value of checkpoints that do not name one; "bidirectional": a second scan backwards
    in time), backend, and Mamba2 sizes (d_state 16, d_conv 4, expand 2, headdim 64 by default). Windows padded at
    the end pass `valid` (B, T) bool; padded positions then never change real ones through the scans, in either
    direction (in training mode they still enter BatchNorm statistics: the head's, and the context's with norm
    "batch").
    """

    def __init__(self, encoder: EpochEncoder, head: MLPHead, context: Mapping[str, Any] | None = None):
        super().__init__()
        if head.in_dim != encoder.embed_dim:
            raise ValueError(
                f"TemporalClassifier: head takes {head.in_dim}-d vectors, encoder gives {encoder.embed_dim}"
            )
        if head.neighbour_epochs:
            raise ValueError(
                f"TemporalClassifier: the head's neighbour_epochs must be 0 (its Mamba2 gives the temporal context), "
                f"got {head.neighbour_epochs}"
            )
        self.context_config = {"norm": "layer", "backend": "auto", **MAMBA_DEFAULTS, **dict(context or {})}
        self.encoder, self.head = encoder, head
        self.context = ResidualMamba(encoder.embed_dim, **self.context_config)

    def forward(self, signals: Mapping[str, torch.Tensor], valid: torch.Tensor | None = None) -> torch.Tensor:
        shapes = {ch: tuple(x.shape) for ch, x in signals.items() if isinstance(x, torch.Tensor)}
        window = next((x for ch, x in signals.items() if ch in self.encoder.channels and x is not None), None)
        if window is None or window.dim() != 3:
            raise ValueError(
                f"TemporalClassifier: expected {{channel: (batch, T, samples)}} for channels "
                f"{list(self.encoder.channels)}, got shapes {shapes}"
            )
        batch, length = window.shape[:2]
        flat = {
            ch: x.reshape(batch * length, x.shape[-1])
            for ch, x in signals.items()
            if ch in self.encoder.channels and x is not None
        }  # (B*T, n_samples) per channel
        vectors = self.encoder(flat).reshape(batch, length, -1)  # (B, T, D)
        return self.classify_vectors(vectors, valid)  # (B, T, C)

    def classify_vectors(self, vectors: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """Per-epoch vectors (B, T, D), e.g. cached from the frozen encoder, and their `valid` mask (B, T) bool
        (None: no padding) → logits (B, T, C)."""
        return self.head(self.context(vectors, valid))

    def to_config(self) -> dict[str, Any]:
        return {
            "encoder": self.encoder.to_config(),
            "head": self.head.to_config(),
            "context": dict(self.context_config),
        }


class ContextHead(nn.Module):
    """The temporal context and head of a TemporalClassifier, trained alone on vectors of the frozen encoder
    (the first phase of fine-tuning): (B, T, D) → logits (B, T, C). Shares the parameters of `temporal`, so
    training this trains them."""

    def __init__(self, temporal: TemporalClassifier):
        super().__init__()
        self.context, self.head = temporal.context, temporal.head
        self._config = {"head": temporal.head.to_config(), "context": dict(temporal.context_config)}

    def forward(self, vectors: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.context(vectors, valid))  # (B, T, C)

    def to_config(self) -> dict[str, Any]:
        return dict(self._config)


def build_downstream_model(kind: str, config: Mapping[str, Any]) -> nn.Module:
    """A downstream model's structure from a checkpoint's `model_kind` and `model_config` (random weights)."""
    if kind == MLP_HEAD:
        return MLPHead(**config)
    if kind == EPOCH_CLASSIFIER:
        return EpochClassifier(build_epoch_encoder(config["encoder"]), MLPHead(**config["head"]))
    if kind == TEMPORAL_CLASSIFIER:
        return TemporalClassifier(
            build_epoch_encoder(config["encoder"]), MLPHead(**config["head"]), config.get("context")
        )
    if kind in BUILDERS:  # a pretraining checkpoint
        raise ValueError(
            f"a pretrained {kind} backbone, not a downstream run: train downstream/linear_probing/train.py or "
            "downstream/fine_tuning/train.py with it as --backbone, and give that run"
        )
    raise ValueError(
        f"unknown downstream model kind {kind!r}; expected {MLP_HEAD}, {EPOCH_CLASSIFIER} or {TEMPORAL_CLASSIFIER}"
    )
