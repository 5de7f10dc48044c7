"""Reduce per-sample gradients over a dataset, fast: the engine behind the Fisher and MAS.

For every sample n the model's (transformed) output z_n gets K cotangents v_{n,k} (vectors in output
space, chosen by the caller from z); the engine returns, for every trainable parameter θ,

    mean over n of  Σ_k ρ(J_n(θ)ᵀ v_{n,k}),     J_n(θ) = ∂z_n/∂θ,  ρ = square or abs,

i.e. the per-sample gradient of ⟨z_n, v_{n,k}⟩ reduced elementwise, without a loop over samples:

* Modules with a rule in :data:`forgetless.layer_rules.LAYER_RULES` (``nn.Linear``, ``nn.Conv2d``,
  ``nn.Embedding``, ``nn.LayerNorm``): forward hooks keep each call's input a and output; one
  backward pass gives every sample's gradient g w.r.t. those outputs, for all K cotangents at once
  (``is_grads_batched``: measured ~2x faster than K backward passes with retain_graph); the layer's
  rule reduces them without materialising per-sample gradients where its algebra allows (for a
  Linear, Σ_n ρ(g_n a_nᵀ) = ρ(g)ᵀ ρ(a) is a single matmul). When the gradient sums over positions
  (sequences, Conv2d, a module called twice) the sum comes before ρ.
* Every other parameter (a module without a rule, a bare nn.Parameter, a tied or functionally-used weight):
  ``torch.func`` (functional_call + vmap + vjp), per sample, correct for any vmap-able model.

Samples must not interact: the model is put in eval mode, BatchNorm using batch statistics is refused,
and the first batch is checked at run time. Supported modules must see the batch on dim 0.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterable, Iterator

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, vjp, vmap

from .layer_rules import rule_for

Batches = Iterable[tuple[Tensor, Tensor]]
OutputTransform = Callable[[Tensor], Tensor]
Cotangents = Callable[[Tensor, Tensor], Tensor]  # (z (N, C), targets) -> (K, N, C)
BatchSums = Callable[[Tensor, Tensor, bool], tuple[dict[str, Tensor], float]]

WHOLE_DATASET_BATCH = 512   # an (X, Y) pair of tensors is read in batches of this size
_BUDGET = 1 << 24           # elements (64 MiB in float32) for any per-sample intermediate

__all__ = ["output_norm_sensitivity", "reduce_per_sample", "per_sample_sums", "per_sample_kronecker",
           "kronecker_layers", "average_over_data"]


def output_norm_sensitivity(
    model: nn.Module, data: Batches | tuple[Tensor, Tensor], *,
    output_transform: OutputTransform | None = None, max_samples: int | None = None, progress: bool = False,
) -> dict[str, Tensor]:
    """MAS importance (Aljundi et al. 2018): mean over samples of |∂‖f(x)‖₂²/∂θ|.

    The absolute value is taken per sample, then averaged. ``f`` is ``output_transform(model(x))``.
    ``data`` and ``max_samples`` are as for :func:`forgetless.fisher.fisher_diagonal`.

    Example:
        >>> model = torch.nn.Linear(3, 2, bias=False)
        >>> with torch.no_grad():
        ...     _ = model.weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))
        >>> x = torch.tensor([[1.0, -2.0, 3.0]])   # f = (1, -2): ∂‖f‖²/∂W = 2 f xᵀ
        >>> output_norm_sensitivity(model, (x, torch.zeros(1)))["weight"]
        tensor([[ 2.,  4.,  6.],
                [ 4.,  8., 12.]])
    """
    return reduce_per_sample(
        model, data, lambda z, _: 2 * z.unsqueeze(0), reduce="abs", output_transform=output_transform,
        max_samples=max_samples, progress=progress, desc="MAS importance",
    )


def reduce_per_sample(
    model: nn.Module, data: Batches | tuple[Tensor, Tensor], cotangents: Cotangents, *, reduce: str = "square",
    output_transform: OutputTransform | None = None, max_samples: int | None = None,
    progress: bool = False, desc: str = "per-sample gradients",
) -> dict[str, Tensor]:
    """Mean over samples of Σ_k ρ(J_n(θ)ᵀ v_{n,k}), v = ``cotangents(z, targets)`` of shape (K, N, C).

    Example (the empirical Fisher, by hand):
        >>> model = torch.nn.Linear(4, 3)
        >>> def score(z, y):  # gradient of log p(y|x) w.r.t. the logits
        ...     return (F.one_hot(y, z.shape[1]) - z.softmax(1)).unsqueeze(0)
        >>> data = [(torch.randn(8, 4), torch.randint(0, 3, (8,)))]
        >>> sorted(reduce_per_sample(model, data, score))
        ['bias', 'weight']
    """
    if reduce not in _RHO:
        raise ValueError(f"reduce must be one of {sorted(_RHO)}, got {reduce!r}")
    with _eval_mode(model):
        _refuse_batch_statistics(model)
    return average_over_data(
        model, data,
        lambda x, y, first: (per_sample_sums(model, x, y, cotangents, reduce=reduce,
                                             output_transform=output_transform, check_independence=first), len(x)),
        max_samples=max_samples, progress=progress, desc=desc,
    )


# --------------------------------------------------------------------------------------------------
# One batch
# --------------------------------------------------------------------------------------------------
_RHO = {"square": torch.square, "abs": torch.abs}


def per_sample_sums(
    model: nn.Module, x: Tensor, y: Tensor, cotangents: Cotangents, *, reduce: str = "square",
    output_transform: OutputTransform | None = None, check_independence: bool = False,
) -> dict[str, Tensor]:
    """Σ_n Σ_k ρ(J_n(θ)ᵀ v_{n,k}) over one batch, for every trainable parameter (no averaging).

    The model is used as it is (call it in eval mode). ``check_independence`` re-runs the first two
    samples alone and raises if their outputs change, i.e. if samples interact within the batch.
    """
    rho = _RHO[reduce]
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if not params:
        return {}
    z, calls, fast, v = _forward_and_cotangents(model, x, y, params, cotangents, output_transform, check_independence)
    sums = _fast_sums(z, v, fast, calls, rho) if fast else {}
    del z, calls  # free the graph and the captured activations before the generic pass
    generic = [name for name in params if name not in sums]
    if generic:
        sums.update(_generic_sums(model, x, v, generic, rho, output_transform))
    return {name: sums[name] for name in params}


def per_sample_kronecker(
    model: nn.Module, x: Tensor, y: Tensor, cotangents: Cotangents, *,
    output_transform: OutputTransform | None = None, check_independence: bool = False,
) -> tuple[dict[str, tuple[Tensor, Tensor]], dict[str, Tensor]]:
    """Over one batch, Kronecker factor sums for the layers whose rule has them, Σ squares for the rest.

    Returns ``(factors, squares)``: ``factors`` maps a factored layer's weight name to
    (Σ_n A_n, Σ_n Σ_k G_n) (see :class:`forgetless.layer_rules.KroneckerRule`; A has a bias row and
    column when the layer's bias is trainable and its own); ``squares`` is :func:`per_sample_sums`
    with ``reduce="square"`` for every other trainable parameter. No averaging. Same passes as
    :func:`per_sample_sums`: one forward with hooks, the backward passes for the cotangents.
    """
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if not params:
        return {}, {}
    z, calls, fast, v = _forward_and_cotangents(model, x, y, params, cotangents, output_transform, check_independence)
    blocks = {m: names for m, names in fast.items() if "weight" in names and rule_for(m).kronecker is not None}
    with torch.no_grad():  # A depends on the inputs only: once per batch, whatever the cotangents
        a_sums = {m: rule_for(m).kronecker.input_factor(m, [c.input for c in calls[m]], "bias" in names)
                  for m, names in blocks.items()}
    g_sums: dict[nn.Module, Tensor] = {}
    squares: dict[str, Tensor] = {}
    for grads in _output_gradients(z, v, fast, calls):
        with torch.no_grad():
            for m, names in fast.items():
                if m in blocks:
                    g = rule_for(m).kronecker.output_factor(m, grads[m])
                    g_sums[m] = g_sums[m] + g if m in g_sums else g
                    continue
                part = rule_for(m).elementwise(m, [c.input for c in calls[m]], grads[m], torch.square)
                for attr, name in names.items():
                    squares[name] = squares[name] + part[attr] if name in squares else part[attr]
    del z, calls  # free the graph and the captured activations before the generic pass
    factors = {names["weight"]: (a_sums[m], g_sums[m]) for m, names in blocks.items()}
    covered = {name for names in blocks.values() for name in names.values()} | set(squares)
    generic = [name for name in params if name not in covered]
    if generic:
        squares.update(_generic_sums(model, x, v, generic, torch.square, output_transform))
    return factors, squares


def kronecker_layers(model: nn.Module) -> dict[str, tuple[int, int]]:
    """Weight name -> (size of A, size of G) for every layer :func:`per_sample_kronecker` may factor.

    That is every module whose rule has Kronecker factors and whose weight is trainable and its own;
    A counts the bias when the bias is too. Whether a layer IS factored on a batch is decided there,
    at run time (e.g. a weight also used outside the module's calls is not).

    Example:
        >>> kronecker_layers(nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2, bias=False)))
        {'0.weight': (5, 3), '2.weight': (3, 2)}
    """
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    out = {}
    for m, names in _fast_candidates(model, params).items():
        if "weight" in names and rule_for(m).kronecker is not None:
            w = params[names["weight"]]
            out[names["weight"]] = (w[0].numel() + ("bias" in names), w.shape[0])
    return out


def _forward_and_cotangents(model, x, y, params, cotangents, transform, check_independence):
    """The hooked forward, the modules the fast path may use, and the cotangents v (K, N, C)."""
    if check_independence:
        _refuse_batch_statistics(model)
    candidates = _fast_candidates(model, params)
    with torch.enable_grad():
        z, calls = _forward_capturing(model, x, candidates, transform)
    n = z.shape[0]
    if check_independence and n > 2:
        _check_independent(model, x[:2], z[:2].detach(), transform)
    fast = _validate_fast(candidates, calls, z, n)
    v = cotangents(z.detach(), y)
    if v.dim() != 3 or v.shape[1:] != z.shape:
        raise ValueError(f"cotangents must have shape (K, {n}, {z.shape[1]}), got {tuple(v.shape)}")
    return z, calls, fast, v


class _Call:
    """One call of a hooked module: its input (detached) and output (the graph node to differentiate)."""

    __slots__ = ("input", "output", "versions")

    def __init__(self, inp: Tensor, out: Tensor) -> None:
        self.input, self.output = inp, out
        self.versions = (inp._version, out._version)

    def modified(self) -> bool:  # an in-place op after the layer (e.g. ReLU(inplace=True)) changed it
        return (self.input._version, self.output._version) != self.versions


def _fast_candidates(model: nn.Module, params: dict[str, Tensor]) -> dict[nn.Module, dict[str, str]]:
    """Supported modules -> {attr: param name}, for trainable parameters owned by that module alone."""
    owners: dict[int, set[tuple[int, str]]] = {}
    for m in model.modules():
        for attr, p in m.named_parameters(recurse=False, remove_duplicate=False):
            owners.setdefault(id(p), set()).add((id(m), attr))
    name_of = {id(p): name for name, p in params.items()}
    out: dict[nn.Module, dict[str, str]] = {}
    for m in model.modules():
        rule = rule_for(m)
        if rule is None:
            continue
        mine = {attr: name_of[id(p)] for attr in rule.params if (p := getattr(m, attr, None)) is not None
                and id(p) in name_of and len(owners[id(p)]) == 1}
        if mine:
            out[m] = mine
    return out


def _forward_capturing(model, x, candidates, transform):
    clone: set[nn.Module] = set()
    for _ in range(2):  # second try clones what an in-place op modified after the layer
        calls: dict[nn.Module, list[_Call]] = {m: [] for m in candidates}

        def hook(m, args, out):
            inp = args[0].detach()
            if m in clone:
                inp, result = inp.clone(), out.clone()
            else:
                result = None
            calls[m].append(_Call(inp, out))
            return result

        handles = [m.register_forward_hook(hook) for m in candidates]
        try:
            z = model(x)
            z = transform(z) if transform is not None else z
        finally:
            for h in handles:
                h.remove()
        if not isinstance(z, Tensor) or z.dim() != 2:
            raise ValueError(f"the model (after output_transform) must return (batch, outputs) logits, "
                             f"got {getattr(z, 'shape', type(z))}")
        if not torch.isfinite(z).all():
            raise ValueError("the model's outputs contain NaN or inf: the result would not be finite. "
                             "Check the model's parameters and the inputs.")
        modified = {m for m, cs in calls.items() if any(c.modified() for c in cs)}
        if not modified - clone:
            return z, calls
        clone |= modified
    raise RuntimeError("layer inputs/outputs keep being modified in place")  # pragma: no cover


def _validate_fast(candidates, calls, z, n):
    """Keep the modules whose parameters reach the output only through their hooked calls on a batch of n."""
    uses = _graph_uses(z)
    fast = {}
    for m, names in candidates.items():
        cs = calls[m]
        if not cs or any(c.input.shape[0] != n or c.output.shape[0] != n for c in cs):
            continue  # never called (weights used functionally?) or batch not on dim 0
        if all(uses.get(id(getattr(m, attr)), 0) == len(cs) for attr in names):
            fast[m] = names
    return fast


def _graph_uses(z: Tensor) -> dict[int, int]:
    """id(parameter) -> number of graph edges into it (one per use in the forward)."""
    counts: dict[int, int] = {}
    if z.grad_fn is None:
        return counts
    seen, stack = {z.grad_fn}, [z.grad_fn]
    while stack:
        for nxt, _ in stack.pop().next_functions:
            if nxt is None:
                continue
            var = getattr(nxt, "variable", None)
            if var is not None:
                counts[id(var)] = counts.get(id(var), 0) + 1
            elif nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    return counts


def _fast_sums(z, v, fast, calls, rho) -> dict[str, Tensor]:
    """Per-sample output gradients for all hooked calls, then the layer-specific reductions."""
    sums: dict[str, Tensor] = {}
    for grads in _output_gradients(z, v, fast, calls):
        with torch.no_grad():
            for m, names in fast.items():
                part = rule_for(m).elementwise(m, [c.input for c in calls[m]], grads[m], rho)
                for attr, name in names.items():
                    sums[name] = sums[name] + part[attr] if name in sums else part[attr]
    return sums


def _output_gradients(z, v, fast, calls) -> Iterator[dict[nn.Module, list[Tensor]]]:
    """Chunks of cotangents, each: module -> per-sample gradients (K', N, ...) of z w.r.t. its calls' outputs."""
    k_total, n = v.shape[0], v.shape[1]
    outputs = [c.output for m in fast for c in calls[m]]
    width = sum(o[0].numel() for o in outputs)
    kc = max(1, min(k_total, _BUDGET // max(1, n * width)))  # cotangents per backward pass
    for k0 in range(0, k_total, kc):
        vk = v[k0:k0 + kc]
        grads = torch.autograd.grad(
            z, outputs, vk if len(vk) > 1 else vk[0], retain_graph=k0 + kc < k_total,
            allow_unused=True, is_grads_batched=len(vk) > 1,
        )
        grads = [torch.zeros((len(vk), *o.shape), dtype=o.dtype, device=o.device) if g is None
                 else g.reshape(len(vk), *o.shape) for g, o in zip(grads, outputs)]
        per_module, i = {}, 0
        for m in fast:
            per_module[m] = grads[i:i + len(calls[m])]
            i += len(calls[m])
        yield per_module


def _generic_sums(model, x, v, names, rho, transform) -> dict[str, Tensor]:
    """torch.func: per sample, a vjp of the output with each of its K cotangents."""
    params = dict(model.named_parameters())
    primals = {name: params[name].detach() for name in names}

    def per_sample(xn: Tensor, vn: Tensor) -> dict[str, Tensor]:
        def out(p):
            z = functional_call(model, p, (xn.unsqueeze(0),))
            return (transform(z) if transform is not None else z).squeeze(0)

        _, pullback = vjp(out, primals)
        (g,) = vmap(pullback)(vn)               # name -> (K, *shape)
        return {name: rho(t).sum(0) for name, t in g.items()}

    k, n = v.shape[:2]
    step = max(1, _BUDGET // (k * sum(p.numel() for p in primals.values())))
    sums = {name: torch.zeros_like(p) for name, p in primals.items()}
    with torch.no_grad():  # torch.func ignores an outer no_grad; this only stops a useless outer graph
        for i in range(0, n, step):
            part = vmap(per_sample)(x[i:i + step], v[:, i:i + step].transpose(0, 1))
            for name in sums:
                sums[name] += part[name].sum(0)
    return sums


def _check_independent(model, x2, z2, transform) -> None:
    with torch.no_grad():
        alone = model(x2)
        alone = transform(alone) if transform is not None else alone
    tol = max(1e-3, 100 * torch.finfo(z2.dtype).eps) * (1 + z2.abs().max())
    if (alone - z2).abs().max() > tol:
        raise ValueError(
            "the model's output for a sample depends on the other samples in its batch (or is random), "
            "so per-sample gradients are ill-defined: e.g. a BatchNorm forced to use batch statistics or "
            "dropout forced on in forward(). Run such layers in eval mode (model.eval(), running statistics)."
        )


def _refuse_batch_statistics(model: nn.Module) -> None:
    """After model.eval(): BatchNorm still mixes samples if it stayed in training mode (a train()
    override) or has no running statistics (track_running_stats=False)."""
    bad = [name or type(model).__name__ for name, m in model.named_modules()
           if isinstance(m, nn.modules.batchnorm._BatchNorm)
           and (m.training or (m.running_mean is None and m.running_var is None))]
    if bad:
        raise ValueError(
            f"BatchNorm layers {bad} normalise with batch statistics even in eval mode (still training, or "
            "track_running_stats=False), so per-sample gradients are ill-defined. Use running statistics "
            "in eval mode (track_running_stats=True, no forced train()), or GroupNorm/LayerNorm."
        )


# --------------------------------------------------------------------------------------------------
# The pass over a dataset
# --------------------------------------------------------------------------------------------------
def average_over_data(
    model: nn.Module, data: Batches | tuple[Tensor, Tensor], batch_sums: BatchSums, *,
    max_samples: int | None = None, progress: bool = False, desc: str = "", like: dict | None = None,
) -> dict:
    """Σ over batches of ``batch_sums(x, y, first) -> (sums, weight)``, divided by Σ weight.

    Runs in eval mode (every module's mode restored afterwards, also on errors) with gradients enabled;
    inputs are moved to the parameters' device. Under ``torch.distributed`` the sums and weights are
    all-reduced before dividing, so N processes give the average over the union of their shards
    (``max_samples`` then applies per process). ``like``: the entries ``batch_sums`` may return,
    key -> a tensor of their shape and dtype (default: the trainable parameters); every process
    all-reduces all of them, whatever its batches held.
    """
    if max_samples is not None and max_samples < 1:
        raise ValueError(f"max_samples must be >= 1 or None, got {max_samples}")
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if not params:
        return {}
    device = next(iter(params.values())).device
    like = params if like is None else like
    # accumulate in at least float32 (bf16 sums over thousands of samples lose the small terms)
    sums = {n: torch.zeros(p.shape, dtype=torch.promote_types(p.dtype, torch.float32), device=p.device)
            for n, p in like.items()}
    weight = 0.0
    bar = _progress_bar(data, max_samples, desc) if progress else None
    with _eval_mode(model):
        for i, (x, y) in enumerate(_batches(data, max_samples)):
            part, w = batch_sums(x.to(device), y.to(device), i == 0)
            for name, t in part.items():
                sums[name] += t
            weight += w
            if bar is not None:
                bar.update(len(x))
    if bar is not None:
        bar.close()
    weight_t = torch.tensor(float(weight), dtype=torch.float64, device=device)
    if dist.is_available() and dist.is_initialized():  # sums and counts, THEN divide: the union's mean
        for t in (*sums.values(), weight_t):
            dist.all_reduce(t)
    if weight_t.item() == 0:
        raise ValueError("no samples: the data is empty")
    out = {name: (s / weight_t).to(like[name].dtype) for name, s in sums.items()}
    bad = [name for name, t in out.items() if not torch.isfinite(t).all()]
    if bad:
        raise ValueError(f"the result is not finite (NaN or inf) for {bad[:5]}: check the model and inputs")
    return out


def _batches(data, max_samples: int | None) -> Iterator[tuple[Tensor, Tensor]]:
    if isinstance(data, tuple) and len(data) == 2 and all(isinstance(t, Tensor) for t in data):
        xs, ys = data  # the whole dataset as two tensors: read in fixed-size batches
        if xs.shape[0] != ys.shape[0]:
            raise ValueError(f"(X, Y) must have equal first dimensions, got {xs.shape[0]} and {ys.shape[0]}")
        data = ((xs[i:i + WHOLE_DATASET_BATCH], ys[i:i + WHOLE_DATASET_BATCH])
                for i in range(0, xs.shape[0], WHOLE_DATASET_BATCH))
    left = max_samples
    for batch in data:
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise TypeError(f"each batch must be an (inputs, targets) pair, got {type(batch).__name__}")
        x, y = batch[0], batch[1]
        if left is not None:
            if left <= 0:
                return
            x, y = x[:left], y[:left]
            left -= len(x)
        if len(x):
            yield x, y


@contextmanager
def _eval_mode(model: nn.Module):
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield
    finally:
        for m, training in modes.items():  # set flags directly: train() would overwrite children
            m.training = training


def _progress_bar(data, max_samples, desc):
    from tqdm.auto import tqdm  # lazy: only when asked for

    total = None
    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], Tensor):
        total = data[0].shape[0]
    elif hasattr(data, "dataset") and hasattr(data.dataset, "__len__"):
        total = len(data.dataset)
    if max_samples is not None:
        total = max_samples if total is None else min(total, max_samples)
    return tqdm(total=total, desc=desc, unit="sample")
