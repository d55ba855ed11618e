"""Discovery of a cohort's recordings: each EDF paired with its annotation file, one `Job` per input.

The pairing rule and subject ids are those of dataset/README.md ("Pairing"); `dataset.data_parser` runs the jobs,
`downstream/predict.py` pairs its inputs the same way.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

from dataset.annotations import (
    annotation_key,
    annotation_keys,
    check_subject_regex,
    cohort_of_name,
    has_embedded_stages,
    is_annotation_edf,
    recording_of,
    subject_of,
)

__all__ = ["Job", "discover"]

MIRRORS = ("annotations-events-nsrr", "annotations-events-profusion")  # NSRR folders mirroring edfs/<rel>/
NOT_UTF8 = "file name is not valid UTF-8: rename it"


@dataclass(frozen=True)
class Job:
    """One input recording. `edf` or `xml` is None when that file is missing; a `problem` (duplicate recording id,
    ambiguous annotation files) makes it `failed`. Only the job that `owns_output` may write or remove
    DST/recordings/<recording_id>.parquet: of the EDFs with that id the first in path order that has one annotation
    file, else the first; with no such EDF the first XML."""

    recording_id: str
    subject_id: str
    cohort: str
    edf: str | None
    xml: str | None
    problem: str = ""
    owns_output: bool = True


@dataclass(frozen=True)
class _Tree:
    """One NSRR root's folders: `edfs` and the annotation `mirrors` beside it, all standing for the relative folder
    `rel`. When SRC lies inside edfs/, `edfs` is SRC and the mirrors their folders of the same `rel`."""

    edfs: Path
    mirrors: tuple[Path, ...]
    rel: tuple[str, ...] = ()


def _is_root(folder: Path, subfolders: Collection[str]) -> bool:
    """An NSRR root: edfs/ beside an annotation mirror folder, or a polysomnography/ folder holding edfs/ (a flat
    folder that merely holds a subfolder named edfs/ stays flat)."""
    return "edfs" in subfolders and (folder.name == "polysomnography" or any(m in subfolders for m in MIRRORS))


def _readable(text: str | None) -> str | None:
    """`text` with the bytes of a name that is not valid UTF-8 (read by Python as surrogate escapes) shown as
    U+FFFD, so it can be printed and stored in the manifest."""
    return None if text is None else os.fsencode(text).decode("utf-8", "replace")


def _encodable(job: Job) -> Job:
    """`job` unchanged when every name in it is valid UTF-8; else a failed job of its own (never processed, never
    owning an output) whose ids and paths are shown readably: one such name must not stop the cohort's manifest."""
    fields = (job.recording_id, job.subject_id, job.cohort, job.edf, job.xml, job.problem)
    try:
        for text in fields:
            if text is not None:
                text.encode("utf-8")
    except UnicodeEncodeError:
        names = [_readable(text) for text in fields]
        return Job(*names[:5], problem=NOT_UTF8, owns_output=False)
    return job


def _walk(tops: Sequence[Path]) -> tuple[list[Path], list[_Tree], list[Path], list[str]]:
    """The files below `tops` in sorted order, the NSRR roots among their folders, the hidden entries left out,
    and a line for each folder that could not be read.

    Linked folders are followed (a cohort folder moved to another disk and linked back is searched like the others);
    each real folder (st_dev, st_ino) is listed once, under the path that reaches it without a link where there is
    one (a convenience link `edfs/current -> shhs1` must not take the night out of its NSRR place), so a link loop
    ends too. A name starting with '.' is never an input and a hidden folder is never entered: macOS `._` copies
    beside every file on FAT/exFAT drives, a trash or snapshot folder (.Trash-1000/, .snapshot/) holding an old
    copy of a night."""
    files: list[Path] = []
    trees: list[_Tree] = []
    hidden: list[Path] = []
    unreadable: dict[str, str] = {}  # folder -> its line
    listed: dict[tuple[int, int], str] = {}  # real folder -> the path it is listed under

    def failed(err: OSError) -> None:
        line = f"{err.filename}: cannot read folder ({err.strerror or err}); nothing below it is listed"
        unreadable.setdefault(str(err.filename), line)

    for top in tops:
        for follow in (False, True):  # the paths without links first; then what only links reach
            seen: set[tuple[int, int]] = set()  # this pass's folders: a link loop ends
            for path, folders, names in os.walk(top, followlinks=follow, onerror=failed):
                info = os.stat(path)
                key = (info.st_dev, info.st_ino)
                if key in seen or listed.get(key, path) != path:  # listed under another path: below is reached there
                    folders.clear()
                    continue
                seen.add(key)
                here = Path(path)
                if key not in listed:  # else listed by the first pass; entered again for the links below it
                    listed[key] = path
                    if _is_root(here, folders):
                        trees.append(_Tree(here / "edfs", tuple(here / m for m in MIRRORS if m in folders)))
                    hidden += [here / name for name in (*folders, *names) if name.startswith(".")]
                    files += [here / name for name in names if not name.startswith(".")]
                folders[:] = sorted(name for name in folders if not name.startswith("."))
    return sorted(files), trees, hidden, list(unreadable.values())


def _dangling(path: Path) -> bool:
    """Whether `path` is a symbolic link whose target does not exist."""
    return path.is_symlink() and not path.exists()


def _enclosing_tree(src: Path) -> _Tree | None:
    """The NSRR tree when `src` is a root's edfs/ folder or a sub-folder of it: its mirrors lie outside `src`."""
    here = Path(os.path.realpath(src))  # `..` and links resolved: SRC may be `.` inside edfs/, or a link to it
    for edfs in (here, *here.parents):
        root = edfs.parent
        if edfs.name == "edfs" and _is_root(root, [m for m in ("edfs", *MIRRORS) if (root / m).is_dir()]):
            rel = here.relative_to(edfs).parts
            mirrors = (root / m / Path(*rel) for m in MIRRORS)
            return _Tree(src, tuple(m for m in mirrors if m.is_dir()), rel)
    return None


def discover(src: str | Path, subject_regex: str | None = None) -> list[Job]:
    """All recordings under `src` in sorted order. Every NSRR root below `src` (a folder holding `edfs/` beside
    `annotations-events-nsrr/` or `-profusion/`, or a `polysomnography/` folder holding `edfs/`; `src` itself may
    be one, or be its edfs/ folder or a sub-folder of that) pairs its EDFs by the mirror rule below; files outside
    every root pair flat (beside the EDF). Linked folders are followed; hidden files and folders are ignored (one
    line on stderr counts the hidden folders and the hidden files named as inputs).

    Pairing rule (dataset/README.md, "Pairing"): `<dir>/<name>.edf` is paired only with `<dir>/<name>-nsrr.xml`
    and, in an NSRR root, with `annotations-events-nsrr/<rel>/<name>-nsrr.xml` for the EDF at
    `edfs/<rel>/<name>.edf` (names compared case-insensitively). Never with an XML of the same name elsewhere:
    two candidates make the EDF fail (ambiguous); of EDFs sharing a recording id one is processed (the first in
    path order with one annotation file, else the first) and the others fail as duplicates; an XML paired with no
    EDF is a `skipped` row of its own. Other annotation formats pair the same way, in the order of
    `dataset.annotations.annotation_keys` (`-nsrr.xml`, `-profusion.xml`, `.hypnogram.txt`, `.hypnogram.csv`,
    `.xml`, Sleep-EDF `*-Hypnogram.edf` with the same first 7 characters; `annotations-events-profusion/<rel>/`
    mirrors too), the first format found wins; without any, an EDF+ recording with stage annotations of its own is
    its own annotation file. Subject ids: `dataset.annotations.subject_of` (`--subject-regex`, Sleep-EDF names,
    else the NSRR rule). A recording whose path is not valid UTF-8 is a failed job of its own (`NOT_UTF8`), its
    names shown with U+FFFD for the undecodable bytes.
    """
    src = Path(src)
    if not src.is_dir():
        raise FileNotFoundError(f"{src}: source folder not found")
    enclosing = _enclosing_tree(src)
    files, trees, hidden, unreadable = _walk([*enclosing.mirrors, src] if enclosing else [src])
    for line in unreadable:
        print(f"warning: {line}", file=sys.stderr)
    ignored = sorted(p for p in hidden if p.suffix.lower() == ".edf" or annotation_key(p.name) or p.is_dir())
    if ignored:
        print(
            f"{src}: ignored {len(ignored)} hidden file(s) or folder(s) (name starting with '.'), e.g. {ignored[0]}",
            file=sys.stderr,
        )
    bases: dict[Path, tuple[_Tree, bool]] = {}  # an edfs/ or mirror folder -> (its tree, whether it is edfs/)
    for tree in [*trees, enclosing] if enclosing else trees:
        bases.update({base: (tree, base == tree.edfs) for base in (tree.edfs, *tree.mirrors)})

    @functools.cache
    def place(folder: Path) -> tuple[_Tree | None, bool, Path]:
        """The NSRR tree holding `folder` (None: flat), whether in its edfs/ (else a mirror), and the folder
        relative to that edfs/ or mirror folder."""
        for base in (folder, *folder.parents):
            if base in bases:
                return *bases[base], folder.relative_to(base)
        return None, False, Path()

    # a link whose target is gone is still a recording the user gave: it fails with the reason, it does not vanish
    edfs = [
        p
        for p in files
        if p.suffix.lower() == ".edf" and not is_annotation_edf(p.name) and (p.is_file() or _dangling(p))
    ]
    xmls: dict[tuple[Path, str], list[Path]] = {}  # (folder, pairing key) -> annotation files
    for path in files:
        key = annotation_key(path.name)
        if key is not None and path.is_file():
            xmls.setdefault((path.parent, key), []).append(path)
    pattern = check_subject_regex(subject_regex) if subject_regex else None

    def subject(name: str) -> tuple[str, str]:
        try:
            return subject_of(name, pattern), ""
        except ValueError as err:
            return "", str(err)

    def cohort_of(folder: Path, name: str) -> str:
        """Sleep-EDF by name; in an NSRR root the first folder of `<rel>` (files directly in edfs/, as MESA's: the
        name before the last '-'); flat: the name before the last '-'."""
        if cohort_of_name(name):
            return cohort_of_name(name)
        tree, _, rel = place(folder)
        if tree is not None:
            parts = tree.rel + rel.parts
            return parts[0] if parts else (name.rsplit("-", 1)[0] if "-" in name else "")
        return name.rsplit("-", 1)[0] if "-" in name else src.name

    pairs: list[tuple[Path, list[Path]]] = []  # (EDF, candidate annotation files)
    paired: set[Path] = set()
    for edf in edfs:
        tree, in_edfs, rel = place(edf.parent)
        folders = [edf.parent] + ([m / rel for m in tree.mirrors] if tree and in_edfs else [])
        candidates: list[Path] = []
        for key in annotation_keys(edf.name):  # the most preferred format present wins
            found = [xml for folder in folders for xml in xmls.get((folder, key), [])]
            paired.update(found)
            candidates = candidates or found
        if not candidates and not _dangling(edf) and has_embedded_stages(edf):
            candidates = [edf]
        pairs.append((edf, candidates))
    owner: dict[str, Path] = {}  # an unpaired namesake sorting first (a stray copy) must not shadow the labelled night
    for edf, candidates in sorted(pairs, key=lambda pair: len(pair[1]) != 1):  # stable: path order in each group
        owner.setdefault(edf.stem, edf)

    jobs = []
    for edf, candidates in pairs:
        name = edf.stem
        problem, xml = "", (str(candidates[0]) if len(candidates) == 1 else None)
        subject_id, subject_problem = subject(name)
        if owner[name] != edf:
            problem = (
                f"duplicate recording id, also in {owner[name]} (the one processed: the first in path order with "
                "an annotation file, else the first)"
            )
        elif _dangling(edf):
            problem = f"a link to {os.readlink(edf)}, which does not exist"
        elif len(candidates) > 1:
            problem = f"ambiguous annotation files {' and '.join(map(str, candidates))}"
        elif subject_problem:
            problem = subject_problem
        jobs.append(Job(name, subject_id, cohort_of(edf.parent, name), str(edf), xml, problem, owner[name] == edf))

    def reported(path: Path) -> bool:  # a bare <name>.xml may be any XML file: not a row when unpaired
        return not path.name.lower().endswith(".xml") or path.name.lower().endswith(("-nsrr.xml", "-profusion.xml"))

    taken = set(owner)
    for xml in sorted(p for group in xmls.values() for p in group if p not in paired and reported(p)):
        name = recording_of(xml.name)
        night = name[: -len("-Hypnogram")] if is_annotation_edf(xml.name) else name  # SC4002EC-Hypnogram: SC4002EC
        jobs.append(
            Job(name, subject(night)[0], cohort_of(xml.parent, night), None, str(xml), owns_output=name not in taken)
        )
        taken.add(name)
    jobs = [_encodable(job) for job in jobs]
    return sorted(jobs, key=lambda j: (j.recording_id, j.edf or "", j.xml or ""))
