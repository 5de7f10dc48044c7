"""What the per-sample engine knows about each layer type: one small rule per type, in one table.

A rule turns what the engine captured for a module — each call's input ``a`` (N, ...) and the
per-sample gradients ``g`` of the model's output w.r.t. that call's output, for K cotangents
(K, N, ...) — into reductions over samples of the per-sample gradients of the module's own
parameters, without materialising a gradient per sample where the layer's algebra allows it.
Where a module is called at several positions (sequences, convolutions, repeated calls) the
positions sum *inside* a sample's gradient, before the square or absolute value ρ.

A rule may also give the layer's Kronecker factors (K-FAC, Martens & Grosse 2015; KFC for
convolutions, Grosse & Martens 2016): the same captured inputs and output gradients, reduced to
Σ_n A_n over the inputs ā (with a trailing 1 for the bias) and Σ_n Σ_k G_n over the output
gradients g, so that the Fisher block of (weight, bias) is approximated by (Σ G / N) ⊗ (Σ A / N).
Positions (sequence steps, a convolution's patches, repeated calls) follow the "expand" convention
of Eschenhagen et al. 2023 (KFC's for convolutions): they count as extra samples of one sample's
layer, A_n = mean over its positions of ā āᵀ and G_n = Σ over its positions of g gᵀ. Eschenhagen
et al. derive it for the case where every position has its own output and loss (a sequence model
scored per position, the per-sequence Fisher of :mod:`forgetless.fisher`); when positions are pooled
before one output (a sentence classifier) their "reduce" convention (A and G of the position sums)
is the closer one, not offered here. With one position both are plain K-FAC.

To teach the engine a new layer type: write its reduction here and add it to :data:`LAYER_RULES`
(a type of an optional library to :data:`NAMED_LAYER_RULES`, by name, so that importing forgetless
never imports that library), with a test against a batch-size-1 loop in ``tests/test_per_sample.py``
(``tests/test_gpt2_fisher.py`` for Hugging Face's ``Conv1D``). A module whose type (or
base type) has no rule, or that overrides ``forward``, goes through the generic ``torch.func``
path, which is correct for any vmap-able model but materialises per-sample gradients.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# torch.square or torch.abs; on a temporary, rules call it in place, rho(t, out=t): a new tensor of a
# parameter's size per sample costs more in page faults than the arithmetic does
Rho = Callable[..., Tensor]
# (module, inputs of its calls, output gradients of its calls (K, N, ...), ρ) -> {attr: Σ_{n,k} ρ(∂/∂attr)}
Elementwise = Callable[[nn.Module, list[Tensor], list[Tensor], Rho], dict[str, Tensor]]

# (module, inputs of its calls, output gradients of its calls, attribute, samples) -> that parameter's
# per-sample gradients for those samples, (K, len(samples), *shape), a new tensor (the engine adds into it)
PerSample = Callable[[nn.Module, list[Tensor], list[Tensor], str, slice], Tensor]

# (module, inputs of its calls, with a bias column?) -> Σ_n mean over positions of ā āᵀ
InputFactor = Callable[[nn.Module, list[Tensor], bool], Tensor]
# (module, output gradients of its calls (K, N, ...)) -> Σ_{n,k} Σ over positions of g gᵀ
OutputFactor = Callable[[nn.Module, list[Tensor]], Tensor]

CHUNK_ELEMENTS = 1 << 24  # per-sample intermediates of a rule stay below this many elements
GRAM_BLOCK = 192          # columns per block row of upper_gram (784 columns: 4 blocks, 0.70x the time)

__all__ = ["LAYER_RULES", "NAMED_LAYER_RULES", "KroneckerRule", "LayerRule", "rule_for"]


@dataclass(frozen=True)
class KroneckerRule:
    """The two Kronecker factors of a layer whose per-sample weight gradient is Σ_positions g āᵀ.

    Attributes:
        input_factor: Σ over samples of A_n, A_n the mean over the sample's positions of ā āᵀ.
        output_factor: Σ over samples and cotangents of G_n, G_n the sum over positions of g gᵀ.

    Both are symmetric, so the engine reads their upper triangle only (the diagonal included) and
    mirrors it: a rule may leave zeros below, computing about half the products (:func:`upper_gram`).
    """

    input_factor: InputFactor
    output_factor: OutputFactor


@dataclass(frozen=True)
class LayerRule:
    """How the engine reduces per-sample gradients of one module type.

    Attributes:
        params: attribute names of the parameters the rule handles (``None`` ones are skipped).
        elementwise: Σ over samples and cotangents of ρ(per-sample gradient), per parameter.
        accepts: extra conditions on a module instance (e.g. Conv2d without groups).
        kronecker: the Kronecker factors of (``weight``, ``bias``), or None (no K-FAC block: the
            layer's parameters get the diagonal).
        per_sample: the per-sample gradients themselves, for a parameter the module shares with other
            modules (a token embedding tied to the output head): the engine adds its holders'
            per-sample gradients, a few samples at a time, before ρ. None: a shared parameter of this
            type takes the generic path.
    """

    params: tuple[str, ...]
    elementwise: Elementwise
    accepts: Callable[[nn.Module], bool] = lambda m: True
    kronecker: KroneckerRule | None = None
    per_sample: PerSample | None = None


def rule_for(module: nn.Module) -> LayerRule | None:
    """The rule of ``module``'s type (or nearest base type in :data:`LAYER_RULES` or
    :data:`NAMED_LAYER_RULES`), or None.

    A subclass that overrides ``forward`` computes something else: it gets no rule.

    Example:
        >>> rule_for(nn.Linear(2, 3)).params, rule_for(nn.ReLU())
        (('weight', 'bias'), None)
    """
    cls = type(module)
    for base in cls.__mro__:
        rule = LAYER_RULES.get(base) or NAMED_LAYER_RULES.get(f"{base.__module__}.{base.__qualname__}")
        if rule is not None:
            return rule if cls.forward is base.forward and rule.accepts(module) else None
    return None


def _linear(m: nn.Linear, inputs: list[Tensor], grads: list[Tensor], rho: Rho) -> dict[str, Tensor]:
    """Per-sample gradients g aᵀ (weight) and g (bias); for a 2-D input Σ_n ρ(g_n a_nᵀ) = ρ(g)ᵀ ρ(a)."""
    return _dense(inputs, grads, rho, m.in_features, m.out_features, stored_in_out=False)


def _conv1d(m: nn.Module, inputs: list[Tensor], grads: list[Tensor], rho: Rho) -> dict[str, Tensor]:
    """Hugging Face's ``Conv1D`` (GPT-2): y = x W + b, a Linear whose weight is stored as (in, out)."""
    d_in, d_out = m.weight.shape
    return _dense(inputs, grads, rho, d_in, d_out, stored_in_out=True)


def _dense(inputs: list[Tensor], grads: list[Tensor], rho: Rho, d_in: int, d_out: int, *,
           stored_in_out: bool) -> dict[str, Tensor]:
    """y = W a + b on inputs (N, ..., d_in): Σ_{n,k} ρ(Σ_positions g aᵀ), shaped (d_out, d_in) or, when
    the weight is ``stored_in_out``, (d_in, d_out) (computed in that layout: no transposed copy), and the bias's."""
    k, n = grads[0].shape[:2]
    if len(inputs) == 1 and inputs[0].dim() == 2:
        s = rho(grads[0]).sum(0)                       # (N, out): Σ_k ρ(g)
        return {"weight": rho(inputs[0]).T @ s if stored_in_out else s.T @ rho(inputs[0]), "bias": s.sum(0)}
    a = torch.cat([t.reshape(n, -1, d_in) for t in inputs], 1)
    g = torch.cat([t.reshape(k, n, -1, d_out) for t in grads], 2)
    product = "knto,nti->knio" if stored_in_out else "knto,nti->knoi"
    w = None
    step = max(1, CHUNK_ELEMENTS // (k * d_in * d_out))
    for i in range(0, n, step):
        part = torch.einsum(product, g[:, i:i + step], a[i:i + step])
        part = sum_leading(rho(part, out=part))
        w = part if w is None else w.add_(part)
    return {"weight": w, "bias": sum_leading(rho(g.sum(2)))}


def sum_leading(t: Tensor) -> Tensor:
    """Σ over the first two dimensions (cotangents, samples) of a new tensor; with one term, a view of
    it (summing a single term would copy a tensor as big as the parameter, once per sample)."""
    t = t.flatten(0, 1)
    return t[0] if t.shape[0] == 1 else t.sum(0)


def _linear_per_sample(m: nn.Linear, inputs: list[Tensor], grads: list[Tensor], attr: str, samples: slice) -> Tensor:
    return _dense_per_sample(inputs, grads, attr, samples, m.in_features, m.out_features, "knto,nti->knoi")


def _conv1d_per_sample(m: nn.Module, inputs: list[Tensor], grads: list[Tensor], attr: str, samples: slice) -> Tensor:
    d_in, d_out = m.weight.shape
    return _dense_per_sample(inputs, grads, attr, samples, d_in, d_out, "knto,nti->knio")


def _dense_per_sample(inputs, grads, attr, samples, d_in, d_out, product) -> Tensor:
    """Per-sample Σ_positions g (bias) or the ``product`` of g and a (weight), for ``samples`` only."""
    k = grads[0].shape[0]
    g = torch.cat([t[:, samples].reshape(k, t[:, samples].shape[1], -1, d_out) for t in grads], 2)
    if attr == "bias":
        return g.sum(2)
    a = torch.cat([t[samples].reshape(g.shape[1], -1, d_in) for t in inputs], 1)
    return torch.einsum(product, g, a)


def upper_gram(x: Tensor, border: bool = False) -> Tensor:
    """xᵀx for x (R, d) by blocks of columns, the blocks below the diagonal left at zero, in a (d, d)
    tensor, or (d+1, d+1) with a zero ``border`` row and column to fill.

    xᵀx is symmetric: block row i needs only x_iᵀ x[:, i:], the columns from its own block on. With
    k blocks that is (k+1)/2k of the full product's multiply-adds, in k products written in place
    (784 columns and 512 rows, 4 blocks: 0.70x the time of one full product, measured on one core).

    Example:
        >>> upper_gram(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
        tensor([[10., 14.],
                [14., 20.]])
    """
    d = x.shape[1]
    out = x.new_zeros(d + border, d + border)
    k = max(1, round(d / GRAM_BLOCK))
    edges = [d * i // k for i in range(k + 1)]
    for lo, hi in zip(edges, edges[1:]):
        torch.mm(x[:, lo:hi].T, x[:, lo:], out=out[lo:hi, lo:d])
    return out


def _second_moment(a: Tensor, positions: int, bias: bool) -> Tensor:
    """Σ_rows ā āᵀ / positions for the rows of ``a`` (R, d), ā = (a, 1) when ``bias``: (d(+1), d(+1)),
    upper triangle only (:func:`upper_gram`); the bias column is written in place, not concatenated."""
    out = upper_gram(a, border=bias)
    if bias:
        d = a.shape[1]
        out[:d, d] = a.sum(0)
        out[d, d] = a.shape[0]
    return out if positions == 1 else out.div_(positions)  # one position (a plain Linear): no pass over A


def _linear_input_factor(m: nn.Linear, inputs: list[Tensor], bias: bool) -> Tensor:
    n = inputs[0].shape[0]
    a = [t.reshape(n, -1, m.in_features) for t in inputs]
    a = a[0] if len(a) == 1 else torch.cat(a, 1)                          # (N, positions, in)
    return _second_moment(a.reshape(-1, m.in_features), a.shape[1], bias)


def _linear_output_factor(m: nn.Linear, grads: list[Tensor]) -> Tensor:
    g = [t.reshape(-1, m.out_features) for t in grads]
    g = g[0] if len(g) == 1 else torch.cat(g, 0)                         # (K·N·positions, out)
    return upper_gram(g)


def _plain_conv2d(m: nn.Module) -> bool:
    return m.groups == 1 and m.padding_mode == "zeros" and not isinstance(m.padding, str)


def _conv2d(m: nn.Conv2d, inputs: list[Tensor], grads: list[Tensor], rho: Rho) -> dict[str, Tensor]:
    """Unfold the input into patches, sum patches × output gradients over positions, then ρ."""
    k, n = grads[0].shape[:2]
    w = inputs[0].new_zeros(m.out_channels, m.weight[0].numel())
    cols_per_sample = sum(t[0].numel() * m.weight[0, 0].numel() for t in inputs)
    step = max(1, CHUNK_ELEMENTS // max(k * w.numel(), cols_per_sample))
    for i in range(0, n, step):
        cols = torch.cat([F.unfold(t[i:i + step], m.kernel_size, m.dilation, m.padding, m.stride)
                          for t in inputs], 2)                                 # (n, Cin·kh·kw, L)
        g = torch.cat([t[:, i:i + step].flatten(3) for t in grads], 3)        # (K, n, Cout, L)
        part = torch.einsum("kncl,nil->knci", g, cols)
        w += sum_leading(rho(part, out=part))
    bias = sum_leading(rho(torch.cat([t.flatten(3) for t in grads], 3).sum(3)))
    return {"weight": w.view_as(m.weight), "bias": bias}


def _conv2d_input_factor(m: nn.Conv2d, inputs: list[Tensor], bias: bool) -> Tensor:
    """KFC's A: patches (unfolded inputs, zero padding included) as the layer's inputs, chunk by chunk."""
    n, d = inputs[0].shape[0], m.weight[0].numel()
    positions = sum(_patches(m, t[:1]).shape[2] for t in inputs)
    out = inputs[0].new_zeros(d + bias, d + bias)
    step = max(1, CHUNK_ELEMENTS // max(1, d * positions))
    for i in range(0, n, step):
        cols = torch.cat([_patches(m, t[i:i + step]) for t in inputs], 2)     # (n, d, L)
        out += _second_moment(cols.transpose(1, 2).reshape(-1, d), positions, bias)
    return out


def _conv2d_output_factor(m: nn.Conv2d, grads: list[Tensor]) -> Tensor:
    g = torch.cat([t.movedim(2, -1).reshape(-1, m.out_channels) for t in grads], 0)  # (K·N·H·W, out)
    return upper_gram(g)


def _patches(m: nn.Conv2d, x: Tensor) -> Tensor:
    return F.unfold(x, m.kernel_size, m.dilation, m.padding, m.stride)


def _plain_embedding(m: nn.Module) -> bool:
    # max_norm renormalises the weight in place during forward; scale_grad_by_freq mixes positions
    return m.max_norm is None and not m.scale_grad_by_freq


def _embedding(m: nn.Embedding, inputs: list[Tensor], grads: list[Tensor], rho: Rho) -> dict[str, Tensor]:
    """Row r of sample n's gradient is the sum of g over the positions where sample n looks up r.

    Positions are grouped by (sample, row) with one sort, summed, then ρ and scattered into the
    table: memory of the order of the output gradients, never a (rows × dim) tensor per sample.
    """
    k, n = grads[0].shape[:2]
    rows = torch.cat([t.reshape(n, -1) for t in inputs], 1)                   # (N, L)
    g = torch.cat([t.reshape(k, n, -1, m.embedding_dim) for t in grads], 2)  # (K, N, L, d)
    key = (rows + m.num_embeddings * torch.arange(n, device=rows.device).unsqueeze(1)).reshape(-1)
    if m.padding_idx is not None:  # the padding row gets no gradient
        keep = rows.reshape(-1) != m.padding_idx
        key, g = key[keep], g.reshape(k, -1, m.embedding_dim)[:, keep]
    unique, group = torch.unique(key, return_inverse=True)
    per_sample = g.new_zeros(k, len(unique), m.embedding_dim).index_add_(1, group, g.reshape(k, -1, m.embedding_dim))
    weight = g.new_zeros(m.num_embeddings, m.embedding_dim)
    return {"weight": weight.index_add_(0, unique % m.num_embeddings, rho(per_sample).sum(0))}


def _embedding_per_sample(m: nn.Embedding, inputs: list[Tensor], grads: list[Tensor], attr: str,
                          samples: slice) -> Tensor:
    """Each sample's (rows × dim) gradient: its positions' g added into the rows it looked up."""
    k, d = grads[0].shape[0], m.embedding_dim
    rows = torch.cat([t[samples].reshape(t[samples].shape[0], -1) for t in inputs], 1)      # (c, L)
    c = rows.shape[0]
    g = torch.cat([t[:, samples].reshape(k, c, -1, d) for t in grads], 2)                    # (K, c, L, d)
    if m.padding_idx is not None:  # the padding row gets no gradient
        g = g * (rows != m.padding_idx).unsqueeze(-1).to(g.dtype)
    key = rows + m.num_embeddings * torch.arange(c, device=rows.device).unsqueeze(1)      # row of sample j's block
    out = g.new_zeros(k, c * m.num_embeddings, d).index_add_(1, key.reshape(-1), g.reshape(k, -1, d))
    return out.view(k, c, m.num_embeddings, d)


def _layer_norm(m: nn.LayerNorm, inputs: list[Tensor], grads: list[Tensor], rho: Rho) -> dict[str, Tensor]:
    """y = x̂ ⊙ w + b: per-sample gradients Σ_positions g ⊙ x̂ (weight) and Σ_positions g (bias)."""
    k, n = grads[0].shape[:2]
    width = m.weight.numel() if m.weight is not None else m.bias.numel()
    x_hat = torch.cat([F.layer_norm(t, m.normalized_shape, None, None, m.eps).reshape(n, -1, width)
                       for t in inputs], 1)                                   # (N, L, S)
    g = torch.cat([t.reshape(k, n, -1, width) for t in grads], 2)            # (K, N, L, S)
    shape = m.normalized_shape
    weight = torch.einsum("knls,nls->kns", g, x_hat)
    return {"weight": sum_leading(rho(weight, out=weight)).view(shape),
            "bias": sum_leading(rho(g.sum(2))).view(shape)}


LAYER_RULES: dict[type[nn.Module], LayerRule] = {
    nn.Linear: LayerRule(("weight", "bias"), _linear,
                         kronecker=KroneckerRule(_linear_input_factor, _linear_output_factor),
                         per_sample=_linear_per_sample),
    nn.Conv2d: LayerRule(("weight", "bias"), _conv2d, accepts=_plain_conv2d,
                         kronecker=KroneckerRule(_conv2d_input_factor, _conv2d_output_factor)),
    nn.Embedding: LayerRule(("weight",), _embedding, accepts=_plain_embedding, per_sample=_embedding_per_sample),
    nn.LayerNorm: LayerRule(("weight", "bias"), _layer_norm),
}
# Layer types of optional libraries, named "module.QualName": found without importing the library
# (``import forgetless`` must not pull in transformers). Hugging Face's Conv1D has no Kronecker
# factors here: its weight is stored (in, out), and kronecker.py's penalty reads a factored weight
# as (out, in) with its bias as the last column; under structure="kfac" it gets the diagonal.
NAMED_LAYER_RULES: dict[str, LayerRule] = {
    "transformers.pytorch_utils.Conv1D": LayerRule(("weight", "bias"), _conv1d, per_sample=_conv1d_per_sample),
}
