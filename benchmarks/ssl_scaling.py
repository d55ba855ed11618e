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
   Each multimodal run starts afresh on its budget's unimodal models, masking by `--mask-mode` (an OUT keeps
   the mode it was made with). Each run's process CPU time
   (getrusage of the child) is stored; a budget's pretraining CPU-minutes = its unimodal chain up to it +
   its multimodal run. After the smallest budget the CPU of every budget is estimated from the measured step
   rates and printed (refined after the second budget, which also fits the start-up cost of a run); the
   benchmark stops there if the largest would exceed `--max-pretrain-cpu-min` (all data amounts together).
3. Staging (--task sleep_stage) of every pretrained SynthSleepNet: linear probe at `--probe-fractions`
   (1, 5, 100 % of the train labels) and fine-tuning at `--finetune-fractions` (5, 100 %); supervised from
   scratch (--init random, same architecture) and the hand-crafted-feature baseline once at the probe
   fractions; at `--scratch-context-fractions` (100 %) also from scratch with fine-tuning's windows and
   temporal context (rows scratch_finetune), the fair reference for fine-tuning. The probes and the feature
   baseline run once per `--neighbour-epochs` value K (default 0 and 3): the classifier reads each epoch with
   its K neighbours on each side (rows "linear_probe ±K", "features_hgb ±K"). A probe's MLP head trains about
   `--probe-steps` steps and at least `--probe-min-passes` passes (the feature baseline picks its iterations on
   val, so the head gets passes enough to level off too). At `--tree-fractions` (1, 5 %) the feature baseline's
   gradient-boosted trees also classify each backbone's frozen vectors (rows "backbone_hgb ±K"): the learned
   representation and the features compared with one classifier. With `--night-norm zscore` the probes, trees and
   feature baseline read each night's vectors (or features) standardised over the night (rows "... (night
   zscore)", folders ending in -night-zscore). Model selection on `val` only (the scripts' own);
   `test` scored once per run. A finished run is reused only when it was trained with the same numeric options
   (budget, label fraction, seed, neighbours); one with others stops the benchmark rather than standing in.
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

from benchmarks.ssl_scaling_options import EXTRA_SUBJECT_START, parse_args
from benchmarks.ssl_scaling_report import result_rows, write_results
from dataset import data_parser, synthetic
from dataset.constants import EPHYS_CHANNELS, MODALITY_CHANNELS
from dataset.constants import EPHYS_MODALITIES as MODALITIES
from dataset.datasets import EpochDataset
from utils.config import config_differences

CHANNELS = list(EPHYS_CHANNELS)
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
        *(("--model-arg", f"mask_mode={args.mask_mode}") if args.mask_mode != "independent" else ()),
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


def head_budget(
    n_labels: int, target_steps: int, max_passes: int, max_batch: int = 32, min_passes: int = 1
) -> tuple[int, int]:
    """(batch size, passes) giving about `target_steps` optimizer steps over `n_labels` epochs, at least
    `min_passes` and at most `max_passes` passes (each ends with a val pass for model selection); small label
    sets get small batches so that one pass holds a few steps."""
    batch = int(min(max_batch, max(4, n_labels // 8)))
    batch = max(2, min(batch, n_labels))  # as the scripts shrink it for fewer labels than a batch
    per_pass = max(1, n_labels // batch)
    return batch, int(min(max_passes, max(min_passes, 1, math.ceil(target_steps / per_pass))))


def numeric_options(command: Sequence[object]) -> dict[str, int | float]:
    """{config key: value} of the `--option value` pairs of a command whose value is a number (budgets, label
    fraction, seed, neighbours: what decides a run's numbers; paths and names are left out)."""
    return {
        flag[2:].replace("-", "_"): value
        for flag, value in zip(command, command[1:])
        if isinstance(flag, str) and flag.startswith("--") and isinstance(value, (int, float))
    }


def settings_differences(out: Path, command: Sequence[object]) -> str:
    """'run configuration differs: key: finished -> asked; ...' for the numeric options of `command` that the
    finished run in `out` (its config.json) was trained with other values of ("" when none); a key that
    config.json lacks (written by earlier code) is not compared. A config.json newer than metrics.json (a run
    started again there) describes no finished run."""
    if (out / "config.json").stat().st_mtime_ns > (out / "metrics.json").stat().st_mtime_ns:
        return "config.json: started again after metrics.json was written"
    config = json.loads((out / "config.json").read_text())
    asked = {k: v for k, v in numeric_options(command).items() if isinstance(config.get(k), (int, float))}
    finished = {k: config[k] for k in asked}
    return config_differences(finished, asked, limit=len(asked), what="run configuration")


def downstream_run(script: str, out: Path, dst: Path, fraction: float, args: argparse.Namespace, *extra) -> Path:
    """One staging run, skipped when OUT/metrics.json exists and the run was trained with the same budget and
    label settings; a finished run with other settings stops the benchmark (exit 2) rather than being reused."""
    command = (
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
    if not (out / "metrics.json").is_file():
        run_script(script, *command)
    elif differences := settings_differences(out, command):
        print(
            f"error: {out}: a finished run, but {differences}; give another --out, or move that run away to train "
            "it again",
            file=sys.stderr,
        )
        raise SystemExit(2)
    return out


def scratch_args(args: argparse.Namespace) -> tuple:
    """Options of a from-scratch run: the pretrained model's architecture (these encoders + the tiny fusion) over
    every channel, from random weights."""
    return ("--init", "random", "--preset", args.preset, "--channels", ",".join(CHANNELS))


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
            *scratch_args(args),
            "--passes",
            passes,
            "--batch-size",
            batch,
        )
        runs.append({"run": run, "data": "", "budget": None, "cpu_minutes": float("nan")})
        if fraction in args.scratch_context_fractions:  # the same, with fine-tuning's windows and temporal context
            run = downstream_run(
                "downstream/fine_tuning/train.py",
                args.out
                / "downstream"
                / "scratch_context"
                / (tag + direction_tag(args.context_direction) + eval_tag(args.eval_stride)),
                own,
                fraction,
                args,
                *scratch_args(args),
                "--passes",
                args.scratch_context_passes,
                "--stride",
                args.finetune_stride,
                "--eval-stride",
                args.eval_stride,
                "--context-direction",
                args.context_direction,
            )
            runs.append({"run": run, "data": "", "budget": None, "cpu_minutes": float("nan")})
        for neighbours in args.neighbour_epochs:
            run = downstream_run(
                "downstream/baselines/features.py",
                args.out / "downstream" / "features" / (tag + neighbour_tag(neighbours, args.night_norm)),
                own,
                fraction,
                args,
                "--cache-dir",
                args.out / "cache",
                "--neighbour-epochs",
                neighbours,
                "--night-norm",
                args.night_norm,
            )
            runs.append({"run": run, "data": "", "budget": None, "cpu_minutes": float("nan")})
    return runs


def eval_tag(stride: int) -> str:
    """Run-folder suffix of fine-tuning's evaluation stride ("" for disjoint windows of 20 epochs: the folders of
    earlier runs, which were all evaluated so)."""
    return "" if stride == 20 else f"-es{stride}"


def direction_tag(direction: str) -> str:
    """Run-folder suffix of a fine-tuning context direction ("" for forward: the folders of earlier runs, which
    all had the published causal context)."""
    return "-bi" if direction == "bidirectional" else ""


def neighbour_tag(neighbours: int, night_norm: str = "none") -> str:
    """Run-folder suffix of a --neighbour-epochs value and a --night-norm ("" for the epoch alone as stored: the
    folders of earlier runs)."""
    return (f"-nb{neighbours}" if neighbours else "") + (f"-night-{night_norm}" if night_norm != "none" else "")


def run_pretrained(args: argparse.Namespace, amount: str, dst: Path, budget: int, backbone: Path) -> list[dict]:
    """Linear probe, trees on the frozen vectors and fine-tuning of one pretrained SynthSleepNet at their label
    fractions."""
    runs = []
    where = {
        "data": amount,
        "budget": budget,
        "cpu_minutes": pretrain_cpu_minutes(backbone.parent.parent, args.budgets, budget),
    }
    tag, cache = f"{amount}-steps{budget}", ("--cache-dir", args.out / "cache")  # vectors shared by probe / tuning

    def per_epoch_run(script: str, kind: str, fraction: float, neighbours: int, *extra: object) -> dict:
        """One classifier on this backbone's frozen vectors of each epoch and its `neighbours` on each side."""
        out = args.out / "downstream" / kind / tag / (f"lf{fraction:g}" + neighbour_tag(neighbours, args.night_norm))
        command = ("--backbone", backbone, *cache, "--neighbour-epochs", neighbours, "--night-norm", args.night_norm)
        command += extra
        return {"run": downstream_run(script, out, dst, fraction, args, *command), **where}

    for fraction in args.probe_fractions:
        batch, passes = head_budget(
            n_train_labels(dst, fraction, args.seed),
            args.probe_steps,
            args.probe_max_passes,
            min_passes=args.probe_min_passes,
        )
        for neighbours in args.neighbour_epochs:
            extra = ("--passes", passes, "--batch-size", batch)
            runs.append(per_epoch_run("downstream/linear_probing/train.py", "probe", fraction, neighbours, *extra))
    trees = "trees_channel" if args.tree_pooling == "channel" else "trees"  # the folders of mean-pooled runs kept
    for fraction in args.tree_fractions:  # the feature baseline's classifier on this backbone's vectors
        for neighbours in args.neighbour_epochs:
            pooling = ("--pooling", args.tree_pooling)
            runs.append(per_epoch_run("downstream/baselines/features.py", trees, fraction, neighbours, *pooling))
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
                + eval_tag(args.eval_stride)
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
            "--eval-stride",
            args.eval_stride,
            "--context-direction",
            args.context_direction,
            *(("--max-steps", args.finetune_max_steps) if args.finetune_max_steps else ()),
        )
        runs.append({"run": run, **where})
    return runs


# ---------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv, __doc__)
    started = time.time()
    args.out.mkdir(parents=True, exist_ok=True)
    kept = args.out / "settings.json"
    try:
        made_with = json.loads(kept.read_text()).get("mask_mode", "independent") if kept.is_file() else args.mask_mode
    except (OSError, ValueError, AttributeError) as err:
        print(f"error: {kept}: unreadable ({err}); give another --out", file=sys.stderr)
        return 2
    if made_with != args.mask_mode:  # its pretrained runs would stand in for the other masking's
        print(f"error: --out {args.out}: made with --mask-mode {made_with}; give another --out", file=sys.stderr)
        return 2
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
