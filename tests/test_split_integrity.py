"""A kept DST/splits.json that is corrupt or breaks the split rules is refused (docs/data.md §2.4), and one file
name that is not valid UTF-8 fails alone instead of stopping the cohort."""

from __future__ import annotations

import json
import os
import shutil

import pandas as pd
import pytest

from dataset.data_parser import main
from dataset.splits import SplitsFileError, read_splits
from tests.parser_nights import make_night, parse

CORRUPT = {
    "truncated": lambda text: text[:50],
    "empty": lambda text: "",
    "invalid": lambda text: "{not json",
    "list": lambda text: "[]",
    "binary": lambda text: "\udcff",
}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """A parsed flat cohort of 4 subjects (one night each) with its splits.json."""
    root = tmp_path_factory.mktemp("cohort")
    for i in range(4):
        make_night(root / "src", f"c-{i}")
    parse(root / "src", root / "dst")
    return root


def _copy(cohort, tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    shutil.copytree(cohort / "src", src)
    shutil.copytree(cohort / "dst", dst)
    return src, dst


def _refused(src, dst, capsys, *needles):
    """The parser run keeping dst/splits.json exits 2 with one error line naming it and advising --resplit, and no
    night is processed (a new night gets no table); with --resplit a valid file is made."""
    make_night(src, "c-9")
    argv = ["--src", str(src), "--dst", str(dst), "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {dst / 'splits.json'}: ") and err.count("\n") == 1, err
    assert "--resplit" in err and all(needle in err for needle in needles), err
    assert not (dst / "recordings" / "c-9.parquet").exists()
    with pytest.raises(SplitsFileError, match="--resplit"):
        read_splits(dst / "splits.json")
    assert main([*argv, "--resplit"]) == 0
    read_splits(dst / "splits.json")


@pytest.mark.parametrize("damage", sorted(CORRUPT))
def test_a_corrupt_kept_splits_file_is_refused_before_any_night(cohort, tmp_path, capsys, damage):
    src, dst = _copy(cohort, tmp_path)
    path = dst / "splits.json"
    path.write_text(CORRUPT[damage](path.read_text()), errors="surrogateescape")
    _refused(src, dst, capsys)


def _edit(path, change):
    splits = json.loads(path.read_text())
    change(splits["subjects"])
    path.write_text(json.dumps(splits))


def test_a_subject_in_two_splits_is_refused_by_parser_and_loader(cohort, tmp_path, capsys):
    src, dst = _copy(cohort, tmp_path)
    (subject,) = json.loads((dst / "splits.json").read_text())["subjects"]["val"]
    _edit(dst / "splits.json", lambda subjects: subjects["pretrain"].append(subject))
    _refused(src, dst, capsys, repr(subject), "'pretrain'", "'val'")


def test_a_train_subject_outside_pretrain_is_refused(cohort, tmp_path, capsys):
    src, dst = _copy(cohort, tmp_path)
    (subject,) = json.loads((dst / "splits.json").read_text())["subjects"]["test"]
    _edit(dst / "splits.json", lambda subjects: subjects["train"].append(subject))
    _refused(src, dst, capsys, repr(subject), "'train'", "'pretrain'")


def test_a_file_name_that_is_not_utf8_fails_alone(cohort, tmp_path, capsys):
    src, dst = tmp_path / "src", tmp_path / "dst"
    shutil.copytree(cohort / "src", src)
    bad = os.fsencode(str(src)) + b"/n\xe9-0001"
    for suffix in (b".edf", b"-nsrr.xml"):
        with open(bad + suffix, "wb") as out:
            out.write((cohort / "src" / f"c-0{os.fsdecode(suffix)}").read_bytes())
    assert main(["--src", str(src), "--dst", str(dst), "--no-progress"]) == 1
    manifest = pd.read_parquet(dst / "manifest.parquet").set_index("recording_id")
    assert (manifest.drop("n\ufffd-0001")["status"] == "ok").all() and len(manifest) == 5
    row = manifest.loc["n\ufffd-0001"]
    assert row["status"] == "failed" and "file name is not valid UTF-8: rename it" in row["reason"]
    assert row["edf"].endswith("n\ufffd-0001.edf") and row["xml"].endswith("n\ufffd-0001-nsrr.xml")
    assert sorted(p.name for p in (dst / "recordings").iterdir()) == [f"c-{i}.parquet" for i in range(4)]
    assert "Traceback" not in capsys.readouterr().err
