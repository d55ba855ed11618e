"""models/mamba.py: the chunked pure-PyTorch Mamba2 against a step-by-step float64 recurrence, causality,
mamba-ssm's parameter table, backend selection, ResidualMamba, and (GPU only) mamba-ssm's fused kernels."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from models import mamba
from models.mamba import (
    GatedRMSNorm,
    Mamba2,
    ResidualMamba,
    mamba2_recurrence_ref,
    reversal_index,
    reverse_valid,
    ssd_chunked_scan,
)

# mamba_ssm.Mamba2(d_model=512, d_state=16, d_conv=4, expand=2, headdim=64, ngroups=1).state_dict(), in order
# (mamba_ssm/modules/mamba2.py, v2.3.2.post1): d_inner 1024, nheads 16,
# in_proj 2*1024 + 2*1*16 + 16 = 2096 outputs, conv over 1024 + 2*16 = 1056 channels.
MAMBA_SSM_MAMBA2_512 = [
    ("dt_bias", (16,)),
    ("A_log", (16,)),
    ("D", (16,)),
    ("in_proj.weight", (2096, 512)),
    ("conv1d.weight", (1056, 1, 4)),
    ("conv1d.bias", (1056,)),
    ("norm.weight", (1024,)),
    ("out_proj.weight", (512, 1024)),
]
MAMBA_CONFIG = dict(d_model=512, d_state=16, d_conv=4, expand=2, headdim=64, ngroups=1)
SMALL = dict(d_model=12, d_state=5, d_conv=4, expand=2, headdim=6, ngroups=2)  # d_inner 24, 4 heads, 2 groups


def randomized(block: Mamba2, seed: int = 0, dt_shift: float = 0.0) -> Mamba2:
    """The block in float64 with every parameter moved off its init (D, norm weight, biases all matter)."""
    block = block.double()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in block.named_parameters():
            param.add_(0.3 * torch.randn(param.shape, generator=generator, dtype=param.dtype))
        block.dt_bias.add_(dt_shift)
    return block


def output_and_grads(fn, block: Mamba2, u: torch.Tensor, weights: torch.Tensor):
    """fn(block, u) and d(Σ weights·out)/d(u, every parameter)."""
    u = u.clone().requires_grad_(True)
    out = fn(block, u)
    params = [p for _, p in block.named_parameters()]
    grads = torch.autograd.grad((out * weights).sum(), [u, *params])
    return out.detach(), grads


def chunked(block, u):
    return block(u)


def assert_matches_recurrence(block: Mamba2, u: torch.Tensor, rtol=1e-9, atol=1e-10):
    weights = torch.randn(u.shape[0], u.shape[1], block.d_model, dtype=u.dtype)
    out, grads = output_and_grads(chunked, block, u, weights)
    out_ref, grads_ref = output_and_grads(mamba2_recurrence_ref, block, u, weights)
    torch.testing.assert_close(out, out_ref, rtol=rtol, atol=atol)
    names = ["input"] + [name for name, _ in block.named_parameters()]
    for name, grad, grad_ref in zip(names, grads, grads_ref):
        torch.testing.assert_close(grad, grad_ref, rtol=rtol, atol=atol, msg=lambda m: f"grad of {name}: {m}")


def test_state_dict_keys_and_shapes_equal_mamba_ssm_table():
    block = Mamba2(**MAMBA_CONFIG)
    assert [(k, tuple(v.shape)) for k, v in block.state_dict().items()] == MAMBA_SSM_MAMBA2_512
    residual = ResidualMamba()  # docs/models.md §3.3 defaults
    mamba_keys = [
        (k[len("mamba.") :], tuple(v.shape)) for k, v in residual.state_dict().items() if k.startswith("mamba.")
    ]
    assert mamba_keys == MAMBA_SSM_MAMBA2_512
    assert block.in_proj.bias is None and block.out_proj.bias is None


def test_initialisation_follows_mamba_ssm():
    torch.manual_seed(0)
    block = Mamba2(d_model=512, d_state=16, headdim=8, dt_min=0.001, dt_max=0.1, conv_init=0.05)  # 128 heads
    dt = F.softplus(block.dt_bias)
    assert dt.min() >= 0.001 * (1 - 1e-5) and dt.max() <= 0.1 * (1 + 1e-5)
    assert dt.min() < 0.002 and dt.max() > 0.05  # log-uniform spread over two decades
    assert 0.2 < (dt.log() < math.log(0.01)).float().mean() < 0.8  # half the heads below the geometric midpoint
    A = block.A_log.exp()
    assert A.min() >= 1 and A.max() <= 16 and A.max() - A.min() > 10
    assert torch.equal(block.D, torch.ones(128)) and torch.equal(block.norm.weight, torch.ones(1024))
    assert block.conv1d.weight.abs().max() <= 0.05
    assert all(getattr(p, "_no_weight_decay", False) for p in (block.dt_bias, block.A_log, block.D))


@pytest.mark.parametrize("seqlen,chunk", [(1, 8), (3, 8), (20, 64), (37, 8), (37, 5), (16, 1)])
def test_chunked_scan_matches_recurrence_output_and_grads(seqlen, chunk):
    torch.manual_seed(seqlen + chunk)
    block = randomized(Mamba2(**SMALL, bias=True, torch_chunk_size=chunk, backend="torch"), seed=seqlen)
    assert_matches_recurrence(block, torch.randn(3, seqlen, SMALL["d_model"], dtype=torch.float64))


def test_norm_before_gate_and_dt_limit_match_recurrence():
    torch.manual_seed(1)
    block = Mamba2(**SMALL, norm_before_gate=True, dt_limit=(0.05, 0.5), torch_chunk_size=8)
    block = randomized(block, seed=1)
    assert_matches_recurrence(block, torch.randn(2, 21, SMALL["d_model"], dtype=torch.float64))


def test_design_config_one_chunk_matches_recurrence():
    torch.manual_seed(2)
    block = randomized(Mamba2(**MAMBA_CONFIG), seed=2)
    assert_matches_recurrence(block, torch.randn(1, 20, 512, dtype=torch.float64))


def test_long_sequence_matches_recurrence_float64_and_float32():
    torch.manual_seed(3)
    config = dict(d_model=8, d_state=4, d_conv=4, expand=2, headdim=4, ngroups=1, torch_chunk_size=64)
    block = randomized(Mamba2(**config), seed=3, dt_shift=1.0)  # larger steps: strong decay inside chunks
    u = torch.randn(2, 1100, 8, dtype=torch.float64)  # 18 chunks, last one padded
    with torch.no_grad():
        ref = mamba2_recurrence_ref(block, u)
        torch.testing.assert_close(block(u), ref, rtol=1e-9, atol=1e-10)
        out32 = block.float()(u.float())
    assert torch.isfinite(out32).all()
    torch.testing.assert_close(out32.double(), ref, rtol=1e-3, atol=1e-4)


def test_output_is_causal():
    torch.manual_seed(4)
    block = randomized(Mamba2(**SMALL, torch_chunk_size=8), seed=4)
    u = torch.randn(2, 50, SMALL["d_model"], dtype=torch.float64)
    for cut in (1, 7, 8, 23, 49):
        changed = u.clone()
        changed[:, cut:] = torch.randn_like(changed[:, cut:]) * 5
        with torch.no_grad():
            before, after = block(u), block(changed)
        torch.testing.assert_close(after[:, :cut], before[:, :cut], rtol=0, atol=1e-12)
        assert (after[:, cut:] - before[:, cut:]).abs().amax(dim=(0, 2)).min() > 1e-6  # the future does change


def test_ssd_scan_groups_map_heads_like_mamba_ssm():
    """Head h reads B/C of group h // (nheads/ngroups): one active group only moves its own heads."""
    torch.manual_seed(5)
    batch, seqlen, nheads, headdim, ngroups, d_state = 1, 6, 4, 3, 2, 2
    x = torch.randn(batch, seqlen, nheads, headdim, dtype=torch.float64)
    dt = torch.rand(batch, seqlen, nheads, dtype=torch.float64)
    A = -torch.rand(nheads, dtype=torch.float64)
    B = torch.randn(batch, seqlen, ngroups, d_state, dtype=torch.float64)
    C = torch.randn(batch, seqlen, ngroups, d_state, dtype=torch.float64)
    B[:, :, 1] = 0  # group 1 (heads 2, 3) writes nothing
    y = ssd_chunked_scan(x, dt, A, B, C, chunk_size=4)
    assert y[:, :, :2].abs().max() > 1e-3 and y[:, :, 2:].abs().max() == 0


def test_gated_rms_norm_groups():
    norm = GatedRMSNorm(8, group_size=4).double()
    x = torch.randn(3, 8, dtype=torch.float64)
    z = torch.randn(3, 8, dtype=torch.float64)
    gated = (x * F.silu(z)).reshape(3, 2, 4)
    expected = (gated / gated.square().mean(-1, keepdim=True).add(1e-5).sqrt()).reshape(3, 8)
    torch.testing.assert_close(norm(x, z), expected)


def test_backend_auto_on_cpu_is_silent_and_never_touches_mamba_ssm(monkeypatch):
    def kernel_lookup():
        raise AssertionError("mamba-ssm looked up for a CPU tensor")

    monkeypatch.setattr(mamba, "_fused_kernel", kernel_lookup)
    for backend in ("auto", "torch"):
        block = Mamba2(**SMALL, backend=backend)
        assert not block.uses_fused(torch.zeros(1, 1, SMALL["d_model"]))
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            out = block(torch.randn(2, 5, SMALL["d_model"]))
        assert out.shape == (2, 5, SMALL["d_model"]) and torch.isfinite(out).all()


def test_forced_fused_backend_names_the_install_command(monkeypatch):
    monkeypatch.setattr(mamba, "_fused_kernel", lambda: (None, "ModuleNotFoundError: No module named 'mamba_ssm'"))
    for name in ("fused", "cuda"):
        block = Mamba2(**SMALL, backend=name)
        assert block.backend == "fused"
        with pytest.raises(ImportError, match=r"pip install -r requirements-cuda.txt --no-build-isolation"):
            block(torch.randn(1, 4, SMALL["d_model"]))
    monkeypatch.setattr(mamba, "_fused_kernel", lambda: (lambda *a, **k: None, ""))
    with pytest.raises(RuntimeError, match="needs CUDA tensors"):
        Mamba2(**SMALL, backend="fused")(torch.randn(1, 4, SMALL["d_model"]))


def fake_split_conv1d_scan_combined(
    zxbcdt,
    conv1d_weight,
    conv1d_bias,
    dt_bias,
    A,
    D,
    chunk_size,
    initial_states=None,
    seq_idx=None,
    dt_limit=(0.0, float("inf")),
    return_final_states=False,
    activation="silu",
    rmsnorm_weight=None,
    rmsnorm_eps=1e-6,
    outproj_weight=None,
    outproj_bias=None,
    headdim=None,
    ngroups=1,
    norm_before_gate=True,
):
    """What mamba_ssm.ops.triton.ssd_combined.mamba_split_conv1d_scan_combined computes, from its arguments only."""
    assert activation == "silu" and outproj_weight is None and initial_states is None and D.dim() == 1
    nheads = A.shape[0]
    dim = nheads * headdim
    d_state = (zxbcdt.shape[-1] - 2 * dim - nheads) // (2 * ngroups)
    z, xbc, dt = torch.split(zxbcdt, [dim, dim + 2 * ngroups * d_state, nheads], dim=-1)
    xbc = F.silu(mamba.causal_depthwise_conv(xbc, conv1d_weight.unsqueeze(1), conv1d_bias))
    x, B, C = torch.split(xbc, [dim, ngroups * d_state, ngroups * d_state], dim=-1)
    batch, seqlen, _ = x.shape
    dt = F.softplus(dt + dt_bias).clamp(*dt_limit)
    x = x.reshape(batch, seqlen, nheads, headdim)
    y = (
        ssd_chunked_scan(
            x, dt, A, B.reshape(batch, seqlen, ngroups, d_state), C.reshape(batch, seqlen, ngroups, d_state), chunk_size
        )
        + x * D[:, None]
    )
    norm = GatedRMSNorm(dim, eps=rmsnorm_eps, group_size=dim // ngroups, norm_before_gate=norm_before_gate)
    norm = norm.to(zxbcdt.dtype)
    with torch.no_grad():
        norm.weight.copy_(rmsnorm_weight)
    return norm(y.reshape(batch, seqlen, dim), z)


def test_fused_path_passes_mamba_ssm_arguments(monkeypatch):
    """_forward_fused hands the kernel A = -exp(A_log), (dim, width) conv weights, D, dt_bias and norm settings."""
    monkeypatch.setattr(mamba, "_fused_kernel", lambda: (fake_split_conv1d_scan_combined, ""))
    torch.manual_seed(9)
    block = randomized(Mamba2(**SMALL, norm_before_gate=True, dt_limit=(0.01, 2.0), chunk_size=16), seed=9)
    u = torch.randn(2, 21, SMALL["d_model"], dtype=torch.float64)
    with torch.no_grad():  # A reaches the kernel in float32, as mamba-ssm passes it: float32-level tolerance
        torch.testing.assert_close(block._forward_fused(u), mamba2_recurrence_ref(block, u), rtol=1e-5, atol=1e-6)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="backend must be one of"):
        Mamba2(**SMALL, backend="triton")
    with pytest.raises(ValueError, match="not a multiple of headdim"):
        Mamba2(d_model=10, headdim=64)
    with pytest.raises(ValueError, match="not a multiple of ngroups"):
        Mamba2(d_model=12, headdim=6, ngroups=3)
    with pytest.raises(ValueError, match=r"expects input \(batch, seqlen, 12\)"):
        Mamba2(**SMALL)(torch.randn(2, 5, 7))
    with pytest.raises(ValueError, match="norm must be"):
        ResidualMamba(d_model=12, headdim=6, norm="group")


@pytest.mark.parametrize("norm", ["layer", "batch"])
def test_residual_mamba_is_normed_input_plus_mamba(norm):
    torch.manual_seed(6)
    block = ResidualMamba(d_model=16, d_state=4, headdim=8, norm=norm)
    x = 3 + 2 * torch.randn(4, 20, 16)  # (batch, epochs, d_model) per-epoch fusion vectors
    y = block(x)
    if norm == "layer":
        s = F.layer_norm(x, (16,), block.norm.weight, block.norm.bias, block.norm.eps)
    else:
        flat = x.reshape(-1, 16)
        s = (x - flat.mean(0)) / (flat.var(0, unbiased=False) + block.norm.eps).sqrt()
    torch.testing.assert_close(y, s + block.mamba(s), rtol=1e-5, atol=1e-5)
    y.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in block.parameters())


def test_bidirectional_residual_mamba_adds_a_backward_scan_that_ignores_padding():
    torch.manual_seed(7)
    block = ResidualMamba(d_model=16, d_state=4, headdim=8, direction="bidirectional").eval()
    x = torch.randn(3, 10, 16)
    s = F.layer_norm(x, (16,), block.norm.weight, block.norm.bias, block.norm.eps)
    expected = s + block.mamba(s) + block.mamba_backward(s.flip(1)).flip(1)
    torch.testing.assert_close(block(x), expected, rtol=1e-5, atol=1e-5)
    later = x.clone()
    later[:, 2] += torch.randn(16)  # not a constant shift: the LayerNorm would remove it
    assert not torch.allclose(block(later)[:, 0], block(x)[:, 0], atol=1e-4)  # the first epoch sees later ones
    assert not torch.allclose(block.mamba_backward(s.flip(1)).flip(1), torch.zeros_like(s), atol=1e-3)
    lengths = torch.tensor([10, 6, 1])
    valid = torch.arange(10).unsqueeze(0) < lengths.unsqueeze(1)  # (3, 10) prefixes
    padded = torch.where(valid.unsqueeze(-1), x, torch.randn_like(x) * 5)  # arbitrary values at padding
    y = block(padded, valid)
    for row, n in enumerate(lengths.tolist()):
        torch.testing.assert_close(y[row, :n], block(x[row : row + 1, :n])[0], rtol=1e-5, atol=1e-5)
    assert ResidualMamba(d_model=16, d_state=4, headdim=8).mamba_backward is None  # forward: the published model
    with pytest.raises(ValueError, match="direction must be"):
        ResidualMamba(d_model=16, d_state=4, headdim=8, direction="backward")


def test_reverse_valid_reverses_the_real_prefix_only():
    x = torch.arange(12.0).reshape(2, 6, 1)
    valid = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    out = reverse_valid(x, reversal_index(valid))
    assert out[0, :, 0].tolist() == [5, 4, 3, 2, 1, 0]
    assert out[1, :, 0].tolist() == [9, 8, 7, 6, 10, 11]  # padding stays at the end
    torch.testing.assert_close(reverse_valid(out, reversal_index(valid)), x)
    torch.testing.assert_close(reverse_valid(x), x.flip(1))
    with pytest.raises(ValueError, match="prefix"):
        reversal_index(torch.tensor([[True] * 6, [False, True, True, True, True, True]]))


def _mamba_ssm_or_skip():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    if not mamba.fused_kernels_available():
        pytest.skip(f"mamba-ssm kernels unavailable ({mamba._fused_kernel()[1]})")
    import mamba_ssm

    return mamba_ssm


@pytest.mark.cuda
@pytest.mark.parametrize("seqlen", [20, 700])
def test_cuda_matches_mamba_ssm_module(seqlen):
    mamba_ssm = _mamba_ssm_or_skip()
    torch.manual_seed(7)
    ours = Mamba2(**MAMBA_CONFIG, backend="torch").to("cuda")
    theirs = mamba_ssm.Mamba2(**MAMBA_CONFIG).to("cuda")
    assert [(k, tuple(v.shape)) for k, v in theirs.state_dict().items()] == MAMBA_SSM_MAMBA2_512
    with torch.no_grad():
        for param in ours.parameters():
            param.add_(0.05 * torch.randn_like(param))
    theirs.load_state_dict(ours.state_dict(), strict=True)
    u = torch.randn(4, seqlen, 512, device="cuda")
    with torch.no_grad():
        expected = theirs(u)
        for backend in ("torch", "fused"):
            ours.backend = backend
            out = ours(u)
            error = (out - expected).norm() / expected.norm()
            assert error < 1e-2, f"backend {backend}: relative error {error:.2e} vs mamba_ssm.Mamba2"


@pytest.mark.cuda
def test_cuda_fused_and_torch_gradients_agree():
    _mamba_ssm_or_skip()
    torch.manual_seed(8)
    block = Mamba2(**MAMBA_CONFIG).to("cuda")
    u = torch.randn(4, 300, 512, device="cuda")
    grads = {}
    for backend in ("fused", "torch"):
        block.backend = backend
        block.zero_grad()
        block(u).square().mean().backward()
        grads[backend] = {name: p.grad.clone() for name, p in block.named_parameters()}
    for name, grad in grads["torch"].items():
        error = (grads["fused"][name] - grad).norm() / grad.norm().clamp_min(1e-12)
        assert error < 2e-2, f"grad of {name}: relative error {error:.2e}"
