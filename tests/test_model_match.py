"""A model that does not match a regularizer's state is refused, naming the parameter; growing and
frozen models get what base.py documents, the same in every method."""
import pytest
import torch
from torch import nn

from forgetless import REGULARIZERS
from forgetless.quadratic import merge_quadratic, quadratic_penalty

from synthetic import lifecycle_steps, perturb

METHODS = sorted(REGULARIZERS)


def _net(out: int = 3, extra: bool = False) -> nn.Sequential:
    torch.manual_seed(0)
    layers = [nn.Linear(8, 6), nn.Tanh(), nn.Linear(6, out)]
    return nn.Sequential(*layers, nn.Tanh(), nn.Linear(out, out)) if extra else nn.Sequential(*layers)


def _data(out: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(32, 8, generator=g), torch.randint(0, out, (32,), generator=g))]


def _task(reg, model, out: int = 3, seed: int = 0, steps: int = 3):
    """One short task through the whole lifecycle (SI needs its path), then consolidate."""
    lifecycle_steps(reg, model, *_data(out, seed)[0], steps=steps, lr=0.05)
    reg.consolidate(model, _data(out, seed))


def _consolidated(name: str, out: int = 3):
    reg = REGULARIZERS[name]()
    model = _net(out)
    _task(reg, model, out)
    return reg, model


# --- shapes: never broadcast -------------------------------------------------------------------
@pytest.mark.parametrize("name", METHODS)
def test_a_state_for_another_head_is_refused_by_the_penalty_naming_the_parameter(name):
    """Issue 15 item 5: an 8→3 head's state on an 8→1 model gave a penalty (broadcast) instead of an error."""
    reg, _ = _consolidated(name, out=3)
    with pytest.raises(ValueError, match=r"parameter '2.weight' has shape \(1, 6\) but the state for it has shape \(3, 6\)"):
        reg.penalty(_net(out=1))


@pytest.mark.parametrize("name", METHODS)
def test_consolidate_refuses_a_model_of_other_shapes_and_keeps_the_state(name):
    reg, _ = _consolidated(name, out=3)
    before = {k: v.clone() for k, v in reg.state_dict().items()}
    other = _net(out=1)
    with pytest.raises(ValueError, match=r"\.(consolidate|begin_task): parameter '2.weight' has shape \(1, 6\)"):
        reg.begin_task(other)  # SI checks here, the others at consolidate
        reg.consolidate(other, _data(out=1))
    after = reg.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)


@pytest.mark.parametrize("name", METHODS)
def test_a_model_without_a_protected_parameter_is_named(name):
    reg, _ = _consolidated(name)
    renamed = nn.Sequential(nn.Linear(8, 6), nn.Tanh(), nn.Sequential(nn.Linear(6, 3)))  # "2.0.weight"
    with pytest.raises(ValueError, match="the model has no parameter '2.weight'"):
        reg.penalty(renamed)
    with pytest.raises(ValueError, match="the model has no parameter '2.weight'"):
        reg.begin_task(renamed)
        reg.consolidate(renamed, _data())


def test_quadratic_penalty_and_merge_refuse_broadcastable_shapes():
    theta = {"w": torch.zeros(1, 8, requires_grad=True)}
    with pytest.raises(ValueError, match=r"'w' has shape \(1, 8\) but the state for it has shape \(3, 8\)"):
        quadratic_penalty(theta, {"w": torch.ones(3, 8)}, {"w": torch.ones(3, 8)})
    with pytest.raises(ValueError, match=r"'w' has shape \(1, 8\) but the state for it has shape \(8,\)"):
        quadratic_penalty(theta, {"w": torch.ones(1, 8)}, {"w": torch.ones(8)})  # the weights, not the anchor
    with pytest.raises(ValueError, match="the weights lack 'w'"):
        quadratic_penalty(theta, {"w": torch.ones(1, 8)}, {})
    with pytest.raises(ValueError, match=r"one shape, got \[\(3, 8\), \(3, 8\), \(1, 8\), \(1, 8\)\]"):
        merge_quadratic(torch.ones(3, 8), torch.ones(3, 8), torch.ones(1, 8), torch.ones(1, 8))


def test_mixed_dtypes_still_work_through_the_reference_path():
    theta = {"w": torch.ones(2, dtype=torch.float64, requires_grad=True)}
    value = quadratic_penalty(theta, {"w": torch.zeros(2)}, {"w": torch.full((2,), 0.5)})
    value.backward()
    assert float(value.detach()) == 1.0 and theta["w"].grad.tolist() == [1.0, 1.0]


def test_si_state_loaded_mid_task_for_another_model_is_named_at_the_first_step():
    si = REGULARIZERS["si"]()
    model = _net(3)
    si.begin_task(model)
    fresh = REGULARIZERS["si"]()
    fresh.load_state_dict(si.state_dict())
    other = _net(1)
    other(torch.randn(2, 8)).sum().backward()
    with pytest.raises(ValueError, match=r"SI: parameter '2.weight' has shape \(1, 6\) but the state for it has shape \(3, 6\)"):
        fresh.after_step(other)


# --- growing models ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", METHODS)
def test_a_layer_added_between_tasks_is_free_until_the_next_consolidate_then_protected(name):
    """EWC, online EWC and MAS raised KeyError here; now every method does the same thing."""
    reg, small = _consolidated(name)
    grown = _net(extra=True)
    grown.load_state_dict(small.state_dict(), strict=False)  # the old layers as they were
    assert "anchor.4.weight" not in reg.state_dict()
    with torch.no_grad():
        grown[4].weight.add_(1.0)
    assert float(reg.penalty(grown).detach()) == pytest.approx(0.0, abs=1e-6)  # new layer: nothing known yet
    _task(reg, grown, seed=1)
    state = reg.state_dict()
    assert {"anchor.4.weight", "anchor.4.bias"} <= state.keys()
    if "importance.4.weight" in state:
        assert state["importance.4.weight"].shape == (3, 3)
    with torch.no_grad():
        grown[4].weight.add_(0.5)
    moved = float(reg.penalty(grown).detach())
    with torch.no_grad():
        grown[4].weight.sub_(0.5)
    at_anchor = float(reg.penalty(grown).detach())
    assert moved != at_anchor  # the new layer is protected now
    if name != "si":  # SI's Ω may be negative
        assert moved > at_anchor
    assert type(reg).state_problem(state) is None


@pytest.mark.parametrize("name", METHODS)
def test_a_frozen_protected_layer_keeps_its_protection_and_its_entries(name):
    reg, model = _consolidated(name)
    anchor_before = reg.state_dict()["anchor.0.weight"].clone()
    for p in model[0].parameters():
        p.requires_grad_(False)
    with torch.no_grad():
        model[0].weight.add_(0.3)  # moved by hand while frozen: the penalty still sees it
    assert float(reg.penalty(model).detach()) > 0
    _task(reg, model, seed=1)
    state = reg.state_dict()
    assert torch.equal(state["anchor.0.weight"], anchor_before)  # frozen: kept as it was
    assert type(reg).state_problem(state) is None


# --- all frozen (issue 15 item 12) -------------------------------------------------------------
@pytest.mark.parametrize("name", METHODS)
def test_a_model_with_every_parameter_frozen_is_refused_at_consolidate(name):
    """It gave an empty state and a penalty that stayed 0 after unfreezing."""
    reg, model = REGULARIZERS[name](), _net()
    reg.begin_task(model)
    for p in model.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError, match=r"\.consolidate: the model has no trainable parameters .*unfreeze"):
        reg.consolidate(model, _data())
    assert reg.tasks_seen == 0
    if name == "si":
        with pytest.raises(ValueError, match=r"SI\.begin_task: the model has no trainable parameters"):
            reg.begin_task(model)


def test_frozen_then_unfrozen_after_a_refused_consolidate_is_protected_once_consolidated():
    reg, model = REGULARIZERS["ewc"](strength=10.0), _net()
    for p in model.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError):
        reg.consolidate(model, _data())
    for p in model.parameters():
        p.requires_grad_(True)
    reg.consolidate(model, _data())
    perturb(model, 3, scale=0.1)
    assert float(reg.penalty(model).detach()) > 0
