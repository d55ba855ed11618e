"""End-to-end tests of dataset/data_parser.py on the hand-made nights of tests/parser_nights.py: signal content,
labels, the Parquet layout, SHHS variations and bad inputs (cohort runs: resume, shards, discovery and the
synthetic cohort are in tests/test_parser_runs.py).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from dataset.constants import CHANNEL_BY_NAME
from dataset.data_parser import load_night, main
from dataset.signal_processing import quartiles
from tests.parser_nights import (
    DEFAULT_STAGES,
    RESP_EVENTS,
    SHHS1,
    STAGE_TRUTH,
    TONE_HZ,
    channel,
    dominant_hz,
    make_night,
    parse,
    read_table,
    stage_events,
    tone_amplitude,
    unscaled,
    write_xml,
)


# -------------------------------------------------------------------------------------------- content checks
def test_channel_identity_and_time_alignment(tmp_path):
    markers = {"eeg_c4": 7, "eeg_c3": 12, "eog_r": 3, "ecg": 15, "airflow": 5, "thor": 9}
    make_night(tmp_path / "src", "shhs1-100001", markers=markers)
    manifest = parse(tmp_path / "src", tmp_path / "dst")
    row = manifest.iloc[0]
    assert row["status"] == "ok" and row["n_epochs"] == 20
    assert row["channels"] == "eeg_c4,eeg_c3,eog_l,eog_r,emg,ecg,airflow,thor,abdo,spo2"
    assert (
        row["native_rates"]
        == "eeg_c4:125,eeg_c3:125,eog_l:50,eog_r:50,emg:125,ecg:125,airflow:10,thor:10,abdo:10,spo2:1"
    )
    frame = read_table(tmp_path / "dst", "shhs1-100001")
    for name in ("eeg_c4", "eeg_c3", "eog_l", "eog_r", "emg", "ecg"):
        assert dominant_hz(channel(frame, name), 100) == pytest.approx(TONE_HZ[name], abs=0.05), name
    for name in ("airflow", "thor", "abdo"):
        assert dominant_hz(channel(frame, name), 10) == pytest.approx(TONE_HZ[name], abs=0.02), name
    for name, epoch in markers.items():
        fs = 100 if name not in ("airflow", "thor") else 10
        epochs = channel(frame, name)
        energy = np.sqrt(np.mean(epochs**2, axis=1))
        assert int(np.argmax(energy)) == epoch, name
        # the burst covers seconds [10, 15) of its epoch: the samples of those seconds dominate
        inside = np.abs(epochs[epoch, int(10.2 * fs) : int(14.8 * fs)]).max()
        outside = np.abs(np.concatenate([epochs[epoch, : int(9.5 * fs)], epochs[epoch, int(15.5 * fs) :]])).max()
        assert inside > 3 * outside, name


@pytest.mark.parametrize("overrides, tolerance", [({}, 0.02), ({"eeg_c4": {"rate": 128}, "ecg": {"rate": 250}}, 0.02)])
def test_tone_amplitude_survives_resampling_and_unit_conversion(tmp_path, overrides, tolerance):
    make_night(tmp_path / "src", "n-1", overrides=overrides)
    row = parse(tmp_path / "src", tmp_path / "dst").iloc[0]
    frame = read_table(tmp_path / "dst", "n-1")
    assert tone_amplitude(unscaled(frame, row, "eeg_c4")) == pytest.approx(40.0, rel=tolerance)  # µV
    assert tone_amplitude(unscaled(frame, row, "eeg_c3")) == pytest.approx(25.0, rel=tolerance)
    assert tone_amplitude(unscaled(frame, row, "ecg")) == pytest.approx(1000.0, rel=tolerance)  # 1 mV -> µV
    assert tone_amplitude(unscaled(frame, row, "eog_l")) == pytest.approx(40.0, rel=tolerance)  # 50 Hz -> 100 Hz
    # robust scaling: every kept channel has median 0 and IQR 1 after scaling
    for name in row["channels"].split(","):
        q25, median, q75 = quartiles(channel(frame, name).reshape(-1))
        assert abs(median) < 1e-3 and (q75 - q25 == pytest.approx(1.0, abs=1e-3) or name == "spo2"), name


def test_quartiles_are_exactly_numpy_percentiles():
    rng = np.random.default_rng(0)
    cases = [
        rng.standard_normal(200_001).astype(np.float32),
        np.round(rng.standard_normal(150_000) * 3),
        np.sort(rng.exponential(2.0, 100_000)),
        np.r_[np.full(90_000, 95.0), rng.uniform(80, 99, 10_000)],
        rng.standard_normal(1_000),
    ]
    for values in cases:
        assert quartiles(values) == tuple(np.percentile(values, (25, 50, 75)))


@pytest.mark.parametrize("style, shuffle", [("lf", False), ("lf", True), ("crlf", True), ("one-line", False)])
def test_labels_equal_truth_for_every_epoch(tmp_path, style, shuffle):
    make_night(tmp_path / "src", "n-1", style=style, shuffle=shuffle)
    manifest = parse(tmp_path / "src", tmp_path / "dst")
    frame = read_table(tmp_path / "dst", "n-1")
    assert frame["stage"].tolist() == [STAGE_TRUTH[s] for s in DEFAULT_STAGES]
    assert frame["epoch"].tolist() == list(range(20))
    truth = {
        name: np.zeros(20, dtype=np.int8)
        for name in ("obstructive_apnea", "central_apnea", "hypopnea", "desaturation", "arousal", "apnea")
    }
    seconds = {name: np.zeros(20) for name in truth}
    grid = np.arange(0, 600, 0.01) + 0.005
    names = {
        "Obstructive apnea": ["obstructive_apnea", "apnea"],
        "Central apnea": ["central_apnea", "apnea"],
        "Hypopnea": ["hypopnea"],
        "SpO2 desaturation": ["desaturation"],
        "Arousal": ["arousal"],
    }
    covered = {name: np.zeros(grid.size, dtype=bool) for name in truth}
    for _, concept, start, duration, *_ in RESP_EVENTS:
        for name in names.get(concept.split("|")[0], []):
            for k in range(20):
                if start <= 30 * k + 15 < start + duration:
                    truth[name][k] = 1
            covered[name] |= (grid >= start) & (grid < start + duration)
    for name in truth:
        seconds[name] = covered[name].reshape(20, -1).sum(axis=1) * 0.01
        assert frame[name].tolist() == truth[name].tolist(), name
        np.testing.assert_allclose(frame[f"{name}_s"], seconds[name], atol=0.02, err_msg=name)
    assert frame["mixed_apnea"].sum() == 0
    row = manifest.iloc[0]
    assert (row["n_obstructive_apnea"], row["n_central_apnea"], row["n_hypopnea"], row["n_arousal"]) == (1, 1, 1, 1)
    assert row["n_apnea"] == row["n_obstructive_apnea"] + row["n_central_apnea"] + row["n_mixed_apnea"] == 2
    asleep = sum(STAGE_TRUTH[s] >= 1 for s in DEFAULT_STAGES)
    assert row["tst_min"] == asleep / 2
    # apnea events start at 95 s (epoch 3, N2) and 100 s (epoch 3); hypopnea at 301.5 s (epoch 10, REM)
    assert row["ahi_scored"] == pytest.approx(3 / (asleep / 120))
    # the hypopnea qualifies under the 3 % rule by the desaturation 4.5 s after its end (no baseline written,
    # so its drop is unknown: >= 3 % as scored, not >= 4 %)
    assert row["ahi_a0h3a"] == row["ahi_scored"] and row["ahi_all"] == row["ahi_scored"]
    assert row["ahi_a0h4"] == pytest.approx(2 / (asleep / 120))
    events = pd.read_parquet(tmp_path / "dst" / "events.parquet")
    assert len(events) == len(RESP_EVENTS)  # stages and the recording-start record excluded
    assert set(events["type"]) == {"obstructive_apnea", "central_apnea", "hypopnea", "desaturation", "arousal", "other"}
    assert events.loc[events["type"] == "desaturation", "spo2_nadir"].item() == 88.0
    assert not events["beyond_end"].any()


def test_parquet_layout_and_metadata(tmp_path):
    edf = make_night(tmp_path / "src", "n-1", stages=[2] * 70)
    parse(tmp_path / "src", tmp_path / "dst")
    parquet = pq.ParquetFile(tmp_path / "dst" / "recordings" / "n-1.parquet")
    schema = parquet.schema_arrow
    assert schema.names[:11] == [
        "epoch",
        "eeg_c4",
        "eeg_c3",
        "eog_l",
        "eog_r",
        "emg",
        "ecg",
        "airflow",
        "thor",
        "abdo",
        "spo2",
    ]
    assert schema.names[11] == "stage" and str(schema.field("stage").type) == "int8"
    assert str(schema.field("eeg_c4").type) == "fixed_size_list<element: float>[3000]"
    assert str(schema.field("spo2").type) == "fixed_size_list<element: float>[300]"
    assert str(schema.field("apnea_s").type) == "float" and str(schema.field("apnea").type) == "int8"
    meta = parquet.metadata
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [18, 18, 17, 17]
    assert all(meta.row_group(0).column(i).compression == "UNCOMPRESSED" for i in range(meta.num_columns))
    kv = {k.decode(): v.decode() for k, v in schema.metadata.items()}
    sha = json.loads(kv["source_sha256"])
    assert sha["edf"] == hashlib.sha256(edf.read_bytes()).hexdigest()
    assert sha["xml"] == hashlib.sha256((edf.parent / "n-1-nsrr.xml").read_bytes()).hexdigest()
    steps = {s["step"]: s for s in json.loads(kv["processing"])["steps"]}
    assert steps["bandpass"]["zero_phase"] is True and steps["bandpass"]["bands_hz"]["emg"] == [25.0, 49.0]
    assert steps["resample"]["up_down"]["eeg_c4"] == [4, 5] and steps["resample"]["up_down"]["eog_l"] == [2, 1]
    assert "spo2" not in steps["resample"]["up_down"] and steps["resample"]["hold"] == {"spo2": [10, 1]}  # held
    assert json.loads(kv["rates"])["spo2"] == {
        "native_hz": 1.0,
        "fs": 10,
        "label": "SaO2",
        "unit": "%",
        "edf_unit": "%",
    }
    assert kv["version"] and json.loads(kv["channels"])[0] == "eeg_c4"
    assert json.loads(kv["manifest_row"])["n_epochs"] == 70


@pytest.mark.parametrize("n_epochs", [1, 15, 16, 17, 31, 32, 33, 39, 47, 120, 961])
def test_row_groups_hold_16_to_32_epochs(n_epochs):
    from dataset.recording_job import row_group_sizes

    sizes = row_group_sizes(n_epochs)
    assert sum(sizes) == n_epochs
    assert all(16 <= s <= 32 for s in sizes) if n_epochs >= 16 else sizes == [n_epochs]


@pytest.mark.parametrize(
    "raw, factor",
    [
        (b"uV", 1.0),
        (b"\xb5V", 1.0),
        ("\u00b5V".encode("utf-8"), 1.0),
        ("\u03bcV".encode("utf-8"), 1.0),
        (b"mV", 1e3),
        (b"V", 1e6),
        (b"", None),
        (b"bananas", None),
    ],
)
def test_units_latin1_and_utf8_micro_sign(raw, factor):
    from types import SimpleNamespace

    from dataset.edf_reader import _text
    from dataset.signal_processing import _unit_factor

    unit = _text(raw.ljust(8))  # as the header reader decodes the field: the unit the manifest shows
    assert unit == {b"\xb5V": "\u00b5V", "\u00b5V".encode(): "\u00b5V", "\u03bcV".encode(): "\u03bcV"}.get(raw, unit)
    assert "\u00c2" not in unit and "\u00ce" not in unit  # no UTF-8 read as latin-1 ("ÂµV")
    got = _unit_factor(CHANNEL_BY_NAME["eeg_c4"], SimpleNamespace(physical_dimension=unit))
    assert got == ((factor, "uV", False) if factor else (1.0, "uV", True))


def test_spo2_recorded_as_a_fraction_is_stored_in_percent(tmp_path):
    """A header whose SpO2 range cannot hold a percentage (0..1) records a fraction: stored x 100, so the
    manifest's median / IQR and every later reader (event features, ODI) are in %, whatever the probe read."""
    fraction = {"range": (0, 1), "unit": "", "values": lambda t: 0.95 + 0.02 * np.sin(2 * np.pi * 0.01 * t)}
    make_night(tmp_path / "src", "n-1", overrides={"spo2": fraction})
    make_night(tmp_path / "src", "n-2")  # in % (0..100): unchanged
    rows = parse(tmp_path / "src", tmp_path / "dst").set_index("recording_id")
    assert rows.loc["n-1", "median_spo2"] == pytest.approx(95.0, abs=0.1)
    assert rows.loc["n-2", "median_spo2"] == pytest.approx(95.0, abs=0.1)
    level = unscaled(read_table(tmp_path / "dst", "n-1"), rows.loc["n-1"], "spo2")
    assert level.min() == pytest.approx(93.0, abs=0.1) and level.max() == pytest.approx(97.0, abs=0.1)


def test_load_night_is_the_parsers_processing(tmp_path):
    edf = make_night(tmp_path / "src", "n-1", markers={"eeg_c4": 4})
    row = parse(tmp_path / "src", tmp_path / "dst").iloc[0]
    frame = read_table(tmp_path / "dst", "n-1")
    epochs, labels, info = load_night(edf, tmp_path / "src" / "n-1-nsrr.xml")
    for name, array in epochs.items():
        assert array.dtype == np.float32
        np.testing.assert_array_equal(array, channel(frame, name))
    pd.testing.assert_frame_equal(labels, frame[labels.columns], check_dtype=True)
    assert info["median_eeg_c4"] == row["median_eeg_c4"] and info["n_epochs"] == 20
    only, none_labels, _ = load_night(edf, channels=["eeg_c3", "spo2"])
    assert set(only) == {"eeg_c3", "spo2"} and none_labels is None and only["spo2"].shape == (20, 300)
    write_xml(tmp_path / "events-only-nsrr.xml", RESP_EVENTS)  # no stage event: inference keeps the whole night
    _, labels, info = load_night(edf, tmp_path / "events-only-nsrr.xml")
    assert info["n_epochs"] == 20 and (labels["stage"] == -1).all() and labels["apnea"].sum() > 0


# ------------------------------------------------------------------------------------------- variations
@pytest.mark.parametrize("label", ["EEG2", "EEG 2", "EEG sec", "EEG (sec)", "eeg(SEC)"])
def test_secondary_eeg_alias_labels(tmp_path, label):
    make_night(tmp_path / "src", "n-1", overrides={"eeg_c3": {"label": label}})
    row = parse(tmp_path / "src", tmp_path / "dst").iloc[0]
    assert row["status"] == "ok" and "eeg_c3" in row["channels"].split(",")
    assert dominant_hz(channel(read_table(tmp_path / "dst", "n-1"), "eeg_c3"), 100) == pytest.approx(6.0, abs=0.05)


def test_shhs2_rates_and_labels(tmp_path):
    overrides = {
        "eeg_c4": {"rate": 128},
        "eeg_c3": {"rate": 128, "label": "EEG2"},
        "eog_l": {"rate": 64},
        "eog_r": {"rate": 64},
        "emg": {"rate": 128},
        "ecg": {"rate": 256},
        "airflow": {"rate": 8, "label": "new A/F"},
        "thor": {"rate": 8},
        "abdo": {"rate": 8},
    }
    make_night(tmp_path / "src", "shhs2-100001", overrides=overrides)
    row = parse(tmp_path / "src", tmp_path / "dst").iloc[0]
    assert (
        row["native_rates"] == "eeg_c4:128,eeg_c3:128,eog_l:64,eog_r:64,emg:128,ecg:256,airflow:8,thor:8,abdo:8,spo2:1"
    )
    frame = read_table(tmp_path / "dst", "shhs2-100001")
    for name in ("eeg_c4", "eeg_c3", "eog_l", "emg", "ecg"):
        assert channel(frame, name).shape == (20, 3000)
        assert dominant_hz(channel(frame, name), 100) == pytest.approx(TONE_HZ[name], abs=0.05), name
    assert tone_amplitude(unscaled(frame, row, "eog_r")) == pytest.approx(40.0, rel=0.02)
    assert channel(frame, "airflow").shape == (20, 300)
    assert dominant_hz(channel(frame, "airflow"), 10) == pytest.approx(0.3, abs=0.02)
    assert "holds only" not in row["warnings"]  # each rate keeps most of its channel's band


def test_a_rate_that_keeps_little_of_the_band_is_said(tmp_path):
    """Resampling up adds nothing above the native Nyquist frequency: a chin EMG at 64 Hz keeps 25-32 Hz of its
    25-49 Hz band, and the manifest says so (an EOG at 50 Hz keeps most of its 0.5-40 Hz band: no note)."""
    make_night(tmp_path / "src", "n-1", overrides={"emg": {"rate": 64}, "eog_l": {"rate": 50}})
    row = parse(tmp_path / "src", tmp_path / "dst").iloc[0]
    assert "emg recorded at 64 Hz holds only 25-32 Hz of its 25-49 Hz band" in row["warnings"]
    assert "eog_l recorded" not in row["warnings"]


def test_missing_channels_are_left_out(tmp_path):
    layout = {k: v for k, v in SHHS1.items() if k not in ("eog_r", "emg", "thor")}
    make_night(tmp_path / "src", "n-1", layout=layout)
    row = parse(tmp_path / "src", tmp_path / "dst").iloc[0]
    assert row["channels"] == "eeg_c4,eeg_c3,eog_l,ecg,airflow,abdo,spo2"
    frame = read_table(tmp_path / "dst", "n-1")
    assert "eog_r" not in frame and "emg" not in frame and np.isnan(row["median_emg"])


@pytest.mark.parametrize(
    "stages, seconds, n_epochs",
    [
        (DEFAULT_STAGES[:15], 600, 15),  # scored shorter than the signal: trimmed at the end
        (DEFAULT_STAGES, 18 * 30 + 10, 18),  # signal shorter than the scoring
    ],
)
def test_trim_to_the_shorter_of_signal_and_scoring(tmp_path, stages, seconds, n_epochs):
    make_night(tmp_path / "src", "n-1", stages=stages, seconds=seconds, markers={"eeg_c4": 11})
    row = parse(tmp_path / "src", tmp_path / "dst").iloc[0]
    assert (row["n_epochs"], row["kept_s"], row["signal_s"], row["scored_s"]) == (
        n_epochs,
        30.0 * n_epochs,
        seconds,
        30.0 * len(stages),
    )
    frame = read_table(tmp_path / "dst", "n-1")
    assert len(frame) == n_epochs and frame["stage"].tolist() == [STAGE_TRUTH[s] for s in stages[:n_epochs]]
    assert int(np.argmax(np.abs(channel(frame, "eeg_c4")).max(axis=1))) == 11  # not shifted
    events = pd.read_parquet(tmp_path / "dst" / "events.parquet")
    np.testing.assert_array_equal(events["beyond_end"], events["start_s"] >= 30 * n_epochs)


def test_unscored_and_movement_epochs_keep_their_place(tmp_path):
    stages = [0, 9, 9, 2, 2, 6, 2, 9, 4, 4]
    make_night(tmp_path / "src", "n-1", stages=stages, events=[])
    row = parse(tmp_path / "src", tmp_path / "dst").iloc[0]
    assert read_table(tmp_path / "dst", "n-1")["stage"].tolist() == [0, -1, -1, 2, 2, -1, 2, -1, 4, 4]
    assert row["n_scored"] == 6 and row["ahi_scored"] == 0.0


# ---------------------------------------------------------------------------------------------- bad inputs
def build_bad_cohort(src: Path) -> None:
    make_night(src, "good-1")
    make_night(src, "good-2", markers={"eeg_c3": 2})
    (src / "empty-3.edf").write_bytes(b"")
    write_xml(src / "empty-3-nsrr.xml", stage_events(DEFAULT_STAGES))
    (src / "garbage-4.edf").write_bytes(np.random.default_rng(0).bytes(5000))
    write_xml(src / "garbage-4-nsrr.xml", stage_events(DEFAULT_STAGES))
    make_night(src, "badxml-5")
    (src / "badxml-5-nsrr.xml").write_text("<PSGAnnotation><ScoredEvents><ScoredEvent><Start>0")
    make_night(src, "noxml-6", xml=False)
    make_night(src, "noephys-7", layout={k: SHHS1[k] for k in ("spo2", "airflow", "thor")})
    edf = make_night(src, "cut-8")
    edf.write_bytes(edf.read_bytes()[:-300])  # cut inside the last 1-s data record
    make_night(src, "units-9", overrides={"eeg_c4": {"unit": ""}, "eeg_c3": {"unit": "furlong"}})
    make_night(src, "unscored-10", stages=[9] * 20)
    edf = make_night(
        src,
        "dropped-11",
        overrides={
            "eeg_c3": {"values": lambda t: np.zeros_like(t)},
            "emg": {"values": lambda t: np.full_like(t, 125.0)},
        },
    )
    raw, n_signals, eog_l = bytearray(edf.read_bytes()), len(SHHS1), list(SHHS1).index("eog_l")
    start = 256 + n_signals * (16 + 80 + 8 + 8 + 8 + 8) + 8 * eog_l  # digital maximum field of EOG(L)
    raw[start : start + 8] = b"-32768  "  # = its digital minimum: an unusable header
    edf.write_bytes(bytes(raw))
    write_xml(src / "orphan-12-nsrr.xml", stage_events(DEFAULT_STAGES))


def test_every_bad_input_is_a_manifest_row_and_good_ones_finish(tmp_path, capsys):
    build_bad_cohort(tmp_path / "src")
    code = main(["--src", str(tmp_path / "src"), "--dst", str(tmp_path / "dst"), "--no-progress"])
    assert code == 1  # some recordings failed
    manifest = pd.read_parquet(tmp_path / "dst" / "manifest.parquet").set_index("recording_id")
    expected = {
        "good-1": ("ok", ""),
        "good-2": ("ok", ""),
        "empty-3": ("failed", "empty file"),
        "garbage-4": ("failed", "not an EDF"),
        "badxml-5": ("failed", "malformed XML"),
        "noxml-6": ("skipped", "no NSRR XML"),
        "noephys-7": ("skipped", "no electrophysiology channel"),
        "cut-8": ("ok", ""),
        "units-9": ("ok", ""),
        "unscored-10": ("skipped", "no scored epoch"),
        "dropped-11": ("ok", ""),
        "orphan-12": ("skipped", "no EDF file"),
    }
    assert sorted(manifest.index) == sorted(expected)
    for recording, (status, reason) in expected.items():
        row = manifest.loc[recording]
        assert row["status"] == status, (recording, row["reason"])
        assert reason in row["reason"] and "\n" not in row["reason"], recording
        if status == "failed":
            assert recording in row["reason"]  # names the file
        assert (tmp_path / "dst" / "recordings" / f"{recording}.parquet").exists() == (status == "ok")
    assert bool(manifest.loc["cut-8", "truncated"]) and manifest.loc["cut-8", "n_epochs"] == 19
    assert not bool(manifest.loc["good-1", "truncated"])
    assert bool(manifest.loc["units-9", "unit_assumed_eeg_c4"]) and bool(manifest.loc["units-9", "unit_assumed_eeg_c3"])
    assert not bool(manifest.loc["units-9", "unit_assumed_eog_l"])
    assert "ecg:mV" in manifest.loc["units-9", "units"].split(",")  # the EDF's unit as written (SHHS1 ECG is mV)
    assert "eeg_c3:furlong" in manifest.loc["units-9", "units"].split(",")
    dropped = manifest.loc["dropped-11", "dropped_channels"]
    assert "eeg_c3" in dropped and "flat" in dropped and "emg" in dropped and "clipped" in dropped
    assert "eog_l ('EOG(L)' invalid header" in dropped
    assert "eeg_c3" not in manifest.loc["dropped-11", "channels"].split(",")
    assert list(pd.read_csv(tmp_path / "dst" / "manifest.csv")["recording_id"]) == sorted(expected)
    out = capsys.readouterr().out
    assert "failed        3" in out and "skipped       4" in out and "ok            5" in out
    assert "empty-3" in out


def test_allow_unscored_writes_a_night_without_xml_unlabelled(tmp_path):
    make_night(tmp_path / "src", "noxml-1", xml=False)
    row = parse(tmp_path / "src", tmp_path / "dst", allow_unscored=True).iloc[0]
    assert row["status"] == "ok" and row["n_epochs"] == 20 and row["n_scored"] == 0
    frame = read_table(tmp_path / "dst", "noxml-1")
    assert (frame["stage"] == -1).all() and (frame["apnea"] == -1).all() and frame["apnea_s"].isna().all()
