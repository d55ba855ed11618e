"""Event-level apnea/hypopnea detection (downstream/event_detection): the per-second respiratory features on
hand-made signals, and the script end to end on a tiny parsed cohort (outputs, val-only decoding, the saved
detector reproducing events.csv, a night lacking a channel), plus its input errors (no respiratory channel in
the cohort: one `error:` line, exit 2, an earlier run's outputs untouched)."""

from __future__ import annotations

import json
import pickle
import shutil

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from dataset.constants import EPHYS_CHANNELS
from downstream.event_detection import train as event_detection
from downstream.event_detection.detector import load_night
from downstream.event_detection.selection import THRESHOLDS, select_decoding
from utils.features import RESP_LAGS_S, respiratory_features

FAST = ["--no-progress", "--n-boot", "20", "--hgb-max-iter", "25"]
OUTPUTS = ("config.json", "model.pkl", "metrics.json", "events.csv", "results.md")


def breathing(n_seconds: int, fs: int = 10) -> dict[str, np.ndarray]:
    t = np.arange(n_seconds * fs) / fs
    wave = np.sin(2 * np.pi * 0.25 * t)
    return {"airflow": wave.copy(), "thor": wave.copy(), "abdo": wave.copy(), "spo2": np.zeros(t.size)}


def test_respiratory_features_see_flow_drop_paradox_and_lagged_desaturation():
    n = 600
    signals = breathing(n)
    signals["airflow"][3000:3200] *= 0.05  # a 20-s apnea at 300-320 s
    signals["abdo"][3000:3200] *= -1.0  # paradox during it
    signals["spo2"][3400:3500] = -2.0  # SpO2 (scaled) dips 40-50 s after the onset: 2 IQRs = 4 %
    features, names = respiratory_features(signals, n, spo2_scale=(96.0, 2.0))
    column = {name: features[:, i] for i, name in enumerate(names)}
    assert features.shape == (n, len(names)) and features.dtype == np.float32
    assert column["flow_ratio"][305:315].max() < -1.5 and abs(column["flow_ratio"][200:290]).max() < 0.1
    assert column["thor_abdo_corr"][305:315].max() < -0.9 and column["thor_abdo_corr"][200:290].min() > 0.9
    assert column["effort_sum_ratio"][305:315].max() < -2  # thor + abdo cancel in paradox
    assert column["spo2_level"][100] == pytest.approx(96.0) and column["spo2_level"][345] == pytest.approx(92.0)
    # the nadir 10-45 s ahead of the onset second is already visible there: the SpO2 lag
    assert column["spo2_nadir_drop_10_45"][305] == pytest.approx(4.0) and column["spo2_drop"][305] == 0.0
    assert column["flow_ratio_lag+10"][297] == column["flow_ratio"][307]
    assert len([c for c in names if c.startswith("flow_ratio_lag")]) == len(RESP_LAGS_S)


def test_respiratory_features_missing_channels_keep_columns():
    n = 300
    full, names = respiratory_features(breathing(n), n)
    partial, partial_names = respiratory_features({"airflow": breathing(n)["airflow"], "thor": None}, n)
    assert partial_names == names and partial.shape == full.shape
    nan_columns = {name for i, name in enumerate(names) if np.isnan(partial[:, i]).all()}
    assert "spo2_drop" in nan_columns and "thor_abdo_corr" in nan_columns and "thor_ratio" in nan_columns
    assert "flow_ratio" not in nan_columns and not np.isnan(full).any()


@pytest.fixture(scope="module")
def cohort(cohort_factory):
    """6 synthetic 48-minute nights parsed with every channel (one night without its thoracic belt)."""
    return cohort_factory(6, 0.8, 0, variations={1: {"missing_channels": ("thor",)}})


@pytest.fixture(scope="module")
def ephys(cohort_factory):
    """6 synthetic nights parsed with electrophysiology channels only: no respiratory channel."""
    return cohort_factory(6, 0.8, 0, channels=list(EPHYS_CHANNELS)) / "dst"


@pytest.fixture(scope="module")
def run(cohort, tmp_path_factory):
    out = tmp_path_factory.mktemp("event_run") / "run"
    assert event_detection.main(["--data", str(cohort / "dst"), "--out", str(out), *FAST]) == 0
    return out


def test_script_outputs_and_val_only_decoding(run, cohort):
    assert all((run / name).is_file() for name in OUTPUTS)
    metrics = json.loads((run / "metrics.json").read_text())
    splits = json.loads((cohort / "dst" / "splits.json").read_text())["recordings"]
    assert metrics["train"]["recordings"] == splits["train"]
    assert metrics["selection"]["split"] == "val"
    assert metrics["selection"]["threshold"] in THRESHOLDS
    best = max(c["score"] for c in metrics["selection"]["curve"] if c["score"] is not None)
    assert metrics["selection"]["val_score"] == pytest.approx(best)
    test = metrics["test"]
    assert [r["recording_id"] for r in test["ahi"]["per_night"]] == splits["test"]
    assert {"apnea", "hypopnea", "any", "obstructive_apnea"} <= set(test["events"])
    # detection works on this tiny cohort: most scored events found, epoch scores informative
    assert test["events"]["any"]["f1"] >= 0.6
    assert test["epoch"]["hypopnea"]["auroc"] >= 0.8
    events = pd.read_csv(run / "events.csv")
    assert list(events.columns) == ["recording_id", "onset_s", "duration_s", "type", "probability", "counted"]
    assert set(events["recording_id"]) <= set(splits["test"]) and (events["duration_s"] >= 10).all()
    n_predicted = test["events"]["any"]["tp"] + test["events"]["any"]["fp"]
    assert len(events) == n_predicted
    config = json.loads((run / "config.json").read_text())
    assert config["hypopnea_rule"] == "3a" and config["method"] == "features"


def test_saved_detector_reproduces_test_events(run, cohort):
    detector = pickle.loads((run / "model.pkl").read_bytes())
    data = cohort / "dst"
    manifest = pd.read_parquet(data / "manifest.parquet").set_index("recording_id")
    events = pd.read_csv(run / "events.csv")
    table = pd.read_parquet(data / "events.parquet")
    rid = json.loads((data / "splits.json").read_text())["recordings"]["test"][0]
    night = load_night(data, rid, rid, table, manifest.loc[rid].to_dict())
    detected = detector.detect(night.features)
    expected = events[events["recording_id"] == rid]
    assert [(e.onset_s, e.duration_s, e.type) for e in detected] == list(
        zip(expected["onset_s"], expected["duration_s"], expected["type"])
    )


def test_night_missing_a_channel_still_runs(cohort):
    data = cohort / "dst"
    manifest = pd.read_parquet(data / "manifest.parquet").set_index("recording_id")
    night = load_night(
        data, "shhs1-200002", "200002", pd.read_parquet(data / "events.parquet"), manifest.loc["shhs1-200002"].to_dict()
    )
    assert night.channels == ["airflow", "abdo", "spo2"]
    assert np.isnan(night.features).any() and not np.isnan(night.features).all()


def test_no_respiratory_channel_is_one_error_line_and_keeps_outputs(ephys, run, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(run, out)
    before = {name: (out / name).read_bytes() for name in OUTPUTS}
    with pytest.raises(SystemExit) as exit_info:
        event_detection.main(["--data", str(ephys), "--out", str(out), *FAST])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:")
    assert "respiratory channel" in err[0] and "airflow" in err[0] and str(ephys) in err[0]
    assert {name: (out / name).read_bytes() for name in OUTPUTS} == before


def test_bad_options_are_one_error_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        event_detection.main(["--data", str(tmp_path), "--no-progress"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --data") and "splits.json" in err[0]
    with pytest.raises(SystemExit) as exit_info:
        event_detection.main(["--data", str(tmp_path), "--hypopnea-rule", "5"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.startswith("error:")


def test_decoding_ties_prefer_threshold_near_half_and_short_gap():
    """Per-second probabilities of 0 or 1 score the same at every threshold: the choice is 0.5 and no gap."""
    from dataset.event_targets import EventTargets
    from dataset.scored_events import Event
    from downstream.event_detection.detector import EventDetector, Night

    probabilities = np.zeros((300, 4))
    probabilities[100:120, 3] = 1.0  # a hypopnea at 100-120 s
    scored = [Event(100.0, 20.0, "hypopnea")]
    night = Night(
        "r",
        "s",
        ["airflow"],
        np.zeros((300, 1), np.float32),
        np.full(10, 2, np.int8),
        {"apnea": np.zeros(10, np.int8), "hypopnea": np.zeros(10, np.int8)},
        EventTargets(np.zeros(300, np.int8), np.zeros(300, np.int8), np.zeros(300, np.int8), scored),
    )
    threshold, gap, curve = select_decoding(EventDetector(None, []), [night], [probabilities])
    assert (threshold, gap) == (0.5, 0.0)
    assert {c["score"] for c in curve} == {1.0}


def test_every_step_of_the_budget_is_an_update_when_labels_are_sparse():
    """With few labelled seconds most random windows hold none: they are drawn again, so the run makes its
    `steps` updates and evaluates when due (the last step included); no label at all is a usage error."""
    import torch

    from downstream.event_detection.head import TrainNight, train_steps
    from utils.config import UsageError

    labels = np.full(3600, -1, dtype=np.int64)
    labels[1800:1830] = 1  # 30 labelled seconds in an hour
    nights = [TrainNight(3600, labels)]
    model = torch.nn.Linear(1, 2)
    calls = []
    wrapped = torch.nn.Sequential(model)
    updates = []
    model.register_full_backward_hook(lambda *_: updates.append(1))

    def inputs(starts):
        return torch.ones(len(starts), 60, 1, requires_grad=True)

    options = dict(steps=6, batch=2, window_s=60, lr=1e-3, weight_decay=0.0, eval_every=3, seed=0)
    options.update(device=torch.device("cpu"), log=lambda _: None)
    result = train_steps(wrapped, nights, inputs, None, lambda m: calls.append(1) or 0.5, **options)
    assert len(updates) == 6 and [r["step"] for r in result.history] == [3, 6] and len(calls) == 2
    with pytest.raises(UsageError, match="no labelled second"):
        train_steps(wrapped, [TrainNight(3600, np.full(3600, -1))], inputs, None, lambda m: 0.0, **options)


def unscore_events(path) -> None:
    """Set a parsed night's event flags to -1, as the parser writes a scoring of stages only."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    for name in ("apnea", "hypopnea"):
        column = pa.array(np.full(table.num_rows, -1, np.int8), type=table.schema.field(name).type)
        table = table.set_column(table.schema.get_field_index(name), name, column)
    pq.write_table(table, path)


def test_nights_scored_for_stages_only_are_not_event_nights(cohort, tmp_path, capsys):
    """A night whose events were not scored (a hypnogram: event flags -1) has no event target, which is not
    "no event": it is left out of the event task, named, and the rest of its split trains as before."""
    from dataset.splits import read_splits
    from downstream.event_detection.nights import load_split_nights
    from utils.config import UsageError

    data = shutil.copytree(cohort / "dst", tmp_path / "dst")
    recordings = read_splits(data / "splits.json")["recordings"]
    train = sorted(recordings["train"])
    unscore_events(data / "recordings" / f"{train[0]}.parquet")
    cfg = event_detection.parse_args(["--data", str(data), "--out", str(tmp_path / "out"), *FAST])
    nights = load_split_nights(cfg)
    assert [n.recording_id for n in nights["train"]] == train[1:]
    assert f"nights without scored events left out of the event task (train: {train[0]})" in capsys.readouterr().out
    for rid in recordings["test"]:
        unscore_events(data / "recordings" / f"{rid}.parquet")
    with pytest.raises(UsageError, match="no night of split 'test' has scored respiratory events"):
        load_split_nights(cfg)


def test_a_rerun_of_another_method_leaves_no_file_of_the_earlier_one(run, cohort, tmp_path):
    """A features run into a folder where a token method wrote its fine-tuned encoder: encoder.pt goes (the new
    model.pkl does not read it), and the earlier config.json is kept as config.1.json."""
    out = tmp_path / "run"
    shutil.copytree(run, out)
    (out / "encoder.pt").write_bytes(b"an earlier fine-tuned encoder")
    earlier = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**earlier, "method": "finetune"}, indent=2) + "\n")
    assert event_detection.main(["--data", str(cohort / "dst"), "--out", str(out), *FAST]) == 0
    assert not (out / "encoder.pt").exists()
    assert json.loads((out / "config.1.json").read_text())["method"] == "finetune"
    assert json.loads((out / "config.json").read_text())["method"] == "features"


def with_stray_rows(data) -> dict[str, float]:
    """Append to `data`'s manifest a `failed` copy (a second EDF of the same night) and a `skipped` row (a stray
    annotation file) of every ok recording, after its ok row, as the parser writes them; returns the ok rows'
    scored AHI."""
    path = data / "manifest.parquet"
    manifest = pd.read_parquet(path)
    ok = manifest[manifest["status"] == "ok"]
    failed = ok.assign(status="failed", ahi_scored=np.nan, kept_s=np.nan, median_spo2=np.nan, subject_id="copy")
    skipped = ok.assign(status="skipped", ahi_scored=np.nan, subject_id="stray")
    pd.concat([manifest, failed, skipped], ignore_index=True).to_parquet(path)
    return dict(zip(ok["recording_id"], ok["ahi_scored"].astype(float)))


def test_failed_and_skipped_rows_of_a_parsed_night_are_not_read_as_it(cohort, tmp_path):
    """The manifest has one row per input: a night's `ok` row and the failed row of a second copy of its EDF (or
    the skipped row of a stray annotation file) share its recording id. Event detection and the combined AHI read
    the `ok` row: the copies once made every manifest field a dict (a traceback) and the scored AHI NaN."""
    from dataset.cohort import read_ok_manifest, read_subjects
    from dataset.splits import read_splits
    from downstream.evaluate import combined_ahi
    from downstream.event_detection.nights import load_split_nights
    from downstream.results import Predictions

    data = shutil.copytree(cohort / "dst", tmp_path / "dst")
    scored = with_stray_rows(data)
    assert read_ok_manifest(data, ["ahi_scored"])["ahi_scored"].to_dict() == scored
    test = sorted(read_splits(data / "splits.json")["recordings"]["test"])
    assert set(read_subjects(data, test).values()).isdisjoint({"copy", "stray"})
    cfg = event_detection.parse_args(["--data", str(data), "--out", str(tmp_path / "out"), *FAST])
    nights = load_split_nights(cfg)
    assert [n.recording_id for n in nights["test"]] == test
    runs = {}
    for task in ("apnea", "hypopnea"):  # predictions equal to the scored epochs give the scored AHI back
        frames = [
            pd.read_parquet(data / "recordings" / f"{rid}.parquet", columns=["epoch", "stage", task]) for rid in test
        ]
        truth = np.concatenate([f[task].to_numpy() for f in frames]).astype(np.int64)
        predictions = Predictions(
            np.concatenate([[rid] * len(f) for rid, f in zip(test, frames)]).astype(object),
            np.concatenate([f["epoch"].to_numpy() for f in frames]),
            truth,
            np.stack([1 - truth, truth], axis=1).astype(np.float32),
            np.array(["s"] * truth.size, dtype=object),
            np.concatenate([f["stage"].to_numpy() for f in frames]).astype(np.int8),
        )
        runs[task] = tmp_path / task
        runs[task].mkdir()
        pq.write_table(predictions.to_table(task), runs[task] / "predictions.parquet")
    agreement = combined_ahi(runs["apnea"], runs["hypopnea"], data)
    assert agreement["n"] == len(test) and agreement["n_missing"] == 0
