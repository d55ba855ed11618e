"""Assertions and file surgery shared by the tests: one error line, nothing changed on disk, a shortened EDF."""

import hashlib
from collections.abc import Callable
from pathlib import Path


def exit_code(main: Callable[[list[str]], int | None], argv: list[str]) -> int:
    """A script's exit code, whether `main` returns it or raises SystemExit."""
    try:
        code = main(argv)
    except SystemExit as exit_info:
        code = exit_info.code
    return 0 if code is None else int(code)


def snapshot(*roots: Path) -> dict[str, str]:
    """sha256 of every file under `roots`."""
    return {
        str(path): hashlib.sha256(path.read_bytes()).hexdigest()
        for root in roots
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def assert_one_error_line(stderr: str, expect: str) -> None:
    """Exactly one `error:` line, naming `expect`; no traceback and no torch `weights_only` advice."""
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr
    assert expect in errors[0], errors[0]
    assert "Traceback" not in stderr and "weights_only" not in stderr, stderr


def drop_last_records(edf: Path, n: int) -> None:
    """Cut the last `n` data records of an EDF, header kept consistent (a recording that ends where it ends)."""
    data = bytearray(edf.read_bytes())
    header_bytes, records, ns = int(data[184:192]), int(data[236:244]), int(data[252:256])
    spans = data[256 + ns * 216 : 256 + ns * 224]
    record_bytes = 2 * sum(int(spans[8 * i : 8 * i + 8]) for i in range(ns))
    data[236:244] = f"{records - n:<8d}".encode()
    edf.write_bytes(bytes(data[: header_bytes + (records - n) * record_bytes]))
