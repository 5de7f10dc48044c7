"""What a valid regularizer state is: the one check behind ``load_state_dict`` and ``forgetless.load``.

A state (``Regularizer.state_dict()``) is a flat dict of tensors: ``tasks_seen``, the class's scalars
(``_scalar_keys``) and one ``"<group>.<parameter name>"`` entry per parameter for each group in
``_state_keys``. A class declares on itself what else holds:

- ``_param_shaped_keys``: groups whose entry for a parameter has that parameter's shape (default:
  every group). A group of other shapes (e.g. Kronecker factors) is left out of it, and the class
  checks it by extending :meth:`Regularizer.state_problem`.
- ``_consolidated_keys``: groups with an entry for every protected parameter once a task is
  consolidated and none before; so with ``tasks_seen`` 0 they are all empty, else they all name the
  same parameters (a missing anchor would leave its parameter silently unprotected).
- ``_nonnegative_keys``: groups and scalars that are >= 0 by construction (a Fisher, MAS's Ω, EWC's
  constant). SI's Ω is not among them: it may be negative (see :mod:`forgetless.regularizers.si`).

Every entry but ``tasks_seen`` (an integer >= 0) is a finite floating-point tensor.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Mapping

import torch
from torch import Tensor

if TYPE_CHECKING:
    from .base import Regularizer


def state_problem(cls: type[Regularizer], state: Mapping[str, object]) -> str | None:
    """What is wrong with ``state`` as a state of ``cls`` (one line), or None when nothing is.

    Example:
        >>> import torch, forgetless
        >>> good = forgetless.L2().state_dict()
        >>> state_problem(forgetless.L2, good) is None
        True
        >>> state_problem(forgetless.L2, {"tasks_seen": torch.tensor(1)})
        "has tasks_seen=1 but no 'anchor' entries"
    """
    scalars = {"tasks_seen", *cls._scalar_keys}
    unknown = sorted(k for k in state if k not in scalars and not _group_key(cls, k))
    missing = sorted(scalars - set(state))
    if unknown or missing:
        return f"has unknown entries {unknown[:5]} / lacks {missing}"
    for key, value in state.items():
        if not isinstance(value, Tensor):
            return f"entry {key!r} is a {type(value).__name__}, not a tensor"
    for key in scalars:
        if state[key].dim() != 0:
            return f"entry {key!r} must be a scalar, got shape {tuple(state[key].shape)}"
    seen = state["tasks_seen"]
    if seen.is_floating_point() or seen.is_complex() or seen.dtype == torch.bool or int(seen) < 0:
        return f"entry 'tasks_seen' must be an integer >= 0, got {seen.item()!r} ({seen.dtype})"
    return _values_problem(cls, state) or _groups_problem(cls, state, int(seen))


def _group_key(cls: type[Regularizer], key: str) -> bool:
    head, dot, param = key.partition(".")
    return bool(dot and param) and head in cls._state_keys


def _values_problem(cls: type[Regularizer], state: Mapping[str, Tensor]) -> str | None:
    for key, value in state.items():
        if key == "tasks_seen":
            continue
        if not value.is_floating_point():
            return f"entry {key!r} must be floating point, got {value.dtype}"
        if not bool(torch.isfinite(value).all()):
            return f"entry {key!r} holds NaN or infinite values"
        if key.partition(".")[0] in cls._nonnegative_keys and bool((value < 0).any()):
            return f"entry {key!r} has negative values ({cls.__name__}'s {key.partition('.')[0]} is >= 0)"
    return None


def _groups_problem(cls: type[Regularizer], state: Mapping[str, Tensor], tasks_seen: int) -> str | None:
    groups: dict[str, dict[str, Tensor]] = {key: {} for key in cls._state_keys}
    for key, value in state.items():
        head, _, param = key.partition(".")
        if head in groups:
            groups[head][param] = value
    consolidated = cls._consolidated_keys
    if tasks_seen == 0:
        filled = [key for key in consolidated if groups[key]]
        if filled:
            return f"has {filled[0]!r} entries but tasks_seen is 0"
    else:
        empty = [key for key in consolidated if not groups[key]]
        if empty:
            return f"has tasks_seen={tasks_seen} but no {empty[0]!r} entries"
        first = consolidated[0] if consolidated else None
        for key in consolidated[1:]:
            only = sorted(set(groups[first]) ^ set(groups[key]))
            if only:
                where = first if only[0] in groups[first] else key
                return f"groups {first!r} and {key!r} name different parameters ({only[0]!r} is in {where!r} only)"
    shapes: dict[str, tuple[str, torch.Size]] = {}
    shaped = cls._state_keys if cls._param_shaped_keys is None else cls._param_shaped_keys
    for key in shaped:
        for param, value in groups[key].items():
            other, shape = shapes.setdefault(param, (key, value.shape))
            if value.shape != shape:
                return (f"parameter {param!r} has shape {tuple(shape)} in {other!r} but "
                        f"{tuple(value.shape)} in {key!r}")
    return None
