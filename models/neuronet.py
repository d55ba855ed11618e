"""NeuroNet: frame CNN + masked autoencoder ViT + contrastive projector, trained with a hybrid loss.

One model per modality (docs/models.md §3.1). A 30-s epoch at 100 Hz is cut into overlapping frames
(`models.frames`), each frame becomes one token (`models.frame_backbone`), and a masked autoencoder
ViT learns from two independently masked views of the same frame tokens:

    loss = MSE(view 1, masked tokens) + MSE(view 2, masked tokens) + alpha * NT-Xent(CLS 1, CLS 2)

The reconstruction target is the frame tokens themselves (latent target). As published, gradients
flow through the target by default; `detach_target=True` stops them. `reconstruction_target` "raw" (the frame's
samples) or "spectrum" (the frame's log power spectrum) predicts a fixed function of the input instead, through
its own output layer; neither carries a gradient (benchmarks/ssl_variants.py compares the targets).

Differences from the published code, on purpose: fixed 1-D sin-cos positions (the published 2-D table
spends half its width on a constant axis); exactly round(N * (1 - mask_ratio)) tokens are kept; the two
views run through encoder, decoder and projector as one 2B batch (identical maths per sample, but the
projector's BatchNorm sees both views at once, as in SimCLR; this also makes batch size 1 work).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from models.config_fields import check_field_types
from models.frame_backbone import (
    LogSpectrumFrameBackbone,
    MultiScaleFrameBackbone,
    SharedConvFrameBackbone,
    log_power_spectrum,
)
from models.frames import EpochFramer
from models.objectives import MaskedTokenMSE, NTXentLoss
from models.transformer import TransformerStack, init_vit_weights, n_kept, random_masking, sincos_positions, unshuffle


@dataclass
class NeuroNetConfig:
    """Every size and training constant of one NeuroNet; saved in checkpoints via `to_dict`.

    Units: `fs` in Hz; `epoch_s`, `frame_window_s`, `frame_step_s` in seconds.
    """

    preset: str = "B"
    fs: float = 100.0
    epoch_s: float = 30.0
    frame_window_s: float = 4.0
    frame_step_s: float = 1.0
    # frame backbone: "per_frame" convolves every frame (published); "shared_conv" convolves the epoch once
    # and pools the feature map per frame (models/frame_backbone.py SharedConvFrameBackbone); "log_spectrum"
    # embeds each frame's log power spectrum (LogSpectrumFrameBackbone; frame_token_dim, default 128)
    frame_tokenizer: str = "per_frame"
    stem_channels: int = 64
    backbone_channels: tuple[int, ...] = (64, 128, 128, 256)
    backbone_strides: tuple[int, ...] = (1, 1, 2, 2)
    branch_kernels: tuple[int, ...] = (3, 5, 7)
    pool_kernels: tuple[int, ...] = (16, 11, 6)
    se_reduction: int = 16
    frame_token_dim: int | None = None  # None: half the flattened CNN output (3328 at B)
    frame_segments: int = 4  # shared_conv only: equal parts of a frame averaged separately (4 x 1 s)
    # masked autoencoder
    encoder_dim: int = 768
    encoder_heads: int = 8
    encoder_depth: int = 4
    decoder_dim: int = 256
    decoder_heads: int = 8
    decoder_depth: int = 3
    mlp_ratio: float = 4.0
    mask_ratio: float = 0.8
    # contrastive head and loss
    projector_hidden: tuple[int, ...] = (1024, 512)
    temperature: float = 0.05
    alpha: float = 1.0
    detach_target: bool = False  # "tokens" target only: stop gradients through it
    # what the decoder predicts at masked frames: "tokens" (published: the frame CNN's tokens), "raw" (the frame's
    # samples) or "spectrum" (log power of the frame's Hann-windowed FFT, DC dropped); see `frame_targets`
    reconstruction_target: str = "tokens"
    # the contrastive views: "same" (published: two masked copies of one epoch), "neighbour" (the epoch and
    # the same channel's epoch before or after it, each masked) or "shift" (the epoch and the window shifted by
    # up to positive_shift_s seconds, each masked); dataset/neighbours.py
    positive_pair: str = "same"
    positive_shift_s: float = 10.0

    def __post_init__(self) -> None:
        check_field_types(self, "NeuroNet config")
        for dim, heads, what in (
            (self.encoder_dim, self.encoder_heads, "encoder"),
            (self.decoder_dim, self.decoder_heads, "decoder"),
        ):
            if dim <= 0 or heads <= 0 or dim % heads or dim % 2:
                raise ValueError(f"NeuroNet config: {what} width {dim} must be even and divisible by {heads} heads")
        if not self.projector_hidden:
            raise ValueError("NeuroNet config: projector_hidden needs at least one layer width")
        if self.temperature <= 0:
            raise ValueError(f"NeuroNet config: temperature must be positive, got {self.temperature}")
        if not 0 <= self.mask_ratio < 1:  # checked here, where an option is still a usage error, not at build
            raise ValueError(f"NeuroNet config: mask_ratio must be in [0, 1), got {self.mask_ratio}")
        if self.reconstruction_target not in RECONSTRUCTION_TARGETS:
            raise ValueError(
                f"NeuroNet config: reconstruction_target must be one of {list(RECONSTRUCTION_TARGETS)}, "
                f"got {self.reconstruction_target!r}"
            )
        if self.positive_pair not in POSITIVE_PAIRS:
            raise ValueError(
                f"NeuroNet config: positive_pair must be one of {list(POSITIVE_PAIRS)}, got {self.positive_pair!r}"
            )
        if self.positive_pair == "shift" and not 1 / self.fs <= self.positive_shift_s < self.epoch_s:
            raise ValueError(
                f"NeuroNet config: positive_shift_s must be in [{1 / self.fs:g}, {self.epoch_s:g}) s (one sample to "
                f"one epoch), got {self.positive_shift_s}"
            )
        if self.frame_tokenizer not in FRAME_TOKENIZERS:
            raise ValueError(
                f"NeuroNet config: frame_tokenizer must be one of {list(FRAME_TOKENIZERS)}, "
                f"got {self.frame_tokenizer!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> NeuroNetConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"NeuroNet config: unknown keys {unknown}; known keys are {sorted(known)}")
        return cls(**values)


FRAME_TOKENIZERS = ("per_frame", "shared_conv", "log_spectrum")
RECONSTRUCTION_TARGETS = ("tokens", "raw", "spectrum")
POSITIVE_PAIRS = ("same", "neighbour", "shift")

_PRESETS: dict[str, dict[str, Any]] = {
    # CPU tests and the demo: a training step at batch 32 well under 0.3 s on one core. The CNN's cost is
    # memory traffic over 27 frames x 3 branches, proportional to its width: 8/16/16/32 takes about twice as long
    "tiny": dict(
        stem_channels=4,
        backbone_channels=(4, 8, 8, 16),
        frame_token_dim=128,
        encoder_dim=64,
        encoder_heads=4,
        encoder_depth=2,
        decoder_dim=32,
        decoder_heads=4,
        decoder_depth=1,
        projector_hidden=(64, 32),
    ),
    # half-width frame backbone, smaller ViT
    "T": dict(
        stem_channels=32,
        backbone_channels=(32, 64, 64, 128),
        frame_token_dim=1024,
        encoder_dim=512,
        encoder_heads=8,
        encoder_depth=4,
        decoder_dim=192,
        decoder_heads=8,
        decoder_depth=1,
        projector_hidden=(1024, 512),
    ),
    # published SynthSleepNet unimodal model
    "B": dict(),
}
# compute-efficient CPU preset: tiny's widths and ViT, but the frame tokens come from ONE convolution pass
# over the 30-s epoch (feature stride 20 samples = 0.2 s; stage 2 max-pools by 5 where the per-frame CNN
# strides by 2 twice), pooled per 4-s frame, instead of a CNN run on each of the 27 overlapping frames (3.6x
# the epoch); same 27-frame geometry; no squeeze-excitation (global in time); token k sees frame k +- 3.9 s
_PRESETS["fast"] = {**_PRESETS["tiny"], "frame_tokenizer": "shared_conv", "backbone_strides": (1, 5, 1, 1)}
# the CPU recipe: tiny's ViT over tokens embedded from each frame's log power spectrum (no CNN: cheaper than
# `fast`), reconstructing the masked frames' log spectra. The log turns the power ratios between stages into
# differences a linear layer reads; on the variants benchmark this tokenizer gave the best probes of any
# variant, at random init as after pretraining (benchmarks/README.md)
_PRESETS["spectral"] = {**_PRESETS["tiny"], "frame_tokenizer": "log_spectrum", "reconstruction_target": "spectrum"}
PRESETS: tuple[str, ...] = tuple(_PRESETS)


def neuronet_config(preset: str = "B", **overrides: Any) -> NeuroNetConfig:
    """Config of a named preset ('tiny', 'T', 'B', 'fast', 'spectral'), with any field overridden by keyword."""
    if preset not in _PRESETS:
        raise ValueError(f"unknown NeuroNet preset {preset!r}; choose one of {list(_PRESETS)}")
    values = {**_PRESETS[preset], "preset": preset, **overrides}
    return NeuroNetConfig.from_dict(values)


# Respiratory channels (airflow, thor, abdo, spo2) arrive at 10 Hz: 300 samples per 30-s epoch (models/ may not
# import dataset/, so the rate is repeated here; tests/test_respiratory_encoders.py checks it against RESP_FS).
RESP_FS = 10.0
ELECTROPHYSIOLOGY_FS = 100.0


def respiratory_geometry(preset: str = "B") -> dict[str, Any]:
    """The frame geometry of a 10-Hz respiratory NeuroNet, as overrides of `preset` (docs/models.md
    "Respiratory encoders"): 12 frames of 8 s every 2 s, tokenized by the `shared_conv` CNN at stride 0.4 s
    (by their log spectra for a `log_spectrum` preset such as `spectral`).

    Why: an 8-s frame holds about two breaths (adults breathe every 3-5 s), so each token sees breath amplitude
    and rhythm, the quantities an apnea (flow near zero for >= 10 s) or a hypopnea (amplitude down 30 %) changes;
    tokens every 2 s resolve the onset and end of 10-90-s events and the 20-30-s-late SpO2 drop. The published
    per-frame CNN cannot take such frames: its stem divides a frame by 4 (80 samples -> 20) and its kernel-7
    convolutions, padded by 1 only, shorten it by 4 samples each (20 -> 12 -> 4 -> nothing at the first strided
    stage); even the kernel-3 branch ends with 5 samples, fewer than its average pool of 16. The `shared_conv`
    tokenizer pads its convolutions to keep the length;
    with every stage at stride 1 its feature stride is the stem's 4 samples (0.4 s), the finest it has, so the
    frame (80 samples = 20 features) and step (20 samples = 5 features) are whole multiples and the four segment
    means (2 s each) fit the step exactly. A 1-s step (10 samples) is not a multiple of 4, hence 2 s. The
    receptive field is 202 samples (+-9.9 s beyond each frame), about one event, so a token also sees the breaths
    around it. Channel widths, token width, ViT and mask ratio stay the preset's: `--preset` works as for EEG.
    """
    base = _PRESETS[preset] if preset in _PRESETS else {}
    stages = len(base.get("backbone_channels", NeuroNetConfig.backbone_channels))
    spectral = base.get("frame_tokenizer") == "log_spectrum"  # 8-s frames: 40 bins of 0.125 Hz up to 5 Hz
    return dict(
        fs=RESP_FS,
        frame_window_s=8.0,
        frame_step_s=2.0,
        frame_tokenizer="log_spectrum" if spectral else "shared_conv",
        backbone_strides=(1,) * stages,
        frame_segments=4,
    )


def neuronet_config_for_rate(preset: str, fs: float, **overrides: Any) -> NeuroNetConfig:
    """The config of `preset` for channels sampled at `fs`: the preset itself at 100 Hz (electrophysiology,
    unchanged), the preset with `respiratory_geometry` at 10 Hz; `overrides` apply last."""
    if fs == ELECTROPHYSIOLOGY_FS:
        return neuronet_config(preset, **overrides)
    if fs == RESP_FS:
        return neuronet_config(preset, **{**respiratory_geometry(preset), **overrides})
    raise ValueError(f"NeuroNet has presets for {ELECTROPHYSIOLOGY_FS:g}-Hz and {RESP_FS:g}-Hz channels, not {fs:g} Hz")


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter values (buffers excluded)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def epoch_frame_tokens(framer: EpochFramer, frame_backbone: nn.Module, epochs: torch.Tensor) -> torch.Tensor:
    """(B, n_samples) → (B, N, token_dim) with either frame tokenizer: the per-frame CNN takes the framer's
    overlapping frames; the shared-convolution one takes the whole epoch and pools its feature map per frame."""
    if isinstance(frame_backbone, SharedConvFrameBackbone):
        return frame_backbone(epochs)
    return frame_backbone(framer(epochs))


def frame_targets(frames: torch.Tensor, kind: str) -> torch.Tensor:
    """Fixed reconstruction targets of frames (B, N, L) samples, robust-scaled, without gradient: "raw" gives
    the frames themselves (B, N, L); "spectrum" the natural log of the power of each Hann-windowed frame's
    one-sided FFT, DC dropped (B, N, L // 2) (0.25-50 Hz in 0.25-Hz bins for 4-s frames at 100 Hz), standardised
    per frequency bin over the batch's frames. Both keep the differences in absolute power between frames and
    epochs of a night, which band-power features use. Why standardised: the log powers sit around -5 with a
    spread of a few units, and the decoder's output bias moves about lr per step, so an unstandardised target
    leaves an offset error of ~20 (10x the contrastive loss) that dominates the first thousand steps."""
    frames = frames.detach().float()
    if kind == "raw":
        return frames.contiguous()
    if kind == "spectrum":
        log_power = log_power_spectrum(frames).flatten(0, 1)  # (B N, L // 2)
        standardised = (log_power - log_power.mean(dim=0)) / (log_power.std(dim=0, unbiased=False) + 1e-3)
        return standardised.view(*frames.shape[:2], -1)  # (B, N, L // 2)
    raise ValueError(f"frame_targets: kind must be 'raw' or 'spectrum', got {kind!r}")


def frame_target_dim(window_samples: int, kind: str) -> int | None:
    """Width of `frame_targets` for frames of `window_samples`; None for the "tokens" target (the token width)."""
    return {"tokens": None, "raw": window_samples, "spectrum": window_samples // 2}[kind]


class MaskedAutoencoderViT(nn.Module):
    """MAE over frame tokens: (B, N, token_dim) → encoder latents and decoder predictions of every token
    (of width `target_dim` when given: a target other than the tokens)."""

    def __init__(
        self,
        token_dim: int,
        n_tokens: int,
        encoder_dim: int,
        encoder_heads: int,
        encoder_depth: int,
        decoder_dim: int,
        decoder_heads: int,
        decoder_depth: int,
        mlp_ratio: float = 4.0,
        target_dim: int | None = None,
    ):
        super().__init__()
        self.n_tokens = n_tokens
        self.patch_embed = nn.Linear(token_dim, encoder_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, encoder_dim))
        self.register_buffer("pos_embed", sincos_positions(n_tokens, encoder_dim)[None], persistent=False)  # (1, N, D)
        self.encoder = TransformerStack(encoder_dim, encoder_heads, encoder_depth, mlp_ratio)
        self.decoder_embed = nn.Linear(encoder_dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.register_buffer(
            "decoder_pos_embed", sincos_positions(n_tokens, decoder_dim)[None], persistent=False
        )  # (1, N, D_dec)
        self.decoder = TransformerStack(decoder_dim, decoder_heads, decoder_depth, mlp_ratio)
        self.decoder_pred = nn.Linear(decoder_dim, target_dim or token_dim)
        self.apply(init_vit_weights)
        nn.init.normal_(self.cls_token, std=0.02)
        nn.init.normal_(self.mask_token, std=0.02)

    def embed(self, frame_tokens: torch.Tensor) -> torch.Tensor:
        """(B, N, token_dim) → (B, N, D) patch embeddings with positions."""
        return self.patch_embed(frame_tokens) + self.pos_embed

    def _with_cls(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)  # (B, 1 + T, D)

    def forward_encoder(self, embedded: torch.Tensor, mask_ratio: float, generator: torch.Generator | None = None):
        """embedded (B, N, D) → latent (B, 1 + K, D) with CLS first, mask (B, N) 1 = masked, ids_restore (B, N)."""
        kept, mask, ids_restore = random_masking(embedded, mask_ratio, generator)  # (B, K, D)
        return self.encoder(self._with_cls(kept)), mask, ids_restore

    def forward_decoder(self, latent: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        """latent (B, 1 + K, D) → predicted frame tokens (B, N, token_dim or target_dim) at every position."""
        visible = self.decoder_embed(latent[:, 1:])  # (B, K, D_dec), CLS dropped
        x = unshuffle(visible, self.mask_token, ids_restore) + self.decoder_pos_embed  # (B, N, D_dec)
        return self.decoder_pred(self.decoder(x))  # (B, N, token_dim)

    def encode(self, frame_tokens: torch.Tensor) -> torch.Tensor:
        """No masking: (B, N, token_dim) → final-normed latents (B, 1 + N, D), CLS first."""
        return self.encoder(self._with_cls(self.embed(frame_tokens)))


def projector_mlp(in_dim: int, hidden: tuple[int, ...]) -> nn.Sequential:
    """[Linear → BatchNorm → ELU] per hidden width, then a plain Linear to the last width."""
    widths = (in_dim, *hidden)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(widths) - 2:
            layers += [nn.BatchNorm1d(b), nn.ELU(inplace=True)]
    return nn.Sequential(*layers)


class NeuroNet(nn.Module):
    """Single-channel NeuroNet; input (batch, fs * epoch_s) samples (3000 at 100 Hz), robust-scaled."""

    def __init__(self, config: NeuroNetConfig):
        super().__init__()
        self.config = config
        self.framer = EpochFramer(config.fs, config.epoch_s, config.frame_window_s, config.frame_step_s)
        self.frame_backbone: MultiScaleFrameBackbone | SharedConvFrameBackbone | LogSpectrumFrameBackbone
        if config.frame_tokenizer == "log_spectrum":
            self.frame_backbone = LogSpectrumFrameBackbone(
                self.framer.window_samples, 128 if config.frame_token_dim is None else config.frame_token_dim
            )
        elif config.frame_tokenizer == "shared_conv":
            self.frame_backbone = SharedConvFrameBackbone(
                self.framer.n_samples,
                self.framer.window_samples,
                self.framer.step_samples,
                config.stem_channels,
                config.backbone_channels,
                config.backbone_strides,
                config.branch_kernels,
                config.frame_segments,
                config.frame_token_dim,
            )
        else:
            self.frame_backbone = MultiScaleFrameBackbone(
                self.framer.window_samples,
                config.stem_channels,
                config.backbone_channels,
                config.backbone_strides,
                config.branch_kernels,
                config.pool_kernels,
                config.frame_token_dim,
                config.se_reduction,
            )
        n_frames = self.framer.n_frames
        if n_kept(n_frames, config.mask_ratio) >= n_frames:
            raise ValueError(f"NeuroNet config: mask_ratio {config.mask_ratio} masks none of {n_frames} frames")
        self.autoencoder = MaskedAutoencoderViT(
            self.frame_backbone.token_dim,
            n_frames,
            config.encoder_dim,
            config.encoder_heads,
            config.encoder_depth,
            config.decoder_dim,
            config.decoder_heads,
            config.decoder_depth,
            config.mlp_ratio,
            target_dim=frame_target_dim(self.framer.window_samples, config.reconstruction_target),
        )
        self.projector = projector_mlp(config.encoder_dim, config.projector_hidden)
        self.reconstruction = MaskedTokenMSE()
        self.contrastive = NTXentLoss(config.temperature)

    @property
    def n_frames(self) -> int:
        return self.framer.n_frames

    @property
    def embed_dim(self) -> int:
        return self.config.encoder_dim

    def frame_tokens(self, epochs: torch.Tensor) -> torch.Tensor:
        """(B, n_samples) → (B, N, token_dim): one CNN token per frame."""
        return epoch_frame_tokens(self.framer, self.frame_backbone, epochs)

    def forward(
        self,
        epochs: torch.Tensor,
        mask_ratio: float | None = None,
        generator: torch.Generator | None = None,
        positives: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Hybrid self-supervised loss of a batch of epochs (B, n_samples).

        The two contrastive views are two masked copies of each epoch, or, with `positives` (B, n_samples)
        (config `positive_pair` "neighbour" or "shift"), the masked epoch and its masked positive; each view reconstructs
        its own frames. Returns a dict of scalar tensors: `loss` (= recon_1 + recon_2 + alpha * contrastive),
        `recon_1`, `recon_2`, `contrastive`, and the detached `contrastive_accuracy`.
        """
        if positives is None and self.training and self.config.positive_pair != "same":
            raise ValueError(
                f"NeuroNet: positive_pair={self.config.positive_pair!r} needs `positives` in training "
                "(wrap the dataset in dataset.neighbours.NeighbourPairs)"
            )
        ratio = self.config.mask_ratio if mask_ratio is None else mask_ratio
        batch = epochs.shape[0]
        inputs = epochs if positives is None else torch.cat([epochs, positives])  # (B or 2B, n_samples)
        frame_tokens = self.frame_tokens(inputs)  # (B or 2B, N, T), computed once for both views
        if self.config.reconstruction_target != "tokens":  # a fixed function of the input: no gradient
            target = frame_targets(self.framer(inputs), self.config.reconstruction_target)  # (., N, L or L // 2)
        else:
            target = frame_tokens.detach() if self.config.detach_target else frame_tokens
        embedded = self.autoencoder.embed(frame_tokens)  # (B or 2B, N, D)
        if positives is None:  # one input per sample, shared by both views
            views, target_1, target_2 = embedded.repeat(2, 1, 1), target, target
        else:
            views, (target_1, target_2) = embedded, target.split(batch)
        # views (2B, N, D): rows [0, B) view 1, [B, 2B) view 2
        latent, mask, ids_restore = self.autoencoder.forward_encoder(views, ratio, generator)  # (2B, 1 + K, D)
        prediction = self.autoencoder.forward_decoder(latent, ids_restore)  # (2B, N, T)
        recon_1, _ = self.reconstruction(prediction[:batch], target_1, mask[:batch])
        recon_2, _ = self.reconstruction(prediction[batch:], target_2, mask[batch:])
        projected = self.projector(latent[:, 0])  # (2B, P) from each view's CLS
        contrastive, parts = self.contrastive(projected[:batch], projected[batch:])
        loss = recon_1 + recon_2 + self.config.alpha * contrastive
        return {
            "loss": loss,
            "recon_1": recon_1,
            "recon_2": recon_2,
            "contrastive": contrastive,
            "contrastive_accuracy": parts["accuracy"],
        }

    def encode(self, epochs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Representation without masking: (B, n_samples) → pooled (B, D), tokens (B, N, D).

        `tokens` are the final-normed encoder outputs of the frame tokens (CLS excluded); `pooled` is
        their mean over frames (the downstream representation).
        """
        latent = self.autoencoder.encode(self.frame_tokens(epochs))  # (B, 1 + N, D)
        tokens = latent[:, 1:]  # (B, N, D)
        return tokens.mean(dim=1), tokens

    def summary(self) -> str:
        """One line for the start of every script: preset, parameter counts, framing, widths."""
        c, f, backbone = self.config, self.framer, self.frame_backbone
        shared = (
            f" (one conv pass per epoch, feature stride {backbone.stride} samples, receptive field "
            f"+-{backbone.receptive_margin / c.fs:g} s beyond each frame)"
            if isinstance(backbone, SharedConvFrameBackbone)
            else ""
        )
        return (
            f"NeuroNet[{c.preset}] {count_parameters(self) / 1e6:.2f} M params "
            f"(frame CNN {count_parameters(self.frame_backbone) / 1e6:.2f} M, "
            f"MAE {count_parameters(self.autoencoder) / 1e6:.2f} M, "
            f"projector {count_parameters(self.projector) / 1e6:.2f} M); "
            f"{f.n_frames} frames of {c.frame_window_s:g} s every {c.frame_step_s:g} s at {c.fs:g} Hz{shared} "
            f"-> {self.frame_backbone.token_dim}-d tokens; encoder {c.encoder_dim}/{c.encoder_heads}h x"
            f"{c.encoder_depth}, decoder {c.decoder_dim}/{c.decoder_heads}h x{c.decoder_depth}, "
            f"mask {c.mask_ratio:g}, tau {c.temperature:g}, target {c.reconstruction_target}"
            f"{' (detached)' if c.detach_target and c.reconstruction_target == 'tokens' else ''}"
        )


def build_neuronet(config: NeuroNetConfig | dict[str, Any] | str) -> NeuroNet:
    """NeuroNet from a config, a config dict (as saved in a checkpoint) or a preset name."""
    if isinstance(config, str):
        config = neuronet_config(config)
    elif isinstance(config, dict):
        config = NeuroNetConfig.from_dict(config)
    elif not isinstance(config, NeuroNetConfig):
        raise TypeError(f"build_neuronet needs a NeuroNetConfig, dict or preset name, got {type(config).__name__}")
    return NeuroNet(config)
