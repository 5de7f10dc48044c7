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
