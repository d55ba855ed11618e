"""`predict.py` over a cohort: `--edf` a folder, a glob or a list file gives one report per night and a summary;
one bad night is a failed row, never the end of the cohort, and leaves no part of a report; earlier outputs and
annotation-only files are never nights."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from dataset import synthetic
from downstream import predict


def test_a_cohort_folder_glob_or_list_gives_one_report_per_night_and_a_summary(predict_runs, tmp_path, capsys):
    """One bad night is a failed row with its reason (exit 1), never the end of the cohort; each EDF gets the XML
    the parser pairs it with (beside it), or none."""
    cohort = tmp_path / "cohort"
    synthetic.generate_night(cohort / "a-100001.edf", cohort / "a-100001-nsrr.xml", "a-100001", hours=0.1, seed=11)
    synthetic.generate_night(cohort / "b-100002.edf", tmp_path / "elsewhere-nsrr.xml", "b-100002", hours=0.1, seed=12)
    (cohort / "c-100003.edf").write_bytes(b"not an EDF" * 50)
    out = tmp_path / "out"
    args = [
        "--checkpoint",
        str(predict_runs["stage"]),
        "--apnea",
        str(predict_runs["apnea"]),
        "--out",
        str(out),
        "--no-progress",
    ]
    assert predict.main([*args, "--edf", str(cohort)]) == 1
    summary = pd.read_csv(out / "summary.csv", keep_default_na=False).set_index("night")
    assert list(summary.index) == ["a-100001", "b-100002", "c-100003"]
    assert summary["status"].tolist() == ["ok", "ok", "failed"] and "c-100003.edf" in summary.loc["c-100003", "reason"]
    assert summary.loc["a-100001", "subject"] == 100001
    assert summary.loc["a-100001", "xml"] == str(cohort / "a-100001-nsrr.xml") and summary.loc["b-100002", "xml"] == ""
    for name in ("a-100001", "b-100002"):
        report = json.loads((out / name / "report.json").read_text())
        assert report["recording"] == name and (out / name / "events.csv").is_file()
        assert float(summary.loc[name, "tst_min"]) == pytest.approx(report["sleep"]["tst_min"])
    assert json.loads((out / "a-100001" / "report.json").read_text())["agreement"] is not None
    assert not (out / "c-100003").exists() and "failed" in (out / "summary.md").read_text()
    assert "[a-100001](<a-100001/report.md>)" in (out / "summary.md").read_text()  # a link whatever the name holds
    assert "c-100003" in capsys.readouterr().out

    listing = tmp_path / "nights.txt"
    listing.write_text("# two nights\ncohort/a-100001.edf\n\ncohort/b-100002.edf\n")
    assert predict.main([*args, "--edf", str(listing)]) == 0
    listed = pd.read_csv(out / "summary.csv", keep_default_na=False)
    assert listed["night"].tolist() == ["a-100001", "b-100002"] and (listed["status"] == "ok").all()
    assert listed["xml"].tolist() == [str(cohort / "a-100001-nsrr.xml"), ""]
    assert not (out / "c-100003").exists()  # the earlier cohort report was replaced whole
    assert predict.main([*args, "--edf", str(cohort / "a-*.edf")]) == 0
    assert pd.read_csv(out / "summary.csv")["night"].tolist() == ["a-100001"]
    assert predict.main([*args, "--edf", str(cohort / "none-*.edf")]) == 2
    assert capsys.readouterr().err.startswith("error: --edf ")
    xml = cohort / "a-100001-nsrr.xml"  # a scoring file given as --edf is not a list of nights
    assert predict.main([*args, "--edf", str(xml)]) == 2
    assert (
        capsys.readouterr().err == f"error: --edf {xml}: neither an EDF file nor a list of EDF paths (one per line)\n"
    )


def test_a_report_folder_inside_the_cohort_and_a_cohort_that_fails_whole(predict_runs, tmp_path, capsys):
    """--out below --edf: its own predicted EDF and XML files are never nights, so the same command runs again
    alike. A cohort of which no night can be predicted is a failed run: the earlier reports stay as they were."""
    study = tmp_path / "study"
    synthetic.generate_night(study / "a-100001.edf", study / "a-100001-nsrr.xml", "a-100001", hours=0.1, seed=11)
    out = study / "predictions"
    args = ["--checkpoint", str(predict_runs["stage"]), "--out", str(out), "--no-progress", "--edf", str(study)]
    assert predict.main(args) == 0
    assert (out / "a-100001" / "predicted-nsrr.xml").is_file()
    assert predict.main(args) == 0  # not its own outputs as nights
    assert pd.read_csv(out / "summary.csv")["night"].tolist() == ["a-100001"]
    elsewhere = tmp_path / "elsewhere"  # nor, into another folder, the annotation files of the earlier reports
    for source in (str(study), str(study / "**" / "*.edf")):
        assert predict.main([*args[:3], str(elsewhere), *args[4:-1], source]) == 0
        assert pd.read_csv(elsewhere / "summary.csv")["night"].tolist() == ["a-100001"]
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "x-100009.edf").write_bytes(b"not an EDF" * 50)
    capsys.readouterr()
    assert predict.main([*args[:-1], str(broken)]) == 1
    assert "no night could be predicted" in capsys.readouterr().err
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before


def test_a_sleep_edf_hypnogram_in_a_glob_is_the_scoring_not_a_night(predict_runs, tmp_path):
    """`SC4001EC-Hypnogram.edf` beside `SC4001E0-PSG.edf`: a glob or list names both, but the hypnogram is the
    night's scoring, as in the folder form."""
    from dataset.annotation_export import write_edf_annotations

    study = tmp_path / "sleep-edf"
    synthetic.generate_night(study / "SC4001E0-PSG.edf", tmp_path / "x-nsrr.xml", "SC4001E0", hours=0.1, seed=11)
    write_edf_annotations(study / "SC4001EC-Hypnogram.edf", np.array([0, 1, 2, 2] * 3), {})
    out = tmp_path / "out"
    args = ["--checkpoint", str(predict_runs["stage"]), "--out", str(out), "--no-progress", "--edf"]
    assert predict.main([*args, str(study / "*.edf")]) == 0
    summary = pd.read_csv(out / "summary.csv", keep_default_na=False)
    assert summary["night"].tolist() == ["SC4001E0-PSG"]
    assert summary["xml"].tolist() == [str(study / "SC4001EC-Hypnogram.edf")]


def test_a_night_that_fails_while_its_files_are_written_leaves_none(predict_runs, tmp_path, capsys, monkeypatch):
    """A fault while a night's files are written: in a cohort, a failed row and no folder of that night; alone,
    one error line naming the EDF and the earlier --out untouched."""
    from dataset import annotation_export

    cohort = tmp_path / "cohort"
    synthetic.generate_night(cohort / "a-100001.edf", cohort / "a-100001-nsrr.xml", "a-100001", hours=0.1, seed=11)
    synthetic.generate_night(cohort / "b-100002.edf", cohort / "b-100002-nsrr.xml", "b-100002", hours=0.1, seed=12)
    write = annotation_export.write_edf_annotations

    def refuse(path, *rest, **options):  # night a: its hypnogram.csv, events and XML are written by then
        if "a-100001" in str(path):
            raise ValueError("EDF only allows dates from 1985 to 2084")
        return write(path, *rest, **options)

    monkeypatch.setattr(annotation_export, "write_edf_annotations", refuse)
    out = tmp_path / "out"
    args = ["--checkpoint", str(predict_runs["stage"]), "--out", str(out), "--no-progress", "--edf"]
    assert predict.main([*args, str(cohort)]) == 1
    summary = pd.read_csv(out / "summary.csv", keep_default_na=False).set_index("night")
    assert summary["status"].tolist() == ["failed", "ok"]
    assert "ValueError: EDF only allows dates" in summary.loc["a-100001", "reason"]
    assert not (out / "a-100001").exists() and (out / "b-100002" / "report.json").is_file()
    shutil.rmtree(out)
    assert predict.main([*args, str(cohort / "b-100002.edf")]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()
    monkeypatch.setattr(annotation_export, "write_edf_annotations", lambda *_a, **_k: refuse("a-100001"))
    assert predict.main([*args, str(cohort / "a-100001.edf")]) == 1
    err = capsys.readouterr().err
    assert err == f"error: {cohort / 'a-100001.edf'}: ValueError: EDF only allows dates from 1985 to 2084\n"
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_a_night_whose_scoring_beside_it_is_unreadable_is_predicted_without_agreement(predict_runs, tmp_path):
    """In a cohort the scoring is found beside the night, and only the agreement needs it: an unreadable one is a
    warning and the night is predicted. A scoring the user names with --xml is read or refused."""
    cohort = tmp_path / "cohort"
    edf, xml = cohort / "d-100004.edf", cohort / "d-100004-nsrr.xml"
    synthetic.generate_night(edf, xml, "d-100004", hours=0.1, seed=13)
    xml.write_text("<PSGAnnotation><ScoredEvents><ScoredEvent>")  # cut short
    out = tmp_path / "out"
    args = ["--checkpoint", str(predict_runs["stage"]), "--no-progress"]
    assert predict.main([*args, "--edf", str(cohort), "--out", str(out)]) == 0
    summary = pd.read_csv(out / "summary.csv", keep_default_na=False)
    assert summary["status"].tolist() == ["ok"]
    report = json.loads((out / "d-100004" / "report.json").read_text())
    assert report["agreement"] is None and report["xml"] is None
    assert any(w.startswith("scoring not read, so no agreement: ") and str(xml) in w for w in report["warnings"])
    assert predict.main([*args, "--edf", str(edf), "--xml", str(xml), "--out", str(tmp_path / "one")]) == 2
    assert not (tmp_path / "one").exists()
