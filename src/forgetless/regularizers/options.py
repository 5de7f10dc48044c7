"""Checks for regularizer constructor arguments: refused when given, not when they first break a run.

Numbers are real numbers (``bool`` is not one, nor is a string that looks like one), finite, and in
range; counts and seeds are integers (``2.5`` samples or seed ``1.5`` are refused, not rounded).
"""
from __future__ import annotations

import math
import numbers


def check_strength(name: str, value: object) -> float:
    """A finite number >= 0, as a float.

    Example:
        >>> check_strength("strength", 3)
        3.0
        >>> check_strength("strength", True)
        Traceback (most recent call last):
        ...
        ValueError: strength must be a finite number >= 0, got True
    """
    return check_number(name, value, low=0.0, what="a finite number >= 0")


def check_number(name: str, value: object, *, low: float, high: float = math.inf, what: str) -> float:
    """A finite real number in [low, high], as a float; ``what`` describes the range in the message."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        number = float(value)
        if math.isfinite(number) and low <= number <= high:
            return number
    raise ValueError(f"{name} must be {what}, got {value!r}")


def check_count(name: str, value: object) -> int | None:
    """``None`` (no limit) or an integer >= 1.

    Example:
        >>> check_count("fisher_samples", 2.5)
        Traceback (most recent call last):
        ...
        ValueError: fisher_samples must be an integer >= 1 or None, got 2.5
    """
    if value is None:
        return None
    if isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 1:
        return int(value)
    raise ValueError(f"{name} must be an integer >= 1 or None, got {value!r}")


def check_seed(name: str, value: object) -> int:
    """An integer in [0, 2**62): ``torch.Generator.manual_seed`` takes it, with room for ``+ task index``."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool) and 0 <= value < 2**62:
        return int(value)
    raise ValueError(f"{name} must be an integer in [0, 2**62), got {value!r}")
