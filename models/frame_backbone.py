"""Multi-scale 1-D ResNet that turns every frame into one token (DESIGN.md 3.1).

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
            nn.Linear(channels, hidden, bias=False), nn.ReLU(inplace=True),
            nn.Linear(hidden, channels, bias=False), nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.fc(x.mean(dim=-1))  # (frames, C) in (0, 1)
        return x * gate.unsqueeze(-1)  # (frames, C, T)


class SEResidualBlock1d(nn.Module):
    """conv(k, stride) → BN → ELU → conv(k) → BN → SE, plus a (projected, cropped) shortcut, → ELU.

    Both convolutions use padding 1 whatever the kernel (as published), so a kernel k shortens the
    sequence by k - 3 per conv; the shortcut keeps its first `out_len` samples.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, se_reduction: int = 16):
        super().__init__()
        self.conv1 = nn.Conv1d(in_ch, out_ch, kernel, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm1d(out_ch)
        self.conv2 = nn.Conv1d(out_ch, out_ch, kernel, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm1d(out_ch)
        self.se = SqueezeExcite1d(out_ch, se_reduction)
        self.act = nn.ELU(inplace=True)
        self.shortcut: nn.Module
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(nn.Conv1d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm1d(out_ch))
        else:
            self.shortcut = nn.Identity()
        self.kernel, self.stride = kernel, stride

    def out_len(self, length: int) -> int:
        return conv_out_len(conv_out_len(length, self.kernel, self.stride, 1), self.kernel, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.bn1(self.conv1(x)))  # (frames, C_out, T')
        out = self.se(self.bn2(self.conv2(out)))  # (frames, C_out, T'')
        residual = self.shortcut(x)  # (frames, C_out, ≥ T'')
        if residual.shape[-1] != out.shape[-1]:
            residual = residual[..., : out.shape[-1]]
        return self.act(out + residual)


class ScaleBranch(nn.Module):
    """One kernel size: a stack of SE residual stages followed by a stride-1 average pool."""

    def __init__(self, in_ch: int, channels: Sequence[int], strides: Sequence[int], kernel: int, pool_kernel: int,
                 se_reduction: int):
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
            raise ValueError(f"frame too short for the kernel-{self.stages[0].kernel} branch: {length} samples "
                             f"before its average pool of {self.pool_kernel}; use longer frames or smaller pools")
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

    def __init__(self, frame_samples: int, stem_channels: int = 64, channels: Sequence[int] = (64, 128, 128, 256),
                 strides: Sequence[int] = (1, 1, 2, 2), kernels: Sequence[int] = (3, 5, 7),
                 pool_kernels: Sequence[int] = (16, 11, 6), token_dim: int | None = None, se_reduction: int = 16):
        super().__init__()
        if len(channels) != len(strides):
            raise ValueError(f"channels {tuple(channels)} and strides {tuple(strides)} need one entry per stage")
        if len(kernels) != len(pool_kernels):
            raise ValueError(f"kernels {tuple(kernels)} and pool_kernels {tuple(pool_kernels)} need one entry per branch")
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
            raise ValueError(f"frame backbone expects (batch, n_frames, {self.frame_samples}), got {tuple(frames.shape)}")
        batch, n_frames, _ = frames.shape
        x = frames.reshape(batch * n_frames, 1, self.frame_samples)  # (B*N, 1, L): every frame of the batch at once
        x = self.stem(x)  # (B*N, C_stem, L/4)
        pooled = torch.cat([branch(x) for branch in self.branches], dim=-1)  # (B*N, C_last, sum of branch lengths)
        tokens = self.head(pooled.flatten(1))  # (B*N, token_dim)
        return tokens.view(batch, n_frames, self.token_dim)
