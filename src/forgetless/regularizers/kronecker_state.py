"""The Kronecker-factored part of EWC's and online EWC's state, kept as flat dicts of tensors.

Entries (so that ``state_dict()`` stays a flat dict of tensors, loadable with ``weights_only=True``):

    kfac_in.<t>.<weight>       A of term t, for the layer named by its weight ("0.weight")
    kfac_out.<t>.<weight>      G of term t
    kfac_anchor.<t>.<param>    θ*_t of the layer's weight and bias (EWC: one anchor per task)
    kfac_anchor.<param>        θ* (OnlineEWC: one anchor, the latest)

t is a small integer: the task that produced the term (EWC; OnlineEWC with separate terms) or 0 (one
merged term). These functions read the entries as :class:`~forgetless.kronecker.KroneckerTerm` and
check a loaded state; the classes own the entries.
"""
from __future__ import annotations

from typing import Mapping

from torch import Tensor

from ..kronecker import KroneckerTerm, bias_name, damp_kronecker
from ..quadratic import mismatch
from .options import check_strength

STRUCTURES = ("diagonal", "kfac")
KRONECKER_GROUPS = ("kfac_in", "kfac_out", "kfac_anchor")

# The command-line variants ewc-kfac and online-ewc-kfac (EWC.variants, OnlineEWC.variants). The
# damping d = 0.3 with λ = 31.6 is the best of d ∈ {0, 0.01, 0.1, 0.3, 1} × λ ∈ {10 … 1000} by mean
# validation accuracy over seeds 0-2 of the seed split (configs/sweeps/seed-split-kfac.toml,
# results/kfac-damping/). The penalty's scale is set by the damped factors, far from the diagonal's (seed split:
# λ 1000-3162 diagonal, 31.6 K-FAC damped), hence the variants' own default strength and quarter-decade
# grid around it, 5.6 … 178 (where `forgetless seed` chose λ on seeds 0-4: results/seed-auto/).
KFAC_DAMPING = 0.3
KFAC_STRENGTH = 31.6
KFAC_STRENGTH_GRID = tuple(round(10.0 ** (k / 4), 1) for k in range(3, 10))


def check_structure(structure: object, damping: object = 0.0) -> float:
    """Validate the structure and its damping; returns the damping as a float."""
    if not isinstance(structure, str) or structure not in STRUCTURES:
        raise ValueError(f"unknown Fisher structure {structure!r}; choose one of {', '.join(STRUCTURES)}")
    damping = check_strength("kfac_damping", damping)
    if damping and structure != "kfac":
        raise ValueError(f"kfac_damping applies to structure='kfac' (Kronecker factors), not {structure!r}")
    return damping


def check_factors_allowed(owner: str, structure: str, state: Mapping[str, Tensor]) -> None:
    """Refuse a state holding Kronecker factors for a regularizer whose structure is not ``"kfac"``."""
    if structure != "kfac" and any(k.startswith("kfac_in.") for k in state):
        raise ValueError(f"{owner}.load_state_dict: the state has Kronecker factors but structure={structure!r}")


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
            raise ValueError(f"has Kronecker entry {key!r}, not '<term>.<parameter name>'")
        out.setdefault(int(head), {})[name] = value
    return dict(sorted(out.items()))


def read_terms(kfac_in: dict[str, Tensor], kfac_out: dict[str, Tensor], kfac_anchor: dict[str, Tensor], *,
               one_anchor: bool, damping: float = 0.0) -> list[KroneckerTerm]:
    """The terms of the penalty, each block damped (:func:`~forgetless.kronecker.damp_kronecker`); with
    ``one_anchor`` every term shares ``kfac_anchor`` (online EWC)."""
    a_of, g_of = by_term(kfac_in), by_term(kfac_out)
    anchors = None if one_anchor else by_term(kfac_anchor)
    return [KroneckerTerm(kfac_anchor if one_anchor else anchors.get(t, {}),
                          {w: damp_kronecker(a, g_of[t][w], damping) for w, a in a_of[t].items()}) for t in a_of]


def anchors_by_name(kfac_anchor: dict[str, Tensor], *, one_anchor: bool) -> dict[str, Tensor]:
    """The factored parameters' anchors by parameter name (the latest term's where there are several)."""
    if one_anchor:
        return dict(kfac_anchor)
    return {name: t for anchors in by_term(kfac_anchor).values() for name, t in anchors.items()}


def protected_state_problem(state: Mapping[str, Tensor], *, one_anchor: bool) -> str | None:
    """Why ``state`` is not a valid EWC / online EWC state (one line, completing "the state …"), or None.

    What ``_consolidated_keys = ("anchor", "importance")`` checks for the diagonal methods, with the
    Kronecker terms counted as protection too (every protected layer may be factored, leaving the
    diagonal groups empty), and the terms' own consistency (:func:`check_terms`).
    """
    groups: dict[str, dict[str, Tensor]] = {g: {} for g in ("anchor", "importance", *KRONECKER_GROUPS)}
    for key, value in state.items():
        head, _, name = key.partition(".")
        if head in groups:
            groups[head][name] = value
    seen = int(state["tasks_seen"])
    if seen == 0:
        filled = [g for g in ("anchor", "importance", *KRONECKER_GROUPS) if groups[g]]
        if filled:
            return f"has {filled[0]!r} entries but tasks_seen is 0"
    elif not (groups["anchor"] or groups["kfac_in"]):
        return f"has tasks_seen={seen} but no 'anchor' entries (nor 'kfac_in' ones)"
    only = sorted(set(groups["anchor"]) ^ set(groups["importance"]))
    if only:
        where = "anchor" if only[0] in groups["anchor"] else "importance"
        return f"groups 'anchor' and 'importance' name different parameters ({only[0]!r} is in {where!r} only)"
    try:
        check_terms(groups["kfac_in"], groups["kfac_out"], groups["kfac_anchor"], one_anchor=one_anchor)
    except ValueError as err:
        return str(err)
    for head in ("kfac_in", "kfac_out"):
        for name, m in groups[head].items():
            if bool((m.diagonal() < 0).any()):
                return f"has entry '{head}.{name}' with a negative diagonal (a second moment is >= 0)"
    return None


def check_terms(kfac_in: dict[str, Tensor], kfac_out: dict[str, Tensor], kfac_anchor: dict[str, Tensor],
                *, one_anchor: bool) -> None:
    """Raise ValueError (one line, completing "the state …") unless the entries describe consistent terms:
    per term and layer a square A and G, and an anchor for the weight (out, …) and, when A has a bias
    row, for the bias (out,); and no anchor without a factored layer."""
    a_of, g_of = by_term(kfac_in), by_term(kfac_out)
    anchors = {0: kfac_anchor} if one_anchor else by_term(kfac_anchor)
    if {t: sorted(d) for t, d in a_of.items()} != {t: sorted(d) for t, d in g_of.items()}:
        raise ValueError("has 'kfac_in' and 'kfac_out' entries for different terms or layers")
    needed: dict[int, set[str]] = {}
    for t, layers in a_of.items():
        anchor = anchors.get(0 if one_anchor else t, {})
        for w, a in layers.items():
            g = g_of[t][w]
            wa = anchor.get(w)
            if a.dim() != 2 or a.shape[0] != a.shape[1] or g.dim() != 2 or g.shape[0] != g.shape[1]:
                raise ValueError(f"has factors of {w!r} (term {t}) that are not square: A {tuple(a.shape)}, "
                                 f"G {tuple(g.shape)}")
            if wa is None or wa.dim() < 2 or wa.shape[0] != g.shape[0] or a.shape[0] - wa[0].numel() not in (0, 1):
                raise ValueError(f"has no anchor of {w!r} (term {t}) that fits its factors A {tuple(a.shape)} "
                                 f"and G {tuple(g.shape)}")
            names = {w}
            if a.shape[0] == wa[0].numel() + 1:
                b = anchor.get(bias_name(w))
                if b is None or tuple(b.shape) != (g.shape[0],):
                    raise ValueError(f"has factors of {w!r} (term {t}) with a bias row but no anchor of "
                                     f"{bias_name(w)!r} shaped ({g.shape[0]},)")
                names.add(bias_name(w))
            needed.setdefault(0 if one_anchor else t, set()).update(names)
    extra = sorted(f"{t}.{n}" if not one_anchor else n
                   for t, anchor in anchors.items() for n in anchor if n not in needed.get(t, set()))
    if extra:
        raise ValueError(f"has Kronecker anchors {extra[:5]} of no factored layer")


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


def model_problem(params: Mapping[str, Tensor], protected: Mapping[str, Tensor]) -> str | None:
    """Why the model's ``params`` do not match the ``protected`` parameters' stored tensors, or None."""
    for name, stored in protected.items():
        problem = mismatch(name, params.get(name), stored)
        if problem:
            return problem
    return None
