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
"""
from __future__ import annotations

from typing import Any, Callable, ClassVar, Iterable

import torch
from torch import Tensor, nn

Batches = Iterable[tuple[Tensor, Tensor]]
OutputTransform = Callable[[Tensor], Tensor]


def trainable_parameters(model: nn.Module) -> dict[str, Tensor]:
    """The parameters a regularizer protects: every parameter with ``requires_grad``."""
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def snapshot(model: nn.Module) -> dict[str, Tensor]:
    """A detached copy of the trainable parameters."""
    return {name: p.detach().clone() for name, p in trainable_parameters(model).items()}


def check_strength(name: str, value: float) -> float:
    value = float(value)
    if not value >= 0 or value == float("inf"):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return value


class Regularizer:
    """Base class: a penalty that protects what earlier tasks learned.

    Subclasses set ``name``, implement ``penalty`` and ``consolidate``, and list their tensor
    state in ``_state_keys`` (attribute names holding ``dict[str, Tensor]``) and
    ``_scalar_keys`` (attribute names holding ``Tensor`` scalars).
    """

    name: ClassVar[str] = "base"
    _state_keys: ClassVar[tuple[str, ...]] = ()
    _scalar_keys: ClassVar[tuple[str, ...]] = ()
    # the groups of _state_keys shaped like the parameters (checked against each other by forgetless.load);
    # None: all of them. EWC's Kronecker factors are not.
    _param_shaped_keys: ClassVar[tuple[str, ...] | None] = None

    def __init__(self) -> None:
        self.tasks_seen = 0

    # --- lifecycle -------------------------------------------------------------------
    def begin_task(self, model: nn.Module) -> None:
        """Called before training on each task. No-op unless the method needs it."""

    def penalty(self, model: nn.Module) -> Tensor:
        raise NotImplementedError

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

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore from ``state_dict()``; unknown or missing entries are an error."""
        expected = {"tasks_seen", *self._scalar_keys}
        unknown = [k for k in state if k not in expected and k.split(".", 1)[0] not in self._state_keys]
        missing = sorted(expected - set(state))
        if unknown or missing:
            raise ValueError(
                f"{type(self).__name__}.load_state_dict: unknown keys {unknown[:5]}, missing keys {missing}"
            )
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
