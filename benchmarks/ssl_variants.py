"""Why does self-supervision not beat hand-crafted features? Variants of unimodal EEG pretraining, measured.

1. Cohort: `--nights` x `--hours` synthetic nights (seed `--seed`), generated and parsed once under OUT/parsed
   (benchmarks/unimodal_learning.py `prepare_cohort`), or `--data`.
2. Pretraining: each variant of VARIANTS (a preset + `--model-arg` overrides of pretrained/unimodal/eeg/train.py)
   for each of `--budgets` optimizer steps at batch 32: a fixed warmup then a CONSTANT lr (--min-lr-ratio 1), so
   the run of budget b is the run of the budget before it resumed to b steps (as benchmarks/ssl_scaling.py). Each
   run's process CPU seconds are measured; `pretrain_cpu_s` is the chain's total up to the budget.
3. Evaluation on a fixed, seeded sample of labelled EEG epochs (both channels, pooled: each channel's epoch is a
   sample, as in pretraining): `--train-chunks` / `--val-chunks` chunks of CHUNK consecutive epochs of the `train`
   / `val` recordings (never `test`); the inner CHUNK - 2 epochs of a chunk are scored, its two ends only give
   context. Probes (fitted on train, scored on val, 5-class staging kappa):
     knn        standardise -> PCA 50 -> 10-NN (utils/knn_probe.py, the pretraining monitor's probe)
     linear     standardise -> logistic regression C=0.1 (benchmarks/unimodal_learning.py `linear_scores`)
     *_ctx      the same on [vector(t-1), vector(t), vector(t+1)] (the epoch and its neighbours)
     linear_iqr linear on [vector(t), log IQR of the recording's channel] (the absolute scale the per-night
                robust scaling removes; the parser's manifest keeps it)
     hgb        HistGradientBoosting (the features baseline's model), also with context
   The same epochs' hand-crafted features (utils/features.py) through the same probes are the reference rows, on
   the robust-scaled signals (as the baseline) and on the unscaled ones (x IQR + median).
4. OUT/results.csv and OUT/results.md (one row per variant and budget, the reference rows first), rewritten after
   every run. Finished runs (cpu.json) and evaluations (eval.json) are skipped: a rerun resumes.

    python benchmarks/ssl_variants.py [--out runs/ssl_variants] [--data DST] [--variants fast,fast-spectrum,...]
        [--budgets 100,300] [--nights 16] [--hours 6] [--seed 11]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.ensemble import HistGradientBoostingClassifier

from benchmarks.ssl_scaling import BATCH, passes_for, run_script, write_json
from benchmarks.ssl_scaling_options import budget_list
from benchmarks.unimodal_learning import linear_scores, prepare_cohort
from dataset.constants import MODALITY_CHANNELS  # noqa: E402
from dataset.datasets import EpochDataset  # noqa: E402
from downstream.cache import neighbour_vectors  # noqa: E402
from downstream.results import markdown_table  # noqa: E402
from models.neuronet import build_neuronet, neuronet_config  # noqa: E402
from utils.checkpoint import load_checkpoint  # noqa: E402
from utils.features import epoch_features  # noqa: E402
from utils.knn_probe import classification_scores, knn_scores  # noqa: E402
from utils.run_logging import read_jsonl  # noqa: E402

CHANNELS = list(MODALITY_CHANNELS["eeg"])
CHUNK = 12  # consecutive epochs read per chunk; the inner CHUNK - 2 are scored

# name -> preset and --model-arg overrides of the published configuration (mask 0.8, token target attached)
VARIANTS: dict[str, dict[str, Any]] = {
    "random-init": {"preset": "tiny", "model_args": {}},  # never trained: the floor (budgets ignored)
    "random-init-fast": {"preset": "fast", "model_args": {}},
    "tiny": {"preset": "tiny", "model_args": {}},
    "tiny-detached": {"preset": "tiny", "model_args": {"detach_target": True}},
    "tiny-spectrum": {"preset": "tiny", "model_args": {"reconstruction_target": "spectrum"}},
    "fast": {"preset": "fast", "model_args": {}},
    "fast-detached": {"preset": "fast", "model_args": {"detach_target": True}},
    "fast-raw": {"preset": "fast", "model_args": {"reconstruction_target": "raw"}},
    "fast-spectrum": {"preset": "fast", "model_args": {"reconstruction_target": "spectrum"}},
    "fast-mask0.5": {"preset": "fast", "model_args": {"mask_ratio": 0.5}},
    "fast-mask0.65": {"preset": "fast", "model_args": {"mask_ratio": 0.65}},
    "fast-spectrum-mask0.5": {"preset": "fast", "model_args": {"reconstruction_target": "spectrum", "mask_ratio": 0.5}},
    "fast-no-contrastive": {"preset": "fast", "model_args": {"alpha": 0.0}},  # reconstruction alone
    # contrastive views: the epoch and its neighbouring epoch (dataset/neighbours.py) instead of two masked copies
    "fast-neighbour": {"preset": "fast", "model_args": {"positive_pair": "neighbour"}},
    # frame tokens from each frame's log power spectrum instead of a CNN (models/frame_backbone.py)
    "random-init-logspec": {"preset": "fast", "model_args": {"frame_tokenizer": "log_spectrum"}},
    "fast-logspec": {"preset": "fast", "model_args": {"frame_tokenizer": "log_spectrum"}},
    "fast-logspec-spectrum": {
        "preset": "fast",
        "model_args": {"frame_tokenizer": "log_spectrum", "reconstruction_target": "spectrum"},
    },
    # the epoch and the window shifted by up to 10 s (or 20 s): overlapping random crops
    "fast-shift": {"preset": "fast", "model_args": {"positive_pair": "shift"}},
    "fast-shift20": {"preset": "fast", "model_args": {"positive_pair": "shift", "positive_shift_s": 20.0}},
    "fast-neighbour-mask0.5": {"preset": "fast", "model_args": {"positive_pair": "neighbour", "mask_ratio": 0.5}},
    "fast-spectrum-no-contrastive": {
        "preset": "fast",
        "model_args": {"reconstruction_target": "spectrum", "alpha": 0.0},
    },
}
PROBES = (
    "knn_kappa",
    "linear_kappa",
    "hgb_kappa",
    "knn_kappa_ctx",
    "linear_kappa_ctx",
    "hgb_kappa_ctx",
    "linear_kappa_iqr",
)
TABLE_COLUMNS = (
    "variant",
    "preset",
    "model_args",
    "steps",
    "pretrain_cpu_s",
    *PROBES,
    "recon_loss",
    "contrastive_loss",
)
SIZES: dict[str, dict[str, Any]] = {
    "default": {"nights": 16, "hours": 6.0, "budgets": [100, 300], "train_chunks": 100, "val_chunks": 100},
    "tiny": {"nights": 6, "hours": 1.0, "budgets": [3], "train_chunks": 12, "val_chunks": 6},  # the slow test
}


# ---------------------------------------------------------------------------------------- evaluation sample
def chunk_sample(dataset: EpochDataset, n_chunks: int, seed: int) -> np.ndarray:
    """Dataset indices (n, CHUNK) of a seeded draw of `n_chunks` chunks of CHUNK consecutive epochs of one
    recording each (the recording's labelled epochs cut into aligned chunks; a chunk with a gap is not drawn)."""
    recordings, epochs = dataset.sample_index()  # (N,), (N,) in recording, epoch order
    starts = []
    for recording in np.unique(recordings):
        rows = np.flatnonzero(recordings == recording)
        for first in range(0, rows.size - CHUNK + 1, CHUNK):
            block = rows[first : first + CHUNK]
            if epochs[block[-1]] - epochs[block[0]] == CHUNK - 1:
                starts.append(block[0])
    starts = np.asarray(starts, dtype=np.int64)
    if starts.size == 0:
        raise ValueError(f"{dataset.split}: no run of {CHUNK} consecutive labelled epochs")
    chosen = np.sort(np.random.default_rng(seed).permutation(starts.size)[:n_chunks])
    return starts[chosen][:, None] + np.arange(CHUNK)


def read_chunks(dataset: EpochDataset, index: np.ndarray) -> dict[str, np.ndarray]:
    """Signals {channel: (n, CHUNK, 3000) float32}, labels (n, CHUNK) int64 and the recording of each chunk."""
    items = [dataset[int(i)] for i in index.ravel()]
    out = {ch: np.stack([item[ch].numpy() for item in items]).reshape(*index.shape, -1) for ch in dataset.channels}
    out["label"] = np.array([int(item["label"]) for item in items]).reshape(index.shape)
    out["recording"] = np.array([items[k * CHUNK]["recording"] for k in range(index.shape[0])], dtype=object)
    return out


def with_context(vectors: np.ndarray) -> np.ndarray:
    """Chunk vectors (n, CHUNK, D) -> [v(t-1), v(t), v(t+1)] of the inner epochs, (n * (CHUNK - 2), 3 D): the
    probes' `--neighbour-epochs 1` layout (`downstream.cache.neighbour_vectors`) without the clamped ends."""
    return np.concatenate([neighbour_vectors(chunk, 1)[1:-1] for chunk in vectors])


def inner(values: np.ndarray) -> np.ndarray:
    """(n, CHUNK, ...) -> the inner epochs, (n * (CHUNK - 2), ...)."""
    return values[:, 1:-1].reshape(-1, *values.shape[2:])


def pooled(split: Mapping[str, np.ndarray], per_channel: Mapping[str, np.ndarray], context: bool) -> np.ndarray:
    """Per-channel chunk arrays (n, CHUNK, D) -> pooled samples of the inner epochs, channels stacked."""
    return np.concatenate([with_context(per_channel[ch]) if context else inner(per_channel[ch]) for ch in CHANNELS])


def pooled_labels(split: Mapping[str, np.ndarray]) -> np.ndarray:
    return np.concatenate([inner(split["label"])] * len(CHANNELS))


def log_iqr(split: Mapping[str, np.ndarray], manifest: pd.DataFrame) -> np.ndarray:
    """(samples, 1): natural log of each pooled sample's recording-channel IQR (the robust scale), channels stacked."""
    scale = manifest.set_index("recording_id")
    per_chunk = [np.log(scale.loc[list(split["recording"]), f"iqr_{ch}"].to_numpy(np.float64)) for ch in CHANNELS]
    return np.concatenate([np.repeat(values, CHUNK - 2) for values in per_chunk])[:, None]


class EvalSample:
    """The fixed evaluation epochs: train and val chunks read once (signals, labels, recordings)."""

    def __init__(self, data: Path, train_chunks: int, val_chunks: int, seed: int):
        self.data = data
        self.manifest = pd.read_parquet(data / "manifest.parquet")
        self.splits = {}
        for split, n_chunks in (("train", train_chunks), ("val", val_chunks)):
            dataset = EpochDataset(data, split, CHANNELS, task="sleep_stage")
            self.splits[split] = read_chunks(dataset, chunk_sample(dataset, n_chunks, seed + (split == "val")))

    def describe(self) -> str:
        return ", ".join(
            f"{split} {s['label'].shape[0]} chunks ({(CHUNK - 2) * s['label'].shape[0] * len(CHANNELS)} "
            f"scored single-channel epochs)"
            for split, s in self.splits.items()
        )

    @torch.no_grad()
    def vectors(self, model: torch.nn.Module, batch: int = 256) -> dict[str, dict[str, np.ndarray]]:
        """{split: {channel: (n, CHUNK, D)}} pooled encoder vectors of every chunk epoch."""
        model.eval()
        out = {}
        for split, s in self.splits.items():
            out[split] = {}
            for ch in CHANNELS:
                flat = torch.from_numpy(s[ch].reshape(-1, s[ch].shape[-1]))  # (n * CHUNK, 3000) robust-scaled
                parts = [model.encode(flat[i : i + batch])[0].float().numpy() for i in range(0, len(flat), batch)]
                out[split][ch] = np.concatenate(parts).reshape(*s[ch].shape[:2], -1)
        return out

    def features(self, unscaled: bool = False) -> dict[str, dict[str, np.ndarray]]:
        """{split: {channel: (n, CHUNK, F)}} hand-crafted features (on the unscaled signals: x IQR + median)."""
        scale = self.manifest.set_index("recording_id")
        out = {}
        for split, s in self.splits.items():
            out[split] = {}
            for ch in CHANNELS:
                x = s[ch]
                if unscaled:
                    iqr = scale.loc[list(s["recording"]), f"iqr_{ch}"].to_numpy(np.float32)[:, None, None]
                    median = scale.loc[list(s["recording"]), f"median_{ch}"].to_numpy(np.float32)[:, None, None]
                    x = x * iqr + median
                values, _ = epoch_features({"eeg": x.reshape(-1, x.shape[-1])})
                out[split][ch] = values.reshape(*x.shape[:2], -1)
        return out

    def probe(self, per_split: Mapping[str, Mapping[str, np.ndarray]], seed: int = 0) -> dict[str, float]:
        """Val kappa of every probe of PROBES, fitted on train, on per-channel chunk arrays (n, CHUNK, D)."""
        train, val = self.splits["train"], self.splits["val"]
        train_y, val_y = pooled_labels(train), pooled_labels(val)
        result: dict[str, float] = {}
        for context, suffix in ((False, ""), (True, "_ctx")):
            train_x, val_x = pooled(train, per_split["train"], context), pooled(val, per_split["val"], context)
            result[f"knn_kappa{suffix}"] = knn_scores(train_x, train_y, val_x, val_y)["kappa"]
            result[f"linear_kappa{suffix}"] = linear_scores(train_x, train_y, val_x, val_y)["linear_kappa"]
            trees = HistGradientBoostingClassifier(random_state=seed).fit(train_x, train_y)
            result[f"hgb_kappa{suffix}"] = classification_scores(val_y, trees.predict(val_x))["kappa"]
        train_x = np.concatenate([pooled(train, per_split["train"], False), log_iqr(train, self.manifest)], axis=1)
        val_x = np.concatenate([pooled(val, per_split["val"], False), log_iqr(val, self.manifest)], axis=1)
        result["linear_kappa_iqr"] = linear_scores(train_x, train_y, val_x, val_y)["linear_kappa"]
        return {k: round(v, 4) for k, v in result.items()}


# ---------------------------------------------------------------------------------------- pretraining
def pretrain_run(args: argparse.Namespace, data: Path, name: str, budget: int) -> Path:
    """The run of variant `name` at `budget` steps (continuing its largest finished budget below it); returns its
    folder, with cpu.json {"cpu_s" (this run), "cpu_total_s" (the chain up to here), "steps", "from_steps"}."""
    variant = VARIANTS[name]
    root = args.out / "runs" / run_label(args, name)
    run = root / f"steps{budget}"
    if (run / "cpu.json").is_file():
        return run
    earlier = sorted(
        int(p.name[5:]) for p in root.glob("steps*") if (p / "cpu.json").is_file() and int(p.name[5:]) < budget
    )
    partial = run.with_name(f".{run.name}.tmp")
    shutil.rmtree(partial, ignore_errors=True)
    before = 0.0
    if earlier:
        shutil.copytree(root / f"steps{earlier[-1]}", partial)
        before = json.loads((partial / "cpu.json").read_text())["cpu_total_s"]
        for stale in ("cpu.json", "eval.json"):
            (partial / stale).unlink(missing_ok=True)
    epochs = passes_for(data, CHANNELS, budget, pooled=True)
    cpu = run_script(
        "pretrained/unimodal/eeg/train.py",
        "--data",
        data,
        "--out",
        partial,
        "--preset",
        variant["preset"],
        "--passes",
        epochs,
        "--max-steps",
        budget,
        "--batch-size",
        BATCH,
        "--lr",
        args.lr,
        "--warmup-steps",
        args.warmup_steps,
        "--min-lr-ratio",
        1.0,
        "--workers",
        0,
        "--no-monitor",
        "--no-progress",
        "--seed",
        args.train_seed,
        "--log-every",
        10,
        "--resume",
        "auto",
        *(f"--model-arg={key}={value}" for key, value in variant["model_args"].items()),
    )
    write_json(
        partial / "cpu.json",
        {
            "cpu_s": round(cpu, 1),
            "cpu_total_s": round(before + cpu, 1),
            "steps": budget,
            "from_steps": earlier[-1] if earlier else 0,
        },
    )
    os.replace(partial, run)
    return run


def final_losses(run: Path, last: int = 5) -> dict[str, float]:
    """Mean reconstruction (per view) and contrastive losses of the last `last` lines of RUN/steps.jsonl."""
    path = run / "steps.jsonl"
    lines = [r for r in read_jsonl(path) if "recon_1" in r][-last:] if path.is_file() else []
    if not lines:
        return {"recon_loss": float("nan"), "contrastive_loss": float("nan")}
    return {
        "recon_loss": round(float(np.mean([(r["recon_1"] + r["recon_2"]) / 2 for r in lines])), 4),
        "contrastive_loss": round(float(np.mean([r["contrastive"] for r in lines])), 4),
    }


def run_label(args: argparse.Namespace, name: str) -> str:
    """A variant's name in the table and under OUT/runs: with `+seed<S>` when --train-seed differs from --seed."""
    return name if args.train_seed == args.seed else f"{name}+seed{args.train_seed}"


def evaluate_run(sample: EvalSample, run: Path, name: str, seed: int, label: str) -> dict[str, Any]:
    """RUN/eval.json (computed once): probe kappas of the run's last.pt, its losses and CPU."""
    path = run / "eval.json"
    if path.is_file() and all(probe in json.loads(path.read_text()) for probe in PROBES):
        return json.loads(path.read_text())  # an evaluation before a probe was added is redone
    variant = VARIANTS[name]
    if name.startswith("random-init"):
        torch.manual_seed(seed)
        model, steps, cpu = build_neuronet(neuronet_config(variant["preset"], **variant["model_args"])), 0, 0.0
    else:
        checkpoint = load_checkpoint(run / "last.pt")
        model = build_neuronet(checkpoint["model_config"])
        model.load_state_dict(checkpoint["model"])
        steps, cpu = int(checkpoint["step"]), json.loads((run / "cpu.json").read_text())["cpu_total_s"]
    started = time.process_time()
    record = {
        "variant": label,
        "preset": variant["preset"],
        "model_args": format_args(variant["model_args"]),
        "steps": steps,
        "pretrain_cpu_s": cpu,
        **sample.probe(sample.vectors(model)),
        **final_losses(run),
        "eval_cpu_s": round(time.process_time() - started, 1),
    }
    run.mkdir(parents=True, exist_ok=True)
    write_json(path, record)
    return record


def format_args(model_args: Mapping[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in model_args.items()) or "(published)"


# ---------------------------------------------------------------------------------------- table
def reference_rows(sample: EvalSample, out: Path, seed: int) -> list[dict[str, Any]]:
    """The hand-crafted features of the same epochs (utils/features.py) through the same probes, on the scaled
    signals (as the baseline) and on the unscaled ones (computed once: OUT/features.json)."""
    path = out / "features.json"
    known = json.loads(path.read_text()) if path.is_file() else {}
    if not all(probe in known.get(kind, {}) for kind in ("scaled", "unscaled") for probe in PROBES):
        known = {
            "scaled": sample.probe(sample.features(), seed),
            "unscaled": sample.probe(sample.features(unscaled=True), seed),
        }
        write_json(path, known)
    return [
        {"variant": "features", "model_args": "robust-scaled signals (the baseline)", **known["scaled"]},
        {"variant": "features", "model_args": "unscaled signals (x IQR + median)", **known["unscaled"]},
    ]


def variant_rows(records: Sequence[Mapping[str, Any]], references: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The table: the reference rows first (features only), then one row per evaluated run sorted by preset,
    variant and steps; a column a row lacks is NaN (blank in the markdown)."""
    rows = [{column: row.get(column, float("nan")) for column in TABLE_COLUMNS} for row in references]
    ordered = sorted(
        records, key=lambda r: (not r["variant"].startswith("random-init"), r["preset"], r["variant"], r["steps"])
    )
    rows += [{column: record.get(column, float("nan")) for column in TABLE_COLUMNS} for record in ordered]
    for row in rows:
        for column in ("preset", "model_args"):
            if not isinstance(row[column], str):
                row[column] = ""
    return rows


def display(value: Any, column: str) -> str:
    """A table cell: kappas and losses to 3 decimals, CPU seconds whole, NaN as a dash."""
    if isinstance(value, float):
        return "–" if not math.isfinite(value) else f"{value:.0f}" if column.endswith("_s") else f"{value:.3f}"
    return str(value)


def results_markdown(rows: Sequence[Mapping[str, Any]], title: str) -> str:
    text = [
        f"# Self-supervision variants ({title})",
        "",
        "Unimodal EEG NeuroNet pretraining variants (last.pt), 5-class staging kappa on the fixed `val` sample "
        "(probes fitted on the `train` sample; `_ctx`: with the +-1 neighbours' vectors; `_iqr`: with the "
        "recording's log IQR). `pretrain_cpu_s`: measured process CPU seconds of the pretraining chain. "
        "`recon_loss`, `contrastive_loss`: the last logged training losses (per view). `features`: the "
        "hand-crafted features (utils/features.py) of the same epochs through the same probes; `hgb`: "
        "HistGradientBoosting, the features baseline's model.",
        "",
        markdown_table([{c: display(row[c], c) for c in TABLE_COLUMNS} for row in rows], TABLE_COLUMNS),
    ]
    return "\n".join(text) + "\n"


def write_results(rows: Sequence[Mapping[str, Any]], out: Path, title: str) -> None:
    """OUT/results.csv and OUT/results.md, each written atomically."""
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / ".results.csv.tmp"
    pd.DataFrame(list(rows), columns=list(TABLE_COLUMNS)).to_csv(tmp, index=False)
    os.replace(tmp, out / "results.csv")
    tmp = out / ".results.md.tmp"
    tmp.write_text(results_markdown(rows, title))
    os.replace(tmp, out / "results.md")


def collect(out: Path) -> list[dict[str, Any]]:
    """Every eval.json under OUT/runs (all variants and budgets run so far, in any invocation)."""
    return [json.loads(path.read_text()) for path in sorted((out / "runs").glob("*/*/eval.json"))]


# ---------------------------------------------------------------------------------------- main
def variant_list(text: str) -> list[str]:
    names = [v.strip() for v in text.split(",") if v.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"unknown variant(s) {unknown}; known: {', '.join(VARIANTS)}")
    return names


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--out", type=Path, default=Path("runs/ssl_variants"), help="work folder: cohort, runs, results (reused)"
    )
    parser.add_argument("--data", type=Path, default=None, help="an existing parsed cohort (skips generation)")
    parser.add_argument("--size", choices=tuple(SIZES), default="default", help="defaults of the options below")
    parser.add_argument("--variants", type=variant_list, default=list(VARIANTS), help="comma-separated, of VARIANTS")
    parser.add_argument("--budgets", type=budget_list, default=None, help="optimizer steps, comma-separated")
    parser.add_argument("--nights", type=int, default=None, help="synthetic nights, one subject each")
    parser.add_argument("--hours", type=float, default=None, help="hours per night")
    parser.add_argument("--train-chunks", type=int, default=None, help=f"train chunks of {CHUNK} epochs evaluated")
    parser.add_argument("--val-chunks", type=int, default=None, help=f"val chunks of {CHUNK} epochs evaluated")
    parser.add_argument("--seed", type=int, default=11, help="cohort and evaluation-sample seed")
    parser.add_argument(
        "--train-seed",
        type=int,
        default=None,
        help="pretraining (and random-init) seed; default --seed; another seed adds rows "
        "'<variant>+seed<S>' (the spread between seeds)",
    )
    parser.add_argument("--lr", type=float, default=2e-3, help="base lr (x batch / 256)")
    parser.add_argument("--warmup-steps", type=int, default=30, help="pretraining lr warmup in optimizer steps")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for key, value in SIZES[args.size].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.train_seed is None:
        args.train_seed = args.seed
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # the pretraining children: one core each on a shared machine
    torch.set_num_threads(1)
    started = time.time()
    args.out.mkdir(parents=True, exist_ok=True)
    data = args.data or prepare_cohort(args.out, args.nights, args.hours, args.seed)
    if not (Path(data) / "splits.json").is_file():
        print(f"error: --data {data}: no splits.json (run dataset/data_parser.py to make it)", file=sys.stderr)
        return 2
    sample = EvalSample(Path(data), args.train_chunks, args.val_chunks, args.seed)
    print(f"evaluation sample: {sample.describe()}", flush=True)
    title = f"{data}, seed {args.seed}"
    references = reference_rows(sample, args.out, args.seed)
    for name in args.variants:
        untrained = name.startswith("random-init")
        for budget in [0] if untrained else args.budgets:
            run = (
                (args.out / "runs" / run_label(args, name) / "steps0")
                if untrained
                else pretrain_run(args, Path(data), name, budget)
            )
            record = evaluate_run(sample, run, name, args.train_seed, run_label(args, name))
            print(f"{name} @ {record['steps']} steps: " + ", ".join(f"{p} {record[p]:.3f}" for p in PROBES), flush=True)
            write_results(variant_rows(collect(args.out), references), args.out, title)
    write_results(variant_rows(collect(args.out), references), args.out, title)
    print((args.out / "results.md").read_text())
    print(f"took {(time.time() - started) / 60:.1f} min", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
