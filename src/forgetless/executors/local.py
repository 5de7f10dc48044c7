"""The local executor: a sweep's jobs in spawned processes on this machine (one torch thread each)."""
from __future__ import annotations

from typing import Any, Callable, Iterator, Sequence

from ..workers import WorkerPool, available_cpus


def default_workers() -> int:
    """Runs at a time by default: the CPUs available, at most 2."""
    return available_cpus(2)


def run_local(fn: Callable[..., Any], jobs: Sequence[tuple], *, workers: int) -> Iterator[tuple[int, Any, Any]]:
    """Run ``fn(*job)`` for every job in ``workers`` processes; yield (index, result, error) as each
    finishes. A failing job does not stop the others; an interrupt stops every worker at once.

    Example:
        >>> import math
        >>> sorted(i for i, result, error in run_local(math.sqrt, [(4.0,), (9.0,)], workers=1))
        [0, 1]
    """
    if not jobs:
        return
    with WorkerPool(workers) as pool:
        futures = {pool.submit(fn, *job): i for i, job in enumerate(jobs)}
        pending = set(futures)
        while pending:
            done = pool.wait(pending)
            pending -= done
            for future in sorted(done, key=futures.__getitem__):
                error = future.exception()
                yield futures[future], None if error else future.result(), error
