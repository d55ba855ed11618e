"""Loading and predicting one night (`downstream/predict.py`): the runs, the night's processing in memory, the
per-epoch models over the whole recording, and the scoring it may be compared with.

Each backbone encodes a night once for every task model that uses it (runs whose encoders hold the same weights
and read the same channels share one encoding; probes of one backbone file share one module,
`downstream.backbone.shared_encoder`); every model predicts every epoch exactly once (fine-tuned temporal runs:
the evaluation tiling, `dataset.tiling.Tiling`, as `SequenceDataset(tiling=True)` gives it; probes: per epoch).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from dataset.annotations import first_sample_s, read_annotations, start_date
from dataset.channel_map import ChannelMap, looked_for
from dataset.constants import CHANNEL_BY_NAME, EPOCH_S, LABEL_EVENT_COLUMNS, STAGE_UNSCORED, TASKS
from dataset.edf_reader import EdfError, read_edf_header
from dataset.labels import epoch_labels, labels_frame, night_summary
from dataset.signal_processing import ProcessingConfig, scoring_past_signal
from dataset.tiling import Tiling
from downstream.cache import RecordingVectors, VectorStore, neighbour_vectors, night_normalised, predict_tiles
from downstream.predictions import epochwise, predict_windows
from downstream.runs import PROCESSING_KEYS, DownstreamModel, load_downstream_run
from models.heads import PER_CHANNEL_POOLINGS
from models.loading import TEMPORAL_CLASSIFIER
from utils.config import one_line  # noqa: F401 - re-exported for the inference modules

EVENT_TASKS: tuple[str, ...] = ("apnea", "hypopnea")  # the per-epoch event runs
PROBE_WINDOW = 32  # epochs per window when a per-epoch model runs through the tiling (any size gives the same)


class InputError(Exception):
    """Bad input (file, checkpoint or channels): reported as one `error:` line, exit code 2."""


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
            raise InputError(f"{model.checkpoint}: a run of task {model.task}, but {option} expects one of task {task}")
        model.model.to(device).eval()
        loaded[task] = model
    return loaded


def run_validation(run: DownstreamModel) -> dict[str, Any]:
    """The `val` metrics a run recorded when its checkpoint was selected (metrics.json `selection.val`:
    val_kappa, val_macro_f1, val_auroc, ...), with the selection metric; {} when the run has no metrics.json."""
    path = Path(run.checkpoint).parent / "metrics.json"
    try:
        selection = json.loads(path.read_text()).get("selection") or {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return {}
    return {**(selection.get("val") or {}), "selected_by": selection.get("metric")}


# ---------------------------------------------------------------------------------------- prediction
class NightWindows(Dataset):
    """In-memory tiling windows of one night, items as `SequenceDataset(tiling=True)` gives them (no label):
    {"recording", "start_epoch", <channel>: (T, n_samples) float32 zero-padded, "valid", "epoch_ids", "owned"}."""

    tiling = True

    def __init__(
        self, recording: str, epochs: Mapping[str, np.ndarray], epochs_per_window: int, stride: int | None = None
    ):
        self.split = recording  # predict_windows' progress label
        self.recording, self.epochs, self.size = recording, dict(epochs), int(epochs_per_window)
        self.n_epochs = int(next(iter(self.epochs.values())).shape[0])
        self.windows = Tiling.covering(self.n_epochs, self.size, stride)

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        window = self.windows[index]
        item: dict[str, Any] = {"recording": self.recording, "start_epoch": window.start}
        for name, array in self.epochs.items():
            item[name] = torch.from_numpy(window.take(array, 0.0, np.float32))  # (T, 3000) at 100 Hz, zero padding
        item["valid"] = torch.from_numpy(window.valid)
        item["epoch_ids"] = torch.from_numpy(window.take(np.arange(self.n_epochs), -1, np.int64))  # (T,) -1 at padding
        item["owned"] = torch.from_numpy(window.owned)
        return item


def predict_task(
    run: DownstreamModel,
    epochs: Mapping[str, np.ndarray],
    recording: str,
    device: torch.device,
    batch_size: int = 64,
    progress: bool = False,
) -> np.ndarray:
    """Class probabilities (n_epochs, C) float32 of one night, every epoch predicted exactly once.

    `epochs`: {channel: (n_epochs, 3000)} robust-scaled epochs at 100 Hz; only the run's channels found there are
    used (a SynthSleepNet drops the others from its fusion input)."""
    channels = [ch for ch in run.channels if ch in epochs]
    n_classes = TASKS[run.task]
    temporal = run.kind == TEMPORAL_CLASSIFIER
    size = int(run.epochs_per_window) if temporal else PROBE_WINDOW
    windows = NightWindows(recording, {ch: epochs[ch] for ch in channels}, size, run.eval_stride)

    def classify(signals: Mapping[str, torch.Tensor]) -> torch.Tensor:
        inputs = {ch: x.to(device) for ch, x in signals.items()}  # (B, [T,] 3000) per channel
        return run.model(inputs).float().softmax(dim=-1).cpu()  # (B, [T,] C)

    def classify_windows(batch: Mapping[str, Any]) -> torch.Tensor:
        inputs = {ch: batch[ch].to(device) for ch in channels}  # (B, T, 3000) per channel
        return run.model(inputs, valid=batch["valid"].to(device)).float().softmax(dim=-1).cpu()  # (B, T, C)

    predict_batch = classify_windows if temporal else epochwise(classify, channels)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"SynthSleepNet.encode: channel")  # reported by the caller
        predictions = predict_windows(windows, predict_batch, n_classes, max(1, batch_size // size), progress=progress)
    if not np.array_equal(predictions.epoch, np.arange(windows.n_epochs)):
        raise RuntimeError(f"{recording}: the tiling did not predict every epoch exactly once")
    return predictions.probabilities.astype(np.float32)  # (n_epochs, C), rows in epoch order


def encoder_identity(run: DownstreamModel, channels: Sequence[str]) -> str:
    """What a run's per-epoch encoder computes: SHA-256 of its weights (names, shapes, values), the channels it
    reads and how it pools them. Probes on one backbone checkpoint (channels, pooling) share it, so the night is
    encoded once for them."""
    pooling = getattr(run.model.encoder, "pooling", "mean")
    digest = hashlib.sha256(json.dumps([list(channels), pooling]).encode())
    for name, tensor in sorted(run.model.encoder.state_dict().items()):
        value = tensor.detach().cpu().contiguous().reshape(-1)  # 0-d buffers (BatchNorm counters) as 1-d
        digest.update(f"{name}:{value.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(value.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def share_encoders(runs: Mapping[str, DownstreamModel]) -> dict[str, str]:
    """task -> encoder identity (`encoder_identity` over all of the run's channels); runs with the same identity
    are made to hold the same encoder module (loaded once in memory). Runs without a separate encoder are left
    out (predicted end to end)."""
    identities, first, hashed = {}, {}, {}
    for task, run in runs.items():
        if not (hasattr(run.model, "encoder") and hasattr(run.model, "head")):
            continue
        key = (id(run.model.encoder), tuple(run.channels))  # one module (`shared_encoder`): hashed once
        if key not in hashed:
            hashed[key] = encoder_identity(run, run.channels)
        identities[task] = identity = hashed[key]
        if identity in first:
            run.model.encoder = first[identity]
        first.setdefault(identity, run.model.encoder)
    return identities


@torch.no_grad()
def encode_night(
    encoder: torch.nn.Module,
    epochs: Mapping[str, np.ndarray],
    channels: Sequence[str],
    device: torch.device,
    batch_size: int = 64,
    progress: bool = False,
) -> np.ndarray:
    """Per-epoch vectors (n_epochs, D) float32 of a night through one frozen encoder, each epoch exactly once."""
    n_epochs = int(next(iter(epochs.values())).shape[0])
    parts = []
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"SynthSleepNet.encode: channel")  # reported by the caller
        for first in tqdm(
            range(0, n_epochs, batch_size), desc="encode", unit="batch", leave=False, disable=not progress
        ):
            signals = {
                ch: torch.from_numpy(epochs[ch][first : first + batch_size]).to(device) for ch in channels
            }  # (b, 3000) per channel at 100 Hz, robust-scaled
            parts.append(encoder(signals).float().cpu().numpy())  # (b, D)
    return np.concatenate(parts)


@torch.no_grad()
def classify_vectors(
    run: DownstreamModel, vectors: np.ndarray, recording: str, device: torch.device, batch_size: int = 64
) -> np.ndarray:
    """Class probabilities (n_epochs, C) float32 from a night's encoder vectors (n_epochs, D): per-epoch models
    apply their head (to each epoch's vector with its neighbours' when the head reads context); temporal
    models see the deterministic tiling of `SequenceDataset(tiling=True)` with the run's evaluation stride (every
    epoch owned by exactly one window)."""
    n_classes, n_epochs = TASKS[run.task], vectors.shape[0]
    if run.kind != TEMPORAL_CLASSIFIER:
        vectors = night_normalised(vectors, run.model.head.night_norm)  # as the probe's night was, if at all
        vectors = neighbour_vectors(vectors, run.model.head.neighbour_epochs)  # (n, (2K + 1) D): a probe's context
        logits = [
            run.model.head(torch.from_numpy(vectors[k : k + batch_size]).to(device)).float().cpu()
            for k in range(0, n_epochs, batch_size)
        ]  # (b, C) each
        return torch.cat(logits).softmax(dim=-1).numpy().astype(np.float32)
    size = int(run.epochs_per_window)
    store = VectorStore({recording: RecordingVectors(np.arange(n_epochs, dtype=np.int64), vectors)})
    predictions = predict_tiles(
        store,
        [recording],
        size,
        lambda x, valid: run.model.classify_vectors(x.to(device), valid.to(device)).float().softmax(dim=-1).cpu(),
        {},
        n_classes,
        max(1, batch_size // size),
        run.eval_stride,
    )  # windows (B, T, D) -> (B, T, C)
    if not np.array_equal(predictions.epoch, np.arange(n_epochs)):
        raise RuntimeError(f"{recording}: the tiling did not predict every epoch exactly once")
    return predictions.probabilities.astype(np.float32)


def predict_all(
    runs: Mapping[str, DownstreamModel],
    epochs: Mapping[str, np.ndarray],
    recording: str,
    device: torch.device,
    batch_size: int = 64,
    progress: bool = False,
    identities: Mapping[str, str] | None = None,
) -> dict[str, np.ndarray]:
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
    """Time of the recording's first sample: the EDF header's start (`dataset.annotations.start_date`: an EDF+
    "Startdate dd-MMM-yyyy", else dd.mm.yy with EDF years 85-99 as 19xx; hh.mm.ss)
    plus, in EDF+, the first data record's time-keeping onset (a sub-second start, or records that begin later
    than the header's time: `dataset.annotations.first_sample_s`); None if unreadable. An unreadable date alone
    gives 1985-01-01 (the EDF "unknown" date) with the clock time."""
    try:
        header = read_edf_header(edf_path)
        clock = datetime.datetime.strptime(header.starttime, "%H.%M.%S").time()
        offset = datetime.timedelta(seconds=first_sample_s(header))
    except (EdfError, ValueError, OverflowError):  # a first record dated beyond what a timedelta holds
        return None
    date = start_date(header) or datetime.date(1985, 1, 1)
    try:
        return datetime.datetime.combine(date, clock) + offset
    except OverflowError:  # a first record dated past the year 9999
        return None


def night_processing(
    runs: Mapping[str, DownstreamModel], event_run: Any = None, channel_map: ChannelMap = ()
) -> ProcessingConfig:
    """How to process a new night for these models: as their cohorts were (band-passes, filter, resampling, flat
    and clipped-channel rules, recorded with each run; the parser's defaults for a run trained before that was
    recorded), with `channel_map`. Cohorts parsed with other channel sets agree when every channel they share
    has the same band; the night gets each channel's band from whichever cohort had it. InputError when two
    models' cohorts were processed differently: a night is processed once, so one of them would read other
    signals than it learnt from."""
    default = {k: v for k, v in ProcessingConfig().as_dict().items() if k in PROCESSING_KEYS}
    settings = {task: run.processing or default for task, run in runs.items()}
    if event_run is not None:
        settings["events"] = event_run.processing or default
    merged: dict[str, Any] = {}  # "band of <channel>" or a setting's name -> (value, the model it came from)
    for task, processing in settings.items():
        values = {f"band of {ch}": list(b) if b else None for ch, b in (processing.get("bands") or {}).items()}
        values.update({k: processing[k] for k in PROCESSING_KEYS if k != "bands" and k in processing})
        for what, value in values.items():
            if what in merged and merged[what][0] != value:
                raise InputError(
                    f"the models were trained on cohorts processed differently (the {what}: {merged[what][0]} for "
                    f"{merged[what][1]}, {value} for {task}); a night is processed once: give models of one "
                    "processing"
                )
            merged.setdefault(what, (value, task))
    bands = tuple(
        (what.removeprefix("band of "), tuple(v) if v else None)
        for what, (v, _) in merged.items()
        if what.startswith("band of ")
    )
    options = {what: v for what, (v, _) in merged.items() if not what.startswith("band of ") and v is not None}
    try:
        return ProcessingConfig(bands=bands, channel_map=channel_map, **options)
    except (TypeError, ValueError) as err:
        raise InputError(f"the processing recorded with the models is not usable ({err})") from None


def clock_times(edf_path: Path, n_epochs: int) -> list[str]:
    """HH:MM:SS clock time of each epoch start from the EDF header's start time ("" if unreadable)."""
    return clock_times_at(edf_path, [k * EPOCH_S for k in range(n_epochs)])


def clock_times_at(edf_path: Path, seconds: Sequence[float]) -> list[str]:
    """HH:MM:SS clock time of each of `seconds` after the recording start (fractions of a second dropped; "" if
    the EDF header's start time is unreadable)."""
    start = recording_start(edf_path)
    if start is None:
        return [""] * len(seconds)
    return [(start + datetime.timedelta(seconds=float(t))).strftime("%H:%M:%S") for t in seconds]


def channel_report(
    runs: Mapping[str, DownstreamModel],
    epochs: Mapping[str, np.ndarray],
    info: Mapping[str, Any],
    edf_path: Path,
    event_run: Any = None,
    channel_map: ChannelMap = (),
) -> dict[str, Any]:
    """Which wanted channels each model (and the event model, `event_run`) uses and which the night lacks;
    InputError if a per-epoch model has none, naming for each of its channels why it was dropped (flat,
    clipped, ...) or every label tried for it (`channel_map` first, as the night was read)."""
    dropped = {part.split(" ", 1)[0]: part for part in str(info.get("dropped_channels") or "").split("; ") if part}

    def reason(channel: str) -> str:
        """Why `channel` is not usable, without its name: the parser's reason ("'C4-M1' flat: IQR ...") or the
        labels tried."""
        if channel in dropped:
            part = dropped[channel]
            inner = part.removeprefix(f"{channel} (")
            return inner[:-1] if inner != part and inner.endswith(")") else part
        labels = read_edf_header(edf_path).labels
        tried = dict.fromkeys(looked_for(channel, channel_map, edf_path.stem, labels))
        return f"no label matches (tried {', '.join(tried)})"

    def why_unusable(channels: Sequence[str]) -> str:
        return "; ".join(dropped.get(ch) or f"{ch}: {reason(ch)}" for ch in channels)

    models, missing_all = {}, []
    for task, run in runs.items():
        used = [ch for ch in run.channels if ch in epochs]
        missing = [ch for ch in run.channels if ch not in epochs]
        if not used:
            raise InputError(
                f"{edf_path}: none of the channels the {task} model needs is usable ({why_unusable(run.channels)})"
            )
        pooling = getattr(getattr(run.model, "encoder", None), "pooling", "mean")
        if missing and pooling in PER_CHANNEL_POOLINGS:
            raise InputError(
                f"{edf_path}: the {task} model keeps each channel apart (--pooling {pooling}) and needs all of "
                f"{', '.join(run.channels)}; unusable here: {why_unusable(missing)}"
            )
        models[task] = {
            "checkpoint": run.checkpoint,
            "kind": run.kind,
            "channels": list(run.channels),
            "used": used,
            "missing": missing,
            "epochs_per_window": run.epochs_per_window if run.kind == TEMPORAL_CLASSIFIER else None,
            "eval_stride": run.eval_stride,
        }
        missing_all += [ch for ch in missing if ch not in missing_all]
    if event_run is not None:  # an event model reads what it finds; the report flags what it lacks
        models["events"] = {
            "checkpoint": str(event_run.path),
            "kind": f"event_detection ({event_run.method})",
            "channels": list(event_run.channels),
            "used": [ch for ch in event_run.channels if ch in epochs],
            "missing": [ch for ch in event_run.channels if ch not in epochs],
            "epochs_per_window": None,
            "eval_stride": None,
        }
        missing_all += [ch for ch in models["events"]["missing"] if ch not in missing_all]
    sources = dict(part.split(":", 1) for part in str(info.get("channel_sources") or "").split(";") if ":" in part)
    order = list(CHANNEL_BY_NAME)
    user_map = [ch for ch in str(info.get("channel_map_channels") or "").split(",") if ch]
    return {
        "models": models,
        "missing": missing_all,
        "present": sorted(epochs, key=order.index),
        "why_missing": {ch: reason(ch) for ch in missing_all},
        "sources": {ch: sources.get(ch, "") for ch in sorted(epochs, key=order.index)},
        "user_map": user_map,
        # a --channel-map entry that matched no label of this night: the channel came from the built-in tables (or
        # is missing), which the user, who named a label, must be told
        "user_map_unmatched": [ch for ch, labels in channel_map if labels and ch not in user_map],
    }


def scored_labels(
    xml_path: Path, edf_path: Path, n_epochs: int, signal_s: float
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Labels of the whole night's `n_epochs` from its annotation file (NSRR XML or any format the parser reads,
    `dataset.annotations.read_annotations`; `dataset.labels.epoch_labels`), -1 after the scored part (epochs past
    min(signal, scoring) as the parser trims), and the parser's manifest numbers of the scored part
    (`ahi_scored`, `tst_min`, ...) with `scoring_warnings`, the parser's notes of this scoring. Raises XmlError /
    EdfError."""
    annotations = read_annotations(xml_path, read_edf_header(edf_path))
    scored_s = annotations.scored_s or signal_s  # no stage event: nothing scored, the whole signal kept
    n_scored = min(n_epochs, int(math.floor(min(signal_s, scored_s) / EPOCH_S + 1e-9)))
    labels = epoch_labels(annotations, n_epochs)
    for name in ("stage", *LABEL_EVENT_COLUMNS):
        labels[name][n_scored:] = STAGE_UNSCORED  # not scored: never compared
    summary = night_summary(epoch_labels(annotations, n_scored), annotations.events, n_scored * float(EPOCH_S))
    # what the parser would note of this scoring (another night's, a start taken across midnight, ...)
    notes = [*annotations.warnings, *scoring_past_signal(annotations, signal_s)]
    return labels_frame(labels), {
        **summary,
        "scored_s": scored_s,
        "scored_part_epochs": n_scored,
        "scoring_warnings": notes,
    }
