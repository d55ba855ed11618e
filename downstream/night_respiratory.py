"""Respiratory findings of one predicted night (`downstream/predict.py`): the event model's events and AHI, the
SpO2 signal's indices, latency to persistent sleep, and how far the estimates can be trusted.

Rules (docs/evaluation.md, "Events"; stated again in report.md):
- Event model (`--events`, a `downstream/event_detection/train.py` run): per-second respiratory features of the
  night (`utils.features.respiratory_features` on the night's airflow, thor, abdo and SpO2 as the parser
  processes them) -> events with onset, duration, type and probability (`EventDetector.detect`); `counted`
  says whether an event counts under the model's hypopnea rule (every apnea; a hypopnea when the model's
  qualifier says so, `EventDetector.counted`).
- AHI = counted events whose ONSET lies in a PREDICTED sleep epoch, per hour of predicted sleep; REM / NREM
  AHI: the same within predicted REM / NREM epochs per hour of each (`utils.ahi.event_summary`).
- SpO2 in %: the parser's robust scaling undone with the night's median and IQR (`median_spo2`, `iqr_spo2`);
  one value per second (mean of its samples, which the parser holds at the oximeter's readings); a second with
  any sample outside 50-100 % is an artefact (e.g. a probe-off 0 %) and left out whole. Thresholds in % are
  compared with a tolerance of `SPO2_TOLERANCE_PCT` (the EDF's digital steps, the float32 storage).
- Desaturation (the ODI rule): baseline at second t = the `SPO2_BASELINE_PERCENTILE`th percentile of the SpO2
  over the preceding 120 s (t excluded; artefact seconds interpolated), the SpO2 baseline the event model's
  features use; a desaturation is a run of >= 10 s of valid seconds each >= 3 % below its baseline (a whole-
  percent 95 -> 92 % counts). ODI = desaturations whose onset lies in predicted sleep, per hour of VALID SpO2 in
  predicted sleep (artefact seconds can hold no desaturation, so they leave the denominator too); `odi` by the
  3 % rule, `odi_4` by the same rule at 4 %.
- SpO2 mean, minimum and minutes below 90 %: over the valid seconds of predicted sleep epochs.
- Latency to persistent sleep: from the recording start to the first epoch of the first 10 min (20
  consecutive 30-s epochs) of predicted sleep; NaN when the night never has 10 min of unbroken sleep.
- A night without airflow, or whose airflow carries no signal in any epoch of predicted sleep, gets no AHI
  (`withhold_reason`, `withheld`, `WITHHOLD_WITHOUT`): no apnea or hypopnea is scored without
  a flow signal (AASM), and the event model's trees read the missing features as "no event", so the index would
  be a confident 0. The indices are NaN, the severity "not estimated", and the reason is given; `predict.py`
  lists, exports and counts no apnea or hypopnea for such a night (desaturations stay). A night that
  lacks another channel the model reads (an effort belt, SpO2) keeps its estimate, flagged UNRELIABLE.
- Reliability (`assess_reliability`): the AHI estimate is UNRELIABLE when it comes from runs of positive epochs
  (times a calibration factor) instead of an event model, when the night lacks a respiratory channel the event
  model reads, when valid SpO2 covers less than `MIN_SPO2_SLEEP_FRACTION` of predicted sleep (the model's
  desaturation input is missing there) or the airflow carries a signal over less than `MIN_FLOW_SLEEP_FRACTION`
  of it (`signal_loss`: stretches of 3 min or more with next to no flow or no breathing rhythm, a cannula off;
  the report warns about any such stretch), when an effort belt carries a signal over less than `MIN_EFFORT_SLEEP_FRACTION` of it (the
  same rule: a belt off; `effort_loss`), when the night has less than `MIN_SLEEP_MIN` of predicted sleep (an
  index per hour extrapolated six times or more: 0.5 min of sleep and one apnea read "120.0, severe"; between
  that and `CLINICAL_SLEEP_MIN` the report notes how little sleep the index rests on), when the staging
  model's validation kappa is below `STAGING_KAPPA_MIN`, the night lacks a channel the staging model reads or
  one is flat (lead-off) over more than `MAX_STAGING_LEAD_OFF_FRACTION` of the night,
  when the event model's validation event F1 (apnea or hypopnea) is below `EVENT_F1_MIN`, or its validation AHI
  severity kappa below `SEVERITY_KAPPA_MIN` or measured on fewer than `MIN_VALIDATION_NIGHTS` nights, or when a
  validation number is not there to check.
"""

from __future__ import annotations

import json
import math
import pickle
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dataset.constants import EPOCH_S, RESP_CHANNELS, RESP_FS
from dataset.scored_events import Event
from downstream.event_detection.detector import EventDetector
from downstream.night_inference import InputError, one_line
from utils.ahi import MIN_AGREEMENT_NIGHTS, SEVERITY_UNKNOWN
from utils.events import sleep_epochs_of
from utils.features import (
    SPO2_BASELINE_PERCENTILE,
    SPO2_TOLERANCE_PCT,
    _past_percentile,
    fill_artefacts,
    respiratory_features,
    spo2_seconds,
)
from utils.metrics import event_runs
from utils.sleep_stats import SLEEP_STAGES

DESAT_DROP_PCT = 3.0  # a desaturation: SpO2 at least this far below its baseline ...
ODI_4_DROP_PCT = 4.0  # ... or this far, for the ODI at 4 % (`odi_4`) ...
DESAT_MIN_S = 10  # ... for at least this many consecutive seconds
DESAT_BASELINE_S = 120  # baseline: the preceding 120 s
SPO2_LOW_PCT = 90.0  # minutes below this are reported
PERSISTENT_SLEEP_EPOCHS = 20  # 10 min of consecutive sleep epochs
EVENT_F1_MIN = 0.5  # validation event F1 (apnea and hypopnea) below this: unreliable
SEVERITY_KAPPA_MIN = 0.6  # validation AHI severity kappa below this: unreliable
STAGING_KAPPA_MIN = 0.6  # staging validation kappa below this: unreliable (the AHI's hours of sleep)
MIN_VALIDATION_NIGHTS = MIN_AGREEMENT_NIGHTS  # severity kappa from fewer validation nights says little
MIN_SLEEP_MIN = 10.0  # less predicted sleep than this (minutes, 20 epochs): unreliable
CLINICAL_SLEEP_MIN = 120.0  # less than this: the report notes it (AASM split-night and Medicare ask for 2 h of sleep)
MIN_SPO2_SLEEP_FRACTION = 0.5  # valid SpO2 over less of predicted sleep than this: unreliable
FLOW_LOSS_FRACTION = 0.02  # an epoch whose airflow range is below this share of the night's breathing range ...
FLOW_REFERENCE_PERCENTILE = 95  # ... (this percentile of the epochs' ranges: a real one while 5 % of epochs breathe)
FLOW_LOSS_MIN_EPOCHS = 6  # ... in a stretch of 3 min or more carries no flow signal (a cannula off; no apnea lasts so)
BREATHING_RATES_HZ = (0.1, 1.5)  # breathing at 6 to 90 a minute (adults to infants) ...
RHYTHM_HALF_WIDTH_HZ = 0.1  # ... puts its power in a band this wide on either side of its rate (a rate that wanders)
RHYTHM_SHARE_MIN = 0.25  # an epoch with less of its power (above 0.05 Hz) in any such band has no breathing rhythm
MAX_STAGING_LEAD_OFF_FRACTION = 0.2  # a staging channel flat (lead-off) over more of the night than this: unreliable
MIN_FLOW_SLEEP_FRACTION = 0.8  # airflow signal over less of predicted sleep than this: unreliable
MIN_EFFORT_SLEEP_FRACTION = 0.8  # an effort belt's signal over less of predicted sleep than this: unreliable
EFFORT_CHANNELS = ("thor", "abdo")
SPO2_LOST = "the event model's desaturation input is missing there"
FLOW_LOST = "no apnea or hypopnea can be seen where it is lost, yet those hours count in the index"
EFFORT_LOST = "the event model's effort input is missing there"
WITHHELD_INDICES = ("ahi", "ahi_rem", "ahi_nrem", "apnea_index", "hypopnea_index")
WITHHOLD_WITHOUT = ("airflow",)  # a night lacking one of these gets no AHI at all
THRESHOLDS = {
    "event_f1_min": EVENT_F1_MIN,
    "severity_kappa_min": SEVERITY_KAPPA_MIN,
    "staging_kappa_min": STAGING_KAPPA_MIN,
    "min_validation_nights": MIN_VALIDATION_NIGHTS,
    "min_sleep_min": MIN_SLEEP_MIN,
    "min_spo2_sleep_fraction": MIN_SPO2_SLEEP_FRACTION,
    "min_flow_sleep_fraction": MIN_FLOW_SLEEP_FRACTION,
    "min_effort_sleep_fraction": MIN_EFFORT_SLEEP_FRACTION,
    "max_staging_lead_off_fraction": MAX_STAGING_LEAD_OFF_FRACTION,
}
EVENT_METHODS = ("features",)  # event-model methods predict.py runs (token methods need their backbone's tokens)


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


# ---------------------------------------------------------------------------------------- event model
@dataclass
class EventRun:
    """A trained event model (`downstream/event_detection/train.py` run) ready for a night."""

    detector: EventDetector
    path: Path  # the run directory
    method: str
    hypopnea_rule: str
    channels: list[str]  # respiratory channels its features read
    validation: dict = field(default_factory=dict)  # val metrics of its metrics.json (event_validation)
    processing: dict | None = None  # how its cohort was processed (`downstream.runs.cohort_processing`)


def event_validation(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The `val` numbers of an event run's metrics.json that say how far its estimates hold: event F1 per
    family, AHI ICC and severity kappa, and on how many nights."""
    val = metrics.get("val") or {}
    events, agreement = val.get("events") or {}, (val.get("ahi") or {}).get("agreement") or {}
    return {
        "split": "val",
        "n_nights": val.get("n_recordings"),
        "event_f1_apnea": _number((events.get("apnea") or {}).get("f1")),
        "event_f1_hypopnea": _number((events.get("hypopnea") or {}).get("f1")),
        "ahi_icc": _number(agreement.get("icc_2_1")),
        "ahi_severity_kappa": _number(agreement.get("severity_kappa")),
        "ahi_n": agreement.get("n"),
    }


def load_event_run(run: str | Path) -> EventRun:
    """The event model of a run directory (model.pkl, metrics.json) or its model.pkl; InputError if unusable."""
    run = Path(run)
    path = run / "model.pkl" if run.is_dir() else run
    folder = path.parent
    try:
        detector = pickle.loads(path.read_bytes())
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError, ValueError, TypeError) as err:
        raise InputError(f"--events {run}: cannot load the event model ({one_line(err)})") from None
    if not isinstance(detector, EventDetector):
        raise InputError(f"--events {path}: not an event_detection model ({type(detector).__name__})")
    metrics: dict[str, Any] = {}
    if (folder / "metrics.json").is_file():
        try:
            metrics = json.loads((folder / "metrics.json").read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise InputError(f"--events {folder / 'metrics.json'}: unreadable ({one_line(err)})") from None
    method = str((detector.info or {}).get("method") or metrics.get("method") or "features")
    if method not in EVENT_METHODS:
        raise InputError(
            f"--events {run}: a --method {method} event model; predict.py runs {', '.join(EVENT_METHODS)} event models"
        )
    processing = (detector.info or {}).get("processing") or metrics.get("processing")
    return EventRun(
        detector, folder, method, detector.hypopnea_rule, list(RESP_CHANNELS), event_validation(metrics), processing
    )


def detect_night_events(
    run: EventRun, epochs: Mapping[str, np.ndarray], info: Mapping[str, Any]
) -> tuple[list[Event], list[bool]]:
    """The event model's events of a night and whether each counts under its hypopnea rule. `epochs`: the
    night's channels as processed (respiratory ones (n_epochs, 300) at 10 Hz, robust-scaled); `info`: its
    processing record (median / IQR of the SpO2)."""
    n_epochs = int(info["n_epochs"])
    signals = {ch: epochs[ch].reshape(-1) for ch in run.channels if ch in epochs}  # (n_seconds * 10,)
    scale = (_number(info.get("median_spo2")), _number(info.get("iqr_spo2")))
    features, _ = respiratory_features(signals, n_epochs * EPOCH_S, RESP_FS, spo2_scale=scale)
    events = run.detector.detect(features)
    counted = {id(e) for e in run.detector.counted(events, features)}
    return events, [id(e) in counted for e in events]


# ---------------------------------------------------------------------------------------- SpO2
def spo2_percent(scaled: np.ndarray, median: float, iqr: float, fs: int = RESP_FS) -> np.ndarray:
    """Per-second SpO2 in % (n_seconds,) float64 from the parser's robust-scaled signal (n_seconds * fs,):
    x * IQR + median, then `utils.features.spo2_seconds` (NaN for artefact seconds)."""
    n_seconds = int(np.size(scaled) // fs)
    return spo2_seconds(np.asarray(scaled, dtype=np.float64) * iqr + median, fs, n_seconds)


def desaturations(spo2: np.ndarray, drop_pct: float = DESAT_DROP_PCT, min_s: int = DESAT_MIN_S) -> list[Event]:
    """Desaturations of a per-second SpO2 trace in % (NaN = artefact), by the module's ODI rule: runs of at
    least `min_s` valid seconds each at least `drop_pct` below the baseline (`SPO2_BASELINE_PERCENTILE`th
    percentile of the preceding `DESAT_BASELINE_S` s). Each event's `drop_pct` = baseline at onset - nadir."""
    return desaturations_by_drop(spo2, (drop_pct,), min_s)[drop_pct]


def desaturations_by_drop(
    spo2: np.ndarray, drops: Sequence[float], min_s: int = DESAT_MIN_S
) -> dict[float, list[Event]]:
    """`desaturations` at each drop of `drops`, the night's baseline computed once."""
    level = np.asarray(spo2, dtype=np.float64)
    valid = np.isfinite(level)
    if valid.sum() < 2:
        return {drop: [] for drop in drops}
    filled = fill_artefacts(level)  # artefacts interpolated for the baseline only
    baseline = _past_percentile(filled, SPO2_BASELINE_PERCENTILE, DESAT_BASELINE_S)

    def runs(drop: float) -> list[Event]:
        low = valid & (filled <= baseline - drop + SPO2_TOLERANCE_PCT)
        return [
            Event(
                float(start),
                float(length),
                "desaturation",
                drop_pct=float(baseline[start] - np.min(filled[start : start + length])),
            )
            for start, length in event_runs(low.astype(np.int8), min_s)
        ]

    return {drop: runs(drop) for drop in drops}


def oximetry_summary(spo2: np.ndarray, stages: np.ndarray) -> tuple[dict[str, Any], list[Event]]:
    """ODI (3 % and 4 %), SpO2 mean / minimum / minutes below 90 % over predicted sleep, the share of predicted
    sleep with valid SpO2 (`reliable`: at least `MIN_SPO2_SLEEP_FRACTION`), and the 3 % desaturations (module
    docstring)."""
    stages = np.asarray(stages)
    sleep = np.isin(stages, SLEEP_STAGES)
    asleep = sleep_epochs_of(np.arange(spo2.size) + 0.5, sleep) & np.isfinite(spo2)
    values = spo2[asleep]
    valid_h = values.size / 3600.0

    def in_sleep(events: list[Event]) -> int:
        return int(sleep_epochs_of(np.array([e.onset_s for e in events]), sleep).sum())

    def index(count: int) -> float:  # no valid oximetry in sleep: the index is unknown, not 0
        return count / valid_h if values.size else math.nan

    sleep_s = float(sleep.sum() * EPOCH_S)
    share = values.size / sleep_s if sleep_s else math.nan  # of predicted sleep, the seconds of valid SpO2
    found = desaturations_by_drop(spo2, (DESAT_DROP_PCT, ODI_4_DROP_PCT))
    desats, n_in_sleep = found[DESAT_DROP_PCT], in_sleep(found[DESAT_DROP_PCT])
    return {
        "odi": index(n_in_sleep),
        "odi_4": index(in_sleep(found[ODI_4_DROP_PCT])),
        "n_desaturations": len(desats),
        "n_desaturations_in_sleep": n_in_sleep,
        "spo2_mean_pct": float(values.mean()) if values.size else math.nan,
        "spo2_min_pct": float(values.min()) if values.size else math.nan,
        "spo2_below_90_min": float(np.sum(values < SPO2_LOW_PCT - SPO2_TOLERANCE_PCT) / 60.0)
        if values.size
        else math.nan,
        "spo2_valid_sleep_min": float(values.size / 60.0),
        "spo2_valid_sleep_share": share,
        "reliable": bool(share >= MIN_SPO2_SLEEP_FRACTION),  # False too without sleep (nan)
        "basis": "predicted sleep",
        "rule": f"desaturation: SpO2 >= {DESAT_DROP_PCT:g} % (ODI {ODI_4_DROP_PCT:g} %: >= {ODI_4_DROP_PCT:g} %) "
        "below the "
        f"{SPO2_BASELINE_PERCENTILE:g}th percentile of the preceding {DESAT_BASELINE_S} s for >= {DESAT_MIN_S} s; "
        "ODI per hour of valid SpO2 in predicted sleep",
    }, desats


def signal_loss(signal: np.ndarray) -> np.ndarray:
    """(n_epochs,) bool: the epochs of a breathing signal (airflow or an effort belt; (n_epochs, samples), as the
    parser scales it) that carry no signal: stretches of `FLOW_LOSS_MIN_EPOCHS` or more (a cannula or belt off,
    a flat channel; an apnea reduces flow for tens of seconds, not minutes) of epochs that either
    - have a range below `FLOW_LOSS_FRACTION` of the night's breathing range (`FLOW_REFERENCE_PERCENTILE` of the
      epochs' ranges: a real one while some of the night breathes), or
    - have no breathing rhythm: less than `RHYTHM_SHARE_MIN` of their power around any one breathing rate
      (`breathing_share`), as sensor noise has, whatever its amplitude; this holds when the noise is all the
      night has, where the range rule measures the noise against itself."""
    x = np.asarray(signal, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0:
        return np.zeros(x.shape[0] if x.ndim else 0, dtype=bool)
    spread = np.ptp(x, axis=1)
    reference = float(np.percentile(spread, FLOW_REFERENCE_PERCENTILE))
    low = (spread <= FLOW_LOSS_FRACTION * reference) | (breathing_share(x) < RHYTHM_SHARE_MIN)
    lost = np.zeros(spread.size, dtype=bool)
    for start, length in event_runs(low.astype(np.int8), FLOW_LOSS_MIN_EPOCHS):
        lost[start : start + length] = True
    return lost


def breathing_share(epochs: np.ndarray) -> np.ndarray:
    """(n_epochs,) the largest share of each 30-s epoch's power above 0.05 Hz that lies within
    `RHYTHM_HALF_WIDTH_HZ` of one breathing rate (`BREATHING_RATES_HZ`): near 1 for breathing, however noisy its
    amplitude, about 0.08 for white noise (at most 0.16 in 3,000 epochs); 0 for an epoch without power (flat)."""
    centred = epochs - epochs.mean(axis=1, keepdims=True)
    power = np.abs(np.fft.rfft(centred, axis=1)) ** 2
    freqs = np.fft.rfftfreq(epochs.shape[1], d=EPOCH_S / epochs.shape[1])
    power[:, freqs < 0.05] = 0.0  # drift and the mean
    total = power.sum(axis=1)
    cumulative = np.concatenate([np.zeros((power.shape[0], 1)), np.cumsum(power, axis=1)], axis=1)
    half = int(round(RHYTHM_HALF_WIDTH_HZ / freqs[1])) if freqs.size > 1 else 0
    best = np.zeros(power.shape[0])
    for k in np.flatnonzero((freqs >= BREATHING_RATES_HZ[0]) & (freqs <= BREATHING_RATES_HZ[1])):
        low, high = max(k - half, 0), min(k + half + 1, power.shape[1])
        best = np.maximum(best, cumulative[:, high] - cumulative[:, low])
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(total > 0, best / total, 0.0)


def loss_summary(lost: np.ndarray, stages: np.ndarray, key: str) -> dict[str, Any]:
    """Minutes of the night and of predicted sleep without signal (`lost`: `signal_loss`), minutes of predicted
    sleep with it, and where the first stretch starts (None: no loss), under `<key>_lost_min`, ..."""
    sleep = np.isin(np.asarray(stages)[: lost.size], SLEEP_STAGES)
    return {
        f"{key}_lost_min": float(lost.sum() * EPOCH_S / 60),
        f"{key}_lost_sleep_min": float((lost[: sleep.size] & sleep).sum() * EPOCH_S / 60),
        f"{key}_valid_sleep_min": float((~lost[: sleep.size] & sleep).sum() * EPOCH_S / 60),
        f"{key}_lost_first_s": float(np.argmax(lost) * EPOCH_S) if lost.any() else None,
    }


def without_lost_flow(
    found: list[Event], counted: list[bool], airflow: np.ndarray, stages: np.ndarray
) -> tuple[list[Event], list[bool], dict[str, Any]]:
    """The events whose midpoint lies where the airflow carries a signal (`signal_loss`: an "apnea" where a
    cannula came off is the sensor, not the sleeper), their `counted` flags, and the summary: minutes of the night
    and of predicted sleep without flow, where it starts, the events left out, and a warning when flow was lost."""
    lost = signal_loss(airflow)
    kept = [
        k for k, e in enumerate(found) if not lost[min(int((e.onset_s + e.duration_s / 2) // EPOCH_S), lost.size - 1)]
    ]
    summary = loss_summary(lost, stages, "flow")
    dropped, first_s = len(found) - len(kept), summary["flow_lost_first_s"]
    summary["events_left_out"] = dropped
    summary["warning"] = (
        None
        if first_s is None
        else f"the airflow carries no signal for {summary['flow_lost_min']:g} min, the first stretch at {first_s:g} s "
        f"(a cannula off?): no apnea or hypopnea can be seen there ({dropped} event(s) detected there left out)"
    )
    return [found[k] for k in kept], [counted[k] for k in kept], summary


def without_warning(summary: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A loss summary as the report stores it: its warning is among the report's warnings."""
    return None if summary is None else {k: v for k, v in summary.items() if k != "warning"}


def effort_loss(epochs: Mapping[str, np.ndarray], stages: np.ndarray) -> dict[str, dict[str, Any]]:
    """{belt: summary} for each effort belt of `EFFORT_CHANNELS` the night has: `loss_summary` under the belt's
    name, and a warning when it lost its signal (a belt off or slipped for 3 min or more). Events there are kept
    (the airflow still shows them), but the event model reads no effort there."""
    found = {}
    for belt in EFFORT_CHANNELS:
        if belt in epochs:
            summary = loss_summary(signal_loss(epochs[belt]), stages, belt)
            first_s = summary[f"{belt}_lost_first_s"]
            summary["warning"] = (
                None
                if first_s is None
                else f"the {belt} belt carries no signal for {summary[f'{belt}_lost_min']:g} min, the first stretch "
                f"at {first_s:g} s (a belt off?): the event model reads no effort there"
            )
            found[belt] = summary
    return found


def night_spo2(epochs: Mapping[str, np.ndarray], info: Mapping[str, Any]) -> np.ndarray | None:
    """The night's per-second SpO2 in % from its processed epochs, or None without a usable SpO2 channel (the
    processing stores SpO2 in %, an EDF's fraction x 100: `dataset.signal_processing`)."""
    if "spo2" not in epochs:
        return None
    median, iqr = _number(info.get("median_spo2")), _number(info.get("iqr_spo2"))
    if not (math.isfinite(median) and math.isfinite(iqr)):
        return None
    return spo2_percent(epochs["spo2"].reshape(-1), median, iqr)


def persistent_sleep_latency(
    stages: np.ndarray, epoch_s: float = EPOCH_S, run_epochs: int = PERSISTENT_SLEEP_EPOCHS
) -> float:
    """Minutes from the recording start to the first epoch of the first `run_epochs` consecutive sleep epochs
    (10 min); NaN when there is none.

    >>> persistent_sleep_latency([0, 2, 0] + [2] * 20, run_epochs=20)
    1.5
    """
    runs = event_runs(np.isin(np.asarray(stages), SLEEP_STAGES).astype(np.int8), run_epochs)
    return runs[0][0] * epoch_s / 60.0 if runs else math.nan


# ---------------------------------------------------------------------------------------- reliability
def withheld(summary: Mapping[str, Any], reason: str) -> dict[str, Any]:
    """`summary` (`utils.ahi.event_summary`) with its indices NaN, its severity "not estimated" and `reason`
    under "withheld"; its event counts as given."""
    return {
        **summary,
        **dict.fromkeys(WITHHELD_INDICES, math.nan),
        "severity": SEVERITY_UNKNOWN,
        "severity_name": "not estimated",
        "withheld": reason,
    }


def lacking(missing_respiratory: Sequence[str]) -> str:
    return f"the night lacks {', '.join(missing_respiratory)}, read by the event model"


def withhold_reason(missing_respiratory: Sequence[str], flow: Mapping[str, Any] | None) -> str | None:
    """Why the night gets no AHI, or None: it lacks a channel of `WITHHOLD_WITHOUT`, or its airflow carries no
    signal anywhere in predicted sleep (`flow`: `without_lost_flow`'s summary), where no event can be seen."""
    if any(channel in WITHHOLD_WITHOUT for channel in missing_respiratory):
        return lacking(missing_respiratory)
    if flow is not None and flow["flow_valid_sleep_min"] == 0 and flow["flow_lost_sleep_min"] > 0:
        return "the airflow carries no signal in predicted sleep (a cannula off?)"
    return None


def assess_reliability(
    source: str | None,
    staging: Mapping[str, Any],
    events: Mapping[str, Any] | None,
    missing_respiratory: Sequence[str],
    tst_min: float | None = None,
    oximetry: Mapping[str, Any] | None = None,
    missing_staging: Sequence[str] = (),
    flow: Mapping[str, Any] | None = None,
    effort: Mapping[str, Mapping[str, Any]] | None = None,
    staging_lead_off: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """{"reliable", "reasons", "thresholds"} of the night's AHI estimate (module docstring). `source`: "event
    model", "epoch runs" or None (no AHI); `staging`: the staging run's validation numbers (val_kappa);
    `events`: the event run's (`event_validation`); `missing_respiratory`: channels the event model reads that
    the night lacks; `tst_min`: the night's predicted sleep (None: not checked); `oximetry`: its
    `oximetry_summary` (None without SpO2); `missing_staging`: channels the staging model reads that the night
    lacks (its validation kappa was measured with them, and the AHI's hours of sleep come from its stages);
    `flow`: the summary `without_lost_flow` gives (None without airflow); `effort`: `effort_loss`'s;
    `staging_lead_off`: {channel: share of the night's epochs it is flat in} for the channels the staging model
    reads."""
    reasons = []
    if source is None:
        return {
            "reliable": None,
            "reasons": ["no AHI estimate (no event model, nor both epoch runs)"],
            "thresholds": THRESHOLDS,
        }
    if source == "epoch runs":
        reasons.append(
            "the AHI comes from runs of positive 30-s epochs times a calibration factor, not from "
            "detected events (give --events)"
        )
    if tst_min is not None and not tst_min >= MIN_SLEEP_MIN:
        reasons.append(
            f"{tst_min:.1f} min of predicted sleep (< {MIN_SLEEP_MIN:g}): an index per hour of sleep from so "
            "little sleep says little"
        )
    kappa = _number(staging.get("val_kappa"))
    if not math.isfinite(kappa):
        reasons.append("the staging model has no validation kappa to check (sleep time may be wrong)")
    elif kappa < STAGING_KAPPA_MIN:
        reasons.append(f"staging validation kappa {kappa:.2f} < {STAGING_KAPPA_MIN} (sleep time may be wrong)")
    if missing_staging:
        reasons.append(
            f"the night lacks {', '.join(missing_staging)}, read by the staging model (its validation kappa was "
            "measured with them; sleep time may be wrong)"
        )
    for channel, share in sorted((staging_lead_off or {}).items()):
        if share > MAX_STAGING_LEAD_OFF_FRACTION:
            reasons.append(
                f"{channel}, read by the staging model, is flat (lead-off) over {100 * share:.1f} % of the night "
                f"(> {100 * MAX_STAGING_LEAD_OFF_FRACTION:.0f} %): sleep time may be wrong"
            )
    if events is not None:
        for family in ("apnea", "hypopnea"):
            f1 = _number(events.get(f"event_f1_{family}"))
            if not math.isfinite(f1):
                reasons.append(f"the event model has no validation {family} event F1")
            elif f1 < EVENT_F1_MIN:
                reasons.append(f"event model validation {family} event F1 {f1:.2f} < {EVENT_F1_MIN}")
        severity = _number(events.get("ahi_severity_kappa"))
        nights = int(_number(events.get("ahi_n")) if math.isfinite(_number(events.get("ahi_n"))) else 0)
        if not math.isfinite(severity):
            reasons.append("the event model has no validation AHI severity kappa")
        elif severity < SEVERITY_KAPPA_MIN:
            reasons.append(f"event model validation AHI severity kappa {severity:.2f} < {SEVERITY_KAPPA_MIN}")
        if nights < MIN_VALIDATION_NIGHTS:
            reasons.append(f"the event model's AHI was validated on {nights} night(s) (< {MIN_VALIDATION_NIGHTS})")
        if missing_respiratory:
            reasons.append(lacking(missing_respiratory))
        coverage = (  # (summary, its minutes of valid signal in sleep, minimum share, what it says, why it matters)
            (oximetry, "spo2_valid_sleep_min", MIN_SPO2_SLEEP_FRACTION, "valid SpO2 covers", SPO2_LOST),
            (flow, "flow_valid_sleep_min", MIN_FLOW_SLEEP_FRACTION, "the airflow carries a signal over", FLOW_LOST),
            *(
                (
                    belt_loss,
                    f"{belt}_valid_sleep_min",
                    MIN_EFFORT_SLEEP_FRACTION,
                    f"the {belt} belt carries a signal over",
                    EFFORT_LOST,
                )
                for belt, belt_loss in (effort or {}).items()
            ),
        )
        for summary, key, minimum, what, why in coverage:
            covered = _number(summary.get(key)) / tst_min if summary is not None and tst_min else math.inf
            if not covered >= minimum:
                reasons.append(f"{what} {100 * covered:.0f} % of predicted sleep (< {100 * minimum:.0f} %): {why}")
    return {"reliable": not reasons, "reasons": reasons, "thresholds": THRESHOLDS}
