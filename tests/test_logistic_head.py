"""The linear probe's logistic head (`--head logistic`, docs/evaluation.md §5.3): `downstream.logistic` (the
penalised fit, its standardisation folded into the weights, the penalty chosen on val) and the probe run with it
(outputs, determinism, a night predicted as on test, the guards)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from downstream.linear_probing import train as linear_probing
from downstream.logistic import PenaltyFit, fit_logistic_head, fit_penalty, selection_note, standardisation
from downstream.results import summary_row, variant_suffix
from models.heads import MLPHead

# `backbones` and `cohort` are that module's fixtures (one small cohort, two small backbones)
from tests.test_downstream import RUN, assert_every_test_epoch_once, backbones, cohort  # noqa: F401
from tests.test_neighbour_epochs import assert_night_predicted_as_on_test
from utils.checkpoint import load_checkpoint
from utils.run_logging import read_jsonl


def blobs(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Three classes in 6 dimensions, on scales from 1e-3 to 1e3 (standardisation matters), with overlap."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    centres = torch.tensor([[0.0, 0, 0, 0, 0, 0], [2.0, 0, 1, 0, 0, 0], [0.0, 2, 0, 1, 0, 0]])
    x = centres[labels] + torch.randn(n, 6, generator=gen)
    return x * torch.tensor([1e-3, 1e3, 1.0, 10.0, 1.0, 0.1]), labels


def accuracy(head: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((head(x).argmax(dim=1) == y).float().mean())


def test_fit_reaches_the_penalised_optimum_and_folds_the_standardisation():
    x, y = blobs(300, 0)
    mean, sd = standardisation(x)
    z = (x - mean) / sd
    w, b, reached, iterations = fit_penalty(z, y, None, 0.1, (torch.zeros(3, 6), torch.zeros(3)))
    assert 0 < iterations <= 500
    # the optimum: the gradient of the penalised objective vanishes there
    w_, b_ = w.clone().requires_grad_(True), b.clone().requires_grad_(True)
    (F.cross_entropy(z @ w_.T + b_, y) + 0.05 * w_.pow(2).sum()).backward()
    assert w_.grad.abs().max() < 1e-4 and b_.grad.abs().max() < 1e-4
    # a larger penalty gives smaller weights
    w_big, *_ = fit_penalty(z, y, None, 10.0, (torch.zeros(3, 6), torch.zeros(3)))
    assert w_big.norm() < 0.5 * w.norm()
    # the head reads raw vectors: its weights hold the standardisation
    head = MLPHead(6, 3, hidden=(), dropout=0.0)
    val_scores = iter([0.5, 0.9])  # what val says of the penalties 1.0 and 0.1, in the order they are fitted
    best, fits = fit_logistic_head(
        head, x, y, None, lambda m: {"val_kappa": next(val_scores)}, "val_kappa", "max", [0.1, 1.0]
    )
    assert [f.l2 for f in fits] == [1.0, 0.1] and best.l2 == 0.1
    with torch.no_grad():
        assert torch.allclose(head(x), z @ w.T + b, atol=1e-3)
    assert accuracy(head, x, y) > 0.6  # chance: 1 / 3; the classes overlap


def test_penalty_chosen_on_val_and_deterministic():
    x, y = blobs(240, 1)
    vx, vy = blobs(240, 2)
    y_with_unlabelled = y.clone()
    y_with_unlabelled[::7] = -1  # dropped, not a class

    def run(grid, metric="val_accuracy", mode="max"):
        head = MLPHead(6, 3, hidden=())
        best, fits = fit_logistic_head(
            head,
            x,
            y_with_unlabelled,
            torch.tensor([1.0, 2.0, 1.0]),
            lambda m: {"val_accuracy": accuracy(m, vx, vy), "val_loss": float(F.cross_entropy(m(vx).detach(), vy))},
            metric,
            mode,
            grid,
        )
        return head, best, fits

    head, best, fits = run([100.0, 0.01, 1.0])
    assert [f.l2 for f in fits] == [100.0, 1.0, 0.01]  # largest first, each from the last one's solution
    assert best.scores["val_accuracy"] == max(f.scores["val_accuracy"] for f in fits)
    assert torch.equal(head.state_dict()["layers.0.weight"], best.state["layers.0.weight"])
    _, by_loss, fits_loss = run([100.0, 0.01, 1.0], "val_loss", "min")
    assert by_loss.scores["val_loss"] == min(f.scores["val_loss"] for f in fits_loss)
    again, _, _ = run([100.0, 0.01, 1.0])
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in head.state_dict().items())
    with pytest.raises(ValueError, match="one linear layer"):
        fit_logistic_head(MLPHead(6, 3, hidden=(4,)), x, y, None, lambda m: {}, "val_kappa", "max", [1.0])
    with pytest.raises(ValueError, match="at least 2"):
        fit_logistic_head(MLPHead(6, 3, hidden=()), x[:1], y[:1], None, lambda m: {}, "val_kappa", "max", [1.0])


def test_the_choice_of_penalty_is_warned_about_only_when_it_says_something():
    """An end of the grid is worth a warning only when the scores differ; no finite score at all is its own."""

    def fits(*values):
        return [PenaltyFit(l2, {"val_kappa": v}, 0.0, 10, {}) for l2, v in zip((10.0, 1.0, 0.1), values)]

    middle = fits(0.5, 0.7, 0.6)
    assert selection_note(middle[1], middle, "val_kappa") is None
    top = fits(0.8, 0.7, 0.6)
    assert "largest penalty of --l2-grid (10)" in selection_note(top[0], top, "val_kappa")
    low = fits(0.5, 0.6, 0.7)
    assert "smallest penalty of --l2-grid (0.1)" in selection_note(low[2], low, "val_kappa")
    tied = fits(0.7, 0.7, 0.7)
    assert selection_note(tied[0], tied, "val_kappa") is None
    broken = fits(float("nan"), float("nan"), float("nan"))
    assert (
        selection_note(broken[0], broken, "val_kappa")
        == "no penalty gave a finite val_kappa; the largest (10) was kept"
    )
    x, y = blobs(60, 3)
    chosen, _ = fit_logistic_head(
        MLPHead(6, 3, hidden=()), x, y, None, lambda m: {"val_kappa": float("nan")}, "val_kappa", "max", [1.0, 0.1]
    )
    assert chosen.l2 == 1.0 and chosen.converged


def test_probe_with_the_logistic_head(cohort, backbones, tmp_path, capsys):  # noqa: F811
    """A probe run with --head logistic: one log line per penalty, the val-best one in best.pt (an MLP head
    without hidden layers that predict.py reads as any probe), the same head again from the same vectors, and
    the guards of a head that is fitted, not trained."""
    out = tmp_path / "logistic"
    argv = ["--data", str(cohort), "--backbone", str(backbones["fusion"]), "--task", "sleep_stage", *RUN]
    options = ["--head", "logistic", "--l2-grid", "1", "0.01", "--neighbour-epochs", "1", "--night-norm", "zscore"]
    assert linear_probing.main([*argv, "--out", str(out), *options]) == 0
    printed = capsys.readouterr().out  # of two penalties with different scores, the one chosen is at an end
    lines = [r for r in read_jsonl(out / "log.jsonl") if r.get("kind") == "epoch"]
    assert ("warning: val chose the" in printed) is (lines[0]["val_kappa"] != lines[1]["val_kappa"])
    assert all(r["converged"] for r in lines)
    config = json.loads((out / "config.json").read_text())
    assert config["head"] == "logistic" and config["head_hidden"] == [] and config["l2_grid"] == [1.0, 0.01]
    assert [r["l2"] for r in lines] == [1.0, 0.01]
    checkpoint = load_checkpoint(out / "best.pt")
    chosen = max(lines, key=lambda r: r["val_kappa"])  # the first of equals: the larger penalty
    assert checkpoint["metadata"]["l2"] == chosen["l2"] and checkpoint["model_config"]["hidden"] == []
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["selection"]["value"] == pytest.approx(chosen["val_kappa"])
    assert metrics["head"] == "logistic" and metrics["l2"] == chosen["l2"]
    assert f"fitted by L-BFGS, L2 {chosen['l2']:g} chosen on val" in (out / "results.md").read_text()
    row = summary_row(metrics)
    assert row["head"] == "logistic" and variant_suffix(row) == " ±1 (night zscore) (logistic head)"
    predictions = assert_every_test_epoch_once(out, cohort)
    assert_night_predicted_as_on_test(out, cohort, predictions)
    # the same vectors give the same head, and the rerun replaces the run whole
    weights = checkpoint["model"]["layers.0.weight"]
    assert linear_probing.main([*argv, "--out", str(out), *options]) == 0
    assert torch.equal(load_checkpoint(out / "best.pt")["model"]["layers.0.weight"], weights)
    assert not (out / ".next").exists()
    # guards: the head is fitted on stored vectors
    capsys.readouterr()
    with pytest.raises(SystemExit):
        linear_probing.main([*argv, "--out", str(tmp_path / "scratch"), "--init", "random", "--head", "logistic"])
    assert "--head logistic needs --init pretrained" in capsys.readouterr().err
    assert not (tmp_path / "scratch").exists()
    with pytest.raises(SystemExit):
        linear_probing.main([*argv, "--out", str(tmp_path / "bad"), "--head", "logistic", "--l2-grid", "0"])
    assert "--l2-grid" in capsys.readouterr().err
    # an option the chosen head does not use is refused, so config.json names only settings that had an effect,
    # given on the command line or in a --config file
    config_file = tmp_path / "probe.json"
    config_file.write_text(json.dumps({"head": "logistic", "passes": 7}))
    for extra, message in (
        (["--head", "logistic", "--passes", "7", "--head-dropout", "0.2"], "--passes, --head-dropout: not used by"),
        (["--config", str(config_file)], "--passes: not used by --head logistic"),
        (["--head", "logistic", "--resume", str(out / "last.pt")], "--head logistic is fitted afresh"),
        (["--l2-grid", "5"], "--l2-grid: only --head logistic uses it"),
    ):
        with pytest.raises(SystemExit):
            linear_probing.main([*argv, "--out", str(tmp_path / "bad"), *extra])
        assert message in capsys.readouterr().err, extra
    assert not (tmp_path / "bad").exists()
    assert "lr_scaled" not in config["_derived"] and "effective_batch_size" not in config["_derived"]
    assert np.isfinite(metrics["test"]["pooled"]["kappa"])
