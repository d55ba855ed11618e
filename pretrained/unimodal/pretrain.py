"""Unimodal NeuroNet pretraining (docs/models.md §3.1; docs/training.md §4), shared by pretrained/unimodal/<modality>/train.py.

Each modality's channels are pooled as single-channel samples (EEG: eeg_c4 and eeg_c3 epochs are separate
samples of one model; EOG: eog_l and eog_r); the model learns from the `pretrain` split without labels. Model
selection uses a k-NN probe fitted on labelled `train` epochs and scored on `val` (never `test`):

    modality  channels          probe target
    eeg       eeg_c4, eeg_c3    stage (W/N1/N2/N3/REM)
    eog       eog_l, eog_r      stage
    emg       emg               wake_sleep (stage 0 vs 1-4)
    ecg       ecg               apnea
    airflow   airflow (10 Hz)   hypopnea (synthetic nights: apnea AUROC ~0.98 even untrained, so it ranks nothing)
    thor      thor (10 Hz)      apnea
    abdo      abdo (10 Hz)      apnea
    spo2      spo2 (10 Hz)      apnea

The 10-Hz respiratory modalities take the same presets with the respiratory frame geometry
(`models.neuronet.respiratory_geometry`: 12 frames of 8 s every 2 s, shared_conv tokenizer); the electrophysiology
ones take the presets unchanged.

Outputs in --out (default runs/unimodal/<modality>): config.json, log.jsonl (one line per pass + summary),
steps.jsonl, last.pt, best.pt. Resume is automatic from OUT/last.pt. Bad input (an option, the data folder, an
unreadable or wrong-kind checkpoint, an unusable --out) is checked before anything is written and ends as one
`error:` line, exit status 2; config.json follows the rule of utils/config.py. Multi-GPU / multi-node:
`torchrun --nproc_per_node G pretrained/unimodal/eeg/train.py ...`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from dataset.constants import CHANNEL_BY_NAME, ENCODER_MODALITIES, ENCODER_MODALITY, EPOCH_S, MODALITY_CHANNELS, RESP_FS
from dataset.datasets import EpochDataset, open_reported
from dataset.neighbours import NeighbourPairs
from models.loading import NEURONET
from models.neuronet import build_neuronet, neuronet_config, respiratory_geometry
from utils.batchnorm import debias_batchnorm
from utils.config import (
    Config,
    UsageError,
    build_parser,
    check_cohort,
    check_out_dir,
    parse_config,
    reported_errors,
    script_prog,
)
from utils.distributed import DistContext, cleanup
from utils.engine import fit, setup_run
from utils.knn_probe import KnnMonitor, add_knn_args, monitor_on_splits, resolve_monitor_metric
from utils.resume import publish_run, read_resume_checkpoint, training_folder

MODEL_KIND = NEURONET
PROBE_TARGET_BY_MODALITY: dict[str, str] = {
    "eeg": "stage",
    "eog": "stage",
    "emg": "wake_sleep",
    "ecg": "apnea",
    "airflow": "hypopnea",
    "thor": "apnea",
    "abdo": "apnea",
    "spo2": "apnea",
}
MODALITIES: tuple[str, ...] = ENCODER_MODALITIES  # the data vocabulary's list (dataset/constants.py)
assert set(PROBE_TARGET_BY_MODALITY) == set(MODALITIES), "a modality without a probe target"


def modality_defaults(modality: str) -> dict[str, Any]:
    """The options a modality's train.py sets: its channels, probe target and run directory."""
    if modality not in PROBE_TARGET_BY_MODALITY:
        raise ValueError(f"unknown modality {modality!r}; choose one of {', '.join(MODALITIES)}")
    return {
        "channels": list(MODALITY_CHANNELS[modality]),
        "monitor_target": PROBE_TARGET_BY_MODALITY[modality],
        "out": Path("runs") / "unimodal" / modality,
    }


def modality_rate(modality: str) -> int:
    """Sampling rate (Hz) of a modality's channels: 100 for electrophysiology, 10 for the respiratory ones."""
    return CHANNEL_BY_NAME[MODALITY_CHANNELS[modality][0]].target_fs


def modality_geometry(modality: str, preset: str) -> dict[str, Any]:
    """Config overrides of `preset` for `modality`: the respiratory frame geometry at 10 Hz, none at 100 Hz."""
    return respiratory_geometry(preset) if modality_rate(modality) == RESP_FS else {}


def build_pretrain_parser(modality: str) -> argparse.ArgumentParser:
    defaults = modality_defaults(modality)
    return build_parser(
        description=f"NeuroNet self-supervised pretraining on {modality.upper()}: channels "
        f"{', '.join(defaults['channels'])} pooled as single-channel samples of the 'pretrain' split; "
        f"best.pt selected by a k-NN probe ({defaults['monitor_target']}) fitted on 'train', "
        "scored on 'val'.",
        defaults=defaults,
        add_options=[add_knn_args, add_objective_args],
        prog=script_prog(f"pretrained/unimodal/{modality}/train.py"),
    )


def add_objective_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    group = parser.add_argument_group("NeuroNet objective")
    group.add_argument(
        "--detach-target",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="stop gradients through the reconstruction target (frame tokens); default off, as "
        "published (docs/models.md §3.1)",
    )
    return parser


def _check_channels(channels: list[str], modality: str) -> None:
    rate = modality_rate(modality)
    for name in channels:
        spec = CHANNEL_BY_NAME.get(name)
        if spec is None:
            raise UsageError(f"--channels: unknown channel {name!r}; canonical names: {', '.join(CHANNEL_BY_NAME)}")
        if spec.target_fs != rate:
            kind = "electrophysiology" if spec.electrophysiology else "respiratory"
            raise UsageError(
                f"--channels: {name} is a {spec.target_fs} Hz {kind} channel; the {modality} NeuroNet "
                f"takes {EPOCH_S * rate}-sample epochs at {rate} Hz"
            )
        if ENCODER_MODALITY[name] != modality:
            print(
                f"note: channel {name} ({ENCODER_MODALITY[name]}) is pretrained with the {modality} model", flush=True
            )


def open_split(cfg: Config, split: str, task: str | None = None, report: bool = True) -> EpochDataset:
    """Pooled single-channel EpochDataset of one split; prints (with `report`) the recordings skipped and why
    (e.g. a missing channel). UsageError naming the folder or file when the split cannot be read."""
    return open_reported(
        lambda: EpochDataset(cfg.data, split, cfg.channels, task=task, seed=cfg.seed, pool_channels=True),
        f"{cfg.data}, split {split!r}, channels {cfg.channels}",
        report=report,
    )


def describe(dataset: EpochDataset) -> str:
    return (
        f"{len(dataset)} single-channel epochs of {', '.join(dataset.channels)} from "
        f"{len(dataset.recordings)} recordings, {len(dataset.subjects)} subjects"
    )


def build_monitor(cfg: Config, ctx: DistContext) -> KnnMonitor | None:
    """k-NN probe over labelled `train` -> `val` epochs (rank 0 only); None when disabled or impossible."""
    return monitor_on_splits(cfg, ctx.is_main, open_split, describe)


def main(argv: list[str] | None = None, modality: str = "eeg") -> int:
    """Parse `argv` (with `modality`'s defaults), pretrain, return 0. Bad input: one `error:` line on stderr and
    exit status 2 (a non-finite loss: exit status 1), raised as SystemExit."""
    with reported_errors():
        return run(argv, modality)


def run(argv: list[str] | None, modality: str) -> int:
    """`main` without the error reporting: input problems raise UsageError (or argparse's SystemExit)."""
    cfg = resolve_monitor_metric(parse_config(build_pretrain_parser(modality), argv))  # what config.json records
    check_out_dir(cfg.out)
    cfg = cfg.replace(out=training_folder(cfg.resume, cfg.out))  # an earlier run there stays until this one ends
    check_cohort(cfg.data, "pretrain")
    _check_channels(cfg.channels, modality)
    try:
        model_config = neuronet_config(
            cfg.preset,
            **{**modality_geometry(modality, cfg.preset), "detach_target": cfg.detach_target, **cfg.model_args},
        )
        with torch.device("meta"):  # the model's own checks (frames to mask, stage widths), before --out is touched
            build_neuronet(model_config)
    except (ValueError, TypeError) as err:
        raise UsageError(f"--preset {cfg.preset} / --model-arg: {err}") from None
    # before any work: an unreadable checkpoint, or one of another run (another modality's NeuroNet too)
    read_resume_checkpoint(cfg.resume, cfg.out, MODEL_KIND, cfg, metadata={"modality": modality})
    ctx = setup_run(cfg)
    try:
        train_set = open_split(cfg, "pretrain", report=ctx.is_main)
        if ctx.is_main:
            print(f"pretrain ({modality}): {describe(train_set)}", flush=True)
        if model_config.positive_pair == "neighbour":  # contrastive views: an epoch and its neighbour
            train_set = NeighbourPairs(train_set)
        elif model_config.positive_pair == "shift":  # an epoch and the window shifted by up to positive_shift_s
            train_set = NeighbourPairs(train_set, max_shift=round(model_config.positive_shift_s * model_config.fs))
        monitor = build_monitor(cfg, ctx)
        model = build_neuronet(model_config)
        if cfg.debias_batchnorm:
            debias_batchnorm(model)
        if ctx.is_main:
            print(model.summary(), flush=True)
        fit(
            cfg,
            model,
            train_set,
            ctx=ctx,
            model_kind=MODEL_KIND,
            model_config=model_config.to_dict(),
            monitor=monitor,
            monitor_metric=cfg.monitor_metric,
            monitor_mode="max",
            metadata={"modality": modality, "channels": list(cfg.channels), "probe_target": cfg.monitor_target},
        )
        if ctx.is_main:
            publish_run(cfg.out)
    finally:
        cleanup(ctx)
    return 0
