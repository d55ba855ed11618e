"""Subject-level splits (docs/data.md §2.4): deterministic, disjoint, from 6 subjects to thousands."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from dataset.splits import SPLIT_NAMES, empty_splits_warning, extend_splits, make_splits, read_splits, write_splits


def manifest_of(
    n_subjects: int, second_nights: int = 0, bad: int = 0, unlabelled: int = 0, seed: int = 0
) -> pd.DataFrame:
    """A manifest with one SHHS1 night per subject, SHHS2 nights for the first `second_nights` subjects, `bad`
    extra failed/skipped rows and `unlabelled` ok nights without a scored epoch (own subjects)."""
    rows = []
    for i in range(n_subjects):
        subject = f"{200001 + i}"
        rows.append({"recording_id": f"shhs1-{subject}", "subject_id": subject, "status": "ok", "n_scored": 900})
        if i < second_nights:
            rows.append({"recording_id": f"shhs2-{subject}", "subject_id": subject, "status": "ok", "n_scored": 850})
    for i in range(bad):
        subject = f"{900001 + i}"
        rows.append(
            {
                "recording_id": f"shhs1-{subject}",
                "subject_id": subject,
                "status": "failed" if i % 2 else "skipped",
                "n_scored": None,
            }
        )
    for i in range(unlabelled):
        subject = f"{800001 + i}"
        rows.append({"recording_id": f"mros-{subject}", "subject_id": subject, "status": "ok", "n_scored": 0})
    frame = pd.DataFrame(rows)
    return frame.iloc[np.random.default_rng(seed).permutation(len(frame))].reset_index(drop=True)


def check_invariants(splits: dict, manifest: pd.DataFrame) -> None:
    subjects, recordings = splits["subjects"], splits["recordings"]
    assert set(subjects) == set(recordings) == set(SPLIT_NAMES)
    for name in SPLIT_NAMES:
        assert subjects[name] == sorted(subjects[name]) and len(set(subjects[name])) == len(subjects[name])
    pretrain, val, test = (set(subjects[k]) for k in ("pretrain", "val", "test"))
    assert not (pretrain & val) and not (pretrain & test) and not (val & test)
    assert set(subjects["train"]) <= pretrain and len(val) >= 1 and len(test) >= 1
    ok = manifest[manifest["status"] == "ok"]
    assert pretrain | val | test == set(ok["subject_id"])  # every ok subject, nothing else
    subject_of = dict(zip(ok["recording_id"], ok["subject_id"]))
    for name in SPLIT_NAMES:  # all nights of a subject travel together
        expected = sorted(r for r, s in subject_of.items() if s in set(subjects[name]))
        assert recordings[name] == expected


def test_six_subjects():
    manifest = manifest_of(6, second_nights=2, bad=2)
    splits = make_splits(manifest, seed=0)
    check_invariants(splits, manifest)
    assert len(splits["subjects"]["test"]) == 1 and len(splits["subjects"]["val"]) == 1
    assert len(splits["subjects"]["pretrain"]) == 4 and splits["subjects"]["train"] == splits["subjects"]["pretrain"]
    assert not any(r.startswith("shhs1-9") for names in splits["recordings"].values() for r in names)


def test_two_thousand_subjects():
    manifest = manifest_of(2000, second_nights=700, bad=30, unlabelled=40)
    splits = make_splits(manifest, seed=0, train_subjects=50)
    check_invariants(splits, manifest)
    assert len(splits["subjects"]["test"]) == 200 and len(splits["subjects"]["val"]) == 200
    assert len(splits["subjects"]["train"]) == 50
    unlabelled = {f"{800001 + i}" for i in range(40)}
    assert unlabelled <= set(splits["subjects"]["pretrain"]) and not unlabelled & set(splits["subjects"]["train"])


def test_deterministic_and_independent_of_row_order(tmp_path):
    first = make_splits(manifest_of(300, second_nights=50, seed=1), seed=7)
    second = make_splits(manifest_of(300, second_nights=50, seed=2), seed=7)  # rows shuffled differently
    assert first == second
    assert make_splits(manifest_of(300, seed=1), seed=8)["subjects"]["test"] != first["subjects"]["test"]
    path = write_splits(first, tmp_path / "splits.json")
    assert read_splits(path) == first and not list(tmp_path.glob("*.tmp"))
    assert json.loads(path.read_text())["fractions"] == {"test": 0.1, "val": 0.1}


def test_train_subjects_limit_and_fractions():
    manifest = manifest_of(100)
    splits = make_splits(manifest, seed=0, test_frac=0.2, val_frac=0.05, train_subjects=10)
    check_invariants(splits, manifest)
    assert (len(splits["subjects"]["test"]), len(splits["subjects"]["val"]), len(splits["subjects"]["train"])) == (
        20,
        5,
        10,
    )
    assert len(make_splits(manifest, train_subjects=1000)["subjects"]["train"]) == 80  # all labelled pretrain


@pytest.mark.parametrize("n_subjects", [3, 4, 5])
def test_small_cohorts_keep_one_subject_each_for_test_and_val(n_subjects):
    manifest = manifest_of(n_subjects)
    splits = make_splits(manifest, seed=0, test_frac=0.4, val_frac=0.4)
    check_invariants(splits, manifest)
    assert len(splits["subjects"]["pretrain"]) >= 1


def test_two_subjects_still_give_one_test_and_one_val_subject():
    manifest = manifest_of(2, second_nights=2, unlabelled=1)
    splits = make_splits(manifest, seed=0)
    check_invariants(splits, manifest)
    assert len(splits["subjects"]["test"]) == 1 and len(splits["subjects"]["val"]) == 1
    assert splits["subjects"]["pretrain"] == ["800001"] and splits["subjects"]["train"] == []
    assert "split(s) train hold no recording (3 subject(s) in all)" in empty_splits_warning(splits)


def test_splits_left_empty_are_named():
    """Two subjects and nothing unlabelled: test and val take one each, and the warning names pretrain and
    train, which every pretraining and downstream script would refuse; `--train-subjects 0` asks for no train."""
    two = make_splits(manifest_of(2))
    assert "split(s) pretrain, train hold no recording (2 subject(s) in all)" in empty_splits_warning(two)
    assert empty_splits_warning(make_splits(manifest_of(6))) is None
    assert empty_splits_warning(make_splits(manifest_of(6), train_subjects=0)) is None


def test_too_few_subjects_or_bad_fractions_raise():
    with pytest.raises(ValueError, match="at least 2"):
        make_splits(manifest_of(1))
    with pytest.raises(ValueError, match="at least 2"):
        make_splits(manifest_of(1, unlabelled=5))
    with pytest.raises(ValueError, match="test_frac"):
        make_splits(manifest_of(10), test_frac=1.5)
    with pytest.raises(ValueError, match="must leave"):
        make_splits(manifest_of(10), test_frac=0.5, val_frac=0.5)


def test_an_existing_split_is_kept_and_new_subjects_only_join_pretrain():
    first = make_splits(manifest_of(10), seed=0)
    grown = manifest_of(20, second_nights=3)
    kept = extend_splits(first, grown)
    check_invariants(kept, grown)
    for name in ("val", "test", "train"):
        assert kept["subjects"][name] == first["subjects"][name]
    assert set(first["subjects"]["pretrain"]) <= set(kept["subjects"]["pretrain"])


def test_a_subject_keeps_its_split_while_it_has_no_ok_recording():
    """A subject whose nights all fail in one run stays in its split (no recording listed) and, once they are
    repaired, comes back to it: never to pretrain as a subject new to the cohort."""
    manifest = manifest_of(10, second_nights=10)
    first = make_splits(manifest, seed=0)
    (test_subject,) = first["subjects"]["test"]
    broken = manifest.assign(status=np.where(manifest["subject_id"] == test_subject, "failed", "ok"))
    during = extend_splits(first, broken)
    assert during["subjects"] == first["subjects"] and during["recordings"]["test"] == []
    assert extend_splits(during, manifest) == first


def test_a_kept_split_refuses_other_subject_ids():
    """Subject ids that changed since the split was made (another --subject-regex) cannot keep it: one person's
    nights could fall in two splits."""
    first = make_splits(manifest_of(10), seed=0)
    renamed = manifest_of(10).assign(subject_id=lambda m: "p" + m["subject_id"])
    with pytest.raises(ValueError, match="other subject ids"):
        extend_splits(first, renamed)
