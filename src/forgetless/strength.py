"""Choosing a regularization strength on validation data (never on test data)."""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

from .training import TrainingError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StrengthSearch:
    """The curve and the winner: ``scores[i]`` is the validation score of ``grid[i]``, NaN where
    training at that strength diverged, None where a local search did not need to try it."""

    grid: tuple[float, ...]
    scores: tuple[float | None, ...]

    @property
    def best(self) -> float:
        # Ties go to the smaller strength: the least constrained model that does as well.
        best = _best(dict(zip(self.grid, self.scores)))
        if best is None:
            raise TrainingError(f"training diverged at every strength tried ({', '.join(f'{s:g}' for s in self.grid)})")
        return best

    @property
    def at_edge(self) -> bool:
        """True when the winner is the smallest or largest value of the grid: the grid may be too narrow."""
        return len(self.grid) > 1 and self.best in (self.grid[0], self.grid[-1])

    def as_dict(self) -> dict:
        # NaN is not JSON: a diverged or untried strength is written as null, and listed.
        scores = [None if v is None or math.isnan(v) else v for v in self.scores]
        return {"grid": list(self.grid), "validation_scores": scores,
                "diverged": [s for s, v in zip(self.grid, self.scores) if v is not None and math.isnan(v)],
                "not_tried": [s for s, v in zip(self.grid, self.scores) if v is None],
                "best": self.best, "best_at_grid_edge": self.at_edge}


def _best(scores: Mapping[float, float | None]) -> float | None:
    finite = {s: v for s, v in scores.items() if v is not None and not math.isnan(v)}
    if not finite:
        return None
    top = max(finite.values())
    return min(s for s, v in finite.items() if v == top)


def next_to_try(grid: Sequence[float], scores: Mapping[float, float]) -> list[float]:
    """A local search over the sorted ``grid``: the strengths to score next, given ``scores`` so far
    (NaN where training diverged); ``[]`` when done.

    It starts with the middle value and its two neighbours, then scores the untried neighbours of the
    best value so far, until the best has both neighbours scored or is at an end of the grid. On a
    validation curve with a single peak (every seed we measured) it picks what scoring the whole grid
    picks, trying 3-4 of the 6 default values of ``forgetless seed``. While every value tried has
    diverged it goes on downwards: a penalty too strong is what makes training diverge.

    Example:
        >>> next_to_try([1, 10, 100, 1000, 10000], {})
        [10, 100, 1000]
        >>> next_to_try([1, 10, 100, 1000, 10000], {10: 0.5, 100: 0.7, 1000: 0.8})
        [10000]
    """
    grid = sorted(grid)
    if not scores:
        mid = len(grid) // 2
        return grid[max(0, mid - 1): mid + 2]
    best = _best(scores)
    if best is None:
        lower = [s for s in grid if s < min(scores)]
        return lower[-1:]
    i = grid.index(best)
    return [grid[j] for j in (i - 1, i + 1) if 0 <= j < len(grid) and grid[j] not in scores]


def check_grid(grid: Sequence[float], name: str = "strength_grid") -> None:
    """A strength grid (the setting ``name``) is a non-empty list of finite strengths >= 0 (ValueError otherwise)."""
    if not grid or not all(0 <= v < math.inf for v in grid):
        raise ValueError(f"{name} must list finite strengths >= 0, got {list(grid)}")


class Search:
    """A strength search in progress: which strengths to train first, and, as their validation
    scores come in (in any order, e.g. from worker processes), which to train next.

    Example:
        >>> search = Search([1, 10, 100, 1000, 10000], local=True)
        >>> search.first()
        [10, 100, 1000]
        >>> search.record(10, 0.5), search.record(1000, 0.8), search.record(100, 0.7)
        ([], [], [10000])
        >>> search.record(10000, 0.6), search.result().best
        ([], 1000)
    """

    def __init__(self, grid: Sequence[float], *, local: bool = False) -> None:
        if not grid:
            raise ValueError("the strength grid is empty")
        self.grid = tuple(sorted(grid))
        self.local = local
        self.scores: dict[float, float] = {}
        self.started: set[float] = set()

    def first(self) -> list[float]:
        """The strengths to train before any score is known."""
        todo = next_to_try(self.grid, {}) if self.local else list(self.grid)
        self.started.update(todo)
        return todo

    def record(self, strength: float, score: float) -> list[float]:
        """Note ``strength``'s score (NaN: diverged); returns the strengths to train next (often none)."""
        self.scores[strength] = score
        if not self.local or len(self.scores) < len(self.started):
            return []
        more = next_to_try(self.grid, self.scores)
        self.started.update(more)
        return more

    def result(self) -> StrengthSearch:
        return StrengthSearch(self.grid, tuple(self.scores.get(v) for v in self.grid))


def search_strength(score: Callable[[float], float], grid: Sequence[float], *, local: bool = False) -> StrengthSearch:
    """Evaluate ``score(strength)`` (higher is better) on every value of ``grid``, or only where the
    local search :func:`next_to_try` leads (``local=True``), one after another.

    A strength whose training diverges (:class:`TrainingError`, e.g. a NaN loss at a huge λ) scores
    NaN and is never chosen; the search goes on with the other values.

    Example:
        >>> search_strength(lambda s: -abs(s - 10), [1, 10, 100]).best
        10
    """
    search = Search(grid, local=local)
    todo = search.first()
    while todo:
        todo = [more for strength in todo for more in search.record(strength, score_or_nan(score, strength))]
    return search.result()


def score_or_nan(score: Callable[[float], float], strength: float) -> float:
    """``score(strength)``, or NaN (logged) when training at that strength diverged."""
    try:
        return float(score(strength))
    except TrainingError as err:
        log.warning("strength %g diverged, skipped: %s", strength, err)
        return math.nan
