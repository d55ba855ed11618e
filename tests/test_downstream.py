"""Downstream training and evaluation (docs/models.md §3.3; docs/evaluation.md §5; docs/bugs-fixed.md §8) on one small synthetic cohort with tiny backbones:
heads and encoder modes, the linear probe (cached, deterministic), fine-tuning windows (never across recordings,
labels only at the selected epochs) and tiling (every test epoch exactly once), the supervised-from-scratch
and hand-crafted feature baselines, the leakage guard on a doctored splits file, and the comparison table."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from dataset.datasets import EpochDataset, SequenceDataset
from downstream import evaluate as evaluate_script
from downstream.baselines import features as features_script
from downstream.cache import cache_key, encode_recordings, epoch_labels, predict_tiles
from downstream.fine_tuning import train as fine_tuning
from downstream.leakage import LeakageError, assert_no_test_leakage
from downstream.linear_probing import train as linear_probing
from downstream.night_inference import predict_all, predict_task
from downstream.runs import load_downstream_run
from models.heads import EpochEncoder, MLPHead, TemporalClassifier, build_downstream_model
from models.loading import load_backbone, load_state_checked
from models.lora import lora_parameters
from models.neuronet import build_neuronet, neuronet_config
from models.synthsleepnet import build_synthsleepnet, synthsleepnet_config
from utils.checkpoint import load_checkpoint, save_model_checkpoint, sha256_file
from utils.config import FrozenConfigError, parse_config
from utils.run_logging import read_jsonl

REPO = Path(__file__).resolve().parent.parent
# A smaller NeuroNet than the tiny preset (14 frames, narrow CNN): a fine-tuning step takes a fraction of a second.
SMALL = dict(frame_step_s=2.0, stem_channels=4, backbone_channels=(4, 8, 8, 16), frame_token_dim=32, encoder_depth=1)
RUN = ["--workers", "0", "--no-progress", "--n-boot", "50", "--hypnograms", "1", "--resume", "none"]
RUN_FILES = (
    "config.json",
    "log.jsonl",
    "last.pt",
    "best.pt",
    "metrics.json",
    "predictions.parquet",
    "confusion_matrix.png",
    "results.md",
)


@pytest.fixture(scope="module")
def cohort(cohort_factory) -> Path:
    """6 synthetic 48-minute nights (96 epochs, apneas and hypopneas in every split), parsed once: 4 train/pretrain
    subjects, 1 val, 1 test."""
    return cohort_factory(nights=6, hours=0.8, seed=0) / "dst"


def save_engine_checkpoint(path: Path, kind: str, model: torch.nn.Module, metadata: dict, data: Path) -> Path:
    """A checkpoint with the keys utils/engine.py writes (optimizer state left empty)."""
    save_model_checkpoint(
        path,
        kind,
        model.config.to_dict(),
        model.state_dict(),
        metadata=metadata,
        splits_sha256=sha256_file(data / "splits.json"),
    )
    return path


@pytest.fixture(scope="module")
def backbones(cohort, tmp_path_factory) -> dict[str, Path]:
    """A small EEG NeuroNet and a SynthSleepNet over eeg_c4 + eog_l built from it, as engine checkpoints."""
    root = tmp_path_factory.mktemp("backbones")
    torch.manual_seed(0)
    net = build_neuronet(neuronet_config("tiny", **SMALL))
    with torch.no_grad():
        net.train()(torch.randn(8, 3000))  # BatchNorm statistics move off their initial values
    fusion = build_synthsleepnet(
        synthsleepnet_config("tiny", channels=("eeg_c4", "eog_l"), fusion_depth=1), {"eeg_c4": net, "eog_l": net}
    )
    return {
        "eeg": save_engine_checkpoint(root / "eeg.pt", "neuronet", net, {"channels": ["eeg_c4", "eeg_c3"]}, cohort),
        "fusion": save_engine_checkpoint(root / "fusion.pt", "synthsleepnet", fusion, {}, cohort),
    }


def splits_of(cohort) -> dict:
    return json.loads((cohort / "splits.json").read_text())


def assert_every_test_epoch_once(run: Path, cohort: Path) -> pd.DataFrame:
    predictions = pd.read_parquet(run / "predictions.parquet")
    manifest = pd.read_parquet(cohort / "manifest.parquet").set_index("recording_id")
    expected = {
        (rid, e) for rid in splits_of(cohort)["recordings"]["test"] for e in range(manifest.loc[rid, "n_epochs"])
    }
    pairs = list(zip(predictions["recording"], predictions["epoch"]))
    assert len(pairs) == len(set(pairs)) and set(pairs) == expected
    probabilities = np.stack(predictions["probabilities"].to_numpy())
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-4)
    assert (predictions["predicted"].to_numpy() == probabilities.argmax(axis=1)).all()
    return predictions


# ---------------------------------------------------------------- models/heads.py
def test_encoder_modes_trainable_parts_and_rebuild(backbones):
    x = {ch: torch.randn(2, 6, 3000) for ch in ("eeg_c4", "eog_l")}  # 2 windows of 6 epochs
    expected_trainable = {
        "frozen": lambda n: False,
        "lora": lambda n: "lora_" in n or not n.startswith("net.encoders."),
        "full": lambda n: True,
    }
    for mode, rule in expected_trainable.items():
        backbone = load_backbone(backbones["fusion"])
        encoder = EpochEncoder(backbone, ["eeg_c4", "eog_l"], mode)
        assert encoder.embed_dim == backbone.config.fusion_dim and not hasattr(
            encoder.net, "decoders"
        )  # pretraining parts removed
        for name, param in encoder.named_parameters():
            assert param.requires_grad == rule(name), (mode, name)
        if mode == "lora":
            assert lora_parameters(encoder) and all("default" in n for n in lora_parameters(encoder))
        model = TemporalClassifier(encoder, MLPHead(encoder.embed_dim, 5)).train()
        norms = [
            m
            for n, m in encoder.named_modules()
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and ".encoders." in f".{n}"
        ]
        assert norms and all(m.training == (mode == "full") for m in norms), mode  # frozen BN stays in eval mode
        every_norm = [m for m in encoder.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        assert all(m.training == (mode == "full") for m in every_norm), mode  # LoRA: adapters' BN statistics kept too
        assert model.head.training  # the head follows train()
        assert model(x).shape == (2, 6, 5)
        rebuilt = build_downstream_model("temporal_classifier", model.to_config())
        load_state_checked(rebuilt, model.state_dict(), mode)
        model.eval(), rebuilt.eval()
        with torch.no_grad():
            out = model(x)
            assert torch.allclose(out, rebuilt(x), atol=1e-5)
            padded = {ch: v.clone() for ch, v in x.items()}
            for v in padded.values():
                v[:, 4:] = 0.0  # zero-padding at the window end does not change earlier positions (causal)
            assert torch.allclose(model(padded)[:, :4], out[:, :4], atol=1e-5)
        if mode == "frozen":  # the bidirectional context: later epochs count, padding does not (given `valid`)
            both = TemporalClassifier(encoder, MLPHead(encoder.embed_dim, 5), {"direction": "bidirectional"}).eval()
            rebuilt = build_downstream_model("temporal_classifier", both.to_config())
            load_state_checked(rebuilt, both.state_dict(), mode)
            rebuilt.eval()
            valid = torch.arange(6).expand(2, 6) < 4  # (2, 6): 4 real epochs, then padding
            with torch.no_grad():
                short = both({ch: v[:, :4] for ch, v in x.items()})  # (2, 4, 5) the same 4 epochs, no padding
                assert torch.allclose(rebuilt({ch: v[:, :4] for ch, v in x.items()}), short, atol=1e-5)
                assert torch.allclose(both(padded, valid=valid)[:, :4], short, atol=1e-5)
                assert not torch.allclose(both(padded)[:, :4], short, atol=1e-3)  # unmasked padding would leak
                later = {ch: v[:, :4].clone() for ch, v in x.items()}
                later["eeg_c4"][:, 2] += torch.randn(3000)
                assert not torch.allclose(both(later)[:, 0], short[:, 0], atol=1e-4)  # epoch 0 sees epoch 3


def test_frozen_encoder_matches_the_backbone_representation(backbones):
    net = load_backbone(backbones["eeg"])
    x = torch.randn(3, 3000)
    with torch.no_grad():
        expected = net.encode(x)[0]
        encoder = EpochEncoder(copy.deepcopy(net), ["eeg_c4"], "frozen").train()  # train() keeps it in eval mode
        assert torch.allclose(encoder({"eeg_c4": x}), expected, atol=1e-5)
    with pytest.raises(ValueError, match="one channel"):
        EpochEncoder(net, ["eeg_c4", "eeg_c3"])


# ---------------------------------------------------------------- leakage guard
def doctored_copy(cohort: Path, root: Path) -> Path:
    """The cohort with a splits.json that also lists the test subject's recording under `train`."""
    dst = root / "doctored"
    dst.mkdir()
    (dst / "recordings").symlink_to(cohort / "recordings")
    shutil.copy(cohort / "manifest.parquet", dst / "manifest.parquet")
    splits = splits_of(cohort)
    test_recording, test_subject = splits["recordings"]["test"][0], splits["subjects"]["test"][0]
    splits["recordings"]["train"] = sorted(splits["recordings"]["train"] + [test_recording])
    splits["recordings"]["pretrain"] = sorted(splits["recordings"]["pretrain"] + [test_recording])
    splits["subjects"]["train"] = sorted(splits["subjects"]["train"] + [test_subject])
    splits["subjects"]["pretrain"] = sorted(splits["subjects"]["pretrain"] + [test_subject])
    (dst / "splits.json").write_text(json.dumps(splits))
    return dst


def test_leakage_guard_fires(cohort, backbones, tmp_path):
    test_recording = splits_of(cohort)["recordings"]["test"][0]
    assert assert_no_test_leakage(cohort) == set(splits_of(cohort)["subjects"]["test"])
    with pytest.raises(LeakageError, match="training data holds recording"):
        assert_no_test_leakage(cohort, {"training": [test_recording]})
    doctored = doctored_copy(cohort, tmp_path)
    # a data error, refused when splits.json is read: one error line, exit 2
    with pytest.raises(SystemExit, match="is in both 'pretrain' and 'test'"):
        linear_probing.main(
            [
                "--data",
                str(doctored),
                "--backbone",
                str(backbones["fusion"]),
                "--task",
                "sleep_stage",
                "--out",
                str(tmp_path / "probe"),
                *RUN,
            ]
        )
    with pytest.raises(SystemExit, match="is in both 'pretrain' and 'test'"):
        features_script.main(
            [
                "--data",
                str(doctored),
                "--task",
                "apnea",
                "--channels",
                "eeg_c4",
                "--out",
                str(tmp_path / "features"),
                *RUN[:3],
                "--n-boot",
                "10",
            ]
        )
    assert not (tmp_path / "probe").exists()  # raised before anything was trained or written


# ---------------------------------------------------------------- linear probe
@pytest.fixture(scope="module")
def probe_runs(cohort, backbones, tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("probe")
    first, second = root / "a", root / "b"
    assert (
        linear_probing.main(
            [
                "--data",
                str(cohort),
                "--backbone",
                str(backbones["fusion"]),
                "--task",
                "sleep_stage",
                "--out",
                str(first),
                "--epochs",
                "3",
                "--batch-size",
                "32",
                "--seed",
                "3",
                *RUN,
            ]
        )
        == 0
    )
    # the same job again from its saved config.json (same seed)
    assert linear_probing.main(["--config", str(first / "config.json"), "--out", str(second)]) == 0
    return [first, second]


def test_linear_probe_outputs_and_determinism(probe_runs, cohort, backbones):
    first, second = probe_runs
    for name in RUN_FILES:
        assert (first / name).is_file(), name
    assert list(first.glob("hypnogram_*.png"))
    metrics = json.loads((first / "metrics.json").read_text())
    assert metrics["method"] == "linear_probe" and metrics["channels"] == ["eeg_c4", "eog_l"]
    assert metrics["backbone"]["sha256"] == sha256_file(backbones["fusion"])
    assert metrics["selection"]["metric"] == "val_kappa" and metrics["selection"]["checkpoint"] == "best.pt"
    assert metrics["test"]["n_subjects"] == 1 and 0.0 <= metrics["test"]["pooled"]["accuracy"] <= 1.0
    assert metrics["train"]["subjects"] == splits_of(cohort)["subjects"]["train"]
    assert "| kappa | macro_f1 | accuracy |" in (first / "results.md").read_text()
    checkpoint = load_checkpoint(first / "best.pt")
    fusion_dim = load_backbone(backbones["fusion"]).config.fusion_dim
    assert checkpoint["model_kind"] == "mlp_head" and checkpoint["model_config"]["in_dim"] == fusion_dim
    assert all(k.startswith("layers.") for k in checkpoint["model"])  # only the head is trained and stored
    predictions = assert_every_test_epoch_once(first, cohort)
    # the run reloads for inference (frozen backbone from the checkpoint's metadata + selected head)
    loaded = load_downstream_run(first)
    assert loaded.kind == "epoch_classifier" and loaded.task == "sleep_stage" and loaded.checkpoint.endswith("best.pt")
    test_epochs = EpochDataset(cohort, "test", loaded.channels)
    batch = {ch: torch.stack([test_epochs[i][ch] for i in range(4)]) for ch in loaded.channels}  # epochs 0-3
    with torch.no_grad():
        reloaded = loaded.model(batch).softmax(dim=-1).numpy()
    assert np.allclose(reloaded, np.stack(predictions["probabilities"].to_numpy()[:4]), atol=1e-5)
    # same seed (and the config.json round trip) -> same result
    assert json.loads((second / "config.json").read_text())["task"] == "sleep_stage"
    assert json.loads((second / "metrics.json").read_text()) == metrics
    assert pd.read_parquet(first / "predictions.parquet").equals(pd.read_parquet(second / "predictions.parquet"))


def test_vector_cache_encodes_each_epoch_once_and_is_reused(cohort, backbones, tmp_path):
    cohort = Path(shutil.copytree(cohort, tmp_path / "cohort"))  # it "re-parses" a night: not the shared one's
    encoder = EpochEncoder(load_backbone(backbones["fusion"]), ["eeg_c4", "eog_l"], "frozen")
    channels, calls = list(encoder.channels), []

    def encode(signals):
        calls.append(signals["eeg_c4"].shape[0])
        return encoder(signals)

    splits = splits_of(cohort)["recordings"]
    recordings = sorted(splits["test"] + splits["val"])
    n_epochs = pd.read_parquet(cohort / "manifest.parquet").set_index("recording_id")["n_epochs"]
    key = cache_key(sha256_file(backbones["fusion"]), channels, "fp32")

    def fill():
        return encode_recordings(
            encode, cohort, recordings, channels, torch.device("cpu"), batch_epochs=40, cache_dir=tmp_path, key=key
        )

    with torch.no_grad():
        store = fill()
        assert sum(calls) == n_epochs[recordings].sum()  # every epoch exactly once
        items = EpochDataset(cohort, "test", channels)
        rows = [0, 5, 95]
        direct = encoder({ch: torch.stack([items[i][ch] for i in rows]) for ch in channels}).numpy()
        ids, epochs = items.sample_index()
        assert np.allclose(store.gather(ids[rows], epochs[rows]), direct, atol=1e-5)
        calls.clear()
        again = fill()  # all from the cache
        assert calls == [] and np.array_equal(again.gather(ids, epochs), store.gather(ids, epochs))
        touched = recordings[0]
        path = cohort / "recordings" / f"{touched}.parquet"
        os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))  # "re-parsed"
        fill()
        assert sum(calls) == n_epochs[touched]  # only the changed recording is encoded again
    with pytest.raises(KeyError, match="no epoch"):
        store.gather(ids[:1], np.array([10**6]))
    # the evaluation tiling over stored vectors predicts every epoch once, with its label
    labels = epoch_labels(EpochDataset(cohort, "test", channels, task="sleep_stage"))
    predictions = predict_tiles(
        store, splits["test"], 7, lambda x, _valid: torch.softmax(x[..., :5], dim=-1), labels, 5
    )
    assert len(predictions.recording) == n_epochs[splits["test"]].sum()
    scored = EpochDataset(cohort, "test", channels, task="sleep_stage")
    truth = dict(zip(zip(*scored.sample_index()), scored.labels))
    got = {(r, e): t for r, e, t in zip(predictions.recording, predictions.epoch, predictions.true)}
    assert all(got[pair] == label for pair, label in truth.items())
    assert sum(t >= 0 for t in got.values()) == len(truth)


# ---------------------------------------------------------------- fine-tuning
def test_training_windows_stay_in_one_recording_and_keep_only_selected_labels(cohort):
    selected = EpochDataset(cohort, "train", ["eeg_c4"], task="sleep_stage", label_fraction=0.3, seed=1)
    windows = SequenceDataset(cohort, "train", ["eeg_c4"], task="sleep_stage", epochs_per_window=8, stride=4, seed=1)
    train_set = fine_tuning.LabelledWindows(windows, selected)
    recordings, epochs = selected.sample_index()
    chosen = set(zip(recordings.tolist(), epochs.tolist()))
    n_epochs = pd.read_parquet(cohort / "manifest.parquet").set_index("recording_id")["n_epochs"]
    seen = set()
    for i in range(len(train_set)):
        item = train_set[i]
        ids, labels = item["epoch_ids"].numpy(), item["label"].numpy()
        assert isinstance(item["recording"], str) and np.all(np.diff(ids) == 1)  # consecutive epochs, one night
        assert ids[0] >= 0 and ids[-1] < n_epochs[item["recording"]]
        labelled = {(item["recording"], int(e)) for e in ids[labels >= 0]}
        assert labelled and labelled <= chosen  # labels only at the probe's selected epochs
        seen |= labelled
    assert seen == chosen  # every selected epoch is trained on
    assert (
        train_set.counts.sum()
        == len(chosen)
        == round(0.3 * len(EpochDataset(cohort, "train", ["eeg_c4"], task="sleep_stage")))
    )


def test_fine_tuning_runs_and_predicts_every_test_epoch_once(cohort, backbones, tmp_path, capsys):
    out = tmp_path / "ft"
    finished_args = [
        "--data",
        str(cohort),
        "--backbone",
        str(backbones["eeg"]),
        "--task",
        "sleep_stage",
        "--out",
        str(out),
        "--epochs-per-window",
        "8",
        "--stride",
        "4",
        "--label-fraction",
        "0.5",
        "--epochs",
        "1",
        "--max-steps",
        "2",
        "--batch-size",
        "2",
        "--context-epochs",
        "3",
        "--context-batch-size",
        "4",
        "--max-minutes",
        "30",  # never reached: the phases' budgets are only recorded
        *RUN,
    ]
    assert fine_tuning.main(finished_args) == 0
    for name in RUN_FILES:
        assert (out / name).is_file(), name
    # each phase ran with its own config, fixed before training; config.json keeps the options as given
    config = json.loads((out / "config.json").read_text())
    phase_config = json.loads((out / "context_phase" / "config.json").read_text())
    assert (config["passes"], config["batch_size"], config["max_steps"], config["workers"]) == (1, 2, 2, 0)
    assert (phase_config["passes"], phase_config["batch_size"], phase_config["max_steps"]) == (3, 4, None)
    assert phase_config["out"] == str(out / "context_phase") and phase_config["base_lr"] == config["context_base_lr"]
    assert config["max_minutes"] == 30.0 and phase_config["max_minutes"] == 30.0 * config["context_budget_share"]
    assert 25.0 < config["_derived"]["time_budget_min"] <= 30.0  # phase 2: what phase 1 left of the budget
    # phase 1 (context + head on frozen vectors) ran first; phase 2 kept its selected weights unless it beat them
    phase = [r for r in read_jsonl(out / "context_phase" / "log.jsonl") if r["kind"] == "epoch"]
    assert len(phase) == 3 and all(np.isfinite(r["val_kappa"]) for r in phase)
    final = [r for r in read_jsonl(out / "log.jsonl") if r["kind"] == "epoch"]
    selected = json.loads((out / "metrics.json").read_text())["selection"]
    assert selected["value"] == max(max(r["val_kappa"] for r in phase), max(r["val_kappa"] for r in final))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["method"] == "fine_tune" and metrics["channels"] == ["eeg_c4"]  # the checkpoint's first channel
    assert metrics["context_direction"] == "bidirectional"
    assert "- temporal context: bidirectional" in (out / "results.md").read_text()
    assert metrics["windows"]["epochs_per_window"] == 8 and metrics["selection"]["checkpoint"] == "best.pt"
    assert config["eval_stride"] is None and metrics["windows"]["eval_stride"] == 4  # default: half the window
    predictions = assert_every_test_epoch_once(out, cohort)
    checkpoint = load_checkpoint(out / "best.pt")
    assert checkpoint["model_kind"] == "temporal_classifier" and checkpoint["config"]["label_fraction"] == 0.5
    assert checkpoint["model_config"]["context"]["direction"] == "bidirectional"  # the default context
    loaded = load_downstream_run(out)  # the run's checkpoint rebuilds by itself
    assert loaded.kind == "temporal_classifier" and loaded.epochs_per_window == 8 and loaded.eval_stride == 4
    # predict.py's path over one whole night gives the run's own test probabilities: the same overlapping tiling
    recording = predictions["recording"].iloc[0]
    night = EpochDataset(cohort, [recording], ["eeg_c4"])
    signals = {"eeg_c4": np.stack([night[i]["eeg_c4"].numpy() for i in range(len(night))])}  # (n, 3000)
    expected = predictions[predictions["recording"] == recording].sort_values("epoch")
    assert len(night) == len(expected) > 8  # several overlapping windows
    np.testing.assert_allclose(
        predict_task(loaded, signals, recording, torch.device("cpu")),
        np.stack(expected["probabilities"].to_numpy()),
        atol=1e-5,
    )
    shared = predict_all(
        {"sleep_stage": loaded}, signals, recording, torch.device("cpu"), identities={"sleep_stage": "e"}
    )
    np.testing.assert_allclose(shared["sleep_stage"], np.stack(expected["probabilities"].to_numpy()), atol=1e-5)
    # a resumed run keeps its evaluation tiling: another stride would compare scores of two tilings
    again = [*finished_args, "--eval-stride", "8", "--max-steps", "3", "--resume", "auto"]
    with pytest.raises(SystemExit) as stopped:
        fine_tuning.main(again)
    assert stopped.value.code == 2 and "--eval-stride 4" in capsys.readouterr().err
    phase_files = {p.name: p.read_bytes() for p in (out / "context_phase").iterdir() if p.is_file()}
    with pytest.raises(SystemExit) as stopped:  # another LoRA rank: refused before phase 1 rewrites its folder
        fine_tuning.main([*finished_args, "--lora-rank", "8", "--max-steps", "3", "--resume", "auto"])
    assert stopped.value.code == 2 and "do not fit" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in (out / "context_phase").iterdir() if p.is_file()} == phase_files
    with torch.no_grad():
        assert loaded.model({"eeg_c4": torch.randn(2, 8, 3000)}).shape == (2, 8, 5)
    model = build_downstream_model(checkpoint["model_kind"], checkpoint["model_config"])
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or not n.startswith("encoder.") for n in trainable)
    summary = read_jsonl(out / "log.jsonl")[-1]
    assert summary["kind"] == "summary" and summary["step"] == 2


def test_fine_tuning_phase_config_is_a_new_config_fixed_up_front():
    cfg = parse_config(
        fine_tuning.build_fine_tuning_parser(),
        ["--data", "d", "--task", "sleep_stage", "--out", "o", "--max-minutes", "10"],
    )
    phase = fine_tuning.context_phase_config(cfg, n_windows=3)
    assert (phase.batch_size, phase.passes, phase.workers, phase.max_steps) == (3, 30, 0, None)  # clipped to 3
    assert phase.out == Path("o") / "context_phase" and phase.max_minutes == 4.0 and phase.base_lr == 8e-3
    assert (cfg.batch_size, cfg.passes, cfg.out, cfg.max_minutes) == (8, 10, Path("o"), 10.0)  # untouched
    with pytest.raises(FrozenConfigError):
        cfg.max_minutes = 6.0
    started = time.monotonic()
    assert fine_tuning.fine_tuning_deadline(cfg, started) == pytest.approx(started + 600, abs=1)
    assert fine_tuning.fine_tuning_deadline(cfg, started - 3600) == pytest.approx(started + 60, abs=1)  # a tenth
    assert fine_tuning.fine_tuning_deadline(cfg.replace(max_minutes=0.0), started) is None


def test_supervised_from_scratch_baselines(cohort, backbones, tmp_path):
    probe = tmp_path / "scratch_probe"
    assert (
        linear_probing.main(
            [
                "--data",
                str(cohort),
                "--backbone",
                str(backbones["fusion"]),
                "--init",
                "random",
                "--task",
                "hypopnea",
                "--out",
                str(probe),
                "--epochs",
                "1",
                "--max-steps",
                "2",
                "--batch-size",
                "16",
                "--select-metric",
                "auroc",
                *RUN,
            ]
        )
        == 0
    )
    metrics = json.loads((probe / "metrics.json").read_text())
    assert metrics["method"] == "scratch_probe" and metrics["init"] == "random" and "night_norm" not in metrics
    assert metrics["selection"]["metric"] == "val_auroc" and "event_index" in metrics
    checkpoint = load_checkpoint(probe / "last.pt")
    assert checkpoint["model_kind"] == "epoch_classifier"
    pretrained = load_checkpoint(backbones["fusion"])["model"]
    weight = "encoder.net.encoders.eeg_c4.frame_backbone.stem.0.weight"
    assert not torch.equal(checkpoint["model"][weight], pretrained[weight.removeprefix("encoder.net.")])
    summary = read_jsonl(probe / "log.jsonl")[-1]
    assert summary["trainable_parameters"] == summary["parameters"]  # everything trains
    assert_every_test_epoch_once(probe, cohort)

    finetune = tmp_path / "scratch_finetune"  # architecture from --preset over --channels (no checkpoint)
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
                "eeg_c4",
                "--model-arg",
                "frame_step_s=2.0",
                "--task",
                "sleep_stage",
                "--out",
                str(finetune),
                "--epochs-per-window",
                "8",
                "--epochs",
                "1",
                "--max-steps",
                "1",
                "--batch-size",
                "2",
                *RUN,
            ]
        )
        == 0
    )
    metrics = json.loads((finetune / "metrics.json").read_text())
    assert metrics["method"] == "scratch_finetune" and metrics["backbone_name"] == "neuronet[tiny] random-init"
    summary = read_jsonl(finetune / "log.jsonl")[-1]
    assert summary["trainable_parameters"] == summary["parameters"]


# ---------------------------------------------------------------- feature baseline and comparison table
def test_feature_baseline_and_comparison_table(cohort, probe_runs, tmp_path):
    runs = []
    for task in ("apnea", "hypopnea", "sleep_stage"):
        out = tmp_path / f"features_{task}"
        assert (
            features_script.main(
                [
                    "--data",
                    str(cohort),
                    "--task",
                    task,
                    "--channels",
                    "eeg_c4,eog_l,ecg",
                    "--out",
                    str(out),
                    "--hgb-max-iter",
                    "15",
                    *RUN[:3],
                    "--n-boot",
                    "50",
                ]
            )
            == 0
        )
        for name in (
            "config.json",
            "model.pkl",
            "metrics.json",
            "predictions.parquet",
            "confusion_matrix.png",
            "results.md",
        ):
            assert (out / name).is_file(), name
        assert_every_test_epoch_once(out, cohort)
        runs.append(out)
    metrics = json.loads((runs[2] / "metrics.json").read_text())
    assert metrics["method"] == "features_hgb" and 1 <= metrics["selection"]["iterations"] <= 15
    apnea = json.loads((runs[0] / "metrics.json").read_text())
    assert set(apnea["event_index"]["per_recording"]) == set(splits_of(cohort)["recordings"]["test"])

    table = tmp_path / "comparison"
    options = tmp_path / "evaluate.json"  # docs/architecture.md §1: every step takes --config, saves what it ran with
    options.write_text(json.dumps({"runs": [str(probe_runs[0]), str(tmp_path)], "out": str(table)}))
    assert evaluate_script.main(["--config", str(options)]) == 0
    assert json.loads((table / "config.json").read_text())["runs"] == [str(probe_runs[0]), str(tmp_path)]
    for name in ("comparison.md", "comparison.csv", "label_fraction.png"):
        assert (table / name).is_file(), name
    rows = pd.read_csv(table / "comparison.csv")
    assert len(rows) == 4 and set(rows["method"]) == {"linear_probe", "features_hgb"}
    assert rows["kappa_low"].isna().all() and rows["kappa"].notna().all()  # one test subject: no interval
    assert rows["eval_stride"].isna().all()  # per-epoch models have no evaluation windows
    assert (rows.loc[rows["task"] != "sleep_stage", "ahi_n"] == 1).all()  # apnea + hypopnea combined into an AHI
    events = rows[rows["task"] != "sleep_stage"]  # each family's count scaled by its run's val-fitted scale
    for task in ("apnea", "hypopnea"):
        stored = json.loads((runs[("apnea", "hypopnea", "sleep_stage").index(task)] / "metrics.json").read_text())
        assert stored["event_calibration"]["split"] == "val"
        assert (events[f"ahi_scale_{task}"] == stored["event_calibration"]["scale"]).all()
    text = (table / "comparison.md").read_text()
    assert "## sleep_stage" in text and "## apnea" in text and "linear_probe" in text
    assert f"| {probe_runs[0]} |" in text  # the run column tells apart runs of one setup
    # with --cache-dir (filled by the first run, read by the second) the features and so the results are the same
    for name in ("cached_a", "cached_b"):
        assert (
            features_script.main(
                [
                    "--data",
                    str(cohort),
                    "--task",
                    "sleep_stage",
                    "--channels",
                    "eeg_c4,eog_l,ecg",
                    "--out",
                    str(tmp_path / name),
                    "--hgb-max-iter",
                    "15",
                    "--cache-dir",
                    str(tmp_path / "cache"),
                    *RUN[:3],
                    "--n-boot",
                    "50",
                ]
            )
            == 0
        )
        cached = pd.read_parquet(tmp_path / name / "predictions.parquet")
        reference = pd.read_parquet(runs[2] / "predictions.parquet")
        assert np.allclose(np.stack(cached["probabilities"]), np.stack(reference["probabilities"]), atol=1e-6)
    used = {r for split in ("train", "val", "test") for r in splits_of(cohort)["recordings"][split]}
    assert {p.stem for p in (tmp_path / "cache").rglob("*.npz")} == used  # one file per recording used
    assert len(metrics["selection"]["val_curve"]) == 15


def test_scripts_run_as_files():
    helped = subprocess.run(
        [sys.executable, "downstream/fine_tuning/train.py", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert helped.returncode == 0 and "--epochs-per-window" in helped.stdout and "--label-fraction" in helped.stdout


def test_bad_input_is_reported(cohort, backbones, tmp_path, capsys):
    base = ["--data", str(cohort), "--out", str(tmp_path / "x"), *RUN]
    with pytest.raises(SystemExit):
        linear_probing.main([*base, "--backbone", str(backbones["eeg"])])  # no --task
    assert "--task is required" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="no such checkpoint"):
        linear_probing.main([*base, "--task", "apnea", "--backbone", str(tmp_path / "nowhere.pt")])
    with pytest.raises(SystemExit):
        fine_tuning.main([*base, "--task", "apnea", "--backbone", str(backbones["eeg"]), "--label-fraction", "0"])
    assert "--label-fraction must be in (0, 1]" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        features_script.main(["--data", str(cohort), "--task", "apnea", "--channels", "airflow"])
    assert "100-Hz electrophysiology" in capsys.readouterr().err
    trees = ["--data", str(cohort), "--task", "apnea", "--out", str(tmp_path / "trees"), "--no-progress"]
    with pytest.raises(SystemExit, match="no such checkpoint"):
        features_script.main([*trees, "--backbone", str(tmp_path / "nowhere.pt")])
    with pytest.raises(SystemExit, match="not all channels of the SynthSleepNet"):
        features_script.main([*trees, "--backbone", str(backbones["fusion"]), "--channels", "eeg_c4,emg"])
    assert not (tmp_path / "trees").exists()  # refused before anything was written
    with pytest.raises(SystemExit, match="one channel"):
        linear_probing.main(
            [*base, "--task", "apnea", "--backbone", str(backbones["eeg"]), "--channels", "eeg_c4,eog_l"]
        )


def test_evaluate_without_runs_is_a_usage_error(tmp_path, capsys):
    """Runs come from the command line or from `runs` in --config; neither, or a folder without runs, is exit 2."""
    with pytest.raises(SystemExit) as exit_info:
        evaluate_script.main(["--out", str(tmp_path / "table")])
    assert exit_info.value.code == 2 and "at least one run directory" in capsys.readouterr().err
    empty = tmp_path / "no_runs_here"
    empty.mkdir()
    config = tmp_path / "evaluate.yaml"
    config.write_text(f"runs: [{empty}]\nout: {tmp_path / 'table'}\n")
    with pytest.raises(SystemExit) as exit_info:
        evaluate_script.main(["--config", str(config)])
    assert exit_info.value.code == 2 and "no metrics.json" in capsys.readouterr().err
