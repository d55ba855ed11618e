"""Reliability of dataset/data_parser.py under hand-made faults: EDF/XML pairing across folders, duplicate
recording ids, EDF header record counts of 0 and -1, unwritable output folders, a worker killed mid-night and
a parser killed with its workers running. Nights come from dataset/synthetic.py and are minutes long."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from dataset.data_parser import main
from dataset.synthetic import generate_cohort, generate_night
from tests.parser_nights import DEFAULT_STAGES, SHHS1, make_night, parse

REPO = Path(__file__).resolve().parents[1]


def run_main(src: Path, dst: Path, *extra: str) -> tuple[int, pd.DataFrame | None]:
    """Exit code of the command line and the manifest it wrote (None when none was written)."""
    code = main(["--src", str(src), "--dst", str(dst), "--no-progress", *extra])
    path = dst / "manifest.parquet"
    return code, (pd.read_parquet(path) if path.exists() else None)


def night(folder: Path, recording_id: str, seed: int, hours: float = 0.1):
    folder.mkdir(parents=True, exist_ok=True)
    return generate_night(
        folder / f"{recording_id}.edf", folder / f"{recording_id}-nsrr.xml", recording_id, hours, seed
    )


def stages_of(dst: Path, recording_id: str) -> np.ndarray:
    return pq.read_table(dst / "recordings" / f"{recording_id}.parquet", columns=["stage"])["stage"].to_numpy()


# ------------------------------------------------------------------------------------------------ pairing
def test_same_recording_id_in_two_folders_never_borrows_the_other_folders_xml(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    first = night(src / "a", "dup-100021", seed=1)
    second = night(src / "b", "dup-100021", seed=2)
    night(src / "a", "other-100022", seed=3)
    assert not np.array_equal(first.stages, second.stages)  # a wrong pairing would show in the labels
    code, manifest = run_main(src, dst)
    assert code == 1  # the duplicate failed
    rows = manifest[manifest["recording_id"] == "dup-100021"]
    assert rows["edf"].tolist() == [str(first.edf_path), str(second.edf_path)]  # path order, deterministic
    ok, duplicate = rows.iloc[0], rows.iloc[1]
    assert ok["status"] == "ok" and ok["xml"] == str(first.xml_path)
    np.testing.assert_array_equal(stages_of(dst, "dup-100021"), first.stages[: ok["n_epochs"]])
    assert duplicate["status"] == "failed" and "duplicate recording id" in duplicate["reason"]
    assert str(first.edf_path) in duplicate["reason"] and str(second.edf_path) in duplicate["reason"]
    assert manifest.set_index("recording_id").loc["other-100022", "status"] == "ok"
    assert len(manifest) == 3  # no row for an XML: each sits beside its EDF


def test_nsrr_pairing_is_by_relative_path_and_two_candidates_fail(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    nights = generate_cohort(src, nights=3, hours=0.1, seed=0, layout="nsrr")
    one, two, three = nights
    shutil.copy(one.xml_path, one.edf_path.parent)  # a second candidate, beside the EDF
    stray = src / "polysomnography" / "annotations-events-nsrr" / "shhs2" / two.xml_path.name
    stray.parent.mkdir(parents=True)
    two.xml_path.rename(stray)  # the mirror folder of another cohort: not this EDF's annotation file
    code, manifest = run_main(src, dst)
    assert code == 1
    rows = {(r.recording_id, r.edf != ""): r for r in manifest.itertuples()}
    failed = rows[(one.recording_id, True)]
    assert failed.status == "failed" and "ambiguous annotation files" in failed.reason
    assert str(one.xml_path) in failed.reason and str(one.edf_path.parent / one.xml_path.name) in failed.reason
    assert not (dst / "recordings" / f"{one.recording_id}.parquet").exists()
    unpaired = rows[(two.recording_id, True)]
    assert unpaired.status == "skipped" and unpaired.xml == ""
    orphan = rows[(two.recording_id, False)]
    assert orphan.status == "skipped" and orphan.xml == str(stray) and "no EDF file" in orphan.reason
    assert rows[(three.recording_id, True)].status == "ok"


def test_an_unpaired_xml_never_removes_the_table_of_its_namesake(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    night(src / "a", "x-100031", seed=1)
    night(src / "a", "y-100032", seed=2)
    (src / "b").mkdir()
    shutil.copy(src / "a" / "x-100031-nsrr.xml", src / "b")  # an annotation file with no EDF beside it
    run_main(src, dst)
    table = dst / "recordings" / "x-100031.parquet"
    stamp = table.stat().st_mtime_ns
    code, manifest = run_main(src, dst)  # the rerun reuses the table; the orphan row must not delete it
    assert table.stat().st_mtime_ns == stamp
    statuses = manifest[manifest["recording_id"] == "x-100031"].set_index("xml")["status"].to_dict()
    assert statuses == {str(src / "a" / "x-100031-nsrr.xml"): "ok", str(src / "b" / "x-100031-nsrr.xml"): "skipped"}
    assert code == 0


# ------------------------------------------------------------------------------------ EDF record count
@pytest.mark.parametrize("declared, status", [(b"-1", "ok"), (b"0", "ok"), (b"-5", "failed")])
def test_header_record_count_unknown_or_zero_is_counted_and_flagged(tmp_path, declared, status):
    src, dst = tmp_path / "src", tmp_path / "dst"
    truth = night(src, "count-100041", seed=1)
    raw = bytearray(truth.edf_path.read_bytes())
    raw[236:244] = declared.ljust(8)  # "number of data records" field of the EDF header
    truth.edf_path.write_bytes(bytes(raw))
    night(src, "count-100042", seed=2)
    code, manifest = run_main(src, dst)
    row = manifest.set_index("recording_id").loc["count-100041"]
    assert row["status"] == status and code == (status == "failed")
    if status == "ok":
        assert row["n_epochs"] == len(truth.stages) and not row["truncated"]
        assert f"header record count {declared.decode()}" in row["warnings"]
        assert "counted" in row["warnings"] and "from the file size" in row["warnings"]
    else:
        assert "-5 data records" in row["reason"] and str(truth.edf_path) in row["reason"]


# ------------------------------------------------------------------------------------- unwritable output
@pytest.mark.parametrize("where", ["below_a_file", "a_file"])
def test_dst_that_cannot_be_created_is_one_error_line_and_exit_2(tmp_path, capsys, where):
    src = tmp_path / "src"
    generate_cohort(src, nights=1, hours=0.1, seed=0, layout="flat")
    blocker = tmp_path / "blocker"
    blocker.write_text("a regular file")
    dst = blocker / "dst" if where == "below_a_file" else blocker
    assert main(["--src", str(src), "--dst", str(dst), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and str(blocker) in err and "Traceback" not in err
    assert blocker.read_text() == "a regular file"


@pytest.mark.parametrize(
    "options, message",
    [
        (["--test-frac", "0.6", "--val-frac", "0.6"], "must leave subjects for pretraining"),
        (["--channels", "airflow", "spo2"], "no electrophysiology channel"),
    ],
    ids=["fractions", "no-electrophysiology"],
)
def test_options_no_night_can_satisfy_are_usage_errors(tmp_path, capsys, options, message):
    """Split fractions that leave no subject for pretraining and a channel set without electrophysiology (every
    night would be skipped) are one `error:` line and exit 2, before any night is processed."""
    src = tmp_path / "src"
    generate_cohort(src, nights=1, hours=0.1, seed=0, layout="flat")
    code, manifest = run_main(src, tmp_path / "dst", *options)
    err = capsys.readouterr().err
    assert code == 2 and manifest is None and not (tmp_path / "dst" / "recordings").exists()
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_read_only_recordings_folder_is_an_environment_error(tmp_path, capsys):
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    src, dst = tmp_path / "src", tmp_path / "dst"
    generate_cohort(src, nights=1, hours=0.1, seed=0, layout="flat")
    (dst / "recordings").mkdir(parents=True)
    (dst / "recordings").chmod(0o555)
    try:
        assert main(["--src", str(src), "--dst", str(dst), "--no-progress"]) == 2
    finally:
        (dst / "recordings").chmod(0o755)
    assert capsys.readouterr().err.startswith(f"error: {dst / 'recordings'}")
    assert not (dst / "manifest.parquet").exists()


def test_a_dst_whose_own_folder_is_read_only_stops_before_any_night(tmp_path, monkeypatch, capsys):
    """DST read-only while DST/recordings is writable: the cohort files could not be written at the end, so the run
    stops before it processes (and replaces the tables of) any night."""
    from dataset import data_parser

    src, dst = tmp_path / "src", tmp_path / "dst"
    generate_cohort(src, nights=1, hours=0.1, seed=0, layout="flat")
    (dst / "recordings").mkdir(parents=True)
    real_write = Path.write_bytes

    def write_bytes(self, data):
        if self.parent == dst:
            raise PermissionError(13, "Permission denied", str(self))
        return real_write(self, data)

    monkeypatch.setattr(Path, "write_bytes", write_bytes)
    monkeypatch.setattr(data_parser, "_run_jobs", lambda *a, **k: pytest.fail("processed nights"))
    assert main(["--src", str(src), "--dst", str(dst), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {dst}: cannot create or write") and err.count("\n") == 1


def test_a_table_that_cannot_be_written_or_removed_fails_that_night_only(tmp_path, monkeypatch, capsys):
    """What a read-only DST/recordings does to a rerun with --overwrite: writing fails, and so does removing
    the old table once the manifest is written; the night must fail with its reason, the removal failure is
    reported on stderr, and the cohort must finish."""
    from dataset import recording_job

    src, dst = tmp_path / "src", tmp_path / "dst"
    nights = generate_cohort(src, nights=3, hours=0.1, seed=0, layout="flat")
    assert run_main(src, dst)[0] == 0
    victim = nights[1].recording_id
    real_write, real_unlink = recording_job._write_parquet, Path.unlink

    def write(night, row, config, path):
        if path.stem == victim:
            raise PermissionError(13, "Permission denied", str(path))
        return real_write(night, row, config, path)

    def unlink(self, missing_ok=False):
        if self.parent == dst / "recordings" and victim in self.name:
            raise PermissionError(13, "Permission denied", str(self))
        return real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(recording_job, "_write_parquet", write)
    monkeypatch.setattr(Path, "unlink", unlink)
    code, manifest = run_main(src, dst, "--overwrite", "--workers", "0")  # the patches hold in this process
    assert code == 1
    rows = manifest.set_index("recording_id")
    assert rows.loc[victim, "status"] == "failed" and "Permission denied" in rows.loc[victim, "reason"]
    assert f"{victim}: could not remove the old" in capsys.readouterr().err
    assert (rows.drop(index=victim)["status"] == "ok").all()


# ------------------------------------------------------------------------------ worker death and orphans
def start_parser(
    tmp_path: Path, nights: int = 6, hours: float = 1.0, workers: int = 2
) -> tuple[subprocess.Popen, Path, Path]:
    """The command-line parser with `workers` on a flat cohort, started once its first table is written."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    generate_cohort(src, nights=nights, hours=hours, seed=0, layout="flat")
    with open(tmp_path / "parser.log", "w") as log:  # a file, not a pipe: orphans would hold a pipe open
        process = subprocess.Popen(
            [
                sys.executable,
                "dataset/data_parser.py",
                "--src",
                str(src),
                "--dst",
                str(dst),
                "--workers",
                str(workers),
                "--no-progress",
            ],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 120
    while not list((dst / "recordings").glob("**/*.parquet")) and process.poll() is None:  # staged tables too
        assert time.monotonic() < deadline, "the parser wrote no table in 120 s"
        time.sleep(0.005)
    assert process.poll() is None, "the parser finished before the test could act"
    return process, src, dst


def parser_workers(pid: int) -> list:
    """The worker processes of the parser `pid` (not the multiprocessing resource tracker)."""
    psutil = pytest.importorskip("psutil")
    return [child for child in psutil.Process(pid).children() if "resource_tracker" not in " ".join(child.cmdline())]


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
@pytest.mark.parametrize("workers", [1, 2])
def test_a_killed_worker_fails_its_night_and_the_cohort_finishes(tmp_path, workers):
    """Also with one worker (the default): the night runs outside the parser's process, so the cohort goes on."""
    process, src, dst = start_parser(tmp_path, workers=workers)
    try:
        victim = parser_workers(process.pid)[0]
        victim.send_signal(signal.SIGKILL)  # what the OOM killer does on a huge night
        process.wait(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 1, (tmp_path / "parser.log").read_text()  # some recording failed; not a crash
    assert not victim.is_running() or victim.status() == "zombie"
    manifest = pd.read_parquet(dst / "manifest.parquet")
    failed = manifest[manifest["status"] == "failed"]
    assert len(manifest) == 6 and len(failed) == 1, manifest[["recording_id", "status", "reason"]]
    assert (manifest["status"] != "skipped").all()
    reason = failed["reason"].iloc[0]
    assert "worker died: signal 9 (SIGKILL) / out of memory?" in reason and failed["edf"].iloc[0] in reason
    for row in manifest.itertuples():
        table = dst / "recordings" / f"{row.recording_id}.parquet"
        assert table.exists() == (row.status == "ok")
        if row.status == "ok":
            assert pq.read_metadata(table).num_rows == row.n_epochs
    assert not list(dst.rglob("*.tmp")) and (dst / "events.parquet").exists() and (dst / "splits.json").exists()
    code, rerun = run_main(src, dst)  # a rerun redoes the failed night only
    assert code == 0 and (rerun["status"] == "ok").all()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc through psutil")
def test_workers_and_resource_tracker_exit_when_the_parser_is_killed(tmp_path):
    psutil = pytest.importorskip("psutil")
    process, _, _ = start_parser(tmp_path)
    children = psutil.Process(process.pid).children(recursive=True)

    def alive() -> list:
        return [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]

    try:
        assert len(parser_workers(process.pid)) == 2
        process.kill()
        process.wait(timeout=30)
        deadline = time.monotonic() + 5
        while alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        left = [" ".join(c.cmdline())[:120] for c in alive()]
    finally:
        process.kill()
        for child in alive():  # never leave them behind, even when the test fails
            child.kill()
    assert not left, left


def test_what_a_night_lacks_or_loses_is_in_its_warnings(tmp_path):
    """A night without a known EMG label and a scoring that ends 90 s before the signal are ok, and the manifest's
    warnings say both, so a run that later skips the night for its EMG is not the first to tell."""
    layout = {key: spec for key, spec in SHHS1.items() if key != "emg"}
    layout["emg"] = ("Mentalis", *SHHS1["emg"][1:])  # a label no table knows
    make_night(tmp_path / "src", "w-1", seconds=30 * len(DEFAULT_STAGES) + 90, layout=layout)
    make_night(tmp_path / "src", "w-2")
    rows = parse(tmp_path / "src", tmp_path / "dst").set_index("recording_id")
    assert (rows["status"] == "ok").all()
    warned = rows.loc["w-1", "warnings"]
    assert "no channel found for emg (signals not used: H.R., Mentalis; " in warned  # what could be mapped
    end = 30 * len(DEFAULT_STAGES)
    assert f"the scoring ends at {end} s, the signal at {end + 90} s: 90 s not kept" in warned
    assert rows.loc["w-2", "warnings"] == ""


def test_another_nights_scoring_is_named_in_the_warnings(tmp_path):
    """A 30-min EDF paired with the scoring of an 8-h night that started at 01:30 (its stages run to 8 h) parses,
    as the labels of its first 30 min are all the file gives, but the manifest says the scoring is not this
    night's: its Recording Start Time disagrees in clock and length, and its stages run past the signal."""
    from tests.parser_nights import stage_events, write_edf, write_xml

    src = tmp_path / "src"
    src.mkdir()
    write_edf(src / "x-1.edf", 1800)
    _started_at(src / "x-1.edf", b"22.00.00")
    stages = [0, 1, 2, 2, 3, 4] * 160  # 960 epochs: 8 h
    write_xml(src / "x-1-nsrr.xml", stage_events(stages), clock="01.30.00", recording_s=28800)
    make_night(src, "x-2")  # its own scoring: no warning
    rows = parse(src, tmp_path / "dst").set_index("recording_id")
    warned = rows.loc["x-1", "warnings"]
    assert rows.loc["x-1", "status"] == "ok" and rows.loc["x-1", "n_epochs"] == 60
    assert "its Recording Start Time is '00.00.00 01.30.00', the EDF starts at 22.00.00 (+12600 s)" in warned
    assert "scored on a recording of 28800 s, the EDF holds 1800 s: is it this night's scoring?" in warned
    assert "the scoring stages up to 28800 s, past the signal's end at 1800 s" in warned
    assert rows.loc["x-2", "warnings"] == ""


def _started_at(edf: Path, clock: bytes) -> Path:
    data = bytearray(edf.read_bytes())
    data[176:184] = clock  # the header's start time
    edf.write_bytes(bytes(data))
    return edf


def test_a_start_clock_across_midnight_or_a_short_last_epoch_is_no_mismatch(tmp_path):
    """The ClockTime is compared on the clock (23:59:30 vs 00:00:10 is 40 s apart, within tolerance; a 12-hour
    "10:00:30 PM" is 22:00:30), a length that differs by less than one epoch is the same recording, and a clock
    of 00.00.00 (a start not kept) is not compared."""
    from dataset.annotations import read_annotations
    from dataset.edf_reader import read_edf_header
    from tests.parser_nights import stage_events, write_edf, write_xml

    write_edf(tmp_path / "m.edf", 600)
    cases = {
        b"00.00.10": (("23.59.30", 629, 0), ("23.59.30", 571, 0), ("00.01.11", 600, 1), ("00.00.10", 630, 1)),
        b"22.00.00": (
            ("10:00:30 PM", 600, 0),
            ("10:00:30 AM", 600, 1),
            ("00.00.00 22.00.20", 600, 0),
            ("22:00:10 01.01.01", 600, 0),  # a date after the time
        ),
        b"00.00.00": (("11:01:25 PM", 600, 0), ("00.00.00 05.00.00", 600, 0)),
    }
    for start, checks in cases.items():
        header = read_edf_header(_started_at(tmp_path / "m.edf", start))
        for clock, length, expected in checks:
            write_xml(tmp_path / "m-nsrr.xml", stage_events([0] * 20), clock=clock, recording_s=length)
            warnings = read_annotations(tmp_path / "m-nsrr.xml", header).warnings
            assert len(warnings) == expected, (start, clock, length, warnings)


def test_an_unscored_tail_past_the_signal_is_no_mismatch(tmp_path):
    """A recorder that stopped before the scorer's closing "unscored" block ends: no warning."""
    from tests.parser_nights import stage_events, write_edf, write_xml

    (tmp_path / "src").mkdir()
    write_edf(tmp_path / "src" / "t-1.edf", 1200)
    events = stage_events([0, 1, 2, 2] * 10) + [("Stages|Stages", "Unscored|9", 1200.0, 600.0)]
    write_xml(tmp_path / "src" / "t-1-nsrr.xml", events, recording_s=1200)
    rows = parse(tmp_path / "src", tmp_path / "dst").set_index("recording_id")
    assert rows.loc["t-1", "status"] == "ok" and rows.loc["t-1", "warnings"] == ""


def test_allow_unscored_alone_reuses_every_scored_night(tmp_path):
    """`--allow-unscored` decides which nights are written, not what is written for a scored one: switching it
    on reuses the scored nights' tables and writes the unscored one; switching it off again removes that one."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_night(src, "u-1")
    make_night(src, "u-2")
    make_night(src, "u-3", xml=False)
    parse(src, dst)
    rows = parse(src, dst, allow_unscored=True)
    assert rows.attrs["runs"]["u-1"]["reused"] and rows.attrs["runs"]["u-2"]["reused"]
    assert rows.set_index("recording_id").loc["u-3", "status"] == "ok"
    rows = parse(src, dst).set_index("recording_id")
    assert rows.loc["u-3", "status"] == "skipped" and not (dst / "recordings" / "u-3.parquet").exists()
    assert rows.attrs["runs"]["u-1"]["reused"]


def test_two_signals_with_one_label_are_named(tmp_path):
    """Labels are not unique by the EDF standard; which of two `EEG` signals feeds the channel is said."""
    layout = dict(SHHS1)
    layout["eeg_c3"] = ("EEG", *SHHS1["eeg_c3"][1:])
    make_night(tmp_path / "src", "d-1", layout=layout)
    rows = parse(tmp_path / "src", tmp_path / "dst").set_index("recording_id")
    assert "signals 2 and 7 are all labelled 'EEG'; eeg_c4 took 2" in rows.loc["d-1", "warnings"]


def test_a_cohort_too_small_to_split_says_so_where_the_split_is_read(tmp_path, capsys):
    """One night parses (exit 0) but makes no splits.json; a run reading a split then says why, rather than to
    run the parser that just ran."""
    from dataset.cohort import resolve_split

    make_night(tmp_path / "src", "s-1")
    assert main(["--src", str(tmp_path / "src"), "--dst", str(tmp_path / "dst"), "--no-progress"]) == 0
    assert "splits.json not written" in capsys.readouterr().err and not (tmp_path / "dst" / "splits.json").exists()
    with pytest.raises(FileNotFoundError, match="subjects enough for pretrain, val and test"):
        resolve_split(tmp_path / "dst", "train")
    with pytest.raises(FileNotFoundError, match="run the data parser on this folder first"):
        resolve_split(tmp_path / "nothing", "train")


def test_a_scoring_under_a_name_the_pairing_skips_is_named_in_the_reason(tmp_path):
    """A browser's second download "<night>-nsrr (1).xml" is not paired; the night's skip reason names it (and not
    the scoring of another night whose name merely starts alike)."""
    make_night(tmp_path / "src", "b-1")
    (tmp_path / "src" / "b-1-nsrr.xml").rename(tmp_path / "src" / "b-1-nsrr (1).xml")
    make_night(tmp_path / "src", "b-12")
    make_night(tmp_path / "src", "b-1-x")  # its b-1-x-nsrr.xml is its own
    make_night(tmp_path / "src", "c-1")
    (tmp_path / "src" / "c-1-nsrr.xml").rename(tmp_path / "src" / "C-1-NSRR (1).xml")  # the pairing ignores case
    rows = parse(tmp_path / "src", tmp_path / "dst").set_index("recording_id")
    reason = rows.loc["b-1", "reason"]
    assert rows.loc["b-1", "status"] == "skipped" and "; b-1-nsrr (1).xml beside it is not a name the pairing" in reason
    assert "b-12" not in reason and "b-1-x" not in reason and rows.loc["b-1-x", "status"] == "ok"
    assert "C-1-NSRR (1).xml beside it" in rows.loc["c-1", "reason"]


def test_a_worker_that_cannot_start_stops_the_run_and_keeps_every_table(tmp_path):
    """A script that calls parse_cohort without a `__main__` guard: every spawned worker runs it again and exits
    (the cohort is locked by the script). That is no fault of the nights: the run stops with the reason, and the
    earlier tables and manifest stay as they were."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    for i in range(2):
        make_night(src, f"u-{i}")
    parse(src, dst, workers=0)
    before = {p.name: p.read_bytes() for p in (dst / "recordings").glob("*.parquet")}
    manifest = (dst / "manifest.parquet").read_bytes()
    script = tmp_path / "unguarded.py"
    script.write_text(f"from dataset.data_parser import parse_cohort\nparse_cohort({str(src)!r}, {str(dst)!r})\n")
    done = subprocess.run(
        [sys.executable, str(script)], cwd=REPO, capture_output=True, text=True, timeout=300, env={**os.environ}
    )
    assert done.returncode != 0 and "needs `if __name__ == '__main__':`" in done.stderr
    assert {p.name: p.read_bytes() for p in (dst / "recordings").glob("*.parquet")} == before
    assert (dst / "manifest.parquet").read_bytes() == manifest
