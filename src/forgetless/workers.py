"""Run an object's methods as jobs, in this process or in spawned worker processes.

``forgetless seed`` splits its work into independent jobs (task A, multi-task, each task-B run);
:func:`job_runner` gives the same interface whether they run one after another here or side by side
in worker processes, so both paths compute exactly the same things. Workers are spawned (fork with
torch's thread pool can deadlock) and use one torch thread each; tensors sent to them travel
through shared memory (torch's pickling), so the data is not copied per worker. Every worker counts
its training steps into one shared counter, which :meth:`wait` turns into ``on_step`` calls here.
"""
from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator

import torch

Factory = Callable[..., Any]  # factory(*args, on_step=...) -> the object whose methods are the jobs

_target: Any = None  # in a worker: the object built by _start_worker


class InProcess:
    """Jobs run at submission, here; ``wait`` returns at once."""

    def __init__(self, factory: Factory, args: tuple, on_step: Callable[[], None] | None):
        self.target = factory(*args, on_step=on_step)

    def submit(self, method: str, *args: Any) -> Future:
        future: Future = Future()
        try:
            future.set_result(getattr(self.target, method)(*args))
        except Exception as error:  # noqa: BLE001 - handed to whoever reads the result, as a pool would
            future.set_exception(error)
        return future

    def wait(self, futures: Iterable[Future]) -> set[Future]:
        return set(futures)

    def wait_all(self, futures: Iterable[Future]) -> None:
        pass


class Spawned:
    """Jobs run in ``workers`` spawned processes, each holding its own ``factory(*args)``."""

    def __init__(self, factory: Factory, args: tuple, on_step: Callable[[], None] | None, workers: int):
        context = multiprocessing.get_context("spawn")
        self.counter = context.Value("q", 0)
        self.reported = 0
        self.on_step = on_step
        self.pool = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_start_worker,
                                        initargs=(factory, args, self.counter))

    def submit(self, method: str, *args: Any) -> Future:
        return self.pool.submit(_call, method, *args)

    def wait(self, futures: Iterable[Future]) -> set[Future]:
        """Block until at least one of ``futures`` is done, reporting progress meanwhile."""
        pending = set(futures)
        while True:
            done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            self._report()
            if done or not pending:
                return done

    def wait_all(self, futures: Iterable[Future]) -> None:
        pending = set(futures)
        while pending:
            pending -= self.wait(pending)

    def _report(self) -> None:
        if self.on_step is not None:
            now = self.counter.value
            for _ in range(now - self.reported):
                self.on_step()
            self.reported = now


@contextmanager
def job_runner(factory: Factory, args: tuple, *, workers: int = 1,
               on_step: Callable[[], None] | None = None) -> Iterator[InProcess | Spawned]:
    """``InProcess`` for ``workers == 1``, else ``Spawned`` (shut down on exit, queued jobs cancelled)."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if workers == 1:
        yield InProcess(factory, args, on_step)
        return
    runner = Spawned(factory, args, on_step, workers)
    try:
        yield runner
        runner._report()
    finally:
        runner.pool.shutdown(wait=True, cancel_futures=True)


def shared_memory_free() -> int | None:
    """Free bytes in /dev/shm, where torch puts the tensors it sends to other processes (None: unknown).

    Docker gives containers 64 MB by default; tensors bigger than what is free there crash the
    sending process with a bus error instead of raising, so callers check first."""
    try:
        stats = os.statvfs("/dev/shm")
    except (OSError, AttributeError):  # no /dev/shm (not Linux): torch shares memory another way
        return None
    return stats.f_bavail * stats.f_frsize


def available_cpus(at_most: int) -> int:
    """CPUs this process may run on (its affinity, where the OS tells), between 1 and ``at_most``."""
    try:
        count = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        count = os.cpu_count() or 1
    return max(1, min(at_most, count))


def _start_worker(factory: Factory, args: tuple, counter: Any) -> None:
    global _target
    torch.set_num_threads(1)  # the workers share the cores; more threads per worker only contend

    def tick() -> None:
        with counter.get_lock():
            counter.value += 1

    _target = factory(*args, on_step=tick)


def _call(method: str, *args: Any) -> Any:
    return getattr(_target, method)(*args)
