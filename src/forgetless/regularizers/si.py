"""Synaptic Intelligence (Zenke, Poole & Ganguli 2017, ICML): importance from the training path.

During task t every optimizer step adds ω_i += −g_i·Δθ_i, g the gradient the step used and Δθ the
change it made, a running estimate of how much parameter i lowered the loss. At the end of the
task Ω_i += ω_i / ((θ_i(end) − θ_i(start))² + ξ) and θ* ← θ(end); later tasks add
c·Σ_i Ω_i (θ_i − θ*_i)².

Conventions (those of van de Ven & Tolias's code for arXiv 1904.07734, ``continual-learning`` @86802a8,
``continual_learner.py`` and ``train.py``; ξ = 0.1 there too):

- the penalty is c·Σ Ω (θ−θ*)², no ½, as in Zenke et al.'s surrogate loss; c·Ω plays the role of
  EWC's (λ/2)·F, so ``strength`` values do not carry over between the two;
- g is the parameter's ``.grad`` when ``after_step`` runs (and ``before_step``, if called), i.e. the gradient of whatever was
  backpropagated (with the usual loop, task loss + SI penalty). Zenke et al.'s code uses the
  gradient of the task loss alone;
- Ω is not clipped at 0 (Zenke et al.'s code applies a ReLU; van de Ven & Tolias's does not): a parameter
  whose steps raised the loss on balance gets a negative Ω, so a saved SI state may hold negative
  importances (finite ones: NaN or ±inf is refused when a state is loaded, as for every method).

Memory. Between tasks SI keeps Ω and θ* (2x the parameters); during a task also ω. Δθ needs θ before
each step: with ``before_step`` called before every ``optimizer.step()`` (as
:func:`forgetless.training.train_task` does), ω gets +g·θ before the step and −g·θ after it, and no
copy of θ is kept (3x); with ``after_step`` alone, SI keeps a copy of θ from step to step (4x). The
difference of products loses about log10(|θ|/|Δθ|) of float32's ~7 digits of each step's −g·Δθ
(~3 with Adam at lr 1e-3): far below the noise of a path integral over thousands of steps.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..quadratic import mismatch, quadratic_penalty
from .base import (Batches, OutputTransform, Regularizer, add_per_parameter, model_parameters, snapshot,
                   trainable_parameters)
from .options import check_number, check_strength

_NOT_STARTED = "SI needs the start of each task's path: call si.begin_task(model) before each task"
_MIXED = ("SI does not know θ before this step: call si.before_step(model) before every optimizer.step() "
          "of a task, or before none")


class SI(Regularizer):
    """Synaptic Intelligence: per-parameter importance accumulated along the optimizer's path.

    Args:
        strength: c, the weight of the penalty; the loss adds c·Σ Ω (θ−θ*)² (no ½, see above).
        damping: ξ > 0, keeps Ω bounded for parameters that barely moved during a task.

    Example:
        >>> import torch, forgetless
        >>> model = torch.nn.Linear(3, 2)
        >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
        >>> si = forgetless.SI(strength=1.0, damping=0.1)
        >>> si.begin_task(model)
        >>> for _ in range(5):
        ...     loss = model(torch.randn(4, 3)).pow(2).mean() + si.penalty(model)
        ...     opt.zero_grad(); loss.backward(); opt.step()
        ...     si.after_step(model)
        >>> si.consolidate(model)
        >>> float(si.penalty(model).detach())    # at the anchor
        0.0
        >>> with torch.no_grad():
        ...     _ = model.weight.add_(0.1)
        >>> bool(si.penalty(model) > 0)
        True
    """

    name = "si"
    strength_grid = tuple(10.0**k for k in range(-2, 5))
    _state_keys = ("importance", "anchor", "path", "start", "previous")
    _consolidated_keys = ("anchor", "importance")  # Ω may be negative: none is >= 0 by construction

    def __init__(self, strength: float = 1.0, *, damping: float = 0.1) -> None:
        super().__init__()
        self.strength = check_strength("strength", strength)
        # ξ exists to bound Ω where θ(end) ≈ θ(start); ξ = 0 gives 0/0 for a parameter that never moved.
        self.damping = check_number("damping", damping, low=0.0, what="a finite number > 0")
        if self.damping == 0:
            raise ValueError(f"damping must be a finite number > 0, got {damping!r}")
        self.importance: dict[str, Tensor] = {}  # Ω, summed over finished tasks
        self.anchor: dict[str, Tensor] = {}      # θ* after the latest task
        # The current task's path; empty outside a task, so the state can be saved mid-task too.
        self.path: dict[str, Tensor] = {}        # ω
        self.start: dict[str, Tensor] = {}       # θ when the task began; empty when that is the anchor
        self.previous: dict[str, Tensor] = {}    # θ after the latest step; empty until after_step needs it
        self._at_start = True                    # no step taken yet: θ before the next step is the start
        self._stepping = False                   # before_step ran, after_step has not yet

    def begin_task(self, model: nn.Module) -> None:
        self._check_model(model, "begin_task")
        theta = snapshot(model)
        # A task usually starts where the previous one ended, at the anchor: shared, not copied.
        at_anchor = all(n in self.anchor and torch.equal(self.anchor[n], t) for n, t in theta.items())
        self.start = {} if at_anchor else theta
        self.previous, self._at_start, self._stepping = {}, True, False
        self.path = {name: torch.zeros_like(t) for name, t in theta.items()}

    def penalty(self, model: nn.Module) -> Tensor:
        if self.tasks_seen == 0:
            return self._zero(model)
        scale, anchor, weight = self.quadratic()
        return scale * quadratic_penalty(model_parameters(model), anchor, weight)

    def quadratic(self) -> tuple[float, dict[str, Tensor], dict[str, Tensor] | None]:
        return self.strength, self.anchor, self.importance

    @torch.no_grad()
    def before_step(self, model: nn.Module) -> None:
        if not self.path:
            raise RuntimeError(_NOT_STARTED)
        if self._stepping:
            raise RuntimeError("si.before_step ran twice without si.after_step in between")
        for name, param in trainable_parameters(model).items():
            if param.grad is not None:  # ω += g·θ(before); after_step subtracts g·θ(after)
                self._path_of(name, param).addcmul_(param.grad, param)
        self._stepping = True

    @torch.no_grad()
    def after_step(self, model: nn.Module) -> None:
        if not self.path:
            raise RuntimeError(_NOT_STARTED)
        params = trainable_parameters(model)
        with_before = self._stepping
        before = None if with_before else self._theta_before_step()
        for name, param in params.items():
            # A parameter without a gradient took no gradient step: it adds nothing to the path.
            if param.grad is not None:  # with before_step, g·θ(before) is already in ω
                self._path_of(name, param).addcmul_(param.grad, param if with_before else param - before[name],
                                                    value=-1.0)
        self._stepping = self._at_start = False
        if self.previous:
            for name, param in params.items():
                self.previous[name].copy_(param)
        elif not with_before:  # steps come without before_step: keep θ from now on (4x)
            self.previous = snapshot(model)

    def _path_of(self, name: str, param: Tensor) -> Tensor:
        """ω of ``name``, checked against the model (a state loaded mid-task may be another model's)."""
        omega = self.path.get(name)
        if omega is None:
            raise ValueError(f"SI: parameter {name!r} is not on this task's path (trainable only since "
                             "si.begin_task?); call si.begin_task(model) after changing the model")
        if omega.shape != param.shape:
            raise ValueError(f"SI: {mismatch(name, param, omega)}")
        return omega

    def _theta_before_step(self) -> dict[str, Tensor]:
        if self.previous:
            return self.previous
        if self._at_start:
            return self.start or self.anchor
        raise RuntimeError(_MIXED)

    def consolidate(
        self, model: nn.Module, data: Batches | None = None, *, output_transform: OutputTransform | None = None
    ) -> None:
        if not self.path:
            raise RuntimeError(_NOT_STARTED)
        self._check_model(model)
        start = self.start or self.anchor
        theta = snapshot(model)
        omegas = {name: self._path_of(name, end) / ((end - start[name]) ** 2 + self.damping)
                  for name, end in theta.items()}
        self.importance = add_per_parameter(self.importance, omegas)
        self.anchor = {**self.anchor, **theta}  # a frozen parameter keeps its anchor
        self.path, self.start, self.previous = {}, {}, {}
        self._at_start, self._stepping = True, False
        self.tasks_seen += 1

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        super().load_state_dict(state)
        # Saved mid-task without a copy of θ: the start is θ before the next step only if no step was taken.
        self._at_start = bool(self.previous) or not any(bool(w.any()) for w in self.path.values())
        self._stepping = False

    def hyperparameters(self) -> dict[str, Any]:
        return {"strength": self.strength, "damping": self.damping}
