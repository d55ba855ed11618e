"""Comparison of downstream runs (docs/evaluation.md 5.7): one table over the test reports of many runs.

    python downstream/evaluate.py RUN [RUN ...] [--out runs/downstream/comparison]

RUN is a run directory holding metrics.json (written by the linear-probing, fine-tuning and feature-baseline
scripts, and by downstream/event_detection/train.py: an `event_detection` section with event F1 of apneas and
hypopneas, AHI ICC / r / severity kappa and epoch AUROC) or a folder searched recursively for them. Writes OUT/comparison.md, OUT/comparison.csv and
OUT/label_fraction.png (headline metric against the fraction of training labels, one line per method and
backbone, and per --neighbour-epochs value).

Per run (`downstream.results.write_run_report`, called by every downstream script once, on `test`, with the
checkpoint selected on `val`): predictions.parquet (recording, subject, epoch, true, predicted, probabilities,
stage), metrics.json, confusion_matrix.png, results.md and, for staging, hypnogram PNGs of the first test
recordings.

Metrics (`downstream.results.evaluate_predictions`): `utils.metrics.evaluate` on the test epochs (accuracy,
macro-F1, Cohen's kappa, per-class F1, confusion matrix; binary tasks also sensitivity, specificity, AUROC,
AUPRC), 95 % percentile-bootstrap CIs that resample test SUBJECTS. Unscored epochs (true = -1) are predicted but
not scored.

AHI. The event models predict one event family each, while the manifest's `ahi_scored` counts apneas AND
hypopneas, so:
- per run (task apnea or hypopnea): `downstream.results.run_event_index` = that family's events per hour of sleep,
  estimated from the predicted epochs and, as reference, from the scored epoch labels with the same counting rule
  (`utils.ahi.count_events`: a run of k positive epochs = ceil(k / 2) events, counted when it starts in a
  sleep epoch); agreement by `utils.ahi.ahi_agreement` (ICC, Pearson r, severity classes).
- here, when an apnea run and a hypopnea run of the same method, backbone, neighbouring epochs, label fraction,
  subjects and seed are both given: AHI per recording = `estimate_ahi(predicted apnea, predicted hypopnea)` against the
  manifest's `ahi_scored`, in the `ahi_*` columns of both rows. Each family's count is multiplied by its run's
  `event_calibration` scale (metrics.json): scored events per event counted from the scored epoch LABELS of
  `val`. Epoch labels lose events (a short event that misses an epoch midpoint; neighbouring events merged
  into one run), so even perfect epoch predictions count too few; `ahi_icc_uncalibrated` is the raw count's ICC.
Sleep time for these indices comes from the SCORED hypnogram (stages N1-REM), as in `ahi_scored`: an event
model does not stage.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dataset.constants import EPOCH_S, TASKS
from downstream.results import (
    CI_METRICS,
    EVENT_DETECTION_METRICS,
    Predictions,
    as_number,
    markdown_table,
    summary_row,
    variant_suffix,
)
from utils.ahi import ahi_agreement, estimate_ahi, event_calibration
from utils.config import ArgumentParser, UsageError, check_out_dir, parse_config, save_config
from utils.plots import label_fraction_png
from utils.sleep_stats import SLEEP_STAGES

HEADLINE_OF_TASK: dict[str, str] = {"sleep_stage": "kappa", "apnea": "auroc", "hypopnea": "auroc"}
EVENT_DETECTION = "event_detection"  # downstream/event_detection/train.py runs: events with onsets and durations


def event_detection_row(metrics: Mapping[str, Any], run: str = "") -> dict[str, Any]:
    """One table row of an event_detection run's metrics.json (test split): event F1 of the apnea family and of
    hypopneas (IoU matching, CI ends), AHI agreement under the run's hypopnea rule (ICC, r, severity kappa) and
    the epoch-level AUROC; the per-epoch columns are NaN."""
    test = metrics["test"]
    backbone = (metrics.get("train") or {}).get("backbone") or {}
    row: dict[str, Any] = {
        "method": metrics["method"],
        "backbone": backbone.get("name") or "",
        "task": EVENT_DETECTION,
        "label_fraction": metrics["label_fraction"],
        "train_subjects": None,
        "seed": metrics.get("seed"),
        "n_test_subjects": test["n_subjects"],
        "n_test_epochs": ((test.get("epoch") or {}).get("apnea") or {}).get("n_epochs"),
        "hypopnea_rule": metrics.get("hypopnea_rule"),
        "run": run,
    }
    for name in CI_METRICS:
        row[name] = row[f"{name}_low"] = row[f"{name}_high"] = float("nan")
    for family in ("apnea", "hypopnea"):
        events = test["events"].get(family) or {}
        row[f"event_f1_{family}"] = as_number(events.get("f1"))
        low, high = events.get("f1_ci") or [None, None]
        row[f"event_f1_{family}_low"], row[f"event_f1_{family}_high"] = as_number(low), as_number(high)
        epoch = (test.get("epoch") or {}).get(family) or {}
        row[f"epoch_auroc_{family}"] = as_number(epoch.get("auroc"))
        low, high = epoch.get("auroc_ci") or [None, None]
        row[f"epoch_auroc_{family}_low"], row[f"epoch_auroc_{family}_high"] = as_number(low), as_number(high)
    agreement = (test.get("ahi") or {}).get("agreement") or {}
    row.update(
        event_index_icc=float("nan"),
        ahi_icc=as_number(agreement.get("icc_2_1")),
        ahi_r=as_number(agreement.get("pearson_r")),
        ahi_severity_kappa=as_number(agreement.get("severity_kappa")),
        ahi_n=agreement.get("n"),
        ahi_icc_uncalibrated=float("nan"),
    )
    return row


# ---------------------------------------------------------------------------------------- comparison
def find_runs(paths: Iterable[str | Path]) -> list[Path]:
    """Run directories: each path holding metrics.json, or every folder below it that does (sorted)."""
    runs: list[Path] = []
    for path in map(Path, paths):
        if (path / "metrics.json").is_file():
            runs.append(path)
        elif path.is_dir():
            found = sorted(p.parent for p in path.rglob("metrics.json"))
            if not found:
                raise FileNotFoundError(f"{path}: no metrics.json in this folder or below it")
            runs += found
        else:
            raise FileNotFoundError(f"{path}: not a run directory (no metrics.json)")
    return list(dict.fromkeys(runs))


RUN_RECORD_KEYS = ("task", "method")  # keys every downstream run's metrics.json holds


def read_run_metrics(run: Path) -> dict[str, Any]:
    """A run's metrics.json; ValueError naming the file when it is unreadable, not JSON, or not a run record."""
    path = Path(run) / "metrics.json"
    try:
        metrics = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: cannot read a run record ({type(err).__name__}: {err})") from None
    missing = [key for key in RUN_RECORD_KEYS if not isinstance(metrics, dict) or key not in metrics]
    if missing:
        raise ValueError(f"{path}: not a downstream run's metrics.json (no {', '.join(missing)})")
    if metrics["task"] not in (*TASKS, EVENT_DETECTION):
        raise ValueError(
            f"{path}: unknown task {metrics['task']!r}; expected one of {', '.join((*TASKS, EVENT_DETECTION))}"
        )
    return metrics


def run_event_scale(metrics: Mapping[str, Any]) -> float:
    """The `event_calibration` scale an event run stored in its metrics.json; fitted anew on its data's `val`
    for runs written before it was stored."""
    stored = metrics.get("event_calibration") or {}
    if "scale" in stored:
        return float(stored["scale"])
    return event_calibration(metrics["data"], metrics["task"], metrics.get("label_rule") or "midpoint")["scale"]


def combined_ahi(
    apnea_run: Path, hypopnea_run: Path, data_dir: str | Path, scales: tuple[float, float] = (1.0, 1.0)
) -> dict[str, Any]:
    """AHI per test recording from an apnea run's and a hypopnea run's predicted epochs (epochs both predicted),
    each family's count times its scale (`event_calibration`), against the manifest's `ahi_scored`:
    `utils.ahi.ahi_agreement`, with that of the raw counts under "uncalibrated"."""
    apnea = Predictions.read(apnea_run / "predictions.parquet")
    hypopnea = Predictions.read(hypopnea_run / "predictions.parquet")
    manifest = pd.read_parquet(Path(data_dir) / "manifest.parquet", columns=["recording_id", "ahi_scored"])
    scored_ahi = dict(zip(manifest["recording_id"].astype(str), manifest["ahi_scored"].astype(float)))
    left = pd.DataFrame(
        {"recording": apnea.recording, "epoch": apnea.epoch, "apnea": apnea.predicted, "stage": apnea.stage}
    )
    right = pd.DataFrame({"recording": hypopnea.recording, "epoch": hypopnea.epoch, "hypopnea": hypopnea.predicted})
    both = left.merge(right, on=["recording", "epoch"]).sort_values(["recording", "epoch"])
    estimated, raw, scored = [], [], []
    for rid, night in both.groupby("recording", sort=True):
        sleep = np.isin(night["stage"].to_numpy(), SLEEP_STAGES)
        apnea_epochs, hypopnea_epochs = night["apnea"].to_numpy(), night["hypopnea"].to_numpy()
        estimated.append(estimate_ahi(apnea_epochs, hypopnea_epochs, sleep, EPOCH_S, scales=scales))
        raw.append(estimate_ahi(apnea_epochs, hypopnea_epochs, sleep, EPOCH_S))
        scored.append(scored_ahi.get(str(rid), float("nan")))
    return {**ahi_agreement(estimated, scored), "uncalibrated": ahi_agreement(raw, scored)}


def comparison_rows(runs: Sequence[Path]) -> list[dict[str, Any]]:
    """Table rows of the runs, with the combined AHI agreement filled in for apnea + hypopnea pairs."""
    rows, metrics_of = [], {}
    for run in runs:
        metrics = read_run_metrics(run)
        metrics_of[run] = metrics
        rows.append(
            event_detection_row(metrics, run=str(run))
            if metrics["task"] == EVENT_DETECTION
            else summary_row(metrics, run=str(run))
        )
    key = lambda r: (  # noqa: E731
        r["method"],
        r["backbone"],
        r.get("neighbour_epochs"),
        r.get("context_direction"),
        r.get("pooling"),
        r.get("eval_stride"),
        r["label_fraction"],
        r["train_subjects"],
        r["seed"],
    )
    for row in rows:
        if row["task"] != "apnea":
            continue
        partners = [r for r in rows if r["task"] == "hypopnea" and key(r) == key(row)]
        if not partners:
            continue
        partner = partners[0]
        data_dir = metrics_of[Path(row["run"])].get("data")
        scales = (run_event_scale(metrics_of[Path(row["run"])]), run_event_scale(metrics_of[Path(partner["run"])]))
        agreement = combined_ahi(Path(row["run"]), Path(partner["run"]), data_dir, scales)
        for target in (row, partner):
            target.update(
                ahi_icc=agreement["icc_2_1"],
                ahi_r=agreement["pearson_r"],
                ahi_severity_kappa=agreement["severity_kappa"],
                ahi_n=agreement["n"],
                ahi_icc_uncalibrated=agreement["uncalibrated"]["icc_2_1"],
                ahi_scale_apnea=scales[0],
                ahi_scale_hypopnea=scales[1],
            )
    order = {t: i for i, t in enumerate(TASKS)}
    return sorted(
        rows,
        key=lambda r: (
            order.get(r["task"], 9),
            r["method"],
            r["backbone"],
            r.get("neighbour_epochs") or 0,
            r.get("context_direction") or "",
            r.get("pooling") or "",
            r.get("eval_stride") or 0,
            r["label_fraction"],
            str(r["train_subjects"]),
            str(r["seed"]),
        ),
    )


def write_comparison(runs: Sequence[Path], out_dir: str | Path) -> list[dict[str, Any]]:
    """comparison.md, comparison.csv and label_fraction.png of `runs` in `out_dir`; returns the rows."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = comparison_rows(runs)
    pd.DataFrame(rows).to_csv(out_dir / "comparison.csv", index=False)
    sections = [
        "# Downstream comparison",
        "",
        "Test split, subject-bootstrap 95 % CIs in brackets. Model selection on `val` only. AHI columns: "
        "apnea + hypopnea runs of one method combined, against the manifest's scored AHI (ICC(2,1), "
        "Pearson r, severity-class kappa); event_index_icc: the task's own events per hour of sleep "
        "against the scored epoch labels.",
        "",
    ]
    for task in TASKS:
        task_rows = [r for r in rows if r["task"] == task]
        if not task_rows:
            continue
        metrics = (
            ("kappa", "macro_f1", "accuracy")
            if task == "sleep_stage"
            else ("auroc", "auprc", "kappa", "event_index_icc", "ahi_icc", "ahi_r", "ahi_severity_kappa")
        )
        columns = (
            "method",
            "backbone",
            "neighbour_epochs",
            "context_direction",
            "pooling",
            "eval_stride",
            "label_fraction",
            "train_subjects",
            "seed",
            "n_test_subjects",
        ) + metrics
        sections += [f"## {task}", "", markdown_table(task_rows, columns)]
    event_rows = [r for r in rows if r["task"] == EVENT_DETECTION]
    if event_rows:
        columns = (
            "method",
            "backbone",
            "label_fraction",
            "seed",
            "hypopnea_rule",
            "n_test_subjects",
            *EVENT_DETECTION_METRICS,
        )
        sections += [
            f"## {EVENT_DETECTION}",
            "",
            "Events with onsets and durations (one-to-one matching at IoU >= "
            "0.2), the AHI from them under the run's hypopnea rule over the scored sleep, and the epoch "
            "AUROC (maximum per-second probability in the epoch).",
            "",
            markdown_table(event_rows, columns),
        ]
    (out_dir / "comparison.md").write_text("\n".join(sections))
    for row in rows:
        with_backbone = row["backbone"] and not row["backbone"].startswith("none")
        row["series"] = row["method"] + (f" / {row['backbone']}" if with_backbone else "")
        row["series"] += variant_suffix(row)
    label_fraction_png([{**r, "method": r["series"]} for r in rows], out_dir / "label_fraction.png", HEADLINE_OF_TASK)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("runs", nargs="*", type=Path, help="run directories (with metrics.json) or folders of them")
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help='JSON or YAML file of these options (e.g. {"runs": [...], "out": ...}); flags win',
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("runs") / "downstream" / "comparison",
        help="folder for comparison.md, comparison.csv, label_fraction.png",
    )
    args = parse_config(parser, argv, required=())
    if not args.runs:
        parser.error("give at least one run directory (on the command line or as `runs` in --config)")
    try:
        check_out_dir(args.out)
        held = [name for name in ("metrics.json", "best.pt", "last.pt", "model.pkl") if (args.out / name).exists()]
        if held:  # its config.json is the run's own record: a comparison needs a folder of its own
            raise UsageError(f"--out {args.out}: holds a run ({', '.join(held)}); give the comparison its own folder")
        runs = find_runs(args.runs)
        for run in runs:
            read_run_metrics(run)  # every record readable before anything is written
    except (UsageError, FileNotFoundError, ValueError) as err:
        parser.error(str(err))
    rows = write_comparison(runs, args.out)
    save_config(args, Path(args.out) / "config.json")  # the exact options this table was made with
    print(f"{len(rows)} run(s) -> {args.out / 'comparison.md'}, comparison.csv, label_fraction.png")
    print(
        pd.DataFrame(rows)[["method", "backbone", "task", "label_fraction", "kappa", "auroc"]].to_string(
            index=False, float_format=lambda v: f"{v:.3f}"
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
