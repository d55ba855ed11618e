"""The EDF reader (checked against edfio), the NSRR XML reader and the per-epoch label rules."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from edfio import Edf, EdfAnnotation, EdfSignal, read_edf

from dataset.edf_reader import EdfError, read_digital, read_edf_header, read_signal, to_physical
from dataset.labels import covered_seconds, epoch_labels, epoch_stages, merge_intervals, midpoint_flags
from dataset.nsrr_xml import XmlError, event_type, parse_nsrr_xml, stage_class, stage_reading


# ----------------------------------------------------------------------------------------------- EDF reader
def _mixed_edf(path, seconds=6, annotations=False, record_s=None):
    """Signals at 125, 50, 10 and 1 Hz with different physical and digital ranges; returns what edfio wrote."""
    rng = np.random.default_rng(0)
    signals = [
        EdfSignal(
            rng.uniform(-200, 200, 125 * seconds), 125, label="EEG", physical_dimension="uV", physical_range=(-250, 250)
        ),
        EdfSignal(
            rng.uniform(-1, 1, 50 * seconds),
            50,
            label="EOG(L)",
            physical_dimension="mV",
            physical_range=(-1.2, 1.5),
            digital_range=(-2048, 2047),
        ),
        EdfSignal(rng.uniform(0, 1, 10 * seconds), 10, label="NEW AIR", physical_range=(0, 1), digital_range=(0, 255)),
        EdfSignal(
            rng.uniform(80, 100, 1 * seconds),
            1,
            label="SaO2",
            physical_dimension="%",
            physical_range=(0, 100),
            digital_range=(0, 1000),
        ),
    ]
    kwargs = {"annotations": [EdfAnnotation(1.5, None, "lights off")]} if annotations else {}
    if record_s:
        kwargs["data_record_duration"] = record_s
    Edf(signals, **kwargs).write(path)
    return read_edf(path)


@pytest.mark.parametrize("annotations", [False, True])
def test_reader_matches_edfio_per_signal_at_native_rate(tmp_path, annotations):
    path = tmp_path / "mixed.edf"
    reference = _mixed_edf(path, annotations=annotations)
    header = read_edf_header(path)
    assert header.labels == ["EEG", "EOG(L)", "NEW AIR", "SaO2"]  # annotation signal never offered
    assert not header.truncated and header.n_records == reference.num_data_records
    for expected in reference.signals:
        data, rate = read_signal(header, expected.label)
        assert rate == expected.sampling_frequency
        assert data.shape == expected.data.shape
        np.testing.assert_allclose(data, expected.data, rtol=0, atol=1e-9)


def test_header_fields_padded_with_nul_bytes_read_as_padded_with_spaces(tmp_path):
    """Some writers pad text fields with NUL bytes instead of spaces: the unit "mV" must still read as mV (taken
    as an unknown unit it would be assumed µV, the signal 1000 x too small)."""
    path = tmp_path / "nul.edf"
    _mixed_edf(path)
    raw = bytearray(path.read_bytes())
    ns = 4
    units = 256 + ns * (16 + 80)  # the physical dimension fields follow the labels and transducer types
    eog = slice(units + 8, units + 16)
    assert bytes(raw[eog]) == b"mV      "
    raw[eog] = b"mV" + b"\x00" * 6
    raw[256 : 256 + 16] = b"EEG" + b"\x00" * 13  # a label too
    path.write_bytes(bytes(raw))
    header = read_edf_header(path)
    assert header.labels[0] == "EEG" and header.signals[1].physical_dimension == "mV"


def test_reader_with_long_data_records(tmp_path):
    path = tmp_path / "long_records.edf"
    reference = _mixed_edf(path, seconds=60, record_s=30)
    header = read_edf_header(path)
    assert header.n_records == 2 and float(header.record_duration) == 30
    signal = header.find(["SaO2"])
    assert signal.samples_per_record == 30 and signal.sampling_rate == 1.0
    np.testing.assert_allclose(read_signal(header, "EOG(L)")[0], reference.signals[1].data, atol=1e-9)


def test_labels_match_case_and_whitespace_insensitively_first_alias_wins(tmp_path):
    path = tmp_path / "labels.edf"
    Edf(
        [
            EdfSignal(np.zeros(10), 10, label="eeg  (SEC)"),
            EdfSignal(np.zeros(10), 10, label="EEG2"),
            EdfSignal(np.ones(10), 10, label="EEG", physical_range=(-1, 1)),
            EdfSignal(np.zeros(10), 10, label="EEG", physical_range=(-1, 1)),
        ]
    ).write(path)
    header = read_edf_header(path)
    assert header.find(["EEG(sec)", "EEG (sec)", "EEG2"]).index == 0  # alias order decides, not file order
    assert header.find(["EEG2", "EEG (sec)"]).index == 1
    assert header.find(["EEG"]).index == 2  # first of duplicate labels
    assert header.find(["EMG"]) is None


def _cut(path, n_bytes):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - n_bytes])


def test_cut_final_record_reads_whole_records_and_flags_truncated(tmp_path):
    path = tmp_path / "cut.edf"
    reference = _mixed_edf(path, seconds=6)
    _cut(path, 100)  # part of the last 1-s record
    header = read_edf_header(path)
    assert header.truncated and header.n_records == 5 and header.n_records_header == 6
    data, _ = read_signal(header, "EEG")
    np.testing.assert_allclose(data, reference.signals[0].data[: 5 * 125], atol=1e-9)


@pytest.mark.parametrize(
    "declared, expected_records, truncated", [(b"-1", 6, False), (b"9", 6, True), (b"4", 4, False)]
)
def test_record_count_from_file_size_when_header_is_wrong(tmp_path, declared, expected_records, truncated):
    path = tmp_path / "count.edf"
    _mixed_edf(path, seconds=6)
    raw = bytearray(path.read_bytes())
    raw[236:244] = declared.ljust(8)
    path.write_bytes(bytes(raw))
    header = read_edf_header(path)
    assert header.n_records == expected_records and header.truncated == truncated
    assert read_signal(header, "SaO2")[0].size == expected_records


def test_digital_to_physical_uses_each_signals_gain_and_offset(tmp_path):
    path = tmp_path / "gain.edf"
    Edf(
        [
            EdfSignal(
                np.array([0.0, 25.0, 50.0, 100.0]), 1, label="A", physical_range=(0, 100), digital_range=(0, 200)
            ),
            EdfSignal(np.array([-3.0, 0.0, 1.0, 5.0]), 1, label="B", physical_range=(-5, 5), digital_range=(-100, 100)),
        ]
    ).write(path)
    header = read_edf_header(path)
    a, b = header.find(["A"]), header.find(["B"])
    np.testing.assert_array_equal(read_digital(header, a), [0, 50, 100, 200])
    np.testing.assert_allclose(to_physical(read_digital(header, a), a), [0, 25, 50, 100])
    np.testing.assert_allclose(to_physical(read_digital(header, b), b, scale=1000.0), [-3000, 0, 1000, 5000])


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "empty file"),
        (b"0       " + b" " * 50, "too short"),
        (b"hello, this is not an EDF" * 40, "not an EDF"),
        (b"\xffBIOSEMI" + b" " * 1000, "BDF"),
    ],
)
def test_unreadable_files_raise_edf_error_naming_the_file(tmp_path, content, message):
    path = tmp_path / "bad.edf"
    path.write_bytes(content)
    with pytest.raises(EdfError, match=message) as err:
        read_edf_header(path)
    assert str(path) in str(err.value)


def test_header_without_one_whole_record_is_an_error(tmp_path):
    path = tmp_path / "header_only.edf"
    _mixed_edf(path, seconds=1)
    header_bytes = read_edf_header(path).header_bytes
    path.write_bytes(path.read_bytes()[: header_bytes + 10])
    with pytest.raises(EdfError, match="no complete data record"):
        read_edf_header(path)


# ------------------------------------------------------------------------------------------------ NSRR XML
def _event(kind, concept, start, duration, extra=""):
    return (
        f"<ScoredEvent><EventType>{kind}</EventType><EventConcept>{concept}</EventConcept>"
        f"<Start>{start}</Start><Duration>{duration}</Duration>{extra}</ScoredEvent>"
    )


XML_EVENTS = [
    _event("", "Recording Start Time", 0, 300),
    _event("Stages|Stages", "Wake|0", 0, 60),
    _event("Stages|Stages", "stage 2 SLEEP|2", 60, 90),
    _event("Stages|Stages", "Stage 4 sleep|4", 150, 30),
    _event("Stages|Stages", "REM sleep|5", 180, 30),
    _event("Stages|Stages", "Movement|6", 210, 30),
    _event("Stages|Stages", "Unscored|9", 240, 30),
    _event("Respiratory|Respiratory", "OBSTRUCTIVE APNEA|Obstructive Apnea", 65.5, 12),
    _event(
        "Respiratory|Respiratory",
        "SpO2 desaturation|SpO2 desaturation",
        80,
        9,
        "<SpO2Baseline>96</SpO2Baseline><SpO2Nadir>89</SpO2Nadir>",
    ),
    _event("Arousals|Arousals", "ASDA arousal|Arousal (ASDA)", 100, 5),
    _event("Respiratory|Respiratory", "SpO2 artifact|SpO2 artifact", 0, 300),
]


def _xml(events, newline="\n"):
    body = newline.join(
        [
            '<?xml version="1.0" encoding="UTF-8"?>',
            "<PSGAnnotation>",
            "<EpochLength>30</EpochLength>",
            "<ScoredEvents>",
            *events,
            "</ScoredEvents>",
            "</PSGAnnotation>",
            "",
        ]
    )
    return body.encode()


@pytest.mark.parametrize("newline", ["\n", "\r\n", ""])
def test_xml_parses_lf_crlf_and_one_line_files_alike(tmp_path, newline):
    path = tmp_path / "a-nsrr.xml"
    path.write_bytes(_xml(XML_EVENTS, newline))
    ann = parse_nsrr_xml(path)
    assert ann.epoch_length == 30
    np.testing.assert_array_equal(ann.stage_class, [0, 2, 3, 4, -1, -1])
    assert ann.scored_s == 270
    kinds = [e["type"] for e in ann.events]
    assert kinds == ["obstructive_apnea", "desaturation", "arousal", "other"]  # recording start dropped
    assert ann.events[1]["spo2_nadir"] == 89 and np.isnan(ann.events[0]["spo2_nadir"])
    assert ann.events[0]["start_s"] == 65.5 and ann.events[0]["concept"] == "OBSTRUCTIVE APNEA|Obstructive Apnea"


def test_concept_tables():
    assert [
        stage_class(c)
        for c in (
            "Wake|0",
            "Stage 1 sleep|1",
            "Stage 3 sleep|3",
            "stage 4 sleep|4",
            "REM Sleep|5",
            "Movement|6",
            "Unscored|9",
            "Stage 7 sleep|7",
        )
    ] == [0, 1, 3, 3, 4, -1, -1, -1]
    assert event_type("Central apnea|Central Apnea") == "central_apnea"
    assert event_type("Mixed Apnea|Mixed Apnea") == "mixed_apnea"
    assert event_type("Hypopnea|Hypopnea") == "hypopnea"
    assert event_type("Arousal|Arousal ()") == "arousal"
    assert event_type("Unsure|Unsure") == "other"


@pytest.mark.parametrize(
    "concept, value, how",
    [
        ("REM sleep|5", 4, "exact"),
        ("REM|5", 4, "code"),  # other exporters' names, NSRR's codes
        ("Stage R|5", 4, "code"),
        ("Stage N3|3", 3, "code"),
        ("Stage 4|4", 3, "code"),
        ("Movement Time|6", -1, "code"),
        ("REM sleep", 4, "name"),  # no code
        ("Stage 1 sleep", 1, "name"),
        ("Sleep stage 2", 2, "name"),
        ("wake", 0, "name"),
        ("Stage_R", 4, "name"),
        ("Foo|12", None, "unknown"),
        ("1", None, "unknown"),  # a bare number is a code only after "|"
    ],
)
def test_stage_concepts_written_another_way(concept, value, how):
    assert stage_reading(concept) == (value, how)
    assert stage_class(concept) == (-1 if value is None else value)


def test_stage_concepts_read_by_code_or_name_stage_and_warn(tmp_path):
    path = tmp_path / "a-nsrr.xml"
    events = [
        _event("Stages|Stages", "Wake|0", 0, 30),
        _event("Stages|Stages", "Stage N2|2", 30, 60),
        _event("", "REM sleep", 90, 60),  # no EventType, no code: a stage by its name
        _event("Stages|Stages", "Doze|12", 150, 30),
        _event("Respiratory|Respiratory", "Hypopnea|Hypopnea", 40, 12),
        _event("Technician Notes|Technician Notes", "Wake|Wake", 35, 1),  # a note, not a stage
        _event("", "Artifact|Artifact", 60, 30),  # an artefact mark, not a stage
        _event("Stages|Stages", "Wake|W", 180, 30),  # a stage word under Stages: a stage
    ]
    path.write_bytes(_xml(events))
    ann = parse_nsrr_xml(path)
    np.testing.assert_array_equal(ann.stage_class, [0, 2, 4, -1, 0])
    assert [e["type"] for e in ann.events] == ["hypopnea", "other", "other"]
    notes = "\n".join(ann.warnings)
    assert "read by their code: 'Stage N2|2' -> N2 (1)" in notes
    assert "read by their name: 'REM sleep' -> REM (1)" in notes
    assert "names no stage, their epochs unscored: 'Doze|12' (1)" in notes
    clean = tmp_path / "b-nsrr.xml"
    clean.write_bytes(_xml(XML_EVENTS))
    assert parse_nsrr_xml(clean).warnings == []  # NSRR's own concepts: nothing to say


@pytest.mark.parametrize(
    "text, message",
    [
        (b"<PSGAnnotation><ScoredEvents><ScoredEvent>", "malformed XML"),
        (_xml([_event("Stages|Stages", "Wake|0", "soon", 30)]), "Start 'soon'"),
        (_xml([_event("Stages|Stages", "Wake|0", 0, -30)]), "Duration"),
        (b"<CMPStudyConfig><SleepStages><SleepStage>0</SleepStage></SleepStages></CMPStudyConfig>", "not an NSRR"),
    ],
)
def test_bad_xml_raises_xml_error_naming_the_file(tmp_path, text, message):
    path = tmp_path / "bad-nsrr.xml"
    path.write_bytes(text)
    with pytest.raises(XmlError, match=message) as err:
        parse_nsrr_xml(path)
    assert str(path) in str(err.value)


# -------------------------------------------------------------------------------------------------- labels
def test_stages_placed_by_start_not_order_and_by_midpoint():
    starts = np.array([0.0, 60.0, 150.0, 95.0])  # out of order, with a gap [90, 95) and an off-grid start
    durations = np.array([60.0, 30.0, 30.0, 55.0])
    classes = np.array([0, 2, 4, 3], dtype=np.int8)
    expected = [0, 0, 2, 3, 3, 4, -1]  # epoch 3 midpoint 105 is inside [95, 150); epoch 6 uncovered
    for order in itertools.permutations(range(4)):
        order = list(order)
        np.testing.assert_array_equal(epoch_stages(starts[order], durations[order], classes[order], 7), expected)


def test_overlapping_stage_events_later_start_wins():
    stages = epoch_stages(np.array([0.0, 30.0]), np.array([120.0, 30.0]), np.array([2, 4], dtype=np.int8), 5)
    np.testing.assert_array_equal(stages, [2, 4, 2, 2, -1])


def test_midpoint_rule_is_half_open():
    # epoch 1 = [30, 60), midpoint 45
    assert midpoint_flags(np.array([40.0]), np.array([45.0]), 3).tolist() == [0, 0, 0]
    assert midpoint_flags(np.array([45.0]), np.array([46.0]), 3).tolist() == [0, 1, 0]
    assert midpoint_flags(np.array([40.0, 45.0]), np.array([45.0, 50.0]), 3).tolist() == [0, 1, 0]


def test_event_seconds_are_the_union_of_overlapping_events():
    seconds = covered_seconds(np.array([10.0, 20.0, 85.0]), np.array([40.0, 50.0, 200.0]), 4)
    np.testing.assert_allclose(seconds, [20.0, 20.0, 5.0, 30.0])
    starts, ends = merge_intervals(np.array([20.0, 10.0, 50.0, 60.0]), np.array([30.0, 20.0, 60.0, 60.0]))
    assert starts.tolist() == [10.0, 50.0] and ends.tolist() == [30.0, 60.0]


def test_interval_arithmetic_matches_brute_force():
    rng = np.random.default_rng(3)
    n_epochs = 40
    starts = rng.uniform(-20, 30 * n_epochs + 20, 60)
    ends = starts + rng.exponential(25, 60)
    grid = np.arange(0, 30 * n_epochs, 0.01) + 0.005  # 1 ms resolution
    inside = np.zeros(grid.size, dtype=bool)
    for s, e in zip(starts, ends):
        inside |= (grid >= s) & (grid < e)
    expected_seconds = inside.reshape(n_epochs, -1).sum(axis=1) * 0.01
    np.testing.assert_allclose(covered_seconds(starts, ends, n_epochs), expected_seconds, atol=0.02)
    mid = np.arange(n_epochs) * 30 + 15.0
    expected_flags = [int(any(s <= m < e for s, e in zip(starts, ends))) for m in mid]
    assert midpoint_flags(starts, ends, n_epochs).tolist() == expected_flags


def test_apnea_is_the_union_of_the_three_apnea_types(tmp_path):
    path = tmp_path / "apnea-nsrr.xml"
    path.write_bytes(
        _xml(
            [
                _event("Stages|Stages", "Stage 2 sleep|2", 0, 120),
                _event("Respiratory|Respiratory", "Obstructive apnea|Obstructive Apnea", 0, 20),
                _event("Respiratory|Respiratory", "Central apnea|Central Apnea", 10, 20),
                _event("Respiratory|Respiratory", "Mixed apnea|Mixed Apnea", 40, 10),
                _event("Respiratory|Respiratory", "Hypopnea|Hypopnea", 70, 40),
            ]
        )
    )
    labels = epoch_labels(parse_nsrr_xml(path), 4)
    np.testing.assert_allclose(labels["apnea_s"], [30, 10, 0, 0])
    assert labels["apnea"].tolist() == [1, 1, 0, 0]  # midpoint 45 inside the mixed apnea [40, 50)
    assert labels["obstructive_apnea"].tolist() == [1, 0, 0, 0]
    np.testing.assert_allclose(labels["hypopnea_s"], [0, 0, 20, 20])
    assert labels["hypopnea"].tolist() == [0, 0, 1, 1]
    assert labels["stage"].tolist() == [2, 2, 2, 2]
    assert all(labels[k].dtype == np.int8 for k in ("stage", "apnea", "hypopnea"))
    assert labels["apnea_s"].dtype == np.float32


def test_labelled_concepts_only_under_respiratory_or_arousal_event_types(tmp_path):
    path = tmp_path / "et-nsrr.xml"
    path.write_bytes(
        _xml(
            [
                _event("Stages|Stages", "Stage 2 sleep|2", 0, 90),
                _event("Limb Movement|Limb Movement", "Limb movement arousal|LM arousal", 10, 5),
                _event("Technician Notes|Technician Notes", "Hypopnea|Hypopnea", 40, 10),
                _event("respiratory|Respiratory", "Hypopnea|Hypopnea", 60, 10),
                _event("Arousals|Arousals", "ASDA arousal|Arousal (ASDA)", 70, 5),
            ]
        )
    )
    assert [e["type"] for e in parse_nsrr_xml(path).events] == ["other", "other", "hypopnea", "arousal"]


def test_movement_and_unscored_without_event_type_are_stage_events(tmp_path):
    """`Movement|6` and `Unscored|9` written with an empty EventType are still stage events: the night runs to
    their end (scored_s) and they never appear among the scored events as `other`."""
    path = tmp_path / "noet-nsrr.xml"
    path.write_bytes(
        _xml(
            [
                _event("Stages|Stages", "Wake|0", 0, 60),
                _event("", "Stage 2 sleep|2", 60, 60),
                _event("", "Movement|6", 120, 30),
                _event("", "Unscored|9", 150, 240),
                _event("Respiratory|Respiratory", "Hypopnea|Hypopnea", 70, 10),
            ]
        )
    )
    annotations = parse_nsrr_xml(path)
    assert annotations.scored_s == 390
    assert annotations.stage_class.tolist() == [0, 2, -1, -1]
    assert [e["type"] for e in annotations.events] == ["hypopnea"]
    assert epoch_labels(annotations, 13)["stage"].tolist() == [0, 0, 2, 2] + [-1] * 9


def test_a_header_size_field_that_the_file_size_confirms_places_the_data(tmp_path):
    """A writer that pads its header and says so in the header-size field: the data are read from the declared
    byte when only that fits the record count and the file size; a field the file size does not confirm is
    only a warning (the data start after 256 x (signals + 1) bytes, as the signal count says)."""
    path = tmp_path / "padded.edf"
    expected = [s.data.copy() for s in _mixed_edf(path).signals]  # read now: edfio reads the file lazily
    data = bytearray(path.read_bytes())
    computed = 256 * (len(expected) + 1)
    data[184:192] = f"{computed + 512:<8d}".encode()
    padded = tmp_path / "padded2.edf"
    padded.write_bytes(bytes(data[:computed]) + b" " * 512 + bytes(data[computed:]))
    header = read_edf_header(padded)
    assert header.header_bytes == computed + 512 and "where the file size puts it" in header.warnings[0]
    for signal, values in zip(header.signals, expected):
        np.testing.assert_allclose(read_signal(header, signal.label)[0], values, atol=abs(signal.gain))
    path.write_bytes(bytes(data))  # the field says 512 more bytes, the file has none: the signal count wins
    header = read_edf_header(path)
    assert header.header_bytes == computed and "header size field" in header.warnings[0]
    assert "where the file size puts it" not in header.warnings[0]


@pytest.mark.parametrize("field, value", [(104, b"-3276,8 "), (128, b"        "), (216, b"0       ")])
def test_one_unreadable_signal_header_leaves_the_others_readable(tmp_path, field, value):
    """A range field that is no number, or no samples, in one signal's header: that signal carries the problem
    (a channel taken from it is dropped by name), the file and its other signals are read as written."""
    path = tmp_path / "odd.edf"
    expected = [s.data.copy() for s in _mixed_edf(path).signals]  # read now: edfio reads the file lazily
    header = read_edf_header(path)
    n, data = len(header.signals), bytearray(path.read_bytes())
    # the signal header block holds each field for every signal in turn: `field` is the field's offset per
    # signal (pmin 104, dmax 128, samples 216); the last signal's (SaO2, the last in each record) is changed
    start = 256 + field * n + 8 * (n - 1)
    data[start : start + 8] = value
    if field == 216:  # no samples: the records do not hold that signal's sample either
        head, record = bytes(data[: header.header_bytes]), 2 * header.record_samples
        body, cut = bytes(data[header.header_bytes :]), 2 * header.signals[-1].samples_per_record
        data = bytearray(head + b"".join(body[k : k + record - cut] for k in range(0, len(body), record)))
    path.write_bytes(bytes(data))
    header = read_edf_header(path)
    assert header.signals[-1].problem is not None and all(s.problem is None for s in header.signals[:-1])
    for signal, values in zip(header.signals[:-1], expected):
        np.testing.assert_allclose(read_signal(header, signal.label)[0], values, atol=abs(signal.gain))


def test_an_event_written_twice_counts_once_and_an_untimed_marker_is_left_out(tmp_path):
    """The same apnea twice (a scoring merged from two exports) is one event, with a warning: twice, it would
    double the night's apnea count and AHI. A marker without a Duration ("Lights off") gives no label and is left
    out with a warning; a labelled event or a stage without one still fails the file by name."""
    path = tmp_path / "twice-nsrr.xml"
    apnea = _event("Respiratory|Respiratory", "Obstructive apnea|Obstructive Apnea", 40, 12)
    marker = (
        "<ScoredEvent><EventType>Miscellaneous|Miscellaneous</EventType>"
        "<EventConcept>Lights off|Lights off</EventConcept><Start>0</Start></ScoredEvent>"
    )
    stages = _event("Stages|Stages", "Stage 2 sleep|2", 0, 120)
    path.write_bytes(
        _xml([stages, apnea, apnea, marker, _event("Respiratory|Respiratory", "Hypopnea|Hypopnea", 40, 12)])
    )
    parsed = parse_nsrr_xml(path)
    assert [e["type"] for e in parsed.events] == ["obstructive_apnea", "hypopnea"]
    assert any("1 event(s) written twice" in w for w in parsed.warnings)
    assert any("Lights off" in w and "left out" in w for w in parsed.warnings)
    for untimed in (
        "<ScoredEvent><EventType>Respiratory|Respiratory</EventType><EventConcept>Hypopnea|Hypopnea</EventConcept>"
        "<Start>10</Start></ScoredEvent>",
        "<ScoredEvent><EventType>Stages|Stages</EventType><EventConcept>Wake|0</EventConcept>"
        "<Start>0</Start></ScoredEvent>",
    ):
        path.write_bytes(_xml([stages, untimed]))
        with pytest.raises(XmlError, match="has Duration None"):
            parse_nsrr_xml(path)


def test_stage_concept_warnings_name_five_and_count_the_rest(tmp_path):
    path = tmp_path / "a-nsrr.xml"
    path.write_bytes(_xml([_event("Stages|Stages", f"Doze {k}|1{k}", 30.0 * k, 30) for k in range(7)]))
    (note,) = parse_nsrr_xml(path).warnings
    assert note.endswith(
        "'Doze 0|10' (1), 'Doze 1|11' (1), 'Doze 2|12' (1), 'Doze 3|13' (1), 'Doze 4|14' (1), and 2 more"
    )
