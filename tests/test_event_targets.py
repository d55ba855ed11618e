"""Per-second event targets (dataset/event_targets.py) on hand-made event tables: the midpoint rule at 1 s,
overlaps (apnea over hypopnea, later apnea over earlier), events across epoch borders and beyond kept_s, and the
scored event list with and without the spo2_baseline column."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from dataset.event_targets import RESPIRATORY_CLASSES, event_targets, night_targets, read_event_table


def table(rows, baseline: bool = False) -> pd.DataFrame:
    """events.parquet rows of recording "r1" from (type, start_s, duration_s[, nadir[, baseline]])."""
    frame = pd.DataFrame(
        {
            "recording_id": "r1",
            "type": [r[0] for r in rows],
            "concept": "",
            "start_s": [float(r[1]) for r in rows],
            "duration_s": [float(r[2]) for r in rows],
            "spo2_nadir": np.array([r[3] if len(r) > 3 else np.nan for r in rows], dtype=np.float32),
            "beyond_end": False,
        }
    )
    if baseline:
        frame["spo2_baseline"] = np.array([r[4] if len(r) > 4 else np.nan for r in rows], dtype=np.float32)
    return frame


def cls(name: str) -> int:
    return RESPIRATORY_CLASSES.index(name)


def test_midpoint_rule_and_epoch_borders():
    # 25.4 s + 12 s = [25.4, 37.4): midpoints 25.5 .. 36.5 -> seconds 25..36, across the 30-s epoch border
    targets = event_targets(table([("obstructive_apnea", 25.4, 12.0)]), kept_s=90.0)
    assert targets.n_seconds == 90 and targets.respiratory.dtype == np.int8
    on = np.flatnonzero(targets.respiratory)
    assert on.tolist() == list(range(25, 37))
    assert set(targets.respiratory[on].tolist()) == {cls("obstructive_apnea")}
    # a second whose midpoint the event misses stays 0 ([25.6, 37.6) covers 26..37)
    shifted = event_targets(table([("hypopnea", 25.6, 12.0)]), kept_s=90.0)
    assert np.flatnonzero(shifted.respiratory).tolist() == list(range(26, 38))


def test_apnea_wins_over_hypopnea_and_later_apnea_over_earlier():
    rows = [("hypopnea", 10, 30), ("central_apnea", 20, 10), ("obstructive_apnea", 50, 20), ("mixed_apnea", 60, 20)]
    resp = event_targets(table(rows), kept_s=120.0).respiratory
    assert (resp[10:20] == cls("hypopnea")).all()
    assert (resp[20:30] == cls("central_apnea")).all()  # inside the hypopnea: the apnea wins
    assert (resp[30:40] == cls("hypopnea")).all()
    assert (resp[50:60] == cls("obstructive_apnea")).all()
    assert (resp[60:80] == cls("mixed_apnea")).all()  # overlapping apneas: the later onset wins
    assert resp[40:50].sum() == 0 and resp[80:].sum() == 0
    # the same regardless of the row order of the table
    shuffled = event_targets(table(rows[::-1]), kept_s=120.0).respiratory
    np.testing.assert_array_equal(shuffled, resp)


def test_beyond_kept_s_clipped_or_dropped():
    rows = [("hypopnea", 80, 20), ("obstructive_apnea", 90, 15), ("arousal", 85, 10), ("desaturation", 95, 4)]
    targets = event_targets(table(rows), kept_s=90.0)
    assert targets.n_seconds == 90
    assert (targets.respiratory[80:90] == cls("hypopnea")).all()  # clipped at kept_s
    assert targets.arousal[85:90].all() and targets.desaturation.sum() == 0
    kinds = [e.type for e in targets.events]
    assert kinds == ["hypopnea", "arousal"]  # onsets at or after kept_s left out
    assert targets.events[0].duration_s == 20.0  # the scored event itself is not shortened


def test_desaturation_drop_with_and_without_baseline_and_other_types_ignored():
    rows = [("hypopnea", 10, 15), ("desaturation", 30, 8, 91.0, 95.0), ("other", 40, 30), ("arousal", 24, 5)]
    without = event_targets(table(rows), kept_s=120.0)
    assert [e.type for e in without.events] == ["hypopnea", "arousal", "desaturation"]  # time order, no "other"
    assert math.isnan(without.events[2].drop_pct)
    with_baseline = event_targets(table(rows, baseline=True), kept_s=120.0)
    assert with_baseline.events[2].drop_pct == pytest.approx(4.0)
    assert math.isnan(with_baseline.events[0].drop_pct)
    assert with_baseline.desaturation[30:38].all() and with_baseline.desaturation.sum() == 8
    assert with_baseline.arousal[24:29].all() and with_baseline.arousal.sum() == 5
    assert with_baseline.respiratory[40:70].sum() == 0  # "other" is no respiratory event


def test_night_without_events_and_table_errors(tmp_path):
    frame = table([("hypopnea", 10, 15)])
    empty = night_targets(frame, "r2", kept_s=60.0)
    assert empty.n_seconds == 60 and empty.respiratory.sum() == 0 and empty.events == []
    with pytest.raises(FileNotFoundError, match="events.parquet"):
        read_event_table(tmp_path)
    frame.drop(columns=["duration_s"]).to_parquet(tmp_path / "events.parquet")
    with pytest.raises(ValueError, match="duration_s"):
        read_event_table(tmp_path)
