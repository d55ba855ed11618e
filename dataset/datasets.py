"""Streaming map-style torch Datasets over a parsed cohort (docs/data.md §2.4; docs/training.md §4; docs/evaluation.md §5).

Nothing of the cohort is loaded into RAM: construction reads only the Parquet footers and the small label
columns (`epoch`, `stage`, one event column) to build an index of samples; each `__getitem__` reads just the
requested signal columns of the row group (16-32 epochs) that holds the epoch, through a per-process,
memory-mapped `pyarrow.parquet.ParquetFile` and a small LRU cache of decoded row-group columns, so sequential
reads cost one decode per row group. File handles are keyed by process id: a DataLoader worker forked from a
process that already opened files opens its own, so nothing is shared across forks. Both datasets are
map-style (`len`/`getitem`) and work with `DataLoader(num_workers>0)` and `DistributedSampler`.

Signals come out as written by the parser: float32 at 100 Hz (3000 samples per 30-s epoch; respiratory
channels 10 Hz, 300 samples), robust-scaled per recording (median removed, divided by the IQR).

- `EpochDataset`: one 30-s epoch per sample (or one (epoch, channel) pair with `pool_channels=True`).
- `SequenceDataset`: windows of T consecutive epochs of one recording, for temporal-context models.

`open_reported` builds either for a script: a split that cannot be read is a UsageError naming it, and the
recordings left out are printed once with their reasons instead of the class's warning.
"""

from __future__ import annotations

import os
import warnings
from collections import Counter, OrderedDict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch.utils.data import Dataset

from dataset.cohort import (
    RecordingInfo,
    check_task,
    read_subjects,
    recording_path,
    resolve_split,
    scan_recording,
)
from dataset.constants import CHANNEL_BY_NAME, TASKS
from dataset.tiling import Tiling, Window
from utils.config import UsageError, one_line


class ParquetEpochReader:
    """Reads rows of signal columns from recording files, one row group at a time, per process.

    Holds at most `max_open_files` memory-mapped ParquetFile handles and `cache_bytes` of decoded
    row-group columns (LRU, keyed by recording, row group and column). Pickling drops both, and a change of
    `os.getpid()` (a forked DataLoader worker) discards what the parent had, so handles are never shared.
    """

    def __init__(self, max_open_files: int = 256, cache_bytes: int = 32 * 2**20):
        self.max_open_files = max_open_files
        self.cache_bytes = cache_bytes
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._files: OrderedDict[str, pq.ParquetFile] = OrderedDict()
        self._cache: OrderedDict[tuple[str, int, str], np.ndarray] = OrderedDict()
        self._cached_bytes = 0

    def __getstate__(self) -> dict:
        return {"max_open_files": self.max_open_files, "cache_bytes": self.cache_bytes}

    def __setstate__(self, state: dict) -> None:
        self.max_open_files = state["max_open_files"]
        self.cache_bytes = state["cache_bytes"]
        self._reset()

    def _file(self, info: RecordingInfo) -> pq.ParquetFile:
        if os.getpid() != self._pid:  # forked: the parent's handles and cache are not ours
            self._reset()
        key = info.recording_id
        parquet = self._files.get(key)
        if parquet is None:
            try:
                parquet = pq.ParquetFile(info.path, memory_map=True)
            except (OSError, pa.ArrowException) as err:
                raise UsageError(f"{info.path}: cannot open recording file ({one_line(err)})") from err
            self._files[key] = parquet
            if len(self._files) > self.max_open_files:
                self._files.popitem(last=False)[1].close()
        else:
            self._files.move_to_end(key)
        return parquet

    def _row_group(self, info: RecordingInfo, row_group: int, columns: list[str]) -> dict[str, np.ndarray]:
        """Decoded columns of one row group: name -> (rows_in_group, samples_per_epoch) float32."""
        parquet = self._file(info)  # first: may reset the cache after a fork
        out, wanted = {}, []
        for name in columns:
            cached = self._cache.get((info.recording_id, row_group, name))
            if cached is None:
                wanted.append(name)
            else:
                self._cache.move_to_end((info.recording_id, row_group, name))
                out[name] = cached
        if wanted:
            # single-threaded: Arrow's thread pool makes a small read 2x slower and fights DataLoader workers
            try:
                table = parquet.read_row_group(row_group, columns=wanted, use_threads=False)
            except (OSError, pa.ArrowException) as err:  # damaged after its footer was read: bad input, no bug
                raise UsageError(
                    f"{info.path}: row group {row_group} is unreadable ({one_line(err)}); parse the night again"
                ) from err
            for name in wanted:
                column = table.column(name).combine_chunks()
                if column.null_count:
                    raise ValueError(f"{info.path}: channel {name} has null epochs in row group {row_group}")
                samples = info.channel_samples[name]
                values = column.flatten().to_numpy(zero_copy_only=False).reshape(-1, samples)  # (rows, samples)
                out[name] = values
                self._cache[(info.recording_id, row_group, name)] = values
                self._cached_bytes += values.nbytes
            while self._cached_bytes > self.cache_bytes and len(self._cache) > len(columns):
                self._cached_bytes -= self._cache.popitem(last=False)[1].nbytes
        return out

    def read(self, info: RecordingInfo, start: int, stop: int, columns: list[str]) -> dict[str, np.ndarray]:
        """Rows [start, stop) of `columns`: name -> (stop - start, samples_per_epoch) float32, read-only."""
        first, last = info.row_group_of(start), info.row_group_of(stop - 1)
        parts = []
        for group in range(first, last + 1):
            group_start = int(info.row_group_starts[group])
            decoded = self._row_group(info, group, columns)
            lo, hi = (
                max(start, group_start) - group_start,
                min(stop, int(info.row_group_starts[group + 1])) - group_start,
            )
            parts.append({name: decoded[name][lo:hi] for name in columns})
        if len(parts) == 1:
            return parts[0]
        return {name: np.concatenate([part[name] for part in parts]) for name in columns}


def _check_channels(channels: str | list[str] | tuple[str, ...]) -> list[str]:
    channels = [channels] if isinstance(channels, str) else list(channels)
    if not channels:
        raise ValueError("channels is empty: name at least one channel, e.g. ['eeg_c4']")
    unknown = [c for c in channels if c not in CHANNEL_BY_NAME]
    if unknown:
        raise ValueError(f"unknown channel(s) {unknown}: use canonical names {list(CHANNEL_BY_NAME)}")
    if len(set(channels)) != len(channels):
        raise ValueError(f"channels {channels} lists a channel twice")
    return channels


class _CohortIndex(Dataset):
    """Shared construction: resolve the split, scan footers and labels, skip recordings, pick subjects.

    After `__init__`: `self._infos` (list of RecordingInfo) and `self._rec_labels` (list of (n_epochs,) int8
    arrays, -1 = no label) hold the usable recordings in sorted id order; `self.skipped` maps each recording
    left out to the reason; `self.reader` (ParquetEpochReader) does the reads, its `cache_bytes` is tunable.

    The subject and label draws are made over `self._drawn_from`: the recordings with something to draw
    (labelled epochs, or any epoch without a task) whether or not they have this dataset's channels, each
    as (info, labels, usable). So every method draws the same subjects and epochs for a seed, whichever
    channels it reads; one that cannot read a night only loses that night's share of the draw.
    """

    def recording_epochs(self) -> dict[str, int]:
        """{recording id: its number of epochs} of the usable recordings."""
        return {info.recording_id: info.n_epochs for info in self._infos}

    def __init__(self, data_dir, split, channels, task, label_rule, n_subjects, seed, need_all_channels):
        self.data_dir = Path(data_dir)
        self.split = split if isinstance(split, str) else "<list>"
        self.channels = _check_channels(channels)
        check_task(task, label_rule)
        self.task, self.label_rule, self.seed = task, label_rule, seed
        self.skipped: dict[str, str] = {}
        self.reader = ParquetEpochReader()

        recording_ids = resolve_split(self.data_dir, split)
        subjects = read_subjects(self.data_dir, recording_ids)
        channel_found = Counter()
        scanned = 0
        drawn_from: list[tuple[RecordingInfo, np.ndarray, bool]] = []
        for recording_id in recording_ids:
            path = recording_path(self.data_dir, recording_id)
            if not path.is_file():
                self.skipped[recording_id] = f"no file {path}"
                continue
            info, labels = scan_recording(path, recording_id, subjects[recording_id], task, label_rule)
            scanned += 1
            if info.n_epochs == 0:
                self.skipped[recording_id] = "no epochs"
                continue
            present = [c for c in self.channels if c in info.channel_samples]
            channel_found.update(present)
            missing = [c for c in self.channels if c not in info.channel_samples]
            if task is not None and not np.any(labels >= 0):
                self.skipped[recording_id] = f"no labelled epoch for task {task}"
                continue
            usable = not (missing and (need_all_channels or not present))
            drawn_from.append((info, labels.astype(np.int8), usable))  # labels (n_epochs,) -1 = no label
            if not usable:
                self.skipped[recording_id] = f"missing channel(s) {', '.join(missing)}"

        where = f"split {self.split!r} of {self.data_dir}"
        if scanned == 0:
            raise FileNotFoundError(f"no recording file of {where} exists (looked in {self.data_dir / 'recordings'})")
        absent = [c for c in self.channels if channel_found[c] == 0]
        if absent:
            raise ValueError(f"channel(s) {absent} not present in any of the {scanned} recordings of {where}")
        summary = "; ".join(f"{count} x {reason}" for reason, count in Counter(self.skipped.values()).most_common(5))
        if self.skipped:
            warnings.warn(
                f"{type(self).__name__}: skipped {len(self.skipped)} of {len(recording_ids)} recordings of {where} "
                f"({summary}); see .skipped",
                stacklevel=3,
            )
        if n_subjects is not None:
            drawn_from = self._pick_subjects(drawn_from, n_subjects, where)
        if not any(usable for _, _, usable in drawn_from):
            raise ValueError(
                f"no usable recording in {where}: {len(self.skipped)} skipped" + (f" ({summary})" * bool(summary))
            )
        self._drawn_from = drawn_from
        self._infos: list[RecordingInfo] = [info for info, _, usable in drawn_from if usable]
        self._rec_labels: list[np.ndarray] = [labels for _, labels, usable in drawn_from if usable]

    def _pick_subjects(self, drawn_from, n_subjects, where):
        """The recordings of the first `n_subjects` of a seeded permutation of the sorted subjects of
        `drawn_from` (with or without this dataset's channels, as the label draw)."""
        subjects = sorted({info.subject_id for info, _, _ in drawn_from})
        if not 1 <= n_subjects <= len(subjects):
            raise ValueError(f"n_subjects={n_subjects}, but {where} has {len(subjects)} subjects with labels")
        order = np.random.default_rng([self.seed, 1]).permutation(len(subjects))
        keep = {subjects[i] for i in order[:n_subjects]}
        return [entry for entry in drawn_from if entry[0].subject_id in keep]

    def _label_counts(self, labels: np.ndarray) -> np.ndarray:
        if self.task is None:
            raise ValueError("class_counts() needs a task; this dataset was built with task=None")
        return np.bincount(labels[labels >= 0], minlength=TASKS[self.task]).astype(np.int64)


class EpochDataset(_CohortIndex):
    """Single 30-s epochs of a split, streamed from Parquet.

    Args:
        data_dir: the parser's output folder (DST) with recordings/, manifest.parquet, splits.json.
        split: "pretrain" | "train" | "val" | "test" (read from splits.json) or an explicit list of recording ids.
        channels: canonical channel names (dataset.constants), e.g. ["eeg_c4", "eog_l"].
        task: None (self-supervised: every epoch), "sleep_stage" (5 classes), "apnea" or "hypopnea" (binary).
            Epochs without a label for the task are left out (stage -1 for sleep_stage). Event labels exist for
            every epoch of a scored night, stage -1 epochs included; a night with no stage scored at all has
            no event labels either (see `dataset.cohort.task_labels`).
        label_fraction: fraction (0, 1] of the split's labelled epochs, drawn without replacement with `seed`;
            round(fraction x N), at least 1. A smaller fraction with the same seed is a subset of a larger one.
            N counts the recordings that lack the channels too, and their drawn epochs are then left out, so
            datasets of other channels draw the same epochs.
            With pool_channels the drawn epochs are then expanded to the channels each recording has.
        n_subjects: keep the first N subjects of a seeded permutation of the split's sorted subjects with labels
            (whether or not their recordings have the channels, as the label draw).
        seed: seeds the subject and epoch draws (independent streams).
        pool_channels: samples are (recording, epoch, channel) triples, each channel a single-channel sample
            (unimodal pretraining of eeg_c4 + eeg_c3). A recording then needs only one of the channels.
        label_rule: event tasks only: "midpoint" (int8 column), "any" (`<event>_s` > 0), "min_s:X" (>= X s).

    Items: {"recording": str, "epoch": int, <channel>: (3000,) float32 tensor per channel, "label": () int64}
    ("label" only with a task); with pool_channels {"recording", "epoch", "channel": str,
    "signal": (3000,) float32, "label"?}. Recordings lacking a requested channel (all of them, with
    pool_channels) are skipped, listed in `.skipped` and counted in a warning; a channel that no recording of
    the split has raises ValueError.
    """

    def __init__(
        self,
        data_dir: str | Path,
        split: str | list[str],
        channels: str | list[str],
        task: str | None = None,
        label_fraction: float = 1.0,
        n_subjects: int | None = None,
        seed: int = 0,
        pool_channels: bool = False,
        label_rule: str = "midpoint",
    ):
        if not 0.0 < label_fraction <= 1.0:
            raise ValueError(f"label_fraction must be in (0, 1], got {label_fraction}")
        super().__init__(data_dir, split, channels, task, label_rule, n_subjects, seed, not pool_channels)
        self.pool_channels, self.label_fraction = pool_channels, label_fraction

        rec_parts, row_parts = [], []
        usable_index = np.cumsum([usable for _, _, usable in self._drawn_from]) - 1  # drawn-from -> self._infos
        for r, (_, labels, usable) in enumerate(self._drawn_from):
            rows = np.flatnonzero(labels >= 0) if task is not None else np.arange(labels.shape[0])
            rec_parts.append(np.full(rows.shape, usable_index[r] if usable else -1, dtype=np.int32))
            row_parts.append(rows.astype(np.int32))
        rec, row = np.concatenate(rec_parts), np.concatenate(row_parts)  # (n_epochs,) each, rec -1: not usable
        if label_fraction < 1.0:  # drawn over every night with labels: the same draw whatever the channels
            n_keep = max(1, int(np.floor(label_fraction * rec.shape[0] + 0.5)))
            keep = np.sort(np.random.default_rng([seed, 2]).permutation(rec.shape[0])[:n_keep])
            rec, row = rec[keep], row[keep]
        rec, row = rec[rec >= 0], row[rec >= 0]
        if rec.size == 0:
            raise ValueError(
                f"label_fraction {label_fraction}: none of the drawn epochs lies in a recording with channels "
                f"{self.channels} (split {self.split!r} of {self.data_dir})"
            )

        channel = np.zeros(rec.shape, dtype=np.int8)
        if pool_channels:  # one sample per (epoch, channel) the recording has, ordered by recording, epoch, channel
            parts = []
            for k, name in enumerate(self.channels):
                has = np.array([name in info.channel_samples for info in self._infos])
                mask = has[rec]
                parts.append((rec[mask], row[mask], np.full(int(mask.sum()), k, dtype=np.int8)))
            rec, row, channel = (np.concatenate([p[i] for p in parts]) for i in range(3))
            order = np.lexsort((channel, row, rec))
            rec, row, channel = rec[order], row[order], channel[order]
        self._rec, self._row, self._channel = rec, row, channel  # (n_samples,) each

        self.labels: np.ndarray | None = None  # (n_samples,) int64
        if task is not None:
            starts = np.cumsum([0] + [len(lab) for lab in self._rec_labels])
            self.labels = np.concatenate(self._rec_labels).astype(np.int64)[starts[rec] + row]
        used = np.unique(rec)
        self.recordings: list[str] = [self._infos[r].recording_id for r in used]
        self.subjects: list[str] = sorted({self._infos[r].subject_id for r in used})

    def class_counts(self) -> np.ndarray:
        """Samples per class, (n_classes,) int64, e.g. for inverse-frequency class weights."""
        return self._label_counts(self.labels)

    def sample_index(self) -> tuple[np.ndarray, np.ndarray]:
        """(recording id (N,) object, epoch number (N,) int64) of every sample, from the index (no signal read)."""
        ids = np.asarray([info.recording_id for info in self._infos], dtype=object)
        epochs = np.empty(len(self), dtype=np.int64)
        for r, info in enumerate(self._infos):
            rows = np.flatnonzero(self._rec == r)
            epochs[rows] = info.epochs[self._row[rows]]
        return ids[self._rec], epochs

    def pooled_signal(self, index: int, offset: int = 0) -> np.ndarray | None:
        """Pooled datasets: the signal of sample `index`'s channel `offset` epochs (file rows) away from it in
        the same recording, (n_samples,) float32 robust-scaled; None when that row is outside the recording."""
        if not self.pool_channels:
            raise ValueError("pooled_signal needs a pooled single-channel EpochDataset (pool_channels=True)")
        index = int(index) % len(self)
        info = self._infos[int(self._rec[index])]
        row = int(self._row[index]) + offset
        if not 0 <= row < info.n_epochs:
            return None
        name = self.channels[int(self._channel[index])]
        return self.reader.read(info, row, row + 1, [name])[name][0]

    def __len__(self) -> int:
        return int(self._rec.shape[0])

    def __getitem__(self, index: int) -> dict:
        index = int(index)
        if index < 0:
            index += len(self)
        info = self._infos[int(self._rec[index])]
        row = int(self._row[index])
        item = {"recording": info.recording_id, "epoch": int(info.epochs[row])}
        if self.pool_channels:
            item["channel"] = self.channels[int(self._channel[index])]
            signal = self.pooled_signal(index)
            item["signal"] = torch.from_numpy(signal.copy())  # (3000,) float32, 100 Hz, robust-scaled
        else:
            signals = self.reader.read(info, row, row + 1, self.channels)
            for name in self.channels:
                item[name] = torch.from_numpy(signals[name][0].copy())  # (3000,) float32, 100 Hz, robust-scaled
        if self.labels is not None:
            item["label"] = torch.tensor(int(self.labels[index]), dtype=torch.int64)
        return item

    def __repr__(self) -> str:
        mode = ", pooled" if self.pool_channels else ""
        return (
            f"EpochDataset({self.split!r}, {self.channels}{mode}, task={self.task}: {len(self)} samples, "
            f"{len(self.recordings)} recordings, {len(self.subjects)} subjects, {len(self.skipped)} skipped)"
        )


class SequenceDataset(_CohortIndex):
    """Windows of T = `epochs_per_window` consecutive epochs inside one recording (never across recordings).

    Training mode (`tiling=False`): windows start every `stride` epochs; when the last one stops short of the
    recording end, one more window aligned to the end is added, so every epoch is seen. With a task,
    windows without any labelled epoch are dropped.

    Tiling mode (`tiling=True`, for evaluation and inference; `stride` is ignored): windows start every
    `tiling_stride` epochs (default T: 0, T, 2T, ...) and, when they leave a tail, a final window aligned to the
    recording end (start n - T) covers it. Each epoch is `owned` by the window in which it is most central, so
    over the whole dataset every (recording, epoch) is `owned` exactly once (`tiling_stride` <= T; a longer one
    is refused by `Tiling.covering`); with `tiling_stride` T // 2 a temporal model sees about a quarter window on
    each side of every epoch it predicts (away from the recording ends; 5 epochs for T = 20). Write predictions
    at `epoch_ids[owned]`. Both modes are `dataset.tiling.Tiling`, the one tiling every windowed consumer uses.

    Recordings shorter than T give one window zero-padded at the end (`valid=False` there), or, with
    `pad_last=False`, are skipped and listed in `.skipped`.

    Items: {"recording": str, "start_epoch": int, <channel>: (T, 3000) float32, "label": (T,) int64 with -1 where
    unlabelled or padded (use as ignore_index; only with a task), "valid": (T,) bool (real epoch),
    "epoch_ids": (T,) int64 (-1 at padding), and in tiling mode "owned": (T,) bool}.
    Other arguments as in `EpochDataset`; here a recording needs every requested channel.
    """

    def __init__(
        self,
        data_dir: str | Path,
        split: str | list[str],
        channels: str | list[str],
        task: str | None = None,
        epochs_per_window: int = 20,
        stride: int = 10,
        seed: int = 0,
        n_subjects: int | None = None,
        label_rule: str = "midpoint",
        pad_last: bool = True,
        tiling: bool = False,
        tiling_stride: int | None = None,
    ):
        if epochs_per_window < 1 or stride < 1 or (tiling_stride is not None and tiling_stride < 1):
            raise ValueError(
                f"epochs_per_window ({epochs_per_window}), stride ({stride}) and tiling_stride ({tiling_stride}) "
                "must be >= 1"
            )
        super().__init__(data_dir, split, channels, task, label_rule, n_subjects, seed, True)
        self.epochs_per_window, self.stride = epochs_per_window, stride
        self.pad_last, self.tiling = pad_last, tiling
        self.tiling_stride = epochs_per_window if tiling_stride is None else int(tiling_stride)
        n_windows = epochs_per_window

        rec_parts, start_parts, own_parts, own_end_parts = [], [], [], []
        kept_infos, kept_labels = [], []
        for info, labels in zip(self._infos, self._rec_labels):
            n = info.n_epochs
            if n < n_windows and not pad_last:
                self.skipped[info.recording_id] = f"shorter than {n_windows} epochs (pad_last=False)"
                continue
            starts, owned_from, owned_to = self._window_starts(n, labels)
            if starts.size == 0:
                continue
            r = len(kept_infos)
            kept_infos.append(info)
            kept_labels.append(labels)
            rec_parts.append(np.full(starts.shape, r, dtype=np.int32))
            start_parts.append(starts.astype(np.int32))
            own_parts.append(owned_from.astype(np.int32))
            own_end_parts.append(owned_to.astype(np.int32))
        short = [rid for rid, why in self.skipped.items() if why.startswith("shorter than")]
        if short:
            warnings.warn(
                f"SequenceDataset: skipped {len(short)} recording(s) shorter than {n_windows} epochs "
                f"(pad_last=False); see .skipped",
                stacklevel=2,
            )
        if not kept_infos:
            raise ValueError(f"no window in split {self.split!r} of {self.data_dir}: see .skipped {self.skipped}")
        self._infos, self._rec_labels = kept_infos, kept_labels
        self._rec = np.concatenate(rec_parts)  # (n_windows,) recording index
        self._start = np.concatenate(start_parts)  # (n_windows,) first row of the window
        self._owned_from = np.concatenate(own_parts)  # (n_windows,) first owned position (tiling mode)
        self._owned_to = np.concatenate(own_end_parts)  # (n_windows,) one past the last owned position
        self.recordings: list[str] = [info.recording_id for info in kept_infos]
        self.subjects: list[str] = sorted({info.subject_id for info in kept_infos})

    def _window_starts(self, n: int, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """First row of each window of a recording of n epochs, and the positions it owns [from, to)."""
        if self.tiling:
            tiling = Tiling.covering(n, self.epochs_per_window, self.tiling_stride)
        else:
            tiling = Tiling(n, self.epochs_per_window, self.stride)
        starts, owned_from, owned_to = tiling.starts, tiling.owned_from, tiling.owned_to
        if self.task is not None and not self.tiling:
            size = self.epochs_per_window
            labelled = np.concatenate([[0], np.cumsum(labels >= 0)])  # (n + 1,) labelled epochs before each row
            keep = labelled[np.minimum(starts + size, n)] > labelled[starts]
            starts, owned_from, owned_to = starts[keep], owned_from[keep], owned_to[keep]
        return starts, owned_from, owned_to

    def class_counts(self) -> np.ndarray:
        """Labelled epochs per class over the dataset's recordings (each epoch once), (n_classes,) int64."""
        return self._label_counts(np.concatenate(self._rec_labels).astype(np.int64))

    def window_index(self) -> list[tuple[str, np.ndarray]]:
        """(recording id, epoch numbers (T,) int64 with -1 at padding) of every window (no signal read)."""
        out = []
        for r, start in zip(self._rec, self._start):
            info = self._infos[int(r)]
            window = Window.within(int(start), self.epochs_per_window, info.n_epochs)
            out.append((info.recording_id, window.take(info.epochs, -1, np.int64)))
        return out

    def __len__(self) -> int:
        return int(self._rec.shape[0])

    def __getitem__(self, index: int) -> dict:
        index = int(index)
        if index < 0:
            index += len(self)
        r = int(self._rec[index])
        info = self._infos[r]
        window = Window.within(
            int(self._start[index]),
            self.epochs_per_window,
            info.n_epochs,
            int(self._owned_from[index]),
            int(self._owned_to[index]),
        )
        signals = self.reader.read(info, window.start, window.stop, self.channels)
        item = {"recording": info.recording_id, "start_epoch": int(info.epochs[window.start])}
        for name in self.channels:
            item[name] = torch.from_numpy(window.pad(signals[name], 0.0, np.float32))  # (T, 3000), zero padding
        if self.task is not None:
            item["label"] = torch.from_numpy(window.take(self._rec_labels[r], -1, np.int64))  # (T,) -1 = ignore_index
        item["valid"] = torch.from_numpy(window.valid)
        item["epoch_ids"] = torch.from_numpy(window.take(info.epochs, -1, np.int64))  # (T,) -1 at padding
        if self.tiling:
            item["owned"] = torch.from_numpy(window.owned)
        return item

    def __repr__(self) -> str:
        mode = f"tiling every {self.tiling_stride}" if self.tiling else f"stride {self.stride}"
        return (
            f"SequenceDataset({self.split!r}, {self.channels}, task={self.task}, T={self.epochs_per_window}, "
            f"{mode}: {len(self)} windows, {len(self.recordings)} recordings, {len(self.skipped)} skipped)"
        )


def open_reported(make: Callable[[], _CohortIndex], what: str, report: bool = True) -> _CohortIndex:
    """`make()` a dataset for a script: UsageError "`what`: reason" when the split cannot be read; with `report`,
    print the recordings skipped and why (e.g. a missing channel) instead of the warning."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*skipped \d+")  # reported below, with every reason
        try:
            dataset = make()
        except (ValueError, OSError, KeyError) as err:
            raise UsageError(f"{what}: {err}") from err
    if dataset.skipped and report:
        by_reason: dict[str, list[str]] = {}
        for recording_id, reason in dataset.skipped.items():
            by_reason.setdefault(reason, []).append(recording_id)
        print(
            f"{what}: skipped {len(dataset.skipped)} recording(s): "
            + "; ".join(
                f"{len(ids)} x {reason} ({', '.join(sorted(ids)[:3])}{', ...' if len(ids) > 3 else ''})"
                for reason, ids in sorted(by_reason.items(), key=lambda item: -len(item[1]))
            ),
            flush=True,
        )
    return dataset
