"""Every training script against a table of bad inputs: missing, empty or corrupt data folders, corrupt Parquet,
corrupt and wrong-kind checkpoints, bad numbers, bad --config files, an unusable --out. Each must end with exit
status 2, exactly one `error:` line on stderr naming the file or option, no traceback, and every file that existed
before unchanged. In-process through each script's `main` (fast: every case fails before training starts), plus
one run of each real command line."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from dataset import data_parser, synthetic
from downstream.baselines import features
from downstream.fine_tuning import train as fine_tuning
from downstream.linear_probing import train as linear_probing
from models.neuronet import build_neuronet, neuronet_config
from pretrained.multimodal import train as multimodal
from pretrained.unimodal import pretrain
from tests.checks import assert_one_error_line, snapshot
from utils.checkpoint import save_model_checkpoint

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = {
    "unimodal": (lambda argv: pretrain.main(argv, modality="eeg"), "pretrained/unimodal/eeg/train.py"),
    "multimodal": (multimodal.main, "pretrained/multimodal/train.py"),
    "probe": (linear_probing.main, "downstream/linear_probing/train.py"),
    "fine_tuning": (fine_tuning.main, "downstream/fine_tuning/train.py"),
    "features": (features.main, "downstream/baselines/features.py"),
}
ENGINE_SCRIPTS = ("unimodal", "multimodal", "probe", "fine_tuning")  # the ones that read and write checkpoints


def engine_checkpoint(path: Path, kind: str, model_config: dict, model: dict, metadata: dict) -> Path:
    """A file with the keys utils/engine.py writes."""
    save_model_checkpoint(path, kind, model_config, model, metadata=metadata)
    return path


@dataclass
class Inputs:
    cohort: Path
    neuronet: Path  # a valid unimodal EEG checkpoint
    fusion: Path  # a checkpoint of a multimodal model (where a unimodal one is expected)
    head: Path  # a downstream head's checkpoint (where a backbone is expected)
    truncated: Path  # the first bytes of a checkpoint
    text: Path  # a text file named like a checkpoint


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Inputs:
    root = tmp_path_factory.mktemp("bad_inputs")
    synthetic.generate_cohort(root / "src", nights=5, hours=0.25, seed=0)
    data_parser.parse_cohort(root / "src", root / "dst", workers=1, progress=False)
    shutil.rmtree(root / "src")
    config = neuronet_config("tiny")
    net = engine_checkpoint(
        root / "eeg.pt",
        "neuronet",
        config.to_dict(),
        build_neuronet(config).state_dict(),
        {"modality": "eeg", "channels": ["eeg_c4", "eeg_c3"]},
    )
    truncated = root / "truncated.pt"
    truncated.write_bytes(net.read_bytes()[:300])
    text = root / "notes.pt"
    text.write_text("epoch 3: loss 0.41\n")
    return Inputs(
        root / "dst",
        net,
        engine_checkpoint(root / "fusion.pt", "synthsleepnet", {}, {}, {}),
        engine_checkpoint(root / "head.pt", "mlp_head", {}, {}, {}),
        truncated,
        text,
    )


def valid_args(script: str, inputs: Inputs) -> list[str]:
    """Options that would start a run of `script` (before --data / --out)."""
    quick = ["--workers", "0", "--no-progress"]
    return {
        "unimodal": ["--preset", "tiny", "--max-steps", "1", "--no-monitor", *quick],
        "multimodal": [
            "--preset",
            "tiny",
            "--max-steps",
            "1",
            "--no-monitor",
            "--channels",
            "eeg_c4",
            "--unimodal",
            f"eeg={inputs.neuronet}",
            *quick,
        ],
        "probe": ["--task", "sleep_stage", "--backbone", str(inputs.neuronet), "--epochs", "1", *quick],
        "fine_tuning": ["--task", "sleep_stage", "--backbone", str(inputs.neuronet), "--epochs", "1", *quick],
        "features": ["--task", "sleep_stage", "--channels", "eeg_c4", "--hgb-max-iter", "2", *quick],
    }[script]


def copy_cohort(inputs: Inputs, tmp: Path) -> Path:
    return Path(shutil.copytree(inputs.cohort, tmp / "data"))


def bad_case(case: str, script: str, inputs: Inputs, tmp: Path) -> tuple[list[str], str] | None:
    """(argv, text the error line must hold) of one bad input for `script`, or None where it does not apply."""
    data, out = inputs.cohort, tmp / "out"
    extra: list[str] = []
    if case == "missing_data":
        data, expect = tmp / "nowhere", "nowhere"
    elif case == "empty_data":
        data, expect = tmp / "empty", "empty"
        data.mkdir()
    elif case == "corrupt_splits":
        data, expect = copy_cohort(inputs, tmp), "splits.json"
        (data / "splits.json").write_text('{"seed": 0, "subjects": {"pretr')
    elif case == "missing_splits":
        data, expect = copy_cohort(inputs, tmp), "splits.json"
        (data / "splits.json").unlink()
    elif case == "corrupt_parquet":
        data, expect = copy_cohort(inputs, tmp), ".parquet"
        for recording in (data / "recordings").glob("*.parquet"):
            recording.write_bytes(recording.read_bytes()[:4096])
    elif case == "corrupt_checkpoint":
        if script not in ENGINE_SCRIPTS:
            return None
        bad = inputs.truncated if script in ("unimodal", "multimodal") else inputs.text
        option = {
            "unimodal": "--resume",
            "multimodal": "--unimodal",
            "probe": "--backbone",
            "fine_tuning": "--backbone",
        }[script]
        extra, expect = [option, f"eeg={bad}" if script == "multimodal" else str(bad)], bad.name
    elif case == "corrupt_last_pt":  # the automatic resume finds a cut OUT/last.pt
        if script not in ENGINE_SCRIPTS:
            return None
        out.mkdir()
        (out / "last.pt").write_bytes(inputs.neuronet.read_bytes()[:1000])
        (out / "config.json").write_text('{"lr": 0.001}\n')
        expect = "last.pt"
    elif case == "wrong_kind_checkpoint":
        if script not in ENGINE_SCRIPTS:
            return None
        wrong = inputs.head if script in ("probe", "fine_tuning") else inputs.fusion
        option = {
            "unimodal": "--resume",
            "multimodal": "--unimodal",
            "probe": "--backbone",
            "fine_tuning": "--backbone",
        }[script]
        extra, expect = [option, f"eeg={wrong}" if script == "multimodal" else str(wrong)], wrong.name
    elif case == "negative_rate":
        option = "--hgb-learning-rate" if script == "features" else "--lr"
        extra, expect = [option, "-0.001"], option
    elif case == "zero_batch":
        extra, expect = ["--batch-size", "0"], "--batch-size"
    elif case == "not_a_number":
        extra, expect = ["--seed", "one"], "--seed"
    elif case == "config_unknown_key":
        config = tmp / "run.yaml"
        config.write_text("batch_szie: 8\n")
        extra, expect = ["--config", str(config)], "batch_szie"
    elif case == "config_bad_value":
        config = tmp / "run.json"
        key = "hgb_learning_rate" if script == "features" else "lr"
        config.write_text(json.dumps({key: -1}))
        extra, expect = ["--config", str(config)], key
    elif case == "eval_stride_beyond_window":
        if script != "fine_tuning":
            return None
        extra, expect = ["--epochs-per-window", "8", "--eval-stride", "9"], "--eval-stride 9"
    elif case == "stride_beyond_window":
        if script != "fine_tuning":
            return None
        extra, expect = ["--epochs-per-window", "8", "--stride", "9"], "--stride 9"
    elif case == "cache_dir_is_a_file":
        if script not in ("probe", "fine_tuning", "features"):
            return None
        (tmp / "a_file").write_text("not a folder\n")
        extra, expect = ["--cache-dir", str(tmp / "a_file")], "--cache-dir"
    elif case == "accumulation_beyond_data":
        if script not in ENGINE_SCRIPTS:
            return None
        extra, expect = ["--accum-steps", "100000"], "fewer than one optimizer step"
    elif case == "out_below_a_file":
        (tmp / "a_file").write_text("not a folder\n")
        out, expect = tmp / "a_file" / "run", "--out"
    elif case == "blank_out":  # `--out "$UNSET"`: not the current folder
        out, expect = "", "--out must be a file or folder name, got ''"
    elif case == "model_arg_unbuildable":  # accepted by the config's checks, refused by the model's own
        if script != "unimodal":
            return None
        extra, expect = ["--model-arg", "mask_ratio=0"], "masks none of 27 frames"
    elif case == "model_arg_wrong_type":  # refused by the field's name, not by a comparison deep in the config
        if script not in ("unimodal", "multimodal"):
            return None
        field = "encoder_depth" if script == "unimodal" else "fusion_depth"
        extra, expect = ["--model-arg", f"{field}=deep"], f"{field} must be an integer, got 'deep'"
    elif case == "model_arg_no_yaml":
        if script not in ENGINE_SCRIPTS:
            return None
        extra, expect = ["--model-arg", "encoder_dim=[1"], "--model-arg encoder_dim=[1: the value is no YAML"
    elif case == "garbled_events_table":  # read after the whole encoding, for the AHI calibration: checked first
        if script not in ("probe", "fine_tuning", "features"):
            return None
        data, expect = copy_cohort(inputs, tmp), "events.parquet: not a readable Parquet file"
        (data / "events.parquet").write_bytes(b"PAR1 cut short")
        extra = ["--task", "apnea"]
    else:
        raise AssertionError(case)
    return [*valid_args(script, inputs), *extra, "--data", str(data), "--out", str(out)], expect


CASES = (
    "missing_data",
    "empty_data",
    "corrupt_splits",
    "missing_splits",
    "corrupt_parquet",
    "corrupt_checkpoint",
    "corrupt_last_pt",
    "wrong_kind_checkpoint",
    "negative_rate",
    "zero_batch",
    "not_a_number",
    "config_unknown_key",
    "config_bad_value",
    "eval_stride_beyond_window",
    "stride_beyond_window",
    "cache_dir_is_a_file",
    "accumulation_beyond_data",
    "out_below_a_file",
    "blank_out",
    "model_arg_unbuildable",
    "model_arg_wrong_type",
    "model_arg_no_yaml",
    "garbled_events_table",
)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("script", list(SCRIPTS))
def test_bad_input_is_one_error_line_and_changes_nothing(script, case, inputs, tmp_path, capsys):
    made = bad_case(case, script, inputs, tmp_path)
    if made is None:
        pytest.skip(f"{script} reads no checkpoint")
    argv, expect = made
    out = Path(argv[len(argv) - 1 - argv[::-1].index("--out") + 1])
    before, out_existed = snapshot(tmp_path, inputs.cohort.parent), out.exists()
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        SCRIPTS[script][0](argv)
    assert exit_info.value.code == 2
    assert_one_error_line(capsys.readouterr().err, expect)
    assert snapshot(tmp_path, inputs.cohort.parent) == before
    assert out.exists() == out_existed, f"{out}: made (or removed) by a refused run"


@pytest.mark.parametrize(
    "script, case",
    [
        ("unimodal", "corrupt_last_pt"),
        pytest.param("multimodal", "corrupt_checkpoint", marks=pytest.mark.slow),
        pytest.param("probe", "corrupt_checkpoint", marks=pytest.mark.slow),
        pytest.param("fine_tuning", "wrong_kind_checkpoint", marks=pytest.mark.slow),
        pytest.param("features", "corrupt_parquet", marks=pytest.mark.slow),
    ],
)
def test_real_command_line(script, case, inputs, tmp_path):
    """The command as users run it: exit 2, one error line, no traceback (Python's own handling of the exit).
    About 12 s per script on 2 busy cores (imports), so one runs by default and the others with -m slow."""
    argv, expect = bad_case(case, script, inputs, tmp_path)
    before = snapshot(tmp_path)
    ran = subprocess.run(
        [sys.executable, SCRIPTS[script][1], *argv], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert ran.returncode == 2, ran.stderr[-3000:]
    assert_one_error_line(ran.stderr, expect)
    assert snapshot(tmp_path) == before


def test_a_cut_cache_file_is_encoded_again(tmp_path):
    """A cache file cut short (a full disk, a killed writer) is read as absent, so the recording is encoded
    again and the file overwritten, instead of the run ending in a traceback."""
    import numpy as np

    from downstream.cache import RecordingVectors, _read_cached, _write_cached

    path = tmp_path / "cache" / "n-1.npz"
    _write_cached(path, RecordingVectors(np.arange(4), np.ones((4, 3), np.float32)), "10:20")
    assert _read_cached(path, "10:20").vectors.shape == (4, 3)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert _read_cached(path, "10:20") is None
    path.write_bytes(b"")
    assert _read_cached(path, "10:20") is None
