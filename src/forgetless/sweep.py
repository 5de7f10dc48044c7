"""Sweeps: a grid of runs (methods × strengths × seeds × …), run in parallel processes, resumable.

A sweep file (TOML, or YAML of the same shape) has a ``[base]`` table of fixed
:class:`~forgetless.experiment.RunConfig` settings and a ``[grid]`` table whose keys are RunConfig
fields with *lists* of values; every combination is one run::

    description = "EWC's λ against SI's c on the seed split"   # optional, copied into sweep.md

    [base]                      # fixed settings (any RunConfig field)
    benchmark = "seed-split"
    scenario = "domain"
    hidden = [128]
    iterations = 1270

    [grid]                      # RunConfig fields -> lists of values
    method = ["naive", "ewc", "si"]
    seeds = [0, 1, 2]           # every seed is its own run (its own folder); rows average over them
    strength = [1, 10]          # for every method with a strength and no entry below

    [grid.strength_by_method]   # per-method strength lists: λ for EWC-like methods, c for SI
    ewc = [10, 100, 1000]
    si = [0.1, 1, 10]

Rules (all checked, with the valid choices in the message, before anything runs):

- only ``description``, ``base`` and ``grid`` at the top level; ``base`` and ``grid`` only take
  RunConfig fields (``grid`` also ``strength_by_method``); a key may not be in both; grid values are
  non-empty lists without repeats (a list-valued field such as ``hidden`` takes a list of lists:
  ``hidden = [[128], [400, 400]]``);
- a grid axis a method does not use is not expanded for it: ``naive`` and ``joint`` run once per
  combination of the other axes, however many strengths there are; ``decay`` is expanded only for
  online EWC, ``damping`` only for SI, ``estimator`` and ``fisher_samples`` only for EWC and online
  EWC (read from the regularizers' constructors, so it cannot drift from them); an axis no method
  of the sweep uses is an error;
- ``strength_by_method`` keys must be methods of the sweep that have a strength; a method listed
  there takes its own strengths, the others ``grid.strength`` (or ``base.strength``, or their
  built-in default);
- ``seeds`` (in ``grid`` or ``base``) always means one run per seed; ``strength = "auto"`` is not
  supported: the sweep is the search.

Each run is ``runs.execute`` of a one-seed RunConfig into ``OUT/runs/<name>/``, where ``<name>`` is
``<method>[-s<strength>]-seed<seed>-<hash>`` and the hash covers the resolved config and a
fingerprint of the data. Re-running a sweep skips every point whose folder holds a finished result
with the same resolved config, re-runs unfinished ones (``INCOMPLETE``) and leaves any other run
folder alone: nothing is lost or duplicated. One sweep at a time may use an ``OUT`` folder (a lock).
A run that fails is reported and left for the next invocation; the others go on.

Outputs, besides the run folders: ``OUT/sweep.md`` and ``OUT/sweep.json``, one row per config
but the seed, with mean ± std over seeds of the average accuracy, the accuracy on the old tasks
(mean of ``R[T-1, k]`` for ``k < T-1``: stability) and on the newest task (``R[T-1, T-1]``:
plasticity); and ``OUT/stability_plasticity.png`` (:func:`forgetless.plots.stability_plasticity`).

Runs execute in spawned processes on this machine (``--workers``, one torch thread each), or as
Ray tasks (``--executor ray``, see :mod:`forgetless.executors`); both call :func:`run_point`, and a
point's result does not depend on which worker ran it or what it ran before.
"""
from __future__ import annotations

import dataclasses
import hashlib
import inspect
import io
import itertools
import json
import logging
import math
import multiprocessing
import os
import typing
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from .config import ConfigError, _coerce, build_config, read_config_file
from .experiment import METHODS, RunConfig
from .regularizers import REGULARIZERS
from .workers import available_cpus

log = logging.getLogger("forgetless.sweep")

TOP_LEVEL = ("base", "description", "grid")
BY_METHOD = "strength_by_method"
FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(RunConfig))
_HINTS = typing.get_type_hints(RunConfig)
EXECUTORS = ("local", "ray")
DEFINITIONS = {
    "average_accuracy": "mean over tasks of R[T-1, k]: every task after the last one",
    "old_tasks_accuracy": "mean over k < T-1 of R[T-1, k]: the earlier tasks after the last one (stability)",
    "newest_task_accuracy": "R[T-1, T-1]: the last task just after learning it (plasticity)",
}


class SweepError(ConfigError):
    """A sweep that cannot be run as asked (bad file, conflicting run folder, busy output folder)."""


def method_parameters(method: str) -> frozenset[str]:
    """The RunConfig fields that ``method``'s regularizer takes (none for naive and joint).

    Example:
        >>> sorted(method_parameters("si")), sorted(method_parameters("naive"))
        (['damping', 'strength'], [])
    """
    if method not in REGULARIZERS:
        return frozenset()
    return frozenset(inspect.signature(REGULARIZERS[method]).parameters) & frozenset(FIELDS)


METHOD_SPECIFIC: frozenset[str] = frozenset().union(*(method_parameters(m) for m in REGULARIZERS))


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


@dataclass(frozen=True)
class Point:
    """One run of the sweep: a one-seed RunConfig and the name of its folder under ``OUT/runs``."""

    config: RunConfig
    name: str
    label: str


def _table(where: str, value: Any, *, fields: bool = True) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise SweepError(f"{where} must be a table, got {value!r}")
    # Field names may be written with dashes, as on the command line; method names keep theirs.
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
            out.append(_coerce(f"{where}.{name}", v, item_type))
        except ConfigError as err:
            hint = f" (each value of {name} is itself a list, e.g. {name} = [[128], [400, 400]])" \
                if typing.get_origin(item_type) is tuple else ""
            raise SweepError(f"{err}{hint}") from None
    repeated = sorted({repr(v) for v in out if out.count(v) > 1})
    if repeated:
        raise SweepError(f"{where}.{name} repeats {', '.join(repeated)}")
    return tuple(out)


def parse_sweep(content: Mapping[str, Any], where: str = "sweep config") -> SweepSpec:
    """Check a sweep file's content (see the module docstring) and return its :class:`SweepSpec`.

    Example:
        >>> spec = parse_sweep({"base": {"benchmark": "seed-split", "scenario": "domain"},
        ...                     "grid": {"method": ["naive", "ewc"], "seeds": [0, 1],
        ...                              "strength_by_method": {"ewc": [10, 100]}}})
        >>> spec.grid["method"], spec.strength_by_method
        (('naive', 'ewc'), {'ewc': (10.0, 100.0)})
        >>> parse_sweep({"grid": {"lambda": [1]}})  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        forgetless.sweep.SweepError: unknown key in sweep config [grid]: lambda; valid keys: batch_size, ...
    """
    _unknown(where, [str(k) for k in content], TOP_LEVEL)
    description = content.get("description", "")
    if not isinstance(description, str):
        raise SweepError(f"{where}: description must be a string, got {description!r}")
    base = _table(f"{where} [base]", content.get("base", {}))
    grid_in = _table(f"{where} [grid]", content.get("grid", {}))
    _unknown(f"{where} [base]", list(base), FIELDS)
    _unknown(f"{where} [grid]", list(grid_in), (*FIELDS, BY_METHOD))
    both = sorted(set(base) & set(grid_in))
    if both:
        raise SweepError(f"{where}: {', '.join(both)} set in both [base] and [grid]; keep one")

    fixed: dict[str, Any] = {}
    for name, value in base.items():
        if name == "strength" and value == "auto":
            raise SweepError(f"{where} [base]: strength 'auto' is not supported in a sweep; list the "
                             f"strengths to try in [grid] (the sweep is the search)")
        try:
            fixed[name] = _coerce(f"base.{name}", value, _HINTS[name])
        except ConfigError as err:
            raise SweepError(f"{where}: {err}") from None
    grid: dict[str, tuple[Any, ...]] = {}
    for name, values in grid_in.items():
        if name == BY_METHOD:
            continue
        item_type = int if name == "seeds" else _HINTS[name]
        grid[name] = _values("grid", name, values, item_type)

    methods = grid.get("method", (fixed.get("method", RunConfig.method),))
    by_method: dict[str, tuple[float, ...]] = {}
    for method, values in _table(f"{where} [grid.{BY_METHOD}]", grid_in.get(BY_METHOD, {}), fields=False).items():
        with_strength = [m for m in METHODS if "strength" in method_parameters(m)]
        if method not in with_strength:
            raise SweepError(f"{where} [grid.{BY_METHOD}]: {method!r} is not a method with a strength; "
                             f"valid: {', '.join(with_strength)}")
        if method not in methods:
            raise SweepError(f"{where} [grid.{BY_METHOD}]: {method} is not one of the sweep's methods "
                             f"({', '.join(methods)})")
        by_method[method] = _values(f"grid.{BY_METHOD}", method, values, float)

    for name in sorted(set(grid) & METHOD_SPECIFIC):
        users = [m for m in methods if name in method_parameters(m) and not (name == "strength" and m in by_method)]
        if not users:
            who = [m for m in REGULARIZERS if name in method_parameters(m)]
            reason = " (every such method has its own list in strength_by_method)" if name == "strength" else ""
            raise SweepError(f"{where}: grid.{name} is used by none of the sweep's methods "
                             f"({', '.join(methods)}){reason}; it applies to {', '.join(who)}")
    return SweepSpec(fixed, grid, by_method, description)


def read_sweep(path: Path) -> SweepSpec:
    """Read and check a TOML or YAML sweep file."""
    return parse_sweep(read_config_file(path), where=str(path))


def _show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (tuple, list)):
        return ",".join(_show(v) for v in value)
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

    ``data_fingerprints`` maps a data set (``"mnist"``, ``"fashion"``) to :func:`data_fingerprint`
    of the data the runs will use; it goes into the folder names (omit it for a dry listing).
    Order: benchmark, scenario, method (as listed), the other axes in RunConfig field order, seed.

    Example:
        >>> spec = parse_sweep({"grid": {"method": ["naive", "ewc", "si"], "seeds": [0, 1],
        ...                              "strength": [1, 10]}})
        >>> [p.label for p in expand(spec)][:4]
        ['naive seed 0', 'naive seed 1', 'ewc strength=1 seed 0', 'ewc strength=1 seed 1']
        >>> len(expand(spec))  # naive: 2 seeds; ewc and si: 2 strengths x 2 seeds each
        10
    """
    grid, base = spec.grid, spec.base
    methods = grid.get("method", (base.get("method", RunConfig.method),))
    seeds = grid.get("seeds") or base.get("seeds") or RunConfig.seeds
    head = [k for k in ("benchmark", "scenario") if k in grid]
    points: list[Point] = []
    names: set[str] = set()
    for head_values in itertools.product(*(grid[k] for k in head)):
        for method in methods:
            used = method_parameters(method)
            axes: dict[str, tuple[Any, ...]] = {}
            for key in FIELDS:
                if key in ("benchmark", "scenario", "method", "seeds"):
                    continue
                if key == "strength" and method in spec.strength_by_method:
                    axes[key] = spec.strength_by_method[method]
                elif key in grid and (key not in METHOD_SPECIFIC or key in used):
                    axes[key] = grid[key]
            for values in itertools.product(*axes.values()):
                varying = dict(zip(head, head_values)) | dict(zip(axes, values))
                for seed in seeds:
                    settings = dict(base) | varying | {"method": method, "seeds": (seed,)}
                    label = " ".join([method, *(f"{k}={_show(v)}" for k, v in varying.items()), f"seed {seed}"])
                    try:
                        config = build_config(RunConfig, settings)
                    except ValueError as err:
                        raise SweepError(f"{where}: grid point {label}: {err}") from None
                    fingerprint = (data_fingerprints or {}).get(_dataset(config.benchmark), "")
                    name = point_name(config, fingerprint)
                    if name not in names:  # e.g. an explicit strength equal to the method's default
                        names.add(name)
                        points.append(Point(config, name, label))
    return points


# --- data ---------------------------------------------------------------------------------------

def _dataset(benchmark: str) -> str:
    from .benchmarks.registry import required_dataset

    return required_dataset(benchmark)


def load_data(dataset: str, data_dir: str | os.PathLike[str] | None, *, download: bool = False):
    """The :class:`~forgetless.data.ImageData` for ``"mnist"`` or ``"fashion"``, as the CLI loads it."""
    from .data import load_fashion_mnist, load_mnist

    if dataset == "fashion":
        return load_fashion_mnist(data_dir)
    return load_mnist(data_dir, download=download)


def data_fingerprint(data) -> str:
    """A short sha256 of the images and labels: the same data gives the same run folders.

    Example:
        >>> from forgetless.data import ImageData
        >>> imgs = np.zeros((4, 28, 28), np.uint8); labels = np.arange(4)
        >>> a = data_fingerprint(ImageData(imgs, labels, imgs, labels, "toy"))
        >>> a == data_fingerprint(ImageData(imgs.copy(), labels, imgs, labels, "elsewhere")), len(a)
        (True, 16)
    """
    h = hashlib.sha256()
    for array in (data.train_images, data.train_labels, data.test_images, data.test_labels):
        a = np.ascontiguousarray(array)
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


_WORKER_DATA: dict[tuple[str, str | None], tuple[Any, str]] = {}
_WORKER_BENCH: dict[tuple, Any] = {}


def run_point(config: RunConfig, folder: str, data_dir: str | None, fingerprint: str) -> dict[str, Any]:
    """Run one grid point into ``folder`` (what every executor calls, in a worker process).

    Uses one torch thread (many runs share the machine's cores), loads the data once per worker
    process and checks it is the data the sweep was planned with.
    """
    import torch

    from .benchmarks.registry import make_benchmark
    from .data import DataError
    from .runs import execute

    torch.set_num_threads(1)
    dataset = _dataset(config.benchmark)
    key = (dataset, data_dir)
    if key not in _WORKER_DATA:
        data = load_data(dataset, data_dir)
        _WORKER_DATA[key] = (data, data_fingerprint(data))
    data, found = _WORKER_DATA[key]
    if found != fingerprint:
        raise DataError(f"{dataset} in this worker ({data.source}) is not the data the sweep was planned with "
                        f"(fingerprint {found}, expected {fingerprint}); give every machine the same data")

    def make_bench(seed: int):
        bench_key = (config.benchmark, config.scenario, seed, tuple(sorted(config.benchmark_options().items())),
                     fingerprint)
        if bench_key not in _WORKER_BENCH:
            _WORKER_BENCH.clear()  # one benchmark in memory at a time
            _WORKER_BENCH[bench_key] = make_benchmark(config.benchmark, data, scenario=config.scenario, seed=seed,
                                                      **config.benchmark_options())
        return _WORKER_BENCH[bench_key]

    return execute(config, Path(folder), make_bench, data_source=data.source)


# --- planning and running -----------------------------------------------------------------------

@dataclass
class Plan:
    """The points of a sweep and the finished runs that will be reused."""

    out: Path
    points: list[Point]
    finished: dict[str, dict[str, Any]]     # point name -> result of its finished run
    data: dict[str, dict[str, str]]         # data set -> {"source", "fingerprint"}

    @property
    def pending(self) -> list[Point]:
        return [p for p in self.points if p.name not in self.finished]

    def folder(self, point: Point) -> Path:
        return self.out / "runs" / point.name


def plan_sweep(spec: SweepSpec, out: Path, *, data_dir: Path | None = None, download: bool = False,
               where: str = "sweep config") -> Plan:
    """Validate every point, load the data once (checking it is there) and find finished runs."""
    from .runs import finished_result

    configs = expand(spec, where=where)  # every point validated before any data is touched
    data: dict[str, dict[str, str]] = {}
    for dataset in dict.fromkeys(_dataset(p.config.benchmark) for p in configs):
        loaded = load_data(dataset, data_dir, download=download)
        data[dataset] = {"source": loaded.source, "fingerprint": data_fingerprint(loaded)}
    points = expand(spec, {k: v["fingerprint"] for k, v in data.items()}, where=where)
    finished = {}
    for point in points:
        done = finished_result(out / "runs" / point.name)
        if done is None:
            continue
        if done.get("config") != point.config.resolved():
            raise SweepError(f"{out / 'runs' / point.name} holds a finished run of another config; "
                             f"move it away or use another --out (nothing was overwritten)")
        finished[point.name] = done
    return Plan(Path(out), points, finished, data)


Outcome = tuple[int, Any, "BaseException | None"]


def run_local(fn: Callable[..., Any], jobs: Sequence[tuple], *, workers: int) -> Iterator[Outcome]:
    """Run ``fn(*job)`` for every job in ``workers`` spawned processes; yield (index, result, error)
    as each finishes. A failing job does not stop the others."""
    if not jobs:
        return
    context = multiprocessing.get_context("spawn")  # fork + torch threads can deadlock
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context)
    try:
        futures: dict[Future, int] = {pool.submit(fn, *job): i for i, job in enumerate(jobs)}
        pending = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in sorted(done, key=futures.__getitem__):
                error = future.exception()
                yield futures[future], None if error else future.result(), error
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


@contextmanager
def _lock(out: Path) -> Iterator[None]:
    """One sweep at a time per output folder (two would run the same points twice)."""
    out.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no lock
        yield
        return
    with open(out / ".sweep.lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise SweepError(f"another sweep is running into {out}; wait for it or use another --out") from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@dataclass
class SweepOutcome:
    results: dict[str, dict[str, Any]]   # point name -> result (reused or new)
    ran: list[str]                       # names run this time
    reused: list[str]                    # names whose finished run was reused
    failed: dict[str, str]               # name -> error message


def run_plan(plan: Plan, *, workers: int | None = None, executor: str = "local", data_dir: Path | None = None,
             ray_address: str | None = None, on_done: Callable[[Point, str | None], None] | None = None,
             ) -> SweepOutcome:
    """Run the plan's pending points with ``executor``; ``on_done(point, error)`` after each."""
    if executor not in EXECUTORS:
        raise SweepError(f"unknown executor {executor!r}; valid: {', '.join(EXECUTORS)}")
    pending = plan.pending
    jobs = [(p.config, str(plan.folder(p)), None if data_dir is None else str(data_dir),
             plan.data[_dataset(p.config.benchmark)]["fingerprint"]) for p in pending]
    results = dict(plan.finished)
    outcome = SweepOutcome(results, [], list(plan.finished), {})
    with _lock(plan.out):
        if executor == "ray":
            from .executors.ray_executor import run_ray

            stream = run_ray(run_point, jobs, workers=workers, address=ray_address)
        else:
            stream = run_local(run_point, jobs, workers=min(workers or default_workers(), max(1, len(jobs))))
        for index, result, error in stream:
            point = pending[index]
            if error is None:
                results[point.name] = result
                outcome.ran.append(point.name)
            else:
                outcome.failed[point.name] = f"{type(error).__name__}: {error}"
                log.info("%s failed: %s", point.label, outcome.failed[point.name])
            if on_done:
                on_done(point, None if error is None else outcome.failed[point.name])
    return outcome


def default_workers() -> int:
    return available_cpus(2)


# --- summary ------------------------------------------------------------------------------------

def _final_row_metrics(R: Sequence[Sequence[float]]) -> dict[str, float]:
    R = np.asarray(R, dtype=float)
    return {"average_accuracy": float(R[-1].mean()),
            "old_tasks_accuracy": float(R[-1, :-1].mean()) if len(R) > 1 else math.nan,
            "newest_task_accuracy": float(R[-1, -1])}


def _stat(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=float)
    return {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if len(a) > 1 else 0.0}


def summarize(plan: Plan, results: Mapping[str, dict[str, Any]], spec: SweepSpec) -> dict[str, Any]:
    """One row per config-but-the-seed: mean ± std over its finished seeds of the three accuracies."""
    from .report import versions

    extra = [k for k in FIELDS if k in spec.grid and k not in ("benchmark", "scenario", "method", "strength", "seeds")]
    groups: dict[str, dict[str, Any]] = {}
    points = []
    for p in plan.points:
        resolved = p.config.resolved()
        result = results.get(p.name)
        points.append({"name": p.name, "label": p.label, "config": resolved,
                       "status": "finished" if result else "missing"})
        key = json.dumps({k: v for k, v in resolved.items() if k != "seeds"}, sort_keys=True)
        row = groups.setdefault(key, {
            "benchmark": resolved["benchmark"], "scenario": resolved["scenario"], "method": resolved["method"],
            "strength": resolved["strength"], "settings": {k: resolved[k] for k in extra},
            "seeds": [], "runs": [], "missing_seeds": [], "per_seed": []})
        if result is None:
            row["missing_seeds"].append(p.config.seeds[0])
            continue
        row["seeds"].append(p.config.seeds[0])
        row["runs"].append(p.name)
        row["per_seed"].append(_final_row_metrics(result["seeds"][0]["accuracy_matrix"]))
    rows = []
    for row in groups.values():
        per_seed = row.pop("per_seed")
        for metric in DEFINITIONS:
            row[metric] = _stat([m[metric] for m in per_seed]) if per_seed else {"mean": math.nan, "std": math.nan}
        rows.append(row)
    return {"description": spec.description, "spec": spec.as_dict(), "data": plan.data, "extra_axes": extra,
            "definitions": DEFINITIONS, "rows": rows, "points": points,
            "missing": [p["name"] for p in points if p["status"] == "missing"],
            "std": "std: sample standard deviation, ddof=1; 0 with one seed", "versions": versions()}


def sweep_table(summary: dict[str, Any]) -> str:
    """The markdown table of :func:`summarize`'s rows."""
    from .report import _pm

    extra = summary["extra_axes"]
    head = ["benchmark", "scenario", "method", "strength", *extra, "seeds",
            "average accuracy", "old tasks (stability)", "newest task (plasticity)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in summary["rows"]:
        strength = "–" if r["strength"] is None else f"{r['strength']:g}"
        seeds = ",".join(map(str, r["seeds"])) or "none"
        if r["missing_seeds"]:
            seeds += f" (missing {','.join(map(str, r['missing_seeds']))})"
        cells = [r["benchmark"], r["scenario"], r["method"], strength, *(_show(r["settings"][k]) for k in extra),
                 seeds, _pm(r["average_accuracy"]), _pm(r["old_tasks_accuracy"]), _pm(r["newest_task_accuracy"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def sweep_report(summary: dict[str, Any]) -> str:
    lines = ["# forgetless sweep", ""]
    if summary["description"]:
        lines += [summary["description"], ""]
    lines += [sweep_table(summary), "",
              f"Test accuracies after the last task, mean ± std over seeds ({summary['std']}). "
              "R[t, k] = test accuracy on task k after training task t; T tasks:"]
    lines += [f"- {name.replace('_', ' ')}: {text}" for name, text in summary["definitions"].items()]
    lines += ["", "Data: " + "; ".join(f"{k}: {v['source']} (fingerprint {v['fingerprint']})"
                                      for k, v in summary["data"].items()) + "."]
    if summary["missing"]:
        lines += ["", f"**{len(summary['missing'])} of {len(summary['points'])} runs are missing** "
                      "(failed or not run): run the same command again to finish them."]
    lines += ["", "![stability–plasticity](stability_plasticity.png)"]
    return "\n".join(lines) + "\n"


def plot_points(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows as points for :func:`forgetless.plots.stability_plasticity`."""
    combos = {(r["benchmark"], r["scenario"]) for r in summary["rows"]}
    out = []
    for r in summary["rows"]:
        old, new = r["old_tasks_accuracy"], r["newest_task_accuracy"]
        if not r["seeds"] or old["mean"] != old["mean"]:
            continue  # no finished seed, or a single task: no old tasks
        curve = ", ".join([r["method"], *(f"{k}={_show(v)}" for k, v in r["settings"].items())])
        point = {"curve": curve, "strength": r["strength"], "plasticity": (new["mean"], new["std"]),
                 "stability": (old["mean"], old["std"])}
        if len(combos) > 1:
            point["panel"] = f"{r['benchmark']} ({r['scenario']}-incremental)"
        out.append(point)
    return out


def write_summary(out: Path, summary: dict[str, Any]) -> None:
    """``sweep.json``, ``sweep.md`` and ``stability_plasticity.png`` (each written atomically)."""
    from .report import write_atomic, write_json

    points = plot_points(summary)
    if points:
        from .plots import _pyplot, stability_plasticity

        combos = sorted({(r["benchmark"], r["scenario"]) for r in summary["rows"]})
        title = (f"{combos[0][0]} ({combos[0][1]}-incremental): " if len(combos) == 1 else "") + \
            "stability vs plasticity, labels = strength"
        fig = stability_plasticity(points, title)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=110)
        _pyplot().close(fig)
        write_atomic(out / "stability_plasticity.png", buffer.getvalue())
    write_atomic(out / "sweep.md", sweep_report(summary))
    write_json(out / "sweep.json", summary)
