"""The Fisher of a (tiny, random) Hugging Face GPT-2 through its layer rules, against a batch-size-1 loop.

GPT-2 is built from ``transformers.pytorch_utils.Conv1D`` (y = x W + b, W stored as (in, out)), with
its token embedding tied to the output head and its position embedding looked up on positions that
are shared by the batch. The references run the model's own forward one sequence at a time, in
float64, and square each sequence's summed gradient (the per-sequence convention of forgetless.fisher).
"""
from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")  # only users without the extra skip; CI installs it

from tiny_transformers import quiet_transformers, tiny_gpt2  # noqa: E402,F401  (quiet_transformers: autouse)
from transformers.pytorch_utils import Conv1D  # noqa: E402

from forgetless import fisher_diagonal, fisher_kfac, per_sample  # noqa: E402
from forgetless.integrations.causal_lm import CausalLMLogits  # noqa: E402
from forgetless.layer_rules import rule_for  # noqa: E402

pytestmark = pytest.mark.usefixtures("float64")  # float64 makes "equal to the brute force" crisp (conftest)

VOCAB, LENGTH, N = 32, 8, 5


class SlowConv1D(Conv1D):
    def forward(self, x):  # an overridden forward gets no rule: the torch.func path
        return super().forward(x)


def gpt2(seed=0):
    model = tiny_gpt2(VOCAB, seed).eval()
    with torch.no_grad():  # random biases and LayerNorm weights: a zero bias would hide a wrong bias rule
        for name, p in model.named_parameters():
            if not name.endswith("wte.weight"):
                p.add_(0.1 * torch.randn_like(p))
    return model


def data():
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, VOCAB, (N, LENGTH), generator=g)
    y = x[:, 1:].clone()
    y[1, 0] = y[3, -1] = -100  # positions that do not count
    return x, y


def params(model):
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def brute_force(model, x, weighted_labels):
    """Mean over sequences of Σ_(weight, labels) weight · (∂ Σ_t log p_t(labels_t) / ∂θ)², one sequence
    per forward.

    ``weighted_labels(i, log_probs (T, C))`` lists (weight, {position: label}) for sequence i."""
    ps = params(model)
    total = {n: torch.zeros_like(p) for n, p in ps.items()}
    for i in range(len(x)):
        logp = torch.log_softmax(model(input_ids=x[i:i + 1]).logits[0, :-1], -1)
        for weight, labels in weighted_labels(i, logp):
            objective = sum(logp[t, c] for t, c in labels.items())
            for n, g in zip(ps, torch.autograd.grad(objective, list(ps.values()), retain_graph=True)):
                total[n] += weight * g.square()
    return {n: t / len(x) for n, t in total.items()}


def counted(y, i):
    return [t for t in range(y.shape[1]) if y[i, t] != -100]


def reference(model, x, y, estimator, seed=3):
    """The per-sequence Fisher by brute force; ``exact`` as Σ_t Σ_c p_t(c) (∂ log p_t(c)/∂θ)² (the
    cross terms between positions vanish in expectation: tests/test_fisher_sequences.py checks that)."""
    if estimator == "empirical":
        return brute_force(model, x, lambda i, logp: [(1.0, {t: int(y[i, t]) for t in counted(y, i)})])
    if estimator == "sampled":  # the draws: one multinomial over every (sequence, position), in that order
        with torch.no_grad():
            p = torch.softmax(model(input_ids=x).logits[:, :-1], -1).reshape(-1, VOCAB)
        drawn = torch.multinomial(p, 1, generator=torch.Generator().manual_seed(seed)).view(y.shape)
        return brute_force(model, x, lambda i, logp: [(1.0, {t: int(drawn[i, t]) for t in counted(y, i)})])
    return brute_force(model, x, lambda i, logp: [(float(logp[t, c].exp()), {t: c})
                                                  for t in counted(y, i) for c in range(VOCAB)])


def forgetless_fisher(model, x, y, estimator, seed=3):
    return fisher_diagonal(CausalLMLogits(model), [(x[:3], y[:3]), (x[3:], y[3:])], estimator=estimator,
                           generator=torch.Generator().manual_seed(seed))


def assert_rel_close(got, want, rtol=1e-5):
    assert got.keys() == want.keys()
    for n in want:
        assert got[n].shape == want[n].shape, n
        assert (got[n] - want[n]).abs().max() <= rtol * want[n].abs().max(), n


def generic_params(model, x):
    """The parameters the engine sends to its torch.func path on this model and batch."""
    seen: list[str] = []
    generic = per_sample._generic_sums

    def spy(model, x, v, names, *rest):
        seen.extend(names)
        return generic(model, x, v, names, *rest)

    per_sample._generic_sums = spy
    try:
        fisher_diagonal(CausalLMLogits(model), (x, x[:, 1:]), estimator="empirical")
    finally:
        per_sample._generic_sums = generic
    return sorted(seen)


def test_conv1d_has_a_rule_found_by_name_and_subclasses_overriding_forward_do_not():
    assert rule_for(Conv1D(3, 2)).params == ("weight", "bias")
    assert rule_for(SlowConv1D(3, 2)) is None


def test_no_gpt2_parameter_takes_the_torch_func_path():
    model, (x, _) = gpt2(), data()
    assert generic_params(model, x) == []  # Conv1D by its rule, wpe on per-sequence positions, wte tied to lm_head


@pytest.mark.parametrize("estimator", ["exact", "sampled", "empirical"])
def test_gpt2_fisher_equals_the_batch_size_1_loop(estimator):
    model, (x, y) = gpt2(), data()
    assert_rel_close(forgetless_fisher(model, x, y, estimator), reference(model, x, y, estimator))


@pytest.mark.parametrize("estimator", ["exact", "sampled", "empirical"])
def test_conv1d_rule_equals_the_torch_func_path(estimator):
    model, (x, y) = gpt2(), data()
    twin = gpt2()
    for m in twin.modules():
        if type(m) is Conv1D:
            m.__class__ = SlowConv1D
    assert [n for n in generic_params(twin, x) if "h.0.attn.c_attn" in n] == ["transformer.h.0.attn.c_attn.bias",
                                                                            "transformer.h.0.attn.c_attn.weight"]
    assert_rel_close(forgetless_fisher(model, x, y, estimator), forgetless_fisher(twin, x, y, estimator))


def test_kfac_structure_gives_gpt2_its_diagonal():
    """Conv1D has no Kronecker factors and lm_head's weight is tied: no block, every parameter its diagonal."""
    model, (x, y) = gpt2(), data()
    got = fisher_kfac(CausalLMLogits(model), (x, y), estimator="empirical")
    assert got.factors == {}
    assert_rel_close(got.diagonal, fisher_diagonal(CausalLMLogits(model), (x, y), estimator="empirical"), 1e-10)


class TiedConv1D(torch.nn.Module):
    """Two Conv1D sharing one (in, out) weight, on sequences: the shared weight's per-sample gradients
    (Conv1D's per_sample rule, twice) are added before the square."""

    def __init__(self):
        super().__init__()
        self.a, self.b = Conv1D(4, 4), Conv1D(4, 4)
        self.b.weight = self.a.weight
        with torch.no_grad():
            self.a.weight.normal_()

    def forward(self, x):
        return self.b(torch.tanh(self.a(x.view(len(x), 3, 4)))).mean(1)


@pytest.mark.parametrize("reduce", ["square", "abs"])
def test_a_weight_tied_between_conv1d_layers_matches_the_batch_size_1_loop(reduce):
    torch.manual_seed(0)
    model, x, v = TiedConv1D().eval(), torch.randn(5, 12), torch.randn(2, 5, 4)
    rho = {"square": torch.square, "abs": torch.abs}[reduce]
    want = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    for i in range(len(x)):
        z = model(x[i:i + 1])[0]
        for k in range(len(v)):
            for n, g in zip(want, torch.autograd.grad(z @ v[k, i], list(model.parameters()), retain_graph=True)):
                want[n] += rho(g)
    got = per_sample.per_sample_sums(model, x, None, lambda z, _: v, reduce=reduce)
    assert_rel_close(got, want, 1e-10)
