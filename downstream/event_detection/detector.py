"""The event detector of `downstream/event_detection/train.py`: per-second respiratory features of a night, a
per-second classifier, decoding into events, and which predicted hypopneas count under a hypopnea rule.

Kept apart from the script so inference (predict.py) can load a trained detector (`model.pkl`) and run it on a
night: `EventDetector.detect(features)` -> events; `EventDetector.counted(events, features)` -> the apneas and
hypopneas of the AHI. Times are seconds from the recording start; one feature row per second.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from dataset.cohort import recording_path
from dataset.constants import EPOCH_S, RESP_CHANNELS, RESP_FS
from dataset.event_targets import RESPIRATORY_CLASSES, EventTargets, night_targets
from dataset.scored_events import RESPIRATORY_EVENT_TYPES, Event
from utils.events import decode_events
from utils.features import respiratory_features


@dataclass
class Night:
    """One parsed night as the event task reads it."""

    recording_id: str
    subject_id: str
    channels: list[str]  # respiratory channels present
    features: np.ndarray  # (n_seconds, F) float32
    stage: np.ndarray  # (n_epochs,) int8 scored stage (-1 unscored)
    epoch_labels: dict[str, np.ndarray]  # "apnea", "hypopnea": (n_epochs,) int8 midpoint labels (-1 unlabelled)
    targets: EventTargets

    @property
    def n_seconds(self) -> int:
        return int(self.features.shape[0])


def recording_columns(data_dir: str | Path, recording_id: str) -> list[str]:
    """Every column written for a recording (its channels and labels), from its Parquet footer."""
    return pq.ParquetFile(recording_path(data_dir, recording_id)).schema_arrow.names


def present_channels(data_dir: str | Path, recording_id: str) -> list[str]:
    """Respiratory channels written for a recording (from its Parquet footer)."""
    names = recording_columns(data_dir, recording_id)
    return [c for c in RESP_CHANNELS if c in names]


def load_night(
    data_dir: str | Path,
    recording_id: str,
    subject_id: str,
    events,
    manifest_row: dict[str, Any],
    with_features: bool = True,
) -> Night:
    """Read a night's respiratory channels and labels, compute its per-second features and targets.

    `events`: the cohort's events table; `manifest_row`: its manifest row (kept_s, median_spo2, iqr_spo2).
    `with_features=False`: no signal is read and `features` is (n_seconds, 0) (the token methods fill it in)."""
    path = recording_path(data_dir, recording_id)
    channels = present_channels(data_dir, recording_id)
    table = pq.read_table(
        path, columns=[*(channels if with_features else []), "stage", "apnea", "hypopnea"], use_threads=False
    )
    n_epochs = table.num_rows
    n_seconds = n_epochs * EPOCH_S
    if with_features:
        signals = {c: table.column(c).combine_chunks().flatten().to_numpy() for c in channels}  # (n_seconds * 10,)
        scale = (manifest_row.get("median_spo2", math.nan), manifest_row.get("iqr_spo2", math.nan))
        features, _ = respiratory_features(signals, n_seconds, RESP_FS, spo2_scale=scale)
    else:
        features = np.zeros((n_seconds, 0), dtype=np.float32)
    kept_s = float(manifest_row.get("kept_s") or n_seconds)
    targets = night_targets(events, recording_id, min(kept_s, n_seconds))
    labels = {name: table.column(name).to_numpy().astype(np.int8) for name in ("apnea", "hypopnea")}
    return Night(
        recording_id, subject_id, channels, features, table.column("stage").to_numpy().astype(np.int8), labels, targets
    )


def event_summaries(features: np.ndarray, events: list[Event]) -> np.ndarray:
    """One row per event for the hypopnea qualifier: mean feature row over the event's seconds, the row of its
    last second, the row 10 s after its end, and its duration (s): (n_events, 3F + 1) float32."""
    n, width = features.shape
    rows = np.empty((len(events), 3 * width + 1), dtype=np.float32)
    for i, event in enumerate(events):
        first = min(max(int(math.floor(event.onset_s)), 0), n - 1)
        last = min(max(int(math.ceil(event.end_s)) - 1, first), n - 1)
        after = min(last + 10, n - 1)
        with warnings.catch_warnings():  # a column all NaN (a channel the night lacks): NaN, quietly
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = (
                np.nanmean(features[first : last + 1], axis=0)
                if not np.isnan(features[first : last + 1]).all()
                else np.full(width, np.nan)
            )
        rows[i] = np.concatenate([mean, features[last], features[after], [event.duration_s]])
    return rows


@dataclass
class EventDetector:
    """A trained detector: per-second classifier over RESPIRATORY_CLASSES, decoding settings chosen on `val`,
    and a qualifier saying which predicted hypopneas count under `hypopnea_rule`."""

    classifier: Any  # predict_proba((n, F)) -> (n, n_seen_classes), classes_ in RESPIRATORY_CLASSES indices
    feature_names: list[str]
    threshold: float = 0.5
    merge_gap_s: float = 0.0
    min_duration_s: float = 10.0
    hypopnea_rule: str = "3a"
    qualifier: Any = None  # predict_proba on event_summaries -> P(counts); None: `qualifier_constant`
    qualifier_constant: bool = True
    info: dict = field(default_factory=dict)

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        """(n_seconds, 4) probability of each event type (RESPIRATORY_EVENT_TYPES order) per second."""
        out = np.zeros((features.shape[0], len(RESPIRATORY_CLASSES)), dtype=np.float64)
        if features.shape[0]:
            out[:, self.classifier.classes_.astype(np.int64)] = self.classifier.predict_proba(features)
        return out[:, 1:]

    def decode(
        self, probabilities: np.ndarray, threshold: float | None = None, merge_gap_s: float | None = None
    ) -> list[Event]:
        return decode_events(
            probabilities,
            RESPIRATORY_EVENT_TYPES,
            self.threshold if threshold is None else threshold,
            min_duration_s=self.min_duration_s,
            merge_gap_s=self.merge_gap_s if merge_gap_s is None else merge_gap_s,
        )

    def detect(self, features: np.ndarray) -> list[Event]:
        return self.decode(self.probabilities(features))

    def counted(self, events: list[Event], features: np.ndarray) -> list[Event]:
        """The apneas and the hypopneas that count under `hypopnea_rule` (all of them under "all")."""
        hypopneas = [e for e in events if e.type == "hypopnea"]
        keep = {id(e) for e in events if e.type != "hypopnea"}
        if hypopneas:
            if self.hypopnea_rule == "all" or self.qualifier is None:
                counts = np.full(len(hypopneas), self.hypopnea_rule == "all" or self.qualifier_constant)
            else:
                counts = self.qualifier.predict_proba(event_summaries(features, hypopneas))[:, -1] >= 0.5
            keep |= {id(e) for e, c in zip(hypopneas, counts) if c}
        return [e for e in events if id(e) in keep]
