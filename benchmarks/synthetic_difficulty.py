"""Realism benchmark of the synthetic cohort: learnable, but not trivially, by the hand-crafted feature baseline.

A cohort is generated (dataset/synthetic.py) and parsed by the project parser (dataset/data_parser.py,
electrophysiology channels only). Per 30-s epoch, utils.features are computed on the six electrophysiology
channels (eeg_c4, eeg_c3, eog_l, eog_r, emg, ecg; never the respiratory channels), and scikit-learn's
HistGradientBoostingClassifier is trained and tested with subject-level K-fold cross-validation (every subject
is tested once, by a model that never saw it; predictions pooled). No temporal context is used.

Required bands (real PSG is learnable but not trivial; docs/data.md §2.5): staging Cohen's kappa in [0.55, 0.85],
N1 the class with the lowest F1, apnea epoch AUROC in [0.75, 0.97], hypopnea AUROC below apnea AUROC.

    python benchmarks/synthetic_difficulty.py [--nights 16 --hours 4 --seeds 0 1 2 --folds 4 --out DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from sklearn.ensemble import HistGradientBoostingClassifier
from threadpoolctl import threadpool_limits

from dataset.constants import EPOCH_SAMPLES, STAGE_NAMES
from dataset.data_parser import parse_cohort
from dataset.synthetic import generate_cohort
from utils.features import epoch_features
from utils.metrics import classification_metrics

CHANNELS = ("eeg_c4", "eeg_c3", "eog_l", "eog_r", "emg", "ecg")
KAPPA_BAND = (0.55, 0.85)
APNEA_AUROC_BAND = (0.75, 0.97)


def _model(seed: int) -> HistGradientBoostingClassifier:
    return HistGradientBoostingClassifier(
        max_iter=150,
        learning_rate=0.1,
        max_leaf_nodes=15,
        min_samples_leaf=40,
        l2_regularization=1.0,
        early_stopping=False,
        random_state=seed,
    )


def load_features(parsed: Path, manifest) -> dict[str, np.ndarray]:
    """Features and labels of every parsed night: X (n, F), stage, apnea, hypopnea (n,), subject (n,) str."""
    parts: dict[str, list] = {"X": [], "stage": [], "apnea": [], "hypopnea": [], "subject": []}
    for row in manifest.sort_values("recording_id").itertuples():
        table = pq.read_table(
            parsed / "recordings" / f"{row.recording_id}.parquet", columns=[*CHANNELS, "stage", "apnea", "hypopnea"]
        )
        signals = {
            c: table.column(c).combine_chunks().flatten().to_numpy().reshape(-1, EPOCH_SAMPLES) for c in CHANNELS
        }
        features, names = epoch_features(signals)  # (n_epochs, F)
        parts["X"].append(features)
        for column in ("stage", "apnea", "hypopnea"):
            parts[column].append(table.column(column).to_numpy().astype(np.int64))
        parts["subject"].append(np.full(len(features), row.subject_id))
    data = {key: np.concatenate(value) for key, value in parts.items()}
    data["names"] = names
    return data


def subject_folds(subjects: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Fold index per epoch: sorted subject ids, shuffled with `seed`, dealt round-robin into `folds` folds."""
    unique = np.array(sorted(set(subjects.tolist())))
    if len(unique) < folds:
        raise ValueError(f"{len(unique)} subjects cannot fill {folds} folds")
    order = np.random.default_rng(seed).permutation(len(unique))
    fold_of = {unique[i]: k % folds for k, i in enumerate(order)}
    return np.array([fold_of[s] for s in subjects])


def cross_validate(
    X: np.ndarray, y: np.ndarray, fold: np.ndarray, seed: int, binary: bool, threads: int = 1
) -> np.ndarray:
    """Pooled out-of-fold predictions: class (n,) for staging, positive-class probability (n,) for binary tasks.
    Epochs with y < 0 are neither trained on nor predicted (their prediction is 0)."""
    out = np.zeros(len(y), dtype=np.float64 if binary else np.int64)
    with threadpool_limits(threads):  # OpenMP spin-waiting on a busy machine is far slower than one thread
        for k in np.unique(fold):
            train, test = (fold != k) & (y >= 0), (fold == k) & (y >= 0)
            model = _model(seed).fit(X[train], y[train])
            out[test] = model.predict_proba(X[test])[:, 1] if binary else model.predict(X[test])
    return out


def run(
    out_dir: str | Path, nights: int = 16, hours: float = 4.0, seed: int = 0, folds: int = 4, workers: int = 1
) -> dict:
    """Generate, parse, featurise and cross-validate one cohort; return the metrics (fractions in [0, 1])."""
    out_dir = Path(out_dir)
    timings = {}
    tick = time.perf_counter()
    generate_cohort(out_dir / "cohort", nights, hours, seed)
    timings["generate_s"] = time.perf_counter() - tick
    tick = time.perf_counter()
    manifest = parse_cohort(out_dir / "cohort", out_dir / "parsed", workers=workers, channels=CHANNELS, progress=False)
    bad = manifest[manifest["status"] != "ok"]
    if len(bad):
        raise RuntimeError(
            f"parser did not accept every synthetic night: {bad[['recording_id', 'status', 'reason']].to_dict('records')}"
        )
    timings["parse_s"] = time.perf_counter() - tick
    tick = time.perf_counter()
    data = load_features(out_dir / "parsed", manifest)
    timings["features_s"] = time.perf_counter() - tick
    tick = time.perf_counter()
    fold = subject_folds(data["subject"], folds, seed)
    stage = data["stage"]
    predicted = cross_validate(data["X"], stage, fold, seed, binary=False)
    staging = classification_metrics(stage, predicted, len(STAGE_NAMES))
    scored = stage >= 0
    results = {
        "nights": nights,
        "hours": hours,
        "seed": seed,
        "folds": folds,
        "n_epochs": int(len(stage)),
        "n_features": int(data["X"].shape[1]),
        "accuracy": staging["accuracy"],
        "macro_f1": staging["macro_f1"],
        "kappa": staging["kappa"],
        "per_class_f1": staging["per_class_f1"],
        "stage_fractions": {n: float(np.mean(stage[scored] == k)) for k, n in enumerate(STAGE_NAMES)},
    }
    for task in ("apnea", "hypopnea"):
        y = np.where(scored, data[task], -1)
        probability = cross_validate(data["X"], y, fold, seed, binary=True)
        metrics = classification_metrics(y, (probability >= 0.5).astype(np.int64), 2, y_prob=probability)
        results[f"{task}_auroc"] = metrics["auroc"]
        results[f"{task}_epochs"] = int(np.sum(y == 1))
    timings["train_s"] = time.perf_counter() - tick
    results["timings"] = timings
    results["failures"] = check_bands(results)
    return results


def check_bands(m: dict) -> list[str]:
    """The required bands that `m` misses (empty when realistic)."""
    failures = []
    if not KAPPA_BAND[0] <= m["kappa"] <= KAPPA_BAND[1]:
        failures.append(f"kappa {m['kappa']:.3f} outside {KAPPA_BAND}")
    f1 = m["per_class_f1"]
    if min(f1, key=lambda k: f1[k]) != "N1":
        failures.append(f"N1 F1 {f1['N1']:.3f} is not the lowest ({min(f1, key=lambda k: f1[k])} is)")
    if not APNEA_AUROC_BAND[0] <= m["apnea_auroc"] <= APNEA_AUROC_BAND[1]:
        failures.append(f"apnea AUROC {m['apnea_auroc']:.3f} outside {APNEA_AUROC_BAND}")
    if not m["hypopnea_auroc"] < m["apnea_auroc"]:
        failures.append(f"hypopnea AUROC {m['hypopnea_auroc']:.3f} not below apnea AUROC {m['apnea_auroc']:.3f}")
    return failures


def table(rows: list[dict]) -> str:
    """Markdown table, one row per seed."""
    head = [
        "seed",
        "acc",
        "macro-F1",
        "kappa",
        *(f"F1 {n}" for n in STAGE_NAMES),
        "apnea AUROC",
        "hypopnea AUROC",
        "bands",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in rows:
        cells = [
            str(m["seed"]),
            f"{m['accuracy']:.3f}",
            f"{m['macro_f1']:.3f}",
            f"{m['kappa']:.3f}",
            *(f"{m['per_class_f1'][n]:.3f}" for n in STAGE_NAMES),
            f"{m['apnea_auroc']:.3f}",
            f"{m['hypopnea_auroc']:.3f}",
            "ok" if not m["failures"] else "; ".join(m["failures"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--nights", type=int, default=16, help="synthetic nights, one subject each")
    parser.add_argument("--hours", type=float, default=4.0, help="hours per night")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="cohort seeds, one row each")
    parser.add_argument("--folds", type=int, default=4, help="subject-level cross-validation folds")
    parser.add_argument("--workers", type=int, default=1, help="parser processes")
    parser.add_argument("--out", default=None, help="work folder (default: a temporary folder, removed)")
    parser.add_argument("--json", default=None, help="also write the metrics here")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(args.out) if args.out else Path(tmp)
        for seed in args.seeds:
            rows.append(run(base / f"seed{seed}", args.nights, args.hours, seed, args.folds, args.workers))
            t = rows[-1]["timings"]
            print(
                f"seed {seed}: {rows[-1]['n_epochs']} epochs; generate {t['generate_s']:.1f} s, parse "
                f"{t['parse_s']:.1f} s, features {t['features_s']:.1f} s, train+test {t['train_s']:.1f} s",
                flush=True,
            )
    print(
        f"\n{args.nights} nights x {args.hours:g} h, {args.folds}-fold subject-level CV, "
        f"HistGradientBoosting on {rows[0]['n_features']} features of {', '.join(CHANNELS)}\n"
    )
    print(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 1 if any(m["failures"] for m in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
