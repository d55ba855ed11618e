"""Frozen-backbone representations of whole recordings, computed once and reused (docs/evaluation.md §5).

A frozen backbone (kept in eval mode) maps each 30-s epoch to the same vector in every run, so the linear probe
and the first phase of fine-tuning (context + head on frozen vectors) need each recording encoded only once.
`encode_recordings` does that, in deterministic tiles of consecutive epochs, and returns a `VectorStore`
(recording -> epoch numbers + vectors) that answers lookups by (recording, epoch number).

With `cache_dir`, every recording's vectors are also written to `cache_dir/<key>/<recording>.npz` (atomic
write) and read back by later runs; `key` names the backbone file (SHA-256), the channels and the encoding
precision, and each file records the size and modification time of the Parquet file it was computed from, so a
re-parsed recording is encoded again. Delete the folder to drop the cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from dataset.cohort import recording_path
from dataset.datasets import EpochDataset, SequenceDataset
from dataset.tiling import Tiling
from downstream.results import PredictionCollector, Predictions
from models.heads import NIGHT_NORMS
from utils.interrupt import quiet_worker

TILE_EPOCHS = 20  # epochs read together per recording while encoding (I/O only; each epoch is encoded alone)


@dataclass
class RecordingVectors:
    """One recording's representations: `epochs` (n,) int64 epoch numbers in file order, `vectors` (n, D)."""

    epochs: np.ndarray
    vectors: np.ndarray


def neighbour_rows(rows: np.ndarray, n: int, neighbour_epochs: int) -> np.ndarray:
    """Rows (m,) of a recording of `n` epochs in epoch order -> (m, 2K + 1): rows t - K, ..., t, ..., t + K
    (K = `neighbour_epochs`), each clamped to [0, n - 1] (at the recording's ends its first / last epoch stands in
    for the epochs it lacks)."""
    offsets = np.arange(-neighbour_epochs, neighbour_epochs + 1)
    return np.clip(np.asarray(rows)[:, None] + offsets[None, :], 0, n - 1)


def checked_neighbour_epochs(value: object, owner: str) -> int:
    """`value` as a count of neighbouring epochs on each side (an integer >= 0); ValueError naming `owner`."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{owner}: neighbour_epochs must be an integer >= 0, got {value!r}")
    return int(value)


def neighbour_vectors(vectors: np.ndarray, neighbour_epochs: int) -> np.ndarray:
    """One recording's vectors (n, D) in epoch order -> (n, (2K + 1) D): row t is the concatenation of the vectors
    of `neighbour_rows` t (K = `neighbour_epochs`). K = 0 returns `vectors` itself."""
    if checked_neighbour_epochs(neighbour_epochs, "neighbour_vectors") == 0:
        return vectors
    n = vectors.shape[0]
    if n == 0:
        raise ValueError("neighbour_vectors: a recording without epochs")
    return vectors[neighbour_rows(np.arange(n), n, neighbour_epochs)].reshape(n, -1)


NIGHT_NORM_EPS = 1e-6  # added to a component's SD over the night (a constant component becomes 0, not inf)


def night_normalised(vectors: np.ndarray, night_norm: str) -> np.ndarray:
    """One night's vectors (n, D) under `night_norm`: "none" returns them; "zscore" standardises each component
    over the night's epochs ((x - mean) / (SD + NIGHT_NORM_EPS), in float64, returned as float32), which removes
    what sets nights apart (electrodes, amplifiers, the sleeper) and keeps what sets epochs of one night apart.
    The statistics need every epoch of the night, as `predict.py` has it; a non-finite value (NaN, inf) is left
    out of them and stays NaN in its own epoch only."""
    if night_norm == "none":
        return vectors
    if night_norm != "zscore":
        raise ValueError(f"night_normalised: night_norm must be one of {NIGHT_NORMS}, got {night_norm!r}")
    if vectors.shape[0] == 0:
        raise ValueError("night_normalised: a night without epochs")
    values = vectors.astype(np.float64)
    finite = np.isfinite(values)
    if finite.all():
        mean, sd = values.mean(axis=0), values.std(axis=0)
    else:  # a non-finite value stays NaN in its own epoch; the night's statistics come from the finite ones
        values[~finite] = np.nan
        with warnings.catch_warnings():  # a component without a finite value stays NaN throughout
            warnings.simplefilter("ignore", RuntimeWarning)
            mean, sd = np.nanmean(values, axis=0), np.nanstd(values, axis=0)
    return ((values - mean) / (sd + NIGHT_NORM_EPS)).astype(np.float32)


class VectorStore:
    """recording id -> RecordingVectors, with lookups by (recording, epoch number).

    With `neighbour_epochs` K > 0 every lookup returns an epoch's vector concatenated with those of its K
    neighbours on each side (`neighbour_vectors`' layout, (2K + 1) D wide), laid out on demand from the stored
    vectors (no copy of the store); every recording must then hold consecutive epoch numbers."""

    def __init__(self, recordings: Mapping[str, RecordingVectors], neighbour_epochs: int = 0):
        if not recordings:
            raise ValueError("VectorStore: no recording")
        neighbour_epochs = checked_neighbour_epochs(neighbour_epochs, "VectorStore")
        self.recordings = dict(recordings)
        dims = {r.vectors.shape[1] for r in self.recordings.values()}
        if len(dims) != 1:
            raise ValueError(f"VectorStore: recordings disagree on the vector width ({sorted(dims)})")
        if neighbour_epochs:
            for name, rec in self.recordings.items():
                if rec.epochs.size and not np.all(np.diff(rec.epochs) == 1):
                    raise ValueError(
                        f"VectorStore: recording {name!r} does not hold consecutive epoch numbers, so its "
                        "neighbouring epochs are unknown"
                    )
        self.neighbour_epochs = neighbour_epochs
        self.dim = dims.pop() * (2 * self.neighbour_epochs + 1)

    def night_normalised(self, night_norm: str) -> VectorStore:
        """The same recordings with each one's vectors under `night_norm` (`night_normalised`; "none": this
        store). Every recording must hold all its epochs: the statistics are the night's."""
        if night_norm == "none":
            return self
        return VectorStore(
            {
                name: RecordingVectors(rec.epochs, night_normalised(rec.vectors, night_norm))
                for name, rec in self.recordings.items()
            },
            self.neighbour_epochs,
        )

    def with_neighbours(self, neighbour_epochs: int) -> VectorStore:
        """The same stored vectors, looked up with `neighbour_epochs` neighbours on each side."""
        return self if neighbour_epochs == self.neighbour_epochs else VectorStore(self.recordings, neighbour_epochs)

    def vectors_at(self, recording: str, rows: np.ndarray) -> np.ndarray:
        """(m, dim) vectors of `recording`'s rows (m,) (from `rows`), with their neighbours when the store has any."""
        vectors = self.recordings[recording].vectors
        if not self.neighbour_epochs:
            return vectors[rows]
        return vectors[neighbour_rows(rows, vectors.shape[0], self.neighbour_epochs)].reshape(len(rows), -1)

    def rows(self, recording: str, epochs: np.ndarray) -> np.ndarray:
        """Rows of `epochs` (int64, any shape) in `recording`'s arrays; KeyError for an unknown recording or epoch."""
        if recording not in self.recordings:
            raise KeyError(f"VectorStore: recording {recording!r} was not encoded")
        known = self.recordings[recording].epochs
        rows = np.searchsorted(known, epochs)
        bad = (rows >= known.size) | (known[np.minimum(rows, known.size - 1)] != epochs)
        if np.any(bad):
            raise KeyError(
                f"VectorStore: recording {recording!r} has no epoch(s) {np.asarray(epochs)[bad][:5].tolist()}"
            )
        return rows

    def gather(self, recordings: Sequence[str], epochs: np.ndarray) -> np.ndarray:
        """Vectors of the (recording, epoch) pairs: recordings (N,), epochs (N,) -> (N, D) float32."""
        recordings = np.asarray(recordings, dtype=object)
        epochs = np.asarray(epochs, dtype=np.int64)
        out = np.empty((epochs.shape[0], self.dim), dtype=np.float32)
        for recording in np.unique(recordings):
            at = np.flatnonzero(recordings == recording)
            out[at] = self.vectors_at(recording, self.rows(recording, epochs[at]))
        return out

    def windows(self, recordings: Sequence[str], epoch_ids: torch.Tensor) -> torch.Tensor:
        """Vectors of window batches: recordings (B,), epoch_ids (B, T) with -1 at padding -> (B, T, D), zeros at
        padding (the temporal context is given the mask `epoch_ids >= 0`, so padding does not reach real
        positions through its scans)."""
        ids = epoch_ids.numpy() if isinstance(epoch_ids, torch.Tensor) else np.asarray(epoch_ids)
        out = np.zeros((*ids.shape, self.dim), dtype=np.float32)  # (B, T, D)
        for b, recording in enumerate(recordings):
            real = ids[b] >= 0
            out[b, real] = self.vectors_at(recording, self.rows(recording, ids[b, real]))
        return torch.from_numpy(out)

    def tiles(
        self, recordings: Sequence[str], epochs_per_window: int, stride: int | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The evaluation tiling (`dataset.tiling.Tiling`, windows every `stride` epochs, default the window: as in
        `SequenceDataset(tiling=True, tiling_stride=stride)`) over `recordings`: recording (W,) object, epoch_ids
        (W, T) int64 with -1 at padding, owned (W, T) bool (every epoch owned exactly once)."""
        owners, ids, owned = [], [], []
        for recording in recordings:
            epochs = self.recordings[recording].epochs
            for window in Tiling.covering(epochs.size, epochs_per_window, stride):
                owners.append(recording)
                ids.append(window.take(epochs, -1, np.int64))
                owned.append(window.owned)
        return np.asarray(owners, dtype=object), np.stack(ids), np.stack(owned)


def epoch_labels(dataset: EpochDataset) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """recording -> (labelled epoch numbers (n,) sorted, their labels (n,)) of a labelled EpochDataset."""
    recordings, epochs = dataset.sample_index()
    out = {}
    for recording in np.unique(recordings):
        at = np.flatnonzero(recordings == recording)
        order = np.argsort(epochs[at], kind="stable")
        out[recording] = (epochs[at][order], dataset.labels[at][order])
    return out


def labels_at(labels: Mapping[str, tuple[np.ndarray, np.ndarray]], recording: str, epochs: np.ndarray) -> np.ndarray:
    """Labels of `epochs` (any shape) of `recording`; -1 where the epoch has none (or is padding, -1)."""
    known, values = labels.get(recording, (np.zeros(0, np.int64), np.zeros(0, np.int64)))
    out = np.full(np.shape(epochs), -1, dtype=np.int64)
    if known.size:
        rows = np.minimum(np.searchsorted(known, epochs), known.size - 1)
        hit = known[rows] == epochs
        out[hit] = values[rows[hit]]
    return out


@torch.no_grad()
def predict_tiles(
    store: VectorStore,
    recordings: Sequence[str],
    epochs_per_window: int,
    classify: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    labels: Mapping[str, tuple[np.ndarray, np.ndarray]],
    n_classes: int,
    batch_windows: int = 64,
    stride: int | None = None,
) -> Predictions:
    """Probabilities of every epoch of `recordings` exactly once, from stored vectors in the evaluation tiling
    (windows every `stride` epochs, default `epochs_per_window`; each epoch taken from the window where it is most
    central): `classify((B, T, D) vectors, (B, T) bool real positions) -> (B, T, C)` probabilities. The caller
    sets eval mode and the device."""
    owners, ids, owned = store.tiles(recordings, epochs_per_window, stride)
    collector = PredictionCollector(n_classes)
    for first in range(0, len(owners), batch_windows):
        part = slice(first, first + batch_windows)
        valid = torch.from_numpy(ids[part] >= 0)  # (B, T)
        probabilities = classify(store.windows(owners[part], ids[part]), valid).float().cpu().numpy()  # (B, T, C)
        keep = owned[part]  # (B, T)
        true = np.stack([labels_at(labels, r, window) for r, window in zip(owners[part], ids[part])])  # (B, T)
        rows = np.repeat(owners[part], epochs_per_window).reshape(keep.shape)
        collector.add(rows[keep], ids[part][keep], true[keep], probabilities[keep])
    return collector.finish()


def cache_key(backbone_sha256: str, channels: Sequence[str], precision: str, representation: str | None = None) -> str:
    """Folder name of one backbone's cache: readable prefix + hash of (backbone file, channels, precision) and,
    for a representation other than the pooled epoch vector, its name (e.g. the event task's per-second tokens)."""
    values = {"backbone_sha256": backbone_sha256, "channels": list(channels), "precision": precision}
    if representation is not None:  # None keeps the keys of existing epoch-vector caches
        values["representation"] = representation
    text = json.dumps(values)
    return f"{backbone_sha256[:12]}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def _source_stamp(path: Path) -> str:
    stat = path.stat()
    return f"{stat.st_size}:{stat.st_mtime_ns}"


def _read_cached(path: Path, stamp: str) -> RecordingVectors | None:
    """A cache file's vectors when it exists and was computed from the same Parquet file; else None."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            if str(data["source"]) != stamp:
                return None
            return RecordingVectors(data["epochs"].astype(np.int64), data["vectors"].astype(np.float32))
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):  # truncated or foreign: encode again
        return None


def _write_cached(path: Path, vectors: RecordingVectors, stamp: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
    try:
        np.savez(tmp, epochs=vectors.epochs, vectors=vectors.vectors, source=np.asarray(stamp))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@torch.no_grad()
def encode_recordings(
    encode: Callable[[dict[str, torch.Tensor]], torch.Tensor],
    data_dir: str | Path,
    recordings: Sequence[str],
    channels: Sequence[str],
    device: torch.device,
    *,
    batch_epochs: int = 256,
    workers: int = 0,
    cache_dir: str | Path | None = None,
    key: str | None = None,
    progress: bool = False,
) -> VectorStore:
    """Every epoch of `recordings` through `encode({channel: (n, 3000)}) -> (n, D)` (the caller holds the backbone
    in eval mode and any autocast), each epoch exactly once; cached under `cache_dir/key` when both are given,
    each recording as soon as its last epoch is encoded (a run stopped midway keeps the recordings it finished)."""
    data_dir = Path(data_dir)
    folder = Path(cache_dir) / key if cache_dir is not None and key is not None else None
    found: dict[str, RecordingVectors] = {}
    stamps = {r: _source_stamp(recording_path(data_dir, r)) for r in recordings}
    if folder is not None:
        for recording in recordings:
            cached = _read_cached(folder / f"{recording}.npz", stamps[recording])
            if cached is not None:
                found[recording] = cached
    missing = sorted(set(recordings) - set(found))
    if missing:
        tiles = SequenceDataset(
            data_dir, missing, list(channels), task=None, epochs_per_window=TILE_EPOCHS, tiling=True
        )
        parts: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {r: [] for r in missing}
        left = tiles.recording_epochs()  # epochs still to encode, per recording

        def finish(recording: str) -> None:
            epochs = np.concatenate([p[0] for p in parts[recording]])
            vectors = np.concatenate([p[1] for p in parts[recording]])
            order = np.argsort(epochs, kind="stable")
            found[recording] = RecordingVectors(epochs[order].astype(np.int64), vectors[order])
            parts[recording].clear()
            if folder is not None:
                _write_cached(folder / f"{recording}.npz", found[recording], stamps[recording])

        loader = DataLoader(
            tiles,
            batch_size=max(1, batch_epochs // TILE_EPOCHS),
            shuffle=False,
            num_workers=workers,
            worker_init_fn=quiet_worker,
        )
        for batch in tqdm(
            loader, desc=f"encode {len(missing)} recordings", unit="batch", leave=False, disable=not progress
        ):
            owned = batch["owned"]  # (B, T) bool: every epoch once
            signals = {ch: batch[ch][owned].to(device, non_blocking=True) for ch in channels}  # (n, 3000) each
            vectors = encode(signals).float().cpu().numpy()  # (n, D)
            owners = np.repeat(np.asarray(batch["recording"], dtype=object), owned.shape[1]).reshape(owned.shape)
            owners, epochs = owners[owned.numpy()], batch["epoch_ids"][owned].numpy()
            for recording in np.unique(owners):
                at = owners == recording
                parts[recording].append((epochs[at], vectors[at]))
                left[recording] -= int(at.sum())
                if left[recording] == 0:
                    finish(recording)
        for recording in missing:
            if recording not in found and parts[recording]:
                finish(recording)
            if recording not in found:
                raise ValueError(
                    f"{recording_path(data_dir, recording)}: no epoch to encode "
                    f"(skipped: {tiles.skipped.get(recording, 'unknown reason')})"
                )
    return VectorStore({r: found[r] for r in recordings})
