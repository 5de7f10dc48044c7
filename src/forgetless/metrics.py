"""Continual-learning metrics: pure functions of the accuracy matrix.

``R`` is a (T, T) array with ``R[t, k]`` = test accuracy on task k after training on tasks 0..t,
values in [0, 1]. Row t is one evaluation of every task (learned or not yet) after task t; the
diagonal is each task just after it was learned; the last row is the end of the run.

Every function validates its input (2-D, square, finite, in [0, 1]; ``ValueError`` otherwise),
never modifies it, and returns a Python float. Metrics that compare against earlier tasks
(forgetting, backward and forward transfer) have no tasks to average over when T = 1: they
return ``nan`` there rather than raise, so that ``summarize`` works on one-task runs.

Beside R, the loss matrix ``L[t, k]`` = mean test loss (cross-entropy in nats, per sample or per
byte) on task k after training on tasks 0..t: lower is better, values >= 0, NaN where the loss is
undefined (class-incremental, a task whose classes are not among the active outputs: a metric that reads
such a cell is NaN). The metrics above
assume higher is better, so the loss has its own (:func:`average_loss`, :func:`loss_forgetting`).
"""
from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "average_accuracy", "average_forgetting", "average_loss", "backward_transfer", "forward_transfer",
    "loss_forgetting", "newest_task_accuracy", "old_tasks_accuracy", "summarize", "summarize_losses",
]


def _check_probabilities(name: str, values: np.ndarray) -> None:
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{name} must be finite")
    if values.size and (values.min() < 0 or values.max() > 1):
        raise ValueError(f"{name} holds accuracies, which must lie in [0, 1]; got range "
                         f"[{values.min():g}, {values.max():g}]")


def _matrix(R: ArrayLike) -> np.ndarray:
    # np.array copies, so nothing below can write into the caller's array.
    R = np.array(R, dtype=np.float64)
    if R.ndim != 2 or R.shape[0] != R.shape[1] or R.shape[0] == 0:
        raise ValueError(f"R must be a non-empty square (T, T) matrix, got shape {R.shape}")
    _check_probabilities("R", R)
    return R


def _loss_matrix(L: ArrayLike) -> np.ndarray:
    L = np.array(L, dtype=np.float64)
    if L.ndim != 2 or L.shape[0] != L.shape[1] or L.shape[0] == 0:
        raise ValueError(f"L must be a non-empty square (T, T) matrix, got shape {L.shape}")
    defined = L[~np.isnan(L)]  # NaN: an undefined loss (a target that is not among the outputs)
    if not np.all(np.isfinite(defined)) or (defined < 0).any():
        raise ValueError("L holds losses, which must be finite and >= 0 (or NaN where undefined)")
    return L


def average_accuracy(R: ArrayLike) -> float:
    """Mean accuracy over all tasks after the last one: (1/T) Σ_k R[T−1, k].

    Example:
        >>> average_accuracy([[0.9, 0.1], [0.6, 0.8]])
        0.7
    """
    R = _matrix(R)
    return float(R[-1].mean())


def old_tasks_accuracy(R: ArrayLike) -> float:
    """Mean accuracy on the earlier tasks after the last one (stability): (1/(T−1)) Σ_{k<T−1} R[T−1, k].

    ``nan`` when T = 1 (there is no earlier task).

    Example:
        >>> old_tasks_accuracy([[0.9, 0.1, 0.0], [0.8, 0.9, 0.1], [0.6, 0.7, 1.0]])
        0.6499999999999999
    """
    R = _matrix(R)
    return float(R[-1, :-1].mean()) if len(R) > 1 else math.nan


def newest_task_accuracy(R: ArrayLike) -> float:
    """Accuracy on the last task just after learning it (plasticity): R[T−1, T−1].

    Example:
        >>> newest_task_accuracy([[0.9, 0.1], [0.6, 0.8]])
        0.8
    """
    return float(_matrix(R)[-1, -1])


def average_forgetting(R: ArrayLike) -> float:
    """Mean drop from each old task's best accuracy to its final one (Chaudhry et al. 2018, RWalk).

    (1/(T−1)) Σ_{k<T−1} [max_{t<T−1} R[t, k] − R[T−1, k]]. As in the paper the max runs over every
    earlier evaluation, including those before task k was learned. ``nan`` when T = 1.

    Example:
        >>> round(average_forgetting([[0.9, 0.1], [0.6, 0.8]]), 6)
        0.3
    """
    R = _matrix(R)
    if len(R) == 1:
        return math.nan
    best = R[:-1, :-1].max(axis=0)
    return float((best - R[-1, :-1]).mean())


def backward_transfer(R: ArrayLike) -> float:
    """Mean change on old tasks since they were learned (Lopez-Paz & Ranzato 2017, GEM).

    (1/(T−1)) Σ_{k<T−1} [R[T−1, k] − R[k, k]]; negative values are forgetting. ``nan`` when T = 1.

    Example:
        >>> round(backward_transfer([[0.9, 0.1], [0.6, 0.8]]), 6)
        -0.3
    """
    R = _matrix(R)
    if len(R) == 1:
        return math.nan
    return float((R[-1, :-1] - np.diag(R)[:-1]).mean())


def forward_transfer(R: ArrayLike, baseline: ArrayLike) -> float:
    """Mean head start on each task before it is learned (Lopez-Paz & Ranzato 2017, GEM).

    (1/(T−1)) Σ_{k≥1} [R[k−1, k] − b[k]], with ``baseline`` b[k] the accuracy on task k of the
    randomly initialised model (b[0] is not used but must be given). ``nan`` when T = 1.

    Example:
        >>> round(forward_transfer([[0.9, 0.3], [0.6, 0.8]], [0.5, 0.2]), 6)
        0.1
    """
    R = _matrix(R)
    b = np.array(baseline, dtype=np.float64)
    if b.shape != (len(R),):
        raise ValueError(f"baseline must have one accuracy per task, shape ({len(R)},), got {b.shape}")
    _check_probabilities("baseline", b)
    if len(R) == 1:
        return math.nan
    return float((np.diag(R, k=1) - b[1:]).mean())


def average_loss(L: ArrayLike) -> float:
    """Mean loss over all tasks after the last one: (1/T) Σ_k L[T−1, k] (lower is better).

    Example:
        >>> average_loss([[1.5, 5.5], [1.9, 1.3]])
        1.6
    """
    return float(_loss_matrix(L)[-1].mean())


def loss_forgetting(L: ArrayLike) -> float:
    """Mean rise of each old task's loss from just after learning it to after the last task.

    (1/(T−1)) Σ_{k<T−1} [L[T−1, k] − L[k, k]]: positive values are forgetting (the loss went up),
    negative ones backward transfer. ``nan`` when T = 1.

    Example:
        >>> round(loss_forgetting([[1.5, 5.5], [1.9, 1.3]]), 6)
        0.4
        >>> round(loss_forgetting([[1.0, 4.0, 4.0], [1.5, 2.0, 4.0], [1.2, 2.6, 0.9]]), 6)  # (0.2 + 0.6) / 2
        0.4
        >>> nan = float("nan")
        >>> round(loss_forgetting([[1.0, nan, nan], [1.5, 2.0, nan], [1.2, 2.6, 0.9]]), 6)  # class-incremental
        0.4
    """
    L = _loss_matrix(L)
    if len(L) == 1:
        return math.nan
    return float((L[-1, :-1] - np.diag(L)[:-1]).mean())


def summarize_losses(L: ArrayLike) -> dict[str, float]:
    """The loss metrics by name.

    Example:
        >>> {k: round(v, 6) for k, v in summarize_losses([[1.5, 5.5], [1.9, 1.3]]).items()}
        {'average_loss': 1.6, 'loss_forgetting': 0.4}
    """
    return {"average_loss": average_loss(L), "loss_forgetting": loss_forgetting(L)}


def summarize(R: ArrayLike, baseline: ArrayLike | None = None) -> dict[str, float]:
    """All the metrics above by name; ``forward_transfer`` only when ``baseline`` is given.

    Example:
        >>> {k: round(v, 6) for k, v in summarize([[0.9, 0.1], [0.6, 0.8]]).items()}
        {'average_accuracy': 0.7, 'average_forgetting': 0.3, 'backward_transfer': -0.3}
    """
    summary = {
        "average_accuracy": average_accuracy(R),
        "average_forgetting": average_forgetting(R),
        "backward_transfer": backward_transfer(R),
    }
    if baseline is not None:
        summary["forward_transfer"] = forward_transfer(R, baseline)
    return summary
