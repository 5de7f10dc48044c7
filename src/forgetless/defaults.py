"""Default strengths per benchmark and scenario: THE table, and THE rule, for a run without a strength.

One global default per method (the constructor's, e.g. λ = 1000 for EWC) is wrong by orders of
magnitude somewhere: on split MNIST Task-IL online EWC gets 0.925 average accuracy with λ = 1000 and
0.99 with λ = 1e6. So a run that gives no strength gets the value chosen for its benchmark, scenario
and method by a validation search that was run and committed: :data:`DEFAULTS` says, for each, the
value, the committed files holding the search's validation scores, the command that ran it, and the
settings it was searched with where they are not ``forgetless run``'s defaults. Where no search was
committed the run searches itself (:func:`resolve_strength` returns :data:`AUTO`: the method's grid on
the first seed, scored on validation data, as ``--strength auto``), says so before it trains, and its
report says why (:func:`forgetless.provenance.strength_source`). ``strength = "default"``
(:data:`DEFAULT`) skips that search: the committed value, else the method's global default.
``tests/test_defaults.py`` checks every row against its files: the value is the one with the best
validation score there, under the settings stated.

Example:
    >>> chosen = lookup("permuted-mnist", "domain", "online-ewc")
    >>> chosen.strength, chosen.files
    (100.0, ('results/vandeven2019/perm-domain_online-ewc.json', 'results/vandeven2019/perm-domain_online-ewc-lambda1000.json'))
    >>> lookup("split-fashion", "task", "ewc") is None, global_default("ewc")
    (True, 1000.0)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from .methods import METHODS

SEARCHES = "scripts/default-strengths.sh"
AUTO = "auto"        # strength = "auto": search the method's grid on validation data (first seed)
DEFAULT = "default"  # strength = "default": no search; the committed default, else the method's global default


@dataclass(frozen=True)
class Chosen:
    """A default strength and where it comes from.

    Attributes:
        strength: the value a run without ``--strength`` uses.
        files: the committed results of the validation search, relative to the repository: one
            ``result.json`` whose ``strength_search`` holds the whole curve, or one per strength tried.
        command: the command that ran the search.
        settings: the search's settings that are not ``forgetless run``'s defaults (none: it was run
            with the defaults, the settings a newcomer gets).
    """

    strength: float
    files: tuple[str, ...]
    command: str
    settings: Mapping[str, Any] = field(default_factory=dict)


def _searched(benchmark: str, scenario: str, method: str, strength: float) -> Chosen:
    # one search of scripts/default-strengths.sh: `forgetless run` defaults, seed 0, one file with the curve
    name = f"{benchmark}-{scenario}_{method}"
    return Chosen(strength, (f"results/default-strengths/{name}.json",), f"{SEARCHES} {benchmark} {scenario} {method}")


# van de Ven & Tolias's permuted MNIST with our choices (configs/vandeven2019/ours/permuted-mnist.toml, seed 0):
# one run per strength tried (the chosen one first), each file's validation score in metrics.valid_average_accuracy
_PERMUTED = {"hidden": [1000, 1000], "lr": 0.0001, "iterations": 5000, "reset_optimizer": False}
_PERMUTED_COMMAND = ("forgetless --threads 1 run --config configs/vandeven2019/ours/permuted-mnist.toml --scenario domain "
                     "--method {method} --strength X --seeds 0 --no-reset-optimizer, X in {grid}")


def _permuted(method: str, strength: float, tried: Mapping[float, str]) -> Chosen:
    files = tuple(f"results/vandeven2019/perm-domain_{method}{suffix}.json" for suffix in tried.values())
    grid = "{" + ", ".join(f"{s:g}" for s in sorted(tried)) + "}"
    return Chosen(strength, files, _PERMUTED_COMMAND.format(method=method, grid=grid), _PERMUTED)


# prose-code (issue 13): scripts/prose-code.sh with the benchmark's own defaults; its search scores the mean
# validation loss over both domains after code (lower is better), the benchmark's selection. On the wider grid
# 0.01…100 (results/prose-code/wide-grid/ewc.json) that score falls monotonically to 0.01, i.e. towards naive
# training: λ = 3 is kept as the smallest strength of a grid that protects prose (the report then shows what
# EWC does), not as the score's optimum; results/prose-code/protocols/README.md has the measurements.
_PROSE_CODE_EWC = Chosen(3.0, ("results/prose-code/ewc.json",),
                         "scripts/prose-code.sh OUT ewc: forgetless --threads 1 run --benchmark prose-code --method ewc "
                         "--seeds 0-2 --strength auto --strength-grid 3,10,30,100")

# (benchmark, scenario, method) -> the chosen default
DEFAULTS: dict[tuple[str, str, str], Chosen] = {
    ("split-mnist", "task", "ewc"): _searched("split-mnist", "task", "ewc", 1e6),
    ("split-mnist", "task", "online-ewc"): _searched("split-mnist", "task", "online-ewc", 1e6),
    ("split-mnist", "task", "si"): _searched("split-mnist", "task", "si", 10.0),
    # MAS: a flat curve (validation 0.987-0.993 over 0.01-1e4), 10 its best; L2: 0.1 (0.980; 0.729 at 10)
    ("split-mnist", "task", "mas"): _searched("split-mnist", "task", "mas", 10.0),
    ("split-mnist", "task", "l2"): _searched("split-mnist", "task", "l2", 0.1),
    # EWC: 1e8 scores 0.751 on validation, its neighbours 0.629 (1e7) and 0.656 (1e9), on a grid up to 1e10
    ("split-mnist", "domain", "ewc"): _searched("split-mnist", "domain", "ewc", 1e8),
    ("split-mnist", "domain", "online-ewc"): _searched("split-mnist", "domain", "online-ewc", 1e8),
    ("split-mnist", "domain", "si"): _searched("split-mnist", "domain", "si", 1e4),
    # MAS 10 (0.728, the rest 0.585-0.695); L2 1 (0.696; noisy: 0.387 at 10, 0.651 at 100)
    ("split-mnist", "domain", "mas"): _searched("split-mnist", "domain", "mas", 10.0),
    ("split-mnist", "domain", "l2"): _searched("split-mnist", "domain", "l2", 1.0),
    # Class-IL: the validation curves are flat at chance for 10 classes (0.197-0.207 over five decades):
    # EWC does not solve split MNIST Class-IL at any λ (van de Ven & Tolias: ~20%); the best value is kept
    ("split-mnist", "class", "ewc"): _searched("split-mnist", "class", "ewc", 1e4),
    ("split-mnist", "class", "online-ewc"): _searched("split-mnist", "class", "online-ewc", 1e4),
    # SI c = 1 scores 0.228 on validation against 0.199-0.206 for the other decades: near chance, kept as the best
    ("split-mnist", "class", "si"): _searched("split-mnist", "class", "si", 1.0),
    # MAS 1 (0.219) and L2 100 (0.223): near chance too, the best of flat curves
    ("split-mnist", "class", "mas"): _searched("split-mnist", "class", "mas", 1.0),
    ("split-mnist", "class", "l2"): _searched("split-mnist", "class", "l2", 100.0),
    # the seed split through `forgetless run` (its defaults: 2×400 MLP, 2000 steps per task), not `forgetless seed`
    ("seed-split", "domain", "ewc"): _searched("seed-split", "domain", "ewc", 1000.0),
    ("seed-split", "domain", "online-ewc"): _searched("seed-split", "domain", "online-ewc", 1000.0),
    ("seed-split", "domain", "l2"): _searched("seed-split", "domain", "l2", 1.0),
    # SI: a noisy curve (0.56-0.67 over 0.01-1e6); c = 1e4 is its best, inside the grid
    ("seed-split", "domain", "si"): _searched("seed-split", "domain", "si", 1e4),
    ("prose-code", "domain", "ewc"): _PROSE_CODE_EWC,
    ("permuted-mnist", "domain", "ewc"): _permuted("ewc", 100.0, {100.0: "", 10.0: "-lambda10", 1000.0: "-lambda1000"}),
    ("permuted-mnist", "domain", "online-ewc"): _permuted("online-ewc", 100.0, {100.0: "", 1000.0: "-lambda1000"}),
}


def lookup(benchmark: str, scenario: str, method: str) -> Chosen | None:
    """The default chosen for ``method`` on ``benchmark`` in ``scenario``, or None where none was searched."""
    return DEFAULTS.get((benchmark, scenario, method))


def global_default(method: str) -> float | None:
    """The method's own default (its constructor's, or its variant's), used where :func:`lookup` has nothing.

    Example:
        >>> global_default("ewc"), global_default("ewc-kfac")   # a variant on its own scale (methods.Method)
        (1000.0, 31.6)
    """
    return METHODS[method].default_strength


def resolve_strength(strength: float | str | None, benchmark: str, scenario: str, method: str,
                     grid_given: bool = False) -> float | str | None:
    """The strength a run trains with, from the one asked for: a number, or :data:`AUTO` where a
    validation search is to choose it; None for methods without a strength (naive, joint).

    A number or ``"auto"``: as asked. Not given (None): the committed default of :data:`DEFAULTS`, else
    a search — also where a strength grid is given, which only a search uses. ``"default"``: never a
    search: the committed default, else the method's global default.

    Example:
        >>> resolve_strength(None, "split-mnist", "task", "ewc"), resolve_strength(None, "split-fashion", "class", "ewc")
        (1000000.0, 'auto')
        >>> resolve_strength("default", "split-fashion", "class", "ewc"), resolve_strength(5.0, "split-fashion", "class", "ewc")
        (1000.0, 5.0)
        >>> resolve_strength(None, "split-mnist", "task", "ewc", grid_given=True), resolve_strength(None, "split-mnist", "task", "naive")
        ('auto', None)
    """
    if not METHODS[method].has_strength:
        return None
    if strength not in (None, DEFAULT):
        return strength
    chosen = lookup(benchmark, scenario, method)
    if strength is None and (chosen is None or grid_given):
        return AUTO
    return chosen.strength if chosen is not None else global_default(method)
