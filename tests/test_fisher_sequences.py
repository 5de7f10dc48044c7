"""The Fisher of a sequence model (logits (N, T, C)): per-sequence convention, against brute force.

The exact reference enumerates every label sequence y = (y_1 … y_T) with its probability Π_t p_t(y_t)
and squares the gradient of Σ_t log p_t(y_t): it does not assume that the cross terms between
positions vanish, it checks it.
"""
from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from forgetless.fisher import EXACT_MAX_DIRECTIONS, IGNORE_INDEX, fisher_diagonal
from forgetless.per_sample import output_norm_sensitivity

T, VOCAB, CLASSES = 3, 5, 3


pytestmark = pytest.mark.usefixtures("float64")  # float64 makes "equal to the brute force" crisp (conftest)


class TinyLM(nn.Module):
    """Embedding → LayerNorm → causal prefix mean → Linear → tanh → Linear: (N, T) tokens → (N, T, C)."""

    def __init__(self):
        super().__init__()
        self.emb, self.norm = nn.Embedding(VOCAB, 4), nn.LayerNorm(4)
        self.mix, self.out = nn.Linear(4, 6), nn.Linear(6, CLASSES)

    def forward(self, x):
        h = self.norm(self.emb(x))
        h = h.cumsum(1) / torch.arange(1, x.shape[1] + 1).unsqueeze(1)  # position t sees tokens ≤ t
        return self.out(torch.tanh(self.mix(h)))


class SlowLinear(nn.Linear):
    def forward(self, x):
        return super().forward(x)


def data(n=9, seed=0, ignore=True):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, VOCAB, (n, T), generator=g)
    y = torch.randint(0, CLASSES, (n, T), generator=g)
    if ignore:
        y[1, 0] = y[4, 2] = IGNORE_INDEX
    return x, y


def params(model):
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def squared_grad(model, total, objective, weight=1.0):
    ps = params(model)
    for n, g in zip(ps, torch.autograd.grad(objective, list(ps.values()), retain_graph=True)):
        total[n] += weight * g**2


def brute_force(model, x, labels, counted):
    """Mean over sequences of (∂ Σ_{t counted} log p_t(labels_t) / ∂θ)², one sequence per forward."""
    model.eval()
    total = {n: torch.zeros_like(p) for n, p in params(model).items()}
    for i in range(len(x)):
        logp = torch.log_softmax(model(x[i:i + 1])[0], -1)
        terms = [logp[t, labels[i, t]] for t in range(T) if counted[i, t]]
        squared_grad(model, total, sum(terms))
    return {n: v / len(x) for n, v in total.items()}


def brute_force_exact(model, x, counted):
    """E over every label sequence of the squared gradient of its log-likelihood (counted positions)."""
    model.eval()
    total = {n: torch.zeros_like(p) for n, p in params(model).items()}
    for i in range(len(x)):
        logp = torch.log_softmax(model(x[i:i + 1])[0], -1)
        positions = [t for t in range(T) if counted[i, t]]
        for labels in itertools.product(range(CLASSES), repeat=len(positions)):
            chosen = [logp[t, c] for t, c in zip(positions, labels)]
            weight = float(torch.stack(chosen).sum().detach().exp())
            squared_grad(model, total, sum(chosen), weight)
    return {n: v / len(x) for n, v in total.items()}


def assert_rel_close(got, want, rtol=1e-9):
    assert got.keys() == want.keys()
    for n in want:
        assert got[n].shape == want[n].shape, n
        assert (got[n] - want[n]).abs().max() <= rtol * want[n].abs().max() + 1e-300, n


def test_exact_is_the_expectation_over_every_label_sequence():
    torch.manual_seed(0)
    model, (x, y) = TinyLM(), data()
    got = fisher_diagonal(model, [(x[:4], y[:4]), (x[4:], y[4:])])
    assert_rel_close(got, brute_force_exact(model, x, y != IGNORE_INDEX))


def test_empirical_and_predicted_square_the_summed_gradient():
    torch.manual_seed(0)
    model, (x, y) = TinyLM(), data()
    counted = y != IGNORE_INDEX
    assert_rel_close(fisher_diagonal(model, (x, y), estimator="empirical"), brute_force(model, x, y, counted))
    with torch.no_grad():
        argmax = model.eval()(x).argmax(-1)
    assert_rel_close(fisher_diagonal(model, (x, y), estimator="predicted"), brute_force(model, x, argmax, counted))


def test_sampled_draws_one_label_per_position():
    torch.manual_seed(0)
    model, (x, y) = TinyLM(), data()
    got = fisher_diagonal(model, (x, y), estimator="sampled", generator=torch.Generator().manual_seed(3))
    with torch.no_grad():  # the draws: one multinomial over every (sequence, position), in that order
        p = torch.softmax(model.eval()(x), -1).reshape(-1, CLASSES)
        labels = torch.multinomial(p, 1, generator=torch.Generator().manual_seed(3)).view(len(x), T)
    assert_rel_close(got, brute_force(model, x, labels, y != IGNORE_INDEX))


def test_sampled_is_unbiased_for_exact_on_sequences():
    torch.manual_seed(0)
    model = TinyLM()
    x, y = data(n=3, ignore=False)
    x, y = x.repeat(2000, 1), y.repeat(2000, 1)
    exact, sampled = fisher_diagonal(model, (x, y)), fisher_diagonal(model, (x, y), estimator="sampled")
    for n in exact:
        assert (sampled[n] - exact[n]).abs().max() < 0.1 * exact[n].abs().max(), n


def test_generic_path_gives_the_same_sequence_fisher():
    torch.manual_seed(0)
    model, (x, y) = TinyLM(), data()
    twin = TinyLM()
    twin.load_state_dict(model.state_dict())
    twin.mix.__class__ = twin.out.__class__ = SlowLinear
    for estimator in ("exact", "empirical"):
        assert_rel_close(fisher_diagonal(twin, (x, y), estimator=estimator),
                         fisher_diagonal(model, (x, y), estimator=estimator))


def test_exact_beyond_the_direction_limit_is_refused_pointing_to_sampled():
    model = nn.Sequential(nn.Embedding(VOCAB, 4), nn.Linear(4, 300))
    x = torch.randint(0, VOCAB, (2, 20))
    with pytest.raises(ValueError, match=r"20 positions × 299 = 5980 backward directions per sample \(more than 4096\): use estimator=.sampled."):
        fisher_diagonal(model, (x, torch.zeros(2, 20, dtype=torch.long)))
    assert EXACT_MAX_DIRECTIONS == 4096
    assert fisher_diagonal(model, (x, torch.zeros(2, 20, dtype=torch.long)), estimator="sampled")["1.weight"].shape == (300, 4)


def test_targets_of_the_wrong_shape_or_range_are_refused():
    model, (x, y) = TinyLM(), data()
    with pytest.raises(ValueError, match=r"class indices of shape \(9, 3\)"):
        fisher_diagonal(model, (x, y[:, 0]), estimator="empirical")
    with pytest.raises(ValueError, match=r"\[0, 3\) .* or be -100"):
        fisher_diagonal(model, (x, y + 5), estimator="empirical")


def test_mas_on_sequences_takes_the_norm_over_every_position():
    torch.manual_seed(0)
    model, (x, _) = TinyLM(), data()
    got = output_norm_sensitivity(model, (x, torch.zeros(len(x))))
    want = {n: torch.zeros_like(p) for n, p in params(model).items()}
    for i in range(len(x)):
        out = model.eval()(x[i:i + 1])
        ps = params(model)
        for n, g in zip(ps, torch.autograd.grad(out.pow(2).sum(), list(ps.values()))):
            want[n] += g.abs() / len(x)
    assert_rel_close(got, want)
