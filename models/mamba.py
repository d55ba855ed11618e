"""Mamba2 temporal-context block: mamba-ssm's fused CUDA kernels when available, pure PyTorch otherwise.

`Mamba2` has the parameter names and shapes of `mamba_ssm.Mamba2` (in_proj, conv1d, dt_bias, A_log, D,
norm, out_proj), so one state_dict loads in both. At run time (`backend="auto"`) it calls mamba-ssm's fused
kernel when the package imports and the input is on CUDA, and otherwise the pure-PyTorch chunked SSD scan
(`ssd_chunked_scan`, the "ssd_minimal" algorithm of the Mamba2 paper). `backend="torch"` always uses the
pure-PyTorch path; `backend="fused"` (alias "cuda") demands the kernels and says how to install them.

Optional CUDA extra (Linux, NVIDIA GPU, a CUDA toolkit whose `nvcc --version` matches `torch.version.cuda`):

    pip install torch==2.13.0            # the PyPI wheel for Linux x86-64 is a CUDA build
    pip install packaging ninja wheel setuptools
    pip install -r requirements-cuda.txt --no-build-isolation

`--no-build-isolation` is required: both packages import torch in their setup.py and compile against the
torch already installed. A CPU install never needs them.

`ResidualMamba` is docs/models.md §3.3's temporal context: s = norm(x); y = s + Mamba2(s), plus a second Mamba2
over the reversed sequence with `direction="bidirectional"`.
`mamba2_recurrence_ref` is the slow step-by-step reference used by the tests and the benchmark.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

INSTALL_HINT = (
    "pip install packaging ninja wheel setuptools && pip install -r requirements-cuda.txt --no-build-isolation"
)
BACKENDS = ("auto", "torch", "fused", "cuda")  # "cuda" is an alias of "fused"
MAMBA_DEFAULTS = {
    "d_state": 16,
    "d_conv": 4,
    "expand": 2,
    "headdim": 64,
    "ngroups": 1,
}  # docs/models.md §3.3, d_model 512
DIRECTIONS = ("forward", "bidirectional")
_warned_cuda_fallback = False


@functools.lru_cache(maxsize=1)
def _fused_kernel() -> tuple[Callable | None, str]:
    """(mamba_split_conv1d_scan_combined, "") when mamba-ssm and causal-conv1d import, else (None, reason)."""
    try:
        import causal_conv1d  # noqa: F401  (the fused kernel calls its CUDA conv)
        from mamba_ssm.ops.triton.ssd_combined import mamba_split_conv1d_scan_combined
    except Exception as error:  # ImportError, or triton/CUDA errors raised at import time
        return None, f"{type(error).__name__}: {error}"
    return mamba_split_conv1d_scan_combined, ""


def fused_kernels_available() -> bool:
    """True when mamba-ssm's fused Mamba2 kernel (and causal-conv1d) can be imported."""
    return _fused_kernel()[0] is not None


class GatedRMSNorm(nn.Module):
    """mamba-ssm's `RMSNormGated`: RMS-normalise x·silu(z) (or normalise x, then gate) in groups of `group_size`.

    Parameter: `weight` (hidden_size,), initialised to 1; no bias. Computed in float32 (or float64), returned
    in the input dtype.
    """

    def __init__(
        self,
        hidden_size: int,
        eps: float = 1e-5,
        group_size: int | None = None,
        norm_before_gate: bool = False,
        device=None,
        dtype=None,
    ):
        super().__init__()
        self.eps = eps
        self.group_size = hidden_size if group_size is None else group_size
        if hidden_size % self.group_size:
            raise ValueError(
                f"GatedRMSNorm: hidden_size {hidden_size} is not a multiple of group_size {self.group_size}"
            )
        self.norm_before_gate = norm_before_gate
        self.weight = nn.Parameter(torch.ones(hidden_size, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        """x, z: (..., hidden_size) → (..., hidden_size) in x's dtype."""
        compute = torch.promote_types(x.dtype, torch.float32)
        h = x.to(compute)
        gate = F.silu(z.to(compute)) if z is not None else None
        if gate is not None and not self.norm_before_gate:
            h = h * gate
        grouped = h.unflatten(-1, (-1, self.group_size))  # (..., groups, group_size)
        h = (grouped * torch.rsqrt(grouped.square().mean(-1, keepdim=True) + self.eps)).flatten(-2)
        h = h * self.weight.to(compute)
        if gate is not None and self.norm_before_gate:
            h = h * gate
        return h.to(x.dtype)


def ssd_chunked_scan(
    x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor, chunk_size: int = 64
) -> torch.Tensor:
    """Mamba2 SSD scan (no D skip, zero initial state) by chunks: matmuls inside a chunk, a recurrence across.

    For each head h with group g(h) = h // (nheads / ngroups), state S (headdim, d_state):
        S_t = exp(dt_t·A_h)·S_{t-1} + dt_t · x_t ⊗ B_t,   y_t = S_t · C_t
    Args:
        x: (batch, T, nheads, headdim).  dt: (batch, T, nheads), step sizes > 0 (after softplus).
        A: (nheads,), negative decay rates.  B, C: (batch, T, ngroups, d_state).
        chunk_size: longest chunk Q. T ≤ Q is one chunk of matmuls (no padding); longer sequences are split
            into ceil(T/Q) equal chunks (the last padded by < ceil(T/Q) steps), with memory O(batch·nheads·T·Q)
            and a Python loop over the chunks.
    Returns:
        y: (batch, T, nheads, headdim), in the promoted dtype of the inputs (at least float32).
    """
    batch, seqlen, nheads, headdim = x.shape
    ngroups, d_state = B.shape[-2:]
    heads_per_group = nheads // ngroups
    compute = torch.promote_types(x.dtype, torch.float32)
    x, dt, A, B, C = (t.to(compute) for t in (x, dt, A, B, C))
    n_chunks = max(1, math.ceil(seqlen / chunk_size))
    chunk = max(1, math.ceil(seqlen / n_chunks))  # ≤ chunk_size, balanced so that padding is < n_chunks steps
    pad = n_chunks * chunk - seqlen
    if pad:  # zero dt and x: padded steps neither decay nor write the state; their outputs are dropped
        x = F.pad(x, (0, 0, 0, 0, 0, pad))
        dt = F.pad(dt, (0, 0, 0, pad))
        B = F.pad(B, (0, 0, 0, 0, 0, pad))
        C = F.pad(C, (0, 0, 0, 0, 0, pad))
    shape = (batch, n_chunks, chunk, ngroups, heads_per_group)
    # Layout inside the scan: (batch, chunk index c, group g, head-in-group r, time-in-chunk l, ...)
    dt = dt.reshape(shape).permute(0, 1, 3, 4, 2)  # (b, c, g, r, l)
    x_dt = x.reshape(*shape, headdim).permute(0, 1, 3, 4, 2, 5) * dt.unsqueeze(-1)  # (b, c, g, r, l, p)
    B = B.reshape(batch, n_chunks, chunk, ngroups, d_state).permute(0, 1, 3, 2, 4)  # (b, c, g, l, n)
    C = C.reshape(batch, n_chunks, chunk, ngroups, d_state).permute(0, 1, 3, 2, 4)  # (b, c, g, l, n)
    log_decay = torch.cumsum(dt * A.reshape(ngroups, heads_per_group, 1), dim=-1)  # (b, c, g, r, l), ≤ 0

    # 1. Within chunks: y_t = Σ_{s≤t} (C_t·B_s) · exp(Σ_{s<k≤t} dt_k·A) · dt_s·x_s
    causal = torch.ones(chunk, chunk, dtype=torch.bool, device=x.device).tril()  # (l, s)
    segment = (log_decay.unsqueeze(-1) - log_decay.unsqueeze(-2)).masked_fill(~causal, -math.inf)
    scores = torch.matmul(C, B.transpose(-1, -2)).unsqueeze(3)  # (b, c, g, 1, l, s)
    y = torch.matmul(scores * torch.exp(segment), x_dt)  # (b, c, g, r, l, p)

    if n_chunks > 1:
        # 2. State written by each chunk, decayed to its end: Σ_s exp(A·(end - s)) · B_s ⊗ dt_s·x_s
        to_end = torch.exp(log_decay[..., -1:] - log_decay).unsqueeze(-1)  # (b, c, g, r, l, 1)
        chunk_states = torch.matmul(B.transpose(-1, -2).unsqueeze(3), x_dt * to_end)  # (b, c, g, r, n, p)
        chunk_decay = torch.exp(log_decay[..., -1])[..., None, None]  # (b, c, g, r, 1, 1)
        # 3. Across chunks: the state entering chunk k (sequential, O(T/Q) steps)
        entering = [torch.zeros_like(chunk_states[:, 0])]  # each (b, g, r, n, p)
        for k in range(1, n_chunks):
            entering.append(entering[-1] * chunk_decay[:, k - 1] + chunk_states[:, k - 1])
        entering = torch.stack(entering, dim=1)  # (b, c, g, r, n, p)
        # 4. Contribution of the entering state: exp(A·(t - start)) · C_t · S_start
        y = y + torch.matmul(C.unsqueeze(3), entering) * torch.exp(log_decay).unsqueeze(-1)

    y = y.permute(0, 1, 4, 2, 3, 5).reshape(batch, n_chunks * chunk, nheads, headdim)  # (b, T_pad, h, p)
    return y[:, :seqlen]


def causal_depthwise_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Causal depthwise conv along time, = nn.Conv1d(groups=channels, padding=k-1) truncated to T.

    x: (batch, T, channels); weight: (channels, 1, k) as in nn.Conv1d; bias: (channels,) or None.
    Returns (batch, T, channels). Written as k shifted multiply-adds: on CPU its backward is many times
    faster than the depthwise convolution_backward for the short kernels Mamba uses (k = 4).
    """
    seqlen, width = x.shape[1], weight.shape[-1]
    padded = F.pad(x, (0, 0, width - 1, 0))  # (batch, T + k - 1, channels), zeros before t = 0
    taps = weight[:, 0, :].t()  # (k, channels); tap k-1 multiplies the current step
    out = padded[:, width - 1 :] * taps[width - 1]
    for k in range(width - 1):
        out = out + padded[:, k : k + seqlen] * taps[k]
    return out if bias is None else out + bias


class Mamba2(nn.Module):
    """Mamba2 mixer with mamba-ssm's `Mamba2` parameters; input and output (batch, seqlen, d_model).

    Arguments mirror `mamba_ssm.Mamba2` (same defaults; d_ssm, D_has_hdim, rmsnorm=False and tensor parallelism
    are not supported). Extra: `backend` ("auto" | "torch" | "fused"/"cuda", see the module docstring) and
    `torch_chunk_size`, the chunk length of the pure-PyTorch scan (`chunk_size` is the fused kernel's).
    Initialisation as mamba-ssm: dt log-uniform in [dt_min, dt_max] (floored at dt_init_floor) stored through
    the inverse softplus in dt_bias; A_log = log U[A_init_range]; D = 1; norm weight = 1; PyTorch's default
    Linear/Conv1d init (conv weights U[-conv_init, conv_init] when conv_init is given).
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 128,
        d_conv: int = 4,
        conv_init: float | None = None,
        expand: int = 2,
        headdim: int = 64,
        ngroups: int = 1,
        A_init_range=(1, 16),
        norm_before_gate: bool = False,
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
        dt_limit=(0.0, float("inf")),
        bias: bool = False,
        conv_bias: bool = True,
        chunk_size: int = 256,
        torch_chunk_size: int = 64,
        backend: str = "auto",
        layer_idx: int | None = None,
        device=None,
        dtype=None,
    ):
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.d_model, self.d_state, self.d_conv, self.expand = d_model, d_state, d_conv, expand
        self.d_inner = expand * d_model
        self.headdim, self.ngroups = headdim, ngroups
        if self.d_inner % headdim:
            raise ValueError(
                f"Mamba2: d_inner = expand*d_model = {self.d_inner} is not a multiple of headdim {headdim}"
            )
        self.nheads = self.d_inner // headdim
        if self.nheads % ngroups:
            raise ValueError(f"Mamba2: nheads = {self.nheads} is not a multiple of ngroups {ngroups}")
        if not (A_init_range[0] > 0 and A_init_range[1] >= A_init_range[0]):
            raise ValueError(f"Mamba2: A_init_range must satisfy 0 < low <= high, got {A_init_range}")
        if chunk_size < 1 or torch_chunk_size < 1:
            raise ValueError(f"Mamba2: chunk sizes must be >= 1, got {chunk_size}, {torch_chunk_size}")
        self.norm_before_gate = norm_before_gate
        self.dt_limit = tuple(dt_limit)
        self.chunk_size, self.torch_chunk_size = chunk_size, torch_chunk_size
        self.layer_idx = layer_idx
        self.backend = backend

        # in_proj output order: [z (d_inner), x (d_inner), B (ngroups·d_state), C (ngroups·d_state), dt (nheads)]
        d_in_proj = 2 * self.d_inner + 2 * ngroups * d_state + self.nheads
        self.in_proj = nn.Linear(d_model, d_in_proj, bias=bias, **factory)
        conv_dim = self.d_inner + 2 * ngroups * d_state  # causal depthwise conv over [x, B, C]
        self.conv1d = nn.Conv1d(
            conv_dim, conv_dim, kernel_size=d_conv, groups=conv_dim, padding=d_conv - 1, bias=conv_bias, **factory
        )
        if conv_init is not None:
            nn.init.uniform_(self.conv1d.weight, -conv_init, conv_init)

        dt = torch.exp(
            torch.rand(self.nheads, **factory) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        )  # (nheads,) step sizes, log-uniform in [dt_min, dt_max]
        dt = torch.clamp(dt, min=dt_init_floor)
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
        self.dt_bias._no_weight_decay = True
        A = torch.empty(self.nheads, dtype=torch.float32, device=device).uniform_(*A_init_range)
        self.A_log = nn.Parameter(torch.log(A).to(dtype=dtype))  # A = -exp(A_log), (nheads,)
        self.A_log._no_weight_decay = True
        self.D = nn.Parameter(torch.ones(self.nheads, device=device))  # skip connection, (nheads,)
        self.D._no_weight_decay = True
        self.norm = GatedRMSNorm(
            self.d_inner, eps=1e-5, group_size=self.d_inner // ngroups, norm_before_gate=norm_before_gate, **factory
        )
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias, **factory)

    @property
    def backend(self) -> str:
        return self._backend

    @backend.setter
    def backend(self, value: str) -> None:
        if value not in BACKENDS:
            raise ValueError(f"Mamba2: backend must be one of {BACKENDS}, got {value!r}")
        self._backend = "fused" if value == "cuda" else value

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, d_state={self.d_state}, d_conv={self.d_conv}, expand={self.expand}, "
            f"headdim={self.headdim}, ngroups={self.ngroups}, backend={self.backend!r}"
        )

    def uses_fused(self, u: torch.Tensor) -> bool:
        """Whether forward(u) runs mamba-ssm's fused kernel; raises if backend="fused" cannot."""
        if self.backend == "torch" or (self.backend == "auto" and not u.is_cuda):
            return False
        kernel, reason = _fused_kernel()
        if self.backend == "fused":
            if kernel is None:
                raise ImportError(
                    f"Mamba2(backend='fused') needs the optional CUDA extra mamba-ssm + causal-conv1d, "
                    f"which failed to import ({reason}). Install it on a CUDA machine with: "
                    f"{INSTALL_HINT}"
                )
            if not u.is_cuda:
                raise RuntimeError(
                    f"Mamba2(backend='fused') needs CUDA tensors, got input on {u.device}; "
                    f"use backend='auto' or 'torch' on CPU"
                )
            return True
        if kernel is None:  # auto on CUDA without the extra: say so once, then run the pure-PyTorch scan
            global _warned_cuda_fallback
            if not _warned_cuda_fallback:
                _warned_cuda_fallback = True
                warnings.warn(
                    f"Mamba2: input is on CUDA but mamba-ssm's kernels are unavailable ({reason}); "
                    f"using the slower pure-PyTorch scan. Install them with: {INSTALL_HINT}"
                )
        return kernel is not None

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """u: (batch, seqlen, d_model) → (batch, seqlen, d_model). Causal along seqlen."""
        if u.dim() != 3 or u.shape[-1] != self.d_model:
            raise ValueError(f"Mamba2 expects input (batch, seqlen, {self.d_model}), got {tuple(u.shape)}")
        if self.uses_fused(u):
            return self._forward_fused(u)
        return self._forward_torch(u)

    def _forward_fused(self, u: torch.Tensor) -> torch.Tensor:
        """mamba-ssm's mem-efficient kernel (conv + scan + gated norm, as mamba_ssm.Mamba2.forward calls it).

        in_proj and out_proj are called as modules (mamba-ssm fuses out_proj's weight into the kernel), so
        hooks or adapters on them act in both backends.
        """
        kernel = _fused_kernel()[0]
        limit = {} if self.dt_limit == (0.0, float("inf")) else {"dt_limit": self.dt_limit}
        y = kernel(
            self.in_proj(u),
            self.conv1d.weight.squeeze(1),
            self.conv1d.bias,
            self.dt_bias,
            -torch.exp(self.A_log.float()),
            D=self.D,
            chunk_size=self.chunk_size,
            activation="silu",
            rmsnorm_weight=self.norm.weight,
            rmsnorm_eps=self.norm.eps,
            outproj_weight=None,
            headdim=self.headdim,
            ngroups=self.ngroups,
            norm_before_gate=self.norm_before_gate,
            **limit,
        )
        return self.out_proj(y)  # y: (batch, seqlen, d_inner)

    def _forward_torch(self, u: torch.Tensor) -> torch.Tensor:
        batch, seqlen, _ = u.shape
        zxbcdt = self.in_proj(u)  # (b, T, d_in_proj)
        xbc_dim = self.d_inner + 2 * self.ngroups * self.d_state
        z, xbc, dt = torch.split(zxbcdt, [self.d_inner, xbc_dim, self.nheads], dim=-1)
        xbc = F.silu(causal_depthwise_conv(xbc, self.conv1d.weight, self.conv1d.bias))  # (b, T, conv_dim)
        x, B, C = torch.split(xbc, [self.d_inner, self.ngroups * self.d_state, self.ngroups * self.d_state], dim=-1)
        compute = torch.promote_types(u.dtype, torch.float32)
        dt = F.softplus(dt.to(compute) + self.dt_bias.to(compute))  # (b, T, nheads) step sizes > 0
        if self.dt_limit != (0.0, float("inf")):
            dt = dt.clamp(*self.dt_limit)
        A = -torch.exp(self.A_log.to(compute))  # (nheads,)
        x = x.reshape(batch, seqlen, self.nheads, self.headdim)  # (b, T, h, p)
        y = ssd_chunked_scan(
            x,
            dt,
            A,
            B.reshape(batch, seqlen, self.ngroups, self.d_state),
            C.reshape(batch, seqlen, self.ngroups, self.d_state),
            self.torch_chunk_size,
        )
        y = y + x.to(y.dtype) * self.D.to(y.dtype)[:, None]  # D skip, (b, T, h, p)
        y = self.norm(y.reshape(batch, seqlen, self.d_inner), z)  # (b, T, d_inner), gated RMSNorm
        return self.out_proj(y.to(u.dtype))


def mamba2_recurrence_ref(block: Mamba2, u: torch.Tensor) -> torch.Tensor:
    """SLOW reference: `block`'s forward computed one time step at a time, as a plain recurrence.

    Shares only the parameters with `Mamba2._forward_torch`: after the position-wise in_proj, each step runs
    the causal conv as a rolling window of the last d_conv inputs, updates the SSM state
    (batch, nheads, headdim, d_state), and applies the gated RMSNorm written out here; out_proj is applied
    position-wise at the end. For tests and benchmarks only; cost O(T) Python steps.
    u: (batch, seqlen, d_model) → (batch, seqlen, d_model).
    """
    batch, seqlen, _ = u.shape
    d_inner, nheads, headdim = block.d_inner, block.nheads, block.headdim
    ngroups, d_state = block.ngroups, block.d_state
    conv_weight = block.conv1d.weight[:, 0, :]  # (conv_dim, d_conv), last tap multiplies the current input
    conv_bias = block.conv1d.bias
    A = -torch.exp(block.A_log)  # (nheads,)
    window = u.new_zeros(batch, conv_weight.shape[0], block.d_conv)  # last d_conv conv inputs
    state = u.new_zeros(batch, nheads, headdim, d_state)
    projected = F.linear(u, block.in_proj.weight, block.in_proj.bias)  # (b, T, d_in_proj), position-wise
    outputs = []
    for t in range(seqlen):
        zxbcdt = projected[:, t]  # (b, d_in_proj)
        z, xbc, dt = zxbcdt[:, :d_inner], zxbcdt[:, d_inner:-nheads], zxbcdt[:, -nheads:]
        window = torch.cat([window[:, :, 1:], xbc.unsqueeze(-1)], dim=-1)
        xbc = (window * conv_weight).sum(-1)
        if conv_bias is not None:
            xbc = xbc + conv_bias
        xbc = xbc * torch.sigmoid(xbc)  # silu
        x = xbc[:, :d_inner].reshape(batch, nheads, headdim)
        B = xbc[:, d_inner : d_inner + ngroups * d_state].reshape(batch, ngroups, d_state)
        C = xbc[:, d_inner + ngroups * d_state :].reshape(batch, ngroups, d_state)
        # (b, nheads, d_state): head h reads group h // (nheads / ngroups)
        B = B.repeat_interleave(nheads // ngroups, dim=1)
        C = C.repeat_interleave(nheads // ngroups, dim=1)
        dt = torch.logaddexp(dt + block.dt_bias, dt.new_zeros(()))  # softplus, (b, nheads)
        low, high = block.dt_limit
        dt = torch.minimum(torch.maximum(dt, dt.new_tensor(low)), dt.new_tensor(high))
        state = state * torch.exp(dt * A)[:, :, None, None] + (dt[:, :, None] * x)[..., None] * B[:, :, None, :]
        y = (state * C[:, :, None, :]).sum(-1) + block.D[:, None] * x  # (b, nheads, headdim)
        y = y.reshape(batch, d_inner)
        gate = z * torch.sigmoid(z)
        if not block.norm_before_gate:
            y = y * gate
        groups = y.reshape(batch, ngroups, d_inner // ngroups)
        y = (groups / torch.sqrt((groups**2).mean(-1, keepdim=True) + block.norm.eps)).reshape(batch, d_inner)
        y = y * block.norm.weight
        if block.norm_before_gate:
            y = y * gate
        outputs.append(y)
    return F.linear(torch.stack(outputs, dim=1), block.out_proj.weight, block.out_proj.bias)  # position-wise


def reversal_index(valid: torch.Tensor) -> torch.Tensor:
    """(batch, seq_len) int64 index that reverses each row's valid prefix in time and leaves the positions after
    it (padding at a window's end) in place, so a backward scan meets padding only after every real position.
    `valid` (batch, seq_len) bool must be a prefix mask (True, ..., True, False, ...). The index is its own
    inverse."""
    steps = torch.arange(valid.shape[1], device=valid.device).unsqueeze(0)  # (1, T)
    lengths = valid.sum(dim=1, keepdim=True)  # (B, 1)
    if not torch.equal(valid.bool(), steps < lengths):
        raise ValueError("reversal_index: `valid` must mark a prefix of each row (padding only at the end)")
    return torch.where(steps < lengths, lengths - 1 - steps, steps)  # (B, T)


def reverse_valid(x: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
    """x (batch, seq_len, ...) with each row's valid prefix reversed in time by `index` (`reversal_index` of the
    valid mask); None: whole rows reversed. Applying it twice gives x back."""
    if index is None:
        return x.flip(1)
    return x.gather(1, index.reshape(*index.shape, *([1] * (x.dim() - 2))).expand_as(x))


class ResidualMamba(nn.Module):
    """docs/models.md §3.3 temporal context over per-epoch vectors: s = norm(x); y = s + Mamba2(s), and with
    `direction="bidirectional"` (the default of fine-tuning) + R(Mamba2_b(R(s))), where R reverses time and
    Mamba2_b is a second block with its own weights: each epoch then sees the epochs after it as well as those
    before, as a scorer does. `direction="forward"` is the published causal context.

    The residual is around the normalised sequence, as in the published fine-tuning model. `norm="layer"`
    (default) is a per-vector LayerNorm, independent of the batch; `norm="batch"` is the published BatchNorm1d
    (statistics over batch and positions). Input and output (batch, seq_len, d_model). Mamba2 gets
    MAMBA_DEFAULTS (d_state 16, d_conv 4, expand 2, headdim 64, ngroups 1) updated by `mamba_kwargs`.
    """

    def __init__(
        self, d_model: int = 512, norm: str = "layer", backend: str = "auto", direction: str = "forward", **mamba_kwargs
    ):
        super().__init__()
        if direction not in DIRECTIONS:
            raise ValueError(f"ResidualMamba: direction must be one of {DIRECTIONS}, got {direction!r}")
        if norm == "layer":
            self.norm = nn.LayerNorm(d_model)
        elif norm == "batch":
            self.norm = nn.BatchNorm1d(d_model)
        else:
            raise ValueError(f"ResidualMamba: norm must be 'layer' or 'batch', got {norm!r}")
        self.direction = direction
        self.mamba = Mamba2(d_model, backend=backend, **{**MAMBA_DEFAULTS, **mamba_kwargs})
        self.mamba_backward = (
            Mamba2(d_model, backend=backend, **{**MAMBA_DEFAULTS, **mamba_kwargs})
            if direction == "bidirectional"
            else None
        )

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """x: (batch, seq_len, d_model) per-epoch vectors in time order → (batch, seq_len, d_model).

        `valid` (batch, seq_len) bool marks the real positions of windows padded at the end (None: all real). The
        forward scan is causal, so padding never reaches a real position through it; the backward scan reverses
        only each row's real prefix (`reverse_valid`), so not through it either. (With `norm="batch"` in training
        mode, padded positions still enter the batch statistics.)"""
        if x.dim() != 3:
            raise ValueError(f"ResidualMamba expects (batch, seq_len, d_model), got {tuple(x.shape)}")
        if isinstance(self.norm, nn.BatchNorm1d):
            s = self.norm(x.transpose(1, 2)).transpose(1, 2)  # BatchNorm1d wants (batch, d_model, seq_len)
        else:
            s = self.norm(x)
        y = s + self.mamba(s)
        if self.mamba_backward is not None:
            index = None if valid is None else reversal_index(valid)  # validated once, used both ways
            y = y + reverse_valid(self.mamba_backward(reverse_valid(s, index)), index)
        return y
