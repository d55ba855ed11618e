"""Inference on new nights (docs/evaluation.md §6): EDF (+ optional NSRR XML) -> hypnogram, events, sleep report.

    python downstream/predict.py --checkpoint RUN --edf NIGHT.edf [--xml NIGHT-nsrr.xml] --out DIR \
        [--events EVENT_RUN] [--hypopnea-rule 3a|4|all] [--apnea RUN] [--hypopnea RUN]
    python downstream/predict.py --checkpoint RUN --edf FOLDER | "GLOB*.edf" | LIST.txt --out DIR [...]

`--checkpoint` is a staging run (linear-probing or fine-tuning run directory, or its best.pt / last.pt);
`--events` an event model (a `downstream/event_detection/train.py` run, --method features): respiratory events
with onsets, durations and types, the AHI from them and the SpO2 indices (`downstream.night_respiratory`, whose
docstring states every rule); `--apnea` / `--hypopnea` are optional per-epoch runs of those tasks. The night goes
through the parser's exact processing in memory (`dataset.signal_processing.load_night`, every channel any model reads
in one pass); the WHOLE recording (floor(signal / 30 s) epochs) is predicted whether or not a scoring is given
(`downstream.night_inference`: each backbone encodes the night once for all the models using it, every model
predicts every epoch exactly once), and DIR receives (`downstream.night_report`):

- hypnogram.csv: one row per 30-s epoch: epoch, start_s (seconds from the EDF start), time (clock time of the
  epoch start, from the EDF header), stage (W/N1/N2/N3/REM), stage_code (0..4), p_W .. p_REM; with event
  runs p_<task> and <task> (0/1, argmax); with an XML scored_stage / scored_stage_code (-1 / "" unscored; epochs
  after the scored part are unscored).
- hypnogram.png: the predicted hypnogram (with the scored one when an XML is given), the events beneath it.
- events.csv: with --events, one row per event of the model: onset_s, duration_s, type (obstructive_apnea,
  central_apnea, mixed_apnea, hypopnea), probability, counted (under the model's hypopnea rule), in_sleep (onset
  in a predicted sleep epoch; counted and in sleep = in the AHI), time. Without it, one row per run of positive
  epochs of the --apnea / --hypopnea runs (epoch_events.csv beside the model's events when both are given):
  type, start_epoch, n_epochs, start_s, duration_s, time, in_sleep, n_events (ceil(n_epochs / 2)).
- report.json (strict JSON, NaN -> null) and report.md: total recording time, TST, sleep efficiency, sleep onset
  latency, latency to persistent sleep, REM latency, WASO, minutes and % per stage
  (`utils.sleep_stats.sleep_statistics` on the predicted hypnogram); `ahi` (`utils.ahi`): with --events the AHI
  from its counted events with onset in predicted sleep per hour of predicted sleep, overall, in REM and in NREM;
  without it, when both epoch runs are given, the runs of positive epochs times each run's `event_calibration`
  scale, read from the run's checkpoint metadata (`sleep.ahi_est`, `utils.ahi.epoch_run_ahi`); `oximetry`
  (--events): ODI, SpO2 mean / minimum / minutes below 90 % from the SpO2 signal; `airflow` / `effort`: minutes
  without signal (a cannula or belt off); `validation`: each model's `val` numbers; `reliability`: whether the
  AHI estimate can be trusted and why not (an UNRELIABLE estimate gets a banner in report.md, a `warning:` line on
  the console and no bold); channels the models wanted but the night lacks; `warnings` (a truncated EDF); with an
  XML, agreement with the scoring on its scored epochs (accuracy, kappa, confusion matrix; scored AHI under
  --hypopnea-rule vs estimated).
- the predicted stages and events in standard formats (`dataset.annotation_export`): predicted-nsrr.xml (NSRR
  XML), predicted-annotations.edf (EDF+ annotations), hypnogram-yasa.txt (YASA codes, one per epoch: 0 W, 1 N1,
  2 N2, 3 N3, 4 REM) and events.tsv (BIDS: onset, duration, trial_type); the events are the event model's typed
  events and desaturations when --events is given, else the epoch runs'.
- config.json: the options of the run.

Cohorts (`downstream.night_inputs`): `--edf` naming a folder (the parser's `discover`: every EDF below it, each
paired with its annotation file by the parser's rule), a glob pattern or a list file (one EDF path per line) writes
DIR/<night>/ (the files above) per night and DIR/summary.csv + summary.md (night, subject, status, reason, TST,
sleep efficiency, AHI estimated (its source, reliable or not) / scored, severity, ODI). A night that cannot be read
is a `failed` row with its reason and the cohort goes on; the exit code is then 1.

DIR is written whole or not at all (built in a sibling folder, then swapped in): an earlier report in DIR is
replaced entirely and a failed run leaves it unchanged. DIR must be new, empty, or an earlier predict.py output.

A SynthSleepNet model missing some of its channels predicts from the others (dropped from the fusion, not
zero-filled) and the report names them. Unreadable or malformed inputs end with one `error: FILE: ...` line, exit
code 2; a fault not foreseen while a night is predicted or written with one `error: EDF: ...` line, exit code 1.
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from dataset.channel_map import load_channel_map
from dataset.constants import CHANNEL_BY_NAME, EPOCH_S, STAGE_NAMES, STAGE_UNSCORED
from dataset.edf_reader import EdfError
from dataset.labels import AHI_COLUMN_OF_RULE
from dataset.nsrr_xml import XmlError
from dataset.scored_events import DEFAULT_HYPOPNEA_RULE, HYPOPNEA_RULES
from dataset.signal_processing import ProcessingConfig, SkipRecording, load_night
from downstream.night_inference import (  # noqa: F401 - the inference API, re-exported for callers of predict.py
    EVENT_TASKS,
    InputError,
    NightWindows,
    channel_report,
    clock_times,
    clock_times_at,
    load_runs,
    night_processing,
    one_line,
    predict_all,
    predict_task,
    recording_start,
    run_validation,
    scored_labels,
    share_encoders,
)
from downstream.night_inputs import NightInput, is_edf, night_inputs
from downstream.night_report import (
    SUMMARY_COLUMNS,
    _fmt,
    _fmt_index,
    check_out,
    event_rows,
    model_event_table,
    night_warnings,
    strict,
    summary_markdown,
    summary_row,
    write_outputs,
)
from downstream.night_respiratory import (
    CLINICAL_SLEEP_MIN,
    MIN_SLEEP_MIN,
    EventRun,
    assess_reliability,
    detect_night_events,
    effort_loss,
    load_event_run,
    night_spo2,
    oximetry_summary,
    persistent_sleep_latency,
    withheld,
    withhold_reason,
    without_lost_flow,
    without_warning,
)
from downstream.runs import DownstreamModel
from utils.ahi import (
    MAX_EVENT_EPOCHS,
    SEVERITY_UNKNOWN,
    count_events,
    epoch_run_ahi,
    estimate_ahi,
    event_summary,
    severity_class,
    severity_name,
)
from utils.checkpoint import staged_folder
from utils.config import ArgumentParser, UsageError, parse_config, path_arg, positive_int, save_config
from utils.distributed import resolve_device
from utils.metrics import binary_class_names, classification_metrics, event_runs
from utils.sleep_stats import SLEEP_STAGES, sleep_statistics

# ---------------------------------------------------------------------------------------- options
DEFAULT_PROCESSING = ProcessingConfig()  # the parser's defaults, no user channel map


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="predict.py",
        description=__doc__.split("\n\n")[0],
        epilog="Runs: a linear-probing or fine-tuning run directory (best.pt, else last.pt) or a checkpoint file. "
        "--checkpoint must be a sleep_stage run; --events (an event_detection run) adds typed events, the AHI from "
        "them, ODI and SpO2; --apnea and --hypopnea add per-epoch events (both: an AHI estimate flagged unreliable). "
        "Exit codes: 0 ok, 1 some night of a cohort failed (see summary.csv; none predicted: nothing written), 2 "
        "bad input (unreadable EDF, malformed XML, bad run, no usable channel, unusable --out).",
    )
    parser.add_argument(
        "--config",
        type=path_arg,
        default=None,
        help="JSON or YAML file of these options (keys as in the config.json it writes); explicit flags win",
    )
    parser.add_argument("--checkpoint", type=path_arg, default=None, help="sleep-staging run (required)")
    parser.add_argument("--apnea", type=path_arg, default=None, help="apnea run (optional)")
    parser.add_argument("--hypopnea", type=path_arg, default=None, help="hypopnea run (optional)")
    parser.add_argument(
        "--events",
        type=path_arg,
        default=None,
        help="event_detection run (downstream/event_detection/train.py, --method features): typed "
        "respiratory events with onsets and durations, the AHI from them (overall, REM, NREM), "
        "ODI and SpO2 from the SpO2 signal",
    )
    parser.add_argument(
        "--hypopnea-rule",
        choices=HYPOPNEA_RULES,
        default=DEFAULT_HYPOPNEA_RULE,
        help="hypopnea rule of the SCORED AHI the estimate is compared with: 3a (>= 3 %% desaturation "
        "or arousal), 4 (>= 4 %% desaturation), all",
    )
    parser.add_argument(
        "--edf",
        type=path_arg,
        default=None,
        help="the night's EDF file, or a cohort: a folder (every EDF below it), a glob pattern "
        "(quoted) or a list file (one EDF path per line); required",
    )
    parser.add_argument(
        "--xml",
        type=path_arg,
        default=None,
        help="optional NSRR XML of a single EDF: adds agreement with its scoring (a cohort's EDFs are "
        "paired with their annotation files as the parser pairs them)",
    )
    parser.add_argument(
        "--out",
        type=path_arg,
        default=None,
        help="output folder (required): new, empty, or an earlier predict.py output, which is replaced whole",
    )
    parser.add_argument(
        "--channel-map",
        type=path_arg,
        default=None,
        metavar="MAP",
        help="YAML or JSON channel map (canonical name -> EDF label, 'A - B' derivation or a list of "
        "candidates), tried before the built-in alias tables, as in dataset/data_parser.py",
    )
    parser.add_argument("--batch-size", type=positive_int, default=64, help="epochs per forward pass")
    parser.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, cuda:1, ...")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    return parser


def agreement(
    stages: np.ndarray,
    stage_probabilities: np.ndarray,
    labels: pd.DataFrame,
    events: Mapping[str, np.ndarray],
    event_probabilities: Mapping[str, np.ndarray],
    ahi: Mapping[str, Any] | None,
    info: Mapping[str, Any],
    rule: str,
) -> dict[str, Any]:
    """Predicted vs scored, over the epochs the scoring covers (`info["scored_part_epochs"]`, the first m): staging
    metrics on scored epochs; the scored and predicted sleep statistics of those m epochs; per-epoch event
    metrics; the scored AHI under the hypopnea `rule` vs the estimated one of the same m epochs (`ahi`, None when
    not estimated)."""
    scored = labels["stage"].to_numpy().astype(np.int64)  # (n_epochs,) -1 = unscored
    part = int(info["scored_part_epochs"])
    out: dict[str, Any] = {"n_scored_epochs": int(np.sum(scored != STAGE_UNSCORED)), "scored_part_epochs": part}
    if out["n_scored_epochs"]:
        out["sleep_stage"] = classification_metrics(scored, stages, len(STAGE_NAMES), stage_probabilities)
        out["scored_sleep"] = sleep_statistics(scored[:part])
        out["predicted_sleep"] = sleep_statistics(stages[:part])
    for task, positive in events.items():
        truth = labels[task].to_numpy().astype(np.int64)
        out[task] = classification_metrics(truth, positive, 2, event_probabilities[task], binary_class_names(task))
    ahi_scored = float(info.get(AHI_COLUMN_OF_RULE[rule], math.nan))
    estimated = ahi["ahi"] if ahi else None
    out["ahi"] = {
        "scored": ahi_scored,
        "hypopnea_rule": rule,
        "estimated": estimated,
        "scored_severity": severity_name(ahi_scored),
        "estimated_severity": ahi["severity_name"] if ahi else None,
        "severity_agrees": (severity_class(ahi_scored) == ahi["severity"])
        if ahi and not math.isnan(ahi_scored) and ahi["severity"] != SEVERITY_UNKNOWN
        else None,
    }
    return out


def predict_night(
    edf_path: str | Path,
    runs: Mapping[str, DownstreamModel],
    xml_path: str | Path | None = None,
    device: torch.device | str = "cpu",
    batch_size: int = 64,
    progress: bool = False,
    identities: Mapping[str, str] | None = None,
    processing: ProcessingConfig = DEFAULT_PROCESSING,
    event_run: EventRun | None = None,
    hypopnea_rule: str = DEFAULT_HYPOPNEA_RULE,
    scoring_optional: bool = False,
) -> dict[str, Any]:
    """Process and predict one night in memory. Returns {"hypnogram": DataFrame, "events": DataFrame | None,
    "report": dict, "stages": (n,) int, "scored": (n,) int | None, "event_epochs", "typed_events", "start"}.
    Raises InputError for bad inputs.

    The whole recording is predicted (floor(signal / 30 s) epochs) whether or not a scoring is given; agreement
    with the scoring counts the scored epochs only. `identities`: `share_encoders(runs)`, computed once per
    cohort (default: here). `processing`: how the night is processed (`night_processing`: as the models'
    cohorts were, with a user channel map tried before the built-in alias tables as the parser does). `event_run`: the event model (`--events`); its
    respiratory channels are read in the same single pass over the EDF. `hypopnea_rule`: of the scored AHI.
    `scoring_optional`: a scoring that cannot be read (found beside the night in a cohort, not named by the user)
    is a warning, and the night is predicted without agreement, instead of an InputError."""
    edf_path, device = Path(edf_path), torch.device(device)
    xml_path = Path(xml_path) if xml_path is not None else None
    for path in (edf_path, xml_path):
        if path is not None and not path.is_file():
            raise InputError(f"{path}: no such file")
    wanted = [
        ch
        for ch in CHANNEL_BY_NAME
        if any(ch in run.channels for run in runs.values()) or (event_run is not None and ch in event_run.channels)
    ]
    try:
        epochs, _, info = load_night(edf_path, None, channels=wanted, config=processing)
    except (EdfError, XmlError, SkipRecording, ValueError) as err:
        raise InputError(one_line(err)) from None
    labels, unusable_scoring = None, None
    if xml_path is not None:
        try:
            labels, scoring = scored_labels(xml_path, edf_path, int(info["n_epochs"]), float(info["signal_s"]))
            info = {**info, **scoring}
        except (EdfError, XmlError, SkipRecording, ValueError) as err:
            if not scoring_optional:  # a scoring the user named: its fault is the error
                raise InputError(one_line(err)) from None
            unusable_scoring = one_line(err)  # a scoring found beside the night: predicted without agreement
            xml_path = None
    channels = channel_report(runs, epochs, info, edf_path, event_run, processing.channel_map)
    recording, n_epochs = edf_path.stem, int(info["n_epochs"])
    times = clock_times(edf_path, n_epochs)

    probabilities = predict_all(runs, epochs, recording, device, batch_size, progress, identities)  # task -> (n, C)
    stages = probabilities["sleep_stage"].argmax(axis=1).astype(np.int64)  # (n_epochs,) 0..4
    sleep = np.isin(stages, SLEEP_STAGES)  # (n_epochs,) bool, predicted sleep
    events = {task: probabilities[task].argmax(axis=1).astype(np.int64) for task in EVENT_TASKS if task in runs}
    event_p = {task: probabilities[task][:, 1] for task in events}  # (n_epochs,) positive-class probability
    both = len(events) == len(EVENT_TASKS)
    epoch_ahi = both and event_run is None  # the epoch-run estimate is the AHI only without an event model
    scales = {task: runs[task].event_scale for task in events}  # scored events per counted event (val labels)
    stats = sleep_statistics(stages, EPOCH_S)
    if epoch_ahi:
        stats.update(
            epoch_run_ahi(
                sleep,
                events["apnea"],
                events["hypopnea"],
                EPOCH_S,
                MAX_EVENT_EPOCHS,
                (scales["apnea"], scales["hypopnea"]),
            )
        )
    stats["persistent_sleep_latency_min"] = persistent_sleep_latency(stages)

    table = pd.DataFrame(
        {
            "epoch": np.arange(n_epochs),
            "start_s": np.arange(n_epochs) * float(EPOCH_S),
            "time": times,
            "stage": [STAGE_NAMES[s] for s in stages],
            "stage_code": stages,
        }
    )
    for k, name in enumerate(STAGE_NAMES):
        table[f"p_{name}"] = probabilities["sleep_stage"][:, k]
    for task, positive in events.items():
        table[f"p_{task}"], table[task] = event_p[task], positive
    scored = None
    if labels is not None:
        scored = labels["stage"].to_numpy().astype(np.int64)
        table["scored_stage"] = [STAGE_NAMES[s] if s != STAGE_UNSCORED else "" for s in scored]
        table["scored_stage_code"] = scored

    epoch_table, event_summary_ = None, {}
    if events:
        rows = [row for task, positive in events.items() for row in event_rows(task, positive, sleep, times)]
        epoch_table = pd.DataFrame(
            rows, columns=["type", "start_epoch", "n_epochs", "start_s", "duration_s", "time", "in_sleep", "n_events"]
        )
        zeros = np.zeros(n_epochs, dtype=np.int64)
        for task, positive in events.items():
            alone = (positive, zeros) if task == "apnea" else (zeros, positive)
            event_summary_[task] = {
                "n_runs": len(event_runs(positive)),
                "n_events_in_sleep": count_events(positive, sleep, MAX_EVENT_EPOCHS),
                "event_scale": scales[task],
                "index_per_h": estimate_ahi(*alone, sleep, EPOCH_S, MAX_EVENT_EPOCHS, (scales[task], scales[task])),
            }
    ahi, model_table, typed, oximetry, flow, effort = None, None, [], None, None, None
    missing_respiratory = channels["models"]["events"]["missing"] if event_run is not None else []
    if event_run is not None:
        blind = withhold_reason(missing_respiratory, None) is not None  # lacking airflow: nothing is detected
        # no apnea or hypopnea is scored without flow: none is listed, exported or counted (the AHI is withheld)
        found, counted = detect_night_events(event_run, epochs, info) if not blind else ([], [])
        if "airflow" in epochs and not blind:  # a cannula off for part of the night: flagged, not silent
            found, counted, flow = without_lost_flow(found, counted, epochs["airflow"], stages)
        effort = effort_loss(epochs, stages) if not blind else None  # a belt off: its effort input is missing
        reason = withhold_reason(missing_respiratory, flow)  # no AHI: none listed either (flow only outside sleep)
        found, counted = ([], []) if reason else (found, counted)

        def summary(upto: int | None = None) -> dict[str, Any]:  # the AHI of the first `upto` epochs
            estimate = event_summary(found, counted, stages[:upto], event_run.hypopnea_rule)
            return withheld(estimate, reason) if reason else estimate

        ahi = summary()
        model_table = model_event_table(found, counted, sleep, clock_times_at(edf_path, [e.onset_s for e in found]))
        typed = [(e.type, e.onset_s, e.duration_s) for e in found]
        spo2 = night_spo2(epochs, info)
        if spo2 is not None:
            oximetry, desats = oximetry_summary(spo2, stages)
            typed += [(d.type, d.onset_s, d.duration_s) for d in desats]
    elif epoch_ahi:
        ahi = {
            "source": "epoch runs",
            "hypopnea_rule": DEFAULT_HYPOPNEA_RULE,  # the rule of the scored AHI each run's calibration estimates
            "ahi": stats["ahi_est"],
            "severity": stats["ahi_severity"],
            "severity_name": stats["ahi_severity_name"],
            "ahi_uncalibrated": stats["ahi_est_uncalibrated"],
        }
    scored_ahi = ahi  # the estimate the scored AHI is compared with: over the epochs the scoring covers
    if ahi is not None and labels is not None and info["scored_part_epochs"] < n_epochs:
        part = int(info["scored_part_epochs"])
        if event_run is not None:
            scored_ahi = summary(part)
        else:
            within = epoch_run_ahi(
                sleep[:part],
                events["apnea"][:part],
                events["hypopnea"][:part],
                EPOCH_S,
                MAX_EVENT_EPOCHS,
                (scales["apnea"], scales["hypopnea"]),
            )
            scored_ahi = {"ahi": within["ahi_est"]} | {k: within[f"ahi_{k}"] for k in ("severity", "severity_name")}
    validation = {task: run_validation(run) for task, run in runs.items()}
    if event_run is not None:
        validation["events"] = event_run.validation
    reliability = assess_reliability(
        ahi["source"] if ahi else None,
        validation["sleep_stage"],
        event_run.validation if event_run is not None else None,
        missing_respiratory,
        stats["tst_min"],
        oximetry,
        channels["models"]["sleep_stage"]["missing"],
        flow,
        effort,
        {ch: info.get("flat_epochs", {}).get(ch, 0) / n_epochs for ch in channels["models"]["sleep_stage"]["used"]},
    )
    warnings_ = night_warnings(info, unusable_scoring, channels["models"]["sleep_stage"], reliability)
    warnings_ += [s["warning"] for s in [flow, *(effort or {}).values()] if s and s["warning"]]
    notes = []
    tail_s = float(info.get("signal_s") or 0.0) - n_epochs * float(EPOCH_S)
    if tail_s > 1e-6 and not info.get("truncated"):
        notes.append(
            f"the last {tail_s:g} s of the recording, less than a {EPOCH_S}-s epoch, are not predicted (nor in the "
            "recording time)"
        )
    if ahi is not None and not ahi.get("withheld") and MIN_SLEEP_MIN <= stats["tst_min"] < CLINICAL_SLEEP_MIN:
        notes.append(
            f"the AHI rests on {_fmt(stats['tst_min'])} min of predicted sleep; clinical criteria (AASM split-night, "
            f"Medicare) ask for at least {CLINICAL_SLEEP_MIN:g} min"
        )
    if channels["missing"]:
        notes.append(f"missing channels {', '.join(channels['missing'])}: predicted without them")
    if n_epochs and not times[0]:
        notes.append("the recording's start time could not be read: the clock times are left blank")
    if labels is not None and info["scored_part_epochs"] < n_epochs:
        notes.append(
            f"the scoring covers the first {info['scored_part_epochs']} of the {n_epochs} predicted epochs; "
            "agreement counts the scored epochs only"
        )
    if events and not both and event_run is None:
        notes.append(
            "the AHI needs both --apnea and --hypopnea runs (or --events); only the given type's index is reported"
        )
    if ahi is not None and labels is not None and ahi["hypopnea_rule"] != hypopnea_rule:
        counts = "the event model counts" if event_run is not None else "the epoch runs' AHI estimates"
        notes.append(f"{counts} hypopneas under rule {ahi['hypopnea_rule']}; the scored AHI uses rule {hypopnea_rule}")

    report = {
        "recording": recording,
        "edf": str(edf_path.resolve()),
        "xml": str(xml_path.resolve()) if xml_path else None,
        "start_time": times[0] or None,
        "n_epochs": n_epochs,
        "epoch_s": float(EPOCH_S),
        "hypopnea_rule": hypopnea_rule,
        "channels": channels,
        "sleep": stats,
        "ahi": ahi,
        "oximetry": oximetry,
        "airflow": without_warning(flow),
        "effort": {belt: without_warning(loss) for belt, loss in effort.items()} if effort else None,
        "reliability": reliability,
        "validation": validation,
        "events": event_summary_ or None,
        "warnings": warnings_,
        "notes": notes,
        "processing": {
            "signal_s": info.get("signal_s"),
            "kept_s": info.get("kept_s"),
            "truncated": info.get("truncated"),
            "warnings": info.get("warnings") or "",
            "bands": {
                ch: list(band) if band else None for ch, band in processing.as_dict()["bands"].items() if ch in wanted
            },
        },
        "agreement": (
            agreement(stages, probabilities["sleep_stage"], labels, events, event_p, scored_ahi, info, hypopnea_rule)
            if labels is not None
            else None
        ),
    }
    return {
        "hypnogram": table,
        "events": model_table if event_run is not None else epoch_table,
        "epoch_events": epoch_table if event_run is not None else None,
        "report": report,
        "stages": stages,
        "scored": scored,
        "event_epochs": events,
        "typed_events": typed if event_run is not None else None,
        "start": recording_start(edf_path),
    }


def predict_cohort(
    nights: Sequence[NightInput],
    runs: Mapping[str, DownstreamModel],
    stage: Path,
    device: torch.device,
    batch_size: int = 64,
    progress: bool = False,
    processing: ProcessingConfig = DEFAULT_PROCESSING,
    event_run: EventRun | None = None,
    hypopnea_rule: str = DEFAULT_HYPOPNEA_RULE,
) -> list[dict[str, Any]]:
    """Predict every night into `stage/<night>/`; a night that cannot be read or predicted is a `failed` row with
    its reason, and the cohort goes on. Returns the summary rows (also written as summary.csv and summary.md)."""
    identities = share_encoders(runs)  # each backbone encodes a night once, for every task model using it
    rows = []
    for night in tqdm(nights, desc="nights", unit="night", disable=not progress):
        if night.edf is None:
            rows.append(summary_row(night, None, "skipped", night.problem))
            continue
        if night.problem:
            rows.append(summary_row(night, None, "failed", night.problem))
            print(f"failed: {night.problem}", flush=True)
            continue
        try:
            options = dict(processing=processing, event_run=event_run, hypopnea_rule=hypopnea_rule)
            result = predict_night(
                night.edf, runs, night.xml, device, batch_size, False, identities, **options, scoring_optional=True
            )
            write_outputs(stage / night.recording, result)
        except Exception as err:  # noqa: BLE001 - one night's unexpected failure must not stop the cohort
            shutil.rmtree(stage / night.recording, ignore_errors=True)  # a failed night leaves no part of a report
            reason = str(err) if isinstance(err, InputError) else f"{night.edf}: {type(err).__name__}: {one_line(err)}"
            rows.append(summary_row(night, None, "failed", reason))
            print(f"failed: {reason}", flush=True)
            continue
        report = result["report"]
        notes = "; ".join(
            report["warnings"]
            + ([f"missing {', '.join(report['channels']['missing'])}"] if report["channels"]["missing"] else [])
        )
        rows.append(summary_row(night, report, "ok", notes))
    table = pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))
    table.to_csv(stage / "summary.csv", index=False, float_format="%.6g")
    (stage / "summary.md").write_text(summary_markdown(strict(rows)))
    return rows


# ---------------------------------------------------------------------------------------- command line
def report_night(
    args: argparse.Namespace,
    runs: Mapping[str, DownstreamModel],
    device: torch.device,
    processing: ProcessingConfig = DEFAULT_PROCESSING,
    event_run: EventRun | None = None,
) -> int:
    """One EDF (`--edf FILE`): the report set directly in `--out`."""
    try:
        result = predict_night(
            args.edf,
            runs,
            args.xml,
            device,
            args.batch_size,
            args.progress,
            processing=processing,
            event_run=event_run,
            hypopnea_rule=args.hypopnea_rule,
        )
    except InputError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return 2
    except Exception as err:  # noqa: BLE001 - a fault not foreseen: one line naming the night, as in a cohort
        print(f"error: {args.edf}: {type(err).__name__}: {one_line(err)}", file=sys.stderr, flush=True)
        return 1
    report = result["report"]
    if report["channels"]["missing"]:
        print(
            f"warning: {args.edf}: missing channel(s) {', '.join(report['channels']['missing'])} "
            f"({'; '.join(f'{ch}: {why}' for ch, why in report['channels']['why_missing'].items())}); predicted with "
            f"{', '.join(report['channels']['present'])}",
            flush=True,
        )
    for warning in report["warnings"]:
        print(f"warning: {args.edf}: {warning}", flush=True)
    for ch in report["channels"].get("user_map_unmatched") or ():
        print(f"warning: {args.edf}: --channel-map {ch} matches no label of this night; built-in labels used")
    try:
        with staged_folder(Path(args.out)) as stage:
            paths = write_outputs(stage, result)
            save_config(args, stage / "config.json")  # the exact options this prediction ran with
    except OSError as err:
        print(f"error: --out {args.out}: cannot write the report ({one_line(err)})", file=sys.stderr, flush=True)
        return 2
    except Exception as err:  # noqa: BLE001 - the staged folder is dropped: --out stays as it was
        print(f"error: {args.edf}: {type(err).__name__}: {one_line(err)}", file=sys.stderr, flush=True)
        return 1
    paths = {key: Path(args.out) / path.name for key, path in paths.items()}
    s, estimate = report["sleep"], report["ahi"]
    ahi = ""
    if estimate:
        flag = ", UNRELIABLE" if report["reliability"]["reliable"] is False else ""
        value = _fmt_index(estimate["ahi"])
        value += "" if value == "n/a" else "/h"
        ahi = f", AHI {value} ({estimate['severity_name']}, from {estimate['source']}{flag})"
    print(
        f"{report['recording']}: {report['n_epochs']} epochs, TST {_fmt(s['tst_min'])} min, sleep efficiency "
        f"{_fmt(s['sleep_efficiency_pct'])} %{ahi} -> {paths['report_md']}",
        flush=True,
    )
    return 0


class NothingPredicted(Exception):
    """No night of a cohort could be predicted: the run writes nothing."""


def report_cohort(
    args: argparse.Namespace,
    nights: Sequence[NightInput],
    runs: Mapping[str, DownstreamModel],
    device: torch.device,
    processing: ProcessingConfig = DEFAULT_PROCESSING,
    event_run: EventRun | None = None,
) -> int:
    """A folder, glob or list of EDFs: `--out/<night>/` per night plus summary.csv / summary.md; exit 1 when a
    night failed."""
    try:
        with staged_folder(Path(args.out)) as stage:
            rows = predict_cohort(
                nights, runs, stage, device, args.batch_size, args.progress, processing, event_run, args.hypopnea_rule
            )
            if not any(r["status"] == "ok" for r in rows):  # a failed run: what an earlier run left stays
                raise NothingPredicted
            save_config(args, stage / "config.json")
    except OSError as err:
        print(f"error: --out {args.out}: cannot write the reports ({one_line(err)})", file=sys.stderr, flush=True)
        return 2
    except NothingPredicted:
        print(
            f"error: --edf {args.edf}: no night could be predicted; --out {args.out} left as it was",
            file=sys.stderr,
            flush=True,
        )
        return 1
    failed = sum(r["status"] == "failed" for r in rows)
    ok = sum(r["status"] == "ok" for r in rows)
    print(f"{ok} of {len(rows)} night(s) predicted, {failed} failed -> {Path(args.out) / 'summary.md'}", flush=True)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parse_config(parser, argv, required=("checkpoint", "edf", "out"))
    args = args.replace(edf=Path(args.edf), out=Path(args.out))
    try:
        return run(args)
    except KeyboardInterrupt:
        print(f"interrupted: nothing of this run was written; {args.out} is as it was", file=sys.stderr, flush=True)
        return 130


def run(args: Any) -> int:
    """`main` once the options are parsed: the inputs checked (one `error:` line, exit 2), then the night or cohort."""
    try:
        check_out(args.out)
        single = args.edf.is_file() and is_edf(args.edf)
        nights = None if single else night_inputs(args.edf, args.out)
        if not single and args.xml is not None:
            raise InputError(
                f"--xml {args.xml}: one annotation file for several nights; with a folder, glob or list "
                "each EDF is paired with its own"
            )
        try:
            channel_map = load_channel_map(args.channel_map) if args.channel_map is not None else ()
        except (OSError, ValueError) as err:
            raise InputError(f"--channel-map {args.channel_map}: {one_line(err)}") from None
        try:
            device = resolve_device(args.device)
        except UsageError as err:
            raise InputError(str(err)) from None
        runs = load_runs({"sleep_stage": args.checkpoint, "apnea": args.apnea, "hypopnea": args.hypopnea}, device)
        event_run = load_event_run(args.events) if args.events is not None else None
        processing = night_processing(runs, event_run, channel_map)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return 2
    except OSError as err:
        print(f"error: --edf {args.edf}: cannot read ({one_line(err)})", file=sys.stderr, flush=True)
        return 2
    if single:
        return report_night(args, runs, device, processing, event_run)
    return report_cohort(args, nights, runs, device, processing, event_run)


if __name__ == "__main__":
    raise SystemExit(main())
