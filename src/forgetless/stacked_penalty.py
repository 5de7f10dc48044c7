"""The penalties of :func:`forgetless.stacked.train_stacked`: copy k's penalty on the stacked parameters
(each (K, ...)), its value per copy (for the divergence check) and its gradient, added after backward.

Each is the one-model penalty computed for K copies at once, with the gradient in closed form (as
:meth:`~forgetless.Regularizer.add_penalty_gradient_` and the Kronecker penalty's own backward do):

- :class:`DiagonalPenalty`: scale_k·Σ w_k·(θ_k − θ*_k)², from :meth:`Regularizer.quadratic` (EWC, online EWC
  and MAS with a diagonal Fisher, L2) and from the diagonal part of :meth:`Regularizer.kronecker`;
- :class:`KroneckerPenalty`: scale_k·Σ_terms Σ_layers tr(G ΔW̄_k A ΔW̄_kᵀ), from :meth:`Regularizer.kronecker`
  (EWC and online EWC with ``structure="kfac"``): per layer M_k = G ΔW̄_k A, computed as
  :func:`forgetless.kronecker.kronecker_penalty` does, value ⟨ΔW̄_k, M_k⟩, gradient 2·scale_k·M_k. Where every
  copy has the same factors (a λ search: one consolidation for every λ) A and G are kept once, so the
  product with A is ONE matrix product over the K copies' rows; else they are stacked (K, n, n).
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
from torch import Tensor

from .kronecker import bias_name, weight_and_bias_delta
from .regularizers.base import Regularizer


def _consolidated(reg: Regularizer | None) -> bool:
    return reg is not None and reg.tasks_seen > 0


def penalty_problem(regularizers: Sequence[Regularizer | None]) -> str | None:
    """Why these copies' penalties cannot share one stack (one line), or None. Each one on its own is
    a diagonal quadratic or Kronecker-factored (checked by :func:`forgetless.stacked.stackable`)."""
    layouts = {_layout(reg.kronecker()[1]) if _consolidated(reg) and reg.kronecker() is not None else None
               for reg in regularizers}
    if len(layouts) > 1:
        return "Kronecker-factored penalties stack only with penalties factored over the same layers"
    return None


def _layout(terms) -> tuple:
    return tuple(tuple((w, tuple(a.shape), tuple(g.shape)) for w, (a, g) in t.factors.items()) for t in terms)


def stacked_penalties(names: list[str], params: list[Tensor],
                      regularizers: Sequence[Regularizer | None]) -> list[DiagonalPenalty | KroneckerPenalty]:
    """The penalties of copies ``regularizers`` (one per copy) on the stacked ``params`` named ``names``
    (the single model's names); empty when no copy has a penalty yet."""
    quads, krons = [], []  # per copy: (scale, anchor, weight) or None; (scale, terms) or None
    for reg in regularizers:
        kron = reg.kronecker() if _consolidated(reg) else None
        if kron is None:
            quads.append(reg.quadratic() if _consolidated(reg) else None)
            krons.append(None)
        else:
            scale, terms, anchor, weight = kron
            quads.append((scale, anchor, weight))  # the parameters no factors cover
            krons.append((scale, terms))
    out: list[DiagonalPenalty | KroneckerPenalty] = []
    if any(q is not None and q[1] for q in quads):
        out.append(DiagonalPenalty(names, params, quads))
    if any(k is not None for k in krons):
        out.append(KroneckerPenalty(names, params, krons))
    return out


class DiagonalPenalty:
    """scale_k·Σ w_k·(θ_k − θ*_k)² per copy k; a copy without one, or a parameter its state does not
    protect, costs nothing (weight 0)."""

    def __init__(self, names: list[str], params: list[Tensor], quads) -> None:
        anchors, weights = {n: [] for n in names}, {n: [] for n in names}
        for k, quad in enumerate(quads):
            for n, p in zip(names, params):
                theta = p[k].detach()
                known = quad is not None and n in quad[1]
                anchors[n].append(quad[1][n] if known else theta.clone())
                weights[n].append(torch.zeros_like(theta) if not known else
                                  torch.ones_like(theta) if quad[2] is None else quad[2][n])
        self.scale = torch.tensor([0.0 if q is None else float(q[0]) for q in quads])
        self.anchors = [torch.stack(anchors[n]) for n in names]
        self.weights = [torch.stack(weights[n]) for n in names]
        self.doubled = [(2 * self.scale).view((-1,) + (1,) * (p.dim() - 1)) for p in params]
        self.weighted: list[Tensor] = []

    @torch.no_grad()
    def value(self, params: list[Tensor]) -> Tensor:
        """Each copy's penalty (K,); keeps w·(θ−θ*) for :meth:`add_gradient_`."""
        k = len(self.scale)
        diffs = torch._foreach_sub([p.detach() for p in params], self.anchors)
        self.weighted = torch._foreach_mul(diffs, self.weights)
        total = torch.zeros(k)
        for d, wd in zip(diffs, self.weighted):  # a dot per copy: faster here than bmm, einsum or mul+sum
            total += torch.stack([torch.dot(a, b) for a, b in zip(d.view(k, -1), wd.view(k, -1))])
        return self.scale * total

    @torch.no_grad()
    def add_gradient_(self, params: list[Tensor]) -> None:
        torch._foreach_addcmul_([p.grad for p in params], self.weighted, self.doubled)


class _Layer(NamedTuple):
    """One factored layer of one term, for all copies: indices into the stacked parameters, the copies'
    anchors (K, out, cols) and (K, out), and A, G: (n, n) and (out, out) when shared, else (K, ...)."""

    weight: int
    bias: int | None
    anchor_weight: Tensor
    anchor_bias: Tensor | None
    a: Tensor
    g: Tensor


def _shared_or_stacked(tensors: list[Tensor]) -> Tensor:
    return tensors[0] if all(torch.equal(t, tensors[0]) for t in tensors[1:]) else torch.stack(tensors)


class KroneckerPenalty:
    """scale_k·Σ_terms Σ_layers tr(G ΔW̄_k A ΔW̄_kᵀ) per copy k (every copy has terms over the same layers:
    :func:`penalty_problem`)."""

    def __init__(self, names: list[str], params: list[Tensor], krons) -> None:
        index = {n: i for i, n in enumerate(names)}
        self.scale = torch.tensor([float(s) for s, _ in krons])
        self.layers: list[_Layer] = []
        for t, term in enumerate(krons[0][1]):
            for weight, (a, _) in term.factors.items():
                w = params[index[weight]]
                out, cols = w.shape[1], w[0, 0].numel()
                bias = bias_name(weight) if a.shape[0] == cols + 1 else None
                terms = [kron[1][t] for kron in krons]
                like = dict(dtype=w.dtype, device=w.device)
                self.layers.append(_Layer(
                    index[weight], index[bias] if bias else None,
                    torch.stack([x.anchor[weight].reshape(out, cols) for x in terms]).to(**like),
                    torch.stack([x.anchor[bias] for x in terms]).to(**like) if bias else None,
                    _shared_or_stacked([x.factors[weight][0] for x in terms]).to(**like),
                    _shared_or_stacked([x.factors[weight][1] for x in terms]).to(**like)))
        self.doubled = [(2 * self.scale).view((-1,) + (1,) * (p.dim() - 1)) for p in params]
        self.kept: list[tuple[_Layer, Tensor]] = []

    @torch.no_grad()
    def value(self, params: list[Tensor]) -> Tensor:
        """Each copy's penalty (K,); keeps M = G ΔW̄ A per layer and term for :meth:`add_gradient_`.

        As :func:`forgetless.kronecker.kronecker_penalty` computes it, with a leading copy axis: ΔW̄ =
        [ΔW, Δb] in one buffer, one product with A and one with G."""
        total = torch.zeros(len(self.scale))
        self.kept = []
        for layer in self.layers:
            w = params[layer.weight].detach().reshape(layer.anchor_weight.shape)
            d = w - layer.anchor_weight if layer.bias is None else \
                weight_and_bias_delta(w, layer.anchor_weight, params[layer.bias].detach(), layer.anchor_bias)
            m = layer.g @ (d @ layer.a)
            total += (d * m).sum((1, 2))
            self.kept.append((layer, m))
        return self.scale * total

    @torch.no_grad()
    def add_gradient_(self, params: list[Tensor]) -> None:
        for layer, m in self.kept:
            w = params[layer.weight].grad
            if layer.bias is None:
                w.addcmul_(m.view(w.shape), self.doubled[layer.weight])
            else:
                w.view(m[..., :-1].shape).addcmul_(m[..., :-1], self.doubled[layer.weight])
                params[layer.bias].grad.addcmul_(m[..., -1], self.doubled[layer.bias])
