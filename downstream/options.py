"""Options of the downstream scripts (docs/training.md 4.1, docs/evaluation.md 5.2): the task and backbone
option groups on top of the engine's shared parser (utils/config.py), their checks, the `val` metrics that may
select a checkpoint, and the default --out of a run.

Bad input raises UsageError (or `parser.error`) before anything is written; each script's `main` reports it as
one `error:` line, exit status 2 (`utils.config.reported_errors`).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dataset.constants import CHANNEL_BY_NAME, EPHYS_CHANNELS, EPOCH_SAMPLES, TASKS
from downstream.results import FINE_TUNE, LINEAR_PROBE, SCRATCH_FINETUNE, SCRATCH_PROBE
from models.heads import NIGHT_NORMS, PER_CHANNEL_POOLINGS, POOLINGS
from models.loading import SYNTHSLEEPNET
from utils.checkpoint import replaceable
from utils.config import (
    CONFIG_HISTORY_HELP,
    Config,
    UsageError,
    build_parser,
    check_cohort,
    check_out_dir,
    comma_list,
    fraction,
    non_negative_int,
    parse_config,
    path_arg,
    positive_int,
    probability,
)

if TYPE_CHECKING:
    from downstream.backbone import BackboneSource

SELECT_METRICS: dict[str, str] = {"kappa": "max", "macro_f1": "max", "accuracy": "max", "auroc": "max", "loss": "min"}
BINARY_METRICS: tuple[str, ...] = ("auroc",)  # scored on `val` for the two-class tasks only (training.selection_scores)


def task_metrics(task: str) -> tuple[str, ...]:
    """The --select-metric values `task` is scored by on `val` (`downstream.training.selection_scores`): kappa,
    macro_f1, accuracy and loss for every task, auroc for the binary ones (TASKS: 2 classes)."""
    return tuple(metric for metric in SELECT_METRICS if metric not in BINARY_METRICS or TASKS[task] == 2)


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
        help="`val` metric that selects the checkpoint (best.pt); `test` is never used for it; auroc: the binary "
        "event tasks only. auto: auroc for the binary event tasks (kappa of a rare class says little), kappa for "
        "staging",
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


def add_neighbour_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """--neighbour-epochs and --night-norm of the per-epoch methods on stored vectors (the linear probe, the
    feature baseline): what the classifier reads of the rest of the night."""
    group = parser.add_argument_group("the rest of the night")
    group.add_argument(
        "--neighbour-epochs",
        type=non_negative_int,
        default=0,
        help="also give the classifier the K epochs before and after each epoch: their vectors (or "
        "features) concatenated with its own, the recording's first / last epoch repeated at its ends "
        "(`downstream.cache.neighbour_vectors`); 0 = the epoch alone",
    )
    group.add_argument(
        "--night-norm",
        choices=NIGHT_NORMS,
        default="none",
        help="zscore: standardise each component of the vectors (or features) over the night's epochs before "
        "the classifier (`downstream.cache.night_normalised`), so what differs between nights (electrodes, "
        "amplifier, sleeper) is removed and what differs between its epochs kept (a probe's head records it, "
        "so predict.py standardises each new night over the epochs it predicts); none: as stored",
    )
    return parser


def add_pooling_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """--pooling: how a SynthSleepNet backbone's fused tokens become one vector per epoch (EpochEncoder)."""
    parser.add_argument_group("pooling").add_argument(
        "--pooling",
        choices=POOLINGS,
        default="mean",
        help="with a SynthSleepNet backbone: mean = the mean fused token (D numbers); channel = the mean fused "
        "token of each channel, concatenated (C x D), as the hand-crafted features keep channels apart; "
        "channel_stats = each channel's mean and standard deviation over its frames (2 x C x D), keeping what "
        "changes within the epoch (every channel must be present in every night with either)",
    )
    return parser


def check_pooling(cfg: Config, source: BackboneSource) -> None:
    """UsageError when a per-channel --pooling meets a backbone that reads one channel."""
    pooling = getattr(cfg, "pooling", "mean")
    if pooling in PER_CHANNEL_POOLINGS and source.kind != SYNTHSLEEPNET:
        raise UsageError(f"--pooling {pooling}: backbone {source.name} is a unimodal NeuroNet (one channel)")


def add_backbone_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    group = parser.add_argument_group("backbone and head")
    group.add_argument(
        "--backbone",
        type=path_arg,
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
        type=path_arg,
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
    parser = build_parser(
        description, defaults={"out": None, **defaults}, add_options=[add_task_args, add_backbone_args, *extra]
    )
    for action in parser._actions:
        if action.dest == "out":
            action.help = (
                "run directory (default: runs/downstream/<method>/<task>-lf<fraction>[-n<subjects>][-nb<K>]"
                f"[-night-zscore][-per-channel|-channel-stats][-logistic]-seed<seed>); {CONFIG_HISTORY_HELP}"
            )
    return parser


def check_task_options(parser: argparse.ArgumentParser, cfg: Config) -> None:
    """Validate the task group beyond what its typed options check: `parser.error` on a bad option value (a
    --select-metric the task is not scored by, `task_metrics`), UsageError when --data is no parsed cohort (a data
    error, reported by the script's `main`)."""
    if cfg.task is None:
        parser.error(f"--task is required ({', '.join(TASKS)})")
    if cfg.select_metric != "auto" and cfg.select_metric not in task_metrics(cfg.task):
        parser.error(
            f"--select-metric {cfg.select_metric}: task {cfg.task} has no val_{cfg.select_metric} "
            f"({TASKS[cfg.task]} classes); its metrics: auto, {', '.join(task_metrics(cfg.task))}"
        )
    check_cohort(cfg.data, "train")
    if cfg.task != "sleep_stage":  # the event tasks' AHI calibration reads the events table after the encoding
        from dataset.event_targets import read_event_table  # here: pandas, which parsing options needs not

        try:
            read_event_table(cfg.data)
        except (FileNotFoundError, ValueError) as err:
            raise UsageError(f"--data {cfg.data}: {err}") from None
    if cfg.task == "sleep_stage" and cfg.label_rule != "midpoint":
        parser.error("--label-rule applies to the event tasks only")


def parse_downstream(
    parser: argparse.ArgumentParser, argv: list[str] | None, method_of: Callable[[Config], str]
) -> Config:
    """Parse, check and resolve once into a frozen Config: `method` is `method_of(cfg)`, `--select-metric auto`
    the task's metric, and `--out` defaults to runs/downstream/<method>/<task>-lf<fraction>[-n<subjects>]-seed<seed>,
    which must be a usable directory (`-nb<K>` before `-seed` with `--neighbour-epochs K`)."""
    cfg = parse_config(parser, argv)
    check_task_options(parser, cfg)
    if hasattr(cfg, "head_hidden"):
        if getattr(cfg, "init", "pretrained") == "pretrained" and cfg.backbone is None:
            parser.error("--backbone is required with --init pretrained (or use --init random)")
        backbone = Path(cfg.backbone) if cfg.backbone is not None else None
        cfg = cfg.replace(head_hidden=int_list(cfg.head_hidden), backbone=backbone)
    if cfg.channels is not None:
        unknown = [c for c in cfg.channels if c not in CHANNEL_BY_NAME]
        if unknown:
            parser.error(f"--channels {unknown}: unknown; canonical names: {', '.join(CHANNEL_BY_NAME)}")
        bad = [c for c in cfg.channels if CHANNEL_BY_NAME[c].epoch_samples != EPOCH_SAMPLES]
        if bad and not hasattr(cfg, "head_hidden") and getattr(cfg, "backbone", None) is None:
            # backbones take the 10-Hz channels too; the features do not
            parser.error(
                f"--channels {bad}: the hand-crafted features take 100-Hz electrophysiology channels "
                f"({', '.join(EPHYS_CHANNELS)})"
            )
    if cfg.select_metric == "auto":
        cfg = cfg.replace(select_metric="auroc" if TASKS[cfg.task] == 2 else "kappa")
    cfg = cfg.replace(method=method_of(cfg))
    if cfg.out is None:
        subjects = f"-n{cfg.train_subjects}" if cfg.train_subjects else ""
        neighbours = f"-nb{cfg.neighbour_epochs}" if getattr(cfg, "neighbour_epochs", 0) else ""
        pooled = {"channel": "-per-channel", "channel_stats": "-channel-stats"}.get(getattr(cfg, "pooling", "mean"), "")
        night = f"-night-{cfg.night_norm}" if getattr(cfg, "night_norm", "none") != "none" else ""
        head = "-logistic" if getattr(cfg, "head", "mlp") == "logistic" else ""
        name = f"{cfg.task}-lf{cfg.label_fraction:g}{subjects}{neighbours}{night}{pooled}{head}-seed{cfg.seed}"
        cfg = cfg.replace(out=Path("runs") / "downstream" / cfg.method / name)
    check_out_dir(cfg.out)
    if cfg.method in ENGINE_METHODS:  # the feature baseline checks its own --out (`check_run_folder`)
        refuse_foreign_run(cfg.out, lambda record: record.get("method") in ENGINE_METHODS)
    if getattr(cfg, "cache_dir", None) is not None:
        check_out_dir(cfg.cache_dir, "--cache-dir")
    return cfg


ENGINE_METHODS = (LINEAR_PROBE, FINE_TUNE, SCRATCH_PROBE, SCRATCH_FINETUNE)  # runs of utils/engine.py


def run_record(out: Path) -> dict[str, Any] | None:
    """The metrics.json of the finished run in `out`, or None when there is none that can be read."""
    try:
        record = json.loads((Path(out) / "metrics.json").read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def refuse_foreign_run(out: Path, own: Callable[[Mapping[str, Any]], bool]) -> None:
    """UsageError when `out` holds the finished run of another script (its metrics.json, for which `own` is
    false): a new run would publish beside files it does not know of (a detector's model.pkl, another method's
    report), and the folder would describe one run while holding another's."""
    record = run_record(out)
    if record is not None and not own(record):
        what = f"{record.get('method', '?')} {record.get('task', '?')}"
        raise UsageError(
            f"--out {out}: a folder holding other files (a run of another script ({what})); give a new or empty folder"
        )


def check_run_folder(out: Path, own: Callable[[Mapping[str, Any]], bool], whole: bool = False) -> None:
    """UsageError unless `out` is new, an empty folder, or holds a finished run of the calling script (`own` of its
    metrics.json), for the scripts that write no checkpoint to resume from. `whole`: the run replaces the folder
    whole, which a symbolic link cannot be (`utils.checkpoint.staged_folder`)."""
    if replaceable(Path(out), ()):
        return
    refuse_foreign_run(out, own)
    if run_record(out) is None or (whole and Path(out).is_symlink()):
        raise UsageError(
            f"--out {out}: a folder holding other files (not a run of this script); give a new or empty folder"
        )
