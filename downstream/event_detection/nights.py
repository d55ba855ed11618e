"""The nights of the event task and their per-second targets: every night of train, val and test loaded with
its respiratory features and scored events (`downstream.event_detection.detector.load_night`), the seeded draw of
the labelled train seconds (--label-fraction of the 30-s epochs) that every method shares, and the raw epochs of a
night's backbone channels (the finetune / scratch methods train on them)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from dataset.cohort import read_ok_manifest, recording_path
from dataset.constants import EPOCH_S, RESP_CHANNELS
from dataset.event_targets import read_event_table
from dataset.splits import read_splits
from downstream.event_detection.detector import Night, load_night, present_channels
from downstream.event_detection.head import TrainNight
from utils.config import Config, UsageError, one_line


def load_split_nights(cfg: Config) -> dict[str, list[Night]]:
    """Every night of train, val and test with features (the features method) and targets (UsageError when a
    split has no recording, or, for the features method, when no night has a respiratory channel)."""
    splits = read_splits(cfg.data / "splits.json")["recordings"]
    try:
        manifest = read_ok_manifest(cfg.data)
    except FileNotFoundError:
        raise UsageError(
            f"{cfg.data / 'manifest.parquet'}: no manifest; run dataset/data_parser.py on --data"
        ) from None
    except ValueError as err:
        raise UsageError(str(err)) from None
    try:
        events = read_event_table(cfg.data)
    except (FileNotFoundError, ValueError) as err:
        raise UsageError(str(err)) from None
    wanted = {split: sorted(splits.get(split, [])) for split in ("train", "val", "test")}
    for split, ids in wanted.items():
        if not ids:
            raise UsageError(f"{cfg.data / 'splits.json'}: split {split!r} has no recordings")
    every = sorted({r for ids in wanted.values() for r in ids})
    channels = {}
    for rid in every:
        try:
            channels[rid] = present_channels(cfg.data, rid)
        except (OSError, pa.ArrowException) as err:
            raise UsageError(f"{recording_path(cfg.data, rid)}: unreadable ({one_line(err)})") from None
    with_features = cfg.method == "features"  # the token methods check the backbone's channels instead
    if with_features and not any(channels.values()):
        raise UsageError(
            f"--data {cfg.data}: no recording of train/val/test has a respiratory channel "
            f"({', '.join(RESP_CHANNELS)}); the event task reads them (parse with those channels)"
        )
    lacking = {rid: [c for c in RESP_CHANNELS if c not in found] for rid, found in channels.items()}
    lacking = {rid: missing for rid, missing in lacking.items() if missing}
    if lacking and with_features:
        shown = "; ".join(f"{rid}: {', '.join(m)}" for rid, m in list(lacking.items())[:5])
        print(
            f"warning: {len(lacking)} night(s) lack respiratory channels (their features are NaN): {shown}"
            f"{' ...' if len(lacking) > 5 else ''}",
            flush=True,
        )
    nights: dict[str, list[Night]] = {}
    bar = tqdm(total=len(every), desc="features" if with_features else "labels", unit="night", disable=not cfg.progress)
    for split, ids in wanted.items():
        nights[split] = []
        for rid in ids:
            if rid not in manifest.index:
                raise UsageError(f"{cfg.data / 'manifest.parquet'}: no ok row for recording {rid!r} of splits.json")
            row = manifest.loc[rid].to_dict()
            try:
                night = load_night(cfg.data, rid, str(row.get("subject_id", rid)), events, row, with_features)
            except (OSError, pa.ArrowException) as err:  # damaged after its footer was read
                raise UsageError(f"{recording_path(cfg.data, rid)}: unreadable ({one_line(err)})") from None
            nights[split].append(night)
            bar.update()
    bar.close()
    # a night scored for stages only (a hypnogram) has its event flags -1: no event target, neither "no event"
    unscored = {
        split: [n.recording_id for n in found if (n.epoch_labels["apnea"] < 0).all()] for split, found in nights.items()
    }
    if any(unscored.values()):
        shown = "; ".join(
            f"{split}: {', '.join(ids[:3])}{' ...' if len(ids) > 3 else ''}" for split, ids in unscored.items() if ids
        )
        print(f"note: nights without scored events left out of the event task ({shown})", flush=True)
        nights = {split: [n for n in found if n.recording_id not in unscored[split]] for split, found in nights.items()}
        for split, found in nights.items():
            if not found:
                raise UsageError(f"{cfg.data}: no night of split {split!r} has scored respiratory events")
    return nights


def drawn_seconds(
    nights: list[Night], label_fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """The labelled train seconds: a seeded `label_fraction` of the 30-s epochs of all nights, every second of a
    drawn epoch, as sorted global second indices (nights in order), and the nights' first epoch indices (n + 1,)."""
    offsets = np.cumsum([0] + [n.n_seconds // EPOCH_S for n in nights])  # epoch index ranges per night
    total = int(offsets[-1])
    drawn = np.sort(rng.choice(total, size=max(1, int(round(label_fraction * total))), replace=False))
    return (drawn[:, None] * EPOCH_S + np.arange(EPOCH_S)[None, :]).reshape(-1), offsets  # global second index


def training_seconds(
    nights: list[Night], label_fraction: float, max_seconds: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Features (N, F) and classes (N,) of the train seconds: a seeded `label_fraction` of the 30-s epochs of
    all nights (every second of a drawn epoch), then at most `max_seconds` of those seconds (seeded)."""
    rng = np.random.default_rng(seed)
    seconds, offsets = drawn_seconds(nights, label_fraction, rng)
    if seconds.size > max_seconds:
        seconds = np.sort(rng.choice(seconds, size=max_seconds, replace=False))
    night_of = np.searchsorted(offsets * EPOCH_S, seconds, side="right") - 1
    features, labels = [], []
    for i, night in enumerate(nights):
        local = seconds[night_of == i] - offsets[i] * EPOCH_S
        features.append(night.features[local])
        labels.append(
            night.targets.respiratory[np.minimum(local, night.targets.n_seconds - 1)]
            if night.targets.n_seconds
            else np.zeros(local.size, np.int8)
        )
    return np.concatenate(features), np.concatenate(labels).astype(np.int64)


def labelled_train_nights(nights: list[Night], label_fraction: float, seed: int) -> list[TrainNight]:
    """Per-second classes of the train nights with -1 outside the drawn epochs (`drawn_seconds`, the features
    method's draw) and past the scored signal."""
    seconds, offsets = drawn_seconds(nights, label_fraction, np.random.default_rng(seed))
    out = []
    for i, night in enumerate(nights):
        local = seconds[(seconds >= offsets[i] * EPOCH_S) & (seconds < offsets[i + 1] * EPOCH_S)] - offsets[i] * EPOCH_S
        local = local[local < night.targets.n_seconds]
        labels = np.full(night.n_seconds, -1, dtype=np.int64)
        labels[local] = night.targets.respiratory[local]
        out.append(TrainNight(night.n_seconds, labels))
    return out


def read_signals(data_dir: Path, recording_id: str, channels: list[str]) -> dict[str, np.ndarray]:
    """{channel: (n_epochs, samples) float32} of a night's backbone channels, robust-scaled as parsed."""
    table = pq.read_table(recording_path(data_dir, recording_id), columns=channels, use_threads=False)
    return {
        c: table.column(c).combine_chunks().flatten().to_numpy().reshape(table.num_rows, -1).astype(np.float32)
        for c in channels
    }
