"""The four unimodal pretraining scripts on a small synthetic cohort (tiny preset, 2 steps each), their
outputs, input errors, and (slow) the learning check of benchmarks/unimodal_learning.py."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dataset import data_parser
from dataset.constants import MODALITY_CHANNELS
from models.neuronet import build_neuronet
from pretrained.unimodal.pretrain import MODALITIES, PROBE_TARGET_BY_MODALITY, main
from tests.checks import exit_code
from utils.checkpoint import load_checkpoint
from utils.run_logging import read_jsonl

REPO = Path(__file__).resolve().parent.parent
SMOKE = [
    "--preset",
    "tiny",
    "--max-steps",
    "2",
    "--batch-size",
    "4",
    "--workers",
    "0",
    "--no-progress",
    "--log-every",
    "1",
    "--knn-max-train",
    "48",
    "--knn-max-val",
    "24",
    "--knn-k",
    "3",
]


@pytest.fixture(scope="module")
def cohort(cohort_factory) -> Path:
    """5 synthetic half-hour nights (two of them without chin EMG), parsed once (shared with
    tests/test_multimodal_script.py)."""
    no_emg = {"missing_channels": ["emg"]}
    return cohort_factory(nights=5, hours=0.5, seed=0, variations={1: no_emg, 3: no_emg}) / "dst"


@pytest.mark.parametrize("modality", MODALITIES)
def test_script_pretrains_two_steps(cohort, tmp_path, capsys, modality):
    out = tmp_path / modality
    assert main(["--data", str(cohort), "--out", str(out), *SMOKE], modality=modality) == 0
    printed = capsys.readouterr().out
    assert "NeuroNet[tiny]" in printed and "M params" in printed  # parameter counts at start

    config = json.loads((out / "config.json").read_text())
    assert config["channels"] == list(MODALITY_CHANNELS[modality])
    assert config["monitor_target"] == PROBE_TARGET_BY_MODALITY[modality] and config["preset"] == "tiny"
    # config.json names the metric that selected best.pt (resolved from `auto` before it is written)
    assert config["monitor_metric"] == ("knn_kappa" if config["monitor_target"] == "stage" else "knn_auroc")
    steps = read_jsonl(out / "steps.jsonl")
    assert [s["step"] for s in steps] == [1, 2] and all(math.isfinite(s["loss"]) for s in steps)
    log = read_jsonl(out / "log.jsonl")
    assert log[0]["kind"] == "epoch" and log[0]["step"] == 2 and log[-1]["kind"] == "summary"
    for key in ("loss", "recon_1", "recon_2", "contrastive", "lr", "samples_per_s"):
        assert key in log[0], key
    if modality in ("eeg", "eog"):  # stages exist in train and val: the probe scores
        assert -1.0 <= log[0]["knn_kappa"] <= 1.0 and log[0]["knn_n_train"] == 48

    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["model_kind"] == "neuronet" and ckpt["metadata"]["modality"] == modality
    assert ckpt["config"]["channels"] == config["channels"] and ckpt["splits_sha256"]
    assert ckpt["config"]["monitor_metric"] == config["monitor_metric"]
    model = build_neuronet(ckpt["model_config"])  # rebuilt from the file alone
    model.load_state_dict(ckpt["model"])
    pooled, tokens = model.encode(torch.randn(2, model.framer.n_samples))  # 3000 at 100 Hz, 300 at 10 Hz
    assert pooled.shape == (2, model.embed_dim) and tokens.shape[:2] == (2, model.n_frames)
    if modality == "emg":  # the nights without EMG are counted, whichever split they fell in (bar test)
        assert "missing channel(s) emg" in printed


def test_bad_channels_and_data_are_reported(cohort, tmp_path):
    with pytest.raises(SystemExit, match="airflow is a 10 Hz respiratory channel"):
        main(["--data", str(cohort), "--out", str(tmp_path / "a"), "--channels", "airflow", *SMOKE], modality="eeg")
    with pytest.raises(SystemExit, match="unknown channel 'eeg_c5'"):
        main(["--data", str(cohort), "--out", str(tmp_path / "b"), "--channels", "eeg_c5", *SMOKE], modality="eeg")
    with pytest.raises(SystemExit):
        main(["--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "c"), *SMOKE], modality="eeg")
    eeg_only = tmp_path / "eeg_only"  # the same nights parsed without chin EMG
    data_parser.parse_cohort(cohort.parent / "src", eeg_only, workers=1, channels=["eeg_c4", "eeg_c3"], progress=False)
    with pytest.raises(SystemExit, match=r"split 'pretrain'.*\['emg'\] not present in any"):
        main(["--data", str(eeg_only), "--out", str(tmp_path / "d"), *SMOKE], modality="emg")


def test_another_modalitys_checkpoint_or_probe_target_is_not_resumed(cohort, tmp_path, capsys):
    """An EEG run resumed from the ECG run's checkpoint would label ECG weights 'eeg'; a changed --monitor-target
    would keep selecting best.pt by the old one. Both are refused before any work, the folders unchanged."""
    ecg = tmp_path / "ecg"
    assert main(["--data", str(cohort), "--out", str(ecg), *SMOKE], modality="ecg") == 0
    capsys.readouterr()
    eeg = tmp_path / "eeg"
    argv = ["--data", str(cohort), "--out", str(eeg), "--resume", str(ecg / "last.pt"), *SMOKE]
    assert exit_code(lambda a: main(a, modality="eeg"), argv) == 2
    err = capsys.readouterr().err
    assert "holds a model of modality 'ecg', this run trains 'eeg'" in err and err.count("\n") == 1
    assert not eeg.exists()
    before = sorted(p.name for p in ecg.iterdir())
    argv = ["--data", str(cohort), "--out", str(ecg), "--monitor-target", "stage", "--max-steps", "4"]
    assert exit_code(lambda a: main(a, modality="ecg"), [*argv, *SMOKE[:2], *SMOKE[4:]]) == 2
    assert (
        "monitor_target 'apnea' -> 'stage'" in capsys.readouterr().err
        and sorted(p.name for p in ecg.iterdir()) == before
    )


def test_scripts_run_as_file_and_as_module():
    """Both launch forms reach their modality's main (the help text names the modality's channels)."""
    for command, channels in (
        (["pretrained/unimodal/eog/train.py"], "eog_l, eog_r"),
        (["-m", "pretrained.unimodal.ecg.train"], "channels ecg pooled"),
    ):
        ran = subprocess.run(
            [sys.executable, *command, "--help"], cwd=REPO, capture_output=True, text=True, timeout=120
        )
        assert ran.returncode == 0 and channels in " ".join(ran.stdout.split()), ran.stderr[-2000:]


@pytest.mark.slow
def test_pretraining_beats_random_init(tmp_path):
    """benchmarks/unimodal_learning.py with 800 steps (about 3 min on 2 free cores): the pretrained tiny EEG
    encoder's val k-NN kappa beats the same encoder randomly initialised."""
    ran = subprocess.run(
        [sys.executable, "benchmarks/unimodal_learning.py", "--out", str(tmp_path), "--steps", "800", "--minutes", "8"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert ran.returncode == 0, ran.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["pretrained"]["kappa"] > results["random_init"]["kappa"] + 0.05, results


def test_detach_target_flag_reaches_the_model(monkeypatch, tmp_path):
    """docs/models.md §3.1: the published gradient through the target is the default; `--detach-target` stops it."""
    from pretrained.unimodal import pretrain

    seen = {}
    monkeypatch.setattr(pretrain, "check_cohort", lambda data, split: None)  # no cohort needed to build the config
    monkeypatch.setattr(pretrain, "setup_run", lambda cfg: (_ for _ in ()).throw(SystemExit(0)))
    real = pretrain.neuronet_config
    monkeypatch.setattr(pretrain, "neuronet_config", lambda *a, **k: seen.setdefault("cfg", real(*a, **k)))
    for flag, expected in ((None, False), ("--detach-target", True)):
        seen.clear()
        argv = ["--data", str(tmp_path), "--preset", "tiny"] + ([flag] if flag else [])
        with pytest.raises(SystemExit):
            pretrain.main(argv, modality="eeg")
        assert seen["cfg"].detach_target is expected


@pytest.mark.parametrize("pair", ["neighbour", "shift"])
def test_script_pretrains_with_paired_positives(cohort, tmp_path, pair):
    """docs/models.md §3.1: `--model-arg positive_pair=...` pairs each epoch with another view of its night."""
    out = tmp_path / pair
    argv = ["--data", str(cohort), "--out", str(out), *SMOKE, "--model-arg", f"positive_pair={pair}"]
    assert main(argv, modality="eeg") == 0
    checkpoint = load_checkpoint(out / "last.pt")
    assert checkpoint["model_config"]["positive_pair"] == pair
    losses = [row["contrastive"] for row in read_jsonl(out / "steps.jsonl") if "contrastive" in row]
    assert losses and all(math.isfinite(v) for v in losses)
