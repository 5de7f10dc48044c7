"""A benchmark's own run-setting defaults, each with the reason it has that value.

Where each value a run uses comes from, in this order (:func:`forgetless.provenance.sources` says which
for every setting; ``report.md`` prints it):

1. **given**: a flag, a config file, a sweep file;
2. **the benchmark's default**: a :class:`BenchmarkDefaults` beside the benchmark's registry entry
   (:data:`forgetless.benchmarks.registry.BENCHMARKS`), e.g. ``prose-code`` trains 1000 iterations
   per domain with batch 32; a default here applies only to runs that take the setting (the Fisher
   estimator only to EWC and online EWC);
3. **forgetless's default**: ``run_config.PROTOCOL`` (2000 iterations, batch 128, Adam lr 1e-3, a
   fresh Adam per task), a regularizer constructor's (``EWC``'s ``estimator="exact"``), a builder's or
   a model factory's keyword default; a method's strength grid is on its class.

The default *strength* is not here: it has one home, :mod:`forgetless.defaults` (per benchmark,
scenario and method, each backed by a committed validation search).
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
    """A benchmark's defaults for run settings, methods' options and strength grids.

    Attributes:
        settings: run settings (``iterations``, ``batch_size``, ``lr``, ``reset_optimizer``) and
            methods' options (``estimator``, ``fisher_samples``…) by name.
        strength_grid: the values ``--strength auto`` tries, by method name or by its regularizer's
            name (a variant such as ``online-ewc-kfac`` falls back to ``online-ewc``'s entry).

    Example:
        >>> d = BenchmarkDefaults(settings={"lr": Default(3e-3, "measured")},
        ...                       strength_grid={"ewc": Default((1.0, 10.0), "around λ = 3")})
        >>> d.setting("lr").value, d.setting("batch_size")
        (0.003, None)
        >>> d.grid(("ewc-kfac", "ewc")).value
        (1.0, 10.0)
    """

    settings: Mapping[str, Default] = field(default_factory=dict)
    strength_grid: Mapping[str, Default] = field(default_factory=dict)

    def setting(self, name: str) -> Default | None:
        return self.settings.get(name)

    def grid(self, names: Sequence[str]) -> Default | None:
        """The strength grid of the first of ``names`` (a method, then its regularizer) that has one."""
        return next((self.strength_grid[n] for n in names if n in self.strength_grid), None)


NO_DEFAULTS = BenchmarkDefaults()
