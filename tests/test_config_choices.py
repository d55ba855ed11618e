"""A `--config` file's values are checked as the same flags on the command line are, `choices` included (one
`error:` line naming the file, the key and the allowed values, exit status 2, nothing written); and a
--select-metric the task is never scored by is a usage error."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dataset.constants import TASKS
from downstream import predict
from downstream.event_detection import train as event_detection
from downstream.fine_tuning import train as fine_tuning
from downstream.linear_probing import train as linear_probing
from downstream.options import SELECT_METRICS, task_metrics
from downstream.training import selection_scores
from tests.checks import assert_one_error_line, exit_code, snapshot
from utils.config import ArgumentParser, parse_config


def write_config(path: Path, values: dict) -> Path:
    path.write_text(json.dumps(values))
    return path


def choices_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="t")
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument("--init", choices=("pretrained", "random"), default="pretrained")
    parser.add_argument("--task", choices=("sleep_stage", "apnea"), default=None)
    parser.add_argument("--rule", choices=("3a", "4", "all"), default="3a")
    parser.add_argument("--sources", choices=("fusion", "encoder"), nargs="+", default=["fusion"])
    return parser


def text_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="t")
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument("--backbone", type=Path, default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("runs", nargs="*", type=Path, default=[])
    return parser


@pytest.mark.parametrize(
    "values, key",
    [
        ({"backbone": ["a", "b"]}, "backbone"),
        ({"backbone": {"path": "a"}}, "backbone"),
        ({"device": True}, "device"),
        ({"runs": "runs/probe"}, "runs"),  # one path for a list: not read one character at a time
        ({"runs": [5, ["x"]]}, "runs"),
    ],
)
def test_config_value_of_the_wrong_kind_for_a_text_option_is_one_error_line(values, key, tmp_path, capsys):
    config = write_config(tmp_path / "options.json", values)
    with pytest.raises(SystemExit) as exit_info:
        parse_config(text_parser(), ["--config", str(config)], required=())
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert_one_error_line(err, str(config))
    assert f"option {key} = " in err and "should be a " in err


def test_config_number_for_a_text_option_is_its_text(tmp_path):
    """A YAML `backbone: 5` is the path "5", converted as the command line's `--backbone 5` would be."""
    config = write_config(tmp_path / "options.json", {"backbone": 5, "device": 0, "runs": ["a", 7]})
    cfg = parse_config(text_parser(), ["--config", str(config)], required=())
    assert cfg.backbone == Path("5") and cfg.device == "0" and cfg.runs == [Path("a"), Path("7")]


# --------------------------------------------------------------------------------------- the parser
@pytest.mark.parametrize(
    "values, key",
    [
        ({"init": "Pretrained"}, "init"),
        ({"init": None}, "init"),  # null is not "not given" where the option has a default
        ({"init": ["pretrained"]}, "init"),
        ({"rule": "5"}, "rule"),
        ({"sources": ["fusion", "tokens"]}, "sources"),
        ({"sources": "fusion"}, "sources"),  # nargs: a list, as the command line gives
    ],
)
def test_config_value_outside_choices_is_one_error_line(values, key, tmp_path, capsys):
    config = write_config(tmp_path / "options.json", values)
    with pytest.raises(SystemExit) as exit_info:
        parse_config(choices_parser(), ["--config", str(config)], required=())
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert_one_error_line(err, str(config))
    line = next(line for line in err.splitlines() if line.startswith("error:"))
    assert f"option {key} = " in line
    allowed = choices_parser()._option_string_actions[f"--{key}"].choices
    assert all(str(choice) in line for choice in allowed), line


@pytest.mark.parametrize("flag, value", [("--init", "Pretrained"), ("--rule", "5"), ("--sources", "tokens")])
def test_the_same_value_as_a_flag_is_rejected_too(flag, value, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_config(choices_parser(), [flag, value], required=())
    assert exit_info.value.code == 2
    assert_one_error_line(capsys.readouterr().err, flag)


def test_config_values_inside_choices_pass(tmp_path):
    config = write_config(
        tmp_path / "options.json", {"init": "random", "task": None, "rule": 4, "sources": ["encoder", "fusion"]}
    )
    cfg = parse_config(choices_parser(), ["--config", str(config)], required=())
    # null where the default is None; a YAML/JSON number read as the choice it spells (`--rule 4` on the command line)
    assert (cfg.init, cfg.task, cfg.rule, cfg.sources) == ("random", None, "4", ["encoder", "fusion"])
    cfg = parse_config(choices_parser(), ["--config", str(config), "--init", "pretrained"], required=())
    assert cfg.init == "pretrained"  # an explicit flag still wins over the file


# --------------------------------------------------------------------------------------- the scripts
def data_argv(tmp_path: Path) -> list[str]:
    return ["--data", str(tmp_path / "dst"), "--out", str(tmp_path / "out")]


SCRIPT_CASES = {
    "probe init": (linear_probing.main, {"init": "Pretrained", "task": "sleep_stage"}, "init"),
    "probe class_weights": (linear_probing.main, {"class_weights": "inverse", "task": "apnea"}, "class_weights"),
    "probe task": (linear_probing.main, {"task": "foo"}, "task"),
    "probe select_metric": (linear_probing.main, {"task": "sleep_stage", "select_metric": "kapa"}, "select_metric"),
    "fine-tuning context_direction": (
        fine_tuning.main,
        {"task": "sleep_stage", "context_direction": "backward"},
        "context_direction",
    ),
    "event detection hypopnea_rule": (event_detection.main, {"hypopnea_rule": "5"}, "hypopnea_rule"),
}


@pytest.mark.parametrize("case", SCRIPT_CASES)
def test_script_rejects_a_config_value_outside_choices(case, tmp_path, capsys):
    main, values, key = SCRIPT_CASES[case]
    config = write_config(tmp_path / "options.json", values)
    before = snapshot(tmp_path)
    capsys.readouterr()
    assert exit_code(main, ["--config", str(config), *data_argv(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert_one_error_line(err, f"{config}: option {key} = {values[key]!r} should be one of")
    assert snapshot(tmp_path) == before and not (tmp_path / "out").exists()


def test_predict_rejects_a_config_hypopnea_rule_outside_choices(tmp_path, capsys):
    config = write_config(tmp_path / "options.json", {"hypopnea_rule": "5"})
    argv = ["--config", str(config), "--checkpoint", str(tmp_path / "run"), "--edf", str(tmp_path / "night.edf")]
    assert exit_code(predict.main, [*argv, "--out", str(tmp_path / "out")]) == 2
    assert_one_error_line(capsys.readouterr().err, f"{config}: option hypopnea_rule = '5' should be one of: 3a, 4")
    assert not (tmp_path / "out").exists()


def test_linear_probe_with_a_misspelt_init_in_config_trains_nothing(cohort_factory, tmp_path, capsys):
    """End to end on a parsed cohort: `"init": "Pretrained"` once trained a scratch probe silently."""
    dst = cohort_factory(nights=6, hours=0.8, seed=0) / "dst"
    config = write_config(tmp_path / "probe.json", {"init": "Pretrained", "preset": "tiny", "channels": ["eeg_c4"]})
    out = tmp_path / "run"
    argv = ["--config", str(config), "--data", str(dst), "--task", "sleep_stage", "--out", str(out)]
    argv += ["--max-steps", "1", "--batch-size", "32", "--workers", "0", "--no-progress", "--n-boot", "0"]
    before = snapshot(tmp_path, dst)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        linear_probing.main([*argv, "--hypnograms", "0", "--resume", "none"])
    assert exit_info.value.code == 2
    assert_one_error_line(capsys.readouterr().err, "option init = 'Pretrained' should be one of: pretrained, random")
    assert snapshot(tmp_path, dst) == before and not out.exists()


# --------------------------------------------------------------------------------------- --select-metric by task
def test_task_metrics_are_the_metrics_selection_scores_computes():
    rng = np.random.default_rng(0)
    for task, n_classes in TASKS.items():
        labels = np.arange(40) % n_classes
        probabilities = rng.dirichlet(np.ones(n_classes), size=labels.size)
        scored = {key.removeprefix("val_") for key in selection_scores(labels, probabilities, task)} - {"n"}
        assert set(task_metrics(task)) == scored & set(SELECT_METRICS), task
    assert "auroc" not in task_metrics("sleep_stage") and "auroc" in task_metrics("apnea")


@pytest.mark.parametrize("given", ["flag", "config"])
def test_select_metric_the_task_never_computes_is_a_usage_error(given, tmp_path, capsys):
    argv = ["--task", "sleep_stage", "--backbone", str(tmp_path / "eeg.pt"), *data_argv(tmp_path)]
    if given == "flag":
        argv += ["--select-metric", "auroc"]
    else:
        argv += ["--config", str(write_config(tmp_path / "options.json", {"select_metric": "auroc"}))]
    before = snapshot(tmp_path)
    capsys.readouterr()
    assert exit_code(linear_probing.main, argv) == 2
    err = capsys.readouterr().err
    assert_one_error_line(err, "--select-metric auroc: task sleep_stage")
    assert "kappa, macro_f1, accuracy, loss" in err
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("values", [{"passes": None}, {"sources": []}])
def test_null_numbers_and_empty_lists_are_refused_as_the_command_line_would(values, tmp_path, capsys):
    """`"passes": null` left None where the engine multiplies it; an empty list for a `nargs="+"` option is what
    the command line refuses."""
    parser = choices_parser()
    parser.add_argument("--passes", type=int, default=3)
    config = write_config(tmp_path / "options.json", values)
    with pytest.raises(SystemExit) as exit_info:
        parse_config(parser, ["--config", str(config)], required=())
    assert exit_info.value.code == 2
    assert_one_error_line(capsys.readouterr().err, str(config))
