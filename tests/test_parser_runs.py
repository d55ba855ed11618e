"""Cohort runs of dataset/data_parser.py: rerun and --overwrite, interrupted and killed runs, shards and
--merge, NSRR-layout discovery, the module entry point, duplicate ids and the synthetic cohort end to end.
"""

from __future__ import annotations

import json
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

from dataset.constants import CHANNEL_BY_NAME
from dataset.data_parser import main, merge_shards, shard_of
from dataset.discovery import discover
from tests.parser_nights import (
    DEFAULT_STAGES,
    RESP_EVENTS,
    make_night,
    parse,
    read_table,
    stage_events,
    write_xml,
)


# ------------------------------------------------------------------------------------- resume, kill, shards
def test_rerun_skips_finished_work_and_overwrite_redoes_it(tmp_path):
    """A rerun reuses every finished night, and rebuilds the same manifest and events table from them (the SpO2
    baseline of a desaturation included: the 4 % hypopnea rule reads it)."""
    desaturation = ("Respiratory|Respiratory", "SpO2 desaturation|SpO2 desaturation", 320.0, 12.0, 88.0, 95.0)
    for i in range(3):
        make_night(tmp_path / "src", f"n-{i}", events=[*RESP_EVENTS, desaturation])
    first = parse(tmp_path / "src", tmp_path / "dst")
    events = pd.read_parquet(tmp_path / "dst" / "events.parquet")
    assert sorted(events["spo2_baseline"].dropna().tolist()) == [95.0] * 3
    files = sorted((tmp_path / "dst" / "recordings").glob("*.parquet"))
    stamps = {p: p.stat().st_mtime_ns for p in files}
    second = parse(tmp_path / "src", tmp_path / "dst")
    assert all(run["reused"] for run in second.attrs["runs"].values())
    assert {p: p.stat().st_mtime_ns for p in files} == stamps
    pd.testing.assert_frame_equal(first, second)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "dst" / "events.parquet"), events)
    write_xml(tmp_path / "src" / "n-1-nsrr.xml", stage_events([2] * 20))  # scoring changed: redo that night only
    third = parse(tmp_path / "src", tmp_path / "dst")
    assert {r: run["reused"] for r, run in third.attrs["runs"].items()} == {"n-0": True, "n-1": False, "n-2": True}
    assert read_table(tmp_path / "dst", "n-1")["stage"].tolist() == [2] * 20
    fourth = parse(tmp_path / "src", tmp_path / "dst", overwrite=True)
    assert not any(run["reused"] for run in fourth.attrs["runs"].values())
    parse(tmp_path / "src", tmp_path / "dst", channels=["eeg_c4"])  # other settings: nothing reused
    assert pq.read_schema(tmp_path / "dst" / "recordings" / "n-0.parquet").names[:2] == ["epoch", "eeg_c4"]
    assert "eeg_c3" not in pq.read_schema(tmp_path / "dst" / "recordings" / "n-0.parquet").names


def _assert_complete(dst: Path, n_ok: int) -> None:
    manifest = pd.read_parquet(dst / "manifest.parquet")
    assert (manifest["status"] == "ok").sum() == n_ok
    for row in manifest.itertuples():
        table = pq.read_table(dst / row.parquet)
        assert table.num_rows == row.n_epochs
    assert not list(dst.rglob("*.tmp"))
    assert json.loads((dst / "splits.json").read_text())["recordings"]["test"]


def test_interrupted_run_leftovers_are_repaired(tmp_path):
    for i in range(4):
        make_night(tmp_path / "src", f"n-{i}")
    parse(tmp_path / "src", tmp_path / "dst")
    rec = tmp_path / "dst" / "recordings"
    (rec / "n-1.parquet").write_bytes((rec / "n-1.parquet").read_bytes()[:50000])  # cut before the footer
    (rec / ".n-2.parquet.tmp").write_bytes(b"half a file")  # a temp file of a killed writer
    (rec / "n-3.parquet").unlink()
    (tmp_path / "dst" / "manifest.parquet").unlink()
    manifest = parse(tmp_path / "src", tmp_path / "dst")
    assert {r: run["reused"] for r, run in manifest.attrs["runs"].items()} == {
        "n-0": True,
        "n-1": False,
        "n-2": True,
        "n-3": False,
    }
    _assert_complete(tmp_path / "dst", 4)


def test_killed_parser_process_then_rerun_ends_complete(tmp_path):
    for i in range(6):
        make_night(tmp_path / "src", f"n-{i}", stages=[2] * 120)  # 1-h nights
    dst = tmp_path / "dst"
    command = [
        sys.executable,
        "dataset/data_parser.py",
        "--src",
        str(tmp_path / "src"),
        "--dst",
        str(dst),
        "--no-progress",
    ]
    process = subprocess.Popen(
        command, cwd=Path(__file__).resolve().parents[1], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120
    while process.poll() is None and time.monotonic() < deadline:
        if list((dst / "recordings").glob("**/*.parquet")):  # a table staged for the manifest
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    process.wait()
    assert not (dst / "manifest.parquet").exists() or process.returncode == 0
    manifest = parse(tmp_path / "src", dst)
    assert sum(run["reused"] for run in manifest.attrs["runs"].values()) >= 1
    _assert_complete(dst, 6)


def test_shards_and_merge_equal_a_single_run_with_workers(tmp_path):
    for i in range(7):
        make_night(tmp_path / "src", f"c-{i:03d}", markers={"eeg_c4": i})
    make_night(tmp_path / "src", "bad-007", xml=False)
    for suffix in (".edf", "-nsrr.xml"):  # night c-001 again under other names: one sorting after it, one before
        shutil.copy(tmp_path / "src" / f"c-001{suffix}", tmp_path / "src" / f"copy-901{suffix}")
        shutil.copy(tmp_path / "src" / f"c-001{suffix}", tmp_path / "src" / f"c-001-2{suffix}")
    single = parse(tmp_path / "src", tmp_path / "single", workers=2)
    assert single.attrs["runs"]["c-003"]["max_rss_mb"] > 0
    copy = single.set_index("recording_id").loc["copy-901"]  # both stay ok, the copy carries the warning
    assert (
        copy["status"] == "ok" and "the same EDF content as" in copy["warnings"] and "c-001-2.edf" in copy["warnings"]
    )
    assert "same EDF content" not in single.set_index("recording_id").loc["c-001-2", "warnings"]  # the first path
    assert "c-001-2.edf" in single.set_index("recording_id").loc["c-001", "warnings"]
    for k in (1, 2, 3):
        if k == 3:
            with pytest.raises(ValueError, match=r"shards \[3\] of 3 have not finished"):
                merge_shards(tmp_path / "sharded")
        parse(tmp_path / "src", tmp_path / "sharded", shard=f"{k}/3")
        assert (tmp_path / "sharded" / f"manifest.shard-{k}-of-3.parquet").exists()
    parse(tmp_path / "src", tmp_path / "sharded", shard=(1, 2))  # a stale shard of another run
    with pytest.raises(ValueError, match="different shard counts"):
        merge_shards(tmp_path / "sharded")
    (tmp_path / "sharded" / "manifest.shard-1-of-2.parquet").unlink()
    assert main(["--merge", "--dst", str(tmp_path / "sharded"), "--no-progress"]) == 0
    for name in ("manifest.parquet", "events.parquet"):
        pd.testing.assert_frame_equal(
            pd.read_parquet(tmp_path / "single" / name), pd.read_parquet(tmp_path / "sharded" / name)
        )
    assert (tmp_path / "single" / "splits.json").read_text() == (tmp_path / "sharded" / "splits.json").read_text()
    for path in sorted((tmp_path / "single" / "recordings").glob("*.parquet")):
        assert pq.read_table(path).equals(pq.read_table(tmp_path / "sharded" / "recordings" / path.name))
    # the merged cohort records its processing as a single run does (downstream runs store it for predict.py)
    merged, one = (json.loads((tmp_path / d / "parser_config.json").read_text()) for d in ("sharded", "single"))
    assert merged["config"] == one["config"] and merged["config_digest"] == one["config_digest"]
    assert merged["shard"] is None


def test_a_subject_whose_night_fails_once_keeps_its_split(tmp_path, capsys):
    """A rerun in which the test subject's only night is unreadable keeps the subject in test (no recording listed);
    repaired, the night comes back to test, never to pretrain. Other subject ids (--subject-regex) under the kept
    split are a usage error before any night is processed; with --resplit they make a new split."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    for i in range(3):
        make_night(src, f"c-{i}")
    parse(src, dst)
    first = json.loads((dst / "splits.json").read_text())
    (subject,) = first["subjects"]["test"]
    edf = src / f"c-{subject}.edf"
    good = edf.read_bytes()
    edf.write_bytes(good[:100])
    assert parse(src, dst).set_index("recording_id").loc[f"c-{subject}", "status"] == "failed"
    during = json.loads((dst / "splits.json").read_text())
    assert during["subjects"] == first["subjects"] and during["recordings"]["test"] == []
    edf.write_bytes(good)
    parse(src, dst)
    assert json.loads((dst / "splits.json").read_text()) == first
    stamp = (dst / "manifest.parquet").stat().st_mtime_ns
    make_night(src, "c-3")  # a new night: not processed when the run is refused
    argv = ["--src", str(src), "--dst", str(dst), "--no-progress", "--subject-regex", r"(c-\d)"]
    capsys.readouterr()  # the earlier runs' warnings (these nights are written alike)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {dst / 'splits.json'}: ") and "--resplit" in err and err.count("\n") == 1
    assert (dst / "manifest.parquet").stat().st_mtime_ns == stamp and not (dst / "recordings" / "c-3.parquet").exists()
    assert main([*argv, "--resplit"]) == 0
    subjects = json.loads((dst / "splits.json").read_text())["subjects"]
    assert sorted(subjects["pretrain"] + subjects["val"] + subjects["test"]) == ["c-0", "c-1", "c-2", "c-3"]


def test_nsrr_layout_discovery(tmp_path):
    root = tmp_path / "shhs" / "polysomnography"
    make_night(root / "edfs" / "shhs1", "shhs1-200001", xml=False)
    make_night(root / "edfs" / "shhs2", "shhs2-200001", xml=False)
    for name in ("shhs1-200001", "shhs2-200001"):
        cohort = name.split("-")[0]
        (root / "annotations-events-nsrr" / cohort).mkdir(parents=True, exist_ok=True)
        write_xml(root / "annotations-events-nsrr" / cohort / f"{name}-nsrr.xml", stage_events(DEFAULT_STAGES))
    jobs = discover(tmp_path / "shhs")
    assert [(j.recording_id, j.subject_id, j.cohort) for j in jobs] == [
        ("shhs1-200001", "200001", "shhs1"),
        ("shhs2-200001", "200001", "shhs2"),
    ]
    assert all(j.xml and j.xml.endswith("-nsrr.xml") for j in jobs)


def test_module_entry_point_help():
    result = subprocess.run(
        [sys.executable, "-m", "dataset.data_parser", "--help"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
        timeout=120,
    )
    assert result.returncode == 0 and "--shard" in result.stdout and "--allow-unscored" in result.stdout
    assert main(["--dst", "/nonexistent/x", "--src", "/nonexistent/src", "--no-progress"]) == 2


# --------------------------------------------------------------------------------- synthetic cohort (2.5)
@pytest.fixture(scope="module")
def synthetic_cohort(tmp_path_factory):
    from dataset.synthetic import VARIATION_CATALOG, generate_cohort, variation_plan

    root = tmp_path_factory.mktemp("synthetic")
    nights = generate_cohort(
        root / "src", nights=12, hours=0.25, seed=3, variations=variation_plan(12, list(VARIATION_CATALOG))
    )
    manifest = parse(root / "src", root / "dst")
    return root, {n.recording_id: n for n in nights}, manifest.set_index("recording_id")


def test_synthetic_cohort_every_variation_end_to_end(synthetic_cohort):
    root, nights, manifest = synthetic_cohort
    assert sorted(manifest.index) == sorted(nights) and (manifest["status"] == "ok").all()
    events = pd.read_parquet(root / "dst" / "events.parquet")
    for rid, night in nights.items():
        row = manifest.loc[rid]
        n_epochs = int(min(night.signal_s, night.scored_s) // 30)
        assert row["n_epochs"] == n_epochs and row["signal_s"] == night.signal_s and row["scored_s"] == night.scored_s
        assert row["cohort"] == night.cohort and row["subject_id"] == night.subject_id
        assert (
            row["channels"] == ",".join(c for c in CHANNEL_BY_NAME if c in night.channels)
            and not row["dropped_channels"]
        )
        rates = json.loads(pq.read_schema(root / "dst" / row["parquet"]).metadata[b"rates"])
        assert {c: r["label"] for c, r in rates.items()} == night.channels  # the alias the generator wrote
        frame = read_table(root / "dst", rid)
        np.testing.assert_array_equal(frame["stage"], night.stages[:n_epochs], err_msg=rid)
        mine = events[events["recording_id"] == rid]
        assert sorted(zip(mine["type"], mine["start_s"])) == sorted((e["type"], e["start_s"]) for e in night.events)
        for name in ("obstructive_apnea", "hypopnea", "arousal", "desaturation"):
            flags = np.zeros(n_epochs, dtype=np.int8)
            for e in night.events:
                if e["type"] == name:
                    k = np.arange(n_epochs)
                    flags[(e["start_s"] <= 30 * k + 15) & (30 * k + 15 < e["start_s"] + e["duration_s"])] = 1
            np.testing.assert_array_equal(frame[name], flags, err_msg=f"{rid} {name}")
        variations = night.variations
        assert bool(row["truncated"]) == bool(variations.get("truncated"))
        for name, rate in night.rates.items():
            if name in row["channels"].split(","):
                assert f"{name}:{rate:g}" in row["native_rates"]
        if "missing_channels" in variations:
            assert "eog_r" not in row["channels"].split(",")
        if "secondary_eeg_label" in variations:
            assert "eeg_c3" in row["channels"].split(",")
    shhs2 = [rid for rid in nights if rid.startswith("shhs2")]
    assert (
        shhs2 and manifest.loc[shhs2[0], "subject_id"] == manifest.loc["shhs1-" + shhs2[0].split("-")[1], "subject_id"]
    )
    splits = json.loads((root / "dst" / "splits.json").read_text())
    subject_split = [
        s for s in ("pretrain", "val", "test") if manifest.loc[shhs2[0], "subject_id"] in splits["subjects"][s]
    ]
    assert len(subject_split) == 1 and {shhs2[0], "shhs1-" + shhs2[0].split("-")[1]} <= set(
        splits["recordings"][subject_split[0]]
    )


def test_duplicate_recording_id_fails_without_touching_the_first(tmp_path):
    make_night(tmp_path / "src", "a-1")
    make_night(tmp_path / "src" / "copy", "a-1", xml=False)
    manifest = parse(tmp_path / "src", tmp_path / "dst")
    assert manifest["status"].tolist() == ["ok", "failed"] and "duplicate" in manifest["reason"].iloc[1]
    assert pq.read_table(tmp_path / "dst" / "recordings" / "a-1.parquet").num_rows == 20


def test_the_polysomnography_folder_is_an_nsrr_root_and_nothing_parsed_is_an_error(tmp_path, capsys):
    """`--src SHHS/polysomnography` finds the NSRR layout as `--src SHHS` does; a source none of whose nights
    can be parsed ends with an error line and exit 1, not a silent 0 that the next step trips over."""
    from dataset import synthetic

    root = tmp_path / "SHHS"
    synthetic.generate_cohort(root, nights=2, hours=0.2, seed=3)
    assert [j.recording_id for j in discover(root / "polysomnography")] == [j.recording_id for j in discover(root)]
    assert main(["--src", str(root / "polysomnography"), "--dst", str(tmp_path / "dst"), "--no-progress"]) == 0
    assert len(list((tmp_path / "dst" / "recordings").glob("*.parquet"))) == 2
    lonely = tmp_path / "xml_only"
    lonely.mkdir()
    for xml in root.rglob("*-nsrr.xml"):
        (lonely / xml.name).write_bytes(xml.read_bytes())
    capsys.readouterr()
    assert main(["--src", str(lonely), "--dst", str(tmp_path / "none"), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert f"error: --src {lonely}: no recording was parsed" in err and "Traceback" not in err
    # a shard may hold only skipped nights: the merge judges the cohort
    assert main(["--src", str(lonely), "--dst", str(tmp_path / "sh"), "--shard", "1/1", "--no-progress"]) == 0
    # a flat folder that merely holds a subfolder named edfs/ stays flat: every night is found
    flat = tmp_path / "flat"
    for i, edf in enumerate(sorted(root.rglob("*.edf"))):
        folder = flat / ("edfs" if i == 0 else "site2")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / edf.name).write_bytes(edf.read_bytes())
        xml = next(root.rglob(f"{edf.stem}-nsrr.xml"))
        (folder / xml.name).write_bytes(xml.read_bytes())
    assert sorted(j.recording_id for j in discover(flat)) == sorted(j.recording_id for j in discover(root))


def test_shard_reruns_stage_their_tables_until_the_merge(tmp_path):
    """Shards rerun with other channels change no table the cohort's manifest lists: their tables wait staged
    until `--merge` moves them in with the new manifest; a full run or a merge leaves no staging folder."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    for i in range(4):
        make_night(src, f"s-{i}")
    parse(src, dst, workers=0)
    tables = lambda: {p.name: p.read_bytes() for p in (dst / "recordings").glob("*.parquet")}  # noqa: E731
    before = tables()
    for k in (1, 2):
        parse(src, dst, shard=(k, 2), channels=["eeg_c4"], workers=0)
        assert tables() == before
    merge_shards(dst)
    after = tables()
    assert after.keys() == before.keys() and all(after[name] != before[name] for name in before)
    assert "iqr_eeg_c3" not in pd.read_parquet(dst / "manifest.parquet").columns  # the merged settings
    assert not list((dst / "recordings").glob(".staging*"))
    (src / "s-1.edf").write_bytes(b"0" * 10)  # a night that now fails: its table goes with the merged manifest
    rows = parse(src, dst, shard=(shard_of("s-1", 2), 2), channels=["eeg_c4"], workers=0).set_index("recording_id")
    assert rows.loc["s-1", "status"] == "failed" and (dst / "recordings" / "s-1.parquet").exists()
    merge_shards(dst)
    assert not (dst / "recordings" / "s-1.parquet").exists()
    parse(src, dst, workers=0)  # a full run with the first settings; the shard manifests stay behind
    with pytest.raises(ValueError, match="was not made with the shards' settings; rerun shard"):
        merge_shards(dst)


def test_shards_of_a_cohort_with_an_unscored_night_merge(tmp_path):
    """An unscored night (`--allow-unscored`) has no scoring hash: its staged table is still the one the merge
    moves in, so the merged cohort equals a single run's."""
    src = tmp_path / "src"
    for i in range(3):
        make_night(src, f"a-{i}", xml=i != 0)
    for k in (1, 2):
        parse(src, tmp_path / "sharded", shard=(k, 2), allow_unscored=True, workers=0)
    merged = merge_shards(tmp_path / "sharded")
    single = parse(src, tmp_path / "single", allow_unscored=True, workers=0)
    assert (merged["status"] == "ok").all() and len(merged) == 3
    for rid in single["recording_id"]:
        assert read_table(tmp_path / "sharded", rid).equals(read_table(tmp_path / "single", rid))
