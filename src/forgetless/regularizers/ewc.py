"""Elastic Weight Consolidation (Kirkpatrick et al. 2017, PNAS), one penalty per task.

After task t the loss on later tasks gets (λ/2) Σ_t (θ − θ*_t)ᵀ F_t (θ − θ*_t), F_t the Fisher of task t
at its optimum θ*_t, in one of two structures:

* ``diagonal`` (default): (λ/2) Σ_t Σ_i F_{t,i} (θ_i − θ*_{t,i})². The per-task terms are folded into one
  quadratic (``merge_quadratic``), so the penalty costs the same after 1 or 100 tasks and its value is exact.
* ``kfac``: one Kronecker-factored block per Linear/Conv2d layer (:func:`forgetless.fisher_kfac`,
  Ritter, Botev & Barber 2018), (λ/2) Σ_t Σ_l tr(G_{t,l} ΔW̄_{t,l} A_{t,l} ΔW̄_{t,l}ᵀ) with
  ΔW̄ = [W − W*_t, b − b*_t]; every other parameter keeps the folded diagonal. A sum of Kronecker
  products with different anchors is no Kronecker product, so the terms stay separate: state and
  penalty cost grow with the number of tasks (one A, G and anchor per task and layer;
  ``bench/bench_penalty.py`` measures it). :meth:`EWC.memory` reports the bytes per layer.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..kronecker import KroneckerTerm, kronecker_penalty
from ..quadratic import merge_quadratic, quadratic_penalty
from .base import Batches, OutputTransform, Regularizer, Variant, model_parameters, snapshot
from .kronecker_state import (KFAC_DAMPING, KFAC_STRENGTH, KFAC_STRENGTH_GRID, anchors_by_name, check_factors_allowed,
                              layer_memory, layer_params, model_problem, protected_state_problem, read_terms)
from .options import check_seed, check_strength
from .task_fisher import FISHER_CHOICES, check_fisher_options, check_structure_options, task_fisher


class EWC(Regularizer):
    """EWC with separate per-task penalties.

    Args:
        strength: λ, the weight of the penalty (the paper's λ; the loss adds (λ/2)·Σ F (θ−θ*)²).
        estimator: how the Fisher is computed: ``exact`` (default), ``sampled``, ``empirical``,
            ``predicted`` or ``batched`` (see :func:`forgetless.fisher_diagonal`; ``batched`` is diagonal only).
        structure: ``diagonal`` (default) or ``kfac`` (Kronecker-factored blocks per Linear/Conv2d
            layer, the diagonal for every other parameter; see the module docstring).
        kfac_damping: with ``kfac``, d >= 0: each block G⊗A becomes (A + √d·ā·I) ⊗ (G + √d·ḡ·I), ā and ḡ
            the factors' mean diagonals (factored Tikhonov damping, :func:`forgetless.damp_kronecker`).
            The state keeps the undamped factors; the penalty keeps damped copies (as large again).
        fisher_samples: use at most this many samples of the task's data for the Fisher
            (``None``: all of it).
        seed: seeds the label draws of the ``sampled`` estimator.

    Example:
        >>> import torch, forgetless
        >>> model = torch.nn.Linear(4, 3)
        >>> ewc = forgetless.EWC(strength=100.0, structure="kfac")
        >>> float(ewc.penalty(model).detach())
        0.0
        >>> data = [(torch.randn(8, 4), torch.randint(0, 3, (8,)))]
        >>> ewc.consolidate(model, data)
        >>> float(ewc.penalty(model).detach())   # still at the anchor
        0.0
        >>> with torch.no_grad():   # the same change to every class's weights changes no prediction ...
        ...     _ = model.weight.add_(0.1)
        >>> abs(float(ewc.penalty(model).detach())) < 1e-6    # ... and K-FAC sees it (the diagonal does not)
        True
        >>> with torch.no_grad():
        ...     _ = model.weight[0].add_(0.1)
        >>> bool(ewc.penalty(model) > 0)
        True
        >>> ewc.memory()   # A (5x5) + G (3x3) + anchor (3x5), float32
        {'': {'structure': 'kfac', 'state_bytes': 196, 'parameter_bytes': 60}}
    """

    name = "ewc"
    strength_grid = tuple(10.0**k for k in range(0, 9))
    choices = FISHER_CHOICES
    # `--method ewc-kfac`: the Kronecker-factored structure, damped (the damping stays a setting), on its
    # own strength scale (see kronecker_state.KFAC_DAMPING for where the numbers come from)
    variants = {"ewc-kfac": Variant(fixed={"structure": "kfac"}, defaults={"kfac_damping": KFAC_DAMPING},
                                    strength=KFAC_STRENGTH, strength_grid=KFAC_STRENGTH_GRID)}
    _state_keys = ("importance", "anchor", "kfac_in", "kfac_out", "kfac_anchor")
    _scalar_keys = ("constant",)
    _param_shaped_keys = ("importance", "anchor")
    # what _consolidated_keys = ("anchor", "importance") would say, with the Kronecker terms counted as
    # protection too: state_problem and _check_model below
    _consolidated_keys = ()
    _nonnegative_keys = ("importance", "constant")  # a Fisher, and Σ F (θ_t − μ)²

    def __init__(
        self,
        strength: float = 1000.0,
        *,
        estimator: str = "exact",
        structure: str = "diagonal",
        kfac_damping: float = 0.0,
        fisher_samples: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.strength = check_strength("strength", strength)
        self.estimator, self.fisher_samples = check_fisher_options(estimator, fisher_samples)
        self.structure, self.kfac_damping = check_structure_options(structure, kfac_damping, self.estimator)
        self.seed = check_seed("seed", seed)
        # Diagonal part: Ω = Σ_t F_t, μ = Ω-weighted mean of the anchors, c = what is left of the per-task terms.
        self.importance: dict[str, Tensor] = {}
        self.anchor: dict[str, Tensor] = {}
        self.constant = torch.zeros(())
        # Kronecker part (structure="kfac"): per task t and layer, A, G and θ*_t ("<t>.<name>" keys).
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
        return 0.5 * self.strength * (quad + self.constant.to(quad.device))

    def quadratic(self) -> tuple[float, dict[str, Tensor], dict[str, Tensor]] | None:
        return None if self.kfac_in else (0.5 * self.strength, self.anchor, self.importance)  # c: no gradient

    def kronecker(self) -> tuple[float, list[KroneckerTerm], dict[str, Tensor], dict[str, Tensor]] | None:
        return (0.5 * self.strength, self.terms(), self.anchor, self.importance) if self.kfac_in else None

    def terms(self) -> list[KroneckerTerm]:
        """The Kronecker-factored terms, one per task, damped (empty for ``structure="diagonal"``)."""
        if self._terms is None:
            self._terms = read_terms(self.kfac_in, self.kfac_out, self.kfac_anchor, one_anchor=False,
                                     damping=self.kfac_damping)
        return self._terms

    def consolidate(
        self, model: nn.Module, data: Batches | None = None, *, output_transform: OutputTransform | None = None
    ) -> None:
        self._check_model(model)
        fisher = task_fisher(
            "EWC", model, data, estimator=self.estimator, fisher_samples=self.fisher_samples, seed=self.seed,
            task_index=self.tasks_seen, output_transform=output_transform, structure=self.structure,
        )
        theta = snapshot(model)
        if self.structure == "kfac":
            t = self.tasks_seen
            for weight, (a, g) in fisher.factors.items():
                self.kfac_in[f"{t}.{weight}"], self.kfac_out[f"{t}.{weight}"] = a, g
                for name in layer_params(weight, a, theta[weight]):
                    self.kfac_anchor[f"{t}.{name}"] = theta[name]
            fisher = fisher.diagonal
            self._terms = None
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

    def memory(self) -> dict[str, dict[str, int | str]]:
        """Per module: its structure, the bytes of state kept for it and the bytes of its parameters."""
        return layer_memory(self.terms(), self.importance, self.anchor, shared_anchor=False)

    def _check_model(self, model: nn.Module, what: str = "consolidate") -> None:
        super()._check_model(model, what)
        protected = {**self.anchor, **anchors_by_name(self.kfac_anchor, one_anchor=False)}
        problem = model_problem(model_parameters(model), protected)
        if problem:
            raise ValueError(f"EWC.{what}: {problem}")

    @classmethod
    def state_problem(cls, state) -> str | None:
        return super().state_problem(state) or protected_state_problem(state, one_anchor=False)

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        check_factors_allowed("EWC", self.structure, state)
        super().load_state_dict(state)
        self._terms = None

    def hyperparameters(self) -> dict[str, Any]:
        return {
            "strength": self.strength, "estimator": self.estimator, "structure": self.structure,
            "kfac_damping": self.kfac_damping, "fisher_samples": self.fisher_samples, "seed": self.seed,
        }
