"""Where each setting of a run comes from: THE provenance of a run's values, for its report.

:func:`strength_source` says where the strength comes from: given, a validation search, the default
chosen for the benchmark and scenario (:mod:`forgetless.defaults`: which committed files, which command,
which of the search's settings differ from the run's), or the method's global default. :func:`sources`
says it for every other setting that has a default: given, the benchmark's own default and why
(:mod:`forgetless.benchmarks.defaults`), or forgetless's. ``result.json`` keeps them under
``strength_source`` and ``setting_sources``; ``report.md`` prints them beside each value, so a number in
a report can be traced to a flag, a committed search or a line of code.
"""
from __future__ import annotations

from typing import Any

from .benchmarks.defaults import Default
from .benchmarks.registry import BENCHMARKS, benchmark_option_specs, model_option_specs
from .defaults import global_default, lookup
from .methods import METHODS
from .run_config import AUTO, PROTOCOL, RunConfig, run_config

GIVEN = "given"


def strength_source(config: RunConfig) -> str | None:
    """Where the run's strength comes from (None for methods without one).

    Example:
        >>> strength_source(RunConfig(method="ewc", strength=5.0)), strength_source(RunConfig(method="naive"))
        ('given', None)
        >>> strength_source(RunConfig(benchmark="split-fashion", method="ewc"))[:73]
        'global default of ewc (1000): no validation search committed for split-fa'
        >>> print(strength_source(RunConfig(benchmark="permuted-mnist", scenario="domain", method="ewc")).split("; ")[1])
        searched with other settings than this run's: hidden [1000, 1000] (here [400, 400]), iterations 5000 (here 2000), lr 0.0001 (here 0.001), reset_optimizer false (here true)
    """
    if not METHODS[config.method].has_strength:
        return None
    if config.auto:
        return "validation search (first seed)"
    if config.strength is not None:
        return GIVEN
    where = f"{config.benchmark}/{config.scenario}"
    chosen = lookup(config.benchmark, config.scenario, config.method)
    if chosen is None:
        return (f"global default of {config.method} ({global_default(config.method):g}): no validation search committed "
                f"for {where} (forgetless.defaults); give --strength, or --strength auto to search")
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
    if regularizer is not None and config.strength == AUTO:
        out["strength_grid"] = source("strength_grid", config.benchmark_grid(), f"{regularizer.__name__}.strength_grid")
    out |= {k: source(k, mine.setting(k), "forgetless's default (run_config.PROTOCOL)") for k in PROTOCOL}
    owners = [(METHODS[config.method].options, getattr(regularizer, "__name__", "")),
              (benchmark_option_specs(config.benchmark), entry.build.__name__),
              (model_option_specs(config.benchmark), entry.model.__name__)]
    for specs, owner in owners:
        out |= {k: source(k, mine.setting(k), f"{owner}'s default") for k in specs}
    return out
