"""A synthetic NSRR-format PSG cohort: EDF files with SHHS labels and NSRR XML scoring (docs/data.md §2.5).

No public PSG night can be fetched here, so this module writes realistic ones: plain 16-bit EDF (1-s data
records, native mixed rates: EEG/EMG/ECG 125 Hz, EOG 50 Hz, airflow/effort 10 Hz, SaO2 1 Hz; µV, mV and %),
NSRR XML with merged stage runs and respiratory/arousal events, and the truth as JSON. The signals carry what
experts score (alpha in relaxed wake, theta and vertex waves in N1, spindles and K-complexes in N2, delta in N3,
sawtooth waves, rapid eye movements and atonia in REM, stage-dependent heart rate and variability, apneas and
hypopneas with desaturations, arousals and heart-rate surges). Subjects differ in AHI, amplitudes, noise and
artefacts. Everything is seeded: the same seed gives byte-identical files.

    python dataset/synthetic.py --out data/synthetic --nights 8 --hours 8 --seed 0 [--variations all]
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dataset.constants import EPOCH_S
from dataset.synthetic_layouts import (
    CHANNEL_LAYOUTS,
    COHORT_LAYOUTS,
    LAYOUT_CHANNELS,
    LAYOUT_SIM_RATES,
    SHHS1_LAYOUT,
    cohort_paths,
    layout_signals,
)
from dataset.synthetic_physiology import simulate_night, subject_params
from dataset.synthetic_writers import (
    SLEEP_EDF_STAGE,
    nsrr_stage_runs,
    nsrr_xml_bytes,
    stage_key_runs,
    write_edf,
    write_hypnogram_edf,
)

TRUTH_FILE = "synthetic_truth.json"
EVENT_CONCEPT = {
    "obstructive_apnea": "Obstructive apnea|Obstructive Apnea",
    "central_apnea": "Central apnea|Central Apnea",
    "mixed_apnea": "Mixed apnea|Mixed Apnea",
    "hypopnea": "Hypopnea|Hypopnea",
    "desaturation": "SpO2 desaturation|SpO2 desaturation",
    "spo2_artifact": "SpO2 artifact|SpO2 artifact",
}
AROUSAL_CONCEPTS = ("Arousal|Arousal ()", "ASDA arousal|Arousal (ASDA)")
SECONDARY_EEG_LABELS = ("EEG(sec)", "EEG (sec)", "EEG sec", "EEG2", "EEG 2")
CANONICAL = ("eeg_c4", "eeg_c3", "eog_l", "eog_r", "emg", "ecg", "airflow", "thor", "abdo", "spo2")
# Named variations for the CLI (`--variations all` or a comma list); each goes to its own night from night 1 on.
VARIATION_CATALOG: dict[str, dict] = {
    "eeg2_label": {"secondary_eeg_label": "EEG2"},
    "ecg250": {"ecg_rate": 250},
    "shhs2": {"shhs2": True},  # a second (SHHS2) night of the subject of night 0
    "missing_eog_r": {"missing_channels": ("eog_r",)},
    "truncated": {"truncated": True},
    "unscored": {"unscored_epochs": 8},
    "scored_shorter": {"scored_shorter": True},
    "signal_shorter": {"signal_shorter": True},
    "shuffled_xml": {"shuffle_stages": True},
    "crlf_xml": {"crlf": True},
    "one_line_xml": {"single_line": True},
}
NIGHT_OPTIONS = (
    "secondary_eeg_label",
    "ecg_rate",
    "shhs2",
    "missing_channels",
    "truncated",
    "unscored_epochs",
    "scored_shorter",
    "signal_shorter",
    "shuffle_stages",
    "crlf",
    "single_line",
    "subject_id",
    "channels",
)
SHHS_ONLY_OPTIONS = ("secondary_eeg_label", "ecg_rate", "shhs2", "missing_channels")


@dataclass
class SyntheticNight:
    """What was written for one night and the truth behind it (times in seconds from the EDF start).

    `stages` holds one int8 per 30-s epoch of the scored period (0 W, 1 N1, 2 N2, 3 N3, 4 REM; -1 for
    unscored/movement epochs). `events` are dicts with `type` (canonical name or "other"), `concept` (as in the
    XML), `start_s`, `duration_s`, `spo2_nadir` (% or None). `signal_s` counts whole readable data records.
    `channels` maps canonical names to EDF labels; `rates` maps them to native rates (Hz).
    """

    recording_id: str
    subject_id: str
    cohort: str
    edf_path: Path
    xml_path: Path
    stages: np.ndarray
    events: list[dict]
    signal_s: float
    scored_s: float
    channels: dict[str, str] = field(default_factory=dict)
    rates: dict[str, float] = field(default_factory=dict)
    variations: dict = field(default_factory=dict)
    ahi: float = 0.0  # apneas + hypopneas per hour of scored sleep

    def to_json(self, root: Path | None = None) -> dict:
        def rel(path: Path) -> str:
            return str(path.relative_to(root)) if root is not None and path.is_relative_to(root) else str(path)

        return {
            "recording_id": self.recording_id,
            "subject_id": self.subject_id,
            "cohort": self.cohort,
            "edf_path": rel(self.edf_path),
            "xml_path": rel(self.xml_path),
            "stages": self.stages.tolist(),
            "events": self.events,
            "signal_s": self.signal_s,
            "scored_s": self.scored_s,
            "channels": self.channels,
            "rates": self.rates,
            "ahi": self.ahi,
            "variations": {k: list(v) if isinstance(v, tuple) else v for k, v in self.variations.items()},
        }

    @classmethod
    def from_json(cls, record: dict, root: Path) -> SyntheticNight:
        return cls(
            record["recording_id"],
            record["subject_id"],
            record["cohort"],
            root / record["edf_path"],
            root / record["xml_path"],
            np.asarray(record["stages"], dtype=np.int8),
            record["events"],
            record["signal_s"],
            record["scored_s"],
            record["channels"],
            record["rates"],
            record["variations"],
            record["ahi"],
        )


def _night_seed(seed: int, *keys: str) -> np.random.SeedSequence:
    return np.random.SeedSequence([seed, *(zlib.crc32(k.encode()) for k in keys)])


def _shift_epochs(value, rng: np.random.Generator) -> int:
    """`True` -> a few (2-5) epochs; an int -> that many; falsy -> 0."""
    if value is True:
        return int(rng.integers(2, 6))
    return int(value or 0)


def generate_night(
    edf_path: str | Path,
    xml_path: str | Path,
    recording_id: str,
    hours: float,
    seed: int,
    *,
    secondary_eeg_label: str | None = None,
    ecg_rate: int | None = None,
    shhs2: bool = False,
    missing_channels: tuple[str, ...] | list[str] = (),
    truncated: bool = False,
    unscored_epochs: int = 0,
    scored_shorter: bool | int = False,
    signal_shorter: bool | int = False,
    shuffle_stages: bool = False,
    crlf: bool = False,
    single_line: bool = False,
    subject_id: str | None = None,
    channels: str = "shhs",
) -> SyntheticNight:
    """Write one synthetic night (EDF + NSRR XML) and return its truth.

    `hours` sets the scored period (round(hours * 120) epochs). Subject physiology is seeded by (seed,
    subject id) so two nights of one subject share it; the night itself by (seed, recording id). Options
    reproduce what real files show: `secondary_eeg_label` (e.g. "EEG2"), `ecg_rate` (250, 256),
    `shhs2` (SHHS2 rates and the thermistor "AIRFLOW" only), `missing_channels` (canonical names),
    `truncated` (last data record cut in half at the byte level; `signal_s` then counts the whole records),
    `unscored_epochs` (Movement|6 and Unscored|9 epochs), `scored_shorter` / `signal_shorter` (the scored
    period ends a few epochs before / after the signal; True = 2-5 epochs), `shuffle_stages` (stage events in
    random file order), `crlf` / `single_line` (XML line ends). `channels` picks the EDF's channel layout:
    "shhs" (SHHS1 labels and rates), or one of CHANNEL_LAYOUTS: "mesa" (EKG, EOG-L, EEG1-3, Pres, ... at 256 Hz),
    "mros" (referential C3, C4, M1, M2, LOC, ROC, Chin1, Chin2, ECG L/R), "clinical" (C4-M1, E1-M2, Chin1-Chin2,
    ECG II, Pressure, Flow) or "sleep-edf" (EEG Fpz-Cz / Pz-Oz at 100 Hz, 1-Hz respiration; the scoring is then
    written to `xml_path` as an annotation-only EDF+ hypnogram with stages only, as Sleep-EDF's).
    """
    edf_path, xml_path = Path(edf_path), Path(xml_path)
    cohort, _, subject = recording_id.rpartition("-")
    subject_id = subject_id or subject
    cohort = "sleep-edf" if channels == "sleep-edf" else cohort or ("shhs2" if shhs2 else "shhs1")
    if secondary_eeg_label is not None and secondary_eeg_label not in SECONDARY_EEG_LABELS:
        raise ValueError(
            f"{recording_id}: secondary_eeg_label {secondary_eeg_label!r} is not an SHHS alias "
            f"({', '.join(SECONDARY_EEG_LABELS)})"
        )
    unknown = [c for c in missing_channels if c not in CANONICAL]
    if unknown:
        raise ValueError(f"{recording_id}: missing_channels {unknown} are not canonical names ({', '.join(CANONICAL)})")
    if hours <= 0:
        raise ValueError(f"{recording_id}: hours must be > 0, got {hours}")
    if channels != "shhs" and channels not in CHANNEL_LAYOUTS:
        raise ValueError(f"{recording_id}: channels {channels!r}; known: shhs, {', '.join(CHANNEL_LAYOUTS)}")
    shhs_only = {
        "secondary_eeg_label": secondary_eeg_label,
        "ecg_rate": ecg_rate,
        "shhs2": shhs2,
        "missing_channels": missing_channels,
    }
    if channels != "shhs" and any(shhs_only.values()):
        raise ValueError(
            f"{recording_id}: {', '.join(k for k, v in shhs_only.items() if v)} apply to the SHHS layout only"
        )
    rng = np.random.default_rng(_night_seed(seed, recording_id, "night"))
    subj = subject_params(np.random.default_rng(_night_seed(seed, subject_id, "subject")))

    n_scored = max(1, int(round(hours * 3600 / EPOCH_S)))
    scored_less = _shift_epochs(scored_shorter, rng)
    signal_less = _shift_epochs(signal_shorter, rng)
    n_scored_final = max(1, n_scored - scored_less)
    signal_s = n_scored * EPOCH_S  # whole seconds (1-s data records)
    if signal_less:
        signal_s = max(1, (n_scored - signal_less) * EPOCH_S + int(rng.integers(1, EPOCH_S)))
    n_sim = max(n_scored, math.ceil(signal_s / EPOCH_S))

    layout = [list(row) for row in SHHS1_LAYOUT]
    rates = {row[0]: row[2] for row in layout}
    if shhs2:
        layout = [row for row in layout if row[0] != "airflow"]
        rates["ecg"] = 250
    if ecg_rate is not None:
        rates["ecg"] = int(ecg_rate)
    for row in layout:
        row[2] = rates[row[0]]
        if row[0] == "eeg_c3" and secondary_eeg_label:
            row[1] = secondary_eeg_label
    drop = set(missing_channels) | ({"thermistor"} if "airflow" in missing_channels else set())
    layout = [tuple(row) for row in layout if row[0] not in drop]
    sim_rates = {row[0]: row[2] for row in layout}
    if channels != "shhs":
        layout, sim_rates = list(CHANNEL_LAYOUTS[channels]), LAYOUT_SIM_RATES[channels]

    sim = simulate_night(rng, subj, n_sim, n_scored_final, signal_s, sim_rates, int(unscored_epochs))
    if channels != "shhs":  # referential and derived signals from their own generator: the night stays the same
        sim["signals"] = layout_signals(
            channels, sim["signals"], np.random.default_rng(_night_seed(seed, recording_id, "reference"))
        )
    keys = np.array(sim["stage"][:n_scored_final], dtype=object)  # STAGE_CONCEPT keys per scored epoch
    stages_out = sim["stage"][:n_scored_final].astype(np.int8)
    keys[(stages_out == 3) & sim["deep"][:n_scored_final]] = "n4"
    keys[sim["movement"]], keys[sim["unscored"]] = "move", "unscored"
    stages_out[sim["movement"] | sim["unscored"]] = -1
    scored_s = float(n_scored_final * EPOCH_S)

    clock = datetime.time(int(rng.integers(21, 24)), int(rng.integers(0, 60)), int(rng.integers(0, 60)))
    record_bytes = write_edf(edf_path, layout, sim["signals"], clock)
    readable_s = float(signal_s)
    if truncated:
        size = os.path.getsize(edf_path)
        os.truncate(edf_path, size - record_bytes + record_bytes // 2)
        readable_s = float(signal_s - 1)

    concept_arousal = AROUSAL_CONCEPTS[int(rng.integers(0, 2))]
    events = []
    for ev in sim["events"]:
        kind = ev["kind"]
        concept = concept_arousal if kind == "arousal" else EVENT_CONCEPT[kind]
        record = {
            "type": "other" if kind == "spo2_artifact" else kind,
            "concept": concept,
            "start_s": round(ev["start"], 1),
            "duration_s": round(ev["duration"], 1),
            "spo2_nadir": ev.get("nadir"),
        }
        if "baseline" in ev:
            record["spo2_baseline"] = ev["baseline"]
        events.append(record)
    events.sort(key=lambda e: (e["start_s"], e["type"]))
    airflow_label = next((label for key, label, *_ in layout if key == "airflow"), "AIRFLOW")
    shuffle_rng = np.random.default_rng(_night_seed(seed, recording_id, "shuffle")) if shuffle_stages else None
    xml_path.parent.mkdir(parents=True, exist_ok=True)
    if channels == "sleep-edf":  # Sleep-EDF scores stages only, in a separate EDF+ hypnogram
        events = []
        write_hypnogram_edf(
            xml_path, [(SLEEP_EDF_STAGE[k], start, length) for k, start, length in stage_key_runs(keys)], clock
        )
    else:
        xml_path.write_bytes(
            nsrr_xml_bytes(
                clock.strftime("%H.%M.%S"),
                float(signal_s),
                nsrr_stage_runs(keys),
                events,
                airflow_label,
                shuffle_rng,
                crlf,
                single_line,
            )
        )

    present = {key: (label, rate) for key, label, rate, *_ in layout}
    if channels != "shhs":
        rate_of = {label: rate for _, label, rate, *_ in layout}
        present = {c: (text, float(rate_of[text.split(" - ")[0]])) for c, text in LAYOUT_CHANNELS[channels].items()}
    if "airflow" not in present and "thermistor" in present:
        present["airflow"] = present["thermistor"]
    layout_name, channels = channels, {c: present[c][0] for c in CANONICAL if c in present}
    sleep_h = float(np.sum(stages_out > 0)) * EPOCH_S / 3600
    n_resp = sum(
        e["type"] in ("obstructive_apnea", "central_apnea", "mixed_apnea", "hypopnea")
        and e["start_s"] < scored_s
        and stages_out[int(e["start_s"] // EPOCH_S)] > 0
        for e in events
    )
    options = {
        "secondary_eeg_label": secondary_eeg_label,
        "ecg_rate": ecg_rate,
        "shhs2": shhs2,
        "missing_channels": tuple(missing_channels),
        "truncated": truncated,
        "unscored_epochs": unscored_epochs,
        "scored_shorter": scored_less,
        "signal_shorter": signal_less,
        "shuffle_stages": shuffle_stages,
        "crlf": crlf,
        "single_line": single_line,
        "channels": layout_name if layout_name != "shhs" else None,
    }
    return SyntheticNight(
        recording_id,
        subject_id,
        cohort,
        edf_path,
        xml_path,
        stages_out,
        events,
        readable_s,
        scored_s,
        channels,
        {c: float(present[c][1]) for c in channels},
        {k: v for k, v in options.items() if v},
        round(n_resp / sleep_h, 2) if sleep_h else 0.0,
    )


def generate_cohort(
    out_dir: str | Path,
    nights: int,
    hours: float,
    seed: int,
    layout: str = "nsrr",
    variations: dict[int, dict] | None = None,
) -> list[SyntheticNight]:
    """Write `nights` nights (subjects 200001, 200002, ...) and `out_dir/synthetic_truth.json`.

    `layout` "nsrr" writes `polysomnography/edfs/<cohort>/<id>.edf` and
    `polysomnography/annotations-events-nsrr/<cohort>/<id>-nsrr.xml`; "flat" puts both in `out_dir`.
    `variations` maps a night index to `generate_night` options; `subject_id` there makes the night another
    night of that subject (with `shhs2=True`: the subject's SHHS2 visit). Other cohorts' layouts (the channel
    layouts of `generate_night`, dataset/README.md "Synthetic cohorts of other layouts"): "mesa"
    (`edfs/mesa-sleep-0001.edf`, NSRR tree), "mros" (`edfs/visit1/mros-visit1-aa0001.edf`), "clinical" (flat
    `psg-0001.edf` + `psg-0001-nsrr.xml`) and "sleep-edf" (flat `SC4001E0-PSG.edf` + `SC4001EC-Hypnogram.edf`,
    two nights per subject: nights 2k and 2k+1 are subject k's nights 1 and 2).
    """
    if layout not in COHORT_LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(COHORT_LAYOUTS)}, got {layout!r}")
    out_dir = Path(out_dir)
    variations = variations or {}
    bad = {i: [k for k in opts if k not in NIGHT_OPTIONS] for i, opts in variations.items()}
    bad = {i: keys for i, keys in bad.items() if keys}
    if bad:
        raise ValueError(f"unknown variation option(s) {bad}; known: {', '.join(NIGHT_OPTIONS)}")
    results, seen = [], set()
    for index in range(nights):
        options = dict(variations.get(index, {}))
        subject = str(options.pop("subject_id", None) or 200001 + index)
        cohort = "shhs2" if options.get("shhs2") else "shhs1"
        recording_id = f"{cohort}-{subject}"
        if layout not in ("nsrr", "flat"):
            recording_id, subject, edf, xml = cohort_paths(out_dir, layout, index)
            options["channels"] = layout
        if recording_id in seen:
            raise ValueError(f"night {index}: recording {recording_id} is generated twice")
        seen.add(recording_id)
        if layout == "nsrr":
            edf = out_dir / "polysomnography" / "edfs" / cohort / f"{recording_id}.edf"
            xml = out_dir / "polysomnography" / "annotations-events-nsrr" / cohort / f"{recording_id}-nsrr.xml"
        elif layout == "flat":
            edf, xml = out_dir / f"{recording_id}.edf", out_dir / f"{recording_id}-nsrr.xml"
        results.append(generate_night(edf, xml, recording_id, hours, seed, subject_id=subject, **options))
    truth = {
        "seed": seed,
        "hours": hours,
        "layout": layout,
        "recordings": {n.recording_id: n.to_json(out_dir) for n in results},
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / TRUTH_FILE).write_text(json.dumps(truth, indent=1))
    return results


def load_truth(out_dir: str | Path) -> dict[str, SyntheticNight]:
    """The truth written by `generate_cohort`, by recording id (paths made absolute under `out_dir`)."""
    out_dir = Path(out_dir)
    path = out_dir / TRUTH_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path}: no synthetic truth file (written by dataset/synthetic.py)")
    truth = json.loads(path.read_text())
    return {rid: SyntheticNight.from_json(rec, out_dir) for rid, rec in truth["recordings"].items()}


def variation_plan(nights: int, names: list[str]) -> dict[int, dict]:
    """Assign each named variation of VARIATION_CATALOG to its own night, from night 1 on (night 0 stays plain;
    with fewer nights the variations share nights). "shhs2" becomes an SHHS2 night of night 0's subject."""
    unknown = [n for n in names if n not in VARIATION_CATALOG]
    if unknown:
        raise ValueError(f"unknown variation(s) {unknown}; known: all, {', '.join(VARIATION_CATALOG)}")
    if nights < 2 and names:
        raise ValueError("variations need at least 2 nights (night 0 stays plain)")
    plan: dict[int, dict] = {}
    for i, name in enumerate(names):
        options = plan.setdefault(1 + i % (nights - 1), {})
        options.update(VARIATION_CATALOG[name])
        if name == "shhs2":
            options["subject_id"] = "200001"
    return plan


def main(argv: list[str] | None = None) -> int:
    from utils.config import (
        ArgumentParser,
        UsageError,
        check_out_dir,
        non_negative_int,
        positive_float,
        positive_int,  # one-line usage errors, checked numbers (exit 2)
    )

    parser = ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument(
        "--nights",
        type=positive_int,
        default=8,
        help="nights to generate, one subject each (sleep-edf: nights 2k and 2k+1 are subject k; the shhs2 "
        "variation makes its night a second one of night 0's subject); a usable cohort needs at least 3 subjects",
    )
    parser.add_argument("--hours", type=positive_float, default=8.0, help="scored hours per night")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="random seed: the same seed, the same cohort")
    parser.add_argument(
        "--layout",
        choices=COHORT_LAYOUTS,
        default="nsrr",
        help="nsrr / flat: SHHS files in the NSRR tree / one folder; mesa, mros, clinical, "
        "sleep-edf: those cohorts' channel labels, rates and file names",
    )
    parser.add_argument(
        "--variations",
        default="",
        help=f"'all' or a comma list of {', '.join(VARIATION_CATALOG)}; one night each from night 1",
    )
    args = parser.parse_args(argv)
    names = list(VARIATION_CATALOG) if args.variations == "all" else [v for v in args.variations.split(",") if v]
    try:
        check_out_dir(args.out)
        plan = variation_plan(args.nights, names)
    except (UsageError, ValueError) as err:
        parser.error(str(err))
    nights = generate_cohort(args.out, args.nights, args.hours, args.seed, args.layout, plan)
    for night in nights:
        extra = ", ".join(f"{k}={v}" for k, v in night.variations.items())
        print(
            f"{night.recording_id}: {len(night.stages)} epochs, AHI {night.ahi:.1f}, {len(night.events)} events"
            + (f" [{extra}]" if extra else "")
        )
    print(f"wrote {len(nights)} nights and {TRUTH_FILE} to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
