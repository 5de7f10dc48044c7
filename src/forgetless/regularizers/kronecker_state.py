"""The Kronecker-factored part of EWC's and online EWC's state, kept as flat dicts of tensors.

Entries (so that ``state_dict()`` stays a flat dict of tensors, loadable with ``weights_only=True``):

    kfac_in.<t>.<weight>       A of term t, for the layer named by its weight ("0.weight")
    kfac_out.<t>.<weight>      G of term t
    kfac_anchor.<t>.<param>    θ*_t of the layer's weight and bias (EWC: one anchor per task)
    kfac_anchor.<param>        θ* (OnlineEWC: one anchor, the latest)

t is a small integer: the task that produced the term (EWC; OnlineEWC with separate terms) or 0 (one
merged term). These functions read the entries as :class:`~forgetless.quadratic.KroneckerTerm` and
check a loaded state; the classes own the entries.
"""
from __future__ import annotations

import math

from torch import Tensor

from ..quadratic import KroneckerTerm, bias_name, damp_kronecker

STRUCTURES = ("diagonal", "kfac")


def check_structure(structure: str, damping: float = 0.0) -> float:
    """Validate the structure and its damping; returns the damping as a float."""
    if structure not in STRUCTURES:
        raise ValueError(f"unknown Fisher structure {structure!r}; choose one of {', '.join(STRUCTURES)}")
    damping = float(damping)
    if not (math.isfinite(damping) and damping >= 0):
        raise ValueError(f"kfac_damping must be a finite number >= 0, got {damping!r}")
    if damping and structure != "kfac":
        raise ValueError(f"kfac_damping applies to structure='kfac' (Kronecker factors), not {structure!r}")
    return damping


def layer_params(weight: str, a: Tensor, w: Tensor) -> tuple[str, ...]:
    """The parameters of a factored layer: its weight ``w``, and its bias when A has a bias row."""
    return (weight, bias_name(weight)) if a.shape[0] == w[0].numel() + 1 else (weight,)


def by_term(entries: dict[str, Tensor]) -> dict[int, dict[str, Tensor]]:
    """``{"<t>.<name>": x}`` -> ``{t: {name: x}}``, terms in increasing t.

    Example:
        >>> import torch
        >>> by_term({"1.fc.weight": torch.ones(1), "0.fc.weight": torch.zeros(1)})
        {0: {'fc.weight': tensor([0.])}, 1: {'fc.weight': tensor([1.])}}
    """
    out: dict[int, dict[str, Tensor]] = {}
    for key, value in entries.items():
        head, _, name = key.partition(".")
        if not (head.isascii() and head.isdigit()) or not name:
            raise ValueError(f"Kronecker state entry {key!r} is not '<term>.<parameter name>'")
        out.setdefault(int(head), {})[name] = value
    return dict(sorted(out.items()))


def read_terms(kfac_in: dict[str, Tensor], kfac_out: dict[str, Tensor], kfac_anchor: dict[str, Tensor], *,
               one_anchor: bool, damping: float = 0.0) -> list[KroneckerTerm]:
    """The terms of the penalty, each block damped (:func:`~forgetless.quadratic.damp_kronecker`); with
    ``one_anchor`` every term shares ``kfac_anchor`` (online EWC)."""
    a_of, g_of = by_term(kfac_in), by_term(kfac_out)
    anchors = None if one_anchor else by_term(kfac_anchor)
    return [KroneckerTerm(kfac_anchor if one_anchor else anchors.get(t, {}),
                          {w: damp_kronecker(a, g_of[t][w], damping) for w, a in a_of[t].items()}) for t in a_of]


def check_terms(kfac_in: dict[str, Tensor], kfac_out: dict[str, Tensor], kfac_anchor: dict[str, Tensor],
                *, one_anchor: bool) -> None:
    """Raise ValueError (one line) unless the entries describe consistent terms: per term and layer a
    square A and G, and an anchor for the weight (out, …) and, when A has a bias row, for the bias (out,)."""
    a_of, g_of = by_term(kfac_in), by_term(kfac_out)
    anchors = {0: kfac_anchor} if one_anchor else by_term(kfac_anchor)
    if {t: sorted(d) for t, d in a_of.items()} != {t: sorted(d) for t, d in g_of.items()}:
        raise ValueError("Kronecker state: 'kfac_in' and 'kfac_out' name different terms or layers")
    needed: dict[int, set[str]] = {}
    for t, layers in a_of.items():
        anchor = anchors.get(0 if one_anchor else t, {})
        for w, a in layers.items():
            g = g_of[t][w]
            wa = anchor.get(w)
            if a.dim() != 2 or a.shape[0] != a.shape[1] or g.dim() != 2 or g.shape[0] != g.shape[1]:
                raise ValueError(f"Kronecker state: factors of {w!r} (term {t}) must be square, got A "
                                 f"{tuple(a.shape)} and G {tuple(g.shape)}")
            if wa is None or wa.dim() < 2 or wa.shape[0] != g.shape[0] or a.shape[0] - wa[0].numel() not in (0, 1):
                raise ValueError(f"Kronecker state: the anchor of {w!r} (term {t}) is missing or does not fit "
                                 f"A {tuple(a.shape)} and G {tuple(g.shape)}")
            names = {w}
            if a.shape[0] == wa[0].numel() + 1:
                b = anchor.get(bias_name(w))
                if b is None or tuple(b.shape) != (g.shape[0],):
                    raise ValueError(f"Kronecker state: A of {w!r} (term {t}) has a bias row but the anchor of "
                                     f"{bias_name(w)!r} is missing or not ({g.shape[0]},)")
                names.add(bias_name(w))
            needed.setdefault(0 if one_anchor else t, set()).update(names)
    extra = sorted(f"{t}.{n}" if not one_anchor else n
                   for t, anchor in anchors.items() for n in anchor if n not in needed.get(t, set()))
    if extra:
        raise ValueError(f"Kronecker state: anchors {extra[:5]} belong to no factored layer")


def layer_memory(terms: list[KroneckerTerm], importance: dict[str, Tensor], anchor: dict[str, Tensor],
                 shared_anchor: bool) -> dict[str, dict[str, int | str]]:
    """Module name -> its structure, the bytes of state kept for it and the bytes of its parameters."""
    out: dict[str, dict[str, int | str]] = {}

    def add(param: str, structure: str, state: int, own: int) -> None:
        module = param.rpartition(".")[0]
        entry = out.setdefault(module, {"structure": structure, "state_bytes": 0, "parameter_bytes": 0})
        if entry["structure"] != structure:
            entry["structure"] = "kfac+diagonal"
        entry["state_bytes"] += state
        entry["parameter_bytes"] += own

    counted: set[str] = set()
    for i, term in enumerate(terms):
        for w, (a, g) in term.factors.items():
            names = [n for n in (w, bias_name(w)) if n in term.anchor]
            anchors = 0 if shared_anchor and i else sum(_bytes(term.anchor[n]) for n in names)
            own = 0 if w in counted else sum(_bytes(term.anchor[n]) for n in names)
            counted.add(w)
            add(w, "kfac", _bytes(a) + _bytes(g) + anchors, own)
    for name, f in importance.items():
        add(name, "diagonal", _bytes(f) + _bytes(anchor[name]), _bytes(anchor[name]))
    return out


def _bytes(t: Tensor) -> int:
    return t.numel() * t.element_size()
