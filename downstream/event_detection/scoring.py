"""The scores of one split at the detector's decoding settings: event precision / recall / F1 per type, apnea
family and any (95 % CIs by resampling subjects), per-night AHI against the scored AHI over the scored hypnogram's
sleep and their agreement, and the epoch-level apnea and hypopnea AUROC."""

from __future__ import annotations

from typing import Any

import numpy as np

from dataset.constants import EPOCH_S
from dataset.event_targets import APNEA_CLASSES, HYPOPNEA_CLASS, RESPIRATORY_CLASSES
from dataset.scored_events import qualifying_events
from downstream.event_detection.detector import EventDetector, Night
from utils.ahi import ahi_agreement, event_index
from utils.events import event_detection_metrics, sum_detection_counts
from utils.metrics import auroc_auprc, bootstrap_ci
from utils.sleep_stats import SLEEP_STAGES

DETECTION_KEYS = ("obstructive_apnea", "central_apnea", "mixed_apnea", "hypopnea", "apnea", "any")


def epoch_scores(night: Night, probabilities: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
    """Per-epoch scores of the per-second apnea (sum of the apnea types) and hypopnea probabilities: "max" over
    the epoch's 30 s, and "midpoint": the mean of the two seconds around its midpoint (14 and 15 s), which is
    what the midpoint label asks (an epoch with an event only in its first or last seconds is labelled 0)."""
    n_epochs = night.stage.shape[0]
    usable = min(n_epochs * EPOCH_S, probabilities.shape[0]) // EPOCH_S * EPOCH_S
    blocks = probabilities[:usable].reshape(-1, EPOCH_S, probabilities.shape[1])  # (epochs, 30, 4)
    per_second = {
        "apnea": blocks[:, :, [c - 1 for c in APNEA_CLASSES]].sum(axis=2),
        "hypopnea": blocks[:, :, HYPOPNEA_CLASS - 1],
    }  # (epochs, 30) each
    middle = slice(EPOCH_S // 2 - 1, EPOCH_S // 2 + 1)
    return {task: {"max": p.max(axis=1), "midpoint": p[:, middle].mean(axis=1)} for task, p in per_second.items()}


def detection_ci(per_night: list[dict], subjects: list[str], n_boot: int, seed: int) -> dict[str, list[float]]:
    """95 % CIs of the pooled event F1 per key, resampling subjects (their nights' tp/fp/fn) with replacement."""
    if n_boot < 1 or len(set(subjects)) < 2:
        return {}
    counts = np.array(
        [[[night.get(k, {}).get(c, 0) for c in ("tp", "fp", "fn")] for k in DETECTION_KEYS] for night in per_night],
        dtype=np.float64,
    )  # (nights, keys, 3)

    def f1(_, sample: np.ndarray) -> np.ndarray:
        tp, fp, fn = sample.sum(axis=0).T
        denominator = 2 * tp + fp + fn
        return np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), np.nan)

    _, low, high = bootstrap_ci(counts, counts, np.asarray(subjects), f1, n_boot=n_boot, seed=seed)
    return {k: [float(lo), float(hi)] for k, lo, hi in zip(DETECTION_KEYS, low, high)}


def auroc_with_ci(labels: np.ndarray, scores: np.ndarray, groups: np.ndarray, n_boot: int, seed: int) -> dict:
    keep = labels >= 0
    labels, scores, groups = labels[keep], scores[keep], groups[keep]
    auroc, auprc = auroc_auprc(labels, scores)
    out = {"auroc": auroc, "auprc": auprc, "n_epochs": int(labels.size), "n_positive": int(labels.sum())}
    if n_boot and labels.size and np.unique(groups).size >= 2:
        _, low, high = bootstrap_ci(labels, scores, groups, lambda y, s: auroc_auprc(y, s)[0], n_boot=n_boot, seed=seed)
        out["auroc_ci"] = [low, high]
    return out


def evaluate_split(
    detector: EventDetector, nights: list[Night], probabilities: list[np.ndarray], rule: str, n_boot: int, seed: int
) -> tuple[dict[str, Any], list[dict]]:
    """Event detection, per-night AHI and epoch AUROC of one split at the detector's decoding settings."""
    per_night, ahi_rows, event_rows = [], [], []
    epoch = {"apnea": ([], {"max": [], "midpoint": []}, []), "hypopnea": ([], {"max": [], "midpoint": []}, [])}
    for night, prob in zip(nights, probabilities):
        predicted = detector.decode(prob)
        scored = night.targets.events
        per_night.append(event_detection_metrics(predicted, [e for e in scored if e.type in RESPIRATORY_CLASSES[1:]]))
        counted = detector.counted(predicted, night.features)
        sleep = np.isin(night.stage, SLEEP_STAGES)  # (n_epochs,) scored sleep
        ahi_rows.append(
            {
                "recording_id": night.recording_id,
                "subject_id": night.subject_id,
                "ahi_estimated": event_index(counted, sleep),
                "ahi_scored": event_index(qualifying_events(scored, rule), sleep),
                "n_predicted_apneas": sum(e.type != "hypopnea" for e in predicted),
                "n_predicted_hypopneas": sum(e.type == "hypopnea" for e in predicted),
                "n_counted_hypopneas": sum(e.type == "hypopnea" for e in counted),
                "n_scored_apneas": sum(e.type.endswith("apnea") for e in scored),
                "n_scored_hypopneas": sum(e.type == "hypopnea" for e in scored),
                "sleep_h": float(sleep.sum() * EPOCH_S / 3600),
                "channels": ",".join(night.channels),
            }
        )
        counted_ids = {id(e) for e in counted}
        event_rows += [
            {
                "recording_id": night.recording_id,
                "onset_s": e.onset_s,
                "duration_s": e.duration_s,
                "type": e.type,
                "probability": e.probability,
                "counted": id(e) in counted_ids,
            }
            for e in predicted
        ]
        for task, scores in epoch_scores(night, prob).items():
            size = scores["max"].size
            epoch[task][0].append(night.epoch_labels[task][:size].astype(np.int64))
            for kind, score in scores.items():
                epoch[task][1][kind].append(score)
            epoch[task][2].append(np.full(size, night.subject_id, dtype=object))
    subjects = [n.subject_id for n in nights]
    pooled = sum_detection_counts(per_night)
    ci = detection_ci(per_night, subjects, n_boot, seed)
    for key, bounds in ci.items():
        if key in pooled:
            pooled[key]["f1_ci"] = bounds
    estimated = [r["ahi_estimated"] for r in ahi_rows]
    reference = [r["ahi_scored"] for r in ahi_rows]
    result = {
        "n_recordings": len(nights),
        "n_subjects": len(set(subjects)),
        "events": pooled,
        "ahi": {
            "hypopnea_rule": rule,
            "sleep": "scored hypnogram",
            "per_night": ahi_rows,
            "agreement": ahi_agreement(estimated, reference),
        },
        "epoch": {},
    }
    for task, (labels, scores, groups) in epoch.items():
        labels, groups = np.concatenate(labels), np.concatenate(groups)
        result["epoch"][task] = auroc_with_ci(labels, np.concatenate(scores["max"]), groups, n_boot, seed)
        midpoint = auroc_with_ci(labels, np.concatenate(scores["midpoint"]), groups, n_boot, seed)
        result["epoch"][task].update({f"{k}_midpoint": v for k, v in midpoint.items() if k.startswith("au")})
        result["epoch"][task]["score"] = "max per-second probability in the epoch (_midpoint: at its midpoint)"
    return result, event_rows
