"""Per-second targets of the event-detection task from a cohort's scored events (docs/data.md, "Events").

The parser writes every scored event of a night to DST/events.parquet (`recording_id`, `type`, `start_s`,
`duration_s`, `spo2_nadir`, `beyond_end`, and `spo2_baseline` where the parser knows it). An event model
predicts per SECOND, so this module turns those rows into one label per second of the kept signal:

- second s covers [s, s + 1) from the recording start; an event [start, start + duration) covers second s when
  it covers the second's midpoint s + 0.5 (the per-epoch midpoint rule of docs/data.md 2.3, at 1 s);
- `respiratory` (n_seconds,) int8: 0 none, 1 obstructive apnea, 2 central apnea, 3 mixed apnea, 4 hypopnea
  (`RESPIRATORY_CLASSES`). Where events overlap, an apnea wins over a hypopnea, and of two overlapping apneas
  the one that starts later wins (as overlapping stage events in `dataset.labels`);
- `desaturation`, `arousal` (n_seconds,) int8: 1 where an event of that type covers the second;
- n_seconds = floor(kept_s): the kept signal. Events are clipped there; an event that starts at or after
  kept_s (`beyond_end`) is left out of the targets and of the scored event list;
- `events`: the night's scored apneas, hypopneas, desaturations (with `drop_pct` = baseline - nadir when the
  table has `spo2_baseline`, else NaN) and arousals as `Event`s in time order, for matching and the AHI.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from dataset.constants import APNEA_TYPES
from dataset.labels import scored_events
from dataset.scored_events import RESPIRATORY_EVENT_TYPES, Event
from utils.config import one_line

RESPIRATORY_CLASSES: tuple[str, ...] = ("none", *RESPIRATORY_EVENT_TYPES)  # index = per-second class
HYPOPNEA_CLASS = RESPIRATORY_CLASSES.index("hypopnea")
APNEA_CLASSES: tuple[int, ...] = tuple(RESPIRATORY_CLASSES.index(t) for t in APNEA_TYPES)
TARGET_EVENT_TYPES: tuple[str, ...] = (*RESPIRATORY_EVENT_TYPES, "desaturation", "arousal")
EVENT_COLUMNS: tuple[str, ...] = ("recording_id", "type", "start_s", "duration_s", "spo2_nadir")


@dataclass
class EventTargets:
    """One night's per-second targets (module docstring) and its scored events."""

    respiratory: np.ndarray  # (n_seconds,) int8 class of RESPIRATORY_CLASSES
    desaturation: np.ndarray  # (n_seconds,) int8 0/1
    arousal: np.ndarray  # (n_seconds,) int8 0/1
    events: list[Event] = field(default_factory=list)

    @property
    def n_seconds(self) -> int:
        return int(self.respiratory.shape[0])


def covered_seconds(starts, durations, n_seconds: int) -> list[tuple[int, int]]:
    """[first, stop) second ranges whose midpoints s + 0.5 lie in each [start, start + duration), clipped to
    [0, n_seconds); empty ranges included (first == stop), one per interval, in the order given."""
    out = []
    for start, duration in zip(starts, durations):
        first = math.ceil(start - 0.5)  # smallest s with s + 0.5 >= start
        stop = math.ceil(start + duration - 0.5)  # smallest s with s + 0.5 >= end: not covered
        out.append((min(max(first, 0), n_seconds), min(max(stop, 0), n_seconds)))
    return out


def event_targets(rows: pd.DataFrame, kept_s: float) -> EventTargets:
    """Per-second targets and scored events of ONE night from its events.parquet rows and its kept_s (s)."""
    missing = [c for c in EVENT_COLUMNS[1:4] if c not in rows.columns]
    if missing:
        raise ValueError(f"events table: missing column(s) {missing} (expected {list(EVENT_COLUMNS)})")
    n_seconds = max(int(math.floor(kept_s)), 0)
    rows = rows[rows["type"].isin(TARGET_EVENT_TYPES) & (rows["start_s"].to_numpy(np.float64) < kept_s)]
    rows = rows.sort_values("start_s", kind="stable")
    respiratory = np.zeros(n_seconds, dtype=np.int8)
    flags = {name: np.zeros(n_seconds, dtype=np.int8) for name in ("desaturation", "arousal")}
    hypopneas = rows[rows["type"] == "hypopnea"]
    for first, stop in covered_seconds(hypopneas["start_s"], hypopneas["duration_s"], n_seconds):
        respiratory[first:stop] = HYPOPNEA_CLASS  # painted first: apneas overwrite them
    apneas = rows[rows["type"].isin(APNEA_TYPES)]  # by onset: a later apnea overwrites an earlier one
    for kind, (first, stop) in zip(apneas["type"], covered_seconds(apneas["start_s"], apneas["duration_s"], n_seconds)):
        respiratory[first:stop] = RESPIRATORY_CLASSES.index(kind)
    for name, flag in flags.items():
        chosen = rows[rows["type"] == name]
        for first, stop in covered_seconds(chosen["start_s"], chosen["duration_s"], n_seconds):
            flag[first:stop] = 1
    records = rows.to_dict("records")  # spo2_baseline absent -> drop_pct NaN (scored_events reads it with .get)
    return EventTargets(respiratory, flags["desaturation"], flags["arousal"], scored_events(records))


def read_event_table(data_dir: str | Path) -> pd.DataFrame:
    """DST/events.parquet (FileNotFoundError / ValueError naming the file when it is missing or malformed)."""
    path = Path(data_dir) / "events.parquet"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no events table; run dataset/data_parser.py on this folder")
    try:
        table = pd.read_parquet(path)
    except (OSError, pa.ArrowException) as err:
        raise ValueError(f"{path}: not a readable Parquet file ({one_line(err)})") from None
    missing = [c for c in EVENT_COLUMNS[:4] if c not in table.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing} (expected {list(EVENT_COLUMNS)}, docs/data.md)")
    return table


def night_targets(table: pd.DataFrame, recording_id: str, kept_s: float) -> EventTargets:
    """`event_targets` of one recording of a cohort's events table (a night without events: all zero)."""
    return event_targets(table[table["recording_id"] == recording_id], kept_s)
