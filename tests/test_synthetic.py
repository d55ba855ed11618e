"""The synthetic NSRR cohort (dataset/synthetic.py), the hand-crafted features (utils/features.py) and the
realism bands of benchmarks/synthetic_difficulty.py."""

from __future__ import annotations

import importlib.util
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from edfio import read_edf

from dataset.constants import EVENT_TYPES, STAGE_CONCEPTS
from dataset.synthetic import (
    TRUTH_FILE,
    VARIATION_CATALOG,
    generate_cohort,
    generate_night,
    load_truth,
    main,
    variation_plan,
)
from dataset.synthetic_layouts import SHHS1_LAYOUT
from utils.features import BANDS, epoch_features, heart_rate

REPO = Path(__file__).resolve().parents[1]
SHHS1_LABELS = [row[1] for row in SHHS1_LAYOUT]


def _stage_events(xml_path: Path) -> list[tuple[str, float, float]]:
    root = ET.parse(xml_path).getroot()
    return [
        (ev.findtext("EventConcept"), float(ev.findtext("Start")), float(ev.findtext("Duration")))
        for ev in root.iter("ScoredEvent")
        if ev.findtext("EventType") == "Stages|Stages"
    ]


def _epochs_from_xml(xml_path: Path) -> np.ndarray:
    """Stage class per epoch from the XML (-1 for movement / unscored), placing each run by its Start."""
    runs = sorted(_stage_events(xml_path), key=lambda r: r[1])
    out = np.full(int(round((runs[-1][1] + runs[-1][2]) / 30)), -9, dtype=np.int64)
    for concept, start, duration in runs:
        out[int(start // 30) : int((start + duration) // 30)] = STAGE_CONCEPTS.get(concept.lower(), -1)
    return out


def _edf_layout(path: Path) -> tuple[int, int, int]:
    """(header bytes, bytes per data record, records declared) read straight from the EDF header."""
    raw = path.read_bytes()[:256]
    n_signals = int(raw[252:256])
    header = path.read_bytes()[: 256 * (n_signals + 1)]
    samples = [
        int(header[256 + 216 * n_signals + 8 * i : 256 + 216 * n_signals + 8 * (i + 1)]) for i in range(n_signals)
    ]
    return 256 * (n_signals + 1), 2 * sum(samples), int(raw[236:244])


@pytest.fixture(scope="module")
def plain_cohort(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic_plain")
    return out, generate_cohort(out, nights=2, hours=1.5, seed=7)


@pytest.fixture(scope="module")
def varied_cohort(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic_varied")
    names = list(VARIATION_CATALOG)
    nights = generate_cohort(
        out, nights=len(names) + 1, hours=0.5, seed=11, variations=variation_plan(len(names) + 1, names)
    )
    by_name = {name: nights[1 + i] for i, name in enumerate(names)}
    return out, nights, by_name


def test_same_seed_same_bytes_and_other_seed_differs(tmp_path):
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        generate_cohort(tmp_path / name, nights=2, hours=0.25, seed=seed, variations={1: {"unscored_epochs": 4}})
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) == 5  # 2 EDF + 2 XML + truth
    for rel in files:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    edf = Path("polysomnography/edfs/shhs1/shhs1-200001.edf")
    assert (tmp_path / "a" / edf).read_bytes() != (tmp_path / "c" / edf).read_bytes()


def test_edf_reads_back_with_shhs_labels_rates_units(plain_cohort):
    out, nights = plain_cohort
    night = nights[0]
    assert night.edf_path == out / "polysomnography/edfs/shhs1/shhs1-200001.edf"
    assert night.xml_path == out / "polysomnography/annotations-events-nsrr/shhs1/shhs1-200001-nsrr.xml"
    edf = read_edf(night.edf_path)
    assert [s.label for s in edf.signals] == SHHS1_LABELS
    assert edf.data_record_duration == 1 and edf.num_data_records == night.signal_s == 1.5 * 3600
    assert night.edf_path.read_bytes()[192:236].strip() == b""  # plain EDF, not EDF+
    by_label = {s.label: s for s in edf.signals}
    expected = {
        "EEG": (125, "uV"),
        "EEG(sec)": (125, "uV"),
        "EOG(L)": (50, "uV"),
        "EOG(R)": (50, "uV"),
        "EMG": (125, "uV"),
        "ECG": (125, "mV"),
        "NEW AIR": (10, ""),
        "AIRFLOW": (10, ""),
        "THOR RES": (10, ""),
        "ABDO RES": (10, ""),
        "SaO2": (1, "%"),
    }
    for label, (rate, unit) in expected.items():
        signal = by_label[label]
        assert (signal.sampling_frequency, signal.physical_dimension) == (rate, unit), label
        assert signal.digital_min == -32768 and signal.digital_max == 32767
        assert len(signal.data) == rate * night.signal_s
    assert night.rates == {c: float(by_label[label].sampling_frequency) for c, label in night.channels.items()}
    eeg = by_label["EEG"].data
    assert 5 < np.std(eeg) < 60 and np.mean(np.abs(eeg) >= 249.9) < 1e-3  # µV scale, rarely clipped
    assert (
        0.3 < np.percentile(by_label["ECG"].data, 99.5) < 2.5 or -2.5 < np.percentile(by_label["ECG"].data, 0.5) < -0.3
    )
    spo2 = by_label["SaO2"].data
    assert 80 <= np.median(spo2) <= 100 and np.allclose(spo2, np.round(spo2), atol=0.01)
    c3, c4 = by_label["EEG(sec)"].data, eeg
    assert 0.5 < np.corrcoef(c3, c4)[0, 1] < 0.97  # correlated, not identical


def test_xml_stage_runs_tile_the_scored_period(plain_cohort):
    _, nights = plain_cohort
    for night in nights:
        root = ET.parse(night.xml_path).getroot()
        assert root.tag == "PSGAnnotation" and root.findtext("EpochLength") == "30"
        first = root.find("ScoredEvents/ScoredEvent")
        assert first.findtext("EventConcept") == "Recording Start Time" and first.findtext("Start") == "0"
        runs = _stage_events(night.xml_path)
        starts = [r[1] for r in runs]
        assert starts == sorted(starts) and starts[0] == 0.0
        assert all(a[1] + a[2] == b[1] for a, b in zip(runs, runs[1:]))  # contiguous
        assert all(a[0] != b[0] for a, b in zip(runs, runs[1:]))  # equal stages merged
        assert runs[-1][1] + runs[-1][2] == night.scored_s == len(night.stages) * 30
        assert np.array_equal(_epochs_from_xml(night.xml_path), night.stages)
        assert {r[0] for r in runs} <= {
            "Wake|0",
            "Stage 1 sleep|1",
            "Stage 2 sleep|2",
            "Stage 3 sleep|3",
            "Stage 4 sleep|4",
            "REM sleep|5",
        }
        assert set(night.stages.tolist()) >= {0, 1, 2}


def test_events_are_scored_like_nsrr(plain_cohort):
    _, nights = plain_cohort
    respiratory = ("obstructive_apnea", "central_apnea", "mixed_apnea", "hypopnea")
    events = [e for n in nights for e in n.events]
    assert {e["type"] for e in events} <= set(EVENT_TYPES) | {"other"}
    assert any(e["type"] in respiratory for e in events) and any(e["type"] == "arousal" for e in events)
    for night in nights:
        for e in night.events:
            if e["type"] in respiratory:
                assert e["duration_s"] >= 10
                epochs = night.stages[int(e["start_s"] // 30) : int((e["start_s"] + e["duration_s"]) // 30) + 1]
                assert np.all(epochs > 0), f"{night.recording_id}: {e} not during sleep"
            if e["type"] == "desaturation":
                assert e["spo2_nadir"] <= e["spo2_baseline"] - 3
        root = ET.parse(night.xml_path).getroot()
        concepts = [(ev.findtext("EventType"), ev.findtext("EventConcept"), ev) for ev in root.iter("ScoredEvent")]
        for kind, concept, ev in concepts:
            if concept == "SpO2 desaturation|SpO2 desaturation":
                assert kind == "Respiratory|Respiratory" and float(ev.findtext("SpO2Nadir")) < float(
                    ev.findtext("SpO2Baseline")
                )
            elif kind == "Arousals|Arousals":
                assert concept in ("Arousal|Arousal ()", "ASDA arousal|Arousal (ASDA)")
        written = sorted(
            (c, float(ev.findtext("Start"))) for k, c, ev in concepts if k not in ("Stages|Stages", "", None)
        )
        assert written == sorted((e["concept"], e["start_s"]) for e in night.events)


def test_physiology_shows_what_experts_score(tmp_path):
    night = generate_night(tmp_path / "n.edf", tmp_path / "n.xml", "shhs1-200042", 5.0, seed=3)
    signals = {s.label: s.data for s in read_edf(night.edf_path).signals}
    stages = night.stages

    def by_stage(label, rate, fn):
        x = signals[label][: len(stages) * 30 * rate].reshape(len(stages), -1)
        return {k: np.median(fn(x[stages == k])) for k in range(5) if np.any(stages == k)}

    def band(lo, hi):
        def power(x):
            spec = np.abs(np.fft.rfft(x - x.mean(axis=1, keepdims=True), axis=1)) ** 2
            f = np.fft.rfftfreq(x.shape[1], 1 / 125)
            return spec[:, (f >= lo) & (f < hi)].sum(axis=1) / spec[:, (f >= 0.5) & (f < 40)].sum(axis=1)

        return power

    delta = by_stage("EEG", 125, band(0.5, 2))
    alpha = by_stage("EEG", 125, band(8, 12))
    assert delta[3] > delta[2] > delta[0] and alpha[0] > 2 * alpha[2]
    emg = by_stage("EMG", 125, lambda x: x.std(axis=1))
    assert emg[0] > emg[2] > emg[4]  # wake > NREM > REM atonia
    left = signals["EOG(L)"][: len(stages) * 1500].reshape(len(stages), -1)
    right = signals["EOG(R)"][: len(stages) * 1500].reshape(len(stages), -1)
    corr = {
        k: np.median([np.corrcoef(a, b)[0, 1] for a, b in zip(left[stages == k], right[stages == k])]) for k in (3, 4)
    }
    assert corr[3] > 0.5 and corr[4] < corr[3] - 0.3  # EEG leakage in phase; eye movements out of phase
    hr = heart_rate(signals["ECG"][: len(stages) * 3750].reshape(len(stages), -1), fs=125)
    assert np.median(hr[stages == 0]) > np.median(hr[stages == 3]) + 3
    flow, spo2 = signals["NEW AIR"], signals["SaO2"]
    apneas = [e for e in night.events if e["type"] in ("obstructive_apnea", "central_apnea")]
    assert apneas, "seed 3 / subject 200042 should have apneas"
    for e in apneas:
        s, d = e["start_s"], e["duration_s"]
        during = flow[int((s + 3) * 10) : int((s + d - 3) * 10)]
        assert during.std() < 0.2 * flow.std()  # airflow near zero
        assert spo2[int(s + d) : int(s + d + 25)].min() < np.median(spo2[int(s - 30) : int(s)])


def test_each_variation_does_what_it_says(varied_cohort):
    out, nights, v = varied_cohort
    labels = {
        n.recording_id: [s.label for s in read_edf(n.edf_path).signals]
        for n in nights
        if not n.variations.get("truncated")
    }
    rates = {
        n.recording_id: {s.label: s.sampling_frequency for s in read_edf(n.edf_path).signals}
        for n in nights
        if not n.variations.get("truncated")
    }
    assert "EEG2" in labels[v["eeg2_label"].recording_id] and "EEG(sec)" not in labels[v["eeg2_label"].recording_id]
    assert v["eeg2_label"].channels["eeg_c3"] == "EEG2"
    assert rates[v["ecg250"].recording_id]["ECG"] == 250
    shhs2 = v["shhs2"]
    assert (shhs2.recording_id, shhs2.subject_id, shhs2.cohort) == ("shhs2-200001", "200001", "shhs2")
    assert shhs2.edf_path.parent.name == "shhs2" and nights[0].subject_id == "200001"
    assert "NEW AIR" not in labels["shhs2-200001"] and "AIRFLOW" in labels["shhs2-200001"]
    assert rates["shhs2-200001"]["ECG"] == 250 and shhs2.channels["airflow"] == "AIRFLOW"
    assert "EOG(R)" not in labels[v["missing_eog_r"].recording_id] and "eog_r" not in v["missing_eog_r"].channels

    truncated = v["truncated"]
    header, record, declared = _edf_layout(truncated.edf_path)
    size = truncated.edf_path.stat().st_size
    assert (size - header) % record != 0 and (size - header) // record == declared - 1 == truncated.signal_s

    unscored = v["unscored"]
    concepts = {r[0] for r in _stage_events(unscored.xml_path)}
    assert {"Unscored|9", "Movement|6"} <= concepts
    assert np.sum(unscored.stages == -1) >= 6 and np.array_equal(_epochs_from_xml(unscored.xml_path), unscored.stages)

    shorter = v["scored_shorter"]
    assert shorter.signal_s - shorter.scored_s >= 60 and shorter.scored_s == len(shorter.stages) * 30
    longer = v["signal_shorter"]
    assert longer.scored_s - longer.signal_s >= 30 and longer.signal_s % 30 != 0
    assert read_edf(longer.edf_path).num_data_records == longer.signal_s

    shuffled = _stage_events(v["shuffled_xml"].xml_path)
    assert [r[1] for r in shuffled] != sorted(r[1] for r in shuffled)
    assert np.array_equal(_epochs_from_xml(v["shuffled_xml"].xml_path), v["shuffled_xml"].stages)
    crlf = v["crlf_xml"].xml_path.read_bytes()
    assert crlf.count(b"\r\n") > 10 and crlf.count(b"\n") == crlf.count(b"\r\n")
    one_line = v["one_line_xml"].xml_path.read_bytes()
    assert b"\n" not in one_line and b"\r" not in one_line
    for night in (v["crlf_xml"], v["one_line_xml"]):
        assert np.array_equal(_epochs_from_xml(night.xml_path), night.stages)


def test_truth_round_trips_and_flat_layout(tmp_path, varied_cohort):
    out, nights, _ = varied_cohort
    truth = load_truth(out)
    assert list(truth) == [n.recording_id for n in nights]
    for night in nights:
        again = truth[night.recording_id]
        assert np.array_equal(again.stages, night.stages) and again.events == night.events
        assert again.edf_path == night.edf_path and again.signal_s == night.signal_s
    flat = generate_cohort(tmp_path, nights=1, hours=0.1, seed=1, layout="flat")
    assert flat[0].edf_path == tmp_path / "shhs1-200001.edf" and flat[0].xml_path == tmp_path / "shhs1-200001-nsrr.xml"
    assert (tmp_path / TRUTH_FILE).exists()
    with pytest.raises(FileNotFoundError, match="synthetic_truth.json"):
        load_truth(tmp_path / "nowhere")


def test_bad_options_are_named(tmp_path):
    with pytest.raises(ValueError, match="eeg_x"):
        generate_night(tmp_path / "a.edf", tmp_path / "a.xml", "shhs1-1", 0.1, 0, missing_channels=("eeg_x",))
    with pytest.raises(ValueError, match="EEG3"):
        generate_night(tmp_path / "a.edf", tmp_path / "a.xml", "shhs1-1", 0.1, 0, secondary_eeg_label="EEG3")
    with pytest.raises(ValueError, match="colour"):
        generate_cohort(tmp_path, nights=2, hours=0.1, seed=0, variations={1: {"colour": "red"}})
    with pytest.raises(ValueError, match="generated twice"):
        generate_cohort(tmp_path, nights=2, hours=0.1, seed=0, variations={1: {"subject_id": "200001"}})
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path), "--nights", "2", "--variations", "nonsense"])


def test_cli_writes_cohort(tmp_path, capsys):
    assert main(["--out", str(tmp_path), "--nights", "2", "--hours", "0.1", "--variations", "ecg250"]) == 0
    assert "ecg_rate=250" in capsys.readouterr().out
    assert len(list(tmp_path.rglob("*.edf"))) == 2 and len(list(tmp_path.rglob("*-nsrr.xml"))) == 2


def test_generation_is_fast(tmp_path):
    import time

    tick = time.perf_counter()
    generate_night(tmp_path / "a.edf", tmp_path / "a.xml", "shhs1-200001", 1.0, 0)
    assert time.perf_counter() - tick < 3.0  # ~0.3 s alone; generous for a busy 2-core machine


def test_features_shape_names_and_meaning():
    rng = np.random.default_rng(0)
    t = np.arange(3000) / 100
    n = 6
    eeg = 20 * np.sin(2 * np.pi * 10 * t) + rng.standard_normal((n, 3000))  # alpha
    slow = 50 * np.sin(2 * np.pi * 1.0 * t) + rng.standard_normal((n, 3000))  # delta
    beats = np.zeros((n, 3000))
    for i, bpm in enumerate((45, 60, 72, 90, 110, 150)):
        for b in np.arange(0.2, 30, 60 / bpm):
            beats[i] += np.exp(-0.5 * ((t - b) / 0.012) ** 2) + 0.3 * np.exp(-0.5 * ((t - b - 0.25) / 0.05) ** 2)
    features, names = epoch_features({"eeg_c4": eeg, "eog_l": slow, "ecg": beats})
    assert features.shape == (n, len(names)) and features.dtype == np.float32 and np.isfinite(features).all()
    per_channel = 2 * len(BANDS) + 5
    assert len(names) == 3 * per_channel + 3 and len(set(names)) == len(names)
    col = {name: features[:, i] for i, name in enumerate(names)}
    assert np.all(col["eeg_c4_relpow_alpha"] > 0.9) and np.all(col["eog_l_relpow_delta_slow"] > 0.9)
    assert np.allclose(col["eeg_c4_edge95_hz"], 10, atol=0.5)
    assert np.allclose(col["eeg_c4_zero_cross_per_s"], 20, atol=1)
    assert np.allclose(col["ecg_hr_bpm"], (45, 60, 72, 90, 110, 150), rtol=0.02)
    assert np.all(np.abs(col["ecg_hr_trend_bpm"]) < 2)
    assert "eeg_c4_hr_bpm" not in col


def test_features_errors_and_speed():
    with pytest.raises(ValueError, match="different numbers of epochs"):
        epoch_features({"eeg_c4": np.zeros((3, 3000)), "emg": np.zeros((4, 3000))})
    with pytest.raises(ValueError, match="emg"):
        epoch_features({"emg": np.zeros(3000)})
    rng = np.random.default_rng(1)
    night = {
        c: rng.standard_normal((960, 3000)).astype(np.float32)
        for c in ("eeg_c4", "eeg_c3", "eog_l", "eog_r", "emg", "ecg")
    }
    import time

    epoch_features({"ecg": night["ecg"][:10]})  # warm-up
    tick = time.perf_counter()
    features, _ = epoch_features(night)
    assert features.shape[0] == 960 and np.isfinite(features).all()
    assert time.perf_counter() - tick < 3.0  # ~0.5 s alone for an 8-h night of six channels


def _benchmark():
    spec = importlib.util.spec_from_file_location(
        "synthetic_difficulty", REPO / "benchmarks" / "synthetic_difficulty.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_realism_bands(tmp_path):
    """The cohort is learnable but not trivial for the feature baseline (bands of the realism benchmark)."""
    bench = _benchmark()
    metrics = bench.run(tmp_path, nights=REALISM_NIGHTS, hours=REALISM_HOURS, seed=REALISM_SEED, folds=REALISM_FOLDS)
    assert bench.check_bands(metrics) == [], bench.table([metrics])
    margin = 0.03
    assert bench.KAPPA_BAND[0] + margin < metrics["kappa"] < bench.KAPPA_BAND[1] - margin
    assert bench.APNEA_AUROC_BAND[0] + margin < metrics["apnea_auroc"] < bench.APNEA_AUROC_BAND[1] - margin


REALISM_NIGHTS, REALISM_HOURS, REALISM_SEED, REALISM_FOLDS = 8, 3.0, 4, 4
