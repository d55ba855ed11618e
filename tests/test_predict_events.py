"""predict.py with an event model (`--events`, downstream/predict.py + downstream/night_respiratory.py): the ODI,
SpO2 and persistent-sleep rules on hand-made traces, the reliability verdict, and the whole path on an unseen
synthetic night: typed events in events.csv, the AHI recomputed from them over predicted sleep, the UNRELIABLE
flag (weak validation, a night without respiratory channels), the exports carrying the typed events; and the
event_detection row of evaluate.py's comparison table."""

from __future__ import annotations

import json
import math
import shutil
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dataset import synthetic
from dataset.nsrr_xml import parse_nsrr_xml
from downstream import evaluate, predict
from downstream.night_inference import recording_start
from downstream.night_report import SUMMARY_COLUMNS, _fmt_index, oximetry_note, summary_markdown
from downstream.night_respiratory import (
    EVENT_F1_MIN,
    MIN_SLEEP_MIN,
    MIN_VALIDATION_NIGHTS,
    assess_reliability,
    desaturations,
    oximetry_summary,
    persistent_sleep_latency,
    spo2_percent,
)
from tests.checks import drop_last_records
from utils.ahi import event_index
from utils.events import Event

SLEEP = ("N1", "N2", "N3", "REM")
STRONG_EVENTS = {"event_f1_apnea": 0.9, "event_f1_hypopnea": 0.8, "ahi_severity_kappa": 0.9, "ahi_n": 20}


# ---------------------------------------------------------------------------------------- hand-made traces
def test_desaturations_follow_the_stated_rule():
    """>= 3 % below the preceding 120-s baseline for >= 10 s: a 3.5 % dip of 30 s counts, a 2.5 % dip of 30 s
    and a 5 % dip of 8 s do not; an artefact second (0 %) neither starts one nor moves the baseline."""
    spo2 = np.full(1800, 96.0)
    spo2[300:330] = 92.5  # counts: 3.5 % for 30 s
    spo2[600:630] = 93.5  # 2.5 %: too shallow
    spo2[900:908] = 91.0  # 5 % for 8 s: too short
    spo2[1200:1225] = 92.0  # counts: 4 % for 25 s, with an artefact second inside the preceding baseline
    spo2[1150] = np.nan
    found = desaturations(spo2)
    assert [(e.onset_s, e.duration_s) for e in found] == [(300.0, 30.0), (1200.0, 25.0)]
    assert [e.drop_pct for e in found] == pytest.approx([3.5, 4.0])
    stages = np.full(60, 2)  # 30 min of N2
    stages[:20] = 0  # the first 10 min awake: the dip at 300 s is in wake
    summary, _ = oximetry_summary(spo2, stages)
    assert summary["n_desaturations"] == 2 and summary["n_desaturations_in_sleep"] == 1
    # one desaturation in 20 min of sleep, one second of it an artefact: per hour of valid SpO2 in sleep
    assert summary["odi"] == pytest.approx(1 / ((40 * 30 - 1) / 3600))
    assert summary["odi_4"] == summary["odi"]  # the dip in sleep is 4 % deep; the 3.5 % one is in wake
    assert summary["spo2_min_pct"] == pytest.approx(91.0) and summary["spo2_below_90_min"] == 0.0
    assert summary["spo2_valid_sleep_min"] == pytest.approx((1200 - 1) / 60)  # the artefact second left out


def test_the_odi_counts_hours_of_valid_oximetry_and_has_a_4_percent_variant():
    """12 dips of 5 % in the first hour of N2, the probe off for the second: 12 per hour of valid SpO2, not 6 per
    hour of sleep (artefact seconds can hold no desaturation); a 3.5 % dip counts for the ODI, not the ODI 4 %."""
    spo2 = np.full(7200, 97.0)
    for k in range(12):
        spo2[300 + k * 270 : 320 + k * 270] = 92.0
    spo2[3600:] = np.nan
    summary, _ = oximetry_summary(spo2, np.full(240, 2))
    assert summary["odi"] == pytest.approx(12.0) and summary["odi_4"] == pytest.approx(12.0)
    spo2[3450:3470] = 93.5  # 3.5 % below the 97 % baseline
    summary, _ = oximetry_summary(spo2, np.full(240, 2))
    assert summary["odi"] == pytest.approx(13.0) and summary["odi_4"] == pytest.approx(12.0)
    assert summary["spo2_valid_sleep_share"] == 0.5 and summary["reliable"] and oximetry_note(summary) == []
    spo2[1800:] = np.nan  # the probe off after 30 min: a quarter of sleep left
    summary, _ = oximetry_summary(spo2, np.full(240, 2))
    assert summary["spo2_valid_sleep_share"] == 0.25 and summary["reliable"] is False
    assert oximetry_note(summary)[0].startswith("**UNRELIABLE**: valid SpO2 over 25.0 % of predicted sleep")
    summary, _ = oximetry_summary(spo2, np.zeros(240, dtype=int))  # no sleep: no share, nothing to say
    assert math.isnan(summary["spo2_valid_sleep_share"]) and oximetry_note(summary) == []


def test_spo2_is_unscaled_to_percent_and_artefacts_dropped():
    pct = np.repeat([95.0, 88.0, 30.0, 97.0], 10)  # 4 s at 10 Hz; 30 % is an artefact
    median, iqr = 96.0, 2.0
    level = spo2_percent((pct - median) / iqr, median, iqr)
    assert level[[0, 1, 3]] == pytest.approx([95.0, 88.0, 97.0]) and math.isnan(level[2])
    summary, _ = oximetry_summary(np.repeat(level, 30)[:120], np.full(4, 2))
    assert summary["spo2_below_90_min"] == pytest.approx(0.5) and summary["spo2_mean_pct"] == pytest.approx(280 / 3)


def test_no_valid_oximetry_gives_no_odi_rather_than_zero():
    summary, desats = oximetry_summary(np.full(1200, np.nan), np.full(40, 2))
    assert desats == [] and math.isnan(summary["odi"]) and summary["spo2_valid_sleep_min"] == 0.0
    assert math.isnan(summary["spo2_mean_pct"])


def test_indices_are_shown_truncated_so_the_class_matches():
    """14.95 events/h is "mild": shown 14.9, never 15.0; boundaries and binary fractions stay exact."""
    assert [_fmt_index(v) for v in (14.9529, 15.0, 2.3, 29.99, 4.96, 0.0)] == [
        "14.9",
        "15.0",
        "2.3",
        "29.9",
        "4.9",
        "0.0",
    ]
    assert _fmt_index(float("nan")) == "n/a" and _fmt_index(None) == "n/a"


def test_latency_to_persistent_sleep():
    assert persistent_sleep_latency([0, 0, 2, 0] + [2] * 19 + [0] + [1] * 20) == pytest.approx(12.0)
    assert math.isnan(persistent_sleep_latency([2] * 19 + [0]))


def test_reliability_reasons_and_thresholds():
    strong = assess_reliability("event model", {"val_kappa": 0.8}, STRONG_EVENTS, [], 400.0)
    assert strong["reliable"] is True and strong["reasons"] == []
    weak = assess_reliability(
        "event model",
        {"val_kappa": 0.4},
        {**STRONG_EVENTS, "event_f1_hypopnea": EVENT_F1_MIN - 0.1, "ahi_n": MIN_VALIDATION_NIGHTS - 1},
        ["spo2"],
        400.0,
    )
    assert weak["reliable"] is False
    text = " | ".join(weak["reasons"])
    assert "staging validation kappa 0.40" in text and "hypopnea event F1 0.40" in text
    assert "validated on 9 night(s)" in text and "lacks spo2" in text and "apnea event F1" not in text
    epochs = assess_reliability("epoch runs", {"val_kappa": 0.9}, None, [], 400.0)
    assert epochs["reliable"] is False and "runs of positive 30-s epochs" in epochs["reasons"][0]
    # staged from the chin EMG alone: the hours of sleep the index divides by are in doubt
    partial = assess_reliability("event model", {"val_kappa": 0.8}, STRONG_EVENTS, [], 400.0, None, ["eeg_c4", "eog_l"])
    assert partial["reliable"] is False and partial["reasons"] == [
        "the night lacks eeg_c4, eog_l, read by the staging model (its validation kappa was measured with them; "
        "sleep time may be wrong)"
    ]


def test_little_sleep_or_little_valid_spo2_is_unreliable():
    """An index per hour of sleep from under 10 min of sleep, or an event model that lacked valid SpO2 over most
    of sleep, is flagged; an all-wake night (TST 0, no index at all) too."""
    full = {"spo2_valid_sleep_min": 380.0}
    assert assess_reliability("event model", {"val_kappa": 0.8}, STRONG_EVENTS, [], 400.0, full)["reliable"] is True
    short = assess_reliability("event model", {"val_kappa": 0.8}, STRONG_EVENTS, [], 0.5, {"spo2_valid_sleep_min": 0.5})
    assert short["reliable"] is False and short["reasons"] == [
        f"0.5 min of predicted sleep (< {MIN_SLEEP_MIN:g}): an index per hour of sleep from so little sleep says little"
    ]
    asleep = assess_reliability("epoch runs", {"val_kappa": 0.8}, None, [], 0.0)
    assert any("0.0 min of predicted sleep" in reason for reason in asleep["reasons"])
    probe_off = assess_reliability(
        "event model", {"val_kappa": 0.8}, STRONG_EVENTS, [], 400.0, {"spo2_valid_sleep_min": 100.0}
    )
    assert probe_off["reliable"] is False
    assert probe_off["reasons"] == [
        "valid SpO2 covers 25 % of predicted sleep (< 50 %): the event model's desaturation input is missing there"
    ]


def test_oximetry_without_valid_spo2_in_sleep_is_unknown_not_zero():
    spo2 = np.full(1800, 95.0)
    spo2[600:] = np.nan  # the probe comes off as the sleeper falls asleep
    stages = np.full(60, 2)
    stages[:20] = 0
    summary, _ = oximetry_summary(spo2, stages)
    assert summary["spo2_valid_sleep_min"] == 0.0
    assert all(math.isnan(summary[k]) for k in ("odi", "odi_4", "spo2_mean_pct", "spo2_min_pct", "spo2_below_90_min"))


# ---------------------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def apneic_night(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("predict_events_night")
    edf, xml = root / "osa-900011.edf", root / "osa-900011-nsrr.xml"
    synthetic.generate_night(edf, xml, "osa-900011", hours=1.0, seed=21)
    return edf, xml


def _strong(run: Path, out: Path, metrics_edit) -> Path:
    """A copy of `run` whose metrics.json is edited by `metrics_edit(metrics)`."""
    shutil.copytree(run, out)
    metrics = json.loads((out / "metrics.json").read_text())
    metrics_edit(metrics)
    (out / "metrics.json").write_text(json.dumps(metrics))
    return out


def test_events_give_the_ahi_from_typed_events_over_predicted_sleep(
    predict_argv, event_features_run, apneic_night, tmp_path, capsys
):
    edf, xml = apneic_night
    out = tmp_path / "out"
    assert predict.main(predict_argv(edf, out, "--events", str(event_features_run), "--xml", str(xml))) == 0
    console = capsys.readouterr().out
    report = json.loads((out / "report.json").read_text(), parse_constant=lambda c: pytest.fail(f"non-strict {c}"))
    events = pd.read_csv(out / "events.csv")
    assert list(events.columns[:5]) == ["onset_s", "duration_s", "type", "probability", "counted"]
    assert len(events) > 0 and (events["duration_s"] >= 10).all()
    assert set(events["type"]) <= {"obstructive_apnea", "central_apnea", "mixed_apnea", "hypopnea"}
    assert ((events["probability"] > 0) & (events["probability"] <= 1)).all()
    assert (out / "epoch_events.csv").is_file()  # the epoch runs' events beside the model's
    start = recording_start(edf)  # each event's clock time is its onset's, not its epoch's start
    assert list(events["time"]) == [(start + timedelta(seconds=s)).strftime("%H:%M:%S") for s in events["onset_s"]]
    assert (events["onset_s"] % 30 != 0).any()

    # the AHI recomputes from events.csv and the predicted hypnogram: counted, onset in predicted sleep
    hypnogram = pd.read_csv(out / "hypnogram.csv", keep_default_na=False)
    stages = hypnogram["stage_code"].to_numpy()
    sleep = hypnogram["stage"].isin(SLEEP).to_numpy()
    counted = [Event(r.onset_s, r.duration_s, r.type) for r in events.itertuples() if r.counted]
    ahi = report["ahi"]
    assert ahi["source"] == "event model" and ahi["hypopnea_rule"] == "3a"
    assert ahi["ahi"] == pytest.approx(event_index(counted, sleep))
    assert ahi["ahi_rem"] is None or ahi["ahi_rem"] == pytest.approx(event_index(counted, sleep, within=stages == 4))
    assert ahi["n_counted_in_sleep"] == int((events["counted"] & events["in_sleep"]).sum())
    assert "ahi_est" not in report["sleep"]  # no epoch calibration factor when an event model is given
    assert (
        report["sleep"]["persistent_sleep_latency_min"] is None
        or report["sleep"]["persistent_sleep_latency_min"] >= report["sleep"]["sol_min"]
    )

    oximetry = report["oximetry"]
    assert oximetry["odi"] is not None and oximetry["n_desaturations"] > 0
    assert 80 < oximetry["spo2_mean_pct"] < 100 and oximetry["spo2_min_pct"] <= oximetry["spo2_mean_pct"]
    assert report["agreement"]["ahi"]["hypopnea_rule"] == "3a" and report["agreement"]["ahi"]["scored"] > 0
    # every breathing signal carries through the night: no loss, no warning
    assert report["airflow"]["flow_lost_min"] == 0 and "warning" not in report["airflow"]
    assert {belt: loss[f"{belt}_lost_min"] for belt, loss in report["effort"].items()} == {"thor": 0, "abdo": 0}

    # weak validation on 2 val nights: flagged, not bold, said on the console
    assert report["reliability"]["reliable"] is False
    assert any("night(s)" in reason for reason in report["reliability"]["reasons"])
    assert report["validation"]["events"]["split"] == "val" and "val_kappa" in report["validation"]["sleep_stage"]
    markdown = (out / "report.md").read_text()
    assert "UNRELIABLE AHI ESTIMATE" in markdown and f"**{ahi['ahi']:.1f} events/h" not in markdown
    assert "ODI" in markdown and "latency to persistent sleep" in markdown
    assert "warning:" in console and "UNRELIABLE" in console

    # the exports carry the model's typed events (and the desaturations)
    annotations = parse_nsrr_xml(out / "predicted-nsrr.xml")
    exported = sorted((e["type"], e["start_s"]) for e in annotations.events if e["type"] != "desaturation")
    assert exported == sorted(zip(events["type"], events["onset_s"].round(1)))
    assert sum(e["type"] == "desaturation" for e in annotations.events) == oximetry["n_desaturations"]
    bids = pd.read_csv(out / "events.tsv", sep="\t")
    assert set(events["type"]) <= set(bids["trial_type"])


def test_strong_validation_is_reliable_and_scored_ahi_follows_the_rule(
    predict_runs, event_features_run, apneic_night, tmp_path
):
    edf, xml = apneic_night

    def strong_events(metrics):
        metrics["val"]["n_recordings"] = 20
        metrics["val"]["events"]["apnea"]["f1"] = metrics["val"]["events"]["hypopnea"]["f1"] = 0.9
        metrics["val"]["ahi"]["agreement"].update(severity_kappa=0.9, n=20)

    def strong_stage(metrics):
        metrics["selection"]["val"]["val_kappa"] = 0.9

    events = _strong(event_features_run, tmp_path / "strong_events", strong_events)
    stage = _strong(predict_runs["stage"], tmp_path / "strong_stage", strong_stage)
    scored = {}
    for rule in ("4", "3a", "all"):
        out = tmp_path / f"out-{rule}"
        assert (
            predict.main(
                [
                    "--checkpoint",
                    str(stage),
                    "--events",
                    str(events),
                    "--edf",
                    str(edf),
                    "--xml",
                    str(xml),
                    "--hypopnea-rule",
                    rule,
                    "--out",
                    str(out),
                    "--no-progress",
                ]
            )
            == 0
        )
        report = json.loads((out / "report.json").read_text())
        assert report["hypopnea_rule"] == rule and report["agreement"]["ahi"]["hypopnea_rule"] == rule
        scored[rule] = report["agreement"]["ahi"]["scored"]
    assert scored["4"] <= scored["3a"] <= scored["all"] and scored["4"] < scored["all"]
    assert report["reliability"] == {**report["reliability"], "reliable": True, "reasons": []}
    markdown = (out / "report.md").read_text()
    assert "UNRELIABLE" not in markdown and f"**{_fmt_index(report['ahi']['ahi'])} events/h" in markdown
    assert any("rule 3a" in note and "rule all" in note for note in report["notes"])
    tst = report["sleep"]["tst_min"]  # a 1-h night: reliable, with the clinical minimum of sleep noted
    assert MIN_SLEEP_MIN <= tst < 120 and any(
        f"rests on {tst:.1f} min of predicted sleep" in n for n in report["notes"]
    )


def test_a_night_without_respiratory_channels_is_flagged(predict_runs, event_features_run, tmp_path):
    edf, xml = tmp_path / "norsp-900012.edf", tmp_path / "norsp-900012-nsrr.xml"
    synthetic.generate_night(
        edf, xml, "norsp-900012", hours=0.3, seed=22, missing_channels=("airflow", "thor", "abdo", "spo2")
    )
    drop_last_records(edf, 13)  # 1,080 one-second records -> 1,067 s: 35 epochs and 17 s
    out = tmp_path / "out"
    assert (
        predict.main(
            [
                "--checkpoint",
                str(predict_runs["stage"]),
                "--events",
                str(event_features_run),
                "--edf",
                str(edf),
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    report = json.loads((out / "report.json").read_text())
    assert report["reliability"]["reliable"] is False and report["oximetry"] is None
    assert any("lacks airflow, thor, abdo, spo2" in reason for reason in report["reliability"]["reasons"])
    assert report["channels"]["models"]["events"]["used"] == []
    # no estimate at all, rather than the confident 0 of a model that reads missing inputs as no events
    ahi = report["ahi"]
    assert ahi["ahi"] is None and ahi["apnea_index"] is None and ahi["severity_name"] == "not estimated"
    assert ahi["withheld"] == "the night lacks airflow, thor, abdo, spo2, read by the event model"
    assert "Estimated AHI (event model): not estimated: the night lacks" in (out / "report.md").read_text()
    # the EDF ends 17 s into an epoch: that part is not predicted, and the report says so
    assert report["n_epochs"] == 35 and report["sleep"]["trt_min"] == 17.5
    assert any(note.startswith("the last 17 s of the recording") for note in report["notes"])

    # without SpO2 only, flow and effort remain: the estimate stands, flagged
    edf = tmp_path / "nospo2-900013.edf"
    synthetic.generate_night(edf, tmp_path / "nospo2-900013-nsrr.xml", "nospo2-900013", hours=0.3, seed=23,
                             missing_channels=("spo2",))  # fmt: skip
    args = ["--checkpoint", str(predict_runs["stage"]), "--events", str(event_features_run), "--no-progress"]
    assert predict.main([*args, "--edf", str(edf), "--out", str(tmp_path / "out2")]) == 0
    report = json.loads((tmp_path / "out2" / "report.json").read_text())
    assert "withheld" not in report["ahi"] and report["ahi"]["severity_name"] != "not estimated"
    assert report["reliability"]["reliable"] is False and any(
        "lacks spo2" in r for r in report["reliability"]["reasons"]
    )


def test_a_night_without_airflow_scores_no_apnea_or_hypopnea(predict_runs, event_features_run, tmp_path, monkeypatch):
    """Effort belts and SpO2 but no flow: the AHI is withheld, and no apnea or hypopnea is listed in events.csv
    or exported as scored (desaturations stay), whatever the event model would find from the belts."""
    found = [Event(60.0, 15.0, "obstructive_apnea"), Event(300.0, 20.0, "hypopnea")]
    monkeypatch.setattr(predict, "detect_night_events", lambda *_args: (found, [True, True]))
    edf = tmp_path / "noflow-900014.edf"
    synthetic.generate_night(edf, tmp_path / "noflow-900014-nsrr.xml", "noflow-900014", hours=0.5, seed=21,
                             missing_channels=("airflow",))  # fmt: skip
    out = tmp_path / "out"
    argv = ["--checkpoint", str(predict_runs["stage"]), "--events", str(event_features_run), "--no-progress"]
    assert predict.main([*argv, "--edf", str(edf), "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["ahi"]["severity_name"] == "not estimated" and report["ahi"]["withheld"].startswith(
        "the night lacks airflow"
    )
    events = pd.read_csv(out / "events.csv")
    respiratory = events["type"].str.contains("apnea|hypopnea") if len(events) else []
    assert not any(respiratory)
    xml = (out / "predicted-nsrr.xml").read_text()
    assert "Apnea" not in xml and "Hypopnea" not in xml


def test_epoch_runs_alone_are_flagged_and_a_bad_event_run_is_an_input_error(
    predict_argv, predict_runs, apneic_night, tmp_path, capsys
):
    edf, _ = apneic_night
    out = tmp_path / "out"
    assert predict.main(predict_argv(edf, out)) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["ahi"]["source"] == "epoch runs" and report["reliability"]["reliable"] is False
    assert "**" not in (out / "report.md").read_text().split("Estimated AHI")[1].splitlines()[0]
    bad = tmp_path / "bad_run"
    bad.mkdir()
    (bad / "model.pkl").write_bytes(b"not a pickle")
    assert (
        predict.main(
            [
                "--checkpoint",
                str(predict_runs["stage"]),
                "--events",
                str(bad),
                "--edf",
                str(edf),
                "--out",
                str(tmp_path / "x"),
                "--no-progress",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err.startswith("error: --events ") and str(bad) in err and err.count("\n") == 1
    assert not (tmp_path / "x").exists()


def test_evaluate_has_an_event_detection_row(event_features_run, predict_runs, tmp_path):
    out = tmp_path / "comparison"
    assert evaluate.main([str(event_features_run), str(predict_runs["stage"]), "--out", str(out)]) == 0
    table = pd.read_csv(out / "comparison.csv")
    row = table[table["task"] == "event_detection"].iloc[0]
    metrics = json.loads((event_features_run / "metrics.json").read_text())["test"]
    assert row["event_f1_apnea"] == pytest.approx(metrics["events"]["apnea"]["f1"])
    assert row["epoch_auroc_hypopnea"] == pytest.approx(metrics["epoch"]["hypopnea"]["auroc"])
    assert "## event_detection" in (out / "comparison.md").read_text()


def test_the_cohort_summary_flags_an_odi_over_too_little_spo2():
    row = dict.fromkeys(SUMMARY_COLUMNS, "") | {
        "night": "a-1",
        "status": "ok",
        "tst_min": 300.0,
        "sleep_efficiency_pct": 80.0,
        "ahi_estimated": 4.0,
        "ahi_reliable": True,
        "ahi_scored": None,
        "ahi_estimated_scored_part": None,
        "odi": 0.0,
        "odi_reliable": False,
    }
    assert "| 0.0 (UNRELIABLE) |" in summary_markdown([row])
    assert "| 0.0 |" in summary_markdown([row | {"odi_reliable": True}])
    assert "n/a (UNRELIABLE)" not in summary_markdown([row | {"odi": math.nan}])
