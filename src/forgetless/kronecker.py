"""Pure functions for Kronecker-factored quadratic penalties (K-FAC blocks, one per layer).

A Kronecker-factored block (A ⊗ G per layer, :func:`kronecker_penalty`) does not fold the way
diagonal terms do (:func:`forgetless.quadratic.merge_quadratic`): a sum of Kronecker products is
not one, and neither is its weighted mean of anchors, so separate terms stay separate (their cost
grows with the number of terms). :func:`merge_kronecker` replaces a sum of two by one Kronecker
product that bounds it from above, for a constant-size running sum; :func:`damp_kronecker` adds
factored Tikhonov damping to a block.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import torch
from torch import Tensor

from .quadratic import _functorch_active, mismatch

Factors = dict[str, tuple[Tensor, Tensor]]  # weight name -> (A, G)


class KroneckerTerm(NamedTuple):
    """One quadratic Σ_l vec(ΔW̄_l)ᵀ (G_l ⊗ A_l) vec(ΔW̄_l) = Σ_l tr(G_l ΔW̄_l A_l ΔW̄_lᵀ).

    ``factors`` maps a layer's weight name to ``(A, G)``, both symmetric: A over the layer's inputs,
    G (out × out) over its outputs. ΔW̄ = W − W* flattened to (out, in) (a Conv2d's weight to
    (out, in·kh·kw), the order of ``F.unfold``), with the bias b − b* appended as a last column when A
    has one row more than that: the bias is the parameter named like the weight with ``bias`` for its
    last part (``"fc.weight"`` → ``"fc.bias"``). ``anchor`` holds W* and b*. With vec() reading rows
    (``.reshape(-1)``), the matrix of the quadratic is ``torch.kron(G, A)``.
    """

    anchor: dict[str, Tensor]
    factors: Factors


def bias_name(weight: str) -> str:
    """The name of the bias beside a weight: ``"0.weight"`` → ``"0.bias"``, ``"weight"`` → ``"bias"``.

    Example:
        >>> bias_name("encoder.fc.weight")
        'encoder.fc.bias'
    """
    head, dot, last = weight.rpartition(".")
    if last != "weight":
        raise ValueError(f"a factored layer is named by its weight ('….weight'), got {weight!r}")
    return f"{head}{dot}bias"


def kronecker_penalty(params: dict[str, Tensor], terms: Sequence[KroneckerTerm]) -> Tensor:
    """Σ over ``terms`` of Σ over their layers tr(G ΔW̄ A ΔW̄ᵀ), differentiable in ``params``.

    The gradient w.r.t. W̄ is 2·G ΔW̄ A in closed form: the forward pass keeps M = Σ_terms G ΔW̄ A per
    layer (the value is ⟨ΔW̄, M⟩) and the backward pass hands 2·grad·M back, split into weight and
    bias, with no autograd graph through the products. Cost per layer and term: two matrix products,
    out·n·(out + n) multiply-adds for A of size n; separate terms cost one such product each. Higher
    derivatives (``create_graph``) recompute M differentiably; ``torch.func`` transforms get plain autograd.

    Example (a 2x1 layer with a bias; A over (input, 1), G over the two outputs):
        >>> w = torch.tensor([[1.0], [0.0]], requires_grad=True)
        >>> b = torch.zeros(2, requires_grad=True)
        >>> A, G = torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.eye(2)
        >>> term = KroneckerTerm({"weight": torch.zeros(2, 1), "bias": torch.zeros(2)}, {"weight": (A, G)})
        >>> value = kronecker_penalty({"weight": w, "bias": b}, [term])
        >>> value
        tensor(2., grad_fn=<_KroneckerQuadraticBackward>)
        >>> value.backward(); w.grad.T, b.grad     # 2·G ΔW̄ A
        (tensor([[4., 0.]]), tensor([0., 0.]))
    """
    plan, thetas = _plan(params, terms)
    if not plan:
        return next(iter(params.values())).new_zeros(()) if params else torch.zeros(())
    if _functorch_active():
        return _kronecker_forward(thetas, plan)[0]
    if torch.is_grad_enabled() and any(t.requires_grad for t in thetas):
        return _KroneckerQuadratic.apply(plan, *thetas)
    with torch.no_grad():
        return _kronecker_forward(thetas, plan)[0]


class _Layer(NamedTuple):
    """One layer of one term: indices into the list of parameters, and the term's constants."""

    weight: int
    bias: int | None
    anchor_weight: Tensor  # (out, n_in)
    anchor_bias: Tensor | None
    a: Tensor
    g: Tensor


def _plan(params: dict[str, Tensor], terms: Sequence[KroneckerTerm]) -> tuple[list[_Layer], list[Tensor]]:
    index: dict[str, int] = {}
    thetas: list[Tensor] = []

    def slot(name: str, stored: Tensor) -> int:
        problem = mismatch(name, params.get(name), stored)
        if problem:
            raise ValueError(problem)
        if name not in index:
            index[name] = len(thetas)
            thetas.append(params[name])
        return index[name]

    plan = []
    for anchor, factors in terms:
        for weight, (a, g) in factors.items():
            i = slot(weight, _anchor_of(anchor, weight))  # the model has it, with the anchor's shape
            w = thetas[i]
            out, cols = w.shape[0], w[0].numel()
            if g.shape != (out, out) or a.dim() != 2 or a.shape[0] != a.shape[1] or a.shape[0] not in (cols, cols + 1):
                raise ValueError(f"factors of {weight!r} {tuple(w.shape)}: G must be ({out}, {out}) and A "
                                 f"({cols}, {cols}) or ({cols + 1}, {cols + 1}) with a bias, got G "
                                 f"{tuple(g.shape)} and A {tuple(a.shape)}")
            b = bias_name(weight) if a.shape[0] == cols + 1 else None
            j = slot(b, _anchor_of(anchor, b)) if b else None
            like = dict(dtype=w.dtype, device=w.device)
            plan.append(_Layer(
                i, j, anchor[weight].reshape(out, cols).to(**like), anchor[b].to(**like) if b else None,
                a.to(**like), g.to(**like),
            ))
    return plan, thetas


def _anchor_of(anchor: dict[str, Tensor], name: str) -> Tensor:
    if name not in anchor:
        raise ValueError(f"a Kronecker term has factors for {name!r} but no anchor for it")
    return anchor[name]


def _kronecker_forward(thetas, plan) -> tuple[Tensor, dict[tuple[int, int | None], Tensor]]:
    """(Σ ⟨ΔW̄, M⟩, {(weight, bias): Σ_terms M}), M = G ΔW̄ A (out, cols(+1)); differentiable if the inputs are.

    ΔW̄ = [ΔW, Δb] is written into one buffer by the subtractions themselves, so that one product with A
    covers the bias: no concatenation, no rank-one update, each a pass over an (out, cols) array that
    costs as much as the subtraction on a busy machine (memory-bound; bench/bench_penalty.py). Under
    autograd (create_graph) or a torch.func transform, the same ΔW̄ by differentiable operations.
    """
    total, kept = None, {}
    in_place = not torch.is_grad_enabled() and not _functorch_active()
    for layer in plan:
        w = thetas[layer.weight].reshape(layer.anchor_weight.shape)
        if layer.bias is None:
            d = w - layer.anchor_weight
        elif in_place:
            d = weight_and_bias_delta(w, layer.anchor_weight, thetas[layer.bias], layer.anchor_bias)
        else:
            d = torch.cat([w - layer.anchor_weight, (thetas[layer.bias] - layer.anchor_bias).unsqueeze(1)], 1)
        m = layer.g @ (d @ layer.a)
        term = torch.dot(d.reshape(-1), m.reshape(-1))
        total = term if total is None else total + term
        key = (layer.weight, layer.bias)
        kept[key] = kept[key] + m if key in kept else m
    return total, kept


def weight_and_bias_delta(w: Tensor, anchor_w: Tensor, b: Tensor, anchor_b: Tensor) -> Tensor:
    """ΔW̄ = [W − W*, b − b*], shape (..., out, cols + 1), written by the two subtractions into one buffer
    (no autograd: the caller runs without a graph). Leading dims (e.g. stacked copies) are kept.

    Example:
        >>> weight_and_bias_delta(torch.ones(2, 3), torch.zeros(2, 3), torch.full((2,), 5.0), torch.ones(2))
        tensor([[1., 1., 1., 4.],
                [1., 1., 1., 4.]])
    """
    d = w.new_empty(*w.shape[:-1], w.shape[-1] + 1)
    torch.sub(w, anchor_w, out=d[..., :-1])
    torch.sub(b, anchor_b, out=d[..., -1])
    return d


class _KroneckerQuadratic(torch.autograd.Function):
    """Σ tr(G ΔW̄ A ΔW̄ᵀ) whose gradient 2·G ΔW̄ A is the M kept from the forward pass, times 2·grad."""

    @staticmethod
    def forward(ctx, plan, *thetas):
        total, kept = _kronecker_forward(thetas, plan)
        ctx.plan, ctx.kept = plan, kept
        ctx.save_for_backward(*thetas)
        return total

    @staticmethod
    def backward(ctx, grad):
        thetas = ctx.saved_tensors
        differentiable = torch.is_grad_enabled()
        if differentiable:  # create_graph: M again, differentiably, from the saved θ
            kept = _kronecker_forward(thetas, ctx.plan)[1]
        else:
            kept, ctx.kept = ctx.kept, None
            if kept is None:  # walked a second time (retain_graph): recompute
                kept = _kronecker_forward(thetas, ctx.plan)[1]
        grads: list[Tensor | None] = [None] * len(thetas)
        for (w, b), m in kept.items():
            m = m * (2 * grad) if differentiable else m.mul_(2 * grad)  # the kept M are private to this graph
            parts = ((w, m),) if b is None else ((w, m[:, :-1]), (b, m[:, -1]))  # views: M is the gradients
            for i, part in parts:
                part = part.view(thetas[i].shape)
                grads[i] = part if grads[i] is None else grads[i] + part
        return (None, *grads)


def merge_kronecker(first: tuple[Tensor, Tensor], second: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    """One Kronecker product (A, G) with A ⊗ G ⪰ A₁ ⊗ G₁ + A₂ ⊗ G₂, for ``first`` = (A₁, G₁), ``second`` = (A₂, G₂).

    (A₁ + A₂/π) ⊗ (G₁ + π·G₂) is the sum plus π·A₁⊗G₂ + A₂⊗G₁/π, positive semi-definite for PSD
    factors: the merged quadratic never falls below the sum. The trace of that excess,
    π·tr A₁·tr G₂ + tr A₂·tr G₁/π, is smallest at π = √(tr A₂·tr G₁ / (tr A₁·tr G₂)): the rule of
    Martens & Grosse 2015 (§6.3, for damping), used for running sums of tasks by Kao et al. 2021
    (NCL) and van de Ven et al.'s code (``additive_nearest_kf``). Even for proportional pairs the
    excess is not 0. A pair with a zero trace is nothing: the other pair is returned.

    Example:
        >>> A, G = merge_kronecker((torch.eye(2), torch.eye(3)), (torch.eye(2), torch.eye(3)))
        >>> A[0, 0].item(), G[0, 0].item()     # π = 1: (2·I) ⊗ (2·I) = 4·I ⪰ 2·I
        (2.0, 2.0)
    """
    (a1, g1), (a2, g2) = first, second
    ta1, tg1, ta2, tg2 = (float(torch.trace(m)) for m in (a1, g1, a2, g2))
    if min(ta2, tg2) <= 0:
        return a1, g1
    if min(ta1, tg1) <= 0:
        return a2, g2
    pi = math.sqrt(ta2 * tg1 / (ta1 * tg2))
    return a1 + a2 / pi, g1 + pi * g2


def damp_kronecker(a: Tensor, g: Tensor, damping: float) -> tuple[Tensor, Tensor]:
    """Factored Tikhonov damping of one block: (A + √d·ā·I) ⊗ (G + √d·ḡ·I), ā, ḡ the mean diagonals.

    This is Martens & Grosse's (2015, §6.3) factored form of G⊗A + γI with γ = d·ā·ḡ, d = ``damping``
    times the block's mean diagonal (its π = √(ā/ḡ) balances the two factors): the block becomes
    G⊗A + √d·(ā·G⊗I + ḡ·I⊗A) + γI, still one Kronecker product, at no extra cost. It lifts the
    directions where A⊗G is near 0 (inputs a task never varies, outputs it never moves), which the
    undamped block leaves free.

    Example:
        >>> a, g = damp_kronecker(torch.diag(torch.tensor([2.0, 0.0])), torch.eye(1), 0.25)
        >>> a.diagonal(), g    # ā = 1, ḡ = 1, √d = 0.5
        (tensor([2.5000, 0.5000]), tensor([[1.5000]]))
    """
    if damping == 0:
        return a, g
    root = math.sqrt(damping)
    eye_a = torch.eye(len(a), dtype=a.dtype, device=a.device)
    eye_g = torch.eye(len(g), dtype=g.dtype, device=g.device)
    return a + root * a.diagonal().mean() * eye_a, g + root * g.diagonal().mean() * eye_g
