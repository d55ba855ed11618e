"""Command-line options of benchmarks/ssl_scaling.py: the parser, the sizes it presets, and the checks that
turn a bad combination into one `error:` line (exit 2)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from models.mamba import DIRECTIONS
from models.synthsleepnet import MASK_MODES

EXTRA_SUBJECT_START = 300001  # extra subjects' ids; the base cohort's are 200001 + night index
SIZES: dict[str, dict[str, Any]] = {
    # 24 nights x 8 h: 6 test, 3 val and 15 pretrain/train subjects (14,400 pretraining epochs) + 96 extra nights.
    "default": {
        "nights": 24,
        "hours": 8.0,
        "extra_factor": 4,
        "test_subjects": 6,
        "val_subjects": 3,
        "budgets": [40, 160, 640, 2560],
    },
    # seconds-scale smoke size for the end-to-end test
    "tiny": {"nights": 6, "hours": 2.0, "extra_factor": 1, "test_subjects": 2, "val_subjects": 1, "budgets": [4, 16]},
}


def fraction_list(text: str) -> list[float]:
    values = [float(v) for v in text.split(",") if v.strip()]
    if not values or any(not 0 < v <= 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated fractions in (0, 1], got {text!r}")
    return values


def optional_fraction_list(text: str) -> list[float]:
    """`fraction_list`, or "none" for no fraction at all."""
    return [] if text.strip().lower() == "none" else fraction_list(text)


def int_set(text: str, low: int, what: str) -> list[int]:
    """Comma-separated integers, each >= `low`, as a sorted list without repeats; argparse's error otherwise."""
    try:
        values = sorted({int(v) for v in text.split(",") if v.strip()})
    except ValueError:
        values = []
    if not values or values[0] < low:
        raise argparse.ArgumentTypeError(f"expected comma-separated {what} >= {low}, got {text!r}")
    return values


def neighbour_list(text: str) -> list[int]:
    return int_set(text, 0, "integers")


def budget_list(text: str) -> list[int]:
    return int_set(text, 1, "step counts")


def build_parser(description: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--out", type=Path, default=Path("runs/ssl_scaling"), help="work folder: cohorts, runs, tables (reused)"
    )
    parser.add_argument(
        "--size",
        choices=tuple(SIZES),
        default="default",
        help="preset of the five options below (explicit options win)",
    )
    parser.add_argument("--nights", type=int, default=None, help="base cohort nights (one subject each)")
    parser.add_argument("--hours", type=float, default=None, help="hours per night")
    parser.add_argument(
        "--extra-factor",
        type=int,
        default=None,
        help="extra unlabelled nights of new subjects, as a multiple of --nights (0: none)",
    )
    parser.add_argument("--test-subjects", type=int, default=None, help="subjects held out for the test split")
    parser.add_argument("--val-subjects", type=int, default=None, help="subjects of the val split (selection only)")
    parser.add_argument(
        "--preset",
        default="fast",
        help="NeuroNet preset of the unimodal encoders and of the from-scratch model's encoders (default fast, the "
        "first curve of benchmarks/README.md; spectral is the demo's recipe); the fusion is SynthSleepNet tiny",
    )
    parser.add_argument(
        "--budgets",
        type=budget_list,
        default=None,
        help="pretraining optimizer steps of each model, comma-separated (e.g. 40,160,640,2560)",
    )
    parser.add_argument(
        "--seed", type=int, default=20261206, help="cohort seed (the extra nights use seed + 1); also the training seed"
    )
    parser.add_argument(
        "--warmup-steps",
        type=int,
        default=None,
        help="pretraining lr warmup (default: half the smallest budget, at most 100)",
    )
    parser.add_argument("--lr", type=float, default=2e-3, help="unimodal base lr (x batch / 256)")
    parser.add_argument("--multimodal-lr", type=float, default=1e-3, help="multimodal base lr (x batch / 256)")
    parser.add_argument(
        "--mask-mode",
        choices=MASK_MODES,
        default="independent",
        help="SynthSleepNet masking of every multimodal pretraining (docs/models.md): independent (published), "
        "shared or channel; an OUT keeps the mode it was made with",
    )
    parser.add_argument(
        "--max-pretrain-cpu-min",
        type=float,
        default=90.0,
        help="stop after the second budget when the largest is estimated to need more pretraining "
        "CPU-minutes than this, all data amounts together (0: no check)",
    )
    parser.add_argument(
        "--probe-fractions",
        type=fraction_list,
        default=[0.01, 0.05, 1.0],
        help="label fractions of the probes and the baselines, comma-separated",
    )
    parser.add_argument(
        "--neighbour-epochs",
        type=neighbour_list,
        default=[0, 3],
        help="neighbouring epochs on each side that the probes and the feature baseline read, comma-separated: "
        "one run of each per value (0: the epoch alone; 3 had the best val kappa of 0, 1, 2, 3 and 5, both "
        "methods and three label fractions together, benchmarks/README.md)",
    )
    parser.add_argument(
        "--finetune-fractions",
        type=optional_fraction_list,
        default=[0.05, 1.0],
        help="label fractions fine-tuned, comma-separated, or none",
    )
    parser.add_argument(
        "--finetune-budgets",
        type=budget_list,
        default=None,
        help="the budgets whose backbones are also fine-tuned, comma-separated (default: every budget)",
    )
    parser.add_argument(
        "--tree-fractions",
        type=optional_fraction_list,
        default=[0.01, 0.05],
        help="label fractions at which gradient-boosted trees also classify each pretrained backbone's frozen "
        "vectors (rows backbone_hgb: the feature baseline's classifier on the learned representation), "
        "comma-separated, or none; at 100 %% one fit takes about 10 CPU-minutes at the default size",
    )
    parser.add_argument(
        "--tree-pooling",
        choices=("channel", "mean"),
        default="channel",
        help="what those trees read of each epoch: each channel's mean fused token, concatenated (the demo's recipe; "
        "folders downstream/trees_channel), or the mean over all tokens, the probe's vector (downstream/trees)",
    )
    parser.add_argument(
        "--night-norm",
        choices=("none", "zscore"),
        default="none",
        help="how the probes, the trees and the feature baseline standardise each night's vectors (or features) "
        "before the classifier (their --night-norm; zscore: folders end in -night-zscore)",
    )
    parser.add_argument("--probe-steps", type=int, default=1500, help="about this many MLP-head steps per probe")
    parser.add_argument("--probe-max-passes", type=int, default=200, help="passes per probe at most")
    parser.add_argument(
        "--probe-min-passes",
        type=int,
        default=30,
        help="passes per probe at least: with every label (14,400 epochs at the default size) 1,500 steps are "
        "4 passes, and the head's val kappa was still rising after 20 (benchmarks/README.md)",
    )
    parser.add_argument("--scratch-steps", type=int, default=600, help="about this many steps per scratch run")
    parser.add_argument(
        "--scratch-max-passes", type=int, default=20, help="each pass ends with a full val pass of the whole model"
    )
    parser.add_argument(
        "--scratch-context-fractions",
        type=optional_fraction_list,
        default=[1.0],
        help="label fractions at which supervised-from-scratch also trains fine-tuning's temporal architecture "
        "(windows of 20 epochs, Mamba2 context; rows scratch_finetune), comma-separated, or none",
    )
    parser.add_argument(
        "--scratch-context-passes",
        type=int,
        default=3,
        help="passes of each temporal scratch run (each trains the whole model on windows of 20 epochs)",
    )
    parser.add_argument(
        "--finetune-passes",
        "--finetune-epochs",
        dest="finetune_passes",
        type=int,
        default=1,
        help="LoRA passes of fine-tuning. --finetune-epochs: the old name, still accepted",
    )
    parser.add_argument(
        "--context-passes",
        "--context-epochs",
        dest="context_passes",
        type=int,
        default=30,
        help="fine-tuning phase 1 passes (cached vectors). --context-epochs: the old name, still accepted",
    )
    parser.add_argument("--finetune-stride", type=int, default=10, help="epochs between fine-tuning windows")
    parser.add_argument(
        "--eval-stride",
        type=int,
        default=10,
        help="epochs between the evaluation windows of fine-tuning and of scratch with context (each epoch is "
        "predicted where it is most central; 20, the window: disjoint windows, the folders of earlier runs); "
        "other strides go to …-es<stride> folders",
    )
    parser.add_argument(
        "--context-direction",
        choices=DIRECTIONS,
        default="bidirectional",
        help="fine-tuning's Mamba2 context (forward: the published causal one); bidirectional runs go to …-bi folders",
    )
    parser.add_argument(
        "--finetune-max-steps",
        type=int,
        default=0,
        help="cap on the LoRA phase's optimizer steps (0: none); its lr schedule still spans --finetune-passes, so "
        "a capped phase stops early in that schedule. Each LoRA step runs the whole model on windows of 20 "
        "six-channel epochs: on 2 CPU cores one pass at the default size takes the better part of an hour. Runs "
        "with a cap go to their own folders (…/lf<fraction>-max<steps>)",
    )
    return parser


def parse_args(argv: list[str] | None, description: str | None = None) -> argparse.Namespace:
    """The options of `argv` with the --size preset filled in and every combination checked."""
    parser = build_parser(description)
    args = parser.parse_args(argv)
    for key, value in SIZES[args.size].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.test_subjects < 1 or args.val_subjects < 1 or args.test_subjects + args.val_subjects >= args.nights:
        parser.error(
            f"--nights {args.nights} must exceed --test-subjects {args.test_subjects} + --val-subjects "
            f"{args.val_subjects} (both >= 1)"
        )
    if args.extra_factor < 0 or args.hours <= 0 or args.nights >= EXTRA_SUBJECT_START - 200001:
        parser.error("--extra-factor must be >= 0, --hours > 0 and --nights < 100000")
    if args.finetune_max_steps < 0:
        parser.error(f"--finetune-max-steps must be >= 0, got {args.finetune_max_steps}")
    if not 1 <= args.probe_min_passes <= args.probe_max_passes:
        parser.error(
            f"--probe-min-passes {args.probe_min_passes} must be >= 1 and <= --probe-max-passes {args.probe_max_passes}"
        )
    if not 1 <= args.eval_stride <= 20:
        parser.error(f"--eval-stride must be between 1 and 20 (fine-tuning's window), got {args.eval_stride}")
    if args.scratch_context_passes < 1:
        parser.error(f"--scratch-context-passes must be >= 1, got {args.scratch_context_passes}")
    if not set(args.scratch_context_fractions) <= set(args.probe_fractions):
        parser.error(
            f"--scratch-context-fractions {args.scratch_context_fractions} must be among --probe-fractions "
            f"{args.probe_fractions}"
        )
    if args.finetune_budgets is None:
        args.finetune_budgets = list(args.budgets)
    if args.warmup_steps is None:
        args.warmup_steps = max(1, min(100, args.budgets[0] // 2))
    return args
