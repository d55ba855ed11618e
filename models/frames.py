"""Cut a 30-s epoch into overlapping frames in one tensor op (docs/models.md §3.1).

SynthSleepNet frames: 4-s window every 1 s → 27 frames of 400 samples at 100 Hz.
NeuroNet-paper frames: 3-s window every 0.375 s → 73 frames of 300 samples (the step is 37.5 samples).

Frame k starts at sample `round(k * step_samples)` (Python `round`, i.e. half to even) and spans
`window_samples` samples; frames are kept while they fit entirely inside the epoch. An integer step
uses `Tensor.unfold` (a strided view); a fractional step gathers with a precomputed (N, L) index.
Either way, every frame comes out of a single op, never a Python loop over frames.
"""

from __future__ import annotations

import torch
from torch import nn


def _as_samples(seconds: float, fs: float, what: str) -> float:
    samples = seconds * fs
    if samples <= 0:
        raise ValueError(f"frame {what} must be positive, got {seconds} s at {fs} Hz")
    return samples


def frame_starts(n_samples: int, window_samples: int, step_samples: float) -> list[int]:
    """Start sample of every frame that fits in `n_samples`: round(k * step) for k = 0, 1, …"""
    if window_samples > n_samples:
        raise ValueError(f"frame window of {window_samples} samples is longer than the epoch ({n_samples} samples)")
    if step_samples <= 0:
        raise ValueError(f"frame step must be positive, got {step_samples} samples")
    starts = []
    k = 0
    while (start := int(round(k * step_samples))) + window_samples <= n_samples:
        starts.append(start)
        k += 1
    return starts


class EpochFramer(nn.Module):
    """(batch, n_samples) epoch → (batch, n_frames, window_samples) overlapping frames.

    Args:
        fs: sampling rate in Hz (100 for electrophysiology).
        epoch_s: epoch length in seconds (30).
        window_s: frame length in seconds.
        step_s: hop between frame starts in seconds (may give a fractional number of samples).
    """

    def __init__(self, fs: float = 100.0, epoch_s: float = 30.0, window_s: float = 4.0, step_s: float = 1.0):
        super().__init__()
        n_samples = _as_samples(epoch_s, fs, "epoch length")
        window = _as_samples(window_s, fs, "window")
        step = _as_samples(step_s, fs, "step")
        if abs(n_samples - round(n_samples)) > 1e-9 or abs(window - round(window)) > 1e-9:
            raise ValueError(f"epoch ({epoch_s} s) and window ({window_s} s) must be whole samples at {fs} Hz")
        self.n_samples = int(round(n_samples))
        self.window_samples = int(round(window))
        self.step_samples = step
        starts = frame_starts(self.n_samples, self.window_samples, step)
        self.n_frames = len(starts)
        self.integer_step = abs(step - round(step)) < 1e-9
        if self.integer_step:
            self._step = int(round(step))
            self.register_buffer("frame_index", None, persistent=False)
        else:
            start_t = torch.tensor(starts, dtype=torch.long)  # (N,) first sample of each frame
            index = start_t[:, None] + torch.arange(self.window_samples)  # (N, L) sample index of every frame sample
            self.register_buffer("frame_index", index, persistent=False)

    def forward(self, epochs: torch.Tensor) -> torch.Tensor:
        """epochs (batch, n_samples) → frames (batch, n_frames, window_samples); same dtype and device."""
        if epochs.dim() != 2 or epochs.shape[-1] != self.n_samples:
            raise ValueError(
                f"EpochFramer expects epochs of shape (batch, {self.n_samples}), got {tuple(epochs.shape)}"
            )
        if self.integer_step:
            # (B, N, L) strided view; copied once later when the frames are flattened for the CNN
            return epochs.unfold(-1, self.window_samples, self._step)
        return epochs[:, self.frame_index]  # (B, N, L) one advanced-index gather

    def extra_repr(self) -> str:
        return (
            f"n_samples={self.n_samples}, window={self.window_samples}, step={self.step_samples:g}, "
            f"n_frames={self.n_frames}"
        )
