"""A sweep file, checked: fixed settings, grid axes, per-method strengths; and its points."""
from __future__ import annotations

import hashlib
import itertools
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..config import ConfigError, coerce, read_config_file
from ..defaults import DEFAULT
from ..methods import METHODS
from ..run_config import RunConfig, applicable, check_used, run_config, setting_names, setting_type, takes

TOP_LEVEL = ("base", "description", "grid")
BY_METHOD = "strength_by_method"
HEAD = ("benchmark", "scenario", "method", "seeds")  # axes expanded around the others


class SweepError(ConfigError):
    """A sweep that cannot be run as asked (bad file, conflicting run folder, busy output folder)."""


@dataclass(frozen=True)
class SweepSpec:
    """A parsed, type-checked sweep file: fixed settings, grid axes, per-method strength lists."""

    base: Mapping[str, Any]
    grid: Mapping[str, tuple[Any, ...]]
    strength_by_method: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    description: str = ""

    def as_dict(self) -> dict[str, Any]:
        def plain(v: Any) -> Any:
            return [plain(x) for x in v] if isinstance(v, (tuple, list)) else v

        return {"description": self.description, "base": {k: plain(v) for k, v in self.base.items()},
                "grid": {k: plain(v) for k, v in self.grid.items()},
                BY_METHOD: {k: list(v) for k, v in self.strength_by_method.items()}}

    def methods(self) -> tuple[str, ...]:
        return self.grid.get("method", (self.base.get("method", RunConfig.method),))

    def benchmarks(self) -> tuple[str, ...]:
        return self.grid.get("benchmark", (self.base.get("benchmark", RunConfig.benchmark),))


@dataclass(frozen=True)
class Point:
    """One run of the sweep: a one-seed RunConfig and the name of its folder under ``OUT/runs``."""

    config: RunConfig
    name: str
    label: str


def _table(where: str, value: Any, *, fields: bool = True) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise SweepError(f"{where} must be a table, got {value!r}")
    # Setting names may be written with dashes, as on the command line; method names keep theirs.
    return {str(k).replace("-", "_") if fields else str(k): v for k, v in value.items()}


def _unknown(where: str, keys: Sequence[str], valid: Sequence[str]) -> None:
    unknown = [k for k in keys if k not in valid]
    if unknown:
        raise SweepError(f"unknown key{'s' if len(unknown) > 1 else ''} in {where}: {', '.join(unknown)}; "
                         f"valid keys: {', '.join(sorted(valid))}")


def _values(where: str, name: str, values: Any, item_type: Any) -> tuple[Any, ...]:
    if not isinstance(values, list) or not values:
        raise SweepError(f"{where}.{name} must be a non-empty list of values, got {values!r} "
                         f"(put a fixed setting in [base])")
    out = []
    for v in values:
        if v == "auto" and name in ("strength", BY_METHOD):
            raise SweepError(f"{where}.{name}: strength 'auto' is not supported in a sweep; list the strengths "
                             f"to try (the sweep is the search)")
        try:
            out.append(coerce(f"{where}.{name}", v, item_type))
        except ConfigError as err:
            hint = f" (each value of {name} is itself a list, e.g. {name} = [[128], [400, 400]])" \
                if typing.get_origin(item_type) is tuple else ""
            raise SweepError(f"{err}{hint}") from None
    repeated = sorted({repr(v) for v in out if out.count(v) > 1})
    if repeated:
        raise SweepError(f"{where}.{name} repeats {', '.join(repeated)}")
    return tuple(out)


def parse_sweep(content: Mapping[str, Any], where: str = "sweep config") -> SweepSpec:
    """Check a sweep file's content (see :mod:`forgetless.sweep`) and return its :class:`SweepSpec`.

    Example:
        >>> spec = parse_sweep({"base": {"benchmark": "seed-split", "scenario": "domain"},
        ...                     "grid": {"method": ["naive", "ewc"], "seeds": [0, 1],
        ...                              "strength_by_method": {"ewc": [10, 100]}}})
        >>> spec.grid["method"], spec.strength_by_method
        (('naive', 'ewc'), {'ewc': (10.0, 100.0)})
        >>> parse_sweep({"grid": {"lambda": [1]}})  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        forgetless.sweep.spec.SweepError: unknown key in sweep config [grid]: lambda; valid keys: batch_size, ...
    """
    _unknown(where, [str(k) for k in content], TOP_LEVEL)
    description = content.get("description", "")
    if not isinstance(description, str):
        raise SweepError(f"{where}: description must be a string, got {description!r}")
    base = _table(f"{where} [base]", content.get("base", {}))
    grid_in = _table(f"{where} [grid]", content.get("grid", {}))
    names = setting_names()
    _unknown(f"{where} [base]", list(base), names)
    _unknown(f"{where} [grid]", list(grid_in), (*names, BY_METHOD))
    both = sorted(set(base) & set(grid_in))
    if both:
        raise SweepError(f"{where}: {', '.join(both)} set in both [base] and [grid]; keep one")

    fixed: dict[str, Any] = {}
    for name, value in base.items():
        if name == "strength" and value == "auto":
            raise SweepError(f"{where} [base]: strength 'auto' is not supported in a sweep; list the "
                             f"strengths to try in [grid] (the sweep is the search)")
        try:
            fixed[name] = coerce(f"base.{name}", value, setting_type(name))
        except ConfigError as err:
            raise SweepError(f"{where}: {err}") from None
    grid = {name: _values("grid", name, values, int if name == "seeds" else setting_type(name))
            for name, values in grid_in.items() if name != BY_METHOD}
    spec = SweepSpec(fixed, grid, {}, description)
    methods = spec.methods()
    by_method: dict[str, tuple[float, ...]] = {}
    with_strength = [m for m in METHODS if METHODS[m].has_strength]
    for method, values in _table(f"{where} [grid.{BY_METHOD}]", grid_in.get(BY_METHOD, {}), fields=False).items():
        if method not in with_strength:
            raise SweepError(f"{where} [grid.{BY_METHOD}]: {method!r} is not a method with a strength; "
                             f"valid: {', '.join(with_strength)}")
        if method not in methods:
            raise SweepError(f"{where} [grid.{BY_METHOD}]: {method} is not one of the sweep's methods "
                             f"({', '.join(methods)})")
        by_method[method] = _values(f"grid.{BY_METHOD}", method, values, float)
    _check_axes_used(where, spec, by_method)
    return SweepSpec(fixed, grid, by_method, description)


def _check_axes_used(where: str, spec: SweepSpec, by_method: Mapping[str, Any]) -> None:
    """A setting (in [base] or [grid]) that no run of the sweep takes is an error."""
    from ..benchmarks.registry import BENCHMARKS

    combos = [(m, b) for m in spec.methods() for b in spec.benchmarks() if m in METHODS and b in BENCHMARKS]
    if len(combos) < len(spec.methods()) * len(spec.benchmarks()):
        return  # an unknown method or benchmark: every point's check names it
    for name in sorted(set(spec.grid) - set(HEAD)):
        users = [m for m, b in combos if takes(name, m, b) and not (name == "strength" and m in by_method)]
        if not users:
            who = [m for m in METHODS if METHODS[m].takes(name)]
            reason = " (every such method has its own list in strength_by_method)" if name == "strength" else ""
            owners = f"; it applies to {', '.join(who)}" if who else ""
            raise SweepError(f"{where}: grid.{name} is used by none of the sweep's methods "
                             f"({', '.join(spec.methods())}){reason}{owners}")
    try:
        check_used([k for k in spec.base if k not in HEAD], combos, "sweep's runs")
    except ValueError as err:
        raise SweepError(f"{where} [base]: {err}") from None


def read_sweep(path: Path) -> SweepSpec:
    """Read and check a TOML or YAML sweep file."""
    return parse_sweep(read_config_file(path), where=str(path))


def show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (tuple, list)):
        return ",".join(show(v) for v in value)
    return str(value)


def point_name(config: RunConfig, data_fingerprint: str = "") -> str:
    """``<method>[-s<strength>]-seed<seed>-<hash>``: the hash covers the resolved config and the data.

    Example:
        >>> name = point_name(RunConfig(method="ewc", strength=100.0, seeds=(2,)), "d0")
        >>> name.startswith("ewc-s100-seed2-"), name == point_name(RunConfig(method="ewc", seeds=(2,)), "d1")
        (True, False)
    """
    resolved = config.resolved()
    identity = json.dumps({"config": resolved, "data": data_fingerprint}, sort_keys=True)
    digest = hashlib.sha256(identity.encode()).hexdigest()[:12]
    strength = "" if resolved["strength"] is None else f"-s{resolved['strength']:g}"
    return f"{config.method}{strength}-seed{'-'.join(map(str, config.seeds))}-{digest}"


def expand(spec: SweepSpec, data_fingerprints: Mapping[str, str] | None = None,
           where: str = "sweep config") -> list[Point]:
    """Every grid point as a validated one-seed RunConfig, in a stable order.

    ``data_fingerprints`` maps a data set (``"mnist"``, ``"fashion"``) to the fingerprint of the
    data the runs will use; it goes into the folder names (omit it for a dry listing). Order:
    benchmark, scenario, method (as listed), the other axes in setting order, seed. An axis a run
    does not take (``decay`` for SI, ``n_tasks`` for split MNIST) is not expanded for it.

    Example:
        >>> spec = parse_sweep({"grid": {"method": ["naive", "ewc", "si"], "seeds": [0, 1],
        ...                              "strength": [1, 10]}})
        >>> [p.label for p in expand(spec)][:4]
        ['naive seed 0', 'naive seed 1', 'ewc strength=1 seed 0', 'ewc strength=1 seed 1']
        >>> len(expand(spec))  # naive: 2 seeds; ewc and si: 2 strengths x 2 seeds each
        10
    """
    from ..benchmarks.registry import BENCHMARKS, required_dataset

    grid, base = spec.grid, spec.base
    seeds = grid.get("seeds") or base.get("seeds") or RunConfig.seeds
    head = [k for k in ("benchmark", "scenario") if k in grid]
    points: list[Point] = []
    names: set[str] = set()
    for head_values in itertools.product(*(grid[k] for k in head)):
        fixed_head = dict(zip(head, head_values))
        benchmark = fixed_head.get("benchmark", base.get("benchmark", RunConfig.benchmark))
        for method in spec.methods():
            known = method in METHODS and benchmark in BENCHMARKS
            axes: dict[str, tuple[Any, ...]] = {}
            for key in setting_names():
                if key in HEAD:
                    continue
                if key == "strength" and method in spec.strength_by_method:
                    axes[key] = spec.strength_by_method[method]
                elif key in grid and (not known or takes(key, method, benchmark)):
                    axes[key] = grid[key]
            for values in itertools.product(*axes.values()):
                varying = fixed_head | dict(zip(axes, values))
                for seed in seeds:
                    # no strength given: "default" (the committed one, else the method's), never a search: the sweep is the search
                    settings = {"strength": DEFAULT} | dict(base) | varying | {"method": method, "seeds": (seed,)}
                    label = " ".join([method, *(f"{k}={show(v)}" for k, v in varying.items()), f"seed {seed}"])
                    try:
                        config = run_config(applicable(settings, method, benchmark) if known else settings)
                    except ValueError as err:
                        raise SweepError(f"{where}: grid point {label}: {err}") from None
                    fingerprint = (data_fingerprints or {}).get(required_dataset(config.benchmark), "")
                    name = point_name(config, fingerprint)
                    if name not in names:  # e.g. an explicit strength equal to the method's default
                        names.add(name)
                        points.append(Point(config, name, label))
    return points
