"""The inference, evaluation and data command lines against a table of bad inputs: missing, empty or corrupt
EDFs and data folders, corrupt or wrong-kind checkpoints and run records, bad numbers, unknown --config keys, an
unusable output folder. Each must exit nonzero (2 for usage and input errors), print exactly one `error:` line
on stderr naming the file or option, no traceback, and leave every file that existed before unchanged.
In-process through each script's `main` (fast: every case fails before real work), plus the real command line
of each script once."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from dataset import data_parser, synthetic
from downstream import evaluate, predict
from downstream.linear_probing import train as linear_probing
from models.neuronet import build_neuronet, neuronet_config
from tests.checks import assert_one_error_line, exit_code, snapshot
from utils.checkpoint import save_model_checkpoint, sha256_file

REPO = Path(__file__).resolve().parent.parent
SMALL = dict(frame_step_s=2.0, stem_channels=4, backbone_channels=(4, 8, 8, 16), frame_token_dim=32, encoder_depth=1)
SCRIPTS: dict[str, tuple[Callable[[list[str]], int], str]] = {
    "predict": (predict.main, "downstream/predict.py"),
    "evaluate": (evaluate.main, "downstream/evaluate.py"),
    "data_parser": (data_parser.main, "dataset/data_parser.py"),
    "synthetic": (synthetic.main, "dataset/synthetic.py"),
}


@dataclass
class Inputs:
    root: Path
    src: Path  # a small synthetic cohort (EDF + XML)
    night: Path  # one valid EDF
    backbone: Path  # a NeuroNet checkpoint (where a downstream run is expected)
    run: Path  # a staging probe run (metrics.json, best.pt)
    text: Path  # a text file named like a checkpoint


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Inputs:
    root = tmp_path_factory.mktemp("bad_cli")
    synthetic.generate_cohort(root / "src", nights=4, hours=0.5, seed=3)  # train holds 3 stages
    data_parser.parse_cohort(root / "src", root / "dst", workers=1, progress=False)
    torch.manual_seed(0)
    net = build_neuronet(neuronet_config("tiny", **SMALL))
    backbone = root / "eeg.pt"
    save_model_checkpoint(
        backbone,
        "neuronet",
        net.config.to_dict(),
        net.state_dict(),
        metadata={"channels": ["eeg_c4"]},
        splits_sha256=sha256_file(root / "dst" / "splits.json"),
    )
    run = root / "stage"
    code = linear_probing.main(
        [
            "--data",
            str(root / "dst"),
            "--backbone",
            str(backbone),
            "--task",
            "sleep_stage",
            "--out",
            str(run),
            "--epochs",
            "1",
            "--batch-size",
            "32",
            "--workers",
            "0",
            "--no-progress",
            "--n-boot",
            "0",
            "--hypnograms",
            "0",
            "--resume",
            "none",
        ]
    )
    assert code in (0, None)
    text = root / "notes.pt"
    text.write_text("epoch 3: loss 0.41\n")
    return Inputs(root, root / "src", next(iter(sorted((root / "src").rglob("*.edf")))), backbone, run, text)


def bad_case(script: str, case: str, inputs: Inputs, tmp: Path) -> tuple[list[str], str, int]:
    """(argv, text the error line must hold, exit code) of one bad input."""
    out = tmp / "out"
    if case == "out_below_a_file":
        (tmp / "a_file").write_text("not a folder\n")
        out = tmp / "a_file" / "sub"
    if script == "predict":
        edf, xml, checkpoint, extra = inputs.night, None, inputs.run, []
        expect = {"out_below_a_file": "a_file"}.get(case, "")
        if case == "missing_edf":
            edf = expect = tmp / "nowhere.edf"
        elif case == "empty_edf":
            edf = expect = tmp / "empty.edf"
            edf.write_bytes(b"")
        elif case == "corrupt_edf":
            edf = expect = tmp / "corrupt.edf"
            edf.write_bytes(inputs.night.read_bytes()[:200])
        elif case == "empty_folder":
            edf = expect = tmp / "no_nights"
            edf.mkdir()
        elif case == "corrupt_xml":
            xml = expect = tmp / "bad-nsrr.xml"
            xml.write_text("<PSGAnnotation><ScoredEvents><ScoredEvent>")
        elif case == "corrupt_checkpoint":
            checkpoint = expect = inputs.text
        elif case == "wrong_kind_checkpoint":
            checkpoint = expect = inputs.backbone
        elif case == "out_is_a_file":
            out = tmp / "report.txt"
            out.write_text("keep\n")
            expect = "--out"
        elif case in ("zero_batch", "not_a_number"):
            extra, expect = ["--batch-size", "0" if case == "zero_batch" else "many"], "--batch-size"
        elif case == "unknown_device":
            extra, expect = ["--device", "foo"], "--device foo"
        elif case == "config_unknown_key":
            config = tmp / "predict.yaml"
            config.write_text("batch_szie: 8\n")
            extra, expect = ["--config", str(config)], "batch_szie"
        argv = ["--checkpoint", str(checkpoint), "--edf", str(edf), "--out", str(out), "--no-progress", *extra]
        return argv + (["--xml", str(xml)] if xml else []), str(expect), 2
    if script == "evaluate":
        runs, extra, expect = [inputs.run], [], {"out_below_a_file": "a_file"}.get(case, "")
        if case == "missing_run":
            runs, expect = [tmp / "nowhere"], "nowhere"
        elif case == "empty_folder":
            runs, expect = [tmp / "no_runs"], "no_runs"
            runs[0].mkdir()
        elif case in ("corrupt_metrics", "wrong_kind_metrics"):
            run = Path(shutil.copytree(inputs.run, tmp / "run"))
            text = (run / "metrics.json").read_text()
            (run / "metrics.json").write_text(text[:60] if case == "corrupt_metrics" else '{"note": "mine"}\n')
            runs, expect = [run], "metrics.json"
        elif case == "out_is_a_run":  # its config.json is the run's record, never a comparison's
            out, expect = Path(shutil.copytree(inputs.run, tmp / "a_run")), "holds a run"
        elif case == "config_unknown_key":
            config = tmp / "evaluate.json"
            config.write_text(json.dumps({"runz": [str(inputs.run)]}))
            extra, expect = ["--config", str(config)], "runz"
        return [*map(str, runs), "--out", str(out), *extra], expect, 2
    if script == "data_parser":
        src, extra, expect, code = inputs.src, [], {"out_below_a_file": "a_file"}.get(case, ""), 2
        if case == "missing_src":
            src, expect = tmp / "nowhere", "nowhere"
        elif case == "empty_src":
            src, expect = tmp / "no_nights", "no_nights"
            src.mkdir()
        elif case == "negative_workers":
            extra, expect = ["--workers", "-1"], "--workers"
        elif case == "bad_fraction":
            extra, expect = ["--test-frac", "1.5"], "--test-frac"
        elif case == "not_a_number":
            extra, expect = ["--workers", "two"], "--workers"
        elif case == "band_above_nyquist":  # EEG is stored at 100 Hz: no band can start at 60 Hz
            extra, expect = ["--band", "eeg_c4=60,70"], "eeg_c4=60,70"
        elif case == "config_unknown_key":
            config = tmp / "parse.yaml"
            config.write_text("workerz: 2\n")
            extra, expect = ["--config", str(config)], "workerz"
        return ["--src", str(src), "--dst", str(out), "--no-progress", *extra], expect, code
    if script == "synthetic":
        extra, expect = [], {"out_below_a_file": "a_file"}.get(case, "")
        if case == "zero_nights":
            extra, expect = ["--nights", "0"], "--nights"
        elif case == "negative_hours":
            extra, expect = ["--hours", "-1"], "--hours"
        elif case == "not_a_number":
            extra, expect = ["--nights", "three"], "--nights"
        elif case == "unknown_variation":
            extra, expect = ["--variations", "sideways"], "sideways"
        return ["--out", str(out), "--nights", "1", "--hours", "0.05", *extra], expect, 2
    raise AssertionError(script)


CASES = {
    "predict": (
        "missing_edf",
        "empty_edf",
        "corrupt_edf",
        "empty_folder",
        "corrupt_xml",
        "corrupt_checkpoint",
        "wrong_kind_checkpoint",
        "zero_batch",
        "unknown_device",
        "not_a_number",
        "config_unknown_key",
        "out_below_a_file",
        "out_is_a_file",
    ),
    "evaluate": (
        "missing_run",
        "empty_folder",
        "corrupt_metrics",
        "wrong_kind_metrics",
        "out_is_a_run",
        "config_unknown_key",
        "out_below_a_file",
    ),
    "data_parser": (
        "missing_src",
        "empty_src",
        "negative_workers",
        "bad_fraction",
        "not_a_number",
        "band_above_nyquist",
        "config_unknown_key",
        "out_below_a_file",
    ),
    "synthetic": ("zero_nights", "negative_hours", "not_a_number", "unknown_variation", "out_below_a_file"),
}


ROWS = [(script, case) for script, cases in CASES.items() for case in cases]


@pytest.mark.parametrize("script, case", ROWS)
def test_bad_input_is_one_error_line_and_changes_nothing(script, case, inputs, tmp_path, capsys):
    argv, expect, code = bad_case(script, case, inputs, tmp_path)
    before = snapshot(tmp_path, inputs.root)
    capsys.readouterr()
    assert exit_code(SCRIPTS[script][0], argv) == code
    assert_one_error_line(capsys.readouterr().err, expect)
    assert snapshot(tmp_path, inputs.root) == before


@pytest.mark.parametrize(
    "script, case",
    [
        ("predict", "corrupt_edf"),
        ("evaluate", "corrupt_metrics"),
        ("data_parser", "out_below_a_file"),
        ("synthetic", "zero_nights"),
    ],
)
def test_real_command_line(script, case, inputs, tmp_path):
    """The command as users run it: the exit code, one error line, no traceback."""
    argv, expect, code = bad_case(script, case, inputs, tmp_path)
    before = snapshot(tmp_path)
    ran = subprocess.run(
        [sys.executable, SCRIPTS[script][1], *argv], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert ran.returncode == code, ran.stderr[-3000:]
    assert_one_error_line(ran.stderr, expect)
    assert snapshot(tmp_path) == before


def test_a_run_of_another_script_in_out_is_refused(inputs, tmp_path, capsys):
    """Event detection into a probe's folder, a probe into an event detector's, or event detection into a folder
    of other files: one error line naming --out, exit 2, the folder unchanged. Each run's folder holds its own
    run only, so no report describes another run's checkpoints and no stale detector stays behind."""
    from downstream.event_detection import train as event_detection

    data = inputs.root / "dst"
    probe = shutil.copytree(inputs.run, tmp_path / "probe")
    detector = tmp_path / "detector"
    detector.mkdir()
    (detector / "metrics.json").write_text(json.dumps({"task": "event_detection", "method": "features"}))
    (detector / "model.pkl").write_bytes(b"detector")
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("score night 3\n")
    cases = [
        (event_detection.main, ["--data", str(data), "--out", str(probe)], "another script (linear_probe sleep_stage)"),
        (
            linear_probing.main,
            ["--data", str(data), "--backbone", str(inputs.backbone), "--task", "apnea", "--out", str(detector)],
            "another script (features event_detection)",
        ),
        (event_detection.main, ["--data", str(data), "--out", str(notes)], "not a run of this script"),
    ]
    before = snapshot(probe, detector, notes)
    for main, argv, expect in cases:
        capsys.readouterr()
        assert exit_code(main, [*argv, "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert_one_error_line(err, "--out")
        assert expect in err
    assert snapshot(probe, detector, notes) == before
