"""benchmarks/ssl_scaling.py: the table / plot builders on hand-made metrics (fast), the CPU bookkeeping of the
budget chains (fast), and the whole benchmark end to end at its tiny size (slow)."""

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from benchmarks import ssl_scaling, ssl_scaling_options

REPO = Path(__file__).resolve().parents[1]


def metrics(method: str, fraction: float, kappa: float, n1: float | None = 0.2) -> dict:
    """The parts of a downstream run's metrics.json that the benchmark reads."""
    return {
        "method": method,
        "task": "sleep_stage",
        "label_fraction": fraction,
        "backbone_name": "x",
        "train_subjects": None,
        "seed": 0,
        "test": {
            "n_subjects": 6,
            "n_epochs": 5000,
            "pooled": {
                "kappa": kappa,
                "macro_f1": kappa - 0.1,
                "accuracy": kappa + 0.1,
                "per_class_f1": {"W": 0.9, "N1": n1, "N2": 0.8, "N3": 0.8, "REM": 0.7},
            },
            "ci": {"kappa": [kappa - 0.05, kappa + 0.04], "macro_f1": [kappa - 0.2, kappa]},
        },
    }


def hand_made_runs() -> list[dict]:
    runs = []
    for amount, offset in (("own", 0.0), ("own+4x", 0.03)):
        for budget, minutes in ((40, 1.5), (160, 6.0)):
            for fraction in (0.01, 1.0):
                runs.append(
                    {
                        "metrics": metrics("linear_probe", fraction, 0.5 + offset + budget / 1000 + fraction / 10),
                        "data": amount,
                        "budget": budget,
                        "cpu_minutes": minutes * (1 + offset),
                    }
                )
            runs.append(
                {
                    "metrics": metrics("fine_tune", 1.0, 0.7 + offset),
                    "data": amount,
                    "budget": budget,
                    "cpu_minutes": minutes,
                }
            )
    for fraction in (0.01, 1.0):
        runs.append(
            {
                "metrics": metrics("scratch_probe", fraction, 0.3 + fraction / 5, n1=None),
                "data": "",
                "budget": None,
                "cpu_minutes": float("nan"),
            }
        )
        runs.append(
            {"metrics": metrics("feature_hgb", fraction, 0.45), "data": "", "budget": None, "cpu_minutes": float("nan")}
        )
    return runs


def test_result_rows_and_outputs_from_hand_made_metrics(tmp_path):
    rows = ssl_scaling.result_rows(hand_made_runs())
    assert len(rows) == 16
    probe = [r for r in rows if r["method"] == "linear_probe"]
    assert [(r["data"], r["budget_steps"], r["label_fraction"]) for r in probe] == [
        ("own", 40, 0.01),
        ("own", 40, 1.0),
        ("own", 160, 0.01),
        ("own", 160, 1.0),
        ("own+4x", 40, 0.01),
        ("own+4x", 40, 1.0),
        ("own+4x", 160, 0.01),
        ("own+4x", 160, 1.0),
    ]
    first = probe[0]
    assert first["kappa"] == pytest.approx(0.541) and first["kappa_low"] == pytest.approx(0.491)
    assert first["kappa_high"] == pytest.approx(0.581) and first["macro_f1"] == pytest.approx(0.441)
    assert first["n1_f1"] == 0.2 and first["pretrain_cpu_min"] == 1.5
    scratch = [r for r in rows if r["method"] == "scratch_probe"]
    assert all(
        r["budget_steps"] is None and r["data"] == "" and math.isnan(r["pretrain_cpu_min"]) and math.isnan(r["n1_f1"])
        for r in scratch
    )

    ssl_scaling.write_results(rows, tmp_path, "hand-made")
    table = pd.read_csv(tmp_path / "results.csv")
    assert len(table) == 16 and {
        "method",
        "data",
        "budget_steps",
        "pretrain_cpu_min",
        "label_fraction",
        "kappa",
        "kappa_low",
        "kappa_high",
        "macro_f1",
        "n1_f1",
    } <= set(table.columns)
    markdown = (tmp_path / "results.md").read_text()
    assert "0.541 [0.491, 0.581]" in markdown  # kappa with its subject-bootstrap CI
    assert markdown.count("\n| linear_probe |") == 8 and "| feature_hgb |" in markdown
    png = (tmp_path / "ssl_scaling.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert not list(tmp_path.glob(".*"))  # no temp file left behind


def write_cpu(folder: Path, steps: int, from_steps: int, cpu_s: float) -> None:
    folder.mkdir(parents=True)
    (folder / "cpu.json").write_text(json.dumps({"cpu_s": cpu_s, "steps": steps, "from_steps": from_steps}))


def test_cpu_minutes_sum_each_unimodal_chain_and_estimate_the_rest(tmp_path):
    # each unimodal segment: 6 s start-up + 0.5 s per step; multimodal: 12 s + 1 s per step
    budgets = [10, 40, 160]
    for modality in ssl_scaling.MODALITIES:
        write_cpu(tmp_path / f"unimodal-{modality}" / "steps10", 10, 0, 6 + 0.5 * 10)
        write_cpu(tmp_path / f"unimodal-{modality}" / "steps40", 40, 10, 6 + 0.5 * 30)
    write_cpu(tmp_path / "multimodal" / "steps10", 10, 0, 12 + 10)
    write_cpu(tmp_path / "multimodal" / "steps40", 40, 0, 12 + 40)
    measured = ssl_scaling.pretrain_cpu_minutes(tmp_path, budgets, 40)
    assert measured == pytest.approx((4 * (11 + 21) + 52) / 60)  # chain 10 -> 40 of each modality + its multimodal
    estimate = ssl_scaling.estimate_cpu_minutes(tmp_path, budgets)
    assert estimate[40] == pytest.approx(measured)
    assert estimate[160] == pytest.approx((4 * (11 + 21 + 6 + 0.5 * 120) + 12 + 160) / 60)


def test_head_budget_keeps_steps_per_pass_for_small_label_sets():
    assert ssl_scaling.head_budget(14_400, 1500, 200) == (32, 4)  # 450 steps a pass
    batch, passes = ssl_scaling.head_budget(144, 1500, 200)  # 1 % of 15 nights x 8 h
    assert batch == 18 and passes == 188
    assert ssl_scaling.head_budget(12, 600, 20) == (4, 20)  # capped passes, batch never below 4


def test_head_budget_gives_large_label_sets_a_floor_of_passes():
    assert ssl_scaling.head_budget(14_400, 1500, 200, min_passes=30) == (32, 30)  # not 4 passes
    assert ssl_scaling.head_budget(144, 1500, 200, min_passes=30) == (18, 188)  # the step target already gives more
    assert ssl_scaling.head_budget(3, 100, 200)[0] == 3  # fewer labels than a batch: the batch the scripts use
    args = ssl_scaling_options.parse_args(["--out", "x"])
    assert args.probe_min_passes == 30
    with pytest.raises(SystemExit) as stopped:
        ssl_scaling_options.parse_args(["--probe-min-passes", "300"])  # above --probe-max-passes 200
    assert stopped.value.code == 2
    with pytest.raises(SystemExit) as stopped:
        ssl_scaling_options.parse_args(["--eval-stride", "21"])  # beyond fine-tuning's window of 20
    assert stopped.value.code == 2


def test_a_finished_run_is_reused_only_with_the_same_settings(monkeypatch, tmp_path, capsys):
    args = ssl_scaling_options.parse_args(["--out", str(tmp_path)])
    out = tmp_path / "probe" / "lf1"
    out.mkdir(parents=True)
    (out / "metrics.json").write_text("{}")
    config = {"passes": 4, "batch_size": 32, "label_fraction": 1.0, "seed": args.seed, "data": "elsewhere"}
    (out / "config.json").write_text(json.dumps(config))
    os.utime(out / "config.json", ns=(1, 1))  # written when the run started, before its metrics
    monkeypatch.setattr(ssl_scaling, "run_script", lambda *a: pytest.fail("a finished run was trained again"))
    same = ssl_scaling.downstream_run("downstream/linear_probing/train.py", out, tmp_path, 1.0, args, "--passes", 4)
    assert same == out  # other paths (data) do not count, the budget does
    older = ssl_scaling.downstream_run(  # --neighbour-epochs is not in this (older) config: not compared
        "downstream/linear_probing/train.py", out, tmp_path, 1.0, args, "--passes", 4, "--neighbour-epochs", 3
    )
    assert older == out
    with pytest.raises(SystemExit) as stopped:
        ssl_scaling.downstream_run("downstream/linear_probing/train.py", out, tmp_path, 1.0, args, "--passes", 30)
    assert stopped.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith(f"error: {out}:") and "passes: 4 -> 30" in error and error.count("\n") == 1
    assert json.loads((out / "config.json").read_text()) == config  # the finished run is left as it was
    with pytest.raises(SystemExit):  # a seed shown as a whole number
        ssl_scaling.downstream_run(
            "downstream/linear_probing/train.py",
            out,
            tmp_path,
            1.0,
            argparse.Namespace(**{**vars(args), "seed": 7}),
            "--passes",
            4,
        )
    assert f"seed: {args.seed} -> 7" in capsys.readouterr().err
    os.utime(out / "config.json")  # started again in that folder after it finished
    with pytest.raises(SystemExit):
        ssl_scaling.downstream_run("downstream/linear_probing/train.py", out, tmp_path, 1.0, args, "--passes", 4)
    assert "started again" in capsys.readouterr().err


def recorded_runs(monkeypatch) -> list[tuple]:
    """The benchmark's downstream runs recorded as (script, out, extra options) instead of trained, on a cohort
    of 1,000 train labels whose pretraining took 1 CPU-minute."""
    calls: list[tuple] = []
    monkeypatch.setattr(
        ssl_scaling, "downstream_run", lambda script, out, *rest: calls.append((script, out, rest)) or out
    )
    monkeypatch.setattr(ssl_scaling, "n_train_labels", lambda *a: 1000)
    monkeypatch.setattr(ssl_scaling, "pretrain_cpu_minutes", lambda *a: 1.0)
    return calls


@pytest.mark.parametrize("cap, expected", [(0, None), (10, "10")])
def test_fine_tuning_runs_get_the_lora_step_cap(monkeypatch, tmp_path, cap, expected):
    calls = []
    monkeypatch.setattr(ssl_scaling, "downstream_run", lambda script, out, *rest: calls.append((script, rest)) or out)
    monkeypatch.setattr(ssl_scaling, "n_train_labels", lambda *a: 1000)
    monkeypatch.setattr(ssl_scaling, "pretrain_cpu_minutes", lambda *a: 1.0)
    args = ssl_scaling_options.build_parser().parse_args(["--out", str(tmp_path), "--finetune-max-steps", str(cap)])
    args.finetune_budgets = [100]
    ssl_scaling.run_pretrained(args, "own", tmp_path, 100, tmp_path / "pretrain" / "steps100")
    tuned = [[str(v) for v in rest] for script, rest in calls if "fine_tuning" in script]
    assert len(tuned) == len(args.finetune_fractions)
    for extra in tuned:
        capped = extra[extra.index("--max-steps") + 1] if "--max-steps" in extra else None
        assert capped == expected


@pytest.mark.parametrize("pooling, folder", [("channel", "trees_channel"), ("mean", "trees")])
def test_tree_runs_read_the_asked_pooling_in_folders_of_their_own(monkeypatch, tmp_path, pooling, folder):
    calls = recorded_runs(monkeypatch)
    args = ssl_scaling_options.parse_args(["--out", str(tmp_path), "--tree-pooling", pooling], "d")
    ssl_scaling.run_pretrained(args, "own", tmp_path, 100, tmp_path / "pretrain" / "steps100")
    trees = [(out, [str(v) for v in rest]) for script, out, rest in calls if "features" in script]
    assert len(trees) == len(args.tree_fractions) * len(args.neighbour_epochs) > 0
    for out, extra in trees:
        assert out.parent.parent.name == folder and extra[extra.index("--pooling") + 1] == pooling


@pytest.mark.parametrize("night_norm, suffix", [("none", "-nb3"), ("zscore", "-nb3-night-zscore")])
def test_night_norm_reaches_probes_trees_and_features_in_folders_of_their_own(
    monkeypatch, tmp_path, night_norm, suffix
):
    calls = recorded_runs(monkeypatch)
    args = ssl_scaling_options.parse_args(["--out", str(tmp_path), "--night-norm", night_norm], "d")
    ssl_scaling.run_pretrained(args, "own", tmp_path, 100, tmp_path / "pretrain" / "steps100")
    ssl_scaling.run_baselines(args, tmp_path)
    per_epoch = [(out, [str(v) for v in rest]) for script, out, rest in calls if "fine_tuning" not in script]
    per_epoch = [(out, extra) for out, extra in per_epoch if "--init" not in extra]  # not the scratch probe
    assert {out.parents[1].name if "steps" in out.parent.name else out.parent.name for out, _ in per_epoch} == {
        "probe",
        "trees_channel",
        "features",
    }
    for out, extra in per_epoch:
        assert extra[extra.index("--night-norm") + 1] == night_norm
        assert out.name.endswith(suffix) == (extra[extra.index("--neighbour-epochs") + 1] == "3"), out


def test_scratch_with_temporal_context_runs_at_its_fractions(monkeypatch, tmp_path):
    calls = recorded_runs(monkeypatch)
    cases = (
        ("bidirectional", "10", "lf1-bi-es10"),  # the default: half-overlapping evaluation windows
        ("forward", "10", "lf1-es10"),
        ("bidirectional", "20", "lf1-bi"),  # disjoint windows: the folders of earlier runs
    )
    for direction, stride, folder in cases:
        calls.clear()
        args = ssl_scaling_options.parse_args(
            ["--out", str(tmp_path), "--context-direction", direction, "--eval-stride", stride], "d"
        )
        ssl_scaling.run_baselines(args, tmp_path)
        temporal = [(out, [str(v) for v in rest]) for script, out, rest in calls if "fine_tuning" in script]
        assert len(temporal) == 1  # the default --scratch-context-fractions: 100 % only
        out, extra = temporal[0]
        assert out == tmp_path / "downstream" / "scratch_context" / folder and extra[1] == "1.0"
        assert extra[extra.index("--init") + 1] == "random" and extra[extra.index("--passes") + 1] == "3"
        assert extra[extra.index("--context-direction") + 1] == direction
        assert extra[extra.index("--eval-stride") + 1] == stride


def test_the_mask_mode_reaches_multimodal_pretraining_and_keeps_its_out(monkeypatch, tmp_path, capsys):
    """--mask-mode is forwarded to every multimodal pretraining (the published mode adds nothing), and an OUT made
    with one mode is refused with another: its pretrained runs would stand in for the other masking's."""
    scripts = []

    def run_script(script, *args):
        scripts.append([str(v) for v in args])
        Path(args[args.index("--out") + 1]).mkdir(parents=True)  # what the script would write
        return 1.0

    monkeypatch.setattr(ssl_scaling, "run_script", run_script)
    monkeypatch.setattr(ssl_scaling, "passes_for", lambda *a, **k: 1)
    for mode in ("channel", "independent"):
        args = ssl_scaling_options.parse_args(["--out", str(tmp_path / mode), "--mask-mode", mode], "d")
        ssl_scaling.pretrain_multimodal(args, tmp_path, tmp_path / mode, 100, dict.fromkeys(ssl_scaling.MODALITIES))
    assert scripts[0][scripts[0].index("--model-arg") + 1] == "mask_mode=channel" and "--model-arg" not in scripts[1]
    (tmp_path / "made").mkdir()
    (tmp_path / "made" / "settings.json").write_text(json.dumps({"mask_mode": "channel"}))
    assert ssl_scaling.main(["--out", str(tmp_path / "made")]) == 2
    assert capsys.readouterr().err.startswith("error: --out ")
    assert json.loads((tmp_path / "made" / "settings.json").read_text()) == {"mask_mode": "channel"}  # unchanged
    (tmp_path / "made" / "settings.json").write_text("{not json")
    assert ssl_scaling.main(["--out", str(tmp_path / "made")]) == 2 and "unreadable" in capsys.readouterr().err
    none = ssl_scaling_options.parse_args(["--out", str(tmp_path), "--finetune-fractions", "none"], "d")
    assert none.finetune_fractions == []


@pytest.mark.slow
def test_benchmark_end_to_end_at_tiny_size(tmp_path):
    """--size tiny (6 nights x 2 h + 6 extra, budgets 4 and 16 steps), every staging method, then a rerun
    that only skips (nothing is trained again). About 13 minutes on 2 idle cores."""
    command = [
        sys.executable,
        "benchmarks/ssl_scaling.py",
        "--size",
        "tiny",
        "--out",
        str(tmp_path),
        "--probe-steps",
        "100",
        "--scratch-steps",
        "20",
        "--scratch-max-passes",
        "2",
        "--context-epochs",
        "2",
        "--finetune-stride",
        "20",
        "--neighbour-epochs",
        "0,2",
        "--scratch-context-passes",
        "1",
        "--probe-min-passes",
        "1",
    ]
    ran = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=2400)
    assert ran.returncode == 0, ran.stderr[-3000:]
    table = pd.read_csv(tmp_path / "results.csv")
    pretrained = table[table["budget_steps"].notna()]
    # data amounts x budgets x ((probe + tree fractions) x neighbour settings 0 and 2 + fine-tuning fractions)
    assert len(pretrained) == 2 * 2 * ((3 + 2) * 2 + 2)
    assert set(pretrained["data"]) == {"own", "own+1x"} and set(pretrained["budget_steps"]) == {4, 16}
    assert set(pretrained["method"]) == {
        "linear_probe",
        "linear_probe ±2",
        "backbone_hgb (per channel)",
        "backbone_hgb ±2 (per channel)",
        "fine_tune",
    }
    assert set(table.loc[table["budget_steps"].isna(), "method"]) == {
        "scratch_probe",
        "scratch_finetune",
        "features_hgb",
        "features_hgb ±2",
    }
    assert len(table) == 48 + 3 * 3 + 1
    assert (table["neighbour_epochs"].fillna(0) == table["method"].str.contains("±2") * 2).all()
    assert table["kappa"].notna().all() and (table["kappa"].abs() <= 1).all()
    assert (pretrained["pretrain_cpu_min"] > 0).all()
    cpu = pretrained.groupby(["data", "budget_steps"])["pretrain_cpu_min"].first()
    assert cpu[("own", 16)] > cpu[("own", 4)]
    assert (tmp_path / "ssl_scaling.png").stat().st_size > 10_000 and "own+1x" in (tmp_path / "results.md").read_text()
    splits = {name: json.loads((tmp_path / "data" / name / "splits.json").read_text()) for name in ("own", "own+extra")}
    for split in ("train", "val", "test"):
        assert splits["own"]["recordings"][split] == splits["own+extra"]["recordings"][split]
    extra = set(splits["own+extra"]["subjects"]["pretrain"]) - set(splits["own"]["subjects"]["pretrain"])
    assert len(extra) == 6 and all(s.startswith("3") for s in extra)

    again = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "$ " not in again.stdout  # every stage skipped on the rerun
