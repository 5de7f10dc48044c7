"""Memory Aware Synapses (Aljundi et al. 2018, ECCV): importance = how much the output moves.

After task t, Ω_t,i = (1/N) Σ_n |∂‖f(x_n)‖₂² / ∂θ_i| over the task's inputs (labels are not used),
Ω ← Ω + Ω_t and θ* ← θ(end); later tasks add λ·Σ_i Ω_i (θ_i − θ*_i)².

Conventions:

- the penalty is λ·Σ Ω (θ−θ*)², no ½, as in the paper's loss (and the authors' code, whose
  optimizer adds 2λΩ(θ−θ*) to the gradient); ``strength`` is therefore on SI's scale, not EWC's;
- importances are summed over tasks, as the authors' code does (``accumelate_reg_params``: previous
  Ω + new Ω); a single anchor, the parameters after the latest task, as in the paper;
- the absolute value is taken per sample, as the paper defines Ω. The authors' code takes it of
  each mini-batch's summed gradient, which is smaller wherever samples' gradients disagree in sign;
- f(x) is the model's raw output (logits), or ``output_transform(output)`` if given.
"""
from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from ..per_sample import output_norm_sensitivity
from ..quadratic import quadratic_penalty
from .base import Batches, OutputTransform, Regularizer, add_per_parameter, model_parameters, snapshot
from .options import check_count, check_strength


class MAS(Regularizer):
    """Memory Aware Synapses: per-parameter sensitivity of the squared output norm.

    Args:
        strength: λ, the weight of the penalty; the loss adds λ·Σ Ω (θ−θ*)² (no ½, see above).
        importance_samples: use at most this many samples of the task's data for Ω
            (``None``: all of it).

    Example:
        >>> import torch, forgetless
        >>> model = torch.nn.Linear(4, 3)
        >>> mas = forgetless.MAS(strength=1.0)
        >>> float(mas.penalty(model))
        0.0
        >>> mas.consolidate(model, [(torch.randn(8, 4), torch.zeros(8, dtype=torch.long))])
        >>> float(mas.penalty(model).detach())   # still at the anchor
        0.0
        >>> with torch.no_grad():
        ...     _ = model.weight.add_(0.1)
        >>> bool(mas.penalty(model) > 0)
        True
    """

    name = "mas"
    strength_grid = tuple(10.0**k for k in range(-2, 5))
    _state_keys = ("importance", "anchor")
    _consolidated_keys = ("anchor", "importance")
    _nonnegative_keys = ("importance",)  # a mean of absolute values

    def __init__(self, strength: float = 1.0, *, importance_samples: int | None = None) -> None:
        super().__init__()
        self.strength = check_strength("strength", strength)
        self.importance_samples = check_count("importance_samples", importance_samples)
        self.importance: dict[str, Tensor] = {}  # Ω, summed over tasks
        self.anchor: dict[str, Tensor] = {}      # θ* after the latest task

    def penalty(self, model: nn.Module) -> Tensor:
        if self.tasks_seen == 0:
            return self._zero(model)
        scale, anchor, weight = self.quadratic()
        return scale * quadratic_penalty(model_parameters(model), anchor, weight)

    def quadratic(self) -> tuple[float, dict[str, Tensor], dict[str, Tensor] | None]:
        return self.strength, self.anchor, self.importance

    def consolidate(
        self, model: nn.Module, data: Batches | None = None, *, output_transform: OutputTransform | None = None
    ) -> None:
        if data is None:
            raise ValueError("MAS.consolidate needs the task's inputs to measure the output's sensitivity")
        self._check_model(model)
        new = output_norm_sensitivity(
            model, data, output_transform=output_transform, max_samples=self.importance_samples
        )
        self.importance = add_per_parameter(self.importance, new)
        self.anchor = {**self.anchor, **snapshot(model)}
        self.tasks_seen += 1

    def hyperparameters(self) -> dict[str, Any]:
        return {"strength": self.strength, "importance_samples": self.importance_samples}
