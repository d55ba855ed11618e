"""SpO2 through the real path (1-Hz whole-percent EDF -> `load_night` -> `night_spo2` -> `oximetry_summary`): the
parser holds each reading (no filter inventing values between readings), so exactly-3 % desaturations count,
a probe-off 0 % gives no false nadir, and an SpO2 at 100 % (the header's digital maximum) is not taken for
clipping."""

from __future__ import annotations

import datetime
import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from dataset.resampling import hold, resample, resample_stages
from dataset.signal_processing import load_night
from dataset.synthetic_writers import write_edf
from downstream.night_respiratory import night_spo2, oximetry_summary, spo2_percent
from utils.features import respiratory_features

N2 = 2


def _night(tmp_path: Path, spo2: np.ndarray, spo2_range: tuple[float, float] = (0.0, 100.0)) -> tuple[dict, dict]:
    """A night of an EEG and a 1-Hz SpO2 (`spo2` in the header's unit, one value per second), processed as
    predict.py does: (epochs, info)."""
    seconds = spo2.size
    eeg = np.random.default_rng(0).normal(0.0, 20.0, seconds * 125)
    layout = [("eeg", "EEG", 125, "uV", -250.0, 250.0), ("spo2", "SaO2", 1, "%", *spo2_range)]
    path = tmp_path / "night.edf"
    write_edf(path, layout, {"eeg": eeg, "spo2": spo2}, datetime.time(23, 0, 0))
    epochs, _, info = load_night(path, channels=["eeg_c4", "spo2"])
    return epochs, info


def test_hold_repeats_each_reading_and_matches_the_resamplers_length():
    readings = np.array([95.0, 92.0, 0.0, 96.0])
    np.testing.assert_array_equal(hold(readings, Fraction(10)), np.repeat(readings, 10))
    down = hold(np.arange(50.0), Fraction(10, 25))  # 25 -> 10 Hz: the latest sample at or before each output
    np.testing.assert_array_equal(down, [0, 2, 5, 7, 10, 12, 15, 17, 20, 22, 25, 27, 30, 32, 35, 37, 40, 42, 45, 47])
    for rate in (Fraction(1), Fraction(25), Fraction(256), Fraction(7, 2)):
        stages = resample_stages(rate, 10, 600.0)
        x = np.zeros(int(600 * rate))
        ratio = math.prod((Fraction(u, d) for u, d in stages), start=Fraction(1))
        assert hold(x, ratio).size == resample(x, stages, "line").size, rate


def test_whole_percent_desaturations_of_exactly_3_pct_all_count(tmp_path):
    """Baseline 95 %, 1 %/s ramps, nadir plateaus of 10-13 s at exactly 3 % and 4 % below: every one is a
    desaturation lasting as long as the SpO2 stays <= 92 %, as on the raw 1-Hz trace (a filter ringing at
    91.93 / 92.03 % lost every 3 % one)."""
    spo2 = np.full(20 * 60, 95.0)
    expected = []
    for k, (depth, plateau) in enumerate((d, p) for d in (3, 4) for p in (10, 11, 12, 13)):
        start = 150 + 120 * k
        ramp = [95.0 - i for i in range(1, depth)]
        spo2[start : start + 2 * len(ramp) + plateau] = ramp + [95.0 - depth] * plateau + ramp[::-1]
        expected.append((float(start + 2), float(plateau + 2 * (depth - 3))))  # from the first second at 92 %
    epochs, info = _night(tmp_path, spo2)
    level = night_spo2(epochs, info)
    summary, desats = oximetry_summary(level, np.full(info["n_epochs"], N2))
    assert [(d.onset_s, d.duration_s) for d in desats] == expected
    np.testing.assert_allclose(level, spo2, atol=2e-3)  # each second is its reading (EDF steps 0.0015 %)
    assert summary["odi"] == pytest.approx(len(expected) / (20 / 60))
    assert summary["spo2_min_pct"] == pytest.approx(91.0, abs=2e-3)


def test_probe_off_dropout_gives_no_false_nadir(tmp_path):
    """A 60-s dropout to 0 % (probe off) is left out exactly, and its neighbours read 96 %: no nadir of 52.8 %,
    no time below 90 %; the one real 20-s desaturation to 91 % is the minimum and the only event."""
    spo2 = np.full(20 * 60, 96.0)
    spo2[300:360] = 0.0
    spo2[800:820] = 91.0
    epochs, info = _night(tmp_path, spo2)
    level = night_spo2(epochs, info)
    np.testing.assert_array_equal(np.flatnonzero(np.isnan(level)), np.arange(300, 360))
    summary, desats = oximetry_summary(level, np.full(info["n_epochs"], N2))
    assert summary["spo2_min_pct"] == pytest.approx(91.0, abs=2e-3)
    assert summary["spo2_below_90_min"] == 0.0
    assert summary["spo2_valid_sleep_min"] == pytest.approx(19.0)
    assert [(d.onset_s, d.duration_s) for d in desats] == [(800.0, 20.0)]


def test_a_second_straddling_a_dropout_edge_is_an_artefact():
    """3 of a second's 10 samples at 0 %: its mean (67.2 %) is no reading, so the second is left out."""
    pct = np.full(30, 96.0)
    pct[17:20] = 0.0
    level = spo2_percent((pct - 96.0) / 10.0, 96.0, 10.0)
    assert np.isnan(level[1])
    assert level[0] == pytest.approx(96.0) and level[2] == pytest.approx(96.0)


def test_the_event_models_spo2_features_skip_a_dropout():
    """A probe off for 60 s (0 %) is no desaturation for the event model either: its seconds are interpolated
    from the readings around them, as the ODI's baseline does, instead of reading as a 96 % drop."""
    pct = np.full(600 * 10, 96.0)
    pct[3000:3600] = 0.0
    pct[4500:4700] = 92.0  # a real 4 % desaturation of 20 s
    features, names = respiratory_features({"spo2": (pct - 96.0) / 2.0}, 600, 10, spo2_scale=(96.0, 2.0))
    drop = features[:, names.index("spo2_drop")]
    assert np.nanmax(drop[290:370]) < 0.5
    assert drop[455] == pytest.approx(4.0, abs=0.01)
    nadir = features[:, names.index("spo2_nadir_drop_0_20")]
    assert np.nanmax(nadir[250:370]) < 0.5 and nadir[440] == pytest.approx(4.0, abs=0.01)


@pytest.mark.parametrize("spo2_range, scale", [((0.0, 100.0), 1.0), ((0.0, 1.0), 0.01)], ids=["percent", "fraction"])
def test_spo2_at_100_pct_most_of_the_night_is_kept(tmp_path, spo2_range, scale):
    """100 % is the 0-100 % header's digital maximum (and 0 % its minimum): a valid reading (and a dropout),
    not clipping, so a night at 100 % for 60 % of the time keeps its SpO2."""
    spo2 = np.full(20 * 60, 100.0)
    spo2[:480] = 98.0
    spo2[200:220] = 93.0
    spo2[600:630] = 0.0
    epochs, info = _night(tmp_path, spo2 * scale, spo2_range)
    assert "spo2" in epochs and info["dropped_channels"] == ""
    level = night_spo2(epochs, info)
    assert np.nanmax(level) == pytest.approx(100.0, abs=2e-3) and np.isnan(level[600:630]).all()
    summary, desats = oximetry_summary(level, np.full(info["n_epochs"], N2))
    assert [(d.onset_s, d.duration_s) for d in desats] == [(200.0, 20.0)]


def test_spo2_at_a_limit_inside_its_range_is_still_clipping(tmp_path):
    """A header whose range (60-100 %) cuts off real readings: most samples at 60 % are clipped, as for any channel."""
    spo2 = np.full(20 * 60, 95.0)
    spo2[:800] = 55.0  # below the header's minimum: written at its digital minimum
    epochs, info = _night(tmp_path, spo2, (60.0, 100.0))
    assert "spo2" not in epochs and "clipped" in info["dropped_channels"]


@pytest.mark.parametrize("inverted", [False, True], ids=["range", "inverted-range"])
def test_spo2_resting_on_a_header_max_set_from_the_data_is_kept(tmp_path, inverted):
    """Writers that set the physical range from the data (edfio's and MNE's defaults) put a healthy night's top
    reading on the digital maximum for most of the night: that is the baseline, not clipping."""
    spo2 = np.full(20 * 60, 97.0)
    spo2[::3] = 96.0
    spo2[200:240] = 91.0  # the night's lowest reading: the header's minimum
    epochs, info = _night(tmp_path, spo2, (97.0, 91.0) if inverted else (91.0, 97.0))
    assert "spo2" in epochs and info["dropped_channels"] == ""
    summary, desats = oximetry_summary(night_spo2(epochs, info), np.full(info["n_epochs"], N2))
    assert [(d.onset_s, d.duration_s) for d in desats] == [(200.0, 40.0)]
    steady = np.where(np.arange(spo2.size) % 3 == 0, 97.0, 96.0)  # resting on its lowest reading: the minimum
    epochs, info = _night(tmp_path, steady, (97.0, 96.0) if inverted else (96.0, 97.0))
    assert "spo2" in epochs and info["dropped_channels"] == ""
