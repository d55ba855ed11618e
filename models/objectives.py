"""Self-supervised objectives as modules that return `(loss, parts)` (docs/models.md §3.1, §3.2).

`parts` is a dict of detached scalar tensors for logging.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MaskedTokenMSE(nn.Module):
    """Mean squared error over masked tokens only.

    Per token, the squared error is averaged over the feature axis; the loss is the mean of that over
    the masked tokens of the whole batch. Visible tokens contribute nothing, neither value nor gradient.
    """

    def forward(self, prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor):
        """prediction, target (B, N, D); mask (B, N), 1 = masked → (loss, {"n_masked"})."""
        if prediction.shape != target.shape or mask.shape != prediction.shape[:2]:
            raise ValueError(
                f"masked MSE: prediction {tuple(prediction.shape)}, target {tuple(target.shape)} "
                f"and mask {tuple(mask.shape)} do not match"
            )
        per_token = (prediction.float() - target.float()).pow(2).mean(dim=-1)  # (B, N), fp32 even under autocast
        mask = mask.to(per_token.dtype)
        n_masked = mask.sum()
        # where() rather than a product so a non-finite error on a visible token cannot leak in;
        # no masked token at all gives 0 (nothing to reconstruct) without a host sync
        loss = torch.where(mask.bool(), per_token, per_token.new_zeros(())).sum() / n_masked.clamp_min(1.0)
        return loss, {"n_masked": n_masked.detach()}


class NTXentLoss(nn.Module):
    """Normalised-temperature cross entropy (SimCLR), symmetric, with in-batch negatives.

    For two views z1, z2 (B, P), the 2B embeddings are L2-normalised; each anchor scores its cosine
    similarity / τ against the other 2B − 1 embeddings (itself excluded); the positive is the other
    view of the same sample. The loss is the cross entropy averaged over all 2B anchors.
    """

    def __init__(self, temperature: float = 0.05):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"NT-Xent temperature must be positive, got {temperature}")
        self.temperature = temperature

    def forward(self, z1: torch.Tensor, z2: torch.Tensor):
        """z1, z2 (B, P) → (loss, {"accuracy": share of anchors whose positive scores highest})."""
        if z1.shape != z2.shape or z1.dim() != 2:
            raise ValueError(
                f"NT-Xent needs two (batch, dim) views of equal shape, got {tuple(z1.shape)} and {tuple(z2.shape)}"
            )
        batch = z1.shape[0]
        z = F.normalize(torch.cat([z1, z2], dim=0).float(), dim=-1)  # (2B, P) unit vectors
        logits = (z @ z.T) / self.temperature  # (2B, 2B) cosine / τ
        self_mask = torch.eye(2 * batch, dtype=torch.bool, device=z.device)
        logits = logits.masked_fill(self_mask, float("-inf"))  # an anchor is not its own candidate
        index = torch.arange(batch, device=z.device)
        positives = torch.cat([index + batch, index])  # (2B,) the other view of the same sample
        loss = F.cross_entropy(logits, positives)
        accuracy = (logits.argmax(dim=1) == positives).float().mean()
        return loss, {"accuracy": accuracy.detach()}
