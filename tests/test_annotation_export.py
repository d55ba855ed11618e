"""Annotation writers (dataset/annotation_export.py) on a hand-made hypnogram with events: the project's own NSRR
XML reader gives back the same labels, edfio and MNE read the EDF+ annotations, YASA codes and BIDS rows are as
documented."""

from __future__ import annotations

import datetime

import mne
import numpy as np
import pandas as pd
import pytest
from edfio import read_edf

from dataset import annotation_export as export
from dataset.annotations import parse_edf_annotations
from dataset.constants import APNEA_TYPES
from dataset.labels import epoch_labels
from dataset.nsrr_xml import parse_nsrr_xml

# 12 epochs: W W N1 N2 N2 N3 N3 REM REM -1 N2 W; apnea run of 3 epochs (2 exported events), one hypopnea epoch.
STAGES = np.array([0, 0, 1, 2, 2, 3, 3, 4, 4, -1, 2, 0])
EVENTS = {
    "apnea": np.array([0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0]),
    "hypopnea": np.array([0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0]),
}


def test_runs_and_event_pieces():
    assert export.stage_runs(STAGES)[:3] == [(0, 0, 2), (1, 2, 1), (2, 3, 2)]
    assert export.event_intervals(EVENTS) == [("apnea", 90.0, 60.0), ("apnea", 150.0, 30.0), ("hypopnea", 210.0, 30.0)]


def test_nsrr_xml_round_trips_through_the_projects_parser(tmp_path):
    path = tmp_path / "night-nsrr.xml"
    path.write_text(export.nsrr_xml(STAGES, EVENTS, start_clock="22.30.00"))
    annotations = parse_nsrr_xml(path)
    labels = epoch_labels(annotations, len(STAGES))
    assert labels["stage"].tolist() == STAGES.tolist()
    assert labels["apnea"].tolist() == EVENTS["apnea"].tolist()
    assert labels["hypopnea"].tolist() == EVENTS["hypopnea"].tolist()
    assert annotations.scored_s == 30 * len(STAGES)
    assert sorted(e["type"] for e in annotations.events) == ["hypopnea", "obstructive_apnea", "obstructive_apnea"]


def test_edf_plus_annotations_read_by_edfio_and_mne(tmp_path):
    path = export.write_edf_annotations(
        tmp_path / "night-annotations.edf", STAGES, EVENTS, start=datetime.datetime(2024, 3, 1, 22, 30, 0)
    )
    expected = export.edf_annotation_list(STAGES, EVENTS)
    assert ("Sleep stage ?" in [text for _, _, text in expected]) and len(expected) == 8 + 3  # 8 stage runs, 3 events
    edf = read_edf(path)
    assert [(a.onset, a.duration, a.text) for a in edf.annotations] == expected
    assert edf.startdate == datetime.date(2024, 3, 1) and edf.starttime == datetime.time(22, 30)
    annotations = mne.read_annotations(path)
    assert list(annotations.description) == [text for _, _, text in expected]
    assert np.allclose(annotations.onset, [o for o, _, _ in expected])
    assert np.allclose(annotations.duration, [d for _, d, _ in expected])


@pytest.mark.parametrize("kind", sorted(export.EVENT_CONCEPT))
def test_every_exported_event_type_reads_back_as_itself(tmp_path, kind):
    """The project's own readers give every exported event back as its type, from the EDF+ file as from the NSRR
    XML (the apnea model's untyped `apnea` as an obstructive apnea, inside the `apnea` label). EDF+ shows
    respiratory scoring by an apnea or a hypopnea only: with an arousal or desaturation alone its labels read
    "not scored"; the NSRR XML is a whole event list, and a staging-only export says it holds no events."""
    flags = EVENTS["apnea"]
    edf = parse_edf_annotations(export.write_edf_annotations(tmp_path / "night.edf", STAGES, {kind: flags}))
    (tmp_path / "night-nsrr.xml").write_text(export.nsrr_xml(STAGES, {kind: flags}))
    label = "apnea" if kind == "apnea" or kind in APNEA_TYPES else kind
    respiratory = label in ("apnea", "hypopnea")
    for scoring in (edf, parse_nsrr_xml(tmp_path / "night-nsrr.xml")):
        assert {e["type"] for e in scoring.events} == {"obstructive_apnea" if kind == "apnea" else kind}
        expected = flags.tolist() if respiratory or scoring is not edf else [-1] * len(STAGES)
        assert epoch_labels(scoring, len(STAGES))[label].tolist() == expected
    (tmp_path / "stages-nsrr.xml").write_text(export.nsrr_xml(STAGES, {}))
    stages_only = parse_nsrr_xml(tmp_path / "stages-nsrr.xml")
    assert not stages_only.events_scored and epoch_labels(stages_only, len(STAGES))["apnea"].tolist() == [-1] * 12


def test_yasa_codes():
    assert export.yasa_hypnogram(STAGES).tolist() == [0, 0, 1, 2, 2, 3, 3, 4, 4, -2, 2, 0]
    assert (
        np.loadtxt(pd.io.common.StringIO(export.yasa_text(STAGES)), dtype=int).tolist()
        == export.yasa_hypnogram(STAGES).tolist()
    )
    with pytest.raises(ValueError, match="stage codes"):
        export.yasa_hypnogram(np.array([0, 5]))


def test_bids_events_rows():
    table = export.bids_events(STAGES, EVENTS)
    assert list(table.columns) == ["onset", "duration", "trial_type"]
    stages = table[table["trial_type"].str.startswith("sleep_stage_")]
    assert len(stages) == 11 and stages["trial_type"].iloc[7] == "sleep_stage_REM"  # the unscored epoch left out
    assert table["onset"].is_monotonic_increasing
    assert table[table["trial_type"] == "apnea"][["onset", "duration"]].values.tolist() == [[90.0, 60.0], [150.0, 30.0]]
    text = export.bids_events_tsv(STAGES, EVENTS)
    assert text.splitlines()[0] == "onset\tduration\ttrial_type" and "90.000\t60.000\tapnea" in text
    with pytest.raises(ValueError, match="event type"):
        export.nsrr_xml(STAGES, {"snore": EVENTS["apnea"]})
