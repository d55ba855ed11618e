"""Physiology of the synthetic PSG nights (docs/data.md §2.5): hypnogram, scored events and every signal.

`simulate_night` returns signals in physical units at their native rates (EEG/EOG/EMG µV, ECG mV, SpO2 %,
airflow/effort arbitrary units within ±1) plus the truth; `dataset/synthetic.py` writes them as EDF + XML.

Model, in short (times in s, amplitudes in µV unless stated):
- Hypnogram: sleep-onset latency, ~90-min cycles (N1 -> N2 -> N3 -> N2 -> REM), N3 early and REM longer later,
  brief awakenings followed by N1, N2 islands in N3, a final awakening. The signals follow a "physiological"
  stage that differs from the scored one at some stage borders (scorer disagreement), and 30-s segments
  overlapping by 15 s blend neighbouring epochs.
- EEG (C4; C3 = correlated mix with an independent field): Gaussian noise whose spectrum (1/f and 1/f²
  background, delta, theta, alpha, sigma, beta and muscle components) changes every 15 s with the stage and
  slow latent drifts (wake relaxation, NREM depth), plus spindles, K-complexes, vertex waves, sawtooth waves,
  arousal bursts (alpha/beta), movement artefacts, electrode pops and line noise.
- EOG: frontal EEG leakage (same sign on both sides) plus blinks (same sign), saccades, slow rolling and rapid
  eye movements (opposite sign). EMG: band-limited noise with stage tone, REM atonia and twitches, arousal
  bursts. ECG: P-QRS-T beats at times from a heart rate with stage offsets, variability (higher in wake and
  REM), respiratory sinus arrhythmia, bradycardia during apneas and surges at arousals.
- Breathing: phase-integrated flow and effort; apneas (flow < 10 %; effort continues with paradox for
  obstructive, absent for central, both in turn for mixed), hypopneas (flow reduced 30-70 %), recovery breaths,
  SpO2 drops lagging the events, desaturation events measured on the written SpO2.
"""

from __future__ import annotations

import numpy as np
import scipy.fft as sfft
from scipy.ndimage import gaussian_filter1d
from scipy.signal import lfilter, resample_poly, sawtooth

from dataset.constants import EPOCH_S

W, N1, N2, N3, REM = 0, 1, 2, 3, 4
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
HR_OFFSET = np.array([7.0, 3.0, 0.0, -3.0, 4.0])  # bpm relative to the subject's sleep heart rate
HRV_SD = np.array([4.5, 3.0, 2.0, 1.2, 4.5])  # bpm, slow (0.02-0.15 Hz) heart-rate variability
BREATH_VAR = np.array([0.12, 0.08, 0.05, 0.03, 0.15])  # relative breath-rate variability
EVENT_WEIGHT = np.array([0.0, 1.0, 1.0, 0.3, 1.0])  # where respiratory events happen (REM from the subject)
AROUSAL_WEIGHT = np.array([0.0, 1.2, 1.0, 0.3, 0.7])


def subject_params(rng: np.random.Generator) -> dict:
    """Per-subject physiology: severity (AHI per hour of sleep), amplitudes (µV), rates, artefacts."""
    severity = rng.choice(4, p=[0.3, 0.3, 0.25, 0.15])
    low, high = ((0.0, 5.0), (5.0, 15.0), (15.0, 30.0), (30.0, 65.0))[severity]
    return {
        "ahi": rng.uniform(low, high),
        "apnea_fraction": rng.uniform(0.25, 0.6),
        "central_fraction": rng.uniform(0.05, 0.35),
        "mixed_fraction": rng.uniform(0.0, 0.15),
        "rem_event_weight": rng.uniform(1.0, 2.5),
        "desat_gain": rng.lognormal(0.0, 0.3),
        "spont_arousal_rate": rng.uniform(4.0, 14.0),
        "resp_arousal_p": rng.uniform(0.7, 0.95),
        "eeg_scale": rng.lognormal(0.0, 0.2),
        "alpha": rng.lognormal(0.0, 0.35) * (0.3 if rng.random() < 0.15 else 1.0),
        "alpha_hz": rng.uniform(8.8, 11.0),
        "n1_alpha": rng.uniform(0.15, 0.55),
        "delta": rng.lognormal(0.0, 0.2),
        "spindle_rate": rng.uniform(2.0, 7.0),
        "spindle_uv": rng.uniform(15.0, 35.0),
        "spindle_hz": rng.uniform(12.0, 14.0),
        "kc_rate": rng.uniform(0.5, 2.0),
        "emg_scale": rng.lognormal(0.0, 0.35),
        "eog_scale": rng.lognormal(0.0, 0.2),
        "ecg_mv": rng.uniform(0.6, 1.6) * (-1.0 if rng.random() < 0.08 else 1.0),
        "hr_bpm": rng.uniform(55.0, 75.0),
        "rsa_bpm": rng.uniform(1.0, 4.0),
        "breath_hz": rng.uniform(0.2, 0.3),
        "spo2": rng.uniform(94.0, 98.0),
        "noise_uv": rng.uniform(0.5, 2.5),
        "n3_amount": rng.uniform(0.5, 1.4),
        "fragmentation": rng.uniform(2.0, 6.0),
        "ecg_leak": rng.uniform(0.001, 0.006) if rng.random() < 0.5 else 0.0,
        "line_noise_uv": rng.uniform(2.0, 12.0) if rng.random() < 0.25 else 0.0,
    }


def _ar1(rng: np.random.Generator, n: int, rho: float, sd: float) -> np.ndarray:
    """Stationary AR(1) series (n,) with lag-1 correlation `rho` and standard deviation `sd`."""
    return lfilter([sd * np.sqrt(1 - rho**2)], [1.0, -rho], rng.standard_normal(n))


def smooth(x: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing with `sigma` samples; long kernels run on a decimated copy and are interpolated back."""
    step = max(int(sigma // 8), 1)
    if step == 1:
        return gaussian_filter1d(x, sigma)
    coarse = gaussian_filter1d(x[::step], sigma / step)
    return np.interp(np.arange(x.size), np.arange(coarse.size) * step, coarse)


def _slow_noise(rng: np.random.Generator, n: int, sigma: float) -> np.ndarray:
    """Gaussian-smoothed white noise (n,) rescaled to unit standard deviation; `sigma` in samples."""
    step = max(int(sigma // 8), 1)
    x = smooth(np.repeat(rng.standard_normal(-(-n // step)), step)[:n], sigma)
    return x / (x.std() + 1e-12)


def hypnogram(n: int, rng: np.random.Generator, subj: dict) -> np.ndarray:
    """Scored stage per 30-s epoch (n,) int8: 0 W, 1 N1, 2 N2, 3 N3, 4 REM."""
    seq = [W] * int(np.clip(rng.lognormal(np.log(30.0), 0.5), 4, 120))  # sleep-onset latency (~15 min)
    n3_min, rem_min = (34, 22, 10, 4, 0), (8, 14, 20, 24, 26)  # per cycle, minutes
    cycle = 0
    while len(seq) < n:
        c = min(cycle, 4)
        n1 = int(rng.integers(2, 7) if cycle == 0 else rng.integers(1, 4))
        n3 = int(round(2 * n3_min[c] * subj["n3_amount"] * rng.uniform(0.6, 1.4)))
        rem = int(round(2 * rem_min[c] * rng.uniform(0.7, 1.3)))
        n2 = max(int(round(2 * rng.normal(92, 10))) - n1 - n3 - rem, 12)
        split = int(n2 * rng.uniform(0.45, 0.7))
        seq += [N1] * n1 + [N2] * split + [N3] * n3 + [N2] * (n2 - split) + [REM] * rem
        if rng.random() < 0.5:
            seq += [W] * int(rng.integers(1, 4))
        cycle += 1
    stage = np.array(seq[:n], dtype=np.int8)
    islands = rng.random(n)
    stage[(stage == N3) & (islands < 0.08)] = N2
    stage[(stage == REM) & (islands < 0.04)] = N1
    stage[(stage == N2) & (islands > 0.97)] = N1
    sleep = np.flatnonzero(stage > 0)
    if len(sleep):
        weight = np.array([0.0, 1.0, 1.0, 0.3, 1.0])[stage[sleep]]
        count = min(rng.poisson(subj["fragmentation"] * len(sleep) / 120), len(sleep))
        for i in np.sort(rng.choice(sleep, size=count, replace=False, p=weight / weight.sum())):
            length = int(rng.integers(1, 7))
            after = i + length
            if after < n and stage[after] in (N2, N3):
                stage[after : after + int(rng.integers(1, 4))] = N1
            stage[i:after] = W
    if rng.random() < 0.6:
        stage[n - int(rng.integers(2, 30)) :] = W
    return stage


# Stages a scorer may confuse with each stage (rows W, N1, N2, N3, REM): where ambiguous epochs drift to.
NEIGHBOURS = ((N1,), (W, N2, REM), (N1, N3), (N2,), (N1,))


def _physiological_stage(
    stage: np.ndarray, rng: np.random.Generator, p_border: float = 0.5, p_ambiguous: float = 0.08
) -> np.ndarray:
    """The stage the signals follow (scorer disagreement): at a fraction `p_border` of stage borders one side
    takes the other side's stage, and a fraction `p_ambiguous` of epochs looks like a neighbouring stage."""
    phys = stage.copy()
    ambiguous = np.flatnonzero(rng.random(len(stage)) < p_ambiguous)
    phys[ambiguous] = [NEIGHBOURS[s][int(rng.integers(len(NEIGHBOURS[s])))] for s in stage[ambiguous]]
    border = np.flatnonzero(stage[1:] != stage[:-1])
    flip = rng.random(len(border)) < p_border
    left = rng.random(len(border)) < 0.5
    target = np.where(left, border, border + 1)[flip]
    source = np.where(left, border + 1, border)[flip]
    phys[target] = stage[source]
    return phys


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


def add_waves(x: np.ndarray, fs: float, onsets_s: np.ndarray, waves: np.ndarray) -> None:
    """x[round(onset * fs) + j] += waves[i, j] for every event i (in place); waves (n_events, L) at fs."""
    if len(onsets_s) == 0:
        return
    idx = np.round(np.asarray(onsets_s) * fs).astype(np.int64)[:, None] + np.arange(waves.shape[1])
    ok = (idx >= 0) & (idx < x.size)
    x += np.bincount(idx[ok], weights=waves[ok], minlength=x.size)


def _times(rng: np.random.Generator, rate_per_min: np.ndarray) -> np.ndarray:
    """Poisson event times (s) from a per-epoch rate (events per minute)."""
    counts = rng.poisson(np.maximum(rate_per_min, 0) * EPOCH_S / 60)
    starts = np.repeat(np.arange(len(counts)) * float(EPOCH_S), counts)
    return np.sort(starts + rng.uniform(0, EPOCH_S, len(starts)))


def _place(rng, n_events, weight, busy, duration_fn, margin_before=5.0, margin_after=20.0):
    """Place up to n_events intervals (start, duration) in epochs drawn by `weight`, inside epochs of non-zero
    weight and away from seconds already `busy` (bool per second, updated)."""
    placed = []
    if n_events <= 0 or weight.sum() <= 0:
        return placed
    candidates = rng.choice(len(weight), size=20 * n_events + 20, p=weight / weight.sum())
    for epoch in candidates:
        start = epoch * EPOCH_S + rng.uniform(0, EPOCH_S)
        duration = duration_fn(epoch)
        end = start + duration
        e0, e1 = int(start // EPOCH_S), int((end + 5) // EPOCH_S)
        s0, s1 = max(int(start - margin_before), 0), int(end + margin_after)
        if e1 >= len(weight) or np.any(weight[e0 : e1 + 1] == 0) or busy[s0:s1].any():
            continue
        busy[s0:s1] = True
        placed.append((start, duration))
        if len(placed) == n_events:
            break
    return placed


def scored_events(rng: np.random.Generator, subj: dict, stage: np.ndarray, blocked: np.ndarray) -> tuple[list, list]:
    """Respiratory events (dicts kind/start/duration, during sleep) and arousals (start, duration, cause)."""
    n = len(stage)
    busy = np.zeros(n * EPOCH_S + 200, dtype=bool)
    weight = EVENT_WEIGHT[stage] * ~blocked
    weight[stage == REM] *= subj["rem_event_weight"]
    sleep_h = np.sum(stage > 0) / 120
    events = []
    for start, duration in _place(
        rng,
        rng.poisson(subj["ahi"] * sleep_h),
        weight,
        busy,
        lambda e: min(10 + rng.gamma(2.0, 6.5) * (1.3 if stage[e] == REM else 1.0), 90),
    ):
        u = rng.random()
        if u < subj["apnea_fraction"]:
            v = rng.random()
            kind = (
                "central_apnea"
                if v < subj["central_fraction"]
                else "mixed_apnea"
                if v < subj["central_fraction"] + subj["mixed_fraction"]
                else "obstructive_apnea"
            )
        else:
            kind = "hypopnea"
        events.append({"kind": kind, "start": start, "duration": duration, "rem": stage[int(start // EPOCH_S)] == REM})
    arousals = []
    for ev in events:
        p = subj["resp_arousal_p"] if ev["kind"] != "hypopnea" else 0.4
        ev["arousal"] = rng.random() < p
        if ev["arousal"]:
            arousals.append(
                (ev["start"] + ev["duration"] - rng.uniform(0, 2), min(3 + rng.gamma(2.0, 2.5), 15.0), ev["kind"])
            )
    spont = AROUSAL_WEIGHT[stage] * ~blocked
    for start, duration in _place(
        rng,
        rng.poisson(subj["spont_arousal_rate"] * sleep_h),
        spont,
        busy,
        lambda e: min(3 + rng.gamma(2.0, 2.5), 15.0),
        2.0,
        10.0,
    ):
        arousals.append((start, duration, "spontaneous"))
    arousals.sort()
    return events, arousals


def _trapezoids(n: int, fs: float, starts, durations, heights, ramp_s: float) -> np.ndarray:
    """Sum of trapezoids (n,) at fs: 0 -> height over `ramp_s`, held, back to 0 at start + duration."""
    out = np.zeros(n)
    if len(starts) == 0:
        return out
    durations = np.asarray(durations, dtype=float)
    t = np.arange(int(np.ceil(durations.max() * fs)) + 2) / fs
    d = durations[:, None]
    shape = np.clip(np.minimum(t / ramp_s, (d - t) / ramp_s), 0, 1) * np.asarray(heights, dtype=float)[:, None]
    add_waves(out, fs, np.asarray(starts), shape)
    return out


def _surge(n: int, fs: float, onsets, heights, peak_s: float = 5.0) -> np.ndarray:
    """Sum of (t/peak) * exp(1 - t/peak) bumps (n,) at fs: heart-rate surges peaking `peak_s` after onset."""
    out = np.zeros(n)
    t = np.arange(int(6 * peak_s * fs)) / fs
    if len(onsets):
        add_waves(out, fs, np.asarray(onsets), np.outer(heights, t / peak_s * np.exp(1 - t / peak_s)))
    return out


def simulate_night(
    rng: np.random.Generator,
    subj: dict,
    n_epochs: int,
    n_scored: int,
    signal_s: int,
    rates: dict[str, int],
    unscored_epochs: int = 0,
) -> dict:
    """One night of `n_epochs` simulated epochs; signals trimmed to `signal_s` seconds.

    `rates` maps the keys to write (canonical names, "thermistor", "hr", "position") to native rates (Hz).
    Returns {"stage" (n_epochs,) int8 scored stage, "deep" (n_epochs,) bool (N3 scored as stage 4),
    "movement" / "unscored" (n_scored,) bool, "signals" {key: physical values (signal_s * rate,)},
    "events" [dict kind/start/duration(/nadir/baseline)]}.
    """
    stage = hypnogram(n_epochs, rng, subj)
    phys = _physiological_stage(stage, rng)
    depth = np.clip(0.5 + _ar1(rng, n_epochs, 0.95, 0.3), 0, 1)  # NREM depth latent
    relax = 1 / (1 + np.exp(-(0.8 + _ar1(rng, n_epochs, 0.9, 1.5))))  # wake: eyes closed and relaxed
    phasic = np.clip(0.35 + _ar1(rng, n_epochs, 0.8, 0.4), 0, 1)  # REM: phasic activity
    movement, unscored = _unscored_marks(stage[:n_scored], unscored_epochs, rng)
    blocked = np.zeros(n_epochs, dtype=bool)
    blocked[:n_scored] = movement | unscored
    events, arousals = scored_events(rng, subj, stage, blocked)
    total_s = n_epochs * EPOCH_S

    # Movement artefacts: movement epochs and half of the wake onsets after sleep.
    wake_onsets = np.flatnonzero((stage[1:] == W) & (stage[:-1] > 0)) + 1
    wake_onsets = wake_onsets[rng.random(len(wake_onsets)) < 0.5]
    move_epochs = np.concatenate([wake_onsets, np.flatnonzero(movement)])
    move_dur = np.where(
        np.isin(move_epochs, np.flatnonzero(movement)),
        rng.uniform(10, 25, len(move_epochs)),
        rng.uniform(2, 8, len(move_epochs)),
    )
    move_start = move_epochs * EPOCH_S + rng.uniform(0, 1, len(move_epochs)) * (EPOCH_S - move_dur)
    moves = (move_start, move_dur)
    aro = (np.array([a[0] for a in arousals]), np.array([a[1] for a in arousals]))

    breath = _breathing(rng, subj, phys, events, total_s)
    heart = _heart_rate(rng, subj, phys, events, arousals, breath["phase"], total_s)
    eeg_fs = rates.get("eeg_c4", rates.get("eeg_c3", 125))
    emg_rms = EMG_RMS[phys].copy()
    emg_rms[phys == W] = 6.0 + 14.0 * (1 - relax[phys == W])
    emg_rms *= subj["emg_scale"] * np.exp(_ar1(rng, n_epochs, 0.7, 0.35)) * (1 - 0.25 * np.arange(n_epochs) / n_epochs)
    ecg_fs = rates.get("ecg", 125)
    signals = {"ecg": _ecg(rng, subj, heart["beats"], breath["phase"], ecg_fs, total_s, emg_rms)}
    leak_ecg = (
        _ecg(rng, subj, heart["beats"], breath["phase"], eeg_fs, total_s, None) if ecg_fs != eeg_fs else signals["ecg"]
    )
    c4, c3 = _eeg(rng, subj, phys, relax, depth, emg_rms, aro, moves, eeg_fs, n_epochs)
    eog_l, eog_r = _eog(rng, subj, phys, relax, phasic, c4, moves, rates.get("eog_l", 50), eeg_fs, n_epochs)
    emg = _emg(rng, subj, phys, phasic, emg_rms, aro, moves, eeg_fs, n_epochs)
    ecg_uv = leak_ecg * 1000 * subj["ecg_leak"]
    line = subj["line_noise_uv"] * np.sin(2 * np.pi * 60.0 * np.arange(c4.size) / eeg_fs + rng.uniform(0, 6.3))
    signals.update(
        eeg_c4=c4 + ecg_uv + line, eeg_c3=c3 + 0.8 * ecg_uv, eog_l=eog_l, eog_r=eog_r, emg=emg + 2 * ecg_uv + 0.5 * line
    )
    spo2, spo2_events = _spo2(rng, subj, events, total_s)
    signals.update(
        airflow=breath["nasal"],
        thermistor=breath["thermistor"],
        thor=breath["thor"],
        abdo=breath["abdo"],
        spo2=spo2,
        hr=np.round(heart["hr"][::10]),
        position=_position(rng, stage, total_s),
    )
    signals = {key: signals[key][: int(signal_s * rate)] for key, rate in rates.items()}
    out_events = [{"kind": e["kind"], "start": e["start"], "duration": e["duration"]} for e in events]
    out_events += [{"kind": "arousal", "start": s, "duration": d} for s, d, _ in arousals] + spo2_events
    deep = (stage == N3) & (depth > 0.6)
    return {
        "stage": stage,
        "deep": deep,
        "movement": movement,
        "unscored": unscored,
        "signals": signals,
        "events": [e for e in out_events if e["start"] < signal_s],
    }


def _unscored_marks(stage: np.ndarray, k: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """About k epochs: a third as single Movement epochs at wake/sleep borders, the rest as one Unscored block."""
    n = len(stage)
    movement, unscored = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    if k <= 0:
        return movement, unscored
    borders = np.flatnonzero((stage[1:] == W) != (stage[:-1] == W)) + 1
    picks = rng.choice(borders, size=min(k // 3, len(borders), n // 4), replace=False) if len(borders) else []
    movement[np.asarray(picks, dtype=int)] = True
    block = min(k - int(movement.sum()), n // 3)
    if block > 0:
        first = int(rng.integers(n // 3, max(n - block, n // 3 + 1)))
        unscored[first : first + block] = True
        movement[first : first + block] = False
    return movement, unscored


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
    return rms * subj["eeg_scale"] * np.exp(np.stack([_ar1(rng, len(phys), 0.6, 0.3) for _ in EEG_COMPONENTS], 1))


def _eeg(rng, subj, phys, relax, depth, emg_rms, arousals, moves, fs, n_epochs):
    """C4-A1 and C3-A2 (µV) at fs: spectral background + graphoelements + arousals and artefacts."""
    shapes = _shapes(fs, {"alpha": subj["alpha_hz"]})[: len(EEG_COMPONENTS)]
    seg_var = _segments(_eeg_rms(subj, phys, relax, depth, emg_rms, rng) ** 2)
    field_1 = spectral_noise(rng, seg_var, shapes, fs, n_epochs)
    field_2 = spectral_noise(rng, seg_var, shapes, fs, n_epochs)
    c4, c3 = field_1.copy(), 0.8 * field_1 + 0.6 * field_2
    scale = subj["eeg_scale"]
    waves = []  # (onsets, (n, L) waves) shared by both channels with per-channel gains
    t = np.arange(int(2.0 * fs)) / fs
    on = _times(rng, subj["spindle_rate"] * np.select([phys == N2, phys == N3, phys == N1], [1.0, 0.4, 0.1], 0.0))
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
    on = _times(rng, subj["kc_rate"] * np.select([phys == N2, phys == N3], [1.0, 0.3], 0.0))
    on = np.concatenate([on, arousals[0][rng.random(len(arousals[0])) < 0.4] - 1.0])
    amp = rng.uniform(70, 140, (len(on), 1)) * scale
    waves.append((on, amp * (-np.exp(-0.5 * ((t - 0.3) / 0.09) ** 2) + 0.55 * np.exp(-0.5 * ((t - 0.65) / 0.15) ** 2))))
    on = _times(rng, 3.0 * (phys == N1))
    amp = rng.uniform(30, 70, (len(on), 1)) * scale
    waves.append((on, amp * (-np.exp(-0.5 * ((t - 0.15) / 0.05) ** 2) + 0.35 * np.exp(-0.5 * ((t - 0.3) / 0.07) ** 2))))
    t = np.arange(int(3.0 * fs)) / fs
    on = _times(rng, 1.5 * (phys == REM))
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


def _eog(rng, subj, phys, relax, phasic, c4, moves, fs, eeg_fs, n_epochs):
    """EOG(L) and EOG(R) (µV) at fs: frontal EEG leakage + eye movements (opposite sign) + blinks (same sign)."""
    up, down = (2, 5) if (eeg_fs, fs) == (125, 50) else (fs, eeg_fs)
    leak = resample_poly(c4, up, down)[: n_epochs * EPOCH_S * fs]
    left, right = 0.5 * leak, 0.42 * leak
    scale = subj["eog_scale"]
    wake = (phys == W).astype(float)
    moves_lr = np.zeros(left.size)  # horizontal component: +left, -right
    blinks = np.zeros(left.size)
    t = np.arange(int(0.5 * fs)) / fs
    on = _times(rng, 12.0 * wake * (1 - 0.7 * relax))
    d = rng.uniform(0.25, 0.4, (len(on), 1))
    add_waves(
        blinks, fs, on, rng.uniform(80, 200, (len(on), 1)) * np.where(t < d, 0.5 - 0.5 * np.cos(2 * np.pi * t / d), 0)
    )
    t = np.arange(int(3.0 * fs)) / fs
    on = _times(rng, 20.0 * wake * (1 - relax))
    rem_bursts = _times(rng, 3.0 * (phys == REM) * (0.2 + phasic))
    n_per = rng.integers(2, 8, len(rem_bursts))
    rem_on = np.repeat(rem_bursts, n_per) + rng.uniform(0, 3.0, n_per.sum())
    on = np.concatenate([on, rem_on])
    tau = np.concatenate([rng.uniform(0.5, 2.0, len(on) - len(rem_on)), rng.uniform(0.2, 0.6, len(rem_on))])[:, None]
    amp = rng.uniform(40, 180, (len(on), 1)) * rng.choice([-1, 1], (len(on), 1))
    add_waves(moves_lr, fs, on, amp * (1 - np.exp(-t / 0.03)) * np.exp(-t / tau))
    t = np.arange(int(8.0 * fs)) / fs
    on = _times(rng, np.select([phys == N1, phys == W, phys == N2], [2.5, 0.8 * relax, 0.15], 0.0))
    d = rng.uniform(2, 7, (len(on), 1))
    amp = rng.uniform(40, 100, (len(on), 1)) * rng.choice([-1, 1], (len(on), 1))
    add_waves(moves_lr, fs, on, amp * np.where(t < d, np.sin(2 * np.pi * t / d) * np.sin(np.pi * t / d), 0))
    left += scale * (moves_lr + blinks)
    right += scale * (-0.9 * moves_lr + 0.9 * blinks)
    for x in (left, right):
        _artefacts(rng, x, fs, moves, 150.0, pops=False)
        x += subj["noise_uv"] * 1.5 * rng.standard_normal(x.size)
    return left, right


def _emg(rng, subj, phys, phasic, emg_rms, arousals, moves, fs, n_epochs):
    """Chin EMG (µV) at fs: band-limited tone per epoch + REM twitches + arousal and movement bursts."""
    shapes = _shapes(fs, {"alpha": 10.0})[-1:]
    emg = spectral_noise(rng, _segments((emg_rms**2)[:, None]), shapes, fs, n_epochs)
    scale = subj["emg_scale"]
    on = _times(rng, 5.0 * (phys == REM) * (0.3 + phasic))
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


def _breathing(rng, subj, phys, events, total_s, fs=10):
    """Breath phase (rad) and nasal pressure, thermistor, thoracic and abdominal effort at 10 Hz."""
    n = total_s * fs
    stage10 = np.repeat(phys, EPOCH_S * fs)
    rate = subj["breath_hz"] * (1 + smooth(BREATH_VAR[stage10], 50) * _slow_noise(rng, n, 40))
    phase = 2 * np.pi * np.cumsum(rate) / fs
    amp = np.exp(0.2 * _slow_noise(rng, n, 25))
    kinds = np.array([e["kind"] for e in events])
    start = np.array([e["start"] for e in events])
    dur = np.array([e["duration"] for e in events])
    apnea, hyp = kinds != "hypopnea", kinds == "hypopnea"
    flow_cut = np.where(apnea, rng.uniform(0.9, 0.98, len(events)), rng.uniform(0.3, 0.7, len(events)))
    flow = 1 - _trapezoids(n, fs, start, dur, flow_cut, 2.0)
    flow += _trapezoids(n, fs, start + dur, rng.uniform(8, 15, len(events)), rng.uniform(0.3, 0.8, len(events)), 2.0)
    central_part = np.select(
        [kinds == "central_apnea", kinds == "mixed_apnea"], [1.0, rng.uniform(0.3, 0.6, len(events))], 0.0
    )
    obstructive = ~hyp & (kinds != "central_apnea")
    effort = 1 - _trapezoids(n, fs, start, dur * central_part, np.full(len(events), 0.95), 1.5)
    effort -= _trapezoids(n, fs, start, dur, np.where(hyp, 0.15, 0.0), 2.0)
    o_start, o_dur = start + dur * central_part, dur * (1 - central_part)
    effort += _trapezoids(n, fs, o_start[obstructive], o_dur[obstructive], np.full(obstructive.sum(), 0.3), 3.0)
    paradox = _trapezoids(
        n, fs, o_start[obstructive], o_dur[obstructive], rng.uniform(1.5, 2.8, obstructive.sum()), 3.0
    )
    paradox += _trapezoids(n, fs, start[hyp], dur[hyp], rng.uniform(0.3, 1.0, hyp.sum()), 3.0)
    wave = np.sin(phase)
    nasal = 0.35 * amp * flow * np.sign(wave) * np.abs(wave) ** 0.7 + 0.01 * rng.standard_normal(n)
    thermistor = gaussian_filter1d(0.3 * amp * flow * np.sin(phase - 0.6), 3) + 0.01 * rng.standard_normal(n)
    drift = 0.05 * _slow_noise(rng, n, 300)
    thor = 0.4 * amp * effort * np.sin(phase - 0.3) + drift + 0.01 * rng.standard_normal(n)
    abdo = 0.35 * amp * effort * np.sin(phase - 0.3 + paradox) - drift + 0.01 * rng.standard_normal(n)
    return {"phase": phase, "nasal": nasal, "thermistor": thermistor, "thor": thor, "abdo": abdo}


def _heart_rate(rng, subj, phys, events, arousals, phase, total_s, fs=10):
    """Heart rate (bpm, 10 Hz) and beat times (s): stage offset, variability, RSA, apnea bradycardia, surges."""
    n = total_s * fs
    stage10 = np.repeat(phys, EPOCH_S * fs)
    hr = subj["hr_bpm"] + smooth(HR_OFFSET[stage10], 150)
    hr += smooth(HRV_SD[stage10], 150) * _slow_noise(rng, n, 25)
    hr += subj["rsa_bpm"] * np.where(stage10 == W, 0.6, 1.0) * np.sin(phase)
    kinds = np.array([e["kind"] for e in events])
    start = np.array([e["start"] for e in events])
    dur = np.array([e["duration"] for e in events])
    brady = np.select(
        [kinds == "hypopnea", kinds == "central_apnea"],
        [rng.uniform(1, 4, len(events)), 3.0],
        rng.uniform(4, 9, len(events)),
    )
    hr -= _trapezoids(n, fs, start, dur, brady, 8.0)
    no_arousal = np.array([not e["arousal"] for e in events], dtype=bool)
    hr += _surge(n, fs, (start + dur)[no_arousal], rng.uniform(3, 8, no_arousal.sum()))
    height = [
        rng.uniform(5, 12) if c == "hypopnea" else rng.uniform(4, 10) if c == "spontaneous" else rng.uniform(10, 22)
        for _, _, c in arousals
    ]
    hr += _surge(n, fs, np.array([a[0] for a in arousals]), np.array(height))
    hr = np.clip(hr, 35, 180)
    beats_done = np.cumsum(hr / 60 / fs)  # beats since t = 0 at each 10-Hz sample
    beats = np.interp(np.arange(1, int(beats_done[-1])), beats_done, np.arange(1, n + 1) / fs)
    return {"hr": hr, "beats": beats + rng.uniform(0, 0.3)}


# P, Q, R, S waves: (centre s relative to R, amplitude relative to R, width s); the T wave moves with sqrt(RR).
PQRS_TEMPLATE = ((-0.2, 0.12, 0.025), (-0.035, -0.1, 0.01), (0.0, 1.0, 0.012), (0.035, -0.25, 0.012))
T_WAVE = (0.26, 0.28, 0.045)
_GRID = np.arange(-0.35, 0.35, 0.0005)
_PQRS = sum(a * np.exp(-0.5 * ((_GRID - c) / w) ** 2) for c, a, w in PQRS_TEMPLATE)


def _ecg(rng, subj, beats, phase, fs, total_s, emg_rms):
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
    ecg += 0.05 * np.sin(np.interp(t, t10, phase)) + 0.05 * np.interp(t, t10, _slow_noise(rng, phase.size, 200))
    noise = 0.01 + 0.002 * np.repeat(emg_rms, EPOCH_S * fs) if emg_rms is not None else 0.01
    return ecg + noise * rng.standard_normal(n)


def _spo2(rng, subj, events, total_s):
    """SpO2 (% at 1 Hz, integer steps like an oximeter) and the desaturation and artefact events it shows."""
    base = subj["spo2"] + 0.4 * _slow_noise(rng, total_s, 30)
    drop = np.zeros(total_s)
    lows = []
    for ev in events:
        d = ev["duration"]
        if ev["kind"] == "hypopnea":
            depth = (1.0 + 0.1 * d) * rng.uniform(0.6, 1.4)
        else:
            depth = (2.5 + 0.22 * d) * rng.uniform(0.7, 1.3) * (1.2 if ev["rem"] else 1.0)
        depth = min(depth * subj["desat_gain"], 25.0)
        lag = rng.uniform(6, 12)
        t0, tn = ev["start"] + lag, ev["start"] + d + lag
        recover = rng.uniform(8, 14)
        t = np.arange(int(t0), min(int(tn + recover) + 1, total_s))
        fall = 0.5 - 0.5 * np.cos(np.pi * np.clip((t - t0) / (tn - t0), 0, 1))
        rise = 0.5 + 0.5 * np.cos(np.pi * np.clip((t - tn) / recover, 0, 1))
        drop[t] += depth * np.where(t < tn, fall, rise)
        lows.append((t0, tn))
    spo2 = np.clip(np.round(base - drop), 50, 100)
    out = []
    for t0, tn in lows:
        i0, i1 = int(t0), min(int(tn) + 4, total_s)
        if i1 - i0 < 3 or i0 < 10:
            continue
        baseline, nadir = float(np.median(spo2[i0 - 10 : i0])), float(spo2[i0:i1].min())
        if baseline - nadir >= 3:
            end = i0 + int(np.argmin(spo2[i0:i1]))
            out.append(
                {
                    "kind": "desaturation",
                    "start": float(i0),
                    "duration": float(max(end - i0, 1)),
                    "nadir": nadir,
                    "baseline": baseline,
                }
            )
    if rng.random() < 0.3:
        for _ in range(int(rng.integers(1, 4))):
            d = float(rng.uniform(5, 60))
            s = int(rng.uniform(0, max(total_s - d, 1)))
            spo2[s : s + int(d)] = rng.integers(30, 101, len(spo2[s : s + int(d)]))
            out.append({"kind": "spo2_artifact", "start": float(s), "duration": float(int(d))})
    return spo2, out


def _position(rng, stage, total_s):
    """Body position code (0-3) at 1 Hz, changing at some awakenings."""
    onsets = np.flatnonzero((stage[1:] == W) & (stage[:-1] > 0)) + 1
    onsets = onsets[rng.random(len(onsets)) < 0.3]
    codes = np.concatenate([[rng.integers(0, 4)], rng.integers(0, 4, len(onsets))])
    return codes[np.searchsorted(onsets * EPOCH_S, np.arange(total_s), side="right")].astype(float)
