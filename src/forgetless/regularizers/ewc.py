"""Elastic Weight Consolidation (Kirkpatrick et al. 2017, PNAS), one penalty per task.

After task t the loss on later tasks gets (λ/2) Σ_t Σ_i F_{t,i} (θ_i − θ*_{t,i})², F_t the diagonal
Fisher of task t at its optimum θ*_t. The per-task terms are folded into one quadratic
(``merge_quadratic``), so the penalty costs the same after 1 or 100 tasks and its value is exact.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..quadratic import merge_quadratic, quadratic_penalty
from .base import Batches, OutputTransform, Regularizer, model_parameters, snapshot
from .options import check_seed, check_strength
from .task_fisher import check_fisher_options, task_fisher


class EWC(Regularizer):
    """EWC with separate per-task penalties.

    Args:
        strength: λ, the weight of the penalty (the paper's λ; the loss adds (λ/2)·Σ F (θ−θ*)²).
        estimator: how the Fisher is computed: ``exact`` (default), ``sampled``, ``empirical``
            or ``batched`` (see :func:`forgetless.fisher_diagonal`).
        fisher_samples: use at most this many samples of the task's data for the Fisher
            (``None``: all of it).
        seed: seeds the label draws of the ``sampled`` estimator.

    Example:
        >>> import torch, forgetless
        >>> model = torch.nn.Linear(4, 3)
        >>> ewc = forgetless.EWC(strength=100.0)
        >>> float(ewc.penalty(model).detach())
        0.0
        >>> data = [(torch.randn(8, 4), torch.randint(0, 3, (8,)))]
        >>> ewc.consolidate(model, data)
        >>> float(ewc.penalty(model).detach())   # still at the anchor
        0.0
        >>> with torch.no_grad():
        ...     _ = model.weight.add_(0.1)
        >>> bool(ewc.penalty(model) > 0)
        True
    """

    name = "ewc"
    _state_keys = ("importance", "anchor")
    _scalar_keys = ("constant",)
    _consolidated_keys = ("anchor", "importance")
    _nonnegative_keys = ("importance", "constant")  # a Fisher, and Σ F (θ_t − μ)²

    def __init__(
        self,
        strength: float = 1000.0,
        *,
        estimator: str = "exact",
        fisher_samples: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.strength = check_strength("strength", strength)
        self.estimator, self.fisher_samples = check_fisher_options(estimator, fisher_samples)
        self.seed = check_seed("seed", seed)
        # Ω = Σ_t F_t, μ = Ω-weighted mean of the anchors, c = what is left of the per-task terms.
        self.importance: dict[str, Tensor] = {}
        self.anchor: dict[str, Tensor] = {}
        self.constant = torch.zeros(())

    def penalty(self, model: nn.Module) -> Tensor:
        if self.tasks_seen == 0:
            return self._zero(model)
        quad = quadratic_penalty(model_parameters(model), self.anchor, self.importance)
        return 0.5 * self.strength * (quad + self.constant.to(quad.device))

    def consolidate(
        self, model: nn.Module, data: Batches | None = None, *, output_transform: OutputTransform | None = None
    ) -> None:
        self._check_model(model)
        fisher = task_fisher(
            "EWC", model, data, estimator=self.estimator, fisher_samples=self.fisher_samples,
            seed=self.seed, task_index=self.tasks_seen, output_transform=output_transform,
        )
        theta = snapshot(model)
        constant = self.constant
        for name in fisher:
            if name not in self.importance:  # first task, or a parameter new since: nothing to fold into
                self.importance[name], self.anchor[name] = fisher[name], theta[name]
                continue
            self.importance[name], self.anchor[name], c = merge_quadratic(
                self.importance[name], self.anchor[name], fisher[name], theta[name]
            )
            constant = constant + c.cpu()
        self.constant = constant
        self.tasks_seen += 1

    def hyperparameters(self) -> dict[str, Any]:
        return {
            "strength": self.strength, "estimator": self.estimator,
            "fisher_samples": self.fisher_samples, "seed": self.seed,
        }
