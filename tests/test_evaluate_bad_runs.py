"""downstream/evaluate.py on run folders that cannot make a table row: a metrics.json that lacks what the table
reads, a deleted predictions.parquet, a cohort that was moved away. Each is one `error:` line naming the file,
exit 2, no traceback, and no --out folder made or changed; a write that fails leaves an earlier table as it was.
The run folders are written by hand (no training): a staging run, and an apnea + hypopnea pair whose combined
AHI reads both predictions.parquet and the cohort's manifest.parquet."""

from __future__ import annotations

import errno
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from downstream import evaluate
from downstream.results import Predictions
from tests.checks import assert_one_error_line, exit_code, snapshot

REPO = Path(__file__).resolve().parent.parent
RECORDINGS = ("night-a", "night-b")
EPOCHS = 40


def split_metrics(task: str) -> dict:
    binary = task != "sleep_stage"
    pooled = {"kappa": 0.5, "macro_f1": 0.6, "accuracy": 0.7}
    if binary:
        pooled.update(auroc=0.8, auprc=0.4)
    return {
        "n_subjects": 2,
        "n_epochs": EPOCHS * len(RECORDINGS),
        "n_recordings": len(RECORDINGS),
        "pooled": pooled,
        "ci": {"kappa": [0.4, 0.6]},
    }


def write_run(folder: Path, task: str, method: str, cohort: Path, seed: int) -> Path:
    """A finished run: metrics.json and predictions.parquet of the test recordings."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    n_classes = 5 if task == "sleep_stage" else 2
    recording = np.repeat(np.asarray(RECORDINGS, dtype=object), EPOCHS)
    probabilities = rng.dirichlet(np.ones(n_classes), size=recording.size).astype(np.float32)
    predictions = Predictions(
        recording,
        np.tile(np.arange(EPOCHS, dtype=np.int64), len(RECORDINGS)),
        rng.integers(0, n_classes, recording.size).astype(np.int64),
        probabilities,
        subject=np.asarray([f"subject-{r}" for r in recording], dtype=object),
        stage=np.full(recording.size, 2, dtype=np.int8),  # N2: every epoch is scored sleep
    )
    pq.write_table(predictions.to_table(task), folder / "predictions.parquet")
    metrics = {
        "task": task,
        "method": method,
        "backbone_name": "",
        "label_fraction": 1.0,
        "seed": 0,
        "data": str(cohort),
        "test": split_metrics(task),
    }
    if task != "sleep_stage":
        metrics["event_calibration"] = {"scale": 1.25, "split": "val"}
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    return folder


@pytest.fixture()
def runs(tmp_path) -> dict[str, Path]:
    cohort = tmp_path / "cohort"
    cohort.mkdir()
    pd.DataFrame({"recording_id": list(RECORDINGS), "ahi_scored": [4.0, 22.0]}).to_parquet(cohort / "manifest.parquet")
    base = tmp_path / "runs"
    return {
        "cohort": cohort,
        "stage": write_run(base / "stage", "sleep_stage", "linear_probe", cohort, 1),
        "apnea": write_run(base / "apnea", "apnea", "features_hgb", cohort, 2),
        "hypopnea": write_run(base / "hypopnea", "hypopnea", "features_hgb", cohort, 3),
    }


def edit_metrics(run: Path, change) -> None:
    path = run / "metrics.json"
    metrics = json.loads(path.read_text())
    change(metrics)
    path.write_text(json.dumps(metrics))


def argv_of(runs: dict[str, Path], out: Path) -> list[str]:
    return [str(runs[name]) for name in ("stage", "apnea", "hypopnea")] + ["--out", str(out)]


def test_a_backbone_name_of_another_type_is_read_as_text(runs, tmp_path):
    """A hand-edited record's backbone_name 5 is the backbone "5" in the table, not a traceback."""
    edit_metrics(runs["stage"], _set(5, "backbone_name"))
    assert evaluate.main([str(runs["stage"]), "--out", str(tmp_path / "table")]) == 0
    assert "| 5 |" in (tmp_path / "table" / "comparison.md").read_text()


def test_hand_made_runs_make_a_table(runs, tmp_path):
    out = tmp_path / "table"
    assert exit_code(evaluate.main, argv_of(runs, out)) == 0
    rows = pd.read_csv(out / "comparison.csv")
    assert len(rows) == 3
    events = rows[rows["task"] != "sleep_stage"]
    assert (events["ahi_n"] == 2).all() and (events["ahi_scale_apnea"] == 1.25).all()  # the pair was combined
    assert sorted(p.name for p in out.iterdir()) == [
        "comparison.csv",
        "comparison.md",
        "config.json",
        "label_fraction.png",
    ]


def test_the_ahi_pairs_runs_of_one_label_rule_and_never_guesses(runs, tmp_path, capsys):
    """A hypopnea run with `--label-rule any` beside the midpoint pair (its path sorts first) is not the apnea
    run's partner, and the table says which rule each row used; two partners of one setup make no pair."""
    other = shutil.copytree(runs["hypopnea"], runs["hypopnea"].with_name("a-hypopnea-any"))
    for run, rule in ((runs["hypopnea"], "midpoint"), (other, "any")):  # the apnea run predates the option
        edit_metrics(run, lambda m, rule=rule: m.update(label_rule=rule))
    link = tmp_path / "cohort-link"  # one cohort, reached by another path
    link.symlink_to(runs["cohort"])
    edit_metrics(runs["hypopnea"], lambda m: m.update(data=str(link)))
    out = tmp_path / "table"
    assert exit_code(evaluate.main, [*argv_of(runs, out)[:-2], str(other), "--out", str(out)]) == 0
    rows = pd.read_csv(out / "comparison.csv").set_index("run")
    assert rows.loc[str(runs["hypopnea"]), "ahi_n"] == 2 and np.isnan(rows.loc[str(other), "ahi_n"])
    assert rows.loc[str(other), "label_rule"] == "any" and rows.loc[str(runs["stage"]), "label_rule"] != "any"
    assert "| any |" in (out / "comparison.md").read_text()
    edit_metrics(other, lambda m: m.update(label_rule="midpoint"))  # now two hypopnea runs of the same setup
    assert exit_code(evaluate.main, [*argv_of(runs, out)[:-2], str(other), "--out", str(out)]) == 0
    assert "2 hypopnea runs of the same setup" in capsys.readouterr().out
    table = pd.read_csv(out / "comparison.csv")
    assert "ahi_n" not in table or table["ahi_n"].isna().all()


def test_a_run_cut_by_the_wall_clock_is_named(runs, tmp_path, capsys):
    """A run whose training `--max-minutes` stopped gives numbers another machine does not reproduce: the
    comparison names it (comparison.md and a warning line); a run stopped by its steps is not named."""
    edit_metrics(runs["stage"], _set({"stopped": "max_minutes", "step": 40, "epochs_completed": 1}, "training"))
    edit_metrics(runs["apnea"], _set({"stopped": "max_steps", "step": 10, "epochs_completed": 0}, "training"))
    cut_first_phase = {"stopped": "completed", "step": 9, "epochs_completed": 1, "context_phase_stopped": "max_minutes"}
    edit_metrics(runs["hypopnea"], _set(cut_first_phase, "training"))
    out = tmp_path / "table"
    assert exit_code(evaluate.main, argv_of(runs, out)) == 0
    warnings = [line for line in capsys.readouterr().out.splitlines() if line.startswith("warning:")]
    assert warnings == [
        f"warning: {run}: stopped by --max-minutes; its numbers do not reproduce on another machine"
        for run in (runs["stage"], runs["hypopnea"])
    ]
    markdown = (out / "comparison.md").read_text()
    assert f"- {runs['stage']}" in markdown and str(runs["apnea"]) not in markdown.split(evaluate.CLOCK_CUT)[1]
    assert list(pd.read_csv(out / "comparison.csv")["stopped"]) == ["max_minutes", "max_steps", "max_minutes"]


def _drop(*keys: str):
    def change(metrics: dict) -> None:
        section = metrics
        for key in keys[:-1]:
            section = section[key]
        del section[keys[-1]]

    return change


def _set(value, *keys: str):
    def change(metrics: dict) -> None:
        section = metrics
        for key in keys[:-1]:
            section = section[key]
        section[keys[-1]] = value

    return change


def break_run(case: str, runs: dict[str, Path]) -> str:
    """Spoil one run folder the way `case` says; returns the text the error line must hold."""
    stage, apnea, hypopnea = runs["stage"], runs["apnea"], runs["hypopnea"]
    if case == "only_task_and_method":
        (stage / "metrics.json").write_text(json.dumps({"task": "sleep_stage", "method": "linear_probe"}))
        return f"{stage / 'metrics.json'}: incomplete run record (no label_fraction)"
    if case == "no_test":
        edit_metrics(apnea, _drop("test"))
        return f"{apnea / 'metrics.json'}: incomplete run record (no test)"
    if case == "no_pooled":
        edit_metrics(stage, _drop("test", "pooled"))
        return f"{stage / 'metrics.json'}: incomplete run record (no test.pooled)"
    if case == "test_is_a_list":
        edit_metrics(stage, _set([1, 2], "test"))
        return f"{stage / 'metrics.json'}"
    if case == "label_fraction_text":
        edit_metrics(hypopnea, _set("all", "label_fraction"))
        return f"{hypopnea / 'metrics.json'}: incomplete run record (label_fraction"
    if case == "label_fraction_zero":  # a fraction of the train labels, on the plot's logarithmic axis
        edit_metrics(hypopnea, _set(0, "label_fraction"))
        return f"{hypopnea / 'metrics.json'}: incomplete run record (label_fraction is 0, not in (0, 1])"
    if case == "ci_not_a_pair":
        edit_metrics(stage, _set({"kappa": 0.5}, "test", "ci"))
        return f"{stage / 'metrics.json'}: incomplete run record"
    if case == "event_detection_no_events":
        edit_metrics(stage, _set("event_detection", "task"))
        return f"{stage / 'metrics.json'}: incomplete run record (no test.events)"
    if case == "predictions_deleted":
        (hypopnea / "predictions.parquet").unlink()
        return f"{hypopnea / 'predictions.parquet'}: missing"
    if case == "predictions_corrupt":
        (apnea / "predictions.parquet").write_bytes(b"PAR1 not really")
        return f"{apnea / 'predictions.parquet'}: cannot read"
    if case == "cohort_moved":
        runs["cohort"].rename(runs["cohort"].with_name("cohort_moved"))
        return f"{apnea / 'metrics.json'}: its cohort {runs['cohort']} holds no manifest.parquet"
    if case == "no_data":
        edit_metrics(apnea, _drop("data"))
        return f"{apnea / 'metrics.json'}: no data"
    if case == "manifest_without_ahi":
        pd.DataFrame({"recording_id": list(RECORDINGS)}).to_parquet(runs["cohort"] / "manifest.parquet")
        return f"{runs['cohort'] / 'manifest.parquet'}: cannot read the scored AHI"
    if case == "no_scale_and_no_cohort_splits":  # the scale would be fitted on the cohort's val: it has no splits
        edit_metrics(hypopnea, _drop("event_calibration"))
        return f"{hypopnea / 'metrics.json'}: no usable event_calibration scale"
    raise AssertionError(case)


CASES = (
    "only_task_and_method",
    "no_test",
    "no_pooled",
    "test_is_a_list",
    "label_fraction_text",
    "label_fraction_zero",
    "ci_not_a_pair",
    "event_detection_no_events",
    "predictions_deleted",
    "predictions_corrupt",
    "cohort_moved",
    "no_data",
    "manifest_without_ahi",
    "no_scale_and_no_cohort_splits",
)


@pytest.mark.parametrize("case", CASES)
def test_unreadable_run_is_one_error_line_and_makes_no_out(case, runs, tmp_path, capsys):
    expect = break_run(case, runs)
    out = tmp_path / "fresh" / "table"
    before = snapshot(tmp_path)
    capsys.readouterr()
    assert exit_code(evaluate.main, argv_of(runs, out)) == 2
    assert_one_error_line(capsys.readouterr().err, expect)
    assert not (tmp_path / "fresh").exists()  # no empty --out (nor the folder above it) left behind
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("case", ("no_test", "predictions_deleted", "cohort_moved"))
def test_unreadable_run_leaves_an_earlier_table_as_it_was(case, runs, tmp_path, capsys):
    out = tmp_path / "table"
    assert exit_code(evaluate.main, argv_of(runs, out)) == 0
    (out / "notes.txt").write_text("mine\n")
    before = snapshot(out)
    expect = break_run(case, runs)
    capsys.readouterr()
    assert exit_code(evaluate.main, argv_of(runs, out)) == 2
    assert_one_error_line(capsys.readouterr().err, expect)
    assert snapshot(out) == before
    assert sorted(p.name for p in out.iterdir()) == sorted(Path(p).name for p in before)  # no temp files


def test_failed_write_leaves_the_earlier_table_and_no_new_folder(runs, tmp_path, capsys, monkeypatch):
    """A write that fails half way (a full disk on the last file) changes none of an earlier table's files and
    leaves no folder it made."""
    out = tmp_path / "table"
    assert exit_code(evaluate.main, argv_of(runs, out)) == 0
    before = snapshot(out)
    real = evaluate.write_all_atomic

    def disk_full(path: Path) -> None:
        path.write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(evaluate, "write_all_atomic", lambda writes: real([*writes[:-1], (writes[-1][0], disk_full)]))
    edit_metrics(runs["stage"], _set(0.5, "label_fraction"))  # the new table would differ
    for target in (out, tmp_path / "fresh" / "table"):
        capsys.readouterr()
        assert exit_code(evaluate.main, argv_of(runs, target)) == 2
        assert_one_error_line(capsys.readouterr().err, f"--out {target}: cannot write")
    assert snapshot(out) == before
    assert sorted(p.name for p in out.iterdir()) == sorted(Path(p).name for p in before)
    assert not (tmp_path / "fresh").exists()


def test_real_command_line_names_the_missing_key(runs, tmp_path):
    """The reproduced report: `{"task": ..., "method": ...}` only was a KeyError traceback with exit 1."""
    expect = break_run("only_task_and_method", runs)
    shutil.rmtree(runs["apnea"])
    shutil.rmtree(runs["hypopnea"])
    out = tmp_path / "table"
    ran = subprocess.run(
        [sys.executable, "downstream/evaluate.py", str(runs["stage"]), "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ran.returncode == 2, ran.stderr[-3000:]
    assert_one_error_line(ran.stderr, expect)
    assert not out.exists()


def test_runs_of_two_cohorts_are_warned_about(runs, tmp_path, capsys):
    """One table over runs of two cohorts: each row stands, with its run folder, and the table says so."""
    other = tmp_path / "other_cohort"
    shutil.copytree(runs["cohort"], other)
    edit_metrics(runs["stage"], _set(str(other), "data"))
    assert evaluate.main([str(runs["stage"]), str(runs["apnea"]), "--out", str(tmp_path / "table")]) == 0
    out = capsys.readouterr().out
    assert "warning: the runs come from 2 cohorts" in out
    assert f"| {runs['stage']} |" in (tmp_path / "table" / "comparison.md").read_text()


def test_runs_of_two_seeds_are_plotted_as_two_series(runs, tmp_path):
    """The plot joins one setup's runs across label fractions; two seeds of it are two lines, not one zigzag."""
    other = tmp_path / "stage_seed_7"
    shutil.copytree(runs["stage"], other)
    edit_metrics(other, _set(7, "seed"))
    rows = evaluate.write_rows(evaluate.comparison_rows([runs["stage"], other]), tmp_path / "table")
    series = sorted(row["series"] for row in rows)
    assert len(set(series)) == 2 and series[1].endswith("(seed 7)"), series
