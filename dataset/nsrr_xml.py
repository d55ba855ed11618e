"""NSRR XML annotations (`<name>-nsrr.xml`) read with an XML parser, never with line regexes (docs/data.md §2.1).

An NSRR file is a `PSGAnnotation` root holding `EpochLength` and `ScoredEvents/ScoredEvent` elements, each with
`EventType` ("name|code"), `EventConcept` ("name|code"), `Start` and `Duration` (seconds from the EDF start)
and, for desaturations, `SpO2Nadir` and `SpO2Baseline` (the drop is their difference). CRLF line ends and
one-line files parse like any other XML. Tag names and concepts are matched case-insensitively.

The result splits the events into stage events (an `EventType` `Stages|Stages`, or any stage concept of
`dataset.constants.STAGE_CONCEPTS` whatever its `EventType`, `Movement|6` and `Unscored|9` included; class -1 for
movement, unscored and unknown codes) and every other scored event (canonical type per
`dataset.constants.EVENT_CONCEPT_NAMES`, "arousal" for any concept whose name contains "arousal", else
"other"). The "Recording Start Time" record is no event: its `ClockTime` and `Duration` are kept
(`recording_clock`, `recording_s`) so that `dataset.annotations.read_annotations` can tell a scoring written for
another night from this one. An NSRR file is the scorer's whole event list, so its
events always count as scored: a night without a respiratory event or arousal in it had none.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dataset.constants import (
    EVENT_CONCEPT_NAMES,
    STAGE_CODE_TO_CLASS,
    STAGE_CONCEPTS,
    STAGE_NAMES,
    STAGE_TOKENS,
    STAGE_UNSCORED,
)

RECORDING_START = "recording start time"
LABEL_EVENT_KINDS = ("respiratory", "arousals", "arousal", "")  # EventType name parts whose events give labels
_CONCEPT_TO_TYPE = {concept: kind for kind, concepts in EVENT_CONCEPT_NAMES.items() for concept in concepts}


class XmlError(ValueError):
    """An annotation file that cannot be used; the message names the file and the problem."""


def _norm(text: str | None) -> str:
    """Lower-case, whitespace-collapsed text ("" for None)."""
    return " ".join((text or "").split()).lower()


def concept_name(concept: str) -> str:
    """Normalised name part of an NSRR "name|code" concept: `"Obstructive apnea|Obstructive Apnea"` -> `"obstructive apnea"`."""
    return _norm(concept.split("|", 1)[0])


def _stage_key(concept: str) -> str:
    name, _, code = concept.partition("|")
    return f"{_norm(name)}|{_norm(code)}"


def stage_of_text(text: str) -> int | None:
    """Stage class of an annotation text or hypnogram token (`"Sleep stage R"` -> 4, `"N2"` -> 2,
    `"Movement time"` -> -1); None when the text is not a stage."""
    token = " ".join(text.split()).upper()
    if token.startswith("SLEEP STAGE "):
        return STAGE_TOKENS.get(token[len("SLEEP STAGE ") :], STAGE_UNSCORED)
    if token.startswith("SLEEP_STAGE_"):  # EDF+ exports written by MNE
        return STAGE_TOKENS.get(token[len("SLEEP_STAGE_") :], STAGE_UNSCORED)
    return STAGE_TOKENS.get(token)


def _name_words(name: str) -> list[str]:
    """A concept's name part as lower-case words ("_" a space): `"Stage_R"` -> `["stage", "r"]`."""
    return _norm(name).replace("_", " ").split()


def _stage_name_class(name: str) -> int | None:
    """Stage class of a concept's name part written another way than NSRR's ("REM", "Stage R", "REM sleep", "Stage
    N2", "Stage 1 sleep", "Wake", "Movement"): `stage_of_text` of the name without "stage" / "sleep" words; None
    when it names no stage (a bare number does not, "Stage 1" does)."""
    words = _name_words(name)
    token = " ".join(w for w in words if w not in ("stage", "sleep")).upper()
    if not token or (token.lstrip("-").isdigit() and "stage" not in words):
        return None
    return stage_of_text(token)


def _code_class(code: str) -> int | None:
    """Stage class of a concept's code part when it is an NSRR stage code (0-5; 6-9 movement / unscored)."""
    code = _norm(code)
    if code in STAGE_CODE_TO_CLASS:
        return STAGE_CODE_TO_CLASS[code]
    return STAGE_UNSCORED if code in ("6", "7", "8", "9") else None


def stage_reading(concept: str) -> tuple[int | None, str]:
    """(stage class or None, how it was read) of a concept: an NSRR stage concept of
    `dataset.constants.STAGE_CONCEPTS` as written ("exact"); else its code when that is an NSRR stage code
    ("code": `REM|5`, `Stage R|5`); else its name when that names a stage ("name": `REM sleep`, `Stage N2`);
    None ("unknown") otherwise. Movement and unscored are class -1."""
    key = _stage_key(concept)
    if key in STAGE_CONCEPTS:
        return STAGE_CONCEPTS[key], "exact"
    name, _, code = concept.partition("|")
    by_code = _code_class(code)
    if by_code is not None:
        return by_code, "code"
    by_name = _stage_name_class(name)
    return (by_name, "name") if by_name is not None else (None, "unknown")


def stage_class(concept: str) -> int:
    """Stage class (0 W, 1 N1, 2 N2, 3 N3, 4 REM) of a stage event's concept (`stage_reading`); -1 for movement,
    unscored and a concept that names no stage."""
    value, _ = stage_reading(concept)
    return STAGE_UNSCORED if value is None else value


def is_stage_concept(concept: str) -> bool:
    """True for a concept that is a stage event whatever its EventType: an NSRR stage concept (a sleep class,
    `Movement|6` or `Unscored|9`), or one whose name says it is a stage (`REM sleep`, `Stage R|5`, `Sleep stage
    2`: "stage" or "sleep" and a stage), so that a stage written without a `Stages` EventType still stages and
    extends the scored night. A bare stage word (`Wake|Wake`, `Artifact`, `Movement`: a technician's note, an
    artefact mark) or code (`1|1`) is a stage only under `Stages|Stages`."""
    name = concept.partition("|")[0]
    says_stage = {"stage", "sleep"} & set(_name_words(name))
    return _stage_key(concept) in STAGE_CONCEPTS or (bool(says_stage) and _stage_name_class(name) is not None)


def event_type(concept: str) -> str:
    """Canonical event type of a concept or event text (docs/data.md §2.3) or "other": its name part, any case,
    with "_" read as a space, looked up in `dataset.constants.EVENT_CONCEPT_NAMES`."""
    name = concept_name(concept.replace("_", " "))
    if name in _CONCEPT_TO_TYPE:
        return _CONCEPT_TO_TYPE[name]
    return "arousal" if "arousal" in name else "other"


@dataclass
class NsrrAnnotations:
    """Stage events (arrays, file order) and the other scored events of one annotation file. Times in seconds.

    `events_scored` is False for a scoring that holds stages only (a hypnogram, see `dataset.annotations`): its
    event labels are "not scored", never "no event". `warnings` are notes for the manifest (e.g. a start time
    taken across midnight)."""

    path: Path
    epoch_length: float  # EpochLength as written (NSRR: 30 s); stages are placed by their own Start anyway
    stage_start: np.ndarray  # (n_stage_events,) float64
    stage_duration: np.ndarray  # (n_stage_events,) float64
    stage_class: np.ndarray  # (n_stage_events,) int8, -1 for movement / unscored / unknown
    stage_concept: list[str]
    events: list[dict]  # {"type", "concept", "start_s", "duration_s", "spo2_nadir", "spo2_baseline"} in file order
    events_scored: bool = True
    warnings: list[str] = field(default_factory=list)
    recording_clock: str = ""  # NSRR "Recording Start Time" ClockTime as written ("00.00.00 22.00.00"), or ""
    recording_s: float = math.nan  # that record's Duration: the length of the recording the file was scored on

    def __post_init__(self) -> None:
        """An event written twice (every field alike: a scoring merged from two exports, a copy-paste) is kept
        once, with a warning: counted twice it would double the night's event counts and AHI."""
        seen: set[tuple] = set()
        kept = []
        for event in self.events:  # NaN (a field not written) is alike to NaN here
            key = tuple((k, None if isinstance(v, float) and math.isnan(v) else v) for k, v in sorted(event.items()))
            if key not in seen:
                seen.add(key)
                kept.append(event)
        if len(kept) < len(self.events):
            self.warnings.append(
                f"{self.path}: {len(self.events) - len(kept)} event(s) written twice (the same type, concept, "
                "start, duration and SpO2 values) counted once"
            )
            self.events = kept

    @property
    def scored_s(self) -> float:
        """End of the last stage event (Start + Duration), 0 when there is none."""
        if self.stage_start.size == 0:
            return 0.0
        return float(np.max(self.stage_start + self.stage_duration))

    @property
    def staged_s(self) -> float:
        """End of the last stage event that stages (wake or a sleep stage; not movement or unscored), 0 when none:
        a recorder stopped before the scorer's last "unscored" block ends is no mismatch."""
        staged = self.stage_class >= 0
        return float(np.max((self.stage_start + self.stage_duration)[staged])) if staged.any() else 0.0


def local_tag(tag: object) -> str:
    """An element's tag without its XML namespace, lower-case ("" for comments and processing instructions)."""
    return tag.rsplit("}", 1)[-1].lower() if isinstance(tag, str) else ""


def _children(element: ET.Element) -> dict[str, str]:
    """Lower-case local tag -> text (stripped) of an element's direct children; the first of duplicates wins."""
    out: dict[str, str] = {}
    for child in element:
        out.setdefault(local_tag(child.tag), (child.text or "").strip())
    return out


def event_seconds(path: Path, which: str, what: str, text: str | float | None) -> float:
    """An event's `what` ("Start" or "Duration") in seconds; XmlError naming the file and the event (`which`)
    when it is missing, not a finite number, or a negative duration."""
    try:
        value = float(text) if text not in (None, "") else math.nan
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or (what == "Duration" and value < 0):
        raise XmlError(
            f"{path}: {which} has {what} {text!r}, expected a "
            f"{'non-negative ' if what == 'Duration' else ''}number of seconds"
        )
    return value


def optional_float(text: str | None) -> float:
    """A number written in an optional field (e.g. SpO2Nadir); NaN when absent or not a number."""
    try:
        return float(text) if text else math.nan
    except ValueError:
        return math.nan


def parse_nsrr_xml(path: str | Path) -> NsrrAnnotations:
    """Read one NSRR annotation file. Raises `XmlError` for malformed XML or a stage or labelled event without
    valid times; an event that gives no label (a marker such as "Lights off") without them is left out, with a
    warning."""
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as err:
        raise XmlError(f"{path}: malformed XML ({err})") from None
    except OSError as err:
        raise XmlError(f"{path}: cannot read ({err.strerror or err})") from None

    scored = [el for el in root.iter() if local_tag(el.tag) == "scoredevent"]
    root_tag = root.tag.rsplit("}", 1)[-1] if isinstance(root.tag, str) else ""
    if not scored and root_tag.lower() != "psgannotation":
        raise XmlError(f"{path}: no ScoredEvent elements and root <{root_tag}>; not an NSRR annotation file")

    epoch_length = 30.0
    for el in root.iter():
        if local_tag(el.tag) == "epochlength":
            try:
                epoch_length = float((el.text or "").strip())
            except ValueError:
                raise XmlError(f"{path}: EpochLength is {el.text!r}, expected seconds") from None
            break

    starts, durations, classes, stage_concepts, events, untimed = [], [], [], [], [], []
    read_as: dict[str, dict[str, int]] = {}  # stage concepts not written as NSRR writes them, by how they were read
    recording_clock, recording_s = "", math.nan
    for index, element in enumerate(scored):
        fields = _children(element)
        concept = fields.get("eventconcept", "")
        kind = _norm(fields.get("eventtype", "")).split("|", 1)[0]
        is_stage = kind in ("stages", "stage") or is_stage_concept(concept)
        if not is_stage and concept_name(concept) == RECORDING_START:
            if not recording_clock and math.isnan(recording_s):  # the first such record describes the file
                recording_clock = fields.get("clocktime", "")
                recording_s = optional_float(fields.get("duration"))
            continue
        which = f"ScoredEvent #{index} ({concept or 'no concept'})"
        # docs/data.md §2.3: labels come from Respiratory|Respiratory and Arousals|Arousals events (a missing EventType
        # is accepted); a labelled concept under any other EventType is kept as "other".
        kind_of = None if is_stage else event_type(concept) if kind in LABEL_EVENT_KINDS else "other"
        try:
            start = event_seconds(path, which, "Start", fields.get("start"))
            duration = event_seconds(path, which, "Duration", fields.get("duration"))
        except XmlError:
            if kind_of != "other":  # a stage or a labelled event without its times: the labels would be wrong
                raise
            untimed.append(which)  # a marker ("Lights off") without a Duration labels nothing: left out
            continue
        if is_stage:
            starts.append(start)
            durations.append(duration)
            value, how = stage_reading(concept)
            classes.append(STAGE_UNSCORED if value is None else value)
            stage_concepts.append(concept)
            if how in ("code", "name", "unknown"):
                read_as.setdefault(how, {}).setdefault(concept, 0)
                read_as[how][concept] += 1
            continue
        nadir, baseline = (optional_float(fields.get(name)) for name in ("spo2nadir", "spo2baseline"))
        events.append(
            {
                "type": kind_of,
                "concept": concept,
                "start_s": start,
                "duration_s": duration,
                "spo2_nadir": nadir,
                "spo2_baseline": baseline,
            }
        )
    marked = [el for el in root if local_tag(el.tag) == "eventsscored"]
    return NsrrAnnotations(
        events_scored=not (marked and (marked[0].text or "").strip().lower() == "false"),
        path=path,
        epoch_length=epoch_length,
        stage_start=np.asarray(starts, dtype=np.float64),
        stage_duration=np.asarray(durations, dtype=np.float64),
        stage_class=np.asarray(classes, dtype=np.int8),
        stage_concept=stage_concepts,
        events=events,
        recording_clock=recording_clock,
        recording_s=recording_s,
        warnings=(
            [
                f"{path}: {len(untimed)} event(s) that give no label left out for a missing or unreadable Start or "
                f"Duration ({', '.join(untimed[:3])}{', ...' if len(untimed) > 3 else ''})"
            ]
            if untimed
            else []
        )
        + stage_warnings(path, read_as),
    )


def stage_label(value: int) -> str:
    return STAGE_NAMES[value] if value >= 0 else "unscored"


def stage_warnings(path: Path, read_as: dict[str, dict[str, int]]) -> list[str]:
    """The manifest notes on stage concepts not written as NSRR writes them: read by their code or name (which
    class each became), or naming no stage (their epochs unscored, -1); five concepts of each kind at most, with
    their numbers of events, and how many more."""

    def more(concepts: dict[str, int]) -> str:
        return f", and {len(concepts) - 5} more" if len(concepts) > 5 else ""

    notes = []
    for how in ("code", "name"):
        if read_as.get(how):
            shown = ", ".join(
                f"'{c}' -> {stage_label(stage_class(c))} ({n})" for c, n in sorted(read_as[how].items())[:5]
            )
            notes.append(f"{path}: stage concept(s) read by their {how}: {shown}{more(read_as[how])}")
    if read_as.get("unknown"):
        shown = ", ".join(f"'{c}' ({n})" for c, n in sorted(read_as["unknown"].items())[:5])
        notes.append(
            f"{path}: stage event(s) of a concept that names no stage, their epochs unscored: {shown}"
            f"{more(read_as['unknown'])}"
        )
    return notes
