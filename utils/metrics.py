"""Evaluation metrics for the downstream tasks (docs/evaluation.md §5).

- Epoch classification (`classification_metrics`): accuracy, macro-F1, Cohen's kappa, per-class F1 and the
  confusion matrix; for binary tasks also sensitivity, specificity, AUROC and AUPRC (average precision).
  Every number equals scikit-learn's (tests/test_metrics.py); the code is our own, numpy only, so that a
  1000-replicate bootstrap over a whole test split takes seconds (no sorting per replicate).
- Uncertainty (`bootstrap_ci`, `evaluate`): percentile bootstrap 95 % intervals that resample test
  SUBJECTS with replacement (epochs of one night are not independent), plus per-recording medians and IQRs.
- Runs of positive epochs (`event_runs`) and rater agreement (`icc`), the building blocks of the
  apnea-hypopnea index, which `utils.ahi` computes.

Labels equal to `STAGE_UNSCORED` (-1) in `y_true` are excluded from scoring (docs/data.md §2.3); the number of
scored epochs is reported as `n`. Undefined values (a class nobody scored or predicted, AUROC with one class
present) are NaN, never an exception.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from dataset.constants import STAGE_NAMES, STAGE_UNSCORED, TASKS

HEADLINE_METRICS: tuple[str, ...] = ("accuracy", "macro_f1", "kappa")


# ---------------------------------------------------------------------------------------- Input checks
def as_labels(values, name: str, n_classes: int, allow_unscored: bool) -> np.ndarray:
    """`values` as a 1-D int64 array of class indices in [0, n_classes) (or -1 = unscored when allowed);
    otherwise a ValueError naming `name` and the bad values."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array of class indices, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise ValueError(f"{name}: class indices must be integers, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    low = STAGE_UNSCORED if allow_unscored else 0
    bad = (arr < low) | (arr >= n_classes)
    if bad.any():
        raise ValueError(
            f"{name}: values must lie in [{low}, {n_classes - 1}] ({n_classes} classes"
            f"{', -1 = unscored' if allow_unscored else ''}); "
            f"found {np.unique(arr[bad])[:10].tolist()}"
        )
    return arr


def _positive_scores(y_prob, n: int) -> np.ndarray:
    """Positive-class scores (N,) from binary probabilities given as (N,) or (N, 2)."""
    prob = np.asarray(y_prob, dtype=np.float64)
    if prob.ndim == 2 and prob.shape[1] == 2:
        prob = prob[:, 1]
    if prob.ndim != 1 or prob.shape[0] != n:
        raise ValueError(f"y_prob: expected shape ({n},) or ({n}, 2) for a binary task, got {np.shape(y_prob)}")
    if not np.all(np.isfinite(prob)):
        raise ValueError("y_prob: contains NaN or infinite scores")
    return prob


# ---------------------------------------------------------------------------------------- Point metrics
def confusion_matrix(y_true, y_pred, n_classes: int) -> np.ndarray:
    """Confusion matrix (n_classes, n_classes) float64 counts: rows = true, columns = predicted (sklearn's
    layout). Inputs are validated int arrays in [0, n_classes)."""
    counts = np.bincount(np.asarray(y_true) * n_classes + np.asarray(y_pred), minlength=n_classes * n_classes)
    return counts.astype(np.float64).reshape(n_classes, n_classes)


def kappa_from_confusion(cm: np.ndarray, weights: str | None = None) -> float:
    """Cohen's kappa of a confusion matrix; `weights` None, "linear" or "quadratic" (sklearn's definitions).

    kappa = 1 - sum(w * observed) / sum(w * expected), expected = outer(row sums, column sums) / n, with
    w = 1 - identity (unweighted), |i - j| (linear) or (i - j)^2 (quadratic). NaN when undefined
    (e.g. both raters used one and the same class only).
    """
    cm = np.asarray(cm, dtype=np.float64)
    n_classes = cm.shape[0]
    total = cm.sum()
    if total == 0:
        return float("nan")
    expected = np.outer(cm.sum(axis=1), cm.sum(axis=0)) / total
    idx = np.arange(n_classes)
    if weights is None:
        w = 1.0 - np.eye(n_classes)
    elif weights == "linear":
        w = np.abs(idx[:, None] - idx[None, :]).astype(np.float64)
    elif weights == "quadratic":
        w = ((idx[:, None] - idx[None, :]) ** 2).astype(np.float64)
    else:
        raise ValueError(f"weights must be None, 'linear' or 'quadratic', got {weights!r}")
    denominator = float((w * expected).sum())
    if denominator == 0:
        return float("nan")
    return 1.0 - float((w * cm).sum()) / denominator


def cohen_kappa(y1, y2, n_classes: int, weights: str | None = None) -> float:
    """Cohen's kappa between two label arrays (N,) with values in [0, n_classes). See `kappa_from_confusion`."""
    a = as_labels(y1, "y1", n_classes, allow_unscored=False)
    b = as_labels(y2, "y2", n_classes, allow_unscored=False)
    if a.shape != b.shape:
        raise ValueError(f"y1 and y2 differ in length: {a.shape[0]} vs {b.shape[0]}")
    return kappa_from_confusion(confusion_matrix(a, b, n_classes), weights)


def _f1_per_class(cm: np.ndarray) -> np.ndarray:
    """Per-class F1 = 2 TP / (2 TP + FP + FN); NaN for a class absent from both truth and prediction."""
    tp = np.diag(cm)
    denominator = cm.sum(axis=0) + cm.sum(axis=1)  # = 2 TP + FP + FN
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, 2.0 * tp / denominator, np.nan)


def _summary_from_confusion(cm: np.ndarray) -> tuple[float, float, float]:
    """(accuracy, macro-F1, kappa) from a confusion matrix. Macro-F1 averages the classes that occur in the
    truth or the prediction (sklearn's default label set); NaN if the matrix is empty."""
    total = cm.sum()
    if total == 0:
        return float("nan"), float("nan"), float("nan")
    f1 = _f1_per_class(cm)
    macro_f1 = float(np.nanmean(f1)) if np.isfinite(f1).any() else float("nan")
    return float(np.trace(cm) / total), macro_f1, kappa_from_confusion(cm)


def _sensitivity_specificity(cm: np.ndarray) -> tuple[float, float]:
    """Binary sensitivity TP / (TP + FN) and specificity TN / (TN + FP), class 1 = positive; NaN if undefined."""
    tn, fp, fn, tp = cm[0, 0], cm[0, 1], cm[1, 0], cm[1, 1]
    sensitivity = tp / (tp + fn) if tp + fn > 0 else float("nan")
    specificity = tn / (tn + fp) if tn + fp > 0 else float("nan")
    return float(sensitivity), float(specificity)


def _descending_layout(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Epoch order by descending score (N,) and the first sorted position of each block of tied scores."""
    order = np.argsort(-scores, kind="stable")
    ordered = scores[order]
    block_starts = np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1])))
    return order, block_starts


def _block_sums(values: np.ndarray, block_starts: np.ndarray) -> np.ndarray:
    """Sums of `values` (sorted by descending score) over each block of tied scores."""
    return values if block_starts.size == values.size else np.add.reduceat(values, block_starts)


def _auroc_auprc_descending(pos_desc: np.ndarray, neg_desc: np.ndarray) -> tuple[float, float]:
    """AUROC and average precision from (weighted) counts of positives and negatives per distinct score,
    highest score first (n_scores,). O(n_scores), no sort.

    AUROC = P(score_pos > score_neg) + 0.5 P(tie) (= the trapezoidal ROC area, sklearn's roc_auc_score).
    AP = sum over distinct thresholds t of (recall_t - recall_prev) * precision_t, thresholds taken from high
    to low (sklearn's average_precision_score). Both NaN when one class is absent (AP: when no positive).
    """
    tp = np.cumsum(pos_desc)  # positives scored at or above each threshold
    fp = np.cumsum(neg_desc)  # negatives scored at or above each threshold
    n_pos, n_neg = tp[-1], fp[-1]
    if n_pos == 0:
        return float("nan"), float("nan")
    hit = np.flatnonzero(pos_desc)  # thresholds where recall rises (tp + fp > 0 there)
    auprc = float(np.sum(pos_desc[hit] * tp[hit] / (tp[hit] + fp[hit])) / n_pos)
    if n_neg == 0:
        return float("nan"), auprc
    # Each positive beats the negatives strictly below it (n_neg - fp) and ties half of those at its score.
    auroc = float(np.sum(pos_desc[hit] * (n_neg - fp[hit] + 0.5 * neg_desc[hit])) / (n_pos * n_neg))
    return auroc, auprc


def auroc_auprc(y_true, y_score) -> tuple[float, float]:
    """(AUROC, AUPRC) of binary labels (N,) in {0, 1} against scores (N,) (higher = more likely positive).

    AUPRC is average precision (sklearn's `average_precision_score`, no interpolation). AUROC is NaN when only
    one class is present; AUPRC is NaN when no positive is present (sklearn returns 0.0 there, with a warning).
    """
    labels = as_labels(y_true, "y_true", 2, allow_unscored=False)
    scores = _positive_scores(y_score, labels.shape[0])
    if labels.size == 0:
        return float("nan"), float("nan")
    order, block_starts = _descending_layout(scores)
    positive = (labels[order] == 1).astype(np.float64)  # (N,) sorted by descending score
    return _auroc_auprc_descending(_block_sums(positive, block_starts), _block_sums(1.0 - positive, block_starts))


def binary_class_names(task: str) -> tuple[str, str]:
    """Class names of a binary task, e.g. ("no_apnea", "apnea")."""
    return (f"no_{task}", task)


def classification_metrics(
    y_true, y_pred, n_classes: int, y_prob=None, class_names: Sequence[str] | None = None
) -> dict:
    """Epoch-level metrics of one task.

    Args:
        y_true: (N,) int, true class per epoch in [0, n_classes); -1 (unscored) epochs are left out.
        y_pred: (N,) int, predicted class per epoch in [0, n_classes).
        n_classes: number of classes (5 for staging, 2 for the binary event tasks).
        y_prob: binary tasks only: positive-class probability (N,) or class probabilities (N, 2); enables
            `auroc` and `auprc`. Ignored for multi-class tasks.
        class_names: names of the classes; default `STAGE_NAMES` for 5 classes, else "0", "1", ...

    Returns:
        dict with `n` (scored epochs), `accuracy`, `macro_f1`, `kappa` (unweighted Cohen), `per_class_f1`
        ({name: F1}, NaN for a class absent from truth and prediction), `confusion_matrix` (nested list of
        int, rows = true, columns = predicted) and `class_names`; binary tasks add `sensitivity`,
        `specificity` (class 1 = positive) and, with y_prob, `auroc` and `auprc`. Fractions are in [0, 1].
    """
    if class_names is None:
        class_names = STAGE_NAMES if n_classes == len(STAGE_NAMES) else tuple(str(c) for c in range(n_classes))
    if len(class_names) != n_classes:
        raise ValueError(f"class_names has {len(class_names)} names for {n_classes} classes")
    labels = as_labels(y_true, "y_true", n_classes, allow_unscored=True)
    predicted = as_labels(y_pred, "y_pred", n_classes, allow_unscored=False)
    if labels.shape != predicted.shape:
        raise ValueError(f"y_true and y_pred differ in length: {labels.shape[0]} vs {predicted.shape[0]}")
    scored = labels != STAGE_UNSCORED
    scores = None
    if y_prob is not None and n_classes == 2:
        scores = _positive_scores(y_prob, labels.shape[0])[scored]
    labels, predicted = labels[scored], predicted[scored]

    cm = confusion_matrix(labels, predicted, n_classes)  # (C, C)
    accuracy, macro_f1, kappa = _summary_from_confusion(cm)
    f1 = _f1_per_class(cm)
    out = {
        "n": int(labels.size),
        "accuracy": accuracy,
        "macro_f1": macro_f1,
        "kappa": kappa,
        "per_class_f1": {name: float(value) for name, value in zip(class_names, f1)},
        "confusion_matrix": cm.astype(np.int64).tolist(),
        "class_names": list(class_names),
    }
    if n_classes == 2:
        out["sensitivity"], out["specificity"] = _sensitivity_specificity(cm)
        if scores is not None:
            out["auroc"], out["auprc"] = auroc_auprc(labels, scores)
    return out


# ---------------------------------------------------------------------------------------- Bootstrap over subjects
def _index_of(ids: np.ndarray) -> np.ndarray:
    """(N,) int64 position of each id among the sorted unique ids."""
    return np.unique(ids, return_inverse=True)[1].reshape(-1).astype(np.int64)


def _group_draws(n_groups: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n_groups) int: the groups drawn, with replacement, for each bootstrap replicate."""
    return np.random.default_rng(seed).integers(0, n_groups, size=(n_boot, n_groups))


def bootstrap_ci(
    y_true,
    y_pred,
    groups,
    metric_fn: Callable[[np.ndarray, np.ndarray], float | np.ndarray],
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> tuple:
    """Percentile bootstrap interval of `metric_fn` that resamples GROUPS (test subjects) with replacement.

    Each replicate draws as many groups as there are, with replacement, and concatenates all epochs of the
    drawn groups (a group drawn twice contributes its epochs twice). Epochs are sorted by group once, so a
    replicate's index array is built without a Python loop over groups.

    Args:
        y_true: (N, ...) array, first axis = epochs.
        y_pred: (N, ...) array, first axis = epochs (may be 2-D, e.g. label and score columns).
        groups: (N,) group id (subject id) per epoch, any hashable dtype.
        metric_fn: f(y_true[idx], y_pred[idx]) -> float or 1-D array of several metrics.
        n_boot: number of replicates; seed: seed of numpy's default_rng (same seed, same interval).
        alpha: 0.05 gives the 2.5th and 97.5th percentiles of the replicates.

    Returns:
        (point, low, high): the metric on the data as given, and the interval ends. Floats, or arrays shaped
        like metric_fn's output. Replicates where the metric is NaN are ignored; an end is NaN if all are.
    """
    y_true, y_pred, groups = np.asarray(y_true), np.asarray(y_pred), np.asarray(groups)
    if not (len(y_true) == len(y_pred) == len(groups)):
        raise ValueError(f"y_true, y_pred, groups differ in length: {len(y_true)}, {len(y_pred)}, {len(groups)}")
    if len(groups) == 0:
        raise ValueError("bootstrap_ci: no epochs to resample")
    if n_boot < 1 or not 0 < alpha < 1:
        raise ValueError(f"bootstrap_ci: need n_boot >= 1 and 0 < alpha < 1, got n_boot={n_boot}, alpha={alpha}")
    point = np.asarray(metric_fn(y_true, y_pred), dtype=np.float64)

    group_index = _index_of(groups)  # (N,) 0..G-1
    order = np.argsort(group_index, kind="stable")  # (N,) epochs sorted by group
    sizes = np.bincount(group_index)  # (G,) epochs per group
    starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))  # (G,) first sorted position of each group
    n_groups = sizes.size

    draws = _group_draws(n_groups, n_boot, seed)  # (n_boot, G)
    replicates = np.empty((n_boot,) + point.shape, dtype=np.float64)
    for b in range(n_boot):
        drawn_sizes = sizes[draws[b]]  # (G,)
        total = int(drawn_sizes.sum())
        # Position k of the replicate belongs to slot s; its sorted position = starts[group] + offset in slot.
        slot_start = np.cumsum(drawn_sizes) - drawn_sizes  # (G,)
        offsets = np.arange(total) - np.repeat(slot_start, drawn_sizes)  # (total,)
        idx = order[np.repeat(starts[draws[b]], drawn_sizes) + offsets]  # (total,) epoch indices
        replicates[b] = metric_fn(y_true[idx], y_pred[idx])

    low, high = _nan_percentiles(replicates, alpha)
    if point.ndim == 0:
        return float(point), float(low), float(high)
    return point, low, high


def _nan_percentiles(replicates: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """(alpha/2, 1 - alpha/2) percentiles along axis 0, ignoring NaN replicates (NaN where all are NaN)."""
    finite = np.isfinite(replicates)
    filled = np.where(finite, replicates, np.nan)
    all_nan = ~finite.any(axis=0)
    safe = np.where(all_nan, 0.0, filled)  # avoid nanpercentile's all-NaN warning; restored below
    low = np.nanpercentile(safe, 100 * alpha / 2, axis=0)
    high = np.nanpercentile(safe, 100 * (1 - alpha / 2), axis=0)
    return np.where(all_nan, np.nan, low), np.where(all_nan, np.nan, high)


def _bootstrap_headline(
    labels: np.ndarray,
    predicted: np.ndarray,
    scores: np.ndarray | None,
    groups: np.ndarray,
    n_classes: int,
    n_boot: int,
    seed: int,
    alpha: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile intervals of the headline metrics; the same replicates as `bootstrap_ci` with the same seed.

    Instead of concatenating epochs, each replicate weights every group by how often it was drawn: its
    confusion matrix is (draw counts) @ (per-group confusion matrices), and AUROC/AUPRC come from weighted
    counts per distinct score. Identical numbers, O(G * C^2) and O(N) per replicate. Output order:
    HEADLINE_METRICS, then for binary tasks sensitivity, specificity and, with scores, auroc, auprc.
    """
    group_index = _index_of(groups)  # (N,)
    n_groups = int(group_index.max()) + 1
    draws = _group_draws(n_groups, n_boot, seed)  # (n_boot, G)
    slot = draws + n_groups * np.arange(n_boot)[:, None]
    counts = np.bincount(slot.ravel(), minlength=n_boot * n_groups).reshape(n_boot, n_groups).astype(np.float64)
    cells = n_classes * n_classes
    per_group_cm = np.bincount(group_index * cells + labels * n_classes + predicted, minlength=n_groups * cells)
    replicate_cms = counts @ per_group_cm.reshape(n_groups, cells).astype(np.float64)  # (n_boot, C*C)
    if scores is not None:
        order, block_starts = _descending_layout(scores)  # sorted once; replicates only re-weight
        positive_desc = (labels[order] == 1).astype(np.float64)  # (N,)
        group_desc = group_index[order]  # (N,)
    rows = []
    for b in range(n_boot):
        cm = replicate_cms[b].reshape(n_classes, n_classes)
        values = list(_summary_from_confusion(cm))
        if n_classes == 2:
            values.extend(_sensitivity_specificity(cm))
            if scores is not None:
                weight = counts[b][group_desc]  # (N,) times each epoch's subject was drawn
                pos_weight = weight * positive_desc
                values.extend(
                    _auroc_auprc_descending(
                        _block_sums(pos_weight, block_starts), _block_sums(weight - pos_weight, block_starts)
                    )
                )
        rows.append(values)
    return _nan_percentiles(np.asarray(rows, dtype=np.float64), alpha)


def _median_iqr(values: Sequence[float]) -> dict:
    """{"median", "q1", "q3", "n"} over the finite values (NaN statistics when none)."""
    arr = np.asarray(values, dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    if arr.size == 0:
        return {"median": float("nan"), "q1": float("nan"), "q3": float("nan"), "n": 0}
    q1, median, q3 = np.percentile(arr, [25, 50, 75])
    return {"median": float(median), "q1": float(q1), "q3": float(q3), "n": int(arr.size)}


def evaluate(
    y_true,
    y_pred,
    y_prob,
    groups,
    task: str,
    n_boot: int = 1000,
    recordings=None,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict:
    """Full evaluation of one task on the test split: pooled metrics with subject-bootstrap CIs and
    per-recording medians.

    Args:
        y_true: (N,) int true class per epoch; -1 (unscored) epochs are left out everywhere.
        y_pred: (N,) int predicted class per epoch.
        y_prob: binary tasks: (N,) positive-class probability or (N, 2); None skips AUROC/AUPRC. Ignored for
            the staging task.
        groups: (N,) subject id per epoch: the bootstrap resamples these.
        task: a key of `dataset.constants.TASKS` ("sleep_stage", "apnea", "hypopnea").
        n_boot: bootstrap replicates (0 skips the intervals).
        recordings: (N,) recording id per epoch for the per-recording summary; default = `groups`.
        seed, alpha: bootstrap seed and 1 - confidence level.

    Returns:
        {"task", "n_epochs", "n_subjects", "n_recordings", "pooled": classification_metrics(...),
         "ci": {metric: [low, high]} for the headline metrics, "ci_level", "ci_method", "n_boot",
         "per_recording": {metric: {"median", "q1", "q3", "n"}}}. Values are plain floats (NaN where
        undefined), so the dict can go straight to json.dump.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {sorted(TASKS)}")
    n_classes = TASKS[task]
    class_names = STAGE_NAMES if task == "sleep_stage" else binary_class_names(task)
    labels = as_labels(y_true, "y_true", n_classes, allow_unscored=True)
    predicted = as_labels(y_pred, "y_pred", n_classes, allow_unscored=False)
    groups = np.asarray(groups)
    recordings = groups if recordings is None else np.asarray(recordings)
    n = labels.shape[0]
    if not (predicted.shape[0] == groups.shape[0] == recordings.shape[0] == n):
        raise ValueError(
            f"y_true, y_pred, groups and recordings differ in length: "
            f"{n}, {predicted.shape[0]}, {groups.shape[0]}, {recordings.shape[0]}"
        )
    scores = _positive_scores(y_prob, n) if (y_prob is not None and n_classes == 2) else None

    scored = labels != STAGE_UNSCORED
    labels, predicted, groups, recordings = labels[scored], predicted[scored], groups[scored], recordings[scored]
    if scores is not None:
        scores = scores[scored]
    if labels.size == 0:
        raise ValueError(f"evaluate({task}): no scored epoch (all y_true are {STAGE_UNSCORED})")

    pooled = classification_metrics(labels, predicted, n_classes, scores, class_names)
    names = list(HEADLINE_METRICS)
    if n_classes == 2:
        names += ["sensitivity", "specificity"] + (["auroc", "auprc"] if scores is not None else [])

    result = {
        "task": task,
        "n_epochs": int(labels.size),
        "n_subjects": int(np.unique(groups).size),
        "n_recordings": int(np.unique(recordings).size),
        "pooled": pooled,
        "n_boot": int(n_boot),
        "ci_level": 1.0 - alpha,
        "ci_method": "percentile bootstrap, subjects resampled with replacement",
        "ci": {},
    }
    if n_boot > 0 and result["n_subjects"] < 2:  # every resample is the one subject: no interval, not a zero-width one
        result["ci"] = {name: [np.nan, np.nan] for name in names}
    elif n_boot > 0:
        low, high = _bootstrap_headline(labels, predicted, scores, groups, n_classes, n_boot, seed, alpha)
        result["ci"] = {name: [float(lo), float(hi)] for name, lo, hi in zip(names, low, high)}

    per_recording: dict[str, list[float]] = {name: [] for name in names}
    recording_index = _index_of(recordings)  # (N,)
    by_recording = np.argsort(recording_index, kind="stable")  # (N,) epochs grouped by recording, time order kept
    bounds = np.cumsum(np.bincount(recording_index))[:-1]
    for sel in np.split(by_recording, bounds):
        metrics = classification_metrics(
            labels[sel], predicted[sel], n_classes, None if scores is None else scores[sel], class_names
        )
        for name in names:
            per_recording[name].append(metrics[name])
    result["per_recording"] = {name: _median_iqr(values) for name, values in per_recording.items()}
    return result


# ---------------------------------------------------------------------------------------- Epoch runs, rater agreement
def event_runs(binary_epochs, min_epochs: int = 1) -> list[tuple[int, int]]:
    """Runs of consecutive positive epochs: [(start_epoch, n_epochs), ...] in time order.

    A run is a maximal block of positive epochs; two runs are separated by at least one negative epoch.
    Runs shorter than `min_epochs` are dropped.

    >>> event_runs([0, 1, 1, 0, 1, 0, 0, 1, 1, 1])
    [(1, 2), (4, 1), (7, 3)]
    """
    positive = np.asarray(binary_epochs)
    if positive.ndim != 1:
        raise ValueError(f"binary_epochs: expected a 1-D per-epoch array, got shape {positive.shape}")
    if not np.isin(positive, (0, 1)).all():
        raise ValueError("binary_epochs: expected 0/1 per epoch (threshold probabilities first)")
    edges = np.diff(np.concatenate(([0], positive.astype(np.int8), [0])))  # +1 at run start, -1 after run end
    starts = np.flatnonzero(edges == 1)
    lengths = np.flatnonzero(edges == -1) - starts
    keep = lengths >= min_epochs
    return [(int(s), int(k)) for s, k in zip(starts[keep], lengths[keep])]


def icc(ratings, kind: str = "2,1") -> float:
    """Intraclass correlation (Shrout & Fleiss 1979) of ratings (n_targets, k_raters) from a two-way ANOVA.

    With MSR (targets), MSC (raters) and MSE (residual) mean squares:
      ICC(2,1), two-way random, absolute agreement, single rater:
          (MSR - MSE) / (MSR + (k - 1) MSE + k (MSC - MSE) / n)
      ICC(3,1), two-way mixed, consistency, single rater:
          (MSR - MSE) / (MSR + (k - 1) MSE)
    ICC(2,1) penalises a systematic offset between raters (e.g. an AHI estimator that is biased); ICC(3,1)
    does not. NaN when undefined (fewer than 2 targets, or no variance at all).
    """
    x = np.asarray(ratings, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] < 2:
        raise ValueError(f"ratings: expected shape (n_targets, k_raters >= 2), got {x.shape}")
    if kind not in ("2,1", "3,1"):
        raise ValueError(f"kind must be '2,1' or '3,1', got {kind!r}")
    n, k = x.shape
    if n < 2:
        return float("nan")
    grand = x.mean()
    ss_rows = k * np.sum((x.mean(axis=1) - grand) ** 2)
    ss_cols = n * np.sum((x.mean(axis=0) - grand) ** 2)
    ss_error = np.sum((x - grand) ** 2) - ss_rows - ss_cols
    ms_rows = ss_rows / (n - 1)
    ms_cols = ss_cols / (k - 1)
    ms_error = max(ss_error, 0.0) / ((n - 1) * (k - 1))  # clip float round-off below zero
    if kind == "2,1":
        denominator = ms_rows + (k - 1) * ms_error + k * (ms_cols - ms_error) / n
    else:
        denominator = ms_rows + (k - 1) * ms_error
    if denominator <= 0:
        return float("nan")
    return float((ms_rows - ms_error) / denominator)


def improves(value: float | None, best: float | None, mode: str) -> bool:
    """Whether a monitored `value` beats the `best` so far (None: none yet) under `mode` ("max" or "min"); a
    missing or non-finite value never does."""
    if value is None or not math.isfinite(value):
        return False
    return best is None or (value > best if mode == "max" else value < best)
