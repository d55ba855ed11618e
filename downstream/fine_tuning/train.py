"""Fine-tuning with temporal context (docs/models.md §3.3; docs/evaluation.md §5): LoRA on the encoders + residual Mamba2 over 20 epochs.

    python downstream/fine_tuning/train.py --data DST --backbone RUN --task sleep_stage|apnea|hypopnea \
        [--label-fraction 0.01|0.05|1.0] [--train-subjects N] [--epochs-per-window 20] [--stride 10] \
        [--eval-stride 10] ...

The model (`models.heads.TemporalClassifier`) reads windows of T = 20 consecutive 30-s epochs of ONE recording
(`dataset.datasets.SequenceDataset`; windows never cross recordings): each epoch → backbone (new LoRA rank 4,
alpha 8 on the encoders' attention output projections; the pretraining LoRA of a SynthSleepNet is merged
first; a SynthSleepNet's adapters and fusion transformer train unless --no-tune-fusion) → pooled vector v_t →
s = LayerNorm(v) → y = s + Mamba2(s) + R(Mamba2_b(R(s))) (R: time reversed; --context-direction forward keeps the
published causal scan alone) → shared MLP head at every position; class-weighted cross-entropy over the
labelled positions. `--init random` trains the same architecture from random weights, everything trainable
(supervised-from-scratch baseline).

Training windows start every --stride epochs (default T / 2, at most T), plus one aligned to the recording end.
Labels: exactly the epochs the linear probe would use (the --label-fraction / --train-subjects draw of `EpochDataset`, same seed);
other positions are unlabelled (-1, ignored), and windows without any selected epoch are dropped. So at 1 %
labels the model still sees the unlabelled neighbours of each labelled epoch as context.

Evaluation (`val` after every pass over the training windows for model selection, `test` once with best.pt): deterministic tiling,
`SequenceDataset(tiling=True)`: windows every --eval-stride epochs (default T / 2) and a last window aligned to the
recording end; every epoch is predicted exactly once, by the window where it is most central, so that away from
the recording ends it sees about T / 4 epochs on each side, 5 in windows of 20 (disjoint windows, --eval-stride
T, predict an epoch at a window's edge from one side only). A resumed run keeps the stride it was evaluated with.
Recordings shorter than T are zero-padded at the end; the model is given the real positions, so padding never
influences them (the backward scan reverses only the real ones). Outputs: as the linear probe (see its --help).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from dataset.constants import TASKS
from dataset.datasets import EpochDataset, SequenceDataset
from downstream.backbone import resolve_backbone
from downstream.cache import VectorStore, epoch_labels, labels_at, predict_tiles
from downstream.data import (
    check_two_classes,
    encode_store,
    epoch_dataset,
    eval_batch_size,
    fitted_batch,
    val_split,
    window_dataset,
)
from downstream.leakage import assert_no_test_leakage
from downstream.options import add_pooling_args, build_downstream_parser, check_pooling, parse_downstream
from downstream.predictions import predict_windows
from downstream.results import FINE_TUNE, SCRATCH_FINETUNE
from downstream.runs import checkpoint_metadata, finish_run, run_info, train_summary
from downstream.training import ClassificationLoss, SelectionMonitor, class_weights, fit_and_select
from models.heads import ContextHead, EpochEncoder, MLPHead, TemporalClassifier
from models.loading import CONTEXT_HEAD, TEMPORAL_CLASSIFIER
from models.lora import LoraSettings
from models.mamba import DIRECTIONS
from utils.batchnorm import debias_batchnorm
from utils.checkpoint import load_checkpoint
from utils.config import (
    FRESH_START,
    Config,
    UsageError,
    mark_required,
    non_negative_int,
    positive_float,
    positive_int,
    probability,
    reported_errors,
    script_prog,
    unit_interval,
)
from utils.distributed import cleanup
from utils.engine import autocast_context, setup_run
from utils.resume import PHASE_FOLDERS, check_resumed_backbone, read_resume_checkpoint, training_folder

# base_lr is the base rate of the engine's rule base_lr x effective_batch / 256: 3.2e-3 x 8 windows / 256 = 1e-4
DEFAULTS: dict[str, Any] = {
    "passes": 10,
    "batch_size": 8,
    "base_lr": 3.2e-3,
    "weight_decay": 0.01,
    "warmup_passes": 1.0,
}


def add_fine_tuning_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    group = parser.add_argument_group("fine-tuning (windows, LoRA, Mamba2 temporal context)")
    group.add_argument(
        "--epochs-per-window", type=positive_int, default=20, help="T: consecutive 30-s epochs per window"
    )
    group.add_argument(
        "--stride",
        type=positive_int,
        default=None,
        help="epochs between training window starts, at most the window (default: half the window)",
    )
    group.add_argument(
        "--eval-stride",
        type=positive_int,
        default=None,
        help="epochs between evaluation window starts (val, test, predict.py), at most the window; each epoch is "
        "predicted by the window where it is most central (default: half the window; the window itself: "
        "disjoint windows, half the evaluation cost)",
    )
    group.add_argument(
        "--lora-rank",
        type=positive_int,
        default=4,
        help="rank r of the new LoRA adapters on the encoders' attention output projections",
    )
    group.add_argument(
        "--lora-alpha",
        type=positive_float,
        default=8.0,
        help="LoRA scale numerator: the update B·A is scaled by alpha / sqrt(r) (rsLoRA) or alpha / r",
    )
    group.add_argument("--lora-dropout", type=probability, default=0.05, help="dropout on the LoRA adapters' input")
    group.add_argument(
        "--lora-rslora",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="scale alpha / sqrt(rank) (as in SynthSleepNet pretraining) instead of alpha / rank",
    )
    group.add_argument(
        "--tune-fusion",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="SynthSleepNet: train its adapters and fusion transformer too",
    )
    group.add_argument("--context-norm", choices=("layer", "batch"), default="layer", help="norm before the Mamba2")
    group.add_argument(
        "--context-direction",
        choices=DIRECTIONS,
        default="bidirectional",
        help="bidirectional: a second Mamba2 scans each window backwards, so every epoch sees the epochs after it "
        "too (docs/models.md §3.3); forward: the published causal context alone",
    )
    group.add_argument("--mamba-d-state", type=positive_int, default=16, help="Mamba2 state size per head (N)")
    group.add_argument(
        "--mamba-d-conv", type=positive_int, default=4, help="Mamba2 causal depthwise convolution width, in 30-s epochs"
    )
    group.add_argument(
        "--mamba-expand",
        type=positive_int,
        default=2,
        help="Mamba2 inner width as a multiple of the backbone's vector width",
    )
    group.add_argument(
        "--mamba-headdim",
        type=positive_int,
        default=64,
        help="Mamba2 head width; must divide expand x the backbone's vector width",
    )
    group.add_argument(
        "--mamba-backend",
        choices=("auto", "torch", "fused"),
        default="auto",
        help="auto: mamba-ssm's fused kernels on CUDA when installed, else pure PyTorch",
    )
    phase = parser.add_argument_group("phase 1: context and head on frozen vectors (pretrained backbones)")
    phase.add_argument(
        "--context-passes",
        "--context-epochs",
        dest="context_passes",
        type=non_negative_int,
        default=30,
        help="passes over the training windows in phase 1 (0 = none): Mamba2 context + head trained "
        "on the frozen encoder's cached vectors before LoRA fine-tuning starts from them. "
        "--context-epochs: the old name, still accepted",
    )
    phase.add_argument("--context-batch-size", type=positive_int, default=32, help="phase 1 windows per batch")
    phase.add_argument(
        "--context-base-lr",
        "--context-lr",
        dest="context_base_lr",
        type=positive_float,
        default=8e-3,
        help="phase 1 base learning rate: AdamW lr = context_base_lr x effective_batch / 256 "
        "(8e-3 x 32 / 256 = 1e-3). --context-lr: the old name, still accepted",
    )
    phase.add_argument(
        "--context-budget-share",
        type=unit_interval,
        default=0.4,
        help="with --max-minutes: at most this share of the budget for phase 1; phase 2 gets the rest",
    )
    return parser


def method_of(cfg) -> str:
    return FINE_TUNE if cfg.init == "pretrained" else SCRATCH_FINETUNE


def build_fine_tuning_parser() -> argparse.ArgumentParser:
    parser = build_downstream_parser(
        "Fine-tuning over windows of consecutive epochs: backbone with new LoRA + residual Mamba2 temporal context "
        "+ MLP head at every position; or, with --init random, the same architecture from scratch. Model selection "
        "on `val`, one evaluation on `test` (every epoch exactly once).",
        DEFAULTS,
        extra=[add_fine_tuning_args, add_pooling_args],
    )
    parser.prog = script_prog(__file__)
    return mark_required(parser, "task")


# ---------------------------------------------------------------------------------------- training windows
class LabelledWindows(Dataset):
    """Training windows whose labels are kept only at the selected training epochs (-1 elsewhere).

    `selected` is the EpochDataset of the training labels (--label-fraction, --train-subjects, seed); windows
    holding none of them are dropped. Items are those of `windows` with `label` masked.
    """

    def __init__(self, windows: SequenceDataset, selected: EpochDataset):
        recordings, epochs = selected.sample_index()
        chosen = {rid: np.sort(epochs[recordings == rid]) for rid in np.unique(recordings)}
        index, masks, self.window_epochs = [], [], []
        for i, (rid, window) in enumerate(windows.window_index()):
            mask = (window >= 0) & np.isin(window, chosen.get(rid, np.zeros(0, np.int64)))  # (T,) bool
            if mask.any():
                index.append(i)
                masks.append(mask)
                self.window_epochs.append((rid, window))  # (recording, epoch numbers (T,)) of each kept window
        if not index:
            raise UsageError(
                "no training window holds a selected labelled epoch (raise --label-fraction or --train-subjects)"
            )
        self.windows, self.index, self.masks = windows, np.asarray(index), np.stack(masks)  # masks (n, T)
        self.counts = selected.class_counts()
        self.recordings, self.subjects = selected.recordings, selected.subjects

    def __len__(self) -> int:
        return int(self.index.shape[0])

    def __getitem__(self, index: int) -> dict:
        item = self.windows[int(self.index[index])]
        keep = torch.from_numpy(self.masks[index])
        item["label"] = torch.where(keep, item["label"], torch.full_like(item["label"], -1))  # (T,) -1 = ignore
        return item


class VectorWindows(Dataset):
    """The training windows of a LabelledWindows as stored frozen vectors: items {"vectors": (T, D) float32,
    "label": (T,) int64, -1 except at the selected training epochs} (phase 1; no signal is read)."""

    def __init__(self, windows: LabelledWindows, selected: EpochDataset, store: VectorStore):
        self.index = windows.window_epochs  # (recording, epoch numbers (T,)) per window
        self.masks, self.store, self.labels = windows.masks, store, epoch_labels(selected)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, index: int) -> dict:
        recording, epochs = self.index[index]
        label = np.where(self.masks[index], labels_at(self.labels, recording, epochs), -1)  # (T,)
        return {
            "vectors": self.store.windows([recording], epochs[None])[0],
            "label": torch.from_numpy(label),
            "valid": torch.from_numpy(epochs >= 0),  # (T,) False at padding
        }


def context_phase_config(cfg: Config, n_windows: int) -> Config:
    """Phase 1's own configuration, fixed before training starts (its config.json is in --out/context_phase):
    the --context-* passes, batch (clipped to the `n_windows` training windows) and base lr, no loader workers
    (stored vectors), no --max-steps cap, and `--context-budget-share` of --max-minutes. It resumes its own
    last.pt unless the run starts afresh: a --resume file is phase 2's checkpoint."""
    batch_size = cfg.context_batch_size if n_windows >= cfg.context_batch_size else max(2, n_windows)
    return cfg.replace(
        out=Path(cfg.out) / PHASE_FOLDERS[0],  # context_phase/
        resume="none" if str(cfg.resume).lower() in FRESH_START else "auto",
        passes=cfg.context_passes,
        batch_size=batch_size,
        base_lr=cfg.context_base_lr,
        workers=0,
        max_steps=None,
        max_minutes=cfg.max_minutes * cfg.context_budget_share if cfg.max_minutes else 0.0,
    )


def fine_tuning_deadline(cfg: Config, run_started: float) -> float | None:
    """When phase 2 stops (`time.monotonic()`), with both phases run: --max-minutes counts from `run_started`,
    the start of phase 1, so phase 2 gets what phase 1 left of the budget, but at least a tenth of it. None
    without --max-minutes."""
    if not cfg.max_minutes:
        return None
    return max(run_started + cfg.max_minutes * 60, time.monotonic() + 0.1 * cfg.max_minutes * 60)


def train_context_phase(
    cfg: Config,
    phase_cfg: Config,
    ctx,
    model: TemporalClassifier,
    source,
    channels: list[str],
    train_set: LabelledWindows,
    selected: EpochDataset,
    val_windows: SequenceDataset,
    weights: torch.Tensor | None,
) -> tuple[dict | None, str]:
    """Phase 1: the context and head of `model` trained on cached frozen vectors with `phase_cfg`
    (`context_phase_config`), selected on `val` in the tiling of `val_windows` (kept in --out/context_phase).
    Loads the selected weights into `model`; returns their `val_*` metrics (None if no epoch had a finite
    score) and how the phase stopped (the engine's "stopped": "max_minutes" when the clock cut it)."""
    phase_dir = Path(phase_cfg.out)  # its checkpoint first, before any vector is encoded; no --resume names it
    advice = f"it is phase 1's own checkpoint: remove {phase_dir} to train phase 1 again, or --resume none"
    read_resume_checkpoint(phase_cfg.resume, phase_dir, CONTEXT_HEAD, phase_cfg, advice=advice)
    val_recordings = val_windows.recordings
    # the model's own encoder: its new LoRA adapters start at B = 0, so in eval mode it gives exactly the frozen
    # backbone's vectors (the same ones the linear probe caches)
    store = encode_store(
        cfg,
        model.encoder.to(ctx.device),
        source,
        channels,
        sorted(set(train_set.recordings) | set(val_recordings)),
        ctx.device,
    )
    vectors = VectorWindows(train_set, selected, store)  # one item per training window, as train_set
    val_labels = epoch_labels(epoch_dataset(cfg, val_recordings, channels))
    head = ContextHead(model)  # the model's own context and head (--debias-batchnorm applied to the model)
    n_classes = TASKS[cfg.task]

    def predict_val(module, device):
        predictions = predict_tiles(
            store,
            val_recordings,
            cfg.epochs_per_window,
            lambda x, valid: module(x.to(device), valid.to(device)).float().softmax(dim=-1),
            val_labels,
            n_classes,
            stride=val_windows.tiling_stride,
        )
        return predictions.true, predictions.probabilities

    print(f"phase 1: context + head on frozen vectors, {len(vectors)} windows, {cfg.context_passes} passes", flush=True)
    monitor = SelectionMonitor(predict_val, cfg.task) if ctx.is_main else None
    summary = fit_and_select(
        phase_cfg,
        ctx,
        head,
        vectors,
        model_kind=CONTEXT_HEAD,
        loss=ClassificationLoss(weights, input_key="vectors", valid_key="valid"),
        monitor=monitor,
        metadata={"task": cfg.task, "channels": channels, "phase": "context"},
    )
    if not summary.get("best_checkpoint"):
        return None, summary["stopped"]
    checkpoint = load_checkpoint(summary["best_checkpoint"])
    head.load_state_dict(checkpoint["model"])
    return {k: v for k, v in (checkpoint.get("metrics") or {}).items() if k.startswith("val_")}, summary["stopped"]


def window_predictor(model: torch.nn.Module, device: torch.device, channels: list[str], cfg: Config):
    """`predict_batch` for `predict_windows`: {channel: (B, T, 3000)} → probabilities (B, T, C)."""

    def predict(batch) -> torch.Tensor:
        signals = {ch: batch[ch].to(device, non_blocking=True) for ch in channels}  # (B, T, 3000) each
        with autocast_context(device, cfg.amp, cfg.amp_dtype):
            return model(signals, valid=batch["valid"].to(device)).float().softmax(dim=-1)

    return predict


def main(argv: list[str] | None = None) -> int:
    """Parse `argv`, fine-tune, evaluate on test, return 0. Bad input: one `error:` line on stderr and exit status 2
    (a non-finite loss: exit status 1), raised as SystemExit; nothing is written before the inputs are checked."""
    with reported_errors():
        return run(argv)


def run(argv: list[str] | None) -> int:
    """`main` without the error reporting: input problems raise UsageError (or argparse's SystemExit)."""
    parser = build_fine_tuning_parser()
    cfg = parse_downstream(parser, argv, method_of)
    cfg = cfg.replace(out=training_folder(cfg.resume, cfg.out))  # an earlier run there stays until this one ends
    size = cfg.epochs_per_window
    if cfg.stride is not None and cfg.stride > size:  # windows with gaps would not train on the epochs there
        raise UsageError(f"--stride {cfg.stride} is longer than the window (--epochs-per-window {size})")
    stride = cfg.stride or max(1, size // 2)  # config.json keeps the option as given
    if cfg.eval_stride is not None and cfg.eval_stride > size:
        raise UsageError(f"--eval-stride {cfg.eval_stride} is longer than the window (--epochs-per-window {size})")
    eval_stride = cfg.eval_stride or max(1, size // 2)  # config.json keeps the option as given
    resume_path, resume_state = read_resume_checkpoint(cfg.resume, cfg.out, TEMPORAL_CLASSIFIER, cfg)
    if resume_state is not None:  # a selection made in one tiling is not compared with scores of another
        stored = (resume_state.get("metadata") or {}).get("eval_stride", size)  # before the option: disjoint
        if stored != eval_stride:
            raise UsageError(
                f"{resume_path}: its run was evaluated with windows every {stored} epochs, this run every "
                f"{eval_stride} (--eval-stride); give --eval-stride {stored}, another --out, or --resume none to "
                "start afresh"
            )
    assert_no_test_leakage(cfg.data)
    source = resolve_backbone(cfg, cfg.data)
    if resume_state is not None and source.state is not None:
        check_resumed_backbone(resume_path, resume_state, source.provenance.get("sha256"))
    check_pooling(cfg, source)
    channels = source.channels
    selected = epoch_dataset(cfg, "train", channels, training=True)
    train_set = LabelledWindows(
        window_dataset(cfg, "train", channels, size, tiling=False, stride=stride, training=True), selected
    )
    val_windows = window_dataset(cfg, val_split(cfg), channels, size, tiling=True, stride=eval_stride)
    test_windows = window_dataset(cfg, "test", channels, size, tiling=True, stride=eval_stride)
    assert_no_test_leakage(
        cfg.data, {"training": train_set.windows.recordings, "model selection": val_windows.recordings}
    )
    cfg = fitted_batch(cfg, len(train_set), "windows")
    n_classes, pretrained = TASKS[cfg.task], cfg.init == "pretrained"
    check_two_classes(train_set.counts)
    # phase 2's checkpoint holds the whole model phase 1 trained: resuming it, phase 1 is not run again
    phase_cfg = (
        context_phase_config(cfg, len(train_set))
        if pretrained and cfg.context_passes > 0 and resume_state is None
        else None
    )
    print(
        f"{cfg.method} | task {cfg.task} | backbone {source.name} | channels {', '.join(channels)} | train "
        f"{len(train_set)} windows of {size} epochs, {int(train_set.counts.sum())} labelled epochs of "
        f"{len(train_set.subjects)} subjects (per class {train_set.counts.tolist()}) | val "
        f"{len(val_windows.recordings)} recordings | test {len(test_windows.recordings)} recordings",
        flush=True,
    )

    ctx = setup_run(cfg)
    try:
        lora = LoraSettings(cfg.lora_rank, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_rslora)
        encoder = EpochEncoder(
            source.instantiate(),
            channels,
            mode="lora" if pretrained else "full",
            lora=lora,
            tune_fusion=cfg.tune_fusion,
            pooling=cfg.pooling,
        )
        context = {
            "norm": cfg.context_norm,
            "direction": cfg.context_direction,
            "backend": cfg.mamba_backend,
            "d_state": cfg.mamba_d_state,
            "d_conv": cfg.mamba_d_conv,
            "expand": cfg.mamba_expand,
            "headdim": cfg.mamba_headdim,
        }
        if (cfg.mamba_expand * encoder.embed_dim) % cfg.mamba_headdim:
            raise UsageError(
                f"--mamba-headdim {cfg.mamba_headdim} must divide --mamba-expand x "
                f"{encoder.embed_dim} (the backbone's width)"
            )
        model = TemporalClassifier(
            encoder, MLPHead(encoder.embed_dim, n_classes, cfg.head_hidden, cfg.head_dropout), context
        )
        if cfg.debias_batchnorm:
            debias_batchnorm(model)
        weights = class_weights(train_set.counts, cfg.class_weights)
        loss = ClassificationLoss(weights, channels=channels, valid_key="valid")
        initial_best, deadline, phase_stopped = None, None, None
        if phase_cfg is not None:
            run_started = time.monotonic()  # --max-minutes covers both phases from here
            initial_best, phase_stopped = train_context_phase(
                cfg, phase_cfg, ctx, model, source, channels, train_set, selected, val_windows, weights
            )
            deadline = fine_tuning_deadline(cfg, run_started)
        batch_size = eval_batch_size(cfg)

        def predict_val(model, device):
            predictions = predict_windows(
                val_windows,
                window_predictor(model, device, channels, cfg),
                n_classes,
                batch_size,
                cfg.workers,
                cfg.progress,
            )
            return predictions.true, predictions.probabilities

        def predict_test(model, device):
            return predict_windows(
                test_windows,
                window_predictor(model, device, channels, cfg),
                n_classes,
                batch_size,
                cfg.workers,
                cfg.progress,
            )

        monitor = SelectionMonitor(predict_val, cfg.task) if ctx.is_main else None
        metadata = checkpoint_metadata(cfg, channels, source, epochs_per_window=size, eval_stride=eval_stride)
        summary = fit_and_select(
            cfg,
            ctx,
            model,
            train_set,
            model_kind=TEMPORAL_CLASSIFIER,
            loss=loss,
            monitor=monitor,
            metadata=metadata,
            initial_best=initial_best,
            deadline=deadline,
        )
        info = run_info(
            cfg, channels, train_summary(train_set.counts, train_set.recordings, train_set.subjects), source
        )
        info["pooling"] = cfg.pooling  # how the encoder's tokens became the context model's vectors
        info["windows"] = {
            "epochs_per_window": size,
            "train_stride": stride,
            "train_windows": len(train_set),
            "eval_stride": eval_stride,
            "evaluation": f"tiling: windows every {eval_stride} epochs + one aligned to the recording end; "
            "each epoch predicted once, by the window where it is most central",
        }
        finish_run(cfg, ctx, model, {**summary, "context_phase_stopped": phase_stopped}, predict_test, info)
    finally:
        cleanup(ctx)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
