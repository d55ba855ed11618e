"""Which EDF signal (or difference of two) feeds each canonical channel: built-in alias tables per cohort plus an
optional user map. `resolve_channels` is the one place where channels are chosen; the parser
(`dataset.signal_processing.find_channels`) and inference (`downstream/predict.py` through `load_night`) use it.

Matching is case-, space- and punctuation-insensitive: `EOG(L)`, `EOG-L`, `eog l` and `EOG_L` are one label, as
are `C4-M1`, `C4_M1` and `C4:M1`. A channel's candidates are tried in priority levels; the first level that
finds something wins. Two *different* labels found at the same level (`C4-M1` and `C4-A1`, or a derivation
whose reference could be `A1` or `M1`) are an error naming both, never a silent pick.

A candidate is a label (`"EEG"`) or a derivation `"PLUS - MINUS"` (space, minus, space), computed at the native
rate as PLUS minus MINUS when both signals share a rate; each side may list alternatives with `|`
(`"C4 - M1|A1"`). A user candidate that is itself a label of the file is read as that label.

Tables (dataset/README.md "Channel maps"): SHHS aliases (`EEG` = C4-A1, `EEG(sec)` = C3-A2, ...), MESA aliases
(`EEG3` = C4-M1; `EEG1` = Fz-Cz and `EEG2` = Cz-Oz are non-standard and never fill an EEG slot on their own)
and common AASM export labels and referential derivations shared by every cohort (MrOS, CFS, CHAT, WSC,
clinical exports, Sleep-EDF's non-EEG channels). The cohort is taken from its name (`shhs1`, `mesa`, ...) or,
when unknown, from the labels (`EEG3` marks a MESA file); an unknown cohort gets the SHHS table.

Non-standard EEG derivations (Fpz-Cz, Pz-Oz, Fz-Cz, Cz-Oz, ...) fill `eeg_c4` / `eeg_c3` only through a user
map, and the `Source` says so (`nonstandard`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from dataset.constants import CHANNEL_BY_NAME

DERIVATION_SEP = " - "  # "PLUS - MINUS"
EEG_SLOTS = ("eeg_c4", "eeg_c3")

# Common AASM export labels and referential derivations: every cohort's last resort. Each tuple is one priority
# level (labels, or derivations "PLUS - MINUS" with `|` alternatives); levels are tried in order.
COMMON_LEVELS: dict[str, tuple[tuple[str, ...], ...]] = {
    "eeg_c4": (("C4-M1", "C4-A1", "EEG C4-M1", "EEG C4-A1"), ("C4 - M1|A1",)),
    "eeg_c3": (("C3-M2", "C3-A2", "EEG C3-M2", "EEG C3-A2"), ("C3 - M2|A2",)),
    "eog_l": (
        ("EOG(L)",),
        ("E1-M2", "E1-A2", "LOC-M2", "LOC-A2", "EOG E1-M2", "EOG LOC-A2"),
        ("LOC|E1 - M2|A2",),
        ("LOC-A1", "EOG LOC-A1", "E1-M1", "EOG E1-M1"),  # one mastoid for both eyes (Alice, some Natus montages)
    ),
    "eog_r": (
        ("EOG(R)",),
        ("E2-M1", "E2-A1", "ROC-M1", "ROC-A1", "E2-M2", "EOG E2-M1", "EOG ROC-A1", "EOG E2-M2"),
        ("ROC|E2 - M1|A1",),
        ("ROC-A2", "EOG ROC-A2"),
    ),
    "emg": (
        ("Chin1-Chin2", "Chin 1-Chin 2", "EMG Chin", "Chin EMG", "EMG submental", "Chin"),
        ("Chin1|L Chin|Chin L - Chin2|R Chin|Chin R",),
    ),
    "ecg": (("ECG", "EKG"), ("ECG II", "EKG II"), ("ECG I", "EKG I", "ECG1", "EKG1")),  # lead II before lead I
    "airflow": (
        # nasal pressure (Embla "Flow Patient", Pro-Tech "PTAF"), then the oronasal thermistor
        ("Pressure", "Pres", "Nasal Pressure", "NASAL PRES", "Cannula Flow", "Cannula", "Flow Patient", "PTAF"),
        ("Flow", "Airflow", "Thermistor", "Resp oro-nasal", "Therm", "Oronasal Therm", "Oral Thermistor"),
    ),
    "thor": (("Thor", "Thorax", "Thoracic", "Chest", "THOR EFFORT", "Effort THO", "Thoracic Effort", "Resp thoracic"),),
    "abdo": (
        ("Abdo", "Abdomen", "Abdominal", "ABD", "ABDO EFFORT", "Effort ABD", "Abdominal Effort", "Resp abdominal"),
    ),
    "spo2": (("SpO2",), ("SaO2",)),
}

# Cohort-specific levels, tried before COMMON_LEVELS. SHHS keeps the order of the original alias list exactly.
COHORT_LEVELS: dict[str, dict[str, tuple[tuple[str, ...], ...]]] = {
    "shhs": {
        "eeg_c4": (("EEG",), ("EEG 1",)),
        "eeg_c3": (("EEG(sec)",), ("EEG2",)),
        "eog_l": (("EOG(L)",),),
        "eog_r": (("EOG(R)",),),
        "emg": (("EMG",),),
        "ecg": (("ECG",),),
        "airflow": (("NEW AIR",), ("new A/F",), COMMON_LEVELS["airflow"][0], ("AIRFLOW",)),  # pressure first
        "thor": (("THOR RES",),),
        "abdo": (("ABDO RES",),),
        "spo2": (("SaO2",), ("SpO2",)),
    },
    "mesa": {
        "eeg_c4": (("EEG3",),),  # C4-M1; EEG1 (Fz-Cz) and EEG2 (Cz-Oz) are non-standard
        "eog_l": (("EOG-L",),),
        "eog_r": (("EOG-R",),),
        "emg": (("EMG",),),
        "ecg": (("EKG",),),
        "airflow": (("Pres",), ("Flow",)),  # nasal pressure, then thermistor
        "thor": (("Thor",),),
        "abdo": (("Abdo",),),
        "spo2": (("SpO2",),),
    },
    # MrOS (C3, C4, A1, A2, LOC, ROC, L Chin, R Chin, Cannula Flow, Airflow, Thoracic, Abdominal, SaO2),
    # CFS (C3, C4, A1, A2, LOC, ROC, NASAL PRES, AIRFLOW, THOR EFFORT, ABDO EFFORT, SpO2),
    # CHAT (C3, C4, M1, M2, E1, E2, Chin1, Chin2, ...) and WSC (C3_M2, E1, E2, ...) are covered by COMMON_LEVELS.
    "mros": {},
    "cfs": {},
    "chat": {},
    "wsc": {},
}
COHORT_PREFIXES = {"shhs": "shhs", "mesa": "mesa", "mros": "mros", "cfs": "cfs", "chat": "chat", "wsc": "wsc"}
COHORT_SIGNATURES = {"mesa": ("EEG3",)}  # labels that identify a cohort's files when its name is unknown
NONSTANDARD_EEG = (
    "Fpz-Cz",
    "Pz-Oz",
    "Fz-Cz",
    "Cz-Oz",
    "EEG Fpz-Cz",
    "EEG Pz-Oz",
    "EEG Fz-Cz",
    "EEG Cz-Oz",
    "O1-M2",
    "O2-M1",
    "F3-M2",
    "F4-M1",
)
MESA_NONSTANDARD = ("EEG1", "EEG2")  # Fz-Cz and Cz-Oz in MESA


class ChannelMapError(ValueError):
    """An ambiguous match or an unusable channel map; the message names the labels or the file."""


def label_key(label: str) -> str:
    """Case-, space- and punctuation-insensitive form of a label: `"EEG (sec)"` -> `"eegsec"`."""
    return re.sub(r"[\W_]+", "", label.casefold())


@dataclass(frozen=True)
class Source:
    """Where one canonical channel comes from. `labels` are as written in the EDF: one label, or (plus, minus) of
    a derivation computed as plus - minus; `indices` are their positions in the label list given to
    `resolve_channels`. `problem` is set when the source cannot be used (the channel is then dropped)."""

    channel: str
    labels: tuple[str, ...]
    indices: tuple[int, ...]
    rate: float  # Hz, native
    origin: str  # "user map" or the built-in table ("shhs", "mesa", "common")
    nonstandard: bool = False  # an EEG slot filled with a derivation that is not C3/C4 against a mastoid
    problem: str = ""

    @property
    def derived(self) -> bool:
        return len(self.labels) == 2

    @property
    def text(self) -> str:
        """`"EEG"` for a label, `"C4 - M1"` for a derivation (as the manifest's channel_sources writes it)."""
        return DERIVATION_SEP.join(self.labels)


# ------------------------------------------------------------------------------------------------ user map
ChannelMap = tuple[tuple[str, tuple[str, ...]], ...]  # ((canonical, candidates), ...), sorted; () = none


def parse_channel_map(values: object, where: str = "channel map") -> ChannelMap:
    """Validate a mapping canonical name -> label, `"A - B"` derivation, list of candidates, or null / [] (never
    use this channel). Raises ChannelMapError naming `where` and the bad entry."""
    if values is None:
        return ()
    if not isinstance(values, dict):
        raise ChannelMapError(
            f"{where}: expected a mapping of canonical channel names to labels, got {type(values).__name__}"
        )
    entries = []
    for name, value in values.items():
        if name not in CHANNEL_BY_NAME:
            raise ChannelMapError(f"{where}: unknown channel {name!r}; canonical names: {', '.join(CHANNEL_BY_NAME)}")
        candidates = [] if value is None else [value] if isinstance(value, str) else value
        if not isinstance(candidates, list) or not all(isinstance(c, str) and c.strip() for c in candidates):
            raise ChannelMapError(f'{where}: {name}: expected a label, "A - B" or a list of labels, got {value!r}')
        for candidate in candidates:
            if DERIVATION_SEP in candidate and not all(p.strip() for p in candidate.split(DERIVATION_SEP, 1)):
                raise ChannelMapError(f"{where}: {name}: derivation {candidate!r} needs a label on each side of ' - '")
        entries.append((str(name), tuple(c.strip() for c in candidates)))
    return tuple(sorted(entries))


def load_channel_map(path: str | Path) -> ChannelMap:
    """Read a user channel map from YAML or JSON (`.json` is JSON, anything else YAML)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ChannelMapError(f"{path}: cannot read channel map ({err.strerror or err})") from None
    try:
        if path.suffix.lower() == ".json":
            values = json.loads(text)
        else:
            import yaml

            values = yaml.safe_load(text)
    except Exception as err:  # json.JSONDecodeError, yaml.YAMLError
        raise ChannelMapError(f"{path}: cannot parse channel map ({' '.join(str(err).split())})") from None
    return parse_channel_map(values, str(path))


# ------------------------------------------------------------------------------------------------ resolution
def cohort_table(cohort: str | None, labels: list[str] | tuple[str, ...]) -> str:
    """Built-in table for a cohort name or recording id (`shhs1`, `mesa-sleep-0001`, ...), else by signature
    labels, else "shhs"."""
    name = (cohort or "").casefold()
    for table, prefix in COHORT_PREFIXES.items():
        if name.startswith(prefix):
            return table
    keys = {label_key(label) for label in labels}
    for table, signature in COHORT_SIGNATURES.items():
        if all(label_key(label) in keys for label in signature):
            return table
    return "shhs"


def builtin_levels(table: str, channel: str) -> tuple[tuple[str, ...], ...]:
    """Priority levels of a channel in a built-in table (cohort levels, then the common ones)."""
    return COHORT_LEVELS.get(table, {}).get(channel, ()) + COMMON_LEVELS.get(channel, ())


def standard_eeg_keys(table: str) -> set[tuple[str, ...]]:
    """Keys of every built-in C3/C4 source of a table (labels as (key,), derivations as (plus, minus))."""
    keys = set()
    for channel in EEG_SLOTS:
        for level in builtin_levels(table, channel):
            for candidate in level:
                if DERIVATION_SEP in candidate:
                    plus, minus = candidate.split(DERIVATION_SEP, 1)
                    keys |= {(label_key(p), label_key(m)) for p in plus.split("|") for m in minus.split("|")}
                else:
                    keys.add((label_key(candidate),))
    return keys


def _match_level(
    level: tuple[str, ...], by_key: dict[str, int], labels: list[str], user: bool
) -> list[tuple[int, ...]]:
    """Distinct index tuples found by one level's candidates (one index per label, two per derivation)."""
    found: list[tuple[int, ...]] = []
    for candidate in level:
        if candidate.strip() and label_key(candidate) in by_key and (user or DERIVATION_SEP not in candidate):
            found.append((by_key[label_key(candidate)],))
            continue
        if DERIVATION_SEP not in candidate:
            continue
        plus, minus = candidate.split(DERIVATION_SEP, 1)
        pluses = sorted({by_key[label_key(p)] for p in plus.split("|") if label_key(p) in by_key})
        minuses = sorted({by_key[label_key(m)] for m in minus.split("|") if label_key(m) in by_key})
        for side, hits in (("signal", pluses), ("reference", minuses)):
            if len(hits) > 1:
                raise ChannelMapError(
                    f"ambiguous {side} for derivation {candidate!r}: {' and '.join(repr(labels[i]) for i in hits)}"
                )
        if pluses and minuses:
            found.append((pluses[0], minuses[0]))
    return list(dict.fromkeys(found))


def resolve_channels(
    labels: list[str] | tuple[str, ...],
    rates: list[float] | tuple[float, ...],
    user_map: ChannelMap | dict | None = None,
    cohort: str | None = None,
    channels: tuple[str, ...] | list[str] | None = None,
    exclude: set[tuple[str, ...]] | frozenset[tuple[str, ...]] = frozenset(),
) -> dict[str, Source]:
    """Canonical name -> Source for the channels found among `labels` (data signals of one EDF, in file order,
    with their native `rates` in Hz). `user_map` candidates are tried before the built-in table of `cohort`
    (see `cohort_table`, which reads every label); a channel the user maps to nothing (null / []) is never
    resolved; a source whose labels (one, or plus and minus of a derivation) are in `exclude` (found unusable)
    is passed over for the next candidate, its electrodes still free to pair otherwise. Raises ChannelMapError when two
    different labels match at the same priority level."""
    if isinstance(user_map, dict) or user_map is None:
        user_map = parse_channel_map(user_map or None)
    user = dict(user_map)
    table = cohort_table(cohort, labels)
    by_key: dict[str, int] = {}
    distinct: dict[str, str] = {}
    for index, label in enumerate(labels):
        key = label_key(label)
        by_key.setdefault(key, index)  # the first of identical labels wins
        distinct.setdefault(key, label)
    collisions = {key: [name for name in dict.fromkeys(labels) if label_key(name) == key] for key in by_key}
    standard = standard_eeg_keys(table)

    resolved: dict[str, Source] = {}
    for channel in channels if channels is not None else tuple(CHANNEL_BY_NAME):
        user_levels = tuple((c,) for c in user[channel]) if channel in user else ()
        if channel in user and not user[channel]:
            continue  # the user says: never this channel
        levels = [(level, "user map") for level in user_levels]
        levels += [(level, table) for level in COHORT_LEVELS.get(table, {}).get(channel, ())]
        levels += [(level, "common") for level in COMMON_LEVELS.get(channel, ())]
        for level, origin in levels:
            for candidate in level:  # two different file labels with one key ("EEG 2", "EEG2") are ambiguous
                for part in re.split(r"\s+-\s+|\|", candidate) if DERIVATION_SEP in candidate else [candidate]:
                    if len(collisions.get(label_key(part), ())) > 1:
                        names = " and ".join(repr(name) for name in collisions[label_key(part)])
                        raise ChannelMapError(f"{channel}: ambiguous labels {names} (both match {part!r})")
            try:
                found = _match_level(level, by_key, list(labels), origin == "user map")
            except ChannelMapError as err:
                raise ChannelMapError(f"{channel}: {err}") from None
            found = [f for f in found if tuple(labels[i] for i in f) not in exclude]
            if len(found) > 1:
                names = " and ".join(repr(DERIVATION_SEP.join(labels[i] for i in f)) for f in found)
                raise ChannelMapError(
                    f"{channel}: ambiguous match {names} at the same priority (name one in a --channel-map file)"
                )
            if not found:
                continue
            indices = found[0]
            names = tuple(labels[i] for i in indices)
            problem = ""
            if len(indices) == 2 and float(rates[indices[0]]) != float(rates[indices[1]]):
                problem = (
                    f"derivation {names[0]!r} - {names[1]!r} needs one rate, got "
                    f"{float(rates[indices[0]]):g} and {float(rates[indices[1]]):g} Hz"
                )
            nonstandard = (
                channel in EEG_SLOTS and origin == "user map" and tuple(label_key(n) for n in names) not in standard
            )
            resolved[channel] = Source(channel, names, indices, float(rates[indices[0]]), origin, nonstandard, problem)
            break
    return resolved


def looked_for(
    channel: str, user_map: ChannelMap = (), cohort: str | None = None, labels: list[str] | tuple[str, ...] = ()
) -> list[str]:
    """The candidates tried for a channel, in order (for error messages)."""
    table = cohort_table(cohort, labels)
    user = dict(user_map).get(channel, ())
    return [*user, *(c for level in builtin_levels(table, channel) for c in level)]


def nonstandard_hint(labels: list[str] | tuple[str, ...], cohort: str | None = None) -> str:
    """A sentence naming non-standard EEG labels of a file that only a user map may use ("" if none)."""
    table = cohort_table(cohort, labels)
    known = {label_key(name) for name in NONSTANDARD_EEG + (MESA_NONSTANDARD if table == "mesa" else ())}
    present = [name for name in labels if label_key(name) in known]
    if not present:
        return ""
    return (
        f"non-standard EEG {', '.join(present)} fills eeg_c4/eeg_c3 only through --channel-map "
        f"(e.g. eeg_c4: {present[0]!r})"
    )
