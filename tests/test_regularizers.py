import io

import pytest
import torch

import forgetless
from forgetless import EWC, L2, fisher_diagonal

from synthetic import old_task_accuracy, perturb as _perturb, random_task as _task, small_model as _model




@pytest.mark.parametrize("reg", [EWC(strength=10.0), L2(strength=3.0)])
def test_penalty_is_exactly_zero_before_consolidate(reg):
    assert float(reg.penalty(_model())) == 0.0


def test_ewc_penalty_equals_closed_form_after_one_task():
    model = _model()
    data = _task(0)
    ewc = EWC(strength=7.0)
    ewc.consolidate(model, data)
    fisher = fisher_diagonal(model, data)
    anchor = {n: p.detach().clone() for n, p in model.named_parameters()}
    _perturb(model, 1)
    expected = 0.5 * 7.0 * sum(float((fisher[n] * (p.detach() - anchor[n]) ** 2).sum()) for n, p in model.named_parameters())
    assert float(ewc.penalty(model).detach()) == pytest.approx(expected, rel=1e-5)


def test_ewc_many_tasks_equals_naive_sum_of_per_task_terms():
    model = _model()
    ewc = EWC(strength=2.0)
    terms = []
    for t in range(5):
        _perturb(model, 10 + t)
        data = _task(t)
        ewc.consolidate(model, data)
        terms.append((fisher_diagonal(model, data), {n: p.detach().clone() for n, p in model.named_parameters()}))
    _perturb(model, 99)
    naive = sum(
        float((f[n] * (p.detach() - a[n]) ** 2).sum()) for f, a in terms for n, p in model.named_parameters()
    )
    assert float(ewc.penalty(model).detach()) == pytest.approx(0.5 * 2.0 * naive, rel=1e-5)
    # the gradient of the merged penalty equals the gradient of the naive sum
    ewc.penalty(model).backward()
    for n, p in model.named_parameters():
        want = 2.0 * sum(f[n] * (p.detach() - a[n]) for f, a in terms)
        torch.testing.assert_close(p.grad, want, rtol=1e-4, atol=1e-6)


def test_ewc_state_does_not_grow_with_tasks():
    model = _model()
    ewc = EWC()
    for t in range(4):
        ewc.consolidate(model, _task(t))
        n_tensors = len(ewc.state_dict())
    assert n_tensors == 2 * len(list(model.parameters())) + 2  # importance, anchor, tasks_seen, constant


def test_l2_penalty_closed_form():
    model = _model()
    l2 = L2(strength=4.0)
    l2.consolidate(model)
    anchor = [p.detach().clone() for p in model.parameters()]
    _perturb(model, 3)
    expected = 0.5 * 4.0 * sum(float(((p.detach() - a) ** 2).sum()) for p, a in zip(model.parameters(), anchor))
    assert float(l2.penalty(model).detach()) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("make", [lambda: EWC(strength=5.0), lambda: L2(strength=5.0)])
def test_state_dict_round_trip_through_weights_only_load(make):
    model = _model()
    reg = make()
    reg.consolidate(model, _task(0))
    _perturb(model, 4)
    buffer = io.BytesIO()
    torch.save(reg.state_dict(), buffer)
    buffer.seek(0)
    fresh = make()
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    assert float(fresh.penalty(model).detach()) == pytest.approx(float(reg.penalty(model).detach()), rel=1e-6)
    assert fresh.tasks_seen == 1


def test_load_state_dict_rejects_unknown_keys():
    reg = EWC()
    with pytest.raises(ValueError, match=r"unknown entries \[.bogus.w.\]"):
        reg.load_state_dict({"tasks_seen": torch.tensor(1), "constant": torch.zeros(()), "bogus.w": torch.zeros(1)})


def test_consolidate_leaves_model_grads_and_mode_untouched():
    model = _model()
    model.train()
    for p in model.parameters():
        p.grad = torch.full_like(p, 7.0)
    EWC().consolidate(model, _task(0))
    assert model.training
    assert all(torch.all(p.grad == 7.0) for p in model.parameters())
    assert not any(k.startswith("_forgetless") for k in vars(model))


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf")])
def test_bad_strength_is_refused(bad):
    with pytest.raises(ValueError, match="strength"):
        EWC(strength=bad)
    with pytest.raises(ValueError, match="strength"):
        L2(strength=bad)


def test_unknown_estimator_lists_valid_names():
    with pytest.raises(ValueError, match="exact, sampled, empirical, predicted, batched"):
        EWC(estimator="diagonal")


def test_ewc_in_a_user_training_loop_keeps_old_task():
    """Three-line use in a plain loop: task 1 is remembered better with EWC than without."""
    assert old_task_accuracy(EWC(strength=100.0)) > old_task_accuracy(None) + 0.1
    assert forgetless.REGULARIZERS["ewc"] is EWC


@pytest.mark.parametrize("make, message", [
    (lambda: forgetless.EWC(fisher_samples=2.5), "fisher_samples must be an integer >= 1 or None, got 2.5"),
    (lambda: forgetless.EWC(fisher_samples=True), "fisher_samples must be an integer >= 1 or None, got True"),
    (lambda: forgetless.EWC(fisher_samples=0), "fisher_samples must be an integer >= 1 or None, got 0"),
    (lambda: forgetless.EWC(seed=1.5), r"seed must be an integer in \[0, 2\*\*62\), got 1.5"),
    (lambda: forgetless.OnlineEWC(seed=-1), r"seed must be an integer in \[0, 2\*\*62\), got -1"),
    (lambda: forgetless.EWC(strength=True), "strength must be a finite number >= 0, got True"),
    (lambda: forgetless.EWC(strength="1e3"), "strength must be a finite number >= 0, got '1e3'"),
    (lambda: forgetless.L2(strength=float("inf")), "strength must be a finite number >= 0, got inf"),
    (lambda: forgetless.OnlineEWC(decay=float("nan")), r"decay must be a number in \[0, 1\], got nan"),
    (lambda: forgetless.OnlineEWC(estimator=None), "unknown Fisher estimator None"),
    (lambda: forgetless.SI(damping=0), "damping must be a finite number > 0, got 0"),
    (lambda: forgetless.MAS(importance_samples=3.0), "importance_samples must be an integer >= 1 or None, got 3.0"),
])
def test_constructors_refuse_wrong_types_and_ranges_at_once(make, message):
    """EWC(fisher_samples=2.5) and EWC(seed=1.5) were accepted, then failed late (issue 15)."""
    with pytest.raises(ValueError, match=message):
        make()


def test_constructors_accept_numpy_integers_and_store_plain_ints():
    import numpy as np

    ewc = forgetless.EWC(strength=np.float32(2), fisher_samples=np.int64(5), seed=np.int64(3))
    assert ewc.hyperparameters() == {"strength": 2.0, "estimator": "exact", "fisher_samples": 5, "seed": 3}
    assert type(ewc.fisher_samples) is int and type(ewc.seed) is int
