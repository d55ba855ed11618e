"""Comparison of downstream runs (docs/evaluation.md 5.7): one table over the test reports of many runs.

    python downstream/evaluate.py RUN [RUN ...] [--out runs/downstream/comparison]

RUN is a run directory holding metrics.json (written by the linear-probing, fine-tuning and feature-baseline
scripts, and by downstream/event_detection/train.py: an `event_detection` section with event F1 of apneas and
hypopneas, AHI ICC / r / severity kappa and epoch AUROC) or a folder searched recursively for them. Writes OUT/comparison.md, OUT/comparison.csv and
OUT/label_fraction.png (headline metric against the fraction of training labels, one line per method and
backbone, and per --neighbour-epochs value).

Per run (`downstream.results.write_run_report`, called by every downstream script once, on `test`, with the
checkpoint selected on `val`): predictions.parquet (recording, subject, epoch, true, predicted, probabilities,
stage), metrics.json, confusion_matrix.png, results.md and, for staging, hypnogram PNGs of the first test
recordings.

Metrics (`downstream.results.evaluate_predictions`): `utils.metrics.evaluate` on the test epochs (accuracy,
macro-F1, Cohen's kappa, per-class F1, confusion matrix; binary tasks also sensitivity, specificity, AUROC,
AUPRC), 95 % percentile-bootstrap CIs that resample test SUBJECTS. Unscored epochs (true = -1) are predicted but
not scored.

AHI. The event models predict one event family each, while the manifest's `ahi_scored` counts apneas AND
hypopneas, so:
- per run (task apnea or hypopnea): `downstream.results.run_event_index` = that family's events per hour of sleep,
  estimated from the predicted epochs and, as reference, from the scored epoch labels with the same counting rule
  (`utils.ahi.count_events`: a run of k positive epochs = ceil(k / 2) events, counted when it starts in a
  sleep epoch); agreement by `utils.ahi.ahi_agreement` (ICC, Pearson r, severity classes).
- here, when an apnea run and a hypopnea run of the same method, backbone, neighbouring epochs, label fraction,
  subjects and seed are both given: AHI per recording = `estimate_ahi(predicted apnea, predicted hypopnea)` against the
  manifest's `ahi_scored`, in the `ahi_*` columns of both rows. Each family's count is multiplied by its run's
  `event_calibration` scale (metrics.json): scored events per event counted from the scored epoch LABELS of
  `val`. Epoch labels lose events (a short event that misses an epoch midpoint; neighbouring events merged
  into one run), so even perfect epoch predictions count too few; `ahi_icc_uncalibrated` is the raw count's ICC.
Sleep time for these indices comes from the SCORED hypnogram (stages N1-REM), as in `ahi_scored`: an event
model does not stage.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from dataset.atomic_files import write_all_atomic
from dataset.cohort import read_ok_manifest
from dataset.constants import EPOCH_S, TASKS
from downstream.results import (
    CI_METRICS,
    EVENT_DETECTION_METRICS,
    Predictions,
    as_number,
    markdown_table,
    summary_row,
    variant_suffix,
)
from models.loading import half_replaced
from utils.ahi import ahi_agreement, estimate_ahi, event_calibration
from utils.config import ArgumentParser, UsageError, check_out_dir, parse_config, path_arg, save_config
from utils.plots import label_fraction_png
from utils.resume import REPLACEMENT
from utils.sleep_stats import SLEEP_STAGES

HEADLINE_OF_TASK: dict[str, str] = {"sleep_stage": "kappa", "apnea": "auroc", "hypopnea": "auroc"}
EVENT_DETECTION = "event_detection"  # downstream/event_detection/train.py runs: events with onsets and durations


def event_detection_row(metrics: Mapping[str, Any], run: str = "") -> dict[str, Any]:
    """One table row of an event_detection run's metrics.json (test split): event F1 of the apnea family and of
    hypopneas (IoU matching, CI ends), AHI agreement under the run's hypopnea rule (ICC, r, severity kappa) and
    the epoch-level AUROC; the per-epoch columns are NaN."""
    test = metrics["test"]
    backbone = (metrics.get("train") or {}).get("backbone") or {}
    row: dict[str, Any] = {
        "method": metrics["method"],
        "backbone": backbone.get("name") or "",
        "task": EVENT_DETECTION,
        "label_fraction": metrics["label_fraction"],
        "train_subjects": None,
        "seed": metrics.get("seed"),
        "n_test_subjects": test["n_subjects"],
        "n_test_epochs": ((test.get("epoch") or {}).get("apnea") or {}).get("n_epochs"),
        "hypopnea_rule": metrics.get("hypopnea_rule"),
        "run": run,
    }
    for name in CI_METRICS:
        row[name] = row[f"{name}_low"] = row[f"{name}_high"] = float("nan")
    for family in ("apnea", "hypopnea"):
        events = test["events"].get(family) or {}
        row[f"event_f1_{family}"] = as_number(events.get("f1"))
        low, high = events.get("f1_ci") or [None, None]
        row[f"event_f1_{family}_low"], row[f"event_f1_{family}_high"] = as_number(low), as_number(high)
        epoch = (test.get("epoch") or {}).get(family) or {}
        row[f"epoch_auroc_{family}"] = as_number(epoch.get("auroc"))
        low, high = epoch.get("auroc_ci") or [None, None]
        row[f"epoch_auroc_{family}_low"], row[f"epoch_auroc_{family}_high"] = as_number(low), as_number(high)
    agreement = (test.get("ahi") or {}).get("agreement") or {}
    row.update(
        event_index_icc=float("nan"),
        ahi_icc=as_number(agreement.get("icc_2_1")),
        ahi_r=as_number(agreement.get("pearson_r")),
        ahi_severity_kappa=as_number(agreement.get("severity_kappa")),
        ahi_n=agreement.get("n"),
        ahi_icc_uncalibrated=float("nan"),
    )
    return row


# ---------------------------------------------------------------------------------------- comparison
def find_runs(paths: Iterable[str | Path]) -> list[Path]:
    """Run directories: each path holding metrics.json, or every folder below it that does (sorted)."""
    runs: list[Path] = []
    for path in map(Path, paths):
        if (path / "metrics.json").is_file():
            runs.append(path)
        elif path.is_dir():
            # not a replacement still training (utils.resume): its run is the folder above until it finishes
            found = sorted(p.parent for p in path.rglob("metrics.json") if REPLACEMENT not in p.relative_to(path).parts)
            if not found:
                raise FileNotFoundError(f"{path}: no metrics.json in this folder or below it")
            runs += found
        else:
            raise FileNotFoundError(f"{path}: not a run directory (no metrics.json)")
    return list(dict.fromkeys(runs))


RUN_RECORD_KEYS = ("task", "method")  # keys every downstream run's metrics.json holds
# what the table reads of a run's metrics.json beyond RUN_RECORD_KEYS (`summary_row`, `event_detection_row`): key
# paths, each ending in a number (label_fraction, counts) or a section (dict)
TABLE_KEYS: dict[str, tuple[tuple[str, ...], ...]] = {
    "epoch": (("label_fraction",), ("test",), ("test", "n_subjects"), ("test", "n_epochs"), ("test", "pooled")),
    EVENT_DETECTION: (("label_fraction",), ("test",), ("test", "n_subjects"), ("test", "events")),
}
SECTIONS = ("test", "pooled", "events")  # keys whose value is a JSON object


def _missing_table_key(metrics: Mapping[str, Any]) -> str | None:
    """The first key path of `TABLE_KEYS` that `metrics` lacks or holds with the wrong kind of value, as a
    message; None when the record has every one."""
    for keys in TABLE_KEYS[EVENT_DETECTION if metrics["task"] == EVENT_DETECTION else "epoch"]:
        section: Any = metrics
        for depth, key in enumerate(keys):
            if not isinstance(section, Mapping) or key not in section or section[key] is None:
                return f"no {'.'.join(keys[: depth + 1])}"
            section = section[key]
        wants_section = keys[-1] in SECTIONS
        if wants_section != isinstance(section, Mapping) or (
            not wants_section and (isinstance(section, bool) or not isinstance(section, (int, float)))
        ):
            return f"{'.'.join(keys)} is {json.dumps(section)[:40]}, not {'an object' if wants_section else 'a number'}"
    if not 0 < metrics["label_fraction"] <= 1:  # a fraction of the train labels; the plot's axis is logarithmic
        return f"label_fraction is {metrics['label_fraction']}, not in (0, 1]"
    return None


def read_run_metrics(run: Path) -> dict[str, Any]:
    """A run's metrics.json; ValueError naming the file when it is unreadable, not JSON, not a run record, or
    lacks what the comparison table reads of it (`TABLE_KEYS`)."""
    path = Path(run) / "metrics.json"
    problem = half_replaced(run)
    if problem:
        raise ValueError(f"{path}: {problem}")
    try:
        metrics = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: cannot read a run record ({type(err).__name__}: {err})") from None
    missing = [key for key in RUN_RECORD_KEYS if not isinstance(metrics, dict) or key not in metrics]
    if missing:
        raise ValueError(f"{path}: not a downstream run's metrics.json (no {', '.join(missing)})")
    if metrics["task"] not in (*TASKS, EVENT_DETECTION):
        raise ValueError(
            f"{path}: unknown task {metrics['task']!r}; expected one of {', '.join((*TASKS, EVENT_DETECTION))}"
        )
    if not isinstance(metrics["method"], str):
        raise ValueError(f"{path}: method is {json.dumps(metrics['method'])[:40]}, not a name")
    problem = _missing_table_key(metrics)
    if problem:
        raise ValueError(f"{path}: incomplete run record ({problem}); was the run finished?")
    return metrics


def run_event_scale(metrics: Mapping[str, Any]) -> float:
    """The `event_calibration` scale an event run stored in its metrics.json; fitted anew on its data's `val`
    for runs written before it was stored."""
    stored = metrics.get("event_calibration") or {}
    if "scale" in stored:
        return float(stored["scale"])
    return event_calibration(metrics["data"], metrics["task"], metrics.get("label_rule") or "midpoint")["scale"]


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def read_predictions(run: Path) -> Predictions:
    """A run's predictions.parquet; ValueError naming the file when it is missing or unreadable."""
    path = Path(run) / "predictions.parquet"
    if not path.is_file():
        raise ValueError(f"{path}: missing (the run's test predictions; needed for the combined AHI)")
    try:
        return Predictions.read(path)
    except (OSError, ValueError, KeyError, TypeError, pa.ArrowException) as err:
        raise ValueError(f"{path}: cannot read the run's predictions ({_one_line(err)})") from None


def cohort_of(run: Path, metrics: Mapping[str, Any]) -> Path:
    """The cohort folder (`data` in the run's metrics.json) whose manifest.parquet holds the scored AHI;
    ValueError naming the run's metrics.json when it names none or the folder has no manifest."""
    data = metrics.get("data")
    if not isinstance(data, str) or not data:
        raise ValueError(f"{Path(run) / 'metrics.json'}: no data (the cohort folder the combined AHI is scored from)")
    if not (Path(data) / "manifest.parquet").is_file():
        raise ValueError(
            f"{Path(run) / 'metrics.json'}: its cohort {data} holds no manifest.parquet (moved or deleted?); "
            "the combined AHI is scored from it"
        )
    return Path(data)


def pair_scales(apnea: tuple[Path, Mapping[str, Any]], hypopnea: tuple[Path, Mapping[str, Any]]) -> tuple[float, float]:
    """(apnea, hypopnea) `run_event_scale` of a pair; ValueError naming the run whose scale cannot be had."""
    scales = []
    for run, metrics in (apnea, hypopnea):
        try:
            scales.append(run_event_scale(metrics))
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ValueError(
                f"{Path(run) / 'metrics.json'}: no usable event_calibration scale, and none can be fitted on its "
                f"cohort {metrics.get('data')!r} ({_one_line(err)})"
            ) from None
    return scales[0], scales[1]


def combined_ahi(
    apnea_run: Path, hypopnea_run: Path, data_dir: str | Path, scales: tuple[float, float] = (1.0, 1.0)
) -> dict[str, Any]:
    """AHI per test recording from an apnea run's and a hypopnea run's predicted epochs (epochs both predicted),
    each family's count times its scale (`event_calibration`), against the manifest's `ahi_scored`:
    `utils.ahi.ahi_agreement`, with that of the raw counts under "uncalibrated". ValueError naming the file when
    a predictions.parquet or the manifest is missing or unreadable."""
    apnea = read_predictions(apnea_run)
    hypopnea = read_predictions(hypopnea_run)
    manifest_path = Path(data_dir) / "manifest.parquet"
    try:
        scored_ahi = read_ok_manifest(data_dir, ["ahi_scored"])["ahi_scored"].astype(float).to_dict()
    except (OSError, ValueError, KeyError, TypeError, pa.ArrowException) as err:
        raise ValueError(f"{manifest_path}: cannot read the scored AHI ({_one_line(err)})") from None
    left = pd.DataFrame(
        {"recording": apnea.recording, "epoch": apnea.epoch, "apnea": apnea.predicted, "stage": apnea.stage}
    )
    right = pd.DataFrame({"recording": hypopnea.recording, "epoch": hypopnea.epoch, "hypopnea": hypopnea.predicted})
    both = left.merge(right, on=["recording", "epoch"]).sort_values(["recording", "epoch"])
    estimated, raw, scored = [], [], []
    for rid, night in both.groupby("recording", sort=True):
        sleep = np.isin(night["stage"].to_numpy(), SLEEP_STAGES)
        apnea_epochs, hypopnea_epochs = night["apnea"].to_numpy(), night["hypopnea"].to_numpy()
        estimated.append(estimate_ahi(apnea_epochs, hypopnea_epochs, sleep, EPOCH_S, scales=scales))
        raw.append(estimate_ahi(apnea_epochs, hypopnea_epochs, sleep, EPOCH_S))
        scored.append(scored_ahi.get(str(rid), float("nan")))
    return {**ahi_agreement(estimated, scored), "uncalibrated": ahi_agreement(raw, scored)}


def table_row(run: Path, metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The run's table row (`event_detection_row` or `summary_row`); ValueError naming its metrics.json when a
    value the row reads is of the wrong kind (a section that is a list, a CI that is not a pair)."""
    try:
        if metrics["task"] == EVENT_DETECTION:
            return event_detection_row(metrics, run=str(run))
        return summary_row(metrics, run=str(run))
    except (KeyError, TypeError, AttributeError, ValueError) as err:
        raise ValueError(
            f"{Path(run) / 'metrics.json'}: incomplete run record ({type(err).__name__}: {_one_line(err)})"
        ) from None


def same_cohort(one: Any, other: Any) -> bool:
    """Whether two runs' recorded cohorts (`data`) are one folder, however it was reached. A run without a usable
    record is taken as paired: the pair's AHI is read from the apnea run's cohort (`cohort_of`, which says what
    that run lacks)."""
    if not isinstance(one, str) or not isinstance(other, str):
        return True
    return one == other or Path(one).resolve() == Path(other).resolve()


def comparison_rows(runs: Sequence[Path]) -> list[dict[str, Any]]:
    """Table rows of the runs, with the combined AHI agreement filled in for apnea + hypopnea pairs. Every file
    of the runs is read here (ValueError naming the first that is missing, unreadable or incomplete), so nothing
    is written for a table that cannot be built."""
    rows, metrics_of = [], {}
    for run in runs:
        metrics = read_run_metrics(run)
        metrics_of[run] = metrics
        rows.append(table_row(run, metrics))
    cohort_of_row = {str(run): metrics.get("data") for run, metrics in metrics_of.items()}
    cohorts: list[Any] = []
    for data in cohort_of_row.values():
        if not any(same_cohort(data, seen) for seen in cohorts):
            cohorts.append(data)
    if len(cohorts) > 1:  # one table, several cohorts: each row stands, but rows of two cohorts do not compare
        print(
            f"warning: the runs come from {len(cohorts)} cohorts ({', '.join(str(c) for c in cohorts)}); the `run` "
            "column says which row is which",
            flush=True,
        )
    key = lambda r: (  # noqa: E731 - one setup: what the pair's two runs must share, with the cohort
        r.get("label_rule"),
        r["method"],
        r["backbone"],
        r.get("neighbour_epochs"),
        r.get("context_direction"),
        r.get("pooling"),
        r.get("night_norm"),
        r.get("head"),
        r.get("eval_stride"),
        r["label_fraction"],
        r["train_subjects"],
        r["seed"],
    )
    for row in rows:
        if row["task"] != "apnea":
            continue
        partners = [
            r
            for r in rows
            if r["task"] == "hypopnea"
            and key(r) == key(row)
            and same_cohort(cohort_of_row[r["run"]], cohort_of_row[row["run"]])
        ]
        if len(partners) > 1:  # runs this table cannot tell apart (e.g. another --select-metric): no pair guessed
            print(
                f"warning: {row['run']}: {len(partners)} hypopnea runs of the same setup "
                f"({', '.join(r['run'] for r in partners)}); no combined AHI for it",
                flush=True,
            )
        if len(partners) != 1:
            continue
        apnea_run, hypopnea_run = Path(row["run"]), Path(partners[0]["run"])
        partner = partners[0]
        data_dir = cohort_of(apnea_run, metrics_of[apnea_run])
        scales = pair_scales((apnea_run, metrics_of[apnea_run]), (hypopnea_run, metrics_of[hypopnea_run]))
        agreement = combined_ahi(apnea_run, hypopnea_run, data_dir, scales)
        for target in (row, partner):
            target.update(
                ahi_icc=agreement["icc_2_1"],
                ahi_r=agreement["pearson_r"],
                ahi_severity_kappa=agreement["severity_kappa"],
                ahi_n=agreement["n"],
                ahi_icc_uncalibrated=agreement["uncalibrated"]["icc_2_1"],
                ahi_scale_apnea=scales[0],
                ahi_scale_hypopnea=scales[1],
            )
    order = {t: i for i, t in enumerate(TASKS)}
    return sorted(
        rows,
        key=lambda r: (
            order.get(r["task"], 9),
            r["method"],
            r["backbone"],
            r.get("neighbour_epochs") or 0,
            r.get("context_direction") or "",
            r.get("pooling") or "",
            r.get("night_norm") or "",
            r.get("head") or "",
            r.get("eval_stride") or 0,
            r["label_fraction"],
            str(r["train_subjects"]),
            str(r["seed"]),
        ),
    )


def comparison_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """comparison.md of the table's rows: one section per task."""
    sections = [
        "# Downstream comparison",
        "",
        "Test split, subject-bootstrap 95 % CIs in brackets. Model selection on `val` only. AHI columns: "
        "apnea + hypopnea runs of one method combined, against the manifest's scored AHI (ICC(2,1), "
        "Pearson r, severity-class kappa); event_index_icc: the task's own events per hour of sleep "
        "against the scored epoch labels.",
        "",
    ]
    for task in TASKS:
        task_rows = [r for r in rows if r["task"] == task]
        if not task_rows:
            continue
        metrics = (
            ("kappa", "macro_f1", "accuracy")
            if task == "sleep_stage"
            else ("auroc", "auprc", "kappa", "event_index_icc", "ahi_icc", "ahi_r", "ahi_severity_kappa")
        )
        columns = (
            (
                "method",
                "backbone",
                "neighbour_epochs",
                "context_direction",
                "pooling",
                "night_norm",
                "head",
                "eval_stride",
                "label_fraction",
                "train_subjects",
                *(("label_rule",) if task != "sleep_stage" else ()),
                "seed",
                "n_test_subjects",
            )
            + metrics
            + ("run",)
        )  # the run folder: what tells apart runs of one setup (another --l2-grid, seed, cohort)
        sections += [f"## {task}", "", markdown_table(task_rows, columns)]
    event_rows = [r for r in rows if r["task"] == EVENT_DETECTION]
    if event_rows:
        columns = (
            "method",
            "backbone",
            "label_fraction",
            "seed",
            "hypopnea_rule",
            "n_test_subjects",
            *EVENT_DETECTION_METRICS,
            "run",
        )
        sections += [
            f"## {EVENT_DETECTION}",
            "",
            "Events with onsets and durations (one-to-one matching at IoU >= "
            "0.2), the AHI from them under the run's hypopnea rule over the scored sleep, and the epoch "
            "AUROC (maximum per-second probability in the epoch).",
            "",
            markdown_table(event_rows, columns),
        ]
    cut = clock_cut_runs(rows)
    if cut:
        sections += [CLOCK_CUT, "", *(f"- {run}" for run in cut), ""]
    return "\n".join(sections)


CLOCK_CUT = (
    "Stopped by `--max-minutes` (a wall-clock budget: the same command on another machine, or a busier one, trains "
    "another number of steps and gives other numbers):"
)


def clock_cut_runs(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The runs of `rows` whose training the wall clock stopped."""
    return [str(r["run"]) for r in rows if r.get("stopped") == "max_minutes"]


def write_comparison(
    runs: Sequence[Path], out_dir: str | Path, config: argparse.Namespace | None = None
) -> list[dict[str, Any]]:
    """comparison.md, comparison.csv and label_fraction.png of `runs` (and, given `config`, the options as
    config.json) in `out_dir`; returns the rows. Every row is built, and every output made, before `out_dir` is
    touched; the files then replace those of an earlier table together (`write_all_atomic`), so a failed run
    leaves `out_dir` as it was (and creates no empty one). ValueError naming the file when a run cannot be read,
    OSError when `out_dir` cannot be written."""
    return write_rows(comparison_rows(runs), out_dir, config)


def write_rows(
    rows: list[dict[str, Any]], out_dir: str | Path, config: argparse.Namespace | None = None
) -> list[dict[str, Any]]:
    """The outputs of `write_comparison` from rows already built."""
    out_dir = Path(out_dir)
    csv_text = pd.DataFrame(rows).to_csv(index=False)
    markdown = comparison_markdown(rows)
    # a series joins one setup's runs across label fractions: seeds and subject counts that differ between the
    # table's runs get series of their own (one line through runs of two seeds at a fraction would zigzag)
    apart = [key for key in ("seed", "train_subjects") if len({str(r.get(key)) for r in rows}) > 1]
    for row in rows:
        with_backbone = row["backbone"] and not row["backbone"].startswith("none")
        row["series"] = row["method"] + (f" / {row['backbone']}" if with_backbone else "")
        row["series"] += variant_suffix(row) + "".join(f" ({key} {row.get(key)})" for key in apart)
    with tempfile.TemporaryDirectory(prefix="comparison-") as scratch:  # made whole before OUT is touched
        png = label_fraction_png(
            [{**r, "method": r["series"]} for r in rows], Path(scratch) / "label_fraction.png", HEADLINE_OF_TASK
        ).read_bytes()
        config_text = save_config(config, Path(scratch) / "config.json").read_text() if config is not None else None
    writes = [
        (out_dir / "comparison.csv", lambda p: p.write_text(csv_text)),
        (out_dir / "comparison.md", lambda p: p.write_text(markdown)),
        (out_dir / "label_fraction.png", lambda p: p.write_bytes(png)),
    ]
    if config_text is not None:  # the exact options this table was made with
        writes.append((out_dir / "config.json", lambda p: p.write_text(config_text)))
    created = [d for d in (out_dir, *out_dir.parents) if not d.exists()]
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_all_atomic(writes)
    except BaseException:
        for folder in created:  # innermost first: only the folders this call made, and only while empty
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("runs", nargs="*", type=path_arg, help="run directories (with metrics.json) or folders of them")
    parser.add_argument(
        "--config",
        type=path_arg,
        default=None,
        help='JSON or YAML file of these options (e.g. {"runs": [...], "out": ...}); flags win',
    )
    parser.add_argument(
        "--out",
        type=path_arg,
        default=Path("runs") / "downstream" / "comparison",
        help="folder for comparison.md, comparison.csv, label_fraction.png",
    )
    args = parse_config(parser, argv, required=())
    if not args.runs:
        parser.error("give at least one run directory (on the command line or as `runs` in --config)")
    try:
        check_out_dir(args.out)
        held = [name for name in ("metrics.json", "best.pt", "last.pt", "model.pkl") if (args.out / name).exists()]
        if held:  # its config.json is the run's own record: a comparison needs a folder of its own
            raise UsageError(f"--out {args.out}: holds a run ({', '.join(held)}); give the comparison its own folder")
        runs = find_runs(args.runs)
        rows = comparison_rows(runs)  # every file of every run read before anything is written
    except (UsageError, FileNotFoundError, ValueError) as err:
        parser.error(str(err))
    try:
        write_rows(rows, args.out, config=args)
    except OSError as err:
        print(f"error: --out {args.out}: cannot write the comparison ({_one_line(err)})", file=sys.stderr)
        return 2
    print(f"{len(rows)} run(s) -> {args.out / 'comparison.md'}, comparison.csv, label_fraction.png")
    for run in clock_cut_runs(rows):
        print(f"warning: {run}: stopped by --max-minutes; its numbers do not reproduce on another machine")
    print(
        pd.DataFrame(rows)[["method", "backbone", "task", "label_fraction", "kappa", "auroc"]].to_string(
            index=False, float_format=lambda v: f"{v:.3f}"
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
