"""Process pool for the parser: one item per worker at a time, a dead worker fails only its item, no orphans.

`run_in_workers` maps a function over items in spawned worker processes. Unlike concurrent.futures, a worker
killed by the out-of-memory killer does not break the pool: that item gets the `on_death` result and a fresh
worker takes over. Workers ignore Ctrl-C (the parent stops them) and exit when the parent dies, even by kill -9.
Generic (no file formats); `dataset/data_parser.py` uses it for nights.
"""

from __future__ import annotations

import collections
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import pyarrow as pa


def _exit_with_parent(parent_pid: int) -> None:
    """End this worker when the parser process goes, even by kill -9, so no orphan holds its memory.

    Linux: the kernel sends SIGKILL when the parent dies (prctl PR_SET_PDEATHSIG). Everywhere, and as a
    fallback, a daemon thread checks os.getppid() once a second. The multiprocessing resource tracker then
    exits by itself: it ends when the parser and every worker have closed its pipe.
    """
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:  # the parent died before the kernel was told
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _init_worker(parent_pid: int | None = None) -> None:
    """One thread per worker process: the pool provides the parallelism. The worker exits with `parent_pid`
    and leaves Ctrl-C to the parser, which stops the workers itself."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if parent_pid is not None:
        _exit_with_parent(parent_pid)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:
        pass
    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)


# the thread pools of the numeric libraries, each sized by its own variable: set to 1 for one-thread workers
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")


READY = "ready"  # a worker's first message: it started (what dies before it never ran an item)


def _worker_main(connection, parent_pid: int, work: Callable[[Any], Any]) -> None:
    """A worker process: say `READY`, then run `work` on the (index, item) the parent sends, reply (index,
    result), until None or EOF."""
    _init_worker(parent_pid)
    try:
        connection.send(READY)
    except OSError:  # the parser closed the pipe while this worker started (it stopped or finished): nothing to do
        return
    while True:
        try:
            message = connection.recv()
        except (EOFError, OSError):  # the parser is gone
            return
        if message is None:
            return
        index, item = message
        connection.send((index, work(item)))


NOT_STARTED = "worker could not start"  # the reason's prefix for a worker that died before it said READY


def worker_death_reason(exitcode: int | None) -> str:
    """'worker died: signal 9 (SIGKILL) / out of memory?' from a process exit code (-N: killed by signal N)."""
    if exitcode is None or exitcode >= 0:
        return f"worker died: exit code {exitcode}"
    number = -exitcode
    try:
        name = signal.Signals(number).name
    except ValueError:
        name = "unknown signal"
    return f"worker died: signal {number} ({name}){' / out of memory?' if number == signal.SIGKILL else ''}"


def run_in_workers(
    items: Sequence[Any],
    work: Callable[[Any], Any],
    workers: int,
    on_death: Callable[[int, str], Any],
    done: Callable[[], None] = lambda: None,
    stop_when: Callable[[Any], bool] = lambda result: False,
) -> list[Any]:
    """`work(item)` for every item in `workers` spawned processes, one item each at a time; results in item order.

    `work` must pickle (a top-level function, or a functools.partial of one). Each worker is fed one item at a
    time over its own pipe, so the parent always knows which item a worker holds. A worker that dies (the OOM
    killer's SIGKILL on a huge night, a crash in native code) gives `on_death(index, reason)` as that item's
    result, reason e.g. "worker died: signal 9 (SIGKILL) / out of memory?"; the item is not retried (it would
    most likely die again); a fresh worker takes the dead one's place and every other item goes on unaffected. A
    worker that died before it started (an import failure: its item never ran) gives a reason starting with
    `NOT_STARTED`.
    `done()` is called after each item (a progress bar). Once a result satisfies `stop_when` (a full disk), no
    further item is started: the items already running finish, and the results returned are those of the items
    done, still in item order (the others are left out). Workers run one thread each (`THREAD_VARIABLES` set to 1
    while they start) and exit when the parent dies, even by kill -9.
    """
    context = multiprocessing.get_context("spawn")  # no fork of a process that holds threads
    results: list[Any] = [None] * len(items)
    pending = collections.deque(range(len(items)))
    pool: list[tuple] = []  # (connection, process) of every worker started, for the clean-up
    idle: list[tuple] = []
    running: dict = {}  # connection -> (process, job index)
    started: set = set()  # connections of workers that said READY
    stopped = False

    def start() -> None:
        mine, theirs = context.Pipe()
        process = context.Process(
            target=_worker_main, args=(theirs, os.getpid(), work), name="parser-worker", daemon=True
        )
        process.start()
        theirs.close()
        pool.append((mine, process))
        idle.append((mine, process))

    def retire(connection, process) -> int | None:
        connection.close()
        process.join(timeout=30)
        if process.is_alive():
            process.kill()
            process.join()
        return process.exitcode

    finished = False
    saved = {k: os.environ.get(k) for k in THREAD_VARIABLES}
    os.environ.update({k: "1" for k in THREAD_VARIABLES})  # inherited by the spawned workers
    try:
        for _ in range(min(workers, len(items))):
            start()
        while (pending and not stopped) or running:
            while pending and idle and not stopped:
                connection, process = idle.pop()
                index = pending.popleft()
                try:
                    connection.send((index, items[index]))
                except OSError:  # died while idle, before this job reached it: the job waits for another
                    pending.appendleft(index)
                    retire(connection, process)
                    start()
                    continue
                running[connection] = (process, index)
            ready = set(multiprocessing.connection.wait([*running, *(p.sentinel for p, _ in running.values())]))
            for connection, (process, index) in list(running.items()):
                if connection not in ready and process.sentinel not in ready:
                    continue
                try:
                    reply = connection.recv() if connection.poll() else None
                    if reply == READY:
                        started.add(connection)
                        reply = connection.recv() if connection.poll() else None
                        if reply is None and process.sentinel not in ready:
                            continue  # it started; its item is still running
                except (EOFError, OSError):  # the pipe closed mid-message: the worker died
                    reply = None
                del running[connection]
                died = reply is None or reply[0] != index
                if not died:
                    results[index] = reply[1]
                    idle.append((connection, process))
                else:
                    reason = worker_death_reason(retire(connection, process))
                    if connection not in started:
                        reason = f"{NOT_STARTED}: {reason}"
                    results[index] = on_death(index, reason)
                stopped = stopped or bool(stop_when(results[index]))
                if died and pending and not stopped:
                    start()  # a fresh worker for the dead one, unless its death stops the run
                done()
        finished = True
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        for connection, process in pool:
            if finished and process.is_alive():
                try:
                    connection.send(None)
                except OSError:
                    pass
            else:
                process.kill()  # interrupted (Ctrl-C, an error in the parser): stop at once
        for connection, process in pool:
            connection.close()
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
                process.join()
    skipped = set(pending) if stopped else set()
    return [result for index, result in enumerate(results) if index not in skipped]
