"""The decoding of the event task chosen on `val` only: the threshold and merge gap that maximise the mean of the
apnea and hypopnea event F1 (one-to-one matching at IoU >= `utils.events.MATCH_IOU`, pooled over the nights)."""

from __future__ import annotations

import math

import numpy as np

from dataset.event_targets import RESPIRATORY_CLASSES
from downstream.event_detection.detector import EventDetector, Night
from utils.events import MATCH_IOU, event_detection_metrics, sum_detection_counts

THRESHOLDS = tuple(np.round(np.arange(0.05, 0.801, 0.05), 2).tolist())  # decoding thresholds tried on val
MERGE_GAPS_S = (0.0, 3.0, 6.0, 10.0)  # merge gaps tried on val


def night_detection(
    detector: EventDetector,
    night: Night,
    probabilities: np.ndarray,
    threshold: float | None = None,
    merge_gap_s: float | None = None,
) -> dict:
    predicted = detector.decode(probabilities, threshold, merge_gap_s)
    scored = [e for e in night.targets.events if e.type in RESPIRATORY_CLASSES[1:]]
    return event_detection_metrics(predicted, scored, min_iou=MATCH_IOU)


def select_decoding(
    detector: EventDetector, nights: list[Night], probabilities: list[np.ndarray]
) -> tuple[float, float, list[dict]]:
    """(threshold, merge gap, curve) maximising the mean of the apnea and hypopnea event F1 over `nights`; among
    equal scores the threshold nearest 0.5, then the shortest merge gap."""
    curve, best = [], None
    for gap in MERGE_GAPS_S:
        for threshold in THRESHOLDS:
            pooled = sum_detection_counts(
                [night_detection(detector, n, p, threshold, gap) for n, p in zip(nights, probabilities)]
            )
            f1 = [pooled[k]["f1"] for k in ("apnea", "hypopnea") if k in pooled and math.isfinite(pooled[k]["f1"])]
            score = float(np.mean(f1)) if f1 else float("nan")
            curve.append(
                {
                    "threshold": threshold,
                    "merge_gap_s": gap,
                    "score": score,
                    "f1_apnea": pooled.get("apnea", {}).get("f1"),
                    "f1_hypopnea": pooled.get("hypopnea", {}).get("f1"),
                }
            )
            key = (score, -abs(threshold - 0.5), -gap)  # ties: the threshold nearest 0.5, then the shortest gap
            if math.isfinite(score) and (best is None or key > best[0]):
                best = (key, threshold, gap)
    if best is None:
        return detector.threshold, detector.merge_gap_s, curve
    return best[1], best[2], curve
