"""Files written whole or not at all: `write_atomic` writes to a temp file beside the target and renames it over
the target, so a reader sees the old file or the new one, never half of either; `write_all_atomic` does so for
files that belong together (a manifest and its splits), renaming none before every one is written. A write that fails for want of
space, quota or a writable disk (`STORAGE_ERRNOS`) is the environment's fault, not the data's: `storage_error`
turns it into an OSError naming the file (pyarrow and pandas name none) that the parser stops on."""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = ["STORAGE_ERRNOS", "storage_error", "write_all_atomic", "write_atomic"]

# a write that fails for want of space, quota or a writable disk: the environment's fault, so the run stops and no
# earlier output is removed for it (every later night would fail the same way)
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})


def storage_error(err: BaseException, path: str | Path) -> OSError | None:
    """`err` as a plain OSError naming the file that could not be written (pyarrow and pandas name none), when
    it is a storage error (`STORAGE_ERRNOS`); else None. Plain, so that it pickles back from a worker."""
    if isinstance(err, OSError) and err.errno in STORAGE_ERRNOS:
        return OSError(err.errno, os.strerror(err.errno), str(err.filename or path))
    return None


def write_atomic(path: Path, write: Callable[[Path], object], tmp: Path | None = None) -> None:
    """`write(tmp)` (default temp file `.<name>.tmp` beside `path`), then `tmp` renamed over `path`. On failure the
    temp file is removed and `path` is unchanged; a storage error is raised as `storage_error`, naming `path`."""
    _write_then_rename([(path, write, tmp or _temp_of(path))])


def write_all_atomic(
    writes: Sequence[tuple[Path, Callable[[Path], object]]], ready: Sequence[tuple[Path, Path]] = ()
) -> None:
    """`write_atomic` for files that belong together: every `write(tmp)` first, then the renames. When one write
    fails (a full disk), every temp file is removed and no target has changed, so readers never see the new
    manifest beside the old splits. `ready`: (target, file already written elsewhere on the same disk, e.g. a
    staged table) pairs renamed first, before the written files, and left where they are when a write fails. The
    renames need no space; one that fails all the same (a target that is a folder) leaves the files renamed before
    it replaced, and removes the other temp files."""
    _write_then_rename([(path, write, _temp_of(path)) for path, write in writes], ready)


def _temp_of(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp")


def _write_then_rename(
    writes: Sequence[tuple[Path, Callable[[Path], object], Path]], ready: Sequence[tuple[Path, Path]] = ()
) -> None:
    written: list[Path] = []
    for path, write, tmp in writes:
        try:
            written.append(tmp)
            write(tmp)
        except BaseException as err:
            for left in written:  # a half-written file would only hold space a full disk needs
                with contextlib.suppress(OSError):
                    left.unlink(missing_ok=True)
            stop = storage_error(err, path)
            if stop is None:
                raise
            raise stop from None
    try:
        for path, done in ready:
            os.replace(done, path)
    except OSError:
        for left in written:
            with contextlib.suppress(OSError):
                left.unlink(missing_ok=True)
        raise
    for index, (path, _, tmp) in enumerate(writes):
        try:
            os.replace(tmp, path)
        except OSError:  # (a target that became a folder): the temp files not yet renamed must not stay behind
            for _, _, left in writes[index:]:
                with contextlib.suppress(OSError):
                    left.unlink(missing_ok=True)
            raise
