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
