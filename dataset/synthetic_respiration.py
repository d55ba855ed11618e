"""Respiration and heart rate of the synthetic nights (docs/data.md §2.5): flow, effort, SpO2, heart rate.

Breathing is phase-integrated flow and effort; apneas (flow < 10 %; effort continues with paradox for obstructive,
absent for central, both in turn for mixed), hypopneas (flow reduced 30-70 %) and recovery breaths shape it. The
heart rate follows the stage, slow variability, respiratory sinus arrhythmia, bradycardia during apneas and
surges at arousals (`dataset.synthetic_ephys` draws the ECG from its beat times). SpO2 drops lag the events, and
desaturation events are measured on the written SpO2.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter1d

from dataset.constants import EPOCH_S
from dataset.synthetic_primitives import W, add_waves, slow_noise, smooth

HR_OFFSET = np.array([7.0, 3.0, 0.0, -3.0, 4.0])  # bpm relative to the subject's sleep heart rate
HRV_SD = np.array([4.5, 3.0, 2.0, 1.2, 4.5])  # bpm, slow (0.02-0.15 Hz) heart-rate variability
BREATH_VAR = np.array([0.12, 0.08, 0.05, 0.03, 0.15])  # relative breath-rate variability


def trapezoids(n: int, fs: float, starts, durations, heights, ramp_s: float) -> np.ndarray:
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


def surge(n: int, fs: float, onsets, heights, peak_s: float = 5.0) -> np.ndarray:
    """Sum of (t/peak) * exp(1 - t/peak) bumps (n,) at fs: heart-rate surges peaking `peak_s` after onset."""
    out = np.zeros(n)
    t = np.arange(int(6 * peak_s * fs)) / fs
    if len(onsets):
        add_waves(out, fs, np.asarray(onsets), np.outer(heights, t / peak_s * np.exp(1 - t / peak_s)))
    return out


def breathing(rng, subj, phys, events, total_s, fs=10):
    """Breath phase (rad) and nasal pressure, thermistor, thoracic and abdominal effort at 10 Hz."""
    n = total_s * fs
    stage10 = np.repeat(phys, EPOCH_S * fs)
    rate = subj["breath_hz"] * (1 + smooth(BREATH_VAR[stage10], 50) * slow_noise(rng, n, 40))
    phase = 2 * np.pi * np.cumsum(rate) / fs
    amp = np.exp(0.2 * slow_noise(rng, n, 25))
    kinds = np.array([e["kind"] for e in events])
    start = np.array([e["start"] for e in events])
    dur = np.array([e["duration"] for e in events])
    apnea, hyp = kinds != "hypopnea", kinds == "hypopnea"
    flow_cut = np.where(apnea, rng.uniform(0.9, 0.98, len(events)), rng.uniform(0.3, 0.7, len(events)))
    flow = 1 - trapezoids(n, fs, start, dur, flow_cut, 2.0)
    flow += trapezoids(n, fs, start + dur, rng.uniform(8, 15, len(events)), rng.uniform(0.3, 0.8, len(events)), 2.0)
    central_part = np.select(
        [kinds == "central_apnea", kinds == "mixed_apnea"], [1.0, rng.uniform(0.3, 0.6, len(events))], 0.0
    )
    obstructive = ~hyp & (kinds != "central_apnea")
    effort = 1 - trapezoids(n, fs, start, dur * central_part, np.full(len(events), 0.95), 1.5)
    effort -= trapezoids(n, fs, start, dur, np.where(hyp, 0.15, 0.0), 2.0)
    o_start, o_dur = start + dur * central_part, dur * (1 - central_part)
    effort += trapezoids(n, fs, o_start[obstructive], o_dur[obstructive], np.full(obstructive.sum(), 0.3), 3.0)
    paradox = trapezoids(n, fs, o_start[obstructive], o_dur[obstructive], rng.uniform(1.5, 2.8, obstructive.sum()), 3.0)
    paradox += trapezoids(n, fs, start[hyp], dur[hyp], rng.uniform(0.3, 1.0, hyp.sum()), 3.0)
    wave = np.sin(phase)
    nasal = 0.35 * amp * flow * np.sign(wave) * np.abs(wave) ** 0.7 + 0.01 * rng.standard_normal(n)
    thermistor = gaussian_filter1d(0.3 * amp * flow * np.sin(phase - 0.6), 3) + 0.01 * rng.standard_normal(n)
    drift = 0.05 * slow_noise(rng, n, 300)
    thor = 0.4 * amp * effort * np.sin(phase - 0.3) + drift + 0.01 * rng.standard_normal(n)
    abdo = 0.35 * amp * effort * np.sin(phase - 0.3 + paradox) - drift + 0.01 * rng.standard_normal(n)
    return {"phase": phase, "nasal": nasal, "thermistor": thermistor, "thor": thor, "abdo": abdo}


def heart_rate(rng, subj, phys, events, arousals, phase, total_s, fs=10):
    """Heart rate (bpm, 10 Hz) and beat times (s): stage offset, variability, RSA, apnea bradycardia, surges."""
    n = total_s * fs
    stage10 = np.repeat(phys, EPOCH_S * fs)
    hr = subj["hr_bpm"] + smooth(HR_OFFSET[stage10], 150)
    hr += smooth(HRV_SD[stage10], 150) * slow_noise(rng, n, 25)
    hr += subj["rsa_bpm"] * np.where(stage10 == W, 0.6, 1.0) * np.sin(phase)
    kinds = np.array([e["kind"] for e in events])
    start = np.array([e["start"] for e in events])
    dur = np.array([e["duration"] for e in events])
    brady = np.select(
        [kinds == "hypopnea", kinds == "central_apnea"],
        [rng.uniform(1, 4, len(events)), 3.0],
        rng.uniform(4, 9, len(events)),
    )
    hr -= trapezoids(n, fs, start, dur, brady, 8.0)
    no_arousal = np.array([not e["arousal"] for e in events], dtype=bool)
    hr += surge(n, fs, (start + dur)[no_arousal], rng.uniform(3, 8, no_arousal.sum()))
    height = [
        rng.uniform(5, 12) if c == "hypopnea" else rng.uniform(4, 10) if c == "spontaneous" else rng.uniform(10, 22)
        for _, _, c in arousals
    ]
    hr += surge(n, fs, np.array([a[0] for a in arousals]), np.array(height))
    hr = np.clip(hr, 35, 180)
    beats_done = np.cumsum(hr / 60 / fs)  # beats since t = 0 at each 10-Hz sample
    beats = np.interp(np.arange(1, int(beats_done[-1])), beats_done, np.arange(1, n + 1) / fs)
    return {"hr": hr, "beats": beats + rng.uniform(0, 0.3)}


def spo2_signal(rng, subj, events, total_s):
    """SpO2 (% at 1 Hz, integer steps like an oximeter) and the desaturation and artefact events it shows."""
    base = subj["spo2"] + 0.4 * slow_noise(rng, total_s, 30)
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
