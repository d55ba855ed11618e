"""Event-level apnea and hypopnea detection: onsets, durations and types, scored per event and per night (AHI).

    python downstream/event_detection/train.py --data DST [--method features] [--hypopnea-rule 3a|4|all] \
        [--label-fraction 1.0] [--out DIR] [--seed 0]

The per-epoch tasks (`--task apnea|hypopnea` of the other downstream scripts) say whether an epoch's midpoint is
in an event; scorers mark events with onsets and durations from airflow, the effort belts and SpO2. This task
predicts those events (docs/evaluation.md, "Events"):

- inputs: the respiratory channels `airflow`, `thor`, `abdo`, `spo2` of each night (10 Hz), as per-second
  features with context (`utils.features.respiratory_features`: flow and effort amplitude against the preceding
  2 min, thoraco-abdominal correlation, SpO2 drop below its baseline and the nadir 0-60 s AHEAD, since the SpO2
  lags the event by 20-30 s; values at lags of -30..+30 s). A night lacking a channel gets NaN features for it;
  the run stops with one error line when no night of the splits has any respiratory channel;
- targets: one class per second (`dataset.event_targets`: none, obstructive, central, mixed apnea, hypopnea);
- method `features`: scikit-learn `HistGradientBoostingClassifier` on seconds of the `train` nights
  (--label-fraction of their 30-s epochs, seeded, all seconds of a drawn epoch; then at most --max-train-seconds
  of them, seeded), per-second probabilities decoded into events by `utils.events.decode_events` (AASM 10-s
  minimum) with the threshold and merge gap that maximise the mean of the apnea and hypopnea event F1 on `val`
  ONLY; a second classifier, fitted on the scored hypopneas of `train`, says which predicted hypopneas count in
  the AHI under --hypopnea-rule (the scored AHI counts a hypopnea only with a desaturation or arousal, 3a/4);
- `test` is scored once: event precision / recall / F1 per type, apnea family and any (one-to-one matching at
  IoU >= 0.2, pooled over nights, 95 % CIs by resampling test subjects), per-night AHI estimated against the
  scored AHI under the same rule, with SLEEP FROM THE SCORED HYPNOGRAM (this task has no stager; predict.py
  uses predicted sleep), their agreement (`utils.metrics.ahi_agreement`), and the epoch-level apnea and
  hypopnea AUROC (maximum per-second probability in the epoch against the epoch's midpoint label, comparable
  to the per-epoch tasks).

Outputs in --out (default runs/downstream/event_detection/<method>-<rule>-lf<fraction>-seed<seed>): config.json,
model.pkl (the `EventDetector`), metrics.json, events.csv (predicted test events: recording_id, onset_s,
duration_s, type, probability, counted), results.md. Every file is written at the end (temp file + rename), so a
failed run leaves an earlier run's outputs as they were.
"""
from __future__ import annotations

import argparse
import io
import json
import math
import os
import pickle
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier
from tqdm.auto import tqdm

from dataset.constants import EPOCH_S, RESP_CHANNELS
from dataset.event_targets import APNEA_CLASSES, HYPOPNEA_CLASS, RESPIRATORY_CLASSES, read_event_table
from dataset.scored_events import DEFAULT_HYPOPNEA_RULE, HYPOPNEA_RULES, qualifying_events
from dataset.splits import read_splits
from downstream.common import LeakageError, assert_no_test_leakage
from downstream.evaluate import json_safe
from downstream.event_detection.detector import EventDetector, Night, event_summaries, load_night, present_channels
from utils.config import (
    ArgumentParser, UsageError, check_out_dir, fraction, non_negative_int, parse_config, positive_int,
    reported_errors, save_config,
)
from utils.events import (
    EVENT_MIN_S, MATCH_IOU, event_detection_metrics, event_index, sum_detection_counts,
)
from utils.features import respiratory_features
from utils.metrics import ahi_agreement, auroc_auprc, bootstrap_ci
from utils.sleep_stats import SLEEP_STAGES

METHODS = ("features",)
THRESHOLDS = tuple(np.round(np.arange(0.05, 0.801, 0.05), 2).tolist())  # decoding thresholds tried on val
MERGE_GAPS_S = (0.0, 3.0, 6.0, 10.0)  # merge gaps tried on val
DETECTION_KEYS = ("obstructive_apnea", "central_apnea", "mixed_apnea", "hypopnea", "apnea", "any")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0],
                            formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--config", type=Path, default=None,
                        help="JSON or YAML file of options (keys as in config.json); explicit flags win")
    parser.add_argument("--data", type=Path, default=None, help="parsed cohort folder (data_parser's DST)")
    parser.add_argument("--method", choices=METHODS, default="features",
                        help="features: gradient-boosted trees on per-second respiratory features")
    parser.add_argument("--out", type=Path, default=None, help="run directory")
    parser.add_argument("--seed", type=non_negative_int, default=0)
    parser.add_argument("--hypopnea-rule", choices=HYPOPNEA_RULES, default=DEFAULT_HYPOPNEA_RULE,
                        help="which scored hypopneas count in the AHI: 3a (>= 3 %% desaturation or arousal), 4 "
                             "(>= 4 %% desaturation), all")
    parser.add_argument("--label-fraction", type=fraction, default=1.0,
                        help="fraction (0, 1] of the `train` nights' 30-s epochs whose seconds are used (seeded)")
    parser.add_argument("--max-train-seconds", type=positive_int, default=300_000,
                        help="at most this many labelled seconds fitted (seeded subsample)")
    parser.add_argument("--epochs-per-window", type=positive_int, default=10,
                        help="context of a prediction in 30-s epochs; the features method reads the whole night "
                             "(context: its 2-min baselines and lags up to 60 s), so this is recorded only")
    parser.add_argument("--min-duration-s", type=float, default=EVENT_MIN_S, help="shortest event decoded (AASM 10 s)")
    parser.add_argument("--n-boot", type=non_negative_int, default=1000,
                        help="bootstrap replicates (test subjects) for the CIs; 0 = none")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="progress bars")
    model = parser.add_argument_group("gradient-boosted trees (scikit-learn HistGradientBoostingClassifier)")
    model.add_argument("--hgb-max-iter", type=positive_int, default=200, help="boosting iterations")
    model.add_argument("--hgb-learning-rate", type=float, default=0.1)
    model.add_argument("--hgb-max-leaf-nodes", type=positive_int, default=31)
    model.add_argument("--hgb-min-samples-leaf", type=positive_int, default=40)
    return parser


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = build_parser()
    cfg = parse_config(parser, argv)
    if not cfg.data.is_dir() or not (cfg.data / "splits.json").is_file():
        parser.error(f"--data {cfg.data}: no parsed cohort with splits.json there (run dataset/data_parser.py)")
    if not 0 <= cfg.min_duration_s:
        parser.error(f"--min-duration-s must be >= 0, got {cfg.min_duration_s}")
    if cfg.out is None:
        cfg.out = (Path("runs") / "downstream" / "event_detection"
                   / f"{cfg.method}-{cfg.hypopnea_rule}-lf{cfg.label_fraction:g}-seed{cfg.seed}")
    check_out_dir(cfg.out)
    return cfg


# ---------------------------------------------------------------------------------------- data
def load_split_nights(cfg: argparse.Namespace) -> dict[str, list[Night]]:
    """Every night of train, val and test with features and targets (UsageError when no night has a
    respiratory channel, or a split has no recording)."""
    splits = read_splits(cfg.data / "splits.json")["recordings"]
    manifest_path = cfg.data / "manifest.parquet"
    if not manifest_path.is_file():
        raise UsageError(f"{manifest_path}: no manifest; run dataset/data_parser.py on --data")
    manifest = pd.read_parquet(manifest_path).set_index("recording_id")
    try:
        events = read_event_table(cfg.data)
    except (FileNotFoundError, ValueError) as err:
        raise UsageError(str(err)) from None
    wanted = {split: sorted(splits.get(split, [])) for split in ("train", "val", "test")}
    for split, ids in wanted.items():
        if not ids:
            raise UsageError(f"{cfg.data / 'splits.json'}: split {split!r} has no recordings")
    every = sorted({r for ids in wanted.values() for r in ids})
    channels = {}
    for rid in every:
        try:
            channels[rid] = present_channels(cfg.data, rid)
        except OSError as err:
            raise UsageError(f"{cfg.data / 'recordings' / (rid + '.parquet')}: unreadable ({err})") from None
    if not any(channels.values()):
        raise UsageError(f"--data {cfg.data}: no recording of train/val/test has a respiratory channel "
                         f"({', '.join(RESP_CHANNELS)}); the event task reads them (parse with those channels)")
    lacking = {rid: [c for c in RESP_CHANNELS if c not in found] for rid, found in channels.items()}
    lacking = {rid: missing for rid, missing in lacking.items() if missing}
    if lacking:
        shown = "; ".join(f"{rid}: {', '.join(m)}" for rid, m in list(lacking.items())[:5])
        print(f"warning: {len(lacking)} night(s) lack respiratory channels (their features are NaN): {shown}"
              f"{' ...' if len(lacking) > 5 else ''}", flush=True)
    nights: dict[str, list[Night]] = {}
    bar = tqdm(total=len(every), desc="features", unit="night", disable=not cfg.progress)
    for split, ids in wanted.items():
        nights[split] = []
        for rid in ids:
            row = manifest.loc[rid].to_dict()
            nights[split].append(load_night(cfg.data, rid, str(row.get("subject_id", rid)), events, row))
            bar.update()
    bar.close()
    return nights


def training_seconds(nights: list[Night], label_fraction: float, max_seconds: int, seed: int
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Features (N, F) and classes (N,) of the train seconds: a seeded `label_fraction` of the 30-s epochs of
    all nights (every second of a drawn epoch), then at most `max_seconds` of those seconds (seeded)."""
    rng = np.random.default_rng(seed)
    offsets = np.cumsum([0] + [n.n_seconds // EPOCH_S for n in nights])  # epoch index ranges per night
    total = int(offsets[-1])
    drawn = np.sort(rng.choice(total, size=max(1, int(round(label_fraction * total))), replace=False))
    seconds = (drawn[:, None] * EPOCH_S + np.arange(EPOCH_S)[None, :]).reshape(-1)  # global second index
    if seconds.size > max_seconds:
        seconds = np.sort(rng.choice(seconds, size=max_seconds, replace=False))
    night_of = np.searchsorted(offsets * EPOCH_S, seconds, side="right") - 1
    features, labels = [], []
    for i, night in enumerate(nights):
        local = seconds[night_of == i] - offsets[i] * EPOCH_S
        features.append(night.features[local])
        labels.append(night.targets.respiratory[np.minimum(local, night.targets.n_seconds - 1)]
                      if night.targets.n_seconds else np.zeros(local.size, np.int8))
    return np.concatenate(features), np.concatenate(labels).astype(np.int64)


def make_classifier(cfg: argparse.Namespace, max_iter: int | None = None) -> HistGradientBoostingClassifier:
    return HistGradientBoostingClassifier(
        max_iter=max_iter or cfg.hgb_max_iter, learning_rate=cfg.hgb_learning_rate,
        max_leaf_nodes=cfg.hgb_max_leaf_nodes, min_samples_leaf=cfg.hgb_min_samples_leaf, early_stopping=False,
        random_state=cfg.seed)


def fit_qualifier(cfg: argparse.Namespace, nights: list[Night], detector: EventDetector) -> dict[str, Any]:
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


# ---------------------------------------------------------------------------------------- scoring
def night_detection(detector: EventDetector, night: Night, probabilities: np.ndarray,
                    threshold: float | None = None, merge_gap_s: float | None = None) -> dict:
    predicted = detector.decode(probabilities, threshold, merge_gap_s)
    scored = [e for e in night.targets.events if e.type in RESPIRATORY_CLASSES[1:]]
    return event_detection_metrics(predicted, scored, min_iou=MATCH_IOU)


def select_decoding(detector: EventDetector, nights: list[Night], probabilities: list[np.ndarray]
                    ) -> tuple[float, float, list[dict]]:
    """(threshold, merge gap, curve) maximising the mean of the apnea and hypopnea event F1 over `nights`; among
    equal scores the threshold nearest 0.5, then the shortest merge gap."""
    curve, best = [], None
    for gap in MERGE_GAPS_S:
        for threshold in THRESHOLDS:
            pooled = sum_detection_counts([night_detection(detector, n, p, threshold, gap)
                                           for n, p in zip(nights, probabilities)])
            f1 = [pooled[k]["f1"] for k in ("apnea", "hypopnea") if k in pooled and math.isfinite(pooled[k]["f1"])]
            score = float(np.mean(f1)) if f1 else float("nan")
            curve.append({"threshold": threshold, "merge_gap_s": gap, "score": score,
                          "f1_apnea": pooled.get("apnea", {}).get("f1"), "f1_hypopnea": pooled.get("hypopnea", {}).get("f1")})
            key = (score, -abs(threshold - 0.5), -gap)  # ties: the threshold nearest 0.5, then the shortest gap
            if math.isfinite(score) and (best is None or key > best[0]):
                best = (key, threshold, gap)
    if best is None:
        return detector.threshold, detector.merge_gap_s, curve
    return best[1], best[2], curve


def epoch_scores(night: Night, probabilities: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
    """Per-epoch scores of the per-second apnea (sum of the apnea types) and hypopnea probabilities: "max" over
    the epoch's 30 s, and "midpoint": the mean of the two seconds around its midpoint (14 and 15 s), which is
    what the midpoint label asks (an epoch with an event only in its first or last seconds is labelled 0)."""
    n_epochs = night.stage.shape[0]
    usable = min(n_epochs * EPOCH_S, probabilities.shape[0]) // EPOCH_S * EPOCH_S
    blocks = probabilities[:usable].reshape(-1, EPOCH_S, probabilities.shape[1])  # (epochs, 30, 4)
    per_second = {"apnea": blocks[:, :, [c - 1 for c in APNEA_CLASSES]].sum(axis=2),
                  "hypopnea": blocks[:, :, HYPOPNEA_CLASS - 1]}  # (epochs, 30) each
    middle = slice(EPOCH_S // 2 - 1, EPOCH_S // 2 + 1)
    return {task: {"max": p.max(axis=1), "midpoint": p[:, middle].mean(axis=1)} for task, p in per_second.items()}


def detection_ci(per_night: list[dict], subjects: list[str], n_boot: int, seed: int) -> dict[str, list[float]]:
    """95 % CIs of the pooled event F1 per key, resampling subjects (their nights' tp/fp/fn) with replacement."""
    if n_boot < 1 or len(set(subjects)) < 2:
        return {}
    counts = np.array([[[night.get(k, {}).get(c, 0) for c in ("tp", "fp", "fn")] for k in DETECTION_KEYS]
                       for night in per_night], dtype=np.float64)  # (nights, keys, 3)

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


def evaluate_split(detector: EventDetector, nights: list[Night], probabilities: list[np.ndarray], rule: str,
                   n_boot: int, seed: int) -> tuple[dict[str, Any], list[dict]]:
    """Event detection, per-night AHI and epoch AUROC of one split at the detector's decoding settings."""
    per_night, ahi_rows, event_rows = [], [], []
    epoch = {"apnea": ([], {"max": [], "midpoint": []}, []), "hypopnea": ([], {"max": [], "midpoint": []}, [])}
    for night, prob in zip(nights, probabilities):
        predicted = detector.decode(prob)
        scored = night.targets.events
        per_night.append(event_detection_metrics(predicted, [e for e in scored if e.type in RESPIRATORY_CLASSES[1:]]))
        counted = detector.counted(predicted, night.features)
        sleep = np.isin(night.stage, SLEEP_STAGES)  # (n_epochs,) scored sleep
        ahi_rows.append({
            "recording_id": night.recording_id, "subject_id": night.subject_id,
            "ahi_estimated": event_index(counted, sleep), "ahi_scored": event_index(qualifying_events(scored, rule), sleep),
            "n_predicted_apneas": sum(e.type != "hypopnea" for e in predicted),
            "n_predicted_hypopneas": sum(e.type == "hypopnea" for e in predicted),
            "n_counted_hypopneas": sum(e.type == "hypopnea" for e in counted),
            "n_scored_apneas": sum(e.type.endswith("apnea") for e in scored),
            "n_scored_hypopneas": sum(e.type == "hypopnea" for e in scored),
            "sleep_h": float(sleep.sum() * EPOCH_S / 3600), "channels": ",".join(night.channels)})
        counted_ids = {id(e) for e in counted}
        event_rows += [{"recording_id": night.recording_id, "onset_s": e.onset_s, "duration_s": e.duration_s,
                        "type": e.type, "probability": e.probability, "counted": id(e) in counted_ids}
                       for e in predicted]
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
        "n_recordings": len(nights), "n_subjects": len(set(subjects)),
        "events": pooled, "ahi": {"hypopnea_rule": rule, "sleep": "scored hypnogram", "per_night": ahi_rows,
                                  "agreement": ahi_agreement(estimated, reference)},
        "epoch": {},
    }
    for task, (labels, scores, groups) in epoch.items():
        labels, groups = np.concatenate(labels), np.concatenate(groups)
        result["epoch"][task] = auroc_with_ci(labels, np.concatenate(scores["max"]), groups, n_boot, seed)
        midpoint = auroc_with_ci(labels, np.concatenate(scores["midpoint"]), groups, n_boot, seed)
        result["epoch"][task].update({f"{k}_midpoint": v for k, v in midpoint.items() if k.startswith("au")})
        result["epoch"][task]["score"] = "max per-second probability in the epoch (_midpoint: at its midpoint)"
    return result, event_rows


# ---------------------------------------------------------------------------------------- outputs
def _write_atomic(path: Path, write: Callable[[Path], Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def format_number(value: Any, digits: int = 3) -> str:
    return "–" if value is None or (isinstance(value, float) and not math.isfinite(value)) else f"{value:.{digits}f}"


def results_markdown(metrics: dict[str, Any]) -> str:
    test, val = metrics["test"], metrics["val"]
    lines = [f"# Event detection ({metrics['method']}), hypopnea rule {metrics['hypopnea_rule']}", "",
             f"- train: {metrics['train']['n_seconds']} seconds of {metrics['train']['n_recordings']} nights "
             f"({100 * metrics['label_fraction']:g} % of the epochs); classes {metrics['train']['class_counts']}",
             f"- decoding chosen on `val`: threshold {metrics['selection']['threshold']}, merge gap "
             f"{metrics['selection']['merge_gap_s']} s, minimum {metrics['selection']['min_duration_s']} s "
             f"(val mean F1 apnea/hypopnea {format_number(metrics['selection']['val_score'])})",
             f"- test: {test['n_recordings']} nights, {test['n_subjects']} subjects; AHI over scored sleep", "",
             "| events | precision | recall | F1 [95 % CI] | tp | fp | fn |", "|---|---|---|---|---|---|---|"]
    for key in DETECTION_KEYS:
        row = test["events"].get(key)
        if row:
            ci = row.get("f1_ci")
            ci_text = f" [{format_number(ci[0])}, {format_number(ci[1])}]" if ci else ""
            lines.append(f"| {key} | {format_number(row['precision'])} | {format_number(row['recall'])} | {format_number(row['f1'])}{ci_text} | "
                         f"{row['tp']} | {row['fp']} | {row['fn']} |")
    agreement = test["ahi"]["agreement"]
    ba = agreement["bland_altman"]
    lines += ["", "| epoch AUROC (midpoint label) | test: max score | test: midpoint score | val: max | val: midpoint |",
              "|---|---|---|---|---|"]
    lines += [f"| {task} | " + " | ".join(format_number(split["epoch"][task].get(key)) for split in (test, val)
                                          for key in ("auroc", "auroc_midpoint")) + " |"
              for task in ("apnea", "hypopnea")]
    lines += ["", f"AHI ({agreement['n']} nights): ICC(2,1) {format_number(agreement['icc_2_1'])}, Pearson r "
              f"{format_number(agreement['pearson_r'])}, severity κ {format_number(agreement['severity_kappa'])}, MAE "
              f"{format_number(agreement['mae'], 1)} /h, Bland-Altman bias {format_number(ba['bias'], 1)} /h "
              f"(limits {format_number(ba['loa_low'], 1)} to {format_number(ba['loa_high'], 1)})", "",
              "| night | AHI estimated | AHI scored |", "|---|---|---|"]
    lines += [f"| {r['recording_id']} | {format_number(r['ahi_estimated'], 1)} | {format_number(r['ahi_scored'], 1)} |"
              for r in test["ahi"]["per_night"]]
    return "\n".join(lines) + "\n"


def write_outputs(cfg: argparse.Namespace, detector: EventDetector, metrics: dict, event_rows: list[dict]) -> None:
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    record = json_safe(metrics)
    columns = ["recording_id", "onset_s", "duration_s", "type", "probability", "counted"]
    buffer = io.StringIO()
    pd.DataFrame(event_rows, columns=columns).to_csv(buffer, index=False, float_format="%.3f")
    _write_atomic(out / "model.pkl", lambda p: p.write_bytes(pickle.dumps(detector)))
    _write_atomic(out / "events.csv", lambda p: p.write_text(buffer.getvalue()))
    _write_atomic(out / "metrics.json", lambda p: p.write_text(json.dumps(record, indent=1) + "\n"))
    _write_atomic(out / "results.md", lambda p: p.write_text(results_markdown(record)))
    save_config(cfg, out / "config.json")


# ---------------------------------------------------------------------------------------- main
def run(cfg: argparse.Namespace) -> dict[str, Any]:
    started = time.monotonic()
    assert_no_test_leakage(cfg.data)
    nights = load_split_nights(cfg)
    assert_no_test_leakage(cfg.data, {"training": [n.recording_id for n in nights["train"]],
                                      "model selection": [n.recording_id for n in nights["val"]]})
    train_x, train_y = training_seconds(nights["train"], cfg.label_fraction, cfg.max_train_seconds, cfg.seed)
    counts = np.bincount(train_y, minlength=len(RESPIRATORY_CLASSES))
    print(f"event_detection | {cfg.method} | train {train_x.shape} (per class {counts.tolist()}) | val "
          f"{len(nights['val'])} nights | features {time.monotonic() - started:.1f} s", flush=True)
    if np.count_nonzero(counts) < 2:
        raise UsageError(f"--data {cfg.data}: the training seconds hold one class only "
                         f"({RESPIRATORY_CLASSES[int(np.argmax(counts))]}); raise --label-fraction")
    feature_names = respiratory_features({}, 1)[1]  # the column names (values of no channel: NaN)
    detector = EventDetector(make_classifier(cfg).fit(train_x, train_y), feature_names,
                             min_duration_s=cfg.min_duration_s, hypopnea_rule=cfg.hypopnea_rule)
    qualifier = fit_qualifier(cfg, nights["train"], detector)
    print(f"fitted ({time.monotonic() - started:.1f} s)", flush=True)

    val_prob = [detector.probabilities(n.features) for n in nights["val"]]
    detector.threshold, detector.merge_gap_s, curve = select_decoding(detector, nights["val"], val_prob)
    val_metrics, _ = evaluate_split(detector, nights["val"], val_prob, cfg.hypopnea_rule, 0, cfg.seed)
    val_score = max((c["score"] for c in curve if math.isfinite(c["score"])), default=float("nan"))
    print(f"decoding on val: threshold {detector.threshold}, merge gap {detector.merge_gap_s} s, mean event F1 "
          f"{val_score:.3f} ({time.monotonic() - started:.1f} s)", flush=True)

    test_prob = [detector.probabilities(n.features) for n in nights["test"]]  # test scored once
    test_metrics, event_rows = evaluate_split(detector, nights["test"], test_prob, cfg.hypopnea_rule, cfg.n_boot,
                                              cfg.seed)
    metrics = {
        "method": cfg.method, "task": "event_detection", "data": str(Path(cfg.data).resolve()),
        "hypopnea_rule": cfg.hypopnea_rule, "label_fraction": cfg.label_fraction, "seed": cfg.seed,
        "match_iou": MATCH_IOU, "classes": list(RESPIRATORY_CLASSES), "features": feature_names,
        "train": {"n_recordings": len(nights["train"]), "n_seconds": int(train_y.size),
                  "class_counts": counts.tolist(), "recordings": [n.recording_id for n in nights["train"]],
                  "qualifier": qualifier},
        "selection": {"split": "val", "objective": "mean of the apnea and hypopnea event F1",
                      "threshold": detector.threshold, "merge_gap_s": detector.merge_gap_s,
                      "min_duration_s": detector.min_duration_s, "val_score": val_score, "curve": curve},
        "val": val_metrics, "test": test_metrics, "seconds": time.monotonic() - started,
    }
    detector.info = {"hypopnea_rule": cfg.hypopnea_rule, "data": metrics["data"], "seed": cfg.seed}
    write_outputs(cfg, detector, metrics, event_rows)
    test = test_metrics["events"]
    agreement = test_metrics["ahi"]["agreement"]
    print(f"test ({test_metrics['n_subjects']} subjects): event F1 apnea {format_number(test.get('apnea', {}).get('f1'))} "
          f"hypopnea {format_number(test.get('hypopnea', {}).get('f1'))} | epoch AUROC apnea "
          f"{format_number(test_metrics['epoch']['apnea']['auroc'])} hypopnea {format_number(test_metrics['epoch']['hypopnea']['auroc'])}"
          f" | AHI ICC {format_number(agreement['icc_2_1'])} severity κ {format_number(agreement['severity_kappa'])} -> "
          f"{cfg.out}/metrics.json", flush=True)
    return metrics


def main(argv: list[str] | None = None) -> int:
    """Parse `argv`, fit, choose the decoding on val, score test once, write the outputs; 0 when done."""
    with reported_errors():
        cfg = parse_args(argv)
        try:
            run(cfg)
        except LeakageError as err:
            raise UsageError(str(err)) from None
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
