"""Small EDF + NSRR XML nights with known content, written with edfio, for the parser tests.

Each night carries a distinct tone per channel (eeg_c4 10 Hz, eeg_c3 6 Hz, ...) and optional marker bursts (x5
amplitude from second 10 to 15 of a chosen epoch), so channel identity, time alignment and amplitude can be
checked on the written Parquet files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from edfio import Edf, EdfSignal

from dataset.data_parser import parse_cohort

# canonical key -> (EDF label, rate Hz, unit, physical range, tone Hz, tone amplitude in the EDF unit)
SHHS1 = {
    "spo2": ("SaO2", 1, "%", (0, 100), 0.01, 2.0),
    "hr": ("H.R.", 1, "bpm", (0, 250), 0.01, 5.0),
    "eeg_c3": ("EEG(sec)", 125, "uV", (-500, 500), 6.0, 25.0),
    "ecg": ("ECG", 125, "mV", (-6, 6), 12.0, 1.0),
    "emg": ("EMG", 125, "uV", (-125, 125), 35.0, 10.0),
    "eog_l": ("EOG(L)", 50, "uV", (-500, 500), 2.0, 40.0),
    "eog_r": ("EOG(R)", 50, "uV", (-500, 500), 3.0, 40.0),
    "eeg_c4": ("EEG", 125, "uV", (-500, 500), 10.0, 40.0),
    "airflow": ("AIRFLOW", 10, "", (-3, 3), 0.3, 0.5),
    "thor": ("THOR RES", 10, "", (-3, 3), 0.25, 0.5),
    "abdo": ("ABDO RES", 10, "", (-3, 3), 0.2, 0.5),
}
TONE_HZ = {key: spec[4] for key, spec in SHHS1.items()}
STAGE_CONCEPT = {
    0: "Wake|0",
    1: "Stage 1 sleep|1",
    2: "Stage 2 sleep|2",
    3: "Stage 3 sleep|3",
    34: "Stage 4 sleep|4",
    4: "REM sleep|5",
    6: "Movement|6",
    9: "Unscored|9",
}
STAGE_TRUTH = {0: 0, 1: 1, 2: 2, 3: 3, 34: 3, 4: 4, 6: -1, 9: -1}


def write_edf(
    path: Path, seconds: float, layout: dict | None = None, markers: dict | None = None, overrides: dict | None = None
) -> None:
    """An EDF of `seconds` (whole 1-s records) with one tone per channel; `overrides` replaces layout fields
    per key ({"eeg_c4": {"rate": 128, "label": "EEG 1", "unit": ""}}); `markers` = {key: epoch}."""
    layout = dict(SHHS1 if layout is None else layout)
    signals = []
    for key, (label, rate, unit, prange, tone, amplitude) in layout.items():
        change = (overrides or {}).get(key, {})
        label, rate, unit = change.get("label", label), change.get("rate", rate), change.get("unit", unit)
        t = np.arange(int(round(seconds * rate))) / rate  # (samples,) s
        values = amplitude * np.sin(2 * np.pi * tone * t + 0.3)
        if key in ("spo2", "hr"):
            values = (95 if key == "spo2" else 70) + values
        if key in (markers or {}):
            burst = (t >= 30 * markers[key] + 10) & (t < 30 * markers[key] + 15)
            values[burst] *= 5
        if "values" in change:
            values = change["values"](t)
        signals.append(
            EdfSignal(values, rate, label=label, physical_dimension=unit, physical_range=change.get("range", prange))
        )
    Edf(signals).write(path)


def stage_events(stages: list[int], shuffle: bool = False) -> list[tuple]:
    """Runs of equal stage codes as (type, concept, start, duration) events."""
    runs, start = [], 0
    for k in range(1, len(stages) + 1):
        if k == len(stages) or stages[k] != stages[start]:
            runs.append(("Stages|Stages", STAGE_CONCEPT[stages[start]], 30.0 * start, 30.0 * (k - start)))
            start = k
    if shuffle:
        runs = [runs[i] for i in np.random.default_rng(0).permutation(len(runs))]
    return runs


def write_xml(
    path: Path, events: list[tuple], style: str = "lf", clock: str = "00.00.00", recording_s: float | None = None
) -> None:
    """NSRR XML; events are (EventType, EventConcept, start, duration[, SpO2 nadir[, SpO2 baseline]]); style lf |
    crlf | one-line. Its Recording Start Time record: ClockTime `clock` (that of `write_edf`'s files) and, when
    given, Duration `recording_s`."""
    length = f"<Duration>{recording_s}</Duration>" if recording_s is not None else ""
    items = [
        "<ScoredEvent><EventType/><EventConcept>Recording Start Time</EventConcept><Start>0</Start>"
        f"{length}<ClockTime>00.00.00 {clock}</ClockTime></ScoredEvent>"
    ]
    for kind, concept, start, duration, *spo2 in events:
        extra = "".join(f"<{tag}>{v}</{tag}>" for tag, v in zip(("SpO2Nadir", "SpO2Baseline"), spo2))
        items.append(
            f"<ScoredEvent>\n<EventType>{kind}</EventType>\n<EventConcept>{concept}</EventConcept>\n"
            f"<Start>{start}</Start>\n<Duration>{duration}</Duration>{extra}\n</ScoredEvent>"
        )
    text = "\n".join(
        [
            '<?xml version="1.0" encoding="UTF-8" standalone="no"?>',
            "<PSGAnnotation>",
            "<SoftwareVersion>Compumedics</SoftwareVersion>",
            "<EpochLength>30</EpochLength>",
            "<ScoredEvents>",
            *items,
            "</ScoredEvents>",
            "</PSGAnnotation>",
            "",
        ]
    )
    if style == "crlf":
        text = text.replace("\n", "\r\n")
    elif style == "one-line":
        text = text.replace("\n", "")
    path.write_bytes(text.encode())


DEFAULT_STAGES = [0, 0, 1, 2, 2, 2, 3, 34, 3, 2, 4, 4, 6, 2, 2, 9, 0, 2, 2, 4]
RESP_EVENTS = [
    ("Respiratory|Respiratory", "Obstructive apnea|Obstructive Apnea", 95.0, 20.0),
    ("Respiratory|Respiratory", "Central apnea|Central Apnea", 100.0, 25.0),
    ("Respiratory|Respiratory", "Hypopnea|Hypopnea", 301.5, 14.0),
    ("Respiratory|Respiratory", "SpO2 desaturation|SpO2 desaturation", 320.0, 12.0, 88.0),
    ("Arousals|Arousals", "Arousal|Arousal ()", 44.0, 1.0),
    ("Respiratory|Respiratory", "SpO2 artifact|SpO2 artifact", 0.0, 600.0),
]


def make_night(
    folder: Path,
    name: str,
    stages=DEFAULT_STAGES,
    events=RESP_EVENTS,
    seconds=None,
    style="lf",
    shuffle=False,
    xml=True,
    **edf_options,
) -> Path:
    """A flat-layout night <name>.edf + <name>-nsrr.xml; returns the EDF path."""
    folder.mkdir(parents=True, exist_ok=True)
    edf = folder / f"{name}.edf"
    seconds = 30 * len(stages) if seconds is None else seconds
    write_edf(edf, seconds, **edf_options)
    if xml:
        write_xml(folder / f"{name}-nsrr.xml", stage_events(stages, shuffle) + list(events), style, recording_s=seconds)
    return edf


def parse(src, dst, **kwargs) -> pd.DataFrame:
    return parse_cohort(src, dst, progress=False, **kwargs)


def read_table(dst: Path, recording_id: str) -> pd.DataFrame:
    return pq.read_table(dst / "recordings" / f"{recording_id}.parquet").to_pandas()


def channel(frame: pd.DataFrame, name: str) -> np.ndarray:
    """(n_epochs, samples) float32 of one channel column."""
    return np.stack(frame[name].to_numpy())


def dominant_hz(epochs: np.ndarray, fs: float) -> float:
    spectrum = np.abs(np.fft.rfft(epochs[2:-2].reshape(-1)))
    return float(np.fft.rfftfreq(epochs[2:-2].size, 1 / fs)[np.argmax(spectrum[1:]) + 1])


def unscaled(frame, manifest_row, name) -> np.ndarray:
    """Undo robust scaling with the manifest's median and IQR: physical units again (µV for electrophysiology)."""
    return channel(frame, name) * manifest_row[f"iqr_{name}"] + manifest_row[f"median_{name}"]


def tone_amplitude(values: np.ndarray) -> float:
    """Peak amplitude of a pure tone from its RMS, away from the record edges."""
    return float(np.sqrt(2) * np.sqrt(np.mean(values[2:-2].astype(np.float64) ** 2)))
