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

``structure="kfac"`` is the Kronecker-factored online Laplace approximation of Ritter, Botev & Barber
2018: their recursion Λ_t = H_t + Λ_{t−1} at the latest mode θ*_t, with K-FAC blocks per Linear/Conv2d
layer (:func:`forgetless.fisher_kfac`) and the diagonal for the other parameters. Λ is a sum of
Kronecker products, which is not one; ``factor_sum`` says what is kept:

- ``separate`` (default, what Ritter et al. do): every task's factors, weighted γ^{t−s}; exact, but
  state and penalty cost grow with the number of tasks like :class:`~forgetless.EWC`'s;
- ``merged``: one pair per layer, A ← γA + A_t/π, G ← G + π·G_t (:func:`forgetless.merge_kronecker`,
  the rule of Kao et al. 2021 and of van de Ven et al.'s 2022 code): constant size, and never below
  the exact sum (it over-counts the cross terms π·γA⊗G_t + A_t⊗G/π).

Until the second ``consolidate`` (one term) the two coincide. ``kfac_damping`` damps every term as
it is read: with separate terms each task's block gets its own damping, the merged block gets it once.

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

from ..kronecker import KroneckerTerm, kronecker_penalty, merge_kronecker
from ..quadratic import quadratic_penalty
from .base import Batches, OutputTransform, Regularizer, Variant, add_per_parameter, model_parameters, snapshot
from .kronecker_state import (KFAC_DAMPING, KFAC_STRENGTH, KFAC_STRENGTH_GRID, check_factors_allowed, layer_memory,
                              layer_params, model_problem, protected_state_problem, read_terms)
from .options import check_number, check_seed, check_strength
from .task_fisher import FISHER_CHOICES, check_fisher_options, check_structure_options, task_fisher

FACTOR_SUMS = ("separate", "merged")


class OnlineEWC(Regularizer):
    """EWC with one running, decayed Fisher and one anchor (constant-size state).

    Args:
        strength: λ, the weight of the penalty; the loss adds (λ/2)·Σ F (θ−θ*)².
        decay: γ in [0, 1], how much of the old running Fisher survives each new task
            (1: plain sum; 0: only the latest task is protected).
        decay_in_penalty: multiply the running Fisher by γ once more in the penalty, as van de
            Ven & Tolias's code and Schwarz et al. do (see the module docstring); the loss then
            adds (λ/2)·Σ γF (θ−θ*)².
        estimator: how the Fisher is computed: ``exact`` (default), ``sampled``, ``empirical``,
            ``predicted`` or ``batched`` (see :func:`forgetless.fisher_diagonal`; ``batched`` is diagonal only).
        structure: ``diagonal`` (default) or ``kfac`` (see the module docstring).
        kfac_damping: with ``kfac``, factored Tikhonov damping of every block, as for :class:`~forgetless.EWC`.
        factor_sum: with ``kfac``, ``separate`` (default: every task's factors, exact) or ``merged``
            (one Kronecker product per layer, constant size); ignored by ``diagonal``.
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
    strength_grid = tuple(10.0**k for k in range(0, 9))
    choices = FISHER_CHOICES
    # `--method online-ewc-kfac`: as EWC's ewc-kfac, with merged factors by default: one Kronecker product
    # per layer, so state and step cost stay one task's, the point of online EWC (Ritter et al.'s exact
    # separate terms: --factor-sum separate)
    variants = {"online-ewc-kfac": Variant(fixed={"structure": "kfac"},
                                           defaults={"kfac_damping": KFAC_DAMPING, "factor_sum": "merged"},
                                           strength=KFAC_STRENGTH, strength_grid=KFAC_STRENGTH_GRID)}
    _state_keys = ("importance", "anchor", "kfac_in", "kfac_out", "kfac_anchor")
    _param_shaped_keys = ("importance", "anchor", "kfac_anchor")
    # what _consolidated_keys = ("anchor", "importance") would say, with the Kronecker terms counted as
    # protection too: state_problem and _check_model below
    _consolidated_keys = ()
    _nonnegative_keys = ("importance",)  # a (decayed) sum of Fishers

    def __init__(
        self,
        strength: float = 1000.0,
        *,
        decay: float = 1.0,
        decay_in_penalty: bool = False,
        estimator: str = "exact",
        structure: str = "diagonal",
        kfac_damping: float = 0.0,
        factor_sum: str = "separate",
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
        self.structure, self.kfac_damping = check_structure_options(structure, kfac_damping, self.estimator)
        if factor_sum not in FACTOR_SUMS:
            raise ValueError(f"unknown factor_sum {factor_sum!r}; choose one of {', '.join(FACTOR_SUMS)}")
        self.factor_sum = factor_sum
        self.seed = check_seed("seed", seed)
        # F = Σ_s γ^{t−s} F_s and θ* = the parameters after the latest task (diagonal part).
        self.importance: dict[str, Tensor] = {}
        self.anchor: dict[str, Tensor] = {}
        # Kronecker part: A and G per term ("<t>.<weight>": γ^{latest−t}-weighted, or one merged term 0),
        # and the latest θ* of the factored layers.
        self.kfac_in: dict[str, Tensor] = {}
        self.kfac_out: dict[str, Tensor] = {}
        self.kfac_anchor: dict[str, Tensor] = {}
        self._terms: list[KroneckerTerm] | None = None

    def penalty(self, model: nn.Module) -> Tensor:
        if self.tasks_seen == 0:
            return self._zero(model)
        params = model_parameters(model)
        quad = quadratic_penalty(params, self.anchor, self.importance) if self.anchor else None
        if self.kfac_in:
            kron = kronecker_penalty(params, self.terms())
            quad = kron if quad is None else quad + kron
        return self._scale() * quad

    def _scale(self) -> float:
        return 0.5 * self.strength * (self.decay if self.decay_in_penalty else 1.0)

    def quadratic(self) -> tuple[float, dict[str, Tensor], dict[str, Tensor]] | None:
        return None if self.kfac_in else (self._scale(), self.anchor, self.importance)

    def kronecker(self) -> tuple[float, list[KroneckerTerm], dict[str, Tensor], dict[str, Tensor]] | None:
        return (self._scale(), self.terms(), self.anchor, self.importance) if self.kfac_in else None

    def terms(self) -> list[KroneckerTerm]:
        """The Kronecker-factored terms, all at the latest anchor, damped (empty for ``structure="diagonal"``)."""
        if self._terms is None:
            self._terms = read_terms(self.kfac_in, self.kfac_out, self.kfac_anchor, one_anchor=True,
                                     damping=self.kfac_damping)
        return self._terms

    def consolidate(
        self, model: nn.Module, data: Batches | None = None, *, output_transform: OutputTransform | None = None
    ) -> None:
        self._check_model(model)
        fisher = task_fisher(
            "OnlineEWC", model, data, estimator=self.estimator, fisher_samples=self.fisher_samples, seed=self.seed,
            task_index=self.tasks_seen, output_transform=output_transform, structure=self.structure,
        )
        theta = snapshot(model)
        if self.structure == "kfac":
            self._add_factors(fisher.factors, theta)
            fisher = fisher.diagonal
        # every protected parameter decays, frozen ones too; a new one starts from F = 0
        decayed = {name: self.decay * f for name, f in self.importance.items()}
        self.importance = add_per_parameter(decayed, fisher)
        self.anchor = {**self.anchor, **{name: theta[name] for name in fisher}}
        self.tasks_seen += 1

    def _add_factors(self, factors: dict[str, tuple[Tensor, Tensor]], theta: dict[str, Tensor]) -> None:
        # every term decays, frozen layers' too; with γ = 0 separate terms are gone (a zero term costs as
        # much as any other)
        keep = self.decay > 0 or self.factor_sum == "merged"
        self.kfac_in = {k: self.decay * a for k, a in self.kfac_in.items()} if keep else {}
        self.kfac_out = {k: g for k, g in self.kfac_out.items() if k in self.kfac_in}
        t = self.tasks_seen if self.factor_sum == "separate" else 0
        for weight, (a, g) in factors.items():
            key = f"{t}.{weight}"
            if key in self.kfac_in:  # merged
                a, g = merge_kronecker((self.kfac_in[key], self.kfac_out[key]), (a, g))
            self.kfac_in[key], self.kfac_out[key] = a, g
        # a frozen layer keeps its anchor, as the diagonal part does
        fresh = {name: theta[name] for weight, (a, _) in factors.items()
                 for name in layer_params(weight, a, theta[weight])}
        if not keep:
            self.kfac_anchor = {}
        self.kfac_anchor = {**self.kfac_anchor, **fresh}
        self._terms = None

    def memory(self) -> dict[str, dict[str, int | str]]:
        """Per module: its structure, the bytes of state kept for it and the bytes of its parameters."""
        return layer_memory(self.terms(), self.importance, self.anchor, shared_anchor=True)

    def _check_model(self, model: nn.Module, what: str = "consolidate") -> None:
        super()._check_model(model, what)
        problem = model_problem(model_parameters(model), {**self.anchor, **self.kfac_anchor})
        if problem:
            raise ValueError(f"OnlineEWC.{what}: {problem}")

    @classmethod
    def state_problem(cls, state) -> str | None:
        return super().state_problem(state) or protected_state_problem(state, one_anchor=True)

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        check_factors_allowed("OnlineEWC", self.structure, state)
        super().load_state_dict(state)
        self._terms = None

    def hyperparameters(self) -> dict[str, Any]:
        return {
            "strength": self.strength, "decay": self.decay, "decay_in_penalty": self.decay_in_penalty,
            "estimator": self.estimator, "structure": self.structure, "kfac_damping": self.kfac_damping,
            "factor_sum": self.factor_sum, "fisher_samples": self.fisher_samples, "seed": self.seed,
        }
