import math

import numpy as np
import pytest

from forgetless import metrics
from forgetless.metrics import (
    average_accuracy,
    average_forgetting,
    backward_transfer,
    forward_transfer,
    newest_task_accuracy,
    old_tasks_accuracy,
    summarize,
)

# R[t, k]: accuracy on task k after training task t. Expected values are worked out by hand.
R3 = np.array([
    [0.9, 0.2, 0.1],
    [0.7, 0.8, 0.3],
    [0.5, 0.6, 0.9],
])
B3 = np.array([0.3, 0.1, 0.2])  # a random-init model's accuracy per task


def test_average_accuracy_is_mean_of_last_row():
    assert average_accuracy(R3) == pytest.approx((0.5 + 0.6 + 0.9) / 3)


def test_stability_and_plasticity_by_hand():
    assert old_tasks_accuracy(R3) == pytest.approx((0.5 + 0.6) / 2)  # tasks 0 and 1 after the last
    assert newest_task_accuracy(R3) == 0.9
    assert math.isnan(old_tasks_accuracy([[0.7]])) and newest_task_accuracy([[0.7]]) == 0.7


def test_forgetting_backward_and_forward_transfer_by_hand():
    # forgetting: task 0: max(0.9, 0.7) − 0.5 = 0.4; task 1: max(0.2, 0.8) − 0.6 = 0.2
    assert average_forgetting(R3) == pytest.approx(0.3)
    # BWT: task 0: 0.5 − 0.9 = −0.4; task 1: 0.6 − 0.8 = −0.2
    assert backward_transfer(R3) == pytest.approx(-0.3)
    # FWT: task 1: R[0, 1] − b1 = 0.2 − 0.1; task 2: R[1, 2] − b2 = 0.3 − 0.2
    assert forward_transfer(R3, B3) == pytest.approx(0.1)


def test_forgetting_differs_from_minus_bwt_when_a_task_improved_after_it_was_learned():
    R = np.array([
        [0.6, 0.1, 0.0],
        [0.9, 0.7, 0.2],
        [0.8, 0.7, 1.0],
    ])
    # forgetting measures from the best earlier value: (0.9 − 0.8) and (0.7 − 0.7)
    assert average_forgetting(R) == pytest.approx(0.05)
    # BWT measures from the value just after learning: (0.8 − 0.6) and (0.7 − 0.7)
    assert backward_transfer(R) == pytest.approx(0.1)


def test_forgetting_max_includes_evaluations_before_the_task_was_learned():
    # Chaudhry et al.'s max runs over every t < T−1: for task 1 that includes R[0, 1] = 0.6.
    R = np.array([
        [0.9, 0.6, 0.0],
        [0.9, 0.5, 0.0],
        [0.9, 0.4, 1.0],
    ])
    assert average_forgetting(R) == pytest.approx((0.0 + (0.6 - 0.4)) / 2)


def test_summarize_collects_everything_as_floats():
    summary = summarize(R3, baseline=B3)
    assert summary == pytest.approx({
        "average_accuracy": 2.0 / 3, "average_forgetting": 0.3,
        "backward_transfer": -0.3, "forward_transfer": 0.1,
    })
    assert all(type(v) is float for v in summary.values())
    assert "forward_transfer" not in summarize(R3)


def test_one_task_gives_nan_for_the_comparisons():
    R = np.array([[0.75]])
    assert average_accuracy(R) == 0.75
    assert math.isnan(average_forgetting(R))
    assert math.isnan(backward_transfer(R))
    assert math.isnan(forward_transfer(R, [0.5]))
    summary = summarize(R, baseline=[0.5])
    assert summary["average_accuracy"] == 0.75
    assert all(math.isnan(summary[k]) for k in ("average_forgetting", "backward_transfer", "forward_transfer"))


def test_inputs_are_not_mutated_and_read_only_arrays_work():
    R, b = R3.copy(), B3.copy()
    R.setflags(write=False)
    b.setflags(write=False)
    summarize(R, baseline=b)
    for fn in (average_accuracy, average_forgetting, backward_transfer):
        fn(R)
    forward_transfer(R, b)
    assert np.array_equal(R, R3) and np.array_equal(b, B3)
    nested = R3.tolist()
    summarize(nested, baseline=B3.tolist())
    assert nested == R3.tolist()


def test_accepts_lists_and_integer_matrices():
    assert average_accuracy([[1, 0], [0, 1]]) == 0.5
    assert backward_transfer([[1, 0], [0, 1]]) == -1.0


@pytest.mark.parametrize("bad", [
    np.zeros((2, 3)),                      # not square
    np.zeros(3),                           # 1-D
    np.zeros((2, 2, 2)),                   # 3-D
    np.zeros((0, 0)),                      # empty
    np.array([[0.5, np.nan], [0.5, 0.5]]),
    np.array([[0.5, np.inf], [0.5, 0.5]]),
    np.array([[1.5, 0.0], [0.5, 0.5]]),    # a percentage, not a fraction
    np.array([[-0.1, 0.0], [0.5, 0.5]]),
])
@pytest.mark.parametrize("fn", [average_accuracy, average_forgetting, backward_transfer, summarize])
def test_bad_matrices_are_refused(fn, bad):
    with pytest.raises(ValueError, match="R"):
        fn(bad)


@pytest.mark.parametrize("bad", [[0.1, 0.2], [0.1, 0.2, 0.3, 0.4], [[0.1, 0.2, 0.3]], [0.1, 2.0, 0.3], [0.1, np.nan, 0.3]])
def test_bad_baselines_are_refused(bad):
    with pytest.raises(ValueError, match="baseline"):
        forward_transfer(R3, bad)
    with pytest.raises(ValueError, match="baseline"):
        summarize(R3, baseline=bad)


def test_public_names():
    assert set(metrics.__all__) == {
        "average_accuracy", "average_forgetting", "backward_transfer", "forward_transfer", "newest_task_accuracy",
        "old_tasks_accuracy", "summarize", "average_loss", "loss_forgetting", "summarize_losses",
    }


def test_loss_metrics_against_a_hand_made_matrix():
    nan = float("nan")
    L = np.array([[1.0, nan, nan], [1.5, 2.0, nan], [1.2, 2.6, 0.9]])  # class-IL: unseen tasks undefined
    before = L.copy()
    assert metrics.average_loss(L) == pytest.approx((1.2 + 2.6 + 0.9) / 3)
    assert metrics.loss_forgetting(L) == pytest.approx(((1.2 - 1.0) + (2.6 - 2.0)) / 2)
    assert np.array_equal(L, before, equal_nan=True)                      # not mutated
    assert np.isnan(metrics.loss_forgetting([[0.5]]))


def test_an_undefined_loss_makes_the_metrics_that_read_it_undefined():
    L = [[1.0, 2.0], [np.nan, 1.0]]   # class-IL with a target outside the active outputs
    assert np.isnan(metrics.loss_forgetting(L)) and np.isnan(metrics.average_loss(L))


@pytest.mark.parametrize("bad", [[[1.0, 2.0]], [[1.0, 0.0], [np.inf, 1.0]], [[-0.1, 0.0], [0.5, 0.5]], [[np.inf]]])
def test_bad_loss_matrices_are_refused(bad):
    with pytest.raises(ValueError, match="L "):
        metrics.summarize_losses(bad)
