"""Every annotation format gives the labels of the NSRR XML of the same night (a scoring of stages only leaves the
events "not scored"); start times across midnight; pairing and subject-id rules."""

from __future__ import annotations

import datetime
import math
import shutil

import numpy as np
import pandas as pd
import pytest

from dataset.annotations import annotation_keys, check_subject_regex, parse_hypnogram_text, read_annotations, subject_of
from dataset.cohort import scan_recording
from dataset.constants import EVENT_TYPES, LABEL_EVENT_COLUMNS
from dataset.data_parser import parse_cohort
from dataset.discovery import discover
from dataset.edf_reader import read_edf_header
from dataset.labels import LABEL_COLUMNS, epoch_labels, epoch_stages
from dataset.nsrr_xml import XmlError
from dataset.signal_processing import process_recording
from dataset.synthetic import generate_night
from dataset.synthetic_writers import write_hypnogram_edf, write_scoring
from downstream.night_inputs import night_inputs
from tests.parser_nights import make_night, parse, read_table

STAGE_ONLY = ("txt", "csv")


@pytest.fixture(scope="module")
def night(tmp_path_factory):
    """One 1-h night with events and unscored epochs, its NSRR XML labels and the night's scoring in each format."""
    root = tmp_path_factory.mktemp("formats")
    truth = generate_night(
        root / "shhs1-200001.edf", root / "shhs1-200001-nsrr.xml", "shhs1-200001", 1.0, 3, unscored_epochs=6
    )
    assert truth.events and (truth.stages == -1).any()
    n = len(truth.stages)
    reference = epoch_labels(read_annotations(truth.xml_path), n)
    files = {
        fmt: write_scoring(truth, root / "other" / f"night.{fmt}", fmt) for fmt in ("profusion", "edf", "txt", "csv")
    }
    return truth, reference, files


@pytest.mark.parametrize("fmt", ["profusion", "edf", "txt", "csv"])
def test_each_format_gives_the_nsrr_labels(night, fmt):
    truth, reference, files = night
    header = read_edf_header(truth.edf_path)
    labels = epoch_labels(read_annotations(files[fmt], header), len(truth.stages))
    np.testing.assert_array_equal(labels["stage"], truth.stages)
    columns = ("stage",) if fmt in STAGE_ONLY else LABEL_COLUMNS
    for name in columns:
        np.testing.assert_array_equal(labels[name], reference[name], err_msg=f"{fmt}: {name}")
    if fmt in STAGE_ONLY:  # stages only: every event column "not scored", never "no event"
        for name in LABEL_EVENT_COLUMNS:
            assert (labels[name] == -1).all() and np.isnan(labels[f"{name}_s"]).all(), name


def test_which_scorings_hold_events(tmp_path):
    """Events count as scored for a Profusion XML with a ScoredEvents element (even an empty one) and an EDF+ file
    with an apnea or hypopnea; a Profusion file without ScoredEvents, an EDF+ file of stages and markers or
    arousals only, and a hypnogram text hold no respiratory scoring: event labels "not scored" (-1, NaN)."""
    stages = "<SleepStages><SleepStage>0</SleepStage><SleepStage>2</SleepStage></SleepStages>"
    (tmp_path / "a-profusion.xml").write_text(f"<CMPStudyConfig>{stages}</CMPStudyConfig>")
    (tmp_path / "b-profusion.xml").write_text(f"<CMPStudyConfig><ScoredEvents/>{stages}</CMPStudyConfig>")
    runs = [("Sleep stage W", 0.0, 30.0), ("Sleep stage 2", 30.0, 30.0)]
    write_hypnogram_edf(tmp_path / "c-Hypnogram.edf", [*runs, ("Lights off", 0.0, 1.0)], datetime.time(22))
    write_hypnogram_edf(tmp_path / "d-Hypnogram.edf", [*runs, ("Arousal", 40.0, 10.0)], datetime.time(22))
    write_hypnogram_edf(
        tmp_path / "f-Hypnogram.edf", [*runs, ("Arousal", 40.0, 10.0), ("Hypopnea", 35.0, 12.0)], datetime.time(22)
    )
    (tmp_path / "e.hypnogram.txt").write_text("W\nN2\n")
    # an arousal alone does not show that the night was scored for apneas: "not scored", never an AHI of 0
    arousal = {"a-profusion.xml": None, "b-profusion.xml": [0, 0], "c-Hypnogram.edf": None, "d-Hypnogram.edf": None}
    arousal["f-Hypnogram.edf"] = [0, 1]
    for name, flags in {**arousal, "e.hypnogram.txt": None}.items():
        annotations = read_annotations(tmp_path / name)
        labels = epoch_labels(annotations, 2)
        assert annotations.events_scored is (flags is not None) and labels["stage"].tolist() == [0, 2], name
        assert labels["arousal"].tolist() == (flags or [-1, -1]), name
        assert bool(np.isnan(labels["arousal_s"]).all()) is (flags is None), name


def test_a_stage_only_night_is_parsed_with_its_events_not_scored(tmp_path):
    """An EDF with a hypnogram text: the stages are written, every event column is "not scored", the manifest's
    event counts and AHIs are unknown (sleep time is known), and the event tasks find no label in the night."""
    make_night(tmp_path / "src", "h-001", stages=[0, 0, 2, 2], xml=False)
    (tmp_path / "src" / "h-001.hypnogram.txt").write_text("W\nW\nN2\nN2\n")
    row = parse(tmp_path / "src", tmp_path / "dst").iloc[0]
    table = read_table(tmp_path / "dst", "h-001")
    assert row["status"] == "ok" and table["stage"].tolist() == [0, 0, 2, 2]
    for name in LABEL_EVENT_COLUMNS:
        assert table[name].tolist() == [-1] * 4 and table[f"{name}_s"].isna().all(), name
    assert all(pd.isna(row[f"n_{name}"]) for name in EVENT_TYPES)
    assert all(np.isnan(row[c]) for c in ("ahi_scored", "ahi_a0h3a", "ahi_a0h4", "ahi_all")) and row["tst_min"] == 1.0
    path = tmp_path / "dst" / "recordings" / "h-001.parquet"
    for task, rule in (("apnea", "midpoint"), ("hypopnea", "any"), ("apnea", "min_s:10")):
        assert scan_recording(path, "h-001", "001", task, rule)[1].tolist() == [-1] * 4, (task, rule)
    assert scan_recording(path, "h-001", "001", "sleep_stage", "midpoint")[1].tolist() == [0, 0, 2, 2]


@pytest.mark.parametrize(
    "recording_day, hypnogram_day, warned",
    [(None, None, True), (1, 1, True), (1, 2, False), (1, 9, True)],
    ids=["dates-unknown", "dates-equal", "next-day", "days-apart"],
)
def test_a_hypnogram_started_after_midnight_follows_the_recording(tmp_path, recording_day, hypnogram_day, warned):
    """Recording 23:59:50, Sleep-EDF hypnogram 00:00:20: the scoring starts 30 s in. With unknown or equal
    (anonymised) dates, or dates days apart (no night's: a shifted or misread date), the clock difference is
    taken across midnight, and the manifest's warnings say so."""
    from edfio import Edf, EdfAnnotation, EdfSignal, Recording

    def write(path, day, clock, signals=(), annotations=()):  # day of January 2001, None: date unknown
        recording = Recording(startdate=datetime.date(2001, 1, day)) if day else None
        Edf(list(signals), recording=recording, starttime=clock, annotations=annotations).write(path)

    edf, hypnogram = tmp_path / "SC4001E0-PSG.edf", tmp_path / "SC4001EC-Hypnogram.edf"
    eeg = EdfSignal(np.random.default_rng(0).normal(0, 20, 100 * 600), 100, label="EEG", physical_range=(-200, 200))
    write(edf, recording_day, datetime.time(23, 59, 50), signals=[eeg])
    stages = [EdfAnnotation(0, 300, "Sleep stage W"), EdfAnnotation(300, 600, "Sleep stage 2")]
    write(hypnogram, hypnogram_day, datetime.time(0, 0, 20), annotations=stages)
    assert read_annotations(hypnogram, read_edf_header(edf)).stage_start.tolist() == [30.0, 330.0]
    night = process_recording(edf, hypnogram)
    assert night.labels["stage"].tolist() == [-1] + [0] * 10 + [2] * 9
    assert ("across midnight" in night.info["warnings"]) is warned


@pytest.mark.parametrize(
    "date, clock, edf_clock, start, warned",
    [
        (b"00.00.00", None, None, 30.0, False),
        (b"        ", None, None, 30.0, False),
        (None, b"22:00:30", None, 30.0, False),
        (None, b"22.00.3x", None, 0.0, True),
        (None, b"00.00.00", None, 0.0, True),
        (None, None, b"00.00.00", 0.0, True),
        (None, b"00.00.00", b"23.59.30", 30.0, False),
    ],
    ids=[
        "date-zeros",
        "date-blank",
        "time-with-colons",
        "time-unreadable",
        "time-zeros",
        "recording-time-zeros",
        "time-zeros-at-midnight",
    ],
)
def test_a_hypnogram_with_an_odd_start_field_keeps_its_clock(tmp_path, date, clock, edf_clock, start, warned):
    """Recording 22:00:00, hypnogram 22:00:30: an unreadable start DATE (00.00.00, blank) is an unknown date, so
    the clock difference still places the scoring 30 s in; a time written with colons is read; an unreadable
    time puts the scoring at the recording's start and says so, as does a time of 00.00.00 in one of the files
    (an anonymiser's "not kept": taken as midnight it would shift every stage by 22 h, wrapped to -2 h), unless
    the other clock is within a minute of midnight (a scoring started at midnight, 30 s after its recording)."""
    from edfio import Edf, EdfAnnotation, EdfSignal

    edf, hypnogram = tmp_path / "SC4002E0-PSG.edf", tmp_path / "SC4002EC-Hypnogram.edf"
    eeg = EdfSignal(np.random.default_rng(0).normal(0, 20, 100 * 600), 100, label="EEG", physical_range=(-200, 200))
    Edf([eeg], starttime=datetime.time(22, 0, 0)).write(edf)
    stages = [EdfAnnotation(0, 300, "Sleep stage W"), EdfAnnotation(300, 600, "Sleep stage 2")]
    Edf([], starttime=datetime.time(22, 0, 30), annotations=stages).write(hypnogram)
    for path in (edf, hypnogram):  # the start date (bytes 168-176) of both, the start time (176-184) of the scoring
        data = bytearray(path.read_bytes())
        if date is not None:
            data[168:176] = date
        if clock is not None and path == hypnogram:
            data[176:184] = clock
        if edf_clock is not None and path == edf:
            data[176:184] = edf_clock
        path.write_bytes(bytes(data))
    annotations = read_annotations(hypnogram, read_edf_header(edf))
    assert annotations.stage_start.tolist() == [start, start + 300.0]
    assert any("unreadable" in w or "not kept" in w for w in annotations.warnings) is warned


def test_edf_annotations_follow_the_recording_start(night, tmp_path):
    """A separate annotation EDF+ that starts 60 s after the recording has its onsets shifted by 60 s."""
    from edfio import Edf, EdfAnnotation

    truth, _, _ = night
    header = read_edf_header(truth.edf_path)
    start = datetime.datetime.strptime(header.starttime, "%H.%M.%S") + datetime.timedelta(seconds=60)
    path = tmp_path / "late-Hypnogram.edf"
    Edf([], starttime=start.time(), annotations=[EdfAnnotation(0, 30, "Sleep stage 2")]).write(path)
    annotations = read_annotations(path, header)
    assert annotations.stage_start.tolist() == [60.0] and annotations.stage_class.tolist() == [2]


def test_embedded_edf_plus_annotations_are_paired_and_parsed(tmp_path):
    """An EDF+C recording with stage annotations of its own and no other file is labelled from them."""
    from dataset.synthetic_layouts import SHHS1_LAYOUT
    from dataset.synthetic_writers import write_edf

    signals = {key: np.zeros(int(rate) * 300) for key, _, rate, *_ in SHHS1_LAYOUT}
    signals["eeg_c4"] = np.random.default_rng(0).normal(0, 20, 125 * 300)
    stages = [(0, 90, "Sleep stage W"), (90, 120, "Sleep stage 2"), (210, 60, "Sleep stage R"), (270, 30, "A")]
    write_edf(tmp_path / "own-1.edf", [SHHS1_LAYOUT[7]], signals, datetime.time(22, 0), stages)
    (job,) = discover(tmp_path)
    assert job.xml == job.edf
    annotations = read_annotations(job.xml, read_edf_header(job.edf))
    labels = epoch_labels(annotations, 10)
    assert labels["stage"].tolist() == [0, 0, 0, 2, 2, 2, 2, 4, 4, -1]
    assert [e["concept"] for e in annotations.events] == ["A"]  # a bare code is an event, not a stage


def test_malformed_embedded_annotations_fail_the_night_by_name(tmp_path):
    """An EDF+C recording whose own annotation signal is malformed is a failed night naming the fault, not a
    night "without an annotation file" that --allow-unscored would write unlabelled."""
    from dataset.synthetic_layouts import SHHS1_LAYOUT
    from dataset.synthetic_writers import write_edf

    src = tmp_path / "src"
    src.mkdir()
    signals = {key: np.zeros(int(rate) * 300) for key, _, rate, *_ in SHHS1_LAYOUT}
    signals["eeg_c4"] = np.random.default_rng(0).normal(0, 20, 125 * 300)
    stages = [(0, 90, "Sleep stage W"), (90, 120, "Sleep stage 2"), (210, 90, "Sleep stage R")]
    write_edf(src / "own-2.edf", [SHHS1_LAYOUT[7]], signals, datetime.time(22, 0), stages)
    data = (src / "own-2.edf").read_bytes()
    assert data.count(b"+90\x15") == 1
    (src / "own-2.edf").write_bytes(data.replace(b"+90\x15", b"+9x\x15"))
    (job,) = discover(src)
    assert job.xml == job.edf
    for allow_unscored in (False, True):
        row = parse(src, tmp_path / f"dst{allow_unscored}", allow_unscored=allow_unscored).iloc[0]
        assert row["status"] == "failed" and "malformed EDF+ annotation" in row["reason"], row.to_dict()
    (night,) = night_inputs(src)  # its own scoring still: predict.py reads it and notes why there is no agreement
    assert night.edf == src / "own-2.edf" and night.xml == night.edf and not night.problem


def test_hypnogram_codes_and_errors(tmp_path):
    rk = tmp_path / "a.hypnogram.txt"
    rk.write_text("# R&K codes\n0\n1\n2\n3\n4\n5\n9\n?\nREM\nN4\n")
    assert parse_hypnogram_text(rk).stage_class.tolist() == [0, 1, 2, 3, 3, 4, -1, -1, 4, 3]
    yasa = tmp_path / "hypnogram-yasa.txt"  # as downstream/predict.py writes: 4 = REM, -2 unscored
    yasa.write_text("0\n4\n-2\n3\n")
    assert parse_hypnogram_text(yasa).stage_class.tolist() == [0, 4, -1, 3]
    bad = tmp_path / "b.hypnogram.csv"
    bad.write_text("epoch;stage\n0;W\n1;deep\n")
    with pytest.raises(XmlError, match=r"b.hypnogram.csv: line 3: unknown stage 'deep'"):
        parse_hypnogram_text(bad)
    nocol = tmp_path / "c.hypnogram.csv"
    nocol.write_text("epoch,label2\n0,W\n")
    with pytest.raises(XmlError, match="no stage column"):
        parse_hypnogram_text(nocol)


@pytest.mark.parametrize(
    "data",
    [
        "# Patient: Müller\nW\nN2\nR\n".encode("latin-1"),  # a comment in another encoding
        "\ufeff# Patient: Müller\nW\nN2\nR\n".encode("utf-8"),  # UTF-8 with its byte-order mark
        "# Patient: Müller\r\nW\r\nN2\r\nR\r\n".encode("utf-16"),  # a spreadsheet's "Unicode text"
    ],
)
def test_a_hypnogram_in_another_encoding_reads(tmp_path, data):
    path = tmp_path / "a.hypnogram.txt"
    path.write_bytes(data)
    assert parse_hypnogram_text(path).stage_class.tolist() == [0, 2, 4]


def test_a_garbled_stage_token_is_refused(tmp_path):
    path = tmp_path / "a.hypnogram.txt"
    path.write_bytes("W\nN2\nRÉM\n".encode("latin-1"))
    with pytest.raises(XmlError, match="line 3: unknown stage"):
        parse_hypnogram_text(path)


def test_a_hypnogram_csv_is_placed_by_its_own_time_column(tmp_path):
    """A delimited hypnogram with an onset column (BIDS `onset`, predict.py's `start_s`) places each row at its
    onset: scored from lights-off at 120 s, its first stage labels the fifth epoch, not the first. An epoch
    column alone must count the rows; one that skips an epoch is refused rather than read row by row."""
    late = tmp_path / "d.hypnogram.csv"
    late.write_text("onset,duration,stage\n120,30,N2\n150,30,N3\n180,30,R\n")
    parsed = parse_hypnogram_text(late)
    assert parsed.stage_start.tolist() == [120.0, 150.0, 180.0] and parsed.stage_class.tolist() == [2, 3, 4]
    own = tmp_path / "e.hypnogram.csv"  # the columns of downstream/predict.py's hypnogram.csv
    own.write_text("epoch,start_s,time,stage\n0,0,22:00:00,W\n1,30,22:00:30,N1\n")
    assert parse_hypnogram_text(own).stage_start.tolist() == [0.0, 30.0]
    counted = tmp_path / "f.hypnogram.csv"
    counted.write_text("epoch;stage\n1;W\n2;N1\n3;N2\n")
    assert parse_hypnogram_text(counted).stage_start.tolist() == [0.0, 30.0, 60.0]
    for text, match in (
        ("epoch,stage\n0,W\n2,N1\n", "without a gap"),
        ("epoch,stage\n5,W\n6,N1\n", "without a gap"),
        ("onset,stage\n0,W\nlater,N1\n", "line 3: column 'onset' is 'later'"),
    ):
        odd = tmp_path / "g.hypnogram.csv"
        odd.write_text(text)
        with pytest.raises(XmlError, match=match):
            parse_hypnogram_text(odd)


def test_a_hypnogram_csv_of_runs_spans_each_rows_duration(tmp_path):
    """A row with a duration is a run of epochs (Sleep-EDF's stage runs written as CSV); without an onset column the
    runs follow each other. YASA's string export (`ART`, `UNS`) reads as unscored."""
    expected = [0, 0, 0, 1, 1, 2, 2, 2, 2, 4]
    for name, text in (
        ("a", "onset,duration,stage\n0,90,W\n90,60,N1\n150,120,N2\n270,30,R\n"),
        ("b", "duration;stage\n90;W\n60;N1\n120;N2\n30;R\n"),
    ):
        runs = tmp_path / f"{name}.hypnogram.csv"
        runs.write_text(text)
        parsed = parse_hypnogram_text(runs)
        stages = epoch_stages(parsed.stage_start, parsed.stage_duration, parsed.stage_class, 10)
        assert stages.tolist() == expected, name
    yasa = tmp_path / "c.hypnogram.csv"
    yasa.write_text("Epoch,Stage\n0,WAKE\n1,ART\n2,UNS\n3,N2\n")
    assert parse_hypnogram_text(yasa).stage_class.tolist() == [0, -1, -1, 2]
    unstated = tmp_path / "e.hypnogram.csv"  # BIDS: a duration not given (n/a, 0) is one epoch
    unstated.write_text("onset\tduration\tstage\n0\tn/a\tW\n30\t0\tN1\n60\t\tN2\n")
    assert parse_hypnogram_text(unstated).stage_duration.tolist() == [30.0, 30.0, 30.0]
    for text, match in (
        ("onset,duration,stage\n0,-30,W\n", "line 2: column 'duration' is '-30', expected a number >= 0"),
        ("epoch,duration,stage\n0,60,W\n1,30,N1\n", "last other than 30 s"),
    ):
        odd = tmp_path / "d.hypnogram.csv"
        odd.write_text(text)
        with pytest.raises(XmlError, match=match):
            parse_hypnogram_text(odd)


def test_pairing_prefers_formats_in_order_and_sleep_edf_prefix(tmp_path):
    for name in (
        "r1.edf",
        "r1-profusion.xml",
        "r1.hypnogram.csv",
        "r2.edf",
        "r2.hypnogram.txt",
        "r2.xml",
        "SC4001E0-PSG.edf",
        "SC4001EC-Hypnogram.edf",
        "SC4002E0-PSG.edf",
        "SC4002EH-Hypnogram.edf",
        "SC4011E0-PSG.edf",
        "SC4011EC-Hypnogram.edf",
        "SC4011EX-Hypnogram.edf",
        "lonely-profusion.xml",
        "notes.xml",
    ):
        (tmp_path / name).write_bytes(b"")
    jobs = {j.recording_id: j for j in discover(tmp_path)}
    assert jobs["r1"].xml.endswith("r1-profusion.xml") and jobs["r2"].xml.endswith("r2.hypnogram.txt")
    assert jobs["SC4001E0-PSG"].xml.endswith("SC4001EC-Hypnogram.edf")
    assert jobs["SC4002E0-PSG"].xml.endswith("SC4002EH-Hypnogram.edf")
    assert "ambiguous annotation files" in jobs["SC4011E0-PSG"].problem  # two hypnograms share the prefix
    assert jobs["SC4001E0-PSG"].subject_id == jobs["SC4002E0-PSG"].subject_id == "SC00"
    assert jobs["SC4001E0-PSG"].cohort == "sleep-edf-sc"
    assert jobs["lonely"].edf is None and "notes" not in jobs  # a bare unpaired .xml is not a recording
    assert not any("Hypnogram" in j.recording_id for j in jobs.values())  # annotation EDFs are never recordings
    assert annotation_keys("shhs1-1.edf")[0] == "shhs1-1-nsrr.xml"


def test_subject_id_rules():
    assert subject_of("shhs1-200001") == "200001"
    assert subject_of("SC4012E0-PSG") == "SC01" and subject_of("ST7022J0-PSG") == "ST02"
    runs = ("sub-01_ses-1_task-sleep_run-1_eeg", "sub-01_ses-2_task-sleep_run-2_eeg", "sub-01")
    assert {subject_of(name) for name in runs} == {"01"}  # BIDS: every session and run of one participant
    assert subject_of("sub-mesa-0001") == "0001"  # not a BIDS name: the NSRR rule
    assert subject_of("site3_pt0042_night2", check_subject_regex(r"pt(\d+)")) == "0042"
    with pytest.raises(ValueError, match="exactly one group"):
        check_subject_regex(r"(a)(b)")
    with pytest.raises(ValueError, match="does not match"):
        subject_of("abc", r"pt(\d+)")


def test_subject_regex_in_the_parser(tmp_path, night):
    """--subject-regex names the subject; a recording it does not match fails with the reason."""
    truth, _, _ = night
    src = tmp_path / "src"
    src.mkdir()
    for rid in ("clinicA_pt07_n1", "other"):
        shutil.copy(truth.edf_path, src / f"{rid}.edf")
        shutil.copy(truth.xml_path, src / f"{rid}-nsrr.xml")
    manifest = parse_cohort(src, tmp_path / "out", progress=False, subject_regex=r"_pt(\d+)_").set_index("recording_id")
    assert manifest.loc["clinicA_pt07_n1", "subject_id"] == "07" and manifest.loc["clinicA_pt07_n1", "status"] == "ok"
    assert manifest.loc["other", "status"] == "failed" and "does not match" in manifest.loc["other", "reason"]


def test_edf_annotation_times_that_cannot_place_a_label_fail_the_night(tmp_path, monkeypatch):
    """MNE's point annotations (0 s) of stages cover one epoch each; an apnea without a duration, a time that is
    not a finite number and a Profusion EpochLength of 0 each fail with the fault named, never mislabel epochs."""
    import dataset.annotations as annotations

    points = tmp_path / "p-Hypnogram.edf"
    write_hypnogram_edf(points, [("Sleep stage W", 0.0, 0.0), ("Sleep stage 2", 30.0, 0.0)], datetime.time(22))
    parsed = read_annotations(points)
    assert parsed.stage_class.tolist() == [0, 2] and parsed.stage_duration.tolist() == [30.0, 30.0]
    apnea = tmp_path / "a-Hypnogram.edf"
    write_hypnogram_edf(apnea, [("Sleep stage 2", 0.0, 60.0), ("Obstructive Apnea", 10.5, None)], datetime.time(22))
    with pytest.raises(XmlError, match=r"event 'Obstructive Apnea' at 10.5 s has no duration"):
        read_annotations(apnea)
    for duration in (math.nan, math.inf):
        monkeypatch.setattr(annotations, "edf_annotation_texts", lambda header, d=duration: [(0.0, d, "Sleep stage R")])
        with pytest.raises(XmlError, match=f"stage 'Sleep stage R' at 0 s has Duration {duration}"):
            read_annotations(points)
    epoch0 = tmp_path / "z-profusion.xml"
    epoch0.write_text(
        "<CMPStudyConfig><EpochLength>0</EpochLength><SleepStages><SleepStage>2</SleepStage>"
        "</SleepStages></CMPStudyConfig>"
    )
    with pytest.raises(XmlError, match="EpochLength is '0', expected a number of seconds > 0"):
        read_annotations(epoch0)
