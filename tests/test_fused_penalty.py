"""The opt-in fused penalty gradient: the same gradient as backpropagating the penalty."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import forgetless
from forgetless.quadratic import add_quadratic_gradient_


def model_and_data():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    return model, torch.randn(32, 6), torch.randint(0, 3, (32,))


def trained_regularizer(make, model, x, y):
    reg = make()
    reg.begin_task(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(3):
        loss = F.cross_entropy(model(x), y) + reg.penalty(model)
        opt.zero_grad()
        loss.backward()
        reg.before_step(model)
        opt.step()
        reg.after_step(model)
    reg.consolidate(model, [(x, y)])
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))  # away from the anchor
    return reg


MAKERS = {
    "ewc": lambda: forgetless.EWC(strength=10.0),
    "online-ewc": lambda: forgetless.OnlineEWC(strength=10.0, decay=0.5, decay_in_penalty=True),
    "l2": lambda: forgetless.L2(strength=3.0),
    "mas": lambda: forgetless.MAS(strength=2.0),
    "si": lambda: forgetless.SI(strength=2.0),
}


@pytest.mark.parametrize("name", list(MAKERS))
def test_fused_gradient_equals_the_penalty_backpropagated(name):
    model, x, y = model_and_data()
    reg = trained_regularizer(MAKERS[name], model, x, y)
    assert float(reg.penalty(model).detach()) > 0
    model.zero_grad(set_to_none=True)
    twin = copy.deepcopy(model)
    (F.cross_entropy(model(x), y) + reg.penalty(model)).backward()
    F.cross_entropy(twin(x), y).backward()
    reg.add_penalty_gradient_(twin)
    for (n, p), q in zip(model.named_parameters(), twin.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-5, atol=1e-7, msg=n)


def test_fused_gradient_sets_missing_grads_and_skips_frozen_parameters():
    w, frozen = nn.Parameter(torch.tensor([1.0, -1.0])), torch.tensor([5.0])
    add_quadratic_gradient_({"w": w, "f": frozen}, {"w": torch.zeros(2), "f": torch.zeros(1)}, None, 0.5)
    assert torch.equal(w.grad, torch.tensor([1.0, -1.0])) and frozen.grad is None
    add_quadratic_gradient_({"w": w}, {"w": torch.zeros(2)}, {"w": torch.tensor([2.0, 0.0])}, 0.5)
    assert torch.equal(w.grad, torch.tensor([3.0, -1.0]))  # added to what was there


def test_before_the_first_task_nothing_is_added_and_kfac_is_refused():
    model, x, y = model_and_data()
    ewc = forgetless.EWC(strength=1.0, structure="kfac")
    ewc.add_penalty_gradient_(model)
    assert all(p.grad is None for p in model.parameters())
    ewc.consolidate(model, [(x, y)])
    with pytest.raises(NotImplementedError, match="not a diagonal quadratic"):
        ewc.add_penalty_gradient_(model)
    with pytest.raises(ValueError, match="has shape"):
        forgetless.L2(1.0).consolidate(model) or add_quadratic_gradient_(
            dict(model.named_parameters()), {"0.weight": torch.zeros(3)}, None, 1.0)


@pytest.mark.parametrize("weighted", [True, False])
def test_fused_gradient_against_the_closed_form(weighted):
    """grad + 2·scale·w·(θ − θ*), element by element, computed here in float64."""
    torch.manual_seed(1)
    shapes = {"a": (7, 5), "b": (5,), "c": (3, 2, 2)}
    params = {n: nn.Parameter(torch.randn(s)) for n, s in shapes.items()}
    anchor = {n: p.detach() + 0.1 * torch.randn_like(p) for n, p in params.items()}
    weight = {n: torch.rand_like(p) * 10 for n, p in params.items()} if weighted else None
    before = {n: torch.randn_like(p) for n, p in params.items()}
    for n, p in params.items():
        p.grad = before[n].clone()
    add_quadratic_gradient_(params, anchor, weight, 1.5)
    for n, p in params.items():
        w = weight[n].double() if weighted else 1.0
        expected = before[n].double() + 2 * 1.5 * w * (p.detach().double() - anchor[n].double())
        torch.testing.assert_close(p.grad.double(), expected, rtol=1e-6, atol=1e-6, msg=n)


def test_fused_gradient_finds_parameters_by_name_as_the_penalty_does():
    """The fused path looks parameters up along their names' paths: a replaced layer gets the gradient
    (nothing is cached), a missing one or a tensor now shared by two names is refused like penalty()."""
    model, x, y = model_and_data()
    ewc = forgetless.EWC(strength=1.0)
    ewc.consolidate(model, [(x, y)])
    model[2] = nn.Linear(8, 3)  # same shape, new tensors
    ewc.add_penalty_gradient_(model)
    expected = 2 * 0.5 * ewc.importance["2.weight"] * (model[2].weight.detach() - ewc.anchor["2.weight"])
    torch.testing.assert_close(model[2].weight.grad, expected)
    with pytest.raises(ValueError) as err_penalty:
        ewc.penalty(nn.Sequential(model[0], model[1]))  # "2.weight" missing
    with pytest.raises(ValueError) as err:
        ewc.add_penalty_gradient_(nn.Sequential(model[0], model[1]))
    assert "'2.weight'" in str(err.value) and str(err.value) == str(err_penalty.value)
    tied = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    l2 = forgetless.L2(strength=1.0)
    l2.consolidate(tied)
    tied[1].weight = tied[0].weight  # named_parameters now lists it once, as "0.weight"
    with pytest.raises(ValueError, match="'1.weight'") as err:
        l2.add_penalty_gradient_(tied)
    with pytest.raises(ValueError) as err_penalty:
        l2.penalty(tied)
    assert str(err.value) == str(err_penalty.value)
