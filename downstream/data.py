"""The data of a downstream run (docs/evaluation.md 5.2): labelled epochs and windows of each split (training
applies --label-fraction and --train-subjects; --max-val-recordings picks the `val` subset), the evaluation
batch size, and representations computed without gradients: `apply_epochs` over a dataset, `encode_store` /
`stored_features` from the frozen-vector store of `downstream.cache`.

A split that cannot be read raises UsageError naming the folder; skipped recordings are printed with their
reasons.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from dataset.datasets import EpochDataset, SequenceDataset, open_reported
from dataset.splits import read_splits
from downstream.backbone import BackboneSource
from downstream.cache import VectorStore, cache_key, encode_recordings
from models.heads import EpochEncoder
from utils.config import UsageError
from utils.engine import autocast_context, evaluating
from utils.interrupt import quiet_worker


def val_split(cfg: argparse.Namespace) -> str | list[str]:
    """ "val", or a seeded subset of --max-val-recordings of its recordings."""
    recordings = read_splits(Path(cfg.data) / "splits.json")["recordings"]["val"]
    if not cfg.max_val_recordings or cfg.max_val_recordings >= len(recordings):
        return "val"
    pick = np.random.default_rng([cfg.seed, 3]).choice(len(recordings), cfg.max_val_recordings, replace=False)
    return sorted(recordings[i] for i in pick)


def fitted_batch(cfg: Any, n_train: int, unit: str) -> Any:
    """`cfg` with --batch-size lowered to the training set (at least 2) when it holds fewer `unit`s than a batch,
    said in a note; call it before config.json is written, which records the batch that ran."""
    if n_train >= cfg.batch_size:
        return cfg
    print(
        f"note: {n_train} training {unit} < --batch-size {cfg.batch_size}; using batch size {max(2, n_train)}",
        flush=True,
    )
    return cfg.replace(batch_size=max(2, n_train))


def epoch_dataset(
    cfg: argparse.Namespace, split: str | list[str], channels: Sequence[str], training: bool = False
) -> EpochDataset:
    """Labelled epochs of a split; `training` applies --label-fraction and --train-subjects."""
    name = split if isinstance(split, str) else f"val ({len(split)} recordings)"
    return open_reported(
        lambda: EpochDataset(
            cfg.data,
            split,
            list(channels),
            task=cfg.task,
            label_fraction=cfg.label_fraction if training else 1.0,
            n_subjects=cfg.train_subjects if training else None,
            seed=cfg.seed,
            label_rule=cfg.label_rule,
        ),
        f"{cfg.data}, split {name}, channels {list(channels)}",
    )


def window_dataset(
    cfg: argparse.Namespace,
    split: str | list[str],
    channels: Sequence[str],
    epochs_per_window: int,
    tiling: bool,
    stride: int | None = None,
    training: bool = False,
) -> SequenceDataset:
    """Windows of consecutive epochs of one recording, every `stride` epochs; tiling mode predicts every epoch
    exactly once (there `stride` is the tiling's, default the window: disjoint windows)."""
    name = split if isinstance(split, str) else f"val ({len(split)} recordings)"
    steps = {"tiling_stride": stride} if tiling else {} if stride is None else {"stride": stride}
    return open_reported(
        lambda: SequenceDataset(
            cfg.data,
            split,
            list(channels),
            task=cfg.task,
            epochs_per_window=epochs_per_window,
            seed=cfg.seed,
            n_subjects=cfg.train_subjects if training else None,
            label_rule=cfg.label_rule,
            tiling=tiling,
            **steps,
        ),
        f"{cfg.data}, split {name}, {epochs_per_window}-epoch windows, channels {list(channels)}",
    )


def check_two_classes(
    counts: Sequence[int] | np.ndarray, what: str = "epochs", raise_: str = "--label-fraction or --train-subjects"
) -> None:
    """UsageError when the labelled training `what` hold fewer than two classes (`counts` per class): a model fitted
    on one class learns nothing to score, whatever its val and test numbers then say; `raise_`: the options that
    give it more labels."""
    counts = np.asarray(counts)
    if np.count_nonzero(counts) < 2:
        raise UsageError(f"the training {what} hold one class only (per class {counts.tolist()}); raise {raise_}")


def eval_batch_size(cfg: argparse.Namespace, per_window: int = 1) -> int:
    """--eval-batch-size (or --batch-size) samples; with `per_window` epochs per sample, in windows (>= 1)."""
    return max(1, (cfg.eval_batch_size or cfg.batch_size) // per_window)


class FeatureDataset(Dataset):
    """Cached representations: items {"features": (D,) float32, "label": () int64}."""

    def __init__(self, features: torch.Tensor, labels: torch.Tensor):
        self.features, self.labels = features, labels

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"features": self.features[index], "label": self.labels[index]}


def precision_options(cfg: argparse.Namespace) -> tuple[bool, str]:
    """(--amp, --amp-dtype) of a script's options; a script without them (the trees) encodes in fp32."""
    return bool(getattr(cfg, "amp", False)), str(getattr(cfg, "amp_dtype", "bf16"))


@torch.no_grad()
def apply_epochs(
    function: Callable[[dict[str, torch.Tensor]], torch.Tensor],
    dataset: EpochDataset,
    channels: Sequence[str],
    device: torch.device,
    cfg: argparse.Namespace,
) -> FeatureDataset:
    """`function({channel: (B, 3000)}) -> (B, K)` over every item of a labelled EpochDataset, in order, without
    gradients (the caller sets eval mode): outputs (N, K) float32 on the CPU, with the labels (N,)."""
    loader = DataLoader(
        dataset, batch_size=eval_batch_size(cfg), shuffle=False, num_workers=cfg.workers, worker_init_fn=quiet_worker
    )
    outputs, labels = [], []
    for batch in tqdm(
        loader, desc=f"encode {dataset.split}", unit="batch", leave=False, disable=not getattr(cfg, "progress", False)
    ):
        signals = {ch: batch[ch].to(device, non_blocking=True) for ch in channels}  # (B, 3000) each, 100 Hz
        with autocast_context(device, *precision_options(cfg)):
            outputs.append(function(signals).float().cpu())  # (B, K)
        labels.append(batch["label"])
    return FeatureDataset(torch.cat(outputs), torch.cat(labels))


def encode_store(
    cfg: argparse.Namespace,
    encoder: EpochEncoder,
    source: BackboneSource,
    channels: Sequence[str],
    recordings: Sequence[str],
    device: torch.device,
) -> VectorStore:
    """Frozen `encoder` vectors of every epoch of `recordings` (`downstream.cache`): read from / written to
    --cache-dir when given and the backbone is a pretrained file, else computed in memory. The encoder's pooling
    "mean" gives its vector (D); "channel" each channel's (C·D), cached under a key of its own."""
    amp, amp_dtype = precision_options(cfg)
    precision = f"amp-{amp_dtype}" if amp and device.type == "cuda" else "fp32"
    sha = source.provenance.get("sha256") if source.state is not None else None
    representation = None if encoder.pooling == "mean" else f"{encoder.pooling}-pooled"
    key = cache_key(sha, channels, precision, representation) if sha else None

    def encode(signals: dict[str, torch.Tensor]) -> torch.Tensor:
        with autocast_context(device, amp, amp_dtype):
            return encoder(signals)  # (n, D) or (n, C·D)

    with evaluating(encoder):
        return encode_recordings(
            encode,
            cfg.data,
            recordings,
            channels,
            device,
            batch_epochs=eval_batch_size(cfg),
            workers=cfg.workers,
            cache_dir=cfg.cache_dir,
            key=key,
            progress=cfg.progress,
        )


def recordings_to_store(cfg: Any, train: EpochDataset, val: EpochDataset, test: Any) -> tuple[list[str], bool]:
    """The recordings a per-epoch method on stored vectors encodes (or featurises) once, and whether the train
    recordings are among them whole: every val and test epoch, and, with --cache-dir, --neighbour-epochs or
    --night-norm, every epoch of the train recordings (the neighbours of a labelled epoch need not be labelled,
    and a night's statistics take all its epochs); otherwise the labelled train epochs are computed alone."""
    whole_train = bool(cfg.cache_dir) or cfg.neighbour_epochs > 0 or cfg.night_norm != "none"
    wanted = set(val.recordings) | set(test.recordings) | (set(train.recordings) if whole_train else set())
    return sorted(wanted), whole_train


def night_context(store: VectorStore, cfg: Any) -> VectorStore:
    """`store` as the classifier reads it: standardised over each whole night (--night-norm), then laid out with
    the neighbours (--neighbour-epochs): (n, (2K + 1) D) per recording."""
    return store.night_normalised(cfg.night_norm).with_neighbours(cfg.neighbour_epochs)


def stored_features(store: VectorStore, dataset: EpochDataset) -> FeatureDataset:
    """The stored vectors of a labelled EpochDataset's samples, in its order: features (N, D), labels (N,)."""
    recordings, epochs = dataset.sample_index()
    return FeatureDataset(torch.from_numpy(store.gather(recordings, epochs)), torch.from_numpy(dataset.labels))
