"""End-to-end demo on a freshly generated synthetic NSRR cohort (the README's `make demo`).

Every stage is the project's own command-line script, run as a subprocess with small presets and a budget in
passes over the data and optimizer steps (never wall-clock minutes: the same seed gives the same numbers on any
machine), so the demo exercises exactly what a user runs on real data:

  1. generate    dataset/synthetic.py                 EDF + NSRR XML nights in the NSRR folder layout
  2. parse       dataset/data_parser.py               Parquet per night + events + manifest + splits
  3. unimodal    pretrained/unimodal/{eeg,eog,emg,ecg}/train.py   one NeuroNet per modality
  4. multimodal  pretrained/multimodal/train.py       SynthSleepNet (frozen encoders + LoRA + fusion)
  5. downstream  linear probe, gradient-boosted trees on the frozen backbone's vectors, Mamba fine-tuning,
                 supervised-from-scratch and feature baselines for sleep staging, apnea and hypopnea at 5 %
                 and 100 % of the training labels; event detection
                 (events with onsets and durations) on respiratory features and on SynthSleepNet tokens;
                 --jobs runs side by side, one thread each, every run's output in OUT/logs/<run>.log
  6. evaluate    downstream/evaluate.py               one comparison table (Markdown + CSV + plot)
  7. predict     downstream/predict.py                hypnogram, typed events, AHI, ODI and report for a
                                                      held-out night (its reliability stated)

A stage whose outputs exist is skipped on a rerun (delete --out, or `make clean-demo`, to start over).
Usage: python demo.py [--out demo_out] [--nights 16] [--hours 2] [--seed 0] [--jobs 2]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from dataset.cohort import read_ok_manifest
from dataset.constants import EPHYS_MODALITIES as MODALITIES
from dataset.constants import STAGE_NAMES
from dataset.worker_pool import THREAD_VARIABLES
from utils.config import positive_int

TASKS = ("sleep_stage", "apnea", "hypopnea")
FRACTIONS = (0.05, 1.0)

# The unimodal encoders use the `spectral` preset: tiny's transformer over frame tokens embedded from each frame's
# log power spectrum, cheaper than `fast` and the best probes of every pretraining variant measured
# (benchmarks/README.md, "Self-supervision variants"); the fusion model is SynthSleepNet `tiny`.
UNIMODAL_PRESET, MULTIMODAL_PRESET = "spectral", "tiny"
# The fusion masks whole channels (`mask_mode=channel`): a hidden channel is rebuilt from the others, where the
# published independent masking lets a masked token be rebuilt from its own channel's neighbours. On the
# multimodal learning check it gave the better fusion vector on val at both seeds measured (benchmarks/README.md,
# "Masking across channels").
MULTIMODAL_MASK_MODE = "channel"
# Training budgets in passes over the training data (the lr schedule ends with them). With 12 pretraining nights
# of 2 h, one pass is 90 steps of 64 EEG or EOG samples (two channels each) and 45 of EMG or ECG; the probes of
# the encoders level off after a few hundred steps of this size (benchmarks/ssl_variants.py).
UNIMODAL_PASSES = {"eeg": 1, "eog": 1, "emg": 2, "ecg": 2}  # 90 steps each
MULTIMODAL_PASSES = 1  # 90 steps at batch 32
# MLP head on cached vectors: about 500 / 2,700 steps. With every label the head's val kappa still rose after 20
# passes on the learning-curve cohort (benchmarks/README.md, "What the probe reads, and how long its head trains").
PROBE_PASSES = {0.05: 100, 1.0: 30}
SCRATCH_PASSES = {0.05: 20, 1.0: 1}  # about 100 / 90 steps of the whole model on the signals
FINE_TUNING_PASSES = 1  # LoRA phase; phase 1 (context + head on cached vectors) runs its default 30 passes
# ... stopped after 10 LoRA steps, the learning curve's recipe (benchmarks/ssl_scaling.py --finetune-max-steps): a
# whole LoRA pass (34 steps of about 2 s here) never beat phase 1 on val, on that cohort or in this demo
FINE_TUNING_MAX_STEPS = 10
EVENT_PROBE_STEPS = 300  # optimizer steps of the event probe's per-second head on cached backbone tokens
# Staging probes and feature baselines read each epoch with its 3 neighbours on each side (--neighbour-epochs), as
# a scorer reads the epochs around the one staged: the best of 0, 1, 2, 3 and 5 on the learning-curve cohort's val
# split (benchmarks/README.md, "Neighbouring epochs"). The event tasks keep one epoch: not measured with it.
NEIGHBOUR_EPOCHS = {"sleep_stage": 3, "apnea": 0, "hypopnea": 0}
# ... and standardised over their night (--night-norm zscore): on the learning-curve cohort it raised the val kappa
# of the probe, the trees on the backbone's vectors and the feature baseline at 1 %, 5 % and 100 % labels
# (benchmarks/README.md, "Standardised over the night"). The event tasks keep the vectors as stored: not measured.
NIGHT_NORM = {"sleep_stage": "zscore", "apnea": "none", "hypopnea": "none"}
# The staging probe reads each channel's mean and spread of its frozen tokens (--pooling channel_stats): on the
# learning-curve cohort it raised the probe's val and test kappa at 5 % labels by 0.04 / 0.07 over the mean vector
# (benchmarks/README.md, "Mean and spread of the frozen tokens"). The event tasks keep the mean: not measured.
PROBE_POOLING = {"sleep_stage": "channel_stats", "apnea": "mean", "hypopnea": "mean"}
# ... and with few labels its head is one linear layer fitted by L-BFGS, the L2 penalty chosen on val (--head
# logistic): on the learning-curve cohort it beat the MLP head on val at 1 % and 5 % labels (+0.026, +0.013 kappa)
# but not with every label (-0.005) (benchmarks/README.md, "A logistic head fitted to convergence").
PROBE_HEAD = {("sleep_stage", 0.05): "logistic"}  # the others: the MLP head for PROBE_PASSES


def _banner(text: str) -> None:
    print(f"\n=== {text} " + "=" * max(0, 70 - len(text)), flush=True)


def recipe(args: argparse.Namespace) -> dict:
    """What the demo's outputs depend on: its options and the budgets and settings above. A folder made with
    another recipe is refused (`check_recipe`): a rerun skips finished stages, which would report that recipe's
    runs under this one's name."""
    return {
        "nights": args.nights,
        "hours": args.hours,
        "seed": args.seed,
        "presets": [UNIMODAL_PRESET, MULTIMODAL_PRESET],
        "mask_mode": MULTIMODAL_MASK_MODE,
        "unimodal_passes": UNIMODAL_PASSES,
        "multimodal_passes": MULTIMODAL_PASSES,
        "probe_passes": {str(k): v for k, v in PROBE_PASSES.items()},
        "scratch_passes": {str(k): v for k, v in SCRATCH_PASSES.items()},
        "fine_tuning": [FINE_TUNING_PASSES, FINE_TUNING_MAX_STEPS],
        "event_probe_steps": EVENT_PROBE_STEPS,
        "neighbour_epochs": NEIGHBOUR_EPOCHS,
        "night_norm": NIGHT_NORM,
        "probe_pooling": PROBE_POOLING,
        "probe_head": {f"{task}-lf{fraction:g}": head for (task, fraction), head in PROBE_HEAD.items()},
    }


def check_recipe(out: Path, wanted: dict) -> str:
    """ "" when `out` is new or was made with `wanted` (written then to OUT/recipe.json), else why not."""
    path = out / "recipe.json"
    if path.is_file():
        try:
            made = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            return f"{path}: unreadable ({err})"
        differs = [f"{k}: {made.get(k)} -> {v}" for k, v in wanted.items() if made.get(k) != v]
        return f"made with another recipe ({'; '.join(differs[:3])})" if differs else ""
    if (out / "runs").exists():
        return "made by an earlier version of the demo (no recipe.json)"
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(wanted, indent=2, sort_keys=True) + "\n")
    return ""


def _completed(run: Path) -> Path | None:
    """`run`/log.jsonl when its last summary says the training completed its budget, else None: `last.pt` alone is
    also written after every pass and by a run cut short, which a rerun must continue (`--resume auto`)."""
    log = run / "log.jsonl"
    if not log.exists():
        return None
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    summaries = [r for r in records if r.get("kind") == "summary"]
    return log if summaries and summaries[-1].get("stopped") == "completed" else None


def _run(script: str, *args: object, done: Path | None = None) -> None:
    """Run one project script as `python SCRIPT ARGS…`; skip it when `done` exists (a stage finished by an
    earlier run of the demo); stop the demo on failure."""
    if done is not None and done.exists():
        print(f"[skip] {script}: {done} exists", flush=True)
        return
    command = [sys.executable, script, *map(str, args)]
    print("$ " + " ".join(command[1:]), flush=True)
    started = time.time()
    code = subprocess.call(command)
    if code != 0:
        raise SystemExit(f"demo: {script} exited with code {code}; see its message above")
    print(f"[{time.time() - started:.0f} s] {script}", flush=True)


class Job(NamedTuple):
    """One run of a project script: `name` (its log file's name), the script, its arguments, and the file whose
    existence means an earlier demo run finished it."""

    name: str
    script: str
    args: tuple
    done: Path


def downstream_jobs(dst: Path, multimodal: Path, downstream: Path, events: Path, cache: Path, seed: int) -> list[Job]:
    """Every run of stage 5: per task and label fraction the linear probe, Mamba fine-tuning, the same model from
    scratch, and gradient-boosted trees on the features and on the backbone's per-channel vectors; then event
    detection on the respiratory features and on SynthSleepNet's tokens. Each reads only the parsed cohort and the
    pretrained backbone, so they may run side by side; frozen-backbone vectors and features are computed once into
    `cache` (written atomically per recording) and reused."""
    jobs = []
    cached = ("--cache-dir", cache)
    for task in TASKS:
        for fraction in FRACTIONS:
            tag = f"{task}-lf{fraction:g}"
            task_args = ("--data", dst, "--task", task, "--label-fraction", fraction, "--seed", seed)
            backbone = ("--backbone", multimodal, "--workers", 0, "--no-progress")
            night = ("--neighbour-epochs", NEIGHBOUR_EPOCHS[task], "--night-norm", NIGHT_NORM[task])
            head = PROBE_HEAD.get((task, fraction), "mlp")
            fit = ("--head", head) if head != "mlp" else ("--passes", PROBE_PASSES[fraction])  # fitted, or passes
            probe = (*fit, "--pooling", PROBE_POOLING[task], *night)
            tuning = ("--passes", FINE_TUNING_PASSES, "--max-steps", FINE_TUNING_MAX_STEPS)
            scratch = ("--init", "random", "--passes", SCRATCH_PASSES[fraction])
            runs = [
                ("probe", "downstream/linear_probing/train.py", (*backbone, *cached, *probe)),
                ("finetune", "downstream/fine_tuning/train.py", (*backbone, *cached, *tuning)),
                ("scratch", "downstream/linear_probing/train.py", (*backbone, *scratch)),
            ]
            # gradient-boosted trees on the hand-crafted features, and on the backbone's frozen vectors of each
            # channel (--pooling channel: the features keep channels apart too; benchmarks/README.md)
            trees = ("--workers", 0, "--no-progress", *night, *cached)
            runs += [
                ("features", "downstream/baselines/features.py", trees),
                (
                    "trees",
                    "downstream/baselines/features.py",
                    ("--backbone", multimodal, "--pooling", "channel", *trees),
                ),
            ]
            for folder, script, options in runs:
                run = downstream / folder / tag
                jobs.append(Job(f"{folder}-{tag}", script, (*task_args, *options, "--out", run), run / "metrics.json"))
    common = ("--data", dst, "--seed", seed, "--no-progress")
    probe = ("--method", "probe", "--backbone", multimodal, "--steps", EVENT_PROBE_STEPS, *cached)
    for method, options in (("features", ("--method", "features")), ("probe", probe)):
        run = events / method
        jobs.append(
            Job(
                f"events-{method}",
                "downstream/event_detection/train.py",
                (*common, *options, "--out", run),
                run / "metrics.json",
            )
        )
    return jobs


def _run_jobs(jobs: list[Job], logs: Path, slots: int) -> None:
    """Run `jobs` `slots` at a time, each with one thread (`THREAD_VARIABLES`): on 2 cores two one-thread runs side
    by side finish sooner than the same runs one after another with two threads each, and their numbers do not
    depend on the machine's core count. With `slots` 1 they run one after another with every core (the runs
    that train a whole model then sum floats in another order). Each run's output goes to logs/<name>.log and
    its last line is printed when it ends. A job whose `done` file exists is skipped. A failure prints the end of
    its log and stops the demo; the runs still going are stopped too (also on Ctrl-C or a plain kill), and each
    continues where it stopped on the next demo run (a training run resumes from its last.pt)."""
    logs.mkdir(parents=True, exist_ok=True)
    pending = []
    for job in jobs:
        if job.done.exists():
            print(f"[skip] {job.script}: {job.done} exists", flush=True)
        else:
            pending.append(job)
    env = dict(os.environ) if slots == 1 else {**os.environ, **{k: "1" for k in THREAD_VARIABLES}}
    running: dict[subprocess.Popen, tuple[Job, Path, float]] = {}
    previous = signal.signal(signal.SIGTERM, lambda number, frame: sys.exit(128 + number))  # to `finally` below
    try:
        while pending or running:
            while pending and len(running) < slots:
                job = pending.pop(0)
                log = logs / f"{job.name}.log"
                command = [sys.executable, job.script, *map(str, job.args)]
                print("$ " + " ".join(command[1:]) + f" > {log}", flush=True)
                with open(log, "w") as handle:  # the child keeps its own copy of the file
                    process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env)
                running[process] = (job, log, time.time())
            time.sleep(0.2)
            for process in [p for p in running if p.poll() is not None]:
                job, log, started = running.pop(process)
                lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
                if process.returncode != 0:
                    print("\n".join(lines[-15:]), flush=True)
                    raise SystemExit(f"demo: {job.script} exited with code {process.returncode}; its log: {log}")
                print(f"[{time.time() - started:.0f} s] {job.name}: {lines[-1] if lines else ''}", flush=True)
    finally:
        signal.signal(signal.SIGTERM, previous)
        for process in running:  # a failure, Ctrl-C or a kill: stop the runs still going
            process.terminate()
        for process in running:
            process.wait()


def label_statistics(dst: Path) -> pd.DataFrame:
    """Per split: epochs, stage distribution (%), apnea / hypopnea epoch prevalence (%), scored AHI median."""
    manifest = read_ok_manifest(dst)
    splits = json.loads((dst / "splits.json").read_text())
    rows = []
    for split, recordings in splits["recordings"].items():
        if not recordings:
            continue
        tables = [
            pq.read_table(dst / "recordings" / f"{rec}.parquet", columns=["stage", "apnea", "hypopnea"])
            for rec in recordings
        ]
        stage = np.concatenate([t["stage"].to_numpy() for t in tables])
        scored = stage >= 0
        row = {
            "split": split,
            "recordings": len(recordings),
            "epochs": int(stage.size),
            "unscored %": round(100 * float(np.mean(~scored)), 1),
        }
        for k, name in enumerate(STAGE_NAMES):
            row[f"{name} %"] = round(100 * float(np.mean(stage[scored] == k)), 1) if scored.any() else float("nan")
        for event in ("apnea", "hypopnea"):
            row[f"{event} %"] = round(100 * float(np.mean(np.concatenate([t[event].to_numpy() for t in tables]))), 2)
        row["AHI median"] = round(float(np.median(manifest.loc[recordings, "ahi_scored"])), 1)
        rows.append(row)
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--out", type=Path, default=Path("demo_out"), help="work folder: cohort, parsed data, runs (default demo_out)"
    )
    parser.add_argument("--nights", type=int, default=16, help="synthetic nights to generate, one subject each")
    parser.add_argument("--hours", type=float, default=2.0, help="scored hours per synthetic night")
    parser.add_argument("--seed", type=int, default=0, help="seed of the cohort and of every training stage")
    parser.add_argument(
        "--jobs",
        type=positive_int,
        default=2,
        help="downstream runs side by side, one thread each (default 2, for 2 cores; 1: one after another with "
        "every core)",
    )
    args = parser.parse_args(argv)
    started = time.time()
    out = args.out
    problem = check_recipe(out, recipe(args))
    if problem:
        print(f"error: --out {out}: {problem}; `make clean-demo` (or another --out) to run this demo", file=sys.stderr)
        return 2
    src, dst, runs = out / "cohort", out / "parsed", out / "runs"
    common = ("--workers", "0", "--seed", args.seed)

    _banner(f"1. generate {args.nights} synthetic nights of {args.hours:g} h -> {src}")
    _run(
        "dataset/synthetic.py",
        "--out",
        src,
        "--nights",
        args.nights,
        "--hours",
        args.hours,
        "--seed",
        args.seed,
        done=src / "synthetic_truth.json",
    )

    _banner(f"2. parse -> {dst}")
    _run("dataset/data_parser.py", "--src", src, "--dst", dst, "--workers", 2, done=dst / "splits.json")
    manifest = pd.read_parquet(dst / "manifest.parquet")
    ok = manifest[manifest["status"] == "ok"]
    print(manifest["status"].value_counts().to_string())
    print(
        f"{len(ok)} recordings ok, {int(ok['n_epochs'].sum())} epochs, {ok['subject_id'].nunique()} subjects; "
        f"scored AHI {ok['ahi_scored'].min():.1f}-{ok['ahi_scored'].max():.1f} /h"
    )
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(label_statistics(dst).to_string(index=False))

    _banner(f"3. unimodal NeuroNet pretraining ({UNIMODAL_PRESET} preset)")
    for modality in MODALITIES:
        run = runs / "unimodal" / modality
        _run(
            f"pretrained/unimodal/{modality}/train.py",
            "--data",
            dst,
            "--out",
            run,
            *common,
            "--preset",
            UNIMODAL_PRESET,
            "--passes",
            UNIMODAL_PASSES[modality],
            "--batch-size",
            64,
            "--no-progress",
            done=_completed(run),
        )

    _banner(f"4. SynthSleepNet multimodal pretraining ({MULTIMODAL_PRESET} preset)")
    multimodal = runs / "multimodal"
    unimodal = ",".join(f"{m}={runs / 'unimodal' / m}" for m in MODALITIES)
    _run(
        "pretrained/multimodal/train.py",
        "--data",
        dst,
        "--unimodal",
        unimodal,
        "--out",
        multimodal,
        *common,
        "--preset",
        MULTIMODAL_PRESET,
        "--model-arg",
        f"mask_mode={MULTIMODAL_MASK_MODE}",
        "--passes",
        MULTIMODAL_PASSES,
        "--batch-size",
        32,
        "--no-progress",
        done=_completed(multimodal),
    )

    _banner("5. downstream: probe, trees, fine-tuning, from scratch, features x 3 tasks x 2 label fractions; events")
    downstream = runs / "downstream"
    events = downstream / "event_detection"
    _run_jobs(downstream_jobs(dst, multimodal, downstream, events, out / "cache", args.seed), out / "logs", args.jobs)

    _banner("6. comparison table")
    comparison = out / "comparison"
    _run("downstream/evaluate.py", downstream, "--out", comparison)
    print((comparison / "comparison.md").read_text())

    _banner("7. inference on a held-out night")
    splits = json.loads((dst / "splits.json").read_text())
    night = sorted(splits["recordings"]["test"])[0]
    edf = next(src.rglob(f"{night}.edf"))
    xml = next(src.rglob(f"{night}-nsrr.xml"))
    report_dir = out / "report" / night
    _run(
        "downstream/predict.py",
        "--checkpoint",
        downstream / "finetune" / "sleep_stage-lf1",
        "--apnea",
        downstream / "finetune" / "apnea-lf1",
        "--hypopnea",
        downstream / "finetune" / "hypopnea-lf1",
        "--events",
        events / "features",
        "--edf",
        edf,
        "--xml",
        xml,
        "--out",
        report_dir,
        "--no-progress",
    )
    report = json.loads((report_dir / "report.json").read_text())
    scored = report["agreement"]["ahi"]
    reliability = report["reliability"]
    number = lambda value: "n/a" if value is None else f"{value:.1f}"  # noqa: E731 - strict JSON: NaN is null
    print(
        f"{night}: AHI estimated {number(scored['estimated'])}/h ({scored['estimated_severity']}) from "
        f"{report['ahi']['source']}, scored {number(scored['scored'])}/h ({scored['scored_severity']}, rule "
        f"{scored['hypopnea_rule']}); "
        + ("reliable" if reliability["reliable"] else "UNRELIABLE: " + "; ".join(reliability["reasons"]))
    )

    _banner("done")
    print(f"comparison table : {comparison / 'comparison.md'} (+ .csv, label_fraction.png)")
    print(f"night report     : {report_dir / 'report.md'} (+ report.json, hypnogram.csv/.png, events.csv)")
    print(f"event detection  : {events / 'features' / 'results.md'}, {events / 'probe' / 'results.md'}")
    print(f"all outputs under {out}; demo took {(time.time() - started) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
