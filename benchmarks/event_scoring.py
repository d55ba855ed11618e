"""Event-level apnea/hypopnea scoring on a realistic synthetic cohort, measured against clinical targets.

A cohort of full nights is generated (dataset/synthetic.py, a seed the detector was never tuned on), parsed by
the project parser (dataset/data_parser.py, every channel) with enough `test` subjects for an AHI agreement (the
ICC is left blank below 10 nights), and the event task is run through its own script
(downstream/event_detection/train.py). The table compares what it measured on `test` with the targets:

| metric | target |
|---|---|
| epoch AUROC apnea / hypopnea (midpoint label; score: max or midpoint second) | >= 0.97 / >= 0.90 |
| event F1 apnea / hypopnea | >= 0.80 / >= 0.65 |
| AHI ICC(2,1) | >= 0.95 |
| AHI severity kappa | >= 0.80 |

    python benchmarks/event_scoring.py [--nights 30 --hours 7 --seed 2718 --test-frac 0.34 --val-frac 0.2]
        [--work runs/benchmarks/event_scoring] [--threads 1] [-- extra options of the event script]

The generated and parsed cohort is kept under --work and reused by a later run with the same settings. Results:
--work/<cohort>/run/metrics.json and --work/<cohort>/table.md.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

from threadpoolctl import threadpool_limits

from dataset.data_parser import parse_cohort
from dataset.synthetic import generate_cohort
from downstream.event_detection import train as event_detection
from downstream.event_detection.train import format_number

BENCHMARK_SEED = 2718  # the reported cohort; the detector was developed on other seeds
TARGETS: tuple[tuple[str, tuple[str, ...], float], ...] = (
    ("epoch AUROC apnea (max score)", ("epoch", "apnea", "auroc"), 0.97),
    ("epoch AUROC apnea (midpoint score)", ("epoch", "apnea", "auroc_midpoint"), 0.97),
    ("epoch AUROC hypopnea (max score)", ("epoch", "hypopnea", "auroc"), 0.90),
    ("epoch AUROC hypopnea (midpoint score)", ("epoch", "hypopnea", "auroc_midpoint"), 0.90),
    ("event F1 apnea", ("events", "apnea", "f1"), 0.80),
    ("event F1 hypopnea", ("events", "hypopnea", "f1"), 0.65),
    ("AHI ICC(2,1)", ("ahi", "agreement", "icc_2_1"), 0.95),
    ("AHI severity kappa", ("ahi", "agreement", "severity_kappa"), 0.80),
)


def lookup(record: dict, path: tuple[str, ...]) -> float:
    for key in path:
        record = (record or {}).get(key)
    return float("nan") if record is None else float(record)


def table(metrics: dict) -> str:
    """Markdown: each target with the test value (and val value) and whether it is met."""
    lines = ["| metric | target | test | val | met |", "|---|---|---|---|---|"]
    for name, path, target in TARGETS:
        test, val = lookup(metrics["test"], path), lookup(metrics["val"], path)
        met = "yes" if math.isfinite(test) and test >= target else "no"
        lines.append(f"| {name} | >= {target:.2f} | {test:.3f} | {val:.3f} | {met} |")
    lines += ["", "| events (test) | precision | recall | F1 |", "|---|---|---|---|"]
    for key, row in metrics["test"]["events"].items():
        lines.append(f"| {key} | {format_number(row['precision'])} | {format_number(row['recall'])} | {format_number(row['f1'])} |")
    agreement = metrics["test"]["ahi"]["agreement"]
    lines += ["", f"AHI ({agreement['n']} test nights, rule {metrics['hypopnea_rule']}, scored sleep): r "
              f"{format_number(agreement['pearson_r'])}, MAE {format_number(agreement['mae'], 1)} /h, bias {format_number(agreement['bias'], 1)} /h; "
              f"decoding threshold {metrics['selection']['threshold']}, merge gap {metrics['selection']['merge_gap_s']} s"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nights", type=int, default=30)
    parser.add_argument("--hours", type=float, default=7.0)
    parser.add_argument("--seed", type=int, default=BENCHMARK_SEED)
    parser.add_argument("--test-frac", type=float, default=0.34, help="of the subjects (10 of 30 nights)")
    parser.add_argument("--val-frac", type=float, default=0.2)
    parser.add_argument("--workers", type=int, default=2, help="parser processes")
    parser.add_argument("--threads", type=int, default=1, help="OpenMP threads of the tree fitting")
    parser.add_argument("--work", type=Path, default=Path("runs/benchmarks/event_scoring"))
    args, extra = parser.parse_known_args(argv)
    extra = [a for a in extra if a != "--"]
    cohort = args.work / f"n{args.nights}-h{args.hours:g}-seed{args.seed}"
    started = time.monotonic()
    if not (cohort / "src" / "synthetic_truth.json").is_file():
        print(f"generating {args.nights} nights x {args.hours:g} h (seed {args.seed}) ...", flush=True)
        generate_cohort(cohort / "src", nights=args.nights, hours=args.hours, seed=args.seed)
    if not (cohort / "dst" / "splits.json").is_file():
        parse_cohort(cohort / "src", cohort / "dst", workers=args.workers, test_frac=args.test_frac,
                     val_frac=args.val_frac, progress=True)
    print(f"cohort ready ({time.monotonic() - started:.0f} s): {cohort / 'dst'}", flush=True)
    with threadpool_limits(args.threads):
        code = event_detection.main(["--data", str(cohort / "dst"), "--out", str(cohort / "run"), "--no-progress",
                                     *extra])
    metrics = json.loads((cohort / "run" / "metrics.json").read_text())
    text = (f"# Event scoring: {args.nights} nights x {args.hours:g} h, seed {args.seed}, "
            f"{metrics['test']['n_recordings']} test nights\n\n" + table(metrics))
    (cohort / "table.md").write_text(text)
    print(text, flush=True)
    print(f"total {time.monotonic() - started:.0f} s", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
