"""Header fields that cannot describe the data (docs/data.md §2.1): each is refused with the file named, or drops
its signal with the reason, instead of giving a table of misaligned or mis-scaled samples."""

from __future__ import annotations

import datetime
from pathlib import Path

import numpy as np
import pytest

from dataset.edf_reader import EdfError, read_edf_header, read_tals
from dataset.signal_processing import load_night
from dataset.synthetic_writers import write_edf

SECONDS = 600
LAYOUT = [("eeg", "C4-M1", 125, "uV", -250.0, 250.0), ("pos", "POSITION", 1, "", 0.0, 5.0)]


def _night(path: Path, annotations: list | None = None) -> Path:
    rng = np.random.default_rng(0)
    signals = {"eeg": rng.normal(0.0, 20.0, SECONDS * 125), "pos": np.full(SECONDS, 2.0)}
    write_edf(path, LAYOUT, signals, datetime.time(23, 0, 0), annotations)
    return path


def _field(path: Path, signal: int, offset: int, width: int, text: str) -> None:
    """Overwrite one signal's header field (`offset`: the field's start in the signal block, per signal)."""
    data = bytearray(path.read_bytes())
    n_signals = int(data[252:256])
    at = 256 + offset * n_signals + signal * width
    data[at : at + width] = text.ljust(width).encode("ascii")
    path.write_bytes(bytes(data))


SAMPLES, DIGITAL_MIN, DIGITAL_MAX = (216, 8), (120, 8), (128, 8)  # (offset per signal block, width)


@pytest.mark.parametrize("samples", ["124.9", "1e2", "1_25"])
def test_a_samples_field_that_is_no_integer_is_refused(tmp_path, samples):
    """ "124.9" read as 124 shifted every later sample into another signal; "125.0" is an integer as written."""
    path = _night(tmp_path / "night.edf")
    _field(path, 0, *SAMPLES, samples)
    with pytest.raises(
        EdfError, match=rf"samples per record of signal 0 \('C4-M1'\) is '{samples}', expected an integer"
    ):
        read_edf_header(path)
    _field(path, 0, *SAMPLES, "125.0")
    assert read_edf_header(path).signals[0].samples_per_record == 125


def test_a_samples_field_smaller_than_the_data_is_refused(tmp_path):
    """POSITION written with 1 sample per record but declared with 0: the data holds every record 2 bytes larger,
    so each later sample would be read into another signal."""
    path = _night(tmp_path / "night.edf")
    _field(path, 1, *SAMPLES, "0")
    with pytest.raises(
        EdfError, match=rf"the data holds {SECONDS} records of 252 bytes, not of the 250 .* samples-per"
    ):
        read_edf_header(path)


@pytest.mark.parametrize("cut", [100, 2 * SECONDS, 3 * SECONDS])
def test_bytes_after_the_last_record_and_a_cut_record_still_read(tmp_path, cut):
    """A file cut mid-record reads up to its last whole record, also where the cut divides by the record count
    (as a samples field one too large would: such data reads as truncated, not refused)."""
    path = _night(tmp_path / "night.edf")
    data = path.read_bytes()
    path.write_bytes(data + b"\0" * 100)
    assert read_edf_header(path).n_records == SECONDS
    path.write_bytes(data[:-cut])
    header = read_edf_header(path)
    assert header.n_records == SECONDS - -(-cut // 252) and header.truncated  # 252 bytes a record


def test_a_digital_range_beyond_16_bits_drops_its_channel(tmp_path):
    """-100000..100000 on 16-bit samples hid an EEG pinned at the rails from the clipping check; its scale was
    wrong too."""
    path = _night(tmp_path / "night.edf")
    _field(path, 0, *DIGITAL_MIN, "-100000")
    _field(path, 0, *DIGITAL_MAX, "100000")
    assert "outside the 16-bit samples' [-32768, 32767]" in read_edf_header(path).signals[0].problem
    with pytest.raises(Exception, match="digital range"):
        load_night(path, channels=["eeg_c4"])


def test_a_record_duration_that_makes_the_night_years_long_is_refused(tmp_path):
    path = _night(tmp_path / "night.edf")
    data = bytearray(path.read_bytes())
    data[244:252] = b"100000  "
    path.write_bytes(bytes(data))
    with pytest.raises(EdfError, match=r"600 data records of 100000 s make 16667 h, more than the 72 h"):
        read_edf_header(path)


def test_annotation_times_that_are_no_number_and_an_empty_annotation_signal_are_refused(tmp_path):
    path = _night(tmp_path / "night.edf", annotations=[(60.0, 30.0, "Sleep stage W")])
    header = read_edf_header(path)
    signal = next(s for s in header.signals if s.is_annotation)
    assert [texts for _, _, _, texts in read_tals(header, signal) if texts and texts[0]] == [["Sleep stage W"]]
    data = path.read_bytes()
    at = data.index(b"+60\x1530")
    path.write_bytes(data[:at] + b"+nan\x1530" + data[at + 6 :])
    with pytest.raises(EdfError, match="malformed EDF\\+ annotation '\\+nan"):
        list(read_tals(read_edf_header(path), signal))
    empty = signal.__class__(**{**signal.__dict__, "samples_per_record": 0})
    with pytest.raises(EdfError, match="EDF Annotations signal has 0 samples per record"):
        list(read_tals(header, empty))
