"""The data contract in one place: channels, rates, stages, events, Parquet columns.

Every module that needs to know what a channel, a stage or an event is imports it from here
(docs/data.md §2). Nothing here reads files.
"""

from __future__ import annotations

from dataclasses import dataclass

EPOCH_S = 30  # seconds per scored epoch
FS = 100  # Hz, target rate of electrophysiology channels
RESP_FS = 10  # Hz, target rate of respiratory channels
EPOCH_SAMPLES = EPOCH_S * FS  # 3000 samples per electrophysiology epoch
RESP_EPOCH_SAMPLES = EPOCH_S * RESP_FS  # 300 samples per respiratory epoch


@dataclass(frozen=True)
class ChannelSpec:
    """One canonical channel: how NSRR files label it and how it is processed.

    `aliases` are the SHHS labels, named in messages; which signal feeds a channel is decided by
    `dataset.channel_map.resolve_channels` (cohort tables, derivations, user map; dataset/README.md "Channel maps"). `band` is the band-pass (Hz) applied
    after resampling; None means only the resampler's anti-alias filter.
    """

    name: str
    modality: str  # eeg | eog | emg | ecg | resp
    derivation: str
    aliases: tuple[str, ...]
    target_fs: int
    band: tuple[float, float] | None

    @property
    def electrophysiology(self) -> bool:
        return self.modality != "resp"

    @property
    def epoch_samples(self) -> int:
        return EPOCH_S * self.target_fs


CHANNELS: tuple[ChannelSpec, ...] = (
    ChannelSpec("eeg_c4", "eeg", "C4-A1", ("EEG", "EEG 1", "EEG1"), FS, (0.5, 40.0)),
    ChannelSpec("eeg_c3", "eeg", "C3-A2", ("EEG(sec)", "EEG (sec)", "EEG sec", "EEG2", "EEG 2"), FS, (0.5, 40.0)),
    ChannelSpec("eog_l", "eog", "left EOG", ("EOG(L)", "EOG L"), FS, (0.5, 40.0)),
    ChannelSpec("eog_r", "eog", "right EOG", ("EOG(R)", "EOG R"), FS, (0.5, 40.0)),
    ChannelSpec("emg", "emg", "chin EMG", ("EMG",), FS, (25.0, 49.0)),
    ChannelSpec("ecg", "ecg", "ECG", ("ECG",), FS, (3.0, 30.0)),
    ChannelSpec(
        "airflow", "resp", "nasal pressure, else thermistor", ("NEW AIR", "NEWAIR", "new A/F", "AIRFLOW"), RESP_FS, None
    ),
    ChannelSpec("thor", "resp", "thoracic effort belt", ("THOR RES",), RESP_FS, None),
    ChannelSpec("abdo", "resp", "abdominal effort belt", ("ABDO RES",), RESP_FS, None),
    ChannelSpec("spo2", "resp", "oxygen saturation", ("SaO2", "SpO2"), RESP_FS, None),
)
CHANNEL_BY_NAME: dict[str, ChannelSpec] = {c.name: c for c in CHANNELS}
EPHYS_CHANNELS: tuple[str, ...] = tuple(c.name for c in CHANNELS if c.electrophysiology)
RESP_CHANNELS: tuple[str, ...] = tuple(c.name for c in CHANNELS if not c.electrophysiology)
EPHYS_MODALITIES: tuple[str, ...] = ("eeg", "eog", "emg", "ecg")  # the electrophysiology NeuroNets
MODALITY_CHANNELS: dict[str, tuple[str, ...]] = {
    m: tuple(c.name for c in CHANNELS if c.modality == m) for m in (*EPHYS_MODALITIES, "resp")
}
# Every respiratory channel is also a NeuroNet modality of its own (one encoder each: airflow, thor, abdo, spo2;
# docs/models.md "Respiratory encoders"); `resp` stays the group of all four.
MODALITY_CHANNELS.update({name: (name,) for name in RESP_CHANNELS})
# The modalities that have a unimodal NeuroNet, and the one whose encoder serves each channel (C3 and C4 share EEG).
ENCODER_MODALITIES: tuple[str, ...] = EPHYS_MODALITIES + RESP_CHANNELS
ENCODER_MODALITY: dict[str, str] = {c.name: c.name if c.name in RESP_CHANNELS else c.modality for c in CHANNELS}

# Physical unit -> factor to microvolts (electrophysiology only). Keys are lower-case.
UNIT_TO_UV: dict[str, float] = {"uv": 1.0, "µv": 1.0, "μv": 1.0, "mv": 1e3, "v": 1e6, "nv": 1e-3}

# Sleep stages, AASM 5-class. NSRR stage concept "name|code" -> class: the sleep classes, and movement and unscored
# (STAGE_UNSCORED), which are stage events too (they end the scored night like any other stage). Unknown codes and
# uncovered epochs -> STAGE_UNSCORED.
STAGE_NAMES: tuple[str, ...] = ("W", "N1", "N2", "N3", "REM")
SLEEP_STAGES: tuple[int, ...] = tuple(c for c, name in enumerate(STAGE_NAMES) if name != "W")  # N1, N2, N3, REM
STAGE_UNSCORED = -1
STAGE_CODE_TO_CLASS: dict[str, int] = {"0": 0, "1": 1, "2": 2, "3": 3, "4": 3, "5": 4}
STAGE_CONCEPTS: dict[str, int] = {
    "wake|0": 0,
    "stage 1 sleep|1": 1,
    "stage 2 sleep|2": 2,
    "stage 3 sleep|3": 3,
    "stage 4 sleep|4": 3,
    "rem sleep|5": 4,
    "movement|6": STAGE_UNSCORED,
    "unscored|9": STAGE_UNSCORED,
}
# Stage names and codes of hypnogram text files and EDF+ annotations ("Sleep stage W", "Sleep stage 4"), matched
# upper-case. Numeric codes are R&K as in NSRR/Profusion: 0 W, 1 N1, 2 N2, 3 N3, 4 stage 4 (-> N3), 5 REM;
# movement, unscored, artefact and `?` -> STAGE_UNSCORED.
STAGE_TOKENS: dict[str, int] = {
    **{token: 0 for token in ("W", "WAKE", "0")},
    **{token: 1 for token in ("N1", "S1", "1")},
    **{token: 2 for token in ("N2", "S2", "2")},
    **{token: 3 for token in ("N3", "S3", "3", "N4", "S4", "4")},
    **{token: 4 for token in ("R", "REM", "5")},
    **{
        token: STAGE_UNSCORED
        for token in (
            "?",
            "U",
            "UNS",
            "UNSCORED",
            "M",
            "MT",
            "MOVEMENT",
            "MOVEMENT TIME",
            "A",
            "ART",  # YASA's string hypnograms (with UNS)
            "ARTIFACT",
            "ARTEFACT",
            "6",
            "7",
            "8",
            "9",
            "-1",
        )
    },
}

# Scored events (docs/data.md §2.3). Each canonical type lists the concept names that map to it: the name part of an
# NSRR "name|code" concept or an EDF+ / Profusion event text, lower-case, "_" read as a space (EDF+ exports write
# `Obstructive_Apnea`); `arousal` additionally takes any concept whose name contains "arousal". Every hypopnea
# subtype is a hypopnea (the AHI and the hypopnea label do not split them); an apnea of no stated type (NSRR
# `Apnea|Apnea`) counts as obstructive, the common type, so that it is in the `apnea` label and the AHI (its
# `concept` in events.parquet still says what was written).
EVENT_TYPES: tuple[str, ...] = (
    "obstructive_apnea",
    "central_apnea",
    "mixed_apnea",
    "hypopnea",
    "desaturation",
    "arousal",
)
APNEA_TYPES: tuple[str, ...] = ("obstructive_apnea", "central_apnea", "mixed_apnea")
EVENT_CONCEPT_NAMES: dict[str, tuple[str, ...]] = {
    "obstructive_apnea": ("obstructive apnea", "apnea", "unspecified apnea"),
    "central_apnea": ("central apnea",),
    "mixed_apnea": ("mixed apnea",),
    "hypopnea": ("hypopnea", "obstructive hypopnea", "central hypopnea", "mixed hypopnea"),
    "desaturation": (
        "spo2 desaturation",
        "sao2 desaturation",
        "oxygen desaturation",
        "o2 desaturation",
        "desaturation",
    ),
}
LABEL_EVENT_COLUMNS: tuple[str, ...] = EVENT_TYPES + ("apnea",)  # int8 midpoint labels; `<name>_s` float32 seconds
TASKS: dict[str, int] = {"sleep_stage": 5, "apnea": 2, "hypopnea": 2}  # task -> number of classes
