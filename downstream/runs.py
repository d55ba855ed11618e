"""A downstream run from its training data to its outputs, and its reuse (docs/evaluation.md 5.6).

Every downstream script follows the same path:

1. `downstream.options.parse_downstream` (the shared engine options of utils/config.py + the task and backbone
   groups). Bad input (options, data folder, checkpoints, --out) raises UsageError before anything is written;
   each script's `main` reports it as one `error:` line, exit status 2 (`utils.config.reported_errors`).
2. `downstream.leakage.assert_no_test_leakage` on DST/splits.json at start, and again on the recordings actually
   used for training and model selection: a subject of `test` there raises `LeakageError`.
3. Training data = the `train` split at `--label-fraction` of its labelled epochs (seeded draw without
   replacement, `dataset.datasets.EpochDataset`) and/or the first `--train-subjects` subjects of a seeded
   permutation (`downstream.data`). Model selection = `--select-metric` on `val` after every pass, training in
   the shared engine (`downstream.training.fit_and_select`).
4. `finish_run`: the checkpoint selected on `val` (best.pt; last.pt if no epoch had a finite `val` score) is
   evaluated ONCE on `test`, where `SequenceDataset(tiling=True)` predicts every epoch of every test recording
   exactly once (`downstream.predictions`); `report` writes the outputs (`downstream.results.write_run_report`).

`load_downstream_run`: the trained model of a run directory, ready for inference (`DownstreamModel`).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from downstream.backbone import BackboneSource, file_sha256, shared_encoder
from downstream.results import METHOD_LABELS, Predictions, attach_context, evaluate_predictions, write_run_report
from models.heads import EpochClassifier, build_downstream_model
from models.loading import EPOCH_CLASSIFIER, MLP_HEAD, TRAINING_KEYS, load_state_checked, read_checkpoint
from utils.ahi import EVENT_FAMILIES, event_calibration
from utils.checkpoint import load_checkpoint
from utils.distributed import DistContext
from utils.engine import evaluating
from utils.resume import publish_run, run_folder


def train_summary(counts: Sequence[int], recordings: Sequence[str], subjects: Sequence[str]) -> dict[str, Any]:
    counts = [int(c) for c in counts]
    return {
        "n_labelled": int(sum(counts)),
        "class_counts": counts,
        "n_recordings": len(recordings),
        "n_subjects": len(subjects),
        "subjects": sorted(subjects),
    }


# what the parser did to the signals that a model trained on them expects of a new night (parser_config.json)
PROCESSING_KEYS = (
    "bands",
    "filter_order",
    "resample_padtype",
    "margin_s",
    "flat_iqr_uv",
    "flat_levels",
    "clip_fraction",
)


def cohort_processing(data_dir: str | Path) -> dict[str, Any] | None:
    """How the parser processed the cohort at `data_dir` (`PROCESSING_KEYS` of its parser_config.json): stored
    with every downstream run, so that `predict.py` processes a new night the same way. None when not recorded."""
    try:
        config = json.loads((Path(data_dir) / "parser_config.json").read_text())["config"]
        return {k: config[k] for k in PROCESSING_KEYS if k in config}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def checkpoint_metadata(
    cfg: argparse.Namespace, channels: Sequence[str], source: BackboneSource, **extra: Any
) -> dict[str, Any]:
    """What a downstream checkpoint records beside its weights, so that `load_downstream_run` and predict.py can
    use it alone: task, channels, method, the backbone it was trained on, how its cohort was processed
    (`cohort_processing`), and a script's own `extra` entries."""
    return {
        "task": cfg.task,
        "channels": list(channels),
        "backbone": source.provenance,
        "processing": cohort_processing(cfg.data),
        "method": cfg.method,
        **extra,
    }


def run_info(
    cfg: argparse.Namespace, channels: Sequence[str], train: Mapping[str, Any], backbone: BackboneSource | None = None
) -> dict[str, Any]:
    """The run description stored in metrics.json (method, task, data, labels, backbone)."""
    return {
        "method": cfg.method,
        "method_label": METHOD_LABELS.get(cfg.method, cfg.method),
        "task": cfg.task,
        "data": str(Path(cfg.data).resolve()),
        "label_fraction": cfg.label_fraction,
        "train_subjects": cfg.train_subjects,
        "label_rule": cfg.label_rule,
        "seed": cfg.seed,
        "channels": list(channels),
        "processing": cohort_processing(cfg.data),
        "init": getattr(cfg, "init", "n/a"),
        "backbone": backbone.provenance if backbone else None,
        "backbone_name": backbone.name if backbone else "",
        # neighbouring epochs on each side the classifier reads (None: a method without the option)
        "neighbour_epochs": getattr(cfg, "neighbour_epochs", None),
        # temporal models: "bidirectional" or "forward" Mamba2 context (None: a method without one)
        "context_direction": getattr(cfg, "context_direction", None),
        "train": dict(train),
    }


def finish_run(
    cfg: argparse.Namespace,
    ctx: DistContext,
    model: nn.Module,
    summary: Mapping[str, Any],
    predict_test: Callable[[nn.Module, torch.device], Predictions],
    info: Mapping[str, Any],
) -> dict[str, Any] | None:
    """Load the checkpoint selected on `val`, predict `test` once, write the report, and publish a run trained
    beside an earlier one (`utils.resume.publish_run`) (main process only)."""
    if not ctx.is_main:
        return None
    out = Path(cfg.out)
    chosen = out / "best.pt" if summary.get("best_checkpoint") and (out / "best.pt").is_file() else out / "last.pt"
    if chosen.name != "best.pt":
        print(f"warning: no epoch had a finite val_{cfg.select_metric}; evaluating the last checkpoint", flush=True)
    checkpoint = load_checkpoint(chosen)
    model.load_state_dict(checkpoint["model"])
    model.to(ctx.device)
    with evaluating(model), torch.no_grad():
        predictions = predict_test(model, ctx.device)
    predictions = attach_context(predictions, cfg.data)
    selected = checkpoint.get("metrics") or {}
    selection = {
        "metric": f"val_{cfg.select_metric}",
        "value": selected.get(f"val_{cfg.select_metric}"),
        "checkpoint": chosen.name,
        "epoch": checkpoint.get("epoch"),
        "step": checkpoint.get("step"),
        "val": {k: v for k, v in selected.items() if k.startswith("val_")},
    }
    calibration = (checkpoint.get("metadata") or {}).get("event_calibration")  # written by `fit_and_select`
    # how training ended ("max_minutes": cut by the wall clock, so its numbers depend on the machine's speed)
    training = {k: summary.get(k) for k in ("stopped", "step", "epochs_completed")}
    if summary.get("context_phase_stopped"):  # fine-tuning's first phase, cut by the clock too
        training["context_phase_stopped"] = summary["context_phase_stopped"]
    record = report(cfg, predictions, {**info, "selection": selection, "training": training}, calibration)
    publish_run(out)  # a run trained beside an earlier one replaces it now, whole
    return record


def report(
    cfg: argparse.Namespace,
    predictions: Predictions,
    info: Mapping[str, Any],
    calibration: Mapping[str, Any] | None = None,
    out_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Evaluate test predictions and write every output of the run (shared with the feature baseline) into
    `out_dir` (default `cfg.out`; the feature baseline stages its folder). Event tasks: `calibration` is the
    run's `utils.ahi.event_calibration` (fitted here when not given), recorded for the AHI of evaluate.py."""
    metrics = {**info, **evaluate_predictions(predictions, cfg.task, cfg.n_boot, cfg.seed)}
    if cfg.task in EVENT_FAMILIES:
        metrics["event_calibration"] = dict(calibration or event_calibration(cfg.data, cfg.task, cfg.label_rule))
    record = write_run_report(out_dir or cfg.out, predictions, metrics, hypnograms=cfg.hypnograms)
    test = record["test"]
    headline = " ".join(
        f"{k} {test['pooled'].get(k):.3f}"
        for k in ("kappa", "macro_f1", "accuracy", "auroc")
        if isinstance(test["pooled"].get(k), float)
    )
    print(
        f"test ({test['n_subjects']} subjects, {test['n_epochs']} epochs): {headline} -> "
        f"{run_folder(cfg.out)}/metrics.json",
        flush=True,
    )
    return record


@dataclass
class DownstreamModel:
    """A trained downstream model ready for inference (eval mode).

    `model`: kind "epoch_classifier": {channel: (N, 3000)} → logits (N, C) (a probe whose head reads
    neighbouring epochs classifies a recording's encoder vectors instead: `night_inference.classify_vectors`);
    kind "temporal_classifier":
    {channel: (B, T, 3000)} windows of T = `epochs_per_window` consecutive epochs → logits (B, T, C).
    """

    model: nn.Module
    kind: str
    task: str
    channels: list[str]
    epochs_per_window: int | None
    checkpoint: str
    event_scale: float = 1.0  # event tasks: scored events per counted event (checkpoint `event_calibration`)
    eval_stride: int | None = None  # temporal models: epochs between evaluation windows; None for per-epoch models
    processing: dict[str, Any] | None = None  # how its cohort was processed (`cohort_processing`); None: not recorded


def load_downstream_run(run: str | Path, map_location: str | torch.device = "cpu") -> DownstreamModel:
    """The model of a linear-probing or fine-tuning run directory (best.pt, else last.pt) or checkpoint file.

    A linear probe's checkpoint holds only its head: the frozen backbone is loaded from the file named in the
    checkpoint's metadata, whose SHA-256 must still match (ValueError otherwise), once per backbone file and
    channels for all the probes loaded in this process (`shared_encoder`)."""
    checkpoint = read_checkpoint(run, map_location, required=TRAINING_KEYS)  # a run directory: best.pt, else last.pt
    path = Path(checkpoint["path"])
    kind, metadata = checkpoint["model_kind"], checkpoint.get("metadata") or {}
    model = build_downstream_model(kind, checkpoint["model_config"])
    load_state_checked(model, checkpoint["model"], str(path))
    if kind == MLP_HEAD:
        backbone = metadata.get("backbone") or {}
        if (
            not backbone.get("path")
            or not Path(backbone["path"]).is_file()
            or file_sha256(backbone["path"]) != backbone.get("sha256")
        ):
            raise ValueError(
                f"{path}: the probe's backbone {backbone.get('path')} is missing or changed since training "
                f"(sha256 {backbone.get('sha256')})"
            )
        encoder = shared_encoder(backbone["path"], metadata["channels"], map_location, metadata.get("pooling", "mean"))
        model, kind = EpochClassifier(encoder, model), EPOCH_CLASSIFIER
    calibration = metadata.get("event_calibration") or {}  # the AHI scale of an event run (`fit_and_select`)
    metrics_path = path.parent / "metrics.json"  # runs trained before their checkpoint held it: the run's record
    if not calibration and metadata["task"] in EVENT_FAMILIES and metrics_path.is_file():
        calibration = json.loads(metrics_path.read_text()).get("event_calibration") or {}
    return DownstreamModel(
        model.eval(),
        kind,
        metadata["task"],
        list(metadata["channels"]),
        metadata.get("epochs_per_window"),
        str(path),
        float(calibration.get("scale", 1.0)),
        # runs trained before the stride was recorded were evaluated with disjoint windows
        metadata.get("eval_stride", metadata.get("epochs_per_window")),
        metadata.get("processing"),
    )
