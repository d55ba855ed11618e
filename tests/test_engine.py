"""The shared training engine (utils/): exact resume, torchrun/gloo DDP, lr schedule, accumulation, config
precedence, checkpoints, the k-NN monitor. Toy model and data; CPU; seconds.

This file is also the toy torchrun entry point of `test_torchrun_two_processes` (see `__main__` below).
"""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from dataset.cohort import UnreadableRecording
from utils.batchnorm import debias_batchnorm
from utils.checkpoint import load_checkpoint, sha256_file
from utils.config import (
    Config,
    FrozenConfigError,
    UsageError,
    build_parser,
    load_config_file,
    parse_config,
    save_config,
)
from utils.distributed import cleanup
from utils.engine import (
    ResumableDistributedSampler,
    evaluating,
    fit,
    param_groups,
    preserved_rng,
    scaled_lr,
    setup_run,
    warmup_cosine,
)
from utils.knn_probe import KnnMonitor, knn_scores, monitor_on_splits, probe_target, resolve_monitor_metric
from utils.run_logging import read_jsonl

DIM = 16


class ToyDataset(Dataset):
    """n items {"signal": (DIM,) float32, "target": float32, "label": int}; `augment` adds NumPy noise per
    access (exercises the NumPy RNG of the main process)."""

    def __init__(self, n: int = 24, seed: int = 0, augment: bool = False):
        rng = np.random.default_rng(seed)
        self.x = rng.normal(size=(n, DIM)).astype(np.float32)  # (n, DIM)
        self.y = (self.x[:, :4].sum(1) + 0.1 * rng.normal(size=n)).astype(np.float32)  # (n,)
        self.augment = augment

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> dict:
        x = self.x[index]
        if self.augment:
            x = x + np.random.normal(0, 0.01, size=x.shape).astype(np.float32)
        return {"signal": torch.from_numpy(x), "target": torch.tensor(self.y[index]), "label": int(self.y[index] > 0)}


class ToyModel(nn.Module):
    """Linear encoder + LayerNorm + head, with input noise from the torch RNG (like random masking)."""

    def __init__(self, noise: float = 0.1):
        super().__init__()
        self.encoder = nn.Linear(DIM, 8)
        self.norm = nn.LayerNorm(8)
        self.head = nn.Linear(8, 1)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, 8))
        self.noise = noise

    def encode(self, signal: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.norm(self.encoder(signal))  # (B, 8)
        return hidden, hidden[:, None]

    def forward(self, signal: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.noise:
            signal = signal + self.noise * torch.randn_like(signal)
        hidden = self.norm(self.encoder(signal)) + self.cls_token[0]  # (B, 8)
        loss = F.mse_loss(self.head(hidden).squeeze(-1), target)
        return {"loss": loss, "mse_copy": loss.detach()}


def toy_loss(model: nn.Module, batch: dict, device: torch.device) -> dict[str, torch.Tensor]:
    return model(batch["signal"].to(device), batch["target"].to(device))


def toy_parser():
    return build_parser(
        "toy",
        defaults={
            "out": Path("runs/toy"),
            "progress": False,
            "workers": 0,
            "batch_size": 8,
            "passes": 3,
            "base_lr": 0.2,
            "warmup_steps": 1,
            "log_every": 1,
            "device": "cpu",
            "weight_decay": 0.01,
            "clip_grad": 1.0,
        },
    )


def toy_cfg(out: Path, *args: str):
    return parse_config(toy_parser(), ["--out", str(out), *args], required=())


def run_toy(
    out: Path, *args: str, noise: float = 0.1, augment: bool = True, n: int = 24, monitor=None, initial_best=None
):
    cfg = toy_cfg(out, *args)
    ctx = setup_run(cfg)
    model = ToyModel(noise)
    summary = fit(
        cfg,
        model,
        ToyDataset(n, augment=augment),
        ctx=ctx,
        model_kind="toy",
        model_config={"noise": noise},
        compute_loss=toy_loss,
        monitor=monitor,
        monitor_metric="score",
        initial_best=initial_best,
    )
    return model, summary


def step_losses(run_dir: Path) -> list[float]:
    return [record["loss"] for record in read_jsonl(run_dir / "steps.jsonl")]


@pytest.mark.parametrize("accum", [1, 2])
def test_resume_is_exact(tmp_path, accum):
    """4 steps straight == 2 steps + stop + resume + 2 steps (3 steps per epoch: the resumed part starts
    mid-epoch and crosses an epoch boundary)."""
    batch = str(8 // accum)
    common = ["--batch-size", batch, "--accum-steps", str(accum)]
    straight, _ = run_toy(tmp_path / "straight", *common, "--max-steps", "4")
    first, summary = run_toy(tmp_path / "split", *common, "--max-steps", "2")
    assert summary["stopped"] == "max_steps" and summary["step"] == 2
    with (tmp_path / "split" / "steps.jsonl").open("a") as log:  # logged after the checkpoint, then a crash
        log.write(json.dumps({"step": 3, "loss": 99.0}) + "\n")
    resumed, summary = run_toy(tmp_path / "split", *common, "--max-steps", "4")
    assert summary["step"] == 4

    a, b = step_losses(tmp_path / "straight"), step_losses(tmp_path / "split")
    assert len(a) == len(b) == 4
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    for (name, p), q in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(p, q), name
    # The epoch-1 mean loss covers the batches before and after the stop.
    epoch_1 = [r for r in read_jsonl(tmp_path / "split" / "log.jsonl") if r.get("epoch") == 1 and not r["partial"]]
    straight_1 = [r for r in read_jsonl(tmp_path / "straight" / "log.jsonl") if r.get("epoch") == 1]
    assert epoch_1 and epoch_1[0]["loss"] == pytest.approx(straight_1[0]["loss"], abs=1e-6)
    assert [r["kind"] for r in read_jsonl(tmp_path / "split" / "log.jsonl")].count("summary") == 1
    # Without the resume the second call would have started again from step 0 with a fresh model.
    fresh, _ = run_toy(tmp_path / "fresh", *common, "--max-steps", "2")
    assert not torch.equal(fresh.encoder.weight, resumed.encoder.weight)


def test_crash_recovery_from_step_checkpoint(tmp_path):
    """--save-every-steps: a run that dies at step 3 resumes from the step-2 last.pt and matches a straight run."""

    class DiesAtThirdStep(ToyModel):
        calls = 0

        def forward(self, signal, target):
            DiesAtThirdStep.calls += 1
            if DiesAtThirdStep.calls == 3:
                raise RuntimeError("simulated crash")
            return super().forward(signal, target)

    run_toy(tmp_path / "straight", "--max-steps", "4")
    cfg = toy_cfg(tmp_path / "crash", "--max-steps", "4", "--save-every-steps", "2")
    ctx = setup_run(cfg)  # seeds before the model is built, as in run_toy
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit(
            cfg,
            DiesAtThirdStep(),
            ToyDataset(augment=True),
            ctx=ctx,
            model_kind="toy",
            model_config={"noise": 0.1},
            compute_loss=toy_loss,
        )
    assert load_checkpoint(tmp_path / "crash" / "last.pt")["step"] == 2
    run_toy(tmp_path / "crash", "--max-steps", "4")
    np.testing.assert_allclose(step_losses(tmp_path / "crash"), step_losses(tmp_path / "straight"), atol=1e-6)
    # afresh over the finished run (--resume none), dying before its first checkpoint: no result of the earlier
    # run is left beside the new run's config and logs (its best.pt would be loaded as this run's)
    (tmp_path / "crash" / "metrics.json").write_text("{}")
    cfg = toy_cfg(tmp_path / "crash", "--max-steps", "4", "--resume", "none", "--seed", "5")
    DiesAtThirdStep.calls, ctx = 0, setup_run(cfg)
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit(cfg, DiesAtThirdStep(), ToyDataset(), ctx=ctx, model_kind="toy", model_config={}, compute_loss=toy_loss)
    assert not any((tmp_path / "crash" / name).exists() for name in ("best.pt", "last.pt", "metrics.json"))


def test_time_limit_and_missing_tensorboard(tmp_path, capsys):
    _, summary = run_toy(tmp_path / "run", "--max-minutes", "1e-6", "--tensorboard")
    assert summary["stopped"] == "max_minutes" and summary["step"] == 1
    assert load_checkpoint(tmp_path / "run" / "last.pt")["batch_in_epoch"] == 1
    if importlib.util.find_spec("tensorboard") is None:
        assert "TensorBoard logging skipped" in capsys.readouterr().err


def test_a_given_deadline_stops_a_phase_and_is_recorded(tmp_path):
    """A phase of a longer run gets its stop time fixed up front (`deadline`), not a changed --max-minutes: the
    run stops there, and config.json keeps the options as given, with the phase's budget under _derived."""
    cfg = toy_cfg(tmp_path / "phase")
    summary = fit(
        cfg,
        ToyModel(0.1),
        ToyDataset(24),
        ctx=setup_run(cfg),
        model_kind="toy",
        model_config={},
        compute_loss=toy_loss,
        deadline=time.monotonic(),
    )
    assert summary["stopped"] == "max_minutes" and summary["step"] == 1
    config = json.loads((tmp_path / "phase" / "config.json").read_text())
    assert config["max_minutes"] == 0.0 and 0.0 <= config["_derived"]["time_budget_min"] < 0.01


def test_checkpoint_contents_and_best(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "splits.json").write_text(json.dumps({"seed": 0, "subjects": {}, "recordings": {}}))
    scores = iter([0.5, 0.9, 0.7])
    model, summary = run_toy(
        tmp_path / "run", "--data", str(data), "--epochs", "3", monitor=lambda m, device: {"score": next(scores)}
    )
    run_dir = tmp_path / "run"
    for name in ("config.json", "log.jsonl", "steps.jsonl", "last.pt", "best.pt"):
        assert (run_dir / name).is_file(), name
    last, best = load_checkpoint(run_dir / "last.pt"), load_checkpoint(run_dir / "best.pt")  # weights_only load
    assert last["epoch"] == 3 and last["step"] == 9 and last["batch_in_epoch"] == 0
    assert best["epoch"] == 2 and best["best"]["value"] == 0.9 and last["best"]["epoch"] == 2
    assert last["splits_sha256"] == sha256_file(data / "splits.json")
    assert last["model_kind"] == "toy" and last["model_config"] == {"noise": 0.1}
    assert set(last["version"]) == {"package", "git_commit"} and last["config"]["passes"] == 3
    assert "torch" in last["rng"][0] and "numpy" in last["rng"][0]
    rebuilt = ToyModel(**last["model_config"])
    rebuilt.load_state_dict(last["model"])  # unwrapped keys, strict
    assert torch.equal(rebuilt.head.weight, model.head.weight)
    log = read_jsonl(run_dir / "log.jsonl")
    epochs = [r for r in log if r["kind"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2, 3] and [r["score"] for r in epochs] == [0.5, 0.9, 0.7]
    for key in ("loss", "mse_copy", "lr", "samples_per_s", "wall_time_s", "step"):
        assert key in epochs[0], key
    assert log[-1]["kind"] == "summary" and log[-1]["best"]["epoch"] == 2 and summary["stopped"] == "completed"
    # A finished run resumed again does nothing and keeps its weights.
    again, summary = run_toy(tmp_path / "run", "--data", str(data), "--epochs", "3")
    assert summary["step"] == 9 and torch.equal(again.head.weight, model.head.weight)


@pytest.mark.parametrize("to_beat, best_epoch", [(0.8, 2), (0.95, 0)])
def test_initial_best_must_be_beaten(tmp_path, to_beat, best_epoch):
    """Starting weights with a known score (a warm-up phase) stay best.pt until an epoch beats them."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "splits.json").write_text(json.dumps({"seed": 0, "subjects": {}, "recordings": {}}))
    scores = iter([0.5, 0.9, 0.7])
    _, summary = run_toy(
        tmp_path / "run",
        "--data",
        str(data),
        "--epochs",
        "3",
        monitor=lambda m, d: {"score": next(scores)},
        initial_best={"score": to_beat, "tag": 1.0},
    )
    best = load_checkpoint(tmp_path / "run" / "best.pt")
    assert summary["best"]["epoch"] == best["best"]["epoch"] == best_epoch
    if best_epoch == 0:
        assert best["step"] == 0 and best["metrics"] == {"score": to_beat, "tag": 1.0}
        assert summary["best"]["value"] == to_beat
    assert load_checkpoint(tmp_path / "run" / "last.pt")["step"] == 9  # training ran all the same


def test_batchnorm_statistics_are_the_models_not_the_engines(tmp_path):
    """The engine leaves a model's BatchNorms as they are; bias-corrected statistics (--debias-batchnorm, on by
    default) are set up on the model by the script that builds it (utils/batchnorm.py)."""

    class NormToy(ToyModel):
        def __init__(self):
            super().__init__(0.0)
            self.norm = nn.BatchNorm1d(8)  # replaces the LayerNorm: running statistics from 3 steps

    cfg = toy_cfg(tmp_path / "plain", "--passes", "1", "--warmup-steps", "0")
    plain = NormToy()
    fit(cfg, plain, ToyDataset(24), ctx=setup_run(cfg), model_kind="toy", model_config={}, compute_loss=toy_loss)
    assert int(plain.norm.num_batches_tracked) == 3 and not plain.norm._forward_pre_hooks
    assert plain.norm.momentum == pytest.approx(0.1)  # PyTorch's exponential average from the start

    cfg = toy_cfg(tmp_path / "run", "--passes", "1", "--warmup-steps", "0")
    assert cfg.debias_batchnorm  # the default
    model = NormToy()
    assert debias_batchnorm(model) == 1
    fit(cfg, model, ToyDataset(24), ctx=setup_run(cfg), model_kind="toy", model_config={}, compute_loss=toy_loss)
    assert int(model.norm.num_batches_tracked) == 3 and len(model.norm._forward_pre_hooks) == 1
    assert model.norm.momentum == pytest.approx(1 / 3)  # the third batch entered a plain average of three
    assert model.norm.running_var.min() < 0.9 or model.norm.running_var.max() > 1.1  # not (1 - 0.1)^3 of the start


def test_lr_schedule_values():
    factor = warmup_cosine(warmup_steps=4, total_steps=14, min_lr_ratio=0.1)
    assert [factor(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert factor(4) == pytest.approx(1.0)
    assert factor(9) == pytest.approx(0.1 + 0.9 * 0.5)  # half-way through the cosine
    assert factor(14) == pytest.approx(0.1) and factor(20) == pytest.approx(0.1)
    assert all(factor(s) > factor(s + 1) for s in range(4, 14))
    assert scaled_lr(5e-4, 512) == pytest.approx(1e-3) and scaled_lr(1e-4, 64) == pytest.approx(2.5e-5)


def test_lr_in_a_run_follows_scaling_warmup_and_cosine(tmp_path):
    run_toy(
        tmp_path / "run",
        "--lr",
        "0.1",
        "--batch-size",
        "4",
        "--accum-steps",
        "2",
        "--warmup-steps",
        "2",
        "--epochs",
        "2",
        "--min-lr-ratio",
        "0",
    )
    peak = 0.1 * 8 / 256  # effective batch 8
    lrs = [r["lr"] for r in read_jsonl(tmp_path / "run" / "steps.jsonl")]
    expected = [peak * warmup_cosine(2, 6)(s) for s in range(6)]
    np.testing.assert_allclose(lrs, expected, rtol=1e-9)
    assert lrs[0] == pytest.approx(peak / 2) and lrs[1] == pytest.approx(peak)


def test_a_resumed_run_applies_a_changed_lr_from_where_it_resumes(tmp_path):
    """Resuming with another --lr (a warning names it) trains on with the new peak lr on the same schedule:
    the loaded optimizer state must not bring the checkpoint's back, or config.json would not say what ran."""
    common = ["--batch-size", "8", "--warmup-steps", "2", "--epochs", "2", "--min-lr-ratio", "0"]
    run_toy(tmp_path / "run", *common, "--lr", "0.1", "--max-steps", "3")
    run_toy(tmp_path / "run", *common, "--lr", "0.4", "--max-steps", "6")
    lrs = [r["lr"] for r in read_jsonl(tmp_path / "run" / "steps.jsonl")]
    factor = warmup_cosine(2, 6)
    expected = [0.1 * 8 / 256 * factor(s) for s in range(3)] + [0.4 * 8 / 256 * factor(s) for s in range(3, 6)]
    np.testing.assert_allclose(lrs, expected, rtol=1e-9)


def test_accumulation_matches_large_batch(tmp_path):
    """accum 2 x batch 4 == batch 8 (same samples, mean loss) on a noise-free model, 3 optimizer steps."""
    small, _ = run_toy(
        tmp_path / "a", "--batch-size", "4", "--accum-steps", "2", "--max-steps", "3", noise=0.0, augment=False
    )
    large, _ = run_toy(
        tmp_path / "b", "--batch-size", "8", "--accum-steps", "1", "--max-steps", "3", noise=0.0, augment=False
    )
    for (name, p), q in zip(small.state_dict().items(), large.state_dict().values()):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-5, msg=name)
    losses_small, losses_large = step_losses(tmp_path / "a"), step_losses(tmp_path / "b")
    np.testing.assert_allclose(losses_small, losses_large, atol=1e-6)


def test_config_precedence(tmp_path):
    yaml_file = tmp_path / "cfg.yaml"
    yaml_file.write_text("batch-size: 32\nbase_lr: 0.001\npasses: 5\nmodel_args: {mask_ratio: 0.7}\ndata: /x/y\n")
    parser = build_parser(defaults={"passes": 7, "warmup_passes": 2.0})
    cfg = parse_config(parser, ["--config", str(yaml_file), "--base-lr", "0.002", "--model-arg", "depth=2"])
    assert cfg.batch_size == 32 and cfg.base_lr == 0.002 and cfg.passes == 5  # file > script default; CLI > file
    assert cfg.warmup_passes == 2.0 and cfg.model_args == {"mask_ratio": 0.7, "depth": 2}
    assert cfg.data == Path("/x/y") and cfg.seed == 0  # parser default

    # The config is frozen: a change is a new config.
    with pytest.raises(FrozenConfigError, match="read-only"):
        cfg.out = tmp_path / "run"
    with pytest.raises(KeyError, match="out_dir"):  # a misspelt option is no silent new field
        cfg.replace(out_dir=tmp_path)
    moved = cfg.replace(out=tmp_path / "run")
    assert moved.out == tmp_path / "run" and cfg.out != moved.out and moved.batch_size == cfg.batch_size
    cfg = moved

    # The saved config.json round-trips as --config.
    saved = save_config(cfg, tmp_path / "run" / "config.json", derived={"world_size": 1})
    assert json.loads(saved.read_text())["_derived"] == {"world_size": 1}
    again = parse_config(build_parser(), ["--config", str(saved)])
    assert vars(again) | {"config": None} == vars(cfg) | {"config": None}

    json_file = tmp_path / "cfg.json"
    json_file.write_text(json.dumps({"batch_szie": 4}))
    with pytest.raises(SystemExit):
        parse_config(build_parser(), ["--config", str(json_file), "--data", "d"])
    assert load_config_file(json_file) == {"batch_szie": 4}
    with pytest.raises(ValueError, match="unknown option.*batch_szie"):
        build_parser(defaults={"batch_szie": 4})
    for bad in ("passes: 3.5", "amp: 'yes'", "base_lr: [1]", "epochs: 3.5", "lr: [1]"):
        yaml_file.write_text(bad + "\n")
        with pytest.raises(SystemExit):
            parse_config(build_parser(), ["--config", str(yaml_file), "--data", "d"])
    with pytest.raises(ValueError, match="passes = 3.5 should be an int"):
        build_parser(defaults={"passes": 3.5})
    with pytest.raises(SystemExit):  # --data is required unless the file gives it
        parse_config(build_parser(), [])
    yaml_file.write_text("passes: [1, 2\nbase_lr: 3\n")  # malformed: one line naming where, as for JSON
    with pytest.raises(ValueError) as info:
        load_config_file(yaml_file)
    assert "\n" not in str(info.value) and "at line 2, column" in str(info.value)


def test_old_option_names_still_work_and_config_json_has_the_new_ones(tmp_path):
    """--epochs / --warmup-epochs / --lr (and those keys in a --config file) are today's --passes /
    --warmup-passes / --base-lr; a saved config.json holds only the new names."""
    old = parse_config(build_parser(), ["--data", "d", "--epochs", "4", "--warmup-epochs", "0.5", "--lr", "0.01"])
    new = parse_config(build_parser(), ["--data", "d", "--passes", "4", "--warmup-passes", "0.5", "--base-lr", "0.01"])
    assert vars(old) == vars(new) and (new.passes, new.warmup_passes, new.base_lr) == (4, 0.5, 0.01)
    legacy = tmp_path / "old_config.json"  # a config.json written before the rename
    legacy.write_text(json.dumps({"data": "d", "epochs": 4, "warmup_epochs": 0.5, "lr": 0.01}))
    cfg = parse_config(build_parser(), ["--config", str(legacy)])
    assert vars(cfg) | {"config": None} == vars(new) | {"config": None}
    saved = json.loads(save_config(cfg, tmp_path / "run" / "config.json").read_text())
    assert saved["passes"] == 4 and saved["base_lr"] == 0.01 and saved["warmup_passes"] == 0.5
    assert not {"epochs", "lr", "warmup_epochs"} & set(saved)
    legacy.write_text(json.dumps({"data": "d", "epochs": 2.5}))
    with pytest.raises(SystemExit):  # the error names the key as the file wrote it
        parse_config(build_parser(), ["--config", str(legacy)])


def test_param_groups_skip_frozen_and_undecayed():
    model = ToyModel()
    model.head.weight.requires_grad_(False)
    decay, no_decay = param_groups(model, weight_decay=0.05)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    ids = lambda group: {id(p) for p in group["params"]}  # noqa: E731
    assert ids(decay) == {id(model.encoder.weight)}
    assert ids(no_decay) == {
        id(p) for p in (model.encoder.bias, model.norm.weight, model.norm.bias, model.head.bias, model.cls_token)
    }


def test_sampler_resume_skips_consumed_samples():
    data = ToyDataset(20)
    full = ResumableDistributedSampler(data, num_replicas=2, rank=1, seed=3)
    full.set_epoch(4)
    order = list(full)
    full.start_index = 4
    assert list(full) == order[4:] and len(full) == len(order) - 4
    other = ResumableDistributedSampler(data, num_replicas=2, rank=0, seed=3)
    other.set_epoch(4)
    assert not set(other) & set(order)  # ranks see disjoint shares


def test_knn_probe_and_monitor_restore_modes():
    rng = np.random.default_rng(0)
    centres = rng.normal(scale=5, size=(3, 10))
    y = np.repeat(np.arange(3), 40)
    x = centres[y] + rng.normal(size=(120, 10))
    scores = knn_scores(x[::2], y[::2], x[1::2], y[1::2], k=5, pca_dim=4)
    assert scores["kappa"] > 0.9 and scores["f1"] > 0.9
    noise = knn_scores(rng.normal(size=(60, 10)), y[::2], rng.normal(size=(60, 10)), y[1::2], k=5)
    assert noise["kappa"] < 0.4
    assert probe_target("wake_sleep").map_labels(np.array([-1, 0, 1, 4])).tolist() == [-1, 0, 1, 1]

    class FrozenNorm(ToyModel):  # keeps its norm in eval mode: the model's own train() decides, nothing else
        def train(self, mode: bool = True):
            super().train(mode)
            self.norm.eval()
            return self

    model = FrozenNorm()
    model.train()
    model.encoder.train(False)  # set by hand, outside the model's train(): not a mode the model keeps
    monitor = KnnMonitor(ToyDataset(40, seed=1), ToyDataset(20, seed=2), target="stage", k=3, max_train=30, max_val=10)
    assert len(monitor.train_indices) == 30 and len(monitor.val_indices) == 10
    before = torch.get_rng_state()
    with preserved_rng():
        result = monitor(model, torch.device("cpu"))
        torch.rand(3)
    assert torch.equal(before, torch.get_rng_state())
    assert result["knn_n_train"] == 30 and -1 <= result["knn_kappa"] <= 1
    assert model.training and model.encoder.training and not model.norm.training
    with evaluating(model):
        assert not model.training and not model.encoder.training
    assert model.training and model.encoder.training and not model.norm.training  # model.train(True) again


def test_knn_monitor_scores_a_rare_binary_target_by_auroc():
    """Apnea-like target (10 % positives): the k-NN vote rarely says positive, so kappa says little; the
    positive vote share ranks epochs (knn_auroc), and "auto" selects best.pt by it for binary targets."""

    class Rare(Dataset):
        def __init__(self, n, seed):
            g = np.random.default_rng(seed)
            self.y = (g.random(n) < 0.1).astype(np.int64)
            self.x = g.normal(size=(n, DIM)).astype(np.float32) + 0.8 * self.y[:, None]  # weakly shifted positives

        def __len__(self):
            return len(self.y)

        def __getitem__(self, i):
            return {"signal": torch.from_numpy(self.x[i]), "label": torch.tensor(self.y[i])}

    class Identity(nn.Module):
        def encode(self, signal):
            return signal, signal[:, None]

    result = KnnMonitor(Rare(400, 1), Rare(400, 2), target="apnea", k=10)(Identity(), torch.device("cpu"))
    assert result["knn_auroc"] > 0.75 and result["knn_kappa"] < result["knn_auroc"] - 0.3
    args = resolve_monitor_metric(Config(monitor_target="apnea", monitor_metric="auto", monitor=False))
    assert monitor_on_splits(args, True, None, None) is None and args.monitor_metric == "knn_auroc"
    args = resolve_monitor_metric(Config(monitor_target="stage", monitor_metric="auto", monitor=False))
    assert monitor_on_splits(args, True, None, None) is None and args.monitor_metric == "knn_kappa"
    with pytest.raises(ValueError, match="resolve"):  # an unresolved `auto` would select best.pt by nothing
        monitor_on_splits(Config(monitor_target="stage", monitor_metric="auto", monitor=False), True, None, None)

    def split_raising(cause):
        def open_split(cfg, split, task=None):
            raise UsageError(f"{split}: {cause}") from cause

        return open_split

    args = resolve_monitor_metric(Config(monitor_target="stage", monitor_metric="auto", monitor=True))
    assert monitor_on_splits(args, True, split_raising(ValueError("no usable recording")), None) is None
    with pytest.raises(UsageError, match="not a readable Parquet file"):  # a broken file stops the run
        monitor_on_splits(
            args, True, split_raising(UnreadableRecording("x.parquet: not a readable Parquet file")), None
        )


def test_nan_loss_is_reported(tmp_path):
    class Broken(ToyModel):
        def forward(self, signal, target):
            return {"loss": super().forward(signal, target)["loss"] * float("nan")}

    cfg = toy_cfg(tmp_path / "run")
    ctx = setup_run(cfg)
    with pytest.raises(FloatingPointError, match="loss is nan in pass 1, step 1"):
        fit(cfg, Broken(), ToyDataset(), ctx=ctx, model_kind="toy", model_config={}, compute_loss=toy_loss)
    with pytest.raises(UsageError, match="fewer than one optimizer step"):
        fit(cfg, ToyModel(), ToyDataset(4), ctx=ctx, model_kind="toy", model_config={}, compute_loss=toy_loss)


def test_torchrun_two_processes(tmp_path):
    """2 gloo processes via torchrun (with gradient accumulation, so no_sync is used): the run completes across
    an epoch boundary, both ranks hold identical weights, rank 0's checkpoint holds both ranks' RNG states."""
    torchrun = Path(sys.executable).parent / "torchrun"
    out = tmp_path / "ddp"
    result = subprocess.run(
        [
            str(torchrun),
            "--standalone",
            "--nproc_per_node",
            "2",
            __file__,
            "--out",
            str(out),
            "--max-steps",
            "3",
            "--batch-size",
            "4",
            "--accum-steps",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rank0, rank1 = (torch.load(out / f"weights_rank{r}.pt") for r in (0, 1))
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), name
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["world_size"] == 2 and len(ckpt["rng"]) == 2 and ckpt["step"] == 3
    assert not torch.equal(ckpt["rng"][0]["torch"], ckpt["rng"][1]["torch"])  # per-rank streams
    for name in rank0:
        assert torch.equal(ckpt["model"][name], rank0[name]), name
    steps = read_jsonl(out / "steps.jsonl")
    assert len(steps) == 3 and all(math.isfinite(s["loss"]) for s in steps)
    assert json.loads((out / "config.json").read_text())["_derived"]["effective_batch_size"] == 16


def _torchrun_main(argv: list[str]) -> None:
    cfg = parse_config(toy_parser(), argv, required=())
    ctx = setup_run(cfg)
    model = ToyModel()
    fit(cfg, model, ToyDataset(40, augment=True), ctx=ctx, model_kind="toy", model_config={}, compute_loss=toy_loss)
    torch.save(model.state_dict(), Path(cfg.out) / f"weights_rank{ctx.rank}.pt")
    cleanup(ctx)


if __name__ == "__main__":
    _torchrun_main(sys.argv[1:])


def test_the_console_counts_passes_and_the_logs_keep_their_fields(tmp_path, capsys):
    """A 30-s epoch owns the word "epoch": the progress line counts passes over the training set; log.jsonl keeps
    its "epoch" field (what resume, readers and benchmarks read in runs old and new)."""
    run_toy(tmp_path / "run", "--passes", "2")
    out = capsys.readouterr().out
    assert "pass 1/2 step=3" in out and "pass 2/2 step=6" in out and "epoch 1/2" not in out
    records = [r for r in read_jsonl(tmp_path / "run" / "log.jsonl") if r["kind"] == "epoch"]
    assert [r["epoch"] for r in records] == [1, 2]


def test_a_warmup_longer_than_the_run_is_said(tmp_path, capsys):
    run_toy(tmp_path / "long", "--passes", "1", "--batch-size", "4", "--warmup-steps", "30", "--no-progress")
    assert "warning: the warmup (30 steps) is longer than the run (6 steps of 1 pass(es))" in capsys.readouterr().out
    run_toy(tmp_path / "short", "--passes", "2", "--batch-size", "4", "--warmup-steps", "6", "--no-progress")
    assert "warning: the warmup" not in capsys.readouterr().out
