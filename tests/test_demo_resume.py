"""The demo skips a pretraining stage on a rerun only when that run completed its budget: `last.pt` is also
written after every pass and by a run cut short, which the rerun must continue instead."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _demo():
    spec = importlib.util.spec_from_file_location("demo_script", REPO / "demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _log(run: Path, *records: dict) -> None:
    run.mkdir(parents=True, exist_ok=True)
    (run / "last.pt").write_bytes(b"checkpoint")
    (run / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def test_only_a_completed_pretraining_run_counts_as_done(tmp_path):
    completed = _demo()._completed
    assert completed(tmp_path / "missing") is None
    _log(tmp_path / "cut", {"kind": "epoch", "epoch": 1})  # killed in its second pass: no summary yet
    assert completed(tmp_path / "cut") is None
    _log(tmp_path / "capped", {"kind": "epoch", "epoch": 1}, {"kind": "summary", "stopped": "max_steps"})
    assert completed(tmp_path / "capped") is None
    resumed = ({"kind": "summary", "stopped": "max_steps"}, {"kind": "summary", "stopped": "completed"})
    _log(tmp_path / "resumed", *resumed)
    assert completed(tmp_path / "resumed") == tmp_path / "resumed" / "log.jsonl"
