"""Subject-level splits of a parsed cohort (docs/data.md §2.4): made once, from sorted subject ids and a fixed seed.

- Only `ok` recordings take part. `test` and `val` are drawn from labelled subjects (a subject with at least
  one scored epoch), each at least one subject; every other subject is `pretrain`.
- `train` = up to `train_subjects` labelled subjects drawn from `pretrain` (the semi-supervised setting); it is a
  subset of `pretrain`. No subject is in two of {pretrain, val, test}; all nights of a subject share a split.
- The same manifest and seed always give the same file.
- Made once (`extend_splits`): a subject keeps its split for good, also while it has no ok recording (a night
  that fails in one run and is repaired in the next comes back to its split, never to `pretrain` as if new);
  only subjects new to the cohort join `pretrain`. Subject ids that changed under a kept split (another
  `--subject-regex`) are refused: the old split would put one person's nights in two splits.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from dataset.atomic_files import write_atomic

SPLIT_NAMES: tuple[str, ...] = ("pretrain", "train", "val", "test")
RESPLIT = "rerun dataset/data_parser.py with --resplit to make a new one (subjects may change split)"


class SplitsFileError(OSError):
    """DST/splits.json cannot be used: unreadable, not a split file, or breaking the split rules (a subject in two
    of pretrain/val/test, a `train` subject outside `pretrain`). An OSError, like a file that cannot be read, so
    that a parser run keeping the file refuses it (exit 2) before any night is processed instead of passing it
    over; the message names the file and advises --resplit."""


def check_split_options(test_frac: float, val_frac: float, train_subjects: int) -> None:
    """ValueError for split options no cohort can satisfy; checked before a parser run processes any night."""
    for name, frac in (("test_frac", test_frac), ("val_frac", val_frac)):
        if not 0.0 <= frac < 1.0:
            raise ValueError(f"{name} = {frac}, expected a fraction in [0, 1)")
    if test_frac + val_frac >= 1.0:
        raise ValueError(f"test_frac + val_frac = {test_frac + val_frac:g}, must leave subjects for pretraining")
    if train_subjects < 0:
        raise ValueError(f"train_subjects = {train_subjects}, expected >= 0")


def make_splits(
    manifest: pd.DataFrame, seed: int = 0, test_frac: float = 0.1, val_frac: float = 0.1, train_subjects: int = 50
) -> dict:
    """Split the `ok` recordings of a manifest by subject.

    Returns {"seed", "fractions": {"test", "val"}, "train_subjects", "subjects": {split: [ids]},
    "recordings": {split: [ids]}} with sorted id lists. Raises ValueError with fewer than 2 labelled subjects
    (one each for test and val is the minimum; with exactly 2, no labelled subject is left for pretrain / train)
    or fractions outside [0, 1).
    """
    check_split_options(test_frac, val_frac, train_subjects)
    ok = manifest[manifest["status"] == "ok"]
    subject_of = dict(zip(ok["recording_id"].astype(str), ok["subject_id"].astype(str)))
    scored = ok["n_scored"].fillna(0).astype(np.int64) if "n_scored" in ok else pd.Series(1, index=ok.index)
    labelled = sorted(set(ok.loc[scored.to_numpy() > 0, "subject_id"].astype(str)))
    unlabelled = sorted(set(subject_of.values()) - set(labelled))
    if len(labelled) < 2:
        raise ValueError(
            f"{len(labelled)} labelled subject(s) with an ok recording; splits need at least 2 "
            f"(test and val each take one)"
        )

    rng = np.random.default_rng(seed)
    order = [labelled[i] for i in rng.permutation(len(labelled))]
    n_test = max(1, int(round(test_frac * len(labelled))))
    n_val = max(1, int(round(val_frac * len(labelled))))
    spare = 1 if len(labelled) >= 3 else 0  # keep a labelled subject for pretrain / train when there is one to spare
    while n_test + n_val > len(labelled) - spare:
        if n_test >= n_val:
            n_test -= 1
        else:
            n_val -= 1
    test, val = order[:n_test], order[n_test : n_test + n_val]
    pretrain_labelled = order[n_test + n_val :]
    train = [pretrain_labelled[i] for i in rng.permutation(len(pretrain_labelled))[:train_subjects]]
    subjects = {
        "pretrain": sorted(pretrain_labelled + unlabelled),
        "train": sorted(train),
        "val": sorted(val),
        "test": sorted(test),
    }
    members = {split: set(ids) for split, ids in subjects.items()}
    recordings = {split: sorted(r for r, s in subject_of.items() if s in members[split]) for split in subjects}
    return {
        "seed": int(seed),
        "fractions": {"test": float(test_frac), "val": float(val_frac)},
        "train_subjects": int(train_subjects),
        "subjects": subjects,
        "recordings": recordings,
    }


def empty_splits_warning(splits: Mapping) -> str | None:
    """A warning naming the splits of `splits` that hold no recording (with 2 labelled subjects and nothing
    unlabelled, test and val take one each and pretrain / train are empty), or None when each holds one
    (`train` may be empty when `--train-subjects 0` asked for none)."""
    asked = [name for name in SPLIT_NAMES if name != "train" or splits.get("train_subjects", 1)]  # 0: none asked
    empty = [name for name in asked if not splits["recordings"].get(name)]
    if not empty:
        return None
    subjects = sorted({s for ids in splits["subjects"].values() for s in ids})
    return (
        f"warning: split(s) {', '.join(empty)} hold no recording ({len(subjects)} subject(s) in all): the scripts "
        f"that read them will refuse the cohort; pretraining needs a `pretrain` subject and downstream training a "
        f"labelled `train` one beside those of `val` and `test` (at least 3 labelled subjects)"
    )


def check_same_subjects(old: dict, subject_of: Mapping[str, str]) -> None:
    """ValueError when a recording listed in a split of `old` now belongs to a subject that split does not hold
    (`subject_of`: recording id -> subject id of this run): the subject ids changed since the split was made."""
    for name in ("pretrain", "val", "test"):
        members = set(map(str, old["subjects"][name]))
        for recording in old["recordings"][name]:
            subject = subject_of.get(str(recording))
            if subject is not None and subject not in members:
                raise ValueError(
                    f"the split was made with other subject ids (recording {recording} is in {name!r}, whose "
                    f"subjects do not include its subject id {subject!r} now; another --subject-regex?); use "
                    f"--resplit to make a new split, or the subject ids it was made with"
                )


def extend_splits(old: dict, manifest: pd.DataFrame) -> dict:
    """Keep an existing split (docs/data.md §2.4: made once): every subject stays where it was, also while it has
    no ok recording (so a night that fails once never returns as a new subject); subjects new to the cohort go to
    `pretrain` only (never val/test, never train); the recording lists are rebuilt from the manifest. ValueError
    when the subject ids changed since the split was made (`check_same_subjects`)."""
    ok = manifest[manifest["status"] == "ok"]
    subject_of = dict(zip(ok["recording_id"].astype(str), ok["subject_id"].astype(str)))
    check_same_subjects(old, subject_of)
    subjects = {name: sorted(set(map(str, ids))) for name, ids in old["subjects"].items()}
    placed = set().union(*(set(subjects[n]) for n in ("pretrain", "val", "test")))
    subjects["pretrain"] = sorted(set(subjects["pretrain"]) | (set(subject_of.values()) - placed))
    members = {name: set(ids) for name, ids in subjects.items()}
    recordings = {name: sorted(r for r, sub in subject_of.items() if sub in members[name]) for name in subjects}
    return {**old, "subjects": subjects, "recordings": recordings}


def splits_json(splits: Mapping) -> str:
    """The text of a splits.json file."""
    return json.dumps(splits, indent=1) + "\n"


def write_splits(splits: dict, path: str | Path) -> Path:
    """Write splits as JSON atomically (`write_atomic`)."""
    path = Path(path)
    write_atomic(path, lambda tmp: tmp.write_text(splits_json(splits)))
    return path


def check_split_rules(splits: Mapping, path: str | Path) -> None:
    """SplitsFileError naming `path`, a subject (or recording) and two splits when `splits` breaks the rules of
    docs/data.md §2.4: no subject or recording in two of {pretrain, val, test}; `train` a subset of `pretrain`."""
    for key, what in (("subjects", "subject"), ("recordings", "recording")):
        members = {name: set(map(str, splits[key][name])) for name in SPLIT_NAMES}
        for i, first in enumerate(("pretrain", "val", "test")):
            for second in ("pretrain", "val", "test")[i + 1 :]:
                both = sorted(members[first] & members[second])
                if both:
                    raise SplitsFileError(
                        f"{path}: {what} {both[0]!r} is in both {first!r} and {second!r} (no {what} may be in "
                        f"two of pretrain/val/test); {RESPLIT}"
                    )
        outside = sorted(members["train"] - members["pretrain"])
        if outside:
            raise SplitsFileError(
                f"{path}: {what} {outside[0]!r} is in 'train' but not in 'pretrain' (train must be a subset of "
                f"pretrain); {RESPLIT}"
            )


def read_splits(path: str | Path) -> dict:
    """Read a splits file written by `write_splits`: SplitsFileError naming the file when it is not one (unreadable,
    not JSON, other keys) or breaks the split rules (`check_split_rules`); the message advises --resplit."""
    path = Path(path)
    try:
        splits = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise SplitsFileError(f"{path}: not valid JSON ({err}); {RESPLIT}") from None
    for key in ("subjects", "recordings"):
        if (
            not isinstance(splits, dict)
            or not isinstance(splits.get(key), dict)
            or set(splits[key]) != set(SPLIT_NAMES)
            or not all(isinstance(ids, list) for ids in splits[key].values())
        ):
            raise SplitsFileError(f"{path}: '{key}' must map each of {list(SPLIT_NAMES)} to a list; {RESPLIT}")
    check_split_rules(splits, path)
    return splits
