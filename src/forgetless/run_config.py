"""What a run is asked to do: its settings, typed and checked, each with one owner.

Settings share one flat namespace (config files, flags, sweep keys, ``config.json``):

- the run's own fields, those of :class:`RunConfig` (benchmark, scenario, method, seeds, …);
- the method's hyperparameters, read from its regularizer's constructor (``decay`` for online EWC);
- the benchmark's options, read from its builder's signature (``n_tasks`` for permuted MNIST);
- the model's options, read from the benchmark's model factory (``hidden``).

A setting the run does not use is an error, never dropped or recorded as if used. Where one set of
settings serves several runs (``compare``, a sweep's ``[base]``), a setting applies to the runs
that take it, and one that none of them takes is an error. A config file may also hold a table per
method (``[online-ewc]`` with ``decay = 0.9``): settings for that method only, used when it runs.

A setting not given takes the benchmark's default where it has one (:mod:`forgetless.benchmarks.defaults`:
``prose-code`` trains 1000 iterations with batch 32), else forgetless's; :func:`forgetless.provenance.sources`
says which, for every setting.
"""
from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from .benchmarks.defaults import Default
from .benchmarks.registry import BENCHMARKS, benchmark_option_specs, model_option_specs
from .config import ConfigError, coerce
from .defaults import AUTO, DEFAULT, global_default, resolve_strength
from .methods import METHODS
from .options import Option
from .strength import check_grid

# forgetless's protocol defaults, for benchmarks without their own (benchmarks/defaults.py)
PROTOCOL: dict[str, Any] = {"iterations": 2000, "batch_size": 128, "lr": 1e-3, "reset_optimizer": True}
NO_VALIDATION = ("strength 'auto' chooses the strength on validation data, but valid_fraction = 0 holds none out: "
                 "give the strength (e.g. --strength 1e6), or a valid_fraction > 0")
NO_DEFAULT = ("no default strength is committed for {m} on {b}/{s} (forgetless.defaults) and valid_fraction = 0 holds no "
              "validation data to search one: give the strength (e.g. --strength 1e6), or --strength default ({m}'s global one, {g:g})")


@dataclass(frozen=True)
class RunConfig:
    """Every setting of a run; its resolved values are written to ``config.json`` before it starts.

    The method's, benchmark's and model's options are in ``options`` (as given) and read as
    attributes too, with their defaults. A field left None takes the benchmark's default, else
    forgetless's (:data:`PROTOCOL`; the scenario: the benchmark's first; the strength: the committed
    default, else a validation search, :func:`~forgetless.defaults.resolve_strength`, as on the command line).

    Example:
        >>> c = RunConfig(benchmark="permuted-mnist", scenario="domain", method="online-ewc", options={"decay": 0.9})
        >>> c.n_tasks, c.decay, c.hidden, c.resolved_strength, c.iterations   # the default chosen for permuted-mnist/domain
        (10, 0.9, (400, 400), 100.0, 2000)
        >>> c = RunConfig(benchmark="prose-code", method="ewc", lr=0.01)   # prose-code's own defaults
        >>> c.scenario, c.iterations, c.lr, c.estimator
        ('domain', 1000, 0.01, 'sampled')
    """

    benchmark: str = "split-mnist"
    scenario: str | None = None          # None: the benchmark's first scenario (split MNIST: task)
    method: str = "ewc"
    seeds: tuple[int, ...] = (0,)
    strength: float | str | None = None  # λ (c for SI), "auto" or "default"; None: see defaults.resolve_strength
    strength_grid: tuple[float, ...] | None = None  # values `--strength auto` tries; None: the benchmark's, else the method's
    iterations: int | None = None        # mini-batch updates per task; None: the benchmark's default, else PROTOCOL's
    batch_size: int | None = None
    lr: float | None = None              # Adam's learning rate
    reset_optimizer: bool | None = None  # a fresh Adam per task; False: one Adam (and its moments) throughout
    options: Mapping[str, Any] = field(default_factory=dict)  # the method's, benchmark's and model's, as given
    # the settings given (not defaulted), kept by dataclasses.replace: provenance.sources reads them
    given: frozenset[str] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        _choice("benchmark", self.benchmark, tuple(BENCHMARKS))
        _choice("method", self.method, tuple(METHODS))
        entry = BENCHMARKS[self.benchmark]
        if self.given is None:
            given = {k for k in (*_DEFAULTED, *self.options) if self.raw(k) is not None}
            object.__setattr__(self, "given", frozenset(given))
        if self.scenario is None:
            object.__setattr__(self, "scenario", entry.scenarios[0])
        for name, value in PROTOCOL.items():
            if getattr(self, name) is None:
                default = entry.defaults.setting(name)
                object.__setattr__(self, name, value if default is None else default.value)
        if self.scenario not in entry.scenarios:
            if self.scenario not in ("task", "domain", "class"):
                _choice("scenario", self.scenario, ("task", "domain", "class"))
            raise ValueError(f"{self.benchmark} has only the {', '.join(entry.scenarios)} scenario")
        if not self.seeds:
            raise ValueError("seeds: give at least one seed")
        repeated = sorted({s for s in self.seeds if self.seeds.count(s) > 1})
        if repeated:
            raise ValueError(f"seeds: {', '.join(map(str, repeated))} given twice (each seed is one run)")
        method = METHODS[self.method]
        for name in ("strength", "strength_grid"):
            if getattr(self, name) is not None and not method.has_strength:
                raise ValueError(f"method {self.method} takes no {name.replace('_', ' ')}")
        if isinstance(self.strength, str) and self.strength not in (AUTO, DEFAULT):
            raise ValueError(f"strength must be a number >= 0, 'auto' or 'default', got {self.strength!r}")
        if isinstance(self.strength, (int, float)) and not 0 <= self.strength < math.inf:
            raise ValueError(f"strength must be a finite number >= 0, got {self.strength}")
        if self.strength_grid is not None:
            check_grid(self.strength_grid)
        for name in ("iterations", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.lr < math.inf:
            raise ValueError(f"lr must be a finite number > 0, got {self.lr}")
        object.__setattr__(self, "options", self._checked_options())
        if self.auto and self.benchmark_options().get("valid_fraction") == 0:
            raise ValueError(NO_VALIDATION if self.strength == AUTO else NO_DEFAULT.format(
                m=self.method, b=self.benchmark, s=self.scenario, g=global_default(self.method)))
        # The method checks its own values (e.g. decay in [0, 1], damping finite): build it once now.
        method.build(None if self.auto else self.resolved_strength, self.method_options(), seed=0)

    def raw(self, name: str) -> Any:
        """Setting ``name`` as given (None: not given)."""
        return self.options.get(name) if name in self.options else getattr(self, name)

    def _checked_options(self) -> dict[str, Any]:
        specs = self.option_specs()
        checked = {}
        for name, value in self.options.items():
            if name not in specs:
                raise ValueError(_not_taken(name, self.method, self.benchmark))
            spec = specs[name]
            checked[name] = coerce(name, value, spec.annotation)
            if spec.choices is not None and checked[name] not in spec.choices:
                raise ConfigError(f"unknown {name} {value!r}; valid: {', '.join(map(str, spec.choices))}")
        return checked

    def option_specs(self) -> dict[str, Option]:
        """Every option this run takes: the method's, the benchmark's and its model's."""
        return {**METHODS[self.method].options, **benchmark_option_specs(self.benchmark),
                **model_option_specs(self.benchmark)}

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "options":  # copy and pickle probe before options exist
            raise AttributeError(name)
        specs = self.option_specs()
        if name not in specs:
            raise AttributeError(f"{type(self).__name__} of {self.method} on {self.benchmark} has no setting {name!r}")
        return self._resolved({name: specs[name]})[name]

    @property
    def auto(self) -> bool:
        """Whether a validation search chooses the strength: asked for ("auto"), or none given and none committed."""
        return self.resolved_strength == AUTO

    @property
    def resolved_strength(self) -> float | str | None:
        """The strength trained with ("auto" until a search replaces it); None for naive and joint.
        Not given: the default committed for this benchmark, scenario and method, else "auto"
        (:func:`forgetless.defaults.resolve_strength`, the one rule for the CLI and the Python API)."""
        return resolve_strength(self.strength, self.benchmark, self.scenario, self.method, self.strength_grid is not None)

    @property
    def search_grid(self) -> tuple[float, ...]:
        """The strengths ``auto`` tries: those given, else the benchmark's for this method, else the method's."""
        default = self.benchmark_grid()
        grid = self.strength_grid or (default.value if default else METHODS[self.method].strength_grid)
        return tuple(map(float, grid))

    def benchmark_grid(self) -> Default | None:
        """The benchmark's own strength grid for this method (or its regularizer), if it has one."""
        regularizer = METHODS[self.method].regularizer
        names = (self.method,) + ((regularizer.name,) if regularizer is not None else ())
        return BENCHMARKS[self.benchmark].defaults.grid(names)

    def method_options(self) -> dict[str, Any]:
        return self._resolved(METHODS[self.method].options)

    def benchmark_options(self) -> dict[str, Any]:
        return self._resolved(benchmark_option_specs(self.benchmark))

    def model_options(self) -> dict[str, Any]:
        return self._resolved(model_option_specs(self.benchmark))

    def _resolved(self, specs: Mapping[str, Option]) -> dict[str, Any]:
        mine = BENCHMARKS[self.benchmark].defaults
        return {name: self.options[name] if name in self.options
                else (mine.setting(name) or Default(spec.default, "")).value for name, spec in specs.items()}

    def resolved(self) -> dict[str, Any]:
        """Every setting this run uses, with defaults filled in, as plain JSON values."""
        out: dict[str, Any] = {"benchmark": self.benchmark, "scenario": self.scenario, "method": self.method,
                               "seeds": list(self.seeds), "strength": self.resolved_strength,
                               "strength_grid": None if self.strength_grid is None else list(self.strength_grid)}
        out |= dict(METHODS[self.method].fixed) | self.method_options() | self.model_options()
        out |= {name: getattr(self, name) for name in ("iterations", "batch_size", "lr", "reset_optimizer")}
        out |= self.benchmark_options()
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    def with_strength(self, strength: float) -> RunConfig:
        return dataclasses.replace(self, strength=strength)


COMMON: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(RunConfig) if f.name not in ("options", "given"))
_DEFAULTED = ("scenario", "strength", "strength_grid", *PROTOCOL)  # None: a default applies
# A setting's type as given: None is the dataclass's "not given" (a default applies), not a value to give.
_HINTS = {k: v if k in ("strength", "strength_grid") else typing.Union[tuple(a for a in typing.get_args(v) if a is not type(None))]
          if k in _DEFAULTED else v for k, v in typing.get_type_hints(RunConfig).items()}


def _choice(name: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ValueError(f"unknown {name} {value!r}; valid: {', '.join(valid)}")


def all_options() -> dict[str, list[tuple[str, Option]]]:
    """Every option name of every method, benchmark and model, with its owners (``"method ewc"``…)."""
    found: dict[str, list[tuple[str, Option]]] = {}
    for name, m in METHODS.items():
        for key, spec in m.options.items():
            found.setdefault(key, []).append((f"method {name}", spec))
    for name in BENCHMARKS:
        for key, spec in benchmark_option_specs(name).items():
            found.setdefault(key, []).append((f"benchmark {name}", spec))
        for key, spec in model_option_specs(name).items():
            found.setdefault(key, []).append((f"{name}'s model", spec))
    return found


def setting_names() -> tuple[str, ...]:
    """Every valid setting name: the run's own fields, then every option (for messages and sweeps)."""
    return (*COMMON, *sorted(all_options()))


def setting_type(name: str) -> Any:
    """The type annotation of setting ``name``."""
    if name in _HINTS and name != "options":
        return _HINTS[name]
    owners = all_options().get(name)
    if not owners:
        raise ConfigError(f"unknown setting {name!r}; valid settings: {', '.join(sorted(setting_names()))}")
    return owners[0][1].annotation


def _not_taken(name: str, method: str, benchmark: str) -> str:
    if not owners(name):
        return f"unknown setting {name!r}; valid settings: {', '.join(sorted(setting_names()))}"
    return f"{name} is not a setting of method {method} on {benchmark}: it belongs to {', '.join(owners(name))}"


def takes(name: str, method: str, benchmark: str) -> bool:
    """Whether a run of ``method`` on ``benchmark`` uses setting ``name``."""
    if name in ("strength", "strength_grid"):
        return METHODS[method].has_strength
    if name in COMMON:
        return True
    return name in METHODS[method].options or name in benchmark_option_specs(benchmark) \
        or name in model_option_specs(benchmark)


def owners(name: str) -> list[str]:
    """Who takes setting ``name``: ``["method online-ewc"]``, ``["benchmark permuted-mnist"]``…"""
    if name in ("strength", "strength_grid"):
        return [f"method {m}" for m, spec in METHODS.items() if spec.has_strength]
    return [owner for owner, _ in all_options().get(name, [])]


def check_used(names: Iterable[str], combinations: Sequence[tuple[str, str]], what: str) -> None:
    """Every setting in ``names`` must be taken by at least one (method, benchmark) of ``combinations``."""
    for method, benchmark in combinations:
        _choice("method", method, tuple(METHODS))
        _choice("benchmark", benchmark, tuple(BENCHMARKS))
    for name in names:
        if name in METHODS or (name in COMMON and name not in ("strength", "strength_grid")):
            continue  # a method's table, or a setting every run takes
        if not owners(name):
            raise ConfigError(f"unknown setting {name!r}; valid settings: {', '.join(sorted(setting_names()))}")
        if not any(takes(name, m, b) for m, b in combinations):
            raise ConfigError(f"{name} is used by none of the {what}; it is a setting of {', '.join(owners(name))}")


def applicable(settings: Mapping[str, Any], method: str, benchmark: str) -> dict[str, Any]:
    """The settings a run of ``method`` on ``benchmark`` takes."""
    return {k: v for k, v in settings.items() if k in ("method", "benchmark") or takes(k, method, benchmark)}


def _split(layer: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """A layer's settings (dashes in keys become underscores) and its methods' tables, checked."""
    top: dict[str, Any] = {}
    tables: dict[str, dict[str, Any]] = {}
    for key, value in layer.items():
        if key not in METHODS:
            top[key.replace("-", "_")] = value
            continue
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: a method's table of settings, got {value!r}")
        tables[key] = {k.replace("-", "_"): v for k, v in value.items()}
        for k in tables[key]:
            if not METHODS[key].takes(k):
                raise ConfigError(f"[{key}] {k}: not a setting of method {key}; "
                                  f"its settings: {', '.join(METHODS[key].settings()) or 'none'}")
    return top, tables


def _merged(layers: Sequence[Mapping[str, Any]], method: str) -> dict[str, Any]:
    """Later layers win (flags over the file); within a layer, ``method``'s table over the rest."""
    out: dict[str, Any] = {}
    for layer in layers:
        top, tables = _split(layer)
        out |= top | tables.get(method, {})
    return out


def run_config(*layers: Mapping[str, Any]) -> RunConfig:
    """Defaults ← each layer in order (e.g. the file, then the flags); every setting must be used.

    Example:
        >>> run_config({"benchmark": "permuted-mnist", "n_tasks": 3, "method": "si", "damping": 0.5}).resolved()["n_tasks"]
        3
        >>> run_config({"method": "si", "si": {"damping": 0.5}}, {"damping": 0.2}).damping  # flags win
        0.2
        >>> run_config({"benchmark": "split-mnist", "n_tasks": 3})
        Traceback (most recent call last):
        ...
        ValueError: n_tasks is not a setting of method ewc on split-mnist: it belongs to benchmark permuted-mnist
    """
    method = RunConfig.method
    for layer in layers:
        method = _split(layer)[0].get("method", method)
    settings = _merged(layers, method if isinstance(method, str) else "")
    common = {k: coerce(k, v, _HINTS[k]) for k, v in settings.items() if k in COMMON}
    return RunConfig(**common, options={k: v for k, v in settings.items() if k not in COMMON})


def run_configs(methods: Sequence[str], *layers: Mapping[str, Any]) -> list[RunConfig]:
    """One config per method from shared settings: each method gets the settings it takes.

    Example:
        >>> [c.resolved().get("decay") for c in run_configs(["naive", "online-ewc"], {"decay": 0.5})]
        [None, 0.5]
        >>> run_configs(["naive", "si"], {"decay": 0.5})
        Traceback (most recent call last):
        ...
        forgetless.config.ConfigError: decay is used by none of the methods compared (naive, si); it is a setting of method online-ewc, method online-ewc-kfac
    """
    if not methods:
        raise ConfigError("give at least one method")
    for m in methods:
        _choice("method", m, tuple(METHODS))
    given = {k for layer in layers for k in _split(layer)[0]} - {"method"}
    benchmark = _merged(layers, "").get("benchmark", RunConfig.benchmark)
    check_used(sorted(given), [(m, benchmark) for m in methods], f"methods compared ({', '.join(methods)})")
    return [run_config(applicable(_merged(layers, m), m, benchmark) | {"method": m}) for m in methods]
