"""`utils.checkpoint.staged_folder` after a run was killed: a report set replaced by two renames must come back
if the kill fell between them, and the staging folders of dead processes must not pile up; a running process's
folders are left alone."""

from __future__ import annotations

import os
import subprocess
import sys

from utils.checkpoint import staged_folder


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_kill_between_the_renames_gives_the_earlier_folder_back(tmp_path):
    out = tmp_path / "report"
    dead = _dead_pid()
    old = tmp_path / f".report.{dead}.old"  # the earlier report, moved aside; the new one never took its place
    old.mkdir()
    (old / "report.md").write_text("earlier")
    (tmp_path / f".report.{dead}.tmp").mkdir()
    with staged_folder(out) as stage:
        assert (out / "report.md").read_text() == "earlier"  # restored before the new run writes
        (stage / "report.md").write_text("new")
    assert (out / "report.md").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]


def test_leftovers_of_dead_runs_go_and_a_running_ones_stay(tmp_path):
    out = tmp_path / "report"
    out.mkdir()
    dead = _dead_pid()
    for name in (f".report.{dead}.tmp", f".report.{dead}.old", f".report.{os.getppid()}.tmp"):
        (tmp_path / name).mkdir()
    with staged_folder(out) as stage:
        (stage / "report.md").write_text("new")
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".report.{os.getppid()}.tmp", "report"]
