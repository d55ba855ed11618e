"""Neighbouring epochs (docs/evaluation.md §5.3): `neighbour_vectors` and the stores built from it, the linear
probe and the feature baseline with `--neighbour-epochs`, and a night predicted from its vectors the same way as
the probe's test split."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch

from dataset.datasets import EpochDataset
from downstream.baselines import features as features_script
from downstream.cache import RecordingVectors, VectorStore, neighbour_vectors
from downstream.linear_probing import train as linear_probing
from downstream.night_inference import classify_vectors
from downstream.options import parse_downstream
from downstream.runs import load_downstream_run
from models.heads import EpochEncoder, MLPHead, TemporalClassifier, build_downstream_model
from models.loading import load_backbone
from models.neuronet import build_neuronet, neuronet_config

# `backbones` and `cohort` are that module's fixtures (one small cohort, two small backbones)
from tests.test_downstream import RUN, assert_every_test_epoch_once, backbones, cohort, splits_of  # noqa: F401
from utils.checkpoint import load_checkpoint


def assert_night_predicted_as_on_test(out, cohort, predictions):
    """The first test night of probe run `out`, encoded and classified as `predict.py` does (`classify_vectors` on
    the whole night's vectors), gives its rows of `predictions` again; returns (the loaded run, the night's
    signals, its vectors)."""
    loaded = load_downstream_run(out)
    recording = splits_of(cohort)["recordings"]["test"][0]
    items = EpochDataset(cohort, "test", loaded.channels)
    ids, epochs = items.sample_index()
    rows = np.flatnonzero(ids == recording)[np.argsort(epochs[ids == recording])]
    signals = {ch: np.stack([items[int(i)][ch].numpy() for i in rows]) for ch in loaded.channels}
    with torch.no_grad():
        vectors = loaded.model.encoder({ch: torch.from_numpy(x) for ch, x in signals.items()}).numpy()
    night = classify_vectors(loaded, vectors, recording, torch.device("cpu"), batch_size=16)
    mine = predictions[predictions["recording"] == recording].sort_values("epoch")
    assert np.allclose(night, np.stack(mine["probabilities"].to_numpy()), atol=1e-5)
    return loaded, signals, vectors


def assert_guarded(argv, out, tmp_path, capsys, option, other, match) -> None:
    """A probe option on stored vectors of whole recordings (`option`, e.g. ["--neighbour-epochs", "1"]): refused
    with --init random (single epochs, end to end) before anything is written; the finished run `out` trained
    with it, resumed with `other` options instead, is refused (`match`) before any encoding and left as it was."""
    with pytest.raises(SystemExit):
        linear_probing.main([*argv, "--out", str(tmp_path / "scratch"), "--init", "random", *option])
    assert f"{option[0]} needs --init pretrained" in capsys.readouterr().err
    assert not (tmp_path / "scratch").exists()
    before = (out / "metrics.json").read_bytes()
    with pytest.raises(SystemExit, match=match):
        linear_probing.main([*argv[:-2], "--out", str(out), *other, "--resume", "auto"])
    assert (out / "metrics.json").read_bytes() == before


def default_out(cohort, *options: str) -> str:
    """The feature baseline's default --out with `options`, as a POSIX path."""
    parser = features_script.build_features_parser()
    parsed = parse_downstream(
        parser, ["--data", str(cohort), "--task", "sleep_stage", *options], lambda _: "features_hgb"
    )
    return parsed.out.as_posix()


def test_neighbour_vectors_lay_out_each_epoch_with_its_neighbours():
    vectors = np.arange(12, dtype=np.float32).reshape(4, 3)  # 4 epochs, D = 3
    assert neighbour_vectors(vectors, 0) is vectors
    two = neighbour_vectors(vectors, 2)
    assert two.shape == (4, 15)
    rows = [[0, 0, 0, 1, 2], [0, 0, 1, 2, 3], [0, 1, 2, 3, 3], [1, 2, 3, 3, 3]]  # clamped at the ends
    assert np.array_equal(two, np.stack([np.concatenate([vectors[r] for r in row]) for row in rows]))
    assert np.array_equal(neighbour_vectors(vectors[:1], 1), np.tile(vectors[:1], 3))  # one epoch: itself thrice
    store = VectorStore(
        {"a": RecordingVectors(np.arange(4), vectors), "b": RecordingVectors(np.arange(2), vectors[:2])}
    )
    wide = store.with_neighbours(1)
    assert wide.dim == 9 and store.with_neighbours(0) is store and wide.with_neighbours(0).dim == 3
    assert np.array_equal(
        wide.gather(["b", "a"], np.array([1, 0])), np.stack([[0, 1, 2, 3, 4, 5, 3, 4, 5], [0, 1, 2] * 2 + [3, 4, 5]])
    )
    # the windows of the evaluation tiling get the same layout, zeros at padding
    windows = wide.windows(["a"], torch.tensor([[2, 3, -1]])).numpy()
    assert np.array_equal(windows[0, :2], neighbour_vectors(vectors, 1)[2:]) and not windows[0, 2].any()
    assert wide.recordings["a"].vectors is vectors  # laid out on demand, the store is not copied
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="neighbour_epochs"):
            neighbour_vectors(vectors, bad)
    # a recording with a gap in its epoch numbers has unknown neighbours: refused, not laid out by row
    gapped = VectorStore({"g": RecordingVectors(np.array([0, 1, 5, 6]), vectors)})
    assert gapped.gather(["g"], np.array([5])).shape == (1, 3)
    with pytest.raises(ValueError, match="'g' does not hold consecutive epoch numbers"):
        gapped.with_neighbours(1)


def test_heads_with_neighbours_keep_old_configs_and_refuse_single_epochs():
    old = {"in_dim": 4, "n_classes": 5, "hidden": [8], "dropout": 0.1}  # a head config written before the option
    assert build_downstream_model("mlp_head", old).neighbour_epochs == 0
    assert MLPHead(4, 5, [8]).to_config() == old | {"dropout": 0.5}  # K = 0 writes no new key
    head = build_downstream_model("mlp_head", {**old, "neighbour_epochs": 3})
    assert head.layers[0].in_features == 28 and head(torch.randn(2, 28)).shape == (2, 5)
    with pytest.raises(ValueError, match=r"\(2 x 3 \+ 1\) x 4: this head reads 3 neighbouring epochs"):
        head(torch.randn(2, 4))
    with pytest.raises(ValueError, match="integer"):
        MLPHead(4, 5, neighbour_epochs=2.5)
    encoder = EpochEncoder(build_neuronet(neuronet_config("tiny")), ["eeg_c4"], "frozen")
    with pytest.raises(ValueError, match="neighbour_epochs must be 0"):
        TemporalClassifier(encoder, MLPHead(encoder.embed_dim, 5, neighbour_epochs=1))


def test_probe_and_features_read_neighbouring_epochs(cohort, backbones, tmp_path, capsys):
    """--neighbour-epochs K: the head reads (2K + 1) vectors per epoch, the same in training, on test and in
    inference from a night's vectors; the feature baseline gets the same layout of its features."""
    out = tmp_path / "probe"
    argv = ["--data", str(cohort), "--backbone", str(backbones["fusion"]), "--task", "sleep_stage", *RUN]
    assert linear_probing.main([*argv, "--out", str(out), "--epochs", "2", "--neighbour-epochs", "1"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["neighbour_epochs"] == 1
    checkpoint = load_checkpoint(out / "best.pt")
    dim = load_backbone(backbones["fusion"]).config.fusion_dim
    assert checkpoint["model_config"]["neighbour_epochs"] == 1 and checkpoint["model_config"]["in_dim"] == dim
    assert checkpoint["model"]["layers.0.weight"].shape[1] == 3 * dim
    predictions = assert_every_test_epoch_once(out, cohort)
    # inference: the night's vectors with their neighbours give the test predictions again
    loaded, signals, _ = assert_night_predicted_as_on_test(out, cohort, predictions)
    with pytest.raises(ValueError, match="neighbouring epochs"):
        loaded.model({ch: torch.from_numpy(x[:2]) for ch, x in signals.items()})  # an epoch alone: refused
    # resuming the K = 1 run with another K is refused before any encoding; the run is left as it was
    assert_guarded(argv, out, tmp_path, capsys, ["--neighbour-epochs", "1"], ["--neighbour-epochs", "2"], "reads 1")
    # runs that differ only in K get their own default folders
    assert default_out(cohort, "--neighbour-epochs", "3").endswith("features_hgb/sleep_stage-lf1-nb3-seed0")
    # the feature baseline: the same layout over its hand-crafted features
    features_out = tmp_path / "features"
    features_argv = ["--data", str(cohort), "--task", "sleep_stage", "--channels", "eeg_c4", "--hgb-max-iter", "5"]
    for context, folder in ((0, features_out / "k0"), (2, features_out / "k2")):
        assert (
            features_script.main([*features_argv, *RUN[:3], "--neighbour-epochs", str(context), "--out", str(folder)])
            == 0
        )
        assert_every_test_epoch_once(folder, cohort)
        assert json.loads((folder / "metrics.json").read_text())["neighbour_epochs"] == context
    with (
        (features_out / "k0" / "model.pkl").open("rb") as handle,
        (features_out / "k2" / "model.pkl").open("rb") as other,
    ):
        assert pickle.load(other).n_features_in_ == 5 * pickle.load(handle).n_features_in_
