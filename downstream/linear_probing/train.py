"""Linear probing (docs/evaluation.md §5): a frozen backbone and an MLP head on each 30-s epoch's vector (with
`--neighbour-epochs K`, with its K neighbours' on each side).

    python downstream/linear_probing/train.py --data DST --backbone RUN --task sleep_stage|apnea|hypopnea \
        [--label-fraction 0.01|0.05|1.0] [--train-subjects N] [--channels ...] [--neighbour-epochs K] [--out DIR]

With `--init pretrained` (default) the backbone (a unimodal NeuroNet or a SynthSleepNet, `models.loading`) stays
frozen in eval mode: its pooled representation of every `train` and `val` epoch is computed ONCE under no_grad
and cached in memory, and the engine (`utils.engine.fit`) trains only the head (D → 256 → 256 → C with
BatchNorm, ELU, dropout; class-weighted cross-entropy) on the cached vectors; `test` is encoded once at the end.
With `--neighbour-epochs K` the head reads each epoch's vector with those of its K neighbours on each side
(`downstream.cache.neighbour_vectors`; the train recordings are then encoded whole), as the scorer and the
feature baseline's `--neighbour-epochs` see the epochs around the one they stage.
The checkpoints (kind `mlp_head`) hold the head; metrics.json and the checkpoint metadata name the backbone file
and its SHA-256. With `--head logistic` the head is one linear layer fitted to convergence on the cached vectors
by L-BFGS for each L2 penalty of `--l2-grid`, the best on `val` kept (`downstream.logistic`): no passes, no
randomness.

With `--init random` this is the supervised-from-scratch baseline of the same architecture: backbone (config
from --backbone, or --preset over --channels) randomly initialised and trained with the head, end to end,
on the epochs of `train` (checkpoint kind `epoch_classifier`). Its defaults differ (SCRATCH_DEFAULTS: batch 32,
base lr 4e-3 → 5e-4 after the engine's batch/256 scaling, warmup 0.1 pass): end-to-end training needs many
optimiser steps, and batch 256 gave one or two per pass at 5 % labels. Explicit flags and --config still win.

Model selection: `--select-metric` (default: AUROC for apnea / hypopnea, Cohen's kappa for staging) on `val` after every pass → best.pt. `test` is
predicted once with best.pt; every test epoch once. Outputs in --out (default
runs/downstream/<method>/<task>-lf<fraction>-seed<seed>): config.json, log.jsonl, steps.jsonl, last.pt, best.pt,
metrics.json, predictions.parquet, confusion_matrix.png, results.md (and hypnogram PNGs for staging).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import torch

from dataset.constants import TASKS
from downstream.backbone import resolve_backbone
from downstream.data import (
    apply_epochs,
    check_two_classes,
    encode_store,
    epoch_dataset,
    eval_batch_size,
    fitted_batch,
    night_context,
    recordings_to_store,
    stored_features,
    val_split,
    window_dataset,
)
from downstream.leakage import assert_no_test_leakage
from downstream.logistic import L2_GRID
from downstream.options import (
    add_neighbour_args,
    add_pooling_args,
    build_downstream_parser,
    check_pooling,
    parse_downstream,
)
from downstream.predictions import epochwise, predict_stored_epochs, predict_windows
from downstream.results import LINEAR_PROBE, SCRATCH_PROBE
from downstream.runs import checkpoint_metadata, finish_run, run_info, train_summary
from downstream.training import (
    ClassificationLoss,
    SelectionMonitor,
    class_weights,
    fit_and_select,
    fit_logistic_and_select,
)
from models.heads import EpochClassifier, EpochEncoder, MLPHead
from models.loading import EPOCH_CLASSIFIER, MLP_HEAD
from utils.batchnorm import debias_batchnorm
from utils.config import (
    UNRECORDED_RESUMES,
    UsageError,
    load_config_file,
    mark_required,
    positive_float,
    reported_errors,
    script_prog,
)
from utils.distributed import cleanup
from utils.engine import autocast_context, setup_run
from utils.resume import check_resumed_backbone, read_resume_checkpoint, training_folder

# The head trains on cached vectors, so epochs cost milliseconds: small batches and many epochs give enough
# optimizer steps at 1-5 % labels (batch 256 x 30 epochs was 30 steps at 5 % labels and val kappa still rising).
# lr is the base rate of the engine's rule: 8e-3 x 32 / 256 = 1e-3. Raise --batch-size for millions of labels.
DEFAULTS: dict[str, Any] = {
    "passes": 100,
    "batch_size": 32,
    "base_lr": 8e-3,
    "weight_decay": 1e-3,
    "warmup_passes": 1.0,
}
# --init random trains ~1.8 M weights end to end: small batches for many steps (lr scaled to 5e-4 at batch 32).
SCRATCH_DEFAULTS: dict[str, Any] = {**DEFAULTS, "passes": 30, "batch_size": 32, "base_lr": 4e-3, "warmup_passes": 0.1}
TEST_WINDOW = 20  # test epochs are read in tiles of 20 consecutive epochs (I/O only: the tiles do not change the input)


def add_head_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """--head and --l2-grid: how the probe's classifier is trained on the cached vectors."""
    group = parser.add_argument_group("probe head")
    group.add_argument(
        "--head",
        choices=("mlp", "logistic"),
        default="mlp",
        help="mlp: the MLP head of --head-hidden, trained by AdamW for --passes, best pass on val; logistic: one "
        "linear layer fitted to convergence by full-batch L-BFGS on the standardised vectors for each penalty "
        "of --l2-grid, the best penalty on val (deterministic; needs --init pretrained)",
    )
    group.add_argument(
        "--l2-grid",
        type=positive_float,
        nargs="+",
        default=list(L2_GRID),
        metavar="L2",
        help="--head logistic: the L2 penalties tried, per mean class-weighted cross-entropy on vectors "
        "standardised over the labelled train epochs",
    )
    return parser


# what trains the MLP head and not a fitted one: a value other than the default with --head logistic is refused
MLP_ONLY = (
    "passes",
    "base_lr",
    "weight_decay",
    "adam_betas",
    "warmup_passes",
    "warmup_steps",
    "min_lr_ratio",
    "clip_grad",
    "accum_steps",
    "max_steps",
    "max_minutes",
    "save_every_steps",
    "head_hidden",
    "head_dropout",
    "debias_batchnorm",
)


def check_head_options(parser: argparse.ArgumentParser, cfg) -> None:
    """Refuse options the chosen head does not use (so config.json never names a setting that had no effect):
    with --head logistic the MLP's training options (`MLP_ONLY`) and a --resume checkpoint (a fitted head has
    nothing to go on from), with the MLP head an --l2-grid; --head logistic also needs --init pretrained and one
    process."""
    fresh = build_probe_parser(cfg.init)  # its defaults: `parser`'s now hold a --config file's values
    changed = [key for key in MLP_ONLY if getattr(cfg, key) != fresh.get_default(key)]
    if cfg.head == "logistic":
        if cfg.init != "pretrained":
            parser.error("--head logistic needs --init pretrained (it is fitted on stored vectors)")
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise UsageError("--head logistic runs in one process: start it without torchrun")
        if changed:
            names = ", ".join("--" + key.replace("_", "-") for key in changed)
            parser.error(f"{names}: not used by --head logistic (a linear layer fitted by L-BFGS); leave them out")
        if str(cfg.resume).lower() not in UNRECORDED_RESUMES:
            parser.error("--resume: --head logistic is fitted afresh each run (nothing to resume); leave it out")
    elif cfg.l2_grid != fresh.get_default("l2_grid"):
        parser.error("--l2-grid: only --head logistic uses it (the MLP head trains with --weight-decay)")


def method_of(cfg) -> str:
    return LINEAR_PROBE if cfg.init == "pretrained" else SCRATCH_PROBE


def init_of(argv: list[str] | None) -> str:
    """The --init value of `argv` (or of its --config file), to pick the defaults before the full parse."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--init", default=None)
    pre.add_argument("--config", type=Path, default=None)
    known, _ = pre.parse_known_args(argv)
    if known.init is None and known.config is not None:
        try:
            known.init = load_config_file(known.config).get("init")
        except (OSError, ValueError):
            pass  # the full parse reports the bad file
    return known.init or "pretrained"


def build_probe_parser(init: str = "pretrained"):
    parser = build_downstream_parser(
        "Linear probe: frozen pretrained backbone (representations cached once per split) + MLP head; or, with "
        "--init random, the same architecture trained from scratch (own defaults: batch 32, base lr 4e-3, warmup "
        "0.1 pass). Model selection on `val`, one evaluation on `test`.",
        SCRATCH_DEFAULTS if init == "random" else DEFAULTS,
        extra=[add_neighbour_args, add_pooling_args, add_head_args],
    )
    parser.prog = script_prog(__file__)
    return mark_required(parser, "task")


def main(argv: list[str] | None = None) -> int:
    """Parse `argv`, train, evaluate on test, return 0. Bad input: one `error:` line on stderr and exit status 2
    (a non-finite loss: exit status 1), raised as SystemExit; nothing is written before the inputs are checked."""
    with reported_errors():
        return run(argv)


def run(argv: list[str] | None) -> int:
    """`main` without the error reporting: input problems raise UsageError (or argparse's SystemExit)."""
    parser = build_probe_parser(init_of(argv))
    cfg = parse_downstream(parser, argv, method_of)
    check_head_options(parser, cfg)
    if cfg.head == "logistic":  # one linear layer, solved afresh in seconds: nothing to go on from
        cfg = cfg.replace(head_hidden=[], resume="none")
    cfg = cfg.replace(out=training_folder(cfg.resume, cfg.out))  # an earlier run there stays until this one ends
    if cfg.neighbour_epochs and cfg.init != "pretrained":
        parser.error("--neighbour-epochs needs --init pretrained (the head reads stored vectors of whole recordings)")
    if cfg.night_norm != "none" and cfg.init != "pretrained":
        parser.error("--night-norm needs --init pretrained (the head reads stored vectors of whole recordings)")
    resume_path, resume_state = read_resume_checkpoint(
        cfg.resume, cfg.out, MLP_HEAD if cfg.init == "pretrained" else EPOCH_CLASSIFIER, cfg
    )
    if resume_state is not None and cfg.init == "pretrained":
        stored = int(resume_state["model_config"].get("neighbour_epochs", 0))
        if stored != cfg.neighbour_epochs:
            raise UsageError(
                f"{resume_path}: its head reads {stored} neighbouring epoch(s) on each side, this run "
                f"--neighbour-epochs {cfg.neighbour_epochs}; give another --out, or --resume none to start afresh"
            )
        stored_norm = resume_state["model_config"].get("night_norm", "none")
        if stored_norm != cfg.night_norm:
            raise UsageError(
                f"{resume_path}: its head reads vectors under --night-norm {stored_norm}, this run "
                f"--night-norm {cfg.night_norm}; give another --out, or --resume none to start afresh"
            )
    assert_no_test_leakage(cfg.data)
    source = resolve_backbone(cfg, cfg.data)
    if resume_state is not None and source.state is not None:
        check_resumed_backbone(resume_path, resume_state, source.provenance.get("sha256"))
    check_pooling(cfg, source)
    channels = source.channels
    train_set = epoch_dataset(cfg, "train", channels, training=True)
    val_set = epoch_dataset(cfg, val_split(cfg), channels)
    test_windows = window_dataset(cfg, "test", channels, TEST_WINDOW, tiling=True)
    assert_no_test_leakage(cfg.data, {"training": train_set.recordings, "model selection": val_set.recordings})
    cfg = fitted_batch(cfg, len(train_set), "epochs")
    n_classes, frozen = TASKS[cfg.task], cfg.init == "pretrained"
    counts = train_set.class_counts()
    check_two_classes(counts)
    print(
        f"{cfg.method} | task {cfg.task} | backbone {source.name} | channels {', '.join(channels)} | train "
        f"{len(train_set)} labelled epochs of {len(train_set.subjects)} subjects (per class {counts.tolist()}) | "
        f"val {len(val_set)} epochs | test {len(test_windows.recordings)} recordings",
        flush=True,
    )

    ctx = setup_run(cfg)
    try:
        encoder = EpochEncoder(
            source.instantiate(), channels, mode="frozen" if frozen else "full", pooling=cfg.pooling
        ).to(ctx.device)
        head = MLPHead(
            encoder.embed_dim, n_classes, cfg.head_hidden, cfg.head_dropout, cfg.neighbour_epochs, cfg.night_norm
        )
        weights = class_weights(counts, cfg.class_weights)
        # the pooling: how the frozen encoder rebuilt at inference pools its tokens (only the head is stored)
        metadata = checkpoint_metadata(cfg, channels, source, pooling=cfg.pooling)
        batch_size, window_batch = eval_batch_size(cfg), eval_batch_size(cfg, TEST_WINDOW)

        if frozen:
            stored, whole_train = recordings_to_store(cfg, train_set, val_set, test_windows)
            store = night_context(encode_store(cfg, encoder, source, channels, stored, ctx.device), cfg)
            cached_train = (
                stored_features(store, train_set)
                if whole_train
                else apply_epochs(encoder, train_set, channels, ctx.device, cfg)
            )  # (N, (2K + 1) D) + labels
            cached_val = stored_features(store, val_set)
            print(
                f"cached representations: train {tuple(cached_train.features.shape)}, "
                f"val {tuple(cached_val.features.shape)}",
                flush=True,
            )

            def predict_val(model, device):
                logits = torch.cat(
                    [model(chunk.to(device)).float().cpu() for chunk in cached_val.features.split(batch_size)]
                )  # (N, C)
                return cached_val.labels.numpy(), logits.softmax(dim=1).numpy()

            def predict_test(model, device):  # stored vectors, every test epoch once
                return predict_stored_epochs(
                    cfg, store, test_windows, channels, lambda x: model(x.to(device)).float().softmax(dim=-1)
                )

            fit_cfg = cfg.replace(workers=0)  # cached tensors: no loader workers needed
            model, kind, train_data = head, MLP_HEAD, cached_train
            loss = ClassificationLoss(weights, input_key="features")
        else:

            def probabilities(model, signals, device):  # {channel: (n, 3000)} -> (n, C), as in training
                signals = {ch: x.to(device, non_blocking=True) for ch, x in signals.items()}
                with autocast_context(device, cfg.amp, cfg.amp_dtype):
                    return model(signals).float().softmax(dim=-1)

            def predict_val(model, device):
                out = apply_epochs(
                    lambda signals: probabilities(model, signals, device), val_set, channels, device, cfg
                )
                return out.labels.numpy(), out.features.numpy()

            def predict_test(model, device):
                return predict_windows(
                    test_windows,
                    epochwise(lambda signals: probabilities(model, signals, device), channels),
                    n_classes,
                    window_batch,
                    cfg.workers,
                    cfg.progress,
                )

            fit_cfg, model, kind, train_data = cfg, EpochClassifier(encoder, head), EPOCH_CLASSIFIER, train_set
            loss = ClassificationLoss(weights, channels=channels)
        if cfg.debias_batchnorm:
            debias_batchnorm(model)
        monitor = SelectionMonitor(predict_val, cfg.task) if ctx.is_main else None
        if cfg.head == "logistic":
            summary = fit_logistic_and_select(
                cfg, ctx, model, train_data, weights=weights, monitor=monitor, metadata=metadata
            )
        else:
            summary = fit_and_select(
                fit_cfg, ctx, model, train_data, model_kind=kind, loss=loss, monitor=monitor, metadata=metadata
            )
        info = run_info(cfg, channels, train_summary(counts, train_set.recordings, train_set.subjects), source)
        info["pooling"] = cfg.pooling  # how the encoder's tokens became the head's vector
        if frozen:  # how the head was trained on the stored vectors, and the penalty val chose for a fitted one
            info["head"] = cfg.head
            if cfg.head == "logistic":
                info["l2"] = summary["l2"]
        if frozen:  # how each night's vectors were standardised (a model trained end to end reads none)
            info["night_norm"] = cfg.night_norm
        finish_run(cfg, ctx, model, summary, predict_test, info)
    finally:
        cleanup(ctx)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
