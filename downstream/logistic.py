"""The linear probe's logistic-regression head (`--head logistic`, docs/evaluation.md §5.3): a linear classifier
fitted to convergence on the cached vectors with full-batch L-BFGS, its L2 penalty chosen on `val`.

A head trained by mini-batch AdamW for a fixed number of passes fits a few hundred labelled epochs of thousands of
numbers each almost perfectly, and its decoupled weight decay does not bound the weights the way a penalty in the
objective does. Here each penalty of `l2_grid` gives the one minimiser of

    sum_i w_(y_i) CE(W z_i + b, y_i) / sum_i w_(y_i)  +  l2 / 2 * ||W||^2,     z = (x - mean) / sd

(class weights w as the MLP head's; mean and sd of each component over the labelled train vectors), found by
L-BFGS with a strong-Wolfe line search from the solution of the next larger penalty (the grid is walked from
the largest down). The penalty whose head scores best on `val` (`--select-metric`) is kept, its standardisation
folded into the weights, as an `MLPHead` without hidden layers: every reader of a probe (`predict.py`, the
cache, `evaluate.py`) takes it as it takes any probe. No randomness: the same vectors give the same head.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from utils.metrics import improves

# x3.16 apart; with 144 labelled epochs (1 % of the learning curve's) val chose 10 of a grid ending there
L2_GRID: tuple[float, ...] = (100.0, 30.0, 10.0, 3.0, 1.0, 0.3, 0.1, 0.03, 0.01, 0.003, 0.001)
# L-BFGS iterations per penalty at most (each: one pass over the vectors, plus line-search ones); the fits of the
# learning curve's cohort stopped at their tolerances after 30-100; a fit cut by the cap is flagged `converged` False
MAX_ITERATIONS = 500


@dataclass
class PenaltyFit:
    """One penalty's head: its val scores, the training objective it reached and the L-BFGS iterations used."""

    l2: float
    scores: dict[str, float]
    objective: float
    iterations: int
    state: dict[str, torch.Tensor]
    converged: bool = True  # False: L-BFGS stopped at its iteration cap, not at its tolerances


def standardisation(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (F,) and sd (F,) of each component; a constant component gets sd 1 (it then reads 0 everywhere)."""
    mean = features.mean(dim=0)
    sd = features.std(dim=0, unbiased=False)
    return mean, torch.where(sd > 1e-6 * sd.max().clamp_min(1e-12), sd, torch.ones_like(sd))


def fit_penalty(
    z: torch.Tensor,
    labels: torch.Tensor,
    weights: torch.Tensor | None,
    l2: float,
    start: tuple[torch.Tensor, torch.Tensor],
    max_iterations: int = MAX_ITERATIONS,
) -> tuple[torch.Tensor, torch.Tensor, float, int]:
    """The minimiser (W (C, F), b (C,)) of the penalised class-weighted cross-entropy on standardised vectors
    `z` (N, F), from `start`; with the objective reached and the L-BFGS iterations used."""
    weight = start[0].detach().clone().requires_grad_(True)
    bias = start[1].detach().clone().requires_grad_(True)
    optimizer = torch.optim.LBFGS(
        [weight, bias],
        lr=1.0,
        max_iter=max_iterations,
        history_size=20,
        tolerance_grad=1e-6,
        tolerance_change=1e-10,
        line_search_fn="strong_wolfe",
    )

    def objective() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(z @ weight.T + bias, labels, weight=weights) + 0.5 * l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(objective)
    iterations = int(optimizer.state[optimizer._params[0]].get("n_iter", 0))
    with torch.no_grad():
        reached = float(F.cross_entropy(z @ weight.T + bias, labels, weight=weights) + 0.5 * l2 * weight.pow(2).sum())
    return weight.detach(), bias.detach(), reached, iterations


def fit_logistic_head(
    head: nn.Module,
    features: torch.Tensor,
    labels: torch.Tensor,
    weights: torch.Tensor | None,
    score: Callable[[nn.Module], Mapping[str, float]],
    metric: str,
    mode: str,
    l2_grid: Sequence[float] = L2_GRID,
    report: Callable[[PenaltyFit], Any] | None = None,
) -> tuple[PenaltyFit, list[PenaltyFit]]:
    """Fit `head` (an `MLPHead` without hidden layers) on `features` (N, F) and `labels` (N,) (-1: unlabelled,
    dropped) for every penalty of `l2_grid`, largest first, scoring each with `score(head) -> {val_*: value}`;
    leaves the head with the weights of the penalty whose `metric` is best (`mode` "max" or "min"; a tie keeps
    the larger penalty) and returns that fit and every fit. `report` is called after each penalty."""
    linear = _only_linear(head)
    keep = labels >= 0
    x, y = features[keep].float(), labels[keep].long()
    if y.numel() < 2:
        raise ValueError(f"{y.numel()} labelled vector(s): the logistic head needs at least 2")
    mean, sd = standardisation(x)
    z = (x - mean) / sd
    n_classes = linear.out_features
    start = (torch.zeros(n_classes, z.shape[1]), torch.zeros(n_classes))
    fits: list[PenaltyFit] = []
    best: PenaltyFit | None = None
    for l2 in sorted({float(v) for v in l2_grid}, reverse=True):
        w, b, reached, iterations = fit_penalty(z, y, weights, l2, start)
        start = (w, b)
        with torch.no_grad():  # fold the standardisation in: W z + b = (W / sd) x + (b - W mean / sd)
            linear.weight.copy_(w / sd)  # fitted on the CPU; copied to wherever the head is scored
            linear.bias.copy_(b - (w / sd) @ mean)
        fit = PenaltyFit(
            l2,
            dict(score(head)),
            reached,
            iterations,
            {k: v.detach().clone() for k, v in head.state_dict().items()},
            converged=iterations < MAX_ITERATIONS,
        )
        fits.append(fit)
        if report is not None:
            report(fit)
        current = None if best is None else best.scores.get(metric)
        if best is None or improves(fit.scores.get(metric), current if _finite(current) else None, mode):
            best = fit
    if best is None:
        raise ValueError("l2_grid is empty: give at least one penalty")
    head.load_state_dict(best.state)
    return best, fits


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def selection_note(best: PenaltyFit, fits: Sequence[PenaltyFit], metric: str) -> str | None:
    """A warning about the penalty val chose, or None: no penalty gave a finite `metric` (the largest was kept),
    or the chosen one is at an end of a grid whose scores differ (a grid reaching beyond it may do better)."""
    values = [fit.scores.get(metric) for fit in fits]
    if not any(_finite(v) for v in values):
        return f"no penalty gave a finite {metric}; the largest ({fits[0].l2:g}) was kept"
    if len({v for v in values if _finite(v)}) < 2 or len(fits) < 2:  # one score for all: no end to speak of
        return None
    if best is fits[0] or best is fits[-1]:
        end = "largest" if best is fits[0] else "smallest"
        return (
            f"val chose the {end} penalty of --l2-grid ({best.l2:g}); a grid reaching beyond it may find a better one"
        )
    return None


def _only_linear(head: nn.Module) -> nn.Linear:
    """The one Linear layer of a head without hidden layers; ValueError for any other head."""
    layers = [m for m in head.modules() if not list(m.children())]
    if len(layers) != 1 or not isinstance(layers[0], nn.Linear):
        raise ValueError("the logistic head is one linear layer: give it an MLPHead without hidden layers")
    return layers[0]
