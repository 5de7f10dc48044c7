"""Online EWC (Schwarz et al. 2018, "Progress & Compress", ICML; van de Ven & Tolias 2019): one
running Fisher and one anchor, however many tasks.

After task t: F ← γ·F + F_t and θ* ← θ_t, so F = Σ_s γ^{t−s} F_s. Unlike :class:`~forgetless.EWC`
every old task is pulled towards the *latest* parameters, which is what makes the state one
task's worth. Two conventions for the penalty exist, and λ does not carry over between them:

- ``decay_in_penalty=False`` (default): (λ/2)·Σ_i F_i (θ_i − θ*_i)², the stored running Fisher as
  is. With ``decay=1`` and one task this is exactly :class:`~forgetless.EWC`.
- ``decay_in_penalty=True``: (λ/2)·Σ_i γ·F_i (θ_i − θ*_i)², γ once more. This is Schwarz et al.'s
  compress-step penalty ½‖θ − θ*_{k−1}‖²_{γF*_{k−1}} and van de Ven & Tolias's code
  (``continual-learning`` @86802a8, ``continual_learner.py``: ``est_fisher_info[n] += self.gamma *
  existing_values`` when consolidating, ``fisher = self.gamma*fisher`` in ``ewc_loss``), so their
  published λ (e.g. 1000 with γ = 0.9 on permuted MNIST) is given as is. It equals the default
  convention with strength λ·γ.

Example:
    >>> import torch, forgetless
    >>> model, data = torch.nn.Linear(4, 3), [(torch.randn(8, 4), torch.randint(0, 3, (8,)))]
    >>> ours = forgetless.OnlineEWC(strength=10.0, decay=0.5)
    >>> theirs = forgetless.OnlineEWC(strength=10.0, decay=0.5, decay_in_penalty=True)
    >>> for reg in (ours, theirs):
    ...     reg.consolidate(model, data)
    >>> with torch.no_grad():
    ...     _ = model.weight.add_(0.1)
    >>> bool(torch.isclose(theirs.penalty(model), 0.5 * ours.penalty(model)))
    True
"""
from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from ..quadratic import quadratic_penalty
from .base import Batches, OutputTransform, Regularizer, add_per_parameter, model_parameters, snapshot
from .options import check_number, check_seed, check_strength
from .task_fisher import check_fisher_options, task_fisher


class OnlineEWC(Regularizer):
    """EWC with one running, decayed Fisher and one anchor (constant-size state).

    Args:
        strength: λ, the weight of the penalty; the loss adds (λ/2)·Σ F (θ−θ*)².
        decay: γ in [0, 1], how much of the old running Fisher survives each new task
            (1: plain sum; 0: only the latest task is protected).
        decay_in_penalty: multiply the running Fisher by γ once more in the penalty, as van de
            Ven & Tolias's code and Schwarz et al. do (see the module docstring); the loss then
            adds (λ/2)·Σ γF (θ−θ*)².
        estimator: how the Fisher is computed: ``exact`` (default), ``sampled``, ``empirical``
            or ``batched`` (see :func:`forgetless.fisher_diagonal`).
        fisher_samples: use at most this many samples of the task's data for the Fisher
            (``None``: all of it).
        seed: seeds the label draws of the ``sampled`` estimator.

    Example:
        >>> import torch, forgetless
        >>> model = torch.nn.Linear(4, 3)
        >>> online = forgetless.OnlineEWC(strength=100.0, decay=0.9)
        >>> float(online.penalty(model))
        0.0
        >>> for t in range(3):
        ...     online.consolidate(model, [(torch.randn(8, 4), torch.randint(0, 3, (8,)))])
        >>> len(online.state_dict())   # weight, bias × (importance, anchor) + tasks_seen
        5
        >>> with torch.no_grad():
        ...     _ = model.weight.add_(0.1)
        >>> bool(online.penalty(model) > 0)
        True
    """

    name = "online-ewc"
    _state_keys = ("importance", "anchor")
    _consolidated_keys = ("anchor", "importance")
    _nonnegative_keys = ("importance",)  # a (decayed) sum of Fishers

    def __init__(
        self,
        strength: float = 1000.0,
        *,
        decay: float = 1.0,
        decay_in_penalty: bool = False,
        estimator: str = "exact",
        fisher_samples: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.strength = check_strength("strength", strength)
        self.decay = check_number("decay", decay, low=0.0, high=1.0, what="a number in [0, 1]")
        if not isinstance(decay_in_penalty, bool):
            raise ValueError(f"decay_in_penalty must be True or False, got {decay_in_penalty!r}")
        self.decay_in_penalty = decay_in_penalty
        self.estimator, self.fisher_samples = check_fisher_options(estimator, fisher_samples)
        self.seed = check_seed("seed", seed)
        # F = Σ_s γ^{t−s} F_s and θ* = the parameters after the latest task.
        self.importance: dict[str, Tensor] = {}
        self.anchor: dict[str, Tensor] = {}

    def penalty(self, model: nn.Module) -> Tensor:
        if self.tasks_seen == 0:
            return self._zero(model)
        weight = self.strength * (self.decay if self.decay_in_penalty else 1.0)
        return 0.5 * weight * quadratic_penalty(model_parameters(model), self.anchor, self.importance)

    def consolidate(
        self, model: nn.Module, data: Batches | None = None, *, output_transform: OutputTransform | None = None
    ) -> None:
        self._check_model(model)
        fisher = task_fisher(
            "OnlineEWC", model, data, estimator=self.estimator, fisher_samples=self.fisher_samples,
            seed=self.seed, task_index=self.tasks_seen, output_transform=output_transform,
        )
        # every protected parameter decays, frozen ones too; a new one starts from F = 0
        decayed = {name: self.decay * f for name, f in self.importance.items()}
        self.importance = add_per_parameter(decayed, fisher)
        self.anchor = {**self.anchor, **snapshot(model)}
        self.tasks_seen += 1

    def hyperparameters(self) -> dict[str, Any]:
        return {
            "strength": self.strength, "decay": self.decay, "decay_in_penalty": self.decay_in_penalty,
            "estimator": self.estimator,
            "fisher_samples": self.fisher_samples, "seed": self.seed,
        }
