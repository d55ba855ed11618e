"""Resampling from any native rate to the stored rates (`dataset.signal_processing.resample_stages`): the
ratio is exact, so no channel drifts against its labels, however high or odd its native rate."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from dataset.resampling import PRIME_LIMIT, STAGE_FACTOR_LIMIT, resample_stages
from tests.parser_nights import SHHS1, make_night, parse, read_table, unscaled

NIGHT_S = 8 * 3600.0


@pytest.mark.parametrize(
    "native, target",
    [
        (Fraction(125), 100),
        (Fraction(128), 100),
        (Fraction(1), 10),
        (Fraction(2000, 9), 100),  # 200 samples per 0.9-s record
        (Fraction(2048), 10),
        (Fraction(4096), 100),
        (Fraction(16384), 10),
        (Fraction(3072), 10),
        (Fraction(2001, 2), 100),
        (Fraction(1009), 100),  # a prime above the stage limit
        (Fraction(7, 1013 * 1019), 10),
    ],
)
def test_stages_multiply_to_the_exact_ratio_and_never_undershoot_the_target(native, target):
    stages = resample_stages(native, target, NIGHT_S)
    assert isinstance(stages, list) and stages
    rate = native
    for k, (up, down) in enumerate(stages):
        assert math.gcd(up, down) == 1 or (up, down) == (1, 1)
        for factor in (up, down):
            assert factor <= STAGE_FACTOR_LIMIT or all(factor % p for p in range(2, math.isqrt(factor) + 1))
        rate = rate * up / down
        if k < len(stages) - 1:
            assert rate >= min(native, target)  # no band is lost before the last stage
    assert rate == target


def test_equal_rates_need_no_stage_and_unstageable_rates_are_approximated_or_refused():
    assert resample_stages(Fraction(100), 100, NIGHT_S) == []
    # a record of 0.999983 s: prime factors far above the limit; the nearest stageable ratio drifts < 1/2 sample
    native = Fraction(256) / Fraction("0.999983")
    stages = resample_stages(native, 100, NIGHT_S)
    assert isinstance(stages, list)
    rate = native * math.prod((Fraction(u, d) for u, d in stages), start=Fraction(1))
    assert rate != 100 and NIGHT_S * abs(float(rate / 100) - 1) < 0.5 / 100
    reason = resample_stages(Fraction(2**31 - 1), 100, NIGHT_S)  # a prime rate, no near ratio that stages
    assert isinstance(reason, str) and "2147483647" in reason and PRIME_LIMIT < 2**31 - 1


def test_high_native_rates_keep_the_signal_on_its_time_axis(tmp_path):
    """Airflow at 16,384 Hz and thoracic effort at 3,072 Hz (10 Hz stored), EEG at 4,096 Hz (100 Hz): each
    stored signal is its tone at the stored sample times to the last epoch. With the ratio rounded to
    denominators <= 1000 the airflow was stretched 1.64x and the 3,072-Hz channel made the night fail."""
    rates = {"airflow": 16384, "thor": 3072, "eeg_c4": 4096}
    make_night(tmp_path / "src", "hi-rate", overrides={k: {"rate": r} for k, r in rates.items()})
    manifest = parse(tmp_path / "src", tmp_path / "dst")
    row = manifest.iloc[0]
    assert row["status"] == "ok", row["reason"]
    frame = read_table(tmp_path / "dst", "hi-rate")
    for name, fs in (("airflow", 10), ("thor", 10), ("eeg_c4", 100)):
        stored = unscaled(frame, row, name).reshape(-1).astype(np.float64)
        _, _, _, _, tone, amplitude = SHHS1[name]
        expected = amplitude * np.sin(2 * np.pi * tone * np.arange(stored.size) / fs + 0.3)
        inner = slice(30 * fs, stored.size - 30 * fs)  # away from the night's two ends
        assert np.corrcoef(stored[inner], expected[inner])[0, 1] > 0.999, name
        last_epoch = slice(stored.size - 60 * fs, stored.size - 30 * fs)
        assert np.max(np.abs(stored[last_epoch] - expected[last_epoch])) < 0.05 * amplitude, name
