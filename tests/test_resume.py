"""What a run may resume (utils/resume.py): a checkpoint of another split, batch, selection or backbone file is
refused in one line; a resumed run leaves no report of its earlier finish beside the model it trains now;
fine-tuning resumed in its LoRA phase does not train its first phase again, and takes --resume PATH."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from test_engine import run_toy

from downstream.fine_tuning import train as fine_tuning
from downstream.linear_probing import train as linear_probing
from models.loading import read_checkpoint
from tests.test_downstream import RUN, backbones, cohort  # noqa: F401
from utils.config import UsageError
from utils.resume import clear_run_results, read_resume_checkpoint

assert RUN[-2:] == ["--resume", "none"]
QUIET = RUN[:-2]  # the test runs' options without their fresh start


def test_another_split_batch_or_selection_is_another_run(tmp_path):
    out, data = tmp_path / "run", tmp_path / "data"
    data.mkdir()
    (data / "splits.json").write_text('{"subjects": {"test": ["1"]}}')
    run_toy(out, "--max-steps", "1", "--data", str(data))
    saved = SimpleNamespace(**read_checkpoint(out / "last.pt")["config"])
    assert read_resume_checkpoint("auto", out, "toy", saved)[0] == out / "last.pt"
    (data / "splits.json").write_text('{"subjects": {"test": ["2"]}}')  # the same folder, re-split since
    with pytest.raises(UsageError, match="trained on another split of .*splits.json changed"):
        read_resume_checkpoint("auto", out, "toy", saved)
    with pytest.raises(UsageError, match="trained on another split"):
        run_toy(out, "--max-steps", "2", "--data", str(data))
    (data / "splits.json").write_text('{"subjects": {"test": ["1"]}}')

    # another batch: the steps per pass and the lr schedule would not fit the step resumed at
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(UsageError, match="batch size 8 x 1 accumulation steps, this run 4 x 1"):
        run_toy(out, "--max-steps", "2", "--data", str(data), "--batch-size", "4")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    run_toy(out, "--max-steps", "2", "--data", str(data), "--batch-size", "8")  # the same batch resumes


def test_results_of_an_earlier_finish_go_when_training_starts_again(tmp_path):
    out = tmp_path / "run"
    run_toy(out, "--max-steps", "2")
    (out / "metrics.json").write_text(json.dumps({"outputs": {"predictions": "predictions.parquet", "up": "../x"}}))
    for name in ("predictions.parquet", "notes.txt"):
        (out / name).write_text("earlier")
    (tmp_path / "x").write_text("outside the run")
    run_toy(out, "--max-steps", "3")  # resumed: the report of step 2 would describe another model than best.pt
    assert not (out / "metrics.json").exists() and not (out / "predictions.parquet").exists()
    assert (out / "notes.txt").is_file() and (tmp_path / "x").is_file() and (out / "best.pt").is_file()
    (out / "metrics.json").write_text("{not json")
    clear_run_results(out, checkpoints=True)
    assert not (out / "metrics.json").exists() and not (out / "best.pt").exists() and not (out / "last.pt").exists()


def test_fine_tuning_resumes_its_lora_phase_without_training_phase_one_again(cohort, backbones, tmp_path, capsys):
    out = tmp_path / "ft"
    args = ["--data", str(cohort), "--backbone", str(backbones["eeg"]), "--task", "sleep_stage", "--out", str(out)]
    args += ["--epochs-per-window", "8", "--stride", "8", "--context-passes", "2", "--batch-size", "2", *QUIET]
    assert fine_tuning.main([*args, "--epochs", "2", "--max-steps", "1", "--resume", "none"]) == 0
    phase_one = {p.name: p.read_bytes() for p in (out / "context_phase").iterdir() if p.is_file()}
    capsys.readouterr()
    resumed = [*args, "--epochs", "2", "--max-steps", "2", "--resume", str(out / "last.pt")]
    assert fine_tuning.main(resumed) == 0  # a path: phase 2's checkpoint
    printed = capsys.readouterr().out
    assert "phase 1" not in printed and f"resumed from {out / 'last.pt'}" in printed
    assert {p.name: p.read_bytes() for p in (out / "context_phase").iterdir() if p.is_file()} == phase_one
    assert read_checkpoint(out / "last.pt")["step"] == 2 and (out / "metrics.json").is_file()


def test_a_probe_selected_otherwise_or_over_a_changed_backbone_file_is_not_resumed(cohort, backbones, tmp_path, capsys):
    backbone = tmp_path / "backbone.pt"
    backbone.write_bytes(backbones["eeg"].read_bytes())
    out = tmp_path / "probe"
    args = ["--data", str(cohort), "--backbone", str(backbone), "--task", "sleep_stage", "--out", str(out)]
    args += QUIET
    args += ["--batch-size", "100000"]  # more than the train epochs: the scripts clip it, the same on a resume
    assert linear_probing.main([*args, "--epochs", "2", "--max-steps", "1", "--resume", "none"]) == 0
    assert linear_probing.main([*args, "--epochs", "2", "--max-steps", "2"]) == 0  # resumed
    assert f"resumed from {out / 'last.pt'}" in capsys.readouterr().out
    with pytest.raises(SystemExit) as stopped:  # its best.pt was chosen by kappa: a loss would compare other scores
        linear_probing.main([*args, "--epochs", "2", "--max-steps", "2", "--select-metric", "loss"])
    assert stopped.value.code == 2 and "(select_metric 'kappa' -> 'loss')" in capsys.readouterr().err
    backbone.write_bytes(backbones["fusion"].read_bytes())  # a pretraining run at the same path went on
    with pytest.raises(SystemExit) as stopped:
        linear_probing.main([*args, "--epochs", "2", "--max-steps", "2", "--resume", "auto"])
    assert stopped.value.code == 2 and "trained on another backbone" in capsys.readouterr().err


def test_a_damaged_phase_one_checkpoint_names_what_to_do(cohort, backbones, tmp_path, capsys):
    """Killed in phase 1 and its last.pt damaged since: no --resume names phase 1's checkpoint, so the advice is
    to remove the phase's folder (or start afresh), not to --resume a file that --resume would refuse."""
    out = tmp_path / "ft"
    args = ["--data", str(cohort), "--backbone", str(backbones["eeg"]), "--task", "sleep_stage", "--out", str(out)]
    args += ["--epochs-per-window", "8", "--stride", "8", "--context-passes", "2", "--batch-size", "2", *QUIET]
    assert fine_tuning.main([*args, "--epochs", "1", "--max-steps", "1", "--resume", "none"]) == 0
    for name in ("last.pt", "best.pt", "metrics.json"):  # as if killed in phase 1, before phase 2 saved anything
        (out / name).unlink()
    phase_last = out / "context_phase" / "last.pt"
    phase_last.write_bytes(phase_last.read_bytes()[:100])
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        fine_tuning.main([*args, "--epochs", "1", "--max-steps", "1"])
    assert stop.value.code == 2
    (line,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert f"{phase_last}: cannot read it as a checkpoint" in line
    assert f"phase 1's own checkpoint: remove {out / 'context_phase'}" in line and "--resume " + str(out) not in line
