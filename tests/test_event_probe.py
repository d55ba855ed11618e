"""The token methods of the event task (downstream/event_detection, `--method probe|finetune|scratch`): frame tokens
resampled to seconds (a hand-made ramp), the per-second tokenizer over a SynthSleepNet's fusion tokens, the probe
end to end on a tiny cohort with a 2-step tiny backbone (outputs, val-only selection, the cache reused, the saved
detector reproducing events.csv), and its input errors (one `error:` line, exit 2, earlier outputs untouched)."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from dataset.constants import EPHYS_CHANNELS
from downstream.event_detection import train as event_detection
from downstream.event_detection.selection import THRESHOLDS
from downstream.event_detection.tokens import SecondTokenizer, frames_to_seconds, second_weights
from models.heads import EpochEncoder
from models.loading import load_backbone
from models.neuronet import build_neuronet, neuronet_config, neuronet_config_for_rate
from models.synthsleepnet import build_synthsleepnet, synthsleepnet_config
from utils.checkpoint import atomic_save, sha256_file

FAST = [
    "--no-progress",
    "--n-boot",
    "20",
    "--steps",
    "16",
    "--eval-every",
    "8",
    "--batch-windows",
    "4",
    "--epochs-per-window",
    "4",
    "--head-width",
    "16",
    "--head-depth",
    "3",
]
OUTPUTS = ("config.json", "model.pkl", "metrics.json", "events.csv", "results.md")
RESP = ["airflow", "thor", "abdo", "spo2"]


def probe_argv(data: Path, backbone: Path, out: Path, cache: Path) -> list[str]:
    """The script's options for a probe run on `data` over `backbone` into `out`, per-second vectors cached in
    `cache`."""
    return [
        "--data",
        str(data),
        "--method",
        "probe",
        "--backbone",
        str(backbone),
        "--out",
        str(out),
        "--cache-dir",
        str(cache),
        *FAST,
    ]


def test_frame_tokens_resample_to_second_centres_on_a_ramp():
    centres = torch.arange(4.0, 27.0, 2.0)  # respiratory frames: 8 s every 2 s -> centres 4, 6, ..., 26 s
    weights = second_weights(centres)
    assert weights.shape == (30, 12) and torch.allclose(weights.sum(dim=1), torch.ones(30))
    ramp = torch.stack([centres, 100 - centres], dim=-1)[None].repeat(3, 1, 1)  # (3, 12, 2): token = its time
    seconds = frames_to_seconds(ramp, weights)
    assert seconds.shape == (3, 30, 2)
    expected = torch.clamp(torch.arange(30) + 0.5, 4.0, 26.0)  # interpolated inside, the end tokens outside
    assert torch.allclose(seconds[0, :, 0], expected) and torch.allclose(seconds[2, :, 1], 100 - expected)
    assert weights[6].tolist().count(0.0) == 10 and weights[6, 1] == pytest.approx(0.75)  # 6.5 s: 3/4 of 6 s
    # the encoders' own frame centres: 10-Hz respiratory and 100-Hz electrophysiology geometry
    airflow = EpochEncoder(build_neuronet(neuronet_config_for_rate("tiny", 10)), ["airflow"])
    eeg = EpochEncoder(build_neuronet(neuronet_config("tiny")), ["eeg_c4"])
    assert airflow.frame_centres_s("airflow").tolist() == centres.tolist()
    assert eeg.frame_centres_s("eeg_c4").tolist() == list(np.arange(2.0, 28.5, 1.0))
    with pytest.raises(ValueError, match="ascending"):
        second_weights([5.0, 3.0])


def resp_fusion(channels: tuple[str, ...], airflow=None):
    """A tiny SynthSleepNet over `channels`: `airflow` (default a random 1-block tiny net) for every respiratory
    channel, a random tiny EEG net for the 100-Hz ones."""
    resp = airflow or build_neuronet(neuronet_config_for_rate("tiny", 10, encoder_depth=1))
    eeg = build_neuronet(neuronet_config("tiny", encoder_depth=1))
    return build_synthsleepnet(
        synthsleepnet_config("tiny", channels=channels, fusion_depth=1),
        {c: resp if c in RESP else eeg for c in channels},
    )


def test_tokenizer_reads_fusion_tokens_at_each_channels_frames():
    torch.manual_seed(0)
    backbone = resp_fusion(("airflow", "thor", "eeg_c4"), None)
    encoder = EpochEncoder(backbone, backbone.channels)
    tokenizer = SecondTokenizer(encoder, "fusion", ["airflow", "thor"]).eval()
    epochs = {"airflow": torch.randn(5, 300), "thor": torch.randn(5, 300), "eeg_c4": torch.randn(5, 3000)}
    with torch.no_grad():
        seconds = tokenizer(epochs)  # (5, 30, 2 x 128)
        _, fused = encoder.net.encode(epochs)  # (5, 12 + 12 + 27, 128), chunks in channel order
    assert seconds.shape == (5, 30, 256) and tokenizer.dim == 256
    # second 15 (centre 15.5 s) lies between frame centres 14 and 16 s: frames 5 and 6 of each channel
    thor = fused[:, 12:24]
    assert torch.allclose(seconds[:, 15, 128:], 0.25 * thor[:, 5] + 0.75 * thor[:, 6], atol=1e-5)
    assert torch.allclose(seconds[:, 0, :128], fused[:, 0], atol=1e-5)  # before the first centre: frame 0
    with pytest.warns(UserWarning, match="missing"), torch.no_grad():
        partial = tokenizer({"airflow": epochs["airflow"], "eeg_c4": epochs["eeg_c4"]})  # a night without thor
    assert partial.shape == (5, 30, 256) and not partial[..., :128].eq(0).all() and partial[..., 128:].eq(0).all()
    encoder_tokens = SecondTokenizer(encoder, "encoder", ["airflow"])
    assert encoder_tokens.dim == 64  # the airflow encoder's width, before the fusion


# ---------------------------------------------------------------------------------------- the script
@pytest.fixture(scope="module")
def cohort(cohort_factory) -> Path:
    return cohort_factory(nights=6, hours=0.8, seed=0) / "dst"


@pytest.fixture(scope="module")
def backbone(cohort, tmp_path_factory) -> Path:
    """A tiny airflow NeuroNet pretrained for 2 steps by its script, fused over the four respiratory channels
    (fusion untrained, saved as an engine checkpoint)."""
    from pretrained.unimodal.pretrain import main as pretrain

    root = tmp_path_factory.mktemp("event_backbone")
    assert (
        pretrain(
            [
                "--data",
                str(cohort),
                "--out",
                str(root / "airflow"),
                "--preset",
                "tiny",
                "--workers",
                "0",
                "--no-progress",
                "--resume",
                "none",
                "--batch-size",
                "8",
                "--max-steps",
                "2",
                "--passes",
                "1",
                "--no-monitor",
            ],
            modality="airflow",
        )
        == 0
    )
    torch.manual_seed(0)
    fusion = resp_fusion(tuple(RESP), load_backbone(root / "airflow" / "last.pt"))
    checkpoint = torch.load(root / "airflow" / "last.pt", weights_only=True)
    checkpoint.update(
        model_kind="synthsleepnet",
        model_config=fusion.config.to_dict(),
        model=fusion.state_dict(),
        metadata={},
        splits_sha256=sha256_file(cohort / "splits.json"),
    )
    atomic_save(checkpoint, root / "fusion.pt")
    return root / "fusion.pt"


@pytest.fixture(scope="module")
def probe_run(cohort, backbone, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("event_probe")
    assert event_detection.main(probe_argv(cohort, backbone, root / "run", root / "cache")) == 0
    return root / "run"


def test_probe_outputs_selection_on_val_and_cache(probe_run, cohort, backbone):
    assert all((probe_run / name).is_file() for name in OUTPUTS)
    metrics = json.loads((probe_run / "metrics.json").read_text())
    splits = json.loads((cohort / "splits.json").read_text())["recordings"]
    train = metrics["train"]
    assert metrics["method"] == "probe" and train["recordings"] == splits["train"]
    assert train["token_source"] == "fusion" and train["token_channels"] == RESP and train["token_dim"] == 4 * 128
    assert train["backbone"]["sha256"] == sha256_file(backbone) and train["encoder_mode"] == "frozen"
    assert [h["step"] for h in train["history"]] == [8, 16]
    assert train["best_val_score"] == max(h["val_score"] for h in train["history"])
    assert metrics["selection"]["split"] == "val" and metrics["selection"]["threshold"] in THRESHOLDS
    assert {"apnea", "hypopnea", "any"} <= set(metrics["test"]["events"])
    assert "auroc" in metrics["test"]["epoch"]["apnea"] and "agreement" in metrics["test"]["ahi"]
    events = pd.read_csv(probe_run / "events.csv")
    assert set(events["recording_id"]) <= set(splits["test"]) and (events["duration_s"] >= 10).all()
    assert "fusion tokens of airflow, thor, abdo, spo2" in (probe_run / "results.md").read_text()
    # one cache file per night: one row per epoch holding its 30 seconds of 512-d vectors
    cache = probe_run.parent / "cache"
    files = sorted(cache.glob("*/*.npz"))
    assert sorted(f.stem for f in files) == sorted(r for split in ("train", "val", "test") for r in splits[split])
    rid = splits["test"][0]
    with np.load(next(f for f in files if f.stem == rid)) as stored:
        vectors = stored["vectors"]
        assert vectors.shape[1] == 30 * 512 and stored["epochs"].tolist() == list(range(vectors.shape[0]))
    # the saved detector (head + decoding) reproduces the test events from the night's vectors
    detector = pickle.loads((probe_run / "model.pkl").read_bytes())
    detected = detector.detect(vectors.reshape(-1, 512))
    expected = events[events["recording_id"] == rid]
    assert [(e.onset_s, e.duration_s, e.type) for e in detected] == list(
        zip(expected["onset_s"], expected["duration_s"], expected["type"])
    )


def test_probe_rerun_reads_the_cache_and_repeats_the_numbers(probe_run, cohort, backbone, tmp_path):
    cache = probe_run.parent / "cache"
    stamps = {f: f.stat().st_mtime_ns for f in cache.glob("*/*.npz")}
    out = tmp_path / "again"
    assert event_detection.main(probe_argv(cohort, backbone, out, cache)) == 0
    assert {f: f.stat().st_mtime_ns for f in cache.glob("*/*.npz")} == stamps  # read, not written again
    first, again = (json.loads((run / "metrics.json").read_text()) for run in (probe_run, out))
    assert again["train"]["history"] == [
        {**h, "seconds": g["seconds"]} for h, g in zip(first["train"]["history"], again["train"]["history"])
    ]
    assert again["test"]["events"] == first["test"]["events"]


def test_backbone_without_a_channel_of_the_nights_is_one_error_line(
    cohort_factory, probe_run, backbone, tmp_path, capsys
):
    ephys = cohort_factory(nights=6, hours=0.8, seed=0, channels=list(EPHYS_CHANNELS)) / "dst"
    out = tmp_path / "run"
    shutil.copytree(probe_run, out)
    before = {name: (out / name).read_bytes() for name in OUTPUTS}
    with pytest.raises(SystemExit) as exit_info:
        event_detection.main(
            ["--data", str(ephys), "--method", "probe", "--backbone", str(backbone), "--out", str(out), *FAST]
        )
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --backbone")
    assert "airflow, thor, abdo, spo2" in err[0] and "none of them" in err[0] and str(ephys) in err[0]
    assert {name: (out / name).read_bytes() for name in OUTPUTS} == before
    for argv, expected in (
        (["--method", "probe"], "error: --method probe needs --backbone"),
        (["--method", "probe", "--backbone", str(tmp_path / "nothing.pt")], "error: --backbone"),
        (["--method", "probe", "--backbone", str(backbone), "--token-channels", "eeg_c4"], "error: --token-channels"),
        (
            ["--method", "features"],
            "error: --steps, --batch-windows, --eval-every, --head-width",
        ),  # FAST: token options
    ):
        with pytest.raises(SystemExit) as exit_info:
            event_detection.main(
                [
                    "--data",
                    str(cohort_factory(nights=6, hours=0.8, seed=0) / "dst"),
                    "--out",
                    str(tmp_path / "other"),
                    *FAST,
                    *argv,
                ]
            )
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(expected), err
    assert not (tmp_path / "other").exists()


@pytest.mark.slow
def test_finetune_and_scratch_train_the_encoders(cohort, backbone, tmp_path):
    for method in ("finetune", "scratch"):
        out = tmp_path / method
        assert (
            event_detection.main(
                [
                    "--data",
                    str(cohort),
                    "--method",
                    method,
                    "--backbone",
                    str(backbone),
                    "--out",
                    str(out),
                    *FAST,
                    "--steps",
                    "2",
                    "--eval-every",
                    "1",
                    "--batch-windows",
                    "2",
                ]
            )
            == 0
        )
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["train"]["encoder_mode"] == {"finetune": "lora", "scratch": "full"}[method]
        encoder = torch.load(out / "encoder.pt", weights_only=True)
        assert encoder["model_config"]["mode"] == metrics["train"]["encoder_mode"]
