"""Worker processes: THE place forgetless starts them, and stops them.

:class:`WorkerPool` runs functions in spawned processes (fork with torch's thread pool can
deadlock), one torch thread each. Whatever ends the main process's wait, the workers end with it:

- Ctrl-C reaches the whole terminal process group, but workers ignore it: the main process decides,
  and on any exception (KeyboardInterrupt included; the CLI turns SIGTERM into one) it terminates
  the workers at once instead of waiting for them, so a second Ctrl-C has nothing to hang on;
- a worker whose parent dies (even by SIGKILL) is killed by the kernel (Linux ``PR_SET_PDEATHSIG``).

:func:`job_runner` runs an object's methods as jobs, here or in workers, behind one interface,
so both paths compute exactly the same things: ``forgetless seed`` splits its work this way. Tensors
sent to workers travel through shared memory (torch's pickling), not copied per worker.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator

log = logging.getLogger(__name__)

Factory = Callable[..., Any]  # factory(*args, on_step=...) -> the object whose methods are the jobs

_counter: Any = None  # in a worker: the shared count of training steps
_target: Any = None   # in a worker: the object built by _build_target


class WorkerPool:
    """``workers`` spawned processes; ``initializer(*initargs)`` runs once in each."""

    def __init__(self, workers: int, *, initializer: Callable[..., None] | None = None, initargs: tuple = (),
                 on_step: Callable[[], None] | None = None) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        context = multiprocessing.get_context("spawn")
        self.counter = context.Value("q", 0)
        self.reported = 0
        self.on_step = on_step
        self.submitted: list[Future] = []
        self.pool = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_start_worker,
                                        initargs=(os.getpid(), self.counter, initializer, initargs))

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        # The pool may spawn a worker here: spawned with SIGINT ignored, it keeps ignoring it from its
        # first instruction (Python leaves an inherited SIG_IGN alone), even while it imports torch.
        with _sigint_ignored():
            future = self.pool.submit(fn, *args)
        self.submitted.append(future)
        return future

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

    def close(self, *, abort: bool = False) -> None:
        """Wait for the jobs (``abort=False``) or stop every worker now (``abort=True``).

        When every job's result is in, the workers are stopped at once too: a worker left to exit by
        itself tears its interpreter (and torch) down first, which took 0.5-1.5 s at the end of
        ``forgetless seed`` on a busy 2-core machine, for nothing anyone waits for."""
        if not abort and not all(f.done() for f in self.submitted):
            self.pool.shutdown(wait=True)
            self._report()
            return
        if not abort:
            self._report()
        processes = list((self.pool._processes or {}).values())  # noqa: SLF001 - the pool exposes no other handle
        with _sigint_ignored():  # stopping takes a moment: a second Ctrl-C meanwhile must not leave it half done
            for process in processes:
                process.terminate()
            self.pool.shutdown(wait=False, cancel_futures=True)
            for process in processes:
                process.join(timeout=2)
                if process.is_alive():
                    process.kill()
                    process.join(timeout=2)

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, kind, error, traceback) -> None:
        self.close(abort=kind is not None)


@contextmanager
def _sigint_ignored() -> Iterator[None]:
    """Ctrl-C ignored in this block (in the main thread, the only one signals reach)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _start_worker(parent: int, counter: Any, initializer: Callable[..., None] | None, initargs: tuple) -> None:
    global _counter
    import torch

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle
    _die_with_parent(parent)
    torch.set_num_threads(1)  # the workers share the cores; more threads per worker only contend
    _counter = counter
    if initializer is not None:
        initializer(*initargs)


def _die_with_parent(parent: int) -> None:
    """Ask the kernel to kill this process when its parent dies (Linux); elsewhere a no-op."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux (or no libc found)
        return
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def tick() -> None:
    """In a worker: count one training step for the main process's progress bar."""
    with _counter.get_lock():
        _counter.value += 1


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
    """Jobs run in a :class:`WorkerPool`, each worker holding its own ``factory(*args)``."""

    def __init__(self, pool: WorkerPool):
        self.pool = pool
        self.wait, self.wait_all = pool.wait, pool.wait_all

    def submit(self, method: str, *args: Any) -> Future:
        return self.pool.submit(_call_target, method, *args)


@contextmanager
def job_runner(factory: Factory, args: tuple, *, workers: int = 1,
               on_step: Callable[[], None] | None = None) -> Iterator[InProcess | Spawned]:
    """``InProcess`` for ``workers == 1``, else ``Spawned`` (workers stopped on exit)."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if workers == 1:
        yield InProcess(factory, args, on_step)
        return
    with WorkerPool(workers, initializer=_build_target, initargs=(factory, args), on_step=on_step) as pool:
        yield Spawned(pool)


def _build_target(factory: Factory, args: tuple) -> None:
    global _target
    _target = factory(*args, on_step=tick)


def _call_target(method: str, *args: Any) -> Any:
    return getattr(_target, method)(*args)


def workers_that_fit(workers: int, tensors: Iterable[Any]) -> int:
    """``workers``, or 1 when ``tensors`` would not fit in the shared memory they reach workers through."""
    if workers == 1:
        return 1
    need = sum(t.nbytes for t in tensors)
    free = shared_memory_free()
    if free is not None and free < need + (64 << 20):
        log.warning("only %d MB of shared memory free (/dev/shm), the data needs %d MB: running in one process "
                    "(with Docker, --shm-size=1g lifts this)", free >> 20, need >> 20)
        return 1
    return workers


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
