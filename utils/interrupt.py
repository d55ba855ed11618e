"""Ctrl-C and SIGTERM during training (docs/training.md §4): `StopRequest` turns the first signal into a request
that the training loop (`utils.engine.Trainer`) serves at its next optimizer step by saving last.pt and raising
`utils.config.Interrupted`; a script's `reported_errors` prints it as one line, exit status 130.
"""

from __future__ import annotations

import signal
import sys
import threading
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
