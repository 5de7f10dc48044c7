import io

import pytest
import torch

import forgetless
from forgetless import EWC, OnlineEWC, fisher_diagonal

from synthetic import perturb as _perturb, random_task as _task, small_model as _model




def _params(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _three_tasks(reg):
    """Consolidate three tasks at three different points; return the Fishers and the last anchor."""
    model = _model()
    fishers = []
    for t in range(3):
        _perturb(model, 10 + t)
        data = _task(t)
        reg.consolidate(model, data)
        fishers.append(fisher_diagonal(model, data))
    return model, fishers, _params(model)


def test_penalty_is_exactly_zero_before_consolidate():
    assert float(OnlineEWC(strength=10.0).penalty(_model())) == 0.0


def test_running_fisher_after_three_tasks_is_decayed_sum():
    gamma = 0.7
    reg = OnlineEWC(strength=1.0, decay=gamma)
    _, (f1, f2, f3), _ = _three_tasks(reg)
    for name in f1:
        torch.testing.assert_close(reg.importance[name], gamma**2 * f1[name] + gamma * f2[name] + f3[name])


def test_penalty_equals_closed_form_around_latest_anchor():
    gamma, lam = 0.5, 3.0
    reg = OnlineEWC(strength=lam, decay=gamma)
    model, (f1, f2, f3), anchor = _three_tasks(reg)
    _perturb(model, 99)
    expected = 0.5 * lam * sum(
        float(((gamma**2 * f1[n] + gamma * f2[n] + f3[n]) * (p.detach() - anchor[n]) ** 2).sum())
        for n, p in model.named_parameters()
    )
    penalty = reg.penalty(model)
    assert float(penalty.detach()) == pytest.approx(expected, rel=1e-5)
    penalty.backward()
    for n, p in model.named_parameters():
        want = lam * (gamma**2 * f1[n] + gamma * f2[n] + f3[n]) * (p.detach() - anchor[n])
        torch.testing.assert_close(p.grad, want, rtol=1e-4, atol=1e-7)


def _their_penalty(model, lam, gamma, fishers, anchor):
    """van de Ven & Tolias's online EWC (continual_learner.py @86802a8), written out: the running Fisher
    is F_t + γ·F_{t−1}-running (``est_fisher_info[n] += self.gamma * existing_values``), and
    ``ewc_loss`` uses ``fisher = self.gamma*fisher``: ½·λ·Σ γ·F·(θ − θ*)²."""
    running = None
    for f in fishers:
        running = dict(f) if running is None else {n: f[n] + gamma * running[n] for n in f}
    return 0.5 * lam * sum(float((gamma * running[n] * (p.detach() - anchor[n]) ** 2).sum())
                           for n, p in model.named_parameters())


@pytest.mark.parametrize("n_tasks", [1, 3])
def test_decay_in_penalty_is_their_convention_in_closed_form(n_tasks):
    gamma, lam = 0.7, 3.0
    ours = OnlineEWC(strength=lam, decay=gamma)
    theirs = OnlineEWC(strength=lam, decay=gamma, decay_in_penalty=True)
    model, fishers = _model(), []
    for t in range(n_tasks):
        _perturb(model, 10 + t)
        data = _task(t)
        for reg in (ours, theirs):
            reg.consolidate(model, data)
        fishers.append(fisher_diagonal(model, data))
    anchor = _params(model)
    _perturb(model, 99)
    penalty = theirs.penalty(model)
    assert float(penalty.detach()) == pytest.approx(_their_penalty(model, lam, gamma, fishers, anchor), rel=1e-5)
    # Their λ is our λ·γ; the stored running Fisher is the same under both conventions.
    assert float(penalty.detach()) == pytest.approx(gamma * float(ours.penalty(model).detach()), rel=1e-6)
    same = OnlineEWC(strength=lam * gamma, decay=gamma)
    same.load_state_dict(ours.state_dict())
    assert float(same.penalty(model).detach()) == pytest.approx(float(penalty.detach()), rel=1e-6)
    for name in ours.importance:
        assert torch.equal(ours.importance[name], theirs.importance[name])
    penalty.backward()
    running = fishers[0]
    for f in fishers[1:]:
        running = {n: f[n] + gamma * running[n] for n in f}
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, lam * gamma * running[n] * (p.detach() - anchor[n]), rtol=1e-4, atol=1e-7)


def test_decay_in_penalty_must_be_a_bool():
    with pytest.raises(ValueError, match="decay_in_penalty must be True or False, got 'yes'"):
        OnlineEWC(decay_in_penalty="yes")


def test_decay_zero_protects_only_the_latest_task():
    reg = OnlineEWC(decay=0.0)
    _, (_, _, f3), _ = _three_tasks(reg)
    for name, f in f3.items():
        torch.testing.assert_close(reg.importance[name], f)


def test_one_task_without_decay_is_plain_ewc():
    model, data = _model(), _task(0)
    online, ewc = OnlineEWC(strength=5.0), EWC(strength=5.0)
    online.consolidate(model, data)
    ewc.consolidate(model, data)
    _perturb(model, 1)
    assert float(online.penalty(model).detach()) == pytest.approx(float(ewc.penalty(model).detach()), rel=1e-6)


def test_state_size_is_constant_in_the_number_of_tasks():
    model = _model()
    reg = OnlineEWC(decay=0.9)
    sizes = []
    for t in range(4):
        _perturb(model, t)
        reg.consolidate(model, _task(t))
        state = reg.state_dict()
        sizes.append((len(state), sum(v.numel() for v in state.values())))
    n_params = len(list(model.parameters()))
    assert sizes[0][0] == 2 * n_params + 1  # importance, anchor, tasks_seen
    assert len(set(sizes)) == 1


def test_state_dict_round_trip_through_weights_only_load():
    model = _model()
    reg = OnlineEWC(strength=5.0, decay=0.8)
    for t in range(2):
        _perturb(model, t)
        reg.consolidate(model, _task(t))
    _perturb(model, 4)
    buffer = io.BytesIO()
    torch.save(reg.state_dict(), buffer)
    buffer.seek(0)
    fresh = OnlineEWC(strength=5.0, decay=0.8)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    assert fresh.tasks_seen == 2
    assert float(fresh.penalty(model).detach()) == pytest.approx(float(reg.penalty(model).detach()), rel=1e-6)
    # and it keeps decaying correctly after the reload
    data = _task(7)
    reg.consolidate(model, data)
    fresh.consolidate(model, data)
    for name in reg.importance:
        torch.testing.assert_close(fresh.importance[name], reg.importance[name])


def test_sampled_estimator_is_seeded_per_task():
    model = _model()
    a = OnlineEWC(estimator="sampled", seed=3)
    b = OnlineEWC(estimator="sampled", seed=3)
    for reg in (a, b):
        reg.consolidate(model, _task(0))
    for name in a.importance:
        assert torch.equal(a.importance[name], b.importance[name])


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), float("inf")])
def test_bad_decay_is_refused(bad):
    with pytest.raises(ValueError, match="decay"):
        OnlineEWC(decay=bad)


def test_constructor_checks_and_consolidate_needs_data():
    with pytest.raises(ValueError, match="strength"):
        OnlineEWC(strength=-1.0)
    with pytest.raises(ValueError, match="exact, sampled, empirical, predicted, batched"):
        OnlineEWC(estimator="diagonal")
    with pytest.raises(ValueError, match="fisher_samples"):
        OnlineEWC(fisher_samples=0)
    with pytest.raises(ValueError, match="data"):
        OnlineEWC().consolidate(_model())


def test_registered_and_hyperparameters_recorded():
    assert forgetless.REGULARIZERS["online-ewc"] is OnlineEWC
    reg = OnlineEWC(strength=2.0, decay=0.9, estimator="empirical", fisher_samples=100, seed=1)
    assert reg.hyperparameters() == {
        "strength": 2.0, "decay": 0.9, "decay_in_penalty": False, "estimator": "empirical", "fisher_samples": 100,
        "seed": 1,
    }
    assert OnlineEWC(decay_in_penalty=True).hyperparameters()["decay_in_penalty"] is True
    assert repr(reg).startswith("OnlineEWC(strength=2.0, decay=0.9")
