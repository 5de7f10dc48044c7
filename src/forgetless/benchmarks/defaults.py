"""A benchmark's own defaults, each with the reason it has that value.

Where each value a run uses comes from, in this order (:meth:`forgetless.run_config.RunConfig.sources`
says which for every setting; ``report.md`` prints it):

1. **given**: a flag, a config file, a sweep file;
2. **the benchmark's default**: a :class:`BenchmarkDefaults` beside the benchmark's registry entry
   (:data:`forgetless.benchmarks.registry.BENCHMARKS`), e.g. ``prose-code`` trains 1000 iterations
   per domain with batch 32; a default here applies only to runs that take the setting (the Fisher
   estimator only to EWC and online EWC);
3. **forgetless's default**: a field of ``RunConfig`` (2000 iterations, batch 128, Adam lr 1e-3, a
   fresh Adam per task), a regularizer constructor's (``EWC``'s ``estimator="exact"``), a builder's or
   a model factory's keyword default; a method's default strength and strength grid are on its class.

A benchmark whose protocol differs from MNIST's (another model, other data, another cost per step)
says so here instead of asking every newcomer for six flags.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence


@dataclass(frozen=True)
class Default:
    """A value and why it is the default (where it was measured or read), printed in reports."""

    value: Any
    why: str


@dataclass(frozen=True)
class BenchmarkDefaults:
    """A benchmark's defaults for run settings, methods' options, strengths and strength grids.

    Attributes:
        settings: run settings (``iterations``, ``batch_size``, ``lr``, ``reset_optimizer``) and
            methods' options (``estimator``, ``fisher_samples``…) by name.
        strength: the default strength by method name, or by its regularizer's name (a variant
            such as ``online-ewc-kfac`` falls back to ``online-ewc``'s entry).
        strength_grid: the values ``--strength auto`` tries, keyed the same way.

    Example:
        >>> d = BenchmarkDefaults(settings={"lr": Default(3e-3, "measured")},
        ...                       strength={"ewc": Default(1.0, "searched")})
        >>> d.setting("lr").value, d.setting("batch_size")
        (0.003, None)
        >>> d.for_method("strength", ("ewc-kfac", "ewc")).value
        1.0
    """

    settings: Mapping[str, Default] = field(default_factory=dict)
    strength: Mapping[str, Default] = field(default_factory=dict)
    strength_grid: Mapping[str, Default] = field(default_factory=dict)

    def setting(self, name: str) -> Default | None:
        return self.settings.get(name)

    def for_method(self, table: str, names: Sequence[str]) -> Default | None:
        """The first entry of ``table`` (``"strength"`` or ``"strength_grid"``) among ``names``."""
        entries: Mapping[str, Default] = getattr(self, table)
        return next((entries[n] for n in names if n in entries), None)


NO_DEFAULTS = BenchmarkDefaults()
