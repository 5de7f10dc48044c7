"""Where each setting of a run comes from: THE provenance of a run's values, for its report.

:func:`strength_source` says where the strength comes from: given, a validation search (asked for, or
because no default is committed for the benchmark and scenario: :func:`search_notice` is the line a run
says before that search), the default chosen for the benchmark and scenario (:mod:`forgetless.defaults`:
which committed files, which command, which of the search's settings differ from the run's), or the
method's global default (``strength = "default"``, where none is committed). :func:`sources`
says it for every other setting that has a default: given, the benchmark's own default and why
(:mod:`forgetless.benchmarks.defaults`), or forgetless's. ``result.json`` keeps them under
``strength_source`` and ``setting_sources``; ``report.md`` prints them beside each value, so a number in
a report can be traced to a flag, a committed search or a line of code.
"""
from __future__ import annotations

from typing import Any

from .benchmarks.defaults import Default
from .benchmarks.registry import BENCHMARKS, benchmark_option_specs, model_option_specs
from .defaults import AUTO, DEFAULT, global_default, lookup
from .methods import METHODS
from .run_config import PROTOCOL, RunConfig, run_config

GIVEN = "given"


def strength_source(config: RunConfig) -> str | None:
    """Where the run's strength comes from (None for methods without one).

    Example:
        >>> strength_source(RunConfig(method="ewc", strength=5.0)), strength_source(RunConfig(method="naive"))
        ('given', None)
        >>> strength_source(RunConfig(benchmark="split-fashion", method="ewc"))
        'validation search (first seed; no default committed for ewc on split-fashion/task in forgetless.defaults)'
        >>> strength_source(RunConfig(benchmark="split-fashion", method="ewc", strength="default")).split(":")[0]
        'global default of ewc (1000)'
        >>> print(strength_source(RunConfig(benchmark="permuted-mnist", scenario="domain", method="ewc")).split("; ")[1])
        searched with other settings than this run's: hidden [1000, 1000] (here [400, 400]), iterations 5000 (here 2000), lr 0.0001 (here 0.001), reset_optimizer false (here true)
    """
    if not METHODS[config.method].has_strength:
        return None
    if config.strength == AUTO:
        return "validation search (first seed)"
    if config.auto:
        return f"validation search (first seed; {_why_search(config)})"
    if config.strength not in (None, DEFAULT):
        return GIVEN
    where = f"{config.benchmark}/{config.scenario}"
    chosen = lookup(config.benchmark, config.scenario, config.method)
    if chosen is None:
        return (f"global default of {config.method} ({global_default(config.method):g}): strength 'default' asks for no "
                f"search, and none is committed for {where} (forgetless.defaults)")
    more = f" (and {len(chosen.files) - 1} more)" if len(chosen.files) > 1 else ""
    text = f"default for {where} from {chosen.files[0]}{more}, a validation search: {chosen.command}"
    searched = run_config({"benchmark": config.benchmark, "scenario": config.scenario, "method": config.method,
                           **chosen.settings}).resolved()
    mine = config.resolved()
    differ = [f"{k} {_shown(searched[k])} (here {_shown(mine.get(k))})" for k in sorted(searched)
              if k not in ("seeds", "strength", "strength_grid") and searched[k] != mine.get(k)]
    if differ:
        text += "; searched with other settings than this run's: " + ", ".join(differ)
    return text


def _why_search(config: RunConfig) -> str:
    """Why a run that did not ask for a search (``strength = "auto"``) searches (see ``resolve_strength``)."""
    if lookup(config.benchmark, config.scenario, config.method) is None:
        return f"no default committed for {config.method} on {config.benchmark}/{config.scenario} in forgetless.defaults"
    return "a strength grid given without a strength"


def search_notice(config: RunConfig) -> str | None:
    """The line a run says before a validation search it did not ask for (None where it asked, or none runs):
    what, why, what it costs and how to skip it.

    Example:
        >>> print(search_notice(RunConfig(benchmark="split-fashion", method="mas", seeds=(3, 4))))
        no default committed for mas on split-fashion/task in forgetless.defaults: a validation search on seed 3 chooses the strength among 0.01, 0.1, 1, 10, 100, 1000, 10000 (7 runs, 6 more than a given strength); skip it with --strength X, or --strength default (mas's global default, 1)
        >>> search_notice(RunConfig(benchmark="split-fashion", method="mas", strength="auto")) is None
        True
    """
    if not config.auto or config.strength == AUTO:
        return None
    grid = sorted(set(config.search_grid))
    chosen = lookup(config.benchmark, config.scenario, config.method)
    fallback = (f"{config.method}'s global default, {global_default(config.method):g}" if chosen is None
                else f"the committed default, {chosen.strength:g}")
    where = "" if chosen is None else f" for {config.method} on {config.benchmark}/{config.scenario}"
    return (f"{_why_search(config)}{where}: a validation search on seed {config.seeds[0]} chooses the strength among "
            f"{', '.join(f'{s:g}' for s in grid)} ({len(grid)} runs, {len(grid) - 1} more than a given strength); "
            f"skip it with --strength X, or --strength default ({fallback})")


def _shown(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def sources(config: RunConfig) -> dict[str, str]:
    """Setting name → where its value comes from, for every setting but the strength
    (:func:`strength_source`) that has a default.

    Example:
        >>> s = sources(RunConfig(benchmark="prose-code", method="ewc", lr=0.01))
        >>> s["lr"], s["iterations"][:21], s["decay"] if "decay" in s else "ewc has no decay"
        ('given', "prose-code's default:", 'ewc has no decay')
        >>> sources(RunConfig(benchmark="split-mnist", method="si"))["damping"]
        "SI's default"
    """
    entry = BENCHMARKS[config.benchmark]
    mine = entry.defaults

    def source(name: str, default: Default | None, fallback: str) -> str:
        if name in config.given:
            return GIVEN
        return f"{config.benchmark}'s default: {default.why}" if default is not None else fallback

    out = {"scenario": source("scenario", None, f"{config.benchmark}'s first scenario")}
    regularizer = METHODS[config.method].regularizer
    if regularizer is not None and config.auto:
        out["strength_grid"] = source("strength_grid", config.benchmark_grid(), f"{regularizer.__name__}.strength_grid")
    out |= {k: source(k, mine.setting(k), "forgetless's default (run_config.PROTOCOL)") for k in PROTOCOL}
    owners = [(METHODS[config.method].options, getattr(regularizer, "__name__", "")),
              (benchmark_option_specs(config.benchmark), entry.build.__name__),
              (model_option_specs(config.benchmark), entry.model.__name__)]
    for specs, owner in owners:
        out |= {k: source(k, mine.setting(k), f"{owner}'s default") for k in specs}
    return out
