"""Synthetic MESA, MrOS, clinical-export and Sleep-EDF cohorts parse with the right channels, derivations and labels."""

from __future__ import annotations

import datetime
from fractions import Fraction

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from scipy import signal as sps

from dataset.constants import CHANNEL_BY_NAME, EPOCH_S
from dataset.data_parser import main, parse_cohort
from dataset.edf_reader import read_edf_header, read_signal
from dataset.signal_processing import (
    ProcessingConfig,
    bandpass_sos,
    load_night,
    quartiles,
    resample,
    resample_stages,
)
from dataset.synthetic import generate_cohort, generate_night, load_truth

HOURS = 0.25


def parsed(tmp_path, layout, nights=2, **kwargs):
    src, dst = tmp_path / layout, tmp_path / f"{layout}-out"
    generate_cohort(src, nights, HOURS, 4, layout)
    manifest = parse_cohort(src, dst, progress=False, **kwargs).set_index("recording_id")
    return load_truth(src), manifest, dst


def check_labels(truth, manifest, dst):
    for rid, night in truth.items():
        assert manifest.loc[rid, "status"] == "ok", manifest.loc[rid, "reason"]
        stages = pq.read_table(dst / manifest.loc[rid, "parquet"], columns=["stage"])["stage"].to_numpy()
        np.testing.assert_array_equal(stages, night.stages[: len(stages)])
        assert len(stages) == int(min(night.signal_s, night.scored_s) // EPOCH_S)


@pytest.mark.parametrize("layout", ["mesa", "mros", "clinical"])
def test_layout_channels_and_labels(tmp_path, layout):
    truth, manifest, dst = parsed(tmp_path, layout)
    check_labels(truth, manifest, dst)
    for rid, night in truth.items():
        expected = {name: text for name, text in night.channels.items() if not (layout == "mros" and name == "ecg")}
        sources = dict(part.split(":", 1) for part in manifest.loc[rid, "channel_sources"].split(";"))
        assert sources == expected
        rates = dict(part.split(":") for part in manifest.loc[rid, "native_rates"].split(","))
        assert {n: float(r) for n, r in rates.items()} == {n: night.rates[n] for n in expected}
    if layout == "mesa":  # EEG1 / EEG2 (Fz-Cz, Cz-Oz) never taken as C4-A1 / C3-A2
        assert (manifest["channel_sources"].str.contains("eeg_c4:EEG3")).all()
        assert not manifest["channels"].str.contains("eeg_c3").any()
        assert manifest.index.str.startswith("mesa-sleep-").all() and set(manifest["subject_id"]) == {"0001", "0002"}


def process_like_parser(x: np.ndarray, fs: float, name: str, n_epochs: int) -> np.ndarray:
    """The parser's steps on a physical signal: resample, band-pass, trim, robust scale."""
    spec, config = CHANNEL_BY_NAME[name], ProcessingConfig()
    native = Fraction(fs).limit_denominator(1000)  # the float rate as the rational the EDF header gives
    y = resample(x, resample_stages(native, spec.target_fs, x.size / fs), config.resample_padtype)
    y = sps.sosfiltfilt(bandpass_sos(config.band(spec), spec.target_fs, config.filter_order), y)
    epochs = y[: n_epochs * spec.epoch_samples].astype(np.float32)
    q25, median, q75 = quartiles(epochs)
    return ((epochs - np.float32(median)) * np.float32(1.0 / (q75 - q25))).reshape(n_epochs, -1)


def test_mros_derivations_are_differences_and_give_the_intended_signals(tmp_path):
    """C4 - M1 etc. equal the difference of the two referential signals processed as one channel, and the same
    night written with clinical-export labels (the intended derivations recorded directly) matches closely."""
    rid = "mros-visit1-aa0009"
    mros = generate_night(tmp_path / "m.edf", tmp_path / "m-nsrr.xml", rid, HOURS, 2, channels="mros")
    clinical = generate_night(tmp_path / "c.edf", tmp_path / "c-nsrr.xml", rid, HOURS, 2, channels="clinical")
    derived, _, info = load_night(
        mros.edf_path, mros.xml_path, config=ProcessingConfig(channel_map=(("ecg", ("ECG L - ECG R",)),))
    )
    direct, _, _ = load_night(clinical.edf_path, clinical.xml_path)
    assert "emg:Chin1 - Chin2" in info["channel_sources"] and "ecg:ECG L - ECG R" in info["channel_sources"]
    header, n = read_edf_header(mros.edf_path), info["n_epochs"]
    for name, (plus, minus) in {"eeg_c4": ("C4", "M1"), "eog_l": ("LOC", "M2"), "emg": ("Chin1", "Chin2")}.items():
        (a, fs), (b, _) = read_signal(header, plus), read_signal(header, minus)
        np.testing.assert_allclose(derived[name], process_like_parser(a - b, fs, name, n), atol=2e-4)
    assert set(derived) == set(direct)
    for name in derived:  # quantisation only, except where the export's narrower range clips artefacts
        off = np.mean(np.abs(derived[name] - direct[name]) > 0.01)
        assert off < 0.005, (name, off)


def test_sleep_edf_needs_the_user_map_for_eeg_and_flags_it(tmp_path):
    truth, manifest, dst = parsed(tmp_path, "sleep-edf", nights=3)
    check_labels(truth, manifest, dst)
    assert not manifest["channels"].str.contains("eeg").any()
    assert manifest["subject_id"].tolist() == ["SC00", "SC00", "SC01"]  # not "PSG" for every night
    channel_map = tmp_path / "map.yaml"
    channel_map.write_text("eeg_c4: EEG Fpz-Cz\neeg_c3: EEG Pz-Oz\neog_l: EOG horizontal\n")
    out = tmp_path / "mapped"
    assert (
        main(
            [
                "--src",
                str(tmp_path / "sleep-edf"),
                "--dst",
                str(out),
                "--channel-map",
                str(channel_map),
                "--no-progress",
            ]
        )
        == 0
    )
    mapped = pd.read_parquet(out / "manifest.parquet").set_index("recording_id")
    assert (mapped["nonstandard_channels"] == "eeg_c4,eeg_c3").all()
    assert (mapped["channel_map_channels"] == "eeg_c4,eeg_c3,eog_l").all()
    assert mapped["channel_sources"].str.startswith("eeg_c4:EEG Fpz-Cz;eeg_c3:EEG Pz-Oz;eog_l:EOG horizontal").all()
    rates = pq.read_schema(out / mapped["parquet"].iloc[0]).metadata[b"rates"].decode()
    assert '"native_hz": 100.0' in rates and '"label": "EEG Fpz-Cz"' in rates


def test_bad_channel_map_is_one_error_line(tmp_path, capsys):
    generate_cohort(tmp_path / "src", 1, 0.05, 0, "clinical")
    bad = tmp_path / "map.yaml"
    bad.write_text("eeg_c9: C4\n")
    assert (
        main(
            ["--src", str(tmp_path / "src"), "--dst", str(tmp_path / "out"), "--channel-map", str(bad), "--no-progress"]
        )
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and str(bad) in err[0]


def test_ambiguous_labels_fail_the_recording_naming_both(tmp_path):
    from dataset.synthetic_writers import write_edf

    rows = [("eeg_c4", "C4-M1", 100, "uV", -250.0, 250.0), ("eeg_c3", "C4-A1", 100, "uV", -250.0, 250.0)]
    signals = {"eeg_c4": np.zeros(3000), "eeg_c3": np.zeros(3000)}
    write_edf(tmp_path / "src" / "amb-1.edf", rows, signals, datetime.time(22, 0))
    (tmp_path / "src" / "amb-1.hypnogram.txt").write_text("W\n")
    manifest = parse_cohort(tmp_path / "src", tmp_path / "out", progress=False)
    assert manifest["status"].tolist() == ["failed"]
    assert "'C4-M1'" in manifest["reason"].iloc[0] and "'C4-A1'" in manifest["reason"].iloc[0]
