"""Electrophysiology of the synthetic nights (docs/data.md §2.5): EEG (C4, C3), EOG (L, R), chin EMG and ECG.

EEG is Gaussian noise whose spectrum (1/f and 1/f² background, delta, theta, alpha, sigma, beta and muscle
components) changes every 15 s with the physiological stage, plus spindles, K-complexes, vertex waves, sawtooth
waves, arousal bursts, movement artefacts and electrode pops; EOG adds eye movements and blinks to frontal EEG
leakage; EMG is band-limited tone with REM twitches and bursts; ECG places P-QRS-T beats at given beat times.
`dataset.synthetic_physiology.simulate_night` calls these with the night's stages, latents and events.
"""

from __future__ import annotations

import numpy as np
import scipy.fft as sfft
from scipy.ndimage import gaussian_filter1d
from scipy.signal import resample_poly, sawtooth

from dataset.constants import EPOCH_S
from dataset.synthetic_primitives import N1, N2, N3, REM, W, add_waves, ar1, poisson_times, slow_noise

SEG_S = 30  # spectral segment length (s); segments are centred every 15 s
EEG_COMPONENTS = ("pink", "brown", "delta", "theta", "alpha", "sigma", "beta", "muscle")
# RMS (µV) of each EEG component per physiological stage (rows W, N1, N2, N3, REM) before subject scaling.
# Wake alpha/beta/muscle, N1 alpha and NREM delta are set from latent variables in `_eeg_rms`.
EEG_RMS = np.array(
    [
        [5.0, 4.0, 4.0, 4.0, 0.0, 1.5, 0.0, 0.0],
        [5.0, 6.0, 7.0, 9.0, 0.0, 2.0, 2.5, 0.0],
        [5.5, 8.0, 0.0, 7.0, 2.0, 3.0, 2.0, 0.0],
        [5.0, 11.0, 0.0, 6.5, 1.5, 2.0, 1.5, 0.0],
        [5.0, 6.0, 6.5, 9.0, 3.0, 1.5, 3.0, 0.0],
    ]
)
EMG_RMS = np.array([0.0, 5.0, 4.0, 3.8, 2.2])  # chin EMG tone per stage (wake from relaxation)


def _segments(per_epoch: np.ndarray) -> np.ndarray:
    """Per-epoch values (n, ...) -> values of the 2n+1 segments centred every 15 s (borders average neighbours)."""
    n = len(per_epoch)
    out = np.empty((2 * n + 1, *per_epoch.shape[1:]), dtype=np.float64)
    out[1::2] = per_epoch
    padded = np.concatenate([per_epoch[:1], per_epoch, per_epoch[-1:]])
    out[0::2] = 0.5 * (padded[:-1] + padded[1:])
    return out


def spectral_noise(
    rng: np.random.Generator, seg_var: np.ndarray, shapes: np.ndarray, fs: int, n_epochs: int
) -> np.ndarray:
    """Gaussian noise (n_epochs * 30 * fs,) whose spectrum changes every 15 s.

    `seg_var` (2n+1, n_comp): variance (unit²) of each component in each 30-s segment (centred every 15 s);
    `shapes` (n_comp, n_freq): PSD shapes over `scipy.fft.rfftfreq(30 * fs)` bins, each summing to 1.
    Segments are sine-windowed and overlap-added (sin² + cos² = 1 keeps the variance).
    """
    length, hop = SEG_S * fs, SEG_S * fs // 2
    psd = (seg_var @ shapes).astype(np.float32)  # (n_seg, n_freq)
    z = rng.standard_normal((len(seg_var), shapes.shape[1], 2), dtype=np.float32)
    spectrum = (z[..., 0] + 1j * z[..., 1]) * (length * np.sqrt(psd / 2))
    segs = sfft.irfft(spectrum, n=length, axis=1) * np.sin(np.pi * (np.arange(length) + 0.5) / length).astype(
        np.float32
    )
    blocks = np.zeros((len(seg_var) + 1, hop), dtype=np.float32)
    blocks[:-1] += segs[:, :hop]
    blocks[1:] += segs[:, hop:]
    return blocks[1:].ravel()[: n_epochs * EPOCH_S * fs].astype(np.float64)


def _shapes(fs: int, centres: dict) -> np.ndarray:
    """Normalised PSD shapes (n_comp, n_freq) of EEG_COMPONENTS (plus "emg") at rate fs; `centres` sets alpha Hz."""
    f = sfft.rfftfreq(SEG_S * fs, 1 / fs)
    hp = (f >= 0.3).astype(float)
    fc = np.maximum(f, 0.3)

    def peak(mu, sd):
        return np.exp(-0.5 * ((f - mu) / sd) ** 2) * hp

    table = {
        "pink": hp / fc,
        "brown": hp / fc**2,
        "delta": peak(1.0, 0.45),
        "theta": peak(6.0, 1.0),
        "alpha": peak(centres["alpha"], 0.6),
        "sigma": peak(13.0, 0.7),
        "beta": peak(21.0, 5.0),
        "muscle": f**2 / (f**2 + 25.0**2) * hp,
        "emg": f**4 / (f**4 + 20.0**4) * hp,
    }
    rows = np.array([table[name] for name in (*EEG_COMPONENTS, "emg")])
    return rows / rows.sum(axis=1, keepdims=True)


def _eeg_rms(subj, phys, relax, depth, emg_rms, rng) -> np.ndarray:
    """RMS (µV) of each EEG component per epoch (n, n_comp)."""
    rms = EEG_RMS[phys].copy()
    wake, n1 = phys == W, phys == N1
    rms[wake, 4] = 14.0 * relax[wake]
    rms[wake, 6] = 2.0 + 4.0 * (1 - relax[wake])
    rms[n1, 4] = 14.0 * subj["n1_alpha"] * (0.5 + relax[n1])
    rms[phys == N2, 2] = 8.0 + 16.0 * depth[phys == N2]
    rms[phys == N3, 2] = 25.0 + 25.0 * depth[phys == N3]
    rms[:, 4] *= subj["alpha"]
    rms[:, 2] *= subj["delta"]
    rms[:, 7] = 0.25 * emg_rms
    return rms * subj["eeg_scale"] * np.exp(np.stack([ar1(rng, len(phys), 0.6, 0.3) for _ in EEG_COMPONENTS], 1))


def eeg_signals(rng, subj, phys, relax, depth, emg_rms, arousals, moves, fs, n_epochs):
    """C4-A1 and C3-A2 (µV) at fs: spectral background + graphoelements + arousals and artefacts."""
    shapes = _shapes(fs, {"alpha": subj["alpha_hz"]})[: len(EEG_COMPONENTS)]
    seg_var = _segments(_eeg_rms(subj, phys, relax, depth, emg_rms, rng) ** 2)
    field_1 = spectral_noise(rng, seg_var, shapes, fs, n_epochs)
    field_2 = spectral_noise(rng, seg_var, shapes, fs, n_epochs)
    c4, c3 = field_1.copy(), 0.8 * field_1 + 0.6 * field_2
    scale = subj["eeg_scale"]
    waves = []  # (onsets, (n, L) waves) shared by both channels with per-channel gains
    t = np.arange(int(2.0 * fs)) / fs
    on = poisson_times(
        rng, subj["spindle_rate"] * np.select([phys == N2, phys == N3, phys == N1], [1.0, 0.4, 0.1], 0.0)
    )
    d = rng.uniform(0.5, 2.0, (len(on), 1))
    f = subj["spindle_hz"] + rng.normal(0, 0.3, (len(on), 1))
    amp = subj["spindle_uv"] * scale * rng.lognormal(0, 0.25, (len(on), 1))
    waves.append(
        (
            on,
            amp
            * np.sin(2 * np.pi * f * t + rng.uniform(0, 6.3, (len(on), 1)))
            * np.where(t < d, np.sin(np.pi * t / d) ** 2, 0),
        )
    )
    t = np.arange(int(1.4 * fs)) / fs
    on = poisson_times(rng, subj["kc_rate"] * np.select([phys == N2, phys == N3], [1.0, 0.3], 0.0))
    on = np.concatenate([on, arousals[0][rng.random(len(arousals[0])) < 0.4] - 1.0])
    amp = rng.uniform(70, 140, (len(on), 1)) * scale
    waves.append((on, amp * (-np.exp(-0.5 * ((t - 0.3) / 0.09) ** 2) + 0.55 * np.exp(-0.5 * ((t - 0.65) / 0.15) ** 2))))
    on = poisson_times(rng, 3.0 * (phys == N1))
    amp = rng.uniform(30, 70, (len(on), 1)) * scale
    waves.append((on, amp * (-np.exp(-0.5 * ((t - 0.15) / 0.05) ** 2) + 0.35 * np.exp(-0.5 * ((t - 0.3) / 0.07) ** 2))))
    t = np.arange(int(3.0 * fs)) / fs
    on = poisson_times(rng, 1.5 * (phys == REM))
    f = rng.uniform(2.5, 4.0, (len(on), 1))
    d = rng.integers(3, 9, (len(on), 1)) / f
    amp = rng.uniform(15, 35, (len(on), 1)) * scale
    waves.append((on, amp * sawtooth(2 * np.pi * f * t, 0.2) * np.where(t < d, np.sin(np.pi * t / d) ** 2, 0)))
    on, d = arousals  # alpha/beta bursts, 3-15 s
    if len(on):
        t = np.arange(int(d.max() * fs) + 1) / fs
        env = np.clip(np.minimum(t / 0.5, (d[:, None] - t) / 0.5), 0, 1)
        osc = sum(
            rng.uniform(4, 8, (len(on), 1))
            * np.sin(2 * np.pi * rng.uniform(lo, hi, (len(on), 1)) * t + rng.uniform(0, 6.3, (len(on), 1)))
            for lo, hi in ((8.5, 11.5), (8.5, 11.5), (9, 11), (16, 24), (20, 28))
        )
        waves.append((on, scale * env * osc))
    for onsets, wave in waves:
        add_waves(c4, fs, onsets, wave * rng.uniform(0.85, 1.15, (len(onsets), 1)))
        add_waves(c3, fs, onsets, wave * rng.uniform(0.75, 1.05, (len(onsets), 1)))
    for x in (c4, c3):
        _artefacts(rng, x, fs, moves, 120.0 * scale)
        x += subj["noise_uv"] * rng.standard_normal(x.size)
    return c4, c3


def _artefacts(rng, x, fs, moves, amp_uv, pops=True):
    """Movement bursts (slow swings + muscle noise) and, optionally, electrode pops, added in place."""
    starts, durations = moves
    if len(starts):
        t = np.arange(int(durations.max() * fs) + 1) / fs
        env = np.clip(np.minimum(t / 0.3, (durations[:, None] - t) / 0.3), 0, 1)
        slow = np.cumsum(rng.standard_normal((len(starts), t.size)), axis=1)
        slow = gaussian_filter1d(slow - slow.mean(axis=1, keepdims=True), 0.1 * fs, axis=1)
        slow /= np.abs(slow).max(axis=1, keepdims=True) + 1e-9
        fast = rng.standard_normal((len(starts), t.size)) * 0.3
        add_waves(x, fs, starts, amp_uv * env * (slow + fast))
    if pops:
        on = rng.uniform(0, x.size / fs, rng.poisson(1.5))
        t = np.arange(int(2 * fs)) / fs
        add_waves(
            x,
            fs,
            on,
            rng.uniform(100, 300, (len(on), 1))
            * rng.choice([-1, 1], (len(on), 1))
            * np.exp(-t / rng.uniform(0.2, 0.8, (len(on), 1))),
        )


def eog_signals(rng, subj, phys, relax, phasic, c4, moves, fs, eeg_fs, n_epochs):
    """EOG(L) and EOG(R) (µV) at fs: frontal EEG leakage + eye movements (opposite sign) + blinks (same sign)."""
    up, down = (2, 5) if (eeg_fs, fs) == (125, 50) else (fs, eeg_fs)
    leak = resample_poly(c4, up, down)[: n_epochs * EPOCH_S * fs]
    left, right = 0.5 * leak, 0.42 * leak
    scale = subj["eog_scale"]
    wake = (phys == W).astype(float)
    moves_lr = np.zeros(left.size)  # horizontal component: +left, -right
    blinks = np.zeros(left.size)
    t = np.arange(int(0.5 * fs)) / fs
    on = poisson_times(rng, 12.0 * wake * (1 - 0.7 * relax))
    d = rng.uniform(0.25, 0.4, (len(on), 1))
    add_waves(
        blinks, fs, on, rng.uniform(80, 200, (len(on), 1)) * np.where(t < d, 0.5 - 0.5 * np.cos(2 * np.pi * t / d), 0)
    )
    t = np.arange(int(3.0 * fs)) / fs
    on = poisson_times(rng, 20.0 * wake * (1 - relax))
    rem_bursts = poisson_times(rng, 3.0 * (phys == REM) * (0.2 + phasic))
    n_per = rng.integers(2, 8, len(rem_bursts))
    rem_on = np.repeat(rem_bursts, n_per) + rng.uniform(0, 3.0, n_per.sum())
    on = np.concatenate([on, rem_on])
    tau = np.concatenate([rng.uniform(0.5, 2.0, len(on) - len(rem_on)), rng.uniform(0.2, 0.6, len(rem_on))])[:, None]
    amp = rng.uniform(40, 180, (len(on), 1)) * rng.choice([-1, 1], (len(on), 1))
    add_waves(moves_lr, fs, on, amp * (1 - np.exp(-t / 0.03)) * np.exp(-t / tau))
    t = np.arange(int(8.0 * fs)) / fs
    on = poisson_times(rng, np.select([phys == N1, phys == W, phys == N2], [2.5, 0.8 * relax, 0.15], 0.0))
    d = rng.uniform(2, 7, (len(on), 1))
    amp = rng.uniform(40, 100, (len(on), 1)) * rng.choice([-1, 1], (len(on), 1))
    add_waves(moves_lr, fs, on, amp * np.where(t < d, np.sin(2 * np.pi * t / d) * np.sin(np.pi * t / d), 0))
    left += scale * (moves_lr + blinks)
    right += scale * (-0.9 * moves_lr + 0.9 * blinks)
    for x in (left, right):
        _artefacts(rng, x, fs, moves, 150.0, pops=False)
        x += subj["noise_uv"] * 1.5 * rng.standard_normal(x.size)
    return left, right


def emg_signal(rng, subj, phys, phasic, emg_rms, arousals, moves, fs, n_epochs):
    """Chin EMG (µV) at fs: band-limited tone per epoch + REM twitches + arousal and movement bursts."""
    shapes = _shapes(fs, {"alpha": 10.0})[-1:]
    emg = spectral_noise(rng, _segments((emg_rms**2)[:, None]), shapes, fs, n_epochs)
    scale = subj["emg_scale"]
    on = poisson_times(rng, 5.0 * (phys == REM) * (0.3 + phasic))
    t = np.arange(int(0.25 * fs)) / fs
    d = rng.uniform(0.05, 0.25, (len(on), 1))
    add_waves(emg, fs, on, rng.uniform(5, 15, (len(on), 1)) * scale * rng.standard_normal((len(on), t.size)) * (t < d))
    on, d = arousals
    if len(on):
        t = np.arange(int(d.max() * fs) + 1) / fs
        env = np.clip(np.minimum(t / 0.5, (d[:, None] - t) / 0.5), 0, 1)
        add_waves(emg, fs, on, rng.uniform(6, 18, (len(on), 1)) * scale * env * rng.standard_normal((len(on), t.size)))
    starts, durations = moves
    if len(starts):
        t = np.arange(int(durations.max() * fs) + 1) / fs
        env = np.clip(np.minimum(t / 0.3, (durations[:, None] - t) / 0.3), 0, 1)
        add_waves(emg, fs, starts, 40 * scale * env * rng.standard_normal((len(starts), t.size)))
    return emg + subj["noise_uv"] * rng.standard_normal(emg.size)


# P, Q, R, S waves: (centre s relative to R, amplitude relative to R, width s); the T wave moves with sqrt(RR).
PQRS_TEMPLATE = ((-0.2, 0.12, 0.025), (-0.035, -0.1, 0.01), (0.0, 1.0, 0.012), (0.035, -0.25, 0.012))
T_WAVE = (0.26, 0.28, 0.045)
_GRID = np.arange(-0.35, 0.35, 0.0005)
_PQRS = sum(a * np.exp(-0.5 * ((_GRID - c) / w) ** 2) for c, a, w in PQRS_TEMPLATE)


def ecg_signal(rng, subj, beats, phase, fs, total_s, emg_rms):
    """ECG (mV) at fs from beat times: P-QRS-T template, respiratory amplitude modulation, wander, muscle noise."""
    n = total_s * fs
    rr = np.clip(np.diff(beats, prepend=beats[0] - 1.0), 0.4, 1.5)
    t10 = np.arange(phase.size) / 10
    amp = subj["ecg_mv"] * (1 + 0.08 * np.sin(np.interp(beats, t10, phase)))
    pre, width = int(0.3 * fs), int(0.75 * fs)
    idx = np.floor(beats * fs).astype(np.int64)[:, None] - pre + np.arange(width)
    dt = idx / fs - beats[:, None]  # (n_beats, width) s from each R peak
    centre, rel, w = T_WAVE
    wave = np.interp(dt, _GRID, _PQRS) + rel * np.exp(-0.5 * ((dt - centre * np.sqrt(rr)[:, None]) / w) ** 2)
    ok = (idx >= 0) & (idx < n)
    ecg = np.bincount(idx[ok], weights=(wave * amp[:, None])[ok], minlength=n)
    t = np.arange(n) / fs
    ecg += 0.05 * np.sin(np.interp(t, t10, phase)) + 0.05 * np.interp(t, t10, slow_noise(rng, phase.size, 200))
    noise = 0.01 + 0.002 * np.repeat(emg_rms, EPOCH_S * fs) if emg_rms is not None else 0.01
    return ecg + noise * rng.standard_normal(n)
