"""Reading a parsed cohort's small files for the loaders: splits, manifest, Parquet footers, per-epoch labels.

Everything here is cheap metadata (docs/data.md §2.4): `DST/splits.json`, `DST/manifest.parquet`, the footer of each
`DST/recordings/<recording_id>.parquet` and its small label columns (`epoch`, `stage`, event columns). Signals
are never read here; `dataset.datasets` streams them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from dataset.constants import CHANNEL_BY_NAME, STAGE_UNSCORED, TASKS
from dataset.splits import SPLIT_NAMES, read_splits

LABEL_RULES_HELP = '"midpoint", "any" or "min_s:X" (X seconds, 0 < X <= 30)'


def recording_path(data_dir: str | Path, recording_id: str) -> Path:
    """Path of one recording's epoch table: DST/recordings/<recording_id>.parquet."""
    return Path(data_dir) / "recordings" / f"{recording_id}.parquet"


def resolve_split(data_dir: str | Path, split: str | list[str] | tuple[str, ...]) -> list[str]:
    """Recording ids of a split name (read from DST/splits.json) or of an explicit list of ids; sorted, unique."""
    if isinstance(split, str):
        if split not in SPLIT_NAMES:
            raise ValueError(f"unknown split {split!r}: use one of {list(SPLIT_NAMES)} or a list of recording ids")
        path = Path(data_dir) / "splits.json"
        if not path.is_file():
            made = (Path(data_dir) / "manifest.parquet").is_file()
            raise FileNotFoundError(
                f"{path}: no splits file; "
                + (
                    "the parser writes it only for a cohort with subjects enough for pretrain, val and test (its "
                    "run said why not): add nights and run it again (docs/data.md §2.4)"
                    if made
                    else "run the data parser on this folder first (docs/data.md §2.4)"
                )
            )
        recordings = read_splits(path)["recordings"][split]
        if not recordings:
            raise ValueError(f"{path}: split {split!r} has no recordings")
    else:
        recordings = list(split)
        if not recordings or not all(isinstance(r, str) for r in recordings):
            raise ValueError("split must be a split name or a non-empty list of recording id strings")
    return sorted(set(recordings))


def read_ok_manifest(data_dir: str | Path, columns: list[str] | None = None) -> pd.DataFrame:
    """The manifest's `ok` rows (DST/manifest.parquet), indexed by recording_id, with `columns` (default all).

    The manifest holds one row per input, so a recording id can also have `failed` or `skipped` rows (a second
    copy of a night, an annotation file without its EDF); only the `ok` row describes the night that was parsed.
    A manifest without a `status` column (written by hand) is taken as ok rows only.
    FileNotFoundError without a manifest; ValueError naming the file when it is unreadable, lacks a column or
    holds two `ok` rows of one recording."""
    path = Path(data_dir) / "manifest.parquet"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no manifest; run the data parser on this folder first (docs/data.md §2.4)")
    try:
        has_status = "status" in pq.read_schema(path).names  # a manifest written by hand may list ok rows only
        wanted = None if columns is None else list(dict.fromkeys(["recording_id", *columns]))
        manifest = pd.read_parquet(path, columns=None if wanted is None else wanted + ["status"] * has_status)
    except (OSError, ValueError, KeyError, pa.ArrowException) as err:
        raise ValueError(f"{path}: unreadable manifest ({' '.join(str(err).split())})") from None
    ok = (manifest[manifest["status"] == "ok"] if has_status else manifest).astype({"recording_id": str})
    twice = sorted(set(ok["recording_id"][ok["recording_id"].duplicated()]))
    if twice:
        raise ValueError(f"{path}: two ok rows of recording(s) {twice[:5]}; run the data parser on this folder again")
    ok = ok.set_index("recording_id")
    return ok if columns is None else ok[list(columns)]


def read_subjects(data_dir: str | Path, recording_ids: list[str]) -> dict[str, str]:
    """recording_id -> subject_id, from the `ok` rows of DST/manifest.parquet."""
    path = Path(data_dir) / "manifest.parquet"
    known = {rid: str(subject) for rid, subject in read_ok_manifest(data_dir, ["subject_id"])["subject_id"].items()}
    unknown = [rid for rid in recording_ids if rid not in known]
    if unknown:
        raise ValueError(f"{path}: no ok row for recording(s) {unknown[:5]}{' ...' if len(unknown) > 5 else ''}")
    return {rid: known[rid] for rid in recording_ids}


@dataclass
class RecordingInfo:
    """What the index needs to know about one recording file; built from its footer and label columns.

    `row_group_starts[i]` is the first row of row group i (rows are epochs in file order);
    `channel_samples` maps each signal column present to its samples per epoch (3000 at 100 Hz, 300 at 10 Hz).
    """

    recording_id: str
    subject_id: str
    path: Path
    epochs: np.ndarray  # (n_epochs,) int32 epoch numbers, epoch k covers [30k, 30k + 30) s
    row_group_starts: np.ndarray  # (n_row_groups + 1,) int64 row offsets, last = n_epochs
    channel_samples: dict[str, int] = field(default_factory=dict)

    @property
    def n_epochs(self) -> int:
        return int(self.epochs.shape[0])

    def row_group_of(self, row: int) -> int:
        return int(np.searchsorted(self.row_group_starts, row, side="right") - 1)


def parse_label_rule(label_rule: str) -> tuple[str, float]:
    """'midpoint' -> ('midpoint', 0); 'any' -> ('any', 0); 'min_s:X' -> ('min_s', X seconds)."""
    if label_rule in ("midpoint", "any"):
        return label_rule, 0.0
    if isinstance(label_rule, str) and label_rule.startswith("min_s:"):
        try:
            seconds = float(label_rule.split(":", 1)[1])
        except ValueError:
            seconds = float("nan")
        if 0.0 < seconds <= 30.0:
            return "min_s", seconds
    raise ValueError(f"unknown label_rule {label_rule!r}: use {LABEL_RULES_HELP}")


def label_columns(task: str | None, label_rule: str = "midpoint") -> list[str]:
    """The small columns a task needs besides `epoch` (and `stage`, always read)."""
    if task is None or task == "sleep_stage":
        return []
    rule, _ = parse_label_rule(label_rule)
    return [task] if rule == "midpoint" else [f"{task}_s"]


def check_task(task: str | None, label_rule: str) -> None:
    if task is not None and task not in TASKS:
        raise ValueError(f"unknown task {task!r}: use one of {list(TASKS)} or None")
    rule, _ = parse_label_rule(label_rule)
    if task == "sleep_stage" and rule != "midpoint":
        raise ValueError(f"label_rule {label_rule!r} applies to event tasks only; sleep_stage uses the stage column")


def task_labels(columns: dict[str, np.ndarray], task: str | None, label_rule: str = "midpoint") -> np.ndarray:
    """Per-epoch labels (n_epochs,) int64 for a task, -1 where the epoch has no label.

    sleep_stage: the `stage` column (0 W, 1 N1, 2 N2, 3 N3, 4 REM; -1 unscored). Event tasks (apnea,
    hypopnea): 1/0 by the rule -- "midpoint" the int8 `<event>` column, "any" `<event>_s` > 0, "min_s:X"
    `<event>_s` >= X s. Event labels are defined for every epoch of a scored night (events are scored across
    the whole recording, also in movement/unscored-stage epochs), so an epoch with stage -1 keeps its event
    label; only a night with no stage scored at all (every stage -1, e.g. written with --allow-unscored)
    is unlabelled for event tasks, because its event columns mean "not scored" (the parser writes flags -1
    and seconds NaN there), not "no event". An event flag of -1 or NaN seconds is unlabelled in any night: so is
    every epoch of a scoring of stages only (a hypnogram), whose stages are labels and whose events are not.
    """
    stage = columns["stage"].astype(np.int64)
    if task is None:
        return np.full(stage.shape, -1, dtype=np.int64)
    if task == "sleep_stage":
        return stage
    rule, seconds = parse_label_rule(label_rule)
    if rule == "midpoint":
        labels = columns[task].astype(np.int64)
    else:
        overlap = columns[f"{task}_s"].astype(np.float64)  # seconds of the 30-s epoch covered by the event
        labels = (overlap > 0.0) if rule == "any" else (overlap >= seconds - 1e-6)
        labels = labels.astype(np.int64)
        labels[np.isnan(overlap)] = -1
    if np.all(stage == STAGE_UNSCORED):
        labels[:] = -1
    return labels


class UnreadableRecording(ValueError):
    """A recording's Parquet file cannot be read (truncated, corrupt): bad input, never an empty split."""


def scan_recording(
    path: Path, recording_id: str, subject_id: str, task: str | None, label_rule: str
) -> tuple[RecordingInfo, np.ndarray]:
    """Read one recording's footer and label columns; return its info and per-epoch labels (n_epochs,) int64."""
    try:
        parquet = pq.ParquetFile(path, memory_map=True)
    except (OSError, pa.ArrowException) as err:
        raise UnreadableRecording(f"{path}: not a readable Parquet file ({err})") from err
    try:
        schema = parquet.schema_arrow
        needed = ["epoch", "stage", *label_columns(task, label_rule)]
        missing = [c for c in needed if c not in schema.names]
        if missing:
            raise ValueError(f"{path}: missing column(s) {missing} (expected the docs/data.md §2.4 epoch table)")
        channel_samples = {}
        for name in schema.names:
            if name not in CHANNEL_BY_NAME:
                continue
            kind = schema.field(name).type
            expected = CHANNEL_BY_NAME[name].epoch_samples
            if not (
                pa.types.is_fixed_size_list(kind)
                and kind.list_size == expected
                and pa.types.is_float32(kind.value_type)
            ):
                raise ValueError(f"{path}: channel {name} has type {kind}, expected fixed_size_list<float, {expected}>")
            channel_samples[name] = expected
        table = parquet.read(columns=needed)
        columns = {c: table.column(c).to_numpy() for c in needed}
        metadata = parquet.metadata
        rows = [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)]
    finally:
        parquet.close()
    starts = np.concatenate([[0], np.cumsum(rows, dtype=np.int64)]).astype(np.int64)
    info = RecordingInfo(recording_id, subject_id, path, columns["epoch"].astype(np.int32), starts, channel_samples)
    return info, task_labels(columns, task, label_rule)
