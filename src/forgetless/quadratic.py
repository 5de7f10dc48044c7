"""Pure functions for diagonal quadratic penalties Σ_i ω_i (θ_i − θ*_i)² (Kronecker-factored ones:
:mod:`forgetless.kronecker`).

Separate per-task EWC terms Σ_t F_t (θ − θ_t)² are one quadratic in θ:
Ω (θ − μ)² + c with Ω = Σ_t F_t, μ = Σ_t F_t θ_t / Ω and c = Σ_t F_t (θ_t − μ)².
``merge_quadratic`` folds one more term in without ever forming the cancelling
expansion θᵀΩθ − 2θᵀΣFθ_t + ΣFθ_t², so cost and memory stay those of one task.
"""
from __future__ import annotations

import torch
from torch import Tensor


def quadratic_penalty(
    params: dict[str, Tensor], anchor: dict[str, Tensor], weight: dict[str, Tensor] | None = None
) -> Tensor:
    """Σ over tensors of Σ weight · (param − anchor)², differentiable in ``params``.

    ``weight=None`` weighs every element 1 (the L2 anchor). The tensors named in ``anchor`` are
    the ones penalized; each must be in ``params`` with the anchor's shape (and ``weight``'s), else a
    ``ValueError`` names it: nothing is broadcast. When gradients are wanted, the backward pass
    reuses the weighted difference w·(θ−θ*) kept from the forward pass (one saved tensor per
    parameter instead of autograd's two, and a few kernels instead of a dozen); higher derivatives
    (``create_graph``), ``torch.func`` transforms and mixed dtypes or devices get the same values
    through plain autograd.

    Example:
        >>> p = {"w": torch.tensor([1.0, 2.0])}
        >>> quadratic_penalty(p, {"w": torch.zeros(2)}, {"w": torch.tensor([1.0, 0.5])})
        tensor(3.)
        >>> quadratic_penalty(p, {"w": torch.zeros(3)})
        Traceback (most recent call last):
        ...
        ValueError: parameter 'w' has shape (2,) but the state for it has shape (3,): the model does not match the regularizer's state
    """
    thetas, anchors, weights, plain = _gather(params, anchor, weight)
    if not plain:
        return _reference(thetas, anchors, weights)
    if torch.is_grad_enabled() and any(t.requires_grad for t in thetas):
        return _WeightedSquaredDistance.apply(anchors, weights, *thetas)
    with torch.no_grad():
        return _forward(thetas, anchors, weights)[0]


@torch.no_grad()
def add_quadratic_gradient_(
    params: dict[str, Tensor], anchor: dict[str, Tensor], weight: dict[str, Tensor] | None, scale: float
) -> None:
    """Add ∂/∂θ of ``scale · Σ weight · (θ − anchor)²``, i.e. 2·scale·w·(θ−θ*), to each trainable
    parameter's ``.grad`` in place (set where it is None); frozen parameters are left alone.

    One pass per tensor, no autograd graph: the opt-in fused form of :func:`quadratic_penalty` for
    training loops that want the gradient and not the value.

    Example:
        >>> w = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
        >>> add_quadratic_gradient_({"w": w}, {"w": torch.zeros(2)}, {"w": torch.tensor([1.0, 0.5])}, 3.0)
        >>> w.grad   # 2·3·w·θ
        tensor([6., 6.])
    """
    live = []  # every entry is checked before any .grad changes
    for name, a in anchor.items():
        theta, w = params.get(name), a if weight is None else weight.get(name)
        _check_entry(name, theta, a, w)
        if theta.requires_grad:
            live.append((theta, a, w))
    # Tensor by tensor, θ − θ* used while it is still in cache: on small nets this pass is bound by memory
    # traffic, and one _foreach_sub over every tensor, then one _foreach_addcmul_, cost more; so did
    # _gather's dtype checks and dict(named_parameters()) in the caller, per step (bench/bench_penalty.py:
    # "ewc fused" against its reference row "ewc fused, before")
    for theta, a, w in live:
        if theta.grad is None:
            theta.grad = torch.zeros_like(theta)
        if weight is None:
            theta.grad.add_(theta - a, alpha=2 * scale)
        else:  # one pass: grad += 2·scale·(θ − θ*)·w
            theta.grad.addcmul_(theta - a, w, value=2 * scale)


def mismatch(name: str, param: Tensor | None, stored: Tensor) -> str | None:
    """Why ``param`` (None: the model has none of that name) cannot pair with the state's ``stored``."""
    if param is None:
        return (f"the model has no parameter {name!r}, which the regularizer's state protects (parameters "
                "are matched by name: is the state from another model?)")
    if param.shape != stored.shape:
        return (f"parameter {name!r} has shape {tuple(param.shape)} but the state for it has shape "
                f"{tuple(stored.shape)}: the model does not match the regularizer's state")
    return None


def _gather(params, anchor, weight) -> tuple[list[Tensor], list[Tensor], list[Tensor] | None, bool]:
    """θ, θ*, w in ``anchor``'s order, shapes checked, and whether the fast path applies: same dtypes
    and devices throughout, and no torch.func transform running. One pass: the check costs nothing extra."""
    thetas, anchors, weights = [], [], None if weight is None else []
    plain = bool(anchor) and not _functorch_active()
    for name, a in anchor.items():
        theta, w = params.get(name), a if weight is None else weight.get(name)
        _check_entry(name, theta, a, w)
        if plain and not (a.dtype == theta.dtype == w.dtype and a.device == theta.device == w.device):
            plain = False
        thetas.append(theta)
        anchors.append(a)
        if weights is not None:
            weights.append(w)
    return thetas, anchors, weights, plain


def _check_entry(name: str, theta: Tensor | None, a: Tensor, w: Tensor | None) -> None:
    """A ``ValueError`` naming what is wrong when θ or w is missing or has another shape than θ*."""
    if theta is None or w is None or theta.shape != a.shape or w.shape != a.shape:
        missing_weight = f"the weights lack {name!r}, which the anchor has"
        raise ValueError(mismatch(name, theta, a) or (missing_weight if w is None else mismatch(name, theta, w)))


def _functorch_active() -> bool:
    try:
        return torch._C._functorch.peek_interpreter_stack() is not None
    except AttributeError:  # a torch without the hook: always take the plain-autograd path
        return True


def _forward(thetas, anchors, weights) -> tuple[Tensor, list[Tensor]]:
    """(Σ w·d·d, [w·d]) with d = θ − θ*, computed without autograd."""
    total, weighted = None, []
    for i, (theta, a) in enumerate(zip(thetas, anchors)):  # tensor by tensor: d is still in cache for the dot
        d = theta - a
        wd = d if weights is None else d * weights[i]
        term = torch.dot(wd.reshape(-1), d.reshape(-1))
        total = term if total is None else total.add_(term)
        weighted.append(wd)
    return total, weighted


class _WeightedSquaredDistance(torch.autograd.Function):
    """Σ_i Σ w_i (θ_i − θ*_i)², whose gradient 2·w·(θ−θ*) is the kept w·(θ−θ*) times 2·grad.

    The first backward scales the kept buffers in place and hands them over as the gradients (they
    are private: no allocation, one pass less over the parameters). A graph walked again
    (``retain_graph``) or differentiated twice (``create_graph``) recomputes from θ, θ* and w, which
    autograd saved with their versions: modifying them in place in between is reported as usual.
    """

    @staticmethod
    def forward(ctx, anchors, weights, *thetas):
        total, weighted = _forward(thetas, anchors, weights)
        ctx.save_for_backward(*thetas, *anchors, *(weights or ()))
        ctx.weighted = weighted
        return total

    @staticmethod
    def backward(ctx, grad):
        scale = 2 * grad
        if ctx.weighted is not None and not torch.is_grad_enabled():
            weighted, ctx.weighted = ctx.weighted, None
            torch._foreach_mul_(weighted, scale)
            return (None, None, *weighted)
        ctx.weighted = None
        saved = ctx.saved_tensors
        n = len(ctx.needs_input_grad) - 2
        thetas, anchors, weights = saved[:n], saved[n:2 * n], saved[2 * n:] or None
        diffs = [t - a for t, a in zip(thetas, anchors)]  # differentiable under create_graph=True
        if weights is not None:
            diffs = [w * d for w, d in zip(weights, diffs)]
        return (None, None, *[d * scale for d in diffs])


def _reference(thetas, anchors, weights) -> Tensor:
    """Plain autograd: any dtype or device mix, torch.func transforms, higher derivatives."""
    total = thetas[0].new_zeros(()) if thetas else torch.zeros(())
    for i, (theta, a) in enumerate(zip(thetas, anchors)):
        diff = theta - a
        squares = diff * diff if weights is None else weights[i] * diff * diff
        total = total + squares.sum()
    return total


def merge_quadratic(
    weight: Tensor, anchor: Tensor, new_weight: Tensor, new_anchor: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Fold ``new_weight · (θ − new_anchor)²`` into ``weight · (θ − anchor)²``.

    Returns ``(Ω, μ, c)`` with ``weight·(θ−anchor)² + new_weight·(θ−new_anchor)² ==
    Ω·(θ−μ)² + c`` summed over elements, for every θ. Where Ω is 0 the anchor is kept. The four
    tensors must have one shape (a ``ValueError`` says which differ): nothing is broadcast.

    Example:
        >>> w, m, c = merge_quadratic(torch.tensor([1.0]), torch.tensor([0.0]),
        ...                           torch.tensor([1.0]), torch.tensor([2.0]))
        >>> w, m, c
        (tensor([2.]), tensor([1.]), tensor(2.))
    """
    shapes = [tuple(t.shape) for t in (weight, anchor, new_weight, new_anchor)]
    if len(set(shapes)) > 1:
        raise ValueError(f"merge_quadratic: weight, anchor, new_weight, new_anchor must have one shape, got {shapes}")
    total = weight + new_weight
    safe = torch.where(total > 0, total, torch.ones_like(total))
    mean = torch.where(total > 0, (weight * anchor + new_weight * new_anchor) / safe, new_anchor)
    constant = (weight * (anchor - mean) ** 2 + new_weight * (new_anchor - mean) ** 2).sum()
    return total, mean, constant
