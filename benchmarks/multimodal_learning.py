"""Does multimodal fusion help? A fixed-CPU-budget learning check of tiny SynthSleepNet (docs/models.md §3.2).

`--preset` (tiny, fast or spectral) picks the unimodal encoders' preset and the fusion preset of the same name
(all three fusions are tiny's); the steps below say "tiny" for the default.

1. A synthetic cohort is generated and parsed (val = 20 % of subjects, so the score rests on more than one
   night), or --data is used. The nights are long enough (default 6 h, about four sleep cycles) to hold every
   stage in a realistic mix: REM, where the eye movements and chin atonia that only EOG and EMG show are what
   scorers rely on, comes late in the night. Short nights cover the first cycle only, which is wake, N2 and
   N3 (14 nights x 1.5 h: 1 % REM, 40 % N3 in val), a task the EEG alone solves and that cannot show what
   fusion is for (measured there: every combination of channels, concatenation included, scored at or below
   the EEG alone under k-NN).
2. The four tiny unimodal NeuroNets (EEG, EOG, EMG, ECG) are pretrained with the real scripts
   (pretrained/unimodal/pretrain.py) for --unimodal-passes each; then the tiny SynthSleepNet over the six
   channels with pretrained/multimodal/train.py for --multimodal-passes. Whole passes with fixed batch sizes
   keep results independent of the machine's load (--max-minutes is an optional cap). Every model is taken from
   last.pt (no selection on val).
3. On the same seeded subsample of labelled `train` (fit) and `val` (score) epochs, 5-class staging is scored
   with the same PCA + k-NN probe (utils/knn_probe.py; the pass criterion) and, for reference, a standardised
   logistic-regression (linear) probe, on
     - each channel's unimodal encoder alone (mean encoder token; eeg_c4/eeg_c3 share the EEG model),
     - the fusion representation (mean fusion token) of the pretrained SynthSleepNet,
     - for reference: the concatenated unimodal vectors of all six channels, the fusion representation
       of an untrained SynthSleepNet built on the same encoders, and, per channel m, the mean of the pretrained
       fusion's output tokens at channel m's positions (how much stage information the fusion moved into
       channel m's tokens from the others, against channel m's encoder alone).

    python benchmarks/multimodal_learning.py [--out runs/bench_multimodal] [--nights 14] [--hours 6]
                                             [--unimodal-passes 1] [--multimodal-passes 1] [--seed 0]
    # ablation of the multimodal stage on the same cohort and unimodal encoders:
    python benchmarks/multimodal_learning.py --out runs/ablation --data runs/bench_multimodal/parsed \
        --unimodal-runs runs/bench_multimodal/unimodal --model-arg fusion_depth=4 --seed 1

Prints the stage mix of the probe's epochs and a table, writes OUT/results.json; exits 1 unless the fusion's
k-NN kappa beats the best single channel's. The difference is also resampled over the val epochs (paired
bootstrap) to show how far it stands above the noise of one small val split (14 nights: 3 val subjects), and so
is the pretrained fusion's margin over the untrained one on the same encoders (what multimodal pretraining
itself adds).
The probe fits 3,000 train epochs and scores every val epoch (~2,160): with 1,000 / 600, the verdict for one
pretrained model flipped with the probe's subsample seed (margins -0.013 to +0.089 kappa); with 3,000 / all it
kept its sign for three pretrained models x three subsample seeds (+0.023 to +0.063).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import cohen_kappa_score, f1_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch.utils.data import Subset

from dataset import data_parser, synthetic
from dataset.constants import CHANNEL_BY_NAME, EPHYS_CHANNELS, MODALITY_CHANNELS, STAGE_NAMES
from dataset.constants import EPHYS_MODALITIES as MODALITIES
from dataset.datasets import EpochDataset
from models.loading import load_backbone
from models.synthsleepnet import build_synthsleepnet, synthsleepnet_config
from pretrained.multimodal.train import main as multimodal_main
from pretrained.unimodal.pretrain import main as unimodal_main
from utils.knn_probe import classification_scores, encode_dataset, knn_predict, subsample_indices
from utils.run_logging import read_jsonl

CHANNELS = list(EPHYS_CHANNELS)


class FusionParts(torch.nn.Module):
    """encode(signals) → (B, (1 + M)·F): the mean fusion token, then the fusion's output tokens averaged per
    channel in channel order (the mean fusion token is the average of those M vectors, weighted by token counts),
    so one pass over the data scores the representation and its per-channel parts."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def encode(self, signals: dict[str, torch.Tensor]) -> torch.Tensor:  # {channel: (B, 3000)}
        pooled, tokens = self.model.encode(signals)  # (B, F), (B, ΣN, F) with channels in config order
        sizes = [encoder.n_frames for encoder in self.model.encoders.values()]
        return torch.cat([pooled, *(chunk.mean(dim=1) for chunk in torch.split(tokens, sizes, dim=1))], dim=1)


def last_log_record(run: Path) -> dict:
    """The final record (the run summary) of RUN/log.jsonl."""
    return read_jsonl(run / "log.jsonl")[-1]


def prepare_cohort(out: Path, nights: int, hours: float, seed: int, val_frac: float) -> Path:
    """Generate + parse a synthetic cohort under OUT (reused when OUT/parsed/splits.json exists)."""
    dst = out / "parsed"
    if not (dst / "splits.json").is_file():
        started = time.time()
        synthetic.generate_cohort(out / "cohort", nights=nights, hours=hours, seed=seed)
        data_parser.parse_cohort(out / "cohort", dst, workers=1, progress=False, val_frac=val_frac)
        print(
            f"cohort: {nights} nights x {hours:g} h generated and parsed in {time.time() - started:.0f} s", flush=True
        )
    return dst


def common_args(args: argparse.Namespace, dst: Path, out: Path, passes: int, lr: float, minutes: float) -> list[str]:
    return [
        "--data",
        str(dst),
        "--out",
        str(out),
        "--preset",
        args.preset,
        "--passes",
        str(passes),
        "--batch-size",
        str(args.batch_size),
        "--base-lr",
        str(lr),
        "--warmup-passes",
        "0.3",
        *(["--max-minutes", str(minutes)] if minutes else []),
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
    ]


def pretrain_unimodal(args: argparse.Namespace, dst: Path) -> dict[str, dict]:
    """Run the four unimodal scripts (or reuse --unimodal-runs); {modality: {"checkpoint", "steps", "epochs",
    "seconds"}}."""
    runs = {}
    for modality in MODALITIES:
        if args.unimodal_runs is not None:
            out = args.unimodal_runs / modality
            if not (out / "last.pt").is_file():
                raise SystemExit(f"--unimodal-runs: {out / 'last.pt'} not found")
            last = last_log_record(out)
            runs[modality] = {
                "checkpoint": str(out / "last.pt"),
                "steps": last["step"],
                "epochs": last.get("epochs_completed"),
                "seconds": 0.0,
                "reused": str(out),
            }
            continue
        n = len(EpochDataset(dst, "pretrain", list(MODALITY_CHANNELS[modality]), pool_channels=True))
        passes = args.unimodal_passes
        out = args.out / "unimodal" / modality
        print(f"unimodal {modality}: {n} single-channel epochs -> {passes} pass(es)", flush=True)
        started = time.time()
        unimodal_main(common_args(args, dst, out, passes, args.lr, args.max_minutes), modality=modality)
        steps = last_log_record(out)["step"]
        runs[modality] = {
            "checkpoint": str(out / "last.pt"),
            "steps": steps,
            "epochs": passes,  # passes over the data; the results.json key of earlier versions
            "seconds": round(time.time() - started, 1),
        }
    return runs


def pretrain_multimodal(args: argparse.Namespace, dst: Path, unimodal: dict[str, dict]) -> dict:
    n = len(EpochDataset(dst, "pretrain", CHANNELS))
    passes = args.multimodal_passes
    print(f"multimodal: {n} six-channel epochs -> {passes} pass(es)", flush=True)
    out = args.out / "multimodal"
    started = time.time()
    multimodal_main(
        [
            *common_args(args, dst, out, passes, args.multimodal_lr, args.max_minutes),
            "--unimodal",
            ",".join(f"{m}={unimodal[m]['checkpoint']}" for m in MODALITIES),
            *[item for pair in args.model_arg for item in ("--model-arg", pair)],
        ]
    )
    steps = last_log_record(out)["step"]
    return {
        "checkpoint": str(out / "last.pt"),
        "steps": steps,
        "epochs": passes,
        "seconds": round(time.time() - started, 1),
    }


def evaluate(
    args: argparse.Namespace, dst: Path, unimodal: dict[str, dict], multimodal: dict
) -> tuple[dict[str, dict], dict[str, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Staging scores of every representation on one seeded train/val subsample; also each representation's
    k-NN predictions (N_val,) and the (train (N,), val (N_val,)) labels."""
    device = torch.device("cpu")
    train_set = EpochDataset(dst, "train", CHANNELS, task="sleep_stage")
    val_set = EpochDataset(dst, "val", CHANNELS, task="sleep_stage")
    train = Subset(train_set, subsample_indices(len(train_set), args.max_train, args.seed).tolist())
    val = Subset(val_set, subsample_indices(len(val_set), args.max_val, args.seed + 1).tolist())

    def embed(model, key: str | list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """`key`: one channel (a unimodal encoder) or the channel list (the fusion model's dict input)."""
        train_x, train_y = encode_dataset(model, train, device, batch_size=64, input_key=key)
        val_x, val_y = encode_dataset(model, val, device, batch_size=64, input_key=key)
        return train_x, train_y, val_x, val_y

    def score(train_x, train_y, val_x, val_y) -> tuple[dict, np.ndarray]:
        linear = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000)).fit(train_x, train_y)
        predicted = linear.predict(val_x)
        knn_predicted = knn_predict(train_x, train_y, val_x, k=args.knn_k, pca_dim=args.knn_pca)  # (N_val,)
        return {
            **classification_scores(val_y, knn_predicted),
            "linear_kappa": float(cohen_kappa_score(val_y, predicted)),
            "linear_f1": float(f1_score(val_y, predicted, average="macro")),
            "n_train": int(train_y.size),
            "n_val": int(val_y.size),
        }, knn_predicted

    results, predictions, per_channel = {}, {}, {}
    with torch.no_grad():
        nets = {m: load_backbone(unimodal[m]["checkpoint"]) for m in MODALITIES}
        for channel in CHANNELS:
            per_channel[channel] = embed(nets[CHANNEL_BY_NAME[channel].modality], channel)
            results[channel], predictions[channel] = score(*per_channel[channel])
        concat = [np.concatenate([per_channel[ch][i] for ch in CHANNELS], axis=1) for i in (0, 2)]
        labels = per_channel[CHANNELS[0]][1], per_channel[CHANNELS[0]][3]  # train (N,), val (N_val,)
        results["concat_unimodal"], predictions["concat_unimodal"] = score(concat[0], labels[0], concat[1], labels[1])
        torch.manual_seed(args.seed)
        untrained = build_synthsleepnet(
            synthsleepnet_config(args.preset), {ch: nets[CHANNEL_BY_NAME[ch].modality] for ch in CHANNELS}
        )
        results["fusion_untrained"], predictions["fusion_untrained"] = score(*embed(untrained.eval(), CHANNELS))
        fusion = load_backbone(multimodal["checkpoint"])
        train_x, train_y, val_x, val_y = embed(FusionParts(fusion).eval(), CHANNELS)
        width = fusion.embed_dim
        for i, key in enumerate(["fusion", *(f"fusion_tokens_{ch}" for ch in fusion.channels)]):
            part = slice(i * width, (i + 1) * width)
            results[key], knn_predicted = score(train_x[:, part], train_y, val_x[:, part], val_y)
            if key == "fusion":
                predictions[key] = knn_predicted
    return results, predictions, labels


def paired_bootstrap(
    true: np.ndarray, first: np.ndarray, second: np.ndarray, resamples: int = 1000, seed: int = 0
) -> dict[str, float]:
    """Kappa(first) - kappa(second) over `resamples` resamplings of the val epochs (with replacement, paired):
    mean, 2.5 / 97.5 % quantiles and the share of resamples above 0. Epochs of one subject are correlated, so
    this understates the spread across subjects; it shows whether a difference is larger than the noise of
    the val epochs alone. Arrays are (N_val,) class indices."""
    rng = np.random.default_rng(seed)
    diffs = np.empty(resamples)
    for i in range(resamples):
        pick = rng.integers(0, true.size, true.size)  # (N_val,) indices, with replacement
        diffs[i] = cohen_kappa_score(true[pick], first[pick]) - cohen_kappa_score(true[pick], second[pick])
    return {
        "mean": float(diffs.mean()),
        "low": float(np.quantile(diffs, 0.025)),
        "high": float(np.quantile(diffs, 0.975)),
        "p_above_0": float((diffs > 0).mean()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--out", type=Path, default=Path("runs/bench_multimodal"), help="work folder: cohort, runs, results.json"
    )
    parser.add_argument("--data", type=Path, default=None, help="an existing parsed cohort (skips generation)")
    parser.add_argument("--nights", type=int, default=14, help="synthetic nights, one subject each")
    parser.add_argument(
        "--hours", type=float, default=6.0, help="scored hours per night; under ~4 h the nights hold almost no REM"
    )
    parser.add_argument("--val-frac", type=float, default=0.2, help="share of subjects in val (generated cohort)")
    parser.add_argument(
        "--unimodal-passes",
        "--unimodal-epochs",
        dest="unimodal_passes",
        type=int,
        default=1,
        help="pretraining passes over the data of each unimodal model. --unimodal-epochs: the old name, still accepted",
    )
    parser.add_argument(
        "--multimodal-passes",
        "--multimodal-epochs",
        dest="multimodal_passes",
        type=int,
        default=1,
        help="pretraining passes over the data of the SynthSleepNet. --multimodal-epochs: the old name, still accepted",
    )
    parser.add_argument(
        "--max-minutes",
        type=float,
        default=0.0,
        help="optional wall-time cap of each pretraining run (0 = none, the default: budgets are "
        "passes, so a seed gives the same numbers on any machine)",
    )
    parser.add_argument(
        "--preset",
        default="tiny",
        choices=("tiny", "fast", "spectral"),
        help="NeuroNet preset of the unimodal encoders and SynthSleepNet preset of the fusion (the same name)",
    )
    parser.add_argument("--batch-size", type=int, default=32, help="pretraining batch size of every model")
    parser.add_argument("--lr", type=float, default=2e-3, help="unimodal base lr (x batch / 256)")
    parser.add_argument("--multimodal-lr", type=float, default=1e-3, help="multimodal base lr (x batch / 256)")
    parser.add_argument(
        "--model-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="SynthSleepNet config override passed to the multimodal script (repeatable), e.g. fusion_depth=4",
    )
    parser.add_argument(
        "--unimodal-runs",
        type=Path,
        default=None,
        help="reuse the unimodal runs of an earlier benchmark (its OUT/unimodal) instead of "
        "pretraining them again (ablations of the multimodal stage)",
    )
    parser.add_argument("--max-train", type=int, default=3000, help="train-split epochs fitted by the probe")
    parser.add_argument("--max-val", type=int, default=0, help="val-split epochs scored (0: all)")
    parser.add_argument("--knn-k", type=int, default=10, help="neighbours of the k-NN probe")
    parser.add_argument("--knn-pca", type=int, default=50, help="PCA components before the k-NN probe")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (1 is fastest on a shared machine; 2 may help on an idle one)",
    )
    parser.add_argument("--seed", type=int, default=0, help="cohort, pretraining and probe-subsample seed")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    dst = args.data or prepare_cohort(args.out, args.nights, args.hours, args.seed, args.val_frac)
    unimodal = pretrain_unimodal(args, dst)
    multimodal = pretrain_multimodal(args, dst, unimodal)
    eval_started = time.time()
    results, predictions, (train_y, val_y) = evaluate(args, dst, unimodal, multimodal)
    stage_mix = {
        split: {name: int((y == i).sum()) for i, name in enumerate(STAGE_NAMES)}
        for split, y in (("train", train_y), ("val", val_y))
    }
    best_single = max(CHANNELS, key=lambda ch: results[ch]["kappa"])
    best_linear = max(CHANNELS, key=lambda ch: results[ch]["linear_kappa"])
    passed = results["fusion"]["kappa"] > results[best_single]["kappa"]
    difference = paired_bootstrap(val_y, predictions["fusion"], predictions[best_single], seed=args.seed)
    over_untrained = paired_bootstrap(val_y, predictions["fusion"], predictions["fusion_untrained"], seed=args.seed)
    results["run"] = {
        "unimodal": unimodal,
        "multimodal": multimodal,
        "eval_s": round(time.time() - eval_started, 1),
        "total_s": round(time.time() - started, 1),
        "best_single_channel": best_single,
        "fusion_beats_best_single": passed,
        "fusion_minus_best_single_knn_bootstrap": difference,
        "fusion_minus_untrained_fusion_knn_bootstrap": over_untrained,
        "best_single_channel_linear": best_linear,
        "fusion_beats_best_single_linear": results["fusion"]["linear_kappa"] > results[best_linear]["linear_kappa"],
        "stage_mix": stage_mix,
        "torch_threads": torch.get_num_threads(),
        "batch_size": args.batch_size,
        "base_lr": args.lr,
        "multimodal_base_lr": args.multimodal_lr,
    }

    n = results["fusion"]
    print(
        "\nstage mix of the probe's epochs (train / val): "
        + ", ".join(f"{name} {stage_mix['train'][name]} / {stage_mix['val'][name]}" for name in STAGE_NAMES)
    )
    print(
        f"val 5-class staging on the same {n['n_train']} train / {n['n_val']} val epochs: PCA + k-NN (k={args.knn_k}), "
        f"and a logistic-regression probe (linear):"
    )
    print(f"{'representation':<44}{'kappa':>8}{'macro-F1':>10}{'accuracy':>10}{'linear kappa':>14}{'linear F1':>11}")
    rows = [(ch, f"{ch} alone ({CHANNEL_BY_NAME[ch].modality} encoder)") for ch in CHANNELS]
    rows += [
        ("concat_unimodal", "6 unimodal vectors concatenated (ref.)"),
        ("fusion_untrained", "fusion, untrained SynthSleepNet (ref.)"),
        ("fusion", "fusion, pretrained SynthSleepNet"),
    ]
    rows += [(f"fusion_tokens_{ch}", f"  its output tokens at {ch}'s positions") for ch in CHANNELS]
    for key, label in rows:
        r = results[key]
        print(
            f"{label:<44}{r['kappa']:>8.3f}{r['f1']:>10.3f}{r['accuracy']:>10.3f}{r['linear_kappa']:>14.3f}"
            f"{r['linear_f1']:>11.3f}"
        )
    steps = ", ".join(f"{m} {unimodal[m]['steps']} steps/{unimodal[m]['seconds']:.0f} s" for m in MODALITIES)
    print(
        f"pretraining: {steps}; multimodal {multimodal['steps']} steps/{multimodal['seconds']:.0f} s; "
        f"evaluation {results['run']['eval_s']:.0f} s; total {results['run']['total_s']:.0f} s "
        f"({torch.get_num_threads()} torch thread(s))"
    )
    print(
        f"linear probe: fusion kappa {results['fusion']['linear_kappa']:.3f} vs best single channel {best_linear} "
        f"{results[best_linear]['linear_kappa']:.3f}"
    )
    print(
        f"k-NN: fusion kappa {results['fusion']['kappa']:.3f} vs best single channel {best_single} "
        f"{results[best_single]['kappa']:.3f}: {'PASS' if passed else 'FAIL'} (difference over 1000 paired resamples "
        f"of the val epochs: mean {difference['mean']:+.3f}, 95 % {difference['low']:+.3f} .. {difference['high']:+.3f},"
        f" above 0 in {difference['p_above_0']:.0%})"
    )
    print(
        f"k-NN: pretrained fusion {results['fusion']['kappa']:.3f} vs untrained fusion on the same encoders "
        f"{results['fusion_untrained']['kappa']:.3f} (paired resamples: mean {over_untrained['mean']:+.3f}, 95 % "
        f"{over_untrained['low']:+.3f} .. {over_untrained['high']:+.3f}, above 0 in {over_untrained['p_above_0']:.0%})"
    )
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0 if passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
