"""NeuroNet training-step throughput and peak memory (DESIGN.md 3.1, issue 4).

One training step = hybrid-loss forward (frame CNN, two masked views, reconstruction + NT-Xent),
backward, AdamW step. Each (device, preset, batch) runs in its own Python process so that its peak
RSS is its own. Random robust-scaled-like epochs (B, 3000) stand in for data: the step cost does
not depend on the values.

    python benchmarks/bench_train_step.py                       # tiny and B, batch 8 and 32, CPU fp32 and bf16 [+ CUDA]
    python benchmarks/bench_train_step.py --presets B --batches 8 --steps 10 --precisions fp32

CPU "fp32" is the exact computation; CPU "bf16" is autocast mixed precision (bf16 convolutions and matmuls,
fp32 weights, losses and optimizer), fast on CPUs with AVX512-BF16 or AMX. CUDA always runs bf16 autocast.

Reference (published NeuroNet-B implementation, same CPU, 2 threads): 3.0 samples/s at batch 8 and
4.3 at batch 32, 71.6 M parameters, peak RSS 2.3 / 4.0 GB.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

PUBLISHED_B = {8: (3.0, 2.3), 32: (4.3, 4.0)}  # batch → (samples/s, peak RSS GB) of the published code


def run_one(preset: str, batch: int, device: str, threads: int, steps: int, warmup: int, bf16: bool,
            detach_target: bool) -> dict:
    """Time `steps` training steps after `warmup` in this process; return the measurements."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from models.neuronet import build_neuronet, count_parameters, neuronet_config

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build_neuronet(neuronet_config(preset, detach_target=detach_target)).to(device).train()
    # fused AdamW: one kernel over all tensors (CPU support since torch 2.4) instead of ~12 ops per tensor
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05, fused=True)
    epochs = [torch.randn(batch, 3000, device=device) for _ in range(2)]  # (B, 3000) at 100 Hz
    use_amp = bf16 or device == "cuda"  # CUDA always trains with bf16 autocast (DESIGN.md 4)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def step(x):
        with torch.autocast(device, dtype=torch.bfloat16, enabled=use_amp):
            out = model(x)
        optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        optimizer.step()
        return out["loss"]

    for i in range(warmup):
        step(epochs[i % 2])
    sync()
    times, cpu_times = [], []
    for i in range(steps):
        start, cpu_start = time.perf_counter(), time.process_time()
        loss = step(epochs[i % 2])
        sync()
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)  # all threads; less sensitive to other load
    if not torch.isfinite(loss):
        raise RuntimeError(f"{preset} batch {batch}: non-finite loss {loss.item()}")
    step_s = statistics.median(times)
    with FlopCounterMode(display=False) as flops:  # one more forward + backward, counted, not timed
        with torch.autocast(device, dtype=torch.bfloat16, enabled=use_amp):
            out = model(epochs[0])
        out["loss"].backward()
    optimizer.zero_grad(set_to_none=True)
    gflop = flops.get_total_flops() / 1e9
    result = {
        "preset": preset, "batch": batch, "device": device, "threads": threads if device == "cpu" else None,
        "params_m": count_parameters(model) / 1e6, "step_s": step_s, "samples_per_s": batch / step_s,
        "cpu_s_per_step": statistics.median(cpu_times),
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2,  # ru_maxrss in KiB
        "amp": "bf16" if use_amp else None, "steps": steps,
        "gflop_per_step": gflop, "gflop_per_s": gflop / step_s,
    }
    if device == "cuda":
        result["peak_cuda_gb"] = torch.cuda.max_memory_allocated() / 1024 ** 3
        result["gpu"] = torch.cuda.get_device_name()
    return result


def _child(args, preset, batch, device, bf16) -> dict:
    command = [sys.executable, os.path.abspath(__file__), "--child", preset, str(batch), device,
               "--threads", str(args.threads), "--steps", str(args.steps), "--warmup", str(args.warmup)]
    if bf16:
        command.append("--bf16")
    if args.detach_target:
        command.append("--detach-target")
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"benchmark of {preset} batch {batch} on {device} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _table(results: list[dict]) -> str:
    header = (f"{'preset':<6} {'params':>8} {'device':<6} {'math':<9} {'batch':>5} {'step s':>7} "
              f"{'samples/s':>9} {'CPU s':>7} {'GFLOP':>7} {'GFLOP/s':>8} {'peak RSS':>9} {'vs published':>13}")
    lines = [header, "-" * len(header)]
    for r in results:
        math = "bf16-amp" if r["amp"] else "fp32"
        ref = PUBLISHED_B.get(r["batch"]) if r["preset"] == "B" and r["device"] == "cpu" else None
        versus = f"{r['samples_per_s'] / ref[0]:.2f}x" if ref else ""
        memory = f"{r['peak_rss_gb']:.2f} GB" + (f" ({r['peak_cuda_gb']:.1f} GPU)" if "peak_cuda_gb" in r else "")
        lines.append(f"{r['preset']:<6} {r['params_m']:>6.2f} M {r['device']:<6} {math:<9} {r['batch']:>5} "
                     f"{r['step_s']:>7.3f} {r['samples_per_s']:>9.2f} {r['cpu_s_per_step']:>7.2f} {r['gflop_per_step']:>7.1f} "
                     f"{r['gflop_per_s']:>8.1f} {memory:>9} {versus:>13}")
    return "\n".join(lines)


def matmul_peak_gflops(threads: int, size: int = 2048, repeats: int = 10) -> float:
    """Measured fp32 GFLOP/s of a large square matmul with `threads` threads: what this CPU can sustain at best."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(size, size), torch.randn(size, size)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * size ** 3 / min(times) / 1e9


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["tiny", "B"])
    parser.add_argument("--batches", nargs="+", type=int, default=[8, 32])
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (torch.set_num_threads)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per setting (median reported)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="auto: CPU, plus CUDA when available")
    parser.add_argument("--precisions", nargs="+", choices=["fp32", "bf16"], default=["fp32", "bf16"],
                        help="CPU precisions: exact fp32 and/or bf16 autocast")
    parser.add_argument("--detach-target", action="store_true", help="stop gradients through the latent target")
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--bf16", action="store_true", help=argparse.SUPPRESS)  # child: CPU bf16 autocast
    parser.add_argument("--child", nargs=3, metavar=("PRESET", "BATCH", "DEVICE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        preset, batch, device = args.child
        print(json.dumps(run_one(preset, int(batch), device, args.threads, args.steps, args.warmup,
                                 args.bf16, args.detach_target)))
        return 0

    import torch

    devices = ["cpu", "cuda"] if args.device == "auto" and torch.cuda.is_available() else (
        ["cpu"] if args.device == "auto" else [args.device])
    load = os.getloadavg()[0]
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, load average {load:.2f}"
          + ("  (machine busy: timings are pessimistic)" if load > 0.5 else ""), flush=True)
    results = []
    runs = [("cpu", p == "bf16") for p in args.precisions] if "cpu" in devices else []
    runs += [("cuda", True)] if "cuda" in devices else []
    for device, bf16 in runs:
        for preset in args.presets:
            for batch in args.batches:
                result = _child(args, preset, batch, device, bf16)
                results.append(result)
                print(f"  {preset} batch {batch} {device} {'bf16' if bf16 else 'fp32'}: "
                      f"{result['samples_per_s']:.2f} samples/s, peak RSS {result['peak_rss_gb']:.2f} GB", flush=True)
    print(_table(results))
    print("published NeuroNet-B (same CPU, 2 threads): " + ", ".join(
        f"batch {b}: {s:.1f} samples/s, {m:.1f} GB" for b, (s, m) in PUBLISHED_B.items()))
    if "cpu" in devices:
        peak = matmul_peak_gflops(args.threads)
        print(f"this CPU, {args.threads} threads: fp32 matmul peak {peak:.0f} GFLOP/s (2048^3, best of 10)")
        for r in results:
            ref = PUBLISHED_B.get(r["batch"])
            if r["preset"] == "B" and r["device"] == "cpu" and not r["amp"] and ref:
                need = 2 * ref[0] * r["gflop_per_step"] / r["batch"]  # GFLOP/s for 2x the published samples/s
                print(f"  B fp32 batch {r['batch']}: {r['gflop_per_step'] / r['batch']:.1f} GFLOP per sample; 2x "
                      f"published = {2 * ref[0]:.1f} samples/s needs {need:.0f} GFLOP/s = {need / peak:.0%} of that "
                      f"peak (now {r['gflop_per_s']:.0f} GFLOP/s = {r['gflop_per_s'] / peak:.0%})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
