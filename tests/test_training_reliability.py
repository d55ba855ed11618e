"""Training runs under hand-made faults: a failed rerun must not rewrite config.json, unreadable or wrong-kind
checkpoints give one clear message, a cut last log line does not block resume, options are checked when parsed
(command line and --config alike), a non-finite loss names only checkpoints that exist, and a resumed epoch keeps
one log record. Toy engine runs (tests/test_engine.py) and one tiny unimodal run; CPU, seconds."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_engine import ToyDataset, ToyModel, run_toy, step_losses, toy_cfg, toy_loss

from dataset import data_parser, synthetic
from models.loading import read_checkpoint
from pretrained.unimodal.pretrain import main as unimodal_main
from tests.checks import exit_code
from utils.checkpoint import load_checkpoint
from utils.config import UsageError, build_parser, parse_config, save_config
from utils.engine import Trainer, fit, setup_run
from utils.resume import read_resume_checkpoint
from utils.run_logging import read_jsonl

TINY = ["--preset", "tiny", "--batch-size", "4", "--workers", "0", "--no-progress", "--no-monitor"]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("reliability_cohort")
    synthetic.generate_cohort(root / "src", nights=5, hours=0.25, seed=0)
    data_parser.parse_cohort(root / "src", root / "dst", workers=1, progress=False)
    return root / "dst"


# ------------------------------------------------------------------------------------------ config.json
def test_failed_rerun_leaves_the_finished_runs_config(cohort, tmp_path, capsys):
    """A rerun into a finished run that fails on its data (here an empty --data folder) changes no file there,
    whether it would have resumed the run (refused: other data) or started afresh over it (--resume none)."""
    out = tmp_path / "eeg"
    assert unimodal_main(["--data", str(cohort), "--out", str(out), *TINY, "--max-steps", "1"], modality="eeg") == 0
    before = {path.name: path.read_bytes() for path in out.iterdir()}
    empty = tmp_path / "empty"
    empty.mkdir()
    for extra, message in (
        ([], "no splits file"),  # refused on its data before the resume compares options
        (["--resume", "none"], "no splits file"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            unimodal_main(
                ["--data", str(empty), "--out", str(out), *TINY, "--max-steps", "2", "--lr", "0.01", *extra],
                modality="eeg",
            )
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
        assert {path.name: path.read_bytes() for path in out.iterdir()} == before


def test_engine_writes_config_only_when_training_starts_and_keeps_history(tmp_path):
    out = tmp_path / "run"
    run_toy(out, "--max-steps", "2")
    first = (out / "config.json").read_text()
    cfg = toy_cfg(out, "--max-steps", "4", "--lr", "0.5", "--resume", str(tmp_path / "missing.pt"))
    ctx = setup_run(cfg)
    assert (out / "config.json").read_text() == first  # set-up writes nothing
    with pytest.raises(UsageError, match="missing.pt: no such checkpoint"):
        fit(cfg, ToyModel(), ToyDataset(), ctx=ctx, model_kind="toy", model_config={}, compute_loss=toy_loss)
    assert (out / "config.json").read_text() == first and not (out / "config.1.json").exists()

    run_toy(out, "--max-steps", "2")  # the same options again: no history entry
    run_toy(out, "--max-steps", "2", "--no-progress", "--resume", "auto")  # nor for how it is shown or started
    assert not (out / "config.1.json").exists()
    resumed = toy_cfg(out, "--max-steps", "2", "--resume", str(out / "last.pt"))
    save_config(resumed, out / "config.json", keep_previous=True)  # where the weights came from is recorded
    assert json.loads((out / "config.1.json").read_text())["resume"] == "auto"
    assert json.loads((out / "config.json").read_text())["resume"] == str(out / "last.pt")
    (out / "config.1.json").replace(out / "config.json")  # back to the run's own record for what follows
    run_toy(out, "--max-steps", "4")  # resumed with a larger cap: the earlier config is kept
    assert (out / "config.1.json").read_text() == first
    assert json.loads((out / "config.json").read_text())["max_steps"] == 4


# ------------------------------------------------------------------------------------------ checkpoints
def test_unreadable_automatic_resume_names_the_file_and_the_ways_out(tmp_path):
    out = tmp_path / "run"
    run_toy(out, "--max-steps", "2")
    (out / "last.pt").write_bytes((out / "last.pt").read_bytes()[:500])  # what a full disk or kill -9 can leave
    with pytest.raises(UsageError) as raised:
        read_resume_checkpoint("auto", out, "toy")
    message = str(raised.value)
    assert str(out / "last.pt") in message and "--resume none" in message and f"--resume {out / 'best.pt'}" in message
    assert "\n" not in message and "weights_only" not in message
    before = {path.name: path.read_bytes() for path in out.iterdir()}
    with pytest.raises(UsageError):
        run_toy(out, "--max-steps", "4")
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before


def test_text_file_and_wrong_kind_checkpoints(tmp_path):
    text = tmp_path / "backbone.pt"
    text.write_text('{"not": "a checkpoint"}\nsecond line\n')
    with pytest.raises(ValueError) as raised:
        read_checkpoint(text)
    assert str(text) in str(raised.value) and "weights_only" not in str(raised.value)
    with pytest.raises(UsageError, match="give --resume another checkpoint, or --resume none"):
        read_resume_checkpoint(str(text), tmp_path, "toy")
    run_toy(tmp_path / "toy", "--max-steps", "1")
    with pytest.raises(UsageError, match=r"holds a 'toy' model, this run trains 'neuronet'"):
        read_resume_checkpoint(str(tmp_path / "toy" / "last.pt"), tmp_path / "other", "neuronet")


def test_a_checkpoint_of_other_data_or_labels_is_never_resumed_as_this_run(tmp_path, monkeypatch):
    """A run folder reused with other data, task, labels or backbone would resume the old model and report it
    under the new options: refused, naming what differs, before anything is read or written."""
    from types import SimpleNamespace

    out, data = tmp_path / "run", tmp_path / "data"
    data.mkdir()
    (data / "splits.json").write_text("{}")
    run_toy(out, "--max-steps", "1", "--data", str(data))
    saved = {**read_checkpoint(out / "last.pt")["config"], "label_fraction": 0.5, "task": "sleep_stage"}
    monkeypatch.chdir(tmp_path)  # the same folder spelled relative to here: the same data
    assert read_resume_checkpoint("auto", out, "toy", SimpleNamespace(**{**saved, "data": "data"}))[0] is not None
    with pytest.raises(UsageError, match=r"trained with other options than this run \(data "):
        read_resume_checkpoint("auto", out, "toy", SimpleNamespace(**{**saved, "data": str(tmp_path / "elsewhere")}))
    with pytest.raises(UsageError, match="this run has no such folder|trained with other options"):
        run_toy(out, "--max-steps", "2", "--data", str(tmp_path / "elsewhere"))


@pytest.mark.parametrize(
    "key, old, new",
    [("class_weights", "balanced", "none"), ("head_dropout", 0.5, 0.1), ("context_passes", 2, 5)],
)
def test_a_checkpoint_of_other_class_weights_head_or_first_phase_is_not_resumed(tmp_path, key, old, new):
    """Other class weights or head dropout would train one model under two losses; another first phase of
    fine-tuning would be recorded but not trained (the second phase resumes past it): each is another run."""
    from types import SimpleNamespace

    from utils.checkpoint import save_model_checkpoint

    config = {"task": "sleep_stage", key: old}
    save_model_checkpoint(tmp_path / "last.pt", "toy", {}, {}, config=config)
    assert read_resume_checkpoint("auto", tmp_path, "toy", SimpleNamespace(**config))[0] is not None
    with pytest.raises(UsageError, match=rf"trained with other options than this run \({key} {old!r} -> {new!r}\)"):
        read_resume_checkpoint("auto", tmp_path, "toy", SimpleNamespace(**{**config, key: new}))


# ------------------------------------------------------------------------------------------ logs
def test_cut_last_log_line_is_dropped_on_resume(tmp_path):
    run_toy(tmp_path / "straight", "--max-steps", "4")
    out = tmp_path / "run"
    run_toy(out, "--max-steps", "2")
    with (out / "steps.jsonl").open("a") as log:
        log.write('{"step": 3, "epoch": 1, "lo')  # kill -9 in the middle of a write
    with pytest.warns(UserWarning, match=r"steps.jsonl: line 3 is cut off"):
        run_toy(out, "--max-steps", "4")
    assert [r["step"] for r in read_jsonl(out / "steps.jsonl")] == [1, 2, 3, 4]
    assert step_losses(out) == pytest.approx(step_losses(tmp_path / "straight"), abs=1e-6)

    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"step": 1}\n{"step": 2,\n{"step": 3}\n')
    with pytest.raises(ValueError, match=r"broken.jsonl: line 2 is not valid JSON"):
        read_jsonl(broken)


def test_resumed_epoch_has_one_log_record(tmp_path):
    """3 steps per epoch: stop at step 2 (partial epoch 1), resume to step 4: epoch 1 is logged once, complete."""
    out = tmp_path / "run"
    run_toy(out, "--max-steps", "2")
    run_toy(out, "--max-steps", "4")
    epochs = [(r["epoch"], r["partial"]) for r in read_jsonl(out / "log.jsonl") if r["kind"] == "epoch"]
    assert epochs == [(1, False), (2, True)]
    run_toy(out, "--max-steps", "5")  # a partial epoch resumed and stopped again: still one line per epoch
    epochs = [(r["epoch"], r["partial"], r["step"]) for r in read_jsonl(out / "log.jsonl") if r["kind"] == "epoch"]
    assert epochs == [(1, False, 3), (2, True, 5)]


# ------------------------------------------------------------------------------------------ options
@pytest.mark.parametrize(
    "flag, value",
    [
        ("--lr", "-0.001"),
        ("--lr", "nan"),
        ("--epochs", "0"),
        ("--batch-size", "0"),
        ("--accum-steps", "0"),
        ("--weight-decay", "-1"),
        ("--min-lr-ratio", "1.5"),
        ("--warmup-epochs", "-1"),
        ("--warmup-steps", "-2"),
        ("--clip-grad", "-1"),
        ("--max-steps", "-1"),
        ("--workers", "-1"),
        ("--max-minutes", "-5"),
        ("--seed", "1.5"),
        ("--save-every-steps", "-1"),
        ("--log-every", "x"),
        ("--dist-timeout-min", "0"),
        ("--knn-k", "0"),
    ],
)
def test_numbers_are_checked_before_any_data_is_read(flag, value, tmp_path, capsys):
    """The data folder does not exist: the option is reported first, exit 2, naming it."""
    with pytest.raises(SystemExit) as exit_info:
        unimodal_main(
            ["--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out"), flag, value], modality="eeg"
        )
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert exit_info.value.code == 2 and len(errors) == 1 and flag in errors[0], errors
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "text, key",
    [
        ("lr: -1\n", "lr"),
        ("adam_betas: [0.9, 1.5]\n", "adam_betas"),
        ("batch-size: 0\n", "batch_size"),
        ("epochs: 2.5\n", "epochs"),
        ("lr_warmup: 3\n", "lr_warmup"),
    ],
)
def test_config_file_values_get_the_same_checks(text, key, tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text(text)
    with pytest.raises(SystemExit) as exit_info:
        parse_config(build_parser(), ["--config", str(config), "--data", "d"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith(f"error: {config}") and key in err and err.count("\n") == 1
    config.write_text("lr: '2e-3'\nadam_betas: [0.8, 0.9]\n")  # what the command line accepts, a file accepts
    cfg = parse_config(build_parser(), ["--config", str(config), "--data", "d"])
    assert cfg.base_lr == 2e-3 and cfg.adam_betas == [0.8, 0.9]  # the old key `lr` is today's base_lr


# ------------------------------------------------------------------------------------------ non-finite loss
class NanAt(ToyModel):
    """A toy model whose loss turns NaN from its `at`-th forward pass on."""

    def __init__(self, at: int):
        super().__init__()
        self.at, self.calls = at, 0

    def forward(self, signal, target):
        self.calls += 1
        loss = super().forward(signal, target)["loss"]
        return {"loss": loss * float("nan") if self.calls >= self.at else loss}


def test_nan_loss_names_only_checkpoints_that_exist(tmp_path):
    cfg = toy_cfg(tmp_path / "early")
    with pytest.raises(FloatingPointError) as raised:
        fit(cfg, NanAt(1), ToyDataset(), ctx=setup_run(cfg), model_kind="toy", model_config={}, compute_loss=toy_loss)
    assert "no checkpoint of this run was written yet" in str(raised.value) and "last.pt" not in str(raised.value)
    assert not (tmp_path / "early" / "last.pt").exists()

    cfg = toy_cfg(tmp_path / "later", "--save-every-steps", "2")
    with pytest.raises(FloatingPointError, match=r"step 3 .*later/last.pt \(step 2\)"):
        fit(cfg, NanAt(3), ToyDataset(), ctx=setup_run(cfg), model_kind="toy", model_config={}, compute_loss=toy_loss)
    assert load_checkpoint(tmp_path / "later" / "last.pt")["step"] == 2


def test_nan_loss_in_a_script_is_one_error_line(cohort, tmp_path, capsys, monkeypatch):
    from pretrained.unimodal import pretrain

    real = pretrain.build_neuronet

    def broken(config):
        model = real(config)
        model.forward = lambda signal: {"loss": signal.sum() * float("nan")}
        return model

    monkeypatch.setattr(pretrain, "build_neuronet", broken)
    shutil.rmtree(tmp_path / "out", ignore_errors=True)
    with pytest.raises(SystemExit) as exit_info:
        unimodal_main(
            ["--data", str(cohort), "--out", str(tmp_path / "out"), *TINY, "--max-steps", "1"], modality="eeg"
        )
    err = capsys.readouterr().err
    assert exit_info.value.code == 1 and err.startswith("error: loss is nan") and "Traceback" not in err
    assert "no checkpoint of this run" in err


# ------------------------------------------------------------------------------------------ Ctrl-C / SIGTERM
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_signal_saves_the_step_and_the_same_command_ends_as_an_unbroken_run(
    cohort, tmp_path, capsys, monkeypatch, signum
):
    """A signal in the middle of a pass stops the run at the next optimizer step with last.pt saved there and one
    `interrupted:` line (exit 130); the same command then resumes it and ends with the weights an uninterrupted
    run has."""
    argv = ["--data", str(cohort), *TINY, "--max-steps", "6", "--passes", "1", "--seed", "3"]
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}  # SIG_IGN in a background job
    unbroken = tmp_path / "unbroken"
    assert unimodal_main([*argv, "--out", str(unbroken)], modality="eeg") == 0
    out = tmp_path / "interrupted"
    original = Trainer._optimizer_step

    def signalled(self):
        grad_norm = original(self)
        if self.step == 3:
            os.kill(os.getpid(), signum)  # served at once by the handler: the request is seen after this step
        return grad_norm

    monkeypatch.setattr(Trainer, "_optimizer_step", signalled)
    capsys.readouterr()
    assert exit_code(lambda a: unimodal_main(a, modality="eeg"), [*argv, "--out", str(out)]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"interrupted: {signal.Signals(signum).name} at step 3, in pass 1: saved ")
    assert load_checkpoint(out / "last.pt")["step"] == 3 and not (out / "metrics.json").exists()
    monkeypatch.setattr(Trainer, "_optimizer_step", original)
    assert unimodal_main([*argv, "--out", str(out)], modality="eeg") == 0
    again, reference = load_checkpoint(out / "last.pt"), load_checkpoint(unbroken / "last.pt")
    assert again["step"] == reference["step"] == 6
    assert all(torch.equal(again["model"][k], v) for k, v in reference["model"].items())
    assert {sig: signal.getsignal(sig) for sig in handlers} == handlers  # the handlers are given back


def test_ctrl_c_outside_training_is_one_line_in_every_script(tmp_path, capsys, monkeypatch):
    """Ctrl-C while the parser, predict.py or a training script's set-up runs: one `interrupted:` line, 130."""
    from dataset import data_parser as parser_module
    from downstream import predict
    from utils.config import reported_errors

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(parser_module, "parse_cohort", interrupt)
    (tmp_path / "src").mkdir()
    argv = ["--src", str(tmp_path / "src"), "--dst", str(tmp_path / "dst"), "--no-progress"]
    assert parser_module.main(argv) == 130
    monkeypatch.setattr(predict, "load_runs", interrupt)
    edf = tmp_path / "n.edf"
    edf.write_bytes(b"0       " + b" " * 248)
    try:
        code = predict.main(["--checkpoint", str(tmp_path), "--edf", str(edf), "--out", str(tmp_path / "o")])
    except KeyboardInterrupt:
        code = "traceback"
    assert code == 130

    def script() -> int:
        with reported_errors():
            raise KeyboardInterrupt
        return 0

    assert exit_code(lambda argv: script(), []) == 130
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith("interrupted: ") for line in lines)


def test_sigterm_to_the_process_group_with_workers_stops_cleanly(cohort, tmp_path):
    """A scheduler's SIGTERM reaches the DataLoader workers too (the whole process group): they leave it to the main
    process, which saves last.pt at its next step and exits 130 with one `interrupted:` line."""
    out = tmp_path / "eeg"
    script = Path(__file__).resolve().parent.parent / "pretrained" / "unimodal" / "eeg" / "train.py"
    argv = [sys.executable, str(script), "--data", str(cohort), "--out", str(out), "--preset", "tiny"]
    argv += ["--batch-size", "4", "--workers", "2", "--no-progress", "--no-monitor", "--log-every", "1"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
                               start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (out / "steps.jsonl").is_file():
        time.sleep(0.2)
    while time.monotonic() < deadline and len(read_jsonl(out / "steps.jsonl")) < 2:
        time.sleep(0.1)
    os.killpg(process.pid, signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err[-2000:]
    assert err.strip().splitlines()[-1].startswith("interrupted: SIGTERM at step ") and "Traceback" not in err
    assert load_checkpoint(out / "last.pt")["step"] >= 2


def test_a_finished_run_rerun_keeps_its_record_and_refuses_other_options(cohort, tmp_path, capsys):
    """Rerun as it was, a finished run trains nothing and leaves every file as it was (its log's summary
    included); rerun with an option that changes what it learns (here the reconstruction target's gradient),
    it is refused, since config.json would name an option nothing was trained under."""
    out = tmp_path / "eeg"
    argv = ["--data", str(cohort), "--out", str(out), *TINY, "--max-steps", "2"]
    assert unimodal_main(argv, modality="eeg") == 0
    before = {path.name: path.read_bytes() for path in out.iterdir()}
    assert unimodal_main(argv, modality="eeg") == 0
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        unimodal_main([*argv, "--detach-target"], modality="eeg")
    assert exit_info.value.code == 2 and "'detach_target': (False, True)" in capsys.readouterr().err
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before
