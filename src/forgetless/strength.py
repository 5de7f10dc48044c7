"""Choosing a regularization strength on validation data (never on test data)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence


@dataclass(frozen=True)
class StrengthSearch:
    """The whole curve and the winner: ``scores[i]`` is the validation score of ``grid[i]``."""

    grid: tuple[float, ...]
    scores: tuple[float, ...]

    @property
    def best(self) -> float:
        # Ties go to the smaller strength: the least constrained model that does as well.
        best_score = max(self.scores)
        return next(s for s, v in zip(self.grid, self.scores) if v == best_score)

    def as_dict(self) -> dict:
        return {"grid": list(self.grid), "validation_scores": list(self.scores), "best": self.best}


def search_strength(score: Callable[[float], float], grid: Sequence[float]) -> StrengthSearch:
    """Evaluate ``score(strength)`` (higher is better) on every value of ``grid``.

    Example:
        >>> search_strength(lambda s: -abs(s - 10), [1, 10, 100]).best
        10
    """
    if not grid:
        raise ValueError("the strength grid is empty")
    values = tuple(sorted(grid))
    return StrengthSearch(values, tuple(float(score(s)) for s in values))
