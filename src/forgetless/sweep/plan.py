"""Planning a sweep (its points, the data, the finished runs to reuse) and running the rest."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..executors import EXECUTORS, ExecutorError
from ..run_config import RunConfig
from ..runs import FolderError, Interrupted, claimed, reusable
from .spec import Point, SweepError, SweepSpec, expand

log = logging.getLogger("forgetless.sweep")


@dataclass
class Plan:
    """The points of a sweep and the finished runs that will be reused."""

    out: Path
    points: list[Point]
    finished: dict[str, dict[str, Any]]     # point name -> result of its finished run
    data: dict[str, dict[str, str]]         # data set -> {"source", "fingerprint"}
    overwrite: bool = False                 # re-run the points whose folders hold other finished runs

    @property
    def pending(self) -> list[Point]:
        return [p for p in self.points if p.name not in self.finished]

    def folder(self, point: Point) -> Path:
        return self.out / "runs" / point.name


def plan_sweep(spec: SweepSpec, out: Path, *, data_dir: Path | None = None, download: bool = False,
               where: str = "sweep config", overwrite: bool = False) -> Plan:
    """Validate every point, load the data once per data set (checking it is there) and find finished runs."""
    from ..benchmarks.registry import data_fingerprint, load_data, required_dataset

    configs = expand(spec, where=where)  # every point validated before any data is touched
    data: dict[str, dict[str, str]] = {}
    for point in configs:
        dataset = required_dataset(point.config.benchmark)
        if dataset not in data:
            loaded = load_data(point.config.benchmark, data_dir, download=download)
            data[dataset] = {"source": loaded.source, "fingerprint": data_fingerprint(loaded)}
    points = expand(spec, {k: v["fingerprint"] for k, v in data.items()}, where=where)
    finished = {}
    for point in points:
        fingerprint = data[required_dataset(point.config.benchmark)]["fingerprint"]
        try:
            done = reusable(out / "runs" / point.name, point.config.resolved(), fingerprint)
        except FolderError:  # a finished run of other settings: replaced only when asked
            if not overwrite:
                raise
            done = None
        if done is not None:
            finished[point.name] = done
    return Plan(Path(out), points, finished, data, overwrite)


_WORKER_DATA: dict[tuple[str, str | None], tuple[Any, str]] = {}
_WORKER_BENCH: dict[str, Any] = {}


def run_point(config: RunConfig, folder: str, data_dir: str | None, fingerprint: str,
              overwrite: bool = False) -> dict[str, Any]:
    """Run one grid point into ``folder`` (what every executor calls, in a worker process).

    Uses one torch thread (many runs share the machine's cores), loads the data once per worker
    process and checks it is the data the sweep was planned with.
    """
    import torch

    from ..benchmarks.registry import data_fingerprint, load_data, required_dataset
    from ..data import DataError
    from ..experiment import benchmark_factory, execute

    torch.set_num_threads(1)
    dataset = required_dataset(config.benchmark)
    key = (dataset, data_dir)
    if key not in _WORKER_DATA:
        data = load_data(config.benchmark, data_dir)
        _WORKER_DATA[key] = (data, data_fingerprint(data))
    data, found = _WORKER_DATA[key]
    if found != fingerprint:
        raise DataError(f"{dataset} in this worker ({data.source}) is not the data the sweep was planned with "
                        f"(fingerprint {found}, expected {fingerprint}); give every machine the same data")
    # one benchmark factory (one benchmark in memory) per worker, kept while points share its settings
    bench_key = repr((config.benchmark, config.scenario, sorted(config.benchmark_options().items()), fingerprint))
    if bench_key not in _WORKER_BENCH:
        _WORKER_BENCH.clear()
        _WORKER_BENCH[bench_key] = benchmark_factory(config, data)
    result, _ = execute(config, Path(folder), _WORKER_BENCH[bench_key], data_source=data.source,
                        fingerprint=fingerprint, overwrite=overwrite)
    return result


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
    run = _executor(executor)
    pending = plan.pending
    jobs = [(p.config, str(plan.folder(p)), None if data_dir is None else str(data_dir),
             plan.data[_dataset(p)]["fingerprint"], plan.overwrite) for p in pending]
    results = dict(plan.finished)
    outcome = SweepOutcome(results, [], list(plan.finished), {})
    with locked(plan.out):
        try:
            for index, result, error in run(run_point, jobs, workers=workers, address=ray_address):
                point = pending[index]
                if error is None:
                    results[point.name] = result
                    outcome.ran.append(point.name)
                else:
                    outcome.failed[point.name] = f"{type(error).__name__}: {error}"
                    log.info("%s failed: %s", point.label, outcome.failed[point.name])
                if on_done:
                    on_done(point, None if error is None else outcome.failed[point.name])
        except KeyboardInterrupt:
            raise Interrupted(f"{len(results)} of {len(plan.points)} runs finished and kept in {plan.out / 'runs'}: "
                              "run the same command to resume") from None
    return outcome


def _executor(name: str) -> Callable[..., Any]:
    """``run(fn, jobs, *, workers, address) -> outcomes`` for executor ``name`` (imported only when used)."""
    if name not in EXECUTORS:
        raise ExecutorError(f"unknown executor {name!r}; valid: {', '.join(EXECUTORS)}")
    if name == "ray":
        from ..executors.ray_executor import run_ray

        return lambda fn, jobs, *, workers, address: run_ray(fn, jobs, workers=workers, address=address)
    from ..executors import local  # looked up at each call: tests replace local.run_local

    return lambda fn, jobs, *, workers, address: local.run_local(
        fn, jobs, workers=min(workers or local.default_workers(), max(1, len(jobs))))


def locked(out: Path):
    """One sweep at a time per output folder (two would run the same points twice)."""
    return claimed(out, busy="another sweep is running into")


def _dataset(point: Point) -> str:
    from ..benchmarks.registry import required_dataset

    return required_dataset(point.config.benchmark)


__all__ = ["Plan", "SweepError", "SweepOutcome", "locked", "plan_sweep", "run_plan", "run_point"]
