"""Every training script's options: help text on each, a usage line that names the script and shows the required
options, the old option names as aliases; and the one checkpoint reader (models.loading.read_checkpoint)."""

from __future__ import annotations

import re

import pytest
import torch

from downstream.baselines.features import build_features_parser
from downstream.fine_tuning.train import build_fine_tuning_parser
from downstream.linear_probing.train import build_probe_parser
from models.loading import FORMAT_VERSION, CheckpointError, CheckpointNotFound, read_checkpoint
from pretrained.multimodal.train import build_multimodal_parser
from pretrained.unimodal.pretrain import MODALITIES, build_pretrain_parser
from utils.checkpoint import atomic_save, load_checkpoint

SCRIPTS = {
    **{f"pretrained/unimodal/{m}/train.py": (lambda m=m: build_pretrain_parser(m)) for m in MODALITIES},
    "pretrained/multimodal/train.py": build_multimodal_parser,
    "downstream/linear_probing/train.py": build_probe_parser,
    "downstream/fine_tuning/train.py": build_fine_tuning_parser,
    "downstream/baselines/features.py": build_features_parser,
}
REQUIRED = {
    "downstream/linear_probing/train.py": ("--data", "--task"),
    "downstream/fine_tuning/train.py": ("--data", "--task"),
    "downstream/baselines/features.py": ("--data", "--task"),
}


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_every_option_has_help_and_the_usage_names_the_script(script):
    parser = SCRIPTS[script]()
    assert [a.option_strings for a in parser._actions if not a.help] == []
    usage = " ".join(parser.format_usage().split())  # one line, whatever the wrapping
    assert usage.startswith(f"usage: python {script} ")
    for option in REQUIRED.get(script, ("--data",)):
        assert re.search(rf"(?<!\[){option} [A-Z{{]", usage), (option, usage)  # no bracket: required
    assert "[--seed SEED]" in usage  # an optional option keeps its brackets
    help_text = " ".join(parser.format_help().split())
    if script.endswith("train.py"):
        assert "AdamW lr = base_lr x effective_batch / 256" in help_text and "--lr BASE_LR" in help_text
        assert "--passes PASSES, --epochs PASSES" in help_text  # the old name, documented as an alias


def test_old_flags_of_the_downstream_scripts_are_aliases(tmp_path):
    argv = ["--data", str(tmp_path), "--task", "sleep_stage", "--backbone", "x"]
    old = build_fine_tuning_parser().parse_args(
        [
            *argv,
            "--epochs",
            "2",
            "--context-epochs",
            "3",
            "--context-lr",
            "0.01",
            "--lr",
            "0.002",
            "--warmup-epochs",
            "0.5",
        ]
    )
    new = build_fine_tuning_parser().parse_args(
        [
            *argv,
            "--passes",
            "2",
            "--context-passes",
            "3",
            "--context-base-lr",
            "0.01",
            "--base-lr",
            "0.002",
            "--warmup-passes",
            "0.5",
        ]
    )
    assert vars(old) == vars(new) and (new.passes, new.context_passes, new.context_base_lr) == (2, 3, 0.01)
    assert not {"epochs", "lr", "warmup_epochs", "context_epochs", "context_lr"} & set(vars(new))


def test_one_reader_checks_every_checkpoint(tmp_path):
    state = {
        "format_version": FORMAT_VERSION,
        "model_kind": "toy",
        "model_config": {},
        "model": {},
        "epoch": 0,
        "step": 0,
        "config": {},
    }
    atomic_save(state, tmp_path / "run" / "last.pt")
    assert read_checkpoint(tmp_path / "run")["path"] == str(tmp_path / "run" / "last.pt")  # a run directory
    assert load_checkpoint(tmp_path / "run" / "last.pt")["step"] == 0  # the training flavour calls the same reader
    with pytest.raises(CheckpointError, match=r"last.pt: holds a 'toy' model, expected 'neuronet'"):
        read_checkpoint(tmp_path / "run", kinds=("neuronet",))
    atomic_save({**state, "format_version": FORMAT_VERSION + 1}, tmp_path / "newer.pt")
    with pytest.raises(CheckpointError, match=r"newer.pt: checkpoint format \d+ is newer than this code"):
        read_checkpoint(tmp_path / "newer.pt")  # checked for model checkpoints too, not only when resuming
    torch.save({"model": {}}, tmp_path / "partial.pt")
    with pytest.raises(
        CheckpointError,
        match=r"partial.pt: not a checkpoint of this project \(missing keys: "
        r"format_version, model_kind, model_config",
    ):
        load_checkpoint(tmp_path / "partial.pt")
    with pytest.raises(CheckpointNotFound, match="nothing.pt") as missing:
        read_checkpoint(tmp_path / "nothing.pt")
    assert isinstance(missing.value, FileNotFoundError) and isinstance(missing.value, ValueError)
    with pytest.raises(CheckpointNotFound, match="checkpoint not found"):
        load_checkpoint(tmp_path / "run")  # resuming takes a file, not a run directory
