"""Where each setting of a run comes from: given, the benchmark's default (and why), or forgetless's.

The order is :mod:`forgetless.benchmarks.defaults`'s. ``result.json`` keeps the answer under
``setting_sources`` and ``report.md`` prints it beside each value, so a number in a report can be
traced to a flag, a measured default or a line of code.
"""
from __future__ import annotations

from .benchmarks.defaults import Default
from .benchmarks.registry import BENCHMARKS, benchmark_option_specs, model_option_specs
from .methods import METHODS
from .run_config import AUTO, PROTOCOL, RunConfig

GIVEN = "given"


def sources(config: RunConfig) -> dict[str, str]:
    """Setting name → where its value comes from, for every setting that has a default.

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
            return GIVEN + (": chosen on validation data" if config.raw(name) == AUTO else "")
        return f"{config.benchmark}'s default: {default.why}" if default is not None else fallback

    out = {"scenario": source("scenario", None, f"{config.benchmark}'s first scenario")}
    regularizer = METHODS[config.method].regularizer
    if regularizer is not None:
        out["strength"] = source("strength", config.method_default("strength"), f"{regularizer.__name__}'s default")
        if config.auto:
            out["strength_grid"] = source("strength_grid", config.method_default("strength_grid"),
                                          f"{regularizer.__name__}.strength_grid")
    out |= {k: source(k, mine.setting(k), "forgetless's default (run_config.PROTOCOL)") for k in PROTOCOL}
    owners = [(METHODS[config.method].options, getattr(regularizer, "__name__", "")),
              (benchmark_option_specs(config.benchmark), entry.build.__name__),
              (model_option_specs(config.benchmark), entry.model.__name__)]
    for specs, owner in owners:
        out |= {k: source(k, mine.setting(k), f"{owner}'s default") for k in specs}
    return out
