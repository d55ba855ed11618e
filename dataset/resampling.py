"""Resampling and filtering of one EDF signal (docs/data.md §2.2, dataset/README.md "Processing"): polyphase
stages whose product is the exact rate ratio (`resample_stages`, `resample`), sample-and-hold for readings such
as SpO2 (`hold`), and the Butterworth band-passes (`bandpass_sos`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from fractions import Fraction

import numpy as np
import scipy.signal as sps

STAGE_FACTOR_LIMIT = 1000  # up and down of one polyphase stage at most (its filter has 20 x max(up, down) taps)
PRIME_LIMIT = 2**15  # a prime factor of up or down above this (e.g. a record of 0.999983 s) is not resampled exactly


def _factor(n: int) -> list[int] | None:
    """Prime factors of `n`, largest first, or None when one exceeds PRIME_LIMIT."""
    factors, d = [], 2
    while n > 1 and d <= PRIME_LIMIT:
        while n % d == 0:
            factors.append(d)
            n //= d
        d += 1 if d == 2 else 2
    return None if n > 1 else sorted(factors, reverse=True)


def _greedy(factors: list[int], fits: Callable[[int], bool]) -> int:
    """Product of the largest `factors` taken while `fits(product)` holds; the taken ones are removed."""
    product = 1
    for f in list(factors):
        if fits(product * f):
            product *= f
            factors.remove(f)
    return product


def _stages(ratio: Fraction) -> list[tuple[int, int]] | None:
    """Stages whose product is exactly `ratio` (see `resample_stages`); None if a prime factor is too large."""
    if ratio.numerator <= STAGE_FACTOR_LIMIT and ratio.denominator <= STAGE_FACTOR_LIMIT:
        return [(ratio.numerator, ratio.denominator)]
    ups, downs = _factor(ratio.numerator), _factor(ratio.denominator)
    if ups is None or downs is None:
        return None
    stages, up_left, down_left = [], ratio.numerator, ratio.denominator
    while up_left > 1 or down_left > 1:  # each stage takes at least the largest factor left: it ends
        up_cap = max(STAGE_FACTOR_LIMIT, ups[0] if ups else 1)  # a prime above the limit is a stage's alone
        up = _greedy(ups, lambda u: u <= up_cap)
        up_left //= up
        # the rate after the stage stays >= the target: up_left / (down_left / down) <= 1
        down_cap = max(STAGE_FACTOR_LIMIT, downs[0] if downs else 1)
        down = _greedy(downs, lambda d: d <= down_cap and up_left * d <= down_left)
        down_left //= down
        stages.append((up, down))
    return stages


def resample_stages(native_rate: Fraction, target_fs: int, duration_s: float) -> list[tuple[int, int]] | str:
    """Polyphase stages [(up, down), ...] taking `native_rate` to `target_fs`, whose product is the exact ratio;
    [] when the rates are equal. One stage when up and down are both <= STAGE_FACTOR_LIMIT (125 -> 100 Hz is
    (4, 5)); otherwise the ratio's prime factors are grouped into stages of factors <= STAGE_FACTOR_LIMIT that
    never take the rate below the target before the last (2048 -> 10 Hz: (5, 512), then (1, 2)), so a high
    native rate costs a few short filters rather than one very long one, and no sample drifts. A ratio with a
    prime factor above PRIME_LIMIT is approximated by the nearest fraction that can be staged, if it drifts by
    less than half an output sample over `duration_s`; otherwise the reason (a string) is returned."""
    ratio = Fraction(target_fs) / native_rate
    if ratio == 1:
        return []
    stages = _stages(ratio)
    if stages is not None:
        return stages
    for limit in (10**3, 10**4, 10**5, 10**6):
        near = ratio.limit_denominator(limit)
        if near > 0 and duration_s * abs(float(near / ratio) - 1.0) < 0.5 / target_fs:
            stages = _stages(near)
            if stages is not None:
                return stages
    return f"native rate {float(native_rate):.12g} Hz cannot be resampled to {target_fs} Hz without drift"


def resample(x: np.ndarray, stages: list[tuple[int, int]], padtype: str) -> np.ndarray:
    """`x` through every polyphase stage of `resample_stages` (`scipy.signal.resample_poly`)."""
    for up, down in stages:
        x = sps.resample_poly(x, up, down, padtype=padtype)
    return x


HELD_CHANNELS = ("spo2",)  # readings, not waveforms: resampled by `hold`, whose values are all recorded ones


def hold(x: np.ndarray, ratio: Fraction) -> np.ndarray:
    """`x` at `ratio` x its rate by sample-and-hold: output sample k (time k / new rate) is the latest input sample
    at or before it, so no value is invented (a filter would ring at every step of a whole-percent SpO2 and blend
    a 0 % dropout into real readings); 1 -> 10 Hz repeats each reading 10 times. Same length as `resample`."""
    n_out = math.ceil(x.size * ratio)
    return x[np.arange(n_out, dtype=np.int64) * ratio.denominator // ratio.numerator]


def bandpass_sos(band: tuple[float, float], fs: float, order: int) -> np.ndarray:
    """Butterworth second-order sections; a high edge at or above 0.99 x Nyquist makes it a high-pass."""
    low, high = band
    if high >= 0.99 * fs / 2:
        return sps.butter(order, low, btype="highpass", fs=fs, output="sos")
    return sps.butter(order, (low, high), btype="bandpass", fs=fs, output="sos")
