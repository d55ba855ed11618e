"""The nights `downstream/predict.py --edf` names: one EDF, or a cohort given as a folder (the parser's `discover`:
every EDF below it, paired with its annotation file), a glob pattern or a list file, each EDF paired with its
annotation file by the parser's rule; a night that cannot be predicted carries its reason."""

from __future__ import annotations

import glob
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dataset.annotations import is_annotation_edf, subject_of
from dataset.discovery import discover
from downstream.night_inference import InputError, one_line
from downstream.night_report import PREDICTED_EDF, PREDICTED_NSRR, REPORT_MARKERS
from utils.checkpoint import in_staging


@dataclass
class NightInput:
    """One night to predict: its EDF, the annotation file paired with it (or None), and a reason it cannot be
    predicted (`problem`, "" when it can)."""

    recording: str
    subject: str
    edf: Path | None
    xml: Path | None
    problem: str = ""


def is_edf(path: Path) -> bool:
    """An EDF by name (.edf) or by its first 8 bytes (version "0" and 7 spaces); anything else is a list file."""
    if path.suffix.lower() == ".edf":
        return True
    with open(path, "rb") as handle:
        return handle.read(8) == b"0       "


def predicted_annotation(path: Path) -> bool:
    """Whether `path` is the annotation file an earlier `predict.py` wrote beside a night's report (its stages and
    events as NSRR XML or EDF+): an output, never a night or its scoring, wherever it lies."""
    return path.name in (PREDICTED_NSRR, PREDICTED_EDF) and (path.parent / REPORT_MARKERS[0]).is_file()


def edf_root(edf: Path) -> Path:
    """The folder the parser's `discover` pairs an EDF in: the NSRR download root of `<root>/polysomnography/edfs/
    <rel>/<name>.edf`, else the EDF's own folder."""
    parts = edf.parts
    for k in range(len(parts) - 2, 0, -1):
        if parts[k] == "polysomnography" and parts[k + 1] == "edfs":
            return Path(*parts[:k])
    return edf.parent


def paired_inputs(edfs: Sequence[Path]) -> list[NightInput]:
    """Each EDF with its annotation file by the parser's pairing rule (`dataset.discovery.discover` of the EDF's
    root; one `discover` per root). A missing EDF or an ambiguous pairing is the night's `problem`."""
    jobs_of: dict[Path, dict[Path, Any]] = {}
    nights = []
    for edf in edfs:
        if is_annotation_edf(edf.name):  # a Sleep-EDF hypnogram: the scoring of the night it names, never a night
            continue
        name = edf.stem
        if not edf.is_file():
            nights.append(NightInput(name, subject_of(name), edf, None, f"{edf}: no such file"))
            continue
        root = edf_root(edf.absolute())
        if root not in jobs_of:
            jobs_of[root] = {Path(job.edf).absolute(): job for job in discover(root) if job.edf}
        job = jobs_of[root].get(edf.absolute())
        problem = job.problem if job is not None and job.xml is None else ""  # two candidate annotation files
        xml = Path(job.xml) if job is not None and job.xml else None
        nights.append(NightInput(name, subject_of(name), edf, xml, f"{edf}: {problem}" if problem else ""))
    return nights


def night_inputs(source: Path, out: Path | None = None) -> list[NightInput]:
    """The nights of `--edf` when it is a folder (the parser's `discover`: every EDF below it, paired with its
    annotation file), a glob pattern, or a list file (one EDF path per line, relative to the list's folder; blank
    lines and # comments skipped). Files inside `out` (the report folder, which may lie below `--edf`: its
    predicted annotations are EDF and XML files too), those an earlier prediction wrote beside its report, and
    Sleep-EDF hypnogram files are never nights. Raises InputError when it names no EDF."""
    text = str(source)
    if source.is_dir():
        try:
            jobs = discover(source)
        except (OSError, ValueError) as err:
            raise InputError(f"--edf {source}: {one_line(err)}") from None
        nights = [
            NightInput(
                job.recording_id,
                job.subject_id,
                Path(job.edf) if job.edf else None,
                Path(job.xml) if job.xml else None,
                f"{job.edf}: {job.problem}"
                if job.problem
                else ("" if job.edf else f"{job.xml}: no EDF file for this annotation file"),
            )
            for job in jobs
        ]
    elif source.is_file():
        try:
            lines = source.read_text().splitlines()
        except (OSError, UnicodeDecodeError) as err:
            raise InputError(f"--edf {source}: cannot read the list of EDF files ({one_line(err)})") from None
        entries = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
        paths = [(source.parent / entry) if not Path(entry).is_absolute() else Path(entry) for entry in entries]
        if not any(is_edf(path) if path.is_file() else path.suffix.lower() == ".edf" for path in paths):  # an XML?
            raise InputError(f"--edf {source}: neither an EDF file nor a list of EDF paths (one per line)")
        nights = paired_inputs(paths)
    elif any(char in text for char in "*?["):
        nights = paired_inputs([Path(p) for p in sorted(glob.glob(text, recursive=True)) if Path(p).is_file()])
    else:
        raise InputError(f"--edf {source}: no such file, folder or glob pattern")
    if out is not None:
        nights = [n for n in nights if (path := n.edf or n.xml) is None or not in_staging(path, out)]
    nights = [n for n in nights if (path := n.edf or n.xml) is None or not predicted_annotation(path)]
    for night in nights:  # an earlier prediction's NSRR XML is no scoring either
        if night.xml is not None and predicted_annotation(night.xml):
            night.xml = None
    if not any(night.edf is not None for night in nights):
        raise InputError(f"--edf {source}: names no EDF file")
    seen: dict[str, Path | None] = {}
    for night in nights:  # one report folder per recording id: a second EDF of an id is not predicted
        if night.recording in seen and not night.problem and night.edf is not None:
            night.problem = f"{night.edf}: duplicate recording id, also {seen[night.recording]}"
        seen.setdefault(night.recording, night.edf)
    return nights
