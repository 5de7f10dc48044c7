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

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterable, Mapping

import torch
from torch import Tensor, nn

from ..quadratic import add_quadratic_gradient_, mismatch
from .state_check import state_problem

if TYPE_CHECKING:
    from ..kronecker import KroneckerTerm

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


def parameters_named(model: nn.Module, names: Iterable[str]) -> dict[str, Tensor]:
    """The model's parameters of these names, each looked up along its dotted path; when a name does not
    resolve to a registered parameter of its own, every parameter by name (:func:`model_parameters`), so
    that the caller's check names what is wrong exactly as it does for the penalty.

    The per-step path of the fused penalty: walking ``named_parameters()`` cost 2-3% of a seed-net step
    (784-128-5, 1 thread, in a step), a few dict lookups per name nothing measurable.

    Example:
        >>> model = nn.Sequential(nn.Linear(2, 2))
        >>> list(parameters_named(model, ["0.bias"]))
        ['0.bias']
        >>> sorted(parameters_named(model, ["1.bias"]))   # no such layer: every parameter, for the check
        ['0.bias', '0.weight']
    """
    found: dict[str, Tensor] = {}
    for name in names:
        path, _, key = name.rpartition(".")
        module: nn.Module | None = model
        for part in path.split(".") if path else ():
            module = getattr(module, "_modules", {}).get(part)
        p = getattr(module, "_parameters", {}).get(key)
        if p is None:
            return model_parameters(model)
        found[name] = p
    if len({id(p) for p in found.values()}) < len(found):  # one tensor under two names: named_parameters lists one
        return model_parameters(model)
    return found


def add_per_parameter(old: Mapping[str, Tensor], new: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """``old + new`` per parameter; a parameter in only one of them keeps its tensor (growing models).

    Example:
        >>> add_per_parameter({"a": torch.ones(1), "b": torch.ones(1)}, {"a": torch.ones(1), "c": torch.zeros(1)})
        {'a': tensor([2.]), 'b': tensor([1.]), 'c': tensor([0.])}
    """
    return {**old, **{name: old[name] + t if name in old else t for name, t in new.items()}}


@dataclass(frozen=True)
class Variant:
    """A command-line method made of a regularizer class (an entry of its ``variants``).

    Attributes:
        fixed: constructor options set for good; they are no longer settings of the method
            (e.g. ``{"structure": "kfac"}``).
        defaults: constructor options that stay settings of the method, with the variant's own
            default (e.g. ``{"kfac_damping": 0.3}``).
        strength: its default strength (None: the class's).
        strength_grid: the strengths ``--strength auto`` tries (None: the class's), when the
            variant's penalty is on another scale than the class's.

    Example:
        >>> Variant(fixed={"structure": "kfac"}, strength=31.6).defaults
        {}
    """

    fixed: Mapping[str, Any] = field(default_factory=dict)
    defaults: Mapping[str, Any] = field(default_factory=dict)
    strength: float | None = None
    strength_grid: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        strengths = [*([] if self.strength is None else [self.strength]), *(self.strength_grid or ())]
        if self.strength_grid == () or not all(0 <= float(v) < float("inf") for v in strengths):
            raise ValueError(f"a variant's strength and strength grid are finite numbers >= 0, got "
                             f"{self.strength!r} and {self.strength_grid!r}")


def as_variant(spec: Mapping[str, Any] | Variant) -> Variant:
    """A ``variants`` entry as a :class:`Variant`: a plain mapping is the options it fixes."""
    return spec if isinstance(spec, Variant) else Variant(fixed=dict(spec))


class Regularizer:
    """Base class: a penalty that protects what earlier tasks learned.

    Subclasses set ``name``, implement ``penalty`` and ``consolidate``, and list their tensor
    state in ``_state_keys`` (attribute names holding ``dict[str, Tensor]``) and
    ``_scalar_keys`` (attribute names holding ``Tensor`` scalars), and say what a valid state is
    with the declarations below (see :mod:`.state_check`).

    A method's facts live on its class, and the runner (``forgetless run``, configs, sweeps) reads
    them from there: ``name`` (its command-line name), ``strength_grid``, ``choices``, ``variants``
    (more command-line methods made of the class, each a mapping of fixed options or a :class:`Variant`),
    and the constructor: ``strength`` first, its default the method's default strength; every
    other keyword parameter with a default is a hyperparameter (a config key and a flag, its help
    taken from the class docstring's ``Args:``), except ``seed``, which receives the run's seed.
    """

    name: ClassVar[str] = "base"
    # The log-spaced strengths `--strength auto` tries (λ, or c for SI), on the method's own scale.
    strength_grid: ClassVar[tuple[float, ...]] = ()
    # Allowed values of constructor options that take a name, e.g. {"estimator": ESTIMATORS}.
    choices: ClassVar[Mapping[str, tuple[str, ...]]] = {}
    # More command-line methods made of this class: name -> the options it fixes (a mapping), or a Variant
    # (options fixed, others with new defaults, its own default strength and grid); see EWC.variants.
    variants: ClassVar[Mapping[str, Mapping[str, Any] | Variant]] = {}
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

    def kronecker(self) -> tuple[float, list[KroneckerTerm], dict[str, Tensor], dict[str, Tensor]] | None:
        """``(scale, terms, anchor, weight)`` when the penalty is scale·(Σ_terms Σ_layers tr(G ΔW̄ A ΔW̄ᵀ)
        + Σ w·(θ−θ*)²) plus a constant, with Kronecker-factored terms (as the penalty uses them, damped);
        None for other penalties (:meth:`quadratic` covers the diagonal ones). Read after ``consolidate``."""
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
        it cost 1.15x a plain step at 2 threads (1.17x at 1), against 1.40x through autograd
        (``bench/bench_penalty.py --networks seed --sections 2``, quiet machine).
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
        add_quadratic_gradient_(parameters_named(model, anchor), anchor, weight, scale)

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

    def memory(self) -> dict[str, dict[str, int | str]]:
        """Per module (a parameter's name up to its last dot): the structure of its state, the bytes of
        state kept for it and the bytes of its protected parameters, for results files.

        Here every state group holds one tensor per parameter; EWC and online EWC with
        ``structure="kfac"`` count their Kronecker factors too.

        Example:
            >>> import torch, forgetless
            >>> l2 = forgetless.L2(strength=1.0)
            >>> l2.consolidate(torch.nn.Linear(4, 3))
            >>> l2.memory()   # its anchor: weight (3x4) and bias (3), float32
            {'': {'structure': 'diagonal', 'state_bytes': 60, 'parameter_bytes': 60}}
        """
        out: dict[str, dict[str, int | str]] = {}
        sizes: dict[str, int] = {}
        for key in self._state_keys:
            for name, tensor in getattr(self, key).items():
                entry = out.setdefault(name.rpartition(".")[0],
                                       {"structure": "diagonal", "state_bytes": 0, "parameter_bytes": 0})
                entry["state_bytes"] += tensor.numel() * tensor.element_size()
                sizes[name] = tensor.numel() * tensor.element_size()
        for name, size in sizes.items():
            out[name.rpartition(".")[0]]["parameter_bytes"] += size
        return out

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
