"""What an event-detection run writes in --out: config.json, model.pkl, metrics.json, events.csv, results.md
(and finetune / scratch: encoder.pt), written at the end of the run into a staged folder that replaces --out whole."""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from downstream.event_detection.detector import EventDetector
from downstream.event_detection.scoring import DETECTION_KEYS
from downstream.results import json_safe
from utils.checkpoint import staged_run_folder
from utils.config import Config, save_config


def format_number(value: Any, digits: int = 3) -> str:
    return "–" if value is None or (isinstance(value, float) and not math.isfinite(value)) else f"{value:.{digits}f}"


def results_markdown(metrics: dict[str, Any]) -> str:
    test, val, train = metrics["test"], metrics["val"], metrics["train"]
    lines = [
        f"# Event detection ({metrics['method']}), hypopnea rule {metrics['hypopnea_rule']}",
        "",
        f"- train: {metrics['train']['n_seconds']} seconds of {metrics['train']['n_recordings']} nights "
        f"({100 * metrics['label_fraction']:g} % of the epochs); classes {metrics['train']['class_counts']}",
        *(
            [
                f"- per-second vectors: {metrics['features']} from {train['backbone']['name']} "
                f"({train['encoder_mode']}); head selected at step {train['best_step']} of {train['steps']} on val"
            ]
            if train.get("backbone")
            else []
        ),
        f"- decoding chosen on `val`: threshold {metrics['selection']['threshold']}, merge gap "
        f"{metrics['selection']['merge_gap_s']} s, minimum {metrics['selection']['min_duration_s']} s "
        f"(val mean F1 apnea/hypopnea {format_number(metrics['selection']['val_score'])})",
        f"- test: {test['n_recordings']} nights, {test['n_subjects']} subjects; AHI over scored sleep",
        "",
        "| events | precision | recall | F1 [95 % CI] | tp | fp | fn |",
        "|---|---|---|---|---|---|---|",
    ]
    for key in DETECTION_KEYS:
        row = test["events"].get(key)
        if row:
            ci = row.get("f1_ci")
            ci_text = f" [{format_number(ci[0])}, {format_number(ci[1])}]" if ci else ""
            lines.append(
                f"| {key} | {format_number(row['precision'])} | {format_number(row['recall'])} | {format_number(row['f1'])}{ci_text} | "
                f"{row['tp']} | {row['fp']} | {row['fn']} |"
            )
    agreement = test["ahi"]["agreement"]
    ba = agreement["bland_altman"]
    lines += [
        "",
        "| epoch AUROC (midpoint label) | test: max score | test: midpoint score | val: max | val: midpoint |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {task} | "
        + " | ".join(
            format_number(split["epoch"][task].get(key)) for split in (test, val) for key in ("auroc", "auroc_midpoint")
        )
        + " |"
        for task in ("apnea", "hypopnea")
    ]
    lines += [
        "",
        f"AHI ({agreement['n']} nights): ICC(2,1) {format_number(agreement['icc_2_1'])}, Pearson r "
        f"{format_number(agreement['pearson_r'])}, severity κ {format_number(agreement['severity_kappa'])}, MAE "
        f"{format_number(agreement['mae'], 1)} /h, Bland-Altman bias {format_number(ba['bias'], 1)} /h "
        f"(limits {format_number(ba['loa_low'], 1)} to {format_number(ba['loa_high'], 1)})",
        "",
        "| night | AHI estimated | AHI scored |",
        "|---|---|---|",
    ]
    lines += [
        f"| {r['recording_id']} | {format_number(r['ahi_estimated'], 1)} | {format_number(r['ahi_scored'], 1)} |"
        for r in test["ahi"]["per_night"]
    ]
    return "\n".join(lines) + "\n"


def write_outputs(
    cfg: Config,
    detector: EventDetector,
    metrics: dict,
    event_rows: list[dict],
    files: dict[str, Any] | None = None,
) -> None:
    """The results of a run and its config.json (an earlier one with other options kept as config.<n>.json),
    written into a staged folder that replaces --out whole (`staged_run_folder`: a failed or killed run leaves an
    earlier run's folder as it was, never half of each); `files`: extra torch files (name -> object: the token
    methods' fine-tuned encoder.pt)."""
    record = json_safe(metrics)
    columns = ["recording_id", "onset_s", "duration_s", "type", "probability", "counted"]
    with staged_run_folder(Path(cfg.out)) as stage:
        for name, payload in (files or {}).items():
            torch.save(payload, stage / name)
        (stage / "model.pkl").write_bytes(pickle.dumps(detector))
        pd.DataFrame(event_rows, columns=columns).to_csv(stage / "events.csv", index=False, float_format="%.3f")
        (stage / "metrics.json").write_text(json.dumps(record, indent=1) + "\n")
        (stage / "results.md").write_text(results_markdown(record))
        save_config(cfg, stage / "config.json", keep_previous=True)
