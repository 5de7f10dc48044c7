import io

import pytest
import torch
from torch import nn

import forgetless
from forgetless import MAS

from synthetic import old_task_accuracy


def _linear(weight):
    """f(x) = W x, so ∂‖Wx‖²/∂W = 2 (Wx) xᵀ per sample."""
    model = nn.Linear(2, 2, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(torch.tensor(weight, dtype=torch.float64))
    return model


def _x(*rows):
    x = torch.tensor(rows, dtype=torch.float64)
    return x, torch.zeros(len(rows), dtype=torch.long)


def test_importance_accumulation_and_penalty_match_hand_computation():
    model = _linear([[1.0, 2.0], [0.0, -1.0]])
    mas = MAS(strength=2.0)
    # x1 = (1, 1):  f = (3, -1), 2 f x1ᵀ = [[6, 6], [-2, -2]]
    # x2 = (1, -1): f = (-1, 1), 2 f x2ᵀ = [[-2, 2], [2, -2]]
    # mean of the absolute values: [[4, 4], [2, 2]]. (|mean| would be [[2, 4], [0, 2]]: the sign
    # disagreement on W[1, 0] is exactly where the per-sample absolute value matters.)
    mas.consolidate(model, _x([1.0, 1.0], [1.0, -1.0]))
    torch.testing.assert_close(mas.importance["weight"], torch.tensor([[4.0, 4.0], [2.0, 2.0]], dtype=torch.float64))

    # Task 2 at new weights; x3 = (2, 0): f = (0, 2), 2 f x3ᵀ = [[0, 0], [8, 0]]. Ω is summed.
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=torch.float64))
    mas.consolidate(model, _x([2.0, 0.0]))
    torch.testing.assert_close(mas.importance["weight"], torch.tensor([[4.0, 4.0], [10.0, 2.0]], dtype=torch.float64))
    torch.testing.assert_close(mas.anchor["weight"], torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=torch.float64))
    assert mas.tasks_seen == 2

    # Penalty λ·Σ Ω (θ−θ*)², no ½: θ − θ* = [[0.5, 0], [0, -1]] gives 2 · (4·0.25 + 2·1) = 6.
    with torch.no_grad():
        model.weight.add_(torch.tensor([[0.5, 0.0], [0.0, -1.0]], dtype=torch.float64))
    penalty = mas.penalty(model)
    assert float(penalty.detach()) == pytest.approx(6.0, rel=1e-12)
    penalty.backward()  # gradient 2λΩ(θ−θ*), the update the authors' optimizer adds
    torch.testing.assert_close(model.weight.grad, torch.tensor([[8.0, 0.0], [0.0, -8.0]], dtype=torch.float64))


def test_bias_and_labels():
    # f(x) = W x + b: ∂‖f‖²/∂b = 2 f. W = I, b = (1, -1), x = (1, 2): f = (2, 1) -> |2f| = (4, 2).
    model = nn.Linear(2, 2).double()
    with torch.no_grad():
        model.weight.copy_(torch.eye(2, dtype=torch.float64))
        model.bias.copy_(torch.tensor([1.0, -1.0], dtype=torch.float64))
    x = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    a, b = MAS(), MAS()
    a.consolidate(model, (x, torch.tensor([0])))
    b.consolidate(model, (x, torch.tensor([1])))  # labels play no part in MAS
    torch.testing.assert_close(a.importance["bias"], torch.tensor([4.0, 2.0], dtype=torch.float64))
    torch.testing.assert_close(a.importance["weight"], torch.tensor([[4.0, 8.0], [2.0, 4.0]], dtype=torch.float64))
    for name in a.importance:
        assert torch.equal(a.importance[name], b.importance[name])


def test_output_transform_selects_what_is_protected():
    model = _linear([[1.0, 2.0], [0.0, -1.0]])
    mas = MAS()
    # only output 0 counts: f0 = 3 at x = (1, 1), so row 0 gets |2·3·x| = (6, 6) and row 1 nothing
    mas.consolidate(model, _x([1.0, 1.0]), output_transform=lambda z: z[:, :1])
    torch.testing.assert_close(mas.importance["weight"], torch.tensor([[6.0, 6.0], [0.0, 0.0]], dtype=torch.float64))


def test_penalty_zero_before_consolidate_and_at_anchor():
    model = nn.Linear(3, 2)
    mas = MAS(strength=4.0)
    assert float(mas.penalty(model)) == 0.0
    mas.consolidate(model, (torch.randn(5, 3), torch.zeros(5, dtype=torch.long)))
    assert float(mas.penalty(model).detach()) == 0.0


def test_state_is_constant_size_and_round_trips_through_weights_only_load():
    model = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3))
    mas = MAS(strength=3.0)
    sizes = []
    for t in range(3):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.1)
        mas.consolidate(model, (torch.randn(10, 4), torch.zeros(10, dtype=torch.long)))
        sizes.append(len(mas.state_dict()))
    assert sizes == [2 * 4 + 1] * 3  # importance, anchor for 4 tensors + tasks_seen
    with torch.no_grad():
        model[0].weight.add_(0.3)
    buffer = io.BytesIO()
    torch.save(mas.state_dict(), buffer)
    buffer.seek(0)
    fresh = MAS(strength=3.0)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    assert fresh.tasks_seen == 3
    assert float(fresh.penalty(model).detach()) == pytest.approx(float(mas.penalty(model).detach()), rel=1e-6)


def test_importance_samples_limits_the_data_used():
    model = _linear([[1.0, 2.0], [0.0, -1.0]])
    mas = MAS(importance_samples=1)
    mas.consolidate(model, _x([1.0, 1.0], [1.0, -1.0]))  # only x1 counts
    torch.testing.assert_close(mas.importance["weight"], torch.tensor([[6.0, 6.0], [2.0, 2.0]], dtype=torch.float64))


def test_constructor_checks_and_consolidate_needs_data():
    with pytest.raises(ValueError, match="strength"):
        MAS(strength=float("nan"))
    with pytest.raises(ValueError, match="importance_samples"):
        MAS(importance_samples=0)
    with pytest.raises(ValueError, match="inputs"):
        MAS().consolidate(nn.Linear(2, 2))




def test_mas_in_a_user_training_loop_keeps_old_task():
    assert old_task_accuracy(MAS(strength=1.0)) > old_task_accuracy(None) + 0.1


def test_registered_and_hyperparameters_recorded():
    assert forgetless.REGULARIZERS["mas"] is MAS
    assert MAS(strength=0.5, importance_samples=64).hyperparameters() == {"strength": 0.5, "importance_samples": 64}
