"""One recording of a cohort run -> DST/recordings/<recording_id>.parquet (docs/data.md §2.4).

`run_job` hashes the sources, reuses a complete earlier table made from the same sources and settings, else runs
`dataset.signal_processing.process_recording` (read, resample, filter, trim, scale) and writes the epoch table
with its metadata atomically, into the run's staging folder (the parser moves the staged tables in together
with the new manifest); the parser removes the old table of a recording that is no longer ok once its new
manifest is in place (`clear_output`). It never raises for a bad input: the outcome is a manifest row. A full,
over-quota or read-only disk is no fault of the recording: the result carries the error as "stop", the earlier
table is kept, and the parser ends the run (exit 2). `dataset.data_parser` runs it for every job, in workers or
not.
"""

from __future__ import annotations

import hashlib
import json
import math
import resource
import shutil
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dataset.atomic_files import storage_error, write_atomic
from dataset.constants import CHANNEL_BY_NAME
from dataset.discovery import Job
from dataset.edf_reader import EdfError
from dataset.labels import EVENT_TABLE_COLUMNS, LABEL_COLUMNS
from dataset.nsrr_xml import XmlError
from dataset.resampling import HELD_CHANNELS
from dataset.signal_processing import (
    FORMAT_VERSION,
    Night,
    ProcessingConfig,
    SkipRecording,
    process_recording,
)

# an event as the Parquet metadata keeps it, so that a rerun rebuilds events.parquet without processing again:
# its columns but those derived from the recording (recording_id, beyond_end)
EVENT_KEYS = tuple(c for c in EVENT_TABLE_COLUMNS if c not in ("recording_id", "beyond_end"))
ROW_GROUP_EPOCHS = 16  # target epochs per Parquet row group (docs/data.md §2.4: 16-32); a random epoch read decodes ~16


def package_version() -> str:
    try:
        from importlib.metadata import version

        return version("synthsleepnet")
    except Exception:  # not installed (e.g. run from a source tree)
        return "0+unknown"


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
                "up_down": {n: [c.up, c.down] for n, c in night.channels.items() if n not in HELD_CHANNELS},
                "hold": {n: [c.up, c.down] for n, c in night.channels.items() if n in HELD_CHANNELS},
                "hold_method": "sample-and-hold: each output sample the latest reading at or before its time",
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
        "events": json.dumps([[e.get(k, math.nan) for k in EVENT_KEYS] for e in night.events]),
    }
    table = night_table(night, metadata)

    def write(tmp: Path) -> None:  # tmp: `.<name>.tmp`, the same name run_job cleans up after a killed run
        with pq.ParquetWriter(
            tmp, table.schema, compression="none", use_dictionary=False, write_statistics=["epoch"]
        ) as writer:
            offset = 0
            for size in row_group_sizes(table.num_rows):
                writer.write_table(table.slice(offset, size), row_group_size=size)
                offset += size

    write_atomic(path, write)


def reusable_table(path: Path, edf_sha: str, xml_sha: str | None, digest: str) -> tuple[dict, list[dict]] | None:
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
        events = json.loads(meta["events"])
        if any(len(e) != len(EVENT_KEYS) for e in events):  # older outputs lack the SpO2 baseline: made again
            return None
        return row, [dict(zip(EVENT_KEYS, e)) for e in events]
    except Exception:  # unreadable footer, old format: process again
        return None


def job_row(job: Job) -> dict:
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


def staging_folder(dst: Path, tag: str = "") -> Path:
    """Where a run writes its new tables until its manifest goes in with them (`tag`: a shard's), on the disk of
    DST/recordings so that moving them in is a rename."""
    return dst / "recordings" / f".staging{f'-{tag}' if tag else ''}"


def remove_staging(dst: Path) -> None:
    """Remove every staging folder of DST (a run that holds DST alone: a full run, a merge)."""
    for folder in (dst / "recordings").glob(".staging*"):
        shutil.rmtree(folder, ignore_errors=True)


def run_job(
    job: Job, dst: str | Path, config: ProcessingConfig, overwrite: bool = False, staging: str | Path | None = None
) -> dict:
    """Process one recording into DST/recordings (or reuse its output). Never raises for a bad input.

    With `staging` (`staging_folder`) a new table is written there, not over the table the earlier manifest
    lists: the parser moves it in together with the new manifest, so a run that stops changes nothing the
    earlier run left; a table staged by an interrupted run with the same sources and settings is reused.
    Returns {"row": manifest row, "events": [event dicts], "timings": {step: wall s}, "reused": bool,
    "staged": the staged table to move to DST/recordings, or None, "cpu_s": CPU seconds of this recording,
    "max_rss_mb": peak RSS of this process so far, "stop": None, or the storage error (`storage_error`) that must
    end the run; the earlier table is then left as it was}.
    """
    dst = Path(dst)
    row = job_row(job)
    out = recording_file(dst, job.recording_id)
    staged = out if staging is None else Path(staging) / out.name
    timings: dict[str, float] = {}
    result = {"row": row, "events": [], "timings": timings, "reused": False, "staged": None, "stop": None}
    tick, cpu = time.perf_counter(), time.process_time()
    try:
        if job.problem:  # duplicate id or ambiguous annotation files: never guess which file is meant
            raise EdfError(f"{job.edf or job.xml}: {job.problem}")  # an unpaired scoring file has no EDF
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
        for path in {out, staged}:
            path.with_name(f".{path.name}.tmp").unlink(missing_ok=True)  # left by an interrupted run
        unwanted = job.xml is None and not config.allow_unscored  # an unscored night's table, no longer asked for
        reuse, sources = None, (row["edf_sha256"], row["xml_sha256"], config.digest())
        for path in () if overwrite or unwanted else dict.fromkeys((out, staged)):
            if reuse is None and (reuse := reusable_table(path, *sources)) is not None and path != out:
                result["staged"] = str(path)
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
            staged.parent.mkdir(parents=True, exist_ok=True)
            _write_parquet(night, row, config, staged)
            result["staged"] = str(staged) if staged != out else None
            timings["write"] = time.perf_counter() - tick
            result["events"] = night.events
    except SkipRecording as why:
        row.update(status="skipped", reason=str(why))
    except (EdfError, XmlError) as err:
        row.update(status="failed", reason=str(err))
    except Exception as err:  # an unforeseen problem in one file must not stop the cohort
        result["stop"] = storage_error(err, out)  # ... but a full or read-only disk stops the run
        row.update(status="failed", reason=f"{job.edf}: unexpected {type(err).__name__}: {err}")
    if row["status"] != "ok":  # its earlier table is removed once the new manifest is in place (`clear_output`)
        result["events"], result["staged"] = [], None
    row["reason"] = " ".join(str(row["reason"]).split())  # one line
    result["cpu_s"] = time.process_time() - cpu
    result["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def clear_output(job: Job, dst: Path) -> str:
    """Remove the table (and half-written temp file) of a recording that is no longer ok, if `job` owns it, so
    no stale table outlives its failure. Called after the run's manifest and splits are in place: until then the
    earlier manifest may still list the table as ok. Never raises: returns a note when removal failed."""
    if not job.owns_output:  # a duplicate id must never touch the output of the first file with that id
        return ""
    return remove_table(dst, job.recording_id)


def remove_table(dst: Path, recording_id: str) -> str:
    """Remove DST's table of `recording_id` and its half-written temp file. Never raises: returns a note (starting
    "; ") when removal failed."""
    out = recording_file(dst, recording_id)
    notes = []
    for path in (out, out.with_name(f".{out.name}.tmp")):
        try:
            path.unlink(missing_ok=True)
        except OSError as err:
            notes.append(f"; could not remove the old {path} ({err.strerror or err})")
    return "".join(notes)
