"""Reduce per-sample gradients over a dataset, fast: the engine behind the Fisher and MAS.

For every sample n the model's (transformed) output z_n gets K cotangents v_{n,k} (vectors in output
space, chosen by the caller from z); the engine returns, for every trainable parameter θ,

    mean over n of  Σ_k ρ(J_n(θ)ᵀ v_{n,k}),     J_n(θ) = ∂z_n/∂θ,  ρ = square or abs,

i.e. the per-sample gradient of ⟨z_n, v_{n,k}⟩ reduced elementwise, without a loop over samples:

* Modules with a rule in :data:`forgetless.layer_rules.LAYER_RULES` (``nn.Linear``, ``nn.Conv2d``,
  ``nn.Embedding``, ``nn.LayerNorm``; Hugging Face's ``Conv1D`` by name): forward hooks keep each
  call's input a and output; one backward pass gives every sample's gradient g w.r.t. those
  outputs, for all K cotangents at once (``is_grads_batched``: measured ~2x faster than K backward
  passes with retain_graph); the layer's rule reduces them without materialising per-sample
  gradients where its algebra allows (for a Linear, Σ_n ρ(g_n a_nᵀ) = ρ(g)ᵀ ρ(a) is a single
  matmul). When the gradient sums over positions (sequences, Conv2d, a module called twice) the
  sum comes before ρ.
* A weight tied between modules whose rules give per-sample gradients (an embedding and its output
  head, GPT-2's wte and lm_head): each holder's per-sample gradients, added, then ρ, a few samples
  at a time (one sample's gradient of that weight is then the memory floor).
* Every other parameter (a module without a rule, a bare nn.Parameter, another tied or a
  functionally-used weight): ``torch.func`` (functional_call + vmap + vjp), per sample, correct for
  any vmap-able model.

:func:`reduce_per_sample_kronecker` is the same pass with a second kind of reduction: layers whose
rule has Kronecker factors (Linear, Conv2d) give A over their inputs and G over the same per-sample
output gradients (K-FAC), every other parameter its elementwise squares.

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

from .layer_rules import CHUNK_ELEMENTS, rule_for, sum_leading

Batches = Iterable[tuple[Tensor, Tensor]]
OutputTransform = Callable[[Tensor], Tensor]
# (z (N, ..., C), targets) -> (K, N, ..., C); may carry ``directions(z_shape) -> K`` so that the engine
# can size its chunks before the K cotangents exist (see per_sample_sums).
Cotangents = Callable[[Tensor, Tensor], Tensor]
BatchSums = Callable[[Tensor, Tensor, bool], tuple[dict[str, Tensor], float]]

CHUNK = 512                 # samples per pass: an (X, Y) pair is read, and smaller batches gathered, up to this
MEMORY_BUDGET = 256 << 20   # bytes of per-sample intermediates per pass (default of ``memory_budget``)

__all__ = ["output_norm_sensitivity", "reduce_per_sample", "reduce_per_sample_kronecker", "per_sample_sums",
           "kronecker_layers", "average_over_data"]


def output_norm_sensitivity(
    model: nn.Module, data: Batches | tuple[Tensor, Tensor], *,
    output_transform: OutputTransform | None = None, max_samples: int | None = None, progress: bool = False,
    memory_budget: int = MEMORY_BUDGET,
) -> dict[str, Tensor]:
    """MAS importance (Aljundi et al. 2018): mean over samples of |∂‖f(x)‖₂²/∂θ|.

    The absolute value is taken per sample, then averaged. ``f`` is ``output_transform(model(x))``
    (for outputs with positions, the norm is over all of them). ``data``, ``max_samples`` and
    ``memory_budget`` are as for :func:`forgetless.fisher.fisher_diagonal`.

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
        model, data, _output_norm_cotangent, reduce="abs", output_transform=output_transform,
        max_samples=max_samples, progress=progress, desc="MAS importance", memory_budget=memory_budget,
    )


def _output_norm_cotangent(z: Tensor, _: Tensor) -> Tensor:
    return 2 * z.unsqueeze(0)  # ∂‖z‖²/∂z


_output_norm_cotangent.directions = lambda shape: 1


def reduce_per_sample(
    model: nn.Module, data: Batches | tuple[Tensor, Tensor], cotangents: Cotangents, *, reduce: str = "square",
    output_transform: OutputTransform | None = None, max_samples: int | None = None,
    progress: bool = False, desc: str = "per-sample gradients", memory_budget: int = MEMORY_BUDGET,
) -> dict[str, Tensor]:
    """Mean over samples of Σ_k ρ(J_n(θ)ᵀ v_{n,k}), v = ``cotangents(z, targets)`` of shape (K, *z.shape).

    Incoming batches smaller than :data:`CHUNK` samples are gathered into passes of up to that many
    (a DataLoader's batches of 128 cost what batches of 512 cost; the sums are the same up to float
    rounding), and passes whose per-sample intermediates would exceed ``memory_budget`` bytes are
    split (see :func:`per_sample_sums`).

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
    sums = _BatchSums(model, cotangents, reduce, output_transform, memory_budget)
    return average_over_data(model, data, lambda x, y, first: (sums(x, y, first), len(x)),
                             max_samples=max_samples, progress=progress, desc=desc, gather=CHUNK)


def reduce_per_sample_kronecker(
    model: nn.Module, data: Batches | tuple[Tensor, Tensor], cotangents: Cotangents, *,
    output_transform: OutputTransform | None = None, max_samples: int | None = None,
    progress: bool = False, desc: str = "Kronecker factors", memory_budget: int = MEMORY_BUDGET,
) -> tuple[dict[str, tuple[Tensor, Tensor]], dict[str, Tensor]]:
    """Kronecker factors (mean over samples of A_n and of Σ_k G_n) where a layer's rule has them,
    mean squares (as :func:`reduce_per_sample`) for every other trainable parameter, in one pass.

    Returns ``(factors, squares)``: ``factors`` maps a factored layer's weight name to (A, G), both
    symmetric (see :class:`forgetless.layer_rules.KroneckerRule`; A has a bias row and column when
    the layer's bias is trainable and its own). Same passes, gathering, memory budget and
    ``torch.distributed`` all-reduce as :func:`reduce_per_sample`: every process all-reduces the
    factors of every layer :func:`kronecker_layers` lists, and a layer counts as factored when it was
    on every sample of every process (on none: its parameters are in ``squares``; on some only: error).
    """
    with _eval_mode(model):
        _refuse_batch_statistics(model)
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    layers = kronecker_layers(model)
    like: dict = dict(params)
    for weight, (a_size, g_size) in layers.items():
        w = params[weight]
        like[(weight, "A")], like[(weight, "G")] = w.new_empty(a_size, a_size), w.new_empty(g_size, g_size)
        like[(weight, "factored")] = w.new_empty(())  # how many samples it was factored on
    sums = _KroneckerBatchSums(model, cotangents, "square", output_transform, memory_budget)
    mean = average_over_data(model, data, lambda x, y, first: (sums(x, y, first), len(x)), like=like,
                             max_samples=max_samples, progress=progress, desc=desc, gather=CHUNK)
    factors = {}
    for weight, (a_size, _) in layers.items():
        share = float(mean.pop((weight, "factored")))
        a, g = mean.pop((weight, "A")), mean.pop((weight, "G"))
        if share == 0:
            continue
        if share != 1:
            raise ValueError(f"layer {weight!r} was Kronecker-factored on some batches and not on others "
                             "(its calls or the batch dimension changed between batches)")
        factors[weight] = (_mirror_upper(a), _mirror_upper(g))  # the rules' sums hold the upper triangles
        for attr in ("weight", "bias")[:1 + (a_size > params[weight][0].numel())]:
            del mean[weight[:-len("weight")] + attr]
    return factors, mean


def _mirror_upper(m: Tensor) -> Tensor:
    """The symmetric matrix whose upper triangle (diagonal included) is ``m``'s."""
    return torch.triu(m) + torch.triu(m, 1).T


def kronecker_layers(model: nn.Module) -> dict[str, tuple[int, int]]:
    """Weight name -> (size of A, size of G) for every layer :func:`reduce_per_sample_kronecker` may factor.

    That is every module whose rule has Kronecker factors and whose weight is trainable and its own
    (a weight tied to another module's gets the diagonal); A counts the bias when the bias is too.
    Whether a layer IS factored is decided on each batch (e.g. a weight also used outside the
    module's calls is not).

    Example:
        >>> kronecker_layers(nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2, bias=False)))
        {'0.weight': (5, 3), '2.weight': (3, 2)}
    """
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    out = {}
    for names in _factorable(_fast_candidates(model, params)).values():
        w = params[names["weight"]]
        out[names["weight"]] = (w[0].numel() + ("bias" in names), w.shape[0])
    return out


def _factorable(modules: dict[nn.Module, dict[str, str]]) -> dict[nn.Module, dict[str, str]]:
    """The modules whose rule has Kronecker factors, with their weight and none of their parameters
    shared with another of ``modules``."""
    shared = _shared(modules)
    return {m: names for m, names in modules.items()
            if "weight" in names and rule_for(m).kronecker is not None and not shared.keys() & set(names.values())}


# --------------------------------------------------------------------------------------------------
# One batch
# --------------------------------------------------------------------------------------------------
_RHO = {"square": torch.square, "abs": torch.abs}


def per_sample_sums(
    model: nn.Module, x: Tensor, y: Tensor, cotangents: Cotangents, *, reduce: str = "square",
    output_transform: OutputTransform | None = None, check_independence: bool = False,
    memory_budget: int = MEMORY_BUDGET,
) -> dict[str, Tensor]:
    """Σ_n Σ_k ρ(J_n(θ)ᵀ v_{n,k}) over one batch, for every trainable parameter (no averaging).

    The model is used as it is (call it in eval mode). Its output may have positions after the batch
    dimension, (N, ..., C): the cotangents then have that shape too and every sample's gradient sums
    over its positions before ρ. ``check_independence`` re-runs the first two samples alone and
    raises if their outputs change, i.e. if samples interact within the batch.

    Memory: the cotangents, the per-sample output gradients and the layers' activations grow with
    the number of samples in a pass. When they would exceed ``memory_budget`` bytes, the batch is
    split into smaller passes (never below one sample: the model's own activations for one sample
    are the floor), sized on a forward of two samples before the first pass is built. The running
    sums are one tensor per parameter, added into in place. The cotangent function's
    ``directions(z_shape)`` attribute, when present, gives K before the cotangents are built.
    """
    return _BatchSums(model, cotangents, reduce, output_transform, memory_budget)(x, y, check_independence)


class _OverBudget(Exception):
    """A pass would exceed the memory budget; ``_BatchSums.limit`` now says how many samples fit."""


class _BatchSums:
    """per_sample_sums over batches, in passes sized to the memory budget (learned on the first pass)."""

    def __init__(self, model, cotangents, reduce, transform, budget):
        if reduce not in _RHO:
            raise ValueError(f"reduce must be one of {sorted(_RHO)}, got {reduce!r}")
        if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
            raise ValueError(f"memory_budget must be a number of bytes >= 1, got {budget!r}")
        self.model, self.cotangents, self.rho, self.transform, self.budget = model, cotangents, _RHO[reduce], transform, budget
        self.params = {n: p for n, p in model.named_parameters() if p.requires_grad}
        self.limit: int | None = None  # samples per pass; None until a pass was found too big
        self.probed = False            # whether the first big batch was sized by a forward of two samples

    def __call__(self, x: Tensor, y: Tensor, check_independence: bool = False) -> dict[str, Tensor]:
        if not self.params:
            return {}
        if not self.probed and self.limit is None and len(x) > 2:
            self.probed = True
            fits = self._probe(x[:2])
            self.limit = fits if len(x) > fits else None
        while True:
            step = self.limit or len(x)
            total: dict[str, Tensor] = {}  # every pass adds into it: one copy of the sums, whatever the passes
            try:
                for i in range(0, len(x), step):
                    self._one_pass(x[i:i + step], y[i:i + step] if isinstance(y, Tensor) else y,
                                   check_independence and i == 0, total)
                return total
            except _OverBudget:
                continue  # self.limit was lowered: start this batch again in smaller passes

    def _one_pass(self, x: Tensor, y: Tensor, check_independence: bool, out: dict) -> None:
        model, transform = self.model, self.transform
        candidates = _fast_candidates(model, self.params)
        with torch.enable_grad():
            z, calls = _forward_capturing(model, x, candidates, transform)
        n = z.shape[0]
        self._check_budget(z, calls, n)
        if check_independence and n > 2:
            _check_independent(model, x[:2], z[:2].detach(), transform)
        fast = _validate_fast(candidates, calls, z, n)
        v = self.cotangents(z.detach(), y)
        if v.dim() != z.dim() + 1 or v.shape[1:] != z.shape:
            raise ValueError(f"cotangents must have shape (K, {', '.join(map(str, z.shape))}), got {tuple(v.shape)}")
        self._reduce(x, z, calls, fast, v, out)

    def _reduce(self, x, z, calls, fast, v, out: dict) -> None:
        """Add this pass's sums into ``out``."""
        sums = _fast_sums(z, v, fast, calls, self.rho) if fast else {}
        del z, calls  # free the graph and the captured activations before the generic pass
        generic = [name for name in self.params if name not in sums]
        if generic:
            sums.update(_generic_sums(self.model, x, v, generic, self.rho, self.transform, self.budget))
        for name, t in sums.items():
            _add(out, name, t)

    def _probe(self, x2: Tensor) -> int:
        """Samples per pass, measured on a forward of two samples without a graph, so that the first
        batch is split BEFORE its forward: a gathered pass (512 GPT-2 sequences) would otherwise
        build its whole graph only to be thrown away, or exhaust memory doing so. Two samples: a
        call whose batch stays 1 (positions shared by the batch) is not counted per sample, as in
        :meth:`_check_budget`, so the passes are the ones a full first pass would have chosen."""
        with torch.no_grad():
            z, calls = _forward_capturing(self.model, x2, _fast_candidates(self.model, self.params), self.transform)
        return self._fits(z, calls, len(x2))

    def _check_budget(self, z: Tensor, calls, n: int) -> None:
        """Raise _OverBudget (after setting the limit) if n samples are too many for one pass."""
        fits = self._fits(z, calls, n)
        if n > fits:
            self.limit = fits
            raise _OverBudget

    def _fits(self, z: Tensor, calls, n: int) -> int:
        """How many samples fit in a pass. Bytes per sample: K × (output + hooked layers' outputs), the
        cotangents and output gradients, plus the hooked layers' activations."""
        directions = getattr(self.cotangents, "directions", None)
        k = directions(z.shape[1:]) if directions is not None else 1
        widths = sum(c.output[0].numel() for cs in calls.values() for c in cs if c.output.shape[0] == n)
        captured = sum(c.input[0].numel() for cs in calls.values() for c in cs if c.input.shape[0] == n)
        per_sample = z.element_size() * (k * (z[0].numel() + widths) + widths + captured)
        return max(1, self.budget // max(1, per_sample))


class _KroneckerBatchSums(_BatchSums):
    """The same passes; the layers whose rule has Kronecker factors give (Σ_n A_n, Σ_n Σ_k G_n) and
    their sample count under keys (weight, "A"), (weight, "G"), (weight, "factored"); the other
    parameters Σ squares under their names."""

    def _reduce(self, x, z, calls, fast, v, out: dict) -> None:
        blocks = _factorable(fast)
        covered = {name for names in fast.values() for name in names.values()}
        with torch.no_grad():  # A depends on the inputs only: once per pass, whatever the cotangents
            for m, names in blocks.items():
                weight = names["weight"]
                a = rule_for(m).kronecker.input_factor(m, [c.input for c in calls[m]], "bias" in names)
                _add(out, (weight, "A"), a)
                _add(out, (weight, "factored"), z.new_tensor(float(len(x))))
        for grads in _output_gradients(z, v, fast, calls):
            with torch.no_grad():
                for m, names in blocks.items():
                    _add(out, (names["weight"], "G"), rule_for(m).kronecker.output_factor(m, grads[m]))
                others = {m: names for m, names in fast.items() if m not in blocks}
                _add_elementwise(out, others, calls, grads, self.rho)
        del z, calls  # free the graph and the captured activations before the generic pass
        generic = [name for name in self.params if name not in covered]
        if generic:
            for name, t in _generic_sums(self.model, x, v, generic, self.rho, self.transform, self.budget).items():
                _add(out, name, t)


def _add(out: dict, key, t: Tensor) -> None:
    """out[key] += t, in place; t becomes out[key] when there is none yet (the engine's sums are new
    tensors nobody else holds: adding into them saves a copy of every parameter's size)."""
    if key in out:
        out[key].add_(t)
    else:
        out[key] = t

class _Call:
    """One call of a hooked module: its input (detached) and output (the graph node to differentiate)."""

    __slots__ = ("input", "output", "versions")

    def __init__(self, inp: Tensor, out: Tensor) -> None:
        self.input, self.output = inp, out
        self.versions = (inp._version, out._version)

    def modified(self) -> bool:  # an in-place op after the layer (e.g. ReLU(inplace=True)) changed it
        return (self.input._version, self.output._version) != self.versions


def _fast_candidates(model: nn.Module, params: dict[str, Tensor]) -> dict[nn.Module, dict[str, str]]:
    """Supported modules -> {attr: param name}, for trainable parameters owned by that module alone, or
    shared only with modules whose rules give per-sample gradients (a tied embedding and output head)."""
    owners: dict[int, list[tuple[nn.Module, str]]] = {}
    for m in model.modules():
        for attr, p in m.named_parameters(recurse=False, remove_duplicate=False):
            owners.setdefault(id(p), []).append((m, attr))

    def per_sample(m: nn.Module, attr: str) -> bool:
        rule = rule_for(m)
        return rule is not None and rule.per_sample is not None and attr in rule.params

    name_of = {id(p): name for name, p in params.items()}
    out: dict[nn.Module, dict[str, str]] = {}
    for m in model.modules():
        rule = rule_for(m)
        if rule is None:
            continue
        mine = {attr: name_of[id(p)] for attr in rule.params if (p := getattr(m, attr, None)) is not None
                and id(p) in name_of and (len(owners[id(p)]) == 1 or all(per_sample(*o) for o in owners[id(p)]))}
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
        if not isinstance(z, Tensor) or z.dim() < 2:
            raise ValueError(f"the model (after output_transform) must return (batch, outputs) or "
                             f"(batch, positions..., outputs) logits, got {getattr(z, 'shape', type(z))}")
        if not _finite(z):
            raise ValueError("the model's outputs contain NaN or inf: the result would not be finite. "
                             "Check the model's parameters and the inputs.")
        modified = {m for m, cs in calls.items() if any(c.modified() for c in cs)}
        if not modified - clone:
            return z, calls
        clone |= modified
    raise RuntimeError("layer inputs/outputs keep being modified in place")  # pragma: no cover


def _validate_fast(candidates, calls, z, n):
    """Keep the modules whose parameters reach the output only through hooked calls on a batch of n
    (a shared parameter: the calls of all the modules holding it, every one of them kept)."""
    uses = _graph_uses(z)
    holders: dict[int, list[nn.Module]] = {}
    for m, names in candidates.items():
        for attr in names:
            holders.setdefault(id(getattr(m, attr)), []).append(m)
    fast = {}
    for m, names in candidates.items():
        cs = calls[m]
        if not cs or any(c.input.shape[0] != n or c.output.shape[0] != n for c in cs):
            continue  # never called (weights used functionally?) or batch not on dim 0
        if all(uses.get(id(p), 0) == sum(len(calls[h]) for h in holders[id(p)])
               for p in (getattr(m, attr) for attr in names)):
            fast[m] = names
    while dropped := [m for m in fast if any(h not in fast for attr in fast[m] for h in holders[id(getattr(m, attr))])]:
        for m in dropped:  # a holder of its shared parameter is not kept: that parameter's sum would miss a part
            del fast[m]
    return fast


def _shared(modules: dict[nn.Module, dict[str, str]]) -> dict[str, list[tuple[nn.Module, str]]]:
    """Parameter name -> its holders (module, attr), for the parameters more than one of ``modules`` holds."""
    holders: dict[str, list[tuple[nn.Module, str]]] = {}
    for m, names in modules.items():
        for attr, name in names.items():
            holders.setdefault(name, []).append((m, attr))
    return {name: hs for name, hs in holders.items() if len(hs) > 1}


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
            _add_elementwise(sums, fast, calls, grads, rho)
    return sums


def _add_elementwise(out: dict, modules, calls, grads, rho) -> None:
    """out[name] += Σ_{n,k} ρ(per-sample gradient) for the parameters of ``modules``; a shared one's
    holders' per-sample gradients are added first, a few samples at a time (one sample at least:
    one per-sample gradient of that parameter is then the floor of the memory it takes)."""
    shared = _shared(modules)
    for m, names in modules.items():
        own = {attr: name for attr, name in names.items() if name not in shared}
        if own:
            part = rule_for(m).elementwise(m, [c.input for c in calls[m]], grads[m], rho)
            for attr, name in own.items():
                _add(out, name, part[attr])
    for name, holders in shared.items():
        k, n = grads[holders[0][0]][0].shape[:2]
        step = max(1, CHUNK_ELEMENTS // (k * getattr(*holders[0]).numel()))
        for i in range(0, n, step):
            total = None
            for m, attr in holders:
                part = rule_for(m).per_sample(m, [c.input for c in calls[m]], grads[m], attr, slice(i, i + step))
                total = part if total is None else total.add_(part)
                del part  # two per-sample gradients of this size at most, here and in ρ below
            _add(out, name, sum_leading(rho(total, out=total)))
            del total


def _output_gradients(z, v, fast, calls) -> Iterator[dict[nn.Module, list[Tensor]]]:
    """Chunks of cotangents, each: module -> per-sample gradients (K', N, ...) of z w.r.t. its calls' outputs."""
    k_total, n = v.shape[0], v.shape[1]
    outputs = [c.output for m in fast for c in calls[m]]
    width = sum(o[0].numel() for o in outputs)
    kc = max(1, min(k_total, CHUNK_ELEMENTS // max(1, n * width)))  # cotangents per backward pass
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


def _generic_sums(model, x, v, names, rho, transform, budget: int = MEMORY_BUDGET) -> dict[str, Tensor]:
    """torch.func: per sample, a vjp of the output with each of its K cotangents.

    Per-sample gradients are materialised here, K × (the parameters' size) per sample: samples go
    through in steps that keep them within ``budget`` bytes (one sample at least)."""
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
    step = max(1, budget // (v.element_size() * k * sum(p.numel() for p in primals.values())))
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
    max_samples: int | None = None, progress: bool = False, desc: str = "", gather: int | None = None,
    like: dict | None = None,
) -> dict:
    """Σ over batches of ``batch_sums(x, y, first) -> (sums, weight)``, divided by Σ weight.

    ``batch_sums`` returns new tensors: the first batch's become the running sums, added into in place.

    ``gather``: consecutive batches smaller than this many samples are concatenated first (when
    their shapes allow), so that per-batch overhead is paid per ``gather`` samples. ``like``: the
    entries ``batch_sums`` may return, key -> a tensor of their shape and dtype (default: the
    trainable parameters); every process all-reduces all of them, whatever its batches held.

    Runs in eval mode (every module's mode restored afterwards, also on errors) with gradients enabled;
    inputs are moved to the parameters' device. Under ``torch.distributed`` the sums and weights are
    all-reduced before dividing, so N processes give the average over the union of their shards
    (``max_samples`` then applies per process).
    """
    if max_samples is not None and max_samples < 1:
        raise ValueError(f"max_samples must be >= 1 or None, got {max_samples}")
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if not params:
        return {}
    device = next(iter(params.values())).device
    like = params if like is None else like
    # accumulate in at least float32 (bf16 sums over thousands of samples lose the small terms)
    dtypes = {n: torch.promote_types(p.dtype, torch.float32) for n, p in like.items()}
    sums: dict = {}
    weight = 0.0
    bar = _progress_bar(data, max_samples, desc) if progress else None
    with _eval_mode(model):
        batches = _batches(data, max_samples)
        for i, (x, y) in enumerate(_gathered(batches, gather) if gather else batches):
            part, w = batch_sums(x.to(device), y.to(device), i == 0)
            for name, t in part.items():
                if name in sums:
                    sums[name] += t
                else:  # the first batch's sums become the running sums: no second copy of the model's size
                    sums[name] = t.to(dtypes[name]).contiguous()
            weight += w
            if bar is not None:
                bar.update(len(x))
    if bar is not None:
        bar.close()
    for n, p in like.items():
        if n not in sums:  # none of this process's batches had it; the all-reduce below still needs it
            sums[n] = torch.zeros(p.shape, dtype=dtypes[n], device=p.device)
    sums = {n: sums[n] for n in like}
    weight_t = torch.tensor(float(weight), dtype=torch.float64, device=device)
    if dist.is_available() and dist.is_initialized():  # sums and counts, THEN divide: the union's mean
        for t in (*sums.values(), weight_t):
            dist.all_reduce(t)
    if weight_t.item() == 0:
        raise ValueError("no samples: the data is empty")
    out = {name: s.div_(weight_t).to(like[name].dtype) for name, s in sums.items()}
    bad = [name for name, t in out.items() if not _finite(t)]
    if bad:
        raise ValueError(f"the result is not finite (NaN or inf) for {bad[:5]}: check the model and inputs")
    return out


def _finite(t: Tensor) -> bool:
    """No NaN or inf in t: NaN propagates to the min and max (one pass, no tensor of flags: ~10x faster)."""
    return t.numel() == 0 or bool(torch.isfinite(torch.stack(torch.aminmax(t))).all())


def _batches(data, max_samples: int | None) -> Iterator[tuple[Tensor, Tensor]]:
    if isinstance(data, tuple) and len(data) == 2 and all(isinstance(t, Tensor) for t in data):
        xs, ys = data  # the whole dataset as two tensors: read in fixed-size batches
        if xs.shape[0] != ys.shape[0]:
            raise ValueError(f"(X, Y) must have equal first dimensions, got {xs.shape[0]} and {ys.shape[0]}")
        data = ((xs[i:i + CHUNK], ys[i:i + CHUNK]) for i in range(0, xs.shape[0], CHUNK))
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


def _gathered(batches: Iterator[tuple[Tensor, Tensor]], size: int) -> Iterator[tuple[Tensor, Tensor]]:
    """Concatenate consecutive batches up to ``size`` samples; a batch that does not stack with the
    ones waiting (other trailing shape, dtype or device, or targets that are not tensors) starts anew."""
    xs: list[Tensor] = []
    ys: list[Tensor] = []

    def flush():
        out = (xs[0], ys[0]) if len(xs) == 1 else (torch.cat(xs), torch.cat(ys))
        xs.clear()
        ys.clear()
        return out

    for x, y in batches:
        if not isinstance(y, Tensor) or len(x) >= size:
            if xs:
                yield flush()
            yield x, y
            continue
        if xs and not (_stacks(xs[0], x) and _stacks(ys[0], y)):
            yield flush()
        xs.append(x)
        ys.append(y)
        if sum(len(t) for t in xs) >= size:
            yield flush()
    if xs:
        yield flush()


def _stacks(a: Tensor, b: Tensor) -> bool:
    return a.shape[1:] == b.shape[1:] and a.dtype == b.dtype and a.device == b.device


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
