"""Where a sweep's runs execute. An executor is a function

    executor(fn, jobs, *, workers) -> iterator of (job index, result, error)

that calls ``fn(*job)`` for every job somewhere, and yields each outcome as it finishes (``error``
is the exception a job raised, else None; one failing job does not stop the others). The sweep
passes :func:`forgetless.sweep.run_point`, which writes its run folder itself, so every executor
leaves the same files. Executors know nothing of sweeps (nothing here imports :mod:`forgetless.sweep`)
and this package imports none of its modules: the sweep picks one by name.

- ``local`` (:func:`forgetless.executors.local.run_local`): spawned processes on this machine, the default.
- ``ray`` (:func:`forgetless.executors.ray_executor.run_ray`): one Ray task per job, on a local Ray
  or a cluster; needs the optional extra ``pip install 'forgetless[ray]'``. Ray is imported only
  when this executor runs: importing forgetless never imports ray.
"""
from __future__ import annotations

from typing import Any

EXECUTORS = ("local", "ray")
Outcome = tuple[int, Any, "BaseException | None"]


class ExecutorError(ValueError):
    """An executor that cannot run (unknown, not installed, unreachable); the message says why."""
