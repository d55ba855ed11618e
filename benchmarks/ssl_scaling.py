"""Do unlabelled nights make labelled ones go further? The self-supervision learning curve of SynthSleepNet.

1. Cohort. `--nights` synthetic nights of `--hours` h (dataset/synthetic.py, seed `--seed`, subjects 200001...)
   are parsed into OUT/data/own with `--test-subjects` test and `--val-subjects` val subjects; every other
   subject is `pretrain`, and its labelled nights are also `train` (the downstream labels).
   EXTRA: `--extra-factor` x as many nights of NEW subjects (subjects 300001..., seed `--seed` + 1) are
   generated, and OUT/data/own+extra is made by parsing base + extra nights into a copy of OUT/data/own (its
   recordings hard-linked, so the base nights are not parsed again). splits.json is made once (docs/data.md):
   a rerun keeps every subject where it is and new subjects join `pretrain` only, never train / val / test.
   So the two folders share train, val and test exactly, and the extra nights are unlabelled in effect: they
   only ever reach the self-supervised objectives. Two data amounts: "own" (pretraining on OUT/data/own) and
   "own+<k>x" (on OUT/data/own+extra).
2. Pretraining at each of `--budgets` (optimizer steps of each model, growing x4): the four unimodal
   NeuroNets of `--preset` (pretrained/unimodal/<m>/train.py), then the tiny SynthSleepNet over them
   (pretrained/multimodal/train.py), each for the budget's steps. The training scripts define their lr cosine
   over whole passes (--passes) and have no option for a schedule that ends at a step count, so every run uses
   a fixed warmup (`--warmup-steps`) and then a CONSTANT lr (--min-lr-ratio 1), stopped by --max-steps: the
   schedule does not depend on the budget, so a unimodal run of budget b is the run of the budget before it
   resumed to b steps (the same model a fresh run gives; the unimodal chain costs the largest budget once).
   Each multimodal run starts afresh on its budget's unimodal models. Each run's process CPU time
   (getrusage of the child) is stored; a budget's pretraining CPU-minutes = its unimodal chain up to it +
   its multimodal run. After the smallest budget the CPU of every budget is estimated from the measured step
   rates and printed (refined after the second budget, which also fits the start-up cost of a run); the
   benchmark stops there if the largest would exceed `--max-pretrain-cpu-min` (all data amounts together).
3. Staging (--task sleep_stage) of every pretrained SynthSleepNet: linear probe at `--probe-fractions`
   (1, 5, 100 % of the train labels) and fine-tuning at `--finetune-fractions` (5, 100 %); supervised from
   scratch (--init random, same architecture) and the hand-crafted-feature baseline once at the probe
   fractions; at `--scratch-context-fractions` (100 %) also from scratch with fine-tuning's windows and
   temporal context (rows scratch_finetune), the fair reference for fine-tuning. The probes and the feature baseline run once per `--neighbour-epochs` value K (default 0 and
   3): the classifier reads each epoch with its K neighbours on each side (rows "linear_probe ±K",
   "features_hgb ±K"). Model selection on `val` only (the scripts' own); `test` scored once per run.
4. OUT/results.csv, OUT/results.md (kappa with subject-bootstrap 95 % CIs, macro-F1, N1 F1 from each run's
   metrics.json) and OUT/ssl_scaling.png (kappa against pretraining CPU-minutes, log x), written by
   benchmarks/ssl_scaling_report.py.

The baselines run first, then budget by budget pretraining and its staging runs; the outputs of step 4 are
rewritten after every budget. Every stage is skipped when its outputs exist, so a crashed or interrupted
benchmark resumes where it stopped.

    python benchmarks/ssl_scaling.py [--out runs/ssl_scaling] [--size default|tiny]
        [--nights 24] [--hours 8] [--extra-factor 4] [--budgets 40,160,640,2560] [--seed 20261206]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.ssl_scaling_report import result_rows, write_results
from dataset import data_parser, synthetic
from dataset.constants import EPHYS_CHANNELS, MODALITY_CHANNELS
from dataset.constants import EPHYS_MODALITIES as MODALITIES
from dataset.datasets import EpochDataset

CHANNELS = list(EPHYS_CHANNELS)
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
BATCH = 32  # pretraining samples per step (unimodal: single-channel epochs; multimodal: six-channel epochs)


# ---------------------------------------------------------------------------------------- running scripts
def child_cpu_seconds() -> float:
    """User + system CPU seconds of all finished (waited-for) child processes so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_script(script: str, *args: object) -> float:
    """Run `python SCRIPT ARGS` and return its CPU seconds; stop the benchmark (exit 1) when it fails."""
    command = [sys.executable, script, *map(str, args)]
    print("$ " + " ".join(command[1:]), flush=True)
    started, cpu_before = time.time(), child_cpu_seconds()
    code = subprocess.call(command)
    cpu = child_cpu_seconds() - cpu_before
    if code != 0:
        print(
            f"error: {script} exited with code {code}; see its message above (finished runs are kept: rerun "
            "the same command to resume)",
            file=sys.stderr,
        )
        raise SystemExit(1)
    print(f"[{time.time() - started:.0f} s wall, {cpu:.0f} s CPU] {script}", flush=True)
    return cpu


def write_json(path: Path, value: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(value, indent=1) + "\n")
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------- data
def prepare_data(args: argparse.Namespace) -> dict[str, Path]:
    """{data amount: parsed folder}: the base cohort alone and base + extra nights (module docstring, step 1)."""
    root = args.out / "data"
    own, extra = root / "own", root / "own+extra"
    split = dict(
        test_frac=args.test_subjects / args.nights, val_frac=args.val_subjects / args.nights, train_subjects=args.nights
    )
    if not (own / "splits.json").is_file():
        started = time.time()
        synthetic.generate_cohort(root / "src_own", nights=args.nights, hours=args.hours, seed=args.seed)
        data_parser.parse_cohort(root / "src_own", own, workers=2, progress=False, **split)
        if not (own / "splits.json").is_file():
            raise SystemExit(f"error: {own}: no splits.json (see the message above)")
        print(f"own cohort: {args.nights} nights x {args.hours:g} h in {time.time() - started:.0f} s", flush=True)
    amounts = {"own": own}
    if args.extra_factor > 0:
        if not (extra / "splits.json").is_file():
            started = time.time()
            n_extra = args.extra_factor * args.nights
            synthetic.generate_cohort(
                root / "src_extra",
                nights=n_extra,
                hours=args.hours,
                seed=args.seed + 1,
                variations={i: {"subject_id": str(EXTRA_SUBJECT_START + i)} for i in range(n_extra)},
            )
            both = root / "src_all"  # base + extra EDF/XML side by side (hard links), for one parse
            shutil.rmtree(both, ignore_errors=True)
            for source in (root / "src_own", root / "src_extra"):
                shutil.copytree(
                    source / "polysomnography", both / "polysomnography", copy_function=os.link, dirs_exist_ok=True
                )
            partial = root / ".own+extra.tmp"
            shutil.rmtree(partial, ignore_errors=True)
            shutil.copytree(own, partial, copy_function=os.link)  # same recordings (reused by hash) and splits
            os.remove(partial / "splits.json")
            shutil.copy2(own / "splits.json", partial / "splits.json")  # a real copy: this one gets rewritten
            data_parser.parse_cohort(both, partial, workers=2, progress=False, **split)
            os.replace(partial, extra)
            print(f"extra nights: {n_extra} x {args.hours:g} h in {time.time() - started:.0f} s", flush=True)
        amounts[f"own+{args.extra_factor}x"] = extra
    own_splits = json.loads((own / "splits.json").read_text())["recordings"]
    for name, dst in amounts.items():
        splits = json.loads((dst / "splits.json").read_text())["recordings"]
        if any(splits[s] != own_splits[s] for s in ("train", "val", "test")):
            raise SystemExit(f"error: {dst / 'splits.json'}: train/val/test differ from {own / 'splits.json'}")
        print(
            f"{name}: {len(splits['pretrain'])} pretraining nights, {len(splits['train'])} train, "
            f"{len(splits['val'])} val, {len(splits['test'])} test",
            flush=True,
        )
    return amounts


# ---------------------------------------------------------------------------------------- pretraining
def pretrain_args(
    args: argparse.Namespace, dst: Path, out: Path, steps: int, epochs: int, lr: float, preset: str
) -> list:
    return [
        "--data",
        dst,
        "--out",
        out,
        "--preset",
        preset,
        "--passes",
        epochs,
        "--max-steps",
        steps,
        "--batch-size",
        BATCH,
        "--base-lr",
        lr,
        "--warmup-steps",
        args.warmup_steps,
        "--min-lr-ratio",
        1.0,
        "--workers",
        0,
        "--no-monitor",
        "--no-progress",
        "--seed",
        args.seed,
        "--log-every",
        10,
    ]


def passes_for(dst: Path, channels: Sequence[str], steps: int, pooled: bool) -> int:
    """--passes that hold `steps` optimizer steps of BATCH samples of the `pretrain` split (the schedule is
    constant after warmup, so this only has to be large enough)."""
    n = len(EpochDataset(dst, "pretrain", list(channels), pool_channels=pooled))
    return max(1, math.ceil(steps / max(1, n // BATCH)))


def pretrain_unimodal(args: argparse.Namespace, dst: Path, root: Path, budget: int) -> dict[str, Path]:
    """The four unimodal runs of `budget` steps (each continues the run of the budget before it)."""
    runs = {}
    for modality in MODALITIES:
        run = root / f"unimodal-{modality}" / f"steps{budget}"
        runs[modality] = run
        if (run / "cpu.json").is_file():
            continue
        earlier = [b for b in args.budgets if b < budget]
        partial = run.with_name(f".{run.name}.tmp")
        shutil.rmtree(partial, ignore_errors=True)
        if earlier:
            shutil.copytree(root / f"unimodal-{modality}" / f"steps{earlier[-1]}", partial)
            os.remove(partial / "cpu.json")
        epochs = passes_for(dst, MODALITY_CHANNELS[modality], max(args.budgets), pooled=True)
        cpu = run_script(
            f"pretrained/unimodal/{modality}/train.py",
            *pretrain_args(args, dst, partial, budget, epochs, args.lr, args.preset),
            "--resume",
            "auto",
        )
        write_json(partial / "cpu.json", {"cpu_s": cpu, "steps": budget, "from_steps": earlier[-1] if earlier else 0})
        os.replace(partial, run)
    return runs


def pretrain_multimodal(
    args: argparse.Namespace, dst: Path, root: Path, budget: int, unimodal: Mapping[str, Path]
) -> Path:
    run = root / "multimodal" / f"steps{budget}"
    if (run / "cpu.json").is_file():
        return run
    partial = run.with_name(f".{run.name}.tmp")
    shutil.rmtree(partial, ignore_errors=True)
    epochs = passes_for(dst, CHANNELS, max(args.budgets), pooled=False)
    cpu = run_script(
        "pretrained/multimodal/train.py",
        *pretrain_args(args, dst, partial, budget, epochs, args.multimodal_lr, "tiny"),
        "--resume",
        "none",
        "--unimodal",
        ",".join(f"{m}={unimodal[m]}" for m in MODALITIES),
    )
    write_json(partial / "cpu.json", {"cpu_s": cpu, "steps": budget, "from_steps": 0})
    os.replace(partial, run)
    return run


def pretrain_cpu_minutes(root: Path, budgets: Sequence[int], budget: int) -> float:
    """Measured CPU-minutes of all pretraining behind the SynthSleepNet of `budget`: each unimodal chain up to
    it and its multimodal run."""
    read = lambda path: json.loads(path.read_text())["cpu_s"]  # noqa: E731
    seconds = sum(
        read(root / f"unimodal-{m}" / f"steps{b}" / "cpu.json") for m in MODALITIES for b in budgets if b <= budget
    )
    return (seconds + read(root / "multimodal" / f"steps{budget}" / "cpu.json")) / 60


def estimate_cpu_minutes(root: Path, budgets: Sequence[int]) -> dict[int, float]:
    """CPU-minutes of every budget, linear in steps from the finished runs (smallest budget first: a fixed
    start-up cost per process plus a per-step cost once two budgets are done, per step only before that)."""

    def fit(points: list[tuple[float, float]]) -> tuple[float, float]:  # (steps, cpu_s) -> (start-up, per step)
        if len(points) >= 2:
            slope, start = np.polyfit([p[0] for p in points], [p[1] for p in points], 1)
            if slope > 0:
                return max(0.0, float(start)), float(slope)
        return 0.0, sum(p[1] for p in points) / sum(p[0] for p in points)

    def finished(folder: Path) -> list[tuple[float, float]]:
        points = []
        for b in budgets:
            path = folder / f"steps{b}" / "cpu.json"
            if path.is_file():
                record = json.loads(path.read_text())
                points.append((record["steps"] - record["from_steps"], record["cpu_s"]))
        return points

    estimate = {}
    stages = {m: fit(finished(root / f"unimodal-{m}")) for m in MODALITIES}
    start, per_step = fit(finished(root / "multimodal"))
    for budget in budgets:
        chain = [b for b in budgets if b <= budget]
        unimodal = sum(s + r * (b - a) for (s, r) in stages.values() for a, b in zip([0, *chain[:-1]], chain))
        estimate[budget] = (unimodal + start + per_step * budget) / 60
    return estimate


# ---------------------------------------------------------------------------------------- downstream
def n_train_labels(dst: Path, fraction: float, seed: int) -> int:
    """Labelled staging epochs a run at `fraction` trains on (the scripts' own seeded draw)."""
    return len(EpochDataset(dst, "train", CHANNELS, task="sleep_stage", label_fraction=fraction, seed=seed))


def head_budget(n_labels: int, target_steps: int, max_passes: int, max_batch: int = 32) -> tuple[int, int]:
    """(batch size, passes) giving about `target_steps` optimizer steps over `n_labels` epochs, at most
    `max_passes` passes (each ends with a val pass for model selection); small label sets get small batches so
    that one pass holds a few steps."""
    batch = int(min(max_batch, max(4, n_labels // 8)))
    per_pass = max(1, n_labels // batch)
    return batch, int(min(max_passes, max(1, math.ceil(target_steps / per_pass))))


def downstream_run(script: str, out: Path, dst: Path, fraction: float, args: argparse.Namespace, *extra) -> Path:
    """One staging run (skipped when OUT/metrics.json exists)."""
    if not (out / "metrics.json").is_file():
        run_script(
            script,
            "--data",
            dst,
            "--task",
            "sleep_stage",
            "--label-fraction",
            fraction,
            "--seed",
            args.seed,
            "--workers",
            0,
            "--no-progress",
            "--hypnograms",
            0,
            "--out",
            out,
            *extra,
        )
    return out


def run_baselines(args: argparse.Namespace, own: Path) -> list[dict]:
    """Supervised from scratch and the feature baseline at the probe fractions; [{"run", "data", "budget",
    "cpu_minutes"}] with no data amount or budget (they do not depend on pretraining)."""
    runs = []
    for fraction in args.probe_fractions:
        batch, passes = head_budget(
            n_train_labels(own, fraction, args.seed), args.scratch_steps, args.scratch_max_passes
        )
        tag = f"lf{fraction:g}"
        run = downstream_run(
            "downstream/linear_probing/train.py",
            args.out / "downstream" / "scratch" / tag,
            own,
            fraction,
            args,
            "--init",
            "random",
            "--preset",
            args.preset,  # the pretrained model's architecture: these encoders + the tiny fusion
            "--channels",
            ",".join(CHANNELS),
            "--passes",
            passes,
            "--batch-size",
            batch,
        )
        runs.append({"run": run, "data": "", "budget": None, "cpu_minutes": float("nan")})
        if fraction in args.scratch_context_fractions:  # the same, with fine-tuning's windows and temporal context
            run = downstream_run(
                "downstream/fine_tuning/train.py",
                args.out / "downstream" / "scratch_context" / (tag + direction_tag(args.context_direction)),
                own,
                fraction,
                args,
                "--init",
                "random",
                "--preset",
                args.preset,
                "--channels",
                ",".join(CHANNELS),
                "--passes",
                args.scratch_context_passes,
                "--stride",
                args.finetune_stride,
                "--context-direction",
                args.context_direction,
            )
            runs.append({"run": run, "data": "", "budget": None, "cpu_minutes": float("nan")})
        for neighbours in args.neighbour_epochs:
            run = downstream_run(
                "downstream/baselines/features.py",
                args.out / "downstream" / "features" / (tag + neighbour_tag(neighbours)),
                own,
                fraction,
                args,
                "--cache-dir",
                args.out / "cache",
                "--neighbour-epochs",
                neighbours,
            )
            runs.append({"run": run, "data": "", "budget": None, "cpu_minutes": float("nan")})
    return runs


def direction_tag(direction: str) -> str:
    """Run-folder suffix of a fine-tuning context direction ("" for the default, bidirectional)."""
    return "-fwd" if direction == "forward" else ""


def neighbour_tag(neighbours: int) -> str:
    """Run-folder suffix of a --neighbour-epochs value ("" for the epoch alone: the folders of earlier runs)."""
    return f"-nb{neighbours}" if neighbours else ""


def run_pretrained(args: argparse.Namespace, amount: str, dst: Path, budget: int, backbone: Path) -> list[dict]:
    """Linear probe and fine-tuning of one pretrained SynthSleepNet at their label fractions."""
    runs = []
    where = {
        "data": amount,
        "budget": budget,
        "cpu_minutes": pretrain_cpu_minutes(backbone.parent.parent, args.budgets, budget),
    }
    tag, cache = f"{amount}-steps{budget}", ("--cache-dir", args.out / "cache")  # vectors shared by probe / tuning
    for fraction in args.probe_fractions:
        batch, passes = head_budget(n_train_labels(dst, fraction, args.seed), args.probe_steps, args.probe_max_passes)
        for neighbours in args.neighbour_epochs:
            run = downstream_run(
                "downstream/linear_probing/train.py",
                args.out / "downstream" / "probe" / tag / (f"lf{fraction:g}" + neighbour_tag(neighbours)),
                dst,
                fraction,
                args,
                "--backbone",
                backbone,
                *cache,
                "--passes",
                passes,
                "--batch-size",
                batch,
                "--neighbour-epochs",
                neighbours,
            )
            runs.append({"run": run, **where})
    for fraction in args.finetune_fractions if budget in args.finetune_budgets else ():
        run = downstream_run(
            "downstream/fine_tuning/train.py",
            args.out
            / "downstream"
            / "finetune"
            / tag
            / (
                f"lf{fraction:g}"
                + (f"-max{args.finetune_max_steps}" if args.finetune_max_steps else "")
                + direction_tag(args.context_direction)
            ),
            dst,
            fraction,
            args,
            "--backbone",
            backbone,
            *cache,
            "--passes",
            args.finetune_passes,
            "--context-passes",
            args.context_passes,
            "--stride",
            args.finetune_stride,
            "--context-direction",
            args.context_direction,
            *(("--max-steps", args.finetune_max_steps) if args.finetune_max_steps else ()),
        )
        runs.append({"run": run, **where})
    return runs


# ---------------------------------------------------------------------------------------- main
def fraction_list(text: str) -> list[float]:
    values = [float(v) for v in text.split(",") if v.strip()]
    if not values or any(not 0 < v <= 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated fractions in (0, 1], got {text!r}")
    return values


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
        type=fraction_list,
        default=[0.05, 1.0],
        help="label fractions fine-tuned, comma-separated",
    )
    parser.add_argument(
        "--finetune-budgets",
        type=budget_list,
        default=None,
        help="the budgets whose backbones are also fine-tuned, comma-separated (default: every budget)",
    )
    parser.add_argument("--probe-steps", type=int, default=1500, help="about this many MLP-head steps per probe")
    parser.add_argument("--probe-max-passes", type=int, default=200, help="passes per probe at most")
    parser.add_argument("--scratch-steps", type=int, default=600, help="about this many steps per scratch run")
    parser.add_argument(
        "--scratch-max-passes", type=int, default=20, help="each pass ends with a full val pass of the whole model"
    )
    parser.add_argument(
        "--scratch-context-fractions",
        type=fraction_list,
        default=[1.0],
        help="label fractions at which supervised-from-scratch also trains fine-tuning's temporal architecture "
        "(windows of 20 epochs, Mamba2 context; rows scratch_finetune), comma-separated",
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
        "--context-direction",
        choices=("bidirectional", "forward"),
        default="bidirectional",
        help="fine-tuning's Mamba2 context (forward: the published causal one; its runs go to …-fwd folders)",
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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
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
    started = time.time()
    args.out.mkdir(parents=True, exist_ok=True)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    write_json(args.out / "settings.json", settings)
    amounts = prepare_data(args)

    title = f"{args.nights} nights x {args.hours:g} h + {args.extra_factor}x extra, seed {args.seed}"
    runs = run_baselines(args, amounts["own"])
    for index, budget in enumerate(args.budgets):
        backbones = {}
        for amount, dst in amounts.items():
            root = args.out / "pretrain" / amount
            unimodal = pretrain_unimodal(args, dst, root, budget)
            backbones[amount] = pretrain_multimodal(args, dst, root, budget, unimodal)
        if index < 2:  # estimates from the first budget (an upper bound), then from the first two
            estimates = {
                amount: estimate_cpu_minutes(args.out / "pretrain" / amount, args.budgets) for amount in amounts
            }
            largest = sum(estimate[args.budgets[-1]] for estimate in estimates.values())
            kind = "an upper bound: start-up CPU counted as per-step" if index == 0 else "start-up + per-step fit"
            print(
                f"pretraining CPU-minutes per budget (measured so far; estimated for the rest, {kind}):\n"
                + "\n".join(
                    f"  {amount}: " + ", ".join(f"{b} steps {m:.1f}" for b, m in estimate.items())
                    for amount, estimate in estimates.items()
                )
                + f"\n  largest budget, all data amounts together: {largest:.1f} CPU-minutes",
                flush=True,
            )
            if (
                (index == 1 or len(args.budgets) == 1)
                and args.max_pretrain_cpu_min
                and largest > args.max_pretrain_cpu_min
            ):
                print(
                    f"error: --budgets: the largest budget would need ~{largest:.0f} pretraining CPU-minutes (all "
                    f"data amounts), over --max-pretrain-cpu-min {args.max_pretrain_cpu_min:g}; give smaller "
                    "--budgets (finished runs are kept)",
                    file=sys.stderr,
                )
                return 2

        for amount, backbone in backbones.items():
            runs += run_pretrained(args, amount, amounts[amount], budget, backbone)
        write_results(result_rows(runs), args.out, title)  # the table grows budget by budget
        print(f"budget {budget} steps done: {args.out / 'results.md'} updated", flush=True)
    print((args.out / "results.md").read_text())
    print(
        f"results: {args.out / 'results.csv'}, {args.out / 'results.md'}, {args.out / 'ssl_scaling.png'}; "
        f"took {(time.time() - started) / 60:.1f} min",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
