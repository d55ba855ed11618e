"""Discovery on real-world folder layouts: linked cohort folders, hidden copies (macOS `._` files, trash and snapshot
folders), several NSRR trees under one SRC or SRC inside an NSRR tree, and the rows of unpaired annotation files.

Discovery reads no EDF content when an EDF is paired, so most trees here hold empty placeholder files; the reruns
that must keep a good table use short real nights (`tests.parser_nights`)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from dataset.discovery import discover
from tests.parser_nights import DEFAULT_STAGES, make_night, parse, stage_events, write_xml


def touch(base: Path, *rels: str) -> None:
    for rel in rels:
        (base / rel).parent.mkdir(parents=True, exist_ok=True)
        (base / rel).write_bytes(b"")


def pairs(src: Path) -> list[tuple[str, str | None, str | None, str]]:
    """(recording id, EDF, annotation file, problem) of each job, the files relative to `src`."""
    rel = lambda path: os.path.relpath(path, src) if path else None  # noqa: E731
    return [(j.recording_id, rel(j.edf), rel(j.xml), j.problem) for j in discover(src)]


def nsrr_night(root: Path, cohort: str, name: str) -> Path:
    """A short real night in the NSRR tree `root/polysomnography` (EDF in edfs/<cohort>/, XML in the mirror)."""
    edf = make_night(root / "polysomnography" / "edfs" / cohort, name, xml=False)
    xml = root / "polysomnography" / "annotations-events-nsrr" / cohort / f"{name}-nsrr.xml"
    xml.parent.mkdir(parents=True, exist_ok=True)
    write_xml(xml, stage_events(DEFAULT_STAGES))
    return edf


# ------------------------------------------------------------------------------------------ linked folders
def test_linked_cohort_folders_are_searched_once_and_link_loops_end(tmp_path):
    """edfs/shhs2 and annotations-events-nsrr/shhs1 on another disk, linked back, pair as if they were in place; a
    link back up the tree (a loop) and a second link to a folder already searched add nothing."""
    src, disk2 = tmp_path / "shhs", tmp_path / "disk2"
    poly = src / "polysomnography"
    touch(poly, "edfs/shhs1/shhs1-200001.edf", "annotations-events-nsrr/shhs2/shhs2-200001-nsrr.xml")
    touch(disk2, "shhs2/shhs2-200001.edf", "nsrr-shhs1/shhs1-200001-nsrr.xml")
    os.symlink(disk2 / "shhs2", poly / "edfs/shhs2")
    os.symlink(disk2 / "nsrr-shhs1", poly / "annotations-events-nsrr/shhs1")
    os.symlink(poly, poly / "edfs/shhs1/loop")
    os.symlink(".", poly / "edfs/shhs2/self")
    os.symlink(disk2 / "shhs2", poly / "edfs/shhs3")
    assert [(j.recording_id, j.cohort) for j in discover(src)] == [("shhs1-200001", "shhs1"), ("shhs2-200001", "shhs2")]
    assert pairs(src) == [
        (
            "shhs1-200001",
            "polysomnography/edfs/shhs1/shhs1-200001.edf",
            "polysomnography/annotations-events-nsrr/shhs1/shhs1-200001-nsrr.xml",
            "",
        ),
        (
            "shhs2-200001",
            "polysomnography/edfs/shhs2/shhs2-200001.edf",
            "polysomnography/annotations-events-nsrr/shhs2/shhs2-200001-nsrr.xml",
            "",
        ),
    ]


def test_moving_a_cohort_folder_to_another_disk_keeps_its_tables_on_a_rerun(tmp_path):
    src, dst = tmp_path / "shhs", tmp_path / "dst"
    nsrr_night(src, "shhs1", "shhs1-200001")
    nsrr_night(src, "shhs2", "shhs2-200001")
    assert (parse(src, dst)["status"] == "ok").all()
    table = dst / "recordings" / "shhs2-200001.parquet"
    stamp = table.stat().st_mtime_ns
    shutil.move(src / "polysomnography/edfs/shhs2", tmp_path / "shhs2")
    os.symlink(tmp_path / "shhs2", src / "polysomnography/edfs/shhs2")
    manifest = parse(src, dst)
    assert manifest["status"].tolist() == ["ok", "ok"] and manifest["edf"].str.len().gt(0).all()
    assert table.stat().st_mtime_ns == stamp  # reused, not deleted by an annotation-only row


# ------------------------------------------------------------------------------------------ hidden files
def test_hidden_files_and_folders_are_never_inputs_and_are_counted(tmp_path, capsys):
    """macOS `._` companions (FAT/exFAT copies), a trash folder and a snapshot folder holding an older copy of a
    night: none is a recording, an annotation candidate or a duplicate; one stderr line counts them."""
    src = tmp_path / "drive"
    touch(
        src,
        "shhs/shhs1-200001.edf",
        "shhs/shhs1-200001-nsrr.xml",
        "shhs/._shhs1-200001.edf",
        "shhs/._shhs1-200001-nsrr.xml",
        "shhs/.DS_Store",
        ".Trash-1000/files/shhs1-200001.edf",
        "shhs/.snapshot/hourly.0/shhs1-200001.edf",
        "sleep-edf/SC4001E0-PSG.edf",
        "sleep-edf/SC4001EC-Hypnogram.edf",
        "sleep-edf/._SC4001EC-Hypnogram.edf",
    )
    assert pairs(src) == [
        ("SC4001E0-PSG", "sleep-edf/SC4001E0-PSG.edf", "sleep-edf/SC4001EC-Hypnogram.edf", ""),
        ("shhs1-200001", "shhs/shhs1-200001.edf", "shhs/shhs1-200001-nsrr.xml", ""),
    ]
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ignored 5 hidden file(s) or folder(s)" in err
    assert f"e.g. {src / '.Trash-1000'}" in err


def test_a_hidden_copy_sorting_first_never_deletes_the_good_table_on_a_rerun(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_night(src / "site", "n-1")
    parse(src, dst)
    table = dst / "recordings" / "n-1.parquet"
    stamp = table.stat().st_mtime_ns
    (src / ".Trash").mkdir()
    shutil.copy(src / "site" / "n-1.edf", src / ".Trash" / "n-1.edf")
    manifest = parse(src, dst)
    assert manifest[["recording_id", "status"]].values.tolist() == [["n-1", "ok"]]
    assert table.stat().st_mtime_ns == stamp


def test_a_labelled_night_is_processed_before_an_unlabelled_namesake(tmp_path):
    """Of two EDFs with one recording id the one with an annotation file owns the output, wherever it sorts; with
    equal standing the first in path order does (an unlabelled stray copy never shadows the labelled night)."""
    touch(tmp_path, "a-backup/x-1.edf", "b/x-1.edf", "b/x-1-nsrr.xml", "c/y-1.edf", "d/y-1.edf")
    jobs = {(j.recording_id, Path(j.edf).parent.name): j for j in discover(tmp_path)}
    labelled, stray = jobs[("x-1", "b")], jobs[("x-1", "a-backup")]
    assert labelled.owns_output and not labelled.problem and labelled.xml.endswith("b/x-1-nsrr.xml")
    assert not stray.owns_output and "duplicate recording id" in stray.problem and labelled.edf in stray.problem
    assert jobs[("y-1", "c")].owns_output and not jobs[("y-1", "d")].owns_output


# ------------------------------------------------------------------------------------------ several NSRR trees
def test_every_nsrr_tree_below_src_pairs_by_its_own_mirror(tmp_path):
    """`nsrr download` run in one folder for several cohorts, a bare NSRR root (edfs/ beside annotations-events-*)
    deeper down, and a flat folder beside them: each EDF pairs within its own tree, the flat one beside itself."""
    touch(
        tmp_path,
        "shhs/polysomnography/edfs/shhs1/shhs1-200001.edf",
        "shhs/polysomnography/annotations-events-nsrr/shhs1/shhs1-200001-nsrr.xml",
        "mesa/polysomnography/edfs/mesa-sleep-0001.edf",
        "mesa/polysomnography/annotations-events-profusion/mesa-sleep-0001-profusion.xml",
        "more/mros/edfs/visit1/mros-visit1-aa0001.edf",
        "more/mros/annotations-events-nsrr/visit1/mros-visit1-aa0001-nsrr.xml",
        "clinic/psg-0001.edf",
        "clinic/psg-0001-nsrr.xml",
    )
    jobs = discover(tmp_path)
    assert [(j.recording_id, j.cohort, j.problem) for j in jobs] == [
        ("mesa-sleep-0001", "mesa-sleep", ""),
        ("mros-visit1-aa0001", "visit1", ""),
        ("psg-0001", "psg", ""),
        ("shhs1-200001", "shhs1", ""),
    ]
    assert [Path(j.xml).relative_to(tmp_path).parts[:2] for j in jobs] == [
        ("mesa", "polysomnography"),
        ("more", "mros"),
        ("clinic", "psg-0001-nsrr.xml"),
        ("shhs", "polysomnography"),
    ]


def test_src_inside_edfs_pairs_with_the_mirror_beside_it(tmp_path):
    """--src pointed at polysomnography/edfs (or one cohort folder in it) finds the annotation folders beside
    edfs/; the same pairs and cohorts as from the download root."""
    root = tmp_path / "shhs"
    touch(
        root,
        "polysomnography/edfs/shhs1/shhs1-200001.edf",
        "polysomnography/edfs/shhs2/shhs2-200001.edf",
        "polysomnography/annotations-events-nsrr/shhs1/shhs1-200001-nsrr.xml",
        "polysomnography/annotations-events-profusion/shhs2/shhs2-200001-profusion.xml",
    )
    whole = [(j.recording_id, j.cohort, j.edf, j.xml, j.problem) for j in discover(root)]
    assert all(xml and not problem for *_, xml, problem in whole)
    assert [
        (j.recording_id, j.cohort, j.edf, j.xml, j.problem) for j in discover(root / "polysomnography/edfs")
    ] == whole
    assert [
        (j.recording_id, j.cohort, j.edf, j.xml, j.problem) for j in discover(root / "polysomnography/edfs/shhs2")
    ] == whole[1:]


# ------------------------------------------------------------------------------------------ unpaired annotations
def test_unpaired_annotation_rows_get_the_subject_and_cohort_of_their_night(tmp_path):
    """A Sleep-EDF hypnogram without its PSG, and NSRR XMLs without their EDF (MESA's directly in the mirror folder,
    HomePAP's two folders deep): subject and cohort by the rules a recording of that name and place would get."""
    touch(
        tmp_path,
        "sleep-edf/SC4002EC-Hypnogram.edf",
        "mesa/polysomnography/edfs/mesa-sleep-0001.edf",
        "mesa/polysomnography/annotations-events-nsrr/mesa-sleep-0002-nsrr.xml",
        "homepap/polysomnography/edfs/lab/full/homepap-lab-full-1600001.edf",
        "homepap/polysomnography/annotations-events-nsrr/lab/full/homepap-lab-full-1600002-nsrr.xml",
    )
    rows = [j for src in ("sleep-edf", "mesa", "homepap") for j in discover(tmp_path / src) if j.edf is None]
    assert [(j.recording_id, j.subject_id, j.cohort, j.owns_output) for j in rows] == [
        ("SC4002EC-Hypnogram", "SC00", "sleep-edf-sc", True),
        ("mesa-sleep-0002", "0002", "mesa-sleep", True),
        ("homepap-lab-full-1600002", "1600002", "lab", True),
    ]


def test_a_link_never_takes_a_night_out_of_its_nsrr_place(tmp_path, monkeypatch, capsys):
    """A convenience link `edfs/current -> shhs1` (sorting first) and an SRC given as a link to edfs/shhs1 pair as
    the real folders do; a link whose target is gone fails with its reason; a folder that cannot be read is named
    on stderr instead of vanishing."""
    root = tmp_path / "shhs"
    touch(
        root,
        "polysomnography/edfs/shhs1/shhs1-200001.edf",
        "polysomnography/annotations-events-nsrr/shhs1/shhs1-200001-nsrr.xml",
    )
    edfs = root / "polysomnography/edfs"
    os.symlink(edfs / "shhs1", edfs / "current")
    whole = pairs(root)
    assert whole == [
        (
            "shhs1-200001",
            "polysomnography/edfs/shhs1/shhs1-200001.edf",
            "polysomnography/annotations-events-nsrr/shhs1/shhs1-200001-nsrr.xml",
            "",
        )
    ]
    touch(tmp_path / "disk2", "extra/shhs1-200003.edf")  # a sub-folder linked in from another disk
    touch(root, "polysomnography/annotations-events-nsrr/shhs1/extra/shhs1-200003-nsrr.xml")
    os.symlink(tmp_path / "disk2/extra", edfs / "shhs1/extra")
    assert pairs(root)[1] == (
        "shhs1-200003",
        "polysomnography/edfs/shhs1/extra/shhs1-200003.edf",
        "polysomnography/annotations-events-nsrr/shhs1/extra/shhs1-200003-nsrr.xml",
        "",
    )
    os.remove(edfs / "shhs1/extra")
    shutil.rmtree(root / "polysomnography/annotations-events-nsrr/shhs1/extra")
    os.symlink(edfs / "shhs1", tmp_path / "mine")
    assert [(j.recording_id, j.cohort, bool(j.xml), j.problem) for j in discover(tmp_path / "mine")] == [
        ("shhs1-200001", "shhs1", True, "")
    ]
    os.symlink(tmp_path / "moved.edf", edfs / "shhs1/shhs1-200002.edf")
    gone = {j.recording_id: j.problem for j in discover(root)}["shhs1-200002"]
    assert gone.endswith(f"a link to {tmp_path / 'moved.edf'}, which does not exist")

    real_scandir = os.scandir

    def scandir(path="."):
        if str(path).endswith("annotations-events-nsrr"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    capsys.readouterr()
    monkeypatch.setattr(os, "scandir", scandir)
    discover(root)
    err = capsys.readouterr().err
    assert err.count("annotations-events-nsrr: cannot read folder (Permission denied)") == 1
