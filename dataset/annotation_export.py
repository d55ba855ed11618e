"""Predicted (or scored) sleep annotations in the formats other sleep tools read.

Input everywhere: `stages` (n_epochs,) int, the project's classes 0 W, 1 N1, 2 N2, 3 N3, 4 REM and -1 unscored
(`dataset.constants`); `events` {type: (n_epochs,) 0/1} per-epoch event flags (e.g. "apnea", "hypopnea"), or a
list of (type, onset s, duration s) intervals (an event model's typed events, written as they are); epoch k
covers [30k, 30k + 30) s from the EDF start. A run of k consecutive positive epochs is written as ceil(k / 2)
events of at most two epochs each (`EVENT_EPOCHS`), the counting rule of `utils.ahi.count_events`, so a
tool that counts the exported events counts what the project counts. Every writer is a pure function of
its inputs (the EDF+ writer writes only the file it is given).

Events are named from one table, `EVENT_CONCEPT` (event type -> NSRR concept `name|code`; the EDF+ text is its
name part), whose names the project's readers map back to the same type (`dataset.constants.EVENT_CONCEPT_NAMES`),
so every exported event reads back as what it was. The apnea model does not tell obstructive, central and mixed
apart: its `apnea` events are written as obstructive apneas (the project's `apnea` label is the union of the
three, so the labels round-trip; the subtype is not a prediction).

Formats:
- NSRR XML (`nsrr_xml`): `<PSGAnnotation>` with one `Stages|Stages` ScoredEvent per run of equal stages and one
  `Respiratory|Respiratory` ScoredEvent per event; `dataset.nsrr_xml.parse_nsrr_xml` + `dataset.labels` read it
  back to the same stage and event labels.
- EDF+ annotations (`write_edf_annotations`): an annotation-only EDF+C file (no signal, one data record of
  duration 0, as Sleep-EDF's hypnogram files), stages as Sleep-EDF texts `Sleep stage W/1/2/3/R/?` per run of
  equal stages, events as `Obstructive apnea` / `Hypopnea` / `SpO2 desaturation` ...; read by edfio and
  `mne.read_annotations`, and by `dataset.annotations.parse_edf_annotations` back to the same labels.
- YASA hypnogram (`yasa_hypnogram`): one integer per 30-s epoch in YASA's convention, 0 W, 1 N1, 2 N2, 3 N3,
  4 REM, -1 artefact/movement, -2 unscored (`yasa.hypno_str_to_int`); the project's -1 (unscored, movement or
  uncovered) is written as -2. A prediction has no unscored epoch. `yasa_text` is the file: one code per line.
- BIDS events (`bids_events`): `onset`, `duration` (s) and `trial_type` columns, one row per 30-s epoch for the
  stage (`sleep_stage_W` ... `sleep_stage_REM`, unscored epochs left out) and one per event (`apnea`,
  `hypopnea`), sorted by onset; `bids_events_tsv` writes it tab-separated.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
import pandas as pd

from dataset.constants import EPOCH_S, STAGE_NAMES, STAGE_UNSCORED
from utils.metrics import event_runs

EDF_YEARS = (1985, 2084)  # the start dates an EDF header can hold (dd.mm.yy; 85-99 are 19xx)
EVENT_EPOCHS = 2  # at most two epochs per exported event: a run of k epochs = ceil(k / 2) events
NSRR_STAGE_CONCEPT = {
    0: "Wake|0",
    1: "Stage 1 sleep|1",
    2: "Stage 2 sleep|2",
    3: "Stage 3 sleep|3",
    4: "REM sleep|5",
    STAGE_UNSCORED: "Unscored|9",
}
EVENT_CONCEPT = {  # event type -> NSRR concept; the EDF+ text is the name before "|"
    "apnea": "Obstructive apnea|Obstructive Apnea",
    "hypopnea": "Hypopnea|Hypopnea",
    "obstructive_apnea": "Obstructive apnea|Obstructive Apnea",
    "central_apnea": "Central apnea|Central Apnea",
    "mixed_apnea": "Mixed apnea|Mixed Apnea",
    "desaturation": "SpO2 desaturation|SpO2 desaturation",
}
EDF_STAGE_TEXT = {
    0: "Sleep stage W",
    1: "Sleep stage 1",
    2: "Sleep stage 2",
    3: "Sleep stage 3",
    4: "Sleep stage R",
    STAGE_UNSCORED: "Sleep stage ?",
}
YASA_UNSCORED = -2  # YASA: -1 artefact / movement, -2 unscored


def stage_runs(stages: np.ndarray) -> list[tuple[int, int, int]]:
    """(stage, first epoch, n_epochs) of each run of equal consecutive stages, in order."""
    stages = np.asarray(stages, dtype=np.int64).reshape(-1)
    if stages.size == 0:
        return []
    edges = np.flatnonzero(np.diff(stages)) + 1
    starts = np.concatenate([[0], edges])
    stops = np.concatenate([edges, [stages.size]])
    return [(int(stages[a]), int(a), int(b - a)) for a, b in zip(starts, stops)]


def event_intervals(
    events: Mapping[str, np.ndarray] | Sequence[tuple[str, float, float]], epoch_s: float = EPOCH_S
) -> list[tuple[str, float, float]]:
    """(type, onset s, duration s) of every exported event: each run of positive epochs cut into pieces of at
    most `EVENT_EPOCHS` epochs; sorted by onset, then type. `events` may instead already be intervals
    (type, onset s, duration s), e.g. an event model's typed events (obstructive_apnea, central_apnea,
    mixed_apnea, hypopnea, desaturation), exported as they are."""
    if not isinstance(events, Mapping):
        return sorted(
            ((str(kind), float(onset), float(duration)) for kind, onset, duration in events),
            key=lambda item: (item[1], item[0]),
        )
    out = []
    for kind, flags in events.items():
        for start, length in event_runs((np.asarray(flags) == 1).astype(np.int64)):
            for first in range(start, start + length, EVENT_EPOCHS):
                n = min(EVENT_EPOCHS, start + length - first)
                out.append((kind, first * float(epoch_s), n * float(epoch_s)))
    return sorted(out, key=lambda item: (item[1], item[0]))


def _known(kind: str) -> str:
    """The NSRR concept of an event type (`EVENT_CONCEPT`); ValueError for a type without one."""
    if kind not in EVENT_CONCEPT:
        raise ValueError(f"no annotation text for event type {kind!r}; expected one of {sorted(EVENT_CONCEPT)}")
    return EVENT_CONCEPT[kind]


def nsrr_xml(
    stages: np.ndarray,
    events: Mapping[str, np.ndarray],
    epoch_s: float = EPOCH_S,
    start_clock: str | None = None,
    software: str = "SynthSleepNet prediction",
) -> str:
    """NSRR annotation XML (PSGAnnotation) of a hypnogram and per-epoch events; `start_clock` "HH.MM.SS" (EDF
    header style) goes into the Recording Start Time record."""
    n_epochs = int(np.asarray(stages).size)
    lines = [
        '<?xml version="1.0" encoding="UTF-8" standalone="no"?>',
        "<PSGAnnotation>",
        f"<SoftwareVersion>{escape(software)}</SoftwareVersion>",
        f"<EpochLength>{epoch_s:g}</EpochLength>",
        # stages without an event model: no event was looked for, which a reader must not take as "no event"
        *([] if events else ["<EventsScored>false</EventsScored>"]),
        "<ScoredEvents>",
        "<ScoredEvent>",
        "<EventType/>",
        "<EventConcept>Recording Start Time</EventConcept>",
        "<Start>0</Start>",
        f"<Duration>{n_epochs * epoch_s:.1f}</Duration>",
    ]
    if start_clock:
        lines.append(f"<ClockTime>00.00.00 {escape(start_clock)}</ClockTime>")
    lines.append("</ScoredEvent>")

    def add(kind: str, concept: str, start: float, duration: float) -> None:
        lines.extend(
            (
                "<ScoredEvent>",
                f"<EventType>{kind}</EventType>",
                f"<EventConcept>{escape(concept)}</EventConcept>",
                f"<Start>{start:.1f}</Start>",
                f"<Duration>{duration:.1f}</Duration>",
                "</ScoredEvent>",
            )
        )

    for kind, onset, duration in event_intervals(events, epoch_s):
        add("Respiratory|Respiratory", _known(kind), onset, duration)
    for stage, first, n in stage_runs(stages):
        add(
            "Stages|Stages",
            NSRR_STAGE_CONCEPT.get(stage, NSRR_STAGE_CONCEPT[STAGE_UNSCORED]),
            first * epoch_s,
            n * epoch_s,
        )
    lines += ["</ScoredEvents>", "</PSGAnnotation>"]
    return "\n".join(lines) + "\n"


def edf_annotation_list(
    stages: np.ndarray, events: Mapping[str, np.ndarray], epoch_s: float = EPOCH_S
) -> list[tuple[float, float, str]]:
    """(onset s, duration s, text) of the EDF+ annotations: stage runs then events, sorted by onset."""
    items = [
        (first * float(epoch_s), n * float(epoch_s), EDF_STAGE_TEXT.get(stage, EDF_STAGE_TEXT[STAGE_UNSCORED]))
        for stage, first, n in stage_runs(stages)
    ]
    items += [
        (onset, duration, _known(kind).split("|", 1)[0]) for kind, onset, duration in event_intervals(events, epoch_s)
    ]
    return sorted(items, key=lambda item: (item[0], item[2]))


def write_edf_annotations(
    path: str | Path,
    stages: np.ndarray,
    events: Mapping[str, np.ndarray],
    start: datetime.datetime | None = None,
    epoch_s: float = EPOCH_S,
) -> Path:
    """An annotation-only EDF+C file at `path` (written whole by edfio); `start` is the recording start (the source
    EDF's), unknown when None or outside the years EDF can hold (1985-2084)."""
    from edfio import Edf, EdfAnnotation, Recording

    if start is not None and not EDF_YEARS[0] <= start.year <= EDF_YEARS[1]:
        start = None
    annotations = [
        EdfAnnotation(onset, duration, text) for onset, duration, text in edf_annotation_list(stages, events, epoch_s)
    ]
    recording = Recording(startdate=start.date()) if start is not None else None
    edf = Edf([], recording=recording, starttime=start.time() if start is not None else None, annotations=annotations)
    path = Path(path)
    edf.write(path)
    return path


def yasa_hypnogram(stages: np.ndarray) -> np.ndarray:
    """(n_epochs,) int8 codes of YASA: 0 W, 1 N1, 2 N2, 3 N3, 4 REM, -2 unscored (the project's -1)."""
    stages = np.asarray(stages, dtype=np.int64).reshape(-1)
    bad = (stages < STAGE_UNSCORED) | (stages >= len(STAGE_NAMES))
    if np.any(bad):
        raise ValueError(f"stage codes must be -1..{len(STAGE_NAMES) - 1}, got {sorted(set(stages[bad].tolist()))}")
    return np.where(stages == STAGE_UNSCORED, YASA_UNSCORED, stages).astype(np.int8)


def yasa_text(stages: np.ndarray) -> str:
    """The YASA hypnogram file: one integer code per line, epoch order (`numpy.loadtxt` reads it back)."""
    return "".join(f"{code}\n" for code in yasa_hypnogram(stages).tolist())


def bids_events(stages: np.ndarray, events: Mapping[str, np.ndarray], epoch_s: float = EPOCH_S) -> pd.DataFrame:
    """BIDS events table: onset, duration (s), trial_type; a row per scored epoch's stage and per event."""
    stages = np.asarray(stages, dtype=np.int64).reshape(-1)
    rows = [
        (k * float(epoch_s), float(epoch_s), f"sleep_stage_{STAGE_NAMES[s]}")
        for k, s in enumerate(stages.tolist())
        if s != STAGE_UNSCORED
    ]
    rows += [(onset, duration, kind) for kind, onset, duration in event_intervals(events, epoch_s)]
    table = pd.DataFrame(rows, columns=["onset", "duration", "trial_type"])
    return table.sort_values(["onset", "trial_type"], kind="stable").reset_index(drop=True)


def bids_events_tsv(stages: np.ndarray, events: Mapping[str, np.ndarray], epoch_s: float = EPOCH_S) -> str:
    """`bids_events` as BIDS `*_events.tsv` text (tab-separated, header row, seconds with 3 decimals)."""
    return bids_events(stages, events, epoch_s).to_csv(sep="\t", index=False, float_format="%.3f", lineterminator="\n")
