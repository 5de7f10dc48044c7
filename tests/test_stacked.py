"""K copies trained as one stacked model against K separate runs with the same seeds (the oracle)."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from forgetless import post
from forgetless.benchmarks import post_split
from forgetless.data import ImageData
from forgetless.experiment import benchmark_factory, choose_strength
from forgetless.benchmarks.base import Split
from forgetless.models import mlp
from forgetless.post_stacked import task_b_phases
from forgetless.regularizers import EWC, L2, MAS, SI, OnlineEWC
from forgetless.run_config import RunConfig
from forgetless.stacked import StackedMLP, stackable, train_stacked
from forgetless.stacked_penalty import KroneckerPenalty, stacked_penalties
from forgetless.strength import Search
from forgetless.training import TrainingError, adam, train_task

from synthetic import digit_images

STEPS, BATCH = 40, 16


def _data(n=200, features=12, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, features, generator=g)
    return Split(x, (x[:, :classes].argmax(1) + (x[:, -1] > 1).long()) % classes)


def _start(dropout=0.5):
    torch.manual_seed(0)
    model = mlp(12, (16, 8), 3, dropout)
    old = _data(seed=1)
    train_task(model, old, steps=30, batch_size=BATCH, optimizer=adam(model, 1e-2), generator=torch.Generator().manual_seed(1))
    return model, old


def _regs(model, old):
    """Copies under EWC at four strengths, L2, MAS and none, all consolidated on the same model."""
    ewc, l2, mas = EWC(1.0), L2(1.0), MAS(1.0)
    for reg in (ewc, l2, mas):
        reg.consolidate(model, (old.x, old.y))
    regs = []
    for strength in (0.0, 1.0, 100.0, 1e4):
        reg = EWC(strength)
        reg.load_state_dict(ewc.state_dict())
        regs.append(reg)
    return regs + [l2, mas, None]


def _separate(model, data, regs, seed=5, lr=1e-2):
    """What each copy's own run gives: its model, or the TrainingError it raised."""
    out = []
    for reg in regs:
        m = copy.deepcopy(model)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # dropout masks
            try:
                train_task(m, data, steps=STEPS, batch_size=BATCH, optimizer=adam(m, lr),
                           generator=torch.Generator().manual_seed(seed), regularizer=reg)
                out.append(m)
            except TrainingError as err:
                out.append(err)
    return out


def _stacked(model, data, regs, seed=5, lr=1e-2):
    models = [copy.deepcopy(model) for _ in regs]
    stack = StackedMLP(models)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        losses = train_stacked(stack, data, steps=STEPS, batch_size=BATCH, optimizer=adam(stack, lr),
                               generator=torch.Generator().manual_seed(seed), regularizers=regs)
    stack.write_to(models)
    return models, losses


def _max_diff(a, b):
    return max(float((p - q).detach().abs().max()) for p, q in zip(a.parameters(), b.parameters()))


def _assert_copies_end_as_separate_runs(model, data, regs):
    """Train each regularizer's copy separately and all stacked; every copy must end where its run ends."""
    separate = _separate(model, data, regs)
    stacked, losses = _stacked(model, data, regs)
    for k, (alone, together, loss) in enumerate(zip(separate, stacked, losses)):
        assert isinstance(loss, float)
        assert _max_diff(alone, together) < 1e-5, k  # measured: ~1e-7
    return separate, stacked


@pytest.mark.parametrize("dropout", [0.0, 0.5])
def test_each_stacked_copy_ends_where_its_separate_run_ends(dropout):
    model, old = _start(dropout)
    data, regs = _data(seed=2), _regs(model, old)
    separate, stacked = _assert_copies_end_as_separate_runs(model, data, regs)
    # the copies really differ (the tolerance above is far below what λ changes) ...
    assert _max_diff(stacked[0], stacked[3]) > 1e-2
    # ... and the dropout masks are what makes them match: other masks, other weights
    if dropout:
        other, _ = _stacked(model, data, regs, seed=6)
        assert _max_diff(other[1], separate[1]) > 1e-2


def _kfac_regs(model, old, strengths=(0.0, 1.0, 30.0, 1e3)):
    """K-FAC EWC (damped, as ewc-kfac) at several strengths sharing one consolidation: the post's search."""
    base = EWC(1.0, structure="kfac", kfac_damping=0.3)
    base.consolidate(model, (old.x, old.y))
    regs = []
    for strength in strengths:
        reg = EWC(strength, structure="kfac", kfac_damping=0.3)
        reg.load_state_dict(base.state_dict())
        regs.append(reg)
    return regs


def _kronecker_part(model, regs):
    stack = StackedMLP([copy.deepcopy(model) for _ in regs])
    found = [p for p in stacked_penalties(stack.names, stack.stacked_parameters(), regs) if isinstance(p, KroneckerPenalty)]
    return stack, found[0]


@pytest.mark.parametrize("dropout", [0.0, 0.5])
def test_kronecker_factored_copies_end_where_their_separate_runs_end(dropout):
    model, old = _start(dropout)
    data, regs = _data(seed=2), _kfac_regs(model, old)
    assert all(layer.a.dim() == 2 for layer in _kronecker_part(model, regs)[1].layers)  # one A for every copy
    _, stacked = _assert_copies_end_as_separate_runs(model, data, regs)
    assert _max_diff(stacked[0], stacked[3]) > 1e-2


def test_copies_with_their_own_kronecker_factors_end_where_their_separate_runs_end():
    model, old = _start()
    ewc = EWC(10.0, structure="kfac")  # undamped, factors of other data
    ewc.consolidate(model, (_data(seed=7).x, _data(seed=7).y))
    online = OnlineEWC(10.0, structure="kfac", kfac_damping=0.3)
    online.consolidate(model, (old.x, old.y))
    regs = [ewc, online, _kfac_regs(model, old)[2]]
    assert all(layer.a.dim() == 3 for layer in _kronecker_part(model, regs)[1].layers)  # A per copy
    data = _data(seed=2)
    for alone, together in zip(_separate(model, data, regs), _stacked(model, data, regs)[0]):
        assert _max_diff(alone, together) < 1e-5  # measured: ~7e-8


def test_the_stacked_kronecker_penalty_is_each_copys_penalty_and_gradient():
    # two terms per copy (two tasks, two anchors), each copy somewhere else: against the one-model autograd
    model, old = _start()
    regs = []
    for k, strength in enumerate((2.0, 50.0)):
        reg = EWC(strength, structure="kfac", kfac_damping=0.1 * k)
        reg.consolidate(model, (old.x, old.y))
        moved = copy.deepcopy(model)
        with torch.no_grad():
            for p in moved.parameters():
                p.add_(0.05 * (k + 1))
        reg.consolidate(moved, (_data(seed=7).x, _data(seed=7).y))
        regs.append(reg)
    stack, penalty = _kronecker_part(model, regs)
    params = stack.stacked_parameters()
    torch.manual_seed(3)
    with torch.no_grad():
        for p in params:
            p.add_(0.1 * torch.randn_like(p))
    values = penalty.value(params)
    for p in params:
        p.grad = torch.zeros_like(p)
    penalty.add_gradient_(params)
    copies = [copy.deepcopy(model) for _ in regs]
    stack.write_to(copies)
    for k, (net, reg) in enumerate(zip(copies, regs)):
        alone = reg.penalty(net) - 0.5 * reg.strength * reg.constant  # the constant has no gradient
        alone.backward()
        assert float(values[k]) == pytest.approx(float(alone), rel=1e-5)
        for (name, p), stacked in zip(net.named_parameters(), [p.grad[k] for p in params]):
            assert torch.allclose(p.grad, stacked, rtol=1e-5, atol=1e-7), name


def test_a_copy_that_diverges_is_reported_and_leaves_the_others_alone():
    model, old = _start()
    ewc = EWC(1.0)
    ewc.consolidate(model, (old.x, old.y))
    state = ewc.state_dict()
    state = {k: v + 1e18 if k.startswith("anchor.") else v for k, v in state.items()}  # far from the anchor
    regs = []
    for strength in (1e-30, 1e10):  # the second one's penalty overflows to inf at the first step
        reg = EWC(strength)
        reg.load_state_dict(state)
        regs.append(reg)
    data = _data(seed=2)
    separate = _separate(model, data, regs)
    stacked, losses = _stacked(model, data, regs)
    assert isinstance(separate[1], TrainingError) and isinstance(losses[1], TrainingError)
    assert "step 1)" in str(separate[1]) and "step 1)" in str(losses[1])
    assert isinstance(losses[0], float) and _max_diff(separate[0], stacked[0]) < 1e-5


def test_what_cannot_be_stacked_is_said():
    model, old = _start()
    si = SI(1.0)
    kfac = EWC(1.0, structure="kfac")
    kfac.consolidate(model, (old.x, old.y))
    assert "SI" in stackable(model, [si])
    assert stackable(model, [kfac, kfac]) is None
    assert "same layers" in stackable(model, [kfac, EWC(1.0)]) and "same layers" in stackable(model, [kfac, None])
    assert "nn.Sequential" in stackable(torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3)))
    frozen = mlp(4, (3,), 2)
    frozen[1].weight.requires_grad_(False)
    assert stackable(frozen) == "some parameters are frozen"
    with pytest.raises(ValueError, match="architectures differ"):
        StackedMLP([mlp(4, (3,), 2), mlp(4, (5,), 2)])


@pytest.fixture(scope="module")
def bench():
    images, labels = digit_images(600, 1)
    test_images, test_labels = digit_images(200, 2)
    return post_split(ImageData(images, labels.astype(np.int64), test_images, test_labels.astype(np.int64), "toy"))


def test_the_posts_strengths_trained_at_once_score_and_choose_as_separate_jobs(bench):
    config = post.PostConfig(epochs=2, hidden=32)
    jobs = post.PostJobs(config, bench, post.ROWS)
    schedule = post.schedules(config)["ewc"]
    after_a = jobs.task_a_phase(schedule, ("ewc",))
    grid = (1.0, 100.0, 1e4, 1e6)
    separate = [jobs.task_b_phase("ewc", schedule, after_a, s) for s in grid]
    stacked = task_b_phases(jobs, [("ewc", s) for s in grid], schedule, after_a)
    searches = []
    for outcomes in (separate, stacked):
        search = Search(grid)
        search.first()
        for strength, out in zip(grid, outcomes):
            search.record(strength, sum(out["valid_accuracy"].values()) / 2)
        searches.append(search.result())
    for a, b in zip(separate, stacked):
        for split in ("valid_accuracy", "accuracy"):
            assert a[split] == pytest.approx(b[split], abs=1.5 / 60)  # at most one sample flips at a boundary
        assert a["hyperparameters"] == b["hyperparameters"]
    assert searches[0].best == searches[1].best
    assert len(set(searches[1].scores)) > 1  # the strengths do differ


@pytest.fixture(scope="module")
def split_data():
    images, labels = digit_images(600, 1)
    test_images, test_labels = digit_images(200, 2)
    return ImageData(images, labels.astype(np.int64), test_images, test_labels.astype(np.int64), "toy")


# a fresh Adam per task: the first task is trained once for every strength; one Adam: stacked throughout
@pytest.mark.parametrize("method,grid,reset", [("ewc", (1.0, 1e2, 1e4, 1e6), True), ("mas", (0.1, 10.0, 1e3), False),
                                               ("l2", (0.1, 10.0), True)])
def test_the_run_search_trained_stacked_scores_and_chooses_as_one_at_a_time(split_data, method, grid, reset):
    config = RunConfig(method=method, strength="auto", strength_grid=grid, iterations=25, batch_size=32,
                       reset_optimizer=reset, options={"hidden": (16,)})
    make_bench = benchmark_factory(config, split_data)
    together = choose_strength(config, make_bench, None, stack=True)
    alone = choose_strength(config, make_bench, None, stack=False)
    assert together[2]["trained"].startswith("stacked: ") and alone[2]["trained"] == "one at a time (not asked for)"
    assert together[0].scores == pytest.approx(alone[0].scores, abs=1e-9)  # one sample flipping would show
    assert together[0].best == alone[0].best and len(set(together[0].scores)) > 1
    assert together[1].accuracy_matrix == pytest.approx(alone[1].accuracy_matrix, abs=1e-9)
    assert together[1].memory == alone[1].memory and alone[1].memory  # what result.json's regularizer_memory says


def test_the_run_search_says_why_it_trains_one_at_a_time(split_data):
    config = RunConfig(method="si", strength="auto", strength_grid=(1.0, 10.0), iterations=5, options={"hidden": (8,)})
    with pytest.raises(ValueError, match="cannot train its strengths stacked: SI acts between steps"):
        choose_strength(config, benchmark_factory(config, split_data), None, stack=True)
    config = RunConfig(method="ewc", strength="auto", strength_grid=(1.0, 10.0), iterations=5,
                       options={"hidden": (8,), "dropout": 0.5})
    assert "dropout" in choose_strength(config, benchmark_factory(config, split_data), None)[2]["trained"]
    config = RunConfig(method="ewc", strength="auto", strength_grid=(1.0, 10.0), iterations=5,
                       options={"hidden": (1000, 1000)})  # not measured
    assert "not measured to pay" in choose_strength(config, benchmark_factory(config, split_data), None)[2]["trained"]
