"""fisher_kfac against an independent brute force: one sample at a time, autograd on log p(y|x).

The oracle never touches the engine: hooks keep each layer's input and output for ONE sample,
autograd gives ∂ log p(y|x)/∂(layer output) per label, convolution patches are cut with Python loops
(not F.unfold). A_n = mean over the sample's positions of ā āᵀ, G_n = Σ_y w_y Σ_positions g gᵀ.
"""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from forgetless import layer_rules
from forgetless.fisher import KFAC_ESTIMATORS, fisher_diagonal, fisher_kfac

TOL = 1e-5  # relative, float64


pytestmark = pytest.mark.usefixtures("float64")  # float64 makes "equal to the brute force" crisp (conftest)


# ---------------------------------------------------------------------------------------------
# The oracle
# ---------------------------------------------------------------------------------------------
def conv_patches(m: nn.Conv2d, x):
    """(positions, Cin·kh·kw) for one sample x (1, C, H, W), cut position by position."""
    (ph, pw), (sh, sw), (dh, dw), (kh, kw) = m.padding, m.stride, m.dilation, m.kernel_size
    xp = F.pad(x, (pw, pw, ph, ph))[0]
    h_out = (xp.shape[1] - dh * (kh - 1) - 1) // sh + 1
    w_out = (xp.shape[2] - dw * (kw - 1) - 1) // sw + 1
    return torch.stack([xp[:, i * sh:i * sh + dh * (kh - 1) + 1:dh, j * sw:j * sw + dw * (kw - 1) + 1:dw].reshape(-1)
                        for i in range(h_out) for j in range(w_out)])


def positions(m, t, *, output):
    """A layer's input (or output gradient) of one sample as rows, one per position."""
    if isinstance(m, nn.Conv2d):
        return t[0].reshape(t.shape[1], -1).T if output else conv_patches(m, t)
    return t.reshape(-1, t.shape[-1])


def labels_and_weights(logp, estimator, y):
    if estimator == "exact":
        return [(float(logp[c].detach().exp()), c) for c in range(len(logp))]
    if estimator == "predicted":
        return [(1.0, int(logp.argmax()))]
    return [(1.0, int(y))]


def brute_force(model, batches, estimator, layers):
    """name -> (A, G): mean over samples of A_n and G_n; ``batches`` carry the labels to use."""
    model.eval()
    sums, count = {}, 0
    for x, y in batches:
        for i in range(len(x)):
            seen = {}
            handles = [m.register_forward_hook(lambda m, a, out, name=name: seen.__setitem__(name, (a[0], out)))
                       for name, m in layers.items()]
            logp = torch.log_softmax(model(x[i:i + 1]), 1)[0]
            for h in handles:
                h.remove()
            for name, m in layers.items():
                inp, out = seen[name]
                a = positions(m, inp.detach(), output=False)
                if m.bias is not None:
                    a = torch.cat([a, torch.ones(len(a), 1)], 1)
                g_n = 0
                for w, c in labels_and_weights(logp, estimator, y[i]):
                    (g,) = torch.autograd.grad(logp[c], out, retain_graph=True)
                    g = positions(m, g, output=True)
                    g_n = g_n + w * g.T @ g
                a_n = a.T @ a / len(a)
                prev = sums.get(name, (0, 0))
                sums[name] = (prev[0] + a_n, prev[1] + g_n)
            count += 1
    return {name: (a / count, g / count) for name, (a, g) in sums.items()}


def sampled_labels(model, batches, seed):
    """The labels ``sampled`` draws: one multinomial per sample, batch by batch, from the generator."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        return [(x, torch.multinomial(torch.softmax(model.eval()(x), 1), 1, generator=gen).squeeze(1))
                for x, _ in batches]


def exact_fisher_block(model, batches, estimator, weight, bias):
    """E_n Σ_y w_y vec(∇W̄) vec(∇W̄)ᵀ, W̄ = [W (out, in…), b] read by rows: the block K-FAC approximates."""
    model.eval()
    params = [weight] + ([bias] if bias is not None else [])
    total, count = 0, 0
    for x, y in batches:
        for i in range(len(x)):
            logp = torch.log_softmax(model(x[i:i + 1]), 1)[0]
            for w, c in labels_and_weights(logp, estimator, y[i]):
                grads = torch.autograd.grad(logp[c], params, retain_graph=True)
                v = grads[0].reshape(weight.shape[0], -1)
                if bias is not None:
                    v = torch.cat([v, grads[1].unsqueeze(1)], 1)
                v = v.reshape(-1)
                total = total + w * torch.outer(v, v)
            count += 1
    return total / count


def assert_rel_close(got, want, tol=TOL):
    assert got.shape == want.shape, (got.shape, want.shape)
    err = float((got - want).abs().max() / want.abs().max())
    assert err < tol, f"relative error {err:.2e}"


# ---------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------
def mlp():
    return nn.Sequential(nn.Linear(6, 7), nn.Tanh(), nn.Linear(7, 5, bias=False), nn.ReLU(), nn.Linear(5, 4))


def cnn():
    return nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1), nn.Tanh(),
        nn.Conv2d(3, 4, (3, 2), stride=(2, 1), dilation=(1, 2), padding=(1, 0), bias=False), nn.ReLU(),
        nn.Flatten(), nn.Linear(4 * 4 * 3, 3),
    )


class Sequence(nn.Module):
    """A Linear over (N, T, in) (positions), tanh, mean over T, then a Linear to the logits."""

    def __init__(self):
        super().__init__()
        self.step, self.out = nn.Linear(3, 5), nn.Linear(5, 4)

    def forward(self, x):
        return self.out(torch.tanh(self.step(x.view(len(x), 4, 3))).mean(1))


def data(shape, classes, n=17, batch=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n, *shape, generator=g), torch.randint(0, classes, (n,), generator=g)
    return [(x[i:i + batch], y[i:i + batch]) for i in range(0, n, batch)]


MODELS = {"mlp": (mlp, (6,), 4), "cnn": (cnn, (2, 7, 5), 3), "sequence": (Sequence, (12,), 4)}


def factored_layers(model):
    return {f"{name}.weight": m for name, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))}


# ---------------------------------------------------------------------------------------------
# Every estimator against the brute force
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("estimator", KFAC_ESTIMATORS)
@pytest.mark.parametrize("name", list(MODELS))
def test_factors_match_the_batch_size_one_loop(name, estimator):
    check_against_the_loop(name, estimator)


@pytest.mark.parametrize("name", list(MODELS))
def test_factors_summed_by_blocks_of_columns_match_the_batch_size_one_loop(name, monkeypatch):
    """upper_gram computes the blocks on and above the diagonal only; 2 columns per block give every
    layer here several (real layers get them from 288 inputs or outputs on)."""
    monkeypatch.setattr(layer_rules, "GRAM_BLOCK", 2)
    check_against_the_loop(name, "exact")


def check_against_the_loop(name, estimator):
    make, shape, classes = MODELS[name]
    torch.manual_seed(1)
    model, batches = make(), data(shape, classes)
    labelled = sampled_labels(model, batches, 5) if estimator == "sampled" else batches
    got = fisher_kfac(model, batches, estimator=estimator, generator=torch.Generator().manual_seed(5))
    layers = factored_layers(model)
    want = brute_force(model, labelled, estimator, {w[:-len(".weight")]: m for w, m in layers.items()})
    assert sorted(got.factors) == sorted(layers) and got.diagonal == {}
    for weight, (a, g) in got.factors.items():
        want_a, want_g = want[weight[:-len(".weight")]]
        assert_rel_close(a, want_a)
        assert_rel_close(g, want_g)
        assert torch.equal(a, a.T) and torch.equal(g, g.T)


def test_a_linear_over_positions_follows_the_expand_convention():
    """T positions of (N, T, in): A averages over them, G sums over them (K-FAC-expand)."""
    torch.manual_seed(2)
    model, batches = Sequence(), data((12,), 4)
    got = fisher_kfac(model, batches).factors["step.weight"]
    x = torch.cat([b[0] for b in batches]).view(-1, 4, 3)
    a_bar = torch.cat([x, torch.ones(*x.shape[:2], 1)], 2).reshape(-1, 4)
    assert_rel_close(got[0], a_bar.T @ a_bar / len(a_bar))  # mean over samples AND positions: no T factor
    # one position (T = 1) is plain K-FAC: the same as a 2-D input
    one = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 4))
    x2 = torch.randn(9, 3)
    y = torch.randint(0, 4, (9,))
    flat = fisher_kfac(one, (x2, y)).factors
    seq = fisher_kfac(nn.Sequential(nn.Unflatten(1, (1, 3)), one, nn.Flatten()), (x2, y)).factors
    for name in flat:
        for f, s in zip(flat[name], seq[name.replace("0.", "1.0.", 1).replace("2.", "1.2.", 1)]):
            assert_rel_close(s, f, 1e-12)


# ---------------------------------------------------------------------------------------------
# Where theory says K-FAC IS the Fisher block
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("classes", [2, 4])
def test_a_single_linear_layer_whose_predictions_do_not_depend_on_x_has_the_exact_block(classes):
    """Logits W x + b with W = 0: p(y|x) = softmax(b) for every x, so g gᵀ (over y) is the same
    matrix diag(p) − ppᵀ for every sample and E[g gᵀ ⊗ ā āᵀ] = E[g gᵀ] ⊗ E[ā āᵀ] exactly.
    With two classes there is one class direction, e₁ − e₂; any number of classes works."""
    torch.manual_seed(3)
    layer = nn.Linear(5, classes)
    with torch.no_grad():
        layer.weight.zero_()
    batches = data((5,), classes, n=40)
    a, g = fisher_kfac(layer, batches).factors["weight"]
    exact = exact_fisher_block(layer, batches, "exact", layer.weight, layer.bias)
    assert_rel_close(torch.kron(g, a), exact, 1e-10)
    # ... and only then: once the predictions depend on x, K-FAC is an approximation (the test can fail)
    with torch.no_grad():
        layer.weight.normal_()
    a, g = fisher_kfac(layer, batches).factors["weight"]
    exact = exact_fisher_block(layer, batches, "exact", layer.weight, layer.bias)
    assert float((torch.kron(g, a) - exact).abs().max() / exact.abs().max()) > 1e-2


@pytest.mark.parametrize("estimator", ["exact", "empirical"])
def test_one_sample_gives_the_exact_blocks_of_every_dense_layer(estimator):
    """With a single sample E[g gᵀ ⊗ ā āᵀ] = g gᵀ ⊗ ā āᵀ (summed over labels): every Linear block is exact."""
    torch.manual_seed(4)
    model, batches = mlp(), data((6,), 4, n=1)
    got = fisher_kfac(model, batches, estimator=estimator).factors
    for name, m in factored_layers(model).items():
        a, g = got[name]
        exact = exact_fisher_block(model, batches, estimator, m.weight, m.bias)
        assert_rel_close(torch.kron(g, a), exact, 1e-10)


# ---------------------------------------------------------------------------------------------
# Everything else falls back to the diagonal
# ---------------------------------------------------------------------------------------------
class Mixed(nn.Module):
    """A Linear with a frozen bias, a LayerNorm, a Linear called on a tied weight, a bare parameter."""

    def __init__(self):
        super().__init__()
        self.a, self.norm, self.b, self.head = nn.Linear(6, 5), nn.LayerNorm(5), nn.Linear(5, 5), nn.Linear(5, 3)
        self.tied = nn.Linear(5, 5, bias=False)
        self.tied.weight = self.b.weight
        self.scale = nn.Parameter(torch.linspace(0.5, 1.5, 3))
        self.a.bias.requires_grad_(False)

    def forward(self, x):
        h = self.tied(torch.tanh(self.b(self.norm(self.a(x)))))
        return self.head(torch.tanh(h)) * self.scale


def test_other_parameters_get_their_diagonal_fisher_in_the_same_pass():
    torch.manual_seed(5)
    model, batches = Mixed(), data((6,), 3)
    got = fisher_kfac(model, batches)
    assert sorted(got.factors) == ["a.weight", "head.weight"]
    assert got.factors["a.weight"][0].shape == (6, 6)  # frozen bias: no bias row in A
    diagonal = fisher_diagonal(model, batches)
    assert sorted(got.diagonal) == ["b.bias", "b.weight", "norm.bias", "norm.weight", "scale"]
    for name, f in got.diagonal.items():
        assert_rel_close(f, diagonal[name], 1e-10)
    want = brute_force(model, batches, "exact", {"a": model.a, "head": model.head})
    a, g = want["a"]
    assert_rel_close(got.factors["a.weight"][0], a[:6, :6])  # the oracle appended the 1 (frozen bias)
    assert_rel_close(got.factors["a.weight"][1], g)


def test_a_frozen_weight_leaves_its_bias_on_the_diagonal():
    torch.manual_seed(6)
    model, batches = mlp(), data((6,), 4)
    model[0].weight.requires_grad_(False)
    got = fisher_kfac(model, batches)
    assert sorted(got.factors) == ["2.weight", "4.weight"] and sorted(got.diagonal) == ["0.bias"]
    assert_rel_close(got.diagonal["0.bias"], fisher_diagonal(model, batches)["0.bias"], 1e-10)


# ---------------------------------------------------------------------------------------------
# Options, modes and errors
# ---------------------------------------------------------------------------------------------
def test_eval_mode_for_the_pass_and_every_mode_restored():
    torch.manual_seed(7)
    model = nn.Sequential(nn.Linear(6, 7), nn.ReLU(), nn.Dropout(0.5), nn.Linear(7, 4)).train()
    model[1].eval()
    batches = data((6,), 4)
    got = fisher_kfac(model, batches)
    assert model.training and not model[1].training and model[2].training
    twin = copy.deepcopy(model)
    want = brute_force(twin, batches, "exact", {"3": twin[3]})
    assert_rel_close(got.factors["3.weight"][1], want["3"][1])


def test_output_transform_and_max_samples():
    torch.manual_seed(8)
    model, batches = mlp(), data((6,), 2)
    got = fisher_kfac(model, batches, output_transform=lambda z: z[:, 2:4], max_samples=8)
    sliced = copy.deepcopy(model)
    with torch.no_grad():  # the same network with only logits 2 and 3
        last = nn.Linear(5, 2)
        last.weight.copy_(model[4].weight[2:4])
        last.bias.copy_(model[4].bias[2:4])
    sliced[4] = last
    want = fisher_kfac(sliced, [(batches[0][0], batches[0][1]), (batches[1][0][:2], batches[1][1][:2])]).factors
    for name in ("0.weight", "2.weight"):
        for x, y in zip(got.factors[name], want[name]):
            assert_rel_close(x, y, 1e-10)


def test_sampled_is_seeded_and_leaves_the_global_rng_alone():
    torch.manual_seed(9)
    model, batches = mlp(), data((6,), 4)
    state = torch.get_rng_state()
    one, two = (fisher_kfac(model, batches, estimator="sampled").factors for _ in range(2))
    assert torch.equal(state, torch.get_rng_state())
    assert all(torch.equal(one[n][1], two[n][1]) for n in one)


def test_batched_and_unknown_estimators_are_refused_in_one_line():
    with pytest.raises(ValueError, match="has no Kronecker factors"):
        fisher_kfac(mlp(), data((6,), 4), estimator="batched")
    with pytest.raises(ValueError, match="choose one of exact, sampled, empirical, predicted"):
        fisher_kfac(mlp(), data((6,), 4), estimator="true")


def test_empty_data_and_nan_outputs():
    with pytest.raises(ValueError, match="no samples"):
        fisher_kfac(mlp(), [])
    model = mlp()
    with torch.no_grad():
        model[0].weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        fisher_kfac(model, data((6,), 4))


# ---------------------------------------------------------------------------------------------
# Sequence outputs (N, T, C): the per-sequence convention of the diagonal, factored
# ---------------------------------------------------------------------------------------------
def test_sequence_outputs_use_the_per_sequence_convention():
    """log p(y|x) = Σ_t log p(y_t|x); exact sums every position's C−1 directions (cross terms vanish
    in expectation), empirical squares the gradient of the summed log-likelihood; -100 is ignored."""
    torch.manual_seed(10)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 4)).eval()
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(7, 6, 3, generator=g), torch.randint(0, 4, (7, 6), generator=g)
    y[0, :2] = -100
    layers = {"0": model[0], "2": model[2]}
    for estimator in ("exact", "empirical"):
        got = fisher_kfac(model, (x, y), estimator=estimator).factors
        sums = {name: [0, 0] for name in layers}
        for i in range(len(x)):
            seen = {}
            handles = [m.register_forward_hook(lambda m, a, out, name=name: seen.__setitem__(name, (a[0], out)))
                       for name, m in layers.items()]
            logp = torch.log_softmax(model(x[i:i + 1]), -1)[0]  # (T, C)
            for h in handles:
                h.remove()
            counted = [t for t in range(6) if y[i, t] != -100]
            if estimator == "exact":  # every position, every class, weighted by p
                objectives = [(float(logp[t, c].detach().exp()), logp[t, c]) for t in counted for c in range(4)]
            else:
                objectives = [(1.0, sum(logp[t, y[i, t]] for t in counted))]
            for name, m in layers.items():
                inp, out = seen[name]
                a = torch.cat([inp.detach().reshape(-1, inp.shape[-1]), torch.ones(6, 1)], 1)
                sums[name][0] = sums[name][0] + a.T @ a / len(a)
                for w, objective in objectives:
                    (grad,) = torch.autograd.grad(objective, out, retain_graph=True)
                    grad = grad.reshape(-1, grad.shape[-1])
                    sums[name][1] = sums[name][1] + w * grad.T @ grad
        for name in layers:
            assert_rel_close(got[f"{name}.weight"][0], sums[name][0] / len(x))
            assert_rel_close(got[f"{name}.weight"][1], sums[name][1] / len(x))
