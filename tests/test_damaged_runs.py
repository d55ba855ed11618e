"""Runs over a cohort damaged after it was parsed, and runs stopped hard: one `error:` line and exit 2 for a
recording whose data pages are unreadable (also with loader workers, which once left the process hanging after
the traceback, its run folder locked), and a run folder free again as soon as its trainer is killed."""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from dataset import data_parser, synthetic

ROOT = Path(__file__).resolve().parents[1]
UNIMODAL = ROOT / "pretrained" / "unimodal" / "eeg" / "train.py"
TINY = ["--preset", "tiny", "--batch-size", "8", "--no-progress", "--no-monitor"]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("damaged_cohort")
    synthetic.generate_cohort(root / "src", nights=5, hours=0.25, seed=0)
    data_parser.parse_cohort(root / "src", root / "dst", workers=0, progress=False)
    return root / "dst"


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def _damage_a_data_page(data: Path) -> Path:
    """Overwrite the page header of the first EEG column chunk of a pretraining recording (its footer intact, so
    it opens and fails only when that row group is read)."""
    recording = sorted((data / "recordings").glob("*.parquet"))[0]
    chunk = (
        pq.ParquetFile(recording)
        .metadata.row_group(0)
        .column(pq.ParquetFile(recording).schema_arrow.names.index("eeg_c4"))
    )
    raw = bytearray(recording.read_bytes())
    at = chunk.data_page_offset
    raw[at : at + 64] = b"\xff" * 64
    recording.write_bytes(bytes(raw))
    return recording


@pytest.mark.parametrize("workers", ["0", "2"])
def test_an_unreadable_data_page_is_one_error_line_and_the_run_ends(cohort, tmp_path, workers):
    data = tmp_path / "data"
    shutil.copytree(cohort, data)
    damaged = _damage_a_data_page(data)
    argv = [sys.executable, str(UNIMODAL), "--data", str(data), "--out", str(tmp_path / "run"), "--max-steps", "40"]
    done = subprocess.run(
        [*argv, *TINY, "--workers", workers], capture_output=True, text=True, env=_env(), timeout=240, check=False
    )
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr and lines[-1].startswith(f"error: {damaged}: row group 0 is unreadable")


def test_a_killed_trainers_folder_is_free_at_once(cohort, tmp_path):
    """SIGKILL (an out-of-memory kill): its loader workers inherited the lock on --out and held it until they
    noticed, so a rerun started at once was refused as "another training run is using this folder"."""
    out = tmp_path / "run"
    argv = [sys.executable, str(UNIMODAL), "--data", str(cohort), "--out", str(out), "--max-steps", "400"]
    process = subprocess.Popen(
        [*argv, *TINY, "--workers", "2", "--save-every-steps", "2"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=_env(),
    )
    try:
        deadline = time.monotonic() + 180
        while not (out / "last.pt").exists() and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.2)
        assert (out / "last.pt").exists(), "the run saved no checkpoint to kill it after"
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    fd = os.open(out, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError while a loader worker still holds it
    finally:
        os.close(fd)


def test_an_encoding_stopped_midway_keeps_the_recordings_it_finished(cohort, tmp_path):
    """Ctrl-C near the end of encoding a cohort into --cache-dir kept nothing (every file was written after the
    last batch); each recording is now stored once its last epoch is encoded, and a rerun encodes only the rest."""
    import numpy as np
    import pandas as pd
    import torch

    from downstream.cache import encode_recordings

    recordings = sorted(pd.read_parquet(cohort / "manifest.parquet")["recording_id"])
    n_epochs = pd.read_parquet(cohort / "manifest.parquet").set_index("recording_id")["n_epochs"]
    encoded = []

    def encode(signals):
        encoded.append(signals["eeg_c4"].shape[0])
        if sum(encoded) > n_epochs[recordings[0]] + n_epochs[recordings[1]]:  # into the third recording
            raise KeyboardInterrupt
        return signals["eeg_c4"][:, :3].float()

    def fill():
        return encode_recordings(
            encode, cohort, recordings, ["eeg_c4"], torch.device("cpu"), batch_epochs=20, cache_dir=tmp_path, key="k"
        )

    with pytest.raises(KeyboardInterrupt):
        fill()
    assert sorted(p.stem for p in (tmp_path / "k").glob("*.npz")) == recordings[:2]
    encoded.clear()
    n_epochs[recordings[0]] = n_epochs[recordings[1]] = 10**6  # no interruption this time
    store = fill()
    assert sum(encoded) == sum(n_epochs[r] for r in recordings[2:])
    ids, epochs = np.repeat(recordings[0], 3), np.arange(3)
    assert store.gather(ids, epochs).shape == (3, 3)


def test_the_exit_handler_leaves_other_child_processes_alone(tmp_path):
    """Only children that ignore SIGTERM (the loader workers) are killed at exit: a caller's pool, left open, still
    shuts down (killing its idle workers left the pool's lock held and the exit hung), and a daemonic helper still
    gets the SIGTERM it cleans up on."""
    flag = tmp_path / "flushed.txt"
    script = tmp_path / "caller.py"
    script.write_text(
        f"""
import multiprocessing, os, signal, time
import utils.interrupt  # noqa: F401 - registers the exit handler


def helper(ready):
    signal.signal(signal.SIGTERM, lambda *_: (open({str(flag)!r}, "w").write("done"), os._exit(0)))
    ready.set()
    while True:
        time.sleep(0.05)


if __name__ == "__main__":
    pool = multiprocessing.Pool(2)
    assert pool.map(abs, [-1, -2, -3]) == [1, 2, 3]
    ready = multiprocessing.Event()
    multiprocessing.Process(target=helper, args=(ready,), daemon=True).start()
    ready.wait()
"""
    )
    done = subprocess.run([sys.executable, str(script)], env=_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert flag.read_text() == "done"
