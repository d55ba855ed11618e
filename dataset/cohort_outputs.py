"""The cohort-level files of a parser run (docs/data.md §2.4): manifest.parquet/.csv, events.parquet, splits.json.

`manifest_frame` fixes the manifest's column order and types, `flag_same_content` warns on a second copy of an
EDF under another name, `events_table` gathers the events of the ok recordings, `write_cohort_outputs` writes
them all atomically and makes or extends the subject split; `check_kept_splits` refuses, before any night is
processed, a run whose subject ids no longer fit the kept split.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

from dataset.atomic_files import write_all_atomic
from dataset.constants import EPHYS_CHANNELS, LABEL_EVENT_COLUMNS
from dataset.labels import EVENT_TABLE_COLUMNS, events_frame
from dataset.splits import (
    check_same_subjects,
    empty_splits_warning,
    extend_splits,
    make_splits,
    read_splits,
    splits_json,
)

STRING_COLUMNS = (
    "recording_id",
    "subject_id",
    "cohort",
    "status",
    "reason",
    "edf",
    "xml",
    "parquet",
    "channels",
    "native_rates",
    "units",
    "dropped_channels",
    "warnings",
    "edf_sha256",
    "xml_sha256",
    "channel_sources",
    "channel_map_channels",
    "nonstandard_channels",
)
INT_COLUMNS = ("n_epochs", "n_scored", *(f"n_{e}" for e in LABEL_EVENT_COLUMNS))
FLOAT_COLUMNS = ("signal_s", "scored_s", "kept_s", "tst_min", "ahi_scored", "ahi_a0h3a", "ahi_a0h4", "ahi_all")


def manifest_frame(rows: list[dict], channels: tuple[str, ...]) -> pd.DataFrame:
    """Manifest rows in a fixed column order and types (one row per input, sorted by recording id)."""
    columns = [
        "recording_id",
        "subject_id",
        "cohort",
        "status",
        "reason",
        "n_epochs",
        "n_scored",
        "channels",
        "native_rates",
        "units",
        "signal_s",
        "scored_s",
        "kept_s",
        "truncated",
    ]
    columns += [f"{kind}_{c}" for kind in ("median", "iqr") for c in channels]
    columns += [f"unit_assumed_{c}" for c in channels if c in EPHYS_CHANNELS]
    columns += [
        "dropped_channels",
        *(f"n_{e}" for e in LABEL_EVENT_COLUMNS),
        "tst_min",
        "ahi_scored",
        "ahi_a0h3a",
        "ahi_a0h4",
        "ahi_all",
        "warnings",
        "edf",
        "xml",
        "parquet",
        "edf_sha256",
        "xml_sha256",
    ]
    extra = sorted({k for r in rows for k in r} - set(columns))
    frame = pd.DataFrame(rows, columns=columns + extra)
    for name in frame.columns:
        if name in STRING_COLUMNS:
            frame[name] = frame[name].astype(object).where(frame[name].notna(), "").astype(str)
        elif name in INT_COLUMNS:
            frame[name] = frame[name].astype("Int64")
        elif name == "truncated" or name.startswith("unit_assumed_"):
            frame[name] = frame[name].astype("boolean")
        elif name in FLOAT_COLUMNS or name.startswith(("median_", "iqr_")):
            frame[name] = frame[name].astype("float64")
    return frame.sort_values("recording_id", kind="stable").reset_index(drop=True)


def flag_same_content(rows: list[dict]) -> list[str]:
    """Warn (manifest `warnings`, the rows changed in place) on every ok row whose EDF has the same content
    (`edf_sha256`) as an ok row earlier in EDF path order (so shards and one run agree whatever order they hold
    the rows in): one night under two names is two recordings, perhaps of two subjects, and can sit in `train`
    and `test` at once. Both stay ok (two test nights written alike are not one night). Returns one line per
    copy."""
    first: dict[str, dict] = {}
    lines = []
    for row in sorted(rows, key=lambda row: str(row.get("edf") or "")):
        digest = row.get("edf_sha256")
        if row.get("status") != "ok" or not isinstance(digest, str) or not digest:
            continue
        kept = first.setdefault(digest, row)
        if kept is not row:
            note = (
                f"the same EDF content as {kept['edf']} (recording {kept['recording_id']}): if it is one night, "
                "remove a copy, or both may fall into different splits"
            )
            held = [w for w in str(row.get("warnings") or "").split("; ") if w]
            row["warnings"] = "; ".join(held + [note] * (note not in held))  # a reused row may hold it already
            lines.append(f"{row['recording_id']}: {note}")
    return lines


def events_table(results: list[tuple[dict, list[dict]]]) -> pd.DataFrame:
    """events.parquet of all ok recordings."""
    frames = [
        events_frame(row["recording_id"], events, float(row["kept_s"]))
        for row, events in results
        if row["status"] == "ok" and events
    ]
    if not frames:
        return events_frame("", [], 0.0).iloc[0:0]
    return pd.concat(frames, ignore_index=True).sort_values(
        ["recording_id", "start_s"], kind="stable", ignore_index=True
    )[list(EVENT_TABLE_COLUMNS)]


def frame_writer(frame: pd.DataFrame, csv: bool = False) -> Callable[[Path], object]:
    """Writes `frame` as Parquet (or CSV) to the path it is given (a temp file of `write_all_atomic`)."""
    return lambda tmp: frame.to_csv(tmp, index=False) if csv else frame.to_parquet(tmp, index=False)


def check_kept_splits(dst: Path, subject_of: dict[str, str], resplit: bool = False) -> None:
    """ValueError naming DST/splits.json when a run would keep it (no `resplit`) although its recordings now have
    other subject ids (`subject_of`: recording id -> subject id, e.g. under another --subject-regex); a
    `SplitsFileError` when the kept file is unreadable or breaks the split rules. Run before any night is processed."""
    path = dst / "splits.json"
    if resplit or not path.is_file():
        return
    old = read_splits(path)
    try:
        check_same_subjects(old, subject_of)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None


def write_cohort_outputs(
    dst: Path,
    manifest: pd.DataFrame,
    events: pd.DataFrame,
    split_args: dict,
    resplit: bool = False,
    writes: Sequence[tuple[Path, Callable[[Path], object]]] = (),
    ready: Sequence[tuple[Path, Path]] = (),
) -> dict | None:
    """manifest.parquet/.csv, events.parquet and splits.json (None when the cohort is too small to split), written
    together (`write_all_atomic`) with the other `writes` (the processing record) and the staged tables of
    `ready` moved in first: a failed write leaves them all as they were. ValueError, before anything is written, when the kept split's subject ids changed; `SplitsFileError` when the
    kept file is unreadable (`check_kept_splits` refuses that before any night is processed)."""
    path = dst / "splits.json"
    splits = None
    if path.is_file() and not resplit:  # made once: keep every subject where it is, add new ones to pretrain
        old = read_splits(path)
        try:
            splits = extend_splits(old, manifest)
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None
        asked = {
            "seed": split_args["seed"],
            "fractions": {"test": split_args["test_frac"], "val": split_args["val_frac"]},
            "train_subjects": split_args["train_subjects"],
        }
        kept = {key: splits.get(key) for key in asked}
        if kept != asked:
            print(
                f"{path}: kept as made (seed / fractions / train subjects {kept}); the options given now "
                f"({asked}) apply only with --resplit",
                file=sys.stderr,
            )
    else:
        try:
            splits = make_splits(manifest, **split_args)
        except ValueError as err:
            print(f"splits.json not written: {err}", file=sys.stderr)
    writes = [
        *writes,
        (dst / "manifest.parquet", frame_writer(manifest)),
        (dst / "manifest.csv", frame_writer(manifest, csv=True)),
        (dst / "events.parquet", frame_writer(events)),
    ]
    if splits is not None:
        writes.append((path, lambda tmp: tmp.write_text(splits_json(splits))))
        if (warning := empty_splits_warning(splits)) is not None:
            print(warning, file=sys.stderr)
    write_all_atomic(writes, ready)
    return splits
