"""The temporal head of the token event methods: per-second vectors of a window of consecutive epochs → per-second
logits of the five RESPIRATORY_CLASSES, and its training loop (budget in optimizer steps, selection on `val`).

`SecondsHead`: standardise (train statistics) → Linear to `width` → `depth` residual blocks of
LayerNorm → dilated 1-D convolution (kernel 5, dilation 1, 2, 4, ...) → GELU → dropout, over seconds → Linear to 5
classes. Not causal: the SpO2 drop that marks an event comes 20-30 s after it, so a second needs the seconds
AFTER it as well as before. Receptive field 1 + 4 x (2^depth - 1) s: 125 s at depth 5 (+-62 s). It is
fully convolutional, so a whole night is classified in one pass (the training windows only bound the memory).

`SecondsClassifier` wraps a trained head with the scikit-learn `classes_` / `predict_proba` pair the
`EventDetector` calls, so decoding, the hypopnea qualifier and every metric take the same code path as the
features method.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dataset.event_targets import RESPIRATORY_CLASSES
from utils.config import UsageError


class SecondsHead(nn.Module):
    """(B, S, in_dim) per-second vectors → (B, S, n_classes) logits (module docstring)."""

    def __init__(
        self,
        in_dim: int,
        n_classes: int = len(RESPIRATORY_CLASSES),
        width: int = 64,
        depth: int = 5,
        kernel: int = 5,
        dropout: float = 0.1,
    ):
        super().__init__()
        if in_dim < 1 or width < 1 or depth < 0 or kernel < 1 or kernel % 2 == 0:
            raise ValueError(
                f"SecondsHead: need in_dim, width >= 1, depth >= 0 and an odd kernel, got {in_dim}, "
                f"{width}, {depth}, {kernel}"
            )
        self.config = {
            "in_dim": int(in_dim),
            "n_classes": int(n_classes),
            "width": int(width),
            "depth": int(depth),
            "kernel": int(kernel),
            "dropout": float(dropout),
        }
        self.register_buffer("mean", torch.zeros(in_dim))
        self.register_buffer("scale", torch.ones(in_dim))
        self.embed = nn.Linear(in_dim, width)
        self.norms = nn.ModuleList(nn.LayerNorm(width) for _ in range(depth))
        self.convs = nn.ModuleList(
            nn.Conv1d(width, width, kernel, dilation=2**i, padding=(kernel // 2) * 2**i) for i in range(depth)
        )
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(width, n_classes)

    @property
    def receptive_field_s(self) -> int:
        return 1 + (self.config["kernel"] - 1) * (2 ** self.config["depth"] - 1)

    def set_statistics(self, vectors: np.ndarray) -> None:
        """Standardise inputs by the mean and standard deviation of `vectors` (N, in_dim) (train seconds)."""
        mean = vectors.mean(axis=0)
        std = vectors.std(axis=0)
        self.mean.copy_(torch.from_numpy(mean.astype(np.float32)))
        self.scale.copy_(torch.from_numpy(np.where(std > 1e-6, 1.0 / np.maximum(std, 1e-6), 1.0).astype(np.float32)))

    def forward(self, vectors: torch.Tensor) -> torch.Tensor:
        x = self.embed((vectors - self.mean) * self.scale)  # (B, S, W)
        for norm, conv in zip(self.norms, self.convs):
            x = x + self.dropout(F.gelu(conv(norm(x).transpose(1, 2)).transpose(1, 2)))  # (B, S, W)
        return self.out(x)  # (B, S, C)


class SecondsClassifier:
    """A trained per-second model as the EventDetector's classifier: `predict_proba((n_seconds, D))` runs the whole
    night through `model` (eval mode, CPU) → (n_seconds, 5) probabilities; `classes_` = every class."""

    def __init__(self, model: nn.Module):
        self.model = model.cpu().eval()
        self.classes_ = np.arange(len(RESPIRATORY_CLASSES))

    @torch.no_grad()
    def predict_proba(self, vectors: np.ndarray) -> np.ndarray:
        x = torch.as_tensor(np.asarray(vectors, dtype=np.float32))[None]  # (1, n_seconds, D)
        return self.model(x)[0].float().softmax(dim=-1).double().numpy()  # (n_seconds, 5)


# ---------------------------------------------------------------------------------------- training
@dataclass
class TrainNight:
    """One `train` night as the window sampler reads it: per-second classes with -1 where unlabelled (epochs not
    drawn by --label-fraction, seconds beyond the scored signal)."""

    n_seconds: int
    labels: np.ndarray  # (n_seconds,) int64


@dataclass
class TrainResult:
    best_step: int
    best_score: float
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0


def window_starts_s(
    nights: Sequence[TrainNight], window_s: int, batch: int, rng: np.random.Generator, align: int = 1
) -> list[tuple[int, int]]:
    """`batch` (night index, first second) pairs: nights drawn in proportion to their length, then a start second
    uniformly among the multiples of `align` in [0, n_seconds - window_s] (0 for a night shorter than the window;
    align 30: windows of whole epochs)."""
    lengths = np.asarray([n.n_seconds for n in nights], dtype=np.float64)
    picks = rng.choice(len(nights), size=batch, p=lengths / lengths.sum())
    return [(int(i), align * int(rng.integers(0, max(nights[i].n_seconds - window_s, 0) // align + 1))) for i in picks]


def window_labels(nights: Sequence[TrainNight], starts: Sequence[tuple[int, int]], window_s: int) -> torch.Tensor:
    """(B, window_s) int64 classes of the windows, -1 where unlabelled or past a night's end."""
    out = np.full((len(starts), window_s), -1, dtype=np.int64)
    for b, (i, first) in enumerate(starts):
        part = nights[i].labels[first : first + window_s]
        out[b, : part.size] = part
    return torch.from_numpy(out)


def lr_at(step: int, steps: int, lr: float, warmup: int) -> float:
    """Linear warmup over `warmup` steps, then cosine to 10 % of `lr` at `steps`."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(steps - warmup, 1)
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


MAX_DRAWS = 1000  # windows drawn for one step at most before the labels are taken to be too few to train on


def labelled_windows(
    nights: Sequence[TrainNight], window_s: int, batch: int, rng: np.random.Generator, align: int = 1
) -> tuple[Any, torch.Tensor]:
    """Window starts of one step and their labels (B, S), drawn again until some second is labelled (with a low
    --label-fraction most seconds are not), so every step of the budget is an update and evaluations fall
    where they are due. UsageError when `MAX_DRAWS` draws hold no labelled second."""
    for _ in range(MAX_DRAWS):
        starts = window_starts_s(nights, window_s, batch, rng, align)
        labels = window_labels(nights, starts, window_s)
        if (labels >= 0).any():
            return starts, labels
    raise UsageError(
        f"no labelled second in {MAX_DRAWS} draws of {batch} windows of {window_s} s: the training nights hold "
        "too few labels (raise --label-fraction)"
    )


def train_steps(
    model: nn.Module,
    nights: Sequence[TrainNight],
    batch_inputs: Callable[[Sequence[tuple[int, int]]], Any],
    weights: torch.Tensor | None,
    evaluate: Callable[[nn.Module], float],
    *,
    steps: int,
    batch: int,
    window_s: int,
    lr: float,
    weight_decay: float,
    eval_every: int,
    seed: int,
    device: torch.device,
    align: int = 1,
    log: Callable[[str], None] = print,
) -> TrainResult:
    """Train `model` for `steps` optimizer steps on random windows, score it with `evaluate(model) -> val score`
    (eval mode, no gradients; higher is better) every `eval_every` steps and at the end, and leave the BEST
    weights in `model` (ties: the earlier step). `batch_inputs(starts)` gives the model's input for the windows
    (e.g. cached vectors (B, window_s, D)); its output is (B, window_s, C) logits."""
    started = time.monotonic()
    rng = np.random.default_rng([seed, 7])
    torch.manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    warmup = max(1, min(100, steps // 10))
    weight = None if weights is None else weights.to(device)
    result, best_state, running = TrainResult(-1, -math.inf), None, []
    for step in range(steps):
        model.train()
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, steps, lr, warmup)
        starts, labels = labelled_windows(nights, window_s, batch, rng, align)
        labels = labels.to(device)  # (B, S)
        logits = model(batch_inputs(starts))  # (B, S, C)
        loss = F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1), weight=weight, ignore_index=-1
        )
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite training loss at step {step + 1}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(params, 3.0)
        optimizer.step()
        running.append(loss.item())
        if (step + 1) % eval_every == 0 or step + 1 == steps:
            model.eval()
            with torch.no_grad():
                score = float(evaluate(model))
            record = {
                "step": step + 1,
                "train_loss": float(np.mean(running)),
                "val_score": score,
                "seconds": round(time.monotonic() - started, 1),
            }
            result.history.append(record)
            running = []
            log(
                f"step {step + 1}/{steps}: train loss {record['train_loss']:.4f}, val mean event F1 {score:.3f} "
                f"({record['seconds']:.0f} s)"
            )
            if math.isfinite(score) and score > result.best_score:
                result.best_step, result.best_score = step + 1, score
                best_state = copy.deepcopy(model.state_dict())
    if best_state is not None:
        model.load_state_dict(best_state)
    else:
        result.best_step = steps
    model.eval()
    result.seconds = time.monotonic() - started
    return result
