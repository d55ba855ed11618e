"""Ctrl-C and SIGTERM during training (docs/training.md §4): `StopRequest` turns the first signal into a request
that the training loop (`utils.engine.Trainer`) serves at its next optimizer step by saving last.pt and raising
`utils.config.Interrupted`; a script's `reported_errors` prints it as one line, exit status 130.
`signals_deferred` holds both back over a block that must not be cut (moving a finished run into place).
"""

from __future__ import annotations

import atexit
import multiprocessing
import multiprocessing.util  # its exit handler first: `atexit` runs ours (registered below) before it
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


class StopRequest:
    """Ctrl-C (SIGINT) or SIGTERM while training, caught so the run stops at the next optimizer step and saves
    last.pt there (resumed exactly by the same command) instead of losing the pass. A second signal stops at once
    (KeyboardInterrupt). Active in the main thread of a single-process run only: the ranks of a distributed run
    would see a signal at different steps. DataLoader workers ignore both signals (`quiet_worker`), so Ctrl-C in
    a terminal or a SIGTERM to the whole process group (a scheduler's) does not kill them under the run."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.name: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def _handle(self, signum: int, frame: object) -> None:
        if self.name is not None:  # the second signal: stop at once
            self.__exit__()
            raise KeyboardInterrupt
        self.name = signal.Signals(signum).name
        print(f"\n{self.name}: saving last.pt at the next step (again to stop at once)", file=sys.stderr, flush=True)


def quiet_worker(worker_id: int | None = None) -> None:
    """DataLoader `worker_init_fn`: the worker ignores SIGINT and SIGTERM (PyTorch's worker handler would end it on
    SIGTERM, failing the run under `StopRequest`); the main process serves them and shuts its workers down."""
    for sig in StopRequest.SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


def _ignores_sigterm(pid: int | None) -> bool:
    """Whether process `pid` ignores SIGTERM (its SigIgn mask in /proc; False where that cannot be read)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    ignored = next((line.split()[1] for line in status.splitlines() if line.startswith("SigIgn:")), "0")
    return bool(int(ignored, 16) >> (signal.SIGTERM - 1) & 1)


@atexit.register
def _end_loader_workers() -> None:
    """At exit, kill the daemonic children still running that ignore SIGTERM: this project's DataLoader workers
    (`quiet_worker`), no other child process (read from /proc, so on Linux only). A loader cut short by an error
    keeps its workers while the error's traceback holds it; multiprocessing's own exit handler would then send them
    SIGTERM, which they ignore, and wait for them for ever, the run folder still locked. (PyTorch's SIGCHLD
    handler, which reports a killed worker as an error, is set back to the default first.)"""
    workers = [child for child in multiprocessing.active_children() if child.daemon and _ignores_sigterm(child.pid)]
    if workers and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for child in workers:
        child.kill()


@contextmanager
def signals_deferred() -> Iterator[None]:
    """SIGINT and SIGTERM noted, not acted on, until the block ends; then the first is raised again for the
    handler that was in place. (Python runs signal handlers in the main thread whichever thread the kernel
    picks, so swapping the handlers holds where masking the main thread would not.)"""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = {number: signal.getsignal(number) for number in StopRequest.SIGNALS}
    for number in StopRequest.SIGNALS:
        signal.signal(number, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler if handler is not None else signal.SIG_DFL)
        if caught:
            signal.raise_signal(caught[0])
