"""Forward+backward time and peak memory of the Mamba2 block: chunked pure PyTorch vs the naive recurrence (CPU),
and mamba-ssm's fused kernel vs pure PyTorch (CUDA, when available).

    python benchmarks/bench_mamba.py                       # d_model 512, batch 32, T = 20 and 1000, 2 threads
    python benchmarks/bench_mamba.py --seq-lens 20 200 --repeats 5 --json bench_mamba.json

Each CPU case runs in a fresh process so its peak RSS is its own; "peak extra memory" is that peak minus the RSS
after building the block and input (CUDA: torch.cuda.max_memory_allocated). Times are the median and minimum
over --repeats runs after one warm-up (the naive recurrence at T >= 500 runs once, without warm-up; on CUDA at
least 10 runs). Prints a Markdown table. The naive recurrence at T = 1000, batch 32 needs ~8 GB of RAM and
minutes (its autograd graph holds 1000 steps of (32, 16, 64, 16) states); --skip-naive leaves it out.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor

import torch

from models.mamba import MAMBA_DEFAULTS, Mamba2, fused_kernels_available, mamba2_recurrence_ref


def build(d_model: int, batch: int, seqlen: int, device: str, backend: str):
    torch.manual_seed(0)
    block = Mamba2(d_model, backend=backend, **MAMBA_DEFAULTS).to(device)
    u = torch.randn(batch, seqlen, d_model, device=device, requires_grad=True)  # (batch, T, d_model)
    return block, u


def step(block: Mamba2, u: torch.Tensor, naive: bool) -> None:
    out = mamba2_recurrence_ref(block, u) if naive else block(u)
    out.square().mean().backward()
    block.zero_grad(set_to_none=True)
    u.grad = None


def cpu_case(d_model: int, batch: int, seqlen: int, naive: bool, threads: int, repeats: int) -> dict:
    """One CPU measurement in this (fresh) process: median seconds and peak extra RSS in MB."""
    import psutil

    torch.set_num_threads(threads)
    block, u = build(d_model, batch, seqlen, "cpu", "torch")
    baseline_mb = psutil.Process().memory_info().rss / 2**20
    if naive and seqlen >= 500:
        repeats = 1
    else:
        step(block, u, naive)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step(block, u, naive)
        times.append(time.perf_counter() - start)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    return {"seconds": statistics.median(times), "min_seconds": min(times), "peak_mb": max(0.0, peak_mb - baseline_mb)}


def sync(tensor: torch.Tensor) -> None:
    """Wait for the GPU's queued work when `tensor` is on CUDA (timings must include it)."""
    torch.cuda.synchronize() if tensor.is_cuda and torch.cuda.is_available() else None


def cuda_case(d_model: int, batch: int, seqlen: int, backend: str, repeats: int) -> dict:
    block, u = build(d_model, batch, seqlen, "cuda", backend)
    step(block, u, naive=False)  # warm-up (Triton compiles here)
    sync(u)
    torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step(block, u, naive=False)
        sync(u)
        times.append(time.perf_counter() - start)
    return {
        "seconds": statistics.median(times),
        "min_seconds": min(times),
        "peak_mb": torch.cuda.max_memory_allocated() / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--d-model", type=int, default=512, help="width of the Mamba2 block")
    parser.add_argument("--batch", type=int, default=32, help="sequences per batch")
    parser.add_argument("--seq-lens", type=int, nargs="+", default=[20, 1000], help="sequence lengths T timed")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per case (median and minimum)")
    parser.add_argument("--skip-naive", action="store_true", help="only time the chunked scan on CPU")
    parser.add_argument(
        "--devices",
        nargs="+",
        choices=["cpu", "cuda"],
        default=["cpu", "cuda"],
        help="which devices to time (cuda rows need a CUDA GPU)",
    )
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args()

    rows = []
    spawn = multiprocessing.get_context("spawn")
    for seqlen in args.seq_lens if "cpu" in args.devices else []:
        for naive in [False] if args.skip_naive else [False, True]:
            print(f"cpu T={seqlen} {'naive' if naive else 'chunked'} ...", file=sys.stderr, flush=True)
            with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
                result = pool.submit(
                    cpu_case, args.d_model, args.batch, seqlen, naive, args.threads, args.repeats
                ).result()
            rows.append(
                {
                    "device": f"cpu ({args.threads} threads)",
                    "T": seqlen,
                    "implementation": "naive recurrence" if naive else "chunked SSD (torch)",
                    **result,
                }
            )
    if "cuda" not in args.devices:
        cuda_note = ""
    elif torch.cuda.is_available():
        backends = ["torch"] + (["fused"] if fused_kernels_available() else [])
        for seqlen in args.seq_lens:
            for backend in backends:
                result = cuda_case(args.d_model, args.batch, seqlen, backend, max(args.repeats, 10))
                rows.append(
                    {
                        "device": torch.cuda.get_device_name(),
                        "T": seqlen,
                        "implementation": "mamba-ssm fused" if backend == "fused" else "chunked SSD (torch)",
                        **result,
                    }
                )
        cuda_note = "" if fused_kernels_available() else " (mamba-ssm not installed: fused kernel not timed)"
    else:
        cuda_note = " (no CUDA device: GPU rows skipped)"

    print(f"Mamba2 d_model={args.d_model} {MAMBA_DEFAULTS}, batch {args.batch}, forward+backward{cuda_note}")
    print("| device | T | implementation | median s | min s | peak extra memory (MB) | median vs chunked |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for row in rows:
        base = next(
            r
            for r in rows
            if r["device"] == row["device"] and r["T"] == row["T"] and r["implementation"] == "chunked SSD (torch)"
        )
        print(
            f"| {row['device']} | {row['T']} | {row['implementation']} | {row['seconds']:.4f} | "
            f"{row['min_seconds']:.4f} | "
            f"{row['peak_mb']:.0f} | {row['seconds'] / base['seconds']:.2f}x |"
        )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"config": vars(args), "rows": rows}, handle, indent=2)


if __name__ == "__main__":
    main()
