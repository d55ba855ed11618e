"""Does unimodal pretraining learn? A fixed-CPU-budget learning check of a small EEG NeuroNet (--preset tiny
or fast).

1. A synthetic cohort is generated and parsed (dataset/synthetic.py, dataset/data_parser.py), or --data is used.
2. The EEG model is pretrained with the real script (pretrained/unimodal/pretrain.py) for about --minutes
   of wall time: the number of steps is planned from timed calibration steps (or given by --steps) so that the
   warmup + cosine schedule ends inside the budget; the script's --max-minutes is the hard stop.
3. On the same seeded subsample of labelled `train` (fit) and `val` (score) epochs, 5-class staging is scored by
     (a) a PCA + k-NN probe and a logistic-regression (linear) probe on the pretrained encoder (last.pt, not
         selected on val),
     (b) the same probes on the same encoder randomly initialised (same seed),
     (c) hand-crafted features (utils/features.py `epoch_features`) with the same k-NN, and with
         HistGradientBoosting.
   Channels are pooled (eeg_c4 and eeg_c3 epochs are separate samples), as in pretraining.

    python benchmarks/unimodal_learning.py [--out runs/bench_unimodal] [--preset tiny] [--minutes 8] [--steps N]
        [--nights 10] [--hours 2] [--data DST] [--model-arg detach_target=true]

Prints a table and writes OUT/results.json (OUT/results_<preset>.json for a preset other than tiny). (a) must
beat (b) clearly; (c) is the bar a good encoder reaches. To compare presets at the same number of steps on one
cohort, run once per preset with the same --out (the cohort is reused) and the same --steps.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import cohen_kappa_score, f1_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from dataset import data_parser, synthetic
from dataset.constants import MODALITY_CHANNELS
from dataset.datasets import EpochDataset
from models.neuronet import PRESETS, build_neuronet, neuronet_config
from pretrained.unimodal.pretrain import main as pretrain
from utils.checkpoint import load_checkpoint
from utils.features import epoch_features
from utils.knn_probe import KnnMonitor, classification_scores, knn_scores

CHANNELS = list(MODALITY_CHANNELS["eeg"])


def prepare_cohort(out: Path, nights: int, hours: float, seed: int) -> Path:
    """Generate + parse a synthetic cohort under OUT (reused when OUT/parsed/splits.json exists)."""
    dst = out / "parsed"
    if not (dst / "splits.json").is_file():
        started = time.time()
        synthetic.generate_cohort(out / "cohort", nights=nights, hours=hours, seed=seed)
        data_parser.parse_cohort(out / "cohort", dst, workers=1, progress=False)
        print(
            f"cohort: {nights} nights x {hours:g} h generated and parsed in {time.time() - started:.0f} s", flush=True
        )
    return dst


def seconds_per_step(dataset: EpochDataset, batch_size: int, preset: str = "tiny", steps: int = 8) -> float:
    """Fastest wall time (s) of one training step of `preset` (batch read, forward, backward, AdamW) on CPU.

    The minimum, not the median: on a shared machine the median swings with other jobs, and planning too many
    steps only means --max-minutes stops the run a little before its cosine ends, while planning too few
    wastes the budget."""
    torch.manual_seed(0)
    model = build_neuronet(neuronet_config(preset))
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


def linear_scores(train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray) -> dict[str, float]:
    """Standardise -> logistic regression fitted on train, scored on val (the multimodal benchmark's probe)."""
    predicted = (
        make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000)).fit(train_x, train_y).predict(val_x)
    )
    return {
        "linear_kappa": float(cohen_kappa_score(val_y, predicted)),
        "linear_f1": float(f1_score(val_y, predicted, average="macro")),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--out", type=Path, default=Path("runs/bench_unimodal"), help="work folder: cohort, run, results.json"
    )
    parser.add_argument("--data", type=Path, default=None, help="an existing parsed cohort (skips generation)")
    parser.add_argument("--preset", default="tiny", choices=PRESETS, help="NeuroNet preset to pretrain")
    parser.add_argument("--nights", type=int, default=10, help="synthetic nights, one subject each")
    parser.add_argument("--hours", type=float, default=2.0, help="hours per night")
    parser.add_argument(
        "--minutes",
        type=float,
        default=8.0,
        help="pretraining wall-time budget (at most 10; 0 with --steps: no time limit, e.g. to "
        "compare presets at the same number of steps on a busy machine)",
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=0,
        help="optimizer steps to plan (0: as many as --minutes allows, from a timed calibration)",
    )
    parser.add_argument("--batch-size", type=int, default=32, help="pretraining batch size")
    parser.add_argument("--lr", type=float, default=2e-3, help="base lr (x batch / 256)")
    parser.add_argument("--max-train", type=int, default=4000, help="train-split epochs fitted by the probes")
    parser.add_argument("--max-val", type=int, default=2000, help="val-split epochs scored")
    parser.add_argument("--knn-k", type=int, default=10, help="neighbours of the k-NN probe")
    parser.add_argument("--seed", type=int, default=0, help="cohort, pretraining and subsample seed")
    parser.add_argument(
        "--model-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="passed to the pretraining script (e.g. detach_target=true)",
    )
    args = parser.parse_args(argv)
    if not (0 < args.minutes <= 10 or (args.minutes == 0 and args.steps)):
        parser.error("--minutes must be in (0, 10], or 0 together with --steps")
    args.out.mkdir(parents=True, exist_ok=True)
    dst = args.data or prepare_cohort(args.out, args.nights, args.hours, args.seed)

    pretrain_set = EpochDataset(dst, "pretrain", CHANNELS, pool_channels=True)
    n_pretrain, steps_per_epoch = len(pretrain_set), len(pretrain_set) // args.batch_size
    if args.steps:
        planned = args.steps
    else:  # as many steps as 80 % of the budget allows at full speed (loading and checkpoints take the rest)
        step_s = seconds_per_step(pretrain_set, args.batch_size, args.preset)
        planned = max(10, int(0.8 * args.minutes * 60 / step_s))
        print(f"calibration: {step_s:.2f} s per step at batch {args.batch_size}", flush=True)
    epochs = math.ceil(planned / steps_per_epoch)
    warmup_steps = max(1, planned // 10)
    print(
        f"pretrain: {n_pretrain} single-channel epochs, {steps_per_epoch} steps/epoch -> {planned} steps "
        f"({epochs} epochs scheduled, {warmup_steps} warmup steps), "
        + (f"at most {args.minutes:g} min" if args.minutes else "no time limit"),
        flush=True,
    )
    run_dir = args.out / f"eeg_{args.preset}"
    started = time.time()
    pretrain(
        [
            "--data",
            str(dst),
            "--out",
            str(run_dir),
            "--preset",
            args.preset,
            "--passes",
            str(epochs),
            "--max-steps",
            str(planned),
            "--batch-size",
            str(args.batch_size),
            "--lr",
            str(args.lr),
            "--max-minutes",
            str(args.minutes),
            "--warmup-steps",
            str(warmup_steps),
            "--workers",
            "0",
            "--no-monitor",
            "--no-progress",
            "--resume",
            "none",
            "--seed",
            str(args.seed),
            "--log-every",
            "10",
            *(f"--model-arg={item}" for item in args.model_arg),
        ],
        modality="eeg",
    )
    pretrain_s = time.time() - started

    train_set = EpochDataset(dst, "train", CHANNELS, task="sleep_stage", pool_channels=True)
    val_set = EpochDataset(dst, "val", CHANNELS, task="sleep_stage", pool_channels=True)
    monitor = KnnMonitor(
        train_set,
        val_set,
        "stage",
        k=args.knn_k,
        max_train=args.max_train,
        max_val=args.max_val,
        batch_size=256,
        seed=args.seed,
    )
    ckpt = load_checkpoint(run_dir / "last.pt")
    pretrained = build_neuronet(ckpt["model_config"])
    pretrained.load_state_dict(ckpt["model"])
    torch.manual_seed(args.seed)
    random_init = build_neuronet(ckpt["model_config"])
    device = torch.device("cpu")
    results: dict = {}
    for name, model in (("pretrained", pretrained), ("random_init", random_init)):
        embedded = monitor.embed(model, device)  # {"train": (x (N, D), y), "val": ...}, encoded once
        (fit_x, fit_y), (score_x, score_y) = embedded["train"], embedded["val"]
        results[name] = {
            **knn_scores(fit_x, fit_y, score_x, score_y, k=args.knn_k),
            **linear_scores(fit_x, fit_y, score_x, score_y),
            "n_train": int(fit_y.size),
            "n_val": int(score_y.size),
        }

    train_x, train_y = feature_matrix(monitor.train_set)
    val_x, val_y = feature_matrix(monitor.val_set)
    results["features_knn"] = {
        **knn_scores(train_x, train_y, val_x, val_y, k=args.knn_k),
        "n_train": int(train_y.size),
        "n_val": int(val_y.size),
    }
    boosted = HistGradientBoostingClassifier(random_state=args.seed).fit(train_x, train_y)
    results["features_hgb"] = {
        **classification_scores(val_y, boosted.predict(val_x)),
        "n_train": int(train_y.size),
        "n_val": int(val_y.size),
    }
    results["run"] = {
        "preset": args.preset,
        "epochs": epochs,
        "steps": int(ckpt["step"]),
        "planned_steps": planned,
        "pretrain_s": round(pretrain_s, 1),
        "batch_size": args.batch_size,
        "base_lr": args.lr,
        "model_args": args.model_arg,
        "n_pretrain": n_pretrain,
        "train_subjects": len(train_set.subjects),
        "val_subjects": len(val_set.subjects),
        "torch_threads": torch.get_num_threads(),
    }

    print(
        f"\nval 5-class staging, k-NN (k={args.knn_k}) on the same {results['pretrained']['n_train']} train / "
        f"{results['pretrained']['n_val']} val epochs (linear: logistic regression on the same epochs):"
    )
    print(f"{'representation':<34}{'kappa':>8}{'macro-F1':>10}{'accuracy':>10}{'linear kappa':>14}")
    for name, label in (
        ("pretrained", f"(a) pretrained {args.preset} encoder"),
        ("random_init", "(b) same encoder, random init"),
        ("features_knn", "(c) hand-crafted features, k-NN"),
        ("features_hgb", "(c) hand-crafted, HistGB"),
    ):
        r = results[name]
        linear = f"{r['linear_kappa']:>14.3f}" if "linear_kappa" in r else ""
        print(f"{label:<34}{r['kappa']:>8.3f}{r['f1']:>10.3f}{r['accuracy']:>10.3f}{linear}")
    print(f"pretraining: {results['run']['steps']} of {planned} planned steps in {pretrain_s:.0f} s")
    path = args.out / ("results.json" if args.preset == "tiny" else f"results_{args.preset}.json")
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    os.replace(tmp, path)
    return results


if __name__ == "__main__":
    main()
