"""A small, fast EDF reader on numpy: header per the EDF spec, int16 records through np.memmap.

Each signal is read at its own native rate (samples per record / record duration), never upsampled to a
common rate. Only the signals asked for are converted. Digital values become physical values with each
signal's own gain and offset:

    physical = (digital - digital_min) * (physical_max - physical_min) / (digital_max - digital_min) + physical_min

Robustness (docs/data.md §2.4): an empty file, a file that is not an EDF, a BDF (24-bit), an EDF+D file with a
gap between data records (one without a gap is read as continuous, with a warning) or a file without one whole
data record raise `EdfError` naming the file. A cut final data record is
ignored (the file is read up to its last whole record and `truncated` is set); a header record count of -1
(unknown), 0 or one larger than the file holds is replaced by the count the file holds, one smaller is kept
(the bytes after its last record are ignored), each with a warning (the manifest's `warnings`); a count below
-1 is an `EdfError`, as are an integer field written otherwise ("124.9"), samples per record that add up to
a smaller record than the data holds (`check_layout`), a recording longer than `MAX_RECORDING_H` and an EDF+
annotation time that is no finite number; a digital range beyond 16 bits is a signal `problem`. EDF+ annotation signals
("EDF Annotations") keep their place in the record layout but are never offered as channels.

Reference: https://www.edfplus.info/specs/edf.html
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from pathlib import Path

import numpy as np

ANNOTATION_LABEL = "edf annotations"
INTEGER = re.compile(r"[+-]?[0-9]+(\.0*)?")  # an integer header field as written (a trailing ".0" tolerated)
DIGITAL_RANGE = (-32768, 32767)  # 16-bit samples: a digital range beyond this cannot be the data's
MAX_RECORDING_H = 72.0  # a header declaring a longer recording is refused (a record duration off by 1000s)


class EdfError(ValueError):
    """An EDF file that cannot be read; the message names the file and the problem."""


def normalise_label(label: str) -> str:
    """Case-insensitive, whitespace-normalised channel label: `" EEG  (sec) "` -> `"eeg (sec)"`."""
    return " ".join(label.split()).lower()


@dataclass(frozen=True)
class EdfSignalHeader:
    """One signal's header fields and where its samples sit inside a data record."""

    index: int
    label: str
    transducer: str
    physical_dimension: str  # unit as written, e.g. "uV", "mV", "%"
    physical_min: float
    physical_max: float
    digital_min: int
    digital_max: int
    prefiltering: str
    samples_per_record: int
    record_offset: int  # first sample of this signal inside a data record (in int16 samples)
    rate: Fraction  # samples per second, exact (samples_per_record / record duration)
    # why the signal cannot be read (a range field that is no number, no samples), None when it can: the file
    # stays readable, and the signal is dropped by name should a channel be taken from it
    problem: str | None = None

    @property
    def sampling_rate(self) -> float:
        """Native rate in Hz."""
        return float(self.rate)

    @property
    def gain(self) -> float:
        """Physical units per digital step."""
        return (self.physical_max - self.physical_min) / (self.digital_max - self.digital_min)

    @property
    def offset(self) -> float:
        """Physical value of digital 0."""
        return self.physical_min - self.gain * self.digital_min

    @property
    def is_annotation(self) -> bool:
        return normalise_label(self.label) == ANNOTATION_LABEL


@dataclass
class EdfHeader:
    """The file-level header plus what the file really holds.

    `n_records` is the number of whole data records that will be read (from the file size when the header's
    count is -1 or larger than the file); `n_records_header` is the count as written. `truncated` is True when
    the file ends before the header's count or inside a data record.
    """

    path: Path
    version: str
    patient: str
    recording: str
    startdate: str
    starttime: str
    header_bytes: int
    reserved: str
    n_records_header: int
    record_duration: Fraction  # seconds per data record
    signals: list[EdfSignalHeader]
    file_size: int
    n_records: int = 0
    truncated: bool = False
    warnings: list[str] = field(default_factory=list)

    @property
    def record_samples(self) -> int:
        """int16 samples in one data record (all signals)."""
        return sum(s.samples_per_record for s in self.signals)

    @property
    def duration_s(self) -> float:
        """Seconds covered by the whole data records read."""
        return float(self.n_records * self.record_duration)

    @property
    def labels(self) -> list[str]:
        """Labels of the data signals (annotation signals left out)."""
        return [s.label for s in self.signals if not s.is_annotation]

    def find(self, aliases: tuple[str, ...] | list[str]) -> EdfSignalHeader | None:
        """First data signal whose normalised label equals one of `aliases`, tried in alias order."""
        by_label: dict[str, EdfSignalHeader] = {}
        for signal in self.signals:
            if not signal.is_annotation:
                by_label.setdefault(normalise_label(signal.label), signal)  # first of duplicate labels wins
        for alias in aliases:
            found = by_label.get(normalise_label(alias))
            if found is not None:
                return found
        return None


def _text(raw: bytes) -> str:
    """A header field without its padding: spaces, as the standard has it, or NUL bytes, as some writers pad.
    EDF headers are ASCII, but writers put 'µ' as UTF-8 (0xC2 0xB5) or latin-1 (0xB5): UTF-8 is tried first, and
    latin-1, which reads any byte, where the field is not UTF-8."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    return text.strip(" \t\r\n\x0b\x0c\x00")


def _number(path: Path, what: str, raw: bytes, kind=float):
    """A numeric header field as `kind` (float, Decimal or int); an int field must be written as an integer
    ("125", or "125.0" as some writers put it): "124.9" or "1e2" would set a record layout other than the data's."""
    text = _text(raw)
    if kind is int:
        if not INTEGER.fullmatch(text):
            raise EdfError(f"{path}: header field {what} is {text!r}, expected an integer")
        return int(text.split(".")[0])
    try:
        value = Decimal(text) if kind is Decimal else kind(text)
        if not np.isfinite(float(value)):
            raise ValueError(text)
    except (ValueError, InvalidOperation, OverflowError):
        raise EdfError(f"{path}: header field {what} is {text!r}, expected a number") from None
    return value


def read_edf_header(path: str | Path) -> EdfHeader:
    """Parse the header of `path` and work out how many whole data records the file holds."""
    path = Path(path)
    try:
        file_size = os.path.getsize(path)
        with open(path, "rb") as handle:
            fixed = handle.read(256)
            if file_size == 0:
                raise EdfError(f"{path}: empty file")
            if len(fixed) < 256:
                raise EdfError(f"{path}: {file_size} bytes, too short for an EDF header (256 bytes)")
            if fixed[:1] == b"\xff":
                raise EdfError(f"{path}: BDF (24-bit) file; only 16-bit EDF is supported")
            if _text(fixed[:8]) != "0":
                raise EdfError(f"{path}: not an EDF file (version field {fixed[:8]!r}, expected '0')")
            n_signals = _number(path, "number of signals", fixed[252:256], int)
            if n_signals < 1:
                raise EdfError(f"{path}: header declares {n_signals} signals")
            block = handle.read(256 * n_signals)
    except OSError as err:
        raise EdfError(f"{path}: cannot read ({err.strerror or err})") from None
    if len(block) < 256 * n_signals:
        raise EdfError(f"{path}: file ends inside the signal headers ({n_signals} signals declared)")

    header = EdfHeader(
        path=path,
        version=_text(fixed[:8]),
        patient=_text(fixed[8:88]),
        recording=_text(fixed[88:168]),
        startdate=_text(fixed[168:176]),
        starttime=_text(fixed[176:184]),
        header_bytes=256 * (n_signals + 1),
        reserved=_text(fixed[192:236]),
        n_records_header=_number(path, "number of data records", fixed[236:244], int),
        record_duration=Fraction(_number(path, "data record duration", fixed[244:252], Decimal)),
        signals=[],
        file_size=file_size,
    )
    declared_bytes = _number(path, "bytes in header", fixed[184:192], int)
    if declared_bytes != header.header_bytes:
        header.warnings.append(f"header size field {declared_bytes} != 256*(signals+1) = {header.header_bytes}")
    if header.record_duration < 0:
        raise EdfError(f"{path}: data record duration {float(header.record_duration)} s, expected > 0")

    def column(start: int, width: int) -> list[bytes]:
        base = start * n_signals
        return [block[base + i * width : base + (i + 1) * width] for i in range(n_signals)]

    # Field widths of the signal header block, in spec order (each field repeated for every signal).
    widths = (
        ("label", 16),
        ("transducer", 80),
        ("dimension", 8),
        ("pmin", 8),
        ("pmax", 8),
        ("dmin", 8),
        ("dmax", 8),
        ("prefilter", 80),
        ("samples", 8),
        ("reserved", 32),
    )
    fields, start = {}, 0
    for name, width in widths:
        fields[name] = column(start, width)
        start += width
    offset = 0
    for i in range(n_signals):
        label = _text(fields["label"][i])
        what = f"signal {i} ({label!r})"
        samples = _number(path, f"samples per record of {what}", fields["samples"][i], int)  # the record layout
        if samples < 0:
            raise EdfError(f"{path}: {what} has {samples} samples per data record")
        ranges, problem = {}, None if samples else "0 samples per data record"
        for key, name, kind in (
            ("pmin", "physical minimum", float),
            ("pmax", "physical maximum", float),
            ("dmin", "digital minimum", int),
            ("dmax", "digital maximum", int),
        ):
            try:
                ranges[key] = _number(path, f"{name} of {what}", fields[key][i], kind)
            except EdfError:  # one unusable signal does not make the file unreadable
                ranges[key] = kind(0)
                problem = problem or f"header field {name} is {_text(fields[key][i])!r}, expected a number"
        if not all(DIGITAL_RANGE[0] <= ranges[key] <= DIGITAL_RANGE[1] for key in ("dmin", "dmax")):
            problem = problem or (
                f"digital range [{ranges['dmin']}, {ranges['dmax']}] outside the 16-bit samples' "
                f"[{DIGITAL_RANGE[0]}, {DIGITAL_RANGE[1]}]"
            )
        signal = EdfSignalHeader(
            index=i,
            label=label,
            transducer=_text(fields["transducer"][i]),
            physical_dimension=_text(fields["dimension"][i]),
            physical_min=ranges["pmin"],
            physical_max=ranges["pmax"],
            digital_min=ranges["dmin"],
            digital_max=ranges["dmax"],
            prefiltering=_text(fields["prefilter"][i]),
            samples_per_record=samples,
            record_offset=offset,
            rate=Fraction(samples) / header.record_duration if header.record_duration else Fraction(0),
            problem=problem,
        )
        header.signals.append(signal)
        offset += samples

    if header.record_duration == 0 and header.labels:  # EDF+: duration 0 only in annotation-only files
        raise EdfError(f"{path}: data record duration 0 s, expected > 0")
    record_bytes = 2 * header.record_samples
    if record_bytes == 0:
        raise EdfError(f"{path}: no signal has samples in a data record")
    if declared_bytes != header.header_bytes and _fits(file_size, declared_bytes, header, record_bytes):
        header.warnings[-1] += f"; the data read from byte {declared_bytes}, where the file size puts it"
        header.header_bytes = declared_bytes  # the file holds exactly the declared records after that many bytes
    data_bytes = file_size - header.header_bytes
    available = max(data_bytes, 0) // record_bytes
    partial = max(data_bytes, 0) % record_bytes
    declared = header.n_records_header
    if declared < -1:
        raise EdfError(f"{path}: header declares {declared} data records, expected -1 (unknown) or a count >= 0")
    if declared <= 0:  # -1: unknown (allowed while recording); 0: not updated when the file was closed
        what = "-1 (unknown)" if declared == -1 else "0"
        header.warnings.append(f"header record count {what}: counted {available} whole records from the file size")
    if declared > 0 and declared <= available:
        header.n_records = declared
        if available > declared or partial:
            header.warnings.append(
                f"{data_bytes - declared * record_bytes} bytes after the last declared record ignored"
            )
    else:
        header.n_records = available
        header.truncated = partial > 0 or declared > available
        if declared > available:
            header.warnings.append(f"header declares {declared} data records, file holds {available} whole records")
    if header.n_records == 0:
        raise EdfError(f"{path}: no complete data record ({data_bytes} data bytes, {record_bytes} per record)")
    check_layout(header, data_bytes, record_bytes)
    if header.reserved.upper().startswith("EDF+D"):
        check_contiguous(header)
    return header


def check_layout(header: EdfHeader, data_bytes: int, record_bytes: int) -> None:
    """Refuse a header (its `n_records` worked out) whose record layout cannot be the data's: a recording longer than `MAX_RECORDING_H` (a
    record duration off by a factor), or data longer than the declared records that holds exactly that many
    records of a larger size, and not a whole number of the header's (a samples-per-record field too small, e.g.
    0 for a signal that has samples, shifts every later sample into another signal). Bytes after the last record
    rarely divide so. Data SHORTER than the declared records is read as a truncated file: a file cut mid-record
    divides by the record count as often as a field too large would, and cut files are common."""
    declared, path = header.n_records_header, header.path
    hours = header.n_records * float(header.record_duration) / 3600
    if hours > MAX_RECORDING_H:
        raise EdfError(
            f"{path}: {header.n_records} data records of {float(header.record_duration):g} s make {hours:.0f} h, more than "
            f"the {MAX_RECORDING_H:g} h of any night (a wrong record duration?)"
        )
    implied = data_bytes // declared if declared > 1 else 0  # bytes per record if the data holds `declared`
    if data_bytes % record_bytes and data_bytes == implied * declared and record_bytes < implied < 2 * record_bytes:
        raise EdfError(
            f"{path}: the data holds {declared} records of {data_bytes // declared} bytes, not of the {record_bytes} "
            "bytes the signals' samples per data record add up to: a samples-per-record field is wrong, and every "
            "signal would be read misaligned"
        )


def _fits(file_size: int, header_bytes: int, header: EdfHeader, record_bytes: int) -> bool:
    """Whether the header's record count fills the file exactly after `header_bytes` (a header-size field that
    disagrees with 256 x (signals + 1) is believed only then), and not after the computed size."""
    declared = header.n_records_header
    if declared <= 0 or header_bytes < 256 or header_bytes > file_size:
        return False
    return file_size - header_bytes == declared * record_bytes != file_size - header.header_bytes


def read_tals(
    header: EdfHeader, signal: EdfSignalHeader, n_records: int | None = None
) -> Iterator[tuple[int, float, float | None, list[str]]]:
    """(data record, onset s, duration s or None, texts) of every TAL of one `EDF Annotations` signal, in file
    order (of the first `n_records` data records when given); onsets as written, from the header's start time.
    The first TAL of each record is its time-keeping TAL (empty text; EDF+ spec 2.2.4)."""
    if signal.samples_per_record <= 0:
        raise EdfError(f"{header.path}: its EDF Annotations signal has {signal.samples_per_record} samples per record")
    raw = read_digital(header, signal, n_records).astype("<i2").tobytes()  # (records * samples * 2,) bytes
    size = 2 * signal.samples_per_record
    for record in range(len(raw) // size):
        text = raw[record * size : (record + 1) * size].decode("utf-8", errors="replace")
        for tal in text.split("\x14\x00"):
            tal = tal.strip("\x00")
            if not tal:
                continue
            timing, *texts = tal.split("\x14")
            onset, _, duration = timing.partition("\x15")
            try:
                start, length = float(onset), float(duration) if duration else None
                if not np.isfinite([start, length if length is not None else 0.0]).all():
                    raise ValueError(timing)
            except ValueError:
                raise EdfError(f"{header.path}: malformed EDF+ annotation {tal!r} in data record {record}") from None
            yield record, start, length, texts


def check_contiguous(header: EdfHeader) -> None:
    """An EDF+D file is read only when its data records follow each other without a gap, as many recorders write
    EDF+D by default: each record's time-keeping onset must be the first one's plus its index times the record
    duration (1 ms of rounding allowed); otherwise an `EdfError` says where the first gap is."""
    if not header.labels:  # annotations only: no samples whose times could be wrong
        return
    signal = next((s for s in header.signals if s.is_annotation), None)
    if signal is None:
        raise EdfError(f"{header.path}: EDF+D file without an 'EDF Annotations' signal: its records' times are unknown")
    first: dict[int, float] = {}
    for record, onset, _, _ in read_tals(header, signal):
        first.setdefault(record, onset)
    step = float(header.record_duration)
    for record in range(header.n_records):
        if record not in first:
            raise EdfError(f"{header.path}: EDF+D data record {record} has no time-keeping annotation")
        gap = first[record] - first[0] - record * step
        if abs(gap) > 1e-3:
            raise EdfError(
                f"{header.path}: EDF+D (discontinuous) with a gap: data record {record} starts at {first[record]:g} s, "
                f"{gap:+g} s from where the record before it ends; recordings with gaps are not supported (export "
                "each continuous segment as its own EDF+C file)"
            )
    header.warnings.append("EDF+D without a gap between its data records: read as continuous")


def read_digital(header: EdfHeader, signal: EdfSignalHeader, n_records: int | None = None) -> np.ndarray:
    """Digital samples of one signal, (n_records * samples_per_record,) int16 at the native rate.

    `n_records` limits the read to the first records (default: all whole records of the file).
    """
    if signal.digital_max <= signal.digital_min:
        raise EdfError(
            f"{header.path}: signal {signal.label!r} has digital range "
            f"[{signal.digital_min}, {signal.digital_max}], expected max > min"
        )
    n = header.n_records if n_records is None else max(0, min(n_records, header.n_records))
    try:
        records = np.memmap(
            header.path, dtype="<i2", mode="r", offset=header.header_bytes, shape=(n, header.record_samples)
        )
    except (OSError, ValueError) as err:
        raise EdfError(f"{header.path}: cannot map the data records ({err})") from None
    start = signal.record_offset
    # (n_records, samples_per_record) strided view -> one contiguous copy in time order.
    digital = np.ascontiguousarray(records[:, start : start + signal.samples_per_record]).reshape(-1)
    del records
    return digital


def to_physical(digital: np.ndarray, signal: EdfSignalHeader, scale: float = 1.0) -> np.ndarray:
    """Physical values (float64, the signal's unit times `scale`) from digital samples."""
    physical = digital.astype(np.float64)
    physical *= signal.gain * scale
    physical += signal.offset * scale
    return physical


def read_signal(path_or_header: str | Path | EdfHeader, label: str) -> tuple[np.ndarray, float]:
    """Physical samples (float64, the signal's own unit) and native rate (Hz) of the signal labelled `label`."""
    header = path_or_header if isinstance(path_or_header, EdfHeader) else read_edf_header(path_or_header)
    signal = header.find([label])
    if signal is None:
        raise EdfError(f"{header.path}: no signal labelled {label!r} (labels: {', '.join(header.labels)})")
    return to_physical(read_digital(header, signal), signal), signal.sampling_rate
