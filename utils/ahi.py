"""The apnea-hypopnea index (AHI): events per hour of sleep, its severity classes, its calibration and its
agreement with the scored AHI (docs/evaluation.md §5.5 and "Events").

Two sources of events, one index:
- Epoch runs (`count_events`, `estimate_ahi`, `epoch_run_ahi`): per-epoch apnea / hypopnea predictions; a run of
  k consecutive positive epochs counts ceil(k / `MAX_EVENT_EPOCHS`) events, counted when it STARTS in a sleep
  epoch. Epoch labels lose events (a short event misses an epoch midpoint; neighbouring events merge into one
  run), so each family's count is multiplied by its `event_calibration` scale: scored events per event counted
  from the scored epoch LABELS of `val` (never `test`), stored in an event run's checkpoint metadata.
- Typed events (`event_index`, `event_summary`): events with onsets and durations (`utils.events`); an event
  counts when its ONSET lies in a sleep epoch; REM / NREM indices within those epochs.
AHI = events / hours of sleep (sleep epochs x 30 s), NaN without sleep: the rule of the manifest's `ahi_scored`.
Severity classes at 5 / 15 / 30 events/h (normal, mild, moderate, severe). Hypopnea rules of the scored AHI:
`dataset.scored_events` (the data contract), re-exported here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dataset.cohort import read_subjects, recording_path, scan_recording
from dataset.constants import APNEA_TYPES, EPOCH_S
from dataset.event_targets import night_targets, read_event_table
from dataset.scored_events import (  # noqa: F401 - the hypopnea rules of the scored AHI, re-exported
    DEFAULT_HYPOPNEA_RULE,
    HYPOPNEA_RULES,
    RESPIRATORY_EVENT_TYPES,
    Event,
    events_per_hour,
    qualifying_events,
)
from dataset.splits import read_splits
from utils.events import bland_altman, sleep_epochs_of
from utils.metrics import confusion_matrix, event_runs, icc, kappa_from_confusion
from utils.sleep_stats import REM, SLEEP_STAGES

SEVERITY_THRESHOLDS: tuple[float, ...] = (5.0, 15.0, 30.0)  # events/h; AHI >= threshold enters the next class
SEVERITY_NAMES: tuple[str, ...] = ("normal", "mild", "moderate", "severe")
SEVERITY_UNKNOWN = -1  # severity class of a NaN AHI (no predicted sleep)
MAX_EVENT_EPOCHS = 2  # a run of k positive epochs = ceil(k / 2) events (`count_events` default)
EVENT_FAMILIES: dict[str, tuple[str, ...]] = {"apnea": APNEA_TYPES, "hypopnea": ("hypopnea",)}


# ---------------------------------------------------------------------------------------- severity
def severity_class(ahi):
    """AASM severity class of an AHI (events/h): 0 normal (< 5), 1 mild (5 to < 15), 2 moderate (15 to < 30),
    3 severe (>= 30); -1 for NaN. Scalar in, int out; array in, int array out. Names: SEVERITY_NAMES[class].
    Values are rounded to 1e-9 first: a calibrated count (55 x 24/22 events in 2 h) is 30 per hour exactly but
    29.999999999999996 in binary floating point, and a boundary value belongs to the higher class."""
    values = np.round(np.asarray(ahi, dtype=np.float64), 9)
    classes = np.digitize(values, SEVERITY_THRESHOLDS, right=False)  # x >= threshold moves up a class
    classes = np.where(np.isnan(values), SEVERITY_UNKNOWN, classes).astype(np.int64)
    return int(classes) if classes.ndim == 0 else classes


def severity_name(ahi: float) -> str:
    severity = severity_class(ahi)
    return SEVERITY_NAMES[severity] if severity != SEVERITY_UNKNOWN else "unknown"


# ---------------------------------------------------------------------------------------- epoch runs
def count_events(binary_epochs, start_mask, max_event_epochs: int | None = MAX_EVENT_EPOCHS) -> int:
    """Number of events in a per-epoch prediction, counting only runs that start where `start_mask` is true.

    A run of k positive epochs counts as ceil(k / max_event_epochs) events (default 2 epochs = 60 s: apneas and
    hypopneas rarely last longer, so a long run is several events back to back); None counts one per run.
    """
    mask = np.asarray(start_mask).astype(bool)
    if mask.shape != np.shape(binary_epochs):
        raise ValueError(f"start_mask shape {mask.shape} differs from binary_epochs {np.shape(binary_epochs)}")
    if max_event_epochs is not None and max_event_epochs < 1:
        raise ValueError(f"max_event_epochs must be >= 1 or None, got {max_event_epochs}")
    total = 0
    for start, length in event_runs(binary_epochs):
        if mask[start]:
            total += 1 if max_event_epochs is None else -(-length // max_event_epochs)
    return total


def estimate_ahi(
    apnea_epochs,
    hypopnea_epochs,
    sleep_mask,
    epoch_s: float = 30.0,
    max_event_epochs: int | None = MAX_EVENT_EPOCHS,
    scales: tuple[float, float] = (1.0, 1.0),
) -> float:
    """Estimated apnea-hypopnea index (events per hour of sleep) of one recording from per-epoch predictions.

    Events = apnea runs + hypopnea runs (counted by `count_events`, each family separately) that START in an
    epoch where `sleep_mask` is true, each family's count times its scale; AHI = events / (sleep epochs *
    epoch_s / 3600 h). This mirrors the manifest's `ahi_scored` (events starting during sleep, per hour of
    sleep). NaN when there is no sleep.

    Args:
        apnea_epochs, hypopnea_epochs: (n_epochs,) 0/1 predicted event per epoch.
        sleep_mask: (n_epochs,) bool, True for (predicted) sleep epochs N1/N2/N3/REM.
        epoch_s: epoch length in seconds.
        scales: (apnea, hypopnea) scored events per counted event (`event_count_scale`, fitted on `val`); the
            default (1, 1) is the raw count.
    """
    sleep = np.asarray(sleep_mask).astype(bool)
    for name, arr in (("apnea_epochs", apnea_epochs), ("hypopnea_epochs", hypopnea_epochs)):
        if np.shape(arr) != sleep.shape:
            raise ValueError(f"{name} shape {np.shape(arr)} differs from sleep_mask shape {sleep.shape}")
    events = scales[0] * count_events(apnea_epochs, sleep, max_event_epochs)
    events += scales[1] * count_events(hypopnea_epochs, sleep, max_event_epochs)
    return events_per_hour(events, int(sleep.sum()), epoch_s)


def epoch_run_ahi(
    sleep_mask,
    apnea_epochs,
    hypopnea_epochs,
    epoch_s: float = 30.0,
    max_event_epochs: int | None = MAX_EVENT_EPOCHS,
    event_scales: tuple[float, float] = (1.0, 1.0),
) -> dict:
    """The AHI of one night from per-epoch apnea and hypopnea predictions (`estimate_ahi`) and its severity.

    Returns {ahi_est (events/h, scaled by `event_scales`), ahi_est_uncalibrated (raw count), ahi_event_scales,
    ahi_severity (0..3, -1 if no sleep; of ahi_est), ahi_severity_name, n_apnea_events, n_hypopnea_events (raw
    counts)}."""
    sleep = np.asarray(sleep_mask).astype(bool)
    out: dict = {}
    ahi = estimate_ahi(apnea_epochs, hypopnea_epochs, sleep, epoch_s, max_event_epochs, event_scales)
    severity = severity_class(ahi)
    out["ahi_est"] = float(ahi)
    out["ahi_est_uncalibrated"] = float(estimate_ahi(apnea_epochs, hypopnea_epochs, sleep, epoch_s, max_event_epochs))
    out["ahi_event_scales"] = [float(v) for v in event_scales]
    out["ahi_severity"] = severity
    out["ahi_severity_name"] = SEVERITY_NAMES[severity] if severity != SEVERITY_UNKNOWN else "unknown"
    out["n_apnea_events"] = count_events(apnea_epochs, sleep, max_event_epochs)
    out["n_hypopnea_events"] = count_events(hypopnea_epochs, sleep, max_event_epochs)
    return out


# ---------------------------------------------------------------------------------------- calibration
MIN_CALIBRATION_EVENTS = 20  # fewer counted events than this on `val`: no calibration (scale 1)


def event_count_scale(scored_events: int, counted_events: int, min_events: int = MIN_CALIBRATION_EVENTS) -> float:
    """Scored events per event that `count_events` finds in the scored epoch LABELS of the same nights.

    Epoch labels lose events: under the midpoint rule a 20-s event marks an epoch only when it covers the
    epoch's midpoint, and events in neighbouring epochs merge into one run, so even a perfect epoch classifier
    counts too few (measured on the synthetic cohort: AHI -5.8 events/h on average, 2 of 8 nights in the wrong
    severity class). This ratio, fitted on labels of a split that is not `test`, corrects the count; 1.0 when
    fewer than `min_events` were counted (too few to fit)."""
    if scored_events < 0 or counted_events < 0:
        raise ValueError(f"event counts must be >= 0, got scored {scored_events}, counted {counted_events}")
    return float(scored_events) / counted_events if counted_events >= max(min_events, 1) else 1.0


def event_calibration(
    data_dir: str | Path, task: str, label_rule: str = "midpoint", split: str = "val"
) -> dict[str, Any]:
    """Scale from counted to scored events of one family (`event_count_scale`), fitted on the
    scored labels of `split` (never `test`): the family's events in DST/events.parquet that count towards
    `ahi_scored` (its hypopnea rule, `DEFAULT_HYPOPNEA_RULE`) and start in a scored sleep epoch, against
    `count_events` on the task's epoch labels (`label_rule`; they mark every scored event of the family) with
    the same sleep mask. The AHI estimates of evaluate.py and predict.py multiply their counts by it, so they
    estimate `ahi_scored`: a hypopnea without the rule's desaturation or arousal is not counted."""
    if task not in EVENT_FAMILIES:
        raise ValueError(f"event_calibration: task must be one of {sorted(EVENT_FAMILIES)}, got {task!r}")
    if split == "test":
        raise ValueError("event_calibration: never fitted on test")
    data_dir = Path(data_dir)
    recordings = sorted(read_splits(data_dir / "splits.json")["recordings"][split])
    table = read_event_table(data_dir)
    subjects = read_subjects(data_dir, recordings)
    scored = counted = 0
    for rid in recordings:
        path = recording_path(data_dir, rid)
        _, stage = scan_recording(path, rid, subjects[rid], "sleep_stage", "midpoint")
        _, labels = scan_recording(path, rid, subjects[rid], task, label_rule)
        sleep = np.isin(stage, SLEEP_STAGES)  # (n_epochs,) bool, scored sleep
        night = night_targets(table, rid, stage.size * EPOCH_S).events  # the night's events, desaturations too
        kept = [e.onset_s for e in qualifying_events(night, DEFAULT_HYPOPNEA_RULE) if e.type in EVENT_FAMILIES[task]]
        epoch = np.floor(np.asarray(kept, dtype=np.float64) / EPOCH_S).astype(np.int64)  # event start epochs
        scored += int(sleep[epoch[(epoch >= 0) & (epoch < stage.size)]].sum())
        counted += count_events((labels == 1).astype(np.int8), sleep)
    return {
        "scale": event_count_scale(scored, counted),
        "scored_events": scored,
        "counted_events": counted,
        "split": split,
        "n_recordings": len(recordings),
        "label_rule": label_rule,
        "definition": f"{task} events scored in sleep that count towards ahi_scored (hypopnea rule "
        f"{DEFAULT_HYPOPNEA_RULE}) / events counted from the epoch labels (runs, ceil(k/2) per run of k) on "
        f"{split}; 1.0 when fewer than 20 were counted",
    }


# ---------------------------------------------------------------------------------------- typed events
def event_index(
    events: Sequence[Event],
    sleep_mask,
    epoch_s: float = 30.0,
    types: Iterable[str] = RESPIRATORY_EVENT_TYPES,
    within=None,
) -> float:
    """Events of `types` whose onset lies in a sleep epoch (and in an epoch where `within` is True, e.g. REM),
    per hour of those epochs. NaN when there are none (no sleep).

    >>> sleep = np.array([0, 1, 1, 0], bool)  # 2 sleep epochs = 1 min
    >>> events = [Event(35, 12, "hypopnea"), Event(95, 20, "obstructive_apnea"), Event(70, 12, "hypopnea")]
    >>> event_index(events, sleep)  # onsets at 35 s and 70 s in sleep; 95 s in wake: 2 events / (1/60 h)
    120.0
    """
    sleep = np.asarray(sleep_mask, dtype=bool)
    if within is not None:
        sleep = sleep & np.asarray(within, dtype=bool)
    types = set(types)
    onsets = np.array([e.onset_s for e in events if e.type in types], dtype=np.float64)
    return events_per_hour(int(sleep_epochs_of(onsets, sleep, epoch_s).sum()), int(sleep.sum()), epoch_s)


def event_summary(events: Sequence[Event], counted: Sequence[bool], stages: np.ndarray, rule: str) -> dict[str, Any]:
    """AHI overall, in REM and in NREM from the counted events with onset in predicted sleep, and counts."""
    stages = np.asarray(stages)
    sleep = np.isin(stages, SLEEP_STAGES)
    rem = stages == REM
    kept = [e for e, c in zip(events, counted) if c]
    in_sleep = sleep_epochs_of(np.array([e.onset_s for e in events], dtype=np.float64), sleep)
    ahi = event_index(kept, sleep)
    by_type = {}
    for kind in sorted({e.type for e in events}):
        members = [k for k, e in enumerate(events) if e.type == kind]
        by_type[kind] = {
            "n": len(members),
            "n_counted": sum(bool(counted[k]) for k in members),
            "n_counted_in_sleep": sum(bool(counted[k] and in_sleep[k]) for k in members),
        }
    return {
        "source": "event model",
        "hypopnea_rule": rule,
        "ahi": ahi,
        "severity": severity_class(ahi),
        "severity_name": severity_name(ahi),
        "ahi_rem": event_index(kept, sleep, within=rem),
        "ahi_nrem": event_index(kept, sleep, within=~rem),
        "apnea_index": event_index([e for e in kept if e.type != "hypopnea"], sleep),
        "hypopnea_index": event_index([e for e in kept if e.type == "hypopnea"], sleep),
        "n_events": len(events),
        "n_counted": len(kept),
        "n_counted_in_sleep": int(np.sum(in_sleep & np.asarray(counted, dtype=bool))),
        "by_type": by_type,
    }


# ---------------------------------------------------------------------------------------- agreement
MIN_AGREEMENT_NIGHTS = 10  # fewer nights than this: no correlation or ICC (2 nights give r = +-1)


def ahi_agreement(estimated, scored, min_nights: int = MIN_AGREEMENT_NIGHTS) -> dict:
    """Agreement between estimated and scored AHI over recordings (events/h, one value per recording each).

    Pairs where either value is NaN (e.g. no predicted sleep) are left out and counted in `n_missing`.
    Pearson r and the ICCs are NaN (left blank in tables) with fewer than `min_nights` pairs: from 2 or 3
    nights they are meaningless (r = +-1, ICC below -1). Bland-Altman limits (`utils.events.bland_altman`)
    are given under "bland_altman".

    Returns:
        {"n", "n_missing", "pearson_r", "pearson_p", "icc_2_1" (absolute agreement, the headline),
         "bland_altman" ({"n", "bias", "sd", "loa_low", "loa_high"}),
         "icc_3_1" (consistency), "mae" and "bias" (mean estimated - scored, events/h),
         "severity_accuracy", "severity_kappa" (unweighted), "severity_kappa_linear" (linear-weighted),
         "severity_confusion" (4x4 nested list, rows = scored class, columns = estimated),
         "severity_names"}.
    """
    est = np.asarray(estimated, dtype=np.float64).reshape(-1)
    ref = np.asarray(scored, dtype=np.float64).reshape(-1)
    if est.shape != ref.shape:
        raise ValueError(f"estimated and scored AHI differ in length: {est.size} vs {ref.size}")
    ok = np.isfinite(est) & np.isfinite(ref)
    est, ref = est[ok], ref[ok]
    n = int(est.size)
    nan = float("nan")
    out = {"n": n, "n_missing": int((~ok).sum()), "severity_names": list(SEVERITY_NAMES)}
    if n >= max(min_nights, 2) and np.std(est) > 0 and np.std(ref) > 0:
        from scipy import stats  # here, not at start-up: every script reading the AHI module would pay it

        r, p = stats.pearsonr(est, ref)
        out["pearson_r"], out["pearson_p"] = float(r), float(p)
    else:
        out["pearson_r"], out["pearson_p"] = nan, nan
    pairs = np.stack([ref, est], axis=1)  # (n, 2): targets = recordings, raters = scorer, model
    enough = n >= max(min_nights, 2)
    out["icc_2_1"] = icc(pairs, "2,1") if enough else nan
    out["icc_3_1"] = icc(pairs, "3,1") if enough else nan
    out["bland_altman"] = bland_altman(est, ref)
    out["mae"] = float(np.mean(np.abs(est - ref))) if n else nan
    out["bias"] = float(np.mean(est - ref)) if n else nan
    cm = confusion_matrix(severity_class(ref), severity_class(est), len(SEVERITY_NAMES))  # (4, 4)
    out["severity_accuracy"] = float(np.trace(cm) / n) if n else nan
    out["severity_kappa"] = kappa_from_confusion(cm)
    out["severity_kappa_linear"] = kappa_from_confusion(cm, "linear")
    out["severity_confusion"] = cm.astype(np.int64).tolist()
    return out
