"""Speed and memory of dataset/data_parser.py on 8-h SHHS1-like nights (docs/data.md §2.4: < 750 MB per worker).

    python benchmarks/bench_parser.py [--nights 4] [--hours 8] [--workers 1 2] [--data data/bench_parser]

Generates the nights once with dataset/synthetic.py (SHHS1 layout: EEG/EMG/ECG 125 Hz, EOG 50 Hz, respiratory
10 Hz, SaO2 1 Hz, 16-bit), then parses them from scratch (`overwrite`) in a fresh process per worker count and
prints a table: wall time, nights/s, nights/s per worker, s/night per worker, peak RSS per worker, and the
per-night breakdown (hash, read, resample+filter, scale, labels, write). A last line times random single-epoch
reads from one written file. Timings are noisy on a shared machine; rerun alone for reported numbers.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

STEPS = ("hash", "read", "resample_filter", "scale", "labels", "write")


def child(src: str, dst: str, workers: int) -> None:
    """Run in a fresh process: parse the cohort and print one JSON line of measurements."""
    from dataset.data_parser import parse_cohort

    started = time.perf_counter()
    manifest = parse_cohort(src, dst, workers=workers, overwrite=True, progress=False)
    wall = time.perf_counter() - started
    runs = manifest.attrs["runs"]
    self_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    worker_mb = max(r["max_rss_mb"] for r in runs.values()) if workers > 1 else self_mb
    print(
        json.dumps(
            {
                "wall_s": wall,
                "n": len(manifest),
                "ok": int((manifest["status"] == "ok").sum()),
                "worker_rss_mb": max(worker_mb, children_mb if workers > 1 else 0.0),
                "parent_rss_mb": self_mb,
                "per_night_s": float(np.mean([sum(r["timings"].values()) for r in runs.values()])),
                "cpu_per_night_s": float(np.mean([r["cpu_s"] for r in runs.values()])),
                "steps": {s: float(np.mean([r["timings"].get(s, 0.0) for r in runs.values()])) for s in STEPS},
            }
        )
    )


def random_epoch_read_ms(path: Path, reads: int = 200) -> float:
    """Mean time to read every channel of one random epoch (its row group, then one row) from an open file."""
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path, memory_map=True)
    rows = [parquet.metadata.row_group(i).num_rows for i in range(parquet.num_row_groups)]
    starts = np.concatenate([[0], np.cumsum(rows)])
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    for epoch in rng.integers(0, starts[-1], reads):
        group = int(np.searchsorted(starts, epoch, side="right") - 1)
        table = parquet.read_row_group(group)
        table.slice(int(epoch - starts[group]), 1).to_pydict()
    return (time.perf_counter() - started) / reads * 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nights", type=int, default=4, help="synthetic nights parsed")
    parser.add_argument("--hours", type=float, default=8.0, help="hours per night")
    parser.add_argument(
        "--workers", type=int, nargs="+", default=[1, 2], help="worker counts timed, a fresh process each"
    )
    parser.add_argument("--data", type=Path, default=Path("data/bench_parser"), help="cohort cache and outputs")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic cohort")
    parser.add_argument("--child", nargs=3, metavar=("SRC", "DST", "WORKERS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child[0], args.child[1], int(args.child[2]))
        return 0

    from dataset.synthetic import generate_cohort

    src = args.data / f"src-{args.nights}x{args.hours:g}h-seed{args.seed}"
    if not (src / "synthetic_truth.json").exists():
        started = time.perf_counter()
        generate_cohort(src, args.nights, args.hours, args.seed)
        print(f"generated {args.nights} x {args.hours:g}-h nights in {time.perf_counter() - started:.0f} s -> {src}")
    edf_mb = sum(p.stat().st_size for p in src.rglob("*.edf")) / 2**20 / args.nights
    print(f"{args.nights} nights of {args.hours:g} h, {edf_mb:.0f} MB EDF each")

    header = (
        f"{'workers':>7} {'wall s':>7} {'nights/s':>9} {'n/s/worker':>10} {'s/night/worker':>14} "
        f"{'RSS/worker MB':>13} {'proc s/night':>12} {'cpu s/night':>11}  " + " ".join(f"{s:>15}" for s in STEPS)
    )
    lines = [header]
    dst = None
    for workers in args.workers:
        dst = args.data / f"dst-w{workers}"
        result = subprocess.run(
            [sys.executable, __file__, "--child", str(src), str(dst), str(workers)],
            capture_output=True,
            text=True,
            check=True,
        )
        m = json.loads(result.stdout.strip().splitlines()[-1])
        rate = m["n"] / m["wall_s"]
        lines.append(
            f"{workers:>7} {m['wall_s']:>7.2f} {rate:>9.3f} {rate / workers:>10.3f} "
            f"{workers / rate:>14.2f} {m['worker_rss_mb']:>13.0f} {m['per_night_s']:>12.2f} {m['cpu_per_night_s']:>11.2f}  "
            + " ".join(f"{m['steps'][s]:>15.3f}" for s in STEPS)
        )
    print("\n".join(lines))
    print(
        "wall includes process start-up and imports; 'proc s/night' (wall) and the steps are inside the worker "
        "(s); 'cpu s/night' is the worker's CPU time per night, the number least disturbed by other load."
    )
    if dst is not None:
        recording = sorted((dst / "recordings").glob("*.parquet"))[0]
        print(f"random epoch read (all channels, {recording.name}): {random_epoch_read_ms(recording):.2f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
