"""Statistics over seeds: THE place a table's "mean ± std" (and its standard error) is computed."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def over_seeds(values: Sequence[float]) -> dict[str, float]:
    """Mean, sample standard deviation (ddof=1; 0 with one seed), standard error of the mean and
    the number of seeds ``n``. A NaN value (an undefined metric, e.g. a validation score without a
    validation split) makes mean, std and sem NaN.

    Example:
        >>> s = over_seeds([0.5, 0.7, 0.9])
        >>> round(s["mean"], 6), round(s["std"], 6), round(s["sem"], 6), s["n"]
        (0.7, 0.2, 0.11547, 3)
        >>> over_seeds([0.8])
        {'mean': 0.8, 'std': 0.0, 'sem': 0.0, 'n': 1}
    """
    a = np.asarray(values, dtype=float)
    if a.ndim != 1 or len(a) == 0:
        raise ValueError(f"over_seeds needs a non-empty list of values, got shape {a.shape}")
    # one seed: no spread to measure (0), unless the value itself is undefined
    std = float(a.std(ddof=1)) if len(a) > 1 else (0.0 if np.isfinite(a).all() else math.nan)
    return {"mean": float(a.mean()), "std": std, "sem": std / math.sqrt(len(a)), "n": len(a)}


def elementwise_over_seeds(arrays: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sample standard deviation (ddof=1; 0 with one seed) of equally shaped arrays, element
    by element (e.g. the accuracy matrices of the seeds).

    Example:
        >>> mean, std = elementwise_over_seeds([np.array([0.5, 1.0]), np.array([0.7, 1.0])])
        >>> mean.tolist(), [round(v, 6) for v in std.tolist()]
        ([0.6, 1.0], [0.141421, 0.0])
    """
    a = np.asarray(arrays, dtype=float)
    std = a.std(axis=0, ddof=1) if len(a) > 1 else np.zeros(a.shape[1:])
    return a.mean(axis=0), std


def undefined(n: int = 0) -> dict[str, float]:
    """The statistic of a metric with no value to average (e.g. no finished seed)."""
    return {"mean": math.nan, "std": math.nan, "sem": math.nan, "n": n}


def sem_or_none(stat: dict[str, float]) -> float | None:
    """A statistic's standard error, or None where it measures nothing: fewer than two seeds (no spread
    was observed, so 0 would claim a precision nobody measured), or an undefined value.

    Example:
        >>> sem_or_none(over_seeds([0.5, 0.7, 0.9])) == over_seeds([0.5, 0.7, 0.9])["sem"]
        True
        >>> sem_or_none(over_seeds([0.8])) is None, sem_or_none({"mean": 0.8, "std": 0.1}) is None
        (True, True)
    """
    sem, n = stat.get("sem"), stat.get("n")
    if sem is None or n is None or n < 2 or not math.isfinite(sem):
        return None
    return float(sem)


def difference(ours: float, ours_sem: float | None, theirs: float, theirs_sem: float | None) -> dict[str, float | None]:
    """``ours - theirs`` and the same difference in units of the combined standard error
    √(SEM_ours² + SEM_theirs²) (``z``); ``combined_se`` and ``z`` are None when either SEM is unknown.

    Example:
        >>> d = difference(98.90, 0.19, 98.64, 0.22)   # split MNIST Task-IL EWC, ours vs published
        >>> round(d["difference"], 2), round(d["combined_se"], 4), round(d["z"], 2)
        (0.26, 0.2907, 0.89)
        >>> difference(90.0, 3.0, 86.0, 4.0)   # a 3-4-5 triangle: 4 points are 0.8 combined SEs
        {'difference': 4.0, 'combined_se': 5.0, 'z': 0.8}
        >>> difference(88.9, None, 94.31, 0.11)["z"] is None
        True
    """
    diff = ours - theirs
    if ours_sem is None or theirs_sem is None:
        return {"difference": diff, "combined_se": None, "z": None}
    combined = math.hypot(ours_sem, theirs_sem)
    return {"difference": diff, "combined_se": combined, "z": diff / combined if combined > 0 else None}
