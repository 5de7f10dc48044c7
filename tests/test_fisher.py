"""fisher_diagonal against an independent brute force: one sample at a time, autograd on log p(y|x)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from forgetless.fisher import ESTIMATORS, fisher_diagonal



pytestmark = pytest.mark.usefixtures("float64")  # float64 makes "equal to the brute force" crisp (conftest)


# ---------------------------------------------------------------------------------------------
# The reference: batch size 1, autograd.grad on log p, a loop over classes weighted by p (exact)
# ---------------------------------------------------------------------------------------------
def trainable(model):
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def log_probs(model, x, transform):
    z = model(x)
    return torch.log_softmax(transform(z) if transform else z, dim=1)[0]


def brute_force(model, batches, estimator, transform=None):
    """Mean over samples of Σ_y w_y (∂ log p(y|x)/∂θ)²; ``batches`` carry the labels to use."""
    training = model.training
    model.eval()
    params = trainable(model)
    total = {n: torch.zeros_like(p) for n, p in params.items()}
    count = 0
    for x, y in batches:
        for i in range(len(x)):
            logp = log_probs(model, x[i:i + 1], transform)
            if estimator == "exact":
                terms = [(float(logp[c].detach().exp()), c) for c in range(len(logp))]
            else:
                terms = [(1.0, int(y[i]))]
            for weight, c in terms:
                grads = torch.autograd.grad(logp[c], list(params.values()), retain_graph=True, allow_unused=True)
                for n, g in zip(params, grads):
                    if g is not None:
                        total[n] += weight * g**2
            count += 1
    model.train(training)
    return {n: t / count for n, t in total.items()}


def brute_force_batched(model, batches, transform=None):
    """Mean over batches of (∂ mean_b −log p(y|x) / ∂θ)², the batch mean built from bs-1 forwards."""
    model.eval()
    params = trainable(model)
    total = {n: torch.zeros_like(p) for n, p in params.items()}
    for x, y in batches:
        loss = sum(-log_probs(model, x[i:i + 1], transform)[int(y[i])] for i in range(len(x))) / len(x)
        for n, g in zip(params, torch.autograd.grad(loss, list(params.values()))):
            total[n] += g**2
    return {n: t / len(batches) for n, t in total.items()}


def assert_rel_close(got, want, rtol=1e-4):
    assert got.keys() == want.keys()
    for n in want:
        assert got[n].shape == want[n].shape and got[n].dtype == want[n].dtype, n
        err = (got[n] - want[n]).abs().max()
        assert err <= rtol * want[n].abs().max() + 1e-300, f"{n}: max error {err:.3g}"


def sampled_labels(model, batches, seed, transform=None):
    """The labels ``sampled`` draws: one multinomial per sample, batch by batch, from the generator."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    with torch.no_grad():
        for x, _ in batches:
            z = model.eval()(x)
            p = torch.softmax(transform(z) if transform else z, 1)
            out.append((x, torch.multinomial(p, 1, generator=gen).squeeze(1)))
    return out


def predicted_labels(model, batches, transform=None):
    """The labels ``predicted`` uses: the argmax of each sample's own forward, one sample at a time."""
    out = []
    with torch.no_grad():
        for x, _ in batches:
            ys = [int(log_probs(model.eval(), x[i:i + 1], transform).argmax()) for i in range(len(x))]
            out.append((x, torch.tensor(ys)))
    return out


# ---------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------
class Scale(nn.Module):
    """A custom layer with bare parameters: no fast path, goes through torch.func."""

    def __init__(self, n):
        super().__init__()
        self.gain = nn.Parameter(torch.linspace(0.5, 1.5, n))
        self.shift = nn.Parameter(torch.linspace(-0.2, 0.2, n))

    def forward(self, x):
        return x * self.gain + self.shift


def mlp(classes=4):
    return nn.Sequential(nn.Linear(6, 10), nn.ReLU(), nn.Linear(10, 8), nn.Tanh(), nn.Linear(8, classes))


def cnn():
    return nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(3, 4, 3, stride=2, dilation=1, bias=False), nn.ReLU(),
        nn.Conv2d(4, 4, 2, padding=(1, 0), dilation=2, groups=2),  # groups=2: generic path
        nn.Flatten(), nn.Linear(4 * 3 * 1, 5),
    )


def mixed():
    return nn.Sequential(nn.Linear(6, 8), nn.LayerNorm(8), nn.ReLU(), Scale(8), nn.Linear(8, 3))


def data(shape=(6,), n=23, classes=4, batch=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *shape, generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    return [(x[i:i + batch], y[i:i + batch]) for i in range(0, n, batch)]


MODELS = {
    "mlp": (mlp, (6,), 4),
    "cnn": (cnn, (2, 7, 7), 5),
    "mixed": (mixed, (6,), 3),
}


@pytest.fixture(params=list(MODELS))
def case(request):
    make, shape, classes = MODELS[request.param]
    torch.manual_seed(1)
    return make(), data(shape, classes=classes)


# ---------------------------------------------------------------------------------------------
# Every estimator against the brute force
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("estimator", ["exact", "empirical"])
def test_matches_brute_force(case, estimator):
    model, batches = case
    assert_rel_close(fisher_diagonal(model, batches, estimator=estimator), brute_force(model, batches, estimator))


def test_predicted_matches_brute_force_at_the_argmax_labels(case):
    model, batches = case
    got = fisher_diagonal(model, batches, estimator="predicted")
    assert_rel_close(got, brute_force(model, predicted_labels(model, batches), "predicted"))


def test_sampled_matches_brute_force_with_the_same_draws(case):
    model, batches = case
    got = fisher_diagonal(model, batches, estimator="sampled", generator=torch.Generator().manual_seed(5))
    assert_rel_close(got, brute_force(model, sampled_labels(model, batches, 5), "sampled"))


def test_batched_matches_its_own_brute_force(case):
    model, batches = case
    assert_rel_close(fisher_diagonal(model, batches, estimator="batched"), brute_force_batched(model, batches))


def test_batched_is_not_the_fisher():
    torch.manual_seed(0)
    model, batches = mlp(), data()
    exact, batched = fisher_diagonal(model, batches), fisher_diagonal(model, batches, estimator="batched")
    assert (batched["4.weight"] - exact["4.weight"]).abs().max() > 0.1 * exact["4.weight"].abs().max()


def test_sampled_is_unbiased_for_exact():
    torch.manual_seed(0)
    model = mlp()
    x = torch.randn(4, 6).repeat(1500, 1)
    y = torch.zeros(len(x), dtype=torch.long)
    exact = fisher_diagonal(model, (x, y))
    sampled = fisher_diagonal(model, (x, y), estimator="sampled")
    for n in exact:
        assert (sampled[n] - exact[n]).abs().max() < 0.1 * exact[n].abs().max(), n


def test_sampled_reproducible_and_seeded():
    torch.manual_seed(0)
    model, batches = mlp(), data()
    run = lambda g: fisher_diagonal(model, batches, estimator="sampled", generator=g)  # noqa: E731
    a, b = run(torch.Generator().manual_seed(3)), run(torch.Generator().manual_seed(3))
    c = run(torch.Generator().manual_seed(4))
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert any(not torch.equal(a[n], c[n]) for n in a)
    state = torch.get_rng_state()
    d, e = run(None), run(None)  # default: a fresh seeded generator, never the global RNG
    assert all(torch.equal(d[n], e[n]) for n in d)
    assert torch.equal(state, torch.get_rng_state())


# ---------------------------------------------------------------------------------------------
# Options and inputs
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_output_transform(estimator):
    torch.manual_seed(0)
    model, batches = mlp(), data()
    head = lambda z: z[:, 2:4]  # noqa: E731
    batches = [(x, y % 2) for x, y in batches]
    got = fisher_diagonal(model, batches, estimator=estimator, output_transform=head)
    if estimator == "batched":
        want = brute_force_batched(model, batches, head)
    elif estimator == "sampled":
        want = brute_force(model, sampled_labels(model, batches, 0, head), "sampled", head)
    elif estimator == "predicted":
        want = brute_force(model, predicted_labels(model, batches, head), "predicted", head)
    else:
        want = brute_force(model, batches, estimator, head)
    assert_rel_close(got, want)
    assert torch.all(got["4.weight"][[0, 1]] == 0)  # masked-out classes get no information


def test_targets_index_the_transformed_logits():
    model, batches = mlp(), data()
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        fisher_diagonal(model, batches, estimator="empirical", output_transform=lambda z: z[:, 2:4])


@pytest.mark.parametrize("estimator", ["exact", "empirical", "batched"])
def test_max_samples_truncates(estimator):
    torch.manual_seed(0)
    model, batches = mlp(), data(batch=5)
    x = torch.cat([b[0] for b in batches])[:13]
    y = torch.cat([b[1] for b in batches])[:13]
    got = fisher_diagonal(model, batches, estimator=estimator, max_samples=13)
    first = [(x[i:i + 5], y[i:i + 5]) for i in range(0, 13, 5)]
    want = brute_force_batched(model, first) if estimator == "batched" else brute_force(model, first, estimator)
    assert_rel_close(got, want)


def test_whole_dataset_tuple_is_read_in_batches():
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    x, y = torch.randn(1100, 3), torch.randint(0, 2, (1100,))
    want = fisher_diagonal(model, [(x, y)])
    assert_rel_close(fisher_diagonal(model, (x, y)), want, rtol=1e-10)
    # batched sees the documented 512-sample batches
    chunks = [(x[i:i + 512], y[i:i + 512]) for i in range(0, 1100, 512)]
    assert_rel_close(fisher_diagonal(model, (x, y), estimator="batched"),
                     fisher_diagonal(model, chunks, estimator="batched"), rtol=1e-10)
    with pytest.raises(ValueError, match="first dimension"):
        fisher_diagonal(model, (x, y[:-1]))


def test_dataloader_and_targets_ignored_by_exact():
    torch.manual_seed(0)
    model, x = mlp(), torch.randn(20, 6)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, torch.zeros(20)), batch_size=6)
    assert_rel_close(fisher_diagonal(model, loader, progress=True), brute_force(model, [(x, None)], "exact"))


# ---------------------------------------------------------------------------------------------
# The model is left as it was
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_mode_grad_and_hooks_untouched(estimator):
    torch.manual_seed(0)
    model, batches = mlp(), data()
    model.train()
    model[2].eval()  # a mixed state is restored module by module
    for p in model.parameters():
        p.grad = torch.full_like(p, 7.0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    fisher_diagonal(model, batches, estimator=estimator)
    assert model.training and model[0].training and not model[2].training
    assert all(torch.equal(p.grad, torch.full_like(p, 7.0)) for p in model.parameters())
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_mode_restored_on_error():
    model = mlp().train()
    with pytest.raises(ValueError):
        fisher_diagonal(model, data(), estimator="empirical", output_transform=lambda z: z[:, :1])
    assert all(m.training for m in model.modules())
    assert all(not m._forward_hooks for m in model.modules())


def test_dropout_model_gives_the_eval_fisher():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 10), nn.ReLU(), nn.Dropout(0.5), nn.Linear(10, 4)).train()
    batches = data()
    got = fisher_diagonal(model, batches)
    assert model.training
    assert_rel_close(got, brute_force(model, batches, "exact"))  # brute force runs in eval mode


def test_frozen_parameters_are_left_out():
    torch.manual_seed(0)
    model = mlp()
    model[0].weight.requires_grad_(False)
    model[2].requires_grad_(False)
    batches = data()
    got = fisher_diagonal(model, batches)
    assert sorted(got) == ["0.bias", "4.bias", "4.weight"]
    assert_rel_close(got, brute_force(model, batches, "exact"))


def test_inside_no_grad():
    model, batches = mlp(), data()
    with torch.no_grad():
        got = fisher_diagonal(model, batches)
    assert_rel_close(got, brute_force(model, batches, "exact"))


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------
def test_unknown_estimator_lists_the_valid_ones():
    with pytest.raises(ValueError, match="exact, sampled, empirical, predicted, batched"):
        fisher_diagonal(mlp(), data(), estimator="diagonal")


@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("empty", [[], "tuple", "max"])
def test_empty_data(estimator, empty):
    if empty == "tuple":
        empty = (torch.zeros(0, 6), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match="empty" if empty != "max" else "max_samples"):
        fisher_diagonal(mlp(), data() if empty == "max" else empty, estimator=estimator,
                        max_samples=0 if empty == "max" else None)


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_nan_outputs(estimator):
    model = mlp()
    with torch.no_grad():
        model[2].weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        fisher_diagonal(model, data(), estimator=estimator)


def test_distributed_single_process(tmp_path):
    """The all-reduce path (world size 1: the result is unchanged). Two processes: a later test."""
    import torch.distributed as dist

    if not dist.is_available():
        pytest.skip("torch.distributed not available")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        model, batches = mlp(), data()
        assert_rel_close(fisher_diagonal(model, batches), brute_force(model, batches, "exact"))
    finally:
        dist.destroy_process_group()


def test_one_class_carries_no_information():
    model, batches = mlp(), data()
    batches = [(x, torch.zeros_like(y)) for x, y in batches]
    for estimator in ESTIMATORS:
        got = fisher_diagonal(model, batches, estimator=estimator, output_transform=lambda z: z[:, :1])
        assert all(torch.all(f == 0) for f in got.values()), estimator


def test_confident_model_stays_exact():
    """Near one-hot p (large logits): the C−1 cotangents stay well conditioned."""
    torch.manual_seed(0)
    model, batches = mlp(), data()
    with torch.no_grad():
        model[4].weight.mul_(30)
    assert_rel_close(fisher_diagonal(model, batches), brute_force(model, batches, "exact"))


# ---------------------------------------------------------------------------------------------
# Passes: the batch size the data comes in does not matter; memory stays within the budget
# ---------------------------------------------------------------------------------------------
class Recorder(nn.Module):
    """Records the batch size of every forward (i.e. every pass of the engine)."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.sizes = inner, []

    def forward(self, x):
        self.sizes.append(len(x))
        return self.inner(x)


@pytest.mark.parametrize("estimator", ["exact", "sampled", "empirical", "predicted"])
def test_any_incoming_batch_size_gives_the_same_fisher(estimator):
    torch.manual_seed(0)
    model = mlp()
    x, y = torch.randn(4100, 6), torch.randint(0, 4, (4100,))
    want = fisher_diagonal(model, (x, y), estimator=estimator)
    for size in (1, 7, 128, 4096):
        batches = [(x[i:i + size], y[i:i + size]) for i in range(0, len(x), size)]
        assert_rel_close(fisher_diagonal(model, batches, estimator=estimator), want, rtol=1e-12)


def test_small_batches_are_gathered_into_passes_of_512():
    torch.manual_seed(0)
    model = Recorder(mlp())
    x, y = torch.randn(1000, 6), torch.randint(0, 4, (1000,))
    fisher_diagonal(model, [(x[i:i + 128], y[i:i + 128]) for i in range(0, 1000, 128)])
    assert [s for s in model.sizes if s > 2] == [512, 488]  # (2-sample re-runs check independence)


def test_a_small_memory_budget_splits_passes_and_changes_nothing():
    torch.manual_seed(0)
    model = Recorder(mlp())
    x, y = torch.randn(600, 6), torch.randint(0, 4, (600,))
    want = fisher_diagonal(model, (x, y))
    model.sizes.clear()
    # exact on 4 classes: 3 directions × (4 logits + 10 + 8 + 4 hooked outputs) + activations ≈ 0.8 kB a sample
    got = fisher_diagonal(model, (x, y), memory_budget=20_000)
    assert_rel_close(got, want, rtol=1e-12)
    passes = [s for s in model.sizes if s > 2]
    # split before any forward of the whole pass (a forward of two samples measured what one takes)
    assert max(passes) <= 30 and sum(passes) == 600 and model.sizes[0] == 2
    with pytest.raises(ValueError, match="memory_budget must be a number of bytes"):
        fisher_diagonal(model, (x, y), memory_budget=0)
