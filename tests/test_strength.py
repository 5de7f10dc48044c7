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


@pytest.mark.parametrize("peak", range(7))
def test_local_search_finds_the_peak_of_a_single_peaked_curve_without_scoring_everything(peak):
    grid = [10.0 ** k for k in range(7)]
    calls = []

    def score(strength):
        calls.append(strength)
        return -abs(grid.index(strength) - peak)

    search = search_strength(score, grid, local=True)
    assert len(set(calls)) == len(calls) < len(grid)  # no value scored twice, and not all of them
    assert search.as_dict()["not_tried"] == sorted(set(grid) - set(calls))
    assert search.best == grid[peak] == search_strength(score, grid).best


def test_local_search_scores_three_values_when_the_middle_wins():
    search = search_strength(lambda s: -abs(s - 100), [1, 10, 100, 1000, 10000], local=True)
    assert search.best == 100 and search.as_dict()["not_tried"] == [1, 10000]


def test_local_search_goes_down_while_everything_diverges():
    search = search_strength(_diverges_above(0.05), [0.01, 0.1, 1, 10, 100, 1000], local=True)
    assert search.best == 0.01
    assert search.as_dict()["diverged"] == [0.1, 1, 10, 100] and search.as_dict()["not_tried"] == [1000]
    with pytest.raises(TrainingError, match="every strength tried"):
        search_strength(_diverges_above(-1), [1, 10, 100], local=True).best
