"""Does unimodal pretraining learn? A fixed-CPU-budget learning check of the tiny EEG NeuroNet.

1. A synthetic cohort is generated and parsed (dataset/synthetic.py, dataset/data_parser.py), or --data is used.
2. The tiny EEG model is pretrained with the real script (pretrained/unimodal/pretrain.py) for about --minutes
   of wall time: the number of steps is planned from timed calibration steps (or given by --steps) so that the
   warmup + cosine schedule ends inside the budget; the script's --max-minutes is the hard stop.
3. On the same seeded subsample of labelled `train` (fit) and `val` (score) epochs, 5-class staging is scored by
     (a) a PCA + k-NN probe on the pretrained encoder (last.pt, not selected on val),
     (b) the same probe on the same encoder randomly initialised (same seed),
     (c) hand-crafted features (utils/features.py `epoch_features`) with the same k-NN, and with
         HistGradientBoosting.
   Channels are pooled (eeg_c4 and eeg_c3 epochs are separate samples), as in pretraining.

    python benchmarks/unimodal_learning.py [--out runs/bench_unimodal] [--minutes 8] [--steps N] [--nights 10]
        [--hours 2] [--data DST] [--model-arg detach_target=true]

Prints a table and writes OUT/results.json. (a) must beat (b) clearly; (c) is the bar a good encoder reaches.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import accuracy_score, cohen_kappa_score, f1_score

from dataset import data_parser, synthetic
from dataset.constants import MODALITY_CHANNELS
from dataset.datasets import EpochDataset
from models.neuronet import build_neuronet, neuronet_config
from pretrained.unimodal.pretrain import main as pretrain
from utils.checkpoint import load_checkpoint
from utils.features import epoch_features
from utils.knn_probe import KnnMonitor, knn_scores

CHANNELS = list(MODALITY_CHANNELS["eeg"])


def prepare_cohort(out: Path, nights: int, hours: float, seed: int) -> Path:
    """Generate + parse a synthetic cohort under OUT (reused when OUT/parsed/splits.json exists)."""
    dst = out / "parsed"
    if not (dst / "splits.json").is_file():
        started = time.time()
        synthetic.generate_cohort(out / "cohort", nights=nights, hours=hours, seed=seed)
        data_parser.parse_cohort(out / "cohort", dst, workers=1, progress=False)
        print(f"cohort: {nights} nights x {hours:g} h generated and parsed in {time.time() - started:.0f} s",
              flush=True)
    return dst


def seconds_per_step(dataset: EpochDataset, batch_size: int, steps: int = 8) -> float:
    """Fastest wall time (s) of one tiny-preset training step (batch read, forward, backward, AdamW) on CPU.

    The minimum, not the median: on a shared machine the median swings with other jobs, and planning too many
    steps only means --max-minutes stops the run a little before its cosine ends, while planning too few
    wastes the budget."""
    torch.manual_seed(0)
    model = build_neuronet(neuronet_config("tiny"))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    timings = []
    for step in range(steps + 1):  # the first step pays one-off set-up costs: not counted
        started = time.perf_counter()
        signal = torch.stack([dataset[step * batch_size + i]["signal"] for i in range(batch_size)])  # (B, 3000)
        model(signal)["loss"].backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        timings.append(time.perf_counter() - started)
    return float(np.min(timings[1:]))


def feature_matrix(subset) -> tuple[np.ndarray, np.ndarray]:
    """Hand-crafted features (N, F) and stage labels (N,) of the items of a (Subset of an) EpochDataset."""
    signals = np.stack([subset[i]["signal"].numpy() for i in range(len(subset))])  # (N, 3000) at 100 Hz
    labels = np.array([int(subset[i]["label"]) for i in range(len(subset))], dtype=np.int64)
    features, _ = epoch_features({"eeg": signals})  # (N, F) single-channel EEG features
    return features.astype(np.float64), labels


def scores(truth: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    return {"accuracy": float(accuracy_score(truth, predicted)),
            "f1": float(f1_score(truth, predicted, average="macro")),
            "kappa": float(cohen_kappa_score(truth, predicted))}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/bench_unimodal"))
    parser.add_argument("--data", type=Path, default=None, help="an existing parsed cohort (skips generation)")
    parser.add_argument("--nights", type=int, default=10)
    parser.add_argument("--hours", type=float, default=2.0)
    parser.add_argument("--minutes", type=float, default=8.0, help="pretraining wall-time budget (at most 10)")
    parser.add_argument("--steps", type=int, default=0,
                        help="optimizer steps to plan (0: as many as --minutes allows, from a timed calibration)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3, help="base lr (x batch / 256)")
    parser.add_argument("--max-train", type=int, default=4000)
    parser.add_argument("--max-val", type=int, default=2000)
    parser.add_argument("--knn-k", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                        help="passed to the pretraining script (e.g. detach_target=true)")
    args = parser.parse_args(argv)
    if not 0 < args.minutes <= 10:
        parser.error("--minutes must be in (0, 10]")
    args.out.mkdir(parents=True, exist_ok=True)
    dst = args.data or prepare_cohort(args.out, args.nights, args.hours, args.seed)

    pretrain_set = EpochDataset(dst, "pretrain", CHANNELS, pool_channels=True)
    n_pretrain, steps_per_epoch = len(pretrain_set), len(pretrain_set) // args.batch_size
    if args.steps:
        planned = args.steps
    else:  # as many steps as 80 % of the budget allows at full speed (loading and checkpoints take the rest)
        step_s = seconds_per_step(pretrain_set, args.batch_size)
        planned = max(10, int(0.8 * args.minutes * 60 / step_s))
        print(f"calibration: {step_s:.2f} s per step at batch {args.batch_size}", flush=True)
    epochs = math.ceil(planned / steps_per_epoch)
    warmup_steps = max(1, planned // 10)
    print(f"pretrain: {n_pretrain} single-channel epochs, {steps_per_epoch} steps/epoch -> {planned} steps "
          f"({epochs} epochs scheduled, {warmup_steps} warmup steps), at most {args.minutes:g} min", flush=True)
    run_dir = args.out / "eeg_tiny"
    started = time.time()
    pretrain(["--data", str(dst), "--out", str(run_dir), "--preset", "tiny", "--epochs", str(epochs),
              "--max-steps", str(planned),
              "--batch-size", str(args.batch_size), "--lr", str(args.lr), "--max-minutes", str(args.minutes),
              "--warmup-steps", str(warmup_steps),
              "--workers", "0", "--no-monitor", "--no-progress", "--resume", "none", "--seed", str(args.seed),
              "--log-every", "10", *(f"--model-arg={item}" for item in args.model_arg)], modality="eeg")
    pretrain_s = time.time() - started

    train_set = EpochDataset(dst, "train", CHANNELS, task="sleep_stage", pool_channels=True)
    val_set = EpochDataset(dst, "val", CHANNELS, task="sleep_stage", pool_channels=True)
    monitor = KnnMonitor(train_set, val_set, "stage", k=args.knn_k, max_train=args.max_train, max_val=args.max_val,
                         batch_size=256, seed=args.seed)
    ckpt = load_checkpoint(run_dir / "last.pt")
    pretrained = build_neuronet(ckpt["model_config"])
    pretrained.load_state_dict(ckpt["model"])
    torch.manual_seed(args.seed)
    random_init = build_neuronet(ckpt["model_config"])
    device = torch.device("cpu")
    results: dict = {}
    for name, model in (("pretrained", pretrained), ("random_init", random_init)):
        out = monitor(model, device)
        results[name] = {key.removeprefix("knn_"): value for key, value in out.items()}

    train_x, train_y = feature_matrix(monitor.train_set)
    val_x, val_y = feature_matrix(monitor.val_set)
    results["features_knn"] = {**knn_scores(train_x, train_y, val_x, val_y, k=args.knn_k),
                               "n_train": int(train_y.size), "n_val": int(val_y.size)}
    boosted = HistGradientBoostingClassifier(random_state=args.seed).fit(train_x, train_y)
    results["features_hgb"] = {**scores(val_y, boosted.predict(val_x)), "n_train": int(train_y.size),
                               "n_val": int(val_y.size)}
    results["run"] = {"epochs": epochs, "steps": int(ckpt["step"]), "planned_steps": planned,
                      "pretrain_s": round(pretrain_s, 1),
                      "batch_size": args.batch_size, "base_lr": args.lr, "model_args": args.model_arg,
                      "n_pretrain": n_pretrain,
                      "train_subjects": len(train_set.subjects), "val_subjects": len(val_set.subjects),
                      "torch_threads": torch.get_num_threads()}

    print(f"\nval 5-class staging, k-NN (k={args.knn_k}) on the same {results['pretrained']['n_train']} train / "
          f"{results['pretrained']['n_val']} val epochs:")
    print(f"{'representation':<32}{'kappa':>8}{'macro-F1':>10}{'accuracy':>10}")
    for name, label in (("pretrained", "(a) pretrained tiny encoder"), ("random_init", "(b) same encoder, random init"),
                        ("features_knn", "(c) hand-crafted features, k-NN"),
                        ("features_hgb", "(c) hand-crafted, HistGB")):
        r = results[name]
        print(f"{label:<32}{r['kappa']:>8.3f}{r['f1']:>10.3f}{r['accuracy']:>10.3f}")
    print(f"pretraining: {results['run']['steps']} of {planned} planned steps in {pretrain_s:.0f} s")
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
