"""The seed post's experiment, done right: multi-task, naive, L2 and EWC on even → odd MNIST.

Two protocols:
- ``fair`` (default): every procedure gets the same network (with Dropout(0.5), which the post found
  EWC needs), the same number of epochs per task, and multi-task training the same number of steps
  over the union of both tasks.
- ``post``: the post's own schedule — 6 epochs for multi-task, 6+6 for naive and L2, 3+9 with
  Dropout(0.5) for EWC.
Differences from the post that are deliberate: a correct per-sample Fisher, the squared L2 anchor,
dropout really on while training, a fresh Adam per task, and λ chosen on validation data.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from concurrent.futures import Future
from typing import Any, Callable, Sequence

import torch
from torch import nn

from .benchmarks import Benchmark, Split
from .models import mlp
from .regularizers import EWC, L2, Regularizer
from .strength import StrengthSearch, check_grid, next_to_try, score_or_nan
from .training import accuracy, adam, train_task
from .workers import job_runner, shared_memory_free

log = logging.getLogger(__name__)

PROCEDURES = ("multitask", "naive", "l2", "ewc")
PROTOCOLS = ("fair", "post")
SEARCHES = ("local", "grid")
# The post's reported test accuracies (task A, task B).
POST_RESULTS = {"multitask": (0.972, 0.974), "naive": (0.266, 0.983), "l2": (0.904, 0.598), "ewc": (0.768, 0.709)}
# EWC's λ is searched on validation data by default, over quarter decades 10^2.5 … 10^3.75 (316 … 5623):
# the region where the best λ of every seed 0-4 fell in our measurements (see the README); a winner on
# the grid's edge is flagged in result.json (`best_at_grid_edge`), and --strength-grid widens it.
STRENGTH_GRID = tuple(round(10.0 ** (k / 4), 1) for k in range(10, 16))


@dataclass(frozen=True)
class SeedConfig:
    """Every setting of ``forgetless seed``; all of it is written into ``result.json``."""

    seed: int = 0
    protocol: str = "fair"          # "fair" or "post" (see module docstring)
    epochs: int = 6                 # per task, fair protocol only
    dropout: float = 0.5            # after the hidden layer, every procedure, fair protocol only
    strength: float | str = "auto"  # EWC λ, or "auto": search `strength_grid` on validation data
    l2_strength: float = 1.0        # the post's 0.5·Σ‖θ−θ_A‖² (squared)
    estimator: str = "exact"        # Fisher estimator
    fisher_samples: int | None = None  # None: the whole training set of task A
    hidden: int = 128
    batch_size: int = 128
    lr: float = 1e-3
    valid_fraction: float = 0.1     # held out of each task's training data, seeded
    strength_grid: tuple[float, ...] = field(default=STRENGTH_GRID)
    strength_search: str = "local"  # "local": hill-climb the grid from its middle (see next_to_try); "grid": all of it

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"unknown protocol {self.protocol!r}; choose one of {', '.join(PROTOCOLS)}")
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if isinstance(self.strength, str):
            if self.strength != "auto":
                raise ValueError(f"strength must be a number >= 0 or 'auto', got {self.strength!r}")
        elif not (0 <= self.strength < math.inf):
            raise ValueError(f"strength must be a finite number >= 0, got {self.strength}")
        if not (0 <= self.l2_strength < math.inf):
            raise ValueError(f"l2 strength must be a finite number >= 0, got {self.l2_strength}")
        for name in ("hidden", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        check_grid(self.strength_grid)
        if self.strength_search not in SEARCHES:
            raise ValueError(f"unknown strength search {self.strength_search!r}; choose one of {', '.join(SEARCHES)}")


@dataclass(frozen=True)
class Schedule:
    epochs_a: int
    epochs_b: int
    dropout: float


def schedules(config: SeedConfig) -> dict[str, Schedule]:
    """Epochs on A, on B, and dropout for each procedure (multi-task: epochs_a over A ∪ B)."""
    if config.protocol == "post":
        return {"multitask": Schedule(6, 0, 0.0), "naive": Schedule(6, 6, 0.0),
                "l2": Schedule(6, 6, 0.0), "ewc": Schedule(3, 9, 0.5)}
    e, p = config.epochs, config.dropout
    # multi-task: e epochs over A ∪ B, so every sample is seen e times, as in the sequential procedures
    return {"multitask": Schedule(e, 0, p), "naive": Schedule(e, e, p),
            "l2": Schedule(e, e, p), "ewc": Schedule(e, e, p)}


def _steps(split: Split, epochs: int, batch_size: int) -> int:
    return epochs * math.ceil(len(split) / batch_size)


def _union(a: Split, b: Split) -> Split:
    return Split(torch.cat([a.x, b.x]), torch.cat([a.y, b.y]))


class SeedRunner:
    """The jobs of a seed run: task A, multi-task, and one task-B run per procedure (and per λ tried).

    Jobs depend on each other only through what they return (task A's model and EWC state go into
    the task-B jobs), and every one seeds its own randomness, so they can run in any order or process.
    """

    def __init__(self, config: SeedConfig, bench: Benchmark, on_step: Callable[[], None] | None = None):
        self.config, self.bench, self.on_step = config, bench, on_step
        self.task_a, self.task_b = bench.tasks

    def new_model(self, dropout: float) -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.config.seed)  # same initial weights for every procedure
            return mlp(784, (self.config.hidden,), self.bench.n_outputs, dropout)

    def train(self, model: nn.Module, data: Split, epochs: int, label: str, reg: Regularizer | None = None, salt: int = 0) -> None:
        c = self.config
        generator = torch.Generator().manual_seed(c.seed * 1000 + salt)
        optimizer = adam(model, c.lr)  # fresh per task, unlike the post
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(c.seed * 1000 + salt)  # dropout masks: the same whatever ran before
            train_task(model, data, steps=_steps(data, epochs, c.batch_size), batch_size=c.batch_size,
                       optimizer=optimizer, generator=generator, regularizer=reg, label=label, on_step=self.on_step)

    def ewc(self, strength: float) -> EWC:
        c = self.config
        return EWC(strength, estimator=c.estimator, fisher_samples=c.fisher_samples, seed=c.seed)

    def task_a_phase(self, schedule: Schedule, with_ewc: bool) -> dict[str, Any]:
        """Train on task A. Returns the model's state, and EWC's state after task A when ``with_ewc``:
        the Fisher does not depend on λ, so it is computed once for every λ tried."""
        start = time.perf_counter()
        model = self.new_model(schedule.dropout)
        self.train(model, self.task_a.train, schedule.epochs_a, "task A", salt=1)
        ewc_state = None
        if with_ewc:
            ewc = self.ewc(1.0)
            ewc.consolidate(model, (self.task_a.train.x, self.task_a.train.y))
            ewc_state = ewc.state_dict()
        return {"model": model.state_dict(), "ewc": ewc_state, "seconds": round(time.perf_counter() - start, 3)}

    def multitask(self, schedule: Schedule) -> dict[str, Any]:
        start = time.perf_counter()
        model = self.new_model(schedule.dropout)
        self.train(model, _union(self.task_a.train, self.task_b.train), schedule.epochs_a, "multitask", salt=3)
        return self.outcome(model, schedule, None, start)

    def task_b_phase(self, name: str, schedule: Schedule, after_a: dict[str, Any], strength: float | None = None) -> dict[str, Any]:
        """Procedure ``name`` (naive, l2, ewc at λ = ``strength``) from task A's state through task B."""
        start = time.perf_counter()
        model = self.new_model(schedule.dropout)
        model.load_state_dict(after_a["model"])
        reg: Regularizer | None = None
        if name == "ewc":
            reg = self.ewc(float(strength))
            reg.load_state_dict(after_a["ewc"])
        elif name == "l2":
            reg = L2(self.config.l2_strength)
            reg.consolidate(model, (self.task_a.train.x, self.task_a.train.y))
        label = f"ewc λ={strength:g}, task B" if name == "ewc" else f"{name}, task B"
        self.train(model, self.task_b.train, schedule.epochs_b, label, reg, salt=2)
        return self.outcome(model, schedule, reg, start)

    def outcome(self, model: nn.Module, schedule: Schedule, reg: Regularizer | None, start: float) -> dict[str, Any]:
        scores = {split: {t.name: accuracy(model, getattr(t, split)) for t in self.bench.tasks} for split in ("test", "valid")}
        return {"accuracy": scores["test"], "valid_accuracy": scores["valid"], "schedule": asdict(schedule),
                "seconds": round(time.perf_counter() - start, 3),
                "hyperparameters": reg.hyperparameters() if reg is not None else {}}


def steps_total(config: SeedConfig, bench: Benchmark) -> int:
    """Mini-batch updates the whole run makes, for the progress bar."""
    a, b = (t.train for t in bench.tasks)
    plan = schedules(config)
    total = _steps(_union(a, b), plan["multitask"].epochs_a, config.batch_size)
    for key in {(s.epochs_a, s.dropout) for n, s in plan.items() if n != "multitask"}:
        total += _steps(a, key[0], config.batch_size)
    for name in ("naive", "l2", "ewc"):
        total += _steps(b, plan[name].epochs_b, config.batch_size)
    # the search's run at the chosen λ is the EWC result; a local search may add runs (run_seed's on_more)
    total += (len(first_strengths(config)) - 1) * _steps(b, plan["ewc"].epochs_b, config.batch_size)
    return total


def first_strengths(config: SeedConfig) -> tuple[float, ...]:
    """The λ values EWC is trained with first: the given one, the whole grid, or a local search's start."""
    if config.strength != "auto":
        return (float(config.strength),)
    grid = tuple(sorted(config.strength_grid))
    return tuple(next_to_try(grid, {})) if config.strength_search == "local" else grid


def _workers_that_fit(workers: int, bench: Benchmark) -> int:
    """``workers``, or 1 when the data would not fit in the shared memory it is sent to workers through."""
    if workers == 1:
        return 1
    need = sum(t.nbytes for task in bench.tasks for split in (task.train, task.valid, task.test) for t in (split.x, split.y))
    free = shared_memory_free()
    if free is not None and free < need + (64 << 20):
        log.warning("only %d MB of shared memory free (/dev/shm), the data needs %d MB: running in one process "
                    "(with Docker, --shm-size=1g lifts this)", free >> 20, need >> 20)
        return 1
    return workers


def run_seed(config: SeedConfig, bench: Benchmark, on_step: Callable[[], None] | None = None, *, workers: int = 1,
             on_more: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Run the four procedures, in ``workers`` processes (1: here); returns the ``result.json`` content.

    ``on_step()`` after every training step; ``on_more(n)`` when the local λ search adds n steps to
    :func:`steps_total`'s count.

    The result does not depend on ``workers`` beyond float rounding: workers use one torch thread each,
    so a run here with one thread gives the same numbers.
    """
    workers = _workers_that_fit(workers, bench)
    plan = schedules(config)
    auto = config.strength == "auto"
    grid = tuple(sorted(config.strength_grid))
    local = auto and config.strength_search == "local"
    first = first_strengths(config)
    key = {name: (s.epochs_a, s.dropout) for name, s in plan.items() if name != "multitask"}
    runs: dict[tuple[str, float | None], Future] = {}
    scores: dict[float, float] = {}  # validation score of each λ tried (NaN: diverged)

    def score(strength: float) -> float:
        valid = runs["ewc", strength].result()["valid_accuracy"]
        return sum(valid.values()) / len(valid)

    with job_runner(SeedRunner, (config, bench), workers=workers, on_step=on_step) as jobs:
        # one task-A job per distinct schedule (the post protocol trains EWC's task A differently)
        schedule_a: dict[tuple[int, float], Schedule] = {}
        for name in ("ewc", "naive", "l2"):
            schedule_a.setdefault(key[name], plan[name])
        task_a = {jobs.submit("task_a_phase", s, k == key["ewc"]): k for k, s in schedule_a.items()}
        multitask = jobs.submit("multitask", plan["multitask"])
        ewc_runs: dict[Future, float] = {}
        pending = set(task_a)

        def start_ewc(strengths: Sequence[float], after_a: dict[str, Any]) -> None:
            for strength in strengths:
                runs["ewc", strength] = jobs.submit("task_b_phase", "ewc", plan["ewc"], after_a, strength)
                ewc_runs[runs["ewc", strength]] = strength
                pending.add(runs["ewc", strength])

        while pending:
            for done in jobs.wait(pending):
                pending.discard(done)
                if done in task_a:  # each procedure's task B starts as soon as its task A is done
                    for name in ("naive", "l2"):
                        if key[name] == task_a[done]:
                            runs[name, None] = jobs.submit("task_b_phase", name, plan[name], done.result())
                    if key["ewc"] == task_a[done]:
                        after_a_ewc = done.result()
                        start_ewc(first, after_a_ewc)
                elif auto:  # an EWC run of the search: once all started are scored, a local search may ask for more
                    scores[ewc_runs[done]] = score_or_nan(score, ewc_runs[done])
                    if local and len(scores) == len(ewc_runs):
                        more = next_to_try(grid, scores)
                        if more and on_more is not None:
                            on_more(len(more) * _steps(bench.tasks[1].train, plan["ewc"].epochs_b, config.batch_size))
                        start_ewc(more, after_a_ewc)
        jobs.wait_all([multitask, *runs.values()])
    outcomes = {"multitask": multitask.result(), "naive": runs["naive", None].result(), "l2": runs["l2", None].result()}
    search = StrengthSearch(grid, tuple(scores.get(v) for v in grid)) if auto else None
    strength = search.best if search is not None else first[0]
    outcomes["ewc"] = runs["ewc", strength].result()
    procedures = {name: outcomes[name] for name in PROCEDURES}
    resolved = asdict(config) | {"strength": strength, "strength_source": "validation search" if search else "given"}
    return {
        "procedures": procedures,
        "config": resolved,
        "strength_search": search.as_dict() if search else None,
        "task_a_seconds": {f"{e} epochs, dropout {p:g}": f.result()["seconds"] for f, (e, p) in task_a.items()},
        "workers": workers,
        "post": {k: {"A": a, "B": b} for k, (a, b) in POST_RESULTS.items()},
        "selection": "hyperparameters chosen on validation data held out of the training sets; accuracies are on the MNIST test set",
    }
