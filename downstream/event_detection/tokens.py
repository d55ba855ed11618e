"""Per-second token vectors of a night from a backbone (the `probe`, `finetune` and `scratch` event methods).

A backbone's encoders give one token per FRAME of a 30-s epoch (respiratory NeuroNets: 12 frames of 8 s every
2 s, centres at 4, 6, ..., 26 s; electrophysiology ones: 27 frames of 4 s every 1 s, centres at 2, ..., 28 s;
docs/models.md "Respiratory encoders"). The event task predicts per SECOND, so each channel's frame tokens are
resampled to the 30 second centres of the epoch (s + 0.5): linear interpolation between the two nearest frame
centres, the first / last frame's token before the first / after the last centre (`second_weights`).

Token sources (`--token-source`):
- `fusion` (SynthSleepNet): every channel the night has goes through the fusion transformer together (no
  masking) and the output tokens at each read channel's frame positions are taken. These tokens have attended
  to every other channel of the epoch (the SpO2 and effort belts next to the airflow).
- `encoder`: each read channel's own encoder tokens (a unimodal NeuroNet, or a SynthSleepNet's frozen
  encoders before the fusion).

The per-second vector is the concatenation, over the read channels (`--token-channels`; default the
backbone's respiratory channels, else all of its channels), of their resampled tokens: (30, C x D) per epoch. A
night lacking a read channel gets zeros in its part (and a warning); a night with none of the backbone's channels
is an input error. With a pretrained backbone file and --cache-dir, each night's vectors are stored by
`downstream.cache` (one row per epoch holding its 30 seconds, keyed by the backbone file, the channels present,
the precision and the token layout) and reused.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dataset.constants import EPOCH_S, RESP_CHANNELS
from downstream.cache import cache_key, encode_recordings
from models.heads import EpochEncoder


def second_weights(centres_s: torch.Tensor | np.ndarray, n_seconds: int = EPOCH_S) -> torch.Tensor:
    """(n_seconds, N) float32 interpolation weights from N frame centres (seconds from the epoch start, ascending)
    to the second centres s + 0.5: each row holds at most two non-zero weights summing to 1."""
    centres = np.asarray(centres_s, dtype=np.float64)
    if centres.ndim != 1 or centres.size == 0 or np.any(np.diff(centres) <= 0):
        raise ValueError(f"second_weights: frame centres must be a non-empty ascending 1-D array, got {centres}")
    targets = np.arange(n_seconds) + 0.5
    weights = np.zeros((n_seconds, centres.size), dtype=np.float64)
    clipped = np.clip(targets, centres[0], centres[-1])
    right = np.clip(np.searchsorted(centres, clipped, side="right"), 1, max(centres.size - 1, 1))
    if centres.size == 1:
        weights[:, 0] = 1.0
    else:
        left = right - 1
        fraction = (clipped - centres[left]) / (centres[right] - centres[left])  # 0 at the left centre
        rows = np.arange(n_seconds)
        weights[rows, left] = 1.0 - fraction
        weights[rows, right] += fraction
    return torch.from_numpy(weights.astype(np.float32))


def frames_to_seconds(tokens: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Frame tokens (n, N, D) and `second_weights` (S, N) → per-second tokens (n, S, D)."""
    return torch.einsum("sn,bnd->bsd", weights.to(tokens.dtype), tokens)


class SecondTokenizer(nn.Module):
    """Backbone → per-second vectors: {channel: (n, n_samples)} epochs → (n, 30, len(read) x D).

    Args:
        encoder: the backbone as an `EpochEncoder` (its mode decides what trains: frozen for the probe).
        source: "fusion" or "encoder" (module docstring).
        read: the channels whose token positions make the per-second vector (a subset of `encoder.channels`).
    """

    def __init__(self, encoder: EpochEncoder, source: str, read: Sequence[str]):
        super().__init__()
        unknown = [c for c in read if c not in encoder.channels]
        if not read or unknown:
            raise ValueError(
                f"SecondTokenizer: read channels {list(read)} must be a non-empty subset of the "
                f"backbone's {list(encoder.channels)}"
            )
        self.encoder, self.source, self.read = encoder, source, tuple(read)
        self.token_dim = encoder.token_dim(source)
        for channel in self.read:
            self.register_buffer(
                f"weights_{channel}", second_weights(encoder.frame_centres_s(channel)), persistent=False
            )  # (30, N_frames)

    @property
    def dim(self) -> int:
        return len(self.read) * self.token_dim

    def forward(self, signals: Mapping[str, torch.Tensor]) -> torch.Tensor:
        tokens = self.encoder.frame_tokens(signals, self.source)  # {channel: (n, N_m, D)}
        n = next(iter(tokens.values())).shape[0]
        parts = []
        for channel in self.read:
            if channel in tokens:
                parts.append(frames_to_seconds(tokens[channel], getattr(self, f"weights_{channel}")))  # (n, 30, D)
            else:  # the night lacks this channel: zeros (reported by the caller)
                parts.append(next(iter(tokens.values())).new_zeros(n, EPOCH_S, self.token_dim))
        return torch.cat(parts, dim=-1)  # (n, 30, len(read) x D)


def default_read_channels(channels: Sequence[str]) -> list[str]:
    """The backbone's respiratory channels (the events are respiratory), else all of its channels."""
    respiratory = [c for c in channels if c in RESP_CHANNELS]
    return respiratory or list(channels)


@torch.no_grad()
def night_tokens(
    tokenizer: SecondTokenizer,
    data_dir: str | Path,
    recordings: Sequence[str],
    present: Mapping[str, Sequence[str]],
    device: torch.device,
    *,
    batch_epochs: int = 64,
    cache_dir: str | Path | None = None,
    backbone_sha256: str | None = None,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """Per-second vectors of every epoch of `recordings`: {recording: (n_epochs x 30, dim) float32}.

    `present[recording]`: the backbone channels the night has (at least one). Nights are encoded in groups of
    the same present channels (each group reads only those); the caller holds the tokenizer in eval mode. With
    `cache_dir` and `backbone_sha256` (a pretrained file) the vectors are cached by `downstream.cache`."""
    groups: dict[tuple[str, ...], list[str]] = defaultdict(list)
    for recording in recordings:
        channels = tuple(c for c in tokenizer.encoder.channels if c in present[recording])
        if not channels:
            raise ValueError(f"{recording}: none of the backbone's channels {list(tokenizer.encoder.channels)}")
        groups[channels].append(recording)
    layout = f"second-tokens:{tokenizer.source}:{','.join(tokenizer.read)}"

    def encode(signals: dict[str, torch.Tensor]) -> torch.Tensor:
        return tokenizer(signals).flatten(1)  # (n, 30 x dim): one row per epoch

    out: dict[str, np.ndarray] = {}
    for channels, members in groups.items():
        key = cache_key(backbone_sha256, channels, "fp32", layout) if backbone_sha256 else None
        store = encode_recordings(
            encode,
            data_dir,
            members,
            channels,
            device,
            batch_epochs=batch_epochs,
            cache_dir=cache_dir if key else None,
            key=key,
            progress=progress,
        )
        for recording in members:
            stored = store.recordings[recording]
            if not np.array_equal(stored.epochs, np.arange(stored.epochs.size)):
                raise ValueError(f"{recording}: epochs are not numbered 0..n-1 from the recording start")
            out[recording] = stored.vectors.reshape(-1, tokenizer.dim)  # (n_epochs x 30, dim)
    return out
