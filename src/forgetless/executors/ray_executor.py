"""Run a sweep's jobs as Ray tasks: ``forgetless sweep --executor ray [--ray-address ADDRESS]``.

Needs ``pip install 'forgetless[ray]'``; ``ray`` is imported inside :func:`run_ray` only.

Without an address a local Ray is started (and stopped at the end); with one (``auto``, or
``ray://host:10001``, or ``host:6379``) the driver joins that cluster. If Ray is already
initialised in this process it is used as it is and left running.

On a real cluster every node needs:

- the same forgetless (and torch) installed, since each task imports :mod:`forgetless.sweep`;
- the same data at the same path (``--data-dir``, ``FORGETLESS_DATA`` or the per-user cache): each
  task checks that its data has the fingerprint the driver planned with and fails otherwise;
- the sweep's ``--out`` folder on a **shared filesystem** (NFS, a cluster mount…): the tasks write
  their run folders there and the driver reads them back to resume and summarise.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Iterator, Sequence

from . import ExecutorError

log = logging.getLogger("forgetless.sweep")


def run_ray(fn: Callable[..., Any], jobs: Sequence[tuple], *, workers: int | None = None,
            address: str | None = None) -> Iterator[tuple[int, Any, BaseException | None]]:
    """Call ``fn(*job)`` for every job as a Ray task (1 CPU each); yield (index, result, error).

    ``workers`` caps the tasks in flight (default: as many as the cluster schedules).
    """
    if not jobs:
        return
    try:
        import ray
    except ImportError:
        raise ExecutorError("--executor ray needs Ray: pip install 'forgetless[ray]'") from None
    started = False
    if ray.is_initialized():
        if address:
            log.warning("Ray is already initialised in this process; ignoring address %s", address)
    else:
        try:
            if address:
                ray.init(address=address)
            else:
                ray.init(num_cpus=workers, include_dashboard=False)
        except Exception as err:  # e.g. no cluster at that address: one line, not Ray's traceback
            raise ExecutorError(f"could not start or reach Ray{f' at {address}' if address else ''}: {err}") from None
        started = True
    # max_retries re-runs a task whose worker died (the run folder is simply rewritten);
    # an exception raised by the run itself is not retried: it is reported.
    remote = ray.remote(num_cpus=1, max_retries=2)(fn)
    limit = workers or len(jobs)
    index: dict[Any, int] = {}
    queue = list(enumerate(jobs))[::-1]
    try:
        while queue or index:
            while queue and len(index) < limit:
                i, job = queue.pop()
                index[remote.remote(*job)] = i
            done, _ = ray.wait(list(index), num_returns=1)
            for ref in done:
                i = index.pop(ref)
                try:
                    yield i, ray.get(ref), None
                except ray.exceptions.RayTaskError as err:
                    yield i, None, _cause(err)
                except ray.exceptions.RayError as err:  # worker crashed or the node was lost
                    yield i, None, err
    finally:
        for ref in index:
            ray.cancel(ref, force=True)
        if started:
            ray.shutdown()


def _cause(err: BaseException) -> BaseException:
    # A RayTaskError carries the task's own exception; report that (its message, not Ray's traceback).
    cause = getattr(err, "cause", None)
    return cause if isinstance(cause, BaseException) else err
