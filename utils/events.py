"""Scored events with onsets and durations: decoding, one-to-one matching, agreement.

Respiratory events (apneas, hypopneas) and arousals are scored as intervals in seconds from the recording
start, not as 30-s epochs. This module turns per-second model probabilities into such intervals and matches them
against a scorer's events; the indices a clinician reads from them (AHI per hour of sleep, in REM / NREM) are
`utils.ahi`'s. Pure functions on arrays and `Event` tuples; no files, no models (docs/evaluation.md, "Events").

Conventions (stated once, used everywhere):
- An event is the half-open interval [onset_s, onset_s + duration_s).
- Decoding: a second is an event second when its probability of any event type is >= `threshold`; runs of
  event seconds separated by gaps shorter than `merge_gap_s` are one event; events shorter than
  `min_duration_s` (AASM: 10 s for apneas and hypopneas) are dropped. The type of a run is the type with the
  largest summed probability over the run; its probability the mean event probability over the run.
- Matching: a predicted and a scored event of the same type match when their intersection over union is at
  least `iou` (default 0.2). Pairs are taken greedily in order of decreasing IoU (ties: earlier scored onset,
  then earlier predicted onset), each event at most once: a one-to-one matching. Unmatched predictions are
  false positives, unmatched scored events false negatives.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from dataset.scored_events import (  # noqa: F401 - the scored-event vocabulary, re-exported for evaluation code
    AROUSAL_WINDOW_S,
    DESAT_WINDOW_S,
    EVENT_MIN_S,
    RESPIRATORY_EVENT_TYPES,
    Event,
)

MATCH_IOU = 0.2  # default intersection over union for a predicted event to match a scored one


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[(start, stop)) index ranges of the True runs of a 1-D bool array, in order."""
    edges = np.diff(np.concatenate(([0], mask.astype(np.int8), [0])))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist()))


def decode_events(
    probabilities,
    types: Sequence[str],
    threshold: float = 0.5,
    fs: float = 1.0,
    min_duration_s: float = EVENT_MIN_S,
    merge_gap_s: float = 0.0,
) -> list[Event]:
    """Events from per-sample probabilities.

    Args:
        probabilities: (n_samples, len(types)) probability of each event type per sample (at `fs` Hz); or
            (n_samples,) for a single type. Rows need not sum to 1: the event probability of a sample is
            the sum over types, clipped to 1 (mutually exclusive types, background left out).
        types: the event type of each column.
        threshold: an event sample has event probability >= threshold.
        fs: samples per second of `probabilities` (1.0: one row per second).
        min_duration_s: shorter events are dropped.
        merge_gap_s: runs separated by a gap shorter than this (seconds) are merged into one event.

    >>> p = np.zeros(60); p[5:20] = 0.9; p[22:30] = 0.8; p[40:45] = 0.9
    >>> [(e.onset_s, e.duration_s) for e in decode_events(p, ["hypopnea"])]
    [(5.0, 15.0)]
    >>> [(e.onset_s, e.duration_s) for e in decode_events(p, ["hypopnea"], merge_gap_s=3)]
    [(5.0, 25.0)]
    """
    prob = np.asarray(probabilities, dtype=np.float64)
    if prob.ndim == 1:
        prob = prob[:, None]
    if prob.ndim != 2 or prob.shape[1] != len(types):
        raise ValueError(f"probabilities: expected shape (n_samples, {len(types)}), got {prob.shape}")
    if fs <= 0 or min_duration_s < 0 or merge_gap_s < 0:
        raise ValueError("fs must be > 0; min_duration_s and merge_gap_s >= 0")
    event_prob = np.clip(prob.sum(axis=1), 0.0, 1.0)  # (n,)
    mask = event_prob >= threshold
    if merge_gap_s > 0:  # fill short gaps between two event runs (never at the edges), compared in seconds
        for start, stop in _runs(~mask):
            if 0 < start and stop < mask.size and (stop - start) / fs < merge_gap_s:
                mask[start:stop] = True
    events = []
    for start, stop in _runs(mask):
        duration = (stop - start) / fs
        if duration < min_duration_s:
            continue
        kind = types[int(np.argmax(prob[start:stop].sum(axis=0)))]
        events.append(Event(start / fs, duration, kind, float(event_prob[start:stop].mean())))
    return events


# a pair exactly on the threshold matches: 10 s of 50 s (onsets of 0.1-s scoring) divides to 0.19999999999999998
IOU_ROUNDING = 1e-9


def iou(a: Event, b: Event) -> float:
    """Intersection over union of two events' intervals (0 when they only touch)."""
    overlap = min(a.end_s, b.end_s) - max(a.onset_s, b.onset_s)
    if overlap <= 0:
        return 0.0
    return overlap / (max(a.end_s, b.end_s) - min(a.onset_s, b.onset_s))


def match_events(
    predicted: Sequence[Event], scored: Sequence[Event], min_iou: float = MATCH_IOU, same_type: bool = True
) -> list[tuple[int, int, float]]:
    """One-to-one matching (module docstring): [(predicted index, scored index, iou), ...] sorted by scored
    index. With `same_type` False, types are ignored (detection regardless of type)."""
    if not 0 < min_iou <= 1:
        raise ValueError(f"min_iou must be in (0, 1], got {min_iou}")
    candidates = []
    for i, p in enumerate(predicted):
        for j, s in enumerate(scored):
            if same_type and p.type != s.type:
                continue
            value = iou(p, s)
            if value >= min_iou - IOU_ROUNDING:
                candidates.append((-value, s.onset_s, p.onset_s, i, j))
    candidates.sort()
    used_p, used_s, pairs = set(), set(), []
    for neg_iou, _, _, i, j in candidates:
        if i not in used_p and j not in used_s:
            used_p.add(i)
            used_s.add(j)
            pairs.append((i, j, -neg_iou))
    return sorted(pairs, key=lambda pair: pair[1])


def _prf(tp: int, fp: int, fn: int) -> dict:
    nan = float("nan")
    precision = tp / (tp + fp) if tp + fp else nan
    recall = tp / (tp + fn) if tp + fn else nan
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else nan
    return {"tp": tp, "fp": fp, "fn": fn, "precision": precision, "recall": recall, "f1": f1}


def event_detection_metrics(
    predicted: Sequence[Event],
    scored: Sequence[Event],
    types: Iterable[str] = RESPIRATORY_EVENT_TYPES,
    min_iou: float = MATCH_IOU,
) -> dict:
    """Precision, recall and F1 of event detection, per type and for the families.

    Returns {type: {"tp", "fp", "fn", "precision", "recall", "f1"}, ...} for each of `types` (matched within
    the type), plus "apnea" (the three apnea types as one type: a central apnea predicted as obstructive still
    counts as a detected apnea) and "any" (every event of `types`, type ignored). Sums over nights are made
    by passing every night's events with distinct onsets, or by adding tp/fp/fn (`sum_detection_counts`).
    """
    types = tuple(types)
    out = {}
    for kind in types:
        p = [e for e in predicted if e.type == kind]
        s = [e for e in scored if e.type == kind]
        tp = len(match_events(p, s, min_iou))
        out[kind] = _prf(tp, len(p) - tp, len(s) - tp)
    families = {"apnea": tuple(t for t in types if t.endswith("apnea")), "any": types}
    for family, members in families.items():
        if not members:
            continue
        p = [e for e in predicted if e.type in members]
        s = [e for e in scored if e.type in members]
        tp = len(match_events(p, s, min_iou, same_type=False))
        out[family] = _prf(tp, len(p) - tp, len(s) - tp)
    return out


def sum_detection_counts(per_night: Sequence[dict]) -> dict:
    """Pool `event_detection_metrics` of several nights: tp/fp/fn added per key, rates recomputed."""
    keys = sorted({k for night in per_night for k in night})
    return {k: _prf(*(sum(night[k][c] for night in per_night if k in night) for c in ("tp", "fp", "fn"))) for k in keys}


def sleep_epochs_of(times_s: np.ndarray, sleep_mask, epoch_s: float = 30.0) -> np.ndarray:
    """True where the epoch holding each time (s) is a sleep epoch; False beyond the hypnogram."""
    sleep = np.asarray(sleep_mask, dtype=bool)
    epoch = np.floor(np.asarray(times_s, dtype=np.float64) / epoch_s).astype(np.int64)
    inside = (epoch >= 0) & (epoch < sleep.size)
    out = np.zeros(epoch.shape, dtype=bool)
    out[inside] = sleep[epoch[inside]]
    return out


def bland_altman(estimated, reference) -> dict:
    """Bland-Altman agreement of two measurements of the same nights (e.g. AHI, events/h).

    Returns {"n", "bias" (mean estimated - reference), "sd" (of the differences, ddof 1), "loa_low",
    "loa_high" (bias -/+ 1.96 sd)}; NaN pairs are left out; sd and limits NaN below 2 nights.
    """
    est = np.asarray(estimated, dtype=np.float64).reshape(-1)
    ref = np.asarray(reference, dtype=np.float64).reshape(-1)
    if est.shape != ref.shape:
        raise ValueError(f"estimated and reference differ in length: {est.size} vs {ref.size}")
    diff = (est - ref)[np.isfinite(est) & np.isfinite(ref)]
    nan = float("nan")
    bias = float(diff.mean()) if diff.size else nan
    sd = float(diff.std(ddof=1)) if diff.size >= 2 else nan
    return {"n": int(diff.size), "bias": bias, "sd": sd, "loa_low": bias - 1.96 * sd, "loa_high": bias + 1.96 * sd}
