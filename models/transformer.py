"""Shared ViT pieces: attention, pre-norm block, fixed 1-D sin-cos positions, MAE random masking.

Used by NeuroNet's masked autoencoder and by SynthSleepNet's fusion encoder. The attention output
projection is the `nn.Linear` `attn.proj` of every `Block`, so peft LoRA can target "attn.proj".
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

LAYER_NORM_EPS = 1e-6


def sincos_positions(n_positions: int, dim: int) -> torch.Tensor:
    """Fixed 1-D sin-cos position table (n_positions, dim), float32: [sin(p·ω_i) | cos(p·ω_i)], ω_i = 10000^(-2i/dim)."""
    if dim % 2:
        raise ValueError(f"sin-cos positions need an even width, got {dim}")
    omega = torch.exp(torch.arange(dim // 2, dtype=torch.float64) * (-math.log(10000.0) * 2.0 / dim))  # (dim/2,)
    angle = torch.arange(n_positions, dtype=torch.float64)[:, None] * omega[None, :]  # (n, dim/2) radians
    return torch.cat([angle.sin(), angle.cos()], dim=1).float()  # (n, dim)


def n_kept(n_tokens: int, mask_ratio: float) -> int:
    """Number of tokens a view keeps: round(n_tokens * (1 - mask_ratio)), at least 1."""
    if not 0.0 <= mask_ratio < 1.0:
        raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
    return max(1, int(round(n_tokens * (1.0 - mask_ratio))))


def random_masking(
    tokens: torch.Tensor,
    mask_ratio: float,
    generator: torch.Generator | None = None,
    noise: torch.Tensor | None = None,
):
    """MAE per-sample random masking: keep the round(N·(1-r)) tokens with the smallest uniform noise.

    Args:
        tokens: (B, N, D).
        noise: (B, N) the draw to rank, when several token sets must mask the same positions; else drawn here.
    Returns:
        kept: (B, K, D) kept tokens in shuffled order.
        mask: (B, N) float, 1 = masked (to reconstruct), 0 = kept, in original token order.
        ids_restore: (B, N) long, position of each original token in [kept, masked] order.
    """
    batch, n_tokens, dim = tokens.shape
    keep = n_kept(n_tokens, mask_ratio)
    if noise is None:
        noise = torch.rand(batch, n_tokens, device=tokens.device, generator=generator)  # (B, N) in [0, 1)
    ids_shuffle = torch.argsort(noise, dim=1)  # (B, N) ascending: first `keep` are kept
    ids_restore = torch.argsort(ids_shuffle, dim=1)  # (B, N) inverse permutation
    ids_keep = ids_shuffle[:, :keep]  # (B, K)
    kept = torch.gather(tokens, 1, ids_keep.unsqueeze(-1).expand(-1, -1, dim))  # (B, K, D)
    mask = (ids_restore >= keep).to(tokens.dtype)  # (B, N) 1 = masked
    return kept, mask, ids_restore


def unshuffle(visible: torch.Tensor, mask_token: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
    """Append mask tokens to the kept tokens and put every token back in its original position.

    visible (B, K, D), mask_token (1, 1, D), ids_restore (B, N) → (B, N, D).
    """
    batch, keep, dim = visible.shape
    n_tokens = ids_restore.shape[1]
    filler = mask_token.to(visible.dtype).expand(batch, n_tokens - keep, dim)  # (B, N-K, D)
    full = torch.cat([visible, filler], dim=1)  # (B, N, D) in shuffled order
    return torch.gather(full, 1, ids_restore.unsqueeze(-1).expand(-1, -1, dim))  # (B, N, D) original order


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection and F.scaled_dot_product_attention."""

    def __init__(self, dim: int, heads: int, qkv_bias: bool = True):
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, n_tokens, dim = x.shape
        qkv = self.qkv(x).view(batch, n_tokens, 3, self.heads, dim // self.heads)  # (B, T, 3, H, Dh)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, T, Dh)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, H, T, Dh)
        return self.proj(out.transpose(1, 2).reshape(batch, n_tokens, dim))  # (B, T, D)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TransformerStack(nn.Module):
    """`depth` pre-norm blocks followed by a final LayerNorm; (B, T, dim) → (B, T, dim)."""

    def __init__(self, dim: int, heads: int, depth: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


def init_vit_weights(module: nn.Module) -> None:
    """MAE / JAX-ViT initialisation: xavier-uniform Linear weights, zero biases, unit LayerNorm.

    Apply with `model.apply(init_vit_weights)`.
    """
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
