"""Inference on a new night (downstream/predict.py, docs/evaluation.md §6): tiny staging / apnea / hypopnea runs trained for a
step or two on a small synthetic cohort predict an unseen synthetic night; the outputs must be complete and
consistent with each other (every epoch once, probabilities sum to 1, stage minutes add up to the recording time,
the AHI of the report recomputes from events.csv), a missing channel is named, bad files exit with code 2."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from dataset import synthetic
from dataset.constants import STAGE_NAMES
from downstream import predict
from downstream.runs import load_downstream_run
from utils.ahi import estimate_ahi
from utils.checkpoint import atomic_save, load_checkpoint

SLEEP = ("N1", "N2", "N3", "REM")


@pytest.fixture(scope="module")
def night(tmp_path_factory) -> tuple[Path, Path]:
    """An unseen 0.7-h night (84 epochs, not a multiple of the 8-epoch windows) with respiratory events."""
    root = tmp_path_factory.mktemp("predict_night")
    edf, xml = root / "new-900001.edf", root / "new-900001-nsrr.xml"
    synthetic.generate_night(edf, xml, "new-900001", hours=0.7, seed=7)
    return edf, xml


def test_predict_writes_consistent_outputs(predict_argv, predict_runs, night, tmp_path, capsys):
    edf, xml = night
    out = tmp_path / "out"
    assert predict.main(predict_argv(edf, out, "--xml", str(xml))) == 0
    for name in ("hypnogram.csv", "hypnogram.png", "events.csv", "report.json", "report.md"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    report = json.loads((out / "report.json").read_text(), parse_constant=lambda c: pytest.fail(f"non-strict {c}"))
    hypnogram = pd.read_csv(out / "hypnogram.csv", keep_default_na=False)
    n = report["n_epochs"]
    assert n == 84 and hypnogram["epoch"].tolist() == list(range(n))  # one row per epoch, in order
    probabilities = hypnogram[[f"p_{s}" for s in STAGE_NAMES]].to_numpy()
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-4)
    assert (hypnogram["stage_code"].to_numpy() == probabilities.argmax(axis=1)).all()
    assert (hypnogram["stage"] == [STAGE_NAMES[c] for c in hypnogram["stage_code"]]).all()
    assert (
        hypnogram["time"].str.match(r"^\d\d:\d\d:\d\d$").all()
        and (hypnogram["start_s"] == 30 * hypnogram["epoch"]).all()
    )

    sleep = report["sleep"]
    stage_min = {s: (hypnogram["stage"] == s).sum() * 0.5 for s in STAGE_NAMES}
    for s in STAGE_NAMES:
        assert sleep[f"{s.lower()}_min"] == pytest.approx(stage_min[s])
    assert sleep["trt_min"] == pytest.approx(n * 0.5)
    assert sum(sleep[f"{s.lower()}_min"] for s in STAGE_NAMES) + sleep["unscored_min"] == pytest.approx(
        sleep["trt_min"]
    )
    assert sleep["tst_min"] == pytest.approx(sum(stage_min[s] for s in SLEEP))
    assert sleep["sleep_efficiency_pct"] == pytest.approx(100 * sleep["tst_min"] / sleep["trt_min"])

    # the AHI of the report recomputes from events.csv and the hypnogram (events start in predicted sleep)
    events = pd.read_csv(out / "events.csv")
    per_epoch = {task: np.zeros(n, dtype=np.int64) for task in ("apnea", "hypopnea")}
    for row in events.itertuples():
        per_epoch[row.type][row.start_epoch : row.start_epoch + row.n_epochs] = 1
        assert row.duration_s == 30 * row.n_epochs and row.start_s == 30 * row.start_epoch
    for task in per_epoch:
        assert (per_epoch[task] == hypnogram[task].to_numpy()).all()
    is_sleep = hypnogram["stage"].isin(SLEEP).to_numpy()
    # each type's count is scaled by the event_calibration its run stored (fitted on val labels, never test)
    calibration = {
        task: json.loads((predict_runs[task] / "metrics.json").read_text())["event_calibration"]
        for task in ("apnea", "hypopnea")
    }
    for task, fitted in calibration.items():
        assert fitted["split"] == "val" and fitted["scored_events"] >= 0 and fitted["counted_events"] >= 0
        assert fitted["scale"] == (
            fitted["scored_events"] / fitted["counted_events"] if fitted["counted_events"] >= 20 else 1.0
        )
        assert report["events"][task]["event_scale"] == pytest.approx(fitted["scale"])
    scales = (calibration["apnea"]["scale"], calibration["hypopnea"]["scale"])
    expected = estimate_ahi(per_epoch["apnea"], per_epoch["hypopnea"], is_sleep, scales=scales)
    raw = estimate_ahi(per_epoch["apnea"], per_epoch["hypopnea"], is_sleep)
    assert (sleep["ahi_est"] is None and math.isnan(expected)) or sleep["ahi_est"] == pytest.approx(expected)
    assert (sleep["ahi_est_uncalibrated"] is None and math.isnan(raw)) or sleep[
        "ahi_est_uncalibrated"
    ] == pytest.approx(raw)
    assert (events["in_sleep"] == is_sleep[events["start_epoch"]]).all()

    agreement = report["agreement"]
    scored = hypnogram["scored_stage_code"].to_numpy()
    confusion = np.array(agreement["sleep_stage"]["confusion_matrix"])
    assert confusion.sum() == agreement["sleep_stage"]["n"] == (scored >= 0).sum() > 0
    assert agreement["sleep_stage"]["accuracy"] == pytest.approx(
        np.mean(scored[scored >= 0] == hypnogram["stage_code"].to_numpy()[scored >= 0])
    )
    assert agreement["ahi"]["scored"] is not None and agreement["ahi"]["scored"] > 0
    assert report["channels"]["missing"] == []
    markdown = (out / "report.md").read_text()
    assert "total sleep time" in markdown and "Agreement with the scoring" in markdown and "Estimated AHI" in markdown
    assert "TST" in capsys.readouterr().out


def test_temporal_run_tiles_every_epoch_once(predict_runs, night, tmp_path):
    edf, _ = night
    loaded = predict.load_runs({"sleep_stage": predict_runs["temporal"]}, torch.device("cpu"))["sleep_stage"]
    assert loaded.kind == "temporal_classifier" and loaded.epochs_per_window == 8
    windows = predict.NightWindows("n", {"eeg_c4": np.zeros((84, 3000), np.float32)}, 8)
    owned = np.concatenate([windows[i]["epoch_ids"].numpy()[windows[i]["owned"].numpy()] for i in range(len(windows))])
    assert sorted(owned.tolist()) == list(range(84)) and len(windows) == 11  # 0, 8, .., 72 and the end-aligned 76
    out = tmp_path / "temporal"
    assert (
        predict.main(
            ["--checkpoint", str(predict_runs["temporal"]), "--edf", str(edf), "--out", str(out), "--no-progress"]
        )
        == 0
    )
    hypnogram = pd.read_csv(out / "hypnogram.csv")
    assert len(hypnogram) == 84 and not (out / "events.csv").exists()
    assert np.allclose(hypnogram[[f"p_{s}" for s in STAGE_NAMES]].sum(axis=1), 1.0, atol=1e-4)
    report = json.loads((out / "report.json").read_text())
    assert report["agreement"] is None and "ahi_est" not in report["sleep"] and report["xml"] is None


def test_missing_channel_still_predicts_and_is_named(predict_runs, tmp_path, capsys):
    edf, xml = tmp_path / "gap-900002.edf", tmp_path / "gap-900002-nsrr.xml"
    synthetic.generate_night(edf, xml, "gap-900002", hours=0.2, seed=8, missing_channels=("eog_l",))
    out = tmp_path / "out"
    assert (
        predict.main(
            ["--checkpoint", str(predict_runs["stage"]), "--edf", str(edf), "--out", str(out), "--no-progress"]
        )
        == 0
    )
    report = json.loads((out / "report.json").read_text())
    assert report["channels"]["missing"] == ["eog_l"]
    assert report["channels"]["models"]["sleep_stage"]["used"] == ["eeg_c4"]
    assert "eog_l" in (out / "report.md").read_text() and "eog_l" in capsys.readouterr().out
    # the sleep statistics themselves are flagged, with or without an AHI to flag
    flagged = "the staging model reads eog_l, which this night lacks: the hypnogram, sleep time and sleep efficiency"
    assert any(w.startswith(flagged) for w in report["warnings"])
    assert f"**Warning: {flagged}" in (out / "report.md").read_text()
    hypnogram = pd.read_csv(out / "hypnogram.csv")
    assert len(hypnogram) == report["n_epochs"] == 24
    assert np.allclose(hypnogram[[f"p_{s}" for s in STAGE_NAMES]].sum(axis=1), 1.0, atol=1e-4)
    # a model none of whose channels exists: clear error naming the file and the labels looked for
    synthetic.generate_night(edf, xml, "gap-900002", hours=0.2, seed=8, missing_channels=("eeg_c4",))
    assert (
        predict.main(
            [
                "--checkpoint",
                str(predict_runs["stage"]),
                "--hypopnea",
                str(predict_runs["hypopnea"]),
                "--edf",
                str(edf),
                "--out",
                str(tmp_path / "none"),
                "--no-progress",
            ]
        )
        == 2
    )
    message = capsys.readouterr().err
    assert str(edf) in message and "hypopnea" in message and "EEG 1" in message


def test_bad_inputs_exit_2_with_the_file_named(predict_runs, night, tmp_path, capsys):
    garbage = tmp_path / "garbage.edf"
    garbage.write_bytes(b"this is not an EDF file" * 40)
    assert (
        predict.main(["--checkpoint", str(predict_runs["stage"]), "--edf", str(garbage), "--out", str(tmp_path / "a")])
        == 2
    )
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(garbage) in err and "Traceback" not in err and err.count("\n") == 1
    bad_xml = tmp_path / "bad-nsrr.xml"
    bad_xml.write_text("<PSGAnnotation><ScoredEvents><ScoredEvent>")
    assert (
        predict.main(
            [
                "--checkpoint",
                str(predict_runs["stage"]),
                "--edf",
                str(night[0]),
                "--xml",
                str(bad_xml),
                "--out",
                str(tmp_path / "b"),
            ]
        )
        == 2
    )
    assert str(bad_xml) in capsys.readouterr().err
    # a run given for the wrong task
    assert (
        predict.main(["--checkpoint", str(predict_runs["apnea"]), "--edf", str(night[0]), "--out", str(tmp_path / "c")])
        == 2
    )
    assert "expects one of task sleep_stage" in capsys.readouterr().err
    # a pretraining checkpoint where a downstream run is expected: what to train first
    backbone = predict_runs["stage"].parent / "fusion.pt"
    assert predict.main(["--checkpoint", str(backbone), "--edf", str(night[0]), "--out", str(tmp_path / "d")]) == 2
    assert "a pretrained synthsleepnet backbone, not a downstream run" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_options_from_a_config_file(predict_runs, night, tmp_path):
    """docs/architecture.md §1: every step takes --config and writes the exact configuration it ran with."""
    edf, xml = night
    out = tmp_path / "from_config"
    config = tmp_path / "predict.json"
    config.write_text(
        json.dumps(
            {
                "checkpoint": str(predict_runs["stage"]),
                "edf": str(edf),
                "xml": str(xml),
                "out": str(out),
                "progress": False,
            }
        )
    )
    assert predict.main(["--config", str(config), "--batch-size", "16"]) == 0
    saved = json.loads((out / "config.json").read_text())
    assert saved["edf"] == str(edf) and saved["batch_size"] == 16 and saved["checkpoint"] == str(predict_runs["stage"])


def test_config_file_without_a_required_option_is_a_usage_error(tmp_path):
    config = tmp_path / "predict.json"
    config.write_text(json.dumps({"edf": str(tmp_path / "x.edf")}))
    with pytest.raises(SystemExit) as exit_info:
        predict.main(["--config", str(config), "--out", str(tmp_path / "o")])
    assert exit_info.value.code == 2


def _event_run_copy(run: Path, copy: Path, checkpoint_scale: float | None, metrics_scale: float) -> Path:
    """A copy of an event run whose checkpoints' metadata hold `event_calibration` scale `checkpoint_scale`
    (None: no calibration, as a run trained before checkpoints carried it) and whose metrics.json says
    `metrics_scale`."""

    shutil.copytree(run, copy)
    for name in ("best.pt", "last.pt"):
        if (copy / name).is_file():
            checkpoint = load_checkpoint(copy / name)
            calibration = checkpoint["metadata"].pop("event_calibration")
            if checkpoint_scale is not None:
                checkpoint["metadata"]["event_calibration"] = {**calibration, "scale": checkpoint_scale}
            atomic_save(checkpoint, copy / name)
    metrics = json.loads((copy / "metrics.json").read_text())
    metrics["event_calibration"]["scale"] = metrics_scale
    (copy / "metrics.json").write_text(json.dumps(metrics))
    return copy


def test_event_runs_store_their_calibration_in_the_checkpoint(predict_runs):
    """The AHI scale of an apnea / hypopnea run travels in its checkpoints' metadata (best.pt and last.pt): the
    `event_calibration` its metrics.json records, fitted on val labels; a staging run has none."""
    for task in ("apnea", "hypopnea"):
        recorded = json.loads((predict_runs[task] / "metrics.json").read_text())["event_calibration"]
        for name in ("best.pt", "last.pt"):
            if (predict_runs[task] / name).is_file():
                assert load_checkpoint(predict_runs[task] / name)["metadata"]["event_calibration"] == recorded
        assert load_downstream_run(predict_runs[task]).event_scale == recorded["scale"]
    assert "event_calibration" not in load_checkpoint(predict_runs["stage"] / "last.pt")["metadata"]


def test_the_ahi_uses_each_event_runs_stored_scale(predict_runs, night, tmp_path):
    """predict.py multiplies each event type's count by the `event_calibration` scale in its run's checkpoint
    metadata (scored per counted event on val labels), not by what metrics.json says; the raw count stays in
    `ahi_est_uncalibrated`. A run whose checkpoint holds no calibration (trained before checkpoints carried it)
    falls back to its metrics.json. Their AHI estimates the scored AHI under rule 3a, which the calibration counts:
    a comparison under another rule says so."""
    edf, xml = night
    scaled = {
        "apnea": _event_run_copy(predict_runs["apnea"], tmp_path / "apnea", 1.5, metrics_scale=7.0),
        "hypopnea": _event_run_copy(predict_runs["hypopnea"], tmp_path / "hypopnea", None, metrics_scale=3.0),
    }
    assert load_downstream_run(scaled["apnea"]).event_scale == 1.5
    assert load_downstream_run(scaled["hypopnea"]).event_scale == 3.0
    out = tmp_path / "out"
    assert (
        predict.main(
            [
                "--checkpoint",
                str(predict_runs["stage"]),
                "--apnea",
                str(scaled["apnea"]),
                "--hypopnea",
                str(scaled["hypopnea"]),
                "--edf",
                str(edf),
                "--xml",
                str(xml),
                "--hypopnea-rule",
                "4",
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    report = json.loads((out / "report.json").read_text())
    assert report["ahi"]["source"] == "epoch runs" and report["ahi"]["hypopnea_rule"] == "3a"
    assert any("AHI estimates hypopneas under rule 3a" in n and "rule 4" in n for n in report["notes"])
    counted = {task: report["events"][task]["n_events_in_sleep"] for task in ("apnea", "hypopnea")}
    sleep_h = report["sleep"]["tst_min"] / 60
    assert sleep_h > 0 and report["events"]["apnea"]["event_scale"] == 1.5
    assert report["sleep"]["ahi_est"] == pytest.approx((1.5 * counted["apnea"] + 3.0 * counted["hypopnea"]) / sleep_h)
    assert report["sleep"]["ahi_est_uncalibrated"] == pytest.approx((counted["apnea"] + counted["hypopnea"]) / sleep_h)
    assert report["events"]["hypopnea"]["index_per_h"] == pytest.approx(3.0 * counted["hypopnea"] / sleep_h)


def _tree_digest(root: Path) -> dict[str, str]:
    """sha256 of every file below `root` by relative path."""
    import hashlib

    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_out_that_is_a_file_is_refused_before_any_work(predict_runs, night, tmp_path, capsys, monkeypatch):
    target = tmp_path / "report.txt"
    target.write_text("keep me")
    monkeypatch.setattr(predict, "load_night", lambda *a, **k: pytest.fail("processed the night before checking --out"))
    for out in (target, target / "below"):
        assert (
            predict.main(
                ["--checkpoint", str(predict_runs["stage"]), "--edf", str(night[0]), "--out", str(out), "--no-progress"]
            )
            == 2
        )
        err = capsys.readouterr().err
        assert err.startswith("error: --out ") and str(target) in err and err.count("\n") == 1
    assert target.read_text() == "keep me"
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "mine.txt").write_text("x")
    assert (
        predict.main(["--checkpoint", str(predict_runs["stage"]), "--edf", str(night[0]), "--out", str(foreign)]) == 2
    )
    assert "not a predict.py report" in capsys.readouterr().err and (foreign / "mine.txt").read_text() == "x"
    # an earlier report folder that also holds a user's file, or the input night itself: replacing it would
    # delete them, so it is refused (a marker file alone does not make a folder predict.py's to replace)
    (foreign / "summary.csv").write_text("a,b\n")
    kept = foreign / "night.edf"
    kept.write_bytes(night[0].read_bytes())
    before = _tree_digest(foreign)
    argv = ["--checkpoint", str(predict_runs["stage"]), "--edf", str(kept), "--out", str(foreign), "--no-progress"]
    assert predict.main(argv) == 2
    err = capsys.readouterr().err
    assert "holds files predict.py does not write (mine.txt, night.edf)" in err and err.count("\n") == 1
    assert _tree_digest(foreign) == before


def test_a_new_report_replaces_the_old_one_whole_and_a_failed_run_changes_nothing(predict_runs, night, tmp_path):
    edf, _ = night
    out = tmp_path / "out"
    assert (
        predict.main(
            [
                "--checkpoint",
                str(predict_runs["stage"]),
                "--apnea",
                str(predict_runs["apnea"]),
                "--edf",
                str(edf),
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    assert (out / "events.csv").is_file()
    before = _tree_digest(out)
    garbage = tmp_path / "garbage.edf"
    garbage.write_bytes(b"0" * 600)
    assert predict.main(["--checkpoint", str(predict_runs["stage"]), "--edf", str(garbage), "--out", str(out)]) == 2
    assert _tree_digest(out) == before  # the failed run left the earlier report as it was
    assert (
        predict.main(
            ["--checkpoint", str(predict_runs["stage"]), "--edf", str(edf), "--out", str(out), "--no-progress"]
        )
        == 0
    )
    assert not (out / "events.csv").exists()  # no stale events.csv beside a report without event runs
    assert "events.csv" not in " ".join(_tree_digest(out))
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no staging leftovers


def test_a_truncated_edf_is_reported_as_truncated(predict_runs, tmp_path, capsys):
    edf, xml = tmp_path / "cut-900003.edf", tmp_path / "cut-900003-nsrr.xml"
    synthetic.generate_night(edf, xml, "cut-900003", hours=0.2, seed=9, truncated=True)
    out = tmp_path / "out"
    assert (
        predict.main(
            ["--checkpoint", str(predict_runs["stage"]), "--edf", str(edf), "--out", str(out), "--no-progress"]
        )
        == 0
    )
    console = capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    assert report["processing"]["truncated"] is True and any("truncated" in w for w in report["warnings"])
    assert "truncated" in console.lower() and "truncated" in (out / "report.md").read_text().lower()


def test_each_backbone_encodes_a_night_once_with_the_same_probabilities(predict_runs, night):
    """stage and apnea probes share one SynthSleepNet checkpoint: one encoding serves both, and every task gets
    the probabilities of its own end-to-end model."""
    edf, _ = night
    device = torch.device("cpu")
    loaded = predict.load_runs(
        {"sleep_stage": predict_runs["stage"], "apnea": predict_runs["apnea"], "hypopnea": predict_runs["hypopnea"]},
        device,
    )
    epochs, _, _ = predict.load_night(edf, None, channels=["eeg_c4", "eog_l"])
    direct = {task: predict.predict_task(run, epochs, "n", device) for task, run in loaded.items()}
    identities = predict.share_encoders(loaded)
    assert identities["sleep_stage"] == identities["apnea"] != identities["hypopnea"]
    assert loaded["sleep_stage"].model.encoder is loaded["apnea"].model.encoder
    calls = []
    encoders = {id(run.model.encoder): run.model.encoder for run in loaded.values()}
    hooks = [
        encoder.register_forward_hook(lambda module, inputs, output: calls.append((id(module), len(output))))
        for encoder in encoders.values()
    ]
    try:
        shared = predict.predict_all(loaded, epochs, "n", device, identities=identities)
    finally:
        for hook in hooks:
            hook.remove()
    per_encoder = {key: sum(n for k, n in calls if k == key) for key in encoders}
    assert sorted(per_encoder.values()) == [84, 84]  # two backbones, each epoch encoded once by each
    for task in loaded:
        assert np.allclose(shared[task], direct[task], atol=1e-5), task


def test_temporal_run_from_shared_vectors_matches_end_to_end(predict_runs, night):
    edf, _ = night
    device = torch.device("cpu")
    loaded = predict.load_runs({"sleep_stage": predict_runs["temporal"]}, device)
    epochs, _, _ = predict.load_night(edf, None, channels=["eeg_c4"])
    direct = predict.predict_task(loaded["sleep_stage"], epochs, "n", device)
    assert np.allclose(predict.predict_all(loaded, epochs, "n", device)["sleep_stage"], direct, atol=1e-5)


def test_the_whole_night_is_predicted_when_the_scoring_is_shorter(predict_argv, tmp_path):
    """The whole recording is predicted; the agreement compares the scored epochs with the same epochs predicted:
    TST, TRT and the estimated AHI of the scored part (once the whole night's, against the part's scored AHI)."""
    from utils.ahi import MAX_EVENT_EPOCHS, epoch_run_ahi

    edf, xml = tmp_path / "short-900004.edf", tmp_path / "short-900004-nsrr.xml"
    truth = synthetic.generate_night(edf, xml, "short-900004", hours=0.3, seed=10, scored_shorter=3)
    out = tmp_path / "out"
    assert predict.main(predict_argv(edf, out, "--xml", str(xml))) == 0
    report = json.loads((out / "report.json").read_text())
    hypnogram = pd.read_csv(out / "hypnogram.csv", keep_default_na=False)
    n_signal = int(truth.signal_s // 30)
    n_scored = int(min(truth.signal_s, truth.scored_s) // 30)
    assert n_scored < n_signal and report["n_epochs"] == len(hypnogram) == n_signal
    assert (hypnogram["scored_stage_code"].to_numpy()[n_scored:] == -1).all()
    agreement = report["agreement"]
    assert agreement["sleep_stage"]["n"] == (hypnogram["scored_stage_code"] >= 0).sum() <= n_scored
    assert any("scoring covers the first" in note for note in report["notes"])
    predicted = hypnogram["stage_code"].to_numpy()[:n_scored]
    assert agreement["scored_part_epochs"] == n_scored and agreement["scored_sleep"]["trt_min"] == n_scored / 2
    assert agreement["predicted_sleep"]["tst_min"] == np.isin(predicted, (1, 2, 3, 4)).sum() / 2
    scales = (report["events"]["apnea"]["event_scale"], report["events"]["hypopnea"]["event_scale"])
    part = epoch_run_ahi(
        np.isin(predicted, (1, 2, 3, 4)),
        hypnogram["apnea"].to_numpy()[:n_scored],
        hypnogram["hypopnea"].to_numpy()[:n_scored],
        30.0,
        MAX_EVENT_EPOCHS,
        scales,
    )
    assert agreement["ahi"]["estimated"] == pytest.approx(part["ahi_est"], nan_ok=True)
    summary = (out / "report.md").read_text()
    assert f"(the {n_scored} scored epochs)" in summary and f"both over the {n_scored} scored epochs" in summary


def test_standard_annotation_files_agree_with_the_hypnogram(predict_argv, night, tmp_path):
    import mne

    from dataset.labels import epoch_labels
    from dataset.nsrr_xml import parse_nsrr_xml

    edf, _ = night
    out = tmp_path / "out"
    assert predict.main(predict_argv(edf, out)) == 0
    hypnogram = pd.read_csv(out / "hypnogram.csv")
    labels = epoch_labels(parse_nsrr_xml(out / "predicted-nsrr.xml"), len(hypnogram))
    assert labels["stage"].tolist() == hypnogram["stage_code"].tolist()
    for task in ("apnea", "hypopnea"):
        assert labels[task].tolist() == hypnogram[task].tolist()
    assert np.loadtxt(out / "hypnogram-yasa.txt", dtype=int).tolist() == hypnogram["stage_code"].tolist()
    annotations = mne.read_annotations(out / "predicted-annotations.edf")
    stage_seconds = sum(d for d, text in zip(annotations.duration, annotations.description) if text.startswith("Sleep"))
    assert stage_seconds == pytest.approx(30 * len(hypnogram))
    events = pd.read_csv(out / "events.tsv", sep="\t")
    assert (events["trial_type"].str.startswith("sleep_stage_")).sum() == len(hypnogram)


def test_channel_map_chooses_the_edf_signal_and_the_report_names_it(predict_runs, night, tmp_path, capsys):
    """--channel-map works as in the parser (tried before the built-in aliases); the report says which EDF
    label fed which channel."""
    edf, _ = night
    mapping = tmp_path / "map.yaml"
    mapping.write_text("eeg_c4: EEG(sec)\n")
    out = tmp_path / "out"
    assert (
        predict.main(
            [
                "--checkpoint",
                str(predict_runs["stage"]),
                "--edf",
                str(edf),
                "--channel-map",
                str(mapping),
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    report = json.loads((out / "report.json").read_text())
    assert report["channels"]["sources"]["eeg_c4"] == "EEG(sec)" and report["channels"]["user_map"] == ["eeg_c4"]
    assert report["channels"]["sources"]["eog_l"] == "EOG(L)"
    assert "eeg_c4 <- `EEG(sec)` (--channel-map)" in (out / "report.md").read_text()
    assert report["channels"]["user_map_unmatched"] == []
    typo = tmp_path / "typo.yaml"  # a label this night does not have: told, not silently replaced
    typo.write_text("eeg_c4: EEG(sek)\n")
    capsys.readouterr()
    argv = ["--checkpoint", str(predict_runs["stage"]), "--edf", str(edf), "--channel-map", str(typo)]
    assert predict.main([*argv, "--out", str(tmp_path / "typo"), "--no-progress"]) == 0
    assert "--channel-map eeg_c4 matches no label of this night" in capsys.readouterr().out
    report = json.loads((tmp_path / "typo" / "report.json").read_text())
    assert report["channels"]["user_map_unmatched"] == ["eeg_c4"] and report["channels"]["sources"]["eeg_c4"] == "EEG"
    assert "--channel-map eeg_c4: no label of this night matches it" in (tmp_path / "typo" / "report.md").read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text("eeg_c4: [unclosed\n")
    assert (
        predict.main(
            [
                "--checkpoint",
                str(predict_runs["stage"]),
                "--edf",
                str(edf),
                "--channel-map",
                str(bad),
                "--out",
                str(tmp_path / "no"),
            ]
        )
        == 2
    )
    assert capsys.readouterr().err.startswith("error: --channel-map ")


def test_a_model_without_a_usable_channel_is_told_why_each_was_dropped_or_not_found(tmp_path):
    """The error names, per channel the model reads, why the night's channel was dropped (flat, ...) or every
    label tried for it: C4-M1 is among them, not only the SHHS aliases."""
    from types import SimpleNamespace

    from downstream.night_inference import InputError, channel_report
    from tests.parser_nights import write_edf

    edf = tmp_path / "night.edf"
    write_edf(edf, 60, layout={"emg": ("Chin1-Chin2", 200, "uV", (-125, 125), 35.0, 10.0)})
    run = SimpleNamespace(channels=["eeg_c4", "eog_l"])
    info = {"dropped_channels": "eeg_c4 ('C4-M1' flat: IQR 6.4e-08 uV < 0.1)"}
    with pytest.raises(InputError) as err:
        channel_report({"hypopnea": run}, {}, info, edf)
    message = str(err.value)
    assert "eeg_c4 ('C4-M1' flat" in message and "eog_l: no label matches (tried " in message
    assert "E1-M2" in message and "EOG(L)" in message


def test_the_report_keeps_the_whole_reason_a_channel_was_dropped(tmp_path):
    """The report's reason for a missing channel is the parser's whole reason ("'C4-M1' flat: IQR ..."), not
    what follows its first colon; a channel without a label lists the labels tried."""
    from types import SimpleNamespace

    from downstream.night_inference import channel_report
    from tests.parser_nights import write_edf

    edf = tmp_path / "night.edf"
    write_edf(edf, 60, layout={"emg": ("Chin1-Chin2", 200, "uV", (-125, 125), 35.0, 10.0)})
    run = SimpleNamespace(
        channels=["eeg_c4", "eog_l", "emg"], kind="per-epoch", checkpoint="x", model=None, eval_stride=None
    )
    info = {"dropped_channels": "eeg_c4 ('C4-M1' flat: IQR 6.4e-08 uV < 0.1)"}
    report = channel_report({"sleep_stage": run}, {"emg": np.zeros((2, 3000))}, info, edf)
    assert report["missing"] == ["eeg_c4", "eog_l"]
    assert report["why_missing"]["eeg_c4"] == "'C4-M1' flat: IQR 6.4e-08 uV < 0.1"
    assert (
        report["why_missing"]["eog_l"].startswith("no label matches (tried ")
        and "E1-M2" in report["why_missing"]["eog_l"]
    )


def test_a_recording_shorter_than_one_epoch_is_named_as_such(predict_runs, tmp_path, capsys):
    from tests.parser_nights import write_edf

    edf = tmp_path / "short.edf"
    write_edf(edf, 20)
    argv = ["--checkpoint", str(predict_runs["stage"]), "--edf", str(edf), "--out", str(tmp_path / "out")]
    assert predict.main([*argv, "--no-progress"]) == 2
    assert "shorter than one 30-s epoch (signal 20 s)" in capsys.readouterr().err


def test_an_unreadable_start_time_leaves_blank_clock_times_and_says_so(predict_argv, night, tmp_path):
    edf = tmp_path / "nostart-900001.edf"
    data = bytearray(night[0].read_bytes())
    data[176:184] = b"xx.yy.zz"  # the header's start time
    edf.write_bytes(bytes(data))
    out = tmp_path / "out"
    assert predict.main(predict_argv(edf, out)) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["start_time"] is None and pd.read_csv(out / "hypnogram.csv")["time"].isna().all()
    assert "the recording's start time could not be read: the clock times are left blank" in report["notes"]


def test_a_scoring_of_another_recording_is_named_in_the_report(predict_argv, night, tmp_path):
    """--xml of another night (its Recording Start Time says 8 h): the agreement is computed, and the report's
    warnings say the scoring may not be this night's, as the parser's manifest would."""
    edf, xml = night
    other = tmp_path / "other-nsrr.xml"
    text = xml.read_text()
    start = text.index("<Duration>", text.index("Recording Start Time"))
    other.write_text(text[:start] + "<Duration>28800.0</Duration>" + text[text.index("</Duration>", start) + 11 :])
    out = tmp_path / "out"
    assert predict.main(predict_argv(edf, out, "--xml", str(other))) == 0
    report = json.loads((out / "report.json").read_text())
    assert any(
        w.startswith("scoring: ") and "scored on a recording of 28800 s" in w and "this night's scoring?" in w
        for w in report["warnings"]
    )
    assert report["agreement"] is not None
