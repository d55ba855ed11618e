"""utils.sleep_stats: sleep statistics on hand-built hypnograms."""

import math

import numpy as np
import pytest

from dataset.constants import STAGE_NAMES
from utils.ahi import epoch_run_ahi
from utils.sleep_stats import sleep_statistics

W, N1, N2, N3, REM, U = 0, 1, 2, 3, 4, -1
# 20 epochs of 30 s. Index: 0  1  2  3  4   5   6   7  8  9   10  11  12 13  14   15   16 17   18 19
HAND = np.array([W, W, W, U, N1, N2, N2, W, W, N2, N3, N3, U, N2, REM, REM, W, REM, W, W])


def test_hand_built_hypnogram():
    s = sleep_statistics(HAND)
    expected = {
        "n_epochs": 20,
        "trt_min": 10.0,
        "tst_min": 5.0,  # 10 sleep epochs
        "w_min": 4.0,
        "n1_min": 0.5,
        "n2_min": 2.0,
        "n3_min": 1.0,
        "rem_min": 1.5,
        "unscored_min": 1.0,
        "nrem_min": 3.5,
        "sol_min": 2.0,  # first sleep epoch is 4; the unscored epoch 3 is not sleep
        "rem_latency_min": 5.0,  # epoch 14 - epoch 4
        "spt_min": 7.0,  # epochs 4..17
        "waso_min": 1.5,  # epochs 7, 8, 16; the unscored epoch 12 and the final wake 18-19 are not WASO
        "n_awakenings": 2,
        "sleep_efficiency_pct": 50.0,
        "sleep_maintenance_efficiency_pct": 100 * 5 / 7,
        "n1_pct": 10.0,
        "n2_pct": 40.0,
        "n3_pct": 20.0,
        "rem_pct": 30.0,
        "nrem_pct": 70.0,
    }
    for key, value in expected.items():
        assert s[key] == pytest.approx(value), key
    assert sleep_statistics(HAND, min_awakening_epochs=2)["n_awakenings"] == 1
    assert sleep_statistics(HAND, epoch_s=20)["tst_min"] == pytest.approx(10 * 20 / 60)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_stage_minutes_add_up_to_trt(seed):
    hypno = np.random.default_rng(seed).integers(-1, 5, 900)
    s = sleep_statistics(hypno)
    parts = sum(s[f"{name.lower()}_min"] for name in STAGE_NAMES) + s["unscored_min"]
    assert parts == pytest.approx(s["trt_min"]) and s["trt_min"] == pytest.approx(450.0)
    onset, last = np.flatnonzero(hypno > 0)[[0, -1]]
    unscored_in_period = np.sum(hypno[onset : last + 1] == U) * 0.5
    assert s["tst_min"] == pytest.approx(s["spt_min"] - s["waso_min"] - unscored_in_period)
    assert sum(s[f"{n}_pct"] for n in ("n1", "n2", "n3", "rem")) == pytest.approx(100.0)


def test_no_sleep_and_no_rem():
    awake = sleep_statistics([W, W, U, W])
    assert awake["tst_min"] == 0.0 and awake["sleep_efficiency_pct"] == 0.0 and awake["spt_min"] == 0.0
    assert math.isnan(awake["waso_min"]) and math.isnan(awake["n_awakenings"])  # no sleep period: undefined
    assert math.isnan(awake["sol_min"]) and math.isnan(awake["rem_latency_min"]) and math.isnan(awake["n2_pct"])
    no_rem = sleep_statistics([W, N1, N2, N3, N2, W])
    assert math.isnan(no_rem["rem_latency_min"]) and no_rem["sol_min"] == 0.5 and no_rem["n_awakenings"] == 0


def test_estimated_ahi_and_severity():
    hypno = np.full(240, N2)
    hypno[:20] = W  # 220 sleep epochs = 1.833 h
    apnea = np.zeros(240, dtype=int)
    hypopnea = np.zeros(240, dtype=int)
    apnea[[30, 60, 90]] = 1
    apnea[5] = 1  # during wake: not counted
    hypopnea[100:104] = 1  # 4 epochs = 2 events
    s = epoch_run_ahi(hypno != W, apnea, hypopnea)
    assert s["n_apnea_events"] == 3 and s["n_hypopnea_events"] == 2
    assert s["ahi_est"] == pytest.approx(5 / (220 * 30 / 3600))  # 2.73 events/h
    assert s["ahi_severity"] == 0 and s["ahi_severity_name"] == "normal"
    no_sleep = epoch_run_ahi(np.zeros(10, dtype=bool), np.ones(10), np.zeros(10))
    assert math.isnan(no_sleep["ahi_est"]) and no_sleep["ahi_severity"] == -1
    with pytest.raises(ValueError, match="hypopnea_epochs shape"):
        epoch_run_ahi(hypno != W, apnea, hypopnea[:-1])
    assert not any(key.startswith(("ahi", "n_apnea", "n_hypopnea")) for key in sleep_statistics(hypno))


def test_bad_codes_are_named():
    with pytest.raises(ValueError, match=r"stages: values must lie in \[-1, 4\].* found \[6, 9\]"):
        sleep_statistics([0, 1, 6, 9])
    with pytest.raises(ValueError, match="1-D"):
        sleep_statistics(np.zeros((2, 3), dtype=int))
