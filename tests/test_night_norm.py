"""Vectors standardised over their night (`--night-norm zscore`, docs/evaluation.md §5.3): `night_normalised` and
the stores built from it, the linear probe (and a night predicted from its vectors as the probe's test split
was) and the feature baseline."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch

from downstream.baselines import features as features_script
from downstream.cache import RecordingVectors, VectorStore, neighbour_vectors, night_normalised
from downstream.linear_probing import train as linear_probing
from downstream.night_inference import classify_vectors
from models.heads import EpochClassifier, EpochEncoder, MLPHead, build_downstream_model
from models.neuronet import build_neuronet, neuronet_config

# `backbones` and `cohort` are that module's fixtures (one small cohort, two small backbones)
from tests.test_downstream import RUN, assert_every_test_epoch_once, backbones, cohort, splits_of  # noqa: F401
from tests.test_neighbour_epochs import assert_guarded, assert_night_predicted_as_on_test, default_out
from utils.checkpoint import load_checkpoint


def test_night_normalised_standardises_each_component_over_the_night():
    rng = np.random.default_rng(0)
    night = rng.normal(size=(50, 4)).astype(np.float32)
    night[:, 3] = 7.0  # a constant component
    out = night_normalised(night, "zscore")
    assert out.dtype == np.float32 and out.shape == night.shape
    assert np.allclose(out[:, :3].mean(axis=0), 0, atol=1e-6) and np.allclose(out[:, :3].std(axis=0), 1, atol=1e-4)
    assert not out[:, 3].any()  # a constant component becomes 0, never inf or NaN
    assert night_normalised(night, "none") is night
    # another night of the same stages through another amplifier (gain and offset per component) reads the same
    other = night * np.array([3.0, 0.5, 10.0, 1.0], dtype=np.float32) + np.array([100.0, -4.0, 0.0, 2.0], np.float32)
    assert np.allclose(night_normalised(other, "zscore"), out, atol=1e-4)
    with pytest.raises(ValueError, match="night_norm must be one of"):
        night_normalised(night, "minmax")
    # a non-finite value is left out of the night's statistics and stays NaN in its own epoch only
    broken = night.copy()
    broken[5, 0], broken[9, 1] = np.nan, np.inf
    out_broken = night_normalised(broken, "zscore")
    assert (
        np.isnan(out_broken[5, 0])
        and np.isnan(out_broken[9, 1])
        and np.isfinite(np.delete(out_broken, [5, 9], 0)).all()
    )
    kept = np.delete(night[:, 0], 5)
    assert np.allclose(np.delete(out_broken[:, 0], 5), (kept - kept.mean()) / (kept.std() + 1e-6), atol=1e-5)
    with pytest.raises(ValueError, match="without epochs"):
        night_normalised(night[:0], "zscore")
    store = VectorStore({"a": RecordingVectors(np.arange(50), night), "b": RecordingVectors(np.arange(50), other)})
    normalised = store.night_normalised("zscore").with_neighbours(1)
    assert store.night_normalised("none") is store and store.recordings["a"].vectors is night  # the store is kept
    assert np.allclose(normalised.gather(["a"] * 50, np.arange(50)), neighbour_vectors(out, 1))
    assert np.allclose(normalised.gather(["b"], np.array([7])), normalised.gather(["a"], np.array([7])), atol=1e-4)


def test_heads_record_the_night_norm_and_refuse_single_epochs():
    old = {"in_dim": 4, "n_classes": 5, "hidden": [8], "dropout": 0.1}  # a head config written before the option
    assert build_downstream_model("mlp_head", old).night_norm == "none"
    assert "night_norm" not in MLPHead(4, 5, [8]).to_config()  # none writes no new key
    head = build_downstream_model("mlp_head", {**old, "night_norm": "zscore"})
    assert head.night_norm == "zscore" and head.to_config()["night_norm"] == "zscore"
    with pytest.raises(ValueError, match="night_norm must be one of"):
        MLPHead(4, 5, night_norm="zscore-ish")
    encoder = EpochEncoder(build_neuronet(neuronet_config("tiny")), ["eeg_c4"], "frozen")
    classifier = EpochClassifier(encoder, MLPHead(encoder.embed_dim, 5, night_norm="zscore"))
    with pytest.raises(ValueError, match="standardised over their night"):
        classifier({"eeg_c4": torch.zeros(2, 3000)})


def test_probe_and_features_read_vectors_standardised_over_the_night(cohort, backbones, tmp_path, capsys):
    """--night-norm zscore: the probe's head reads each night's vectors standardised over that night, the same in
    training, on test and in inference from a night's vectors; the trees read the features the same way."""
    out = tmp_path / "probe"
    argv = ["--data", str(cohort), "--backbone", str(backbones["fusion"]), "--task", "sleep_stage", *RUN]
    options = ["--epochs", "2", "--neighbour-epochs", "1", "--night-norm", "zscore"]
    assert linear_probing.main([*argv, "--out", str(out), *options]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert (
        metrics["night_norm"] == "zscore" and "standardised over each night: zscore" in (out / "results.md").read_text()
    )
    assert load_checkpoint(out / "best.pt")["model_config"]["night_norm"] == "zscore"
    predictions = assert_every_test_epoch_once(out, cohort)
    # inference: the whole night's vectors, standardised over it, give the test predictions again
    loaded, _, vectors = assert_night_predicted_as_on_test(out, cohort, predictions)
    recording = splits_of(cohort)["recordings"]["test"][0]
    night = classify_vectors(loaded, vectors, recording, torch.device("cpu"))
    loaded.model.head.night_norm = "none"  # the same head on the vectors as stored predicts otherwise
    assert not np.allclose(classify_vectors(loaded, vectors, recording, torch.device("cpu")), night, atol=1e-3)
    # the probe's other guards, and a default folder of its own
    assert_guarded(argv, out, tmp_path, capsys, ["--night-norm", "zscore"], options[:4], "under --night-norm")
    assert default_out(cohort, "--night-norm", "zscore").endswith("features_hgb/sleep_stage-lf1-night-zscore-seed0")
    # the feature baseline: its trees read each night's features standardised over the night
    folder, cache = tmp_path / "features", tmp_path / "cache"
    features_argv = ["--data", str(cohort), "--task", "sleep_stage", "--channels", "eeg_c4", "--hgb-max-iter", "5"]
    assert (
        features_script.main(
            [*features_argv, *RUN[:3], "--night-norm", "zscore", "--cache-dir", str(cache), "--out", str(folder)]
        )
        == 0
    )
    assert json.loads((folder / "metrics.json").read_text())["night_norm"] == "zscore"
    trees = assert_every_test_epoch_once(folder, cohort)
    (stored,) = [path for path in cache.glob("*/*.npz") if path.stem == recording]
    with np.load(stored) as saved, (folder / "model.pkl").open("rb") as handle:
        model, order = pickle.load(handle), np.argsort(saved["epochs"])
        expected = model.predict_proba(night_normalised(saved["vectors"][order], "zscore"))
    mine = np.stack(trees[trees["recording"] == recording].sort_values("epoch")["probabilities"].to_numpy())
    # the run re-weights the trees' probabilities by fixed class weights (a prior shift) and renormalises each row
    ratio = mine[:, model.classes_] / expected
    assert np.allclose(ratio / ratio[:, :1], ratio[0] / ratio[0, 0], rtol=1e-4)
