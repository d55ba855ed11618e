"""pretrained/multimodal/train.py on a small synthetic cohort: 2 steps from four 1-step unimodal runs, resume
(with and without --unimodal), a channel subset, input errors, and load_backbone on its checkpoint. CPU, tiny."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dataset.constants import EPHYS_CHANNELS
from dataset.datasets import EpochDataset
from models.loading import load_backbone
from models.synthsleepnet import SynthSleepNet
from pretrained.multimodal.train import main
from pretrained.unimodal.pretrain import main as unimodal_main
from utils.checkpoint import load_checkpoint
from utils.run_logging import read_jsonl

REPO = Path(__file__).resolve().parent.parent
COMMON = ["--preset", "tiny", "--batch-size", "8", "--workers", "0", "--no-progress", "--log-every", "1"]
MONITOR = ["--knn-max-train", "40", "--knn-max-val", "20", "--knn-k", "3"]


@pytest.fixture(scope="module")
def cohort(cohort_factory) -> Path:
    """5 synthetic half-hour nights, two of them without chin EMG; parsed once (shared with
    tests/test_unimodal_scripts.py)."""
    no_emg = {"missing_channels": ["emg"]}
    return cohort_factory(nights=5, hours=0.5, seed=0, variations={1: no_emg, 3: no_emg}) / "dst"


@pytest.fixture(scope="module")
def unimodal_runs(cohort, tmp_path_factory) -> dict[str, Path]:
    """One-step tiny runs of the four unimodal scripts (their run directories)."""
    root = tmp_path_factory.mktemp("unimodal_runs")
    runs = {}
    for modality in ("eeg", "eog", "emg", "ecg"):
        runs[modality] = root / modality
        assert (
            unimodal_main(
                ["--data", str(cohort), "--out", str(runs[modality]), *COMMON, "--max-steps", "1", "--no-monitor"],
                modality=modality,
            )
            == 0
        )
    return runs


def unimodal_arg(runs: dict[str, Path], modalities=("eeg", "eog", "emg", "ecg")) -> str:
    return ",".join(f"{m}={runs[m]}" for m in modalities)


def test_script_trains_resumes_and_writes_a_loadable_backbone(cohort, unimodal_runs, tmp_path, capsys):
    out = tmp_path / "multimodal"
    args = ["--data", str(cohort), "--out", str(out), *COMMON, *MONITOR, "--passes", "3"]
    assert main([*args, "--unimodal", unimodal_arg(unimodal_runs), "--max-steps", "2"]) == 0
    printed = capsys.readouterr().out
    assert "SynthSleepNet[tiny]" in printed and "LoRA" in printed and "trainable" in printed
    assert "missing channel(s) emg" in printed  # nights without EMG are skipped and counted (bar test)

    config = json.loads((out / "config.json").read_text())
    assert config["channels"] == list(EPHYS_CHANNELS) and config["unimodal"]["eeg"] == str(unimodal_runs["eeg"])
    steps = read_jsonl(out / "steps.jsonl")
    assert [s["step"] for s in steps] == [1, 2] and all(math.isfinite(s["loss"]) for s in steps)
    epoch = read_jsonl(out / "log.jsonl")[0]
    for key in ("loss", "recon", "contrastive", "contrastive_accuracy", "recon_eeg_c3", "recon_ecg", "lr"):
        assert key in epoch, key
    assert -1.0 <= epoch["knn_kappa"] <= 1.0 and epoch["knn_n_train"] == 40  # monitor on the fusion representation

    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["model_kind"] == "synthsleepnet" and ckpt["step"] == 2
    assert ckpt["model_config"]["channels"] == list(EPHYS_CHANNELS)
    assert set(ckpt["model_config"]["encoders"]) == set(EPHYS_CHANNELS)
    assert ckpt["metadata"]["unimodal"]["eeg"]["path"] == str(unimodal_runs["eeg"] / "best.pt")
    assert ckpt["metadata"]["channel_modality"]["eog_r"] == "eog"
    assert not any(k.startswith("encoders.eeg_c4.autoencoder.decoder") for k in ckpt["model"])

    # resume: continues at step 2 (auto from OUT/last.pt); the second time without --unimodal
    assert main([*args, "--unimodal", unimodal_arg(unimodal_runs), "--max-steps", "3"]) == 0
    assert main([*args, "--max-steps", "4", "--no-monitor"]) == 0
    assert "resumed from" in capsys.readouterr().out
    assert [s["step"] for s in read_jsonl(out / "steps.jsonl")] == [1, 2, 3, 4]
    assert load_checkpoint(out / "last.pt")["step"] == 4
    # resumed without --unimodal, config.json still names the runs the encoders came from
    assert json.loads((out / "config.json").read_text())["unimodal"]["eeg"] == str(unimodal_runs["eeg"] / "best.pt")
    # a resume naming another EEG run than the one whose encoder the checkpoint froze is refused
    other = tmp_path / "eeg_other"
    eeg_args = ["--data", str(cohort), "--out", str(other), *COMMON, "--max-steps", "2", "--no-monitor"]
    assert unimodal_main(eeg_args, modality="eeg") == 0
    swapped = unimodal_arg({**unimodal_runs, "eeg": other})
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--unimodal", swapped, "--max-steps", "5", "--no-monitor"])
    assert exit_info.value.code == 2 and "eeg encoder(s) come from other unimodal runs" in capsys.readouterr().err
    assert load_checkpoint(out / "last.pt")["step"] == 4

    # the backbone from the run's checkpoint alone
    backbone = load_backbone(out / "last.pt")
    assert isinstance(backbone, SynthSleepNet) and backbone.channels == tuple(EPHYS_CHANNELS)
    val = EpochDataset(cohort, "val", list(EPHYS_CHANNELS))
    batch = {ch: torch.stack([val[i][ch] for i in range(4)]) for ch in EPHYS_CHANNELS}  # (4, 3000) each
    with torch.no_grad():
        pooled, tokens = backbone.encode(batch)
    assert pooled.shape == (4, 128) and torch.isfinite(pooled).all() and tokens.shape[1] == 6 * 27


def test_channel_subset_needs_only_its_modalities(cohort, unimodal_runs, tmp_path):
    out = tmp_path / "subset"
    assert (
        main(
            [
                "--data",
                str(cohort),
                "--out",
                str(out),
                *COMMON,
                "--channels",
                "eog_l,ecg",
                "--max-steps",
                "1",
                "--no-monitor",
                "--unimodal",
                unimodal_arg(unimodal_runs, ("eog", "ecg")),
            ]
        )
        == 0
    )
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["model_config"]["channels"] == ["eog_l", "ecg"] and ckpt["step"] == 1
    assert sorted(ckpt["metadata"]["unimodal"]) == ["ecg", "eog"]


def test_input_errors_are_reported(cohort, unimodal_runs, tmp_path):
    base = ["--data", str(cohort), *COMMON, "--max-steps", "1", "--no-monitor"]
    with pytest.raises(SystemExit, match="no run for modality emg"):
        main(
            [
                *base,
                "--out",
                str(tmp_path / "a"),
                "--channels",
                "eeg_c4,emg",
                "--unimodal",
                unimodal_arg(unimodal_runs, ("eeg",)),
            ]
        )
    with pytest.raises(SystemExit, match="was pretrained on eog, but is given for eeg"):
        main([*base, "--out", str(tmp_path / "b"), "--channels", "eeg_c4", "--unimodal", f"eeg={unimodal_runs['eog']}"])
    with pytest.raises(SystemExit, match="holds no checkpoint"):
        main([*base, "--out", str(tmp_path / "c"), "--channels", "ecg", "--unimodal", f"ecg={tmp_path}"])
    with pytest.raises(SystemExit, match="no run for modality airflow"):  # a 10-Hz channel needs its own NeuroNet
        main([*base, "--out", str(tmp_path / "d"), "--channels", "airflow", "--unimodal", unimodal_arg(unimodal_runs)])
    with pytest.raises(SystemExit):  # argparse: unknown modality in --unimodal
        main([*base, "--out", str(tmp_path / "e"), "--unimodal", "eeg=x,resp=y"])
    with pytest.raises(SystemExit):  # nothing to build from: no --unimodal and no checkpoint to resume
        main([*base, "--out", str(tmp_path / "f")])


def test_script_help_runs_as_a_file():
    helped = subprocess.run(
        [sys.executable, "pretrained/multimodal/train.py", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert helped.returncode == 0 and "--unimodal" in helped.stdout and "runs/multimodal" in helped.stdout


@pytest.mark.slow
def test_fusion_beats_the_best_single_channel(tmp_path):
    """benchmarks/multimodal_learning.py at its defaults (14 nights x 6 h, probe on 3,000 train / all val epochs):
    the fusion representation must beat the best single channel under the k-NN probe (the benchmark's exit
    code). Measured with this probe: +0.023 to +0.063 kappa over three pretrained fusions x three probe seeds."""
    ran = subprocess.run(
        [sys.executable, "benchmarks/multimodal_learning.py", "--out", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results["run"]["stage_mix"]["val"]) == {"W", "N1", "N2", "N3", "REM"}
    assert results["run"]["stage_mix"]["val"]["REM"] >= 0.05 * results["fusion"]["n_val"], results["run"]["stage_mix"]
    assert ran.returncode == 0 and results["run"]["fusion_beats_best_single"], (ran.stdout[-2000:], results)
