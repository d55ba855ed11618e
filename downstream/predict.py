"""Inference on new nights (DESIGN.md section 6): EDF (+ optional NSRR XML) -> hypnogram, events, sleep report.

    python downstream/predict.py --checkpoint RUN --edf NIGHT.edf [--xml NIGHT-nsrr.xml] --out DIR \
        [--apnea RUN] [--hypopnea RUN]
    python downstream/predict.py --checkpoint RUN --edf FOLDER | "GLOB*.edf" | LIST.txt --out DIR [...]

`--checkpoint` is a staging run (linear-probing or fine-tuning run directory, or its best.pt / last.pt);
`--apnea` / `--hypopnea` are optional runs of those tasks. The night goes through the parser's exact
processing in memory (`dataset.data_parser.load_night`); the WHOLE recording (floor(signal / 30 s) epochs) is
predicted whether or not a scoring is given. Each backbone encodes a night once for every task model that
uses it (runs whose encoders hold the same weights and read the same channels share one encoding); every model
predicts every epoch exactly once (fine-tuned temporal runs: the deterministic tiling of
`SequenceDataset(tiling=True)`; probes: per epoch), and DIR receives:

- hypnogram.csv: one row per 30-s epoch: epoch, start_s (seconds from the EDF start), time (clock time of the
  epoch start, from the EDF header), stage (W/N1/N2/N3/REM), stage_code (0..4), p_W .. p_REM; with event
  runs p_<task> and <task> (0/1, argmax); with an XML scored_stage / scored_stage_code (-1 / "" unscored; epochs
  after the scored part are unscored).
- hypnogram.png: the predicted hypnogram (with the scored one when an XML is given).
- events.csv (event runs given): one row per run of consecutive positive epochs: type, start_epoch, n_epochs,
  start_s, duration_s, time, in_sleep (the run starts in a predicted sleep epoch: only those count in the AHI),
  n_events (ceil(n_epochs / 2), as `utils.metrics.count_events` counts).
- report.json (strict JSON, NaN -> null) and report.md: total recording time, TST, sleep efficiency, sleep onset
  latency, REM latency, WASO, minutes and % per stage (`utils.sleep_stats.sleep_statistics` on the predicted
  hypnogram); estimated AHI and severity when both event runs are given (events counted only when they start in
  predicted sleep, `utils.metrics.estimate_ahi`, each type's count times its run's `event_calibration` scale
  from metrics.json; the raw count is `ahi_est_uncalibrated`); channels the models wanted but the night lacks;
  `warnings` (a truncated EDF); with an XML, agreement with the scoring on its scored epochs (accuracy, kappa,
  confusion matrix; scored AHI from the XML's events vs estimated).
- the predicted stages and events in standard formats (`dataset.annotation_export`): predicted-nsrr.xml (NSRR
  XML), predicted-annotations.edf (EDF+ annotations), hypnogram-yasa.txt (YASA codes, one per epoch: 0 W, 1 N1,
  2 N2, 3 N3, 4 REM) and events.tsv (BIDS: onset, duration, trial_type).
- config.json: the options of the run.

Cohorts: `--edf` naming a folder (the parser's `discover`: every EDF below it, each paired with its annotation
file by the parser's rule), a glob pattern or a list file (one EDF path per line) writes DIR/<night>/ (the files
above) per night and DIR/summary.csv + summary.md (night, subject, status, reason, TST, sleep efficiency, AHI
estimated / scored, severity). A night that cannot be read is a `failed` row with its reason and the cohort goes
on; the exit code is then 1.

DIR is written whole or not at all: the report set is built in a sibling folder and swapped in, so an earlier
report in DIR is replaced entirely (nothing stale stays beside it) and a failed run leaves it unchanged. DIR
must be new, empty, or an earlier predict.py output.

A SynthSleepNet model missing some of its channels predicts from the others (dropped from the fusion input, not
zero-filled) and the report names them. Unreadable or malformed inputs end with one `error: FILE: ...` line and
exit code 2.
"""
from __future__ import annotations

import argparse
import datetime
import glob
import hashlib
import json
import math
import os
import shutil
import sys
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from dataset import annotation_export
from dataset.constants import (CHANNEL_BY_NAME, EPHYS_CHANNELS, EPOCH_S, LABEL_EVENT_COLUMNS, STAGE_NAMES,
                                STAGE_UNSCORED, TASKS)
from dataset.data_parser import discover, load_night, subject_of
from dataset.datasets import window_starts
from dataset.edf_reader import EdfError, read_edf_header
from dataset.annotations import read_annotations
from dataset.channel_map import ChannelMap, load_channel_map
from dataset.labels import epoch_labels, labels_frame, night_summary
from dataset.nsrr_xml import XmlError
from dataset.signal_processing import ProcessingConfig, SkipRecording
from downstream.cache import RecordingVectors, VectorStore, predict_tiles
from downstream.common import DownstreamModel, epochwise, load_downstream_run, predict_windows
from utils.config import ArgumentParser, parse_config, positive_int, save_config
from utils.metrics import (SEVERITY_NAMES, SEVERITY_UNKNOWN, binary_class_names, classification_metrics,
                           count_events, estimate_ahi, event_runs, severity_class)
from utils.plots import hypnogram_png
from utils.sleep_stats import SLEEP_STAGES, sleep_statistics

EVENT_TASKS: tuple[str, ...] = ("apnea", "hypopnea")
PROBE_WINDOW = 32  # epochs per window when a per-epoch model runs through the tiling (any size gives the same)
MAX_EVENT_EPOCHS = 2  # a run of k positive epochs = ceil(k / 2) events (utils.metrics.count_events default)


REPORT_MARKERS = ("report.json", "summary.csv")  # a folder holding one of these was written by predict.py


class InputError(Exception):
    """Bad input (file, checkpoint or channels): reported as one `error:` line, exit code 2."""


def one_line(err: BaseException | str) -> str:
    """The first line of an error message (torch and friends add paragraphs of advice)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


# ---------------------------------------------------------------------------------------- options
def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="predict.py", description=__doc__.split("\n\n")[0],
        epilog="Runs: a linear-probing or fine-tuning run directory (best.pt, else last.pt) or a checkpoint file. "
               "--checkpoint must be a sleep_stage run; --apnea and --hypopnea add events.csv, and both together "
               "the estimated AHI. Exit codes: 0 ok, 1 some night of a cohort failed (see summary.csv), 2 bad input "
               "(unreadable EDF, malformed XML, bad run, no usable channel, unusable --out).")
    parser.add_argument("--config", type=Path, default=None,
                        help="JSON or YAML file of these options (keys as in the config.json it writes); "
                             "explicit flags win")
    parser.add_argument("--checkpoint", type=Path, default=None, help="sleep-staging run (required)")
    parser.add_argument("--apnea", type=Path, default=None, help="apnea run (optional)")
    parser.add_argument("--hypopnea", type=Path, default=None, help="hypopnea run (optional)")
    parser.add_argument("--edf", type=Path, default=None,
                        help="the night's EDF file, or a cohort: a folder (every EDF below it), a glob pattern "
                             "(quoted) or a list file (one EDF path per line); required")
    parser.add_argument("--xml", type=Path, default=None,
                        help="optional NSRR XML of a single EDF: adds agreement with its scoring (a cohort's EDFs are "
                             "paired with their annotation files as the parser pairs them)")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (required): new, empty, or an earlier predict.py output, which is "
                             "replaced whole")
    parser.add_argument("--channel-map", type=Path, default=None, metavar="MAP",
                        help="YAML or JSON channel map (canonical name -> EDF label, 'A - B' derivation or a list of "
                             "candidates), tried before the built-in alias tables, as in dataset/data_parser.py")
    parser.add_argument("--batch-size", type=positive_int, default=64, help="epochs per forward pass")
    parser.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, cuda:1, ...")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    return parser


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def load_runs(runs: Mapping[str, Path | None], device: torch.device) -> dict[str, DownstreamModel]:
    """task -> loaded run, checking that each run was trained for the task it is given as."""
    loaded = {}
    for task, run in runs.items():
        if run is None:
            continue
        try:
            model = load_downstream_run(run, device)
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as err:  # missing, corrupt or foreign file
            raise InputError(f"{run}: cannot load the {task} run ({one_line(err)})") from None
        if model.task != task:
            option = "--checkpoint" if task == "sleep_stage" else f"--{task}"
            raise InputError(f"{model.checkpoint}: a {model.task} run, but {option} expects a {task} run")
        model.model.to(device).eval()
        loaded[task] = model
    return loaded


# ---------------------------------------------------------------------------------------- prediction
class NightWindows(Dataset):
    """In-memory tiling windows of one night, items as `SequenceDataset(tiling=True)` gives them (no label):
    {"recording", "start_epoch", <channel>: (T, n_samples) float32 zero-padded, "valid", "epoch_ids", "owned"}."""

    tiling = True

    def __init__(self, recording: str, epochs: Mapping[str, np.ndarray], epochs_per_window: int):
        self.split = recording  # predict_windows' progress label
        self.recording, self.epochs, self.size = recording, dict(epochs), int(epochs_per_window)
        self.n_epochs = int(next(iter(self.epochs.values())).shape[0])
        self.starts, self.owned_from = window_starts(self.n_epochs, self.size, self.size)

    def __len__(self) -> int:
        return int(self.starts.shape[0])

    def __getitem__(self, index: int) -> dict[str, Any]:
        start, size = int(self.starts[index]), self.size
        stop = min(start + size, self.n_epochs)
        n_real = stop - start
        item: dict[str, Any] = {"recording": self.recording, "start_epoch": start}
        for name, array in self.epochs.items():
            window = np.zeros((size, array.shape[1]), dtype=np.float32)  # (T, 3000) at 100 Hz, zero padding
            window[:n_real] = array[start:stop]
            item[name] = torch.from_numpy(window)
        valid = np.arange(size) < n_real  # (T,) bool
        epoch_ids = np.where(valid, start + np.arange(size), -1)  # (T,) int64, -1 at padding
        item["valid"] = torch.from_numpy(valid)
        item["epoch_ids"] = torch.from_numpy(epoch_ids.astype(np.int64))
        item["owned"] = torch.from_numpy(valid & (np.arange(size) >= int(self.owned_from[index])))
        return item


def predict_task(run: DownstreamModel, epochs: Mapping[str, np.ndarray], recording: str, device: torch.device,
                 batch_size: int = 64, progress: bool = False) -> np.ndarray:
    """Class probabilities (n_epochs, C) float32 of one night, every epoch predicted exactly once.

    `epochs`: {channel: (n_epochs, 3000)} robust-scaled epochs at 100 Hz; only the run's channels found there are
    used (a SynthSleepNet drops the others from its fusion input)."""
    channels = [ch for ch in run.channels if ch in epochs]
    n_classes = TASKS[run.task]
    temporal = run.kind == "temporal_classifier"
    size = int(run.epochs_per_window) if temporal else PROBE_WINDOW
    windows = NightWindows(recording, {ch: epochs[ch] for ch in channels}, size)

    def classify(signals: Mapping[str, torch.Tensor]) -> torch.Tensor:
        inputs = {ch: x.to(device) for ch, x in signals.items()}  # (B, [T,] 3000) per channel
        return run.model(inputs).float().softmax(dim=-1).cpu()  # (B, [T,] C)

    def classify_windows(batch: Mapping[str, Any]) -> torch.Tensor:
        return classify({ch: batch[ch] for ch in channels})  # (B, T, C)

    predict_batch = classify_windows if temporal else epochwise(classify, channels)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"SynthSleepNet.encode: channel")  # reported by the caller
        predictions = predict_windows(windows, predict_batch, n_classes, max(1, batch_size // size),
                                      progress=progress)
    if not np.array_equal(predictions.epoch, np.arange(windows.n_epochs)):
        raise RuntimeError(f"{recording}: the tiling did not predict every epoch exactly once")
    return predictions.probabilities.astype(np.float32)  # (n_epochs, C), rows in epoch order


def encoder_identity(run: DownstreamModel, channels: Sequence[str]) -> str:
    """What a run's per-epoch encoder computes: SHA-256 of its weights (names, shapes, values) and the channels it
    reads. Probes on one backbone checkpoint (and channels) share it, so the night is encoded once for them."""
    digest = hashlib.sha256(json.dumps(list(channels)).encode())
    for name, tensor in sorted(run.model.encoder.state_dict().items()):
        value = tensor.detach().cpu().contiguous().reshape(-1)  # 0-d buffers (BatchNorm counters) as 1-d
        digest.update(f"{name}:{value.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(value.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def share_encoders(runs: Mapping[str, DownstreamModel]) -> dict[str, str]:
    """task -> encoder identity (`encoder_identity` over all of the run's channels); runs with the same identity
    are made to hold the same encoder module (loaded once in memory). Runs without a separate encoder are left
    out (predicted end to end)."""
    identities, first = {}, {}
    for task, run in runs.items():
        if not (hasattr(run.model, "encoder") and hasattr(run.model, "head")):
            continue
        identities[task] = identity = encoder_identity(run, run.channels)
        if identity in first:
            run.model.encoder = first[identity]
        first.setdefault(identity, run.model.encoder)
    return identities


@torch.no_grad()
def encode_night(encoder: torch.nn.Module, epochs: Mapping[str, np.ndarray], channels: Sequence[str],
                 device: torch.device, batch_size: int = 64, progress: bool = False) -> np.ndarray:
    """Per-epoch vectors (n_epochs, D) float32 of a night through one frozen encoder, each epoch exactly once."""
    n_epochs = int(next(iter(epochs.values())).shape[0])
    parts = []
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"SynthSleepNet.encode: channel")  # reported by the caller
        for first in tqdm(range(0, n_epochs, batch_size), desc="encode", unit="batch", leave=False,
                          disable=not progress):
            signals = {ch: torch.from_numpy(epochs[ch][first: first + batch_size]).to(device)
                       for ch in channels}  # (b, 3000) per channel at 100 Hz, robust-scaled
            parts.append(encoder(signals).float().cpu().numpy())  # (b, D)
    return np.concatenate(parts)


@torch.no_grad()
def classify_vectors(run: DownstreamModel, vectors: np.ndarray, recording: str, device: torch.device,
                     batch_size: int = 64) -> np.ndarray:
    """Class probabilities (n_epochs, C) float32 from a night's encoder vectors (n_epochs, D): per-epoch models
    apply their head; temporal models see the deterministic tiling of `SequenceDataset(tiling=True)` (every
    epoch owned by exactly one window)."""
    n_classes, n_epochs = TASKS[run.task], vectors.shape[0]
    if run.kind != "temporal_classifier":
        logits = [run.model.head(torch.from_numpy(vectors[k: k + batch_size]).to(device)).float().cpu()
                  for k in range(0, n_epochs, batch_size)]  # (b, C) each
        return torch.cat(logits).softmax(dim=-1).numpy().astype(np.float32)
    size = int(run.epochs_per_window)
    store = VectorStore({recording: RecordingVectors(np.arange(n_epochs, dtype=np.int64), vectors)})
    predictions = predict_tiles(store, [recording], size,
                                lambda x: run.model.classify_vectors(x.to(device)).float().softmax(dim=-1).cpu(),
                                {}, n_classes, max(1, batch_size // size))  # windows (B, T, D) -> (B, T, C)
    if not np.array_equal(predictions.epoch, np.arange(n_epochs)):
        raise RuntimeError(f"{recording}: the tiling did not predict every epoch exactly once")
    return predictions.probabilities.astype(np.float32)


def predict_all(runs: Mapping[str, DownstreamModel], epochs: Mapping[str, np.ndarray], recording: str,
                device: torch.device, batch_size: int = 64, progress: bool = False,
                identities: Mapping[str, str] | None = None) -> dict[str, np.ndarray]:
    """task -> class probabilities (n_epochs, C) of one night. Runs whose encoders share an identity
    (`share_encoders`) and read the same present channels use one encoding of the night."""
    identities = share_encoders(runs) if identities is None else identities
    vectors: dict[tuple[str, tuple[str, ...]], np.ndarray] = {}
    out = {}
    for task, run in runs.items():
        channels = tuple(ch for ch in run.channels if ch in epochs)
        if task not in identities:
            out[task] = predict_task(run, epochs, recording, device, batch_size, progress)
            continue
        key = (identities[task], channels)
        if key not in vectors:
            vectors[key] = encode_night(run.model.encoder, epochs, channels, device, batch_size, progress)
        out[task] = classify_vectors(run, vectors[key], recording, device, batch_size)
    return out


# ---------------------------------------------------------------------------------------- night
def recording_start(edf_path: Path) -> datetime.datetime | None:
    """Start of the recording from the EDF header (dd.mm.yy, hh.mm.ss; EDF years 85-99 are 19xx); None if
    unreadable. An unreadable date alone gives 1985-01-01 (the EDF "unknown" date) with the clock time."""
    try:
        header = read_edf_header(edf_path)
        clock = datetime.datetime.strptime(header.starttime, "%H.%M.%S").time()
    except (EdfError, ValueError):
        return None
    try:
        day, month, year = (int(v) for v in header.startdate.split("."))
        date = datetime.date(1900 + year if year >= 85 else 2000 + year, month, day)
    except ValueError:
        date = datetime.date(1985, 1, 1)
    return datetime.datetime.combine(date, clock)


def clock_times(edf_path: Path, n_epochs: int) -> list[str]:
    """HH:MM:SS clock time of each epoch start from the EDF header's start time ("" if unreadable)."""
    start = recording_start(edf_path)
    if start is None:
        return [""] * n_epochs
    return [(start + datetime.timedelta(seconds=k * EPOCH_S)).strftime("%H:%M:%S") for k in range(n_epochs)]


def channel_report(runs: Mapping[str, DownstreamModel], epochs: Mapping[str, np.ndarray], info: Mapping[str, Any],
                   edf_path: Path) -> dict[str, Any]:
    """Which wanted channels each model uses and which the night lacks; InputError if a model has none."""
    dropped = {part.split(" ", 1)[0]: part for part in str(info.get("dropped_channels") or "").split("; ") if part}
    models, missing_all = {}, []
    for task, run in runs.items():
        used = [ch for ch in run.channels if ch in epochs]
        missing = [ch for ch in run.channels if ch not in epochs]
        if not used:
            looked = "; ".join(f"{ch}: {', '.join(CHANNEL_BY_NAME[ch].aliases)}" for ch in run.channels)
            raise InputError(f"{edf_path}: none of the channels the {task} model needs is usable "
                             f"(looked for {looked})")
        models[task] = {"checkpoint": run.checkpoint, "kind": run.kind, "channels": list(run.channels),
                        "used": used, "missing": missing,
                        "epochs_per_window": run.epochs_per_window if run.kind == "temporal_classifier" else None}
        missing_all += [ch for ch in missing if ch not in missing_all]
    sources = dict(part.split(":", 1) for part in str(info.get("channel_sources") or "").split(";") if ":" in part)
    return {"models": models, "missing": missing_all, "present": sorted(epochs, key=EPHYS_CHANNELS.index),
            "why_missing": {ch: dropped.get(ch, "not in the EDF") for ch in missing_all},
            "sources": {ch: sources.get(ch, "") for ch in sorted(epochs, key=EPHYS_CHANNELS.index)},
            "user_map": [ch for ch in str(info.get("channel_map_channels") or "").split(",") if ch]}


def event_rows(task: str, positive: np.ndarray, sleep: np.ndarray, times: Sequence[str]) -> list[dict[str, Any]]:
    """One row per run of positive epochs (utils.metrics.event_runs)."""
    rows = []
    for start, length in event_runs(positive):
        rows.append({"type": task, "start_epoch": start, "n_epochs": length, "start_s": float(start * EPOCH_S),
                     "duration_s": float(length * EPOCH_S), "time": times[start], "in_sleep": bool(sleep[start]),
                     "n_events": -(-length // MAX_EVENT_EPOCHS)})
    return rows


def agreement(stages: np.ndarray, stage_probabilities: np.ndarray, labels: pd.DataFrame,
              events: Mapping[str, np.ndarray], event_probabilities: Mapping[str, np.ndarray],
              stats: Mapping[str, Any], info: Mapping[str, Any]) -> dict[str, Any]:
    """Predicted vs scored: staging metrics on scored epochs; per-epoch event metrics; scored vs estimated AHI."""
    scored = labels["stage"].to_numpy().astype(np.int64)  # (n_epochs,) -1 = unscored
    out: dict[str, Any] = {"n_scored_epochs": int(np.sum(scored != STAGE_UNSCORED))}
    if out["n_scored_epochs"]:
        out["sleep_stage"] = classification_metrics(scored, stages, len(STAGE_NAMES), stage_probabilities)
        out["scored_sleep"] = sleep_statistics(scored)
    for task, positive in events.items():
        truth = labels[task].to_numpy().astype(np.int64)
        out[task] = classification_metrics(truth, positive, 2, event_probabilities[task], binary_class_names(task))
    ahi_scored = float(info.get("ahi_scored", math.nan))
    out["ahi"] = {"scored": ahi_scored, "estimated": stats.get("ahi_est"), "scored_severity": severity_name(ahi_scored),
                  "estimated_severity": stats.get("ahi_severity_name"),
                  "severity_agrees": (severity_class(ahi_scored) == stats["ahi_severity"]) if "ahi_est" in stats
                  and not math.isnan(ahi_scored) else None}
    return out


def severity_name(ahi: float) -> str:
    severity = severity_class(ahi)
    return SEVERITY_NAMES[severity] if severity != SEVERITY_UNKNOWN else "unknown"


def scored_labels(xml_path: Path, edf_path: Path, n_epochs: int, signal_s: float
                  ) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Labels of the whole night's `n_epochs` from its annotation file (NSRR XML or any format the parser reads,
    `dataset.annotations.read_annotations`; `dataset.labels.epoch_labels`), -1 after the scored part (epochs past
    min(signal, scoring) as the parser trims), and the parser's manifest numbers of the scored part
    (`ahi_scored`, `tst_min`, ...). Raises XmlError / EdfError."""
    annotations = read_annotations(xml_path, read_edf_header(edf_path))
    scored_s = annotations.scored_s or signal_s  # no stage event: nothing scored, the whole signal kept
    n_scored = min(n_epochs, int(math.floor(min(signal_s, scored_s) / EPOCH_S + 1e-9)))
    labels = epoch_labels(annotations, n_epochs)
    for name in ("stage", *LABEL_EVENT_COLUMNS):
        labels[name][n_scored:] = STAGE_UNSCORED  # not scored: never compared
    summary = night_summary(epoch_labels(annotations, n_scored), annotations.events, n_scored * float(EPOCH_S))
    return labels_frame(labels), {**summary, "scored_s": scored_s, "scored_part_epochs": n_scored}


def predict_night(edf_path: str | Path, runs: Mapping[str, DownstreamModel], xml_path: str | Path | None = None,
                  device: torch.device | str = "cpu", batch_size: int = 64, progress: bool = False,
                  identities: Mapping[str, str] | None = None, channel_map: ChannelMap = ()) -> dict[str, Any]:
    """Process and predict one night in memory. Returns {"hypnogram": DataFrame, "events": DataFrame | None,
    "report": dict, "stages": (n,) int, "scored": (n,) int | None}. Raises InputError for bad inputs.

    The whole recording is predicted (floor(signal / 30 s) epochs) whether or not a scoring is given; agreement
    with the scoring counts the scored epochs only. `identities`: `share_encoders(runs)`, computed once per
    cohort (default: here). `channel_map`: a user channel map (`dataset.channel_map.load_channel_map`), tried
    before the built-in alias tables as the parser does."""
    edf_path, device = Path(edf_path), torch.device(device)
    xml_path = Path(xml_path) if xml_path is not None else None
    for path in (edf_path, xml_path):
        if path is not None and not path.is_file():
            raise InputError(f"{path}: no such file")
    wanted = [ch for ch in EPHYS_CHANNELS if any(ch in run.channels for run in runs.values())]
    try:
        epochs, _, info = load_night(edf_path, None, channels=wanted, config=ProcessingConfig(channel_map=channel_map))
        labels = None
        if xml_path is not None:
            labels, scoring = scored_labels(xml_path, edf_path, int(info["n_epochs"]), float(info["signal_s"]))
            info = {**info, **scoring}
    except (EdfError, XmlError, SkipRecording, ValueError) as err:
        raise InputError(one_line(err)) from None
    channels = channel_report(runs, epochs, info, edf_path)
    recording, n_epochs = edf_path.stem, int(info["n_epochs"])
    times = clock_times(edf_path, n_epochs)

    probabilities = predict_all(runs, epochs, recording, device, batch_size, progress, identities)  # task -> (n, C)
    stages = probabilities["sleep_stage"].argmax(axis=1).astype(np.int64)  # (n_epochs,) 0..4
    sleep = np.isin(stages, SLEEP_STAGES)  # (n_epochs,) bool, predicted sleep
    events = {task: probabilities[task].argmax(axis=1).astype(np.int64) for task in EVENT_TASKS if task in runs}
    event_p = {task: probabilities[task][:, 1] for task in events}  # (n_epochs,) positive-class probability
    both = len(events) == len(EVENT_TASKS)
    scales = {task: runs[task].event_scale for task in events}  # scored events per counted event (val labels)
    stats = sleep_statistics(stages, EPOCH_S, events.get("apnea") if both else None,
                             events.get("hypopnea") if both else None, max_event_epochs=MAX_EVENT_EPOCHS,
                             event_scales=(scales.get("apnea", 1.0), scales.get("hypopnea", 1.0)))

    table = pd.DataFrame({"epoch": np.arange(n_epochs), "start_s": np.arange(n_epochs) * float(EPOCH_S),
                          "time": times, "stage": [STAGE_NAMES[s] for s in stages], "stage_code": stages})
    for k, name in enumerate(STAGE_NAMES):
        table[f"p_{name}"] = probabilities["sleep_stage"][:, k]
    for task, positive in events.items():
        table[f"p_{task}"], table[task] = event_p[task], positive
    scored = None
    if labels is not None:
        scored = labels["stage"].to_numpy().astype(np.int64)
        table["scored_stage"] = [STAGE_NAMES[s] if s != STAGE_UNSCORED else "" for s in scored]
        table["scored_stage_code"] = scored

    event_table = None
    event_summary = {}
    if events:
        rows = [row for task, positive in events.items() for row in event_rows(task, positive, sleep, times)]
        event_table = pd.DataFrame(rows, columns=["type", "start_epoch", "n_epochs", "start_s", "duration_s", "time",
                                                  "in_sleep", "n_events"])
        zeros = np.zeros(n_epochs, dtype=np.int64)
        for task, positive in events.items():
            alone = (positive, zeros) if task == "apnea" else (zeros, positive)
            event_summary[task] = {"n_runs": len(event_runs(positive)),
                                   "n_events_in_sleep": count_events(positive, sleep, MAX_EVENT_EPOCHS),
                                   "event_scale": scales[task],
                                   "index_per_h": estimate_ahi(*alone, sleep, EPOCH_S, MAX_EVENT_EPOCHS,
                                                               (scales[task], scales[task]))}
    warnings_ = []
    if info.get("truncated"):
        warnings_.append(f"truncated EDF ({info.get('warnings') or 'last data record cut'}): predicted the "
                         f"{_fmt(float(info['kept_s']) / 60)} min of whole data records; the end of the night is "
                         "missing")
    notes = []
    if channels["missing"]:
        notes.append(f"missing channels {', '.join(channels['missing'])}: predicted without them")
    if labels is not None and info["scored_part_epochs"] < n_epochs:
        notes.append(f"the scoring covers the first {info['scored_part_epochs']} of the {n_epochs} predicted epochs; "
                     "agreement counts the scored epochs only")
    if events and not both:
        notes.append("the AHI needs both --apnea and --hypopnea runs; only the given type's index is reported")

    report = {
        "recording": recording, "edf": str(edf_path.resolve()), "xml": str(xml_path.resolve()) if xml_path else None,
        "start_time": times[0] or None, "n_epochs": n_epochs, "epoch_s": float(EPOCH_S),
        "channels": channels, "sleep": stats, "events": event_summary or None, "warnings": warnings_, "notes": notes,
        "processing": {"signal_s": info.get("signal_s"), "kept_s": info.get("kept_s"), "truncated": info.get("truncated"),
                       "warnings": info.get("warnings") or ""},
        "agreement": (agreement(stages, probabilities["sleep_stage"], labels, events, event_p, stats, info)
                      if labels is not None else None),
    }
    return {"hypnogram": table, "events": event_table, "report": report, "stages": stages, "scored": scored,
            "event_epochs": events, "start": recording_start(edf_path)}


# ---------------------------------------------------------------------------------------- outputs
def strict(value: Any) -> Any:
    """JSON-ready copy: NaN / inf -> None, numpy scalars and arrays -> Python."""
    if isinstance(value, Mapping):
        return {str(k): strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [strict(v) for v in value]
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer, int)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    return value


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def report_markdown(report: Mapping[str, Any]) -> str:
    """report.md: the sleep report as tables (values from report.json)."""
    s = report["sleep"]
    lines = [f"# Sleep report: {report['recording']}", "",
             f"EDF `{report['edf']}`" + (f", scoring `{report['xml']}`" if report["xml"] else "")
             + f"; start {report['start_time'] or 'unknown'}; {report['n_epochs']} epochs of {report['epoch_s']:g} s.", ""]
    lines += [f"**Warning: {warning}.**\n" for warning in report.get("warnings") or ()]
    for task, model in report["channels"]["models"].items():
        lines.append(f"- {task}: `{model['checkpoint']}` ({model['kind']}), channels used: {', '.join(model['used'])}"
                     + (f"; **missing: {', '.join(model['missing'])}**" if model["missing"] else ""))
    for ch, why in report["channels"]["why_missing"].items():
        lines.append(f"- missing channel {ch}: {why}")
    sources = report["channels"].get("sources") or {}
    if sources:
        mapped = set(report["channels"].get("user_map") or ())
        lines.append("- EDF signals used: " + "; ".join(
            f"{ch} <- `{label or '?'}`" + (" (--channel-map)" if ch in mapped else "") for ch, label in sources.items()))
    lines += ["", "## Sleep statistics (predicted hypnogram)", "", "| measure | value |", "|---|---|"]
    for key, label in (("trt_min", "total recording time (min)"), ("tst_min", "total sleep time (min)"),
                       ("sleep_efficiency_pct", "sleep efficiency (%)"), ("sol_min", "sleep onset latency (min)"),
                       ("rem_latency_min", "REM latency from sleep onset (min)"), ("waso_min", "WASO (min)"),
                       ("n_awakenings", "awakenings"), ("unscored_min", "unscored (min)")):
        lines.append(f"| {label} | {_fmt(s.get(key))} |")
    lines += ["", "| stage | minutes | % of TST |", "|---|---|---|"]
    for name in STAGE_NAMES:
        pct = s.get(f"{name.lower()}_pct")
        lines.append(f"| {name} | {_fmt(s[f'{name.lower()}_min'])} | {_fmt(pct) if name != 'W' else '-'} |")
    if report["events"]:
        lines += ["", "## Respiratory events (predicted)", "",
                  "| type | runs | events in sleep (counted) | scale | index (/h sleep) |", "|---|---|---|---|---|"]
        for task, e in report["events"].items():
            lines.append(f"| {task} | {e['n_runs']} | {e['n_events_in_sleep']} | {_fmt(e['event_scale'], 2)} | "
                         f"{_fmt(e['index_per_h'])} |")
        if "ahi_est" in s:
            lines += ["", f"Estimated AHI: **{_fmt(s['ahi_est'])} events/h** ({s['ahi_severity_name']}); "
                          f"uncalibrated count {_fmt(s['ahi_est_uncalibrated'])} events/h. The scale per event type is "
                          "the scored events per event counted from the scored epoch labels of the runs' `val` nights "
                          "(epoch labels miss short events and merge neighbouring ones)."]
    agree = report["agreement"]
    if agree:
        lines += ["", "## Agreement with the scoring", ""]
        staging = agree.get("sleep_stage")
        if staging:
            lines.append(f"Staging on {staging['n']} scored epochs: accuracy {_fmt(staging['accuracy'], 3)}, "
                         f"kappa {_fmt(staging['kappa'], 3)}, macro-F1 {_fmt(staging['macro_f1'], 3)}.")
            lines += ["", "| scored \\ predicted | " + " | ".join(STAGE_NAMES) + " |", "|---" * (len(STAGE_NAMES) + 1) + "|"]
            for name, row in zip(STAGE_NAMES, staging["confusion_matrix"]):
                lines.append(f"| {name} | " + " | ".join(str(v) for v in row) + " |")
            lines += ["", f"Scored TST {_fmt(agree['scored_sleep']['tst_min'])} min vs predicted {_fmt(s['tst_min'])} min."]
        for task in EVENT_TASKS:
            if task in agree:
                lines.append(f"{task} epochs: accuracy {_fmt(agree[task]['accuracy'], 3)}, "
                             f"kappa {_fmt(agree[task]['kappa'], 3)}.")
        ahi = agree["ahi"]
        lines.append(f"AHI: scored {_fmt(ahi['scored'])} ({ahi['scored_severity']}), estimated "
                     f"{_fmt(ahi['estimated'])} ({ahi['estimated_severity'] or 'not estimated'}).")
    if report["notes"]:
        lines += ["", "## Notes", ""] + [f"- {note}" for note in report["notes"]]
    return "\n".join(lines) + "\n"


def check_out(out: Path) -> None:
    """Refuse an `--out` this run could not write, before any night is processed (InputError).

    `out` must be new, an empty folder, or an earlier predict.py output (a folder holding report.json or
    summary.csv), which the new report set then replaces as a whole: nothing of the earlier run stays beside it.
    """
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not any((out / name).is_file() for name in REPORT_MARKERS):
        raise InputError(f"--out {out}: a folder holding other files (not a predict.py report); "
                         "give a new or empty folder")
    existing = out.absolute().parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"--out {out}: cannot be created ({existing} is not a folder)")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"--out {out}: cannot be created ({existing} is not writable)")


@contextmanager
def staged_folder(out: Path) -> Iterator[Path]:
    """A fresh folder beside `out` to write into; on success it replaces `out` (two renames), on any failure it
    is removed and `out` is left exactly as it was."""
    out = Path(out).absolute()  # "." has no name to put a sibling beside
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    old = out.with_name(f".{out.name}.{os.getpid()}.old")
    for leftover in (stage, old):  # from a run of this pid that was killed
        shutil.rmtree(leftover, ignore_errors=True)
    stage.mkdir()
    try:
        yield stage
        if out.exists():
            os.replace(out, old)
        os.replace(stage, out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        if old.exists() and not out.exists():
            os.replace(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def write_annotations(out: Path, result: Mapping[str, Any], paths: dict[str, Path]) -> None:
    """The predicted stages and events in standard formats (`dataset.annotation_export`): predicted-nsrr.xml,
    predicted-annotations.edf (EDF+), hypnogram-yasa.txt (YASA integer codes) and events.tsv (BIDS)."""
    stages, events = result["stages"], result.get("event_epochs") or {}
    start = result.get("start")
    paths["nsrr_xml"] = out / "predicted-nsrr.xml"
    paths["nsrr_xml"].write_text(annotation_export.nsrr_xml(stages, events, EPOCH_S,
                                                            start.strftime("%H.%M.%S") if start else None))
    paths["edf_annotations"] = annotation_export.write_edf_annotations(out / "predicted-annotations.edf", stages,
                                                                       events, start, EPOCH_S)
    paths["yasa_hypnogram"] = out / "hypnogram-yasa.txt"
    paths["yasa_hypnogram"].write_text(annotation_export.yasa_text(stages))
    paths["bids_events"] = out / "events.tsv"
    paths["bids_events"].write_text(annotation_export.bids_events_tsv(stages, events, EPOCH_S))


def write_outputs(out: str | Path, result: Mapping[str, Any]) -> dict[str, Path]:
    """Write hypnogram.csv / .png, events.csv (if any), report.json, report.md into the folder `out` (callers write
    into a `staged_folder`, so a report set appears whole or not at all)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"hypnogram_csv": out / "hypnogram.csv", "hypnogram_png": out / "hypnogram.png",
             "report_json": out / "report.json", "report_md": out / "report.md"}
    result["hypnogram"].to_csv(paths["hypnogram_csv"], index=False, float_format="%.6g")
    report = result["report"]
    hypnogram_png(result["stages"], paths["hypnogram_png"], true=result["scored"], epoch_s=EPOCH_S,
                  title=f"{report['recording']}: predicted" + (" vs scored" if result["scored"] is not None else ""))
    if result["events"] is not None:
        paths["events_csv"] = out / "events.csv"
        result["events"].to_csv(paths["events_csv"], index=False)
    write_annotations(out, result, paths)
    paths["report_json"].write_text(json.dumps(strict(report), indent=2, allow_nan=False) + "\n")
    paths["report_md"].write_text(report_markdown(strict(report)))
    return paths


# ---------------------------------------------------------------------------------------- cohort
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


def edf_root(edf: Path) -> Path:
    """The folder the parser's `discover` pairs an EDF in: the NSRR download root of `<root>/polysomnography/edfs/
    <rel>/<name>.edf`, else the EDF's own folder."""
    parts = edf.parts
    for k in range(len(parts) - 2, 0, -1):
        if parts[k] == "polysomnography" and parts[k + 1] == "edfs":
            return Path(*parts[:k])
    return edf.parent


def paired_inputs(edfs: Sequence[Path]) -> list[NightInput]:
    """Each EDF with its annotation file by the parser's pairing rule (`dataset.data_parser.discover` of the EDF's
    root; one `discover` per root). A missing EDF or an ambiguous pairing is the night's `problem`."""
    jobs_of: dict[Path, dict[Path, Any]] = {}
    nights = []
    for edf in edfs:
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


def night_inputs(source: Path) -> list[NightInput]:
    """The nights of `--edf` when it is a folder (the parser's `discover`: every EDF below it, paired with its
    annotation file), a glob pattern, or a list file (one EDF path per line, relative to the list's folder; blank
    lines and # comments skipped). Raises InputError when it names no EDF."""
    text = str(source)
    if source.is_dir():
        try:
            jobs = discover(source)
        except (OSError, ValueError) as err:
            raise InputError(f"--edf {source}: {one_line(err)}") from None
        nights = [NightInput(job.recording_id, job.subject_id, Path(job.edf) if job.edf else None,
                             Path(job.xml) if job.xml else None,
                             f"{job.edf}: {job.problem}" if job.problem else
                             ("" if job.edf else f"{job.xml}: no EDF file for this annotation file"))
                  for job in jobs]
    elif source.is_file():
        try:
            lines = source.read_text().splitlines()
        except (OSError, UnicodeDecodeError) as err:
            raise InputError(f"--edf {source}: cannot read the list of EDF files ({one_line(err)})") from None
        entries = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
        nights = paired_inputs([(source.parent / entry) if not Path(entry).is_absolute() else Path(entry)
                                for entry in entries])
    elif any(char in text for char in "*?["):
        nights = paired_inputs([Path(p) for p in sorted(glob.glob(text, recursive=True)) if Path(p).is_file()])
    else:
        raise InputError(f"--edf {source}: no such file, folder or glob pattern")
    if not any(night.edf is not None for night in nights):
        raise InputError(f"--edf {source}: names no EDF file")
    seen: dict[str, Path | None] = {}
    for night in nights:  # one report folder per recording id: a second EDF of an id is not predicted
        if night.recording in seen and not night.problem and night.edf is not None:
            night.problem = f"{night.edf}: duplicate recording id, also {seen[night.recording]}"
        seen.setdefault(night.recording, night.edf)
    return nights


SUMMARY_COLUMNS = ("night", "subject", "status", "reason", "n_epochs", "tst_min", "sleep_efficiency_pct",
                   "ahi_estimated", "ahi_scored", "severity", "truncated", "missing_channels", "edf", "xml", "report")


def summary_row(night: NightInput, report: Mapping[str, Any] | None, status: str, reason: str) -> dict[str, Any]:
    """One row of summary.csv (SUMMARY_COLUMNS)."""
    row = {"night": night.recording, "subject": night.subject, "status": status, "reason": reason,
           "edf": str(night.edf or ""), "xml": str(night.xml or ""), "report": ""}
    if report is not None:
        sleep = report["sleep"]
        ahi = (report.get("agreement") or {}).get("ahi") or {}
        row.update(n_epochs=report["n_epochs"], tst_min=sleep["tst_min"],
                   sleep_efficiency_pct=sleep["sleep_efficiency_pct"], ahi_estimated=sleep.get("ahi_est"),
                   ahi_scored=ahi.get("scored"), severity=sleep.get("ahi_severity_name", ""),
                   truncated=bool(report["processing"]["truncated"]),
                   missing_channels=",".join(report["channels"]["missing"]),
                   report=f"{night.recording}/report.md")
    return {name: row.get(name) for name in SUMMARY_COLUMNS}


def summary_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """summary.md: counts by status, then one table row per night."""
    counts = pd.Series([r["status"] for r in rows]).value_counts()
    lines = ["# Cohort prediction summary", "",
             ", ".join(f"{n} {status}" for status, n in counts.items()) + f" of {len(rows)} night(s).", "",
             "| night | subject | status | TST (min) | SE (%) | AHI est. | AHI scored | severity | reason |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        report = f"[{r['night']}]({r['report']})" if r["report"] else r["night"]
        reason = str(r["reason"] or "").replace("|", "/")
        lines.append(f"| {report} | {r['subject']} | {r['status']} | {_fmt(r['tst_min'])} | "
                     f"{_fmt(r['sleep_efficiency_pct'])} | {_fmt(r['ahi_estimated'])} | {_fmt(r['ahi_scored'])} | "
                     f"{r['severity'] or ''} | {reason} |")
    return "\n".join(lines) + "\n"


def predict_cohort(nights: Sequence[NightInput], runs: Mapping[str, DownstreamModel], stage: Path,
                   device: torch.device, batch_size: int = 64, progress: bool = False, channel_map: ChannelMap = ()
                   ) -> list[dict[str, Any]]:
    """Predict every night into `stage/<night>/`; a night that cannot be read or predicted is a `failed` row with
    its reason, and the cohort goes on. Returns the summary rows (also written as summary.csv and summary.md)."""
    identities = share_encoders(runs)  # each backbone encodes a night once, for every task model using it
    rows = []
    for night in tqdm(nights, desc="nights", unit="night", disable=not progress):
        if night.edf is None:
            rows.append(summary_row(night, None, "skipped", night.problem))
            continue
        if night.problem:
            rows.append(summary_row(night, None, "failed", night.problem))
            print(f"failed: {night.problem}", flush=True)
            continue
        try:
            result = predict_night(night.edf, runs, night.xml, device, batch_size, False, identities, channel_map)
            write_outputs(stage / night.recording, result)
        except InputError as err:
            rows.append(summary_row(night, None, "failed", str(err)))
            print(f"failed: {err}", flush=True)
            continue
        except Exception as err:  # noqa: BLE001 - one night's unexpected failure must not stop the cohort
            reason = f"{night.edf}: {type(err).__name__}: {one_line(err)}"
            rows.append(summary_row(night, None, "failed", reason))
            print(f"failed: {reason}", flush=True)
            continue
        report = result["report"]
        notes = "; ".join(report["warnings"] + ([f"missing {', '.join(report['channels']['missing'])}"]
                                                if report["channels"]["missing"] else []))
        rows.append(summary_row(night, report, "ok", notes))
    table = pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))
    table.to_csv(stage / "summary.csv", index=False, float_format="%.6g")
    (stage / "summary.md").write_text(summary_markdown(strict(rows)))
    return rows


# ---------------------------------------------------------------------------------------- command line
def report_night(args: argparse.Namespace, runs: Mapping[str, DownstreamModel], device: torch.device,
                 channel_map: ChannelMap = ()) -> int:
    """One EDF (`--edf FILE`): the report set directly in `--out`."""
    try:
        result = predict_night(args.edf, runs, args.xml, device, args.batch_size, args.progress,
                               channel_map=channel_map)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return 2
    report = result["report"]
    if report["channels"]["missing"]:
        print(f"warning: {args.edf}: missing channel(s) {', '.join(report['channels']['missing'])} "
              f"({'; '.join(report['channels']['why_missing'].values())}); predicted with "
              f"{', '.join(report['channels']['present'])}", flush=True)
    for warning in report["warnings"]:
        print(f"warning: {args.edf}: {warning}", flush=True)
    try:
        with staged_folder(Path(args.out)) as stage:
            paths = write_outputs(stage, result)
            save_config(args, stage / "config.json")  # the exact options this prediction ran with
    except OSError as err:
        print(f"error: --out {args.out}: cannot write the report ({one_line(err)})", file=sys.stderr, flush=True)
        return 2
    paths = {key: Path(args.out) / path.name for key, path in paths.items()}
    s = report["sleep"]
    ahi = f", AHI {_fmt(s['ahi_est'])}/h ({s['ahi_severity_name']})" if "ahi_est" in s else ""
    print(f"{report['recording']}: {report['n_epochs']} epochs, TST {_fmt(s['tst_min'])} min, sleep efficiency "
          f"{_fmt(s['sleep_efficiency_pct'])} %{ahi} -> {paths['report_md']}", flush=True)
    return 0


def report_cohort(args: argparse.Namespace, nights: Sequence[NightInput], runs: Mapping[str, DownstreamModel],
                  device: torch.device, channel_map: ChannelMap = ()) -> int:
    """A folder, glob or list of EDFs: `--out/<night>/` per night plus summary.csv / summary.md; exit 1 when a
    night failed."""
    try:
        with staged_folder(Path(args.out)) as stage:
            rows = predict_cohort(nights, runs, stage, device, args.batch_size, args.progress, channel_map)
            save_config(args, stage / "config.json")
    except OSError as err:
        print(f"error: --out {args.out}: cannot write the reports ({one_line(err)})", file=sys.stderr, flush=True)
        return 2
    failed = sum(r["status"] == "failed" for r in rows)
    ok = sum(r["status"] == "ok" for r in rows)
    print(f"{ok} of {len(rows)} night(s) predicted, {failed} failed -> {Path(args.out) / 'summary.md'}", flush=True)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parse_config(parser, argv, required=("checkpoint", "edf", "out"))
    args.edf, args.out = Path(args.edf), Path(args.out)
    try:
        check_out(args.out)
        single = args.edf.is_file() and is_edf(args.edf)
        nights = None if single else night_inputs(args.edf)
        if not single and args.xml is not None:
            raise InputError(f"--xml {args.xml}: one annotation file for several nights; with a folder, glob or list "
                             "each EDF is paired with its own")
        try:
            channel_map = load_channel_map(args.channel_map) if args.channel_map is not None else ()
        except (OSError, ValueError) as err:
            raise InputError(f"--channel-map {args.channel_map}: {one_line(err)}") from None
        device = resolve_device(args.device)
        runs = load_runs({"sleep_stage": args.checkpoint, "apnea": args.apnea, "hypopnea": args.hypopnea}, device)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return 2
    except OSError as err:
        print(f"error: --edf {args.edf}: cannot read ({one_line(err)})", file=sys.stderr, flush=True)
        return 2
    if single:
        return report_night(args, runs, device, channel_map)
    return report_cohort(args, nights, runs, device, channel_map)


if __name__ == "__main__":
    raise SystemExit(main())
