"""EWC and OnlineEWC with structure="kfac": penalties against torch.kron, state files, memory, errors."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import forgetless
from forgetless import EWC, OnlineEWC, StateFileError, fisher_diagonal, fisher_kfac


pytestmark = pytest.mark.usefixtures("float64")  # float64 makes "equal to the brute force" crisp (conftest)


class Net(nn.Module):
    """Two Linears (factored) around a LayerNorm (diagonal)."""

    def __init__(self):
        super().__init__()
        self.fc, self.norm, self.out = nn.Linear(5, 4), nn.LayerNorm(4), nn.Linear(4, 3)

    def forward(self, x):
        return self.out(torch.tanh(self.norm(self.fc(x))))


def task(seed, n=20):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(n, 5, generator=g), torch.randint(0, 3, (n,), generator=g))]


def move(model, seed, scale=0.3):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))


def snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def explicit(model, fisher, anchor, scale=1.0):
    """Σ_layers vec(ΔW̄)ᵀ kron(G, A) vec(ΔW̄) + Σ diag F Δθ², by hand."""
    params = dict(model.named_parameters())
    total = 0.0
    for w, (a, g) in fisher.factors.items():
        b = w.replace("weight", "bias")
        d = (params[w] - anchor[w]).reshape(params[w].shape[0], -1)
        if a.shape[0] == d.shape[1] + 1:
            d = torch.cat([d, (params[b] - anchor[b]).unsqueeze(1)], 1)
        v = d.reshape(-1)
        total = total + scale * (v @ torch.kron(g, a) @ v)
    for n, f in fisher.diagonal.items():
        total = total + scale * (f * (params[n] - anchor[n]) ** 2).sum()
    return total


def test_ewc_kfac_is_one_kronecker_term_per_task_plus_the_diagonal():
    torch.manual_seed(0)
    model, ewc = Net(), EWC(strength=3.0, structure="kfac")
    assert float(ewc.penalty(model)) == 0.0
    terms = []
    for t in range(3):
        terms.append((fisher_kfac(model, task(t)), snapshot(model)))  # each task: its factors, its anchor
        ewc.consolidate(model, task(t))
        move(model, 10 + t)
    fisher = terms[0][0]
    assert sorted(fisher.factors) == ["fc.weight", "out.weight"] and sorted(fisher.diagonal) == ["norm.bias", "norm.weight"]
    want = 1.5 * sum(explicit(model, f, a) for f, a in terms)
    got = ewc.penalty(model)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=0)
    grads = torch.autograd.grad(got, list(model.parameters()))
    for g, w in zip(grads, torch.autograd.grad(want, list(model.parameters()))):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-13)
    assert len(ewc.terms()) == 3


@pytest.mark.parametrize("factor_sum", ["separate", "merged"])
def test_online_ewc_kfac_decays_old_factors_at_the_latest_anchor(factor_sum):
    torch.manual_seed(1)
    model, gamma = Net(), 0.5
    online = OnlineEWC(strength=2.0, decay=gamma, structure="kfac", factor_sum=factor_sum)
    fishers = []
    for t in range(3):
        fishers.append(fisher_kfac(model, task(t)))
        online.consolidate(model, task(t))
        latest = snapshot(model)
        move(model, 20 + t)
    assert len(online.terms()) == (3 if factor_sum == "separate" else 1)
    got = online.penalty(model)
    # the diagonal part: F ← γF + F_t at the latest anchor, as the diagonal OnlineEWC
    diag = sum(gamma ** (2 - s) * f.diagonal["norm.weight"] for s, f in enumerate(fishers))
    torch.testing.assert_close(online.importance["norm.weight"], diag)
    exact = 1.0 * sum(explicit(model, f, latest, gamma ** (2 - s)) for s, f in enumerate(fishers))
    if factor_sum == "separate":  # Ritter et al.: Σ_s γ^{t−s} A_s ⊗ G_s, exactly
        torch.testing.assert_close(got, exact, rtol=1e-10, atol=0)
    else:  # one Kronecker product per layer, never below the exact sum
        assert float(got.detach()) > float(exact.detach())
        a, g = online.kfac_in["0.fc.weight"], online.kfac_out["0.fc.weight"]
        (a1, g1), (a2, g2), (a3, g3) = (f.factors["fc.weight"] for f in fishers)
        excess = torch.kron(g, a) - (gamma ** 2 * torch.kron(g1, a1) + gamma * torch.kron(g2, a2) + torch.kron(g3, a3))
        assert torch.linalg.eigvalsh(excess).min() > -1e-10


def test_after_one_task_online_ewc_kfac_is_ewc_kfac_with_either_factor_sum():
    torch.manual_seed(2)
    model = Net()
    regs = [EWC(1.0, structure="kfac"), OnlineEWC(1.0, structure="kfac"), OnlineEWC(1.0, structure="kfac", factor_sum="merged")]
    for reg in regs:
        reg.consolidate(model, task(0))
    move(model, 3)
    values = [float(r.penalty(model).detach()) for r in regs]
    assert values[0] == pytest.approx(values[1], rel=1e-12) and values[1] == pytest.approx(values[2], rel=1e-12)


def test_decay_zero_keeps_only_the_latest_term():
    model, online = Net(), OnlineEWC(1.0, decay=0.0, structure="kfac")
    for t in range(3):
        online.consolidate(model, task(t))
    assert len(online.terms()) == 1 and sorted(online.kfac_in) == ["2.fc.weight", "2.out.weight"]


@pytest.mark.parametrize("make", [
    lambda: EWC(4.0, structure="kfac", estimator="sampled", seed=3),
    lambda: OnlineEWC(4.0, decay=0.7, structure="kfac"),
    lambda: OnlineEWC(4.0, decay=0.7, structure="kfac", factor_sum="merged", estimator="empirical"),
])
def test_state_files_carry_the_factors(make, tmp_path):
    torch.manual_seed(3)
    model, reg = Net(), make()
    for t in range(2):
        reg.consolidate(model, task(t))
        move(model, 30 + t)
    again = forgetless.load(forgetless.save(reg, tmp_path / "reg.safetensors"))
    assert again.hyperparameters() == reg.hyperparameters() and again.structure == "kfac"
    assert torch.equal(again.penalty(model), reg.penalty(model))
    state = torch.load(_saved(reg.state_dict(), tmp_path), weights_only=True)
    assert any(k.startswith("kfac_in.") for k in state)
    fresh = make()
    fresh.load_state_dict(state)
    assert torch.equal(fresh.penalty(model), reg.penalty(model))


def _saved(state, tmp_path):
    path = tmp_path / "state.pt"
    torch.save(state, path)
    return path


def test_inconsistent_factor_states_are_refused_in_one_line(tmp_path):
    model, ewc = Net(), EWC(structure="kfac")
    ewc.consolidate(model, task(0))
    state = ewc.state_dict()
    with pytest.raises(ValueError, match="state has Kronecker factors but structure='diagonal'"):
        EWC().load_state_dict(state)
    bad = dict(state, **{"kfac_in.0.fc.weight": torch.zeros(7, 7)})  # fc has 5 inputs and a bias
    with pytest.raises(ValueError, match="no anchor of 'fc.weight' .* that fits its factors"):
        EWC(structure="kfac").load_state_dict(bad)
    no_bias_row = dict(state, **{"kfac_in.0.fc.weight": torch.zeros(5, 5)})  # then fc.bias's anchor is orphaned
    with pytest.raises(ValueError, match=r"Kronecker anchors \['0.fc.bias'\] of no factored layer"):
        EWC(structure="kfac").load_state_dict(no_bias_row)
    missing = {k: v for k, v in state.items() if k != "kfac_out.0.out.weight"}
    with pytest.raises(ValueError, match="entries for different terms or layers"):
        EWC(structure="kfac").load_state_dict(missing)
    orphan = dict(state, **{"kfac_anchor.0.norm.weight": torch.zeros(4)})
    with pytest.raises(ValueError, match="of no factored layer"):
        EWC(structure="kfac").load_state_dict(orphan)
    # through a state file (a consistent digest, an inconsistent state): one line naming the file
    path = forgetless.save(ewc, tmp_path / "ewc.safetensors")
    ewc.kfac_out["0.fc.weight"] = torch.zeros(4, 3)
    damaged = forgetless.save(ewc, tmp_path / "damaged.safetensors")
    with pytest.raises(StateFileError, match=r"damaged\.safetensors: .*not square"):
        forgetless.load(damaged)
    assert forgetless.load(path).structure == "kfac"


def test_memory_per_layer_adds_up_to_the_state():
    torch.manual_seed(4)
    model, ewc, online = Net(), EWC(structure="kfac"), OnlineEWC(structure="kfac")
    for t in range(2):
        for reg in (ewc, online):
            reg.consolidate(model, task(t))
    for reg, terms in ((ewc, 2), (online, 2)):
        memory = reg.memory()
        assert {m: e["structure"] for m, e in memory.items()} == {"fc": "kfac", "norm": "diagonal", "out": "kfac"}
        state = sum(t.numel() * t.element_size() for t in reg.state_dict().values() if t.dim() > 0)
        assert sum(e["state_bytes"] for e in memory.values()) == state
        assert memory["fc"]["parameter_bytes"] == (4 * 5 + 4) * 8
        factors = terms * ((6 * 6 + 4 * 4) * 8)
        anchors = (terms if reg is ewc else 1) * (4 * 5 + 4) * 8
        assert memory["fc"]["state_bytes"] == factors + anchors


def test_diagonal_ewc_is_unchanged_by_the_structure_option():
    torch.manual_seed(5)
    model, ewc = Net(), EWC(2.0)
    ewc.consolidate(model, task(0))
    torch.testing.assert_close(ewc.importance["fc.weight"], fisher_diagonal(model, task(0))["fc.weight"])
    assert not ewc.kfac_in and ewc.memory()["fc"]["structure"] == "diagonal"
    assert set(ewc.importance) == {n for n, _ in model.named_parameters()}


def test_options_are_checked_in_one_line():
    with pytest.raises(ValueError, match="unknown Fisher structure 'block'"):
        EWC(structure="block")
    with pytest.raises(ValueError, match="estimator 'batched' has no Kronecker factors"):
        OnlineEWC(structure="kfac", estimator="batched")
    with pytest.raises(ValueError, match="unknown factor_sum 'sum'"):
        OnlineEWC(structure="kfac", factor_sum="sum")
    with pytest.raises(ValueError, match="kfac_damping applies to structure='kfac'"):
        EWC(kfac_damping=0.1)
    with pytest.raises(ValueError, match="kfac_damping must be a finite number >= 0"):
        EWC(structure="kfac", kfac_damping=-1)
    assert EWC(structure="kfac").hyperparameters()["structure"] == "kfac"


def test_trains_in_the_library_loop():
    from forgetless.benchmarks.base import Split
    from forgetless.training import adam, train_task

    torch.manual_seed(6)
    model, ewc = Net(), EWC(100.0, structure="kfac")
    (x, y), = task(0, n=64)
    ewc.consolidate(model, [(x, y)])
    before = snapshot(model)
    train_task(model, Split(x, -y + 2), steps=5, batch_size=16, optimizer=adam(model, 1e-2),
               generator=torch.Generator().manual_seed(0), regularizer=ewc)
    assert any(not torch.equal(before[n], p) for n, p in model.named_parameters())
    assert float(ewc.penalty(model).detach()) > 0


def test_damping_damps_every_block_when_read_and_the_state_keeps_the_raw_factors(tmp_path):
    torch.manual_seed(7)
    model, plain, damped = Net(), EWC(2.0, structure="kfac"), EWC(2.0, structure="kfac", kfac_damping=0.01)
    for t in range(2):
        for reg in (plain, damped):
            reg.consolidate(model, task(t))
        move(model, 40 + t)
    for key in plain.kfac_in:
        assert torch.equal(plain.kfac_in[key], damped.kfac_in[key])
    for raw, term in zip(plain.terms(), damped.terms()):
        for w, (a, g) in raw.factors.items():
            da, dg = term.factors[w]
            torch.testing.assert_close(da, a + 0.1 * a.diagonal().mean() * torch.eye(len(a)))
            torch.testing.assert_close(dg, g + 0.1 * g.diagonal().mean() * torch.eye(len(g)))
    assert float(damped.penalty(model).detach()) > float(plain.penalty(model).detach())
    again = forgetless.load(forgetless.save(damped, tmp_path / "damped.safetensors"))
    assert again.kfac_damping == 0.01 and torch.equal(again.penalty(model), damped.penalty(model))


# ---------------------------------------------------------------------------------------------
# Protected parameters (the rules of forgetless.regularizers.base) with Kronecker terms
# ---------------------------------------------------------------------------------------------
def linears():
    return nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3))


@pytest.mark.parametrize("make", [lambda: EWC(structure="kfac"), lambda: OnlineEWC(structure="kfac")])
def test_a_model_of_factored_layers_only_has_no_diagonal_state_and_round_trips(make, tmp_path):
    torch.manual_seed(8)
    model, reg = linears(), make()
    reg.consolidate(model, task(0))
    assert not reg.anchor and not reg.importance and reg.kfac_in
    move(model, 1)
    again = forgetless.load(forgetless.save(reg, tmp_path / "reg.safetensors"))
    assert torch.equal(again.penalty(model), reg.penalty(model))
    empty = {k: v for k, v in reg.state_dict().items() if not k.startswith("kfac")}
    with pytest.raises(ValueError, match=r"tasks_seen=1 but no 'anchor' entries \(nor 'kfac_in' ones\)"):
        make().load_state_dict(empty)


def test_a_frozen_layer_keeps_its_terms_and_anchor():
    torch.manual_seed(9)
    model, ewc, online = linears(), EWC(structure="kfac"), OnlineEWC(decay=0.5, structure="kfac")
    for reg in (ewc, online):
        reg.consolidate(model, task(0))
    anchor = {n: p.detach().clone() for n, p in model.named_parameters()}
    model[0].requires_grad_(False)
    move(model, 2)
    for reg in (ewc, online):
        reg.consolidate(model, task(1))
    assert sorted(ewc.kfac_in) == ["0.0.weight", "0.2.weight", "1.2.weight"]  # no new term for the frozen layer
    assert torch.equal(online.kfac_anchor["0.weight"], anchor["0.weight"])    # its anchor stays
    assert not torch.equal(online.kfac_anchor["2.weight"], anchor["2.weight"])
    torch.testing.assert_close(online.kfac_in["0.0.weight"], 0.5 * ewc.kfac_in["0.0.weight"])  # and decays


def test_a_model_that_does_not_match_the_factored_state_is_refused():
    torch.manual_seed(10)
    ewc = EWC(structure="kfac")
    ewc.consolidate(linears(), task(0))
    other = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 3))
    with pytest.raises(ValueError, match=r"EWC.consolidate: parameter '0.weight' has shape \(6, 5\)"):
        ewc.consolidate(other, task(1))
    with pytest.raises(ValueError, match="parameter '0.weight' has shape"):
        ewc.penalty(other)
    with pytest.raises(ValueError, match="the model has no parameter '2.weight'"):
        ewc.penalty(nn.Sequential(nn.Linear(5, 4)))


@pytest.mark.parametrize("make", [lambda: EWC(7.0, structure="kfac", kfac_damping=0.1),
                                  lambda: OnlineEWC(7.0, decay=0.5, structure="kfac")])
def test_kronecker_says_what_the_penalty_is(make):
    # the description forgetless.stacked trains copies from: penalty = scale·(Kronecker terms + diagonal) + constant
    from forgetless.kronecker import kronecker_penalty
    from forgetless.quadratic import quadratic_penalty

    torch.manual_seed(0)
    model, reg = Net(), make()
    assert reg.kronecker() is None and EWC(1.0).kronecker() is None  # before consolidate; the diagonal structure
    for t in range(2):
        reg.consolidate(model, task(t))
        move(model, 10 + t)
    scale, terms, anchor, weight = reg.kronecker()
    params = dict(model.named_parameters())
    described = scale * (kronecker_penalty(params, terms) + quadratic_penalty(params, anchor, weight))
    constant = scale * reg.constant if isinstance(reg, EWC) else 0.0
    assert float(reg.penalty(model)) == pytest.approx(float(described + constant), rel=1e-12)
    assert len(terms) == 2 and set(anchor) == {"norm.weight", "norm.bias"}  # a term per task; the LayerNorm diagonal
