"""PNG figures of the downstream reports (docs/evaluation.md §5): confusion matrix, hypnogram, label-fraction curves.

Drawn with matplotlib's object-oriented API (`Figure`, no pyplot state and no GUI backend), so the functions are
safe in scripts, tests and worker processes. Each writes one PNG atomically (temp file + rename) and returns
its path.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from dataset.constants import STAGE_NAMES, STAGE_UNSCORED

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DPI = 120


def _figure(figsize: tuple[float, float]) -> Figure:
    """A new figure; matplotlib is imported here, on the first plot, so that every script that can plot does
    not pay its import (about a second) at start-up."""
    from matplotlib.figure import Figure

    return Figure(figsize=figsize)


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    fig.savefig(tmp, dpi=DPI, bbox_inches="tight")
    os.replace(tmp, path)
    return path


def confusion_matrix_png(
    confusion: Sequence[Sequence[float]], class_names: Sequence[str], path: str | Path, title: str = ""
) -> Path:
    """Confusion matrix (rows = true, columns = predicted, counts) as a heat map of row percentages, each cell
    annotated with its percentage and count. Rows without any epoch stay blank."""
    counts = np.asarray(confusion, dtype=np.float64)
    n = len(class_names)
    if counts.shape != (n, n):
        raise ValueError(
            f"confusion matrix has shape {counts.shape}, expected ({n}, {n}) for classes {list(class_names)}"
        )
    totals = counts.sum(axis=1, keepdims=True)
    percent = np.divide(100.0 * counts, totals, out=np.full_like(counts, np.nan), where=totals > 0)  # (C, C) row %
    fig = _figure((1.2 * n + 2.2, 1.1 * n + 1.6))
    ax = fig.add_subplot()
    image = ax.imshow(np.nan_to_num(percent), cmap="Blues", vmin=0.0, vmax=100.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="% of true class")
    for i in range(n):
        for j in range(n):
            if math.isnan(percent[i, j]):
                continue
            ax.text(
                j,
                i,
                f"{percent[i, j]:.0f}%\n{int(counts[i, j])}",
                ha="center",
                va="center",
                fontsize=8,
                color="white" if percent[i, j] > 60 else "black",
            )
    ax.set_xticks(range(n), labels=list(class_names))
    ax.set_yticks(range(n), labels=list(class_names))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or f"confusion matrix (n = {int(counts.sum())})", fontsize=10)
    return _save(fig, path)


def hypnogram_png(
    predicted: Sequence[int],
    path: str | Path,
    true: Sequence[int] | None = None,
    epoch_s: float = 30.0,
    title: str = "",
    events: Sequence[tuple[str, float, float]] | None = None,
) -> Path:
    """Hypnogram(s) over time in hours: the predicted stages (0..4 = W, N1, N2, N3, REM) and, when given, the
    scored ones beneath them; unscored epochs (-1) are gaps. REM is drawn on top as clinical hypnograms do.
    `events` (type, onset s, duration s), e.g. respiratory events and desaturations, are drawn as bars in a
    panel under the hypnogram(s), one row per type."""
    rows = [("predicted", np.asarray(predicted))]
    if true is not None:
        rows.append(("scored", np.asarray(true)))
    order = [STAGE_NAMES.index(s) for s in ("N3", "N2", "N1", "REM", "W")]  # bottom → top
    level = {stage: k for k, stage in enumerate(order)}
    kinds = sorted({kind for kind, _, _ in events or ()})
    fig = _figure((10, 1.6 * len(rows) + 0.6 + (0.25 * len(kinds) + 0.4 if events is not None else 0)))
    heights = [1.0] * len(rows) + ([0.2 + 0.15 * len(kinds)] if events is not None else [])
    all_axes = fig.subplots(len(heights), 1, sharex=True, squeeze=False, height_ratios=heights)[:, 0]
    axes = all_axes[: len(rows)]
    if events is not None:
        ax = all_axes[-1]
        for k, kind in enumerate(kinds):
            bars = [(onset / 3600.0, duration / 3600.0) for name, onset, duration in events if name == kind]
            ax.broken_barh(bars, (k - 0.4, 0.8), color=f"C{k}")
        ax.set_yticks(range(len(kinds)), labels=kinds, fontsize=7)
        ax.set_ylim(-0.6, max(len(kinds), 1) - 0.4)
        ax.set_xlim(0, np.asarray(predicted).size * epoch_s / 3600.0)
        ax.set_ylabel("events", fontsize=8)
    for ax, (name, stages) in zip(axes, rows):
        hours = np.arange(stages.size + 1) * epoch_s / 3600.0  # (n + 1,) epoch edges in hours
        y = np.array([level.get(int(s), np.nan) if s != STAGE_UNSCORED else np.nan for s in stages], dtype=float)
        ax.stairs(y, hours, baseline=None, color="black", linewidth=0.9)
        rem = np.where(stages == STAGE_NAMES.index("REM"), y, np.nan)
        ax.stairs(rem, hours, baseline=None, color="tab:red", linewidth=2.5)
        ax.set_yticks(range(len(order)), labels=[STAGE_NAMES[s] for s in order])
        ax.set_ylim(-0.5, len(order) - 0.5)
        ax.set_ylabel(name)
    all_axes[-1].set_xlabel("time from recording start (h)")
    if title:
        axes[0].set_title(title, fontsize=10)
    return _save(fig, path)


def label_fraction_png(rows: Iterable[Mapping], path: str | Path, metric_of_task: Mapping[str, str]) -> Path:
    """Headline metric against the fraction of training labels, one panel per task, one line per method.

    `rows`: dicts with `method`, `task`, `label_fraction`, and for the task's metric name m (from
    `metric_of_task`, e.g. {"sleep_stage": "kappa", "apnea": "auroc"}) the keys m, `m_low`, `m_high` (95 % CI
    ends, NaN when absent). Fractions are drawn on a log axis in percent.
    """
    rows = list(rows)
    tasks = [t for t in metric_of_task if any(r["task"] == t for r in rows)]
    if not tasks:
        raise ValueError("label_fraction_png: no row of a known task to plot")
    fig = _figure((4.6 * len(tasks), 3.6))
    axes = fig.subplots(1, len(tasks), squeeze=False)[0]
    for ax, task in zip(axes, tasks):
        metric = metric_of_task[task]
        task_rows = [r for r in rows if r["task"] == task and np.isfinite(float(r.get(metric, np.nan)))]
        for method in sorted({r["method"] for r in task_rows}):
            points = sorted(
                ((float(r["label_fraction"]), r) for r in task_rows if r["method"] == method),
                key=lambda point: point[0],
            )
            x = np.array([100.0 * f for f, _ in points])
            y = np.array([float(r[metric]) for _, r in points])
            low = np.array([float(r.get(f"{metric}_low", np.nan)) for _, r in points])
            high = np.array([float(r.get(f"{metric}_high", np.nan)) for _, r in points])
            err = np.vstack([np.where(np.isfinite(low), y - low, 0.0), np.where(np.isfinite(high), high - y, 0.0)])
            ax.errorbar(x, y, yerr=np.clip(err, 0.0, None), marker="o", capsize=3, label=method)
        ax.set_xscale("log")
        fractions = sorted({100.0 * float(r["label_fraction"]) for r in task_rows})
        if fractions:
            ax.set_xticks(fractions, labels=[f"{f:g} %" for f in fractions])
            ax.set_xticks([], minor=True)
            ax.set_xlim(fractions[0] / 1.5, fractions[-1] * 1.5)
            lowest = min(
                min(
                    float(r[metric]),
                    float(r.get(f"{metric}_low", np.nan))
                    if np.isfinite(float(r.get(f"{metric}_low", np.nan)))
                    else float(r[metric]),
                )
                for r in task_rows
            )
            ax.set_ylim(min(0.0, lowest - 0.05), 1.02)
        ax.set_xlabel("training labels (% of epochs)")
        ax.set_ylabel(metric)
        ax.set_title(task, fontsize=10)
        ax.grid(True, alpha=0.3)
        if task_rows:
            ax.legend(fontsize=7)
    return _save(fig, path)
