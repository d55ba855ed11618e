"""Signal quality a night carries into its report: a lead-off stretch, an EEG whose unit is unknown, a file cut to
its first data record, a cannula or belt off; and that what reading a recording found reaches predict.py's
warnings."""

from __future__ import annotations

import datetime
from pathlib import Path

import numpy as np
import pytest

from dataset.scored_events import Event
from dataset.signal_processing import SkipRecording, load_night
from dataset.synthetic_writers import write_edf
from downstream.night_report import night_warnings
from downstream.night_respiratory import (
    assess_reliability,
    effort_loss,
    signal_loss,
    withhold_reason,
    without_lost_flow,
)

SECONDS = 3600


def _eeg_night(path: Path, eeg: np.ndarray, unit: str = "uV", limits: tuple[float, float] = (-250.0, 250.0)) -> Path:
    write_edf(path, [("eeg", "C4-M1", 125, unit, *limits)], {"eeg": eeg}, datetime.time(23, 0, 0))
    return path


def test_a_lead_off_stretch_is_named_and_left_out_of_the_channels_scale(tmp_path):
    """C4 at 0 for 20 of 60 minutes: the channel is kept, its scale is that of the other epochs (the zeros would
    shrink the IQR and mis-scale every epoch of the night), and a warning names the channel and the stretch."""
    eeg = np.random.default_rng(0).normal(0.0, 20.0, SECONDS * 125)
    _, _, whole = load_night(_eeg_night(tmp_path / "whole.edf", eeg), channels=["eeg_c4"])
    eeg[1200 * 125 : 2400 * 125] = 0.0
    epochs, _, info = load_night(_eeg_night(tmp_path / "off.edf", eeg), channels=["eeg_c4"])
    assert "eeg_c4" in epochs and info["dropped_channels"] == ""
    assert info["iqr_eeg_c4"] == pytest.approx(whole["iqr_eeg_c4"], rel=0.03)
    assert "eeg_c4 is flat in 40 of 120 epochs (20 min, the first at 1200 s; lead-off?)" in info["warnings"]
    assert "flat" not in whole["warnings"]
    np.testing.assert_allclose(np.percentile(epochs["eeg_c4"][:40], (25, 75)), (-0.5, 0.5), atol=0.05)


def test_a_flat_channel_whose_unit_was_unknown_says_so(tmp_path):
    """An EEG in volts written with a blank unit reads as microvolts and is flat; the reason names the unit."""
    eeg = np.random.default_rng(1).normal(0.0, 20e-6, 600 * 125)
    path = _eeg_night(tmp_path / "volts.edf", eeg, unit="", limits=(-250e-6, 250e-6))
    with pytest.raises(SkipRecording) as caught:
        load_night(path, channels=["eeg_c4"])
    assert "flat: IQR" in str(caught.value) and "its unit '' is unknown and was taken as uV" in str(caught.value)


def test_a_file_cut_to_its_first_record_says_it_is_truncated(tmp_path):
    eeg = np.random.default_rng(2).normal(0.0, 20.0, 600 * 125)
    path = _eeg_night(tmp_path / "cut.edf", eeg)
    data = path.read_bytes()
    header_bytes = int(data[184:192])
    path.write_bytes(data[: header_bytes + 125 * 2 + 10])  # the first 1-s record and a few bytes of the next
    with pytest.raises(SkipRecording, match=r"signal 1 s; header declares 600 data records, file holds 1 whole"):
        load_night(path, channels=["eeg_c4"])


def test_what_reading_the_recording_found_is_a_report_warning():
    info = {"warnings": "emg recorded at 50 Hz holds only 10-25 Hz of its 10-49 Hz band", "truncated": False}
    staging = {"missing": [], "used": ["eeg_c4"]}
    reliability = {"reliable": True, "reasons": []}
    assert night_warnings(info, None, staging, reliability) == [f"recording: {info['warnings']}"]
    assert night_warnings({"warnings": ""}, None, staging, reliability) == []


def test_a_cannula_off_leaves_its_events_out_and_flags_the_ahi():
    """Airflow flat for 5 min (a cannula off): those epochs carry no flow, an "apnea" detected there is left out,
    and with flow over less than 80 % of sleep the AHI is unreliable. A 60-s low-flow stretch (an apnea) is no
    loss."""
    t = np.arange(300) / 10.0
    airflow = np.tile(np.sin(2 * np.pi * t / 4.0), (40, 1))
    airflow[10:20] = 0.0
    airflow[30:32] *= 0.01  # an apnea: a minute of next to no flow
    stages = np.full(40, 2)
    found = [Event(100.0, 20.0, "obstructive_apnea"), Event(320.0, 90.0, "obstructive_apnea")]
    kept, counted, flow = without_lost_flow(found, [True, True], airflow, stages)
    assert kept == found[:1] and counted == [True]
    assert flow["flow_lost_min"] == 5.0 and flow["flow_valid_sleep_min"] == 15.0 and flow["flow_lost_first_s"] == 300
    assert flow["events_left_out"] == 1 and "no signal for 5 min, the first stretch at 300 s" in flow["warning"]
    events = {"event_f1_apnea": 0.9, "event_f1_hypopnea": 0.9, "ahi_severity_kappa": 0.9, "ahi_n": 30}
    verdict = assess_reliability("event model", {"val_kappa": 0.9}, events, [], 20.0, None, (), flow)
    assert (
        verdict["reliable"] is False
        and "airflow carries a signal over 75 % of predicted sleep" in verdict["reasons"][0]
    )
    _, _, whole = without_lost_flow([], [], np.tile(np.sin(2 * np.pi * t / 4.0), (40, 1)), stages)
    assert whole["flow_lost_min"] == 0.0 and whole["warning"] is None
    assert assess_reliability("event model", {"val_kappa": 0.9}, events, [], 20.0, None, (), whole)["reliable"]


def test_a_belt_off_flags_the_ahi_and_keeps_its_events():
    """The thoracic belt flat for 10 of 20 min (a belt off): a warning names it and the AHI is unreliable (the
    event model reads no effort there); the abdominal belt, breathing throughout, adds no reason."""
    t = np.arange(300) / 10.0
    breathing = np.tile(np.sin(2 * np.pi * t / 4.0), (40, 1))
    thor = breathing.copy()
    thor[20:] = 0.001 * np.random.default_rng(3).normal(size=(20, 300))  # a slipped belt: noise, no breathing
    stages = np.array([0] * 4 + [2] * 36)
    effort = effort_loss({"thor": thor, "abdo": breathing, "airflow": breathing}, stages)
    assert set(effort) == {"thor", "abdo"} and effort["abdo"]["warning"] is None
    assert effort["thor"]["thor_lost_min"] == 10.0 and effort["thor"]["thor_valid_sleep_min"] == 8.0
    assert "thor belt carries no signal for 10 min, the first stretch at 600 s" in effort["thor"]["warning"]
    events = {"event_f1_apnea": 0.9, "event_f1_hypopnea": 0.9, "ahi_severity_kappa": 0.9, "ahi_n": 30}
    verdict = assess_reliability("event model", {"val_kappa": 0.9}, events, [], 18.0, None, (), None, effort)
    assert verdict["reliable"] is False and verdict["reasons"] == [
        "the thor belt carries a signal over 44 % of predicted sleep (< 80 %): the event model's effort input is "
        "missing there"
    ]
    assert effort_loss({"airflow": breathing}, stages) == {}
    whole = effort_loss({"thor": breathing, "abdo": breathing}, stages)
    assert assess_reliability("event model", {"val_kappa": 0.9}, events, [], 18.0, None, (), None, whole)["reliable"]


def test_a_cannula_recording_noise_most_of_the_night_is_no_flow():
    """A cannula off from the second epoch on records sensor noise: with next to the whole night noise, its range
    is the night's own reference, yet it has no breathing rhythm, so it carries no flow. Breathing with noise,
    at changing rates and depths, and a 90-s apnea keep their flow."""
    rng = np.random.default_rng(5)
    t = np.arange(300) / 10.0
    breathing = np.stack([np.sin(2 * np.pi * t / rng.uniform(2.5, 6.0)) * rng.uniform(0.3, 1.0) for _ in range(40)])
    noisy = breathing + 0.3 * rng.normal(size=breathing.shape)
    noisy[20:23] = 0.02 * rng.normal(size=(3, 300))  # an apnea of 90 s
    assert not signal_loss(noisy).any()
    off = 0.01 * rng.normal(size=(40, 300))
    off[0] = breathing[0]
    lost = signal_loss(off)
    assert lost[1:].all() and not lost[0]
    _, _, flow = without_lost_flow([], [], off, np.full(40, 2))
    assert flow["flow_lost_min"] == 19.5 and flow["flow_lost_first_s"] == 30.0
    assert not signal_loss(np.zeros((0, 300))).any()


@pytest.mark.parametrize("per_minute", [6, 15, 48, 80])
@pytest.mark.parametrize("noise", [0.0, 1.0])
def test_breathing_at_any_rate_with_noise_keeps_its_flow(per_minute, noise):
    """Slow adult breathing to an infant's 80 a minute, its rate and depth wandering, with noise as large as the
    breath itself: a rhythm, never lost; white noise alone is."""
    rng = np.random.default_rng(per_minute)
    t = np.arange(300) / 10.0
    rate = per_minute / 60.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, (40, 300)), axis=1))  # Hz, wandering
    phase = 2 * np.pi * np.cumsum(rate, axis=1) / 10.0
    depth = 1.0 + 0.3 * np.sin(2 * np.pi * t / 40.0)
    flow = depth * np.sin(phase) + noise * rng.normal(size=(40, 300))
    assert not signal_loss(flow).any()
    assert signal_loss(rng.normal(size=(40, 300))).all()


def test_a_flat_nasal_pressure_falls_back_to_the_thermistor(tmp_path):
    """Airflow takes nasal pressure before the thermistor; a flat pressure channel (a cannula never connected)
    is not the night's airflow while a thermistor breathes beside it: it is read instead, with a warning."""
    seconds = 600
    rng = np.random.default_rng(2)
    t = np.arange(seconds * 10) / 10.0
    signals = {
        "eeg": rng.normal(0.0, 20.0, seconds * 125),
        "pres": np.zeros(seconds * 10),
        "therm": np.sin(2 * np.pi * t / 4.0) * 50.0,
    }
    layout = [
        ("eeg", "C4-M1", 125, "uV", -250.0, 250.0),
        ("pres", "Pressure", 10, "cmH2O", -5.0, 5.0),
        ("therm", "Thermistor", 10, "uV", -100.0, 100.0),
    ]
    path = tmp_path / "flow.edf"
    write_edf(path, layout, signals, datetime.time(23, 0, 0))
    epochs, _, info = load_night(path, channels=["eeg_c4", "airflow"])
    assert "airflow" in epochs and info["dropped_channels"] == ""
    assert "airflow: 'Pressure' flat: range" in info["warnings"] and "'Thermistor' read instead" in info["warnings"]
    assert "airflow:Thermistor" in info["channel_sources"]
    signals["therm"][:] = 0.0  # both flat: dropped, each reason given
    write_edf(path, layout, signals, datetime.time(23, 0, 0))
    epochs, _, info = load_night(path, channels=["eeg_c4", "airflow"])
    assert "airflow" not in epochs
    assert "'Pressure' flat" in info["dropped_channels"] and "'Thermistor' flat" in info["dropped_channels"]


def test_a_lead_off_over_most_of_the_night_keeps_the_hours_before_it(tmp_path):
    """C4 off for 40 of 60 minutes: the night's IQR is that of the zeros, yet 20 minutes carry a signal, so the
    channel is read, scaled by them, and the stretch named. Off for 57 minutes (3 minutes of signal): flat."""
    eeg = np.random.default_rng(4).normal(0.0, 20.0, SECONDS * 125)
    _, _, whole = load_night(_eeg_night(tmp_path / "whole.edf", eeg), channels=["eeg_c4"])
    eeg[1200 * 125 :] = 0.0
    epochs, _, info = load_night(_eeg_night(tmp_path / "off.edf", eeg), channels=["eeg_c4"])
    assert "eeg_c4" in epochs and info["dropped_channels"] == ""
    assert info["iqr_eeg_c4"] == pytest.approx(whole["iqr_eeg_c4"], rel=0.03)
    assert "eeg_c4 is flat in 80 of 120 epochs (40 min, the first at 1200 s; lead-off?)" in info["warnings"]
    eeg[180 * 125 : 1200 * 125] = 0.0
    with pytest.raises(SkipRecording, match=r"flat: IQR 0 uV < 0.1 \(a signal in 6 of 120 epochs\)"):
        load_night(_eeg_night(tmp_path / "gone.edf", eeg), channels=["eeg_c4"])


def test_a_staging_channel_off_for_much_of_the_night_flags_the_ahi(tmp_path):
    """The AHI's hours of sleep come from the stages: a staging channel flat over more than a fifth of the night
    makes them doubtful, a shorter lead-off does not. load_night counts each channel's flat epochs."""
    eeg = np.random.default_rng(6).normal(0.0, 20.0, SECONDS * 125)
    eeg[1200 * 125 : 2400 * 125] = 0.0
    _, _, info = load_night(_eeg_night(tmp_path / "off.edf", eeg), channels=["eeg_c4"])
    assert info["flat_epochs"] == {"eeg_c4": 40}
    events = {"event_f1_apnea": 0.9, "event_f1_hypopnea": 0.9, "ahi_severity_kappa": 0.9, "ahi_n": 30}
    check = {"val_kappa": 0.9}
    verdict = assess_reliability("event model", check, events, [], 60.0, None, (), None, None, {"eeg_c4": 40 / 120})
    assert verdict["reliable"] is False and verdict["reasons"] == [
        "eeg_c4, read by the staging model, is flat (lead-off) over 33.3 % of the night (> 20 %): sleep time may be wrong"
    ]
    assert assess_reliability("event model", check, events, [], 60.0, None, (), None, None, {"eeg_c4": 0.1})["reliable"]


def test_no_ahi_without_flow_anywhere_in_sleep():
    """A night lacking airflow, or whose airflow carries no signal in any epoch of predicted sleep, gets no AHI (an
    index of 0 would read as a healthy night); flow lost over part of sleep keeps it, flagged elsewhere."""
    t = np.arange(300) / 10.0
    stages = np.array([0] * 4 + [2] * 36)
    breathing = np.tile(np.sin(2 * np.pi * t / 4.0), (40, 1))
    off = breathing.copy()
    off[4:] = 0.0  # the cannula off when sleep begins
    _, _, lost = without_lost_flow([], [], off, stages)
    assert withhold_reason([], lost) == "the airflow carries no signal in predicted sleep (a cannula off?)"
    _, _, part = without_lost_flow([], [], breathing, stages)
    assert withhold_reason([], part) is None
    assert withhold_reason(["airflow"], None) == "the night lacks airflow, read by the event model"
    _, _, awake = without_lost_flow([], [], off, np.zeros(40, dtype=int))  # no sleep: nothing lost in it
    assert withhold_reason([], awake) is None
