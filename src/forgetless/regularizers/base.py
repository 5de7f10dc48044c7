"""The small lifecycle every regularizer follows, in anyone's training loop.

    reg.begin_task(model)              # optional for most; SI needs the starting point
    loss = task_loss + reg.penalty(model)
    loss.backward()
    reg.before_step(model)             # optional; with it SI keeps no copy of the weights
    opt.step()
    reg.after_step(model)              # SI accumulates its path integral here
    reg.consolidate(model, task_data)  # end of task: importance + anchor

A regularizer never stores anything on the model, never touches the optimizer or ``.grad``
(it may read ``.grad``), and keeps its state as a flat dict of tensors (``state_dict``) so that
it can be saved with safetensors or ``torch.load(weights_only=True)``.

Which parameters are protected, the same in every method:

- ``consolidate`` protects the parameters that are trainable (``requires_grad``) when it runs; a
  model with none is refused (there would be nothing to protect).
- A parameter the state does not know yet (a layer added since the last task, or one unfrozen)
  costs nothing in the penalty until the next ``consolidate``, which protects it from then on with
  that task's importance (it starts from zero importance: nothing was known about it before).
- A parameter the state protects keeps its protection when it is frozen (its constant term stays
  in the penalty; ``consolidate`` leaves its entries as they were, online EWC still decays its
  importance). It must stay in the model, by name and with its shape: anything else is a model that
  does not match the state, and ``penalty`` and ``consolidate`` raise a ``ValueError`` naming it.
"""
from __future__ import annotations

from typing import Any, Callable, ClassVar, Iterable, Mapping

import torch
from torch import Tensor, nn

from ..quadratic import add_quadratic_gradient_, mismatch
from .state_check import state_problem

Batches = Iterable[tuple[Tensor, Tensor]]
OutputTransform = Callable[[Tensor], Tensor]


def trainable_parameters(model: nn.Module) -> dict[str, Tensor]:
    """The parameters a regularizer protects: every parameter with ``requires_grad``."""
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def snapshot(model: nn.Module) -> dict[str, Tensor]:
    """A detached copy of the trainable parameters."""
    return {name: p.detach().clone() for name, p in trainable_parameters(model).items()}


def model_parameters(model: nn.Module) -> dict[str, Tensor]:
    """Every parameter by name, frozen ones included: what a penalty looks its state's names up in."""
    return dict(model.named_parameters())


def add_per_parameter(old: Mapping[str, Tensor], new: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """``old + new`` per parameter; a parameter in only one of them keeps its tensor (growing models).

    Example:
        >>> add_per_parameter({"a": torch.ones(1), "b": torch.ones(1)}, {"a": torch.ones(1), "c": torch.zeros(1)})
        {'a': tensor([2.]), 'b': tensor([1.]), 'c': tensor([0.])}
    """
    return {**old, **{name: old[name] + t if name in old else t for name, t in new.items()}}


class Regularizer:
    """Base class: a penalty that protects what earlier tasks learned.

    Subclasses set ``name``, implement ``penalty`` and ``consolidate``, and list their tensor
    state in ``_state_keys`` (attribute names holding ``dict[str, Tensor]``) and
    ``_scalar_keys`` (attribute names holding ``Tensor`` scalars), and say what a valid state is
    with the declarations below (see :mod:`.state_check`).

    A method's facts live on its class, and the runner (``forgetless run``, configs, sweeps) reads
    them from there: ``name`` (its command-line name), ``strength_grid``, ``choices``, ``variants``,
    and the constructor: ``strength`` first, its default the method's default strength; every
    other keyword parameter with a default is a hyperparameter (a config key and a flag, its help
    taken from the class docstring's ``Args:``), except ``seed``, which receives the run's seed.
    """

    name: ClassVar[str] = "base"
    # The log-spaced strengths `--strength auto` tries (λ, or c for SI), on the method's own scale.
    strength_grid: ClassVar[tuple[float, ...]] = ()
    # Allowed values of constructor options that take a name, e.g. {"estimator": ESTIMATORS}.
    choices: ClassVar[Mapping[str, tuple[str, ...]]] = {}
    # More command-line methods made of this class with some options fixed, e.g. {"ewc-kfac": {"structure": "kfac"}}.
    variants: ClassVar[Mapping[str, Mapping[str, Any]]] = {}
    _state_keys: ClassVar[tuple[str, ...]] = ()
    _scalar_keys: ClassVar[tuple[str, ...]] = ()
    # groups whose entry for a parameter has its shape; None: every group in _state_keys
    _param_shaped_keys: ClassVar[tuple[str, ...] | None] = None
    # groups with an entry for every protected parameter after the first consolidate, none before;
    # the first one is where penalty and consolidate look up which parameters are protected
    _consolidated_keys: ClassVar[tuple[str, ...]] = ()
    # groups and scalars that are >= 0 by construction
    _nonnegative_keys: ClassVar[tuple[str, ...]] = ()

    def __init__(self) -> None:
        self.tasks_seen = 0

    # --- lifecycle -------------------------------------------------------------------
    def begin_task(self, model: nn.Module) -> None:
        """Called before training on each task. No-op unless the method needs it."""

    def penalty(self, model: nn.Module) -> Tensor:
        raise NotImplementedError

    def quadratic(self) -> tuple[float, dict[str, Tensor], dict[str, Tensor] | None] | None:
        """``(scale, anchor, weight)`` when the penalty is scale·Σ w·(θ−θ*)² plus a constant (a diagonal
        quadratic; ``weight`` None: every element 1); None for other penalties. Read after ``consolidate``."""
        return None

    def add_penalty_gradient_(self, model: nn.Module) -> None:
        """Opt-in fused form of the penalty: add ∂penalty/∂θ to each trainable parameter's ``.grad``.

        Call it *instead of* adding ``penalty(model)`` to the loss, after ``loss.backward()`` and
        before ``optimizer.step()`` (and before any gradient clipping, so that clipping sees the whole
        gradient)::

            loss = task_loss(model(x), y)
            opt.zero_grad(); loss.backward()
            reg.add_penalty_gradient_(model)   # same update as with task_loss + reg.penalty(model)
            opt.step()

        The update is the same up to float rounding; what you give up is the penalty's value in the
        loss (log ``penalty(model).detach()`` if you want it). It is the one place a regularizer
        writes ``.grad``, which is why it is not the default: on the seed net (784-128-5) a step with
        it costs 1.13x a plain step, against 1.40x through autograd (``bench/bench_penalty.py``).
        Offered where the penalty is a diagonal quadratic (:meth:`quadratic`); a NotImplementedError
        otherwise (K-FAC terms).
        """
        if self.tasks_seen == 0:
            return
        quadratic = self.quadratic()
        if quadratic is None:
            raise NotImplementedError(f"{type(self).__name__}'s penalty is not a diagonal quadratic: add "
                                      "penalty(model) to the loss instead")
        scale, anchor, weight = quadratic
        add_quadratic_gradient_(model_parameters(model), anchor, weight, scale)

    def before_step(self, model: nn.Module) -> None:
        """Optional, right before each ``optimizer.step()`` (after any gradient clipping or unscaling).

        No-op unless the method can use it: SI then needs no copy of the weights before each step.
        Call it before every step of a task or before none."""

    def after_step(self, model: nn.Module) -> None:
        """Called after each ``optimizer.step()``. No-op unless the method needs it."""

    def consolidate(
        self, model: nn.Module, data: Batches | None = None, *, output_transform: OutputTransform | None = None
    ) -> None:
        raise NotImplementedError

    def hyperparameters(self) -> dict[str, Any]:
        """Every resolved setting, for results files."""
        raise NotImplementedError

    # --- helpers ---------------------------------------------------------------------
    @staticmethod
    def _zero(model: nn.Module) -> Tensor:
        p = next(model.parameters(), None)
        return torch.zeros((), device=p.device if p is not None else None)

    def _check_model(self, model: nn.Module, what: str = "consolidate") -> None:
        """Before ``what`` measures the model: it matches the state and has something to protect."""
        protected = getattr(self, self._consolidated_keys[0]) if self._consolidated_keys else {}
        params = model_parameters(model)
        for name, stored in protected.items():
            problem = mismatch(name, params.get(name), stored)
            if problem:
                raise ValueError(f"{type(self).__name__}.{what}: {problem}")
        if not any(p.requires_grad for p in params.values()):
            raise ValueError(f"{type(self).__name__}.{what}: the model has no trainable parameters (every one "
                             "has requires_grad=False), so there is nothing to protect; unfreeze the "
                             "parameters to protect first")

    # --- state -----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Tensor]:
        """Flat dict of tensors: ``"<state>.<param name>"`` plus scalars."""
        state: dict[str, Tensor] = {"tasks_seen": torch.tensor(self.tasks_seen)}
        for key in self._state_keys:
            for param, tensor in getattr(self, key).items():
                state[f"{key}.{param}"] = tensor
        for key in self._scalar_keys:
            state[key] = getattr(self, key)
        return state

    @classmethod
    def state_problem(cls, state: Mapping[str, object]) -> str | None:
        """Why ``state`` is not a valid state of this class (one line), or None.

        The one check behind :meth:`load_state_dict` and :func:`forgetless.load`; see
        :mod:`.state_check`. A class whose state has rules the declarations cannot say (groups of
        other shapes) extends it: ``return super().state_problem(state) or its own check``.
        """
        return state_problem(cls, state)

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore from ``state_dict()``; a state :meth:`state_problem` refuses is a ``ValueError``."""
        problem = self.state_problem(state)
        if problem:
            raise ValueError(f"{type(self).__name__}.load_state_dict: the state {problem}")
        groups: dict[str, dict[str, Tensor]] = {key: {} for key in self._state_keys}
        for k, v in state.items():
            head, _, param = k.partition(".")
            if head in groups:
                groups[head][param] = v.detach().clone()
        self.tasks_seen = int(state["tasks_seen"])
        for key, value in groups.items():
            setattr(self, key, value)
        for key in self._scalar_keys:
            setattr(self, key, state[key].detach().clone())

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.hyperparameters().items())
        return f"{type(self).__name__}({args})"
