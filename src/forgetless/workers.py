"""Run an object's methods as jobs, in this process or in spawned worker processes.

``forgetless seed`` splits its work into independent jobs (task A, multi-task, each task-B run);
:func:`job_runner` gives the same interface whether they run one after another here or side by side
(one in this process, the others in worker processes), so both paths compute exactly the same
things. Workers are spawned (fork with torch's thread pool can deadlock); every job runs with one
torch thread; tensors sent to workers travel through shared memory (torch's pickling), so the data
is not copied per worker. Every job counts its training steps into one shared counter, which
``wait`` turns into ``on_step`` calls here.
"""
from __future__ import annotations

import multiprocessing
import os
import threading
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
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


class Parallel:
    """Jobs run side by side: one at a time in a thread of this process, the others in ``workers − 1``
    spawned processes, each of them holding its own ``factory(*args)``. Jobs start in submission order
    on whichever is free. This process works too (it has torch loaded already, while a spawned worker
    first spends seconds importing it): one process fewer to start."""

    def __init__(self, factory: Factory, args: tuple, on_step: Callable[[], None] | None, workers: int):
        context = multiprocessing.get_context("spawn")
        self.counter = context.Value("q", 0)
        self.reported, self.on_step = 0, on_step
        self.stop = threading.Event()  # set on the way out: the job in this process stops at its next step
        self.threads = torch.get_num_threads()
        torch.set_num_threads(1)  # one per job, as in the workers: the cores are shared
        self.here = factory(*args, on_step=_ticker(self.counter, self.stop))
        self.thread = ThreadPoolExecutor(max_workers=1)
        self.pool = ProcessPoolExecutor(max_workers=workers - 1, mp_context=context, initializer=_start_worker,
                                        initargs=(factory, args, self.counter))
        self.free = {"here": 1, "pool": workers - 1}
        self.queue: deque[tuple[str, tuple, Future]] = deque()
        self.running: dict[Future, tuple[Future, str]] = {}

    def submit(self, method: str, *args: Any) -> Future:
        future: Future = Future()
        self.queue.append((method, args, future))
        self._dispatch()
        return future

    def wait(self, futures: Iterable[Future]) -> set[Future]:
        """Block until at least one of ``futures`` is done, reporting progress meanwhile."""
        futures = set(futures)
        while True:
            done = {f for f in futures if f.done()}
            if done or not futures:
                return done
            if not self.running:
                raise RuntimeError("waiting for jobs that were never started")
            finished, _ = wait(self.running, timeout=0.2, return_when=FIRST_COMPLETED)
            for job in finished:
                future, where = self.running.pop(job)
                self.free[where] += 1
                error = job.exception()
                if error is None:
                    future.set_result(job.result())
                else:
                    future.set_exception(error)
            self._dispatch()
            self._report()

    def wait_all(self, futures: Iterable[Future]) -> None:
        pending = set(futures)
        while pending:
            pending -= self.wait(pending)

    def close(self) -> None:
        self.stop.set()
        self.queue.clear()
        self.thread.shutdown(wait=True, cancel_futures=True)
        self.pool.shutdown(wait=True, cancel_futures=True)
        torch.set_num_threads(self.threads)

    def _dispatch(self) -> None:
        while self.queue and (self.free["here"] or self.free["pool"]):
            method, args, future = self.queue.popleft()
            where = "here" if self.free["here"] else "pool"
            if where == "here":
                job = self.thread.submit(getattr(self.here, method), *args)
            else:
                job = self.pool.submit(_call, method, *args)
            self.free[where] -= 1
            self.running[job] = (future, where)

    def _report(self) -> None:
        if self.on_step is not None:
            now = self.counter.value
            for _ in range(now - self.reported):
                self.on_step()
            self.reported = now


class Stopped(Exception):
    """The run is being abandoned (an error elsewhere, or Ctrl-C): the job in this process stops."""


@contextmanager
def job_runner(factory: Factory, args: tuple, *, workers: int = 1,
               on_step: Callable[[], None] | None = None) -> Iterator[InProcess | Parallel]:
    """``InProcess`` for ``workers == 1``, else ``Parallel`` (closed on exit, queued jobs dropped)."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if workers == 1:
        yield InProcess(factory, args, on_step)
        return
    runner = Parallel(factory, args, on_step, workers)
    try:
        yield runner
        runner._report()
    finally:
        runner.close()


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


def _ticker(counter: Any, stop: threading.Event | None = None) -> Callable[[], None]:
    """An ``on_step`` that counts into the shared ``counter`` (and stops the job once ``stop`` is set)."""

    def tick() -> None:
        with counter.get_lock():
            counter.value += 1
        if stop is not None and stop.is_set():
            raise Stopped("stopped")

    return tick


def _start_worker(factory: Factory, args: tuple, counter: Any) -> None:
    global _target
    torch.set_num_threads(1)  # the workers share the cores; more threads per worker only contend
    _target = factory(*args, on_step=_ticker(counter))


def _call(method: str, *args: Any) -> Any:
    return getattr(_target, method)(*args)
