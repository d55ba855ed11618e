"""Scorings from other systems read as the NSRR XML of the same night: a Profusion desaturation's drop, the event
names of other cohorts and EDF+ exports, EDF+ onsets against a first data record that does not start at the header's
start time, and a Profusion XML in UTF-16."""

from __future__ import annotations

import datetime
from pathlib import Path

import numpy as np
import pytest

from dataset.annotations import annotation_format, read_annotations
from dataset.edf_reader import EdfError, read_digital, read_edf_header
from dataset.labels import epoch_labels, night_summary
from dataset.nsrr_xml import XmlError, event_type
from dataset.scored_events import events_per_hour
from dataset.signal_processing import process_recording
from dataset.synthetic_writers import PROFUSION_CODE
from downstream.night_inference import recording_start
from tests.parser_nights import stage_events, write_xml

# 20 epochs, stage classes (4 = REM); 17 epochs of sleep. The NSRR helpers take the same keys (4 -> `REM sleep|5`).
STAGES = [0, 0, 1, 2, 2, 2, 3, 3, 2, 2, 4, 4, 2, 2, 0, 2, 2, 2, 2, 2]
SLEEP_EPOCHS = 17
EDF_STAGE = {0: "Sleep stage W", 1: "Sleep stage 1", 2: "Sleep stage 2", 3: "Sleep stage 3", 4: "Sleep stage R"}


def _summary(path: Path) -> dict:
    """Manifest numbers (AHIs, event counts) of a whole 20-epoch night scored in `path`."""
    annotations = read_annotations(path)
    return night_summary(epoch_labels(annotations, len(STAGES)), annotations.events, 30.0 * len(STAGES))


def _profusion(path: Path, events: list[str], encoding: str = "utf-8") -> Path:
    """A Profusion XML (`CMPStudyConfig`) of STAGES with the given `<ScoredEvent>` bodies."""
    text = "\n".join(
        [
            f'<?xml version="1.0" encoding="{encoding}"?>',
            "<CMPStudyConfig><EpochLength>30</EpochLength><ScoredEvents>",
            *(f"<ScoredEvent>{body}</ScoredEvent>" for body in events),
            "</ScoredEvents><SleepStages>",
            *(f"<SleepStage>{PROFUSION_CODE[s]}</SleepStage>" for s in STAGES),
            "</SleepStages></CMPStudyConfig>",
        ]
    )
    path.write_bytes(text.encode(encoding))
    return path


def _edf_plus(
    path: Path,
    tals: list[tuple[float, float, str]],
    record_start: float = 0.0,
    eeg: np.ndarray | None = None,
    seconds: int = 30 * len(STAGES),
    kind: str = "EDF+C",
    gap: tuple[int, float] = (0, 0.0),
) -> Path:
    """An EDF+C of 1-s records: a 100-Hz `EEG` (µV) when `eeg` is given (else annotations only) and an `EDF
    Annotations` signal whose record k starts with the time-keeping TAL `record_start + k` (seconds after the
    header's start time, EDF+ spec 2.2.4; `gap` (k, s): from record k on, s later, an EDF+D gap) and holds
    annotation k of `tals` (onset from the header's start, s); `kind` is the reserved field's EDF+C or EDF+D."""
    signals = [("EDF Annotations", "", -1, 1, 60)] + ([("EEG", "uV", -500, 500, 100)] if eeg is not None else [])
    rows = [
        [label, "", unit, f"{lo}", f"{hi}", "-32768", "32767", "", f"{n}", ""] for label, unit, lo, hi, n in signals
    ]
    widths = (16, 80, 8, 8, 8, 8, 8, 80, 8, 32)  # label, transducer, unit, physical/digital range, filter, samples
    fields = "".join(row[i].ljust(width) for i, width in enumerate(widths) for row in rows)  # field by field
    head = (
        "0".ljust(8)
        + "X X X X".ljust(80)
        + "Startdate 01-JAN-2021 X X X".ljust(80)
        + "01.01.21"
        + "22.00.00"
        + f"{256 * (1 + len(signals))}".ljust(8)
        + kind.ljust(44)
        + f"{seconds}".ljust(8)
        + "1".ljust(8)
        + f"{len(signals)}".ljust(4)
    )
    records = []
    for k in range(seconds):
        text = f"{record_start + k + (gap[1] if k >= gap[0] else 0.0):+g}\x14\x14\x00"
        if k < len(tals):
            onset, duration, words = tals[k]
            text += f"{onset:+g}\x15{duration:g}\x14{words}\x14\x00"
        record = text.encode().ljust(120, b"\x00")
        if eeg is not None:
            digital = np.clip(np.round((eeg[100 * k : 100 * (k + 1)] + 500) * 65.535 - 32768), -32768, 32767).astype(
                "<i2"
            )
            record += digital.tobytes()
        records.append(record)
    path.write_bytes((head + fields).encode() + b"".join(records))
    return path


# ------------------------------------------------------------------------------------------- 1 Profusion drop
def test_profusion_desaturation_drop_gives_the_nsrr_ahi(tmp_path):
    """Hypopnea A followed by a 5 % desaturation, hypopnea B by a 2 % one: the 3 %/arousal and 4 % rules both
    count A only, from a Profusion XML (`LowestSpO2` + `Desaturation`, the drop) as from NSRR XML (`SpO2Nadir` +
    `SpO2Baseline`)."""
    respiratory = "Respiratory|Respiratory"
    write_xml(
        tmp_path / "n-nsrr.xml",
        stage_events(STAGES)
        + [
            (respiratory, "Hypopnea|Hypopnea", 100.0, 15.0),
            (respiratory, "SpO2 desaturation|SpO2 desaturation", 110.0, 15.0, 90.0, 95.0),
            (respiratory, "Hypopnea|Hypopnea", 400.0, 15.0),
            (respiratory, "SpO2 desaturation|SpO2 desaturation", 410.0, 15.0, 93.0, 95.0),
        ],
    )
    _profusion(
        tmp_path / "p-profusion.xml",
        [
            "<Name>Hypopnea</Name><Start>100</Start><Duration>15</Duration>",
            "<LowestSpO2>90</LowestSpO2><Desaturation>5</Desaturation><Name>SpO2 desaturation</Name>"
            "<Start>110</Start><Duration>15</Duration>",
            "<Name>Hypopnea</Name><Start>400</Start><Duration>15</Duration>",
            "<Name>SpO2 desaturation</Name><Start>410</Start><Duration>15</Duration><LowestSpO2>93</LowestSpO2>"
            "<Desaturation>2</Desaturation>",
        ],
    )
    one_per_hour = events_per_hour(1, SLEEP_EPOCHS)
    for name in ("n-nsrr.xml", "p-profusion.xml"):
        summary = _summary(tmp_path / name)
        assert summary["ahi_a0h3a"] == summary["ahi_a0h4"] == pytest.approx(one_per_hour), name
        assert summary["ahi_all"] == pytest.approx(2 * one_per_hour), name
    desaturations = [e for e in read_annotations(tmp_path / "p-profusion.xml").events if e["type"] == "desaturation"]
    assert [(e["spo2_nadir"], e["spo2_baseline"]) for e in desaturations] == [(90.0, 95.0), (93.0, 95.0)]


# ------------------------------------------------------------------------------------------- 2 event names
@pytest.mark.parametrize(
    "concept, kind",
    [
        ("Obstructive hypopnea|Obstructive Hypopnea", "hypopnea"),
        ("Central hypopnea|Central Hypopnea", "hypopnea"),
        ("Mixed hypopnea|Mixed Hypopnea", "hypopnea"),
        ("Obstructive Hypopnea", "hypopnea"),
        ("CENTRAL  HYPOPNEA", "hypopnea"),
        ("Apnea|Apnea", "obstructive_apnea"),
        ("Obstructive_Apnea", "obstructive_apnea"),
        ("Oxygen Desaturation", "desaturation"),
        ("SpO2 desaturation", "desaturation"),
        ("Desaturation", "desaturation"),
        ("SpO2 artifact|SpO2 artifact", "other"),
        ("Unsure|Unsure", "other"),
    ],
)
def test_event_names_of_other_scorers(concept, kind):
    assert event_type(concept) == kind


def test_hypopnea_subtypes_and_unspecified_apnea_count_in_labels_and_ahi(tmp_path):
    """A night whose only respiratory events are NSRR hypopnea subtypes and an apnea of no stated type: both labels
    and every AHI count them (one apnea, three hypopneas, none of them qualified by a desaturation)."""
    respiratory = "Respiratory|Respiratory"
    write_xml(
        tmp_path / "n-nsrr.xml",
        stage_events(STAGES)
        + [
            (respiratory, "Obstructive hypopnea|Obstructive Hypopnea", 95.0, 20.0),
            (respiratory, "Central hypopnea|Central Hypopnea", 305.0, 20.0),
            (respiratory, "Mixed hypopnea|Mixed Hypopnea", 485.0, 20.0),
            (respiratory, "Apnea|Apnea", 400.0, 20.0),
        ],
    )
    labels = epoch_labels(read_annotations(tmp_path / "n-nsrr.xml"), len(STAGES))
    assert np.flatnonzero(labels["hypopnea"]).tolist() == [3, 10, 16]
    assert np.flatnonzero(labels["apnea"]).tolist() == [13]
    summary = _summary(tmp_path / "n-nsrr.xml")
    assert (summary["n_hypopnea"], summary["n_obstructive_apnea"]) == (3, 1)
    assert summary["ahi_a0h4"] == pytest.approx(events_per_hour(1, SLEEP_EPOCHS))
    assert summary["ahi_all"] == pytest.approx(events_per_hour(4, SLEEP_EPOCHS))


def test_edf_plus_clinical_event_texts_are_respiratory_scoring(tmp_path):
    """EDF+ texts `Obstructive Hypopnea` and `Oxygen Desaturation` are a hypopnea and a desaturation, so a night
    whose only respiratory event is such a hypopnea reads as scored (not "not scored") and counts it."""
    tals = [(30.0 * k, 30.0, EDF_STAGE[s]) for k, s in enumerate(STAGES)]
    tals += [(95.0, 20.0, "Obstructive Hypopnea"), (100.0, 20.0, "Oxygen Desaturation")]
    path = _edf_plus(tmp_path / "e-Hypnogram.edf", sorted(tals))
    annotations = read_annotations(path)
    assert annotations.events_scored
    labels = epoch_labels(annotations, len(STAGES))
    assert np.flatnonzero(labels["hypopnea"]).tolist() == [3]
    assert np.flatnonzero(labels["desaturation"]).tolist() == [3]
    assert _summary(path)["ahi_a0h3a"] == pytest.approx(events_per_hour(1, SLEEP_EPOCHS))


# ------------------------------------------------------------------------------------------- 3 EDF+ record start
@pytest.mark.parametrize("record_start", [20.0, 0.5])
def test_edf_plus_onsets_count_from_the_first_data_record(tmp_path, record_start):
    """The samples begin at the first data record's time-keeping onset, the annotation onsets count from the header's
    start time: an embedded scoring and an annotation-only hypnogram of the same header start are both read in
    seconds from the first sample (20 s late would shift every stage by one epoch)."""
    seconds = 30 * len(STAGES)
    eeg = np.random.default_rng(0).normal(0.0, 5.0, 100 * seconds)
    t = np.arange(100 * 30) / 100
    eeg[100 * 30 * 10 : 100 * 30 * 11] += 100 * np.sin(2 * np.pi * 10 * t)  # a burst in epoch 10 (REM)
    tals = [(record_start + 30.0 * k, 30.0, EDF_STAGE[s]) for k, s in enumerate(STAGES)]
    tals.append((record_start + 95.0, 20.0, "Obstructive Apnea"))
    recording = _edf_plus(tmp_path / "r.edf", sorted(tals), record_start, eeg)
    hypnogram = _edf_plus(tmp_path / "r-Hypnogram.edf", sorted(tals), record_start=7.0)  # no samples: start moot
    header = read_edf_header(recording)
    for scoring in (recording, hypnogram):
        annotations = read_annotations(scoring, header)
        assert annotations.stage_start.tolist() == pytest.approx([30.0 * k for k in range(len(STAGES))])
        assert [e["start_s"] for e in annotations.events] == pytest.approx([95.0])
        assert epoch_labels(annotations, len(STAGES))["stage"].tolist() == STAGES, scoring.name
    # the report's clock: the first sample's time, the header's 22:00:00 plus the record start
    assert recording_start(recording) == datetime.datetime(2021, 1, 1, 22, 0, 0) + datetime.timedelta(
        seconds=record_start
    )
    night = process_recording(recording, recording)  # the signal and its labels, as the parser writes them
    power = np.mean(night.channels["eeg_c4"].epochs.astype(np.float64) ** 2, axis=1)
    assert int(np.argmax(power)) == 10 and night.labels["stage"][10] == 4
    assert night.labels["stage"].tolist() == STAGES and night.labels["apnea"].tolist()[3] == 1


# ------------------------------------------------------------------------------------------- 4 Profusion UTF-16
def test_profusion_xml_is_recognised_in_any_encoding(tmp_path):
    """The root element, not a byte search, says Profusion: UTF-16 (byte-order mark and declaration) and a
    namespaced root are read as Profusion; a file that is not XML is a clear error."""
    apnea = "<Name>Obstructive Apnea</Name><Start>95</Start><Duration>20</Duration>"
    utf16 = _profusion(tmp_path / "u-profusion.xml", [apnea], encoding="utf-16")
    spaced = tmp_path / "s.xml"
    spaced.write_text(
        _profusion(tmp_path / "plain.xml", [apnea])
        .read_text()
        .replace("<CMPStudyConfig>", '<c:CMPStudyConfig xmlns:c="urn:compumedics">')
        .replace("</CMPStudyConfig>", "</c:CMPStudyConfig>")
    )
    for path in (utf16, spaced):
        assert annotation_format(path) == "profusion", path.name
        labels = epoch_labels(read_annotations(path), len(STAGES))
        assert labels["stage"].tolist() == STAGES and np.flatnonzero(labels["apnea"]).tolist() == [3], path.name
    garbage = tmp_path / "g-profusion.xml"
    garbage.write_bytes(b"\x00\x01 not xml")
    with pytest.raises(XmlError, match="malformed XML") as err:
        read_annotations(garbage)
    assert str(garbage) in str(err.value)


# ------------------------------------------------------------------------------------------- EDF+D
def test_edf_plus_d_without_a_gap_is_read_as_continuous_and_with_one_is_refused(tmp_path):
    """Many recorders write EDF+D by default: one whose data records follow each other gives the same samples and
    stages as its EDF+C twin (with a warning); a gap is one EdfError saying where, never a silent shift."""
    eeg = 100.0 * np.sin(2 * np.pi * 0.5 * np.arange(100 * 30 * len(STAGES)) / 100.0)
    tals = [(30.0 * i, 30.0, EDF_STAGE[stage]) for i, stage in enumerate(STAGES)]
    twin = read_edf_header(_edf_plus(tmp_path / "c.edf", tals, eeg=eeg))
    plus_d = read_edf_header(_edf_plus(tmp_path / "d.edf", tals, eeg=eeg, kind="EDF+D"))
    assert any("EDF+D without a gap" in w for w in plus_d.warnings) and not twin.warnings
    assert np.array_equal(read_digital(plus_d, plus_d.signals[1]), read_digital(twin, twin.signals[1]))
    stages = [epoch_labels(read_annotations(tmp_path / n), len(STAGES))["stage"] for n in ("c.edf", "d.edf")]
    assert stages[0].tolist() == stages[1].tolist() == STAGES
    with pytest.raises(EdfError, match=r"gap: data record 10 starts at 15 s, \+5 s from where"):
        read_edf_header(_edf_plus(tmp_path / "g.edf", tals, eeg=eeg, kind="EDF+D", gap=(10, 5.0)))


def test_the_report_clock_takes_the_edf_plus_four_digit_year(tmp_path):
    """EDF's dd.mm.yy ends at 2084; an EDF+ recording field's "Startdate dd-MMM-yyyy" carries the year beyond."""
    recording = _edf_plus(tmp_path / "r.edf", [(0.0, 30.0, "Sleep stage W")], eeg=np.zeros(100 * 30 * len(STAGES)))
    data = bytearray(recording.read_bytes())
    data[88:109] = b"Startdate 02-MAR-2086"
    data[168:176] = b"02.03.yy"  # the EDF+ spec's field for a year after 2084
    recording.write_bytes(bytes(data))
    assert recording_start(recording) == datetime.datetime(2086, 3, 2, 22, 0, 0)
