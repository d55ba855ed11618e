"""NeuroNet training-step and encoding throughput, FLOPs and peak memory (docs/models.md §3.1).

One training step = hybrid-loss forward (frame CNN, two masked views, reconstruction + NT-Xent),
backward, AdamW step. Encoding = the downstream representation (mean of the encoder's frame tokens, no
masking) in eval mode under torch.inference_mode. GFLOP per sample are counted with
torch.utils.flop_counter.FlopCounterMode (convolutions, matmuls and attention; element-wise ops are free).
Each (device, preset, batch, precision) runs in its own Python process so that its peak RSS is its own.
Random robust-scaled-like epochs (B, 3000) stand in for data: the step cost does not depend on the values.

    python benchmarks/bench_train_step.py          # tiny, fast and B at batch 32, CPU fp32 and bf16 [+ CUDA]
    python benchmarks/bench_train_step.py --presets tiny fast --rounds 3 --curve-steps 30
    python benchmarks/bench_train_step.py --presets B --batches 8 --steps 10 --precisions fp32 --curve-steps 0

`--rounds R` repeats the whole sweep R times, presets interleaved, so that the speed of every preset relative
to `tiny` is measured under the same load (per-round ratios, median reported): use it on a shared machine.
`--curve-steps N` also trains each of `--curve-presets` for N steps from the same seed in fp32 and in bf16
autocast (same data, same masks) and reports the largest relative difference of the bf16 loss.

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
from pathlib import Path

PUBLISHED_B = {8: (3.0, 2.3), 32: (4.3, 4.0)}  # batch → (samples/s, peak RSS GB) of the published code


def run_one(
    preset: str, batch: int, device: str, threads: int, steps: int, warmup: int, bf16: bool, detach_target: bool
) -> dict:
    """Time `steps` training steps and `steps` encodings after `warmup` in this process; return the measurements."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from models.neuronet import build_neuronet, count_parameters, neuronet_config

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build_neuronet(neuronet_config(preset, detach_target=detach_target)).to(device).train()
    # fused AdamW: one kernel over all tensors (CPU support since torch 2.4) instead of ~12 ops per tensor
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05, fused=True)
    epochs = [torch.randn(batch, 3000, device=device) for _ in range(2)]  # (B, 3000) at 100 Hz
    use_amp = bf16 or device == "cuda"  # CUDA always trains with bf16 autocast (docs/training.md §4)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def step(x):
        with torch.autocast(device, dtype=torch.bfloat16, enabled=use_amp):
            out = model(x)
        optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        optimizer.step()
        return out["loss"]

    def encode(x):
        with torch.inference_mode(), torch.autocast(device, dtype=torch.bfloat16, enabled=use_amp):
            return model.encode(x)[0]  # (B, D) mean of the encoder's frame tokens

    def timed(fn, n):
        times, cpu_times = [], []
        for i in range(n):
            start, cpu_start = time.perf_counter(), time.process_time()
            value = fn(epochs[i % 2])
            sync()
            times.append(time.perf_counter() - start)
            cpu_times.append(time.process_time() - cpu_start)  # all threads; less sensitive to other load
        return value, statistics.median(times), statistics.median(cpu_times)

    for i in range(warmup):
        step(epochs[i % 2])
    sync()
    loss, step_s, cpu_s = timed(step, steps)
    if not torch.isfinite(loss):
        raise RuntimeError(f"{preset} batch {batch}: non-finite loss {loss.item()}")
    with FlopCounterMode(display=False) as flops:  # one more forward + backward, counted, not timed
        with torch.autocast(device, dtype=torch.bfloat16, enabled=use_amp):
            out = model(epochs[0])
        out["loss"].backward()
    optimizer.zero_grad(set_to_none=True)
    gflop = flops.get_total_flops() / 1e9

    model.eval()
    for i in range(warmup):
        encode(epochs[i % 2])
    _, encode_s, _ = timed(encode, steps)
    with FlopCounterMode(display=False) as flops:
        encode(epochs[0])
    encode_gflop = flops.get_total_flops() / 1e9
    result = {
        "preset": preset,
        "batch": batch,
        "device": device,
        "threads": threads if device == "cpu" else None,
        "params_m": count_parameters(model) / 1e6,
        "step_s": step_s,
        "samples_per_s": batch / step_s,
        "cpu_s_per_step": cpu_s,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2,  # ru_maxrss in KiB
        "amp": "bf16" if use_amp else None,
        "steps": steps,
        "gflop_per_step": gflop,
        "gflop_per_s": gflop / step_s,
        "gflop_per_sample": gflop / batch,
        "encode_s": encode_s,
        "encode_samples_per_s": batch / encode_s,
        "encode_gflop_per_sample": encode_gflop / batch,
    }
    if device == "cuda":
        result["peak_cuda_gb"] = torch.cuda.max_memory_allocated() / 1024**3
        result["gpu"] = torch.cuda.get_device_name()
    return result


def loss_curve(preset: str, batch: int, steps: int, threads: int, bf16: bool, base_lr: float = 2e-3) -> list[float]:
    """Training losses of `steps` CPU steps from seed 0: the same model, data and masks whatever `bf16` is.

    AdamW at the benchmarks' pretraining lr, linearly scaled (base_lr x batch / 256, as the engine does)."""
    import torch

    from models.neuronet import build_neuronet
    from utils.engine import scaled_lr

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build_neuronet(preset).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=scaled_lr(base_lr, batch), weight_decay=0.05, fused=True)
    data = torch.Generator().manual_seed(1)
    masks = torch.Generator().manual_seed(2)
    losses = []
    for _ in range(steps):
        epochs = torch.randn(batch, 3000, generator=data)  # (B, 3000) a fresh batch every step
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(epochs, generator=masks)
        optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        optimizer.step()
        losses.append(float(out["loss"]))
    return losses


def _child(args, preset, batch, device, bf16, curve_steps: int = 0):
    command = [
        sys.executable,
        os.path.abspath(__file__),
        "--child",
        preset,
        str(batch),
        device,
        "--threads",
        str(args.threads),
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
    ]
    if bf16:
        command.append("--bf16")
    if args.detach_target:
        command.append("--detach-target")
    if curve_steps:
        command += ["--curve", "--curve-steps", str(curve_steps)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"benchmark of {preset} batch {batch} on {device} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _table(results: list[dict]) -> str:
    header = (
        f"{'preset':<6} {'params':>8} {'device':<6} {'math':<9} {'batch':>5} {'train/s':>8} {'GFLOP':>6} "
        f"{'CPU s':>6} {'GFLOP/s':>7} {'encode/s':>9} {'GFLOP':>6} {'peak RSS':>9} {'vs published':>13}"
    )
    lines = [
        "samples/s = median over the timed steps, best round; GFLOP per sample (train: forward + backward)",
        header,
        "-" * len(header),
    ]
    for r in results:
        math = "bf16-amp" if r["amp"] else "fp32"
        ref = PUBLISHED_B.get(r["batch"]) if r["preset"] == "B" and r["device"] == "cpu" else None
        versus = f"{r['samples_per_s'] / ref[0]:.2f}x" if ref else ""
        memory = f"{r['peak_rss_gb']:.2f} GB" + (f" ({r['peak_cuda_gb']:.1f} GPU)" if "peak_cuda_gb" in r else "")
        lines.append(
            f"{r['preset']:<6} {r['params_m']:>6.2f} M {r['device']:<6} {math:<9} {r['batch']:>5} "
            f"{r['samples_per_s']:>8.1f} {r['gflop_per_sample']:>6.3f} {r['cpu_s_per_step']:>6.2f} "
            f"{r['gflop_per_s']:>7.1f} {r['encode_samples_per_s']:>9.1f} {r['encode_gflop_per_sample']:>6.3f} "
            f"{memory:>9} {versus:>13}"
        )
    return "\n".join(lines)


def _key(r: dict) -> tuple:
    return r["device"], r["amp"], r["batch"]


def best_of_rounds(rounds: list[list[dict]]) -> list[dict]:
    """One result per setting: the round with the highest training samples/s (least disturbed by other load)."""
    best: dict[tuple, dict] = {}
    for results in rounds:
        for r in results:
            key = (r["preset"], *_key(r))
            if key not in best or r["samples_per_s"] > best[key]["samples_per_s"]:
                best[key] = r
    return list(best.values())


def speed_vs_tiny(rounds: list[list[dict]]) -> list[dict]:
    """Per setting, each preset's train and encode samples/s over tiny's in the same round; median over rounds."""
    ratios: dict[tuple, dict[str, list[float]]] = {}
    for results in rounds:
        tiny = {_key(r): r for r in results if r["preset"] == "tiny"}
        for r in results:
            base = tiny.get(_key(r))
            if r["preset"] == "tiny" or base is None:
                continue
            entry = ratios.setdefault((r["preset"], *_key(r)), {"train": [], "encode": []})
            entry["train"].append(r["samples_per_s"] / base["samples_per_s"])
            entry["encode"].append(r["encode_samples_per_s"] / base["encode_samples_per_s"])
    return [
        {
            "preset": p,
            "device": d,
            "amp": a,
            "batch": b,
            "rounds": len(v["train"]),
            "train_x": statistics.median(v["train"]),
            "encode_x": statistics.median(v["encode"]),
            "train_x_all": v["train"],
            "encode_x_all": v["encode"],
        }
        for (p, d, a, b), v in ratios.items()
    ]


def bf16_check(args, presets: list[str], batch: int) -> list[dict]:
    """fp32 vs bf16-autocast loss curves of `--curve-steps` CPU steps from the same seed, per preset."""
    checks = []
    for preset in presets:
        fp32 = _child(args, preset, batch, "cpu", False, args.curve_steps)["losses"]
        bf16 = _child(args, preset, batch, "cpu", True, args.curve_steps)["losses"]
        relative = [abs(b - a) / abs(a) for a, b in zip(fp32, bf16)]
        checks.append(
            {
                "preset": preset,
                "batch": batch,
                "steps": len(fp32),
                "max_rel_loss_diff": max(relative),
                "fp32_first_last": [fp32[0], fp32[-1]],
                "bf16_first_last": [bf16[0], bf16[-1]],
                "fp32_losses": fp32,
                "bf16_losses": bf16,
            }
        )
    return checks


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
    return 2 * size**3 / min(times) / 1e9


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["tiny", "fast", "B"], help="NeuroNet presets timed")
    parser.add_argument("--batches", nargs="+", type=int, default=[8, 32], help="batch sizes timed")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (torch.set_num_threads)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps (and encodings) per setting, median reported")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps before the timed ones")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="repeat the sweep, presets interleaved; speed vs tiny = median of per-round ratios",
    )
    parser.add_argument(
        "--device", choices=["auto", "cpu", "cuda"], default="auto", help="auto: CPU, plus CUDA when available"
    )
    parser.add_argument(
        "--precisions",
        nargs="+",
        choices=["fp32", "bf16"],
        default=["fp32", "bf16"],
        help="CPU precisions: exact fp32 and/or bf16 autocast",
    )
    parser.add_argument(
        "--curve-steps",
        type=int,
        default=30,
        help="fp32 vs bf16 loss-curve check: CPU training steps from the same seed (0: skip)",
    )
    parser.add_argument("--curve-presets", nargs="+", default=["tiny", "fast"], help="presets of the loss-curve check")
    parser.add_argument("--curve-batch", type=int, default=32, help="batch size of the loss-curve check")
    parser.add_argument("--detach-target", action="store_true", help="stop gradients through the latent target")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    parser.add_argument("--bf16", action="store_true", help=argparse.SUPPRESS)  # child: CPU bf16 autocast
    parser.add_argument("--curve", action="store_true", help=argparse.SUPPRESS)  # child: loss curve only
    parser.add_argument("--child", nargs=3, metavar=("PRESET", "BATCH", "DEVICE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name in ("steps", "rounds", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1")

    if args.child:
        preset, batch, device = args.child
        if args.curve:
            print(json.dumps({"losses": loss_curve(preset, int(batch), args.curve_steps, args.threads, args.bf16)}))
        else:
            print(
                json.dumps(
                    run_one(
                        preset, int(batch), device, args.threads, args.steps, args.warmup, args.bf16, args.detach_target
                    )
                )
            )
        return 0

    from models.neuronet import PRESETS

    unknown = sorted(set(args.presets + args.curve_presets) - set(PRESETS))
    if unknown:
        parser.error(f"unknown preset(s) {unknown}; choose from {list(PRESETS)}")
    import torch

    devices = (
        ["cpu", "cuda"]
        if args.device == "auto" and torch.cuda.is_available()
        else (["cpu"] if args.device == "auto" else [args.device])
    )
    load = os.getloadavg()[0]
    print(
        f"torch {torch.__version__}, {os.cpu_count()} CPUs, load average {load:.2f}"
        + ("  (machine busy: timings are pessimistic)" if load > 0.5 else ""),
        flush=True,
    )
    runs = [("cpu", p == "bf16") for p in args.precisions] if "cpu" in devices else []
    runs += [("cuda", True)] if "cuda" in devices else []
    rounds = []
    for round_index in range(args.rounds):
        results = []
        for device, bf16 in runs:
            for batch in args.batches:
                for preset in args.presets:  # presets side by side in time: their ratio sees the same load
                    result = _child(args, preset, batch, device, bf16)
                    results.append(result)
                    print(
                        f"  round {round_index + 1}: {preset} batch {batch} {device} {'bf16' if bf16 else 'fp32'}: "
                        f"train {result['samples_per_s']:.1f} samples/s, encode "
                        f"{result['encode_samples_per_s']:.1f} samples/s, peak RSS {result['peak_rss_gb']:.2f} GB",
                        flush=True,
                    )
        rounds.append(results)
    results = best_of_rounds(rounds)
    print(_table(results))
    ratios = speed_vs_tiny(rounds)
    if ratios:
        print(f"speed vs tiny in the same round (median of {args.rounds} round(s); per-epoch cost ratio):")
        for r in ratios:
            print(
                f"  {r['preset']:<6} {r['device']} {'bf16' if r['amp'] else 'fp32'} batch {r['batch']}: train "
                f"{r['train_x']:.2f}x, encode {r['encode_x']:.2f}x  (rounds: train "
                f"{', '.join(f'{x:.2f}' for x in r['train_x_all'])}; encode "
                f"{', '.join(f'{x:.2f}' for x in r['encode_x_all'])})"
            )
    fp32 = {(r["preset"], r["batch"]): r for r in results if r["device"] == "cpu" and not r["amp"]}
    for r in results:
        base = fp32.get((r["preset"], r["batch"]))
        if r["device"] == "cpu" and r["amp"] and base:
            print(
                f"  {r['preset']:<6} batch {r['batch']}: CPU bf16 autocast vs fp32: train "
                f"{r['samples_per_s'] / base['samples_per_s']:.2f}x, encode "
                f"{r['encode_samples_per_s'] / base['encode_samples_per_s']:.2f}x"
            )
    checks = bf16_check(args, args.curve_presets, args.curve_batch) if args.curve_steps and "cpu" in devices else []
    for c in checks:
        print(
            f"  {c['preset']:<6} {c['steps']} steps at batch {c['batch']}, same seed: bf16 loss differs from fp32 by "
            f"at most {c['max_rel_loss_diff']:.2%} (fp32 {c['fp32_first_last'][0]:.3f} -> {c['fp32_first_last'][1]:.3f}, "
            f"bf16 {c['bf16_first_last'][0]:.3f} -> {c['bf16_first_last'][1]:.3f})"
        )
    print(
        "published NeuroNet-B (same CPU, 2 threads): "
        + ", ".join(f"batch {b}: {s:.1f} samples/s, {m:.1f} GB" for b, (s, m) in PUBLISHED_B.items())
    )
    if "cpu" in devices:
        peak = matmul_peak_gflops(args.threads)
        print(f"this CPU, {args.threads} threads: fp32 matmul peak {peak:.0f} GFLOP/s (2048^3, best of 10)")
        for r in results:
            ref = PUBLISHED_B.get(r["batch"])
            if r["preset"] == "B" and r["device"] == "cpu" and not r["amp"] and ref:
                need = 2 * ref[0] * r["gflop_per_step"] / r["batch"]  # GFLOP/s for 2x the published samples/s
                print(
                    f"  B fp32 batch {r['batch']}: {r['gflop_per_step'] / r['batch']:.1f} GFLOP per sample; 2x "
                    f"published = {2 * ref[0]:.1f} samples/s needs {need:.0f} GFLOP/s = {need / peak:.0%} of that "
                    f"peak (now {r['gflop_per_s']:.0f} GFLOP/s = {r['gflop_per_s'] / peak:.0%})"
                )
    if args.json:
        tmp = args.json.with_name(f".{args.json.name}.tmp")
        tmp.write_text(
            json.dumps(
                {
                    "load_average": load,
                    "results": results,
                    "rounds": rounds,
                    "speed_vs_tiny": ratios,
                    "bf16_check": checks,
                },
                indent=2,
            )
            + "\n"
        )
        os.replace(tmp, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
