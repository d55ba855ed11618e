"""Building blocks of the synthetic signal models: stage codes, smoothed and AR(1) noise, Poisson event times
and adding event waveforms into a signal. Shared by `dataset.synthetic_physiology` (the night),
`dataset.synthetic_ephys` (EEG, EOG, EMG, ECG) and `dataset.synthetic_respiration` (breathing, heart rate, SpO2).
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter1d
from scipy.signal import lfilter

from dataset.constants import EPOCH_S

W, N1, N2, N3, REM = 0, 1, 2, 3, 4


def ar1(rng: np.random.Generator, n: int, rho: float, sd: float) -> np.ndarray:
    """Stationary AR(1) series (n,) with lag-1 correlation `rho` and standard deviation `sd`."""
    return lfilter([sd * np.sqrt(1 - rho**2)], [1.0, -rho], rng.standard_normal(n))


def smooth(x: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing with `sigma` samples; long kernels run on a decimated copy and are interpolated back."""
    step = max(int(sigma // 8), 1)
    if step == 1:
        return gaussian_filter1d(x, sigma)
    coarse = gaussian_filter1d(x[::step], sigma / step)
    return np.interp(np.arange(x.size), np.arange(coarse.size) * step, coarse)


def slow_noise(rng: np.random.Generator, n: int, sigma: float) -> np.ndarray:
    """Gaussian-smoothed white noise (n,) rescaled to unit standard deviation; `sigma` in samples."""
    step = max(int(sigma // 8), 1)
    x = smooth(np.repeat(rng.standard_normal(-(-n // step)), step)[:n], sigma)
    return x / (x.std() + 1e-12)


def add_waves(x: np.ndarray, fs: float, onsets_s: np.ndarray, waves: np.ndarray) -> None:
    """x[round(onset * fs) + j] += waves[i, j] for every event i (in place); waves (n_events, L) at fs."""
    if len(onsets_s) == 0:
        return
    idx = np.round(np.asarray(onsets_s) * fs).astype(np.int64)[:, None] + np.arange(waves.shape[1])
    ok = (idx >= 0) & (idx < x.size)
    x += np.bincount(idx[ok], weights=waves[ok], minlength=x.size)


def poisson_times(rng: np.random.Generator, rate_per_min: np.ndarray) -> np.ndarray:
    """Poisson event times (s) from a per-epoch rate (events per minute)."""
    counts = rng.poisson(np.maximum(rate_per_min, 0) * EPOCH_S / 60)
    starts = np.repeat(np.arange(len(counts)) * float(EPOCH_S), counts)
    return np.sort(starts + rng.uniform(0, EPOCH_S, len(starts)))
