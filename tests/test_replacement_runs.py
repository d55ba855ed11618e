"""A run started afresh over an earlier run of the same --out trains in OUT/.next and replaces the earlier run
only when it finished (utils.resume): a crash, a failed test evaluation or a kill leaves OUT byte for byte as it
was; `--resume auto` goes on in OUT/.next, and the published run is the run an unbroken start would have made."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_downstream import RUN, backbones, cohort  # noqa: F401 (module fixtures)

from downstream import evaluate, runs
from downstream.linear_probing import train as linear_probing
from models.loading import CheckpointError, read_checkpoint
from pretrained.unimodal.pretrain import main as unimodal_main
from utils import resume
from utils.checkpoint import load_checkpoint, save_model_checkpoint
from utils.config import UsageError
from utils.engine import Trainer
from utils.resume import (
    PUBLISHING,
    REPLACEMENT,
    carried_best,
    lock_run_folder,
    publish_run,
    start_training_folder,
    training_folder,
)
from utils.run_logging import read_jsonl

TINY = ["--preset", "tiny", "--batch-size", "4", "--workers", "0", "--no-progress", "--no-monitor"]


def files_of(folder: Path) -> dict[str, bytes]:
    """Every file below `folder` outside a replacement in progress, by relative path."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and REPLACEMENT not in p.relative_to(folder).parts
    }


def test_where_a_run_trains(tmp_path):
    out = tmp_path / "run"
    assert training_folder("none", out) == out and training_folder("auto", out) == out  # nothing there yet
    out.mkdir()
    (out / "config.json").write_text("{}")  # a run that never saved a checkpoint is no run to keep
    assert training_folder("none", out) == out
    (out / "last.pt").write_bytes(b"x")
    assert training_folder("none", out) == out / REPLACEMENT
    assert training_folder("auto", out) == out  # goes on from OUT/last.pt
    assert training_folder(str(out / "last.pt"), out) == out
    assert training_folder(str(out / "best.pt"), out) == out  # goes on with this folder's run
    assert training_folder(str(tmp_path / "other.pt"), out) == out / REPLACEMENT  # another folder's: a new run
    (out / REPLACEMENT).mkdir()
    assert training_folder("auto", out) == out  # a replacement that saved nothing has nothing to go on from
    (out / REPLACEMENT / "context_phase").mkdir()
    (out / REPLACEMENT / "context_phase" / "last.pt").write_bytes(b"x")  # fine-tuning killed in its first phase
    assert training_folder("auto", out) == out / REPLACEMENT
    (out / REPLACEMENT / "last.pt").write_bytes(b"x")
    assert training_folder("auto", out) == out / REPLACEMENT
    assert training_folder(str(out / REPLACEMENT / "best.pt"), out) == out / REPLACEMENT


def test_a_run_in_the_folder_itself_gives_up_an_abandoned_replacement(tmp_path):
    """A replacement killed before the earlier run's files were removed by hand: a fresh run then trains in --out
    itself, and the abandoned replacement goes, or `--resume auto` would later prefer it to the newer run."""
    out = tmp_path / "run"
    (out / REPLACEMENT).mkdir(parents=True)
    (out / REPLACEMENT / "last.pt").write_bytes(b"x")
    assert training_folder("none", out) == out
    start_training_folder("none", out)
    assert not (out / REPLACEMENT).exists()
    (out / REPLACEMENT).mkdir()
    (out / REPLACEMENT / "last.pt").write_bytes(b"x")
    start_training_folder("auto", out / REPLACEMENT)  # going on from it keeps it
    assert (out / REPLACEMENT / "last.pt").is_file()
    start_training_folder("none", out / REPLACEMENT)  # starting it afresh empties it
    assert not (out / REPLACEMENT).exists()


def test_a_crashed_fresh_start_leaves_the_earlier_run_and_goes_on_to_replace_it(tmp_path, monkeypatch, capsys):
    from dataset import data_parser, synthetic

    synthetic.generate_cohort(tmp_path / "src", nights=5, hours=0.25, seed=0)
    data_parser.parse_cohort(tmp_path / "src", tmp_path / "dst", workers=1, progress=False)
    data = ["--data", str(tmp_path / "dst")]
    out, unbroken = tmp_path / "eeg", tmp_path / "unbroken"
    assert unimodal_main([*data, "--out", str(out), *TINY, "--max-steps", "2"], modality="eeg") == 0
    earlier = files_of(out)
    again = [*data, *TINY, "--max-steps", "4", "--seed", "5", "--save-every-steps", "1"]
    assert unimodal_main([*again, "--out", str(unbroken)], modality="eeg") == 0

    original = Trainer._optimizer_step

    def crashing(self):
        grad_norm = original(self)
        if self.step == 3:
            raise OSError("disk full")
        return grad_norm

    monkeypatch.setattr(Trainer, "_optimizer_step", crashing)
    with pytest.raises(OSError, match="disk full"):
        unimodal_main([*again, "--out", str(out), "--resume", "none"], modality="eeg")
    assert "replaces the earlier run" in capsys.readouterr().out
    assert files_of(out) == earlier  # every byte of the earlier run, logs and config included
    assert load_checkpoint(out / REPLACEMENT / "last.pt")["step"] == 2
    monkeypatch.setattr(Trainer, "_optimizer_step", original)

    assert unimodal_main([*again, "--out", str(out)], modality="eeg") == 0  # --resume auto: goes on in .next
    assert not (out / REPLACEMENT).exists()
    published, reference = load_checkpoint(out / "last.pt"), load_checkpoint(unbroken / "last.pt")
    assert published["step"] == reference["step"] == 4
    assert all(torch.equal(published["model"][k], v) for k, v in reference["model"].items())
    config = json.loads((out / "config.json").read_text())
    assert config["out"] == str(out) and config["seed"] == 5
    assert (out / "config.1.json").read_bytes() == earlier["config.json"]  # the replaced run's options stay

    def logged(run):  # the run's pass records, without their timings
        records = [r for r in read_jsonl(run / "log.jsonl") if r["kind"] == "epoch"]
        return [{k: v for k, v in r.items() if "time" not in k and "per_s" not in k} for r in records]

    assert logged(out) == logged(unbroken) and logged(out)


def test_a_probe_whose_test_evaluation_fails_leaves_the_earlier_results(cohort, backbones, tmp_path, monkeypatch):  # noqa: F811
    out = tmp_path / "probe"
    argv = ["--data", str(cohort), "--backbone", str(backbones["eeg"]), "--out", str(out), *RUN[:-2]]
    argv += "--task sleep_stage --epochs 2 --batch-size 32".split()
    assert linear_probing.main(argv) == 0
    earlier = files_of(out)

    def failing(*args, **kwargs):
        raise OSError("no space left on device")

    monkeypatch.setattr(runs, "write_run_report", failing)
    with pytest.raises(OSError, match="no space"):
        linear_probing.main([*argv, "--seed", "7", "--resume", "none"])
    assert files_of(out) == earlier
    assert evaluate.find_runs([tmp_path]) == [out]  # the unfinished replacement is no run of the comparison
    monkeypatch.undo()

    assert linear_probing.main([*argv, "--seed", "7"]) == 0  # trained already: evaluated on test and published
    assert not (out / REPLACEMENT).exists()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["seed"] == 7 and set(metrics["outputs"].values()) <= {p.name for p in out.iterdir()}
    assert metrics["training"] == {"stopped": "completed", "step": metrics["training"]["step"], "epochs_completed": 2}
    assert json.loads((out / "config.1.json").read_text())["seed"] != 7


def test_a_publish_killed_half_way_is_finished_by_the_next_command(tmp_path, monkeypatch):
    """Killed after two of its files moved in, a publish leaves OUT mixed; the next command in OUT moves the rest
    in and removes what of the earlier run the new one does not overwrite, never a file already moved in."""
    out, stage = tmp_path / "run", tmp_path / "run" / REPLACEMENT
    stage.mkdir(parents=True)
    for name in ("best.pt", "last.pt", "steps.jsonl", "predictions.parquet"):
        (out / name).write_text(f"earlier {name}")
    (out / "metrics.json").write_text(json.dumps({"outputs": {"predictions": "predictions.parquet"}}))
    (out / "config.json").write_text(json.dumps({"seed": 0, "out": str(out)}))
    (out / "context_phase").mkdir()  # a phase of the earlier run that the new one does not have
    (out / "context_phase" / "last.pt").write_text("earlier phase")
    (out / "probe-lf0.1").mkdir()  # another run kept below this one (a probe of this backbone): not the run's
    (out / "probe-lf0.1" / "metrics.json").write_text("{}")
    for name in ("best.pt", "last.pt", "log.jsonl", "metrics.json"):
        (stage / name).write_text(f"new {name}")
    (stage / "config.json").write_text(json.dumps({"seed": 1, "out": str(stage)}))
    moved, real = [], resume.os.replace

    def killed(source, target):
        if Path(target).parent == out and Path(source).parent == stage and not Path(target).name.startswith("config"):
            if len(moved) == 2:
                raise KeyboardInterrupt  # as a kill would
            moved.append(Path(target).name)
        real(source, target)

    monkeypatch.setattr(resume.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        publish_run(stage)
    monkeypatch.undo()
    assert (stage / PUBLISHING).is_file() and len(moved) == 2
    with pytest.raises(CheckpointError, match="a new run is moving into its folder"):  # parts of two runs
        read_checkpoint(out)
    with pytest.raises(ValueError, match="a new run is moving into its folder"):
        evaluate.read_run_metrics(out)
    assert training_folder("auto", out) == out  # finished first: the replacement is the run of OUT now
    assert not stage.exists()
    assert {p.name: p.read_text() for p in out.iterdir() if p.is_file() and p.suffix != ".json"} == {
        "best.pt": "new best.pt",
        "last.pt": "new last.pt",
        "log.jsonl": "new log.jsonl",
    }
    assert json.loads((out / "config.json").read_text()) == {"seed": 1, "out": str(out)}
    assert json.loads((out / "config.1.json").read_text())["seed"] == 0
    assert not (out / "context_phase").exists() and (out / "probe-lf0.1" / "metrics.json").is_file()


def test_a_signal_during_a_publish_waits_until_the_run_is_in_place(tmp_path, monkeypatch):
    out, stage = tmp_path / "run", tmp_path / "run" / REPLACEMENT
    stage.mkdir(parents=True)
    (out / "last.pt").write_text("earlier")
    for name in ("best.pt", "last.pt", "log.jsonl"):
        (stage / name).write_text(f"new {name}")
    real = resume.os.replace

    def interrupted(source, target):
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C in the middle of the moves
        real(source, target)

    monkeypatch.setattr(resume.os, "replace", interrupted)
    previous = signal.signal(
        signal.SIGINT, signal.default_int_handler
    )  # as in a terminal (a background job ignores it)
    try:
        with pytest.raises(KeyboardInterrupt):
            publish_run(stage)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert not stage.exists() and {p.name: p.read_text() for p in out.iterdir()} == {
        "best.pt": "new best.pt",
        "last.pt": "new last.pt",
        "log.jsonl": "new log.jsonl",
    }


def test_a_checkpoint_resumed_into_another_folder_brings_its_best(tmp_path):
    source, target = tmp_path / "a", tmp_path / "b"
    save_model_checkpoint(source / "last.pt", "toy", {}, {})
    best = {"metric": "val_kappa", "mode": "max", "value": 0.5, "epoch": 1, "step": 1}
    assert carried_best(source / "last.pt", source, best) == best  # its own folder: as saved
    assert carried_best(source / "last.pt", target, best)["value"] is None  # no best.pt to bring: saved anew
    save_model_checkpoint(source / "best.pt", "toy", {}, {})  # written at step 1
    assert carried_best(source / "last.pt", target, {**best, "step": 30})["value"] is None  # not the record's
    assert carried_best(source / "last.pt", target, best) == best
    assert (target / "best.pt").read_bytes() == (source / "best.pt").read_bytes()


def test_a_cut_publish_is_finished_only_by_the_folders_lock_holder(tmp_path):
    out, stage = tmp_path / "run", tmp_path / "run" / REPLACEMENT
    stage.mkdir(parents=True)
    (stage / "last.pt").write_text("new")
    (stage / PUBLISHING).write_text(json.dumps({"drop": []}))
    with held_elsewhere(out):
        with pytest.raises(UsageError, match="another training run is using this folder"):
            training_folder("auto", out)
        assert (stage / "last.pt").is_file() and not (out / "last.pt").exists()  # left to the holder


@contextlib.contextmanager
def held_elsewhere(folder: Path):
    """`folder` locked by another process, as a training run there holds it."""
    folder.mkdir(parents=True, exist_ok=True)
    script = (
        "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDONLY); fcntl.flock(fd, fcntl.LOCK_EX); "
        "print('held', flush=True); time.sleep(60)"
    )
    holder = subprocess.Popen([sys.executable, "-c", script, str(folder)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        yield
    finally:
        holder.kill()
        holder.wait()


def test_a_second_process_cannot_train_in_a_folder_in_use(tmp_path):
    out = tmp_path / "run"
    with held_elsewhere(out), pytest.raises(UsageError, match="another training run is using this folder"):
        lock_run_folder(out)
    lock_run_folder(out)  # free again


def test_fine_tuning_afresh_over_a_run_without_its_first_phase(cohort, backbones, tmp_path):  # noqa: F811
    """The new run's first phase is read from where it trained (OUT/.next/context_phase), not from the folder it
    will be published to, which holds no such phase here (the earlier run skipped it)."""
    from downstream.fine_tuning import train as fine_tuning

    out = tmp_path / "ft"
    argv = ["--data", str(cohort), "--backbone", str(backbones["eeg"]), "--out", str(out), *RUN[:-2]]
    argv += "--task sleep_stage --epochs-per-window 8 --stride 4 --epochs 1 --max-steps 2 --batch-size 2".split()
    argv += "--context-epochs 2 --context-batch-size 4".split()
    assert fine_tuning.main([*argv, "--context-passes", "0"]) == 0
    assert not (out / "context_phase").exists()
    assert fine_tuning.main([*argv, "--resume", "none", "--seed", "7"]) == 0
    phase = json.loads((out / "context_phase" / "config.json").read_text())
    assert phase["out"] == str(out / "context_phase") and not (out / REPLACEMENT).exists()
    assert json.loads((out / "metrics.json").read_text())["seed"] == 7


def test_a_failed_run_removes_only_the_folders_it_made(tmp_path, monkeypatch):
    """`--out` given relative, below an empty folder that was there before: after a failed run the folders the run
    made go, the empty folder above them and the current folder stay."""
    from utils.resume import discard_unused_run_folders

    work = tmp_path / "work"
    (work / "existing").mkdir(parents=True)
    monkeypatch.chdir(work)
    lock_run_folder(Path("existing/made/run"))
    lock_run_folder(Path("kept"))
    (work / "kept" / "config.json").write_text("{}")  # a run that wrote something stays whole
    discard_unused_run_folders()
    assert not (work / "existing" / "made").exists()
    assert (work / "existing").is_dir() and work.is_dir() and (work / "kept" / "config.json").is_file()
