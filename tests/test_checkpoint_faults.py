"""Faults around a run's files: a kill while best.pt is written, a garbled log, flipped bytes in a checkpoint,
temp files of killed writers, a binary --config file. Each leaves the run resumable or gets one `error:` line
naming the file; none silently changes what a run reports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from models.loading import CheckpointError, read_checkpoint
from tests.test_engine import run_toy
from utils import checkpoint as checkpoint_module
from utils import engine as engine_module
from utils.checkpoint import atomic_save
from utils.config import UsageError
from utils.config_file import load_config_file


def test_best_pt_is_written_before_last_pt(tmp_path, monkeypatch):
    """last.pt records `best` as its own step, so a kill between the two writes must find the earlier last.pt
    (which names the earlier, intact best.pt), never a last.pt naming a best.pt that was not written."""
    order = []

    def recording(obj, path):
        order.append((obj["step"], Path(path).name))
        return atomic_save(obj, path)

    monkeypatch.setattr(engine_module, "atomic_save", recording)
    run_toy(tmp_path / "run", "--passes", "2", monitor=lambda model, device: {"score": 1.0 + len(order)})
    both = sorted(
        {step for step, name in order if name == "best.pt"} & {step for step, name in order if name == "last.pt"}
    )
    assert both  # the val score rose at every pass: each pass wrote both
    for step in both:
        assert [name for at, name in order if at == step] == ["best.pt", "last.pt"]


def test_a_garbled_log_stops_a_resume_before_it_changes_anything(tmp_path):
    run = tmp_path / "run"
    run_toy(run, "--max-steps", "2")
    lines = (run / "log.jsonl").read_text().splitlines()
    (run / "log.jsonl").write_text("\n".join(["{not json", *lines]) + "\n")
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    with pytest.raises(UsageError, match=r"log\.jsonl: line 1 is not valid JSON.*--resume none"):
        run_toy(run, "--max-steps", "4")
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    (run / "steps.jsonl").write_bytes(b"\xbf\xff\x00binary")
    (run / "log.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(UsageError, match=r"steps\.jsonl: not a text file"):
        run_toy(run, "--max-steps", "4")


def test_flipped_bytes_inside_a_checkpoint_are_refused(tmp_path):
    path = atomic_save({"model": {"w": torch.arange(4096, dtype=torch.float32)}, "model_kind": "x"}, tmp_path / "c.pt")
    assert read_checkpoint(path, required=("model",), run_directory=False)["model"]["w"][5] == 5
    data = bytearray(path.read_bytes())
    at = bytes(data).index(torch.arange(4096, dtype=torch.float32).numpy().tobytes()[400:416])
    data[at : at + 16] = b"\xff" * 16  # a NaN in the middle of the tensor; the archive still opens
    path.write_bytes(bytes(data))
    assert torch.isnan(torch.load(path, weights_only=True)["model"]["w"]).any()  # torch reads it without a word
    with pytest.raises(CheckpointError, match=r"c\.pt: damaged \(the stored checksum"):
        read_checkpoint(path, required=("model",), run_directory=False)


def test_temp_files_of_killed_writers_are_removed_by_the_next_save(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".last.pt.{int(dead.stdout)}.tmp"
    stale.write_bytes(b"half a checkpoint")
    alive = tmp_path / f".last.pt.{checkpoint_module.os.getppid()}.tmp"  # a live process: still writing
    alive.write_bytes(b"being written")
    other = tmp_path / f".best.pt.{int(dead.stdout)}.tmp"  # another file's: left to its own next save
    other.write_bytes(b"x")
    atomic_save({"step": 1}, tmp_path / "last.pt")
    assert not stale.exists() and alive.exists() and other.exists()
    assert (tmp_path / "last.pt").is_file()


def test_a_binary_config_file_is_named_in_the_error(tmp_path):
    path = tmp_path / "config.json"
    path.write_bytes(b"\xbf\xff\x00\x01")
    with pytest.raises(ValueError, match=r"config\.json: not a JSON or YAML text file"):
        load_config_file(path)


def test_a_finished_run_is_not_rerun_under_other_options(tmp_path):
    """Resumed with another seed, a finished run would train nothing yet write the new seed into its record: it
    is refused, and nothing in the folder changes. More passes continue it (there is something to train)."""
    run = tmp_path / "run"
    run_toy(run, "--passes", "1")
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    with pytest.raises(UsageError, match=r"a finished run \(step 3\) with other options.*'seed': \(0, 9\)"):
        run_toy(run, "--passes", "1", "--seed", "9")
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    with pytest.raises(UsageError, match=r"a finished run \(step 3\) with other options.*'max_steps': \(0, 2\)"):
        run_toy(run, "--passes", "1", "--max-steps", "2")  # a cap below the step reached trains nothing either
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    _, summary = run_toy(run, "--passes", "2", "--seed", "9")
    assert summary["step"] == 6
