"""Run-directory logs: one JSON line per pass over the training set (`log.jsonl`), step lines (`steps.jsonl`),
optional TensorBoard, and the tqdm progress bar. Only the main process (rank 0) writes or prints; other ranks get
no-op objects.

log.jsonl holds `{"kind": "epoch", "epoch": n, ...}` lines (one per pass: a resumed pass's complete record replaces
the partial one of the stopped run) and, at the end of a run, one `{"kind": "summary", "epochs_completed": n, ...}`
line. A 30-s epoch owns the word "epoch" everywhere else (the console says `pass 1/30`); these field names stay as
the runs of every version wrote them, because resume, the downstream selection and the benchmarks read them.
"""

from __future__ import annotations

import json
import math
import sys
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from utils.checkpoint import plain_number


def _json_value(value: Any) -> Any:
    value = plain_number(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN/inf
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    return value


LOG_NAMES = ("log.jsonl", "steps.jsonl", "tensorboard")  # what a RunLogger writes in its run directory


class RunLogger:
    """Writes RUN_DIR/log.jsonl and RUN_DIR/steps.jsonl (and TensorBoard events when asked and installed).

    `fresh=True` truncates earlier logs (a new run in an old directory); a resumed run appends.
    """

    def __init__(self, run_dir: str | Path, enabled: bool = True, tensorboard: bool = False, fresh: bool = False):
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self.log_path, self.steps_path = self.run_dir / LOG_NAMES[0], self.run_dir / LOG_NAMES[1]
        self.writer = None
        if not enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if fresh:
            for path in (self.log_path, self.steps_path):
                path.unlink(missing_ok=True)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                print(
                    "TensorBoard logging skipped: the `tensorboard` package is not installed "
                    "(pip install tensorboard to enable --tensorboard)",
                    file=sys.stderr,
                )
            else:
                self.writer = SummaryWriter(log_dir=str(self.run_dir / LOG_NAMES[2]))

    def rewind(self, step: int) -> None:
        """Drop step and epoch lines written after optimizer step `step` (a run resumed from a checkpoint older
        than its last log lines would otherwise log those steps twice)."""
        if not self.enabled:
            return
        for path in (self.steps_path, self.log_path):
            if path.is_file():  # (a cut last line is dropped here, so appends start on a fresh line)
                _write_jsonl(
                    path, [r for r in read_jsonl(path) if r.get("step", 0) <= step and r.get("kind") != "summary"]
                )

    def _append(self, path: Path, record: Mapping[str, Any]) -> None:
        with path.open("a") as handle:
            handle.write(json.dumps(_json_value(dict(record))) + "\n")

    def log_step(self, step: int, scalars: Mapping[str, Any]) -> None:
        """One line in steps.jsonl (and TensorBoard scalars under `train/`)."""
        if not self.enabled:
            return
        self._append(self.steps_path, {"step": step, **scalars})
        if self.writer is not None:
            for name, value in scalars.items():
                if isinstance(plain_number(value), (int, float)):
                    self.writer.add_scalar(f"train/{name}", plain_number(value), step)

    def log_epoch(self, record: Mapping[str, Any]) -> None:
        """One `{"kind": "epoch", ...}` line in log.jsonl (and TensorBoard scalars under `epoch/`). The partial
        record of the same epoch that a stopped run left (`"partial": true`) is replaced by this one, atomically,
        so a resumed epoch has one line."""
        if not self.enabled:
            return
        line = {"kind": "epoch", **record}
        earlier = read_jsonl(self.log_path) if self.log_path.is_file() else []
        stale = [
            r
            for r in earlier
            if r.get("kind") == "epoch" and r.get("epoch") == record.get("epoch") and r.get("partial")
        ]
        if stale:
            _write_jsonl(self.log_path, [r for r in earlier if not any(r is s for s in stale)] + [_json_value(line)])
        else:
            self._append(self.log_path, line)
        if self.writer is not None:
            step = int(record.get("step", 0))
            for name, value in record.items():
                if name not in ("epoch", "step") and isinstance(plain_number(value), (int, float)):
                    self.writer.add_scalar(f"epoch/{name}", plain_number(value), step)
            self.writer.flush()

    def log_summary(self, record: Mapping[str, Any]) -> None:
        """The final `{"kind": "summary", ...}` line in log.jsonl, also printed."""
        if not self.enabled:
            return
        line = {"kind": "summary", **record}
        self._append(self.log_path, line)
        print("summary " + json.dumps(_json_value(line)), flush=True)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def finished_summary(run_dir: str | Path) -> dict[str, Any] | None:
    """The last `{"kind": "summary"}` record of RUN_DIR/log.jsonl without its kind: what a finished run's
    `fit` returned, returned again by a rerun that has nothing to train. None without a log or a summary."""
    path = Path(run_dir) / "log.jsonl"
    summaries = [r for r in read_jsonl(path) if r.get("kind") == "summary"] if path.is_file() else []
    return {k: v for k, v in summaries[-1].items() if k != "kind"} if summaries else None


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """All records of a JSON-lines file. A cut last line (what a killed writer leaves) is dropped with a warning;
    an unreadable line before it is a ValueError naming the file and the line number."""
    path = Path(path)
    try:
        with path.open() as handle:
            lines = [(number, line) for number, line in enumerate(handle, start=1) if line.strip()]
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not a text file ({err.reason} at byte {err.start}); remove it") from None
    records = []
    for index, (number, line) in enumerate(lines):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as err:
            if index == len(lines) - 1:
                warnings.warn(f"{path}: line {number} is cut off (an interrupted write); dropped", stacklevel=2)
                break
            raise ValueError(f"{path}: line {number} is not valid JSON ({err.msg}); fix or remove that line") from None
    return records


def check_run_logs(run_dir: str | Path) -> None:
    """ValueError naming the file and line when a run's log.jsonl or steps.jsonl cannot be read (`read_jsonl`):
    called before a resumed run changes anything in its folder, since the logger rewinds both files."""
    for name in ("log.jsonl", "steps.jsonl"):
        path = Path(run_dir) / name
        if path.is_file():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # a cut last line: dropped (and warned about) by the rewind itself
                read_jsonl(path)


def _write_jsonl(path: Path, records: Iterable[Mapping[str, Any]]) -> None:
    """Replace a JSON-lines file atomically (temporary file, then rename)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(record) + "\n" for record in records))
    tmp.replace(path)


def progress_bar(total: int, enabled: bool, desc: str = "", initial: int = 0) -> tqdm:
    """A tqdm bar over optimizer steps; disabled (silent) off the main process or with --no-progress."""
    return tqdm(
        total=total,
        initial=initial,
        desc=desc,
        disable=not enabled,
        dynamic_ncols=True,
        unit="step",
        leave=True,
        file=sys.stderr,
    )


def format_count(n: int) -> str:
    """12345678 -> '12.35 M'."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {suffix}"
    return str(n)


def print_main(is_main: bool, *parts: Iterable[Any]) -> None:
    """print() on the main process only."""
    if is_main:
        print(*parts, flush=True)
