"""Multi-scale 1-D ResNet that turns every frame into one token (docs/models.md §3.1).

Layout (published SynthSleepNet frame backbone, B values):
    stem     Conv1d(1→64, k7, s2, p3) + BN + ELU + MaxPool(k3, s2, p1)          400 → 100 samples
    branches three in parallel, kernel 3 / 5 / 7, each 4 stages of one squeeze-excitation residual block,
             channels 64/128/128/256, strides 1/1/2/2, every conv padded by 1 sample (so kernels 5 and 7
             shorten the sequence; the residual is cropped to match), then AvgPool1d(k 16 / 11 / 6, s1)
    concat   along time, flatten: 256 × (10 + 9 + 7) = 6656 for a 400-sample frame
    head     Linear(6656→3328) + ELU + Linear(3328→3328) = one 3328-d token per frame

All frames of all epochs run through the CNN as one batch of shape (batch * n_frames, 1, samples).
Smaller presets shrink the channels and the token width.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def conv_out_len(length: int, kernel: int, stride: int = 1, padding: int = 0) -> int:
    """Output length of a Conv1d / pooling layer (no dilation)."""
    return (length + 2 * padding - kernel) // stride + 1


class SqueezeExcite1d(nn.Module):
    """Channel gating: global average over time → bottleneck MLP → sigmoid scale per channel."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc = nn.Sequential(
            nn.Linear(channels, hidden, bias=False),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, channels, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.fc(x.mean(dim=-1))  # (frames, C) in (0, 1)
        return x * gate.unsqueeze(-1)  # (frames, C, T)


class SEResidualBlock1d(nn.Module):
    """conv(k, stride) → BN → ELU → conv(k) → BN → SE, plus a (projected, cropped) shortcut, → ELU.

    Both convolutions use padding 1 whatever the kernel (as published), so a kernel k shortens the
    sequence by k - 3 per conv; the shortcut keeps its first `out_len` samples. The shared-convolution
    tokenizer builds it with `padding=kernel // 2` (length-preserving, centred) and `squeeze_excite=False`.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel: int,
        stride: int,
        se_reduction: int = 16,
        padding: int = 1,
        squeeze_excite: bool = True,
    ):
        super().__init__()
        self.conv1 = nn.Conv1d(in_ch, out_ch, kernel, stride=stride, padding=padding, bias=False)
        self.bn1 = nn.BatchNorm1d(out_ch)
        self.conv2 = nn.Conv1d(out_ch, out_ch, kernel, stride=1, padding=padding, bias=False)
        self.bn2 = nn.BatchNorm1d(out_ch)
        self.se: nn.Module = SqueezeExcite1d(out_ch, se_reduction) if squeeze_excite else nn.Identity()
        self.act = nn.ELU(inplace=True)
        self.shortcut: nn.Module
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(
                nn.Conv1d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm1d(out_ch)
            )
        else:
            self.shortcut = nn.Identity()
        self.kernel, self.stride, self.padding = kernel, stride, padding

    def out_len(self, length: int) -> int:
        return conv_out_len(conv_out_len(length, self.kernel, self.stride, self.padding), self.kernel, 1, self.padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.bn1(self.conv1(x)))  # (frames, C_out, T')
        out = self.se(self.bn2(self.conv2(out)))  # (frames, C_out, T'')
        residual = self.shortcut(x)  # (frames, C_out, ≥ T'')
        if residual.shape[-1] != out.shape[-1]:
            residual = residual[..., : out.shape[-1]]
        return self.act(out + residual)


class ScaleBranch(nn.Module):
    """One kernel size: a stack of SE residual stages followed by a stride-1 average pool."""

    def __init__(
        self,
        in_ch: int,
        channels: Sequence[int],
        strides: Sequence[int],
        kernel: int,
        pool_kernel: int,
        se_reduction: int,
    ):
        super().__init__()
        stages, prev = [], in_ch
        for ch, stride in zip(channels, strides):
            stages.append(SEResidualBlock1d(prev, ch, kernel, stride, se_reduction))
            prev = ch
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AvgPool1d(pool_kernel, stride=1)
        self.pool_kernel = pool_kernel
        self.out_channels = prev

    def out_len(self, length: int) -> int:
        for stage in self.stages:
            length = stage.out_len(length)
        if length < self.pool_kernel:
            raise ValueError(
                f"frame too short for the kernel-{self.stages[0].kernel} branch: {length} samples "
                f"before its average pool of {self.pool_kernel}; use longer frames or smaller pools"
            )
        return conv_out_len(length, self.pool_kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.stages(x))  # (frames, C_last, T_branch)


class MultiScaleFrameBackbone(nn.Module):
    """(batch, n_frames, frame_samples) → (batch, n_frames, token_dim) frame tokens.

    Args:
        frame_samples: samples per frame (400 for 4 s at 100 Hz).
        stem_channels: channels of the k7/s2 stem convolution.
        channels, strides: per stage, shared by the three branches.
        kernels: one branch per kernel size.
        pool_kernels: stride-1 average-pool width of each branch (published: 16, 11, 6).
        token_dim: width of the frame token; None = half the flattened CNN output (published rule).
        se_reduction: squeeze-excitation bottleneck ratio.
    """

    def __init__(
        self,
        frame_samples: int,
        stem_channels: int = 64,
        channels: Sequence[int] = (64, 128, 128, 256),
        strides: Sequence[int] = (1, 1, 2, 2),
        kernels: Sequence[int] = (3, 5, 7),
        pool_kernels: Sequence[int] = (16, 11, 6),
        token_dim: int | None = None,
        se_reduction: int = 16,
    ):
        super().__init__()
        if len(channels) != len(strides):
            raise ValueError(f"channels {tuple(channels)} and strides {tuple(strides)} need one entry per stage")
        if len(kernels) != len(pool_kernels):
            raise ValueError(
                f"kernels {tuple(kernels)} and pool_kernels {tuple(pool_kernels)} need one entry per branch"
            )
        self.frame_samples = frame_samples
        self.stem = nn.Sequential(
            nn.Conv1d(1, stem_channels, 7, stride=2, padding=3, bias=False),
            nn.BatchNorm1d(stem_channels),
            nn.ELU(inplace=True),
            nn.MaxPool1d(3, stride=2, padding=1),
        )
        stem_len = conv_out_len(conv_out_len(frame_samples, 7, 2, 3), 3, 2, 1)
        self.branches = nn.ModuleList(
            ScaleBranch(stem_channels, channels, strides, k, p, se_reduction) for k, p in zip(kernels, pool_kernels)
        )
        self.branch_lengths = tuple(b.out_len(stem_len) for b in self.branches)
        self.flat_dim = channels[-1] * sum(self.branch_lengths)
        self.token_dim = token_dim if token_dim is not None else self.flat_dim // 2
        self.head = nn.Sequential(
            nn.Linear(self.flat_dim, self.token_dim), nn.ELU(inplace=True), nn.Linear(self.token_dim, self.token_dim)
        )

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        if frames.dim() != 3 or frames.shape[-1] != self.frame_samples:
            raise ValueError(
                f"frame backbone expects (batch, n_frames, {self.frame_samples}), got {tuple(frames.shape)}"
            )
        batch, n_frames, _ = frames.shape
        x = frames.reshape(batch * n_frames, 1, self.frame_samples)  # (B*N, 1, L): every frame of the batch at once
        x = self.stem(x)  # (B*N, C_stem, L/4)
        pooled = torch.cat([branch(x) for branch in self.branches], dim=-1)  # (B*N, C_last, sum of branch lengths)
        tokens = self.head(pooled.flatten(1))  # (B*N, token_dim)
        return tokens.view(batch, n_frames, self.token_dim)


def receptive_field(layers: Sequence[tuple[int, int]]) -> tuple[int, int]:
    """(kernel, stride) of a stack of conv / pool layers → (receptive field, total stride), both in input samples."""
    field, jump = 1, 1
    for kernel, stride in layers:
        field += (kernel - 1) * jump
        jump *= stride
    return field, jump


class SharedConvFrameBackbone(nn.Module):
    """(batch, n_samples) epoch → (batch, n_frames, token_dim): convolve the epoch once, pool per frame.

    The per-frame backbone above convolves every overlapping frame on its own (27 frames of 4 s = 3.6 times
    the 30-s epoch). Here the same kind of multi-scale residual CNN runs ONCE over the whole epoch and frame k's
    token pools the feature map over frame k's span, so the frame geometry (window, step, number of frames) is
    unchanged. Shapes for the 4-s / 1-s framing at 100 Hz and the `fast` preset (stride 20 samples = 0.2 s):

        epoch       (B, 1, 3000)
        stem        Conv1d(k8, s2, p3) + BN + ELU + MaxPool(k2, s2)             → (B, C_stem, 750)   4 samples/step
        branches    per kernel k: stages of one residual block (two k-wide convs, padding k // 2, no
                    squeeze-excitation); a stage with stride s first max-pools s samples to one
                                                                                → (B, C_last, 150)   20 samples/step
        concat      along channels                                              → (B, 3 C_last, 150)
        frames      unfold(window / 20 = 20, step / 20 = 5)                      → (B, 3 C_last, 27, 20)
        pool        mean of each of `frame_segments` equal parts (4 × 1 s) and the max over the frame
                                                                                → (B, 27, 3 C_last × 5)
        head        Linear → ELU → Linear                                       → (B, 27, token_dim)

    Alignment: every layer that shortens the sequence by s has kernel = s + 2 × padding (stem conv k8/s2/p3,
    pools k = s, padding 0; the stride-1 convs use odd kernels with padding k // 2), so feature t of the
    final map is centred on the block of `stride` samples [t·stride, (t+1)·stride) with a symmetric receptive
    field. The window and the step must be whole multiples of `stride`; then frame k's span of the feature map
    is exactly the blocks of samples [k·step, k·step + window). Token k therefore depends only on the samples
    [k·step − margin, k·step + window + margin) with `margin = (receptive_field − stride) / 2` (the widest branch;
    `receptive_margin` in samples), zero-padded at the epoch's edges. Squeeze-excitation is left out because its
    global average over time would make every token depend on the whole epoch; the per-frame mean / max pooling
    takes its place as the frame-level summary, and the segment means keep coarse order inside the frame (the
    per-frame CNN keeps ~26 positions in its flattened output).
    """

    STEM_STRIDE = 4  # stem conv stride 2 × max-pool 2

    def __init__(
        self,
        n_samples: int,
        window_samples: int,
        step_samples: float,
        stem_channels: int = 4,
        channels: Sequence[int] = (4, 8, 8, 16),
        strides: Sequence[int] = (1, 5, 1, 1),
        kernels: Sequence[int] = (3, 5, 7),
        frame_segments: int = 4,
        token_dim: int | None = None,
    ):
        super().__init__()
        if len(channels) != len(strides):
            raise ValueError(f"channels {tuple(channels)} and strides {tuple(strides)} need one entry per stage")
        if any(k % 2 == 0 for k in kernels):
            raise ValueError(f"shared_conv frame tokenizer needs odd branch kernels (centred), got {tuple(kernels)}")
        self.stride = self.STEM_STRIDE
        for s in strides:
            self.stride *= s
        step = int(round(step_samples))
        if (
            abs(step_samples - step) > 1e-9
            or n_samples % self.stride
            or window_samples % self.stride
            or step % self.stride
        ):
            raise ValueError(
                f"shared_conv frame tokenizer: epoch ({n_samples}), frame window ({window_samples}) and step "
                f"({step_samples:g} samples) must be whole multiples of its feature stride ({self.stride} samples)"
            )
        self.n_samples, self.window_samples, self.step_samples = n_samples, window_samples, step
        self.window_features, self.step_features = window_samples // self.stride, step // self.stride
        segment = self.window_features // frame_segments if frame_segments >= 1 else 0
        if not segment or self.window_features % frame_segments or self.step_features % segment:
            raise ValueError(
                f"shared_conv frame tokenizer: a frame spans {self.window_features} features (step "
                f"{self.step_features}); frame_segments={frame_segments} must split it into equal "
                f"parts whose length divides the step"
            )
        self.frame_segments, self.segment_features = frame_segments, segment
        self.stem = nn.Sequential(
            nn.Conv1d(1, stem_channels, 8, stride=2, padding=3, bias=False),
            nn.BatchNorm1d(stem_channels),
            nn.ELU(inplace=True),
            nn.MaxPool1d(2, stride=2),
        )
        self.branches = nn.ModuleList()
        for kernel in kernels:
            stages, prev = [], stem_channels
            for ch, s in zip(channels, strides):
                block = SEResidualBlock1d(prev, ch, kernel, 1, padding=kernel // 2, squeeze_excite=False)
                stages.append(nn.Sequential(nn.MaxPool1d(s, stride=s), block) if s > 1 else block)
                prev = ch
            self.branches.append(nn.Sequential(*stages))
        stem_layers = [(8, 2), (2, 2)]
        self.receptive_field = max(
            receptive_field(
                stem_layers + [layer for s in strides for layer in ([(s, s)] if s > 1 else []) + [(k, 1)] * 2]
            )[0]
            for k in kernels
        )
        self.receptive_margin = (self.receptive_field - self.stride) // 2  # samples beyond each side of a frame
        self.feature_channels = channels[-1] * len(kernels)
        self.flat_dim = self.feature_channels * (frame_segments + 1)
        self.token_dim = token_dim if token_dim is not None else self.flat_dim // 2
        self.head = nn.Sequential(
            nn.Linear(self.flat_dim, self.token_dim), nn.ELU(inplace=True), nn.Linear(self.token_dim, self.token_dim)
        )

    def forward(self, epochs: torch.Tensor) -> torch.Tensor:
        if epochs.dim() != 2 or epochs.shape[-1] != self.n_samples:
            raise ValueError(
                f"shared_conv frame tokenizer expects epochs (batch, {self.n_samples}), got {tuple(epochs.shape)}"
            )
        x = self.stem(epochs.unsqueeze(1))  # (B, C_stem, n / 4)
        features = torch.cat([branch(x) for branch in self.branches], dim=1)  # (B, C, n / stride), C = 3 C_last
        # pool each segment-long block once, then gather every frame's S consecutive blocks (a strided view)
        seg, hop = self.segment_features, self.step_features // self.segment_features
        means = F.avg_pool1d(features, seg).unfold(-1, self.frame_segments, hop)  # (B, C, N, S) segment means
        peak = F.max_pool1d(features, seg).unfold(-1, self.frame_segments, hop).amax(-1, keepdim=True)  # (B, C, N, 1)
        pooled = torch.cat([means, peak], dim=-1).permute(0, 2, 1, 3)  # (B, N, C, S + 1)
        return self.head(pooled.flatten(2))  # (B, N, token_dim)


def log_power_spectrum(frames: torch.Tensor) -> torch.Tensor:
    """(..., L) samples → (..., L // 2) natural log of the power of each mean-removed, Hann-windowed frame's
    one-sided FFT, DC dropped: log(|rfft|² / L + 1e-4). Computed in fp32 under any autocast. The `log_spectrum`
    tokenizer's input and NeuroNet's "spectrum" reconstruction target (before standardisation)."""
    length = frames.shape[-1]
    x = frames.float()
    window = torch.hann_window(length, periodic=False, dtype=x.dtype, device=x.device)
    with torch.autocast(x.device.type, enabled=False):
        spectrum = torch.fft.rfft((x - x.mean(dim=-1, keepdim=True)) * window, dim=-1)[..., 1:]
        return torch.log(spectrum.abs().pow(2) / length + 1e-4)


class LogSpectrumFrameBackbone(nn.Module):
    """(batch, n_frames, frame_samples) frames → (batch, n_frames, token_dim): each frame's log power spectrum.

        frame       Hann window after removing the frame's mean                 (B·N, L)
        spectrum    log(|rfft|² / L + 1e-4), DC dropped                           (B·N, L // 2)   0.25-Hz bins, 4-s frames
        norm        BatchNorm over frequency bins (running statistics in eval)    (B·N, L // 2)
        head        Linear → ELU → Linear                                         (B·N, token_dim)

    Sleep stages differ in how much power sits in which band, and by factors (N3's delta is many times the
    wake's): the log makes those ratios differences, which a linear layer can read. The norm standardises each
    bin over frames and epochs, never within a frame, so the absolute power of a frame relative to the rest of
    the night (the per-recording robust scaling keeps it) survives; a per-token LayerNorm would remove it.
    No convolution runs over the samples, so this tokenizer costs a fraction of the CNNs.
    """

    def __init__(self, frame_samples: int, token_dim: int):
        super().__init__()
        if frame_samples < 4:
            raise ValueError(f"log-spectrum frames need at least 4 samples, got {frame_samples}")
        self.frame_samples, self.token_dim = frame_samples, token_dim
        self.n_bins = frame_samples // 2
        self.norm = nn.BatchNorm1d(self.n_bins)
        self.head = nn.Sequential(
            nn.Linear(self.n_bins, token_dim), nn.ELU(inplace=True), nn.Linear(token_dim, token_dim)
        )

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        if frames.dim() != 3 or frames.shape[-1] != self.frame_samples:
            raise ValueError(
                f"frame backbone expects (batch, n_frames, {self.frame_samples}), got {tuple(frames.shape)}"
            )
        batch, n_frames, _ = frames.shape
        spectrum = log_power_spectrum(frames.reshape(batch * n_frames, self.frame_samples))  # (B·N, L // 2)
        tokens = self.head(self.norm(spectrum))  # (B·N, token_dim)
        return tokens.view(batch, n_frames, self.token_dim)
