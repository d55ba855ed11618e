"""Event decoding, one-to-one matching, event AHI and hypopnea rules on hand-made event lists."""

import math

import numpy as np
import pytest

from dataset.labels import night_summary
from utils.ahi import estimate_ahi, event_index, qualifying_events, severity_name
from utils.events import (
    Event,
    bland_altman,
    decode_events,
    event_detection_metrics,
    iou,
    match_events,
    sum_detection_counts,
)


def test_decode_drops_short_runs_and_types_by_summed_probability():
    prob = np.zeros((120, 2))  # columns: obstructive, hypopnea
    prob[10:25, 0] = 0.9  # 15 s obstructive
    prob[40:48, 1] = 0.9  # 8 s: below the 10-s minimum
    prob[60:80, 0] = 0.3  # 20 s mixed evidence: event probability 0.9, hypopnea dominates
    prob[60:80, 1] = 0.6
    events = decode_events(prob, ["obstructive_apnea", "hypopnea"])
    assert [(e.onset_s, e.duration_s, e.type) for e in events] == [
        (10.0, 15.0, "obstructive_apnea"),
        (60.0, 20.0, "hypopnea"),
    ]
    assert events[1].probability == pytest.approx(0.9)


def test_decode_touching_runs_of_two_types_are_one_event_and_fs_scales_time():
    prob = np.zeros((40, 2))
    prob[0:12, 0] = 1.0  # run starts at the first sample
    prob[12:30, 1] = 1.0  # touches the first: one run of event samples
    (event,) = decode_events(prob, ["central_apnea", "hypopnea"])
    assert (event.onset_s, event.duration_s, event.type) == (0.0, 30.0, "hypopnea")
    (half,) = decode_events(prob, ["central_apnea", "hypopnea"], fs=2.0)  # 2 samples per second
    assert (half.onset_s, half.duration_s) == (0.0, 15.0)


def test_decode_merge_gap_never_extends_beyond_the_edges():
    p = np.zeros(50)
    p[0:12] = 1.0
    p[14:26] = 1.0
    p[48:] = 1.0
    events = decode_events(p, ["hypopnea"], merge_gap_s=3.0)
    assert [(e.onset_s, e.duration_s) for e in events] == [(0.0, 26.0)]


def test_decode_merge_gap_is_compared_in_seconds():
    """Runs separated by a gap shorter than merge_gap_s merge, also when merge_gap_s is not a whole number of
    samples (a 2-s gap under 2.4 s; at 10 Hz a 0.2-s gap under 0.25 s)."""
    p = np.zeros(40)
    p[0:12] = 1.0
    p[14:26] = 1.0
    assert len(decode_events(p, ["hypopnea"], merge_gap_s=2.4)) == 1
    assert len(decode_events(p, ["hypopnea"], merge_gap_s=2.0)) == 2  # a gap of exactly 2 s is not shorter
    q = np.zeros(400)
    q[0:120] = 1.0
    q[122:260] = 1.0
    assert len(decode_events(q, ["hypopnea"], fs=10.0, merge_gap_s=0.25)) == 1


def test_an_ahi_on_a_severity_boundary_is_in_the_higher_class():
    """81 events in 648 sleep epochs (5.4 h) are exactly 15 events/h: moderate, not 14.999... and mild."""
    sleep = np.ones(648, bool)
    events = [Event(30.0 * k + 5, 12, "obstructive_apnea") for k in range(81)]
    assert event_index(events, sleep) == 15.0 and severity_name(event_index(events, sleep)) == "moderate"
    apnea_epochs = np.zeros(648, np.int8)
    apnea_epochs[::8] = 1  # 81 one-epoch runs
    assert estimate_ahi(apnea_epochs, np.zeros(648, np.int8), sleep) == 15.0
    labels = {"stage": np.full(648, 2, np.int8)}
    scored = [{"type": e.type, "start_s": e.onset_s, "duration_s": e.duration_s, "spo2_nadir": 90.0} for e in events]
    summary = night_summary(labels, scored, 648 * 30.0)
    assert summary["ahi_scored"] == 15.0 and severity_name(summary["ahi_scored"]) == "moderate"
    assert severity_name(event_index(events[:-1], sleep)) == "mild"  # 80 events: 14.8/h


def test_a_desaturation_after_the_recording_does_not_qualify_a_hypopnea():
    """The manifest's scored AHI leaves out events starting at or after the kept end, also as what qualifies a
    hypopnea (as the event task's targets do)."""
    labels = {"stage": np.full(120, 2, np.int8)}  # 3,600 s of N2
    events = [
        {"type": "hypopnea", "start_s": 3575.0, "duration_s": 15.0, "spo2_nadir": math.nan},
        {"type": "desaturation", "start_s": 3601.0, "duration_s": 12.0, "spo2_nadir": 88.0, "spo2_baseline": 95.0},
    ]
    summary = night_summary(labels, events, 3600.0)
    assert summary["n_desaturation"] == 0 and summary["ahi_a0h3a"] == 0.0 and summary["ahi_all"] == 1.0
    summary = night_summary(labels, [events[0], dict(events[1], start_s=3590.0)], 3600.0)
    assert summary["ahi_a0h3a"] == 1.0


def test_decode_rejects_wrong_shape():
    with pytest.raises(ValueError, match="expected shape"):
        decode_events(np.zeros((10, 3)), ["hypopnea"])


def test_iou_of_touching_events_is_zero():
    assert iou(Event(0, 10, "hypopnea"), Event(10, 10, "hypopnea")) == 0.0
    assert iou(Event(0, 20, "hypopnea"), Event(10, 20, "hypopnea")) == pytest.approx(10 / 30)


def test_matching_is_one_to_one_with_a_stated_tie_break():
    scored = [Event(0, 20, "hypopnea"), Event(22, 20, "hypopnea")]
    predicted = [Event(2, 38, "hypopnea")]  # IoU 18/40 with each: the tie goes to the earlier scored event
    pairs = match_events(predicted, scored)
    assert len(pairs) == 1 and pairs[0][:2] == (0, 0)
    metrics = event_detection_metrics(predicted, scored, types=["hypopnea"])
    assert metrics["hypopnea"]["tp"] == 1 and metrics["hypopnea"]["fn"] == 1 and metrics["hypopnea"]["fp"] == 0
    assert metrics["hypopnea"]["f1"] == pytest.approx(2 / 3)
    closer = [Event(5, 17, "hypopnea"), Event(2, 38, "hypopnea")]  # the first fits scored[0] better (IoU 0.85)
    assert [pair[:2] for pair in match_events(closer, scored)] == [(0, 0), (1, 1)]


def test_matching_threshold_and_type():
    scored = [Event(100, 20, "obstructive_apnea")]
    assert match_events([Event(115, 20, "obstructive_apnea")], scored) == []  # IoU 5/35 < 0.2
    assert match_events([Event(110, 20, "obstructive_apnea")], scored)[0][2] == pytest.approx(10 / 30)
    on_threshold = event_detection_metrics([Event(15, 10, "hypopnea")], [Event(14.4, 50, "hypopnea")], ["hypopnea"])
    assert on_threshold["hypopnea"]["tp"] == 1  # IoU 10/50 = 0.2, in floating point 0.19999999999999998
    assert match_events([Event(15, 10, "hypopnea")], [Event(14.4, 50.1, "hypopnea")]) == []  # 10/50.1 < 0.2
    wrong_type = [Event(100, 20, "central_apnea")]
    metrics = event_detection_metrics(wrong_type, scored)
    assert metrics["obstructive_apnea"]["fn"] == 1 and metrics["central_apnea"]["fp"] == 1
    assert metrics["apnea"]["tp"] == 1  # the apnea family ignores the apnea type
    assert metrics["any"]["tp"] == 1
    assert math.isnan(metrics["hypopnea"]["f1"])  # nothing predicted, nothing scored


def test_pooled_counts_across_nights():
    night_a = event_detection_metrics([Event(0, 20, "hypopnea")], [Event(0, 20, "hypopnea")], ["hypopnea"])
    night_b = event_detection_metrics([], [Event(50, 20, "hypopnea")], ["hypopnea"])
    pooled = sum_detection_counts([night_a, night_b])
    assert pooled["hypopnea"]["tp"] == 1 and pooled["hypopnea"]["fn"] == 1
    assert pooled["hypopnea"]["recall"] == 0.5 and pooled["hypopnea"]["precision"] == 1.0


def test_event_index_counts_onsets_in_sleep_only():
    stages = np.array([0, 2, 2, 4, 4, 0])  # W N2 N2 REM REM W
    sleep = stages > 0  # 4 sleep epochs = 2 min
    events = [
        Event(25, 15, "hypopnea"),  # onset in wake, runs across the border into sleep: not counted
        Event(45, 20, "obstructive_apnea"),  # onset in N2, ends in the next epoch: counted once
        Event(100, 12, "hypopnea"),  # onset in REM
        Event(130, 12, "desaturation"),  # not a respiratory event type
        Event(170, 12, "central_apnea"),  # onset in wake
    ]
    assert event_index(events, sleep) == pytest.approx(2 / (2 / 60))
    assert event_index(events, sleep, within=stages == 4) == pytest.approx(1 / (1 / 60))
    assert math.isnan(event_index(events, np.zeros(6, bool)))


def test_hypopnea_rules():
    hyp_desat3 = Event(0, 20, "hypopnea")
    hyp_desat4 = Event(100, 20, "hypopnea")
    hyp_arousal = Event(200, 20, "hypopnea")
    hyp_alone = Event(300, 20, "hypopnea")
    apnea = Event(400, 15, "central_apnea")
    events = [
        hyp_desat3,
        hyp_desat4,
        hyp_arousal,
        hyp_alone,
        apnea,
        Event(45, 10, "desaturation", drop_pct=3.0),  # 25 s after the end: within the 30-s lag
        Event(115, 12, "desaturation", drop_pct=5.0),
        Event(222, 5, "arousal"),  # 2 s after the end
        Event(351, 10, "desaturation", drop_pct=6.0),
    ]  # 31 s after the end: too late
    assert qualifying_events(events, "3a") == [hyp_desat3, hyp_desat4, hyp_arousal, apnea]
    assert qualifying_events(events, "4") == [hyp_desat4, apnea]
    assert qualifying_events(events, "all") == [hyp_desat3, hyp_desat4, hyp_arousal, hyp_alone, apnea]
    with pytest.raises(ValueError, match="hypopnea rule"):
        qualifying_events(events, "5")


def test_a_drop_read_back_from_float32_still_meets_its_threshold():
    """Nadir and baseline are stored as float32 (and Profusion's baseline is nadir + drop): 65.2 -> 61.2 reads
    3.9999962 and 61.1 + 3.0 - 61.1 reads 2.99999999999999; both count as the scorer's 4 % and 3 %. A real 3.9 % does
    not count as 4 %."""
    hypopnea = Event(1000, 20, "hypopnea")
    float32_drop = float(np.float32(65.2) - np.float32(61.2))
    rebuilt_drop = (61.1 + 3.0) - 61.1
    assert float32_drop < 4.0 and rebuilt_drop < 3.0
    assert qualifying_events([hypopnea, Event(1015, 10, "desaturation", drop_pct=float32_drop)], "4") == [hypopnea]
    assert qualifying_events([hypopnea, Event(1015, 10, "desaturation", drop_pct=rebuilt_drop)], "3a") == [hypopnea]
    assert qualifying_events([hypopnea, Event(1015, 10, "desaturation", drop_pct=3.9)], "4") == []


def test_bland_altman():
    out = bland_altman([10, 12, float("nan"), 20], [8, 12, 5, 17])
    assert out["n"] == 3
    assert out["bias"] == pytest.approx(np.mean([2, 0, 3]))
    assert out["sd"] == pytest.approx(np.std([2, 0, 3], ddof=1))
    assert out["loa_high"] - out["loa_low"] == pytest.approx(2 * 1.96 * out["sd"])
    assert math.isnan(bland_altman([1.0], [2.0])["sd"])
