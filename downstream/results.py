"""What a downstream run writes (docs/evaluation.md 5.6): its per-epoch `Predictions` of `test`
(predictions.parquet), metrics.json, confusion_matrix.png, results.md and, for staging, hypnogram PNGs of the
first test recordings (`write_run_report`, called once per run, on `test`, with the checkpoint selected on
`val`), and the table rows and Markdown tables of those records (`summary_row`, `markdown_table`).

Predictions: recording, subject, epoch, true, predicted, probabilities, stage; `PredictionCollector` gathers
them batch by batch and checks that no (recording, epoch) was predicted twice; `attach_context` fills the
subject and the scored stage from the cohort.

Metrics (`evaluate_predictions`): `utils.metrics.evaluate` on the test epochs (accuracy, macro-F1, Cohen's
kappa, per-class F1, confusion matrix; binary tasks also sensitivity, specificity, AUROC, AUPRC), 95 %
percentile-bootstrap CIs that resample test SUBJECTS. Unscored epochs (true = -1) are predicted but not scored.
Apnea and hypopnea runs add `event_index`: that family's events per hour of SCORED sleep (stages N1-REM) per
test recording, estimated from the predicted epochs and, as reference, from the scored epoch labels with the
same counting rule (`utils.ahi.count_events`: a run of k positive epochs = ceil(k / 2) events, counted when it
starts in a sleep epoch); agreement by `utils.ahi.ahi_agreement` (ICC, Pearson r, severity classes).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dataset.cohort import read_subjects, recording_path, scan_recording
from dataset.constants import STAGE_NAMES, TASKS
from utils.ahi import ahi_agreement, count_events, events_per_hour
from utils.metrics import binary_class_names, evaluate
from utils.plots import confusion_matrix_png, hypnogram_png
from utils.sleep_stats import SLEEP_STAGES

# The downstream methods: a run's "method" in metrics.json and the folder of its default --out (values written in
# files, so they never change). downstream/event_detection/train.py has methods of its own (METHODS there).
LINEAR_PROBE, FINE_TUNE, SCRATCH_PROBE, SCRATCH_FINETUNE, FEATURES_HGB, BACKBONE_HGB = (
    "linear_probe",
    "fine_tune",
    "scratch_probe",
    "scratch_finetune",
    "features_hgb",
    "backbone_hgb",
)
NIGHT_NORM_METHODS = (LINEAR_PROBE, FEATURES_HGB, BACKBONE_HGB)  # the methods with --night-norm
METHOD_LABELS: dict[str, str] = {
    LINEAR_PROBE: "linear probe (frozen backbone + MLP head)",
    FINE_TUNE: "fine-tuning (LoRA + Mamba temporal context)",
    SCRATCH_PROBE: "supervised from scratch (probe architecture, random init)",
    SCRATCH_FINETUNE: "supervised from scratch (fine-tuning architecture, random init)",
    FEATURES_HGB: "hand-crafted features + gradient-boosted trees",
    BACKBONE_HGB: "frozen backbone + gradient-boosted trees",
}
CI_METRICS = ("kappa", "macro_f1", "accuracy", "auroc", "auprc")  # table cells with their 95 % CI
EVENT_DETECTION_METRICS = (  # the event_detection run's columns (downstream/event_detection/train.py)
    "event_f1_apnea",
    "event_f1_hypopnea",
    "ahi_icc",
    "ahi_r",
    "ahi_severity_kappa",
    "epoch_auroc_apnea",
    "epoch_auroc_hypopnea",
)


def class_names(task: str) -> tuple[str, ...]:
    return STAGE_NAMES if task == "sleep_stage" else tuple(binary_class_names(task))


@dataclass
class Predictions:
    """One prediction per (recording, epoch), sorted by recording then epoch.

    recording, subject: (N,) str; epoch: (N,) int64 (epoch k covers [30k, 30k + 30) s); true: (N,) int64 class,
    -1 = unlabelled; probabilities: (N, C) float32 class probabilities; stage: (N,) int8 scored stage
    (-1 unscored) for the sleep mask of the event indices.
    """

    recording: np.ndarray
    epoch: np.ndarray
    true: np.ndarray
    probabilities: np.ndarray
    subject: np.ndarray | None = None
    stage: np.ndarray | None = None

    @property
    def predicted(self) -> np.ndarray:
        return self.probabilities.argmax(axis=1).astype(np.int64)  # (N,)

    def __len__(self) -> int:
        return int(self.epoch.shape[0])

    def to_table(self, task: str) -> pa.Table:
        n_classes = self.probabilities.shape[1]
        probabilities = pa.FixedSizeListArray.from_arrays(
            pa.array(self.probabilities.astype(np.float32).reshape(-1)), n_classes
        )
        table = pa.table(
            {
                "recording": pa.array(self.recording.astype(str)),
                "subject": pa.array(self.subject.astype(str)),
                "epoch": pa.array(self.epoch.astype(np.int32)),
                "true": pa.array(self.true.astype(np.int8)),
                "predicted": pa.array(self.predicted.astype(np.int8)),
                "probabilities": probabilities,
                "stage": pa.array(self.stage.astype(np.int8)),
            }
        )
        meta = {"task": task, "class_names": json.dumps(list(class_names(task)))}
        return table.replace_schema_metadata({k: v.encode() for k, v in meta.items()})

    @classmethod
    def read(cls, path: str | Path) -> Predictions:
        table = pq.read_table(path)
        probabilities = np.stack(table.column("probabilities").to_numpy(zero_copy_only=False)).astype(np.float32)
        return cls(
            np.asarray(table.column("recording").to_pylist(), dtype=object),
            table.column("epoch").to_numpy().astype(np.int64),
            table.column("true").to_numpy().astype(np.int64),
            probabilities,
            np.asarray(table.column("subject").to_pylist(), dtype=object),
            table.column("stage").to_numpy().astype(np.int8),
        )


class PredictionCollector:
    """Gathers per-epoch predictions batch by batch; `finish()` sorts them and checks that no (recording,
    epoch) was predicted twice."""

    def __init__(self, n_classes: int):
        self.n_classes = n_classes
        self.parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []

    def add(self, recordings: Sequence[str], epochs, labels, probabilities) -> None:
        """recordings (n,), epochs (n,), labels (n,), probabilities (n, C)."""
        probabilities = np.asarray(probabilities, dtype=np.float32).reshape(-1, self.n_classes)
        self.parts.append(
            (
                np.asarray(recordings, dtype=object),
                np.asarray(epochs, dtype=np.int64),
                np.asarray(labels, dtype=np.int64),
                probabilities,
            )
        )

    def finish(self) -> Predictions:
        if not self.parts:
            raise ValueError("no prediction was collected")
        recording, epoch, true, probabilities = (np.concatenate([p[i] for p in self.parts]) for i in range(4))
        order = np.lexsort((epoch, recording.astype(str)))
        recording, epoch, true, probabilities = recording[order], epoch[order], true[order], probabilities[order]
        same = (recording[1:] == recording[:-1]) & (epoch[1:] == epoch[:-1])
        if same.any():
            k = int(np.flatnonzero(same)[0])
            raise ValueError(
                f"recording {recording[k]}, epoch {epoch[k]} was predicted more than once "
                f"({int(same.sum())} duplicates)"
            )
        return Predictions(recording, epoch, true, probabilities)


def _per_recording(predictions: Predictions) -> list[tuple[str, slice]]:
    """(recording id, rows) of each recording; rows are contiguous and in epoch order (predictions are sorted)."""
    ids, starts, counts = np.unique(predictions.recording.astype(str), return_index=True, return_counts=True)
    if not np.array_equal(starts, np.cumsum(counts) - counts):  # each recording one contiguous block, in id order
        raise ValueError("predictions are not sorted by recording")
    return [(str(rid), slice(int(a), int(a + n))) for rid, a, n in zip(ids, starts, counts)]


def attach_context(predictions: Predictions, data_dir: str | Path) -> Predictions:
    """Fill `subject` (from DST/manifest.parquet) and `stage` (the scored stage column of each recording)."""
    groups = _per_recording(predictions)
    subjects = read_subjects(data_dir, [rid for rid, _ in groups])
    stage = np.full(len(predictions), -1, dtype=np.int8)
    for rid, rows in groups:
        info, stages = scan_recording(recording_path(data_dir, rid), rid, subjects[rid], "sleep_stage", "midpoint")
        position = np.searchsorted(info.epochs, predictions.epoch[rows])  # epochs are sorted in the file
        if np.any(position >= info.n_epochs) or np.any(
            info.epochs[np.minimum(position, info.n_epochs - 1)] != predictions.epoch[rows]
        ):
            raise ValueError(f"{rid}: predicted epochs not found in {recording_path(data_dir, rid)}")
        stage[rows] = stages[position]
    subject = np.asarray([subjects[r] for r in predictions.recording], dtype=object)
    return replace(predictions, subject=subject, stage=stage)


# ---------------------------------------------------------------------------------------- metrics
def run_event_index(predictions: Predictions, task: str) -> dict[str, Any]:
    """Events of the task's family per hour of scored sleep, per test recording: from the predicted epochs and
    from the scored epoch labels (same counting rule), and their agreement (module docstring)."""
    estimated, reference, recordings = [], [], []
    for rid, rows in _per_recording(predictions):
        sleep = np.isin(predictions.stage[rows], SLEEP_STAGES)  # (n,) bool, scored sleep
        recordings.append(rid)
        for out, epochs in ((estimated, predictions.predicted[rows]), (reference, predictions.true[rows])):
            out.append(events_per_hour(count_events((epochs == 1).astype(np.int8), sleep), int(sleep.sum())))
    return {
        "definition": f"{task} events (runs of positive epochs, ceil(k/2) per run of k, starting in scored "
        "sleep) per hour of scored sleep; reference = the same count on the scored epoch labels",
        "per_recording": {r: {"estimated": e, "reference": f} for r, e, f in zip(recordings, estimated, reference)},
        "agreement": ahi_agreement(estimated, reference),
    }


def evaluate_predictions(predictions: Predictions, task: str, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Test metrics of a run: `utils.metrics.evaluate` (subject bootstrap) and, for event tasks, `run_event_index`."""
    binary = TASKS[task] == 2
    result = {
        "test": evaluate(
            predictions.true,
            predictions.predicted,
            predictions.probabilities[:, 1] if binary else None,
            predictions.subject,
            task,
            n_boot=n_boot,
            recordings=predictions.recording,
            seed=seed,
        )
    }
    if task in ("apnea", "hypopnea"):
        result["event_index"] = run_event_index(predictions, task)
    return result


def json_safe(value: Any) -> Any:
    """NaN/inf → None and NumPy scalars → Python numbers, recursively (strict JSON)."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


# ---------------------------------------------------------------------------------------- tables
def as_number(value: Any) -> float:
    return float("nan") if value is None else float(value)


def context_direction(metrics: Mapping[str, Any]) -> str | None:
    """A temporal run's context direction ("bidirectional" or "forward"; runs that name none had the published
    forward context); None for methods without a temporal context."""
    if metrics["method"] not in (FINE_TUNE, SCRATCH_FINETUNE):
        return None
    return metrics.get("context_direction") or "forward"


def variant_suffix(row: Mapping[str, Any]) -> str:
    """What sets a run apart from its method's plain form, for labels: " ±K" when it read K neighbouring epochs,
    " (forward context)" when its temporal context is the published causal one, " (per channel)" when it read a
    backbone's tokens pooled per channel, " (night zscore)" when its vectors were standardised over each night,
    " (logistic head)" for a probe whose head was fitted by L-BFGS,
    " (label rule any)" when its event labels followed another rule than the published midpoint one."""
    neighbours = f" ±{row['neighbour_epochs']}" if row.get("neighbour_epochs") else ""
    pooled = {"channel": " (per channel)", "channel_stats": " (per channel, mean and sd)"}.get(row.get("pooling"), "")
    night = f" (night {row['night_norm']})" if row.get("night_norm") not in (None, "none") else ""
    head = " (logistic head)" if row.get("head") == "logistic" else ""
    rule = f" (label rule {row['label_rule']})" if row.get("label_rule") not in (None, "midpoint") else ""
    forward = " (forward context)" if row.get("context_direction") == "forward" else ""
    return neighbours + forward + pooled + night + head + rule


def eval_stride(metrics: Mapping[str, Any]) -> int | None:
    """Epochs between a temporal model's evaluation windows (runs written before it was recorded: disjoint
    windows, the window's length); None for per-epoch models."""
    windows = metrics.get("windows") or {}
    return windows.get("eval_stride", windows.get("epochs_per_window"))


def training_stop(metrics: Mapping[str, Any]) -> str | None:
    """How a run's training ended ("max_minutes" when the clock cut it or its first phase); None: not recorded."""
    training = metrics.get("training") or {}
    if training.get("context_phase_stopped") == "max_minutes":
        return "max_minutes"
    return training.get("stopped")


def summary_row(metrics: Mapping[str, Any], run: str = "") -> dict[str, Any]:
    """One flat table row of a run's metrics.json: identity, headline metrics with CI ends (`<m>_low/_high`)."""
    test = metrics["test"]
    row: dict[str, Any] = {
        "method": metrics["method"],
        "backbone": str(metrics.get("backbone_name") or ""),  # a hand-edited record may hold another type
        "neighbour_epochs": metrics.get("neighbour_epochs"),  # None: the method has no such option
        "context_direction": context_direction(metrics),
        # how a backbone's tokens were pooled (trees on frozen vectors; runs written before the option: mean);
        # None: no pooling option (the features, and methods that read the backbone's own vector)
        "pooling": metrics.get("pooling", "mean" if metrics["method"] == BACKBONE_HGB else None),
        # how each night's vectors were standardised (the probe and the trees; runs written before: none); None:
        # the method has no such option
        "night_norm": metrics.get("night_norm", "none" if metrics["method"] in NIGHT_NORM_METHODS else None),
        # the probe's head (runs written before the option: mlp); None: the method has no such option
        "head": metrics.get("head", "mlp" if metrics["method"] == LINEAR_PROBE else None),
        "eval_stride": eval_stride(metrics),
        "task": metrics["task"],
        "label_fraction": metrics["label_fraction"],
        "train_subjects": metrics.get("train_subjects"),
        # which epochs count as events (`--label-rule`; runs written before it: midpoint); None for staging
        "label_rule": (metrics.get("label_rule") or "midpoint") if metrics["task"] != "sleep_stage" else None,
        "seed": metrics.get("seed"),
        "n_test_subjects": test["n_subjects"],
        "n_test_epochs": test["n_epochs"],
        # how training ended ("max_minutes": cut by the wall clock); None: not recorded (runs without the engine)
        "stopped": training_stop(metrics),
    }
    for name in CI_METRICS:
        row[name] = as_number(test["pooled"].get(name))
        low, high = test.get("ci", {}).get(name, [None, None])
        row[f"{name}_low"], row[f"{name}_high"] = as_number(low), as_number(high)
    agreement = (metrics.get("event_index") or {}).get("agreement", {})
    row["event_index_icc"] = as_number(agreement.get("icc_2_1"))
    row.update(
        ahi_icc=float("nan"),
        ahi_r=float("nan"),
        ahi_severity_kappa=float("nan"),
        ahi_icc_uncalibrated=float("nan"),
        run=run,
    )
    return row


def _cell(row: Mapping[str, Any], name: str) -> str:
    value = row.get(name)
    if name in CI_METRICS or name in ("event_index_icc", *EVENT_DETECTION_METRICS):
        value = as_number(value)
        if not math.isfinite(value):
            return "–"
        low, high = as_number(row.get(f"{name}_low")), as_number(row.get(f"{name}_high"))
        ci = f" [{low:.3f}, {high:.3f}]" if math.isfinite(low) and math.isfinite(high) else ""
        return f"{value:.3f}{ci}"
    if name == "label_fraction":
        return f"{100 * float(value):g} %"
    if value is None:
        return "all" if name == "train_subjects" else "–"
    return str(value)


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """A Markdown table; metric cells read `value [CI low, CI high]`, undefined values `–`."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(_cell(row, c) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def run_markdown(metrics: Mapping[str, Any]) -> str:
    """results.md of one run: what was run, the headline table, per-class F1, the confusion matrix."""
    test, task = metrics["test"], metrics["task"]
    selection, train = metrics.get("selection", {}), metrics.get("train", {})
    names = class_names(task)
    columns = [
        c
        for c in ("kappa", "macro_f1", "accuracy") + (("auroc", "auprc", "event_index_icc") if TASKS[task] == 2 else ())
    ]
    lines = [
        f"# {METHOD_LABELS.get(metrics['method'], metrics['method'])}: {task}",
        "",
        f"- backbone: {metrics.get('backbone_name') or '—'} ({metrics.get('init', '—')})",
        *([f"- neighbouring epochs read: ±{metrics['neighbour_epochs']}"] if metrics.get("neighbour_epochs") else []),
        *([f"- temporal context: {context_direction(metrics)}"] if context_direction(metrics) else []),
        *([f"- backbone tokens pooled: {metrics['pooling']}"] if metrics.get("pooling") else []),
        *(
            [f"- head: one linear layer fitted by L-BFGS, L2 {metrics['l2']:g} chosen on val"]
            if metrics.get("head") == "logistic"
            else []
        ),
        *(
            [f"- vectors standardised over each night: {metrics['night_norm']}"]
            if metrics.get("night_norm") not in (None, "none")
            else []
        ),
        f"- training labels: {100 * metrics['label_fraction']:g} % of the epochs of "
        f"{metrics.get('train_subjects') or 'all'} `train` subjects ({train.get('n_labelled', '?')} epochs)",
        f"- model selection: {selection.get('metric', '—')} on `val` = {selection.get('value')}; "
        f"checkpoint {selection.get('checkpoint', '—')}",
        f"- test: {test['n_epochs']} scored epochs, {test['n_recordings']} recordings, {test['n_subjects']} "
        f"subjects; 95 % CIs: {test.get('ci_method', '')} ({test.get('n_boot')} replicates)",
        "",
        markdown_table([summary_row(metrics)], columns),
        "## Per-class F1",
        "",
        "| " + " | ".join(names) + " |",
        "|" + "|".join("---" for _ in names) + "|",
        "| " + " | ".join("n/a" if v is None else f"{v:.3f}" for v in test["pooled"]["per_class_f1"].values()) + " |",
        "",
        "## Confusion matrix (rows = scored, columns = predicted)",
        "",
        "| | " + " | ".join(names) + " |",
        "|---|" + "|".join("---" for _ in names) + "|",
    ]
    lines += [
        f"| {n} | " + " | ".join(str(v) for v in row) + " |"
        for n, row in zip(names, test["pooled"]["confusion_matrix"])
    ]
    if metrics.get("event_index"):
        agreement = metrics["event_index"]["agreement"]
        lines += [
            "",
            "## Event index per recording",
            "",
            metrics["event_index"]["definition"],
            "",
            f"ICC(2,1) {agreement['icc_2_1']}, Pearson r {agreement['pearson_r']}, MAE {agreement['mae']} /h, "
            f"bias {agreement['bias']} /h, severity accuracy {agreement['severity_accuracy']} "
            f"({agreement['n']} recordings)",
        ]
    return "\n".join(lines) + "\n"


def write_run_report(
    out_dir: str | Path, predictions: Predictions, metrics: Mapping[str, Any], hypnograms: int = 3
) -> dict[str, Any]:
    """Write predictions.parquet, metrics.json, confusion_matrix.png, results.md (+ hypnograms for staging)
    into `out_dir`. `metrics` holds the run description and `evaluate_predictions`' result."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    task = metrics["task"]
    pq.write_table(predictions.to_table(task), out_dir / "predictions.parquet")
    outputs = {
        "predictions": "predictions.parquet",
        "confusion_matrix": "confusion_matrix.png",
        "results": "results.md",
    }
    title = f"{metrics['method']} | {task} | {100 * metrics['label_fraction']:g} % labels"
    confusion_matrix_png(
        metrics["test"]["pooled"]["confusion_matrix"], class_names(task), out_dir / "confusion_matrix.png", title=title
    )
    if task == "sleep_stage":
        for rid, rows in _per_recording(predictions)[: max(0, hypnograms)]:
            name = f"hypnogram_{rid}.png"
            hypnogram_png(predictions.predicted[rows], out_dir / name, true=predictions.true[rows], title=rid)
            outputs[f"hypnogram_{rid}"] = name
    record = json_safe({**metrics, "outputs": outputs})
    tmp = out_dir / ".metrics.json.tmp"
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    tmp.replace(out_dir / "metrics.json")
    (out_dir / "results.md").write_text(run_markdown(record))
    return record
