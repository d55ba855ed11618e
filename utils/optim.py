"""Optimisation rules of the training loop (docs/training.md §4): the linear lr scaling rule, the AdamW parameter
groups (no decay on biases, norms and tokens) and the linear-warmup + cosine schedule per optimizer step."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from torch import nn

NO_DECAY_NAME_PARTS = ("token", "pos_embed", "modality_embed")  # matched in a parameter's own (last) name
REFERENCE_BATCH = 256  # lr = base_lr x effective_batch / REFERENCE_BATCH


def scaled_lr(base_lr: float, effective_batch: int) -> float:
    """The linear scaling rule: base_lr x effective_batch / 256."""
    return base_lr * effective_batch / REFERENCE_BATCH


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two AdamW groups over trainable parameters: decayed weights, and undecayed biases / norm scales / 1-d
    parameters / embedding tables / tokens and positions (plus the names `model.no_weight_decay()` returns)."""
    skip = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    embedding_params = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        own_name = name.rsplit(".", 1)[-1].lower()
        if (
            param.ndim <= 1
            or name in skip
            or id(param) in embedding_params
            or any(part in own_name for part in NO_DECAY_NAME_PARTS)
        ):
            no_decay.append(param)
        else:
            decay.append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def warmup_cosine(warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0) -> Callable[[int], float]:
    """LambdaLR factor for the update after `step` optimizer steps: linear warmup (step + 1) / warmup, then a
    cosine from 1 to `min_lr_ratio` at `total_steps`. A plain function, so a resumed run follows the schedule
    of its own config."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor
