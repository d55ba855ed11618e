"""dataset/data_parser.py when the environment, not a recording, is at fault: a full, over-quota or read-only disk
stops the run (exit 2, one `error:` line naming the file) and keeps every earlier output; a second parser run
into the same DST is refused while shard runs of one cohort still run side by side.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from dataset.atomic_files import write_all_atomic
from dataset.data_parser import main
from dataset.worker_pool import run_in_workers
from tests.parser_nights import make_night, parse


def _snapshot(dst: Path) -> dict[str, bytes]:
    return {str(p.relative_to(dst)): p.read_bytes() for p in sorted(dst.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EROFS])
def test_a_full_disk_stops_the_rerun_and_keeps_every_earlier_output(tmp_path, monkeypatch, capsys, code):
    """--overwrite on a disk that fills up: no night is marked failed and no good table removed; the manifest,
    events, splits and parser_config.json stay those of the earlier run, and no temp file is left."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    for i in range(3):
        make_night(src, f"d-{i}")
    parse(src, dst)
    assert (dst / "splits.json").is_file()
    before = _snapshot(dst)

    def full(*args, **kwargs):
        raise OSError(code, "Error writing bytes to file")  # as pyarrow raises it: no file named

    monkeypatch.setattr(pq.ParquetWriter, "write_table", full)  # in this process: --workers 0
    assert main(["--src", str(src), "--dst", str(dst), "--overwrite", "--workers", "0", "--no-progress"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    staged = dst / "recordings" / ".staging" / "d-0.parquet"  # a new table waits there for the new manifest
    assert line.startswith(f"error: {staged}: cannot write ({os.strerror(code)})")
    assert _snapshot(dst) == before | {".parser.lock": (dst / ".parser.lock").read_bytes()}


def test_a_rerun_with_other_settings_stopped_midway_changes_nothing_and_resumes(tmp_path, monkeypatch):
    """A rerun with other channels, stopped by Ctrl-C after two of three nights: every table still matches the
    earlier manifest and parser_config.json. The same command again reuses the two nights it made and moves all
    three tables in with the new manifest."""
    from dataset import data_parser

    src, dst = tmp_path / "src", tmp_path / "dst"
    for i in range(3):
        make_night(src, f"c-{i}")
    parse(src, dst)
    before = _snapshot(dst)
    real_run_job, calls = data_parser.run_job, []

    def interrupted(*args, **kwargs):
        calls.append(args[0].recording_id)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_run_job(*args, **kwargs)

    monkeypatch.setattr(data_parser, "run_job", interrupted)
    with pytest.raises(KeyboardInterrupt):
        parse(src, dst, channels=["eeg_c4"], workers=0)
    after = {k: v for k, v in _snapshot(dst).items() if not k.startswith("recordings/.staging/")}
    assert after == before | {".parser.lock": (dst / ".parser.lock").read_bytes()}
    monkeypatch.setattr(data_parser, "run_job", real_run_job)
    manifest = parse(src, dst, channels=["eeg_c4"])
    assert [run["reused"] for run in manifest.attrs["runs"].values()] == [True, True, False]
    assert set(pq.read_schema(dst / "recordings" / "c-0.parquet").names) & {"eeg_c3", "eeg_c4"} == {"eeg_c4"}
    assert not (dst / "recordings" / ".staging").exists()


def test_a_full_disk_at_the_manifest_names_it_and_keeps_the_earlier_one(tmp_path, monkeypatch, capsys):
    """The nights are reused, then writing manifest.parquet fails: the error names it, nothing earlier changes."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    for i in range(3):
        make_night(src, f"m-{i}")
    parse(src, dst)
    before = _snapshot(dst)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "Error writing bytes to file")  # pandas/pyarrow name no file

    monkeypatch.setattr(pd.DataFrame, "to_parquet", full)
    assert main(["--src", str(src), "--dst", str(dst), "--no-progress"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"error: {dst / 'manifest.parquet'}: cannot write (No space left on device)")
    assert _snapshot(dst) == before | {".parser.lock": (dst / ".parser.lock").read_bytes()}
    assert not list(dst.rglob("*.tmp"))


def test_a_second_run_into_the_same_dst_is_refused(tmp_path, capsys):
    """While a run holds DST/.parser.lock another gets exit 2 naming DST and the holder's pid, and writes
    nothing; shard runs share it (each holds only its own shard), a full run or a merge does not."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    for i in range(2):
        make_night(src, f"l-{i}")
    dst.mkdir()
    with open(dst / ".parser.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write("4242\n")
        held.flush()
        assert main(["--src", str(src), "--dst", str(dst), "--no-progress"]) == 2
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert line == f"error: {dst}: in use by another parser run (pid 4242)"
        assert main(["--src", str(src), "--dst", str(dst), "--shard", "1/2", "--no-progress"]) == 2
        capsys.readouterr()
    assert not [p for p in dst.rglob("*") if p.is_file() and p.name != ".parser.lock"]
    with open(dst / ".parser.lock") as shard_run:  # a shard run in progress: another shard may run, not a merge
        fcntl.flock(shard_run, fcntl.LOCK_SH | fcntl.LOCK_NB)
        assert main(["--src", str(src), "--dst", str(dst), "--shard", "2/2", "--no-progress"]) == 0
        with open(dst / ".parser.shard-1-of-2.lock", "w") as shard_one:
            fcntl.flock(shard_one, fcntl.LOCK_EX | fcntl.LOCK_NB)
            assert main(["--src", str(src), "--dst", str(dst), "--shard", "1/2", "--no-progress"]) == 2
        assert main(["--src", str(src), "--dst", str(dst), "--shard", "1/2", "--no-progress"]) == 0
        assert main(["--merge", "--dst", str(dst), "--no-progress"]) == 2
        assert "in use by another parser run" in capsys.readouterr().err
    assert main(["--merge", "--dst", str(dst), "--no-progress"]) == 0


def test_a_rerun_cut_short_keeps_the_tables_the_earlier_manifest_lists(tmp_path, monkeypatch):
    """A night whose scoring went away is no longer ok; a rerun killed before its manifest is written must not
    have removed that night's table yet, which the earlier manifest and splits still list as ok. A rerun that
    finishes removes it."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    for i in range(3):
        make_night(src, f"k-{i}")
    parse(src, dst)
    table = dst / "recordings" / "k-1.parquet"
    assert table.is_file()
    next(src.rglob("k-1-nsrr.xml")).unlink()
    before = _snapshot(dst)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # the run is stopped between its nights and its cohort files

    monkeypatch.setattr("dataset.data_parser.write_cohort_outputs", killed)
    assert main(["--src", str(src), "--dst", str(dst), "--no-progress"]) == 130  # one `interrupted:` line
    assert table.is_file()
    assert _snapshot(dst) == before | {".parser.lock": (dst / ".parser.lock").read_bytes()}
    monkeypatch.undo()
    assert main(["--src", str(src), "--dst", str(dst), "--no-progress"]) == 0
    manifest = pd.read_parquet(dst / "manifest.parquet").set_index("recording_id")
    assert manifest.loc["k-1", "status"] == "skipped" and not table.exists()


def _mark_and_return(item: tuple[str, int]) -> int:
    """A pool job: leave a file named after the item (so the test sees which items started), return the item."""
    folder, index = item
    Path(folder, str(index)).touch()
    if index == 1:  # still running when item 0's result stops the pool, however long either worker took to start
        deadline = time.monotonic() + 60
        while not Path(folder, "0").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)
    return index


def test_the_worker_pool_starts_no_item_after_a_stopping_result(tmp_path):
    """--workers > 1 and a full disk: once a result says stop, the items already running finish and no other
    starts, so a run on a full disk ends without trying every remaining night."""
    items = [(str(tmp_path), i) for i in range(6)]
    results = run_in_workers(items, _mark_and_return, 2, on_death=lambda i, reason: -1, stop_when=lambda r: r == 0)
    assert results == [0, 1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0", "1"]
    assert run_in_workers(items, _mark_and_return, 2, on_death=lambda i, reason: -1) == list(range(6))


def _exit_on_two(item: int) -> int:
    """Exits the worker the way a native library's exit(3) would, on item 2."""
    if item == 2:
        os._exit(3)
    return item


def test_a_worker_that_exits_midway_fails_its_item_alone(tmp_path):
    """One worker that started and ran items, then exits with a code on one: that item gets its death reason (not
    the could-not-start one that stops a parser run), and the others go on in a fresh worker."""
    reasons = {}
    results = run_in_workers(list(range(4)), _exit_on_two, 1, on_death=lambda i, reason: reasons.setdefault(i, reason))
    assert results == [0, 1, "worker died: exit code 3", 3] and reasons == {2: "worker died: exit code 3"}


def test_a_full_disk_at_the_splits_keeps_the_manifest_that_matches_them(tmp_path, monkeypatch, capsys):
    """A new night is parsed, then writing splits.json fails: the new manifest, CSV and events are not put in
    place either, so the cohort files never disagree (a manifest listing a night the splits lack)."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    for i in range(3):
        make_night(src, f"s-{i}")
    parse(src, dst)
    make_night(src, "s-3")
    before = {name: (dst / name).read_bytes() for name in ("manifest.parquet", "manifest.csv", "events.parquet")}
    before["splits.json"] = (dst / "splits.json").read_bytes()

    def full(splits):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("dataset.cohort_outputs.splits_json", full)
    assert main(["--src", str(src), "--dst", str(dst), "--no-progress"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"error: {dst / 'splits.json'}: cannot write (No space left on device)")
    assert {name: (dst / name).read_bytes() for name in before} == before
    assert not list(dst.rglob("*.tmp"))
    monkeypatch.undo()
    assert main(["--src", str(src), "--dst", str(dst), "--no-progress"]) == 0
    assert "s-3" in set(pd.read_parquet(dst / "manifest.parquet")["recording_id"])


def test_a_failed_rename_leaves_no_temp_file_behind(tmp_path):
    """The renames of `write_all_atomic` need no space; one that fails all the same (a target that became a folder)
    raises, and the temp files of the targets after it do not stay beside them."""
    (tmp_path / "b.txt").mkdir()
    writes = [(tmp_path / name, lambda tmp, name=name: tmp.write_text(name)) for name in ("a.txt", "b.txt", "c.txt")]
    with pytest.raises(OSError):
        write_all_atomic(writes)
    assert (tmp_path / "a.txt").read_text() == "a.txt" and not (tmp_path / "c.txt").exists()
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_rerun_that_remakes_every_table_warns_when_the_room_is_not_there(tmp_path, monkeypatch, capsys):
    """Tables are staged beside the earlier ones until the run ends: a rerun with other settings needs their size
    again, and says so before the first night when the disk has less free; a rerun as it was does not."""
    from collections import namedtuple

    from dataset import data_parser

    src, dst = tmp_path / "src", tmp_path / "dst"
    for i in range(2):
        make_night(src, f"w-{i}")
    parse(src, dst, workers=0)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(data_parser.shutil, "disk_usage", lambda path: usage(10**9, 10**9, 1000))
    capsys.readouterr()
    parse(src, dst, workers=0)
    assert "stages them beside" not in capsys.readouterr().err
    parse(src, dst, workers=0, channels=["eeg_c4"])
    assert "this run makes every table again and stages them beside the earlier ones" in capsys.readouterr().err
