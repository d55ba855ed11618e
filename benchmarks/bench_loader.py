"""Loader speed: random single-epoch read latency and DataLoader throughput of dataset.datasets.EpochDataset.

Builds a cohort first: a synthetic cohort generated and parsed with dataset.synthetic / dataset.data_parser
when those modules exist, else (or with --fixture) the docs/data.md §2.4 schema writer of tests/test_datasets.py
with realistic sizes (default 8 recordings x 960 epochs x 6 electrophysiology channels, about 700 MB).

    python benchmarks/bench_loader.py [--out DIR] [--fixture] [--recordings 8] [--epochs 960]

Random reads are timed with the row-group cache limited to the last row group, as in a cohort far larger than
the cache (SHHS), and with the files already in the page cache (freshly written): a cold disk adds its seek time.
Target (docs/data.md §2.4): random epoch read < 2 ms.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader

from dataset.constants import EPHYS_CHANNELS
from dataset.datasets import EpochDataset
from dataset.splits import read_splits

TESTS_FILE = Path(__file__).resolve().parent.parent / "tests" / "test_datasets.py"


def build_cohort(out: Path, n_recordings: int, n_epochs: int, force_fixture: bool) -> tuple[Path, str]:
    """Return (DST folder, how it was made); reuses a complete DST already in `out`."""
    dst = out / "dst"
    if (dst / "splits.json").is_file():
        return dst, "reused"
    if not force_fixture:
        try:
            from dataset.data_parser import parse_cohort
            from dataset.synthetic import generate_cohort
        except ImportError as err:
            print(f"synthetic cohort / parser not importable ({err}): using the fixture writer")
        else:
            generate_cohort(out / "src", nights=n_recordings, hours=n_epochs * 30 / 3600, seed=0)
            parse_cohort(out / "src", dst, workers=2)
            return dst, "synthetic cohort, parsed"
    spec = importlib.util.spec_from_file_location("_fixture_writer", TESTS_FILE)
    fixtures = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fixtures)
    subjects = [f"{100001 + k}" for k in range(n_recordings)]
    recordings = {
        f"shhs1-{s}": {"subject": s, "n_epochs": n_epochs, "channels": list(EPHYS_CHANNELS)} for s in subjects
    }
    fixtures.write_cohort(dst, recordings, {"pretrain": subjects, "train": subjects, "val": [], "test": []})
    return dst, "fixture writer (tests/test_datasets.py)"


def random_latency(dataset: EpochDataset, n_reads: int, seed: int = 0) -> tuple[float, float, float]:
    """Median and p95 wall time and mean CPU time (ms) of single-item reads at random indices.

    The row-group cache is limited to the last row group. CPU time is insensitive to other processes on a
    busy machine; wall time is what a training loop sees.
    """
    dataset.reader.cache_bytes = 0
    indices = np.random.default_rng(seed).integers(0, len(dataset), n_reads + 20)
    for index in indices[:20]:  # the first reads open the files
        dataset[int(index)]
    times = []
    cpu_start = time.process_time()
    for index in indices[20:]:
        start = time.perf_counter()
        dataset[int(index)]
        times.append((time.perf_counter() - start) * 1e3)
    cpu_ms = (time.process_time() - cpu_start) * 1e3 / n_reads
    return float(np.median(times)), float(np.percentile(times, 95)), cpu_ms


def loader_rate(dataset: EpochDataset, workers: int, shuffle: bool, n_batches: int, batch_size: int = 64) -> float:
    """Epochs per second through a DataLoader, after one warm-up batch (worker start-up excluded)."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=workers, persistent_workers=False)
    iterator = iter(loader)
    next(iterator)
    start, n = time.perf_counter(), 0
    for _ in range(n_batches):
        try:
            n += len(next(iterator)["recording"])
        except StopIteration:
            break
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="work folder (default: a temporary one)")
    parser.add_argument("--fixture", action="store_true", help="use the schema writer even if the parser exists")
    parser.add_argument("--recordings", type=int, default=8, help="recordings written and read")
    parser.add_argument("--epochs", type=int, default=960, help="epochs per recording (960 = 8 h)")
    parser.add_argument("--reads", type=int, default=500, help="random single-epoch reads per measurement")
    parser.add_argument("--batches", type=int, default=40, help="batches of 64 per DataLoader measurement")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        out = args.out or Path(scratch)
        out.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        dst, how = build_cohort(out, args.recordings, args.epochs, args.fixture)
        print(f"cohort: {dst} ({how}, {time.perf_counter() - start:.1f} s)")
        recordings = sorted({r for ids in read_splits(dst / "splits.json")["recordings"].values() for r in ids})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            six = EpochDataset(dst, recordings, list(EPHYS_CHANNELS))
            one = EpochDataset(dst, recordings, ["eeg_c4"])
        print(f"{len(one)} epochs in {len(one.recordings)} recordings")
        results = {"cohort": how, "epochs": len(one)}
        for name, dataset in (("1ch", one), ("6ch", six)):
            median, p95, cpu = random_latency(dataset, args.reads)
            results[f"random_read_ms_{name}"] = {"median": median, "p95": p95, "cpu_mean": cpu}
            print(
                f"random single-epoch read, {name}: median {median:.2f} ms, p95 {p95:.2f} ms "
                f"(CPU {cpu:.2f} ms per read)"
            )
        for workers in (0, 2):
            for shuffle in (True, False):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    dataset = EpochDataset(dst, recordings, list(EPHYS_CHANNELS))
                rate = loader_rate(dataset, workers, shuffle, args.batches)
                order = "random" if shuffle else "sequential"
                results[f"loader_epochs_per_s_6ch_w{workers}_{order}"] = rate
                print(f"DataLoader batch 64, 6 ch, {workers} workers, {order}: {rate:.0f} epochs/s")
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
