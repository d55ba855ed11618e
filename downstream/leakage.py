"""The test-leakage guard of every downstream script (docs/training.md 4.5): no subject of the `test` split
may appear in another split of DST/splits.json, nor in the training and model-selection data a run actually
loads. Checked at start and again on the recordings used; a violation raises `LeakageError` (exit status 2).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from dataset.cohort import read_subjects
from dataset.splits import read_splits
from utils.config import UsageError


class LeakageError(UsageError, RuntimeError):
    """A subject of the `test` split appears in training or model-selection data (a data error: exit status 2)."""


def assert_no_test_leakage(data_dir: str | Path, used: Mapping[str, Iterable[str]] | None = None) -> set[str]:
    """Raise LeakageError if a `test` subject is listed in another split of DST/splits.json (by subject id or
    through a recording), or owns a recording of `used` (purpose -> recording ids, e.g. the training and
    selection data actually loaded). Returns the test subjects. An unreadable splits.json or manifest is a
    UsageError naming the file."""
    path = Path(data_dir) / "splits.json"
    used = {purpose: list(recordings) for purpose, recordings in (used or {}).items()}
    try:
        splits = read_splits(path)
        every = sorted(
            {r for ids in splits["recordings"].values() for r in ids} | {r for ids in used.values() for r in ids}
        )
        subject_of = read_subjects(data_dir, every)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise UsageError(f"{data_dir}: cannot read the cohort's splits and subjects: {err}") from None

    def members(split: str) -> set[str]:
        return set(map(str, splits["subjects"][split])) | {subject_of[r] for r in splits["recordings"][split]}

    test = members("test")
    problems = []
    for split in ("pretrain", "train", "val"):
        overlap = sorted(members(split) & test)
        if overlap:
            problems.append(f"test subject(s) {overlap[:5]} also in split {split!r}")
    for purpose, recordings in used.items():
        leaked = sorted({r for r in recordings if subject_of[r] in test})
        if leaked:
            problems.append(f"{purpose} data holds recording(s) {leaked[:5]} of test subjects")
    if problems:
        raise LeakageError(f"{path}: test leakage: " + "; ".join(problems))
    return test
