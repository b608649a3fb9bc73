"""Losses as pure functions.

t and c are the Text and Code embeddings, [B, d]. Every JEPA variant returns a scalar.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

INFONCE_TEMPERATURE = 0.07


def cosine_loss(t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """1 - mean cosine similarity (the default JEPA loss)."""
    return 1.0 - F.cosine_similarity(t, c, dim=-1).mean()


def l2_loss(t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Mean Euclidean distance (--jepa_l2)."""
    return torch.linalg.norm(t - c, ord=2, dim=-1).mean()


def mse_loss(t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Mean squared error over all elements (--jepa_mse)."""
    return torch.mean((t - c) ** 2)


def infonce_loss(t: torch.Tensor, c: torch.Tensor, temperature: float = INFONCE_TEMPERATURE) -> torch.Tensor:
    """Cross-entropy of cos(t_i, c_j) / temperature with targets i = j (--infonce)."""
    logits = F.normalize(t, p=2, dim=1) @ F.normalize(c, p=2, dim=1).T / temperature
    return F.cross_entropy(logits, torch.arange(t.shape[0], device=t.device))


def lm_loss_sum(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed next-token cross-entropy (in fp32) and the number of counted targets.

    logits [..., V] are already aligned with targets [...]; targets of -100 are ignored.
    """
    total = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1),
                            ignore_index=-100, reduction="sum")
    return total, (targets != -100).sum()


def combine(lm: torch.Tensor, jepa: torch.Tensor | float, gamma: float, lbd: float) -> torch.Tensor:
    """total = gamma * lm_loss + lbd * jepa_loss."""
    return gamma * lm + lbd * jepa
