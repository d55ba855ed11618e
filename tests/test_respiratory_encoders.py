"""Respiratory encoders: the 10-Hz NeuroNet geometry, the four pretraining scripts, SynthSleepNet over
electrophysiology + respiratory channels, a probe on a ten-channel backbone, and a night without SpO2. CPU, tiny."""

from __future__ import annotations

import hashlib
import json
import math
import re
import runpy
import sys
from pathlib import Path

import pytest
import torch

from dataset import data_parser, synthetic
from dataset.constants import (
    CHANNEL_BY_NAME,
    ENCODER_MODALITY,
    EPHYS_CHANNELS,
    MODALITY_CHANNELS,
    RESP_CHANNELS,
    RESP_EPOCH_SAMPLES,
    RESP_FS,
)
from models import neuronet
from models.neuronet import build_neuronet, neuronet_config, neuronet_config_for_rate, respiratory_geometry
from pretrained.unimodal.pretrain import MODALITIES, PROBE_TARGET_BY_MODALITY
from utils.checkpoint import load_checkpoint
from utils.run_logging import read_jsonl

REPO = Path(__file__).resolve().parent.parent
RESP_MODALITIES = ("airflow", "thor", "abdo", "spo2")
COMMON = ["--preset", "tiny", "--batch-size", "4", "--workers", "0", "--no-progress", "--log-every", "1"]
MONITOR = ["--knn-max-train", "48", "--knn-max-val", "24", "--knn-k", "3"]

# sha256 of "key:shape;..." over the state dict of every electrophysiology preset, as it was before the respiratory
# encoders: checkpoints of these presets must keep loading.
EPHYS_FINGERPRINTS = {
    "tiny": "00d76eb3b33a32f9",
    "T": "f4730f9b7624f5f7",
    "B": "c83f3b29f2a3d7f8",
    "fast": "ceccc1404cc965ca",
}


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    """5 synthetic half-hour nights; the first (a pretrain and train night) has no SpO2. Parsed once."""
    root = tmp_path_factory.mktemp("resp_cohort")
    synthetic.generate_cohort(root / "src", nights=5, hours=0.5, seed=2, variations={0: {"missing_channels": ["spo2"]}})
    data_parser.parse_cohort(root / "src", root / "dst", workers=1, progress=False)
    return root / "dst"


def test_constants_name_the_respiratory_modalities():
    assert neuronet.RESP_FS == RESP_FS and neuronet.ELECTROPHYSIOLOGY_FS == CHANNEL_BY_NAME["eeg_c4"].target_fs
    for modality in RESP_MODALITIES:
        assert MODALITY_CHANNELS[modality] == (modality,) and ENCODER_MODALITY[modality] == modality
        assert modality in MODALITIES
        assert PROBE_TARGET_BY_MODALITY[modality] == ("hypopnea" if modality == "airflow" else "apnea")
    assert MODALITY_CHANNELS["resp"] == RESP_CHANNELS  # the group stays
    assert ENCODER_MODALITY["eeg_c3"] == ENCODER_MODALITY["eeg_c4"] == "eeg"


@pytest.mark.parametrize("preset", sorted(EPHYS_FINGERPRINTS))
def test_electrophysiology_presets_are_unchanged(preset):
    config = neuronet_config(preset)
    assert neuronet_config_for_rate(preset, 100) == config
    with torch.device("meta"):  # shapes only, no memory or init time (B has 72 M parameters)
        model = build_neuronet(config)
    state = ";".join(f"{k}:{tuple(v.shape)}" for k, v in model.state_dict().items())
    assert _sha(state) == EPHYS_FINGERPRINTS[preset]
    assert (config.fs, config.frame_window_s, config.frame_step_s, model.n_frames) == (100, 4, 1, 27)
    assert config.frame_tokenizer == ("shared_conv" if preset == "fast" else "per_frame")
    assert config.backbone_strides == ((1, 5, 1, 1) if preset == "fast" else (1, 1, 2, 2))


@pytest.mark.parametrize("preset", ["tiny", "fast", "T", "B"])
def test_respiratory_geometry_for_every_preset(preset):
    config = neuronet_config_for_rate(preset, RESP_FS)
    assert config == neuronet_config(preset, **respiratory_geometry(preset))
    assert (config.fs, config.frame_window_s, config.frame_step_s, config.frame_tokenizer) == (10, 8, 2, "shared_conv")
    assert config.encoder_dim == neuronet_config(preset).encoder_dim  # the preset's widths, only the framing differs
    with torch.device("meta"):
        model = build_neuronet(config)
    assert model.framer.n_samples == RESP_EPOCH_SAMPLES and model.n_frames == 12
    assert model.frame_backbone.stride == 4 and model.frame_backbone.receptive_margin == 99  # 0.4 s, +-9.9 s
    with pytest.raises(ValueError, match="too short"):  # the published per-frame CNN cannot take 8-s frames at 10 Hz
        build_neuronet(neuronet_config(preset, **{**respiratory_geometry(preset), "frame_tokenizer": "per_frame"}))
    with pytest.raises(ValueError, match="multiples of its feature stride"):  # a 1-s step is 10 samples, not 4k
        build_neuronet(neuronet_config(preset, **{**respiratory_geometry(preset), "frame_step_s": 1.0}))
    with pytest.raises(ValueError, match="not 25 Hz"):
        neuronet_config_for_rate(preset, 25)


def test_respiratory_neuronet_forward_backward():
    torch.manual_seed(0)
    model = build_neuronet(neuronet_config_for_rate("tiny", RESP_FS)).train()
    epochs = torch.randn(4, RESP_EPOCH_SAMPLES)  # (B, 300) at 10 Hz
    out = model(epochs)
    assert set(out) >= {"loss", "recon_1", "recon_2", "contrastive"} and torch.isfinite(out["loss"])
    out["loss"].backward()
    grads = [p.grad for p in model.frame_backbone.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)
    pooled, tokens = model.eval().encode(epochs)
    assert pooled.shape == (4, 64) and tokens.shape == (4, 12, 64)
    with pytest.raises(ValueError, match=r"\(batch, 300\)"):
        model.encode(torch.randn(2, 3000))
    # token k depends only on the samples of frame k +- the receptive margin: a change at 25-30 s leaves token 0
    changed = epochs.clone()
    changed[:, 250:] += 5.0
    with torch.no_grad():
        first, second = model.frame_tokens(epochs), model.frame_tokens(changed)
    assert torch.allclose(first[:, 0], second[:, 0]) and not torch.allclose(first[:, -1], second[:, -1])


@pytest.mark.parametrize("modality", RESP_MODALITIES)
def test_respiratory_script_runs_two_steps(cohort, tmp_path, capsys, monkeypatch, modality):
    """The script file itself (as `python pretrained/unimodal/<m>/train.py`), 2 steps on the tiny cohort."""
    out = tmp_path / modality
    script = REPO / "pretrained" / "unimodal" / modality / "train.py"
    monkeypatch.setattr(
        sys, "argv", [str(script), "--data", str(cohort), "--out", str(out), *COMMON, *MONITOR, "--max-steps", "2"]
    )
    with pytest.raises(SystemExit) as done:
        runpy.run_path(str(script), run_name="__main__")
    assert done.value.code == 0
    printed = capsys.readouterr().out
    assert "NeuroNet[tiny]" in printed and "12 frames of 8 s every 2 s at 10 Hz" in printed
    assert "note: channel" not in printed  # the channel is the modality's own
    if modality == "spo2":  # the night without SpO2 is skipped and counted; the others still train
        assert "missing channel(s) spo2" in printed
    config = json.loads((out / "config.json").read_text())
    assert config["channels"] == [modality] and config["monitor_target"] == PROBE_TARGET_BY_MODALITY[modality]
    steps = read_jsonl(out / "steps.jsonl")
    assert [s["step"] for s in steps] == [1, 2] and all(math.isfinite(s["loss"]) for s in steps)
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["metadata"]["modality"] == modality and ckpt["model_config"]["fs"] == RESP_FS
    model = build_neuronet(ckpt["model_config"])
    model.load_state_dict(ckpt["model"])
    assert model.encode(torch.randn(2, RESP_EPOCH_SAMPLES))[0].shape == (2, 64)


def test_rate_mismatch_is_one_error_line(cohort, tmp_path):
    from pretrained.unimodal.pretrain import main

    with pytest.raises(
        SystemExit,
        match="eeg_c4 is a 100 Hz electrophysiology channel; the airflow NeuroNet takes 300-sample epochs at 10 Hz",
    ):
        main(["--data", str(cohort), "--out", str(tmp_path / "a"), "--channels", "eeg_c4", *COMMON], modality="airflow")
    assert not (tmp_path / "a").exists()


# ---------------------------------------------------------------- fusion of electrophysiology + respiratory channels
TEN = list(EPHYS_CHANNELS) + list(RESP_CHANNELS)
ENCODERS = ("eeg", "eog", "emg", "ecg") + RESP_MODALITIES


@pytest.fixture(scope="module")
def unimodal_runs(cohort, tmp_path_factory) -> dict[str, Path]:
    """One-step tiny runs of all eight unimodal NeuroNets (their run directories)."""
    from pretrained.unimodal.pretrain import main

    root = tmp_path_factory.mktemp("resp_unimodal_runs")
    for modality in ENCODERS:
        assert (
            main(
                ["--data", str(cohort), "--out", str(root / modality), *COMMON, "--max-steps", "1", "--no-monitor"],
                modality=modality,
            )
            == 0
        )
    return {modality: root / modality for modality in ENCODERS}


@pytest.fixture(scope="module")
def ten_channel_run(cohort, unimodal_runs, tmp_path_factory) -> Path:
    """2 steps of pretrained/multimodal/train.py over all ten channels (k-NN monitor on, target apnea)."""
    from pretrained.multimodal.train import main

    out = tmp_path_factory.mktemp("resp_multimodal") / "ten"
    unimodal = ",".join(f"{m}={unimodal_runs[m]}" for m in ENCODERS)
    assert (
        main(
            [
                "--data",
                str(cohort),
                "--out",
                str(out),
                *COMMON,
                *MONITOR,
                "--channels",
                ",".join(TEN),
                "--unimodal",
                unimodal,
                "--max-steps",
                "2",
                "--monitor-target",
                "apnea",
            ]
        )
        == 0
    )
    return out


def test_multimodal_script_fuses_ephys_and_respiratory_channels(ten_channel_run, cohort, capsys):
    from models.loading import load_backbone
    from models.synthsleepnet import SynthSleepNet

    ckpt = load_checkpoint(ten_channel_run / "last.pt")
    assert ckpt["model_kind"] == "synthsleepnet" and ckpt["step"] == 2 and ckpt["model_config"]["channels"] == TEN
    assert ckpt["metadata"]["channel_modality"]["airflow"] == "airflow"
    assert ckpt["metadata"]["channel_modality"]["eeg_c3"] == "eeg"  # C3 and C4 share the EEG checkpoint
    assert sorted(ckpt["metadata"]["unimodal"]) == sorted(ENCODERS)
    assert ckpt["model_config"]["encoders"]["spo2"]["fs"] == RESP_FS
    log = read_jsonl(ten_channel_run / "log.jsonl")[0]
    assert all(math.isfinite(log[f"recon_{ch}"]) for ch in TEN) and math.isfinite(log["loss"])
    assert log["knn_n_train"] > 0  # the monitor encoded {channel: (B, 3000) or (B, 300)} batches

    backbone = load_backbone(ten_channel_run / "last.pt")
    assert isinstance(backbone, SynthSleepNet)
    batch = {ch: torch.randn(3, CHANNEL_BY_NAME[ch].epoch_samples) for ch in TEN}  # (3, 3000) / (3, 300)
    with torch.no_grad():
        pooled, tokens = backbone.encode(batch)
        assert pooled.shape == (3, 128) and tokens.shape == (3, 6 * 27 + 4 * 12, 128)
        # a night without SpO2 at inference: the channel is dropped from the fusion, with a warning
        with pytest.warns(UserWarning, match=r"\['spo2'\] missing"):
            partial, partial_tokens, used = backbone.encode({**batch, "spo2": None}, return_channels=True)
        assert "spo2" not in used and partial_tokens.shape[1] == 6 * 27 + 3 * 12 and torch.isfinite(partial).all()
        with pytest.raises(ValueError, match=r"airflow must be a \(batch, 300\) tensor"):
            backbone.encode({**batch, "airflow": torch.randn(3, 3000)})


def test_multimodal_skips_and_counts_the_night_without_spo2(cohort, unimodal_runs, tmp_path, capsys):
    from pretrained.multimodal.train import main

    out = tmp_path / "resp_subset"
    assert (
        main(
            [
                "--data",
                str(cohort),
                "--out",
                str(out),
                *COMMON,
                "--channels",
                "eeg_c4,airflow,spo2",
                "--unimodal",
                f"eeg={unimodal_runs['eeg']},airflow={unimodal_runs['airflow']},spo2={unimodal_runs['spo2']}",
                "--max-steps",
                "2",
                "--no-monitor",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert re.search(
        r"split 'pretrain', channels \[.*\]: skipped 1 recording\(s\): 1 x missing channel\(s\) spo2", printed
    )
    assert [s["step"] for s in read_jsonl(out / "steps.jsonl")] == [1, 2]
    with pytest.raises(SystemExit, match="no run for modality spo2"):
        main(
            [
                "--data",
                str(cohort),
                "--out",
                str(tmp_path / "x"),
                *COMMON,
                "--channels",
                "airflow,spo2",
                "--unimodal",
                f"airflow={unimodal_runs['airflow']}",
                "--no-monitor",
            ]
        )
    with pytest.raises(SystemExit, match="was pretrained on thor, but is given for airflow"):
        main(
            [
                "--data",
                str(cohort),
                "--out",
                str(tmp_path / "y"),
                *COMMON,
                "--channels",
                "airflow",
                "--unimodal",
                f"airflow={unimodal_runs['thor']}",
                "--no-monitor",
            ]
        )
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


# ---------------------------------------------------------------- downstream
PROBE_RUN = [
    "--workers",
    "0",
    "--no-progress",
    "--n-boot",
    "20",
    "--hypnograms",
    "0",
    "--resume",
    "none",
    "--epochs",
    "1",
    "--batch-size",
    "16",
]


def test_probe_on_a_ten_channel_backbone(cohort, ten_channel_run, tmp_path):
    from downstream.linear_probing import train as linear_probing

    out = tmp_path / "probe"
    assert (
        linear_probing.main(
            [
                "--data",
                str(cohort),
                "--backbone",
                str(ten_channel_run),
                "--task",
                "apnea",
                "--out",
                str(out),
                *PROBE_RUN,
            ]
        )
        == 0
    )
    assert load_checkpoint(out / "last.pt")["metadata"]["channels"] == TEN  # the backbone's channels by default
    assert (out / "metrics.json").is_file()
    # --channels picks respiratory channels of the backbone
    subset = tmp_path / "probe_resp"
    assert (
        linear_probing.main(
            [
                "--data",
                str(cohort),
                "--backbone",
                str(ten_channel_run),
                "--task",
                "apnea",
                "--channels",
                "airflow,thor,eeg_c4",
                "--out",
                str(subset),
                *PROBE_RUN,
            ]
        )
        == 0
    )
    assert load_checkpoint(subset / "last.pt")["metadata"]["channels"] == ["airflow", "thor", "eeg_c4"]


def test_downstream_from_scratch_on_a_respiratory_channel(cohort, unimodal_runs, tmp_path):
    """A unimodal airflow backbone, and --init random over --channels with a 10-Hz channel (resp geometry)."""
    from downstream.fine_tuning import train as fine_tuning
    from downstream.linear_probing import train as linear_probing

    probe = tmp_path / "airflow_probe"
    assert (
        linear_probing.main(
            [
                "--data",
                str(cohort),
                "--backbone",
                str(unimodal_runs["airflow"]),
                "--task",
                "apnea",
                "--out",
                str(probe),
                *PROBE_RUN,
            ]
        )
        == 0
    )
    assert load_checkpoint(probe / "last.pt")["metadata"]["channels"] == ["airflow"]
    scratch = tmp_path / "scratch"
    assert (
        fine_tuning.main(
            [
                "--data",
                str(cohort),
                "--init",
                "random",
                "--preset",
                "tiny",
                "--channels",
                "eeg_c4,airflow",
                "--task",
                "apnea",
                "--out",
                str(scratch),
                "--epochs-per-window",
                "4",
                "--max-steps",
                "1",
                *PROBE_RUN[:-2],
                "--epochs",
                "1",
                "--batch-size",
                "2",
            ]
        )
        == 0
    )
    encoders = load_checkpoint(scratch / "last.pt")["model_config"]["encoder"]["backbone_config"]["encoders"]
    assert encoders["airflow"]["fs"] == RESP_FS and encoders["eeg_c4"]["fs"] == 100


def test_backbone_rate_mismatch_is_one_error_line(cohort, unimodal_runs, tmp_path):
    from downstream.linear_probing import train as linear_probing

    with pytest.raises(SystemExit, match="airflow is sampled at 10 Hz; the NeuroNet backbone takes 100-Hz epochs"):
        linear_probing.main(
            [
                "--data",
                str(cohort),
                "--backbone",
                str(unimodal_runs["eeg"]),
                "--task",
                "apnea",
                "--channels",
                "airflow",
                "--out",
                str(tmp_path / "x"),
                *PROBE_RUN,
            ]
        )
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_airflow_pretraining_beats_random_init(tmp_path):
    """About 8 min on 2 free cores: the tiny airflow encoder after 1440 steps (6 epochs of 40 synthetic 2-h nights)
    against the same encoder untrained, k-NN hypopnea and apnea AUROC on `val` (4 nights, 960 epochs). Measured
    on a busy shared 2-core machine: hypopnea 0.905 vs 0.853, apnea 0.998 vs 0.983."""
    from dataset.datasets import EpochDataset
    from pretrained.unimodal.pretrain import main
    from utils.knn_probe import KnnMonitor

    synthetic.generate_cohort(tmp_path / "src", nights=40, hours=2.0, seed=0)
    data_parser.parse_cohort(tmp_path / "src", tmp_path / "dst", workers=1, progress=False)
    out = tmp_path / "airflow"
    assert (
        main(
            [
                "--data",
                str(tmp_path / "dst"),
                "--out",
                str(out),
                "--preset",
                "tiny",
                "--epochs",
                "6",
                "--batch-size",
                "32",
                "--lr",
                "2e-3",
                "--workers",
                "0",
                "--no-progress",
                "--no-monitor",
            ],
            modality="airflow",
        )
        == 0
    )
    ckpt = load_checkpoint(out / "last.pt")
    trained = build_neuronet(ckpt["model_config"])
    trained.load_state_dict(ckpt["model"])
    torch.manual_seed(0)
    untrained = build_neuronet(ckpt["model_config"])
    auroc = {}
    for target in ("hypopnea", "apnea"):
        train, val = (
            EpochDataset(tmp_path / "dst", split, ["airflow"], task=target, pool_channels=True)
            for split in ("train", "val")
        )
        monitor = KnnMonitor(train, val, target=target, k=10, max_train=4000, max_val=2000)
        for name, model in (("pretrained", trained), ("untrained", untrained)):
            auroc[target, name] = monitor(model, torch.device("cpu"))["knn_auroc"]
    assert auroc["hypopnea", "pretrained"] > auroc["hypopnea", "untrained"] + 0.02, auroc
    assert auroc["apnea", "pretrained"] >= auroc["apnea", "untrained"] - 0.005, auroc
