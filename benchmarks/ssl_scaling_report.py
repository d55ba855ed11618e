"""The outputs of benchmarks/ssl_scaling.py: one table row per staging run (results.csv), results.md (how it was
measured, then the table) and ssl_scaling.png (test kappa against pretraining CPU-minutes), each written
atomically."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from downstream.results import markdown_table, summary_row, variant_suffix
from utils.plots import _save as save_png

TABLE_COLUMNS = (
    "method",
    "data",
    "budget_steps",
    "pretrain_cpu_min",
    "label_fraction",
    "n_test_subjects",
    "kappa",
    "macro_f1",
    "n1_f1",
)


def result_rows(runs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One table row per run from its metrics.json (given as `metrics`, or read from `run`/metrics.json):
    `downstream.results.summary_row` (kappa and macro-F1 with their CI ends, ...) plus the data amount, the pretraining
    budget (steps), its CPU-minutes and the N1 F1. Baselines (no pretraining) have data "" and budget None.
    Sorted by method, data amount, budget, label fraction."""
    rows = []
    for item in runs:
        metrics = item.get("metrics") or json.loads((Path(item["run"]) / "metrics.json").read_text())
        row = summary_row(metrics, run=str(item.get("run", "")))
        row["method"] += variant_suffix(row)  # " ±K" neighbouring epochs, " (forward context)", " (per channel)"
        n1 = (metrics["test"]["pooled"].get("per_class_f1") or {}).get("N1")
        budget = item.get("budget")
        row.update(
            data=item.get("data") or "",
            budget_steps=None if budget is None else int(budget),
            pretrain_cpu_min=round(float(item.get("cpu_minutes", float("nan"))), 2),
            n1_f1=float("nan") if n1 is None else round(float(n1), 3),
        )
        rows.append(row)
    return sorted(rows, key=lambda r: (r["method"], r["data"], r["budget_steps"] or 0, r["label_fraction"]))


def results_markdown(rows: Sequence[Mapping[str, Any]], title: str = "") -> str:
    """results.md: how it was measured, then one table (kappa / macro-F1 cells: value [95 % CI])."""
    text = [
        f"# Self-supervision learning curve{f' ({title})' if title else ''}",
        "",
        "Sleep staging on the `test` subjects; subject-bootstrap 95 % CIs in brackets; model selection on "
        "`val` only. `data`: the nights the backbone was pretrained on (own = the cohort's pretraining "
        "nights; own+kx = plus k x as many unlabelled nights of new subjects); `budget_steps`: optimizer steps "
        "of each pretrained model; `pretrain_cpu_min`: measured process CPU-minutes of all pretraining "
        "behind the backbone. scratch_probe (supervised from scratch) and features_hgb do not depend on "
        "pretraining.",
        "",
        markdown_table(rows, TABLE_COLUMNS).replace("| nan |", "| – |"),
    ]
    return "\n".join(text)


def scaling_png(rows: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """kappa against pretraining CPU-minutes (log x): one panel per pretrained method, one line per label
    fraction x data amount (colour: fraction; solid: own, dashed: with extra nights), 95 % CI bars; the
    baselines at the same fractions as horizontal lines (dotted: scratch, dash-dot: features, thick
    dash-dot-dot: features reading neighbouring epochs)."""
    pretrained = sorted({r["method"] for r in rows if r["budget_steps"] is not None})
    baselines = [r for r in rows if r["budget_steps"] is None and math.isfinite(float(r["kappa"]))]
    fractions = sorted({float(r["label_fraction"]) for r in rows})
    colour = {f: f"C{i}" for i, f in enumerate(fractions)}
    amounts = sorted({r["data"] for r in rows if r["data"]}, key=lambda a: (a != "own", a))
    style = {a: ("-", "--", "-.", ":")[i % 4] for i, a in enumerate(amounts)}
    fig = Figure(figsize=(5.2 * max(1, len(pretrained)), 4.0))
    axes = fig.subplots(1, max(1, len(pretrained)), squeeze=False, sharey=True)[0]
    for ax, method in zip(axes, pretrained or ["(no pretrained runs)"]):
        shown = [f for f in fractions if any(r["method"] == method and float(r["label_fraction"]) == f for r in rows)]
        for fraction in shown:
            for amount in amounts:
                points = sorted(
                    (
                        r
                        for r in rows
                        if r["method"] == method
                        and r["data"] == amount
                        and float(r["label_fraction"]) == fraction
                        and math.isfinite(float(r["kappa"]))
                    ),
                    key=lambda r: r["pretrain_cpu_min"],
                )
                if not points:
                    continue
                x = np.array([float(r["pretrain_cpu_min"]) for r in points])
                y = np.array([float(r["kappa"]) for r in points])
                low = np.array([float(r.get("kappa_low", np.nan)) for r in points])
                high = np.array([float(r.get("kappa_high", np.nan)) for r in points])
                err = np.vstack([np.where(np.isfinite(low), y - low, 0.0), np.where(np.isfinite(high), high - y, 0.0)])
                ax.errorbar(
                    x,
                    y,
                    yerr=np.clip(err, 0.0, None),
                    color=colour[fraction],
                    linestyle=style[amount],
                    marker="o",
                    markersize=4,
                    capsize=2,
                    label=f"{100 * fraction:g} % labels, {amount}",
                )
            for r in baselines:
                if float(r["label_fraction"]) == fraction:
                    scratch, neighbours = r["method"].startswith("scratch"), bool(r.get("neighbour_epochs"))
                    ax.axhline(
                        float(r["kappa"]),
                        color=colour[fraction],
                        linestyle=":" if scratch else (0, (6, 1.5, 1, 1.5, 1, 1.5)) if neighbours else "-.",
                        linewidth=1.6 if neighbours else 1,
                        alpha=0.8,
                        label=f"{r['method']} {100 * fraction:g} %",
                    )
        ax.set_xscale("log")
        ax.set_xlabel("pretraining CPU-minutes (measured)")
        ax.set_title(method, fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=6, loc="lower right")
    axes[0].set_ylabel("test kappa (sleep staging)")
    return save_png(fig, path)


def write_results(rows: Sequence[Mapping[str, Any]], out: Path, title: str = "") -> None:
    """OUT/results.csv, OUT/results.md and OUT/ssl_scaling.png of `result_rows` (each written atomically)."""
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / ".results.csv.tmp"
    pd.DataFrame(list(rows)).to_csv(tmp, index=False)
    os.replace(tmp, out / "results.csv")
    tmp = out / ".results.md.tmp"
    tmp.write_text(results_markdown(rows, title))
    os.replace(tmp, out / "results.md")
    scaling_png(rows, out / "ssl_scaling.png")
