"""Predicting `val` and `test` (docs/evaluation.md 5.6): the one place a downstream model's class probabilities
for every epoch of a split's recordings are made, each epoch exactly once, as `downstream.results.Predictions`.

- `predict_windows`: a model over windows of consecutive epochs (`SequenceDataset` in tiling mode);
- `epochwise`: a per-epoch model as the window predictor of `predict_windows`;
- `predict_stored_epochs`: a per-epoch model on the frozen vectors of `downstream.cache`, in the same tiling.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from dataset.constants import TASKS
from dataset.datasets import SequenceDataset
from downstream.cache import VectorStore, epoch_labels, predict_tiles
from downstream.data import epoch_dataset, eval_batch_size
from downstream.results import PredictionCollector, Predictions
from utils.interrupt import quiet_worker


def predict_stored_epochs(
    cfg: argparse.Namespace,
    store: VectorStore,
    windows: SequenceDataset,
    channels: Sequence[str],
    classify: Callable[[torch.Tensor], torch.Tensor],
) -> Predictions:
    """A per-epoch model's probabilities for every epoch of `windows`' recordings exactly once, from stored
    vectors in the same tiling: `classify((n, D)) -> (n, C)` probabilities; labels from the split's index."""
    labels = epoch_labels(epoch_dataset(cfg, windows.split, channels))
    size = windows.epochs_per_window
    return predict_tiles(
        store,
        windows.recordings,
        size,
        lambda x, _valid: classify(x.flatten(0, 1)).reshape(*x.shape[:2], -1),  # (B, T, D) -> (B, T, C)
        labels,
        TASKS[cfg.task],
        eval_batch_size(cfg, size),
    )


def predict_windows(
    windows: SequenceDataset,
    predict_batch: Callable[[Mapping[str, Any]], torch.Tensor],
    n_classes: int,
    batch_size: int,
    workers: int = 0,
    progress: bool = False,
) -> Predictions:
    """Class probabilities for the `owned` epochs of every window (tiling mode: each epoch exactly once).

    `predict_batch(batch) -> (B, T, C)` probabilities (values at positions not owned are ignored).
    """
    if not windows.tiling:
        raise ValueError("predict_windows needs a SequenceDataset in tiling mode (every epoch exactly once)")
    collector = PredictionCollector(n_classes)
    loader = DataLoader(windows, batch_size=batch_size, shuffle=False, num_workers=workers, worker_init_fn=quiet_worker)
    for batch in tqdm(loader, desc=f"predict {windows.split}", unit="batch", leave=False, disable=not progress):
        owned = batch["owned"].numpy()  # (B, T) bool
        probabilities = predict_batch(batch).float().cpu().numpy()  # (B, T, C)
        length = owned.shape[1]
        labels = batch["label"].numpy() if "label" in batch else np.full(owned.shape, -1)
        recordings = np.repeat(np.asarray(batch["recording"], dtype=object), length).reshape(owned.shape)
        collector.add(recordings[owned], batch["epoch_ids"].numpy()[owned], labels[owned], probabilities[owned])
    return collector.finish()


def epochwise(
    predict_epochs: Callable[[dict[str, torch.Tensor]], torch.Tensor], channels: Sequence[str]
) -> Callable[[Mapping[str, Any]], torch.Tensor]:
    """Turn a per-epoch predictor ({channel: (n, 3000)} -> (n, C) probabilities) into `predict_batch` for
    `predict_windows`: only the owned epochs of a window batch are run."""

    def predict_batch(batch: Mapping[str, Any]) -> torch.Tensor:
        owned = batch["owned"]  # (B, T) bool
        signals = {ch: batch[ch][owned] for ch in channels}  # (n_owned, 3000) each
        probabilities = predict_epochs(signals)  # (n_owned, C)
        out = torch.zeros(*owned.shape, probabilities.shape[-1])  # (B, T, C)
        out[owned] = probabilities.float().cpu()
        return out

    return predict_batch
