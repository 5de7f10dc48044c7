"""The post's task-B jobs trained at once, as stacked models (:mod:`forgetless.stacked`).

Every task-B job of the rows that share a task-A job starts from the same task-A model, each row's
regularizer state consolidated once from that model alone, and seeds its batches and its dropout
masks alike (``PostJobs.train``): the jobs differ only in the row's penalty and its strength. So the
jobs of one round (each row's first strengths after task A; later, a search's next strengths) whose
penalties can share a stack (:func:`forgetless.stacked.stackable`: diagonal quadratics and no penalty
together — naive, L2, EWC at its λ —, Kronecker-factored ones together — K-FAC EWC at its λ) are one
stacked job, :func:`task_b_phases`, which returns what the separate jobs return, up to float rounding.

``jobs`` is a ``forgetless.post_jobs.PostJobs`` (not imported here: ``post_jobs`` imports this module).
:func:`submit_round` is how :func:`forgetless.post.run_post` submits each round.
"""
from __future__ import annotations

import math
import time
from concurrent.futures import Future
from typing import Any, NamedTuple, Sequence

import torch

from .stacked import StackedMLP, stackable, train_stacked
from .training import TrainingError, adam

Pair = tuple[str, "float | None"]  # a task-B job: (row, strength; None for a row without one)


def _setup(jobs, pair: Pair, schedule, after_a: dict[str, Any]):
    """The model and regularizer (None: none) that ``jobs.task_b_phase(*pair)`` starts task B with."""
    name, strength = pair
    model = jobs.new_model(schedule.dropout)
    model.load_state_dict(after_a["model"])
    reg = None if strength is None else jobs.regularizer(name, strength)
    if reg is not None:
        reg.load_state_dict(after_a["states"][name])
    return model, reg


def task_b_phases(jobs, pairs: Sequence[Pair], schedule, after_a: dict[str, Any]) -> list[dict[str, Any]]:
    """``[jobs.task_b_phase(name, schedule, after_a, s) for name, s in pairs]``, trained as one stacked model.

    A job whose training diverged raises nothing here: its outcome has NaN accuracies (the search
    scores it NaN, as :func:`forgetless.strength.score_or_nan` does for a separate run) and its error
    under ``"diverged"``. ``seconds`` is the stacked job's time shared out equally.
    """
    start = time.perf_counter()
    c = jobs.config
    models, regs = zip(*(_setup(jobs, pair, schedule, after_a) for pair in pairs))
    problem = stackable(models[0], regs)
    if problem:
        raise ValueError(f"{_names(pairs)} cannot be trained stacked: {problem}")
    stack = StackedMLP(models)
    data = jobs.task_b.train
    salt = 2  # PostJobs.task_b_phase's
    generator = torch.Generator().manual_seed(c.seed * 1000 + salt)
    optimizer = adam(stack, c.lr)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(c.seed * 1000 + salt)  # the dropout masks of each separate job
        losses = train_stacked(stack, data, steps=schedule.epochs_b * math.ceil(len(data) / c.batch_size),
                               batch_size=c.batch_size, optimizer=optimizer, generator=generator, regularizers=regs,
                               label=f"{_names(pairs)}, task B", on_step=_times(jobs.on_step, len(pairs)))
    stack.write_to(models)
    outcomes = []
    for model, reg, loss in zip(models, regs, losses):
        out = jobs.outcome(model, schedule, reg, start)
        if isinstance(loss, TrainingError):
            out["accuracy"] = {t: math.nan for t in out["accuracy"]}
            out["valid_accuracy"] = {t: math.nan for t in out["valid_accuracy"]}
            out["diverged"] = str(loss)
        outcomes.append(out)
    seconds = round((time.perf_counter() - start) / len(pairs), 3)
    return [{**out, "seconds": seconds, "stacked": len(pairs)} for out in outcomes]


def _names(pairs: Sequence[Pair]) -> str:
    return ", ".join(name if s is None else f"{name} λ={s:g}" for name, s in pairs)


def _times(on_step, k: int):
    """A stacked step is k steps of the progress count."""
    if on_step is None:
        return None

    def step() -> None:
        for _ in range(k):
            on_step()
    return step


def diverged(outcome: dict[str, Any]) -> TrainingError | None:
    """The error a stacked copy's separate run would have raised, or None."""
    return TrainingError(outcome["diverged"]) if "diverged" in outcome else None


class Part:
    """Job i's outcome of a stacked job's future: ``result()`` returns it, or raises the
    :class:`TrainingError` its separate job would have raised (the search then scores it NaN)."""

    def __init__(self, future: Future, i: int) -> None:
        self.future, self.i = future, i

    def result(self) -> dict[str, Any]:
        outcome = self.future.result()[self.i]
        error = diverged(outcome)
        if error is not None:
            raise error
        return outcome


# What one copy's task-B step costs, relative to a diagonal or no penalty: a Kronecker-factored penalty's
# products with A and G about double it on the seed net (bench/bench_stacked.py, stacked: 2.8 against
# 1.3-1.6 ms per copy and step). Only used to submit the longest job first, so that the last to start ends
# soonest (with 2 workers, the K-FAC row's job before the one of naive, L2 and EWC).
KRONECKER_COST = 2.0


class _Bundle(NamedTuple):
    pairs: list[Pair]
    regs: dict[str, Any]  # each row's regularizer (None: none), for the checks and the cost
    why: str | None       # why its jobs train one at a time; None: they are one stacked job

    def cost(self, schedules: dict[str, Any]) -> float:
        """Copy-epochs of task B, a Kronecker-factored copy weighing :data:`KRONECKER_COST`."""
        return sum((KRONECKER_COST if self.regs[n] is not None and self.regs[n].kronecker() is not None else 1.0)
                   * schedules[n].epochs_b for n, _ in self.pairs)


def bundles(jobs, schedules: dict[str, Any], after_a: dict[str, Any], pairs: Sequence[Pair],
            stacked: bool, workers: int = 1) -> list[tuple[list[Pair], str | None]]:
    """``pairs`` (jobs of rows sharing ``after_a``) split into stacked jobs: a row joins the first bundle
    with its schedule whose penalties it stacks with; then, while there are fewer jobs than ``workers``,
    the costliest stacked bundle is cut in two. Each bundle with why its jobs train one at a time (None:
    they are one stacked job); the costliest bundle first."""
    rows: dict[str, list[Pair]] = {}
    for pair in pairs:
        rows.setdefault(pair[0], []).append(pair)
    out: list[_Bundle] = []
    for name, mine in rows.items():
        model, reg = _setup(jobs, mine[0], schedules[name], after_a)
        why = stackable(model, [reg]) if stacked else "not asked for (--no-stacked)"
        fits = (b for b in out if why is None and b.why is None and schedules[b.pairs[0][0]] == schedules[name]
                and stackable(model, [*b.regs.values(), reg]) is None)
        bundle = next(fits, None)
        if bundle is None:
            out.append(_Bundle(list(mine), {name: reg}, why))
        else:
            bundle.pairs.extend(mine)
            bundle.regs[name] = reg
    # Stacking saves CPU time but serialises: fewer jobs than workers would leave workers idle (with 4,
    # by the job times measured on 2 cores, the K-FAC stack alone would outlast all 8 jobs side by side;
    # not measured on 4). 2 workers, the 2-core machine's default, cut nothing after task A (2 bundles,
    # measured); more workers get more, smaller stacks.
    while sum(1 if b.why is None else len(b.pairs) for b in out) < workers:
        big = max((b for b in out if b.why is None and len(b.pairs) > 1), key=lambda b: b.cost(schedules), default=None)
        if big is None:
            break
        out.remove(big)
        half = (len(big.pairs) + 1) // 2
        for part in (big.pairs[:half], big.pairs[half:]):
            out.append(_Bundle(part, {n: big.regs[n] for n, _ in part}, f"cut for {workers} workers" if len(part) == 1 else None))
    return [(b.pairs, b.why if b.why or len(b.pairs) > 1 else "alone in its round")
            for b in sorted(out, key=lambda b: -b.cost(schedules))]


def submit_round(runner, jobs, schedules: dict[str, Any], after_a: dict[str, Any], pairs: Sequence[Pair],
                 stacked: bool, workers: int = 1) -> tuple[list[tuple[Future, list[Pair]]], dict[Pair, Any],
                                                           dict[str, list[dict[str, Any]]]]:
    """Submit ``pairs`` to ``runner`` (:func:`forgetless.workers.job_runner`'s) as :func:`bundles` says: a
    bundle as one stacked job, or one job per pair. ``jobs`` (a ``PostJobs`` here) checks.

    Returns each future with the pairs it trains, each pair's result (a future or a :class:`Part`), and
    per row the records of the round for ``result.json``: its strengths and how they were trained (one
    record per job its strengths went to).
    """
    futures, results, records = [], {}, {}
    for group, why in bundles(jobs, schedules, after_a, pairs, stacked, workers):
        rows = list(dict.fromkeys(name for name, _ in group))
        if why is None:
            future = runner.submit("task_b_phases", group, schedules[rows[0]], after_a)
            futures.append((future, group))
            results.update({pair: Part(future, i) for i, pair in enumerate(group)})
        else:
            for name, strength in group:
                results[name, strength] = runner.submit("task_b_phase", name, schedules[name], after_a, strength)
                futures.append((results[name, strength], [(name, strength)]))
        for name in rows:
            others = ", ".join(r for r in rows if r != name)
            trained = f"one at a time: {why}" if why else "stacked" + (f" with {others}" if others else "")
            records.setdefault(name, []).append({"strengths": [s for n, s in group if n == name], "trained": trained})
    return futures, results, records
