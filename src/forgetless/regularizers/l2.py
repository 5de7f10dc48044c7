"""L2 anchor: (λ/2)·‖θ − θ*‖² around the parameters after the last task.

The seed post's version used the (unsquared) Euclidean norm per tensor, whose gradient at θ = θ*
is 0/0 and turns the weights NaN on the first step; this is the squared form.
"""
from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from ..quadratic import quadratic_penalty
from .base import Batches, OutputTransform, Regularizer, model_parameters, snapshot
from .options import check_strength


class L2(Regularizer):
    """Every parameter pulled equally towards its value after the latest task.

    Args:
        strength: λ; the loss adds (λ/2)·Σ_i (θ_i − θ*_i)². The seed post's 0.5·Σ‖θ−θ_A‖² is
            ``strength=1``.

    Example:
        >>> import torch, forgetless
        >>> model = torch.nn.Linear(2, 1, bias=False)
        >>> l2 = forgetless.L2(strength=2.0)
        >>> l2.consolidate(model)
        >>> with torch.no_grad():
        ...     _ = model.weight.add_(1.0)
        >>> round(float(l2.penalty(model).detach()), 4)    # (2/2) * (1² + 1²); θ+1−θ rounds in float32
        2.0
    """

    name = "l2"
    strength_grid = tuple(10.0**k for k in range(-3, 4))
    _state_keys = ("anchor",)
    _consolidated_keys = ("anchor",)

    def __init__(self, strength: float = 1.0) -> None:
        super().__init__()
        self.strength = check_strength("strength", strength)
        self.anchor: dict[str, Tensor] = {}

    def penalty(self, model: nn.Module) -> Tensor:
        if self.tasks_seen == 0:
            return self._zero(model)
        scale, anchor, weight = self.quadratic()
        return scale * quadratic_penalty(model_parameters(model), anchor, weight)

    def quadratic(self) -> tuple[float, dict[str, Tensor], dict[str, Tensor] | None]:
        return 0.5 * self.strength, self.anchor, None

    def consolidate(
        self, model: nn.Module, data: Batches | None = None, *, output_transform: OutputTransform | None = None
    ) -> None:
        self._check_model(model)
        self.anchor = {**self.anchor, **snapshot(model)}  # a frozen parameter keeps its anchor
        self.tasks_seen += 1

    def hyperparameters(self) -> dict[str, Any]:
        return {"strength": self.strength}
