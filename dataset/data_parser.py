"""EDF + NSRR XML cohort -> one Parquet epoch table per night, events, manifest and splits (docs/data.md §2.1-§2.4).

    python dataset/data_parser.py --src SRC --dst DST [--workers N] [--overwrite] [--channels eeg_c4 ...]
                                  [--shard K/N] [--merge] [--allow-unscored] [--test-frac 0.1 --val-frac 0.1
                                  --train-subjects 50 --split-seed 0]

SRC holds NSRR downloads (`polysomnography/edfs/<cohort>/<name>.edf` with
`polysomnography/annotations-events-nsrr/<cohort>/<name>-nsrr.xml`; several cohorts' trees may sit below one SRC)
and/or folders with `<name>.edf` beside `<name>-nsrr.xml` (or another scoring format); linked folders are followed,
hidden files ignored. Every input ends as one manifest row (ok, skipped or failed, with a reason); a bad file never
stops the cohort. Writes are atomic; a rerun reuses every Parquet file whose footer is valid and whose source
hashes and processing settings match. Exit code 0 when nothing failed, 1 when some recording failed, 2 for a
usage or environment error (no SRC, a DST that cannot be written, a full or read-only disk, a DST in use by another
parser run). See dataset/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import functools
import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from dataset.annotations import check_subject_regex
from dataset.atomic_files import STORAGE_ERRNOS, write_all_atomic
from dataset.channel_map import load_channel_map
from dataset.cohort_outputs import (
    check_kept_splits,
    events_table,
    flag_same_content,
    frame_writer,
    manifest_frame,
    write_cohort_outputs,
)
from dataset.constants import CHANNEL_BY_NAME
from dataset.discovery import discover
from dataset.recording_job import (
    clear_output,
    job_row,
    package_version,
    recording_file,
    remove_staging,
    remove_table,
    reusable_table,
    run_job,
    staging_folder,
)
from dataset.signal_processing import ProcessingConfig, load_night, process_recording
from dataset.splits import check_split_options, make_splits, write_splits
from dataset.worker_pool import NOT_STARTED, run_in_workers

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


class OutputInUseError(OSError):
    """Another parser run holds DST: an environment error, not a bad recording."""


def _lock(path: Path, shared: bool) -> int:
    """Take an advisory lock on `path` without waiting (shared, or exclusive) and write this pid into it, for the
    error of a run that finds it taken. Returns the descriptor: closing it (or the process ending) releases it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise OutputInUseError(f"{path.parent}: in use by another parser run (pid {holder})") from None
    with contextlib.suppress(OSError):  # the pid only informs; a full disk must not stop the run here
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


@contextlib.contextmanager
def dst_lock(dst: Path, shard: tuple[int, int] | None = None) -> Iterator[None]:
    """Keep other parser runs out of DST while this one writes: two would delete each other's temp files and
    tables. Shard runs of one cohort run side by side (each writes only its own nights and shard files), so they
    hold DST/.parser.lock shared and their shard's lock exclusively; a full run or a merge holds it exclusively."""
    fds = [_lock(dst / ".parser.lock", shared=shard is not None)]
    try:
        if shard is not None:
            fds.append(_lock(dst / f".parser.shard-{shard[0]}-of-{shard[1]}.lock", shared=False))
        yield
    finally:
        for fd in fds:
            os.close(fd)


def _record_writer(record: dict) -> Callable[[Path], object]:
    """Writes `record` as JSON to the path it is given (a temp file of `write_all_atomic`)."""
    return lambda tmp: tmp.write_text(json.dumps(record, indent=1, default=list) + "\n")


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

    `workers` spawned processes process the nights, one each at a time, so a night that kills its process fails
    alone; `workers=0` processes them in this process (a crash there ends the run).

    With `shard=(K, N)` only the K-th of N shards is processed and DST/manifest.shard-K-of-N.parquet (+ events)
    is written instead of the final files (combine with `merge_shards`). `manifest.attrs["runs"]` holds per-
    recording timings, reuse flags and worker peak RSS (MB). Raises ValueError before any night is processed for
    split options no cohort can satisfy, or when a kept DST/splits.json was made with other subject ids; OSError
    when another parser run holds DST (`dst_lock`) or a write finds the disk full or read-only (the earlier
    tables, manifest, events, splits and parser_config.json are then left as they were).
    """
    dst = Path(dst)
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    check_split_options(test_frac, val_frac, train_subjects)
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
    check_kept_splits(dst, {j.recording_id: j.subject_id for j in jobs if j.subject_id and j.owns_output}, resplit)
    for folder in (dst / "recordings", dst):  # the tables, then the cohort files beside them
        _check_writable(folder)
    tag = f"shard-{shard[0]}-of-{shard[1]}" if shard else ""
    staging = staging_folder(dst, tag)
    _warn_space(dst, jobs, config, overwrite)
    with dst_lock(dst, shard):
        results = _run_jobs(jobs, dst, config, workers, overwrite, progress, staging)
        stop = next((r["stop"] for r in results if r["stop"] is not None), None)
        if stop is not None:  # a full or read-only disk: stop before the cohort files, so the earlier ones stay
            raise stop
        for line in flag_same_content([r["row"] for r in results]):  # within a shard; `merge_shards`: across them
            print(f"warning: {line}", flush=True)  # stdout: stderr is for errors
        manifest = manifest_frame([r["row"] for r in results], config.channels)
        events = events_table([(r["row"], r["events"]) for r in results])
        record = {
            "src": str(src),
            "workers": workers,
            "shard": list(shard) if shard else None,
            "version": package_version(),
            "config": config.as_dict(),
            "config_digest": config.digest(),
            # nights whose worker was killed keep their earlier table (a shard's until `--merge`)
            "kept_tables": sorted(r["row"]["recording_id"] for r in results if r.get("keep_table")),
        }
        # the staged tables, the record and the manifest go in together, after the nights: a run that stops
        # before (Ctrl-C, a full disk) leaves every table, record and manifest of the earlier run as it was
        ready = [(recording_file(dst, r["row"]["recording_id"]), Path(r["staged"])) for r in results if r["staged"]]
        name = f"parser_config.{tag}.json" if shard else "parser_config.json"
        writes = [(dst / name, _record_writer(record))]
        if shard is not None:  # its tables stay staged: `--merge` moves them in with the cohort's manifest
            writes += [
                (dst / f"manifest.{tag}.parquet", frame_writer(manifest)),
                (dst / f"events.{tag}.parquet", frame_writer(events)),
            ]
            write_all_atomic(writes)
            keep = {staged.name for _, staged in ready}
            for left in staging.glob("*.parquet") if staging.is_dir() else ():  # an earlier stopped run's
                if left.name not in keep:
                    left.unlink(missing_ok=True)
        else:
            split_args = dict(seed=split_seed, test_frac=test_frac, val_frac=val_frac, train_subjects=train_subjects)
            write_cohort_outputs(dst, manifest, events, split_args, resplit, writes, ready)
            remove_staging(dst)  # a full run holds DST alone: what is staged is a stopped run's, or unmerged shards'
        # only now, with the new manifest in place, the tables of nights no longer ok go: a run cut short before
        # it leaves the earlier manifest and the tables it lists as they were
        for job, result in zip(jobs, results, strict=True):  # a shard's: at `--merge`, where the manifest goes in
            cleared = result["row"]["status"] != "ok" and not result.get("keep_table") and shard is None
            note = clear_output(job, dst) if cleared else ""
            if note:
                print(f"{job.recording_id}: {note.lstrip('; ')}", file=sys.stderr)
    manifest.attrs["runs"] = {
        r["row"]["recording_id"]: {k: r[k] for k in ("timings", "reused", "cpu_s", "max_rss_mb")} for r in results
    }
    return manifest


def _warn_space(dst: Path, jobs: list, config: ProcessingConfig, overwrite: bool) -> None:
    """A warning before any night when a rerun that remakes every table (other settings, or --overwrite) may not
    find the room: the new tables are staged beside the earlier ones until the run ends, so it needs about their
    size again (a run stopped for want of space keeps every earlier output)."""
    try:
        earlier = json.loads((dst / "parser_config.json").read_text()).get("config_digest")
    except (OSError, ValueError, AttributeError):
        return
    if earlier == config.digest() and not overwrite:
        return  # only the nights whose sources changed are made again
    tables = [recording_file(dst, j.recording_id) for j in jobs if j.owns_output]
    need = sum(t.stat().st_size for t in tables if t.is_file())
    free = shutil.disk_usage(dst).free
    if need > free:
        print(
            f"warning: {dst}: this run makes every table again and stages them beside the earlier ones until it "
            f"ends: about {need / 2**30:.1f} GiB, with {free / 2**30:.1f} GiB free (a run that runs out of space "
            "stops and keeps every earlier output; parse into a new DST to keep the earlier one whole)",
            file=sys.stderr,
        )


def _run_jobs(
    jobs: list, dst: Path, config: ProcessingConfig, workers: int, overwrite: bool, progress: bool, staging: Path
) -> list[dict]:
    """`run_job` for every job, in `workers` spawned processes (0: here, in this process), in job order; at the
    first storage error no further night is started (the nights already running in other workers finish). In
    workers a night that kills its process (the OOM killer, a crash in native code) fails alone; here it would
    end the run."""
    results = []
    bar = tqdm(total=len(jobs), desc="parsing nights", unit="night", disable=not progress)
    if workers == 0:
        for job in jobs:
            results.append(run_job(job, dst, config, overwrite, staging))
            bar.update()
            if results[-1]["stop"] is not None:
                break
    else:

        def died(index: int, reason: str) -> dict:
            """The night a worker killed by a signal held (the OOM killer, a crash in native code) fails alone,
            its earlier table kept (nothing is wrong with it; a rerun may reuse it). A worker that exited before it
            started never ran the night (an import failure: e.g. a script that calls parse_cohort without
            `if __name__ == "__main__":`, which every spawned worker runs again): the run stops, every earlier
            output kept."""
            job = jobs[index]
            row = job_row(job)
            row.update(status="failed", reason=f"{job.edf}: {reason}")
            stop = None
            if reason.startswith(NOT_STARTED) and "exit code" in reason:  # (a signal then is no fault of the script)
                stop = OSError(
                    f"a parser worker could not start for {job.edf} ({reason}); a script that calls "
                    "parse_cohort needs `if __name__ == '__main__':` (or workers=0); earlier outputs are kept"
                )
            return {
                "row": row,
                "events": [],
                "timings": {},
                "reused": False,
                "cpu_s": float("nan"),
                "max_rss_mb": float("nan"),
                "staged": None,
                "keep_table": True,
                "stop": stop,
            }

        work = functools.partial(run_job, dst=str(dst), config=config, overwrite=overwrite, staging=str(staging))
        results = run_in_workers(
            jobs, work, workers, on_death=died, done=bar.update, stop_when=lambda r: r["stop"] is not None
        )
    bar.close()
    return results


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
    check_split_options(test_frac, val_frac, train_subjects)
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
    with dst_lock(dst):  # no shard run may still be writing, nor another merge
        return _merge(dst, n, split_seed, test_frac, val_frac, train_subjects, resplit)


def _merge(
    dst: Path, n: int, split_seed: int, test_frac: float, val_frac: float, train_subjects: int, resplit: bool
) -> pd.DataFrame:
    """`merge_shards` once its N shards are found and DST is held."""
    manifest = pd.concat(
        [pd.read_parquet(dst / f"manifest.shard-{k}-of-{n}.parquet") for k in range(1, n + 1)], ignore_index=True
    )
    records = [json.loads((dst / f"parser_config.shard-{k}-of-{n}.json").read_text()) for k in range(1, n + 1)]
    digests = {r.get("config_digest") for r in records}
    if len(digests) > 1:
        raise ValueError(f"{dst}: the shards were parsed with different settings (config digests {sorted(digests)})")
    channels = tuple(c for c in CHANNEL_BY_NAME if f"median_{c}" in manifest.columns)
    rows = manifest.to_dict("records")
    for line in flag_same_content(rows):  # notes the rows in place
        print(f"warning: {line}", flush=True)  # stdout: stderr is for errors
    manifest = manifest_frame(rows, channels)
    events = [pd.read_parquet(dst / f"events.shard-{k}-of-{n}.parquet") for k in range(1, n + 1)]
    events = pd.concat(events, ignore_index=True).sort_values(
        ["recording_id", "start_s"], kind="stable", ignore_index=True
    )
    # with the cohort's processing record, as a single run writes it (downstream runs read it: `cohort_processing`),
    # and the tables the shards staged for it (those made from the row's sources with the shards' settings)
    split_args = dict(seed=split_seed, test_frac=test_frac, val_frac=val_frac, train_subjects=train_subjects)
    kept = {rid for r in records for rid in r.get("kept_tables") or ()}  # nights whose worker was killed
    record = [(dst / "parser_config.json", _record_writer({**records[0], "shard": None, "kept_tables": sorted(kept)}))]
    ready, missing = [], {}
    for row in manifest[manifest["status"] == "ok"].itertuples():
        k = shard_of(row.recording_id, n)
        staged = staging_folder(dst, f"shard-{k}-of-{n}") / f"{row.recording_id}.parquet"
        xml_sha = row.xml_sha256 if isinstance(row.xml_sha256, str) and row.xml_sha256 else None  # "": unscored
        sources = (row.edf_sha256, xml_sha, records[0].get("config_digest"))
        if reusable_table(staged, *sources) is not None:
            ready.append((recording_file(dst, row.recording_id), staged))
        elif reusable_table(recording_file(dst, row.recording_id), *sources) is None:
            missing.setdefault(k, row.recording_id)
    if missing:  # e.g. a shard stopped after its manifest was written by a run with other settings
        raise ValueError(
            f"{dst}: the table of {next(iter(missing.values()))} (and maybe others) was not made with the shards' "
            f"settings; rerun shard(s) {', '.join(f'{k}/{n}' for k in sorted(missing))}, then --merge"
        )
    write_cohort_outputs(dst, manifest, events, split_args, resplit, record, ready)
    remove_staging(dst)
    ok = set(manifest.loc[manifest["status"] == "ok", "recording_id"])
    for rid in sorted(set(manifest["recording_id"]) - ok - kept):  # no longer ok: the table goes with the manifest
        note = remove_table(dst, rid)
        if note:
            print(f"{rid}: {note.lstrip('; ')}", file=sys.stderr)
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
    from utils.config import ArgumentParser, mark_required, non_negative_int, path_arg, probability

    parser = ArgumentParser(
        prog="python dataset/data_parser.py",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    mark_required(parser, "dst")
    parser.add_argument(
        "--config",
        type=path_arg,
        default=None,
        help="JSON or YAML file of options (keys as the long option names); flags win",
    )
    parser.add_argument("--src", type=path_arg, default=None, help="NSRR download root or flat folder of EDF + XML")
    parser.add_argument(
        "--dst", type=path_arg, default=None, help="output folder (recordings/, manifest, events, splits)"
    )
    parser.add_argument(
        "--workers",
        type=non_negative_int,
        default=1,
        help="worker processes, one night each at a time (0: in this process, where a night that crashes or runs "
        "out of memory ends the run)",
    )
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
        type=path_arg,
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
        nyquist = CHANNEL_BY_NAME[name].target_fs / 2
        if low >= nyquist:  # a HIGH at or above it is allowed: the band is then a high-pass
            parser.error(f"--band {item!r}: LOW must be below {nyquist:g} Hz, half the rate {name} is stored at")
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
    except KeyboardInterrupt:
        print(
            "interrupted: the nights written so far are kept, the cohort files are not updated; the same command "
            "goes on from there",
            file=sys.stderr,
        )
        return 130
    except (OSError, ValueError) as err:  # no SRC, unusable DST, missing shards, full disk: not one recording
        message = str(err)
        if isinstance(err, OSError) and err.errno in STORAGE_ERRNOS and err.filename:
            message = f"{err.filename}: cannot write ({err.strerror}); the run stopped, earlier outputs are kept"
        print(f"error: {' '.join(message.split())}", file=sys.stderr)
        return 2
    print(summary_text(manifest))
    print(f"{len(manifest)} recording(s) in {time.perf_counter() - started:.1f} s -> {args.dst}")
    # nothing a later step could read (a shard may hold only skipped nights: the merge judges the cohort)
    if not args.shard and len(manifest) and not (manifest["status"] == "ok").any():
        where = f"--dst {args.dst}" if args.merge else f"--src {args.src}"
        print(f"error: {where}: no recording was parsed (see the reasons above and manifest.csv)", file=sys.stderr)
        return 1
    return int((manifest["status"] == "failed").any())


if __name__ == "__main__":
    from dataset import data_parser  # the importable module, so worker functions pickle by their real name

    raise SystemExit(data_parser.main())
