"""The jobs of ``forgetless seed`` (:mod:`forgetless.post`): task A, multi-task, and one task-B run per
procedure and strength tried, each a method of :class:`PostJobs` that a worker process can run.

Jobs depend on each other only through what they return (task A's model and the regularizers'
states go into the task-B jobs), and every one seeds its own randomness, so they can run in any
order or process with the same numbers.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Mapping

import torch
from torch import nn

from .benchmarks import Benchmark, Split
from .benchmarks.registry import make_model
from .methods import METHODS
from .post_stacked import task_b_phases
from .regularizers import Regularizer
from .training import accuracy, adam, train_task

BENCHMARK = "seed-split"  # the post's split's command-line name


@dataclass(frozen=True)
class Schedule:
    epochs_a: int
    epochs_b: int
    dropout: float


@dataclass(frozen=True)
class Procedure:
    """A row of the post's table."""

    name: str                   # its row in result.json and the tables
    method: str                 # a forgetless.methods name; "joint" is multi-task training on A ∪ B
    strength: str | None        # the PostConfig field holding its strength (None: the method has none)
    post_schedule: Schedule     # its epochs and dropout under --protocol post
    searched: bool = False      # its strength may be "auto": chosen on validation data
    grid: str | None = None     # the PostConfig field holding the strengths its search tries
    # the PostConfig fields that are options of its method, named alike (e.g. the Fisher's for EWC); listed
    # per row because rows share a class: K-FAC's damping is EWC's option too, but not the diagonal row's
    options: tuple[str, ...] = ()


def method_options(config: Any, procedure: Procedure) -> dict[str, Any]:
    """The options of a row's method that the config (a PostConfig) sets."""
    return {k: getattr(config, k) for k in procedure.options}


def steps(split: Split, epochs: int, batch_size: int) -> int:
    return epochs * math.ceil(len(split) / batch_size)


def union(a: Split, b: Split) -> Split:
    return Split(torch.cat([a.x, b.x]), torch.cat([a.y, b.y]))


class PostJobs:
    """The jobs of the post's experiment for one config (a PostConfig) and benchmark; ``rows`` names
    the table's procedures."""

    def __init__(self, config: Any, bench: Benchmark, rows: Mapping[str, Procedure],
                 on_step: Callable[[], None] | None = None):
        self.config, self.bench, self.rows, self.on_step = config, bench, rows, on_step
        self.task_a, self.task_b = bench.tasks

    def new_model(self, dropout: float) -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.config.seed)  # same initial weights for every procedure
            return make_model(BENCHMARK, self.bench, hidden=(self.config.hidden,), dropout=dropout)

    def train(self, model: nn.Module, data: Split, epochs: int, label: str, reg: Regularizer | None = None, salt: int = 0) -> None:
        c = self.config
        generator = torch.Generator().manual_seed(c.seed * 1000 + salt)
        optimizer = adam(model, c.lr)  # fresh per task, unlike the post
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(c.seed * 1000 + salt)  # dropout masks: the same whatever ran before
            train_task(model, data, steps=steps(data, epochs, c.batch_size), batch_size=c.batch_size,
                       optimizer=optimizer, generator=generator, regularizer=reg, label=label, on_step=self.on_step)

    def regularizer(self, name: str, strength: float) -> Regularizer | None:
        p = self.rows[name]
        return METHODS[p.method].build(strength if p.strength else None, method_options(self.config, p), self.config.seed)

    def task_a_phase(self, schedule: Schedule, names: tuple[str, ...]) -> dict[str, Any]:
        """Train on task A; the state of each named row's regularizer consolidated there (it does not
        depend on the strength, so it is computed once for every strength tried)."""
        start = time.perf_counter()
        model = self.new_model(schedule.dropout)
        self.train(model, self.task_a.train, schedule.epochs_a, "task A", salt=1)
        states, seconds = {}, {}
        for name in names:
            begin = time.perf_counter()
            reg = self.regularizer(name, 1.0)
            reg.consolidate(model, (self.task_a.train.x, self.task_a.train.y))
            states[name] = reg.state_dict()
            seconds[name] = round(time.perf_counter() - begin, 3)
        return {"model": model.state_dict(), "states": states, "consolidate_seconds": seconds,
                "seconds": round(time.perf_counter() - start, 3)}

    def multitask(self, schedule: Schedule) -> dict[str, Any]:
        start = time.perf_counter()
        model = self.new_model(schedule.dropout)
        self.train(model, union(self.task_a.train, self.task_b.train), schedule.epochs_a, "multitask", salt=3)
        return self.outcome(model, schedule, None, start)

    def task_b_phase(self, name: str, schedule: Schedule, after_a: dict[str, Any], strength: float | None = None) -> dict[str, Any]:
        """Procedure ``name`` at ``strength`` from task A's state through task B."""
        start = time.perf_counter()
        model = self.new_model(schedule.dropout)
        model.load_state_dict(after_a["model"])
        reg = None if strength is None else self.regularizer(name, strength)
        if reg is not None:
            reg.load_state_dict(after_a["states"][name])
        label = f"{name} λ={strength:g}, task B" if reg is not None else f"{name}, task B"
        self.train(model, self.task_b.train, schedule.epochs_b, label, reg, salt=2)
        return self.outcome(model, schedule, reg, start)

    def task_b_phases(self, pairs: list[tuple[str, float | None]], schedule: Schedule,
                      after_a: dict[str, Any]) -> list[dict[str, Any]]:
        """:meth:`task_b_phase` for each (row, strength) of ``pairs``, trained as one stacked model
        (:func:`forgetless.post_stacked.task_b_phases`)."""
        return task_b_phases(self, pairs, schedule, after_a)

    def outcome(self, model: nn.Module, schedule: Schedule, reg: Regularizer | None, start: float) -> dict[str, Any]:
        scores = {split: {t.name: accuracy(model, getattr(t, split)) for t in self.bench.tasks} for split in ("test", "valid")}
        return {"accuracy": scores["test"], "valid_accuracy": scores["valid"], "schedule": asdict(schedule),
                "seconds": round(time.perf_counter() - start, 3),
                "hyperparameters": reg.hyperparameters() if reg is not None else {},
                "memory": reg.memory() if reg is not None else {}}  # bytes per module of task A's state
