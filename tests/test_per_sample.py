"""The per-sample engine: fast path == generic path == a batch-size-1 loop, in every structural case."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from forgetless import per_sample
from forgetless.per_sample import output_norm_sensitivity, per_sample_sums


pytestmark = pytest.mark.usefixtures("float64")  # float64 makes "equal to the brute force" crisp (conftest)


RHO = {"square": torch.square, "abs": torch.abs}


def brute_force(model, x, v, reduce):
    """Σ_n Σ_k ρ(∂⟨z_n, v_kn⟩/∂θ) with one sample per forward."""
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    total = {n: torch.zeros_like(p) for n, p in params.items()}
    for i in range(len(x)):
        z = model(x[i:i + 1])[0]
        for k in range(v.shape[0]):
            grads = torch.autograd.grad(z @ v[k, i], list(params.values()), retain_graph=True, allow_unused=True)
            for n, g in zip(params, grads):
                if g is not None:
                    total[n] += RHO[reduce](g)
    return total


def assert_rel_close(got, want, rtol=1e-9):
    assert got.keys() == want.keys()
    for n in want:
        assert got[n].shape == want[n].shape, n
        assert (got[n] - want[n]).abs().max() <= rtol * want[n].abs().max() + 1e-300, n


def engine(model, x, v, reduce):
    return per_sample_sums(model.eval(), x, None, lambda z, _: v, reduce=reduce)


class SlowLinear(nn.Linear):
    def forward(self, x):  # an overridden forward is not trusted by the fast path
        return super().forward(x)


class SlowConv2d(nn.Conv2d):
    def forward(self, x):
        return super().forward(x)


class SlowEmbedding(nn.Embedding):
    def forward(self, x):
        return super().forward(x)


class SlowLayerNorm(nn.LayerNorm):
    def forward(self, x):
        return super().forward(x)


SLOW = {nn.Linear: SlowLinear, nn.Conv2d: SlowConv2d, nn.Embedding: SlowEmbedding, nn.LayerNorm: SlowLayerNorm}


def generic_twin(model):
    twin = copy.deepcopy(model)  # keeps tied parameters tied
    for m in twin.modules():
        if type(m) in SLOW:
            m.__class__ = SLOW[type(m)]
    return twin


def paths(model, x, v, reduce):
    """Which parameters each path handled."""
    seen = {}
    fast, generic = per_sample._fast_sums, per_sample._generic_sums

    def spy_fast(z, v, modules, calls, rho):
        seen["fast"] = sorted(n for names in modules.values() for n in names.values())
        return fast(z, v, modules, calls, rho)

    def spy_generic(model, x, v, names, rho, t, *budget):
        seen["generic"] = sorted(names)
        return generic(model, x, v, names, rho, t, *budget)

    per_sample._fast_sums, per_sample._generic_sums = spy_fast, spy_generic
    try:
        engine(model, x, v, reduce)
    finally:
        per_sample._fast_sums, per_sample._generic_sums = fast, generic
    return seen


# ---------------------------------------------------------------------------------------------
# Models covering the structural cases
# ---------------------------------------------------------------------------------------------
class Twice(nn.Module):
    """One Linear called twice (weight sharing through a repeated call)."""

    def __init__(self):
        super().__init__()
        self.inner, self.out = nn.Linear(5, 5), nn.Linear(5, 3)

    def forward(self, x):
        return self.out(torch.tanh(self.inner(torch.tanh(self.inner(x)))))


class Tied(nn.Module):
    """Two Linear modules holding the same Parameter."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(5, 5), nn.Linear(5, 3)
        self.c = nn.Linear(5, 5, bias=False)
        self.c.weight = self.a.weight

    def forward(self, x):
        return self.b(torch.tanh(self.c(torch.tanh(self.a(x)))))


class Functional(nn.Module):
    """``head`` is called AND its weight is used directly; ``proj`` is never called (like MHA's out_proj)."""

    def __init__(self):
        super().__init__()
        self.head, self.proj = nn.Linear(5, 3), nn.Linear(5, 5)

    def forward(self, x):
        h = torch.tanh(F.linear(x, self.proj.weight, self.proj.bias))
        return self.head(h) + 0.1 * F.linear(h, self.head.weight)


class Sequence(nn.Module):
    """Linear on (N, T, d), then a mean over time: the time sum comes before the square."""

    def __init__(self):
        super().__init__()
        self.inp, self.out = nn.Linear(4, 6), nn.Linear(6, 3)

    def forward(self, x):
        return self.out(torch.tanh(self.inp(x.view(len(x), 3, 4))).mean(1))


class TimeMajor(nn.Module):
    """Moves the batch off dim 0 before a Linear: the fast path must step aside."""

    def __init__(self):
        super().__init__()
        self.inp, self.out = nn.Linear(4, 6), nn.Linear(6, 3)

    def forward(self, x):
        h = self.inp(x.view(len(x), 3, 4).transpose(0, 1))  # (T, N, d)
        return self.out(torch.tanh(h).mean(0))


class Tokens(nn.Module):
    """Embedding (a row looked up twice in one sample, a padding row) → LayerNorm → Linear, mean over time."""

    def __init__(self):
        super().__init__()
        self.emb, self.norm, self.out = nn.Embedding(7, 4, padding_idx=0), nn.LayerNorm(4), nn.Linear(4, 3)

    def forward(self, x):
        tokens = (x[:, :6].abs() * 3).long().clamp(max=6)  # (N, 6) indices in 0..6, repeats within a sample
        return self.out(self.norm(self.emb(tokens)).tanh()).mean(1)


class TiedHead(nn.Module):
    """A token embedding tied to the output head (GPT-2's wte and lm_head): each sample's gradient of
    the shared weight is the sum of both modules' parts, squared after the sum."""

    def __init__(self, leak=False):
        super().__init__()
        self.emb, self.norm, self.head = nn.Embedding(7, 4, padding_idx=0), nn.LayerNorm(4), nn.Linear(4, 7)
        self.head.weight = self.emb.weight
        self.leak = leak  # also use the weight outside both modules' calls: neither may take the rule

    def forward(self, x):
        tokens = (x[:, :6].abs() * 3).long().clamp(max=6)
        h = torch.tanh(self.norm(self.emb(tokens)))
        z = self.head(h) + (0.1 * F.linear(h, self.emb.weight) if self.leak else 0)
        return z.mean(1)[:, :3]


def inplace_mlp():
    return nn.Sequential(nn.Linear(12, 7), nn.ReLU(inplace=True), nn.Linear(7, 3))


CASES = {
    "twice": Twice, "tied": Tied, "functional": Functional, "sequence": Sequence,
    "time-major": TimeMajor, "inplace": inplace_mlp, "tokens": Tokens,
    "tied-head": TiedHead, "tied-head-leak": lambda: TiedHead(leak=True),
}


@pytest.mark.parametrize("reduce", ["square", "abs"])
@pytest.mark.parametrize("name", list(CASES))
def test_structural_cases_match_brute_force(name, reduce):
    torch.manual_seed(0)
    model = CASES[name]().eval()
    x = torch.randn(6, 12)[:, : 5 if name in ("twice", "tied", "functional") else 12]
    v = torch.randn(2, 6, 3)
    assert_rel_close(engine(model, x, v, reduce), brute_force(model, x, v, reduce))


def test_structural_cases_take_the_right_path():
    torch.manual_seed(0)
    x5, x12, v = torch.randn(6, 5), torch.randn(6, 12), torch.randn(2, 6, 3)
    assert paths(Twice(), x5, v, "square") == {"fast": ["inner.bias", "inner.weight", "out.bias", "out.weight"]}
    # a.weight is held by a and c: listed once per holder
    assert paths(Tied(), x5, v, "square") == {"fast": ["a.bias", "a.weight", "a.weight", "b.bias", "b.weight"]}
    assert paths(TiedHead(), x12, v, "square") == {"fast": ["emb.weight", "emb.weight", "head.bias", "norm.bias",
                                                            "norm.weight"]}
    assert paths(TiedHead(leak=True), x12, v, "square") == {"fast": ["norm.bias", "norm.weight"],
                                                            "generic": ["emb.weight", "head.bias"]}
    assert paths(Functional(), x5, v, "square") == {  # head: also used outside its call
        "generic": ["head.bias", "head.weight", "proj.bias", "proj.weight"]}
    assert paths(Sequence(), x12, v, "square") == {"fast": ["inp.bias", "inp.weight", "out.bias", "out.weight"]}
    assert paths(TimeMajor(), x12, v, "square") == {"fast": ["out.bias", "out.weight"],
                                                    "generic": ["inp.bias", "inp.weight"]}
    assert paths(Tokens(), x12, v, "square") == {"fast": ["emb.weight", "norm.bias", "norm.weight", "out.bias",
                                                          "out.weight"]}
    assert "fast" not in paths(generic_twin(Tokens()), x12, v, "square")


@pytest.mark.parametrize("reduce", ["square", "abs"])
def test_embedding_and_layer_norm_rules_equal_the_generic_path(reduce):
    torch.manual_seed(0)
    model, x, v = Tokens().eval(), torch.randn(9, 12), torch.randn(3, 9, 3)
    assert_rel_close(engine(model, x, v, reduce), engine(generic_twin(model), x, v, reduce))


def test_embedding_variants_without_a_rule_take_the_generic_path():
    from forgetless.layer_rules import rule_for

    assert rule_for(nn.Embedding(5, 2, max_norm=1.0)) is None  # renormalises its weight in place
    assert rule_for(nn.Embedding(5, 2, scale_grad_by_freq=True)) is None
    assert rule_for(SlowEmbedding(5, 2)) is None


# ---------------------------------------------------------------------------------------------
# Fast path == generic path on Linear and Conv2d
# ---------------------------------------------------------------------------------------------
def conv_net():
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(4, 3, (3, 2), stride=(2, 1), padding=(0, 1), dilation=(1, 2), bias=False), nn.Tanh(),
        nn.Flatten(), nn.Linear(3 * 3 * 7, 4),
    )


@pytest.mark.parametrize("reduce", ["square", "abs"])
@pytest.mark.parametrize("k", [1, 4])
def test_fast_equals_generic(reduce, k):
    torch.manual_seed(0)
    for model, x in [
        (nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 4)), torch.randn(9, 5)),
        (conv_net(), torch.randn(9, 2, 8, 7)),
    ]:
        v = torch.randn(k, 9, 4)
        twin = generic_twin(model)
        assert "fast" not in paths(twin, x, v, reduce)
        assert_rel_close(engine(model, x, v, reduce), engine(twin, x, v, reduce))


def test_conv_matches_brute_force():
    torch.manual_seed(0)
    model, x, v = conv_net().eval(), torch.randn(5, 2, 8, 7), torch.randn(3, 5, 4)
    assert paths(model, x, v, "square") == {"fast": ["0.bias", "0.weight", "2.weight", "5.bias", "5.weight"]}
    assert_rel_close(engine(model, x, v, "square"), brute_force(model, x, v, "square"))


# ---------------------------------------------------------------------------------------------
# MAS: output_norm_sensitivity
# ---------------------------------------------------------------------------------------------
def mas_brute_force(model, x, transform=None):
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    total = {n: torch.zeros_like(p) for n, p in params.items()}
    for i in range(len(x)):
        z = model(x[i:i + 1])
        z = transform(z) if transform else z
        for n, g in zip(params, torch.autograd.grad(z.pow(2).sum(), list(params.values()), allow_unused=True)):
            if g is not None:
                total[n] += g.abs()
    return {n: t / len(x) for n, t in total.items()}


@pytest.mark.parametrize("make,shape", [
    (lambda: nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.LayerNorm(8), nn.Linear(8, 4)), (5,)),
    (conv_net, (2, 8, 7)),
])
def test_output_norm_sensitivity_matches_brute_force(make, shape):
    torch.manual_seed(0)
    model, x = make(), torch.randn(11, *shape)
    batches = [(x[:6], torch.zeros(6)), (x[6:], torch.zeros(5))]
    assert_rel_close(output_norm_sensitivity(model, batches), mas_brute_force(model.eval(), x))
    head = lambda z: z[:, 1:3]  # noqa: E731
    got = output_norm_sensitivity(model, batches, output_transform=head, max_samples=8)
    assert_rel_close(got, mas_brute_force(model, x[:8], head))


# ---------------------------------------------------------------------------------------------
# Samples that interact in a batch
# ---------------------------------------------------------------------------------------------
class AlwaysTraining(nn.Sequential):
    def train(self, mode=True):  # ignores eval(): its BatchNorm keeps using batch statistics
        return super().train(True)


class ForcedBatchNorm(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin, self.bn = nn.Linear(5, 3), nn.BatchNorm1d(3)

    def forward(self, x):
        h = self.lin(x)
        return F.batch_norm(h, None, None, self.bn.weight, self.bn.bias, training=True)


@pytest.mark.parametrize("model,match", [
    (lambda: nn.Sequential(nn.Linear(5, 3), nn.BatchNorm1d(3, track_running_stats=False)), "track_running_stats"),
    (lambda: AlwaysTraining(nn.Linear(5, 3), nn.BatchNorm1d(3)), "eval mode"),
    (ForcedBatchNorm, "depends on the other samples"),
])
def test_batch_statistics_are_refused(model, match):
    with pytest.raises(ValueError, match=match):
        output_norm_sensitivity(model(), (torch.randn(8, 5), torch.zeros(8)))


def test_batchnorm_with_running_statistics_is_fine():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3)).train()
    model(torch.randn(32, 5))  # populate the running statistics
    x = torch.randn(7, 5)
    got = output_norm_sensitivity(model, (x, torch.zeros(7)))
    assert model.training
    assert_rel_close(got, mas_brute_force(model.eval(), x))
