"""SynthSleepNet multimodal pretraining (docs/models.md §3.2; docs/training.md §4) on the shared engine (utils/engine.py).

    python pretrained/multimodal/train.py --data DST --unimodal eeg=RUN,eog=RUN,emg=RUN,ecg=RUN \
        [--channels eeg_c4,eeg_c3,eog_l,eog_r,emg,ecg] [--preset tiny|T|B] ...

RUN is a unimodal run directory (its best.pt, else last.pt) or a checkpoint file. The EEG model serves
eeg_c4 and eeg_c3, the EOG model eog_l and eog_r (each channel gets its own frozen copy and its own LoRA).
Only the modalities of `--channels` are needed. `--channels` takes any subset of the ten channels: the six
100-Hz electrophysiology channels (the default, the published configuration) and the 10-Hz respiratory ones,
each with its own NeuroNet (`--unimodal ...,airflow=RUN,thor=RUN,abdo=RUN,spo2=RUN`); the batch then holds
(B, 3000) tensors for the former and (B, 300) for the latter. The model learns from the `pretrain` split without labels;
recordings lacking one of the channels are skipped (and counted). best.pt is selected by a k-NN probe on the
fusion representation (mean fusion token), fitted on labelled `train` epochs and scored on `val`.

Outputs in --out (default runs/multimodal): config.json, log.jsonl, steps.jsonl, last.pt, best.pt. The
checkpoints hold everything the backbone needs (unimodal configs, frozen encoder weights, LoRA, adapters,
fusion, channel list): `models.loading.load_backbone(OUT/best.pt)`. Resume is automatic from OUT/last.pt
(--unimodal may then be left out: the model is rebuilt from that checkpoint). Bad input (an option, the data
folder, an unreadable or wrong-kind checkpoint, an unusable --out) is checked before anything is written and ends
as one `error:` line, exit status 2; config.json follows the rule of utils/config.py. Multi-GPU / multi-node:
`torchrun --nproc_per_node G pretrained/multimodal/train.py ...`.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dataset.constants import CHANNEL_BY_NAME, ENCODER_MODALITIES, ENCODER_MODALITY, EPHYS_CHANNELS, MODALITY_CHANNELS
from dataset.datasets import EpochDataset, open_reported
from models.loading import NEURONET, SYNTHSLEEPNET, build_backbone, read_checkpoint
from models.neuronet import NeuroNet
from models.synthsleepnet import SynthSleepNet, build_synthsleepnet, synthsleepnet_config
from utils.batchnorm import debias_batchnorm
from utils.checkpoint import sha256_file
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

MODEL_KIND = SYNTHSLEEPNET
UNIMODAL_MODALITIES: tuple[str, ...] = ENCODER_MODALITIES  # eeg, eog, emg, ecg, airflow, thor, abdo, spo2
DEFAULTS: dict[str, Any] = {
    "channels": list(EPHYS_CHANNELS),
    "out": Path("runs") / "multimodal",
    "monitor_target": "stage",
    "base_lr": 1e-4,
}


def parse_unimodal(text: str | Mapping[str, str]) -> dict[str, str]:
    """`"eeg=runs/unimodal/eeg,eog=x.pt"` (or a dict from a config file) → {"eeg": "runs/unimodal/eeg", "eog": "x.pt"}."""
    if isinstance(text, Mapping):
        items = [(str(k), str(v)) for k, v in text.items()]
    else:
        items = []
        for part in str(text).split(","):
            if not part.strip():
                continue
            key, sep, value = part.partition("=")
            if not sep or not key.strip() or not value.strip():
                raise argparse.ArgumentTypeError(f"expected MODALITY=RUN pairs separated by commas, got {part!r}")
            items.append((key.strip().lower(), value.strip()))
    unknown = sorted({k for k, _ in items} - set(UNIMODAL_MODALITIES))
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown modality {unknown}; use {', '.join(UNIMODAL_MODALITIES)}")
    if len({k for k, _ in items}) != len(items):
        raise argparse.ArgumentTypeError(f"a modality is given twice in {text!r}")
    return dict(items)


def add_multimodal_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    group = parser.add_argument_group("multimodal")
    group.add_argument(
        "--unimodal",
        type=parse_unimodal,
        default=None,
        metavar="MOD=RUN,...",
        help="pretrained unimodal NeuroNets: eeg=RUN,eog=RUN,emg=RUN,ecg=RUN (and airflow, thor, abdo, spo2 for the "
        "respiratory channels); RUN = run directory (best.pt, else last.pt) or checkpoint file; the modalities "
        "of --channels are required (not when resuming)",
    )
    return parser


def build_multimodal_parser() -> argparse.ArgumentParser:
    return build_parser(
        description="SynthSleepNet multimodal self-supervised pretraining: frozen unimodal NeuroNet encoders with "
        "LoRA, per-channel adapters, masked fusion transformer, per-channel decoders and cross-modal "
        "contrastive loss, on the 'pretrain' split; best.pt selected by a k-NN probe on the fusion "
        "representation (train -> val).",
        defaults=DEFAULTS,
        add_options=[add_knn_args, add_multimodal_args],
        prog=script_prog(__file__),
    )


def check_channels(channels: list[str]) -> dict[str, str]:
    """channel → the modality whose NeuroNet encodes it (eeg_c3 → eeg, airflow → airflow); UsageError naming a
    bad one."""
    modality = {}
    for name in channels:
        if name not in CHANNEL_BY_NAME:
            raise UsageError(f"--channels: unknown channel {name!r}; canonical names: {', '.join(CHANNEL_BY_NAME)}")
        modality[name] = ENCODER_MODALITY[name]
    if len(set(channels)) != len(channels):
        raise UsageError(f"--channels {','.join(channels)} lists a channel twice")
    return modality


def load_unimodal(runs: Mapping[str, str], needed: set[str]) -> tuple[dict[str, NeuroNet], dict[str, dict]]:
    """The pretrained NeuroNet of each needed modality, and provenance (path, sha256) per modality."""
    missing = sorted(needed - set(runs))
    if missing:
        raise UsageError(f"--unimodal gives no run for modality {', '.join(missing)} (needed by --channels)")
    unused = sorted(set(runs) - needed)
    if unused:
        print(f"note: --unimodal {', '.join(unused)} not used by --channels", flush=True)
    nets, provenance = {}, {}
    for modality in sorted(needed):
        try:
            checkpoint = read_checkpoint(runs[modality], kinds=(NEURONET,))
            where = checkpoint["path"]
            trained_on = (checkpoint.get("metadata") or {}).get("modality")
            if trained_on is not None and trained_on != modality:
                raise ValueError(f"{where}: was pretrained on {trained_on}, but is given for {modality}")
            nets[modality] = build_backbone(checkpoint, where)
        except (FileNotFoundError, ValueError) as err:
            raise UsageError(f"--unimodal {modality}={runs[modality]}: {err}") from None
        provenance[modality] = {"path": where, "sha256": sha256_file(where), "step": checkpoint.get("step")}
        samples = CHANNEL_BY_NAME[MODALITY_CHANNELS[modality][0]].epoch_samples  # 3000 at 100 Hz, 300 at 10 Hz
        if nets[modality].framer.n_samples != samples:
            raise UsageError(
                f"--unimodal {modality}={where}: encoder takes {nets[modality].framer.n_samples}-sample "
                f"epochs, the {modality} data has {samples}"
            )
    return nets, provenance


def check_resumed_encoders(path: Path | None, state: Mapping | None, provenance: Mapping[str, dict]) -> None:
    """UsageError when the checkpoint resumed (`path`, `state`) froze encoders of other unimodal runs than
    `--unimodal` names (compared by content, SHA-256): its weights would go on while the record named these."""
    if path is None or state is None:
        return
    recorded = (state.get("metadata") or {}).get("unimodal") or {}
    other = [m for m, record in provenance.items() if m in recorded and recorded[m].get("sha256") != record["sha256"]]
    if other:
        sources = ", ".join(f"{m}: {recorded[m].get('path')}" for m in other)
        raise UsageError(
            f"{path}: its {', '.join(other)} encoder(s) come from other unimodal runs than --unimodal names "
            f"({sources}); resume with those, or start afresh with --resume none"
        )


def open_split(cfg: Config, split: str, task: str | None = None) -> EpochDataset:
    """EpochDataset of one split with every channel of --channels; prints the recordings skipped and why."""
    return open_reported(
        lambda: EpochDataset(cfg.data, split, cfg.channels, task=task, seed=cfg.seed),
        f"{cfg.data}, split {split!r}, channels {cfg.channels}",
    )


def describe(dataset: EpochDataset) -> str:
    return (
        f"{len(dataset)} epochs x {len(dataset.channels)} channels from {len(dataset.recordings)} recordings, "
        f"{len(dataset.subjects)} subjects"
    )


class ChannelLoss:
    """`compute_loss` for the engine: the batch's channel tensors (B, 3000 or 300) to the device, then the model."""

    def __init__(self, channels: list[str]):
        self.channels = list(channels)

    def __call__(self, model: nn.Module, batch: Mapping[str, Any], device: torch.device) -> Mapping[str, torch.Tensor]:
        signals = {ch: batch[ch].to(device, non_blocking=True) for ch in self.channels}  # (B, 3000) or (B, 300)
        return model(signals)


def build_monitor(cfg: Config, ctx: DistContext) -> KnnMonitor | None:
    """k-NN probe of the fusion representation over labelled `train` -> `val` epochs (rank 0 only)."""
    return monitor_on_splits(cfg, ctx.is_main, open_split, describe, input_key=cfg.channels)


def main(argv: list[str] | None = None) -> int:
    """Parse `argv`, pretrain, return 0. Bad input: one `error:` line on stderr and exit status 2 (a non-finite
    loss: exit status 1), raised as SystemExit."""
    with reported_errors():
        return run(argv)


def run(argv: list[str] | None) -> int:
    """`main` without the error reporting: input problems raise UsageError (or argparse's SystemExit)."""
    parser = build_multimodal_parser()
    cfg = resolve_monitor_metric(parse_config(parser, argv))  # what config.json records
    check_out_dir(cfg.out)
    cfg = cfg.replace(out=training_folder(cfg.resume, cfg.out))  # an earlier run there stays until this one ends
    check_cohort(cfg.data, "pretrain")
    if isinstance(cfg.unimodal, (str, Mapping)):  # from a --config file
        try:
            cfg = cfg.replace(unimodal=parse_unimodal(cfg.unimodal))
        except argparse.ArgumentTypeError as err:
            parser.error(f"--unimodal: {err}")
    channel_modality = check_channels(cfg.channels)
    for key in ("channels", "encoders"):
        if key in cfg.model_args:
            parser.error(f"--model-arg {key}: not a model option here (channels: --channels; encoders: --unimodal)")
    try:
        config = synthsleepnet_config(cfg.preset, channels=cfg.channels, **cfg.model_args)
    except (ValueError, TypeError) as err:
        raise UsageError(f"--preset {cfg.preset} / --model-arg: {err}") from None

    resume_from, resumed = read_resume_checkpoint(cfg.resume, cfg.out, MODEL_KIND, cfg)  # checked before any work
    nets, provenance = None, None
    if cfg.unimodal is not None:
        nets, provenance = load_unimodal(cfg.unimodal, set(channel_modality.values()))
        check_resumed_encoders(resume_from, resumed, provenance)
    elif resume_from is None:
        parser.error(
            "--unimodal is required (e.g. --unimodal eeg=runs/unimodal/eeg,eog=runs/unimodal/eog,"
            "emg=runs/unimodal/emg,ecg=runs/unimodal/ecg)"
        )
    else:  # encoder configs from the checkpoint; fit restores the weights
        try:
            config = synthsleepnet_config(
                cfg.preset,
                channels=cfg.channels,
                **cfg.model_args,
                encoders=resumed["model_config"].get("encoders", {}),
            )
        except ValueError as err:
            raise UsageError(f"--resume {resume_from}: {err}") from None
        provenance = (resumed.get("metadata") or {}).get("unimodal")
        if provenance:  # config.json names the runs the encoders came from, so --config reruns the job
            cfg = cfg.replace(unimodal={modality: record["path"] for modality, record in provenance.items()})
    del resumed  # fit reads the checkpoint again when it resumes

    ctx = setup_run(cfg)
    try:
        train_set = open_split(cfg, "pretrain")
        if ctx.is_main:
            print(f"pretrain (multimodal): {describe(train_set)}", flush=True)
        monitor = build_monitor(cfg, ctx)
        encoders = {ch: nets[modality] for ch, modality in channel_modality.items()} if nets else None
        try:
            model: SynthSleepNet = build_synthsleepnet(config, encoders)
        except ValueError as err:
            raise UsageError(f"cannot build SynthSleepNet from --channels / --unimodal / --model-arg: {err}") from err
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
            model_config=model.config.to_dict(),
            compute_loss=ChannelLoss(cfg.channels),
            monitor=monitor,
            monitor_metric=cfg.monitor_metric,
            monitor_mode="max",
            metadata={
                "channels": list(cfg.channels),
                "channel_modality": channel_modality,
                "unimodal": provenance,
                "probe_target": cfg.monitor_target,
                "representation": "mean fusion token",
            },
        )
        if ctx.is_main:
            publish_run(cfg.out)
    finally:
        cleanup(ctx)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
