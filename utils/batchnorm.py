"""Bias-corrected BatchNorm running statistics for training from few steps.

PyTorch's BatchNorm updates its running mean / variance with momentum 0.1, so after k training steps the
statistics used in eval mode are still weighted 0.9^k towards their initial values (mean 0, variance 1). A model
trained for only tens of steps (the CPU demo, short pretraining, a randomly initialised deep encoder with about
200 BatchNorms) then behaves very differently in eval mode than in training: a randomly initialised SynthSleepNet
predicted one class for every eval-mode input. `debias_batchnorm` fixes the start of the average, as Adam's bias
correction does: the running statistics are the plain mean of the first 1 / momentum batches, then PyTorch's
usual exponential average. It is the `--debias-batchnorm` option of every training script (on by default,
utils/config.py): the script applies it to the model it builds, before `utils.engine.fit`; the engine itself
never touches a model's BatchNorms.
"""

from __future__ import annotations

from torch import nn


def _debiased_momentum(norm: nn.modules.batchnorm._BatchNorm, inputs: tuple) -> None:
    """Forward pre-hook of `debias_batchnorm`: momentum for the update this training forward makes."""
    if norm.training and norm.track_running_stats:
        norm.momentum = max(norm.base_momentum, 1.0 / (int(norm.num_batches_tracked) + 1))


def debias_batchnorm(module: nn.Module) -> int:
    """Bias-corrected running statistics for every BatchNorm inside `module`; returns how many were set up.

    Before each training-mode forward, momentum = max(m0, 1 / (n + 1)), n = batches tracked so far (m0 = the
    layer's momentum, 0.1 by default): the running mean / variance are the plain average of the first 1 / m0
    batches (no pull towards the initial mean 0, variance 1), then PyTorch's exponential average with m0.
    Layers with momentum None (cumulative average) or without running statistics are left alone; calling it
    twice changes nothing. The hook is not part of the state dict (checkpoints are unchanged). It acts only on
    layers in training mode, so the BatchNorms a model keeps in eval mode (frozen encoders) are unaffected.
    """
    count = 0
    for norm in module.modules():
        if not isinstance(norm, nn.modules.batchnorm._BatchNorm) or not norm.track_running_stats:
            continue
        if getattr(norm, "base_momentum", None) is None:
            if norm.momentum is None:
                continue
            norm.base_momentum = float(norm.momentum)
            norm.register_forward_pre_hook(_debiased_momentum)
        count += 1
    return count
