"""File writers of the synthetic cohort: 16-bit EDF, NSRR XML and the other scoring formats (docs/data.md §2.5).

`write_edf` writes the signals of a channel layout as plain EDF (or EDF+C with annotations), `nsrr_xml_bytes` the
NSRR annotation file of a night, `write_hypnogram_edf` an annotation-only EDF+ hypnogram (as Sleep-EDF's) and
`write_scoring` a night's truth in Profusion XML, EDF+ or a per-epoch txt/csv hypnogram. What the night holds is
`dataset.synthetic`'s job; which channels a cohort's files carry is `dataset.synthetic_layouts`'.
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from edfio import Edf, EdfAnnotation, EdfSignal

from dataset.constants import EPOCH_S
from dataset.edf_reader import read_edf_header

if TYPE_CHECKING:
    from dataset.synthetic import SyntheticNight

STAGE_CONCEPT = {
    0: "Wake|0",
    1: "Stage 1 sleep|1",
    2: "Stage 2 sleep|2",
    3: "Stage 3 sleep|3",
    4: "REM sleep|5",
    "n4": "Stage 4 sleep|4",
    "move": "Movement|6",
    "unscored": "Unscored|9",
}
SLEEP_EDF_STAGE = {
    0: "Sleep stage W",
    1: "Sleep stage 1",
    2: "Sleep stage 2",
    3: "Sleep stage 3",
    4: "Sleep stage R",
    "n4": "Sleep stage 4",
    "move": "Movement time",
    "unscored": "Sleep stage ?",
}


def stage_key_runs(keys: np.ndarray) -> list[tuple]:
    """Merge consecutive equal epochs into (key, start_s, duration_s) runs."""
    runs, first = [], 0
    for i in range(1, len(keys) + 1):
        if i == len(keys) or keys[i] != keys[first]:
            runs.append((keys[first], first * float(EPOCH_S), (i - first) * float(EPOCH_S)))
            first = i
    return runs


def nsrr_stage_runs(keys: np.ndarray) -> list[tuple[str, float, float]]:
    """Merge consecutive equal epochs into (concept, start_s, duration_s) runs, as NSRR does."""
    return [(STAGE_CONCEPT[key], start, length) for key, start, length in stage_key_runs(keys)]


def nsrr_xml_bytes(
    clock: str,
    signal_s: float,
    runs: list,
    events: list[dict],
    airflow_label: str,
    shuffle_rng: np.random.Generator | None,
    crlf: bool,
    single_line: bool,
) -> bytes:
    """The NSRR annotation file: start record, scored events (chronological), then stage runs."""
    lines = [
        '<?xml version="1.0" encoding="UTF-8" standalone="no"?>',
        "<PSGAnnotation>",
        "<SoftwareVersion>Compumedics</SoftwareVersion>",
        "<EpochLength>30</EpochLength>",
        "<ScoredEvents>",
        "<ScoredEvent>",
        "<EventType/>",
        "<EventConcept>Recording Start Time</EventConcept>",
        "<Start>0</Start>",
        f"<Duration>{signal_s:.1f}</Duration>",
        f"<ClockTime>00.00.00 {clock}</ClockTime>",
        "</ScoredEvent>",
    ]

    def add(kind: str, concept: str, start: float, duration: float, extra: tuple[str, ...] = ()) -> None:
        lines.extend(
            (
                "<ScoredEvent>",
                f"<EventType>{kind}</EventType>",
                f"<EventConcept>{concept}</EventConcept>",
                f"<Start>{start:.1f}</Start>",
                f"<Duration>{duration:.1f}</Duration>",
                *extra,
                "</ScoredEvent>",
            )
        )

    for ev in events:
        if ev["type"] == "arousal":
            add("Arousals|Arousals", ev["concept"], ev["start_s"], ev["duration_s"])
        elif ev["spo2_nadir"] is not None:
            add(
                "Respiratory|Respiratory",
                ev["concept"],
                ev["start_s"],
                ev["duration_s"],
                (
                    "<SignalLocation>SaO2</SignalLocation>",
                    f"<SpO2Nadir>{ev['spo2_nadir']:.1f}</SpO2Nadir>",
                    f"<SpO2Baseline>{ev['spo2_baseline']:.1f}</SpO2Baseline>",
                ),
            )
        else:
            where = "SaO2" if ev["type"] == "other" else airflow_label
            add(
                "Respiratory|Respiratory",
                ev["concept"],
                ev["start_s"],
                ev["duration_s"],
                (f"<SignalLocation>{where}</SignalLocation>",),
            )
    order = shuffle_rng.permutation(len(runs)) if shuffle_rng is not None else range(len(runs))
    for i in order:
        add("Stages|Stages", *runs[i])
    lines += ["</ScoredEvents>", "</PSGAnnotation>"]
    sep = "" if single_line else ("\r\n" if crlf else "\n")
    return (sep.join(lines) + sep).encode("utf-8")


def _digital(values: np.ndarray, pmin: float, pmax: float) -> np.ndarray:
    """Physical values -> int16 with the full 16-bit range; values beyond the range clip at the rails."""
    scaled = (np.asarray(values, dtype=np.float64) - pmin) * (65535.0 / (pmax - pmin)) - 32768.0
    return np.clip(np.round(scaled), -32768, 32767).astype(np.int16)


def write_edf(
    path: Path,
    layout: list[tuple],
    signals: dict[str, np.ndarray],
    start: datetime.time,
    annotations: list[tuple[float, float, str]] | None = None,
) -> int:
    """Plain EDF with 1-s data records (EDF+C with an annotation signal when `annotations` (onset s, duration s,
    text) are given). Returns the bytes per data record of the data signals."""
    edf_signals = [
        EdfSignal.from_digital(
            _digital(signals[key], pmin, pmax),
            rate,
            label=label,
            physical_dimension=unit,
            physical_range=(pmin, pmax),
            digital_range=(-32768, 32767),
        )
        for key, label, rate, unit, pmin, pmax in layout
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    extra = {"annotations": [EdfAnnotation(*a) for a in annotations]} if annotations is not None else {}
    Edf(edf_signals, starttime=start, data_record_duration=1, **extra).write(path)
    return 2 * sum(int(rate) for _, _, rate, *_ in layout)


def write_hypnogram_edf(path: Path, runs: list[tuple[str, float, float]], start: datetime.time) -> None:
    """An annotation-only EDF+ (as Sleep-EDF's `*-Hypnogram.edf`): one annotation per stage run."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Edf(
        [], starttime=start, annotations=[EdfAnnotation(onset, duration, text) for text, onset, duration in runs]
    ).write(path)


def _stage_classes_as(stages: np.ndarray, names: dict) -> list[tuple[str, float, float]]:
    """Runs of equal stage classes (-1 -> names["unscored"]) as (name, start s, duration s)."""
    keys = np.array([s if s >= 0 else "unscored" for s in stages.tolist()], dtype=object)
    return [(names[key], start, length) for key, start, length in stage_key_runs(keys)]


PROFUSION_CODE = {0: "0", 1: "1", 2: "2", 3: "3", 4: "5", -1: "9"}  # stage class -> R&K code


def write_scoring(night: SyntheticNight, path: str | Path, fmt: str) -> Path:
    """Write a night's truth scoring (stages and events) in another format: "profusion" (Compumedics XML),
    "edf" (annotation-only EDF+ as Sleep-EDF's hypnograms), "txt" / "csv" (per-epoch hypnogram; stages only).
    Every format gives the labels of the night's NSRR XML (dataset/annotations.py reads them)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    events = [e for e in night.events]
    names = {ev["concept"]: ev["concept"].split("|", 1)[0] for ev in events}
    if fmt == "profusion":
        lines = [
            '<?xml version="1.0" encoding="utf-8"?>',
            "<CMPStudyConfig>",
            "<EpochLength>30</EpochLength>",
            "<ScoredEvents>",
        ]
        for ev in events:
            nadir = f"<LowestSpO2>{ev['spo2_nadir']:.1f}</LowestSpO2>" if ev["spo2_nadir"] is not None else ""
            lines.append(
                f"<ScoredEvent><Name>{names[ev['concept']]}</Name><Start>{ev['start_s']:.1f}</Start>"
                f"<Duration>{ev['duration_s']:.1f}</Duration>{nadir}</ScoredEvent>"
            )
        lines += ["</ScoredEvents>", "<SleepStages>"]
        lines += [f"<SleepStage>{PROFUSION_CODE[int(s)]}</SleepStage>" for s in night.stages]
        lines += ["</SleepStages>", "</CMPStudyConfig>"]
        path.write_text("\n".join(lines) + "\n")
    elif fmt == "edf":
        runs = _stage_classes_as(night.stages, SLEEP_EDF_STAGE)
        runs += [(names[ev["concept"]], ev["start_s"], ev["duration_s"]) for ev in events]
        clock = datetime.datetime.strptime(read_edf_header(night.edf_path).starttime, "%H.%M.%S").time()
        write_hypnogram_edf(path, sorted(runs, key=lambda r: r[1]), clock)  # same start as the recording
    elif fmt in ("txt", "csv"):
        tokens = {0: "W", 1: "N1", 2: "N2", 3: "N3", 4: "R", -1: "?"}
        rows = [tokens[int(s)] for s in night.stages]
        text = "\n".join(rows) if fmt == "txt" else "epoch,stage\n" + "\n".join(f"{k},{t}" for k, t in enumerate(rows))
        path.write_text(text + "\n")
    else:
        raise ValueError(f"unknown scoring format {fmt!r}; known: profusion, edf, txt, csv")
    return path
