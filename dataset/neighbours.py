"""Temporal-neighbour positives for contrastive pretraining (docs/models.md §3.1, "positive pairs").

Sleep stages last minutes, so an epoch and the next or previous 30-s epoch of the same channel are almost
always in the same stage while everything else about them (the exact waves, artefacts, noise) differs. Used as
the two views of the contrastive loss, they teach the encoder what stays constant across neighbouring epochs,
which is what staging needs; two masked copies of one epoch (the published views) can be told apart by
within-epoch detail alone.

Two kinds of positive:
- `max_shift=None` ("neighbour"): the whole epoch before or after;
- `max_shift=S` samples ("shift"): the 30-s window shifted by a uniform random s in [-S, S] samples, read
  across the epoch boundary from the neighbouring epoch. The views overlap by n_samples - |s|, so they share
  the stage (almost always) and part of the waves: a random crop, the standard augmentation of contrastive
  learning on time series.

    pairs = NeighbourPairs(EpochDataset(dst, "pretrain", ["eeg_c3", "eeg_c4"], pool_channels=True))
    item = pairs[i]   # EpochDataset's item + "positive": (3000,) the same channel at epoch +-1
    crops = NeighbourPairs(dataset, max_shift=1000)   # "positive": the window shifted by up to +-10 s
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from dataset.datasets import EpochDataset


class NeighbourPairs(Dataset):
    """A pooled single-channel EpochDataset whose items also carry `positive`: the same channel's signal one
    epoch earlier or later in the same recording, or with `max_shift` the window shifted by up to that many
    samples (the side and shift drawn from torch's RNG, which the training loop seeds; a recording's first and
    last epochs take the only side they have; a one-epoch recording pairs the epoch with itself)."""

    def __init__(self, dataset: EpochDataset, max_shift: int | None = None):
        if not dataset.pool_channels:
            raise ValueError("NeighbourPairs needs a pooled single-channel EpochDataset (pool_channels=True)")
        if max_shift is not None and max_shift < 1:
            raise ValueError(f"NeighbourPairs: max_shift must be at least 1 sample, got {max_shift}")
        self.dataset, self.max_shift = dataset, max_shift

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name: str):  # split, channels, recordings, subjects... of the wrapped dataset
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getitem__(self, index: int) -> dict:
        item = self.dataset[index]
        if self.max_shift is not None:
            item["positive"] = torch.from_numpy(self._shifted(index, item["signal"].numpy()))
            return item
        step = 1 if int(torch.randint(2, ())) else -1
        positive = self.dataset.pooled_signal(index, step)
        if positive is None:  # the first or last epoch of its recording: the other side
            positive = self.dataset.pooled_signal(index, -step)
        if positive is None:  # a one-epoch recording
            positive = item["signal"].numpy()
        item["positive"] = torch.from_numpy(positive.copy())  # (n_samples,) float32, robust-scaled
        return item

    def _shifted(self, index: int, signal: np.ndarray) -> np.ndarray:
        """The window of `signal`'s length shifted by s samples, |s| ~ U{1..max_shift} and either sign (s > 0:
        later), completed from the neighbouring epoch; the other direction where that neighbour does not exist, the
        epoch itself where neither does. (n_samples,) float32."""
        n = signal.shape[0]
        limit = min(self.max_shift, n - 1)
        shift = int(torch.randint(1, limit + 1, ())) * (1 if int(torch.randint(2, ())) else -1)
        for s in (shift, -shift):
            neighbour = self.dataset.pooled_signal(index, 1 if s > 0 else -1)
            if neighbour is not None:
                joined = np.concatenate([signal, neighbour]) if s > 0 else np.concatenate([neighbour, signal])
                start = s if s > 0 else n + s
                return np.ascontiguousarray(joined[start : start + n], dtype=np.float32)
        return np.array(signal, dtype=np.float32)  # a copy, as on the other paths
