"""The AHI's event-count calibration (utils/ahi.py `event_calibration`): fitted on the labels of a
split that is not test, it brings counts from epoch labels closer to the scored events of other nights."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from dataset import data_parser, synthetic
from utils.ahi import event_calibration


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    """12 synthetic 2-h nights: 8 train subjects to fit on, 3 val subjects to check on."""
    root = tmp_path_factory.mktemp("ahi_calibration")
    synthetic.generate_cohort(root / "src", nights=12, hours=2.0, seed=3)
    data_parser.parse_cohort(root / "src", root / "dst", workers=1, progress=False, val_frac=0.25)
    return root / "dst"


def test_epoch_labels_lose_events_and_the_fitted_scale_recovers_them(cohort):
    fitted = {task: event_calibration(cohort, task, split="train") for task in ("apnea", "hypopnea")}
    held_out = {task: event_calibration(cohort, task, split="val") for task in ("apnea", "hypopnea")}
    for task, fit in fitted.items():
        assert fit["counted_events"] >= 20 and fit["scale"] == fit["scored_events"] / fit["counted_events"]
    # perfect epoch labels count fewer apneas than were scored (short ones miss midpoints, neighbours merge)
    assert fitted["apnea"]["scale"] > 1.0
    scored = sum(held_out[t]["scored_events"] for t in held_out)
    raw = sum(held_out[t]["counted_events"] for t in held_out)
    calibrated = sum(fitted[t]["scale"] * held_out[t]["counted_events"] for t in held_out)
    assert abs(calibrated - scored) < abs(raw - scored)


def test_never_fitted_on_test_and_only_for_event_tasks(cohort):
    with pytest.raises(ValueError, match="never fitted on test"):
        event_calibration(cohort, "apnea", split="test")
    with pytest.raises(ValueError, match="task must be one of"):
        event_calibration(cohort, "sleep_stage")


def test_scored_events_are_those_of_the_scored_ahi(cohort):
    """The scale brings counts to `ahi_scored`: apneas and the hypopneas its rule counts (>= 3 % desaturation or
    an arousal), in scored sleep. The epoch labels mark every hypopnea, so the scale must leave out the others."""
    manifest = pd.read_parquet(cohort / "manifest.parquet").set_index("recording_id")
    train = manifest.loc[sorted(json.loads((cohort / "splits.json").read_text())["recordings"]["train"])]
    fitted = {task: event_calibration(cohort, task, split="train") for task in ("apnea", "hypopnea")}
    scored_ahi_events = (train["ahi_scored"] * train["tst_min"] / 60.0).sum()
    assert fitted["apnea"]["scored_events"] + fitted["hypopnea"]["scored_events"] == round(scored_ahi_events)
    all_events = (train["ahi_all"] * train["tst_min"] / 60.0).sum()
    assert round(all_events) > round(scored_ahi_events), "the cohort must hold hypopneas the rule leaves out"
