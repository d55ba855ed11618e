"""predict.py processes a new night as the models' cohort was processed (band-passes, filter, resampling,
flat-channel rules), which every downstream run records from the cohort's parser_config.json."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from dataset.data_parser import parse_cohort
from dataset.signal_processing import ProcessingConfig
from downstream import predict
from downstream.linear_probing import train as linear_probing
from downstream.night_inference import InputError, night_processing
from downstream.runs import load_downstream_run
from tests.test_downstream import RUN, backbones, cohort  # noqa: F401


def test_predict_processes_a_night_as_the_models_cohort_was(cohort_factory, backbones, tmp_path, capsys):
    """A cohort parsed with another EEG band-pass: the run records it, and predict.py processes a new night the
    same way, so the night's probabilities are the run's own test ones; runs of two processings are refused."""
    root = cohort_factory(nights=6, hours=0.8, seed=0)
    banded = tmp_path / "banded"
    parse_cohort(
        root / "src", banded, workers=1, progress=False, config=ProcessingConfig(bands=(("eeg_c4", (0.3, 15.0)),))
    )
    run = tmp_path / "probe"
    args = ["--data", str(banded), "--backbone", str(backbones["eeg"]), "--task", "sleep_stage", "--out", str(run)]
    assert linear_probing.main([*args, *RUN, "--epochs", "2"]) == 0
    loaded = load_downstream_run(run)
    assert loaded.processing["bands"]["eeg_c4"] == [0.3, 15.0]
    recording = json.loads((banded / "splits.json").read_text())["recordings"]["test"][0]
    edf = next((root / "src").rglob(f"{recording}.edf"))
    out = tmp_path / "night"
    assert predict.main(["--checkpoint", str(run), "--edf", str(edf), "--out", str(out), "--no-progress"]) == 0
    night = pd.read_csv(out / "hypnogram.csv")
    stored = pd.read_parquet(run / "predictions.parquet")
    stored = stored[stored["recording"] == recording].sort_values("epoch")
    p = night[[c for c in night.columns if c.startswith("p_")]].to_numpy()
    assert np.allclose(p, np.stack(stored["probabilities"].to_numpy()), atol=1e-4)
    assert json.loads((out / "report.json").read_text())["processing"]["bands"]["eeg_c4"] == [0.3, 15.0]

    other = SimpleNamespace(processing={**loaded.processing, "bands": {"eeg_c4": [0.5, 40.0]}})
    with pytest.raises(InputError, match=r"processed differently \(the band of eeg_c4: \[0.3, 15.0\] for sleep_stage"):
        night_processing({"sleep_stage": loaded, "apnea": other})
    old = SimpleNamespace(processing=None)  # a run trained before its processing was recorded: the defaults
    with pytest.raises(InputError, match="the band of eeg_c4"):
        night_processing({"sleep_stage": loaded, "apnea": old})
    assert night_processing({"sleep_stage": old}).as_dict() == ProcessingConfig().as_dict()
    # cohorts parsed with other channel sets agree on the channels they share; each band comes from its cohort
    eeg_only = {**loaded.processing, "bands": {"eeg_c4": [0.3, 15.0]}}
    resp = {**loaded.processing, "bands": {"eeg_c4": [0.3, 15.0], "airflow": None}}
    merged = night_processing({"sleep_stage": SimpleNamespace(processing=eeg_only)}, SimpleNamespace(processing=resp))
    assert dict(merged.bands)["eeg_c4"] == (0.3, 15.0) and dict(merged.bands)["airflow"] is None
