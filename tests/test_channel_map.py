"""Channel resolution: built-in cohort tables, derivations, ambiguity, the user map and its file."""

from __future__ import annotations

import json

import pytest

from dataset.channel_map import ChannelMapError, label_key, load_channel_map, resolve_channels

SHHS1 = [
    "SaO2",
    "H.R.",
    "EEG(sec)",
    "ECG",
    "EMG",
    "EOG(L)",
    "EOG(R)",
    "EEG",
    "SOUND",
    "AIRFLOW",
    "THOR RES",
    "ABDO RES",
    "POSITION",
    "LIGHT",
    "NEW AIR",
    "OX stat",
]
MESA = [
    "EKG",
    "EOG-L",
    "EOG-R",
    "EMG",
    "EEG1",
    "EEG2",
    "EEG3",
    "Pres",
    "Flow",
    "Snore",
    "Thor",
    "Abdo",
    "Leg",
    "Therm",
    "Pos",
    "SpO2",
    "HR",
    "OxStatus",
]
MROS = [
    "C3",
    "C4",
    "A1",
    "A2",
    "LOC",
    "ROC",
    "L Chin",
    "R Chin",
    "ECG L",
    "ECG R",
    "Cannula Flow",
    "Airflow",
    "Thoracic",
    "Abdominal",
    "SaO2",
    "Position",
]
SLEEP_EDF = [
    "EEG Fpz-Cz",
    "EEG Pz-Oz",
    "EOG horizontal",
    "Resp oro-nasal",
    "EMG submental",
    "Temp rectal",
    "Event marker",
]


def texts(labels, rate=256.0, **kwargs):
    return {name: s.text for name, s in resolve_channels(labels, [rate] * len(labels), **kwargs).items()}


def test_label_key_ignores_case_space_and_punctuation():
    assert label_key("EOG(L)") == label_key("eog-l") == label_key(" EOG_L ") == "eogl"
    assert label_key("C4:M1") == label_key("c4-m1")


def test_shhs_labels_keep_their_channels():
    assert texts(SHHS1) == {
        "eeg_c4": "EEG",
        "eeg_c3": "EEG(sec)",
        "eog_l": "EOG(L)",
        "eog_r": "EOG(R)",
        "emg": "EMG",
        "ecg": "ECG",
        "airflow": "NEW AIR",
        "thor": "THOR RES",
        "abdo": "ABDO RES",
        "spo2": "SaO2",
    }
    assert texts([label for label in SHHS1 if label != "NEW AIR"])["airflow"] == "AIRFLOW"  # SHHS2: thermistor


def test_effort_belts_under_embla_and_somnomedics_labels():
    found = texts(["C4-M1", "Effort THO", "Effort ABD", "SpO2"], channels=["eeg_c4", "thor", "abdo", "spo2"])
    assert found == {"eeg_c4": "C4-M1", "thor": "Effort THO", "abdo": "Effort ABD", "spo2": "SpO2"}


@pytest.mark.parametrize(
    "labels, expected",
    [
        (  # Embla
            ["C4-M1", "E1-M2", "E2-M1", "Flow Patient", "Therm", "ECG II", "SpO2"],
            {"airflow": "Flow Patient", "ecg": "ECG II", "eog_r": "E2-M1"},
        ),
        (  # Natus / Pro-Tech
            ["C4-M1", "EOG LOC-A2", "EOG ROC-A2", "PTAF", "Therm", "EKG", "SpO2"],
            {"airflow": "PTAF", "ecg": "EKG", "eog_r": "EOG ROC-A2"},
        ),
        (  # Alice
            ["C4-A1", "EOG LOC-A2", "EOG ROC-A1", "Airflow", "ECG I", "SpO2"],
            {"airflow": "Airflow", "ecg": "ECG I", "eog_r": "EOG ROC-A1"},
        ),
        (["C4-M1", "ECG I", "ECG II", "Therm"], {"ecg": "ECG II", "airflow": "Therm"}),  # lead II first
    ],
)
def test_vendor_export_labels(labels, expected):
    found = texts(labels, channels=["eeg_c4", "eog_r", "ecg", "airflow"], cohort="clinical")
    assert {name: found.get(name) for name in expected} == expected


def test_mesa_eeg1_eeg2_never_fill_central_slots():
    """EEG1 is Fz-Cz and EEG2 Cz-Oz in MESA: only EEG3 (C4-M1) is a central channel, by name or by labels."""
    for cohort in ("mesa", None):
        found = texts(MESA, cohort=cohort)
        assert found["eeg_c4"] == "EEG3" and "eeg_c3" not in found
        assert found["airflow"] == "Pres" and found["ecg"] == "EKG" and found["eog_l"] == "EOG-L"


def test_excluded_sources_give_way_to_the_next_candidate_in_the_same_table():
    """A source found unusable is excluded and the next candidate taken, the cohort still told by every label:
    MESA's flat EEG3 leaves eeg_c4 unfilled (EEG1 is Fz-Cz there), not read from EEG1 as SHHS's "EEG 1"."""
    rates = [100.0] * len(MESA)
    for cohort in ("mesa", None):
        found = resolve_channels(MESA, rates, None, cohort, ("eeg_c4", "airflow"), exclude={("EEG3",), ("Pres",)})
        assert "eeg_c4" not in found and found["airflow"].text == "Flow"  # the thermistor after nasal pressure


def test_an_excluded_derivation_leaves_its_electrodes_free():
    """C4 - M1 found unusable (M1 off): C4 - M2 is the next candidate, C4 pairs again."""
    labels = ["C4", "M1", "M2"]
    user = {"eeg_c4": ["C4 - M1", "C4 - M2"]}
    assert resolve_channels(labels, [256.0] * 3, user, None, ("eeg_c4",))["eeg_c4"].text == "C4 - M1"
    found = resolve_channels(labels, [256.0] * 3, user, None, ("eeg_c4",), exclude={("C4", "M1")})
    assert found["eeg_c4"].text == "C4 - M2"


def test_referential_derivations_are_computed():
    found = texts(MROS, cohort="mros-visit1-aa0001")
    assert found["eeg_c4"] == "C4 - A1" and found["eeg_c3"] == "C3 - A2"
    assert found["eog_l"] == "LOC - A2" and found["eog_r"] == "ROC - A1" and found["emg"] == "L Chin - R Chin"
    assert found["airflow"] == "Cannula Flow" and "ecg" not in found  # ECG L / ECG R: only through a user map


def test_derivation_of_two_rates_is_a_reason_not_a_pick():
    source = resolve_channels(["C4", "M1"], [256.0, 128.0], channels=["eeg_c4"])["eeg_c4"]
    assert source.derived and "needs one rate" in source.problem and "256" in source.problem


@pytest.mark.parametrize(
    "labels, both",
    [
        (["C4-M1", "C4-A1"], ("'C4-M1'", "'C4-A1'")),
        (["C4", "A1", "M1"], ("'A1'", "'M1'")),
        (["EEG", "EEG 2", "EEG2"], ("'EEG 2'", "'EEG2'")),
    ],
)
def test_ambiguous_match_names_both(labels, both):
    with pytest.raises(ChannelMapError) as err:
        resolve_channels(labels, [100.0] * len(labels))
    assert all(name in str(err.value) for name in both)


def test_nonstandard_eeg_only_through_the_user_map():
    assert texts(SLEEP_EDF, rate=100.0) == {"emg": "EMG submental", "airflow": "Resp oro-nasal"}
    user = {"eeg_c4": "EEG Fpz-Cz", "eeg_c3": ["Fz-Cz", "EEG Pz-Oz"]}
    found = resolve_channels(SLEEP_EDF, [100.0] * len(SLEEP_EDF), user)
    assert found["eeg_c4"].text == "EEG Fpz-Cz" and found["eeg_c3"].text == "EEG Pz-Oz"
    assert found["eeg_c4"].nonstandard and found["eeg_c4"].origin == "user map"
    assert not found["emg"].nonstandard and found["emg"].origin == "common"
    mesa = resolve_channels(MESA, [256.0] * len(MESA), {"eeg_c3": "EEG1", "eeg_c4": "EEG3"})
    assert mesa["eeg_c3"].nonstandard and not mesa["eeg_c4"].nonstandard  # EEG3 is C4-M1 even via the map


def test_user_map_overrides_extends_and_disables():
    user = {"ecg": "ECG L - ECG R", "eeg_c4": ["C4-M1", "C4 - A2"], "eog_r": None, "airflow": "Airflow"}
    found = resolve_channels(MROS, [256.0] * len(MROS), user, cohort="mros")
    assert found["ecg"].labels == ("ECG L", "ECG R") and found["ecg"].origin == "user map"
    assert found["eeg_c4"].text == "C4 - A2"  # first user candidate absent, the second is a derivation
    assert "eog_r" not in found and found["airflow"].text == "Airflow"  # disabled; thermistor preferred by the user
    assert found["eeg_c3"].origin == "common"  # channels the map leaves out keep the built-in tables


def test_channel_map_file_yaml_json_and_errors(tmp_path):
    good = tmp_path / "map.yaml"
    good.write_text("eeg_c4: EEG Fpz-Cz\nemg: Chin1 - Chin2\neog_l: [E1-M2, LOC - A2]\neog_r: null\n")
    assert dict(load_channel_map(good)) == {
        "eeg_c4": ("EEG Fpz-Cz",),
        "emg": ("Chin1 - Chin2",),
        "eog_l": ("E1-M2", "LOC - A2"),
        "eog_r": (),
    }
    as_json = tmp_path / "map.json"
    as_json.write_text(json.dumps({"eeg_c4": "EEG Fpz-Cz"}))
    assert dict(load_channel_map(as_json)) == {"eeg_c4": ("EEG Fpz-Cz",)}
    for text, message in (
        ("eeg_c5: C4\n", "unknown channel 'eeg_c5'"),
        ("eeg_c4: 3\n", "expected a label"),
        ("eeg_c4: 'C4 - '\n", "needs a label on each side"),
        ("- a\n", "expected a mapping"),
        ("eeg_c4: [unclosed\n", "cannot parse"),
    ):
        bad = tmp_path / "bad.yaml"
        bad.write_text(text)
        with pytest.raises(ChannelMapError, match=message) as err:
            load_channel_map(bad)
        assert str(bad) in str(err.value)
