import copy
import functools
import io

import pytest
import torch
from torch import nn

import forgetless
from forgetless import SI

from synthetic import lifecycle_steps, old_task_accuracy


class TwoScalars(nn.Module):
    """θ = (θ1, θ2) in float64, so the hand-computed numbers below are exact to ~1e-15."""

    def __init__(self):
        super().__init__()
        self.theta = nn.Parameter(torch.tensor([1.0, -1.0], dtype=torch.float64))


def _step(model, opt, si, grad, before=False):
    """One optimizer step with a gradient chosen by the test, then SI's bookkeeping
    (``before``: si.before_step too, as forgetless.training.train_task calls it)."""
    opt.zero_grad()
    model.theta.grad = torch.tensor(grad, dtype=torch.float64)
    if before:
        si.before_step(model)
    opt.step()
    si.after_step(model)


@pytest.mark.parametrize("before", [False, True], ids=["after_step only", "before_step too"])
def test_path_integral_and_importance_match_hand_computation(before):
    model = TwoScalars()
    si = SI(strength=2.0, damping=0.1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    step = functools.partial(_step, before=before)

    # Task 1, plain SGD from θ = (1, -1). Each step: Δθ = -0.1 g, ω += -g Δθ.
    si.begin_task(model)
    step(model, opt, si, [1.0, 2.0])    # Δθ = (-0.1, -0.2),   -gΔθ = (0.1, 0.4),    θ = (0.9, -1.2)
    step(model, opt, si, [-2.0, 0.5])   # Δθ = (0.2, -0.05),   -gΔθ = (0.4, 0.025),  θ = (1.1, -1.25)
    step(model, opt, si, [0.5, -1.0])   # Δθ = (-0.05, 0.1),   -gΔθ = (0.025, 0.1),  θ = (1.05, -1.15)
    omega_1 = torch.tensor([0.525, 0.525], dtype=torch.float64)
    torch.testing.assert_close(si.path["theta"], omega_1)
    torch.testing.assert_close(model.theta.detach(), torch.tensor([1.05, -1.15], dtype=torch.float64))

    si.consolidate(model)
    # θ_end − θ_start = (0.05, -0.15): Ω = ω / (Δ² + ξ) = (0.525 / 0.1025, 0.525 / 0.1225)
    big_omega_1 = torch.tensor([0.525 / 0.1025, 0.525 / 0.1225], dtype=torch.float64)
    torch.testing.assert_close(si.importance["theta"], big_omega_1)
    torch.testing.assert_close(si.anchor["theta"], torch.tensor([1.05, -1.15], dtype=torch.float64))
    assert si.path == {} and si.start == {}

    # Task 2 with momentum 0.5: Δθ is no longer -lr·g, and SI must use the step actually taken.
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.5)
    si.begin_task(model)
    step(model, opt, si, [1.0, 1.0])    # buf = (1, 1),      Δθ = (-0.1, -0.1),   -gΔθ = (0.1, 0.1)
    step(model, opt, si, [1.0, -1.0])   # buf = (1.5, -0.5), Δθ = (-0.15, 0.05),  -gΔθ = (0.15, 0.05)
    torch.testing.assert_close(si.path["theta"], torch.tensor([0.25, 0.15], dtype=torch.float64))
    si.consolidate(model)
    # θ_end − θ_start = (-0.25, -0.05): Ω += (0.25 / 0.1625, 0.15 / 0.1025)
    big_omega_2 = big_omega_1 + torch.tensor([0.25 / 0.1625, 0.15 / 0.1025], dtype=torch.float64)
    torch.testing.assert_close(si.importance["theta"], big_omega_2)
    anchor = torch.tensor([0.8, -1.2], dtype=torch.float64)
    torch.testing.assert_close(si.anchor["theta"], anchor)

    # Penalty c·Σ Ω (θ−θ*)², no ½, at θ = θ* + (0.3, -0.2).
    with torch.no_grad():
        model.theta.add_(torch.tensor([0.3, -0.2], dtype=torch.float64))
    expected = 2.0 * (float(big_omega_2[0]) * 0.09 + float(big_omega_2[1]) * 0.04)
    assert float(si.penalty(model).detach()) == pytest.approx(expected, rel=1e-12)


def test_after_step_reads_grad_without_changing_it():
    model = TwoScalars()
    si = SI()
    si.begin_task(model)
    grad = torch.tensor([0.3, -0.7], dtype=torch.float64)
    model.theta.grad = grad
    with torch.no_grad():
        model.theta.sub_(0.1 * grad)
    si.after_step(model)
    assert model.theta.grad is grad
    assert torch.equal(grad, torch.tensor([0.3, -0.7], dtype=torch.float64))


def test_parameter_without_grad_adds_nothing_but_its_step_is_still_tracked():
    model = nn.Linear(2, 1)
    si = SI()
    si.begin_task(model)
    # bias has no .grad (e.g. frozen for this step) yet is moved: it contributes 0 to ω ...
    model.weight.grad = torch.ones_like(model.weight)
    with torch.no_grad():
        model.weight.sub_(0.5)
        model.bias.add_(1.0)
    si.after_step(model)
    torch.testing.assert_close(si.path["weight"], torch.full_like(model.weight, 0.5))
    assert torch.equal(si.path["bias"], torch.zeros_like(model.bias))
    # ... and the next step's Δθ is measured from where it now is, not from the task start.
    model.bias.grad = torch.full_like(model.bias, 2.0)
    with torch.no_grad():
        model.bias.sub_(0.25)
    si.after_step(model)
    torch.testing.assert_close(si.path["bias"], torch.full_like(model.bias, 0.5))


def test_after_step_or_consolidate_without_begin_task_says_what_to_do():
    model = TwoScalars()
    si = SI()
    with pytest.raises(RuntimeError, match=r"si\.begin_task\(model\)"):
        si.after_step(model)
    with pytest.raises(RuntimeError, match=r"si\.begin_task\(model\)"):
        si.consolidate(model)
    si.begin_task(model)
    si.consolidate(model)
    # each task needs its own begin_task: the start of task 2 is not silently task 1's start
    with pytest.raises(RuntimeError, match="before each task"):
        si.after_step(model)


def test_penalty_zero_before_first_consolidate_and_at_anchor():
    model = nn.Linear(3, 2)
    si = SI(strength=5.0)
    assert float(si.penalty(model)) == 0.0
    si.begin_task(model)
    assert float(si.penalty(model)) == 0.0  # a task in progress is not yet protected
    si.consolidate(model)
    assert float(si.penalty(model).detach()) == 0.0


def _train_task(model, si, x, y, steps=30):
    lifecycle_steps(si, model, x, y, steps=steps)
    si.consolidate(model)


def test_trained_importance_is_positive_and_penalty_pulls_towards_anchor():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
    si = SI(strength=1.0)
    _train_task(model, si, torch.randn(32, 4), torch.randint(0, 3, (32,)))
    # plain SGD on a smooth loss decreases it step by step: the path integral is positive overall
    assert sum(float(o.sum()) for o in si.importance.values()) > 0
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1)
    model.zero_grad(set_to_none=True)
    si.penalty(model).backward()
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, 2.0 * si.importance[name] * 0.1, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("mid_task", [False, True])
def test_state_dict_round_trip_through_weights_only_load(mid_task):
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    si = SI(strength=3.0, damping=0.05)
    _train_task(model, si, x, y, steps=5)
    if mid_task:
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        si.begin_task(model)
        nn.functional.cross_entropy(model(x), 2 - y).backward()
        opt.step()
        si.after_step(model)
    buffer = io.BytesIO()
    torch.save(si.state_dict(), buffer)
    buffer.seek(0)
    fresh = SI(strength=3.0, damping=0.05)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    assert fresh.tasks_seen == 1
    assert float(fresh.penalty(model).detach()) == pytest.approx(float(si.penalty(model).detach()), rel=1e-6)
    if mid_task:  # the reloaded copy finishes the task exactly as the original does
        for reg in (si, fresh):
            reg.consolidate(model)
        for name in si.importance:
            torch.testing.assert_close(fresh.importance[name], si.importance[name])


def test_task_not_starting_at_the_anchor_measures_from_its_own_start():
    model = TwoScalars()
    si = SI(damping=0.1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    si.begin_task(model)
    _step(model, opt, si, [1.0, 2.0])    # Δθ = (-0.1, -0.2), ω = (0.1, 0.4), θ = (0.9, -1.2)
    si.consolidate(model)
    si.begin_task(model)
    assert si.start == {}                # starts at the anchor: shared, not copied
    si.consolidate(model)
    with torch.no_grad():                # moved between tasks (e.g. fine-tuned elsewhere)
        model.theta.add_(torch.tensor([1.0, 0.0], dtype=torch.float64))
    si.begin_task(model)
    _step(model, opt, si, [1.0, 1.0])    # Δθ = (-0.1, -0.1), ω = (0.1, 0.1), θ = (1.8, -1.3)
    si.consolidate(model)
    # Δ from this task's start (1.9, -1.2) is (-0.1, -0.1), not the distance from the anchor (0.9, -0.1)
    task_1 = torch.tensor([0.1 / 0.11, 0.4 / 0.14], dtype=torch.float64)
    torch.testing.assert_close(si.importance["theta"], task_1 + torch.tensor([0.1 / 0.11, 0.1 / 0.11], dtype=torch.float64))


@pytest.mark.parametrize("bad", [0.0, -0.1, float("nan"), float("inf")])
def test_bad_damping_is_refused(bad):
    with pytest.raises(ValueError, match="damping"):
        SI(damping=bad)


def test_registered_and_hyperparameters_recorded():
    assert forgetless.REGULARIZERS["si"] is SI
    assert SI(strength=0.5, damping=0.01).hyperparameters() == {"strength": 0.5, "damping": 0.01}


def test_si_in_a_user_training_loop_keeps_old_task():
    assert old_task_accuracy(SI(strength=10.0)) > old_task_accuracy(None) + 0.1


def _state_bytes(si: SI) -> int:
    """Bytes of distinct tensors in the state (a tensor shared between two entries counts once)."""
    seen = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in si.state_dict().values() if t.dim()}
    return sum(seen.values())


@pytest.mark.parametrize("before, times", [(True, 3), (False, 4)])
def test_state_during_a_task_is_3x_with_before_step_4x_without(before, times):
    torch.manual_seed(0)
    model = nn.Linear(64, 32)
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    x, y = torch.randn(16, 64), torch.randint(0, 32, (16,))
    si = SI()
    _train_task(model, si, x, y, steps=3)  # Ω and θ* exist
    assert _state_bytes(si) == 2 * params
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    si.begin_task(model)
    for _ in range(3):
        opt.zero_grad()
        (nn.functional.cross_entropy(model(x), y) + si.penalty(model)).backward()
        if before:
            si.before_step(model)
        opt.step()
        si.after_step(model)
    assert _state_bytes(si) == times * params


def test_before_step_path_matches_the_copy_path_in_float32_with_fused_adam():
    """Same training twice (float32, Adam): ω from g·θ(before) − g·θ(after) agrees with −g·Δθ."""
    importances = []
    for before in (False, True):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 4))
        x, y = torch.randn(64, 20), torch.randint(0, 4, (64,))
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
        si = SI(damping=0.1)
        si.begin_task(model)
        for _ in range(200):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            if before:
                si.before_step(model)
            opt.step()
            si.after_step(model)
        si.consolidate(model)
        importances.append(torch.cat([w.reshape(-1) for w in si.importance.values()]))
    assert importances[0].abs().max() > 1e-3  # something was learned
    torch.testing.assert_close(importances[1], importances[0], rtol=1e-3, atol=1e-3 * float(importances[0].abs().max()))


def test_switching_to_after_step_only_mid_task_is_refused_not_miscounted():
    model = TwoScalars()
    si = SI()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    si.begin_task(model)
    _step(model, opt, si, [1.0, 2.0], before=True)
    with pytest.raises(RuntimeError, match="before every optimizer.step"):
        _step(model, opt, si, [1.0, 2.0], before=False)
    si.before_step(model)
    with pytest.raises(RuntimeError, match="twice"):
        si.before_step(model)


def test_mid_task_state_saved_in_before_step_mode_finishes_the_task_the_same():
    model = TwoScalars()
    si = SI()
    si.begin_task(model)
    _step(model, torch.optim.SGD(model.parameters(), lr=0.1), si, [1.0, 2.0], before=True)
    fresh, twin = SI(), copy.deepcopy(model)
    fresh.load_state_dict(si.state_dict())
    _step(model, torch.optim.SGD(model.parameters(), lr=0.1), si, [0.5, -1.0], before=True)
    _step(twin, torch.optim.SGD(twin.parameters(), lr=0.1), fresh, [0.5, -1.0], before=True)
    torch.testing.assert_close(fresh.path["theta"], si.path["theta"])
    torch.testing.assert_close(si.path["theta"], torch.tensor([0.125, 0.5], dtype=torch.float64))
    with pytest.raises(RuntimeError, match="before every optimizer.step"):  # no copy of θ was kept
        fresh.after_step(twin)
