"""EDF + NSRR XML cohort -> one Parquet epoch table per night, events, manifest and splits (docs/data.md §2.1-§2.4).

    python dataset/data_parser.py --src SRC --dst DST [--workers N] [--overwrite] [--channels eeg_c4 ...]
                                  [--shard K/N] [--merge] [--allow-unscored] [--test-frac 0.1 --val-frac 0.1
                                  --train-subjects 50 --split-seed 0]

SRC is an NSRR download (`polysomnography/edfs/<cohort>/<name>.edf` with
`polysomnography/annotations-events-nsrr/<cohort>/<name>-nsrr.xml`) or a folder with `<name>.edf` beside
`<name>-nsrr.xml`. Every input ends as one manifest row (ok, skipped or failed, with a reason); a bad file never
stops the cohort. Writes are atomic; a rerun reuses every Parquet file whose footer is valid and whose source
hashes and processing settings match. Exit code 0 when nothing failed, 1 when some recording failed, 2 for a
usage or environment error (no SRC, a DST that cannot be written). See dataset/README.md.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import resource
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

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
from dataset.channel_map import load_channel_map
from dataset.constants import CHANNEL_BY_NAME, EPHYS_CHANNELS, EVENT_TYPES
from dataset.edf_reader import EdfError
from dataset.labels import EVENT_TABLE_COLUMNS, LABEL_COLUMNS, events_frame
from dataset.nsrr_xml import XmlError
from dataset.signal_processing import (
    FORMAT_VERSION,
    Night,
    ProcessingConfig,
    SkipRecording,
    load_night,
    process_recording,
)
from dataset.splits import extend_splits, make_splits, read_splits, write_splits
from dataset.worker_pool import run_in_workers

__all__ = [
    "discover",
    "parse_cohort",
    "process_recording",
    "load_night",
    "make_splits",
    "write_splits",
    "merge_shards",
    "main",
    "ProcessingConfig",
]

ROW_GROUP_EPOCHS = 16  # target epochs per Parquet row group (docs/data.md §2.4: 16-32); a random epoch read decodes ~16
STRING_COLUMNS = (
    "recording_id",
    "subject_id",
    "cohort",
    "status",
    "reason",
    "edf",
    "xml",
    "parquet",
    "channels",
    "native_rates",
    "units",
    "dropped_channels",
    "warnings",
    "edf_sha256",
    "xml_sha256",
    "channel_sources",
    "channel_map_channels",
    "nonstandard_channels",
)
INT_COLUMNS = ("n_epochs", "n_scored", *(f"n_{e}" for e in EVENT_TYPES))
FLOAT_COLUMNS = ("signal_s", "scored_s", "kept_s", "tst_min", "ahi_scored", "ahi_a0h3a", "ahi_a0h4", "ahi_all")


def package_version() -> str:
    try:
        from importlib.metadata import version

        return version("synthsleepnet")
    except Exception:  # not installed (e.g. run from a source tree)
        return "0+unknown"


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
    """All recordings under `src` in sorted order (NSRR layout if `src/polysomnography/edfs` exists, else flat).

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
    edf_root = src / "polysomnography" / "edfs"
    xml_root = src / "polysomnography" / "annotations-events-nsrr"
    mirrors = [xml_root, src / "polysomnography" / "annotations-events-profusion"]
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


def parse_shard(text: str) -> tuple[int, int]:
    """'K/N' -> (K, N) with 1 <= K <= N."""
    try:
        k, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard {text!r}: expected K/N, e.g. 1/4") from None
    if not 1 <= k <= n:
        raise ValueError(f"--shard {text!r}: need 1 <= K <= N")
    return k, n


def shard_of(recording_id: str, n_shards: int) -> int:
    """Shard 1..N of a recording: a hash of its id, so the assignment never depends on which other files exist."""
    return int(hashlib.sha1(recording_id.encode()).hexdigest(), 16) % n_shards + 1


def _sha256(path: str | None) -> str | None:
    if path is None:
        return None
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def recording_file(dst: Path, recording_id: str) -> Path:
    return dst / "recordings" / f"{recording_id}.parquet"


def night_table(night: Night, metadata: dict[str, str]) -> pa.Table:
    """The docs/data.md §2.4 epoch table: epoch, channels (fixed_size_list<float32>), stage, event columns."""
    n = night.n_epochs
    columns, fields = [pa.array(np.arange(n, dtype=np.int32))], [pa.field("epoch", pa.int32(), nullable=False)]
    for name, channel in night.channels.items():
        values = pa.array(channel.epochs.reshape(-1))  # zero-copy float32 view of (n_epochs, samples)
        columns.append(pa.FixedSizeListArray.from_arrays(values, channel.epochs.shape[1]))
        fields.append(pa.field(name, pa.list_(pa.float32(), channel.epochs.shape[1])))
    for name in LABEL_COLUMNS:
        array = night.labels[name]
        columns.append(pa.array(array))
        fields.append(pa.field(name, pa.from_numpy_dtype(array.dtype)))
    schema = pa.schema(fields, metadata={k: v.encode() for k, v in metadata.items()})
    return pa.Table.from_arrays(columns, schema=schema)


def row_group_sizes(n_epochs: int, target: int = ROW_GROUP_EPOCHS) -> list[int]:
    """Epochs per row group: n_epochs // target groups of near-equal size, so every group holds 16-31 epochs
    (a night shorter than 16 epochs is one group); no short final group."""
    groups = max(1, n_epochs // target)
    base, extra = divmod(n_epochs, groups)
    return [base + 1] * extra + [base] * (groups - extra)


def _processing_record(night: Night, config: ProcessingConfig) -> dict:
    """The processing steps and their parameters, as written into the Parquet metadata."""
    return {
        "format_version": FORMAT_VERSION,
        "steps": [
            {"step": "read", "reader": "dataset.edf_reader", "scaling": "per-signal digital->physical gain/offset"},
            {"step": "units", "electrophysiology_to": "uV", "unknown_unit": "assumed uV, flagged"},
            {
                "step": "resample",
                "method": "scipy.signal.resample_poly",
                "window": "kaiser(5.0)",
                "padtype": config.resample_padtype,
                "up_down": {n: [c.up, c.down] for n, c in night.channels.items()},
                "target_fs": {n: CHANNEL_BY_NAME[n].target_fs for n in night.channels},
            },
            {
                "step": "bandpass",
                "method": "scipy.signal.sosfiltfilt",
                "design": "butterworth",
                "order": config.filter_order,
                "zero_phase": True,
                "continuous": True,
                "bands_hz": {n: config.band(CHANNEL_BY_NAME[n]) for n in night.channels},
            },
            {
                "step": "trim",
                "rule": "floor(min(signal_s, scored_s) / 30) epochs from t = 0",
                "n_epochs": night.n_epochs,
            },
            {
                "step": "robust_scale",
                "center": "median",
                "scale": "IQR of the kept epochs (1.349 x SD if IQR < half a digital step)",
                "median": {n: c.median for n, c in night.channels.items()},
                "iqr": {n: c.iqr for n, c in night.channels.items()},
            },
        ],
        "config": config.as_dict(),
    }


def _write_parquet(night: Night, row: dict, config: ProcessingConfig, path: Path) -> None:
    metadata = {
        "version": package_version(),
        "format_version": str(FORMAT_VERSION),
        "config_digest": config.digest(),
        "source_sha256": json.dumps({"edf": row["edf_sha256"], "xml": row["xml_sha256"]}),
        "processing": json.dumps(_processing_record(night, config)),
        "channels": json.dumps(list(night.channels)),
        "rates": json.dumps(
            {
                n: {
                    "native_hz": c.native_rate,
                    "fs": CHANNEL_BY_NAME[n].target_fs,
                    "label": c.label,
                    "unit": c.unit,
                    "edf_unit": c.edf_unit,
                }
                for n, c in night.channels.items()
            }
        ),
        "manifest_row": json.dumps(row),
        "events": json.dumps(
            [[e["type"], e["concept"], e["start_s"], e["duration_s"], e["spo2_nadir"]] for e in night.events]
        ),
    }
    table = night_table(night, metadata)
    tmp = path.with_name(f".{path.name}.tmp")  # the same name run_job cleans up
    with pq.ParquetWriter(
        tmp, table.schema, compression="none", use_dictionary=False, write_statistics=["epoch"]
    ) as writer:
        offset = 0
        for size in row_group_sizes(table.num_rows):
            writer.write_table(table.slice(offset, size), row_group_size=size)
            offset += size
    os.replace(tmp, path)


def _reusable(path: Path, edf_sha: str, xml_sha: str | None, digest: str) -> tuple[dict, list[dict]] | None:
    """(manifest row, events) of a complete output made from the same sources and settings, else None."""
    if not path.is_file():
        return None
    try:
        parquet = pq.ParquetFile(path)
        meta = {k.decode(): v.decode() for k, v in (parquet.schema_arrow.metadata or {}).items()}
        row = json.loads(meta["manifest_row"])
        same = (
            json.loads(meta["source_sha256"]) == {"edf": edf_sha, "xml": xml_sha}
            and meta.get("config_digest") == digest
            and parquet.metadata.num_rows == row["n_epochs"]
            and "channel_sources" in row
        )  # older outputs lack the channel sources: made again
        if not same:
            return None
        keys = ("type", "concept", "start_s", "duration_s", "spo2_nadir")
        events = [dict(zip(keys, e)) for e in json.loads(meta["events"])]
        return row, events
    except Exception:  # unreadable footer, old format: process again
        return None


def _job_row(job: Job) -> dict:
    """The manifest fields every row has, before the recording is processed."""
    return {
        "recording_id": job.recording_id,
        "subject_id": job.subject_id,
        "cohort": job.cohort,
        "status": "ok",
        "reason": "",
        "edf": job.edf or "",
        "xml": job.xml or "",
        "parquet": "",
    }


def run_job(job: Job, dst: str | Path, config: ProcessingConfig, overwrite: bool = False) -> dict:
    """Process one recording into DST/recordings (or reuse its output). Never raises for a bad input.

    Returns {"row": manifest row, "events": [event dicts], "timings": {step: wall s}, "reused": bool,
    "cpu_s": CPU seconds of this recording, "max_rss_mb": peak RSS of this process so far}.
    """
    dst = Path(dst)
    row = _job_row(job)
    out = recording_file(dst, job.recording_id)
    timings: dict[str, float] = {}
    result = {"row": row, "events": [], "timings": timings, "reused": False}
    tick, cpu = time.perf_counter(), time.process_time()
    try:
        if job.problem:  # duplicate id or ambiguous annotation files: never guess which file is meant
            raise EdfError(f"{job.edf}: {job.problem}")
        if job.edf is None:
            raise SkipRecording(f"{job.xml}: no EDF file for this annotation file")
        try:
            row["edf_sha256"] = _sha256(job.edf)
        except OSError as err:
            raise EdfError(f"{job.edf}: cannot read ({err.strerror or err})") from None
        try:
            row["xml_sha256"] = _sha256(job.xml)
        except OSError as err:
            raise XmlError(f"{job.xml}: cannot read ({err.strerror or err})") from None
        timings["hash"] = time.perf_counter() - tick
        out.with_name(f".{out.name}.tmp").unlink(missing_ok=True)  # left by an interrupted run
        reuse = None if overwrite else _reusable(out, row["edf_sha256"], row["xml_sha256"], config.digest())
        if reuse is not None:
            old, result["events"] = reuse
            row.update({k: v for k, v in old.items() if k not in ("edf", "xml", "cohort", "subject_id")})
            result["reused"] = True
        else:
            night = process_recording(job.edf, job.xml if job.xml else None, config, job.recording_id)
            row.update(night.info)
            row["parquet"] = str(out.relative_to(dst))
            timings.update(night.timings)
            tick = time.perf_counter()
            out.parent.mkdir(parents=True, exist_ok=True)
            _write_parquet(night, row, config, out)
            timings["write"] = time.perf_counter() - tick
            result["events"] = night.events
    except SkipRecording as why:
        row.update(status="skipped", reason=str(why))
    except (EdfError, XmlError) as err:
        row.update(status="failed", reason=str(err))
    except Exception as err:  # an unforeseen problem in one file must not stop the cohort
        row.update(status="failed", reason=f"{job.edf}: unexpected {type(err).__name__}: {err}")
    if row["status"] != "ok":
        row["reason"] = f"{row['reason']}{_clear_output(job, dst)}"
        result["events"] = []
    row["reason"] = " ".join(str(row["reason"]).split())  # one line
    result["cpu_s"] = time.process_time() - cpu
    result["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def _clear_output(job: Job, dst: Path) -> str:
    """Remove the table (and half-written temp file) of a recording that is no longer ok, if `job` owns it, so
    no stale table outlives its failure. Never raises: returns a note for the reason when removal failed."""
    if not job.owns_output:  # a duplicate id must never touch the output of the first file with that id
        return ""
    out = recording_file(dst, job.recording_id)
    notes = []
    for path in (out, out.with_name(f".{out.name}.tmp")):
        try:
            path.unlink(missing_ok=True)
        except OSError as err:
            notes.append(f"; could not remove the old {path} ({err.strerror or err})")
    return "".join(notes)


def manifest_frame(rows: list[dict], channels: tuple[str, ...]) -> pd.DataFrame:
    """Manifest rows in a fixed column order and types (one row per input, sorted by recording id)."""
    columns = [
        "recording_id",
        "subject_id",
        "cohort",
        "status",
        "reason",
        "n_epochs",
        "n_scored",
        "channels",
        "native_rates",
        "units",
        "signal_s",
        "scored_s",
        "kept_s",
        "truncated",
    ]
    columns += [f"{kind}_{c}" for kind in ("median", "iqr") for c in channels]
    columns += [f"unit_assumed_{c}" for c in channels if c in EPHYS_CHANNELS]
    columns += [
        "dropped_channels",
        *(f"n_{e}" for e in EVENT_TYPES),
        "tst_min",
        "ahi_scored",
        "ahi_a0h3a",
        "ahi_a0h4",
        "ahi_all",
        "warnings",
        "edf",
        "xml",
        "parquet",
        "edf_sha256",
        "xml_sha256",
    ]
    extra = sorted({k for r in rows for k in r} - set(columns))
    frame = pd.DataFrame(rows, columns=columns + extra)
    for name in frame.columns:
        if name in STRING_COLUMNS:
            frame[name] = frame[name].astype(object).where(frame[name].notna(), "").astype(str)
        elif name in INT_COLUMNS:
            frame[name] = frame[name].astype("Int64")
        elif name == "truncated" or name.startswith("unit_assumed_"):
            frame[name] = frame[name].astype("boolean")
        elif name in FLOAT_COLUMNS or name.startswith(("median_", "iqr_")):
            frame[name] = frame[name].astype("float64")
    return frame.sort_values("recording_id", kind="stable").reset_index(drop=True)


def events_table(results: list[tuple[dict, list[dict]]]) -> pd.DataFrame:
    """events.parquet of all ok recordings."""
    frames = [
        events_frame(row["recording_id"], events, float(row["kept_s"]))
        for row, events in results
        if row["status"] == "ok" and events
    ]
    if not frames:
        return events_frame("", [], 0.0).iloc[0:0]
    return pd.concat(frames, ignore_index=True).sort_values(
        ["recording_id", "start_s"], kind="stable", ignore_index=True
    )[list(EVENT_TABLE_COLUMNS)]


def _write_frame(frame: pd.DataFrame, path: Path, csv: bool = False) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    if csv:
        frame.to_csv(tmp, index=False)
    else:
        frame.to_parquet(tmp, index=False)
    os.replace(tmp, path)


def write_cohort_outputs(
    dst: Path, manifest: pd.DataFrame, events: pd.DataFrame, split_args: dict, resplit: bool = False
) -> dict | None:
    """manifest.parquet/.csv, events.parquet and splits.json (None when the cohort is too small to split)."""
    _write_frame(manifest, dst / "manifest.parquet")
    _write_frame(manifest, dst / "manifest.csv", csv=True)
    _write_frame(events, dst / "events.parquet")
    path = dst / "splits.json"
    if path.is_file() and not resplit:  # made once: keep every subject where it is, add new ones to pretrain
        try:
            splits = extend_splits(read_splits(path), manifest)
        except (ValueError, KeyError, json.JSONDecodeError) as err:
            print(f"{path}: unreadable ({err}); use --resplit to make a new one", file=sys.stderr)
            return None
        asked = {
            "seed": split_args["seed"],
            "fractions": {"test": split_args["test_frac"], "val": split_args["val_frac"]},
            "train_subjects": split_args["train_subjects"],
        }
        kept = {key: splits.get(key) for key in asked}
        if kept != asked:
            print(
                f"{path}: kept as made (seed / fractions / train subjects {kept}); the options given now "
                f"({asked}) apply only with --resplit",
                file=sys.stderr,
            )
    else:
        try:
            splits = make_splits(manifest, **split_args)
        except ValueError as err:
            print(f"splits.json not written: {err}", file=sys.stderr)
            return None
    write_splits(splits, path)
    return splits


class OutputFolderError(OSError):
    """DST (or DST/recordings) cannot be created or written: an environment error, not a bad recording."""


def _check_writable(folder: Path) -> None:
    """Create `folder` (and its parents) and prove a file can be made there, before any night is processed."""
    probe = folder / f".write-check.{os.getpid()}.tmp"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise OutputFolderError(
            f"{folder}: cannot create or write the output folder "
            f"({err.strerror or err}{f': {err.filename}' if err.filename else ''})"
        ) from None


def parse_cohort(
    src: str | Path,
    dst: str | Path,
    workers: int = 1,
    overwrite: bool = False,
    channels: list[str] | tuple[str, ...] | None = None,
    shard: tuple[int, int] | str | None = None,
    allow_unscored: bool = False,
    config: ProcessingConfig | None = None,
    split_seed: int = 0,
    test_frac: float = 0.1,
    val_frac: float = 0.1,
    train_subjects: int = 50,
    progress: bool = True,
    resplit: bool = False,
    subject_regex: str | None = None,
) -> pd.DataFrame:
    """Parse every recording under `src` into `dst` and return the manifest.

    With `shard=(K, N)` only the K-th of N shards is processed and DST/manifest.shard-K-of-N.parquet (+ events)
    is written instead of the final files (combine with `merge_shards`). `manifest.attrs["runs"]` holds per-
    recording timings, reuse flags and worker peak RSS (MB).
    """
    dst = Path(dst)
    base = config or ProcessingConfig()
    config = ProcessingConfig(
        **{
            **asdict(base),
            "allow_unscored": allow_unscored or base.allow_unscored,
            **({"channels": tuple(channels)} if channels else {}),
        }
    )
    jobs = discover(src, subject_regex)
    if not jobs:
        raise FileNotFoundError(
            f"{src}: no EDF or annotation file found (looked for *.edf and their scoring files, "
            "in the NSRR layout or a flat folder)"
        )
    if isinstance(shard, str):
        shard = parse_shard(shard)
    if shard is not None:
        jobs = [j for j in jobs if shard_of(j.recording_id, shard[1]) == shard[0]]
    _check_writable(dst / "recordings")
    record = {
        "src": str(src),
        "workers": workers,
        "shard": list(shard) if shard else None,
        "version": package_version(),
        "config": config.as_dict(),
        "config_digest": config.digest(),
    }
    name = f"parser_config.shard-{shard[0]}-of-{shard[1]}.json" if shard else "parser_config.json"
    tmp = dst / f".{name}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(record, indent=1, default=list) + "\n")
    os.replace(tmp, dst / name)

    results = []
    bar = tqdm(total=len(jobs), desc="parsing nights", unit="night", disable=not progress)
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            results.append(run_job(job, dst, config, overwrite))
            bar.update()
    else:

        def died(index: int, reason: str) -> dict:  # the night a dead worker held fails alone
            job = jobs[index]
            row = _job_row(job)
            row.update(status="failed", reason=f"{job.edf}: {reason}{_clear_output(job, dst)}")
            return {
                "row": row,
                "events": [],
                "timings": {},
                "reused": False,
                "cpu_s": float("nan"),
                "max_rss_mb": float("nan"),
            }

        work = functools.partial(run_job, dst=str(dst), config=config, overwrite=overwrite)
        results = run_in_workers(jobs, work, workers, on_death=died, done=bar.update)
    bar.close()

    manifest = manifest_frame([r["row"] for r in results], config.channels)
    events = events_table([(r["row"], r["events"]) for r in results])
    if shard is not None:
        tag = f"shard-{shard[0]}-of-{shard[1]}"
        _write_frame(manifest, dst / f"manifest.{tag}.parquet")
        _write_frame(events, dst / f"events.{tag}.parquet")
    else:
        write_cohort_outputs(
            dst,
            manifest,
            events,
            dict(seed=split_seed, test_frac=test_frac, val_frac=val_frac, train_subjects=train_subjects),
            resplit,
        )
    manifest.attrs["runs"] = {
        r["row"]["recording_id"]: {k: r[k] for k in ("timings", "reused", "cpu_s", "max_rss_mb")} for r in results
    }
    return manifest


def merge_shards(
    dst: str | Path,
    split_seed: int = 0,
    test_frac: float = 0.1,
    val_frac: float = 0.1,
    train_subjects: int = 50,
    resplit: bool = False,
) -> pd.DataFrame:
    """Combine DST/manifest.shard-K-of-N.parquet (all K of one N) and their events into the final outputs."""
    dst = Path(dst)
    found: dict[int, set[int]] = {}
    for path in dst.glob("manifest.shard-*-of-*.parquet"):
        k, n = path.name[len("manifest.shard-") : -len(".parquet")].split("-of-")
        found.setdefault(int(n), set()).add(int(k))
    if not found:
        raise FileNotFoundError(f"{dst}: no shard manifests (manifest.shard-K-of-N.parquet) to merge")
    if len(found) > 1:
        raise ValueError(f"{dst}: shard manifests of different shard counts {sorted(found)}; remove the stale ones")
    ((n, ks),) = found.items()
    missing = sorted(set(range(1, n + 1)) - ks)
    if missing:
        raise ValueError(f"{dst}: shards {missing} of {n} have not finished (no manifest.shard-K-of-{n}.parquet)")
    manifest = pd.concat(
        [pd.read_parquet(dst / f"manifest.shard-{k}-of-{n}.parquet") for k in range(1, n + 1)], ignore_index=True
    )
    channels = tuple(c for c in CHANNEL_BY_NAME if f"median_{c}" in manifest.columns)
    manifest = manifest_frame(manifest.to_dict("records"), channels)
    events = [pd.read_parquet(dst / f"events.shard-{k}-of-{n}.parquet") for k in range(1, n + 1)]
    events = pd.concat(events, ignore_index=True).sort_values(
        ["recording_id", "start_s"], kind="stable", ignore_index=True
    )
    write_cohort_outputs(
        dst,
        manifest,
        events,
        dict(seed=split_seed, test_frac=test_frac, val_frac=val_frac, train_subjects=train_subjects),
        resplit,
    )
    return manifest


def summary_text(manifest: pd.DataFrame, max_reasons: int = 40) -> str:
    """Counts by status and the reasons of the recordings that are not ok (failed first, at most `max_reasons`)."""
    lines = ["status    count"]
    for status in ("ok", "skipped", "failed"):
        lines.append(f"{status:<9} {int((manifest['status'] == status).sum()):>5}")
    bad = manifest[manifest["status"] != "ok"].sort_values("status", kind="stable")
    if len(bad):
        lines.append("")
        lines += [f"{r.status:<8} {r.recording_id}: {r.reason}" for r in bad.head(max_reasons).itertuples()]
        if len(bad) > max_reasons:
            lines.append(f"... and {len(bad) - max_reasons} more (see the reason column of manifest.csv)")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    # the command line shares the option checks of every script (one `error:` line, exit 2); the library part of
    # this module imports nothing from utils/
    from utils.config import ArgumentParser, mark_required, non_negative_int, positive_int, probability

    parser = ArgumentParser(
        prog="python dataset/data_parser.py",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    mark_required(parser, "dst")
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="JSON or YAML file of options (keys as the long option names); flags win",
    )
    parser.add_argument("--src", type=Path, default=None, help="NSRR download root or flat folder of EDF + XML")
    parser.add_argument("--dst", type=Path, default=None, help="output folder (recordings/, manifest, events, splits)")
    parser.add_argument("--workers", type=positive_int, default=1, help="parallel processes (one night each at a time)")
    parser.add_argument("--overwrite", action="store_true", help="reprocess recordings whose output is complete")
    parser.add_argument(
        "--channels",
        nargs="+",
        default=None,
        metavar="NAME",
        help=f"canonical channels to keep, space- or comma-separated (default all: {' '.join(CHANNEL_BY_NAME)})",
    )
    parser.add_argument(
        "--band",
        action="append",
        default=[],
        metavar="NAME=LOW,HIGH",
        help="override a channel's band-pass in Hz (repeatable), or NAME=none to skip filtering",
    )
    parser.add_argument("--shard", default=None, metavar="K/N", help="process only shard K of N (1-based)")
    parser.add_argument("--merge", action="store_true", help="merge finished shard manifests into the final outputs")
    parser.add_argument(
        "--allow-unscored",
        action="store_true",
        help="write recordings without an XML file, every label -1 (self-supervision only)",
    )
    parser.add_argument(
        "--channel-map",
        type=Path,
        default=None,
        metavar="MAP",
        help='YAML or JSON file: canonical channel -> label, "A - B" derivation or list of labels '
        "(tried before the built-in alias tables; see dataset/README.md)",
    )
    parser.add_argument(
        "--subject-regex",
        default=None,
        metavar="REGEX",
        help="subject id = the one group of REGEX searched in the recording id (default: Sleep-EDF "
        "names SC4ssN -> SCss, else the part after the last '-')",
    )
    parser.add_argument("--test-frac", type=probability, default=0.1, help="fraction of labelled subjects for test")
    parser.add_argument("--val-frac", type=probability, default=0.1, help="fraction of labelled subjects for val")
    parser.add_argument(
        "--train-subjects", type=non_negative_int, default=50, help="labelled subjects drawn from pretrain"
    )
    parser.add_argument("--split-seed", type=non_negative_int, default=0, help="seed of the subject split")
    parser.add_argument(
        "--resplit",
        action="store_true",
        help="make DST/splits.json anew (default: an existing one is kept; new subjects join pretrain)",
    )
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="tqdm progress bar")
    return parser


def _parse_bands(items: list[str], parser: argparse.ArgumentParser) -> tuple:
    bands = []
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or name not in CHANNEL_BY_NAME:
            parser.error(f"--band {item!r}: expected NAME=LOW,HIGH with NAME one of {', '.join(CHANNEL_BY_NAME)}")
        if value.strip().lower() == "none":
            bands.append((name, None))
            continue
        try:
            low, high = (float(v) for v in value.split(","))
        except ValueError:
            parser.error(f"--band {item!r}: expected two frequencies in Hz, e.g. {name}=0.3,35")
        if not 0 < low < high:
            parser.error(f"--band {item!r}: need 0 < LOW < HIGH")
        bands.append((name, (low, high)))
    return tuple(bands)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit code (0: nothing failed, 1: some recording failed, 2: usage or
    environment error, reported as one `error:` line)."""
    from utils.config import parse_config

    parser = build_parser()
    args = parse_config(parser, argv, required=("dst",))  # --config values pass the same typed checks as flags
    split_args = dict(
        split_seed=args.split_seed,
        test_frac=args.test_frac,
        val_frac=args.val_frac,
        train_subjects=args.train_subjects,
        resplit=args.resplit,
    )
    started = time.perf_counter()
    try:
        if args.merge:
            manifest = merge_shards(args.dst, **split_args)
        else:
            if args.src is None:
                parser.error("--src is required (unless --merge)")
            shard = parse_shard(args.shard) if args.shard else None
            names = [
                n.strip() for item in (args.channels or CHANNEL_BY_NAME) for n in str(item).split(",") if n.strip()
            ]
            user_map = load_channel_map(args.channel_map) if args.channel_map else ()
            config = ProcessingConfig(
                channels=tuple(names), bands=_parse_bands(args.band, parser), channel_map=user_map
            )
            if args.subject_regex:
                check_subject_regex(args.subject_regex)
            manifest = parse_cohort(
                args.src,
                args.dst,
                workers=args.workers,
                overwrite=args.overwrite,
                shard=shard,
                allow_unscored=args.allow_unscored,
                config=config,
                progress=args.progress,
                subject_regex=args.subject_regex,
                **split_args,
            )
    except (OSError, ValueError) as err:  # no SRC, unusable DST, missing shards, full disk: not one recording
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    print(summary_text(manifest))
    print(f"{len(manifest)} recording(s) in {time.perf_counter() - started:.1f} s -> {args.dst}")
    return int((manifest["status"] == "failed").any())


if __name__ == "__main__":
    from dataset import data_parser  # the importable module, so worker functions pickle by their real name

    raise SystemExit(data_parser.main())
