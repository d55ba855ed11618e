"""Per-epoch labels from NSRR annotations (docs/data.md §2.3), vectorised with interval arithmetic.

Epoch k covers [30k, 30k + 30) s from the EDF start; its midpoint is 30k + 15.
- `stage` (int8): the class of the stage event whose [Start, Start + Duration) covers the midpoint; each event
  is placed by its own Start (order in the file does not matter). Where stage events overlap (malformed
  files) the one that starts later wins. Uncovered epochs, movement, unscored and unknown codes -> -1.
- `<event>_s` (float32): seconds of the epoch covered by the union of that type's events (0-30).
- `<event>` (int8): 1 if an event of that type covers the midpoint, half-open [start, start + duration).
- `apnea` / `apnea_s`: the union of obstructive, central and mixed apneas.
A night written without annotations (`--allow-unscored`) has stage -1, event flags -1 and event seconds NaN:
"not scored", which is different from "no event". A scoring of stages only (a hypnogram: `events_scored` False,
see `dataset.annotations`) has its stages and the same "not scored" event columns, so the event tasks never read
its epochs as event-free.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from dataset.constants import APNEA_TYPES, EPOCH_S, EVENT_TYPES, LABEL_EVENT_COLUMNS, SLEEP_STAGES, STAGE_UNSCORED
from dataset.nsrr_xml import NsrrAnnotations
from dataset.scored_events import (
    DEFAULT_HYPOPNEA_RULE,
    HYPOPNEA_RULES,
    Event,
    events_per_hour,
    qualifying_events,
)

AHI_COLUMN_OF_RULE = {"3a": "ahi_a0h3a", "4": "ahi_a0h4", "all": "ahi_all"}  # manifest column per hypopnea rule
LABEL_COLUMNS: tuple[str, ...] = ("stage", *LABEL_EVENT_COLUMNS, *(f"{e}_s" for e in LABEL_EVENT_COLUMNS))
EVENT_TABLE_COLUMNS: tuple[str, ...] = (
    "recording_id",
    "type",
    "concept",
    "start_s",
    "duration_s",
    "spo2_nadir",
    "spo2_baseline",
    "beyond_end",
)


def epoch_stages(starts: np.ndarray, durations: np.ndarray, classes: np.ndarray, n_epochs: int) -> np.ndarray:
    """Stage per epoch, (n_epochs,) int8, by the midpoint rule. Times in seconds."""
    stages = np.full(n_epochs, STAGE_UNSCORED, dtype=np.int8)
    if n_epochs == 0 or len(starts) == 0:
        return stages
    order = np.argsort(starts, kind="stable")  # priority = rank by start: a later start wins an overlap
    starts, ends, classes = starts[order], starts[order] + durations[order], classes[order]
    # Midpoints 30k + 15 inside [start, end) <=> k in [ceil((start - 15)/30), ceil((end - 15)/30)).
    first = np.clip(np.ceil((starts - EPOCH_S / 2) / EPOCH_S), 0, n_epochs).astype(np.int64)
    stop = np.clip(np.ceil((ends - EPOCH_S / 2) / EPOCH_S), 0, n_epochs).astype(np.int64)
    counts = np.maximum(stop - first, 0)
    if counts.sum() == 0:
        return stages
    rank = np.repeat(np.arange(len(starts)), counts)
    # Epoch index of every (event, covered epoch) pair: first[event] + position within the event's run.
    run_start = np.repeat(np.cumsum(counts) - counts, counts)
    epoch = np.repeat(first, counts) + (np.arange(rank.size) - run_start)
    winner = np.full(n_epochs, -1, dtype=np.int64)
    np.maximum.at(winner, epoch, rank)
    covered = winner >= 0
    stages[covered] = classes[winner[covered]]
    return stages


def merge_intervals(starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Union of half-open intervals [start, end) as sorted, disjoint (starts, ends); empty intervals dropped."""
    keep = ends > starts
    starts, ends = np.asarray(starts, dtype=np.float64)[keep], np.asarray(ends, dtype=np.float64)[keep]
    if starts.size == 0:
        return starts, ends
    order = np.argsort(starts, kind="stable")
    starts, ends = starts[order], ends[order]
    reach = np.maximum.accumulate(ends)  # furthest end seen so far
    new_group = np.ones(starts.size, dtype=bool)
    new_group[1:] = starts[1:] > reach[:-1]  # touching intervals ([0,10) and [10,20)) merge
    group_first = np.flatnonzero(new_group)
    group_last = np.append(group_first[1:] - 1, starts.size - 1)
    return starts[group_first], reach[group_last]


def covered_seconds(starts: np.ndarray, ends: np.ndarray, n_epochs: int) -> np.ndarray:
    """Seconds of each epoch inside the union of intervals, (n_epochs,) float32 in [0, 30]."""
    starts, ends = merge_intervals(starts, ends)
    if starts.size == 0:
        return np.zeros(n_epochs, dtype=np.float32)
    edges = np.arange(n_epochs + 1, dtype=np.float64) * EPOCH_S  # (n_epochs + 1,) epoch boundaries in s
    cumulative = np.concatenate([[0.0], np.cumsum(ends - starts)])
    # covered(t) = length of the union inside (-inf, t): whole intervals before t, minus the part of the
    # last started interval that lies beyond t.
    i = np.searchsorted(starts, edges, side="right")
    last = np.maximum(i - 1, 0)
    covered = np.where(i > 0, cumulative[i] - np.maximum(ends[last] - edges, 0.0), 0.0)
    return np.clip(np.diff(covered), 0.0, EPOCH_S).astype(np.float32)


def midpoint_flags(starts: np.ndarray, ends: np.ndarray, n_epochs: int) -> np.ndarray:
    """1 where an interval [start, end) covers the epoch midpoint 30k + 15, else 0; (n_epochs,) int8."""
    starts, ends = merge_intervals(starts, ends)
    flags = np.zeros(n_epochs, dtype=np.int8)
    if starts.size == 0:
        return flags
    mid = np.arange(n_epochs, dtype=np.float64) * EPOCH_S + EPOCH_S / 2
    i = np.searchsorted(starts, mid, side="right") - 1
    flags[(i >= 0) & (mid < ends[np.maximum(i, 0)])] = 1
    return flags


def _intervals(events: list[dict], types: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    chosen = [e for e in events if e["type"] in types]
    starts = np.array([e["start_s"] for e in chosen], dtype=np.float64)
    ends = starts + np.array([e["duration_s"] for e in chosen], dtype=np.float64)
    return starts, ends


def epoch_labels(annotations: NsrrAnnotations | None, n_epochs: int) -> dict[str, np.ndarray]:
    """All label columns (LABEL_COLUMNS order) for the first `n_epochs` epochs: unscored when annotations is None;
    event columns "not scored" (flags -1, seconds NaN) when the annotations hold stages only."""
    if annotations is None:
        labels = {"stage": np.full(n_epochs, STAGE_UNSCORED, dtype=np.int8)}
    else:
        stages = epoch_stages(annotations.stage_start, annotations.stage_duration, annotations.stage_class, n_epochs)
        labels = {"stage": stages}
    if annotations is None or not annotations.events_scored:
        labels.update({e: np.full(n_epochs, -1, dtype=np.int8) for e in LABEL_EVENT_COLUMNS})
        labels.update({f"{e}_s": np.full(n_epochs, np.nan, dtype=np.float32) for e in LABEL_EVENT_COLUMNS})
        return labels
    seconds = {}
    for name in LABEL_EVENT_COLUMNS:
        starts, ends = _intervals(annotations.events, APNEA_TYPES if name == "apnea" else (name,))
        labels[name] = midpoint_flags(starts, ends, n_epochs)
        seconds[f"{name}_s"] = covered_seconds(starts, ends, n_epochs)
    labels.update(seconds)
    return labels


def labels_frame(labels: dict[str, np.ndarray]) -> pd.DataFrame:
    """Labels as a DataFrame: `epoch` (int32) then LABEL_COLUMNS."""
    n_epochs = len(labels["stage"])
    frame = {"epoch": np.arange(n_epochs, dtype=np.int32)}
    frame.update({name: labels[name] for name in LABEL_COLUMNS})
    return pd.DataFrame(frame)


def events_frame(recording_id: str, events: list[dict], kept_s: float) -> pd.DataFrame:
    """events.parquet rows of one recording (EVENT_TABLE_COLUMNS); `beyond_end` = starts at or after kept_s."""
    start = np.array([e["start_s"] for e in events], dtype=np.float64)
    return pd.DataFrame(
        {
            "recording_id": pd.Series([recording_id] * len(events), dtype=object),
            "type": pd.Series([e["type"] for e in events], dtype=object),
            "concept": pd.Series([e["concept"] for e in events], dtype=object),
            "start_s": start,
            "duration_s": np.array([e["duration_s"] for e in events], dtype=np.float64),
            "spo2_nadir": np.array([e["spo2_nadir"] for e in events], dtype=np.float32),
            "spo2_baseline": np.array([e.get("spo2_baseline", np.nan) for e in events], dtype=np.float32),
            "beyond_end": start >= kept_s,
        }
    )


def scored_events(events: list[dict]) -> list[Event]:
    """A night's annotation events as `Event`s; a desaturation's `drop_pct` is baseline - nadir where both are
    given."""
    out = []
    for e in events:
        drop = e.get("spo2_baseline", np.nan) - e.get("spo2_nadir", np.nan)
        out.append(Event(float(e["start_s"]), float(e["duration_s"]), e["type"], drop_pct=float(drop)))
    return out


def events_scored(labels: dict[str, np.ndarray]) -> bool:
    """False when a night's event columns say "not scored" (flags -1: no annotations, or stages only); labels
    without event columns (stages alone) say nothing against the events they come with."""
    return "apnea" not in labels or not np.any(labels["apnea"] == -1)


def night_summary(labels: dict[str, np.ndarray], events: list[dict] | None, kept_s: float) -> dict:
    """Manifest numbers of a night: `n_<event>` (events starting before kept_s; `n_apnea` all three apnea
    types), `n_scored` (epochs with a stage), `tst_min` (minutes of N1-REM epochs) and the scored AHI (apneas +
    hypopneas starting in a sleep epoch, per hour of sleep; NaN without sleep) under each hypopnea rule of
    `dataset.scored_events`:
    `ahi_a0h3a`, `ahi_a0h4`, `ahi_all`; `ahi_scored` is the default rule's (`DEFAULT_HYPOPNEA_RULE`, AASM:
    >= 3 % desaturation or an arousal). Without annotations (`events` None) everything but `n_scored` is unknown;
    when `labels` say the events were not scored (a hypnogram), `n_<event>` are None and the AHIs NaN."""
    stages = labels["stage"]
    summary: dict = {"n_scored": int(np.count_nonzero(stages != STAGE_UNSCORED))}
    ahi_columns = {rule: AHI_COLUMN_OF_RULE[rule] for rule in HYPOPNEA_RULES}
    unknown = (
        {f"n_{e}": None for e in LABEL_EVENT_COLUMNS}
        | {"ahi_scored": np.nan}
        | dict.fromkeys(ahi_columns.values(), np.nan)
    )
    if events is None:
        return {**summary, **unknown, "tst_min": np.nan}
    asleep = np.isin(stages, SLEEP_STAGES)
    sleep_epochs = int(np.count_nonzero(asleep))
    summary["tst_min"] = sleep_epochs * EPOCH_S / 60.0
    if not events_scored(labels):
        return {**summary, **unknown}
    for name in EVENT_TYPES:
        summary[f"n_{name}"] = sum(1 for e in events if e["type"] == name and e["start_s"] < kept_s)
    summary["n_apnea"] = sum(summary[f"n_{name}"] for name in APNEA_TYPES)  # as the `apnea` label: all three
    # events starting at or after kept_s are outside the night, also as what qualifies a hypopnea
    annotated = scored_events([e for e in events if e["start_s"] < kept_s])
    for rule, column in ahi_columns.items():
        starts = np.array([e.onset_s for e in qualifying_events(annotated, rule)], dtype=np.float64)
        epoch = np.floor(starts / EPOCH_S).astype(np.int64)
        inside = (epoch >= 0) & (epoch < len(stages))
        summary[column] = events_per_hour(int(np.count_nonzero(asleep[epoch[inside]])), sleep_epochs)
    summary["ahi_scored"] = summary[ahi_columns[DEFAULT_HYPOPNEA_RULE]]
    return summary
