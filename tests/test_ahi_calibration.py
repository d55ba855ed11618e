"""The AHI's event-count calibration (utils/ahi.py `event_calibration`): fitted on the labels of a
split that is not test, it brings counts from epoch labels closer to the scored events of other nights."""

from __future__ import annotations

from pathlib import Path

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
        assert fit["scale"] > 1.0, f"{task}: perfect epoch labels should count fewer events than were scored"
    scored = sum(held_out[t]["scored_events"] for t in held_out)
    raw = sum(held_out[t]["counted_events"] for t in held_out)
    calibrated = sum(fitted[t]["scale"] * held_out[t]["counted_events"] for t in held_out)
    assert scored > raw and abs(calibrated - scored) < abs(raw - scored)


def test_never_fitted_on_test_and_only_for_event_tasks(cohort):
    with pytest.raises(ValueError, match="never fitted on test"):
        event_calibration(cohort, "apnea", split="test")
    with pytest.raises(ValueError, match="task must be one of"):
        event_calibration(cohort, "sleep_stage")
