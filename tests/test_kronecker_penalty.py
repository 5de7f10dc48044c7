"""The Kronecker-factored penalty against the explicit matrix torch.kron(G, A), value and gradient."""
from __future__ import annotations

import pytest
import torch

from forgetless.kronecker import KroneckerTerm, bias_name, damp_kronecker, kronecker_penalty, merge_kronecker


pytestmark = pytest.mark.usefixtures("float64")  # float64 makes "equal to the brute force" crisp (conftest)


def psd(n, gen):
    x = torch.randn(n, n + 2, generator=gen)
    return x @ x.T / n


def layer(gen, shape, bias=True):
    """Parameters, an anchor and factors for one layer of weight ``shape`` (Linear or Conv2d)."""
    cols = int(torch.tensor(shape[1:]).prod())
    w = torch.randn(shape, generator=gen, requires_grad=True)
    params = {"net.weight": w}
    anchor = {"net.weight": torch.randn(shape, generator=gen)}
    if bias:
        params["net.bias"] = torch.randn(shape[0], generator=gen, requires_grad=True)
        anchor["net.bias"] = torch.randn(shape[0], generator=gen)
    return params, anchor, (psd(cols + bias, gen), psd(shape[0], gen))


def explicit(params, anchor, a, g):
    """vec(ΔW̄)ᵀ kron(G, A) vec(ΔW̄), vec reading rows of ΔW̄ = [W − W*, b − b*]: plain autograd."""
    w = params["net.weight"]
    d = (w - anchor["net.weight"]).reshape(w.shape[0], -1)
    if "net.bias" in params:
        d = torch.cat([d, (params["net.bias"] - anchor["net.bias"]).unsqueeze(1)], 1)
    v = d.reshape(-1)
    return v @ torch.kron(g, a) @ v


@pytest.mark.parametrize("shape, bias", [((3, 4), True), ((3, 4), False), ((2, 3, 2, 2), True), ((1, 1), True)])
def test_value_and_gradient_match_the_explicit_kronecker_product(shape, bias):
    gen = torch.Generator().manual_seed(0)
    params, anchor, (a, g) = layer(gen, shape, bias)
    got = kronecker_penalty(params, [KroneckerTerm(anchor, {"net.weight": (a, g)})])
    want = explicit(params, anchor, a, g)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=0)
    got_grads = torch.autograd.grad(got, list(params.values()))
    want_grads = torch.autograd.grad(want, list(params.values()))
    for x, y in zip(got_grads, want_grads):
        assert x.shape == y.shape
        torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-14)
    assert got.grad_fn is not None and "Kronecker" in type(got.grad_fn).__name__  # the closed-form path


def test_separate_terms_add_up_and_share_one_gradient():
    gen = torch.Generator().manual_seed(1)
    params, anchor1, f1 = layer(gen, (4, 3))
    _, anchor2, f2 = layer(gen, (4, 3))
    terms = [KroneckerTerm(anchor1, {"net.weight": f1}), KroneckerTerm(anchor2, {"net.weight": f2})]
    got = kronecker_penalty(params, terms)
    want = explicit(params, anchor1, *f1) + explicit(params, anchor2, *f2)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=0)
    for x, y in zip(torch.autograd.grad(got, list(params.values())), torch.autograd.grad(want, list(params.values()))):
        torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-14)


def test_two_layers_and_the_root_module_naming():
    gen = torch.Generator().manual_seed(2)
    p1, a1, f1 = layer(gen, (3, 2))
    params = {"weight": p1["net.weight"], "bias": p1["net.bias"]}
    anchor = {"weight": a1["net.weight"], "bias": a1["net.bias"]}
    got = kronecker_penalty(params, [KroneckerTerm(anchor, {"weight": f1})])
    torch.testing.assert_close(got, explicit(p1, a1, *f1))


def test_gradcheck_and_second_derivatives():
    gen = torch.Generator().manual_seed(3)
    params, anchor, f = layer(gen, (2, 3))
    names = list(params)

    def fn(*thetas):
        return kronecker_penalty(dict(zip(names, thetas)), [KroneckerTerm(anchor, {"net.weight": f})])

    thetas = tuple(params.values())
    assert torch.autograd.gradcheck(fn, thetas)
    assert torch.autograd.gradgradcheck(fn, thetas)


def test_a_retained_graph_gives_the_same_gradient_twice():
    gen = torch.Generator().manual_seed(4)
    params, anchor, f = layer(gen, (3, 3))
    value = kronecker_penalty(params, [KroneckerTerm(anchor, {"net.weight": f})])
    first = torch.autograd.grad(value, list(params.values()), retain_graph=True)
    second = torch.autograd.grad(value, list(params.values()))
    for x, y in zip(first, second):
        assert torch.equal(x, y)


def test_no_grad_and_torch_func_give_the_same_value_and_gradient():
    gen = torch.Generator().manual_seed(5)
    params, anchor, f = layer(gen, (3, 2))
    term = KroneckerTerm(anchor, {"net.weight": f})
    want = kronecker_penalty(params, [term])
    with torch.no_grad():
        torch.testing.assert_close(kronecker_penalty(params, [term]), want.detach())
    detached = {k: v.detach() for k, v in params.items()}
    grads = torch.func.grad(lambda p: kronecker_penalty(p, [term]))(detached)
    for name, g in zip(params, torch.autograd.grad(want, list(params.values()))):
        torch.testing.assert_close(grads[name], g)


def test_vmap_over_the_bias_alone_gives_each_value():
    """An unbatched weight beside batched biases: under a transform ΔW̄ is built by differentiable operations."""
    gen = torch.Generator().manual_seed(6)
    params, anchor, f = layer(gen, (3, 2))
    term = KroneckerTerm(anchor, {"net.weight": f})
    w, biases = params["net.weight"].detach(), torch.randn(4, 3, generator=gen)
    got = torch.func.vmap(lambda b: kronecker_penalty({"net.weight": w, "net.bias": b}, [term]))(biases)
    want = torch.stack([explicit({"net.weight": w, "net.bias": b}, anchor, *f) for b in biases])
    torch.testing.assert_close(got, want, rtol=1e-12, atol=0)


def test_no_terms_is_zero():
    assert float(kronecker_penalty({"w": torch.ones(2, 2)}, [])) == 0.0


def test_bad_factors_are_one_line_errors():
    gen = torch.Generator().manual_seed(6)
    params, anchor, (a, g) = layer(gen, (3, 4))
    with pytest.raises(ValueError, match=r"G must be \(3, 3\) and A \(4, 4\) or \(5, 5\)"):
        kronecker_penalty(params, [KroneckerTerm(anchor, {"net.weight": (a[:3, :3], g)})])
    with pytest.raises(ValueError, match="the model has no parameter 'net.bias'"):
        kronecker_penalty({"net.weight": params["net.weight"]}, [KroneckerTerm(anchor, {"net.weight": (a, g)})])
    with pytest.raises(ValueError, match="named by its weight"):
        bias_name("net.kernel")


# ---------------------------------------------------------------------------------------------
# merge_kronecker: one Kronecker product above a sum of two
# ---------------------------------------------------------------------------------------------
def test_merged_product_bounds_the_sum_and_its_pi_minimises_the_excess_trace():
    gen = torch.Generator().manual_seed(7)
    a1, a2, g1, g2 = psd(4, gen), 3 * psd(4, gen), psd(3, gen), 0.1 * psd(3, gen)
    exact = torch.kron(g1, a1) + torch.kron(g2, a2)
    a, g = merge_kronecker((a1, g1), (a2, g2))
    excess = torch.kron(g, a) - exact
    assert torch.linalg.eigvalsh(excess).min() > -1e-10  # never below the sum
    best = float(torch.trace(excess))
    for scale in (0.5, 0.9, 1.1, 2.0):  # any other π leaves more excess
        pi_star = ((torch.trace(a2) * torch.trace(g1)) / (torch.trace(a1) * torch.trace(g2))).sqrt()
        pi_other = pi_star * scale
        other = torch.kron(g1 + pi_other * g2, a1 + a2 / pi_other) - exact
        assert float(torch.trace(other)) > best


def test_merging_with_nothing_returns_the_other_pair():
    gen = torch.Generator().manual_seed(8)
    a, g = psd(3, gen), psd(2, gen)
    zero = (torch.zeros(3, 3), torch.zeros(2, 2))
    assert merge_kronecker((a, g), zero)[0] is a
    assert merge_kronecker(zero, (a, g))[1] is g


# ---------------------------------------------------------------------------------------------
# damp_kronecker: factored Tikhonov damping
# ---------------------------------------------------------------------------------------------
def test_factored_damping_is_the_block_plus_gamma_and_two_cross_terms():
    """(A + π√γ I) ⊗ (G + √γ/π I) with γ = d·ā·ḡ and π = √(ā/ḡ) (Martens & Grosse 2015, §6.3)."""
    gen = torch.Generator().manual_seed(9)
    a, g, d = psd(4, gen), 5 * psd(3, gen), 0.03
    da, dg = damp_kronecker(a, g, d)
    ma, mg = a.diagonal().mean(), g.diagonal().mean()
    gamma, pi = d * ma * mg, (ma / mg).sqrt()
    want = torch.kron(g + gamma.sqrt() / pi * torch.eye(3), a + pi * gamma.sqrt() * torch.eye(4))
    torch.testing.assert_close(torch.kron(dg, da), want)
    excess = torch.kron(dg, da) - torch.kron(g, a)
    assert torch.linalg.eigvalsh(excess).min() >= gamma * (1 - 1e-9)  # at least γI more in every direction
    assert damp_kronecker(a, g, 0.0) == (a, g)
