"""The `features` method of the event task: scikit-learn gradient-boosted trees on the per-second respiratory
features of the labelled train seconds; and the hypopnea qualifier every method fits (which predicted hypopneas
count in the AHI under --hypopnea-rule), trees on event summaries of the per-second vectors."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier

from dataset.event_targets import RESPIRATORY_CLASSES
from dataset.scored_events import qualifying_events
from downstream.data import check_two_classes
from downstream.event_detection.detector import EventDetector, Night, event_summaries
from downstream.event_detection.nights import training_seconds
from downstream.trees import fit_trees
from utils.config import Config
from utils.features import respiratory_features


def make_classifier(cfg: Config, max_iter: int | None = None) -> HistGradientBoostingClassifier:
    return HistGradientBoostingClassifier(
        max_iter=max_iter or cfg.hgb_max_iter,
        learning_rate=cfg.hgb_learning_rate,
        max_leaf_nodes=cfg.hgb_max_leaf_nodes,
        min_samples_leaf=cfg.hgb_min_samples_leaf,
        early_stopping=False,
        random_state=cfg.seed,
    )


def fit_qualifier(cfg: Config, nights: list[Night], detector: EventDetector) -> dict[str, Any]:
    """Fit `detector.qualifier` on the scored hypopneas of `nights`: does it count under the rule? Returns counts."""
    if cfg.hypopnea_rule == "all":
        return {"rule": "all", "note": "every hypopnea counts"}
    rows, labels = [], []
    for night in nights:
        scored = night.targets.events
        counted = {(e.onset_s, e.duration_s) for e in qualifying_events(scored, cfg.hypopnea_rule)}
        hypopneas = [e for e in scored if e.type == "hypopnea"]
        if hypopneas:
            rows.append(event_summaries(night.features, hypopneas))
            labels += [(e.onset_s, e.duration_s) in counted for e in hypopneas]
    y = np.asarray(labels, dtype=np.int64)
    summary = {"rule": cfg.hypopnea_rule, "n_hypopneas": int(y.size), "n_counted": int(y.sum())}
    if y.size == 0 or y.min() == y.max():
        detector.qualifier, detector.qualifier_constant = None, bool(y.size == 0 or y[0] == 1)
        summary["constant"] = detector.qualifier_constant
        return summary
    detector.qualifier = make_classifier(cfg, max_iter=100).fit(np.concatenate(rows), y)
    return summary


def fit_features(
    cfg: Config, nights: dict[str, list[Night]], started: float
) -> tuple[EventDetector, dict[str, Any], list[str]]:
    """The features method: gradient-boosted trees on the train seconds. Returns the detector (decoding not
    chosen yet), the train record and the feature names."""
    train_x, train_y = training_seconds(nights["train"], cfg.label_fraction, cfg.max_train_seconds, cfg.seed)
    counts = np.bincount(train_y, minlength=len(RESPIRATORY_CLASSES))
    print(
        f"event_detection | {cfg.method} | train {train_x.shape} (per class {counts.tolist()}) | val "
        f"{len(nights['val'])} nights | features {time.monotonic() - started:.1f} s | fitting the trees ...",
        flush=True,
    )
    check_two_classes(counts, "seconds", "--label-fraction")
    feature_names = respiratory_features({}, 1)[1]  # the column names (values of no channel: NaN)
    detector = EventDetector(
        fit_trees(make_classifier(cfg), train_x, train_y, progress=cfg.progress),
        feature_names,
        min_duration_s=cfg.min_duration_s,
        hypopnea_rule=cfg.hypopnea_rule,
    )
    record = {
        "n_recordings": len(nights["train"]),
        "n_seconds": int(train_y.size),
        "class_counts": counts.tolist(),
        "recordings": [n.recording_id for n in nights["train"]],
    }
    return detector, record, feature_names
