"""predict.py on nights of other cohorts' layouts: MESA labels, MrOS referential channels (derivations computed),
a clinical export, and Sleep-EDF (EDF+ hypnogram in a separate file; its Fpz-Cz EEG only through a user map).
The report must name the EDF label or derivation that fed each channel, and agree with the scoring it read."""

from __future__ import annotations

import json

import pytest

from dataset import synthetic

LAYOUTS = ("mesa", "mros", "clinical", "sleep-edf")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_predict_reads_each_layout_and_names_the_sources(predict_runs, layout, tmp_path):
    from downstream import predict

    suffix = "C-Hypnogram.edf" if layout == "sleep-edf" else "-nsrr.xml"
    edf, scoring = tmp_path / f"{layout}-900002.edf", tmp_path / f"{layout}-900002{suffix}"
    night = synthetic.generate_night(edf, scoring, f"{layout}-900002", hours=0.5, seed=3, channels=layout)
    argv = [
        "--checkpoint",
        str(predict_runs["stage"]),
        "--edf",
        str(edf),
        "--xml",
        str(scoring),
        "--out",
        str(tmp_path / "out"),
        "--no-progress",
    ]
    expected = dict(synthetic.LAYOUT_CHANNELS[layout])
    if layout == "sleep-edf":  # no standard C4 or left EOG: the user says what fills the slots
        mapping = tmp_path / "map.yaml"
        mapping.write_text("eeg_c4: EEG Fpz-Cz\neog_l: EOG horizontal\n")
        argv += ["--channel-map", str(mapping)]
        expected["eog_l"] = "EOG horizontal"
    assert predict.main(argv) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    sources = report["channels"]["sources"]
    for channel in ("eeg_c4", "eog_l"):  # the staging run's fusion reads these two
        assert sources[channel].replace(" ", "") == expected[channel].replace(" ", ""), (layout, channel, sources)
    if layout == "mesa":  # EEG1 is Fz-Cz in MESA: never C4-A1
        assert "EEG1" not in sources.values()
    assert report["channels"]["user_map"] == (["eeg_c4", "eog_l"] if layout == "sleep-edf" else [])
    agreement = report["agreement"]  # the scoring file was read and compared, epoch by epoch
    assert agreement["n_scored_epochs"] == int((night.stages >= 0).sum()) > 0
    assert sum(map(sum, agreement["sleep_stage"]["confusion_matrix"])) == agreement["n_scored_epochs"]
