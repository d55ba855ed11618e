"""Sleep scoring in the formats users have, all read into the one container the labels are made from
(`dataset.nsrr_xml.NsrrAnnotations`: stage events + scored events, seconds from the EDF start), and the rules that
pair an EDF with its annotation file and name its subject (dataset/README.md "Annotation formats" and "Pairing").

Formats (`read_annotations` picks by content and name), and when their events count as scored (`events_scored`;
a scoring without events gives event labels "not scored", flags -1 and seconds NaN, never "no event"):
- NSRR XML (`<name>-nsrr.xml`, root `PSGAnnotation`): `dataset.nsrr_xml.parse_nsrr_xml`. Events always scored.
- Compumedics Profusion XML (`<name>-profusion.xml`, root `CMPStudyConfig`, in any encoding its declaration or
  byte-order mark names, UTF-16 included): `<SleepStages><SleepStage>` one R&K code per epoch of `EpochLength` s
  from t = 0; `<ScoredEvents><ScoredEvent>` with `Name`, `Start`, `Duration` (s) and, for desaturations,
  `LowestSpO2` (the nadir) and `Desaturation` (the drop, %). The drop decides the 3 % / 4 % hypopnea rules, and
  the events carry it as NSRR XML does (`spo2_baseline` - `spo2_nadir`): baseline = nadir + drop. A drop without
  a nadir cannot be kept that way (the desaturation then counts as >= 3 %, not >= 4 %). Events scored when the
  file has a `ScoredEvents` element (an empty one: scored, none found); without it the file is a hypnogram.
- EDF+ annotations: a separate annotation EDF+ (Sleep-EDF `*-Hypnogram.edf`) or the `EDF Annotations` signal of
  the recording itself. `Sleep stage W/1/2/3/4/R/?` (also `N1/N2/N3`) and `Movement time` are stage events (an
  annotation without a duration covers one 30-s epoch); every other text is a scored event named by its text.
  EDF+ has no event list of its own, so events count as scored only when at least one annotation is an apnea or
  a hypopnea: arousals, desaturations or markers such as "Lights off" alone do not show respiratory scoring (an
  event-free night in EDF+ then reads "not scored", unknown rather than a false "no event").
  Onsets are relative to the annotation file's header start time, shifted to the recording's when both are
  given; when the two dates are equal or unknown (EDF+ `Startdate X`), a clock difference of more than 12 h is
  taken across midnight (wrapped into (-12 h, 12 h]) and noted in `warnings`. The recording's samples begin at
  its first data record, whose time-keeping TAL (EDF+ spec 2.2.4: usually 0 or a fraction of a second, not
  always) says how long after the header start time that is: every onset is shifted by it too, so t = 0 is the
  first sample, as the signals are read.
- Plain hypnogram text or CSV (`<name>.hypnogram.txt` / `.csv`): one stage per 30-s epoch from t = 0, one per line,
  or a column named `stage` (also `sleep_stage`, `hypnogram`) of a delimited file (`,` `;` or tab); blank
  lines and `#` comments are ignored. Tokens per `dataset.constants.STAGE_TOKENS`: W/Wake/0, N1/S1/1, N2/S2/2,
  N3/S3/3 and N4/S4/4 (-> N3), R/REM/5; `?`, U, M/MT/Movement, A/Artifact, 6-9, -1 -> unscored. Code 4 is R&K
  stage 4, not REM (write R for REM), except in a YASA file (name containing "yasa", or any code -2, as
  `downstream/predict.py` writes `hypnogram-yasa.txt`): there 0-4 are W N1 N2 N3 REM and -2 / -1 unscored.
  Stages only: events never scored.
"""

from __future__ import annotations

import csv
import datetime
import io
import math
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from dataset.constants import APNEA_TYPES, EPOCH_S, STAGE_CODE_TO_CLASS, STAGE_UNSCORED
from dataset.edf_reader import EdfError, EdfHeader, read_edf_header, read_tals
from dataset.nsrr_xml import (
    NsrrAnnotations,
    XmlError,
    event_seconds,
    event_type,
    local_tag,
    optional_float,
    parse_nsrr_xml,
    stage_of_text,
)

Annotations = NsrrAnnotations  # one container for every format

# Annotation file names for an EDF `<name>.edf`, in the order they are preferred (lower-case suffixes).
ANNOTATION_SUFFIXES = ("-nsrr.xml", "-profusion.xml", ".hypnogram.txt", ".hypnogram.csv", ".xml")
SCORING_EXTENSIONS = frozenset(Path(suffix).suffix for suffix in ANNOTATION_SUFFIXES)  # .xml, .txt, .csv
HYPNOGRAM_EDF = re.compile(r"^(?P<key>.{7}).*[-_]hypnogram\.edf$", re.IGNORECASE)
SLEEP_EDF_NAME = re.compile(r"^(?P<study>SC4|ST7)(?P<subject>\d{2})(?P<night>\d)\w{2}(?:-PSG)?$", re.IGNORECASE)
BIDS_NAME = re.compile(r"^sub-(?P<subject>[A-Za-z0-9]+)(?:_|$)")  # sub-01_ses-2_task-sleep_run-1_eeg
STAGE_COLUMNS = ("stage", "sleep_stage", "hypnogram")
ONSET_COLUMNS = ("onset", "onset_s", "start_s", "start")  # seconds from the recording's start (BIDS, predict.py)
EPOCH_COLUMNS = ("epoch", "epoch_index", "epoch_number")
DURATION_COLUMNS = ("duration", "duration_s")  # a row spanning several epochs (a run of one stage), in seconds
YASA_CODES = {"0": 0, "1": 1, "2": 2, "3": 3, "4": 4, "-1": STAGE_UNSCORED, "-2": STAGE_UNSCORED}
DAY_S = 86400.0
CLOCK_TOLERANCE_S = 60.0  # an NSRR ClockTime this close to the EDF's start time is the same recording


# ------------------------------------------------------------------------------------------------ names
def annotation_keys(edf_name: str) -> list[str]:
    """Pairing keys of an EDF file name, most preferred first: `<name>-nsrr.xml`, `<name>-profusion.xml`,
    `<name>.hypnogram.txt`, `<name>.hypnogram.csv`, `<name>.xml` (lower-case), then the Sleep-EDF key
    `hypnogram:<first 7 characters>` (`SC4001E0-PSG.edf` pairs with `SC4001EC-Hypnogram.edf`)."""
    stem = Path(edf_name).stem.lower()
    keys = [stem + suffix for suffix in ANNOTATION_SUFFIXES]
    if SLEEP_EDF_NAME.match(Path(edf_name).stem):
        keys.append(f"hypnogram:{stem[:7]}")
    return keys


def annotation_key(file_name: str) -> str | None:
    """The pairing key an annotation file offers (see `annotation_keys`), or None for other files."""
    name = file_name.lower()
    match = HYPNOGRAM_EDF.match(file_name)
    if match:
        return f"hypnogram:{match['key'].lower()}"
    if name.endswith(".edf"):
        return None
    return name if any(name.endswith(s) for s in ANNOTATION_SUFFIXES) else None


def is_annotation_edf(file_name: str) -> bool:
    """True for an annotation-only EDF+ by name (`*-Hypnogram.edf`), which is never a recording."""
    return HYPNOGRAM_EDF.match(file_name) is not None


def recording_of(file_name: str) -> str:
    """Recording id an unpaired annotation file stands for: its name without the annotation suffix."""
    name = file_name
    for suffix in ANNOTATION_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def unpaired_scorings_beside(edf_path: Path) -> list[str]:
    """Files beside an EDF named like it (any case) with the extension of a pairing suffix (`ANNOTATION_SUFFIXES`),
    e.g. a browser's second download "<stem>-nsrr (1).xml", that the pairing did not take; a file that starts
    with the name of another EDF of the folder (`<stem>-x-nsrr.xml` beside `<stem>-x.edf`) is that night's and
    not named."""
    stem = edf_path.stem.lower()
    try:
        names = [p.name for p in edf_path.parent.iterdir()]
    except OSError:
        return []
    others = [n[:-4].lower() for n in names if n.lower().endswith(".edf") and n[:-4].lower() != stem]
    return sorted(
        name
        for name in names
        if name.lower().startswith(stem)
        and Path(name).suffix.lower() in SCORING_EXTENSIONS
        and not name[len(stem) : len(stem) + 1].isalnum()
        and not any(len(other) > len(stem) and name.lower().startswith(other) for other in others)
    )


def subject_of(recording_id: str, subject_regex: str | re.Pattern | None = None) -> str:
    """Subject id of a recording (dataset/README.md "Subject ids"): with `subject_regex`, its one group
    (`re.search`; ValueError when it does not match); Sleep-EDF names `SC4ssN..` / `ST7ssN..` -> `SCss` / `STss`;
    BIDS names `sub-<label>_...` -> `<label>` (every session and run of a participant); else the NSRR rule, the
    part after the last '-' (`shhs1-200001` -> `200001`)."""
    if subject_regex is not None:
        pattern = re.compile(subject_regex) if isinstance(subject_regex, str) else subject_regex
        match = pattern.search(recording_id)
        if match is None:
            raise ValueError(f"--subject-regex {pattern.pattern!r} does not match {recording_id!r}")
        return match.group(1)
    match = SLEEP_EDF_NAME.match(recording_id)
    if match:
        return f"{match['study'][:2].upper()}{match['subject']}"
    match = BIDS_NAME.match(recording_id)
    if match:
        return match["subject"]
    return recording_id.rsplit("-", 1)[-1]


def cohort_of_name(recording_id: str) -> str | None:
    """Cohort a file name itself tells: `sleep-edf-sc` / `sleep-edf-st` for Sleep-EDF names, else None."""
    match = SLEEP_EDF_NAME.match(recording_id)
    return f"sleep-edf-{match['study'][:2].lower()}" if match else None


def check_subject_regex(text: str) -> re.Pattern:
    """Compile a --subject-regex; ValueError unless it is valid and has exactly one group."""
    try:
        pattern = re.compile(text)
    except re.error as err:
        raise ValueError(f"--subject-regex {text!r}: {err}") from None
    if pattern.groups != 1:
        raise ValueError(f"--subject-regex {text!r}: needs exactly one group (the subject id), has {pattern.groups}")
    return pattern


# ------------------------------------------------------------------------------------------------ reading
EDF_STAGE_WORDS = ("W", "WAKE", "N1", "N2", "N3", "N4", "R", "REM", "MOVEMENT TIME")


def edf_stage_of_text(text: str) -> int | None:
    """`stage_of_text` for EDF+ annotation texts, where a bare code ("1", "A", "?") is an event, not a stage:
    only `Sleep stage ...`, `Movement time` and the stage words W/Wake/N1-N4/R/REM count."""
    token = " ".join(text.split()).upper()
    if token.startswith(("SLEEP STAGE ", "SLEEP_STAGE_")) or token in EDF_STAGE_WORDS:
        return stage_of_text(text)
    return None


def _container(
    path: Path,
    epoch_length: float,
    stages: list[tuple[float, float, int, str]],
    events: list[dict],
    events_scored: bool,
    warnings: list[str] | None = None,
) -> NsrrAnnotations:
    return NsrrAnnotations(
        path=path,
        epoch_length=epoch_length,
        stage_start=np.array([s[0] for s in stages], dtype=np.float64),
        stage_duration=np.array([s[1] for s in stages], dtype=np.float64),
        stage_class=np.array([s[2] for s in stages], dtype=np.int8),
        stage_concept=[s[3] for s in stages],
        events=events,
        events_scored=events_scored,
        warnings=warnings or [],
    )


def _event(
    path: Path,
    name: str,
    start: str | float | None,
    duration: str | float | None,
    nadir: str | None = None,
    drop: str | None = None,
) -> dict:
    """One scored event; a desaturation's drop (%) is kept as its baseline, nadir + drop, as NSRR XML gives it."""
    values = [
        event_seconds(path, f"event {name!r}", what, text) for what, text in (("Start", start), ("Duration", duration))
    ]
    spo2 = optional_float(nadir)
    return {
        "type": event_type(name),
        "concept": name,
        "start_s": values[0],
        "duration_s": values[1],
        "spo2_nadir": spo2,
        "spo2_baseline": spo2 + optional_float(drop),
    }


def parse_profusion_xml(path: str | Path) -> NsrrAnnotations:
    """Compumedics Profusion XML (`CMPStudyConfig`): stages one per epoch, events by Name/Start/Duration, the
    SpO2 nadir and drop of a desaturation by LowestSpO2/Desaturation."""
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as err:
        raise XmlError(f"{path}: malformed XML ({err})") from None
    except OSError as err:
        raise XmlError(f"{path}: cannot read ({err.strerror or err})") from None
    epoch_length = 30.0
    found = next((el for el in root.iter() if local_tag(el.tag) == "epochlength"), None)
    if found is not None:
        try:
            epoch_length = float((found.text or "").strip())
        except ValueError:
            epoch_length = math.nan
        if not (math.isfinite(epoch_length) and epoch_length > 0):
            raise XmlError(f"{path}: EpochLength is {found.text!r}, expected a number of seconds > 0")
    codes = [(el.text or "").strip() for el in root.iter() if local_tag(el.tag) == "sleepstage"]
    stages = [
        (k * epoch_length, epoch_length, STAGE_CODE_TO_CLASS.get(code, STAGE_UNSCORED), code)
        for k, code in enumerate(codes)
    ]
    events = []
    for element in (el for el in root.iter() if local_tag(el.tag) == "scoredevent"):
        fields = {}
        for child in element:
            fields.setdefault(local_tag(child.tag), (child.text or "").strip())
        name = fields.get("name", "")
        start, duration, nadir, drop = (fields.get(k) for k in ("start", "duration", "lowestspo2", "desaturation"))
        events.append(_event(path, name, start, duration, nadir, drop))
    if not codes and not events:
        raise XmlError(f"{path}: no SleepStage or ScoredEvent elements; not a Profusion annotation file")
    events_scored = any(local_tag(el.tag) == "scoredevents" for el in root.iter())  # else a hypnogram export
    return _container(path, epoch_length, stages, events, events_scored)


def _clock_s(header: EdfHeader) -> float | None:
    """Seconds since midnight of the header's start time ("hh.mm.ss"; "hh:mm:ss" as some writers put it), or None
    when it is unreadable."""
    return _clock_text_s(header.starttime, whole=True)


def _clock_text_s(text: str, whole: bool) -> float | None:
    """Seconds since midnight of "hh.mm.ss" or "hh:mm:ss": the whole text, or (`whole=False`) its last such time, as
    NSRR writes a ClockTime ("00.00.00 22.00.00", the first part a placeholder date), the last with colons where
    there is one ("22:00:00 01.01.01"). None when unreadable."""
    pattern = r"(\d{1,2})[.:](\d{1,2})[.:](\d{1,2})(?:\.\d+)?"
    if whole:
        found = re.fullmatch(rf"\s*{pattern}\s*", text)
    else:
        matches = list(re.finditer(rf"(?<![\d.:]){pattern}(?![\d.:])(?:\s*([AaPp])\.?[Mm]\.?)?", text))
        colon = [m for m in matches if ":" in m.group(0)]  # "22:00:00 01.01.01": the colons mark the time
        found = (colon or matches)[-1] if matches else None
    if not found:
        return None
    hour, minute, second = (int(v) for v in found.groups()[:3])
    if not whole and found.group(4):  # "11:01:25 PM": a 12-hour clock, 12 AM the midnight hour
        if not 1 <= hour <= 12:
            return None
        hour = hour % 12 + (12 if found.group(4).lower() == "p" else 0)
    return 3600.0 * hour + 60.0 * minute + second if hour < 24 and minute < 60 and second < 60 else None


MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")


def start_date(header: EdfHeader) -> datetime.date | None:
    """The header's start date: an EDF+ recording field's "Startdate dd-MMM-yyyy" (four-digit year), else the
    start-date field ("dd.mm.yy", years 1985-2084); None when unreadable (e.g. 00.00.00, blank)."""
    found = re.match(r"startdate\s+(\d{1,2})-([a-z]{3})-(\d{4})\b", header.recording.strip(), re.IGNORECASE)
    if header.reserved.upper().startswith("EDF+") and found and found.group(2).upper() in MONTHS:
        try:
            return datetime.date(int(found.group(3)), MONTHS.index(found.group(2).upper()) + 1, int(found.group(1)))
        except ValueError:
            pass  # an impossible date there: the start-date field may still be read
    try:
        day, month, year = (int(v) for v in header.startdate.split("."))
        return datetime.date(1985 + (year - 85) % 100, month, day)
    except ValueError:
        return None


def _date_unknown(header: EdfHeader) -> bool:
    """True when an EDF+ file says its start date is unknown (recording field `Startdate X`)."""
    return header.reserved.upper().startswith("EDF+") and header.recording.upper().startswith("STARTDATE X")


def start_offset(annotation: EdfHeader, recording: EdfHeader) -> tuple[float, str | None]:
    """Seconds from the recording's start to the annotation file's start, and a warning when it was taken across
    midnight or could not be taken at all. Anonymised files often carry one date for both (01.01.85), none
    (`Startdate X`) or an unreadable one (00.00.00), so a scoring started at 00:00:20 for a recording started at
    23:59:50 the same "day" would be placed almost 24 h early: unless both dates are known and differ, the clock
    difference is wrapped into (-12 h, 12 h]. An unreadable start time, or 00.00.00 in one file beside a real
    clock more than `CLOCK_TOLERANCE_S` from midnight in the other (a start not kept; a scoring started at
    midnight 30 s after its recording is read as written), puts the scoring at the recording's start, with a
    warning."""
    mine, theirs = _clock_s(annotation), _clock_s(recording)
    if mine is None or theirs is None:
        return 0.0, (
            f"{annotation.path}: start time {annotation.starttime!r} or the recording's {recording.starttime!r} "
            "unreadable; the scoring is taken to start with the recording"
        )
    offset = mine - theirs
    near = abs(offset - DAY_S * round(offset / DAY_S)) <= CLOCK_TOLERANCE_S  # e.g. 23.59.30 and 00.00.00
    if (mine == 0.0) != (theirs == 0.0) and not near:  # 00.00.00 beside a real clock: a start that was not kept
        return 0.0, (
            f"{annotation.path}: start time {annotation.starttime.strip()}, the recording's "
            f"{recording.starttime.strip()}; 00.00.00 is what anonymisers write for a start not kept, so the "
            "scoring is taken to start with the recording"
        )
    days = (start_date(annotation), start_date(recording))
    apart = None if None in days else (days[0] - days[1]).days
    # a scoring started one day after (or before) its recording's date: across midnight as written; dates further
    # apart are no night's (a century read two ways, an anonymiser's shift): the clocks are wrapped as below
    if apart in (-1, 1) and not (_date_unknown(annotation) or _date_unknown(recording)):
        return offset + DAY_S * apart, None
    wrapped = offset - DAY_S * math.ceil((offset - DAY_S / 2) / DAY_S)
    if wrapped == offset:
        return offset, None
    return wrapped, (
        f"{annotation.path}: starts at {annotation.starttime}, the recording at {recording.starttime} with "
        f"dates equal, unknown or days apart; taken across midnight ({wrapped:+g} s, not {offset:+g} s)"
    )


def edf_annotation_texts(header: EdfHeader) -> list[tuple[float, float | None, str]]:
    """(onset s, duration s or None, text) of every annotation of the file's `EDF Annotations` signals, in file
    order; onsets from the header's start time; the time-keeping TAL of each record (empty text) is left out."""
    return [
        (onset, duration, text)
        for signal in header.signals
        if signal.is_annotation
        for _, onset, duration, texts in read_tals(header, signal)
        for text in texts
        if text.strip()
    ]


def first_sample_s(header: EdfHeader) -> float:
    """Seconds from the header's start time to the first sample of the file's signals: the onset of the first
    data record's time-keeping TAL (the first TAL of its first `EDF Annotations` signal, empty text; EDF+ spec
    2.2.4). 0 for a plain EDF, and for an annotation-only file, which has no samples to align with."""
    signal = next((s for s in header.signals if s.is_annotation), None)
    if signal is None or not header.labels:
        return 0.0
    _, onset, _, texts = next(read_tals(header, signal, n_records=1), (0, 0.0, None, [""]))
    return onset if texts[:1] == [""] else 0.0  # a first TAL with a text is not a time-keeping TAL


def parse_edf_annotations(path: str | Path, recording: EdfHeader | None = None) -> NsrrAnnotations:
    """EDF+ annotations of `path` (a Sleep-EDF hypnogram, or the recording itself), times in seconds from the first
    sample of `recording` (of `path` itself when not given)."""
    path = Path(path)
    header = recording if recording is not None and Path(recording.path) == path else read_edf_header(path)
    if not any(s.is_annotation for s in header.signals):
        raise EdfError(f"{path}: no 'EDF Annotations' signal; not an EDF+ annotation file")
    offset, warning = 0.0, None
    if recording is not None and header is not recording:
        offset, warning = start_offset(header, recording)
    # onsets count from the header's start time, the samples (and so the epochs) from the first data record's start
    offset -= first_sample_s(header if recording is None else recording)
    stages, events = [], []
    for onset, duration, text in edf_annotation_texts(header):
        stage = edf_stage_of_text(text)
        start = event_seconds(path, f"annotation {text!r}", "Start", onset + offset)  # a finite time, or the fault
        if stage is not None:  # without a duration (or MNE's point annotation, 0 s) a stage covers one epoch
            span = event_seconds(path, f"stage {text!r} at {onset:g} s", "Duration", duration or float(EPOCH_S))
            stages.append((start, span, stage, text))
        elif not duration and event_type(text) != "other":  # an apnea without its length: epochs unknowable
            raise XmlError(
                f"{path}: event {text!r} at {onset:g} s has no duration (or 0 s), so its epochs cannot be labelled"
            )
        else:
            events.append(_event(path, text, start, 0.0 if duration is None else duration))
    # respiratory scoring shows in an apnea or hypopnea; arousals or desaturations alone do not say that a night
    # without apneas was scored for them (its AHI would read 0 instead of unknown)
    events_scored = any(e["type"] in (*APNEA_TYPES, "hypopnea") for e in events)
    return _container(path, float(EPOCH_S), stages, events, events_scored, [warning] if warning else [])


def decode_text(data: bytes) -> str:
    """A text file's bytes as text: UTF-16 when it starts with its byte-order mark (spreadsheets' "Unicode text"),
    else UTF-8 (a byte-order mark dropped), else latin-1, which reads any byte. Stage tokens are ASCII, so a
    comment or a name in another encoding (`# Patient: Müller` in latin-1) does not stop the file; a token
    garbled by the wrong guess is refused as an unknown stage."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError:
            pass
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def parse_hypnogram_text(path: str | Path) -> NsrrAnnotations:
    """A per-epoch hypnogram: one stage token per line, or the `stage` column of a delimited file (with, if
    given, each row's start (`ONSET_COLUMNS`) or epoch number, and its duration when a row is a run of epochs)."""
    path = Path(path)
    try:
        text = decode_text(path.read_bytes())
    except OSError as err:
        raise XmlError(f"{path}: cannot read hypnogram ({err.strerror or err})") from None
    lines = [
        (n, line.strip())
        for n, line in enumerate(text.splitlines(), 1)
        if line.strip() and not line.lstrip().startswith("#")
    ]
    if not lines:
        raise XmlError(f"{path}: empty hypnogram")
    first = lines[0][1]
    delimiter = next((d for d in ("\t", ";", ",") if d in first), None)
    if delimiter is not None:
        rows = list(csv.reader(io.StringIO("\n".join(line for _, line in lines)), delimiter=delimiter))
        header = [h.strip().lower() for h in rows[0]]
        column = next((header.index(c) for c in STAGE_COLUMNS if c in header), None)
        if column is None:
            raise XmlError(f"{path}: no stage column (expected a header naming one of {', '.join(STAGE_COLUMNS)})")
        tokens = [(n, row[column].strip() if column < len(row) else "") for (n, _), row in zip(lines[1:], rows[1:])]
        line_numbers = [n for n, _ in lines[1:]]
        durations = _row_numbers(path, header, DURATION_COLUMNS, rows[1:], line_numbers, blank=float(EPOCH_S))
        starts = _stage_starts(path, header, rows[1:], line_numbers, durations)
    else:
        tokens = lines[1:] if first.lower() in STAGE_COLUMNS else lines
        starts = durations = None
    yasa = "yasa" in path.name.lower() or any(token == "-2" for _, token in tokens)
    stages = []
    for k, (line_no, token) in enumerate(tokens):
        stage = YASA_CODES.get(token) if yasa and token.lstrip("-").isdigit() else stage_of_text(token)
        if stage is None:
            raise XmlError(
                f"{path}: line {line_no}: unknown stage {token!r} (accepted: W N1 N2 N3 N4 R REM ? "
                f"or R&K codes 0-5, 4 = stage 4, 5 = REM)"
            )
        start = k * float(EPOCH_S) if starts is None else starts[k]
        stages.append((start, float(EPOCH_S) if durations is None else durations[k], stage, token))
    return _container(path, float(EPOCH_S), stages, [], events_scored=False)


def _row_numbers(
    path: Path,
    header: list[str],
    names: tuple[str, ...],
    rows: list[list[str]],
    line_numbers: list[int],
    blank: float | None = None,
) -> list[float] | None:
    """The numbers (>= 0) of the first column of `header` named in `names`, one per row; None without such a
    column. With `blank`, an empty, `n/a` or 0 cell reads as `blank` (a BIDS duration not given: one epoch)."""
    column = next((header.index(c) for c in names if c in header), None)
    if column is None:
        return None
    values = []
    for line_no, row in zip(line_numbers, rows):
        text = row[column].strip() if column < len(row) else ""
        if blank is not None and text.lower() in ("", "n/a", "na"):
            values.append(blank)
            continue
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < 0:
            raise XmlError(f"{path}: line {line_no}: column {header[column]!r} is {text!r}, expected a number >= 0")
        values.append(blank if blank is not None and value == 0 else value)
    return values


def _stage_starts(
    path: Path,
    header: list[str],
    rows: list[list[str]],
    line_numbers: list[int],
    durations: list[float] | None,
) -> list[float] | None:
    """Each row's start in seconds from a delimited hypnogram's onset column (`ONSET_COLUMNS`); without one, from
    the `durations` of the rows before it (rows of runs follow each other), or None to place row k at 30 k s. An
    epoch column (`EPOCH_COLUMNS`) without an onset column must count the rows from 0 or 1 without a gap: a
    hypnogram that skips or repeats epochs is refused, since its stages would be misplaced."""
    onsets = _row_numbers(path, header, ONSET_COLUMNS, rows, line_numbers)
    if onsets is not None:
        return onsets
    if durations is not None and not any(c in header for c in EPOCH_COLUMNS):
        return [float(sum(durations[:k])) for k in range(len(durations))]
    values = _row_numbers(path, header, EPOCH_COLUMNS, rows, line_numbers)
    if values is None:
        return None
    column = next(header.index(c) for c in EPOCH_COLUMNS if c in header)
    first = values[0] if values else 0.0
    if first not in (0.0, 1.0) or any(b - a != 1.0 for a, b in zip(values, values[1:])):
        raise XmlError(
            f"{path}: column {header[column]!r} does not count the rows 0, 1, 2, ... (or 1, 2, 3, ...) without a "
            "gap; give each row's start in seconds in an 'onset' column"
        )
    if durations is not None and any(d != EPOCH_S for d in durations):
        raise XmlError(
            f"{path}: rows numbered by {header[column]!r} last other than {EPOCH_S} s; give each row's start in "
            "seconds in an 'onset' column"
        )
    return None


def _root_tag(path: Path) -> str:
    """Local tag of an XML file's root element, from the parser's first element (the rest is not read): the
    parser decodes what the declaration or byte-order mark names (UTF-16 included), which a byte search cannot."""
    try:
        with open(path, "rb") as handle:
            _, root = next(ET.iterparse(handle, events=("start",)))
    except ET.ParseError as err:
        raise XmlError(f"{path}: malformed XML ({err}); not an NSRR or Profusion annotation file") from None
    except OSError as err:
        raise XmlError(f"{path}: cannot read ({err.strerror or err})") from None
    return local_tag(root.tag)


def annotation_format(path: str | Path) -> str:
    """ "nsrr", "profusion", "edf" or "hypnogram" by file name and, for XML, the root element."""
    path = Path(path)
    name = path.name.lower()
    if name.endswith(".edf"):
        return "edf"
    if name.endswith((".txt", ".csv", ".tsv")):
        return "hypnogram"
    return "profusion" if _root_tag(path) == "cmpstudyconfig" else "nsrr"


def read_annotations(path: str | Path, recording: EdfHeader | None = None) -> NsrrAnnotations:
    """Scoring of one night from any supported file (see the module docstring). `recording` is the header of
    the EDF the labels are for (aligns a separate EDF+ annotation file by start time)."""
    kind = annotation_format(path)
    if kind == "edf":
        return parse_edf_annotations(path, recording)
    if kind == "hypnogram":
        return parse_hypnogram_text(path)
    if kind == "profusion":
        return parse_profusion_xml(path)
    annotations = parse_nsrr_xml(path)
    if recording is not None:
        annotations.warnings.extend(recording_mismatch(annotations, recording))
    return annotations


def recording_mismatch(annotations: NsrrAnnotations, recording: EdfHeader) -> list[str]:
    """Warnings when an NSRR file's "Recording Start Time" record describes another recording than the EDF it is
    paired with: a ClockTime more than `CLOCK_TOLERANCE_S` from the EDF's start time (across midnight taken the
    short way; a 12-hour "11:01:25 PM" read as such), or a Duration at least one epoch longer or shorter than
    the EDF. A scoring copied from another night is otherwise silent: its stages simply label this night's
    epochs. Either field missing or unreadable, or either clock exactly 00:00:00 (what anonymisers and some
    writers put for a start not kept): nothing to compare."""
    notes = []
    theirs, mine = _clock_text_s(annotations.recording_clock, whole=False), _clock_s(recording)
    if theirs is not None and mine is not None and 0.0 not in (theirs, mine):  # 00.00.00: often "not kept"
        gap = (theirs - mine + DAY_S / 2) % DAY_S - DAY_S / 2
        if abs(gap) > CLOCK_TOLERANCE_S:
            notes.append(
                f"{annotations.path}: its Recording Start Time is {annotations.recording_clock.strip()!r}, the EDF "
                f"starts at {recording.starttime.strip()} ({gap:+g} s): is it this night's scoring?"
            )
    length, signal_s = annotations.recording_s, recording.duration_s
    if math.isfinite(length) and abs(length - signal_s) >= EPOCH_S:
        notes.append(
            f"{annotations.path}: scored on a recording of {length:g} s, the EDF holds {signal_s:g} s: is it this "
            "night's scoring?"
        )
    return notes


def has_embedded_stages(edf_path: str | Path) -> bool:
    """True when an EDF+C recording carries stage annotations in its own `EDF Annotations` signal, or annotations
    too malformed to tell: reading them as the night's scoring then fails the night with the fault named, where
    "no annotation file" would hide it."""
    try:
        header = read_edf_header(edf_path)
    except (EdfError, OSError, ValueError):
        return False
    if not header.reserved.upper().startswith("EDF+") or not any(s.is_annotation for s in header.signals):
        return False
    try:
        return any(edf_stage_of_text(text) is not None for _, _, text in edf_annotation_texts(header))
    except (EdfError, OSError, ValueError):
        return True
