"""Temporal-neighbour positives for contrastive pretraining (docs/models.md §3.1, "positive pairs").

Sleep stages last minutes, so an epoch and the next or previous 30-s epoch of the same channel are almost
always in the same stage while everything else about them (the exact waves, artefacts, noise) differs. Used as
the two views of the contrastive loss, they teach the encoder what stays constant across neighbouring epochs,
which is what staging needs; two masked copies of one epoch (the published views) can be told apart by
within-epoch detail alone.

    pairs = NeighbourPairs(EpochDataset(dst, "pretrain", ["eeg_c3", "eeg_c4"], pool_channels=True))
    item = pairs[i]   # EpochDataset's item + "positive": (3000,) the same channel at epoch +-1
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from dataset.datasets import EpochDataset


class NeighbourPairs(Dataset):
    """A pooled single-channel EpochDataset whose items also carry `positive`: the same channel's signal one
    epoch earlier or later in the same recording (the side drawn from torch's RNG, which the training loop
    seeds; a recording's first and last epochs take the only side they have; a one-epoch recording pairs
    the epoch with itself)."""

    def __init__(self, dataset: EpochDataset):
        if not dataset.pool_channels:
            raise ValueError("NeighbourPairs needs a pooled single-channel EpochDataset (pool_channels=True)")
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name: str):  # split, channels, recordings, subjects... of the wrapped dataset
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getitem__(self, index: int) -> dict:
        item = self.dataset[index]
        step = 1 if int(torch.randint(2, ())) else -1
        positive = self.dataset.pooled_signal(index, step)
        if positive is None:  # the first or last epoch of its recording: the other side
            positive = self.dataset.pooled_signal(index, -step)
        if positive is None:  # a one-epoch recording
            positive = item["signal"].numpy()
        item["positive"] = torch.from_numpy(positive.copy())  # (n_samples,) float32, robust-scaled
        return item
