"""Legal but pathological EDF headers and signals: what the parser stores from them, or why it drops the channel.

Each night is written with edfio, then a header field is patched where edfio refuses the value (a physical
range of zero width, or beyond 32-bit floats), as other recorders write them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.parser_nights import SHHS1, channel, make_night, parse, read_table

OFFSET_UV = 3e5  # a DC-coupled amplifier's offset: 300 mV
SIGNAL_FIELDS = (("label", 16), ("transducer", 80), ("unit", 8), ("pmin", 8), ("pmax", 8))


def patch_field(edf: Path, label: str, field: str, value: str) -> None:
    """Overwrite one 8-character header field (`pmin` / `pmax`) of the signal labelled `label` in place."""
    raw = bytearray(edf.read_bytes())
    n_signals = int(raw[252:256])
    labels = [raw[256 + 16 * i : 256 + 16 * (i + 1)].decode().strip() for i in range(n_signals)]
    start = 256 + sum(n_signals * width for name, width in SIGNAL_FIELDS[: [f for f, _ in SIGNAL_FIELDS].index(field)])
    at = start + 8 * labels.index(label)
    raw[at : at + 8] = value.ljust(8).encode()
    edf.write_bytes(bytes(raw))


def test_a_zero_width_physical_range_drops_that_channel_not_the_night(tmp_path):
    """physical minimum == maximum (every sample the same value) on a respiratory belt: the belt is dropped as an
    invalid header, as a zero digital range is; it used to fail the night with a ZeroDivisionError."""
    edf = make_night(tmp_path / "src", "belt-1")
    patch_field(edf, SHHS1["abdo"][0], "pmax", "-3")
    row = parse(tmp_path / "src", tmp_path / "dst").set_index("recording_id").loc["belt-1"]
    assert row["status"] == "ok", row["reason"]
    assert "abdo ('ABDO RES' invalid header: physical range [-3, -3])" in row["dropped_channels"]
    assert "abdo" not in row["channels"].split(",") and "thor" in row["channels"].split(",")


def test_a_dc_offset_leaves_the_stored_eeg_as_without_it(tmp_path):
    """A 300-mV offset on a 125-Hz EEG: the polyphase branches of the 125 -> 100 Hz resampler pass it with
    slightly different gains, which made a 25-Hz tone larger than the EEG itself; centred before resampling,
    the stored channel is the one without the offset."""
    plain = {"eeg_c4": {"values": lambda t: 40 * np.sin(2 * np.pi * 10 * t) + 15 * np.sin(2 * np.pi * 3 * t)}}
    shifted = {
        "eeg_c4": {
            "values": lambda t: OFFSET_UV + plain["eeg_c4"]["values"](t),
            "range": (OFFSET_UV - 500, OFFSET_UV + 500),
        }
    }
    make_night(tmp_path / "src", "plain-1", overrides=plain)
    make_night(tmp_path / "src", "offset-2", overrides=shifted)
    manifest = parse(tmp_path / "src", tmp_path / "dst").set_index("recording_id")
    assert (manifest["status"] == "ok").all()
    reference = channel(read_table(tmp_path / "dst", "plain-1"), "eeg_c4")
    stored = channel(read_table(tmp_path / "dst", "offset-2"), "eeg_c4")
    assert np.abs(stored - reference).max() < 1e-3 * np.abs(reference).max()
    assert manifest.loc["offset-2", "iqr_eeg_c4"] == pytest.approx(manifest.loc["plain-1", "iqr_eeg_c4"], rel=1e-4)
    # the band-pass removes the offset: the median is the filtered signal's, as without it
    assert abs(manifest.loc["offset-2", "median_eeg_c4"] - manifest.loc["plain-1", "median_eeg_c4"]) < 0.01


def test_a_belt_far_from_zero_keeps_its_resolution(tmp_path):
    """A belt whose values sit at 1e7 in the EDF's units, swinging over ±8,000 digital steps: stored to its
    full resolution (it was cast to 32-bit floats before centring: 19 levels an epoch, or dropped as flat)."""

    def breathing(t):
        return 1e7 + 0.25 * np.sin(2 * np.pi * 0.25 * t) + 0.05 * np.sin(2 * np.pi * 0.0731 * t)

    swing = {"values": breathing, "range": (1e7 - 1, 1e7 + 1)}
    make_night(tmp_path / "src", "belt-3", overrides={"thor": swing, "airflow": swing})
    row = parse(tmp_path / "src", tmp_path / "dst").set_index("recording_id").loc["belt-3"]
    assert row["status"] == "ok" and row["dropped_channels"] == ""
    frame = read_table(tmp_path / "dst", "belt-3")
    for name in ("thor", "airflow"):
        assert len(np.unique(channel(frame, name)[3])) > 200, name
        assert abs(row[f"median_{name}"] - 1e7) < 0.1  # unfiltered: the offset stays on record


def test_a_physical_range_beyond_float32_is_dropped_never_stored_as_inf(tmp_path):
    """A header whose physical range (±1e39) overflows 32-bit floats: that channel is dropped by name, and no
    inf or NaN reaches the Parquet (the night was staged as all-wake from NaN probabilities)."""
    loud = {"eeg_c4": {"values": lambda t: 450 * np.sin(2 * np.pi * 10 * t)}}  # ±59,000 digital steps
    edf = make_night(tmp_path / "src", "huge-4", overrides=loud)
    patch_field(edf, SHHS1["eeg_c4"][0], "pmin", "-1e+39")
    patch_field(edf, SHHS1["eeg_c4"][0], "pmax", "1e+39")
    row = parse(tmp_path / "src", tmp_path / "dst").set_index("recording_id").loc["huge-4"]
    assert row["status"] == "ok", row["reason"]
    assert "eeg_c4 ('EEG' invalid values: beyond 32-bit floats" in row["dropped_channels"]
    table = pq.read_table(tmp_path / "dst" / "recordings" / "huge-4.parquet")
    for name in row["channels"].split(","):
        assert np.isfinite(np.stack(table.column(name).to_numpy(zero_copy_only=False))).all(), name
