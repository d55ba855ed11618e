"""Every training script's options: help text on each, a usage line that names the script and shows the required
options, the old option names as aliases; help text on every option of every other user-facing script; and the
one checkpoint reader (models.loading.read_checkpoint)."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import inspect
import re
import tokenize
from pathlib import Path

import pytest
import torch

from downstream.baselines.features import build_features_parser
from downstream.fine_tuning.train import build_fine_tuning_parser
from downstream.linear_probing.train import build_probe_parser
from downstream.results import (
    BACKBONE_HGB,
    FEATURES_HGB,
    FINE_TUNE,
    LINEAR_PROBE,
    METHOD_LABELS,
    SCRATCH_FINETUNE,
    SCRATCH_PROBE,
)
from models.loading import (
    CONTEXT_HEAD,
    EPOCH_CLASSIFIER,
    FORMAT_VERSION,
    MLP_HEAD,
    NEURONET,
    SYNTHSLEEPNET,
    TEMPORAL_CLASSIFIER,
    CheckpointError,
    CheckpointNotFound,
    read_checkpoint,
)
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
# The other user-facing scripts build their parser inside main(): the parser is caught where main parses.
REPO = Path(__file__).resolve().parent.parent
OTHER_SCRIPTS = [
    "demo.py",
    "dataset/data_parser.py",
    "dataset/synthetic.py",
    "downstream/event_detection/train.py",
    "downstream/predict.py",
    "downstream/evaluate.py",
    *sorted(
        str(p.relative_to(REPO))
        for p in (REPO / "benchmarks").glob("*.py")
        if 'if __name__ == "__main__"' in p.read_text()  # scripts, not their helper modules
    ),
]
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


class _Parsed(Exception):
    """Raised in place of parsing: carries the script's parser out of its main()."""


def script_parser(script: str, monkeypatch) -> argparse.ArgumentParser:
    """The parser that `script`'s main() builds, caught when it parses (pre-parsers without -h, such as the one
    that reads --config first, parse as usual)."""
    if "/" in script:
        module = importlib.import_module(script.removesuffix(".py").replace("/", "."))
    else:
        spec = importlib.util.spec_from_file_location(script.removesuffix(".py"), REPO / script)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    parse_known_args = argparse.ArgumentParser.parse_known_args

    def caught(self, args=None, namespace=None):
        if not self.add_help:
            return parse_known_args(self, args, namespace)
        raise _Parsed(self)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", caught)
    with pytest.raises(_Parsed) as parsed:
        module.main([]) if inspect.signature(module.main).parameters else module.main()
    return parsed.value.args[0]


@pytest.mark.parametrize("script", OTHER_SCRIPTS)
def test_every_option_of_every_other_script_has_help(script, monkeypatch):
    parser = script_parser(script, monkeypatch)
    assert len(parser._actions) > 2, script  # the script's own parser, not a stand-in
    assert [a.option_strings for a in parser._actions if not a.help] == []


def test_benchmark_pass_options_keep_their_old_epoch_names(monkeypatch):
    """A 30-s epoch owns the word "epoch": the benchmarks' pass budgets are --*-passes, the old names aliases."""
    for script, old, new in (
        ("benchmarks/ssl_scaling.py", "--finetune-epochs", "finetune_passes"),
        ("benchmarks/ssl_scaling.py", "--context-epochs", "context_passes"),
        ("benchmarks/multimodal_learning.py", "--unimodal-epochs", "unimodal_passes"),
        ("benchmarks/multimodal_learning.py", "--multimodal-epochs", "multimodal_passes"),
    ):
        parser = script_parser(script, monkeypatch)
        monkeypatch.undo()
        (action,) = [a for a in parser._actions if old in a.option_strings]
        assert action.dest == new and action.option_strings[0] == "--" + new.replace("_", "-")
        assert parser.parse_known_args([old, "7"])[0].__dict__[new] == 7


def test_model_kinds_and_methods_are_spelled_once():
    """Checkpoint kinds (models/loading.py) and downstream methods (downstream/results.py) are written in files:
    their values stay, and the code names them through the constants, never by a second string literal."""
    kinds = (NEURONET, SYNTHSLEEPNET, MLP_HEAD, EPOCH_CLASSIFIER, TEMPORAL_CLASSIFIER, CONTEXT_HEAD)
    assert kinds == ("neuronet", "synthsleepnet", "mlp_head", "epoch_classifier", "temporal_classifier", "context_head")
    methods = (LINEAR_PROBE, FINE_TUNE, SCRATCH_PROBE, SCRATCH_FINETUNE, FEATURES_HGB, BACKBONE_HGB)
    assert methods == ("linear_probe", "fine_tune", "scratch_probe", "scratch_finetune", "features_hgb", "backbone_hgb")
    assert set(METHOD_LABELS) == set(methods)
    home = {**{k: "models/loading.py" for k in kinds}, **{m: "downstream/results.py" for m in methods}}
    package_name = {"utils/checkpoint.py", "dataset/recording_job.py"}  # "synthsleepnet" as the package's name
    found = []
    files = [
        REPO / "demo.py",
        *(p for d in ("dataset", "downstream", "models", "pretrained", "utils") for p in (REPO / d).rglob("*.py")),
    ]
    for path in files:
        with path.open("rb") as source:
            for token in tokenize.tokenize(source.readline):
                if token.type != tokenize.STRING or token.string[1:-1] not in home:
                    continue
                where = str(path.relative_to(REPO))
                value = token.string[1:-1]
                if where != home[value] and not (value == SYNTHSLEEPNET and where in package_name):
                    found.append(f"{where}:{token.start[0]}: {token.string}")
    assert found == []


def test_help_shows_computed_defaults_not_none():
    """An option computed when not given says how, instead of "(default: None)"."""
    from downstream.linear_probing import train as linear_probing

    text = linear_probing.build_probe_parser().format_help()
    assert "runs/downstream/<method>/<task>-lf<fraction>" in "".join(text.split()) and "(default: None)" not in text
