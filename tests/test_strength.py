import math

import pytest

from forgetless.report import search_table
from forgetless.strength import search_strength
from forgetless.training import TrainingError


def _diverges_above(limit):
    def score(strength):
        if strength > limit:
            raise TrainingError(f"the loss became nan at strength {strength}")
        return strength
    return score


def test_diverged_strengths_are_recorded_and_never_chosen():
    search = search_strength(_diverges_above(10), [100, 1, 10, 1000])
    assert search.grid == (1, 10, 100, 1000)
    assert search.scores[:2] == (1.0, 10.0) and all(math.isnan(v) for v in search.scores[2:])
    assert search.best == 10
    record = search.as_dict()
    assert record["validation_scores"] == [1.0, 10.0, None, None]  # JSON has no NaN
    assert record["best_at_grid_edge"] is False
    table = "\n".join(search_table(record, "search", "λ"))
    assert "| 100 | diverged |" in table and "| 10 | 10.0000 ← chosen |" in table


def test_every_strength_diverging_is_an_error_naming_the_grid():
    search = search_strength(_diverges_above(0), [1, 10])
    with pytest.raises(TrainingError, match="every strength tried.*1, 10"):
        search.best


def test_winner_on_the_grid_edge_is_flagged():
    search = search_strength(lambda s: s, [1, 10, 100])
    assert search.best == 100 and search.at_edge
    assert "edge of the grid" in "\n".join(search_table(search.as_dict(), "search", "λ"))
    assert not search_strength(lambda s: -abs(s - 10), [1, 10, 100]).at_edge


def test_ties_go_to_the_smaller_strength():
    assert search_strength(lambda s: 0.5, [10, 1, 100]).best == 1
