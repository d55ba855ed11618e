"""bf16 autocast on CPU is an opt-in of the training engine (--amp --amp-cpu), never a side effect of --amp."""

from __future__ import annotations

import torch

from utils.config import build_parser, parse_config
from utils.engine import autocast_context, cpu_amp


def _cfg(*flags: str):
    return parse_config(build_parser("cpu bf16"), ["--out", "unused", *flags], required=())


def test_amp_cpu_flag_is_an_explicit_bf16_opt_in():
    assert not cpu_amp(_cfg())
    assert not cpu_amp(_cfg("--amp"))  # --amp alone stays CUDA-only, as before
    assert not cpu_amp(_cfg("--amp-cpu"))  # needs --amp too
    assert not cpu_amp(_cfg("--amp", "--amp-cpu", "--amp-dtype", "fp16"))  # CPU autocast is bf16 only
    assert cpu_amp(_cfg("--amp", "--amp-cpu"))


def test_autocast_context_on_cpu_only_when_asked():
    cpu = torch.device("cpu")
    a, b = torch.randn(4, 8), torch.randn(8, 2)
    with autocast_context(cpu, True, "bf16"):
        assert (a @ b).dtype == torch.float32  # --amp without --amp-cpu: exact fp32 on CPU
    with autocast_context(cpu, True, "bf16", cpu=True):
        assert (a @ b).dtype == torch.bfloat16
    with autocast_context(cpu, True, "fp16", cpu=True):
        assert (a @ b).dtype == torch.float32
