"""Gradient-boosted trees on a frozen backbone's vectors (`downstream/baselines/features.py --backbone`)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from dataset.datasets import EpochDataset
from downstream.baselines import features as features_script
from downstream.cache import cache_key
from downstream.linear_probing import train as linear_probing
from downstream.options import parse_downstream
from downstream.results import summary_row, variant_suffix
from models.heads import EpochEncoder
from models.loading import checkpoint_path, load_backbone
from tests.test_downstream import RUN, assert_every_test_epoch_once, backbones, cohort, splits_of  # noqa: F401
from utils.checkpoint import sha256_file


def test_trees_on_a_frozen_backbone(cohort, backbones, tmp_path):
    """--backbone: the trees read the frozen backbone's vectors, the linear probe's cache key; the vectors of the
    selected train epochs alone (no cache) and of whole cached recordings give the same model."""
    base = ["--data", str(cohort), "--task", "sleep_stage", "--backbone", str(backbones["fusion"])]
    base += ["--hgb-max-iter", "10", "--hgb-max-bins", "63", "--seed", "3", "--workers", "0", "--no-progress"]
    base += ["--n-boot", "50"]
    cache = tmp_path / "cache"
    runs = {"selected": tmp_path / "selected", "cached": tmp_path / "cached"}
    assert features_script.main([*base, "--out", str(runs["selected"]), "--label-fraction", "0.5"]) == 0
    assert (
        features_script.main(
            [*base, "--out", str(runs["cached"]), "--label-fraction", "0.5", "--cache-dir", str(cache)]
        )
        == 0
    )
    metrics = json.loads((runs["cached"] / "metrics.json").read_text())
    assert metrics["method"] == "backbone_hgb" and metrics["init"] == "pretrained"
    assert metrics["channels"] == ["eeg_c4", "eog_l"]  # the backbone's channels
    assert metrics["backbone"]["sha256"] == sha256_file(backbones["fusion"])
    assert 1 <= metrics["selection"]["iterations"] <= 10
    predictions = {name: assert_every_test_epoch_once(run, cohort) for name, run in runs.items()}
    assert np.allclose(
        np.stack(predictions["selected"]["probabilities"]), np.stack(predictions["cached"]["probabilities"]), atol=1e-5
    )
    config = json.loads((runs["cached"] / "config.json").read_text())
    assert config["channels"] == ["eeg_c4", "eog_l"] and config["device"] == "auto"
    with open(runs["cached"] / "model.pkl", "rb") as handle:
        assert config["hgb_max_bins"] == 63 and pickle.load(handle).max_bins == 63
    # one cache per backbone: the linear probe reads the folder the trees filled, and adds none
    key = cache_key(sha256_file(backbones["fusion"]), ["eeg_c4", "eog_l"], "fp32")
    assert [p.name for p in cache.iterdir()] == [key]
    probe = ["--data", str(cohort), "--task", "sleep_stage", "--backbone", str(backbones["fusion"]), "--epochs", "1"]
    probe += ["--cache-dir", str(cache), "--out", str(tmp_path / "probe"), *RUN]
    assert linear_probing.main(probe) == 0
    assert [p.name for p in cache.iterdir()] == [key]
    model = load_backbone(backbones["fusion"])
    encoder = EpochEncoder(model, ["eeg_c4", "eog_l"], "frozen").eval()
    recording = splits_of(cohort)["recordings"]["test"][0]
    stored = np.load(cache / key / f"{recording}.npz")
    test_set = EpochDataset(cohort, "test", ["eeg_c4", "eog_l"])
    recordings, epochs = test_set.sample_index()
    item = int(np.flatnonzero(np.asarray(recordings) == recording)[0])
    row = int(np.flatnonzero(stored["epochs"] == epochs[item])[0])
    with torch.no_grad():
        expected = encoder({ch: test_set[item][ch][None] for ch in ("eeg_c4", "eog_l")}).numpy()[0]
    assert np.allclose(stored["vectors"][row], expected, atol=1e-5)
    # a trees run is no checkpoint: predict.py and --backbone say so in one line
    with pytest.raises(FileNotFoundError, match="model.pkl is a scikit-learn model, not a PyTorch checkpoint"):
        checkpoint_path(runs["cached"])


def test_trees_on_a_unimodal_backbone_with_neighbours(cohort, backbones, tmp_path):
    """A NeuroNet backbone encodes the first channel it was pretrained on; --neighbour-epochs K gives the trees
    (2K + 1) vectors per epoch, and every test epoch is still predicted once."""
    out = tmp_path / "eeg"
    argv = ["--data", str(cohort), "--task", "sleep_stage", "--backbone", str(backbones["eeg"]), "--out", str(out)]
    argv += ["--neighbour-epochs", "1", "--hgb-max-iter", "5", "--workers", "0", "--no-progress", "--n-boot", "20"]
    assert features_script.main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["channels"] == ["eeg_c4"] and metrics["neighbour_epochs"] == 1
    assert metrics["backbone"]["kind"] == "neuronet"
    assert_every_test_epoch_once(out, cohort)
    model = pickle.loads((out / "model.pkl").read_bytes())
    assert model.n_features_in_ == 3 * load_backbone(backbones["eeg"]).config.encoder_dim


def test_trees_refuse_bad_options_in_one_line(cohort, backbones, tmp_path, capsys):
    base = ["--data", str(cohort), "--task", "sleep_stage", "--out", str(tmp_path / "x"), "--no-progress"]
    for extra, message in (
        (["--channels="], "--channels: name at least one channel"),
        (["--backbone", str(backbones["fusion"]), "--device", "tpu"], "--device tpu: expected auto, cpu"),
        (["--pooling", "channel"], "--pooling channel pools a backbone's tokens: give --backbone"),
        (["--backbone", str(backbones["eeg"]), "--pooling", "channel"], "is a unimodal NeuroNet (one channel)"),
    ):
        with pytest.raises(SystemExit) as stopped:
            features_script.main([*base, *extra])
        assert stopped.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_trees_on_per_channel_vectors(cohort, backbones, tmp_path):
    """--pooling channel: each channel's mean fused token, concatenated (C x D), cached under a key of its own;
    their mean over channels is the probe's vector (every channel has as many frames)."""
    encoder = EpochEncoder(load_backbone(backbones["fusion"]), ["eeg_c4", "eog_l"], "frozen").eval()
    signals = {ch: torch.randn(3, 3000) for ch in ("eeg_c4", "eog_l")}
    with torch.no_grad():
        per_channel, pooled = encoder.channel_vectors(signals), encoder(signals)
    assert per_channel.shape == (3, 2 * pooled.shape[1])
    assert torch.allclose(per_channel.reshape(3, 2, -1).mean(dim=1), pooled, atol=1e-5)
    with pytest.raises(ValueError, match="lacks"):
        encoder.channel_vectors({"eeg_c4": signals["eeg_c4"]})

    # channels in another order than the backbone's: concatenated, cached and keyed in the order asked for
    order = ["eog_l", "eeg_c4"]
    cache, runs = tmp_path / "cache", {"cached": tmp_path / "cached", "selected": tmp_path / "selected"}
    argv = ["--data", str(cohort), "--task", "sleep_stage", "--backbone", str(backbones["fusion"])]
    argv += ["--channels", ",".join(order), "--pooling", "channel", "--hgb-max-iter", "5", "--workers", "0"]
    argv += ["--no-progress", "--n-boot", "20", "--label-fraction", "0.5"]
    assert features_script.main([*argv, "--out", str(runs["cached"]), "--cache-dir", str(cache)]) == 0
    assert features_script.main([*argv, "--out", str(runs["selected"])]) == 0  # train vectors encoded apart
    predictions = {name: assert_every_test_epoch_once(run, cohort) for name, run in runs.items()}
    assert np.allclose(
        np.stack(predictions["selected"]["probabilities"]), np.stack(predictions["cached"]["probabilities"]), atol=1e-5
    )
    metrics = json.loads((runs["cached"] / "metrics.json").read_text())
    assert metrics["pooling"] == "channel" and metrics["method"] == "backbone_hgb" and metrics["channels"] == order
    assert pickle.loads((runs["cached"] / "model.pkl").read_bytes()).n_features_in_ == per_channel.shape[1]
    key = cache_key(sha256_file(backbones["fusion"]), order, "fp32", "channel-pooled")
    assert [p.name for p in cache.iterdir()] == [key]
    recording = splits_of(cohort)["recordings"]["test"][0]
    stored = np.load(cache / key / f"{recording}.npz")
    test_set = EpochDataset(cohort, "test", order)
    recordings, epochs = test_set.sample_index()
    item = int(np.flatnonzero(np.asarray(recordings) == recording)[0])
    row = int(np.flatnonzero(stored["epochs"] == epochs[item])[0])
    reordered = EpochEncoder(load_backbone(backbones["fusion"]), order, "frozen").eval()
    with torch.no_grad():
        expected = reordered.channel_vectors({ch: test_set[item][ch][None] for ch in order}).numpy()[0]
    assert np.allclose(stored["vectors"][row], expected, atol=1e-5)
    row = summary_row(metrics)
    assert row["pooling"] == "channel" and variant_suffix(row) == " (per channel)"
    assert "backbone tokens pooled: channel" in (runs["cached"] / "results.md").read_text()


def test_per_channel_runs_default_to_their_own_folder(cohort, backbones, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # default --out is relative: runs/downstream/<method>/...
    argv = ["--data", str(cohort), "--task", "sleep_stage", "--backbone", str(backbones["fusion"])]
    parser = features_script.build_features_parser()
    names = {
        pooling: parse_downstream(parser, [*argv, "--pooling", pooling], lambda _: "backbone_hgb").out
        for pooling in ("mean", "channel")
    }
    assert names["mean"] == Path("runs/downstream/backbone_hgb/sleep_stage-lf1-seed0")
    assert names["channel"] == Path("runs/downstream/backbone_hgb/sleep_stage-lf1-per-channel-seed0")


def test_cutting_the_fitted_trees_gives_the_shorter_fit():
    """The selected number of iterations is cut from the long fit: exactly the model a fit with that many
    iterations gives (the same trees, the same probabilities, the same parameters); an estimator without
    per-iteration trees is fitted again instead."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 12))
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(int) + (x[:, 2] > 1).astype(int)
    cfg = features_script.build_features_parser().parse_args(
        ["--data", "unused", "--task", "sleep_stage", "--seed", "4"]
    )
    long = features_script.make_classifier(cfg, 30).fit(x, y)
    short = features_script.make_classifier(cfg, 12).fit(x, y)
    assert not np.array_equal(long.predict_proba(x), short.predict_proba(x))
    refits = []
    cut = features_script.first_iterations(long, 12, lambda: refits.append(1))
    assert cut is long and cut.n_iter_ == 12 and cut.get_params() == short.get_params() and not refits
    assert np.array_equal(cut.predict_proba(x), short.predict_proba(x))
    assert np.array_equal(pickle.loads(pickle.dumps(cut)).predict_proba(x), short.predict_proba(x))

    class Opaque:  # no per-iteration trees to cut
        pass

    features_script.first_iterations(Opaque(), 3, lambda: refits.append(1))
    assert refits == [1]


def test_a_failed_rerun_leaves_the_earlier_run_whole(cohort, tmp_path, monkeypatch):
    """The run folder appears whole or not at all: a rerun that fails after its inputs were read (here while
    choosing the iterations) leaves every file of the earlier run as it was; a finished rerun with other options
    replaces the run and keeps the earlier config as config.1.json."""
    out = tmp_path / "features"
    argv = ["--data", str(cohort), "--task", "sleep_stage", "--channels", "eeg_c4", "--out", str(out)]
    argv += ["--hgb-max-iter", "5", "--workers", "0", "--no-progress", "--n-boot", "20", "--hypnograms", "0"]
    assert features_script.main(argv) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def broken(*args, **kwargs):
        raise RuntimeError("killed while choosing")

    with monkeypatch.context() as patch:
        patch.setattr(features_script, "select_iterations", broken)
        with pytest.raises(RuntimeError, match="killed while choosing"):
            features_script.main([*argv, "--seed", "7"])
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["features"]  # no staging folder left beside it
    assert features_script.main([*argv, "--seed", "7"]) == 0
    assert json.loads((out / "config.json").read_text())["seed"] == 7
    assert (out / "config.1.json").read_bytes() == before["config.json"]


def test_an_out_folder_of_other_files_is_refused_not_replaced(cohort, tmp_path, capsys):
    """The run replaces --out whole, so a folder that is not an earlier run of the script (a probe's checkpoints,
    a user's notes) is refused before any work, and left as it was."""
    out = tmp_path / "probe_run"
    out.mkdir()
    (out / "best.pt").write_bytes(b"weights")
    (out / "notes.txt").write_text("keep me")
    events = tmp_path / "event_run"  # an event-detection run writes model.pkl too
    events.mkdir()
    (events / "model.pkl").write_bytes(b"detector")
    (events / "metrics.json").write_text(json.dumps({"method": "features", "task": "event_detection"}))
    link = tmp_path / "link"
    link.symlink_to(out, target_is_directory=True)
    for folder in (out, events, link):
        argv = ["--data", str(cohort), "--task", "sleep_stage", "--channels", "eeg_c4", "--out", str(folder)]
        with pytest.raises(SystemExit) as stop:
            features_script.main([*argv, "--hgb-max-iter", "5", "--workers", "0", "--no-progress"])
        assert stop.value.code == 2
        assert "a folder holding other files" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["best.pt", "notes.txt"]
    assert sorted(p.name for p in events.iterdir()) == ["metrics.json", "model.pkl"] and link.is_symlink()
