"""Per-channel pooling (`EpochEncoder(pooling="channel")`, `--pooling channel` of the linear probe, fine-tuning and
the trees): the encoder's vector is each channel's mean fused token, concatenated; the choice travels with the
model into its config and checkpoint, so inference rebuilds the same encoder, and a night lacking one of the
channels is refused by name instead of being encoded into a vector of another layout."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from dataset import synthetic
from downstream import predict
from downstream.fine_tuning import train as fine_tuning
from downstream.linear_probing import train as linear_probing
from downstream.night_inference import InputError, channel_report
from downstream.results import summary_row, variant_suffix
from downstream.runs import load_downstream_run
from models.heads import EpochEncoder, build_epoch_encoder
from models.loading import load_backbone
from tests.test_downstream import RUN, assert_every_test_epoch_once, backbones, cohort  # noqa: F401

CHANNELS = ["eeg_c4", "eog_l"]


def test_the_encoder_pools_each_channel_apart_and_keeps_the_choice(backbones):
    mean = EpochEncoder(load_backbone(backbones["fusion"]), CHANNELS, "frozen").eval()
    channel = EpochEncoder(load_backbone(backbones["fusion"]), CHANNELS, "frozen", pooling="channel").eval()
    signals = {ch: torch.randn(3, 3000) for ch in CHANNELS}
    with torch.no_grad():
        vectors = channel(signals)
        assert vectors.shape == (3, channel.embed_dim) and channel.embed_dim == 2 * mean.embed_dim
        assert torch.allclose(vectors, mean.channel_vectors(signals))
        assert torch.allclose(vectors.reshape(3, 2, -1).mean(dim=1), mean(signals), atol=1e-5)
    assert "pooling" not in mean.to_config()  # a mean-pooled encoder keeps the config earlier code reads
    rebuilt = build_epoch_encoder(channel.to_config())
    rebuilt.load_state_dict(channel.state_dict())
    with torch.no_grad():
        assert rebuilt.pooling == "channel" and torch.allclose(rebuilt.eval()(signals), vectors)
    with pytest.raises(ValueError, match="lacks"):
        channel({"eeg_c4": signals["eeg_c4"]})
    with pytest.raises(ValueError, match="needs a SynthSleepNet"):
        EpochEncoder(load_backbone(backbones["eeg"]), ["eeg_c4"], pooling="channel")
    with pytest.raises(ValueError, match="pooling must be one of"):
        EpochEncoder(load_backbone(backbones["fusion"]), CHANNELS, pooling="max")


def test_channel_stats_adds_each_channels_spread_over_its_frames(backbones, cohort, tmp_path):
    """`channel_stats`: each channel's mean fused token, then each channel's standard deviation over its frames
    (2·C·D); it travels with a probe into inference like `channel`."""
    channel = EpochEncoder(load_backbone(backbones["fusion"]), CHANNELS, "frozen", pooling="channel").eval()
    stats = EpochEncoder(load_backbone(backbones["fusion"]), CHANNELS, "frozen", pooling="channel_stats").eval()
    signals = {ch: torch.randn(3, 3000) for ch in CHANNELS}
    with torch.no_grad():
        vectors = stats(signals)
        tokens = stats.frame_tokens(signals, "fusion")
        spread = torch.cat([tokens[ch].std(dim=1, unbiased=False) for ch in CHANNELS], dim=1)
        assert vectors.shape == (3, stats.embed_dim) and stats.embed_dim == 2 * channel.embed_dim
        half = channel.embed_dim
        assert torch.allclose(vectors[:, :half], channel(signals)) and torch.allclose(vectors[:, half:], spread)
        assert (vectors[:, half:] > 0).all()
    rebuilt = build_epoch_encoder(stats.to_config())
    rebuilt.load_state_dict(stats.state_dict())
    with torch.no_grad():
        assert rebuilt.pooling == "channel_stats" and torch.allclose(rebuilt.eval()(signals), vectors)
    probe = tmp_path / "probe"
    base = ["--data", str(cohort), "--backbone", str(backbones["fusion"]), "--task", "sleep_stage", *RUN]
    assert linear_probing.main([*base, "--out", str(probe), "--epochs", "1", "--pooling", "channel_stats"]) == 0
    assert json.loads((probe / "metrics.json").read_text())["pooling"] == "channel_stats"
    model = load_downstream_run(probe)
    assert model.model.encoder.pooling == "channel_stats"


def test_probe_and_fine_tuning_train_and_reload_per_channel(cohort, backbones, tmp_path, capsys):
    base = ["--data", str(cohort), "--backbone", str(backbones["fusion"]), "--task", "sleep_stage", *RUN]
    probe, tuned = tmp_path / "probe", tmp_path / "tuned"
    assert linear_probing.main([*base, "--out", str(probe), "--epochs", "2", "--pooling", "channel"]) == 0
    window = ["--epochs-per-window", "8", "--stride", "8", "--epochs", "1", "--max-steps", "1", "--batch-size", "2"]
    assert fine_tuning.main([*base, "--out", str(tuned), *window, "--pooling", "channel"]) == 0
    for run in (probe, tuned):
        assert json.loads((run / "config.json").read_text())["pooling"] == "channel"
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["pooling"] == "channel" and variant_suffix(summary_row(metrics)) == " (per channel)"
        assert "backbone tokens pooled: channel" in (run / "results.md").read_text()
        assert_every_test_epoch_once(run, cohort)
        loaded = load_downstream_run(run)
        assert loaded.model.encoder.pooling == "channel"
        assert loaded.model.encoder.embed_dim == loaded.model.head.in_dim
    # the probe's head alone is stored: inference rebuilds the frozen encoder with the pooling it was trained on
    probabilities = loaded_probe_probabilities(probe, cohort)
    assert np.allclose(probabilities["rerun"], probabilities["stored"], atol=1e-4)

    # beside a mean-pooled probe on the same backbone: predict.py encodes the night once per pooling
    mean_apnea = tmp_path / "mean-apnea"
    apnea = ["--data", str(cohort), "--backbone", str(backbones["fusion"]), "--task", "apnea", *RUN]
    assert linear_probing.main([*apnea, "--out", str(mean_apnea), "--epochs", "2"]) == 0
    recording = json.loads((cohort / "splits.json").read_text())["recordings"]["test"][0]
    edf = next((cohort.parent / "src").rglob(f"{recording}.edf"))
    night = tmp_path / "night"
    argv = ["--checkpoint", str(probe), "--apnea", str(mean_apnea), "--edf", str(edf), "--out", str(night)]
    assert predict.main([*argv, "--no-progress"]) == 0
    hypnogram = pd.read_csv(night / "hypnogram.csv")
    stored = pd.read_parquet(probe / "predictions.parquet")
    stored = stored[stored["recording"] == recording].sort_values("epoch")
    p = hypnogram[[c for c in hypnogram.columns if c.startswith("p_") and c != "p_apnea"]].to_numpy()
    assert np.allclose(p, np.stack(stored["probabilities"].to_numpy()), atol=1e-4)

    # a rerun into the run with the other pooling is refused, naming the option
    with pytest.raises(SystemExit) as stopped:
        linear_probing.main([*base, "--out", str(probe), "--epochs", "2", "--resume", "auto"])
    assert stopped.value.code == 2 and "pooling 'channel' -> 'mean'" in capsys.readouterr().err
    # a unimodal backbone reads one channel: refused in one line before anything is written
    eeg = ["--data", str(cohort), "--backbone", str(backbones["eeg"]), "--task", "sleep_stage", *RUN]
    with pytest.raises(SystemExit) as stopped:
        fine_tuning.main([*eeg, "--out", str(tmp_path / "x"), *window, "--pooling", "channel"])
    assert stopped.value.code == 2 and "is a unimodal NeuroNet" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def loaded_probe_probabilities(run, cohort) -> dict[str, np.ndarray]:
    """The probe's stored test probabilities of one test epoch and those of the model `load_downstream_run`
    rebuilds (encoder + head), on that epoch's signals."""
    import pandas as pd

    from dataset.datasets import EpochDataset

    predictions = pd.read_parquet(run / "predictions.parquet")
    test_set = EpochDataset(cohort, "test", CHANNELS)
    item = test_set[0]
    recordings, epochs = test_set.sample_index()
    row = predictions[(predictions["recording"] == recordings[0]) & (predictions["epoch"] == epochs[0])]
    model = load_downstream_run(run).model
    with torch.no_grad():
        rerun = model({ch: item[ch][None] for ch in CHANNELS}).softmax(dim=-1).numpy()[0]
    return {"rerun": rerun, "stored": np.asarray(row["probabilities"].iloc[0])}


def test_a_night_without_one_of_the_channels_is_refused_by_name(backbones, tmp_path):
    edf, xml = tmp_path / "gap-900003.edf", tmp_path / "gap-900003-nsrr.xml"
    synthetic.generate_night(edf, xml, "gap-900003", hours=0.2, seed=8, missing_channels=("eog_l",))
    encoder = EpochEncoder(load_backbone(backbones["fusion"]), CHANNELS, "frozen", pooling="channel")
    run = SimpleNamespace(
        channels=CHANNELS, model=SimpleNamespace(encoder=encoder), checkpoint="x", kind="x", eval_stride=None
    )
    epochs = {"eeg_c4": np.zeros((24, 3000), np.float32)}
    with pytest.raises(InputError) as err:
        channel_report({"sleep_stage": run}, epochs, {}, edf)
    message = str(err.value)
    assert str(edf) in message and "--pooling channel" in message and "eog_l: no label matches (tried " in message
    # mean pooling predicts from the channels that are there (the fusion drops the missing one)
    run.model.encoder = EpochEncoder(load_backbone(backbones["fusion"]), CHANNELS, "frozen")
    assert channel_report({"sleep_stage": run}, epochs, {}, edf)["missing"] == ["eog_l"]
