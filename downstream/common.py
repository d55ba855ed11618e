"""Shared machinery of the downstream scripts (DESIGN.md 3.3, 5, 8): options, leakage guard, backbone, data,
loss, model selection on `val`, and the one final evaluation on `test`.

Every downstream script follows the same path:

1. `parse_downstream` (the shared engine options of utils/config.py + the task and backbone groups here). Bad
   input (options, data folder, checkpoints, --out) raises UsageError before anything is written; each script's
   `main` reports it as one `error:` line, exit status 2 (`utils.config.reported_errors`).
2. `assert_no_test_leakage` on DST/splits.json at start, and again on the recordings actually used for
   training and model selection: a subject of `test` there raises `LeakageError`.
3. Training data = the `train` split at `--label-fraction` of its labelled epochs (seeded draw without
   replacement, `dataset.datasets.EpochDataset`) and/or the first `--train-subjects` subjects of a seeded
   permutation. Model selection = `--select-metric` on `val` after every epoch (`SelectionMonitor`, the
   engine's monitor → best.pt). Training runs in the shared engine (`utils.engine.fit`).
4. `finish_run`: the checkpoint selected on `val` (best.pt; last.pt if no epoch had a finite `val` score) is
   evaluated ONCE on `test`, where `SequenceDataset(tiling=True)` predicts every epoch of every test recording
   exactly once; outputs via `downstream.evaluate.write_run_report`.

Backbones: `--backbone RUN` is a pretraining run directory (best.pt, else last.pt) or checkpoint of a unimodal
NeuroNet (one channel; default the first it was pretrained on) or a SynthSleepNet (its channels). With
`--init random` (supervised from scratch) the backbone's architecture comes from that checkpoint, or, without
`--backbone`, from `--preset` over `--channels` (one channel: NeuroNet; several: SynthSleepNet with one NeuroNet
encoder per channel); weights are random and everything trains.
"""

from __future__ import annotations

import argparse
import copy
import json
import warnings
import weakref
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from dataset.cohort import read_subjects
from dataset.constants import CHANNEL_BY_NAME, EPHYS_CHANNELS, EPOCH_SAMPLES, TASKS
from dataset.datasets import EpochDataset, SequenceDataset
from dataset.splits import read_splits
from downstream.cache import VectorStore, cache_key, encode_recordings, epoch_labels, predict_tiles
from downstream.evaluate import (
    EVENT_FAMILIES,
    METHOD_LABELS,
    PredictionCollector,
    Predictions,
    attach_context,
    evaluate_predictions,
    event_calibration,
    write_run_report,
)
from models.heads import EpochClassifier, EpochEncoder, build_downstream_model
from models.loading import (
    BUILDERS,
    TRAINING_KEYS,
    build_backbone,
    load_backbone,
    load_state_checked,
    read_checkpoint,
)
from models.neuronet import neuronet_config_for_rate
from models.synthsleepnet import synthsleepnet_config
from utils.checkpoint import load_checkpoint, sha256_file
from utils.config import (
    UsageError,
    build_parser,
    check_out_dir,
    comma_list,
    fraction,
    non_negative_int,
    parse_config,
    positive_int,
    probability,
)
from utils.distributed import DistContext
from utils.engine import autocast_context, evaluating, fit
from utils.metrics import classification_metrics

SELECT_METRICS: dict[str, str] = {"kappa": "max", "macro_f1": "max", "accuracy": "max", "auroc": "max", "loss": "min"}


class LeakageError(UsageError, RuntimeError):
    """A subject of the `test` split appears in training or model-selection data (a data error: exit status 2)."""


# ---------------------------------------------------------------------------------------- options
def int_list(text: str | Sequence[int]) -> list[int]:
    """`"256,256"` (or a list from a config file) -> [256, 256]; every item a positive integer."""
    items = comma_list(text) if isinstance(text, str) else list(text) if isinstance(text, (list, tuple)) else None
    try:
        return [positive_int(v) for v in items]
    except (TypeError, argparse.ArgumentTypeError):
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}") from None


int_list.checks_values = True  # parse_config checks --config values with it too


def add_task_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    group = parser.add_argument_group("downstream task and evaluation")
    group.add_argument("--task", choices=tuple(TASKS), default=None, help="what to predict per 30-s epoch (required)")
    group.add_argument(
        "--label-fraction",
        type=fraction,
        default=1.0,
        help="fraction (0, 1] of the labelled `train` epochs used (seeded draw without replacement)",
    )
    group.add_argument(
        "--train-subjects",
        type=positive_int,
        default=None,
        help="use only this many `train` subjects (seeded permutation of the sorted ids); default all",
    )
    group.add_argument(
        "--label-rule",
        default="midpoint",
        help='event tasks: "midpoint", "any" or "min_s:X" (seconds of the epoch covered)',
    )
    group.add_argument(
        "--select-metric",
        choices=("auto", *SELECT_METRICS),
        default="auto",
        help="`val` metric that selects the checkpoint (best.pt); `test` is never used for it. auto: "
        "auroc for the binary event tasks (kappa of a rare class says little), kappa for staging",
    )
    group.add_argument(
        "--class-weights",
        choices=("balanced", "none"),
        default="balanced",
        help="cross-entropy class weights: balanced = N / (C x n_c) over the training labels",
    )
    group.add_argument(
        "--max-val-recordings",
        type=non_negative_int,
        default=0,
        help="score model selection on a seeded subset of this many `val` recordings (0 = all)",
    )
    group.add_argument(
        "--n-boot", type=non_negative_int, default=1000, help="bootstrap replicates (test subjects) for the CIs"
    )
    group.add_argument(
        "--hypnograms", type=non_negative_int, default=3, help="staging: hypnogram PNGs of the first N test recordings"
    )
    group.add_argument(
        "--eval-batch-size",
        type=non_negative_int,
        default=0,
        help="samples (epochs; fine-tuning: windows) per batch when encoding / predicting without "
        "gradients (0 = --batch-size)",
    )
    group.add_argument("--method", default=None, help=argparse.SUPPRESS)  # set by the script; kept in config.json
    return parser


def add_backbone_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    group = parser.add_argument_group("backbone and head")
    group.add_argument(
        "--backbone",
        type=Path,
        default=None,
        help="pretraining run directory or checkpoint (NeuroNet or SynthSleepNet)",
    )
    group.add_argument(
        "--init",
        choices=("pretrained", "random"),
        default="pretrained",
        help="random: supervised from scratch (architecture from --backbone or --preset, all trainable)",
    )
    group.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="keep the frozen backbone's vectors of every encoded recording here and reuse them in "
        "later runs with the same backbone file and channels (default: encode in memory)",
    )
    group.add_argument("--head-hidden", type=int_list, default=[256, 256], help="MLP head hidden widths")
    group.add_argument("--head-dropout", type=probability, default=0.5, help="MLP head dropout")
    return parser


def build_downstream_parser(
    description: str, defaults: Mapping[str, Any], extra: Iterable[Callable[[argparse.ArgumentParser], Any]] = ()
) -> argparse.ArgumentParser:
    """The engine's shared parser with the task and backbone groups (and a script's own groups)."""
    return build_parser(
        description, defaults={"out": None, **defaults}, add_options=[add_task_args, add_backbone_args, *extra]
    )


def check_task_options(parser: argparse.ArgumentParser, cfg: argparse.Namespace) -> None:
    """Validate the task group beyond what its typed options check (parser.error on bad values)."""
    if cfg.task is None:
        parser.error(f"--task is required ({', '.join(TASKS)})")
    if not Path(cfg.data).is_dir() or not (Path(cfg.data) / "splits.json").is_file():
        parser.error(f"--data {cfg.data}: no parsed cohort with splits.json there (run dataset/data_parser.py)")
    if cfg.task == "sleep_stage" and cfg.label_rule != "midpoint":
        parser.error("--label-rule applies to the event tasks only")


def parse_downstream(
    parser: argparse.ArgumentParser, argv: list[str] | None, method_of: Callable[[argparse.Namespace], str]
) -> argparse.Namespace:
    """Parse and check; `cfg.method` is set by `method_of(cfg)` and `--out` defaults to
    runs/downstream/<method>/<task>-lf<fraction>[-n<subjects>]-seed<seed>, which must be a usable directory."""
    cfg = parse_config(parser, argv)
    check_task_options(parser, cfg)
    if hasattr(cfg, "head_hidden"):
        cfg.head_hidden = int_list(cfg.head_hidden)
        if getattr(cfg, "init", "pretrained") == "pretrained" and cfg.backbone is None:
            parser.error("--backbone is required with --init pretrained (or use --init random)")
        if cfg.backbone is not None:
            cfg.backbone = Path(cfg.backbone)
    if cfg.channels is not None:
        unknown = [c for c in cfg.channels if c not in CHANNEL_BY_NAME]
        if unknown:
            parser.error(f"--channels {unknown}: unknown; canonical names: {', '.join(CHANNEL_BY_NAME)}")
        bad = [c for c in cfg.channels if CHANNEL_BY_NAME[c].epoch_samples != EPOCH_SAMPLES]
        if bad and not hasattr(cfg, "head_hidden"):  # backbones take the 10-Hz channels too; the features do not
            parser.error(
                f"--channels {bad}: the hand-crafted features take 100-Hz electrophysiology channels "
                f"({', '.join(EPHYS_CHANNELS)})"
            )
    if cfg.select_metric == "auto":
        cfg.select_metric = "auroc" if TASKS[cfg.task] == 2 else "kappa"
    cfg.method = method_of(cfg)
    if cfg.out is None:
        subjects = f"-n{cfg.train_subjects}" if cfg.train_subjects else ""
        cfg.out = (
            Path("runs") / "downstream" / cfg.method / f"{cfg.task}-lf{cfg.label_fraction:g}{subjects}-seed{cfg.seed}"
        )
    check_out_dir(cfg.out)
    return cfg


# ---------------------------------------------------------------------------------------- leakage guard
def assert_no_test_leakage(data_dir: str | Path, used: Mapping[str, Iterable[str]] | None = None) -> set[str]:
    """Raise LeakageError if a `test` subject is listed in another split of DST/splits.json (by subject id or
    through a recording), or owns a recording of `used` (purpose -> recording ids, e.g. the training and
    selection data actually loaded). Returns the test subjects. An unreadable splits.json or manifest is a
    UsageError naming the file."""
    path = Path(data_dir) / "splits.json"
    used = {purpose: list(recordings) for purpose, recordings in (used or {}).items()}
    try:
        splits = read_splits(path)
        every = sorted(
            {r for ids in splits["recordings"].values() for r in ids} | {r for ids in used.values() for r in ids}
        )
        subject_of = read_subjects(data_dir, every)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise UsageError(f"{data_dir}: cannot read the cohort's splits and subjects: {err}") from None

    def members(split: str) -> set[str]:
        return set(map(str, splits["subjects"][split])) | {subject_of[r] for r in splits["recordings"][split]}

    test = members("test")
    problems = []
    for split in ("pretrain", "train", "val"):
        overlap = sorted(members(split) & test)
        if overlap:
            problems.append(f"test subject(s) {overlap[:5]} also in split {split!r}")
    for purpose, recordings in used.items():
        leaked = sorted({r for r in recordings if subject_of[r] in test})
        if leaked:
            problems.append(f"{purpose} data holds recording(s) {leaked[:5]} of test subjects")
    if problems:
        raise LeakageError(f"{path}: test leakage: " + "; ".join(problems))
    return test


# ---------------------------------------------------------------------------------------- backbone
@dataclass
class BackboneSource:
    """Where a backbone comes from: its kind and config, pretrained weights (None = random init), the channels
    it encodes, and provenance for the run record."""

    kind: str
    config: dict
    state: dict | None
    channels: list[str]
    provenance: dict

    @property
    def name(self) -> str:
        return self.provenance["name"]

    def instantiate(self) -> nn.Module:
        """The backbone module: pretrained weights loaded (every key must match), or random (seeded by the
        caller's RNG state)."""
        if self.state is not None:
            return build_backbone(
                {"model_kind": self.kind, "model_config": self.config, "model": self.state}, self.provenance["path"]
            )
        return BUILDERS[self.kind](copy.deepcopy(self.config))


def resolve_backbone(cfg: argparse.Namespace, data_dir: str | Path) -> BackboneSource:
    """The backbone of `--backbone` / `--init` / `--preset` / `--channels` (module docstring)."""
    if cfg.model_args and cfg.backbone is not None:
        raise UsageError(
            "--model-arg shapes a backbone built from --preset (--init random without "
            "--backbone); a checkpoint's architecture is fixed"
        )
    if cfg.backbone is not None:
        try:
            checkpoint = read_checkpoint(cfg.backbone)
        except (FileNotFoundError, ValueError) as err:
            raise UsageError(f"--backbone {cfg.backbone}: {err}") from None
        kind, path = checkpoint["model_kind"], checkpoint["path"]
        if kind not in BUILDERS:
            raise UsageError(
                f"--backbone {path}: holds a {kind!r} model, expected a pretrained backbone (one of "
                f"{sorted(BUILDERS)}: a unimodal or multimodal pretraining checkpoint)"
            )
        config = checkpoint["model_config"]
        metadata = checkpoint.get("metadata") or {}
        trained = list(config["channels"]) if kind == "synthsleepnet" else list(metadata.get("channels") or [])
        where = Path(path).resolve()
        label = where.parent.name if where.name in ("best.pt", "last.pt") else where.stem  # run directory or file
        provenance = {
            "path": str(where),
            "sha256": sha256_file(where),
            "step": checkpoint.get("step"),
            "kind": kind,
            "name": f"{kind}:{label}",
            "init": cfg.init,
        }
        splits_hash = sha256_file(Path(data_dir) / "splits.json")
        if cfg.init == "pretrained" and checkpoint.get("splits_sha256") not in (None, splits_hash):
            warnings.warn(
                f"{path} was pretrained with another splits.json than {data_dir}; make sure its pretraining "
                "data held no subject of this test split",
                stacklevel=2,
            )
        state = checkpoint["model"] if cfg.init == "pretrained" else None
    else:
        if not cfg.channels:
            raise UsageError("--init random without --backbone needs --channels (and --preset)")
        trained = list(cfg.channels)
        try:
            rate = {c: CHANNEL_BY_NAME[c].target_fs for c in trained}  # 10-Hz channels: respiratory geometry
            if len(trained) == 1:
                kind = "neuronet"
                config = neuronet_config_for_rate(cfg.preset, rate[trained[0]], **cfg.model_args).to_dict()
            else:
                encoders = {c: neuronet_config_for_rate(cfg.preset, rate[c]).to_dict() for c in trained}
                kind = "synthsleepnet"
                config = synthsleepnet_config(
                    cfg.preset, channels=trained, encoders=encoders, **cfg.model_args
                ).to_dict()
        except (ValueError, TypeError) as err:
            raise UsageError(f"--preset {cfg.preset} / --model-arg: {err}") from err
        provenance = {
            "path": None,
            "sha256": None,
            "step": None,
            "kind": kind,
            "name": f"{kind}[{cfg.preset}]",
            "init": "random",
        }
        state = None
    if cfg.init == "random":
        provenance["name"] += " random-init"
    channels = list(cfg.channels) if cfg.channels else (trained if kind == "synthsleepnet" else trained[:1])
    if not channels:
        raise UsageError(
            f"--backbone {cfg.backbone}: the checkpoint does not say which channel it was trained on; pass --channels"
        )
    if kind == "neuronet" and len(channels) != 1:
        raise UsageError(f"a unimodal NeuroNet backbone encodes one channel, got --channels {channels}")
    spec = CHANNEL_BY_NAME.get(channels[0])
    if kind == "neuronet" and spec is not None and spec.target_fs != config.get("fs", spec.target_fs):
        raise UsageError(
            f"--channels {channels[0]} is sampled at {spec.target_fs} Hz; the NeuroNet backbone takes "
            f"{config['fs']:g}-Hz epochs (use a backbone pretrained on a {spec.target_fs}-Hz channel)"
        )
    if kind == "synthsleepnet" and not set(channels) <= set(trained):
        raise UsageError(f"--channels {channels} are not all channels of the SynthSleepNet ({trained})")
    return BackboneSource(kind, config, state, channels, provenance)


# ---------------------------------------------------------------------------------------- data
def _opened(make: Callable[[], Dataset], what: str) -> Any:
    """Build a dataset (UsageError naming the folder or file when it cannot be read) and print the recordings
    skipped."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*skipped \d+")  # reported below, with every reason
        try:
            dataset = make()
        except (ValueError, OSError, KeyError) as err:
            raise UsageError(f"{what}: {err}") from err
    if getattr(dataset, "skipped", None):
        reasons = Counter(dataset.skipped.values())
        print(
            f"{what}: skipped {len(dataset.skipped)} recording(s): "
            + "; ".join(f"{n} x {reason}" for reason, n in reasons.most_common()),
            flush=True,
        )
    return dataset


def val_split(cfg: argparse.Namespace) -> str | list[str]:
    """ "val", or a seeded subset of --max-val-recordings of its recordings."""
    recordings = read_splits(Path(cfg.data) / "splits.json")["recordings"]["val"]
    if not cfg.max_val_recordings or cfg.max_val_recordings >= len(recordings):
        return "val"
    pick = np.random.default_rng([cfg.seed, 3]).choice(len(recordings), cfg.max_val_recordings, replace=False)
    return sorted(recordings[i] for i in pick)


def epoch_dataset(
    cfg: argparse.Namespace, split: str | list[str], channels: Sequence[str], training: bool = False
) -> EpochDataset:
    """Labelled epochs of a split; `training` applies --label-fraction and --train-subjects."""
    name = split if isinstance(split, str) else f"val ({len(split)} recordings)"
    return _opened(
        lambda: EpochDataset(
            cfg.data,
            split,
            list(channels),
            task=cfg.task,
            label_fraction=cfg.label_fraction if training else 1.0,
            n_subjects=cfg.train_subjects if training else None,
            seed=cfg.seed,
            label_rule=cfg.label_rule,
        ),
        f"{cfg.data}, split {name}, channels {list(channels)}",
    )


def window_dataset(
    cfg: argparse.Namespace,
    split: str | list[str],
    channels: Sequence[str],
    epochs_per_window: int,
    tiling: bool,
    stride: int = 10,
    training: bool = False,
) -> SequenceDataset:
    """Windows of consecutive epochs of one recording; tiling mode predicts every epoch exactly once."""
    name = split if isinstance(split, str) else f"val ({len(split)} recordings)"
    return _opened(
        lambda: SequenceDataset(
            cfg.data,
            split,
            list(channels),
            task=cfg.task,
            epochs_per_window=epochs_per_window,
            stride=stride,
            seed=cfg.seed,
            n_subjects=cfg.train_subjects if training else None,
            label_rule=cfg.label_rule,
            tiling=tiling,
        ),
        f"{cfg.data}, split {name}, {epochs_per_window}-epoch windows, channels {list(channels)}",
    )


def eval_batch_size(cfg: argparse.Namespace, per_window: int = 1) -> int:
    """--eval-batch-size (or --batch-size) samples; with `per_window` epochs per sample, in windows (>= 1)."""
    return max(1, (cfg.eval_batch_size or cfg.batch_size) // per_window)


# ---------------------------------------------------------------------------------------- training pieces
def class_weights(counts: Sequence[int], mode: str) -> torch.Tensor | None:
    """Cross-entropy weights from training label counts (C,): balanced = N / (C x n_c); 1 for absent classes."""
    if mode == "none":
        return None
    counts = np.asarray(counts, dtype=np.float64)
    weights = np.where(counts > 0, counts.sum() / (len(counts) * np.maximum(counts, 1)), 1.0)
    return torch.tensor(weights, dtype=torch.float32)  # (C,)


class ClassificationLoss:
    """`compute_loss` for the engine: class-weighted cross-entropy; labels -1 are ignored.

    The model's input is `batch[input_key]` (cached features) or {channel: batch[channel]} (signals); logits
    (..., C) are matched with labels of the same leading shape.
    """

    def __init__(self, weights: torch.Tensor | None, channels: Sequence[str] = (), input_key: str | None = None):
        self.weights, self.channels, self.input_key = weights, list(channels), input_key

    def inputs(self, batch: Mapping[str, Any], device: torch.device) -> Any:
        if self.input_key is not None:
            return batch[self.input_key].to(device, non_blocking=True)  # (B, D) cached representations
        return {ch: batch[ch].to(device, non_blocking=True) for ch in self.channels}  # (B, [T,] 3000) at 100 Hz

    def __call__(self, model: nn.Module, batch: Mapping[str, Any], device: torch.device) -> dict[str, torch.Tensor]:
        logits = model(self.inputs(batch, device)).float()  # (B, [T,] C)
        labels = batch["label"].to(device, non_blocking=True).reshape(-1)  # (B [* T],) -1 = ignore
        flat = logits.reshape(labels.shape[0], -1)
        weight = None if self.weights is None else self.weights.to(device)
        loss = F.cross_entropy(flat, labels, weight=weight, ignore_index=-1)
        scored = labels >= 0
        accuracy = (flat.argmax(dim=1)[scored] == labels[scored]).float().mean()
        return {"loss": loss, "train_accuracy": accuracy.detach()}


class FeatureDataset(Dataset):
    """Cached representations: items {"features": (D,) float32, "label": () int64}."""

    def __init__(self, features: torch.Tensor, labels: torch.Tensor):
        self.features, self.labels = features, labels

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"features": self.features[index], "label": self.labels[index]}


@torch.no_grad()
def apply_epochs(
    function: Callable[[dict[str, torch.Tensor]], torch.Tensor],
    dataset: EpochDataset,
    channels: Sequence[str],
    device: torch.device,
    cfg: argparse.Namespace,
) -> FeatureDataset:
    """`function({channel: (B, 3000)}) -> (B, K)` over every item of a labelled EpochDataset, in order, without
    gradients (the caller sets eval mode): outputs (N, K) float32 on the CPU, with the labels (N,)."""
    loader = DataLoader(dataset, batch_size=eval_batch_size(cfg), shuffle=False, num_workers=cfg.workers)
    outputs, labels = [], []
    for batch in tqdm(
        loader, desc=f"encode {dataset.split}", unit="batch", leave=False, disable=not getattr(cfg, "progress", False)
    ):
        signals = {ch: batch[ch].to(device, non_blocking=True) for ch in channels}  # (B, 3000) each, 100 Hz
        with autocast_context(device, cfg.amp, cfg.amp_dtype):
            outputs.append(function(signals).float().cpu())  # (B, K)
        labels.append(batch["label"])
    return FeatureDataset(torch.cat(outputs), torch.cat(labels))


def encode_store(
    cfg: argparse.Namespace,
    encoder: EpochEncoder,
    source: BackboneSource,
    channels: Sequence[str],
    recordings: Sequence[str],
    device: torch.device,
) -> VectorStore:
    """Frozen `encoder` vectors of every epoch of `recordings` (`downstream.cache`): read from / written to
    --cache-dir when given and the backbone is a pretrained file, else computed in memory."""
    precision = f"amp-{cfg.amp_dtype}" if cfg.amp and device.type == "cuda" else "fp32"
    sha = source.provenance.get("sha256") if source.state is not None else None
    key = cache_key(sha, channels, precision) if sha else None

    def encode(signals: dict[str, torch.Tensor]) -> torch.Tensor:
        with autocast_context(device, cfg.amp, cfg.amp_dtype):
            return encoder(signals)  # (n, D)

    with evaluating(encoder):
        return encode_recordings(
            encode,
            cfg.data,
            recordings,
            channels,
            device,
            batch_epochs=eval_batch_size(cfg),
            workers=cfg.workers,
            cache_dir=cfg.cache_dir,
            key=key,
            progress=cfg.progress,
        )


def stored_features(store: VectorStore, dataset: EpochDataset) -> FeatureDataset:
    """The stored vectors of a labelled EpochDataset's samples, in its order: features (N, D), labels (N,)."""
    recordings, epochs = dataset.sample_index()
    return FeatureDataset(torch.from_numpy(store.gather(recordings, epochs)), torch.from_numpy(dataset.labels))


def predict_stored_epochs(
    cfg: argparse.Namespace,
    store: VectorStore,
    windows: SequenceDataset,
    channels: Sequence[str],
    classify: Callable[[torch.Tensor], torch.Tensor],
) -> Predictions:
    """A per-epoch model's probabilities for every epoch of `windows`' recordings exactly once, from stored
    vectors in the same tiling: `classify((n, D)) -> (n, C)` probabilities; labels from the split's index."""
    labels = epoch_labels(epoch_dataset(cfg, windows.split, channels))
    size = windows.epochs_per_window
    return predict_tiles(
        store,
        windows.recordings,
        size,
        lambda x: classify(x.flatten(0, 1)).reshape(*x.shape[:2], -1),  # (B, T, D) -> (B, T, C)
        labels,
        TASKS[cfg.task],
        eval_batch_size(cfg, size),
    )


# ---------------------------------------------------------------------------------------- prediction
def predict_windows(
    windows: SequenceDataset,
    predict_batch: Callable[[Mapping[str, Any]], torch.Tensor],
    n_classes: int,
    batch_size: int,
    workers: int = 0,
    progress: bool = False,
) -> Predictions:
    """Class probabilities for the `owned` epochs of every window (tiling mode: each epoch exactly once).

    `predict_batch(batch) -> (B, T, C)` probabilities (values at positions not owned are ignored).
    """
    if not windows.tiling:
        raise ValueError("predict_windows needs a SequenceDataset in tiling mode (every epoch exactly once)")
    collector = PredictionCollector(n_classes)
    loader = DataLoader(windows, batch_size=batch_size, shuffle=False, num_workers=workers)
    for batch in tqdm(loader, desc=f"predict {windows.split}", unit="batch", leave=False, disable=not progress):
        owned = batch["owned"].numpy()  # (B, T) bool
        probabilities = predict_batch(batch).float().cpu().numpy()  # (B, T, C)
        length = owned.shape[1]
        labels = batch["label"].numpy() if "label" in batch else np.full(owned.shape, -1)
        recordings = np.repeat(np.asarray(batch["recording"], dtype=object), length).reshape(owned.shape)
        collector.add(recordings[owned], batch["epoch_ids"].numpy()[owned], labels[owned], probabilities[owned])
    return collector.finish()


def epochwise(
    predict_epochs: Callable[[dict[str, torch.Tensor]], torch.Tensor], channels: Sequence[str]
) -> Callable[[Mapping[str, Any]], torch.Tensor]:
    """Turn a per-epoch predictor ({channel: (n, 3000)} -> (n, C) probabilities) into `predict_batch` for
    `predict_windows`: only the owned epochs of a window batch are run."""

    def predict_batch(batch: Mapping[str, Any]) -> torch.Tensor:
        owned = batch["owned"]  # (B, T) bool
        signals = {ch: batch[ch][owned] for ch in channels}  # (n_owned, 3000) each
        probabilities = predict_epochs(signals)  # (n_owned, C)
        out = torch.zeros(*owned.shape, probabilities.shape[-1])  # (B, T, C)
        out[owned] = probabilities.float().cpu()
        return out

    return predict_batch


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


# ---------------------------------------------------------------------------------------- run
def train_summary(counts: Sequence[int], recordings: Sequence[str], subjects: Sequence[str]) -> dict[str, Any]:
    counts = [int(c) for c in counts]
    return {
        "n_labelled": int(sum(counts)),
        "class_counts": counts,
        "n_recordings": len(recordings),
        "n_subjects": len(subjects),
        "subjects": sorted(subjects),
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
        "init": getattr(cfg, "init", "n/a"),
        "backbone": backbone.provenance if backbone else None,
        "backbone_name": backbone.name if backbone else "",
        "train": dict(train),
    }


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
) -> dict[str, Any]:
    """`utils.engine.fit` with best.pt selected by `val_<--select-metric>`; `initial_best`: the `val_*` metrics of
    the starting weights, which an epoch must beat to replace them as best.pt."""
    train_size = len(train_set)
    if train_size < 2:
        raise UsageError(
            f"{train_size} training sample(s); the head's BatchNorm needs at least 2 "
            "(raise --label-fraction or --train-subjects)"
        )
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
    )


def finish_run(
    cfg: argparse.Namespace,
    ctx: DistContext,
    model: nn.Module,
    summary: Mapping[str, Any],
    predict_test: Callable[[nn.Module, torch.device], Predictions],
    info: Mapping[str, Any],
) -> dict[str, Any] | None:
    """Load the checkpoint selected on `val`, predict `test` once, write the report (main process only)."""
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
    return report(cfg, predictions, {**info, "selection": selection})


def report(cfg: argparse.Namespace, predictions: Predictions, info: Mapping[str, Any]) -> dict[str, Any]:
    """Evaluate test predictions and write every output of the run (shared with the feature baseline)."""
    metrics = {**info, **evaluate_predictions(predictions, cfg.task, cfg.n_boot, cfg.seed)}
    if cfg.task in EVENT_FAMILIES:  # stored for the AHI of evaluate.py and predict.py
        metrics["event_calibration"] = event_calibration(cfg.data, cfg.task, cfg.label_rule)
    record = write_run_report(cfg.out, predictions, metrics, hypnograms=cfg.hypnograms)
    test = record["test"]
    headline = " ".join(
        f"{k} {test['pooled'].get(k):.3f}"
        for k in ("kappa", "macro_f1", "accuracy", "auroc")
        if isinstance(test["pooled"].get(k), float)
    )
    print(
        f"test ({test['n_subjects']} subjects, {test['n_epochs']} epochs): {headline} -> {cfg.out}/metrics.json",
        flush=True,
    )
    return record


# ---------------------------------------------------------------------------------------- reuse of a run
@dataclass
class DownstreamModel:
    """A trained downstream model ready for inference (eval mode).

    `model`: kind "epoch_classifier": {channel: (N, 3000)} → logits (N, C); kind "temporal_classifier":
    {channel: (B, T, 3000)} windows of T = `epochs_per_window` consecutive epochs → logits (B, T, C).
    """

    model: nn.Module
    kind: str
    task: str
    channels: list[str]
    epochs_per_window: int | None
    checkpoint: str
    event_scale: float = 1.0  # event tasks: scored events per counted event (metrics.json `event_calibration`)


_FILE_SHA256: dict[tuple[str, int, int], str] = {}  # (resolved path, size, mtime_ns) -> sha256 of the file
_FROZEN_ENCODERS: weakref.WeakValueDictionary[tuple[str, str, tuple[str, ...], str], EpochEncoder] = (
    weakref.WeakValueDictionary()
)  # (path, sha256, channels, device) -> frozen encoder, while some run holds it


def file_sha256(path: str | Path) -> str:
    """`sha256_file` of `path`, hashed once per process while its size and modification time stay the same."""
    where = Path(path).resolve()
    stat = where.stat()
    key = (str(where), stat.st_size, stat.st_mtime_ns)
    if key not in _FILE_SHA256:
        _FILE_SHA256[key] = sha256_file(where)
    return _FILE_SHA256[key]


def shared_encoder(path: str | Path, channels: Sequence[str], map_location: str | torch.device = "cpu") -> EpochEncoder:
    """The frozen `EpochEncoder` of a pretraining checkpoint over `channels`, built once per distinct backbone
    file (by content), channels and device while a loaded run still holds it: the probes of one backbone share
    one module instead of each rebuilding its own copy. Inference only: the module is frozen and shared, so
    callers must not train or modify it."""
    key = (str(Path(path).resolve()), file_sha256(path), tuple(channels), str(map_location))
    encoder = _FROZEN_ENCODERS.get(key)
    if encoder is None:
        encoder = EpochEncoder(load_backbone(path, map_location), list(channels), "frozen").eval()
        _FROZEN_ENCODERS[key] = encoder
    return encoder


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
    if kind == "mlp_head":
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
        encoder = shared_encoder(backbone["path"], metadata["channels"], map_location)
        model, kind = EpochClassifier(encoder, model), "epoch_classifier"
    calibration = {}
    metrics_path = path.parent / "metrics.json"  # written by the run after training (event_calibration)
    if metadata["task"] in EVENT_FAMILIES and metrics_path.is_file():
        calibration = json.loads(metrics_path.read_text()).get("event_calibration") or {}
    return DownstreamModel(
        model.eval(),
        kind,
        metadata["task"],
        list(metadata["channels"]),
        metadata.get("epochs_per_window"),
        str(path),
        float(calibration.get("scale", 1.0)),
    )
