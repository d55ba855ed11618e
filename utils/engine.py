"""The one training loop of the project (docs/training.md §4): every train.py builds its data and model, then
calls `setup_run` and `fit`.

Contract with the model: `compute_loss(model, batch, device)` returns a dict with a scalar `"loss"` tensor
(the default, `signal_loss`, calls `model(batch["signal"])`, which is how NeuroNet pretraining works); every
other 0-d tensor in the dict is averaged into the logs. Only parameters with `requires_grad` are optimised,
so frozen encoders with LoRA adapters train as expected.

What `fit` does: device placement; DistributedDataParallel under torchrun; a seeded, resumable
DistributedSampler (per-pass permutation from seed + pass, consumed batches skipped on resume); gradient
accumulation (`no_sync` between micro-batches); gradient clipping; AdamW over trainable parameters with no
decay on biases, norms and tokens; linear warmup + cosine per optimizer step; bf16 autocast on CUDA;
checkpoints `last.pt` (each epoch, optionally every N steps, and when stopped) and `best.pt` (by the monitor
metric); JSON-lines logs; tqdm progress. Resuming reproduces the uninterrupted run exactly (same RNG streams,
same batch order, same optimizer/scheduler state) for datasets whose items are deterministic (EpochDataset is);
a dataset that draws random numbers inside DataLoader workers gets the same worker seeds after a resume, but
the resumed epoch hands batches to workers in a different rotation.

    cfg = parse_config(build_parser(defaults={...}), argv)
    ctx = setup_run(cfg)                       # torchrun process group or single process; seeds
    model = build_model(...)                   # identical on every rank (seeded)
    summary = fit(cfg, model, train_set, ctx=ctx, model_kind="neuronet", model_config=model_cfg.to_dict(),
                  monitor=KnnMonitor(...))
    cleanup(ctx)
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from utils.checkpoint import (
    FORMAT_VERSION,
    atomic_save,
    capture_rng_state,
    code_version,
    plain_number,
    restore_rng_state,
    sha256_file,
)
from utils.config import Config, Interrupted, UsageError, config_differences, config_to_dict, save_config, to_plain
from utils.config_file import LEGACY_KEYS
from utils.distributed import (
    DistContext,
    all_gather_objects,
    all_reduce_sum,
    barrier,
    broadcast_object,
    init_distributed,
)
from utils.interrupt import StopRequest, quiet_worker
from utils.metrics import improves
from utils.optim import REFERENCE_BATCH, param_groups, scaled_lr, warmup_cosine
from utils.resume import (
    REPLACING,
    RESUME_IDENTITY_KEYS,
    RUNTIME_KEYS,
    carried_best,
    check_resumed_batch,
    clear_run_results,
    is_replacement,
    read_resume_checkpoint,
    start_training_folder,
)
from utils.run_logging import RunLogger, check_run_logs, finished_summary, format_count, progress_bar

LossFn = Callable[[nn.Module, Any, torch.device], Mapping[str, torch.Tensor]]
Monitor = Callable[[nn.Module, torch.device], Mapping[str, float]]


# --------------------------------------------------------------------------- reproducibility
def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def seed_worker(worker_id: int) -> None:
    """DataLoader `worker_init_fn`: seed NumPy and Python from the worker's torch seed (base_seed + worker_id)."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
    quiet_worker()  # Ctrl-C and SIGTERM are the main process's to serve (`StopRequest`)


@contextmanager
def preserved_rng() -> Iterator[None]:
    """Run a block (e.g. a monitor) without disturbing the training RNG streams."""
    state = capture_rng_state()
    try:
        yield
    finally:
        restore_rng_state(state)


@contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """`model.eval()` inside the block, then `model.train(mode)` with the mode it had. Which parts follow that mode
    is the model's own decision, in its `train()` override (a frozen encoder that stays in eval mode:
    `models.heads.EpochEncoder`, `models.synthsleepnet.ChannelEncoder`); nothing here sets a submodule's flag."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


class ResumableDistributedSampler(DistributedSampler):
    """DistributedSampler (permutation seeded by seed + epoch, this rank's share) that can start mid-epoch:
    `start_index` samples of this rank's share are skipped (resume after `batch_in_epoch` batches)."""

    def __init__(self, dataset: Dataset, num_replicas: int = 1, rank: int = 0, shuffle: bool = True, seed: int = 0):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=False)
        self.start_index = 0

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        return iter(indices[self.start_index :])

    def __len__(self) -> int:
        return self.num_samples - self.start_index


# --------------------------------------------------------------------------- precision
def autocast_context(device: torch.device, enabled: bool, dtype: str = "bf16", cpu: bool = False):
    """bf16 (or fp16) autocast on CUDA when enabled; on CPU only bf16, and only when `cpu` (--amp-cpu) asks."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16 if dtype == "bf16" else torch.float16)
    if enabled and cpu and device.type == "cpu" and dtype == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return nullcontext()


def cpu_amp(cfg: Config) -> bool:
    """--amp --amp-cpu with bf16: autocast on CPU too (an opt-in: it pays off for the larger presets only)."""
    return bool(cfg.amp) and bool(getattr(cfg, "amp_cpu", False)) and cfg.amp_dtype == "bf16"


def signal_loss(model: nn.Module, batch: Mapping[str, Any], device: torch.device) -> Mapping[str, torch.Tensor]:
    """Default loss: `model(batch["signal"])`, the (B, 3000) pooled single-channel epochs at 100 Hz (and
    `positives=batch["positive"]` when the dataset pairs each epoch with a neighbour: dataset/neighbours.py)."""
    signal = batch["signal"].to(device, non_blocking=True)  # (B, 3000) robust-scaled, 100 Hz
    if "positive" in batch:
        return model(signal, positives=batch["positive"].to(device, non_blocking=True))
    return model(signal)


# --------------------------------------------------------------------------- run set-up
def run_derived(cfg: Config, ctx: DistContext) -> dict[str, Any]:
    """Values that follow from the config and the launch: world size, effective batch, scaled lr."""
    effective_batch = cfg.batch_size * cfg.accum_steps * ctx.world_size
    return {
        "world_size": ctx.world_size,
        "device": str(ctx.device),
        "effective_batch_size": effective_batch,
        "lr_scaled": scaled_lr(cfg.base_lr, effective_batch),
        "version": code_version(),
    }


def setup_run(cfg: Config) -> DistContext:
    """Join torchrun's process group (or run single-process) and seed everything with `cfg.seed` (so the model
    is initialised identically on every rank). Writes nothing (`fit` writes config.json when training starts)
    but empties a given-up replacement folder (`utils.resume.start_training_folder`).
    (Option values were checked when they were parsed: utils/config.py.)"""
    ctx = init_distributed(cfg.device, cfg.dist_backend, cfg.dist_timeout_min)
    seed_everything(cfg.seed)
    if ctx.is_main:
        start_training_folder(cfg.resume, cfg.out)
        derived = run_derived(cfg, ctx)
        amp = (
            "off"
            if not cfg.amp
            else (
                cfg.amp_dtype
                if ctx.device.type == "cuda"
                else ("bf16 (CPU, --amp-cpu)" if cpu_amp(cfg) else "off (CUDA only without --amp-cpu)")
            )
        )
        print(
            f"run dir {cfg.out}{REPLACING if is_replacement(cfg.out) else ''} | device {ctx.device} x "
            f"{ctx.world_size} process(es) | amp {amp} | "
            f"effective batch {derived['effective_batch_size']} -> lr {derived['lr_scaled']:.3g} "
            f"(base {cfg.base_lr:g} x batch / {REFERENCE_BATCH})",
            flush=True,
        )
    barrier(ctx)
    return ctx


# --------------------------------------------------------------------------- the loop
class _Meter:
    """Sums of the scalar outputs of compute_loss over micro-batches (restored from checkpoints mid-epoch)."""

    def __init__(self, state: Mapping[str, Any] | None = None):
        self.sums: dict[str, float] = dict(state["sums"]) if state else {}
        self.count: int = int(state["count"]) if state else 0

    def add(self, values: Mapping[str, float]) -> None:
        for key, value in values.items():
            self.sums[key] = self.sums.get(key, 0.0) + value
        self.count += 1

    def state(self) -> dict[str, Any]:
        return {"sums": dict(self.sums), "count": self.count}

    def global_means(self, ctx: DistContext) -> dict[str, float]:
        keys = sorted(self.sums)
        totals = all_reduce_sum(torch.tensor([self.sums[k] for k in keys] + [self.count], dtype=torch.float64), ctx)
        count = max(1.0, float(totals[-1]))
        return {key: float(totals[i]) / count for i, key in enumerate(keys)}


def _scalars(output: Mapping[str, Any]) -> dict[str, float]:
    """Float values of the 0-d tensors (and numbers) in a loss dict."""
    values = {}
    for key, value in output.items():
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            values[key] = float(value.detach().float().item())
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            values[key] = float(value)
    return values


class Trainer:
    """One training run; `fit` below is the usual entry point. Attributes mirror the checkpoint: `epoch`
    (completed epochs), `batch_in_epoch` (micro-batches consumed of the current one), `step` (optimizer steps)."""

    def __init__(
        self,
        cfg: Config,
        model: nn.Module,
        train_set: Dataset,
        *,
        ctx: DistContext,
        model_kind: str,
        model_config: Mapping[str, Any],
        compute_loss: LossFn = signal_loss,
        monitor: Monitor | None = None,
        monitor_metric: str = "knn_kappa",
        monitor_mode: str = "max",
        collate_fn: Callable | None = None,
        metadata: Mapping[str, Any] | None = None,
        initial_best: Mapping[str, Any] | None = None,
        deadline: float | None = None,
    ):
        self.cfg, self.ctx, self.device, self.run_dir = cfg, ctx, ctx.device, Path(cfg.out)
        self.model_kind, self.model_config = model_kind, to_plain(dict(model_config))
        self.metadata = to_plain(dict(metadata or {}))
        self.compute_loss, self.monitor = compute_loss, monitor
        self.wall_start = time.monotonic()
        self.budget_given = deadline is not None  # a phase of a longer run: its share, recorded in config.json
        if deadline is None and cfg.max_minutes and cfg.max_minutes > 0:
            deadline = self.wall_start + cfg.max_minutes * 60
        self.deadline = deadline  # time.monotonic() at which the run stops cleanly; None: no time limit
        self.model = model.to(self.device)  # BatchNorm statistics are the model's: scripts apply --debias-batchnorm
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        if not self.trainable:
            raise ValueError("fit: the model has no trainable parameters (requires_grad is False everywhere)")
        self.n_parameters = sum(p.numel() for p in self.model.parameters())
        self.n_trainable = sum(p.numel() for p in self.trainable)
        seed_everything(cfg.seed + ctx.rank)  # per-rank streams (masking, dropout); restored on resume

        self.stop = StopRequest()  # entered around the training loop (`fit`)
        self.sampler = ResumableDistributedSampler(train_set, ctx.world_size, ctx.rank, shuffle=True, seed=cfg.seed)
        self.loader_generator = torch.Generator()  # reseeded per epoch: worker seeds do not depend on history
        self.loader = DataLoader(
            train_set,
            batch_size=cfg.batch_size,
            sampler=self.sampler,
            num_workers=cfg.workers,
            drop_last=True,
            collate_fn=collate_fn,
            pin_memory=self.device.type == "cuda",
            worker_init_fn=seed_worker,
            generator=self.loader_generator,
        )
        self.effective_batch = cfg.batch_size * cfg.accum_steps * ctx.world_size
        self.steps_per_epoch = self.sampler.num_samples // cfg.batch_size // cfg.accum_steps
        if self.steps_per_epoch == 0:
            raise UsageError(
                f"training set has {len(train_set)} samples, fewer than one optimizer step needs "
                f"(batch_size {cfg.batch_size} x accum_steps {cfg.accum_steps} x {ctx.world_size} process(es)); "
                "lower --batch-size"
            )
        self.used_batches = self.steps_per_epoch * cfg.accum_steps  # micro-batches per epoch (partial group dropped)
        self.total_steps = cfg.passes * self.steps_per_epoch
        capped = cfg.max_steps is not None and cfg.max_steps > 0
        self.step_cap = min(self.total_steps, cfg.max_steps) if capped else self.total_steps
        self.warmup = (
            cfg.warmup_steps if cfg.warmup_steps is not None else round(cfg.warmup_passes * self.steps_per_epoch)
        )
        if self.warmup > self.total_steps and ctx.is_main:
            print(
                f"warning: the warmup ({self.warmup} steps) is longer than the run ({self.total_steps} steps of "
                f"{cfg.passes} pass(es)): the lr never reaches its peak; lower --warmup-passes / --warmup-steps",
                flush=True,
            )
        self.lr = scaled_lr(cfg.base_lr, self.effective_batch)
        self.optimizer = torch.optim.AdamW(
            param_groups(self.model, cfg.weight_decay),
            lr=self.lr,
            betas=tuple(cfg.adam_betas),
            fused=self.device.type in ("cpu", "cuda"),
        )  # one kernel over all tensors
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, warmup_cosine(self.warmup, self.total_steps, cfg.min_lr_ratio)
        )
        self.use_amp = bool(cfg.amp) and (self.device.type == "cuda" or cpu_amp(cfg))
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.use_amp and cfg.amp_dtype == "fp16")
        self.train_model: nn.Module = self.model
        if ctx.is_distributed:
            self.train_model = DistributedDataParallel(
                self.model,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=cfg.find_unused_parameters,
            )

        self.has_monitor = broadcast_object(monitor is not None, ctx)  # rank 0 decides; other ranks may pass None
        self.best: dict[str, Any] = {
            "metric": monitor_metric if self.has_monitor else "loss",
            "mode": monitor_mode if self.has_monitor else "min",
            "value": None,
            "epoch": None,
            "step": None,
        }
        self.epoch, self.batch_in_epoch, self.step = 0, 0, 0
        self.saved: dict[str, int] = {}  # checkpoint name -> step, as written (or resumed from) by this run
        self.meter = _Meter()
        self.initial_best = dict(initial_best) if initial_best else None
        if self.initial_best is not None and self.best["metric"] not in self.initial_best:
            raise ValueError(f"fit: initial_best has no {self.best['metric']!r} (keys: {sorted(self.initial_best)})")
        self.splits_sha256 = sha256_file(Path(cfg.data) / "splits.json") if getattr(cfg, "data", None) else None

    # ----------------------------------------------------------------------- checkpoints
    def resume(self, path: Path, ckpt: Mapping[str, Any] | None = None) -> None:
        """Load model, optimizer, scheduler, scaler, position, best, meter and this rank's RNG state (from `ckpt`,
        the checkpoint at `path` already read, or read here)."""
        if ckpt is None:
            path, ckpt = read_resume_checkpoint(path, self.run_dir, self.model_kind, self.cfg)
        cfg, ctx = self.cfg, self.ctx
        saved = {LEGACY_KEYS.get(k, k): v for k, v in ckpt["config"].items()}  # checkpoints of the old names too
        check_resumed_batch(path, saved, cfg)
        changed = {  # what the run learns with (RESUME_IDENTITY_KEYS were refused when the checkpoint was read)
            k: (saved[k], to_plain(getattr(cfg, k)))
            for k in sorted(saved)
            if k not in RUNTIME_KEYS and k not in RESUME_IDENTITY_KEYS and not k.startswith("_") and hasattr(cfg, k)
            if saved[k] != to_plain(getattr(cfg, k))
        }
        # the options of this run, which the loaded optimizer and scheduler states would replace by the checkpoint's
        fresh = [{k: v for k, v in g.items() if k != "params"} for g in self.optimizer.param_groups]
        base_lrs = list(self.scheduler.base_lrs)
        try:
            self.model.load_state_dict(ckpt["model"])
            self.optimizer.load_state_dict(ckpt["optimizer"])
            self.scheduler.load_state_dict(ckpt["scheduler"])
            self.scheduler.base_lrs = base_lrs  # a changed --base-lr or batch size applies from here on
            for group, options, base, factor in zip(
                self.optimizer.param_groups, fresh, base_lrs, self.scheduler.lr_lambdas, strict=True
            ):
                group.update(options, lr=base * factor(self.scheduler.last_epoch))
        except (RuntimeError, ValueError, KeyError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            differs = config_differences(ckpt.get("model_config"), getattr(self.model, "to_config", lambda: None)())
            raise UsageError(
                f"{path}: its weights or optimizer state do not fit the model built from the current "
                f"options ({differs or first[:200]}); resume with the options it was written with, or start "
                "afresh with --resume none"
            ) from None
        if ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.epoch, self.batch_in_epoch, self.step = int(ckpt["epoch"]), int(ckpt["batch_in_epoch"]), int(ckpt["step"])
        cap = getattr(cfg, "max_steps", None)  # another cap alone goes on silently, unless nothing is left to train
        capped = {"max_steps": (saved["max_steps"], cap)} if saved.get("max_steps", cap) != cap else {}
        if (changed or capped) and (self.epoch >= cfg.passes or self.step >= self.step_cap):  # nothing to train,
            raise UsageError(  # yet config.json and the results would name the changed options
                f"{path}: a finished run (step {self.step}) with other options than this one (checkpoint -> now: "
                f"{ {**changed, **capped} }); nothing would be trained under them: give another --out, or --resume "
                "none to train afresh with them"
            )
        if changed and ctx.is_main:
            print(f"warning: resuming {path} with changed options (checkpoint -> now): {changed}", flush=True)
        self.best = carried_best(path, self.run_dir, dict(ckpt.get("best") or self.best), copy=ctx.is_main)
        if Path(path) == self.run_dir / "last.pt":
            self.saved["last.pt"] = self.step
        if self.best.get("step") is not None and (self.run_dir / "best.pt").is_file():
            self.saved["best.pt"] = self.best["step"]
        self.meter = _Meter(ckpt.get("meter"))
        if len(ckpt["rng"]) == ctx.world_size:
            restore_rng_state(ckpt["rng"][ctx.rank])
        else:
            seed_everything(cfg.seed + ctx.rank + 7919 * self.step)
            if ctx.is_main:
                print(
                    f"warning: {path} was written by {len(ckpt['rng'])} process(es), this run has "
                    f"{ctx.world_size}: RNG streams reseeded, the batch order is re-split",
                    flush=True,
                )
        if self.batch_in_epoch > self.used_batches:
            raise UsageError(
                f"{path}: {self.batch_in_epoch} batches consumed in pass {self.epoch + 1}, but a pass "
                f"now has {self.used_batches}; resume with the batch size and process count it was "
                "written with"
            )
        if ctx.is_main:
            print(
                f"resumed from {path}: {self.epoch} pass(es) and {self.batch_in_epoch} batch(es) done, step {self.step}",
                flush=True,
            )

    def save(self, names: tuple[str, ...], metrics: Mapping[str, Any]) -> None:
        """Write the checkpoint under RUN_DIR/<name> for each name (rank 0; every rank must call: the RNG
        states of all ranks are gathered)."""
        rng_states = all_gather_objects(capture_rng_state(), self.ctx)
        if self.ctx.is_main:
            state = {
                "format_version": FORMAT_VERSION,
                "model_kind": self.model_kind,
                "model_config": self.model_config,
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(),
                "epoch": self.epoch,
                "batch_in_epoch": self.batch_in_epoch,
                "step": self.step,
                "rng": rng_states,
                "config": config_to_dict(self.cfg),
                "splits_sha256": self.splits_sha256,
                "version": code_version(),
                "metrics": {k: plain_number(v) for k, v in metrics.items()},
                "best": self.best,
                "meter": self.meter.state(),
                "world_size": self.ctx.world_size,
                "metadata": self.metadata,
            }
            # last.pt, the point a resume continues from, goes last: it records `best` as this step, so a kill
            # while best.pt is written must leave the earlier last.pt (and the earlier, intact best.pt)
            for name in sorted(names, key=lambda n: n == "last.pt"):
                atomic_save(state, self.run_dir / name)
                self.saved[name] = self.step
        barrier(self.ctx)

    def checkpoint_report(self) -> str:
        """What a failed run leaves to continue from: this run's checkpoints and their steps, or that none exists."""
        if not self.saved:
            return (
                f"no checkpoint of this run was written yet in {self.run_dir}: start again, e.g. with a lower --base-lr"
            )
        listed = ", ".join(f"{self.run_dir / name} (step {step})" for name, step in sorted(self.saved.items()))
        return f"checkpoints of this run: {listed}; --resume one of them, e.g. with a lower --base-lr"

    # ----------------------------------------------------------------------- the loop
    def _micro_step(self, batch: Any) -> dict[str, float]:
        """Forward + backward of one micro-batch (gradients synchronised only on the last of a group)."""
        cfg, ctx = self.cfg, self.ctx
        last_micro = (self.batch_in_epoch + 1) % cfg.accum_steps == 0
        with self.train_model.no_sync() if ctx.is_distributed and not last_micro else nullcontext():
            with autocast_context(self.device, self.use_amp, cfg.amp_dtype, cpu=self.use_amp):
                output = self.compute_loss(self.train_model, batch, self.device)
            if not isinstance(output, Mapping) or "loss" not in output:
                raise TypeError(f"compute_loss must return a dict with a 'loss' tensor, got {type(output).__name__}")
            values = _scalars(output)
            if not math.isfinite(values["loss"]):
                raise FloatingPointError(
                    f"loss is {values['loss']} in pass {self.epoch + 1}, step {self.step + 1} (rank {ctx.rank}); "
                    f"{self.checkpoint_report()}"
                )
            self.scaler.scale(output["loss"] / cfg.accum_steps).backward()
        self.meter.add(values)
        self.batch_in_epoch += 1
        return values

    def _optimizer_step(self) -> float | None:
        """Clip, step, schedule; returns the pre-clipping gradient norm (None without clipping)."""
        grad_norm = None
        if self.cfg.clip_grad and self.cfg.clip_grad > 0:
            self.scaler.unscale_(self.optimizer)
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.trainable, self.cfg.clip_grad))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.step += 1
        return grad_norm

    def _train_epoch(self, logger: RunLogger, bar) -> tuple[str | None, int, float]:
        """Micro-batches of the current epoch until it ends or the run must stop; returns (stop reason or None,
        samples seen by all ranks, seconds)."""
        cfg = self.cfg
        self.sampler.set_epoch(self.epoch)
        self.sampler.start_index = self.batch_in_epoch * cfg.batch_size  # skip what a resumed run consumed
        self.loader_generator.manual_seed(cfg.seed + self.epoch)
        started, samples, group = time.monotonic(), 0, []
        for batch in self.loader:
            if self.batch_in_epoch >= self.used_batches:
                break
            group.append(self._micro_step(batch))
            samples += cfg.batch_size * self.ctx.world_size
            if self.batch_in_epoch % cfg.accum_steps:
                continue
            lr = self.optimizer.param_groups[0]["lr"]
            grad_norm = self._optimizer_step()
            means = {k: float(np.mean([v[k] for v in group])) for k in group[0]}
            group = []
            throughput = samples / max(1e-9, time.monotonic() - started)
            bar.update(1)
            bar.set_postfix({"loss": f"{means['loss']:.4f}", "samples_s": f"{throughput:.0f}", "pass": self.epoch + 1})
            if cfg.log_every and self.step % cfg.log_every == 0:
                logger.log_step(
                    self.step,
                    {"epoch": self.epoch + 1, **means, "lr": lr, "grad_norm": grad_norm, "samples_per_s": throughput},
                )
            if self.step >= self.step_cap:
                reason = "completed" if self.step >= self.total_steps else "max_steps"
                return reason, samples, time.monotonic() - started
            if self.stop.name is not None and self.batch_in_epoch < self.used_batches:  # Ctrl-C, SIGTERM: saved
                return "interrupted", samples, time.monotonic() - started  # by `fit` (at a pass's end: as usual)
            if self.deadline is not None:
                out_of_time = time.monotonic() > self.deadline
                if broadcast_object(out_of_time, self.ctx):  # every rank stops at the same step
                    return "max_minutes", samples, time.monotonic() - started
            mid_epoch = self.batch_in_epoch < self.used_batches  # (the epoch's end saves anyway)
            if cfg.save_every_steps and self.step % cfg.save_every_steps == 0 and mid_epoch:
                self.save(("last.pt",), {})
        return None, samples, time.monotonic() - started

    def _end_epoch(self, samples: int, seconds: float) -> tuple[dict[str, Any], bool]:
        """Epoch record (losses averaged over all ranks and the whole epoch, monitor metrics) and whether the
        monitored metric improved."""
        means = self.meter.global_means(self.ctx)
        metrics: dict[str, Any] = {}
        if self.has_monitor:
            if self.ctx.is_main:
                with preserved_rng():
                    metrics = dict(self.monitor(self.model, self.device))
            metrics = broadcast_object(metrics, self.ctx)
        record = {
            "epoch": self.epoch + 1,
            "step": self.step,
            "partial": self.batch_in_epoch < self.used_batches,
            **means,
            "lr": self.optimizer.param_groups[0]["lr"],
            "samples_per_s": samples / max(1e-9, seconds),
            "epoch_time_s": seconds,
            "wall_time_s": time.monotonic() - self.wall_start,
            **metrics,
        }
        if self.device.type == "cuda":
            record["max_memory_gb"] = torch.cuda.max_memory_allocated(self.device) / 2**30
        best, value = self.best, record.get(self.best["metric"])
        improved = improves(value, best["value"], best["mode"])
        if improved:
            best.update(value=float(value), epoch=self.epoch + 1, step=self.step)
        elif (value is None or not math.isfinite(value)) and self.ctx.is_main:
            what = "missing" if value is None else f"not finite ({value})"
            print(
                f"warning: monitor metric {best['metric']!r} {what} after pass {self.epoch + 1}; best.pt not updated",
                flush=True,
            )
        return record, improved

    def _train_passes(self, stop_reason: str | None, logger: RunLogger, bar) -> dict[str, Any]:
        """The training loop of `fit`: passes until the budget ends; returns the last pass's record with the
        reason under "stopped". A stop request (`StopRequest`) saves last.pt and raises `Interrupted`."""
        cfg, ctx = self.cfg, self.ctx
        record: dict[str, Any] = {}
        while stop_reason is None:
            stop_reason, samples, seconds = self._train_epoch(logger, bar)
            if stop_reason == "interrupted":
                self.save(("last.pt",), {})
                self._interrupted(bar, logger, f"at step {self.step}, in pass {self.epoch + 1}")
            record, improved = self._end_epoch(samples, seconds)
            logger.log_epoch(record)
            if ctx.is_main:
                bar.write(
                    f"pass {self.epoch + 1}/{cfg.passes} "
                    + " ".join(
                        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                        for k, v in record.items()
                        if k != "epoch"
                    )
                )
            if self.batch_in_epoch >= self.used_batches:  # the epoch is complete
                self.epoch, self.batch_in_epoch, self.meter = self.epoch + 1, 0, _Meter()
                if stop_reason is None and self.epoch >= cfg.passes:
                    stop_reason = "completed"
            self.save(("last.pt", "best.pt") if improved else ("last.pt",), record)
            if self.stop.name is not None and stop_reason is None:  # signalled during the pass's end
                self._interrupted(bar, logger, f"at the end of pass {self.epoch}, step {self.step}")
        return {**record, "stopped": stop_reason}

    def _interrupted(self, bar, logger: RunLogger, where: str) -> None:
        bar.close()
        logger.close()
        raise Interrupted(
            f"{self.stop.name} {where}: saved {self.run_dir / 'last.pt'}; the command again with --resume auto (the "
            "default) goes on from there"
        )

    def fit(self) -> dict[str, Any]:
        cfg, ctx = self.cfg, self.ctx
        if ctx.is_main:
            print(
                f"parameters: {format_count(self.n_parameters)} total, {format_count(self.n_trainable)} trainable",
                flush=True,
            )
        resume_path, checkpoint = read_resume_checkpoint(cfg.resume, self.run_dir, self.model_kind, cfg)
        if resume_path is not None:
            self.resume(resume_path, checkpoint)
            try:  # the logs are rewound below: unreadable ones stop the run before it changes anything (every
                check_run_logs(self.run_dir)  # rank reads them, so all stop together)
            except ValueError as err:
                raise UsageError(f"{err}; or start afresh with --resume none") from None
        del checkpoint
        if resume_path and self.step >= self.step_cap and (earlier := finished_summary(self.run_dir)):
            return earlier  # a finished run rerun as it was: nothing to train, and its record stays as it is
        if ctx.is_main:  # training really starts: the inputs were checked (utils/config.py, config.json rule)
            derived = run_derived(cfg, ctx)
            if self.budget_given:
                derived["time_budget_min"] = max(0.0, self.deadline - self.wall_start) / 60
            save_config(cfg, self.run_dir / "config.json", derived=derived, keep_previous=True)
        if ctx.is_main:  # no earlier finish's results stay beside the model trained now (afresh: nor its weights)
            clear_run_results(self.run_dir, checkpoints=resume_path is None)
        if resume_path is None and self.initial_best is not None:  # the starting weights are best.pt until beaten
            value = float(self.initial_best[self.best["metric"]])
            if math.isfinite(value):
                self.best.update(value=value, epoch=0, step=0)
                self.save(("best.pt",), self.initial_best)
        logger = RunLogger(self.run_dir, enabled=ctx.is_main, tensorboard=cfg.tensorboard, fresh=resume_path is None)
        if resume_path is not None:
            logger.rewind(self.step)
        self.train_model.train()
        bar = progress_bar(
            self.step_cap, enabled=ctx.is_main and cfg.progress, desc=f"train {self.model_kind}", initial=self.step
        )
        stop_reason = (
            "completed"
            if self.epoch >= cfg.passes or self.step >= self.total_steps
            else "max_steps"
            if self.step >= self.step_cap
            else None
        )
        with self.stop if ctx.world_size == 1 else nullcontext():
            record = self._train_passes(stop_reason, logger, bar)
        stop_reason = record.pop("stopped")
        bar.close()
        summary = {
            "stopped": stop_reason,
            "epochs_completed": self.epoch,
            "step": self.step,
            "total_steps": self.total_steps,
            "steps_per_epoch": self.steps_per_epoch,
            "effective_batch_size": self.effective_batch,
            "lr": self.lr,
            "warmup_steps": self.warmup,
            "parameters": self.n_parameters,
            "trainable_parameters": self.n_trainable,
            "best": self.best,
            "last_checkpoint": str(self.run_dir / "last.pt"),
            "best_checkpoint": str(self.run_dir / "best.pt") if self.best["value"] is not None else None,
            "wall_time_s": time.monotonic() - self.wall_start,
            "final": record,
        }
        logger.log_summary(summary)
        logger.close()
        return summary


def fit(cfg: Config, model: nn.Module, train_set: Dataset, **options: Any) -> dict[str, Any]:
    """Train `model` on `train_set` with the options of `cfg` (utils/config.py); returns the run summary.

    Keyword options (see `Trainer`): `ctx` (from `setup_run`), `model_kind` + `model_config` (stored so the model
    can be rebuilt from a checkpoint alone), `compute_loss`, `monitor`, `monitor_metric`, `monitor_mode`,
    `collate_fn`, `metadata` (modality, channels, ... stored as is), `initial_best` (metrics of the starting
    weights, e.g. after a warm-up phase: on a fresh start they are saved as best.pt at epoch 0, and an epoch
    replaces them only if its `monitor_metric` is better), `deadline` (the `time.monotonic()` at which training
    stops cleanly, for a phase of a longer run whose budget was fixed when that run started; default:
    `cfg.max_minutes` from now; config.json records a given one as `_derived.time_budget_min`).

    `monitor(model, device) -> {name: value}` runs on rank 0 after every pass (and when a run stops early), on
    the unwrapped model, without disturbing the training RNG streams (other ranks may pass None); best.pt follows
    `monitor_metric` (`monitor_mode` "max" or "min"), or the pass's mean training loss without a monitor.
    Resumes from `cfg.resume` ("auto": RUN_DIR/last.pt when present).
    """
    return Trainer(cfg, model, train_set, **options).fit()
