"""Where a sweep's runs execute. An executor is a function

    executor(fn, jobs, *, workers) -> iterator of (job index, result, error)

that calls ``fn(*job)`` for every job somewhere, and yields each outcome as it finishes (``error``
is the exception a job raised, else None; one failing job does not stop the others). The sweep
passes :func:`forgetless.sweep.run_point`, which writes its run folder itself, so every executor
leaves the same files. Executors know nothing of sweeps: nothing here imports :mod:`forgetless.sweep`.

- ``local`` (:func:`forgetless.executors.local.run_local`): spawned processes on this machine, the default.
- ``ray`` (:func:`forgetless.executors.ray_executor.run_ray`): one Ray task per job, on a local Ray
  or a cluster; needs the optional extra ``pip install 'forgetless[ray]'``. Ray is imported only
  when this executor runs: importing forgetless never imports ray.
"""
from __future__ import annotations

from typing import Any, Callable, Iterator, Sequence

EXECUTORS = ("local", "ray")
Outcome = tuple[int, Any, "BaseException | None"]


class ExecutorError(ValueError):
    """An executor that cannot run (unknown, not installed, unreachable); the message says why."""


def get(name: str) -> Callable[..., Iterator[Outcome]]:
    """``run(fn, jobs, *, workers, address) -> outcomes`` for executor ``name``."""
    if name not in EXECUTORS:
        raise ExecutorError(f"unknown executor {name!r}; valid: {', '.join(EXECUTORS)}")
    return _run_local if name == "local" else _run_ray


def _run_local(fn: Callable[..., Any], jobs: Sequence[tuple], *, workers: int | None, address: str | None = None):
    from . import local  # looked up at each call: tests replace local.run_local

    return local.run_local(fn, jobs, workers=min(workers or local.default_workers(), max(1, len(jobs))))


def _run_ray(fn: Callable[..., Any], jobs: Sequence[tuple], *, workers: int | None, address: str | None = None):
    from .ray_executor import run_ray

    return run_ray(fn, jobs, workers=workers, address=address)
