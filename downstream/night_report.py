"""Writing the report set of one predicted night (`downstream/predict.py`), and the cohort summary: report.json,
report.md, hypnogram.csv / .png, events.csv (`model_event_table`: the event model's events; `event_rows`: runs
of positive epochs) and the standard annotation files, into a folder that appears whole or not at all
(`utils.checkpoint.staged_folder`).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dataset import annotation_export
from dataset.constants import EPOCH_S, STAGE_NAMES
from dataset.scored_events import Event
from downstream.night_inference import EVENT_TASKS, InputError
from utils.ahi import MAX_EVENT_EPOCHS
from utils.checkpoint import replaceable
from utils.events import sleep_epochs_of
from utils.metrics import event_runs
from utils.plots import hypnogram_png

REPORT_MARKERS = ("report.json", "summary.csv")  # a folder holding one of these was written by predict.py
PREDICTED_NSRR, PREDICTED_EDF = "predicted-nsrr.xml", "predicted-annotations.edf"  # beside a night's report.json
# every file predict.py writes: a night's report set (`write_outputs`), a cohort's summary, the run's config
REPORT_FILES = frozenset(
    {
        "report.json",
        "report.md",
        "config.json",
        "hypnogram.csv",
        "hypnogram.png",
        "hypnogram-yasa.txt",
        "events.csv",
        "epoch_events.csv",
        "events.tsv",
        PREDICTED_NSRR,
        PREDICTED_EDF,
        "summary.csv",
        "summary.md",
    }
)


def strict(value: Any) -> Any:
    """JSON-ready copy: NaN / inf -> None, numpy scalars and arrays -> Python."""
    if isinstance(value, Mapping):
        return {str(k): strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [strict(v) for v in value]
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer, int)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    return value


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _fmt_index(value: Any) -> str:
    """An index per hour (AHI, ODI) to one decimal, truncated rather than rounded: the value shown never rounds
    up into the next severity class (14.96 events/h, "mild", is shown 14.9, not 15.0). The 1e-9 absorbs binary
    representation only (2.3 x 10 = 22.999...); `utils.ahi.events_per_hour` gives boundary values exactly."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{math.floor(float(value) * 10 + 1e-9) / 10:.1f}"


def oximetry_note(oximetry: Mapping[str, Any]) -> list[str]:
    """report.md's lines under the oximetry table when valid SpO2 covers too little of predicted sleep."""
    share = oximetry.get("spo2_valid_sleep_share")
    if oximetry.get("reliable") is not False or share is None or not math.isfinite(share):
        return []
    return [
        f"**UNRELIABLE**: valid SpO2 over {100 * share:.1f} % of predicted sleep (an oximeter off or dropping out): "
        "the figures above rest on that part only.",
        "",
    ]


def report_markdown(report: Mapping[str, Any]) -> str:
    """report.md: the sleep report as tables (values from report.json)."""
    s = report["sleep"]
    lines = [
        f"# Sleep report: {report['recording']}",
        "",
        f"EDF `{report['edf']}`"
        + (f", scoring `{report['xml']}`" if report["xml"] else "")
        + f"; start {report['start_time'] or 'unknown'}; {report['n_epochs']} epochs of {report['epoch_s']:g} s.",
        "",
    ]
    reliability = report.get("reliability") or {}
    unreliable = reliability.get("reliable") is False
    if unreliable:
        lines += ["> **UNRELIABLE AHI ESTIMATE: not for diagnosis.** " + "; ".join(reliability["reasons"]) + ".", ""]
    lines += [
        f"**Warning: {warning}.**\n" for warning in report.get("warnings") or () if not warning.startswith("UNRELIABLE")
    ]
    for task, model in report["channels"]["models"].items():
        lines.append(
            f"- {task}: `{model['checkpoint']}` ({model['kind']}), channels used: {', '.join(model['used'])}"
            + (f"; **missing: {', '.join(model['missing'])}**" if model["missing"] else "")
        )
    for ch, why in report["channels"]["why_missing"].items():
        lines.append(f"- missing channel {ch}: {why}")
    for ch in report["channels"].get("user_map_unmatched") or ():
        lines.append(f"- **--channel-map {ch}: no label of this night matches it**; the built-in labels were used")
    sources = report["channels"].get("sources") or {}
    if sources:
        mapped = set(report["channels"].get("user_map") or ())
        lines.append(
            "- EDF signals used: "
            + "; ".join(
                f"{ch} <- `{label or '?'}`" + (" (--channel-map)" if ch in mapped else "")
                for ch, label in sources.items()
            )
        )
    lines += ["", "## Sleep statistics (predicted hypnogram)", "", "| measure | value |", "|---|---|"]
    for key, label in (
        ("trt_min", "total recording time (min)"),
        ("tst_min", "total sleep time (min)"),
        ("sleep_efficiency_pct", "sleep efficiency (%)"),
        ("sol_min", "sleep onset latency (min)"),
        ("rem_latency_min", "REM latency from sleep onset (min)"),
        ("waso_min", "WASO (min)"),
        ("persistent_sleep_latency_min", "latency to persistent sleep (min; first of 20 sleep epochs in a row)"),
        ("n_awakenings", "awakenings"),
        ("unscored_min", "unscored (min)"),
    ):
        lines.append(f"| {label} | {_fmt(s.get(key))} |")
    lines += ["", "| stage | minutes | % of TST |", "|---|---|---|"]
    for name in STAGE_NAMES:
        pct = s.get(f"{name.lower()}_pct")
        lines.append(f"| {name} | {_fmt(s[f'{name.lower()}_min'])} | {_fmt(pct) if name != 'W' else '-'} |")
    if report["events"]:
        lines += [
            "",
            "## Respiratory events (predicted)",
            "",
            "| type | runs | events in sleep (counted) | scale | index (/h sleep) |",
            "|---|---|---|---|---|",
        ]
        for task, e in report["events"].items():
            lines.append(
                f"| {task} | {e['n_runs']} | {e['n_events_in_sleep']} | {_fmt(e['event_scale'], 2)} | "
                f"{_fmt_index(e['index_per_h'])} |"
            )
        if "ahi_est" in s:
            lines += [
                "",
                f"The AHI from epoch runs (below; uncalibrated count {_fmt_index(s['ahi_est_uncalibrated'])} "
                "events/h) counts runs of positive 30-s epochs times a scale per event type (the scored events "
                "per event counted from the scored epoch labels of the runs' `val` nights): epoch labels miss "
                "short events and merge neighbouring ones, so it is no event count.",
            ]
    lines += respiratory_markdown(report, unreliable)
    agree = report["agreement"]
    if agree:
        partial = agree.get("scored_part_epochs", report["n_epochs"]) < report["n_epochs"]
        lines += ["", "## Agreement with the scoring", ""]
        staging = agree.get("sleep_stage")
        if staging:
            lines.append(
                f"Staging on {staging['n']} scored epochs: accuracy {_fmt(staging['accuracy'], 3)}, "
                f"kappa {_fmt(staging['kappa'], 3)}, macro-F1 {_fmt(staging['macro_f1'], 3)}."
            )
            lines += [
                "",
                "| scored \\ predicted | " + " | ".join(STAGE_NAMES) + " |",
                "|---" * (len(STAGE_NAMES) + 1) + "|",
            ]
            for name, row in zip(STAGE_NAMES, staging["confusion_matrix"]):
                lines.append(f"| {name} | " + " | ".join(str(v) for v in row) + " |")
            lines += [
                "",
                f"Scored TST {_fmt(agree['scored_sleep']['tst_min'])} min vs predicted "
                f"{_fmt(agree.get('predicted_sleep', s)['tst_min'])} min"
                + (f" (the {agree['scored_part_epochs']} scored epochs)." if partial else "."),
            ]
        for task in EVENT_TASKS:
            if task in agree:
                lines.append(
                    f"{task} epochs: accuracy {_fmt(agree[task]['accuracy'], 3)}, "
                    f"kappa {_fmt(agree[task]['kappa'], 3)}."
                )
        ahi = agree["ahi"]
        lines.append(
            f"AHI: scored {_fmt_index(ahi['scored'])} ({ahi['scored_severity']}), estimated "
            f"{_fmt_index(ahi['estimated'])} ({ahi['estimated_severity'] or 'not estimated'})"
            + (f", both over the {agree['scored_part_epochs']} scored epochs." if partial else ".")
        )
    if report["notes"]:
        lines += ["", "## Notes", ""] + [f"- {note}" for note in report["notes"]]
    return "\n".join(lines) + "\n"


def respiratory_markdown(report: Mapping[str, Any], unreliable: bool) -> list[str]:
    """The event model's AHI, the SpO2 indices and the models' validation numbers (report.md sections)."""
    lines, ahi, oximetry = [], report.get("ahi"), report.get("oximetry")
    if ahi and ahi["source"] == "event model":
        lines += [
            "",
            "## Respiratory events (event model)",
            "",
            f"Events with onsets and durations from the event model; a hypopnea counts under rule "
            f"{ahi['hypopnea_rule']}; the AHI counts events with onset in predicted sleep per hour of predicted "
            "sleep.",
            "",
            "| type | events | counted | counted in sleep |",
            "|---|---|---|---|",
        ]
        for kind, counts in ahi["by_type"].items():
            lines.append(f"| {kind} | {counts['n']} | {counts['n_counted']} | {counts['n_counted_in_sleep']} |")
        lines += ["", "| index (/h) | value |", "|---|---|"]
        for key, label in (
            ("ahi", "AHI"),
            ("ahi_rem", "AHI in REM"),
            ("ahi_nrem", "AHI in NREM"),
            ("apnea_index", "apnea index"),
            ("hypopnea_index", "hypopnea index"),
        ):
            lines.append(f"| {label} | {_fmt_index(ahi[key])} |")
    if ahi and ahi.get("withheld"):
        lines += ["", f"Estimated AHI ({ahi['source']}): not estimated: {ahi['withheld']}."]
    elif ahi:
        index = _fmt_index(ahi["ahi"])
        value = f"{index}{'' if index == 'n/a' else ' events/h'} ({ahi['severity_name']})"
        lines += [
            "",
            f"Estimated AHI ({ahi['source']}): "
            + (f"{value}, UNRELIABLE (see the warning at the top)." if unreliable else f"**{value}**."),
        ]
    if ahi or oximetry:
        lines += [
            "",
            "Indices per hour are shown truncated to one decimal, not rounded, so that a value never shows in the "
            "next severity class (report.json holds them whole).",
        ]
    if oximetry:
        lines += [
            "",
            "## Oxygen saturation (SpO2 signal)",
            "",
            "| measure | value |",
            "|---|---|",
            f"| ODI (>= 3 % desaturations per hour of valid SpO2 in sleep) | {_fmt_index(oximetry['odi'])} |",
            f"| ODI 4 % (>= 4 % desaturations per hour of valid SpO2 in sleep) | {_fmt_index(oximetry.get('odi_4'))} |",
            f"| desaturations (in sleep) | {oximetry['n_desaturations']} ({oximetry['n_desaturations_in_sleep']}) |",
            f"| mean SpO2 in sleep (%) | {_fmt(oximetry['spo2_mean_pct'])} |",
            f"| minimum SpO2 in sleep (%) | {_fmt(oximetry['spo2_min_pct'])} |",
            f"| time below 90 % in sleep (min) | {_fmt(oximetry['spo2_below_90_min'])} |",
            f"| valid SpO2 in sleep (min) | {_fmt(oximetry['spo2_valid_sleep_min'])} |",
            "",
            *oximetry_note(oximetry),
            f"Rule: {oximetry['rule']}; SpO2 in % from the signal (the parser's scaling undone), seconds "
            "outside 50-100 % left out.",
        ]
    validation = report.get("validation") or {}
    if validation:
        thresholds = (report.get("reliability") or {}).get("thresholds") or {}
        lines += [
            "",
            "## Model validation (`val` split of each model's training run)",
            "",
            "| model | validation numbers |",
            "|---|---|",
        ]
        for task, numbers in validation.items():
            shown = ", ".join(
                f"{k} {_fmt(v, 3)}"
                for k, v in numbers.items()
                if isinstance(v, (int, float)) and not isinstance(v, bool)
            )
            lines.append(f"| {task} | {shown or 'none recorded'} |")
        if thresholds:
            lines += [
                "",
                "An AHI estimate is flagged unreliable below: "
                + ", ".join(f"{k} {v}" for k, v in thresholds.items() if not k.startswith("max_"))
                + "".join(f"; above {k} {v}" for k, v in thresholds.items() if k.startswith("max_"))
                + "; when it comes from epoch runs; or when the night lacks a respiratory channel the event model "
                "reads or a channel the staging model reads.",
            ]
    return lines


def check_out(out: Path) -> None:
    """Refuse an `--out` this run could not write, before any night is processed (InputError).

    `out` must be new, an empty folder, or an earlier predict.py output (a folder holding report.json or
    summary.csv, and nothing predict.py does not write: `foreign_files`), which the new report set then replaces
    as a whole: nothing of the earlier run stays beside it, and nothing else is lost with it.
    """
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: exists and is not a folder")
    if out.is_dir() and not replaceable(out, REPORT_MARKERS):
        raise InputError(
            f"--out {out}: a folder holding other files (not a predict.py report); give a new or empty folder"
        )
    foreign = foreign_files(out) if out.is_dir() else []
    if foreign:  # the whole folder is replaced: an input kept there, or a user's file, would go with it
        shown = ", ".join(str(path.relative_to(out)) for path in foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise InputError(
            f"--out {out}: an earlier report folder that also holds files predict.py does not write ({shown}), "
            "which replacing it would delete; move them, or give a new or empty folder"
        )
    existing = out.absolute().parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"--out {out}: cannot be created ({existing} is not a folder)")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"--out {out}: cannot be created ({existing} is not writable)")


def foreign_files(out: Path) -> list[Path]:
    """What in the folder `out` predict.py did not write: files not named as its outputs (`REPORT_FILES`) in it or
    in a night's folder one level down (a cohort's reports), and anything deeper or not a plain file."""
    foreign = []
    for path in sorted(Path(out).iterdir()):
        inner = sorted(path.iterdir()) if path.is_dir() and not path.is_symlink() else [path]
        for item in inner:
            if item.is_symlink() or not item.is_file() or item.name not in REPORT_FILES:
                foreign.append(item)
    return foreign


def write_annotations(out: Path, result: Mapping[str, Any], paths: dict[str, Path]) -> None:
    """The predicted stages and events in standard formats (`dataset.annotation_export`): predicted-nsrr.xml,
    predicted-annotations.edf (EDF+), hypnogram-yasa.txt (YASA integer codes) and events.tsv (BIDS). With an
    event model, its typed events (and the SpO2 desaturations) are written, else the epoch runs' events."""
    typed = result.get("typed_events")
    stages, events = result["stages"], typed if typed is not None else (result.get("event_epochs") or {})
    start = result.get("start")
    paths["nsrr_xml"] = out / PREDICTED_NSRR
    paths["nsrr_xml"].write_text(
        annotation_export.nsrr_xml(stages, events, EPOCH_S, start.strftime("%H.%M.%S") if start else None)
    )
    paths["edf_annotations"] = annotation_export.write_edf_annotations(
        out / PREDICTED_EDF, stages, events, start, EPOCH_S
    )
    paths["yasa_hypnogram"] = out / "hypnogram-yasa.txt"
    paths["yasa_hypnogram"].write_text(annotation_export.yasa_text(stages))
    paths["bids_events"] = out / "events.tsv"
    paths["bids_events"].write_text(annotation_export.bids_events_tsv(stages, events, EPOCH_S))


def night_warnings(
    info: Mapping[str, Any],
    unusable_scoring: str | None,
    staging: Mapping[str, Any],
    reliability: Mapping[str, Any],
) -> list[str]:
    """The report's warnings of one night: what its scoring's reading said (the agreement rests on it), a scoring
    that could not be read, a truncated EDF or what else reading the recording found, staging channels the night
    lacks (the hypnogram and every sleep statistic rest on the staging model), and an unreliable AHI. `info`: the night's processing info; `staging`:
    the staging model's channel report (`used`, `missing`); `reliability`: `assess_reliability`'s verdict."""
    warnings_ = [f"scoring: {note}" for note in info.get("scoring_warnings", [])]
    if unusable_scoring is not None:
        warnings_.append(f"scoring not read, so no agreement: {unusable_scoring}")
    if info.get("truncated"):
        warnings_.append(
            f"truncated EDF ({info.get('warnings') or 'last data record cut'}): predicted the "
            f"{_fmt(float(info['kept_s']) / 60)} min of whole data records; the end of the night is "
            "missing"
        )
    elif info.get("warnings"):  # what reading the recording found: a low rate, a lead-off stretch, a doubled label
        warnings_.append(f"recording: {info['warnings']}")
    said = reliability["reliable"] is False and any("read by the staging model" in r for r in reliability["reasons"])
    if staging["missing"] and not said:  # an unreliable AHI's reasons already name them, and the sleep time
        warnings_.append(
            f"the staging model reads {', '.join(staging['missing'])}, which this night lacks: the hypnogram, sleep "
            f"time and sleep efficiency come from {', '.join(staging['used'])} alone and may be wrong (its "
            "validation kappa was measured with every channel)"
        )
    if reliability["reliable"] is False:
        warnings_.append("UNRELIABLE AHI estimate: " + "; ".join(reliability["reasons"]))
    return warnings_


def write_outputs(out: str | Path, result: Mapping[str, Any]) -> dict[str, Path]:
    """Write hypnogram.csv / .png, events.csv (if any), report.json, report.md into the folder `out` (callers write
    into a `staged_folder`, so a report set appears whole or not at all)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "hypnogram_csv": out / "hypnogram.csv",
        "hypnogram_png": out / "hypnogram.png",
        "report_json": out / "report.json",
        "report_md": out / "report.md",
    }
    result["hypnogram"].to_csv(paths["hypnogram_csv"], index=False, float_format="%.6g")
    report = result["report"]
    typed = result.get("typed_events")
    drawn = (
        typed
        if typed is not None
        else (annotation_export.event_intervals(result["event_epochs"]) if result.get("event_epochs") else None)
    )
    hypnogram_png(
        result["stages"],
        paths["hypnogram_png"],
        true=result["scored"],
        epoch_s=EPOCH_S,
        title=f"{report['recording']}: predicted" + (" vs scored" if result["scored"] is not None else ""),
        events=drawn,
    )
    if result["events"] is not None:
        paths["events_csv"] = out / "events.csv"
        result["events"].to_csv(paths["events_csv"], index=False, float_format="%.6g")
    if result.get("epoch_events") is not None:  # the epoch runs' events beside an event model's
        paths["epoch_events_csv"] = out / "epoch_events.csv"
        result["epoch_events"].to_csv(paths["epoch_events_csv"], index=False)
    write_annotations(out, result, paths)
    paths["report_json"].write_text(json.dumps(strict(report), indent=2, allow_nan=False) + "\n")
    paths["report_md"].write_text(report_markdown(strict(report)))
    return paths


SUMMARY_COLUMNS = (
    "night",
    "subject",
    "status",
    "reason",
    "n_epochs",
    "tst_min",
    "sleep_efficiency_pct",
    "ahi_estimated",
    "ahi_source",
    "ahi_reliable",
    "ahi_scored",
    "ahi_estimated_scored_part",
    "severity",
    "odi",
    "odi_reliable",
    "spo2_valid_sleep_min",
    "truncated",
    "missing_channels",
    "edf",
    "xml",
    "report",
)


def summary_row(night: Any, report: Mapping[str, Any] | None, status: str, reason: str) -> dict[str, Any]:
    """One row of summary.csv (SUMMARY_COLUMNS) of a `downstream.night_inputs.NightInput`."""
    row = {
        "night": night.recording,
        "subject": night.subject,
        "status": status,
        "reason": reason,
        "edf": str(night.edf or ""),
        "xml": str(night.xml or ""),
        "report": "",
    }
    if report is not None:
        sleep = report["sleep"]
        ahi = (report.get("agreement") or {}).get("ahi") or {}
        estimate = report.get("ahi") or {}
        reliable = report["reliability"]["reliable"]
        row.update(
            n_epochs=report["n_epochs"],
            tst_min=sleep["tst_min"],
            sleep_efficiency_pct=sleep["sleep_efficiency_pct"],
            ahi_estimated=estimate.get("ahi"),
            ahi_source=estimate.get("source", ""),
            ahi_reliable=reliable if estimate else None,
            ahi_scored=ahi.get("scored"),
            ahi_estimated_scored_part=ahi.get("estimated"),
            severity=estimate.get("severity_name", ""),
            odi=(report.get("oximetry") or {}).get("odi"),
            odi_reliable=(report.get("oximetry") or {}).get("reliable"),
            spo2_valid_sleep_min=(report.get("oximetry") or {}).get("spo2_valid_sleep_min"),
            truncated=bool(report["processing"]["truncated"]),
            missing_channels=",".join(report["channels"]["missing"]),
            report=f"{night.recording}/report.md",
        )
    return {name: row.get(name) for name in SUMMARY_COLUMNS}


def summary_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """summary.md: counts by status, then one table row per night."""
    counts = pd.Series([r["status"] for r in rows]).value_counts()
    lines = [
        "# Cohort prediction summary",
        "",
        ", ".join(f"{n} {status}" for status, n in counts.items()) + f" of {len(rows)} night(s).",
        "",
        "| night | subject | status | TST (min) | SE (%) | AHI est. | severity est. | AHI scored | AHI est. of the "
        "scored epochs | ODI | reason |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        report = f"[{r['night']}](<{r['report']}>)" if r["report"] else r["night"]  # <...>: names with spaces
        reason = str(r["reason"] or "").replace("|", "/")
        estimated = isinstance(r["ahi_estimated"], (int, float)) and math.isfinite(r["ahi_estimated"])
        unreliable = " (UNRELIABLE)" if r["ahi_reliable"] is False and estimated else ""  # not beside an n/a
        odi_flag = " (UNRELIABLE)" if r.get("odi_reliable") is False and _fmt_index(r["odi"]) != "n/a" else ""
        lines.append(
            f"| {report} | {r['subject']} | {r['status']} | {_fmt(r['tst_min'])} | "
            f"{_fmt(r['sleep_efficiency_pct'])} | {_fmt_index(r['ahi_estimated'])}{unreliable} | "
            f"{r['severity'] or ''} | {_fmt_index(r['ahi_scored'])} | {_fmt_index(r['ahi_estimated_scored_part'])} | "
            f"{_fmt_index(r['odi'])}{odi_flag} | {reason} |"
        )
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------- event tables
MODEL_EVENT_COLUMNS = ("onset_s", "duration_s", "type", "probability", "counted", "in_sleep", "time")


def event_rows(task: str, positive: np.ndarray, sleep: np.ndarray, times: Sequence[str]) -> list[dict[str, Any]]:
    """One row per run of positive epochs (utils.metrics.event_runs)."""
    rows = []
    for start, length in event_runs(positive):
        rows.append(
            {
                "type": task,
                "start_epoch": start,
                "n_epochs": length,
                "start_s": float(start * EPOCH_S),
                "duration_s": float(length * EPOCH_S),
                "time": times[start],
                "in_sleep": bool(sleep[start]),
                "n_events": -(-length // MAX_EVENT_EPOCHS),
            }
        )
    return rows


def model_event_table(
    found: Sequence[Event], counted: Sequence[bool], sleep: np.ndarray, times: Sequence[str]
) -> pd.DataFrame:
    """events.csv of the event model: onset_s, duration_s, type, probability, counted (under its hypopnea
    rule), in_sleep (onset in a predicted sleep epoch: counted and in sleep = in the AHI), time (the clock time
    of each event's onset, `times`)."""
    onsets = np.array([e.onset_s for e in found], dtype=np.float64)
    in_sleep = sleep_epochs_of(onsets, sleep)
    rows = [
        {
            "onset_s": e.onset_s,
            "duration_s": e.duration_s,
            "type": e.type,
            "probability": e.probability,
            "counted": bool(c),
            "in_sleep": bool(s),
            "time": t,
        }
        for e, c, s, t in zip(found, counted, in_sleep, times)
    ]
    return pd.DataFrame(rows, columns=MODEL_EVENT_COLUMNS)
