"""Discovery of a cohort's recordings: each EDF paired with its annotation file, one `Job` per input.

The pairing rule and subject ids are those of dataset/README.md ("Pairing"); `dataset.data_parser` runs the jobs,
`downstream/predict.py` pairs its inputs the same way.
"""

from __future__ import annotations

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


@dataclass(frozen=True)
class Job:
    """One input recording. `edf` or `xml` is None when that file is missing; a `problem` (duplicate recording id,
    ambiguous annotation files) makes it `failed`. Only the job that `owns_output` may write or remove
    DST/recordings/<recording_id>.parquet: the first EDF with that id in path order (else the first XML)."""

    recording_id: str
    subject_id: str
    cohort: str
    edf: str | None
    xml: str | None
    problem: str = ""
    owns_output: bool = True


def discover(src: str | Path, subject_regex: str | None = None) -> list[Job]:
    """All recordings under `src` in sorted order (NSRR layout if `src/polysomnography/edfs` exists, or `src/edfs`
    beside `src/annotations-events-nsrr` or `-profusion`; else flat).

    Pairing rule (dataset/README.md, "Pairing"): `<dir>/<name>.edf` is paired only with `<dir>/<name>-nsrr.xml`
    and, in the NSRR layout, with `annotations-events-nsrr/<rel>/<name>-nsrr.xml` for the EDF at
    `edfs/<rel>/<name>.edf` (names compared case-insensitively). Never with an XML of the same name elsewhere:
    two candidates make the EDF fail (ambiguous); a second EDF with a recording id already seen fails as a
    duplicate (the first in path order is processed); an XML paired with no EDF is a `skipped` row of its own.
    Other annotation formats pair the same way, in the order of `dataset.annotations.annotation_keys`
    (`-nsrr.xml`, `-profusion.xml`, `.hypnogram.txt`, `.hypnogram.csv`, `.xml`, Sleep-EDF `*-Hypnogram.edf` with
    the same first 7 characters; `annotations-events-profusion/<rel>/` mirrors too), the first format found wins;
    without any, an EDF+ recording with stage annotations of its own is its own annotation file. Subject ids:
    `dataset.annotations.subject_of` (`--subject-regex`, Sleep-EDF names, else the NSRR rule).
    """
    src = Path(src)
    if not src.is_dir():
        raise FileNotFoundError(f"{src}: source folder not found")
    # the NSRR download root, or its polysomnography/ folder itself (edfs/ beside an annotations-events-* folder: a
    # flat folder that merely holds a subfolder named edfs/ stays flat)
    inside = (src / "edfs").is_dir() and any((src / f"annotations-events-{k}").is_dir() for k in ("nsrr", "profusion"))
    root = src if inside and not (src / "polysomnography" / "edfs").is_dir() else src / "polysomnography"
    edf_root = root / "edfs"
    xml_root = root / "annotations-events-nsrr"
    mirrors = [xml_root, root / "annotations-events-profusion"]
    nsrr = edf_root.is_dir()
    edf_base = edf_root if nsrr else src
    edfs = sorted(
        p for p in edf_base.rglob("*") if p.suffix.lower() == ".edf" and p.is_file() and not is_annotation_edf(p.name)
    )
    xml_bases = [edf_base] + ([m for m in mirrors if m.is_dir()] if nsrr else [])
    xmls: dict[tuple[Path, str], list[Path]] = {}  # (folder, pairing key) -> annotation files
    for base in xml_bases:
        for path in sorted(base.rglob("*")):
            key = annotation_key(path.name)
            if key is not None and path.is_file():
                xmls.setdefault((path.parent, key), []).append(path)
    pattern = check_subject_regex(subject_regex) if subject_regex else None

    def subject(name: str) -> tuple[str, str]:
        try:
            return subject_of(name, pattern), ""
        except ValueError as err:
            return "", str(err)

    def cohort_of(path: Path, name: str) -> str:
        if cohort_of_name(name):
            return cohort_of_name(name)
        if nsrr:
            rel = path.relative_to(edf_base).parts
            return rel[0] if len(rel) > 1 else (name.rsplit("-", 1)[0] if "-" in name else "")
        return name.rsplit("-", 1)[0] if "-" in name else src.name

    jobs, seen, paired = [], {}, set()
    for edf in edfs:
        name = edf.stem
        folders = [edf.parent] + ([m / edf.parent.relative_to(edf_root) for m in mirrors] if nsrr else [])
        candidates: list[Path] = []
        for key in annotation_keys(edf.name):  # the most preferred format present wins
            found = [xml for folder in folders for xml in xmls.get((folder, key), [])]
            paired.update(found)
            candidates = candidates or found
        if not candidates and has_embedded_stages(edf):
            candidates = [edf]
        problem, xml = "", (str(candidates[0]) if len(candidates) == 1 else None)
        subject_id, subject_problem = subject(name)
        if name in seen:
            problem = f"duplicate recording id, also in {seen[name]} (the first in path order is the one processed)"
        elif len(candidates) > 1:
            problem = f"ambiguous annotation files {' and '.join(map(str, candidates))}"
        elif subject_problem:
            problem = subject_problem
        seen.setdefault(name, edf)
        jobs.append(Job(name, subject_id, cohort_of(edf, name), str(edf), xml, problem, owns_output=seen[name] == edf))

    def reported(path: Path) -> bool:  # a bare <name>.xml may be any XML file: not a row when unpaired
        return not path.name.lower().endswith(".xml") or path.name.lower().endswith(("-nsrr.xml", "-profusion.xml"))

    for xml in sorted(p for group in xmls.values() for p in group if p not in paired and reported(p)):
        name = recording_of(xml.name)
        cohort = xml.parent.name if nsrr else (name.rsplit("-", 1)[0] if "-" in name else src.name)
        jobs.append(Job(name, subject(name)[0], cohort, None, str(xml), owns_output=name not in seen))
        seen.setdefault(name, xml)
    return sorted(jobs, key=lambda j: (j.recording_id, j.edf or "", j.xml or ""))
