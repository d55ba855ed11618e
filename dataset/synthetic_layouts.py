"""Channel layouts and file names of the synthetic cohorts: SHHS1 and the layouts of other cohorts.

Each layout row is (key, EDF label, rate Hz, unit, physical min, physical max); `LAYOUT_CHANNELS` says which EDF
label (or "PLUS - MINUS" derivation) holds each canonical channel, `layout_signals` derives the referential
signals a layout writes from the simulated ones, and `cohort_paths` names a night's files in another cohort's
folder layout (dataset/README.md "Synthetic cohorts of other layouts").
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# EDF layout in SHHS1 order: key -> (label, rate Hz, unit, physical min, physical max). Keys are the canonical
# channel names of dataset.constants plus the thermistor and two channels the parser must ignore.
SHHS1_LAYOUT = (
    ("spo2", "SaO2", 1, "%", 0.0, 100.0),
    ("hr", "H.R.", 1, "bpm", 0.0, 250.0),
    ("eeg_c3", "EEG(sec)", 125, "uV", -250.0, 250.0),
    ("ecg", "ECG", 125, "mV", -2.5, 2.5),
    ("emg", "EMG", 125, "uV", -125.0, 125.0),
    ("eog_l", "EOG(L)", 50, "uV", -250.0, 250.0),
    ("eog_r", "EOG(R)", 50, "uV", -250.0, 250.0),
    ("eeg_c4", "EEG", 125, "uV", -250.0, 250.0),
    ("thermistor", "AIRFLOW", 10, "", -1.0, 1.0),
    ("thor", "THOR RES", 10, "", -1.0, 1.0),
    ("abdo", "ABDO RES", 10, "", -1.0, 1.0),
    ("position", "POSITION", 1, "", 0.0, 3.0),
    ("airflow", "NEW AIR", 10, "", -1.0, 1.0),
)
# Other cohorts' channel layouts (`generate_night(channels=...)`), rows as above. Keys are simulated signals or
# the referential / derived signals of `layout_signals`: c4 = eeg_c4 + m1, c3 = eeg_c3 + m2, loc = eog_l + m2,
# roc = eog_r + m1, chin1 = emg + chin_ref, chin2 = chin_ref, ecg_l = ecg + ecg_ref, ecg_r = ecg_ref, so each
# derivation (C4 - M1, ...) gives back the simulated channel; fz_cz / cz_oz are MESA's non-standard EEG1 / EEG2,
# eog_h the bipolar horizontal EOG and resp_1hz the thermistor at 1 Hz of Sleep-EDF.
_REF = ("uV", -500.0, 500.0)
CHANNEL_LAYOUTS: dict[str, tuple[tuple, ...]] = {
    "mesa": (
        ("ecg", "EKG", 256, "mV", -2.5, 2.5),
        ("eog_l", "EOG-L", 256, "uV", -250.0, 250.0),
        ("eog_r", "EOG-R", 256, "uV", -250.0, 250.0),
        ("emg", "EMG", 256, "uV", -125.0, 125.0),
        ("fz_cz", "EEG1", 256, "uV", -250.0, 250.0),
        ("cz_oz", "EEG2", 256, "uV", -250.0, 250.0),
        ("eeg_c4", "EEG3", 256, "uV", -250.0, 250.0),
        ("airflow", "Pres", 10, "", -1.0, 1.0),
        ("thermistor", "Flow", 10, "", -1.0, 1.0),
        ("thor", "Thor", 10, "", -1.0, 1.0),
        ("abdo", "Abdo", 10, "", -1.0, 1.0),
        ("spo2", "SpO2", 1, "%", 0.0, 100.0),
        ("hr", "HR", 1, "bpm", 0.0, 250.0),
        ("position", "Pos", 1, "", 0.0, 3.0),
    ),
    "mros": (
        ("c3", "C3", 256, *_REF),
        ("c4", "C4", 256, *_REF),
        ("m1", "M1", 256, *_REF),
        ("m2", "M2", 256, *_REF),
        ("loc", "LOC", 256, *_REF),
        ("roc", "ROC", 256, *_REF),
        ("ecg_l", "ECG L", 256, "mV", -2.5, 2.5),
        ("ecg_r", "ECG R", 256, "mV", -2.5, 2.5),
        ("chin1", "Chin1", 256, "uV", -250.0, 250.0),
        ("chin2", "Chin2", 256, "uV", -250.0, 250.0),
        ("airflow", "Cannula Flow", 10, "", -1.0, 1.0),
        ("thermistor", "Airflow", 10, "", -1.0, 1.0),
        ("thor", "Thoracic", 10, "", -1.0, 1.0),
        ("abdo", "Abdominal", 10, "", -1.0, 1.0),
        ("spo2", "SaO2", 1, "%", 0.0, 100.0),
        ("position", "Position", 1, "", 0.0, 3.0),
    ),
    "clinical": (
        ("eeg_c4", "C4-M1", 256, *_REF),
        ("eeg_c3", "C3-M2", 256, *_REF),
        ("eog_l", "E1-M2", 256, *_REF),
        ("eog_r", "E2-M1", 256, *_REF),
        ("emg", "Chin1-Chin2", 256, "uV", -125.0, 125.0),
        ("ecg", "ECG II", 256, "mV", -2.5, 2.5),
        ("airflow", "Pressure", 10, "", -1.0, 1.0),
        ("thermistor", "Flow", 10, "", -1.0, 1.0),
        ("thor", "Thorax", 10, "", -1.0, 1.0),
        ("abdo", "Abdomen", 10, "", -1.0, 1.0),
        ("spo2", "SpO2", 1, "%", 0.0, 100.0),
    ),
    "sleep-edf": (
        ("eeg_c4", "EEG Fpz-Cz", 100, "uV", -250.0, 250.0),
        ("eeg_c3", "EEG Pz-Oz", 100, "uV", -250.0, 250.0),
        ("eog_h", "EOG horizontal", 100, "uV", -500.0, 500.0),
        ("resp_1hz", "Resp oro-nasal", 1, "", -1.0, 1.0),
        ("emg", "EMG submental", 100, "uV", -125.0, 125.0),
        ("temp", "Temp rectal", 1, "DegC", 34.0, 40.0),
    ),
}
# What each layout's signals are, canonical name -> EDF label or "PLUS - MINUS" (Sleep-EDF's EEG slots are
# non-standard: the parser fills them only through a user map).
LAYOUT_CHANNELS: dict[str, dict[str, str]] = {
    "mesa": {
        "eeg_c4": "EEG3",
        "eog_l": "EOG-L",
        "eog_r": "EOG-R",
        "emg": "EMG",
        "ecg": "EKG",
        "airflow": "Pres",
        "thor": "Thor",
        "abdo": "Abdo",
        "spo2": "SpO2",
    },
    "mros": {
        "eeg_c4": "C4 - M1",
        "eeg_c3": "C3 - M2",
        "eog_l": "LOC - M2",
        "eog_r": "ROC - M1",
        "emg": "Chin1 - Chin2",
        "ecg": "ECG L - ECG R",
        "airflow": "Cannula Flow",
        "thor": "Thoracic",
        "abdo": "Abdominal",
        "spo2": "SaO2",
    },
    "clinical": {
        "eeg_c4": "C4-M1",
        "eeg_c3": "C3-M2",
        "eog_l": "E1-M2",
        "eog_r": "E2-M1",
        "emg": "Chin1-Chin2",
        "ecg": "ECG II",
        "airflow": "Pressure",
        "thor": "Thorax",
        "abdo": "Abdomen",
        "spo2": "SpO2",
    },
    "sleep-edf": {"eeg_c4": "EEG Fpz-Cz", "eeg_c3": "EEG Pz-Oz", "emg": "EMG submental", "airflow": "Resp oro-nasal"},
}
# Simulated signals each layout needs, key -> rate (Hz); the physiology of respiration is simulated at 10 Hz.
_EPHYS_256 = {k: 256 for k in ("eeg_c4", "eeg_c3", "eog_l", "eog_r", "emg", "ecg")}
_RESP_10 = {"airflow": 10, "thermistor": 10, "thor": 10, "abdo": 10, "spo2": 1}
LAYOUT_SIM_RATES: dict[str, dict[str, int]] = {
    "mesa": {**_EPHYS_256, **_RESP_10, "hr": 1, "position": 1},
    "mros": {**_EPHYS_256, **_RESP_10, "position": 1},
    "clinical": {**_EPHYS_256, **_RESP_10, "position": 1},
    "sleep-edf": {"eeg_c4": 100, "eeg_c3": 100, "eog_l": 100, "eog_r": 100, "emg": 100, "thermistor": 10},
}


def _reference(rng: np.random.Generator, n: int, fs: float, amplitude: float) -> np.ndarray:
    """A reference electrode's own signal: slow sway plus noise, (n,) in the unit of `amplitude`."""
    t = np.arange(n) / fs
    return amplitude * (np.sin(2 * np.pi * 0.3 * t + rng.uniform(0, 6.3)) + 0.5 * rng.standard_normal(n))


def layout_signals(channels: str, sim: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The signals a non-SHHS layout writes, from the simulated canonical ones (see CHANNEL_LAYOUTS)."""
    out = dict(sim)
    if channels == "mros":
        n, fs = sim["eeg_c4"].size, 256
        refs = {
            key: _reference(rng, n, fs, amp)
            for key, amp in (("m1", 20.0), ("m2", 20.0), ("chin_ref", 10.0), ("ecg_ref", 0.05))
        }
        out.update(
            m1=refs["m1"],
            m2=refs["m2"],
            c4=sim["eeg_c4"] + refs["m1"],
            c3=sim["eeg_c3"] + refs["m2"],
            loc=sim["eog_l"] + refs["m2"],
            roc=sim["eog_r"] + refs["m1"],
            chin1=sim["emg"] + refs["chin_ref"],
            chin2=refs["chin_ref"],
            ecg_l=sim["ecg"] + refs["ecg_ref"],
            ecg_r=refs["ecg_ref"],
        )
    elif channels == "mesa":
        out.update(fz_cz=0.8 * sim["eeg_c3"], cz_oz=-0.6 * sim["eeg_c3"])  # not C4-M1: must never fill eeg_c4
    elif channels == "sleep-edf":
        resp = sim["thermistor"][::10]
        out.update(
            eog_h=sim["eog_l"] - sim["eog_r"],
            resp_1hz=resp,
            temp=36.8 + 0.3 * np.sin(np.arange(resp.size) * 2 * np.pi / 36000.0),
        )
    return out


COHORT_LAYOUTS = ("nsrr", "flat", "mesa", "mros", "clinical", "sleep-edf")


def cohort_paths(out_dir: Path, layout: str, index: int) -> tuple[str, str, Path, Path]:
    """(recording id, subject id, EDF path, annotation path) of night `index` in another cohort's layout."""
    edfs, xmls = out_dir / "polysomnography" / "edfs", out_dir / "polysomnography" / "annotations-events-nsrr"
    if layout == "mesa":
        rid = f"mesa-sleep-{index + 1:04d}"
        return rid, rid.rsplit("-", 1)[1], edfs / f"{rid}.edf", xmls / f"{rid}-nsrr.xml"
    if layout == "mros":
        rid = f"mros-visit1-aa{index + 1:04d}"
        return rid, rid.rsplit("-", 1)[1], edfs / "visit1" / f"{rid}.edf", xmls / "visit1" / f"{rid}-nsrr.xml"
    if layout == "clinical":
        rid = f"psg-{index + 1:04d}"
        return rid, rid.rsplit("-", 1)[1], out_dir / f"{rid}.edf", out_dir / f"{rid}-nsrr.xml"
    subject, night = divmod(index, 2)  # sleep-edf
    name = f"SC4{subject:02d}{night + 1}E"
    return f"{name}0-PSG", f"SC{subject:02d}", out_dir / f"{name}0-PSG.edf", out_dir / f"{name}C-Hypnogram.edf"
