"""Assertions shared by the bad-input tests of every script: one error line, and nothing changed on disk."""

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
