"""The λ search of the post's experiment with its strengths trained at once (:mod:`forgetless.stacked`).

Every strength a row tries starts from the same task-A model and the same regularizer state
(consolidated once from the model alone), and its task-B job seeds its batches and its dropout masks
alike (``PostJobs.train``): only λ differs. So the K jobs of :meth:`PostJobs.task_b_phase` are one
stacked job, :func:`task_b_phases`, which returns what they return, up to float rounding.

``jobs`` is a ``forgetless.post_jobs.PostJobs`` (not imported here: ``post_jobs`` imports this module).
:func:`submit_round` is how :func:`forgetless.post.run_post` submits each round of a row's search.
"""
from __future__ import annotations

import math
import time
from concurrent.futures import Future
from typing import Any, Sequence

import torch

from .stacked import StackedMLP, stackable, train_stacked
from .training import TrainingError, adam


def stacks(jobs, name: str, schedule, after_a: dict[str, Any], strengths: Sequence[float]) -> str | None:
    """Why row ``name``'s strengths cannot be trained stacked (one line), or None when they can."""
    if len(strengths) < 2:
        return "fewer than two strengths"
    model = jobs.new_model(schedule.dropout)
    reg = jobs.regularizer(name, 1.0)
    if reg is not None:
        reg.load_state_dict(after_a["states"][name])
    return stackable(model, [reg])


def task_b_phases(jobs, name: str, schedule, after_a: dict[str, Any], strengths: Sequence[float]) -> list[dict[str, Any]]:
    """``[jobs.task_b_phase(name, schedule, after_a, s) for s in strengths]``, trained as one stacked model.

    A strength whose training diverged raises nothing here: its outcome has NaN accuracies (the
    search scores it NaN, as :func:`forgetless.strength.score_or_nan` does for a separate run) and
    its error under ``"diverged"``. ``seconds`` is the stacked job's time shared out equally.
    """
    start = time.perf_counter()
    c = jobs.config
    models, regs = [], []
    for strength in strengths:
        model = jobs.new_model(schedule.dropout)
        model.load_state_dict(after_a["model"])
        reg = jobs.regularizer(name, strength)
        reg.load_state_dict(after_a["states"][name])
        models.append(model)
        regs.append(reg)
    problem = stackable(models[0], regs)
    if problem:
        raise ValueError(f"row {name} cannot be trained stacked: {problem}")
    stack = StackedMLP(models)
    data = jobs.task_b.train
    salt = 2  # PostJobs.task_b_phase's
    generator = torch.Generator().manual_seed(c.seed * 1000 + salt)
    optimizer = adam(stack, c.lr)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(c.seed * 1000 + salt)  # the dropout masks of each separate job
        losses = train_stacked(stack, data, steps=schedule.epochs_b * math.ceil(len(data) / c.batch_size),
                               batch_size=c.batch_size, optimizer=optimizer, generator=generator, regularizers=regs,
                               label=f"{name} λ={','.join(f'{s:g}' for s in strengths)}, task B",
                               on_step=_times(jobs.on_step, len(strengths)))
    stack.write_to(models)
    outcomes = []
    for model, reg, loss in zip(models, regs, losses):
        out = jobs.outcome(model, schedule, reg, start)
        if isinstance(loss, TrainingError):
            out["accuracy"] = {t: math.nan for t in out["accuracy"]}
            out["valid_accuracy"] = {t: math.nan for t in out["valid_accuracy"]}
            out["diverged"] = str(loss)
        outcomes.append(out)
    seconds = round((time.perf_counter() - start) / len(strengths), 3)
    return [{**out, "seconds": seconds, "stacked": len(strengths)} for out in outcomes]


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
    """Strength i's outcome of a stacked job's future: ``result()`` returns it, or raises the
    :class:`TrainingError` its separate job would have raised (the search then scores it NaN)."""

    def __init__(self, future: Future, i: int) -> None:
        self.future, self.i = future, i

    def result(self) -> dict[str, Any]:
        outcome = self.future.result()[self.i]
        error = diverged(outcome)
        if error is not None:
            raise error
        return outcome


def submit_round(runner, jobs, name: str, schedule, after_a: dict[str, Any], strengths: Sequence[float | None],
                 stacked: bool) -> tuple[list[Future], dict[float | None, Any], dict[str, Any]]:
    """Submit row ``name``'s ``strengths`` to ``runner`` (:func:`forgetless.workers.job_runner`'s): as one
    stacked job when ``stacked`` is asked and :func:`stacks` finds nothing against it (``jobs``, a
    ``PostJobs`` here, checks), else one job per strength.

    Returns the futures to wait for, each strength's result (a future or a :class:`Part`), and a record
    of the round for ``result.json``: its strengths and how they were trained.
    """
    why = stacks(jobs, name, schedule, after_a, strengths) if stacked else "not asked for (--no-stacked)"
    record = {"strengths": list(strengths), "trained": "stacked" if why is None else f"one at a time: {why}"}
    if why is None:
        group = runner.submit("task_b_phases", name, schedule, after_a, tuple(strengths))
        return [group], {s: Part(group, i) for i, s in enumerate(strengths)}, record
    futures = {s: runner.submit("task_b_phase", name, schedule, after_a, s) for s in strengths}
    return list(futures.values()), futures, record
