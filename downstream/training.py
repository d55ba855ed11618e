"""Training and model selection of a downstream model (docs/training.md 4.5): class weights, the
class-weighted cross-entropy, `val` scores after every pass (`SelectionMonitor`, the engine's monitor) and
`fit_and_select`, the shared engine (`utils.engine.fit`) with best.pt selected by `val_<--select-metric>`;
`fit_logistic_and_select`, the linear probe's logistic head (`downstream.logistic`) selected the same way.
`test` is never used here.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from dataset.constants import TASKS
from downstream.data import FeatureDataset
from downstream.logistic import PenaltyFit, fit_logistic_head, selection_note
from downstream.options import SELECT_METRICS
from models.heads import MLPHead
from models.loading import MLP_HEAD
from utils.ahi import EVENT_FAMILIES, event_calibration
from utils.checkpoint import save_model_checkpoint, sha256_file
from utils.config import UsageError, config_to_dict, save_config
from utils.distributed import DistContext
from utils.engine import evaluating, fit, run_derived
from utils.metrics import classification_metrics
from utils.resume import clear_run_results
from utils.run_logging import RunLogger


def class_weights(counts: Sequence[int], mode: str) -> torch.Tensor | None:
    """Cross-entropy weights from training label counts (C,): balanced = N / (C x n_c); 1 for absent classes."""
    if mode == "none":
        return None
    counts = np.asarray(counts, dtype=np.float64)
    weights = np.where(counts > 0, counts.sum() / (len(counts) * np.maximum(counts, 1)), 1.0)
    return torch.tensor(weights, dtype=torch.float32)  # (C,)


class ClassificationLoss:
    """`compute_loss` for the engine: class-weighted cross-entropy; labels -1 are ignored.

    The model's input is `batch[input_key]` (cached features) or {channel: batch[channel]} (signals), and with
    `valid_key` also `valid=batch[valid_key]` (the real positions of padded windows); logits (..., C) are matched
    with labels of the same leading shape.
    """

    def __init__(
        self,
        weights: torch.Tensor | None,
        channels: Sequence[str] = (),
        input_key: str | None = None,
        valid_key: str | None = None,
    ):
        self.weights, self.channels, self.input_key, self.valid_key = weights, list(channels), input_key, valid_key

    def inputs(self, batch: Mapping[str, Any], device: torch.device) -> Any:
        if self.input_key is not None:
            return batch[self.input_key].to(device, non_blocking=True)  # (B, D) cached representations
        return {ch: batch[ch].to(device, non_blocking=True) for ch in self.channels}  # (B, [T,] 3000) at 100 Hz

    def __call__(self, model: nn.Module, batch: Mapping[str, Any], device: torch.device) -> dict[str, torch.Tensor]:
        extra = {} if self.valid_key is None else {"valid": batch[self.valid_key].to(device, non_blocking=True)}
        logits = model(self.inputs(batch, device), **extra).float()  # (B, [T,] C)
        labels = batch["label"].to(device, non_blocking=True).reshape(-1)  # (B [* T],) -1 = ignore
        flat = logits.reshape(labels.shape[0], -1)
        weight = None if self.weights is None else self.weights.to(device)
        loss = F.cross_entropy(flat, labels, weight=weight, ignore_index=-1)
        scored = labels >= 0
        accuracy = (flat.argmax(dim=1)[scored] == labels[scored]).float().mean()
        return {"loss": loss, "train_accuracy": accuracy.detach()}


def selection_scores(labels: np.ndarray, probabilities: np.ndarray, task: str) -> dict[str, float]:
    """`val_*` metrics of labelled epochs (labels -1 dropped): kappa, macro_f1, accuracy, loss (mean NLL),
    and auroc for binary tasks."""
    keep = labels >= 0
    labels, probabilities = labels[keep], probabilities[keep]
    if labels.size == 0:
        return {"val_n": 0}
    n_classes = TASKS[task]
    binary = n_classes == 2
    metrics = classification_metrics(labels, probabilities.argmax(axis=1), n_classes, probabilities if binary else None)
    nll = -np.log(np.clip(probabilities[np.arange(labels.size), labels], 1e-12, None)).mean()
    scores = {
        "val_n": int(labels.size),
        "val_kappa": metrics["kappa"],
        "val_macro_f1": metrics["macro_f1"],
        "val_accuracy": metrics["accuracy"],
        "val_loss": float(nll),
    }
    if binary:
        scores["val_auroc"] = metrics["auroc"]
    return scores


class SelectionMonitor:
    """The engine's monitor: `predict(model, device) -> (labels (N,), probabilities (N, C))` on `val`, run in
    eval mode without gradients, scored by `selection_scores`."""

    def __init__(self, predict: Callable[[nn.Module, torch.device], tuple[np.ndarray, np.ndarray]], task: str):
        self.predict, self.task = predict, task

    def __call__(self, model: nn.Module, device: torch.device) -> dict[str, float]:
        with evaluating(model), torch.no_grad():
            labels, probabilities = self.predict(model, device)
        return selection_scores(np.asarray(labels), np.asarray(probabilities), self.task)


def with_calibration(cfg: argparse.Namespace, metadata: Mapping[str, Any]) -> dict[str, Any]:
    """`metadata` with the run's `utils.ahi.event_calibration` (fitted on `val` labels) for apnea and hypopnea: the
    AHI scale travels with the model, for predict.py."""
    if cfg.task in EVENT_FAMILIES and "event_calibration" not in metadata:
        return {**metadata, "event_calibration": event_calibration(cfg.data, cfg.task, cfg.label_rule)}
    return dict(metadata)


def fit_and_select(
    cfg: argparse.Namespace,
    ctx: DistContext,
    model: nn.Module,
    train_set: Dataset,
    *,
    model_kind: str,
    loss: ClassificationLoss,
    monitor: SelectionMonitor | None,
    metadata: Mapping[str, Any],
    initial_best: Mapping[str, Any] | None = None,
    deadline: float | None = None,
) -> dict[str, Any]:
    """`utils.engine.fit` with best.pt selected by `val_<--select-metric>`; `initial_best`: the `val_*` metrics of
    the starting weights, which an epoch must beat to replace them as best.pt; `deadline`: the engine's stop time
    for a phase whose budget was fixed when the run started (default: --max-minutes from now). Apnea and hypopnea
    runs add their `utils.ahi.event_calibration` (fitted on `val` labels) to the checkpoints' metadata: predict.py's
    AHI scale."""
    train_size = len(train_set)
    if train_size < 2:
        raise UsageError(
            f"{train_size} training sample(s); the head's BatchNorm needs at least 2 "
            "(raise --label-fraction or --train-subjects)"
        )
    metadata = with_calibration(cfg, metadata)
    return fit(
        cfg,
        model,
        train_set,
        ctx=ctx,
        model_kind=model_kind,
        model_config=model.to_config(),
        compute_loss=loss,
        monitor=monitor,
        monitor_metric=f"val_{cfg.select_metric}",
        monitor_mode=SELECT_METRICS[cfg.select_metric],
        metadata=metadata,
        initial_best=initial_best,
        deadline=deadline,
    )


def fit_logistic_and_select(
    cfg: argparse.Namespace,
    ctx: DistContext,
    head: MLPHead,
    train_data: FeatureDataset,
    *,
    weights: torch.Tensor | None,
    monitor: SelectionMonitor,
    metadata: Mapping[str, Any],
) -> dict[str, Any]:
    """The linear probe's `--head logistic` (`downstream.logistic`): one head per penalty of `--l2-grid`, fitted
    on the cached train vectors, the best on `val_<--select-metric>` written as best.pt and last.pt (kind
    `mlp_head`), one log.jsonl line per penalty; returns a summary as `fit_and_select` does. Single process."""
    out = Path(cfg.out)
    derived = {k: v for k, v in run_derived(cfg, ctx).items() if k not in ("effective_batch_size", "lr_scaled")}
    save_config(cfg, out / "config.json", derived=derived, keep_previous=True)  # no optimizer: no batch nor lr
    clear_run_results(out, checkpoints=True)
    logger = RunLogger(out, fresh=True)
    metric, mode = f"val_{cfg.select_metric}", SELECT_METRICS[cfg.select_metric]
    started = time.monotonic()

    def report(fit: PenaltyFit) -> None:
        record = {
            "l2": fit.l2,
            "objective": fit.objective,
            "lbfgs_iterations": fit.iterations,
            "converged": fit.converged,
            **fit.scores,
        }
        logger.log_epoch({"epoch": len(logged) + 1, "step": len(logged) + 1, "partial": False, **record})
        logged.append(record)
        shown = " ".join(f"{k}={v:.4g}" for k, v in fit.scores.items() if isinstance(v, float))
        print(f"l2 {fit.l2:g}: {shown} ({fit.iterations} L-BFGS iterations)", flush=True)
        if not fit.converged:
            print(f"warning: l2 {fit.l2:g}: L-BFGS stopped at its {fit.iterations}-iteration cap, not converged")

    logged: list[dict[str, Any]] = []
    head.to(ctx.device)  # scored on val where the vectors go (the fit itself runs on the CPU)
    metadata = with_calibration(cfg, metadata)
    best, fits = fit_logistic_head(
        head,
        train_data.features,
        train_data.labels,
        weights,
        lambda model: monitor(model, ctx.device),
        metric,
        mode,
        cfg.l2_grid,
        report,
    )
    note = selection_note(best, fits, metric)
    if note is not None:
        print(f"warning: {note}", flush=True)
    state = {k: v.cpu() for k, v in head.state_dict().items()}
    chosen = {**best.scores, "l2": best.l2}
    for name in ("best.pt", "last.pt"):  # last.pt last, as the engine writes them
        save_model_checkpoint(
            out / name,
            MLP_HEAD,
            head.to_config(),
            state,
            metadata={**metadata, "l2": best.l2},
            splits_sha256=sha256_file(Path(cfg.data) / "splits.json"),
            metrics=chosen,
            config=config_to_dict(cfg),
            step=len(fits),
            epoch=len(fits),
        )
    summary = {
        "stopped": "completed",
        "epochs_completed": len(fits),
        "step": len(fits),
        "head": "logistic",
        "l2": best.l2,
        "best": {"metric": metric, "mode": mode, "value": best.scores.get(metric), "l2": best.l2},
        "last_checkpoint": str(out / "last.pt"),
        "best_checkpoint": str(out / "best.pt"),
        "wall_time_s": time.monotonic() - started,
    }
    logger.log_summary(summary)
    logger.close()
    return summary
