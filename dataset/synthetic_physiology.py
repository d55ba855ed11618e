"""Physiology of the synthetic PSG nights (docs/data.md §2.5): hypnogram, scored events and every signal.

`simulate_night` returns signals in physical units at their native rates (EEG/EOG/EMG µV, ECG mV, SpO2 %,
airflow/effort arbitrary units within ±1) plus the truth; `dataset/synthetic.py` writes them as EDF + XML.
This module draws the subject, the hypnogram, the latent drifts and the scored events and assembles the night;
the signal models are `dataset.synthetic_ephys` (EEG, EOG, EMG, ECG) and `dataset.synthetic_respiration`
(breathing, heart rate, SpO2), on the building blocks of `dataset.synthetic_primitives`.

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

from dataset.constants import EPOCH_S
from dataset.synthetic_ephys import EMG_RMS, ecg_signal, eeg_signals, emg_signal, eog_signals
from dataset.synthetic_primitives import N1, N2, N3, REM, W, ar1
from dataset.synthetic_respiration import breathing, heart_rate, spo2_signal

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
    depth = np.clip(0.5 + ar1(rng, n_epochs, 0.95, 0.3), 0, 1)  # NREM depth latent
    relax = 1 / (1 + np.exp(-(0.8 + ar1(rng, n_epochs, 0.9, 1.5))))  # wake: eyes closed and relaxed
    phasic = np.clip(0.35 + ar1(rng, n_epochs, 0.8, 0.4), 0, 1)  # REM: phasic activity
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

    breath = breathing(rng, subj, phys, events, total_s)
    heart = heart_rate(rng, subj, phys, events, arousals, breath["phase"], total_s)
    eeg_fs = rates.get("eeg_c4", rates.get("eeg_c3", 125))
    emg_rms = EMG_RMS[phys].copy()
    emg_rms[phys == W] = 6.0 + 14.0 * (1 - relax[phys == W])
    emg_rms *= subj["emg_scale"] * np.exp(ar1(rng, n_epochs, 0.7, 0.35)) * (1 - 0.25 * np.arange(n_epochs) / n_epochs)
    ecg_fs = rates.get("ecg", 125)
    signals = {"ecg": ecg_signal(rng, subj, heart["beats"], breath["phase"], ecg_fs, total_s, emg_rms)}
    leak_ecg = (
        ecg_signal(rng, subj, heart["beats"], breath["phase"], eeg_fs, total_s, None)
        if ecg_fs != eeg_fs
        else signals["ecg"]
    )
    c4, c3 = eeg_signals(rng, subj, phys, relax, depth, emg_rms, aro, moves, eeg_fs, n_epochs)
    eog_l, eog_r = eog_signals(rng, subj, phys, relax, phasic, c4, moves, rates.get("eog_l", 50), eeg_fs, n_epochs)
    emg = emg_signal(rng, subj, phys, phasic, emg_rms, aro, moves, eeg_fs, n_epochs)
    ecg_uv = leak_ecg * 1000 * subj["ecg_leak"]
    line = subj["line_noise_uv"] * np.sin(2 * np.pi * 60.0 * np.arange(c4.size) / eeg_fs + rng.uniform(0, 6.3))
    signals.update(
        eeg_c4=c4 + ecg_uv + line, eeg_c3=c3 + 0.8 * ecg_uv, eog_l=eog_l, eog_r=eog_r, emg=emg + 2 * ecg_uv + 0.5 * line
    )
    spo2, spo2_events = spo2_signal(rng, subj, events, total_s)
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


def _position(rng, stage, total_s):
    """Body position code (0-3) at 1 Hz, changing at some awakenings."""
    onsets = np.flatnonzero((stage[1:] == W) & (stage[:-1] > 0)) + 1
    onsets = onsets[rng.random(len(onsets)) < 0.3]
    codes = np.concatenate([[rng.integers(0, 4)], rng.integers(0, 4, len(onsets))])
    return codes[np.searchsorted(onsets * EPOCH_S, np.arange(total_s), side="right")].astype(float)
