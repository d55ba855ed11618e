"""One night from EDF (+ NSRR XML) to robust-scaled 30-s epochs and labels, in memory (docs/data.md §2.2-§2.4).

Per channel, one at a time (bounded memory): digital int16 at the native rate -> physical units (µV for
electrophysiology) -> polyphase resampling (`scipy.signal.resample_poly`, the exact rational ratio from the native rate)
to 100 Hz (respiratory 10 Hz) -> zero-phase Butterworth band-pass of the continuous signal (`sosfiltfilt`;
respiratory channels get only the resampler's anti-alias filter) -> trim to the kept epochs from t = 0 ->
(n_epochs, samples) float32 -> robust scaling by the median and IQR of the kept epochs. SpO2 is a reading, not a
band-limited waveform: it is resampled by sample-and-hold (`hold`), so every stored value is one the oximeter gave
(whole percents stay whole, a probe-off 0 % stays 0 % and is never smoothed into its neighbours).

`process_recording` is what the cohort parser writes to Parquet; `load_night` is the same processing for one
night without writing (inference).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import signal as sps

from dataset.annotations import read_annotations, unpaired_scorings_beside
from dataset.channel_map import (
    ChannelMap,
    ChannelMapError,
    Source,
    looked_for,
    nonstandard_hint,
    parse_channel_map,
    resolve_channels,
)
from dataset.constants import CHANNEL_BY_NAME, EPHYS_CHANNELS, EPOCH_S, UNIT_TO_UV, ChannelSpec
from dataset.edf_reader import EdfError, EdfHeader, EdfSignalHeader, read_digital, read_edf_header, to_physical
from dataset.labels import epoch_labels, labels_frame, night_summary
from dataset.nsrr_xml import NsrrAnnotations
from dataset.resampling import HELD_CHANNELS, bandpass_sos, hold, resample, resample_stages

FORMAT_VERSION = 8  # bump when the Parquet layout or the processing changes meaning (forces re-parsing)
NORMAL_IQR_PER_SD = 1.349  # IQR of a normal distribution in standard deviations


class SkipRecording(Exception):
    """A recording excluded by a rule (no electrophysiology channel, no scored epoch); message = reason."""


@dataclass(frozen=True)
class ProcessingConfig:
    """Everything that changes the numbers written for a night, and which nights are written (`allow_unscored`);
    its digest (of the former only) decides whether a rerun may reuse an existing Parquet file.

    `bands` overrides the band-pass of channels by name ((low, high) Hz, or None for no band-pass); defaults
    come from `dataset.constants.CHANNELS`. A flat electrophysiology channel has an IQR below
    max(`flat_levels` digital steps, `flat_iqr_uv` µV); a flat respiratory channel has a range below one digital
    step. A clipped channel has more than `clip_fraction` of its kept samples at the digital limits (for SpO2, only
    a lower limit above 0 % of a range reaching 100 %: `clip_levels`).
    """

    channels: tuple[str, ...] = tuple(CHANNEL_BY_NAME)
    bands: tuple[tuple[str, tuple[float, float] | None], ...] = ()
    filter_order: int = 4  # Butterworth order of the band-pass design (applied forward and backward)
    resample_padtype: str = "line"  # resample_poly edge extension: the line through the end samples
    margin_s: float = 60.0  # processed beyond the kept end, then trimmed (keeps filter edge effects outside)
    flat_iqr_uv: float = 0.1
    flat_levels: float = 0.5
    clip_fraction: float = 0.5
    allow_unscored: bool = False
    channel_map: ChannelMap = ()  # user map (dataset.channel_map.parse_channel_map), tried before the built-ins

    def __post_init__(self):
        if not isinstance(self.channel_map, tuple) or any(not isinstance(v, tuple) for _, v in self.channel_map):
            object.__setattr__(self, "channel_map", parse_channel_map(dict(self.channel_map) or None))
        unknown = [c for c in self.channels if c not in CHANNEL_BY_NAME]
        unknown += [c for c, _ in self.bands if c not in CHANNEL_BY_NAME]
        if unknown:
            raise ValueError(f"unknown channel(s) {unknown}; canonical names: {', '.join(CHANNEL_BY_NAME)}")
        if not set(self.channels) & set(EPHYS_CHANNELS):  # every night would be skipped for the want of one
            raise ValueError(
                f"channels {' '.join(self.channels) or '(none)'} include no electrophysiology channel; a night needs "
                f"one of {', '.join(EPHYS_CHANNELS)} (respiratory channels are written beside it)"
            )
        wanted = set(self.channels)  # canonical order (electrophysiology first), duplicates removed
        object.__setattr__(self, "channels", tuple(c for c in CHANNEL_BY_NAME if c in wanted))
        object.__setattr__(self, "bands", tuple(sorted((c, tuple(b) if b else None) for c, b in self.bands)))

    def band(self, spec: ChannelSpec) -> tuple[float, float] | None:
        return dict(self.bands).get(spec.name, spec.band)

    def as_dict(self) -> dict:
        record = asdict(self)
        record["bands"] = {name: self.band(CHANNEL_BY_NAME[name]) for name in self.channels}
        if self.channel_map:
            record["channel_map"] = {name: list(candidates) for name, candidates in self.channel_map}
        else:  # no user map: the settings (and digest) of the built-in tables alone, as before maps existed
            record.pop("channel_map")
        return record

    def digest(self) -> str:
        """What a night's table was made with. `allow_unscored` decides which nights are written, not what is
        written for one, so it is taken at its default: a night parsed with or without it is the same table."""
        record = {**self.as_dict(), "allow_unscored": False}
        text = json.dumps({"format": FORMAT_VERSION, **record}, sort_keys=True, default=list)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class ChannelResult:
    """One processed channel: (n_epochs, samples) float32 epochs and what was done to them."""

    name: str
    epochs: np.ndarray  # (n_epochs, 3000) at 100 Hz or (n_epochs, 300) at 10 Hz, robust-scaled, float32
    label: str  # EDF label it was read from, or "PLUS - MINUS" for a derivation
    native_rate: float  # Hz
    unit: str  # unit of median/iqr: "uV" for electrophysiology, else the EDF's unit
    unit_assumed: bool
    median: float
    iqr: float  # the divisor used (IQR, or 1.349 x SD when the IQR is below half a digital step)
    up: int
    down: int
    edf_unit: str = ""  # physical dimension as written in the EDF header (e.g. "mV"), before conversion
    # (n_epochs,) bool: the flat epochs (lead-off) of a channel kept, left out of its median and IQR
    flat_epochs: np.ndarray | None = None


@dataclass
class Night:
    """A processed night: the epoch table's columns plus its manifest numbers and events."""

    recording_id: str
    channels: dict[str, ChannelResult]
    labels: dict[str, np.ndarray]  # LABEL_COLUMNS -> (n_epochs,)
    events: list[dict]  # non-stage events (see nsrr_xml), empty without annotations
    info: dict  # manifest fields (see `night_info`)
    timings: dict[str, float] = field(default_factory=dict)  # seconds per step

    @property
    def n_epochs(self) -> int:
        return int(self.info["n_epochs"])


def find_channels(
    header: EdfHeader,
    names: tuple[str, ...],
    channel_map: ChannelMap = (),
    cohort: str | None = None,
    exclude: set[tuple[str, ...]] | frozenset[tuple[str, ...]] = frozenset(),
) -> dict[str, tuple[Source, tuple[EdfSignalHeader, ...]]]:
    """Canonical name -> (Source, its EDF signals: one, or plus and minus of a derivation), chosen by
    `dataset.channel_map.resolve_channels` (built-in tables of `cohort`, a name or recording id, and the user
    map); sources whose labels are in `exclude` are passed over (found unusable: the next candidate). An
    ambiguous match raises EdfError naming the file and both labels."""
    signals = [s for s in header.signals if not s.is_annotation]
    try:
        sources = resolve_channels(
            [s.label for s in signals], [s.sampling_rate for s in signals], channel_map, cohort, names, exclude
        )
    except ChannelMapError as err:
        raise EdfError(f"{header.path}: {err}") from None
    readers: dict[str, list[str]] = {}  # labels are not unique by the standard: the first of equals was taken
    for name, source in sources.items():
        for i in source.indices:
            readers.setdefault(signals[i].label, []).append(name)
    for label, names in readers.items():
        twins = [s.index for s in signals if s.label == label]
        note = f"signals {' and '.join(map(str, twins))} are all labelled {label!r}; {', '.join(names)} took {twins[0]}"
        if len(twins) > 1 and note not in header.warnings:
            header.warnings.append(note)
    return {name: (source, tuple(signals[i] for i in source.indices)) for name, source in sources.items()}


# An electrophysiology channel flat over most of the night (IQR below the flat threshold) is still read when this
# many of its epochs, and this share of them, carry a signal: a lead off for hours leaves the hours before it.
MIN_SIGNAL_EPOCHS = 20
MIN_SIGNAL_FRACTION = 0.1


def quartiles(values: np.ndarray, stride: int = 8, spread: float = 6.0) -> tuple[float, float, float]:
    """Exactly `np.percentile(values, (25, 50, 75))` (linear interpolation) of a 1-D array, 2-3x faster.

    The two order statistics around each quartile are bracketed by order statistics of a strided
    subsample (+- `spread` SDs of rank), counted, and found by partitioning only the values inside the
    bracket; a bracket that misses falls back to a full partition, so the result is always exact.
    """
    n = values.size
    if n < 4096:
        return tuple(float(v) for v in np.percentile(values, (25, 50, 75)))
    sample = values[::stride].copy()  # (m,) strided subsample
    m = sample.size
    brackets = []
    for q in (0.25, 0.5, 0.75):
        rank, sd = q * (m - 1), math.sqrt(m * q * (1 - q)) + 2
        brackets.append((max(int(rank - spread * sd), 0), min(int(math.ceil(rank + spread * sd)), m - 1)))
    sample.partition(sorted({r for pair in brackets for r in pair}))  # order statistics at the bracket ranks
    out = []
    for q, (low_rank, high_rank) in zip((0.25, 0.5, 0.75), brackets):
        position = q * (n - 1)
        k = int(np.floor(position))
        low, high = sample[low_rank], sample[high_rank]
        below = int(np.count_nonzero(values < low))
        inside = values[(values >= low) & (values <= high)]
        if below <= k and below + inside.size >= k + 2:
            part = np.partition(inside, [k - below, k + 1 - below])
            a, b = float(part[k - below]), float(part[k + 1 - below])
        else:
            part = np.partition(values, [k, k + 1])
            a, b = float(part[k]), float(part[k + 1])
        out.append(a + (position - k) * (b - a))
    return out[0], out[1], out[2]


def normalise_unit(unit: str) -> str:
    """Lower-case unit with the micro sign ('µ' or Greek 'μ', however the header spelled it: the reader decodes
    UTF-8 and latin-1 alike) spelled 'u'."""
    return unit.strip().replace("\u00b5", "u").replace("\u03bc", "u").lower()


SPO2_FRACTION_MAX = 1.5  # an SpO2 signal whose physical range ends at or below this is a fraction, stored x 100
SPO2_RANGE_PCT = (0.0, 100.0)  # every SpO2 reading lies here (0 % = probe off)


def _unit_factor(spec: ChannelSpec, signal: EdfSignalHeader) -> tuple[float, str, bool]:
    """(factor to the stored unit, stored unit, assumed?) for one channel. SpO2 is stored in %: a header whose
    physical range cannot hold a percentage (|min|, |max| <= 1.5) records it as a fraction, read x 100."""
    if spec.name == "spo2" and max(abs(signal.physical_min), abs(signal.physical_max)) <= SPO2_FRACTION_MAX:
        return 100.0, "%", False
    if not spec.electrophysiology:
        return 1.0, signal.physical_dimension, False
    factor = UNIT_TO_UV.get(normalise_unit(signal.physical_dimension))
    if factor is None:
        return 1.0, "uV", True  # empty or unknown unit: taken as µV and flagged
    return factor, "uV", False


def clip_levels(spec: ChannelSpec, signal: EdfSignalHeader) -> tuple[int, ...]:
    """Digital values whose samples count as clipped: both digital limits, except for SpO2, where only the lower
    limit of a range reaching 100 % can clip, and only inside `SPO2_RANGE_PCT` (a floor such as 50 % hides the
    depth of desaturations; a 0 % floor is a probe-off dropout, not a cut reading). SpO2's upper limit never
    clips: a healthy night rests on its highest reading. A range ending below 100 % was set from the data by the
    writer (edfio's and MNE's export defaults), which puts the night's highest and lowest readings on the
    digital limits: neither clips."""
    limits = ((signal.digital_min, signal.physical_min), (signal.digital_max, signal.physical_max))
    if spec.name != "spo2":
        return tuple(digital for digital, _ in limits)
    factor = _unit_factor(spec, signal)[0]
    (digital, low), (_, high) = sorted(limits, key=lambda limit: limit[1])  # a range may be inverted
    if high * factor < SPO2_RANGE_PCT[1]:  # a range set from the data (no oximeter ends below 100 %): no limit clips
        return ()
    return (digital,) if SPO2_RANGE_PCT[0] < low * factor < SPO2_RANGE_PCT[1] else ()


def process_channel(
    header: EdfHeader,
    signal: EdfSignalHeader,
    spec: ChannelSpec,
    n_epochs: int,
    config: ProcessingConfig,
    timings: dict[str, float],
    reference: EdfSignalHeader | None = None,
) -> ChannelResult | str:
    """Process one channel of a night; returns the result, or the reason it is dropped (flat, clipped, bad header).

    With `reference` the channel is the derivation `signal - reference`, computed in physical units at the shared
    native rate before any other step; a sample is clipped when either input is at its digital limits."""
    for part in (signal,) if reference is None else (signal, reference):
        if part.problem is not None:
            return f"invalid header: {part.problem}"
        if part.digital_max <= part.digital_min:
            return f"invalid header: digital range [{part.digital_min}, {part.digital_max}]"
        if part.physical_max == part.physical_min:  # every sample is that one value (inverted ranges are legal)
            return f"invalid header: physical range [{part.physical_min:g}, {part.physical_max:g}]"
    stages = resample_stages(signal.rate, spec.target_fs, n_epochs * EPOCH_S)
    if isinstance(stages, str):
        return stages
    ratio = math.prod((Fraction(u, d) for u, d in stages), start=Fraction(1))  # the resampling, as up / down
    tick = time.perf_counter()
    kept_s = n_epochs * EPOCH_S
    records = min(header.n_records, math.ceil((kept_s + config.margin_s) / header.record_duration))
    digital = read_digital(header, signal, records)  # (records * samples_per_record,) int16, native rate
    kept_native = digital[: min(digital.size, math.ceil(kept_s * signal.rate))]
    at_limits = np.isin(kept_native, clip_levels(spec, signal))
    if reference is not None:
        ref_digital = read_digital(header, reference, records)  # same rate, so same length
        ref_kept = ref_digital[: kept_native.size]
        at_limits |= np.isin(ref_kept, clip_levels(spec, reference))
    clipped = np.count_nonzero(at_limits) / max(kept_native.size, 1)
    if clipped > config.clip_fraction:
        timings["read"] = timings.get("read", 0.0) + time.perf_counter() - tick
        return f"clipped: {100 * clipped:.0f}% of samples at the digital limits"
    factor, unit, assumed = _unit_factor(spec, signal)
    continuous = to_physical(digital, signal, factor)  # (samples,) float64, µV or the EDF unit, native rate
    del digital, kept_native
    step = abs(signal.gain * factor)  # one digital level in stored units
    label = signal.label
    if reference is not None:
        ref_factor, _, ref_assumed = _unit_factor(spec, reference)
        continuous -= to_physical(ref_digital, reference, ref_factor)  # the derivation, at the native rate
        del ref_digital, ref_kept
        assumed = assumed or ref_assumed
        step = max(step, abs(reference.gain * ref_factor))
        label = f"{signal.label} - {reference.label}"
    now = time.perf_counter()
    timings["read"] = timings.get("read", 0.0) + now - tick
    tick = now

    # centred in float64 first: the polyphase branches pass a DC offset with slightly different gains, which turns
    # a DC-coupled amplifier's offset into a tone at a fraction of the rate (25 Hz from 125 Hz) inside the band;
    # and the float32 epochs below would lose the resolution of a channel far from zero
    offset = float(np.median(continuous[: math.ceil(kept_s * signal.rate)]))
    continuous -= offset
    if spec.name in HELD_CHANNELS:
        continuous = hold(continuous, ratio)
    else:
        continuous = resample(continuous, stages, config.resample_padtype)
    band = config.band(spec)
    if band is not None:
        continuous = sps.sosfiltfilt(bandpass_sos(band, spec.target_fs, config.filter_order), continuous)
    samples = spec.epoch_samples
    if continuous.size < n_epochs * samples:
        raise EdfError(
            f"{header.path}: {spec.name} ({signal.label!r}) gives {continuous.size} samples after "
            f"resampling, expected {n_epochs * samples} for {n_epochs} epochs"
        )
    with np.errstate(over="ignore"):  # a physical range beyond float32's: caught below, by name
        epochs = continuous[: n_epochs * samples].astype(np.float32).reshape(n_epochs, samples)
    del continuous
    if not np.isfinite(epochs).all():
        physical = f"[{signal.physical_min:g}, {signal.physical_max:g}]"
        return f"invalid values: beyond 32-bit floats in {unit} (physical range {physical})"
    now = time.perf_counter()
    timings["resample_filter"] = timings.get("resample_filter", 0.0) + now - tick
    tick = now

    kept_values = epochs.reshape(-1)
    q25, median, q75 = quartiles(kept_values)
    iqr = q75 - q25
    flat_epochs = np.zeros(len(epochs), dtype=bool)
    if spec.electrophysiology:
        threshold = max(config.flat_levels * step, config.flat_iqr_uv)
        upper, lower = np.percentile(epochs, (75, 25), axis=1)
        flat_epochs = upper - lower < threshold
        carrying = int((~flat_epochs).sum())  # epochs with a signal: a lead off for most of the night keeps them
        flat = iqr < threshold and carrying < max(MIN_SIGNAL_EPOCHS, MIN_SIGNAL_FRACTION * len(epochs))
        why = f"flat: IQR {iqr:.3g} {unit} < {threshold:.3g}"
        if carrying:
            why += f" (a signal in {carrying} of {len(epochs)} epochs)"
        if assumed:
            why += f" (its unit {signal.physical_dimension.strip()!r} is unknown and was taken as uV)"
        if not flat:  # a lead-off stretch: its epochs must not shrink the scale of every other epoch of the night
            if flat_epochs.all():  # each epoch flat, the night not (a slow drift without a high-pass): no stretch
                flat_epochs[:] = False
            if flat_epochs.any():
                q25, median, q75 = quartiles(epochs[~flat_epochs].reshape(-1))
                iqr = q75 - q25
    else:
        spread = float(kept_values.max() - kept_values.min())
        flat = spread < step
        why = f"flat: range {spread:.3g} {unit} < one digital step {step:.3g}"
    if flat:
        timings["scale"] = timings.get("scale", 0.0) + time.perf_counter() - tick
        return why
    divisor = iqr
    if divisor < config.flat_levels * step:  # e.g. SpO2 at one value most of the night: IQR ~ 0
        divisor = max(NORMAL_IQR_PER_SD * float(np.std(kept_values, dtype=np.float64)), config.flat_levels * step)
    kept_values -= np.float32(median)  # in place on the epochs
    kept_values *= np.float32(1.0 / divisor)
    if not np.isfinite(kept_values).all():
        return f"invalid values: not finite after scaling by the IQR {divisor:.3g} {unit}"
    if band is None:  # unfiltered (respiratory, SpO2): the offset is part of the signal the manifest describes
        median += offset  # (a band-pass removes it, so a filtered channel's median is that of the filtered signal)
    timings["scale"] = timings.get("scale", 0.0) + time.perf_counter() - tick
    return ChannelResult(
        spec.name,
        epochs,
        label,
        signal.sampling_rate,
        unit,
        assumed,
        median,
        divisor,
        ratio.numerator,
        ratio.denominator,
        signal.physical_dimension,
        flat_epochs,
    )


def source_info(sources: dict[str, Source]) -> dict[str, str]:
    """Manifest fields of the channels written: `channel_sources` (`eeg_c4:C4 - M1;emg:Chin1 - Chin2`, a
    derivation as "PLUS - MINUS"), `channel_map_channels` (filled through the user map) and
    `nonstandard_channels` (EEG slots holding a non-standard derivation, e.g. Fpz-Cz, through the user map)."""
    return {
        "channel_sources": ";".join(f"{n}:{s.text}" for n, s in sources.items()),
        "channel_map_channels": ",".join(n for n, s in sources.items() if s.origin == "user map"),
        "nonstandard_channels": ",".join(n for n, s in sources.items() if s.nonstandard),
    }


def night_info(
    header: EdfHeader,
    annotations: NsrrAnnotations | None,
    n_epochs: int,
    signal_s: float,
    scored_s: float,
    channels: dict[str, ChannelResult],
    dropped: dict[str, str],
    labels: dict[str, np.ndarray],
    events: list[dict],
    config: ProcessingConfig,
    unused: list[str] | None = None,
) -> dict:
    """Manifest fields of a processed night (see dataset/README.md for their meaning); `unused`: the EDF's signal
    labels that fed no channel, named when a channel was not found."""
    kept_s = float(n_epochs * EPOCH_S)
    info = {
        "n_epochs": n_epochs,
        "channels": ",".join(channels),
        "native_rates": ",".join(f"{n}:{c.native_rate:g}" for n, c in channels.items()),
        "units": ",".join(f"{n}:{c.edf_unit}" for n, c in channels.items()),  # as written in the EDF header
        "signal_s": signal_s,
        "scored_s": scored_s,
        "kept_s": kept_s,
        "truncated": bool(header.truncated),
        "dropped_channels": "; ".join(f"{n} ({why})" for n, why in dropped.items()),
    }
    for name in config.channels:
        result = channels.get(name)
        info[f"median_{name}"] = result.median if result else float("nan")
        info[f"iqr_{name}"] = result.iqr if result else float("nan")
        if CHANNEL_BY_NAME[name].electrophysiology:
            info[f"unit_assumed_{name}"] = bool(result.unit_assumed) if result else False
    info.update(night_summary(labels, events if annotations is not None else None, kept_s))
    lost = []  # what the night lacks or loses, said once here rather than only when a run skips it
    missing = [n for n in config.channels if n not in channels and n not in dropped]
    if missing:
        others = f"signals not used: {', '.join(unused[:8])}{', ...' if len(unused) > 8 else ''}; " if unused else ""
        lost.append(
            f"no channel found for {', '.join(missing)} ({others}dataset/README.md, 'Channels'; or --channel-map)"
        )
    if annotations is not None and signal_s - kept_s >= EPOCH_S:
        lost.append(
            f"the scoring ends at {scored_s:g} s, the signal at {signal_s:g} s: {signal_s - kept_s:g} s not kept"
        )
    lost += scoring_past_signal(annotations, signal_s) if annotations is not None else []
    for name, result in channels.items():  # resampling adds nothing above the native Nyquist frequency
        band, nyquist = config.band(CHANNEL_BY_NAME[name]), result.native_rate / 2
        if band is not None and band[1] - nyquist > (band[1] - band[0]) / 2:  # most of the band is not there
            lost.append(
                f"{name} recorded at {result.native_rate:g} Hz holds only {band[0]:g}-{nyquist:g} Hz of its "
                f"{band[0]:g}-{band[1]:g} Hz band (a model trained on higher rates reads it otherwise)"
            )
        flat = result.flat_epochs
        if flat is not None and flat.any():
            first = int(np.argmax(flat))
            lost.append(
                f"{name} is flat in {int(flat.sum())} of {flat.size} epochs ({flat.sum() * EPOCH_S / 60:g} min, the "
                f"first at {first * EPOCH_S:g} s; lead-off?): they carry no {name} signal and are left out of its "
                "scaling; stages scored or predicted there may be wrong"
            )
    info["warnings"] = "; ".join(header.warnings + (annotations.warnings if annotations is not None else []) + lost)
    return info


def scoring_past_signal(annotations: NsrrAnnotations, signal_s: float) -> list[str]:
    """A note when the scoring stages an epoch or more past the signal's end: a file cut short, or the scoring of
    another, longer night."""
    if annotations.staged_s - signal_s < EPOCH_S:
        return []
    return [f"the scoring stages up to {annotations.staged_s:g} s, past the signal's end at {signal_s:g} s"]


def process_recording(
    edf_path: str | Path,
    xml_path: str | Path | None,
    config: ProcessingConfig | None = None,
    recording_id: str | None = None,
    require_scored: bool = True,
) -> Night:
    """Read, process and label one night in memory.

    Raises `EdfError` / `XmlError` for unreadable or malformed inputs (status failed) and `SkipRecording` for
    nights excluded by a rule: no annotations (unless `config.allow_unscored`), no electrophysiology channel,
    no scored epoch. With `require_scored=False` (inference) an annotation file without any stage event keeps
    the whole signal and a night without a scored epoch is still processed.
    """
    config = config or ProcessingConfig()
    edf_path = Path(edf_path)
    recording_id = recording_id or edf_path.stem
    timings: dict[str, float] = {}
    tick = time.perf_counter()
    header = read_edf_header(edf_path)
    annotations = read_annotations(xml_path, header) if xml_path is not None else None
    timings["read"] = time.perf_counter() - tick
    if annotations is None and not config.allow_unscored:
        near = unpaired_scorings_beside(edf_path)
        raise SkipRecording(
            f"{edf_path}: no NSRR XML or other annotation file (Profusion XML, EDF+ hypnogram or hypnogram text; "
            "dataset/README.md, 'Pairing')"
            + (f"; {', '.join(near[:3])} beside it is not a name the pairing takes" if near else "")
            + "; use --allow-unscored to write it unlabelled"
        )

    found = find_channels(header, config.channels, config.channel_map, recording_id)
    ephys = [n for n in config.channels if CHANNEL_BY_NAME[n].electrophysiology]
    if not any(n in found for n in ephys):
        labels = (a for n in ephys for a in looked_for(n, config.channel_map, recording_id, header.labels))
        looked = ", ".join(dict.fromkeys(labels))  # each label once, in the order tried
        hint = nonstandard_hint(header.labels, recording_id)
        raise SkipRecording(
            f"{edf_path}: no electrophysiology channel (looked for {looked}; "
            f"labels: {', '.join(header.labels)}){'; ' + hint if hint else ''}"
        )

    signal_s = header.duration_s
    scored_s = annotations.scored_s if annotations is not None else signal_s
    if not require_scored and scored_s == 0:
        scored_s = signal_s
    n_epochs = int(math.floor(min(signal_s, scored_s) / EPOCH_S + 1e-9))
    if n_epochs < 1:
        if signal_s < EPOCH_S:
            cut = "".join(f"; {w}" for w in header.warnings)  # a truncated file says so, not only how short it is
            raise SkipRecording(f"{edf_path}: shorter than one {EPOCH_S}-s epoch (signal {signal_s:g} s{cut})")
        what = "no stage event" if scored_s == 0 else f"signal {signal_s:g} s, scored {scored_s:g} s"
        raise SkipRecording(f"{edf_path}: no scored epoch ({what})")
    tick = time.perf_counter()
    labels = epoch_labels(annotations, n_epochs)
    events = annotations.events if annotations is not None else []
    if require_scored and annotations is not None and not np.any(labels["stage"] >= 0):
        raise SkipRecording(
            f"{annotations.path}: no scored epoch (every kept epoch is movement, unscored or uncovered)"
        )
    timings["labels"] = time.perf_counter() - tick

    channels: dict[str, ChannelResult] = {}
    dropped: dict[str, str] = {}
    for name, (source, signals) in list(found.items()):
        failed: set[tuple[str, ...]] = set()  # this channel's sources (their labels) that were not usable
        tried: list[str] = []  # why each source tried before was not usable
        while True:
            if source.problem:
                outcome = source.problem
            else:
                outcome = process_channel(
                    header,
                    signals[0],
                    CHANNEL_BY_NAME[name],
                    n_epochs,
                    config,
                    timings,
                    signals[1] if source.derived else None,
                )
            if not isinstance(outcome, str):
                channels[name] = outcome
                if tried:
                    header.warnings.append(f"{name}: {'; '.join(tried)}; {source.text!r} read instead")
                    found[name] = (source, signals)  # the manifest's channel_sources name what was read
                break
            tried.append(outcome if source.problem else f"{source.text!r} {outcome}")
            # the next candidate of a lower priority (airflow: the thermistor after a flat nasal pressure)
            failed.add(tuple(source.labels))
            try:
                fallback = find_channels(header, (name,), config.channel_map, recording_id, exclude=failed).get(name)
            except EdfError:  # two candidates at the next level: none is chosen for the user
                fallback = None
            if fallback is None:  # none left (`exclude` keeps a source tried from being found again)
                dropped[name] = "; ".join(tried)
                break
            source, signals = fallback
    if not any(n in channels for n in ephys):
        raise SkipRecording(
            f"{edf_path}: no usable electrophysiology channel ({'; '.join(f'{n} {w}' for n, w in dropped.items())})"
        )
    used = {label for source, _ in found.values() for label in source.labels}
    unused = [label for label in header.labels if label not in used]
    info = night_info(
        header, annotations, n_epochs, signal_s, scored_s, channels, dropped, labels, events, config, unused
    )
    info.update(source_info({name: found[name][0] for name in channels}))
    return Night(recording_id, channels, labels, events, info, timings)


def load_night(
    edf_path: str | Path,
    xml_path: str | Path | None = None,
    channels: list[str] | tuple[str, ...] | None = None,
    config: ProcessingConfig | None = None,
) -> tuple[dict[str, np.ndarray], pd.DataFrame | None, dict]:
    """The parser's exact processing of one night, without writing anything.

    Returns (epochs, labels, info): `epochs` maps canonical channel names to (n_epochs, samples) float32 arrays
    (3000 samples at 100 Hz, 300 at 10 Hz for respiratory channels; robust-scaled); `labels` is a DataFrame
    (`epoch`, `stage`, event columns) or None without `xml_path`; `info` holds the manifest fields (rates,
    medians and IQRs, dropped channels, n_epochs, kept_s, ...) and `flat_epochs`, each channel's number of flat
    (lead-off) epochs. Without an XML file (or with one that holds
    no stage event) the whole recording is kept (floor(signal_s / 30) epochs). Raises `EdfError` / `XmlError`
    for unreadable files and `SkipRecording` when no electrophysiology channel is usable.
    """
    base = config or ProcessingConfig()
    names = tuple(channels) if channels is not None else base.channels
    config = ProcessingConfig(**{**asdict(base), "channels": names, "allow_unscored": True})
    night = process_recording(edf_path, xml_path, config, require_scored=False)
    epochs = {name: result.epochs for name, result in night.channels.items()}
    labels = labels_frame(night.labels) if xml_path is not None else None
    flat = {n: int(r.flat_epochs.sum()) for n, r in night.channels.items() if r.flat_epochs is not None}
    return epochs, labels, {**night.info, "flat_epochs": flat}
