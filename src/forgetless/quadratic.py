"""Pure functions for quadratic penalties Σ_i ω_i (θ_i − θ*_i)².

Separate per-task EWC terms Σ_t F_t (θ − θ_t)² are one quadratic in θ:
Ω (θ − μ)² + c with Ω = Σ_t F_t, μ = Σ_t F_t θ_t / Ω and c = Σ_t F_t (θ_t − μ)².
``merge_quadratic`` folds one more term in without ever forming the cancelling
expansion θᵀΩθ − 2θᵀΣFθ_t + ΣFθ_t², so cost and memory stay those of one task.
"""
from __future__ import annotations

import torch
from torch import Tensor


def quadratic_penalty(
    params: dict[str, Tensor], anchor: dict[str, Tensor], weight: dict[str, Tensor] | None = None
) -> Tensor:
    """Σ over tensors of Σ weight · (param − anchor)², differentiable in ``params``.

    ``weight=None`` weighs every element 1 (the L2 anchor).

    Example:
        >>> p = {"w": torch.tensor([1.0, 2.0])}
        >>> quadratic_penalty(p, {"w": torch.zeros(2)}, {"w": torch.tensor([1.0, 0.5])})
        tensor(3.)
    """
    names = list(anchor)
    total = params[names[0]].new_zeros(())
    for name in names:
        diff = params[name] - anchor[name]
        squares = diff * diff if weight is None else weight[name] * diff * diff
        total = total + squares.sum()
    return total


def merge_quadratic(
    weight: Tensor, anchor: Tensor, new_weight: Tensor, new_anchor: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Fold ``new_weight · (θ − new_anchor)²`` into ``weight · (θ − anchor)²``.

    Returns ``(Ω, μ, c)`` with ``weight·(θ−anchor)² + new_weight·(θ−new_anchor)² ==
    Ω·(θ−μ)² + c`` summed over elements, for every θ. Where Ω is 0 the anchor is kept.

    Example:
        >>> w, m, c = merge_quadratic(torch.tensor([1.0]), torch.tensor([0.0]),
        ...                           torch.tensor([1.0]), torch.tensor([2.0]))
        >>> w, m, c
        (tensor([2.]), tensor([1.]), tensor(2.))
    """
    total = weight + new_weight
    safe = torch.where(total > 0, total, torch.ones_like(total))
    mean = torch.where(total > 0, (weight * anchor + new_weight * new_anchor) / safe, new_anchor)
    constant = (weight * (anchor - mean) ** 2 + new_weight * (new_anchor - mean) ** 2).sum()
    return total, mean, constant
