"""Choosing a regularization strength on validation data (never on test data)."""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Callable, Sequence

from .training import TrainingError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StrengthSearch:
    """The whole curve and the winner: ``scores[i]`` is the validation score of ``grid[i]``."""

    grid: tuple[float, ...]
    scores: tuple[float, ...]  # NaN where training at that strength diverged

    @property
    def best(self) -> float:
        # Ties go to the smaller strength: the least constrained model that does as well.
        finite = [v for v in self.scores if not math.isnan(v)]
        if not finite:
            raise TrainingError(f"training diverged at every strength tried ({', '.join(f'{s:g}' for s in self.grid)})")
        best_score = max(finite)
        return next(s for s, v in zip(self.grid, self.scores) if v == best_score)

    @property
    def at_edge(self) -> bool:
        """True when the winner is the smallest or largest value tried: the grid may be too narrow."""
        return len(self.grid) > 1 and self.best in (self.grid[0], self.grid[-1])

    def as_dict(self) -> dict:
        # NaN is not JSON: a diverged strength is written as null.
        scores = [None if math.isnan(v) else v for v in self.scores]
        return {"grid": list(self.grid), "validation_scores": scores, "best": self.best, "best_at_grid_edge": self.at_edge}


def check_grid(grid: Sequence[float]) -> None:
    """A strength grid is a non-empty list of finite strengths >= 0 (ValueError otherwise)."""
    if not grid or not all(0 <= v < math.inf for v in grid):
        raise ValueError(f"strength_grid must list finite strengths >= 0, got {list(grid)}")


def search_strength(score: Callable[[float], float], grid: Sequence[float]) -> StrengthSearch:
    """Evaluate ``score(strength)`` (higher is better) on every value of ``grid``.

    A strength whose training diverges (:class:`TrainingError`, e.g. a NaN loss at a huge λ) scores
    NaN and is never chosen; the search goes on with the other values.

    Example:
        >>> search_strength(lambda s: -abs(s - 10), [1, 10, 100]).best
        10
    """
    if not grid:
        raise ValueError("the strength grid is empty")
    values = tuple(sorted(grid))
    scores = []
    for strength in values:
        try:
            scores.append(float(score(strength)))
        except TrainingError as err:
            log.warning("strength %g diverged, skipped: %s", strength, err)
            scores.append(math.nan)
    return StrengthSearch(values, tuple(scores))
