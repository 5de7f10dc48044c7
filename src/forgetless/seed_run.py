"""One training run: a method on a benchmark with one seed, from the untrained network to the
accuracy matrix ``R[t, k]`` (test accuracy on task k after training task t) and the loss matrix
``L[t, k]`` (mean test loss there: nats per sample, or per byte for a language model).

:func:`run_seed` is a function of (config, benchmark, seed) alone; :mod:`forgetless.experiment` runs
every seed, :mod:`forgetless.strength_run` the strength search.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from . import metrics
from .benchmarks import Benchmark
from .benchmarks.registry import make_model
from .benchmarks.scenarios import eval_output_transform, task_output_transform
from .memory import check_fits
from .methods import METHODS
from .run_config import RunConfig
from .training import accuracy_and_loss, adam, train_joint, train_task

Progress = Callable[[str, int], Callable[[], None]]   # progress(label, total) -> per-step callback
# Copies of the parameters training may hold at once: weights, gradients, Adam's two moments and
# up to four a regularizer keeps (SI during a task: Ω, θ*, ω and θ before the step).
PARAMETER_COPIES = 8


@dataclass
class SeedRun:
    seed: int
    accuracy_matrix: np.ndarray      # test, R[t, k]
    valid_matrix: np.ndarray         # validation, same layout
    baseline: np.ndarray             # test accuracy of the untrained network, per task
    seconds: dict[str, float] = field(default_factory=dict)
    loss_matrix: np.ndarray | None = None        # test, L[t, k]
    valid_loss_matrix: np.ndarray | None = None  # validation, same layout
    baseline_loss: np.ndarray | None = None      # test loss of the untrained network, per task
    memory: dict[str, Any] | None = None  # the regularizer's state after the last task (Regularizer.memory)

    def as_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "accuracy_matrix": self.accuracy_matrix.tolist(),
                "valid_matrix": self.valid_matrix.tolist(), "baseline": self.baseline.tolist(),
                "metrics": self.metrics(), "seconds": self.seconds, "loss_matrix": self.loss_matrix.tolist(),
                "valid_loss_matrix": self.valid_loss_matrix.tolist(), "baseline_loss": self.baseline_loss.tolist()}

    def metrics(self) -> dict[str, float]:
        return metrics.summarize(self.accuracy_matrix, self.baseline) | metrics.summarize_losses(self.loss_matrix)


def new_model(config: RunConfig, bench: Benchmark, seed: int) -> nn.Module:
    """The benchmark's untrained network, its weights drawn from ``seed`` (the global RNG untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return make_model(config.benchmark, bench, seed=seed, **config.model_options())


def check_resources(config: RunConfig, bench: Benchmark) -> None:
    """Refuse, in one line, a model too big to train here (built on the meta device: no memory)."""
    with torch.device("meta"):
        model = make_model(config.benchmark, bench, **config.model_options())
    count = sum(p.numel() for p in model.parameters())
    check_fits(count * 4 * PARAMETER_COPIES, f"training a {count / 1e6:.1f}M-parameter model "
                                             f"(its weights, gradients, Adam's moments and the method's state)")


def evaluate(model: nn.Module, bench: Benchmark, trained: int, split: str) -> tuple[list[float], list[float]]:
    """(accuracy, loss) on every task's ``split``, as evaluated after training task ``trained``."""
    scores = [accuracy_and_loss(model, getattr(task, split),
                                output_transform=eval_output_transform(bench, trained=trained, evaluated=k))
              for k, task in enumerate(bench.tasks)]
    return [a for a, _ in scores], [loss for _, loss in scores]


@dataclass(frozen=True)
class FirstTask:
    """A run right after its first task (copies, never shared with a live run). It does not depend on
    the strength: no penalty acts before the first ``consolidate``, and a strength only scales the
    penalty. So a strength search trains the first task once and resumes every strength from here."""

    model: dict[str, Any]
    optimizer: dict[str, Any]
    generator: torch.Tensor
    regularizer: dict[str, Any] | None
    rows: tuple[np.ndarray, ...]      # R[0], V[0], L[0], VL[0]
    seconds: dict[str, float]


def run_seed(config: RunConfig, bench: Benchmark, seed: int, progress: Progress | None = None, *,
             first: FirstTask | None = None, on_first: Callable[[FirstTask], None] | None = None) -> SeedRun:
    """Train the sequence once with ``seed``; ``progress(label, total)`` returns a per-step callback.

    ``first``: resume after the first task from this (of the same config but the strength) instead
    of training it; ``on_first``: receives the run after its first task, when it trains it.
    """
    T = len(bench.tasks)
    model = new_model(config, bench, seed)
    baseline, baseline_loss = map(np.array, evaluate(model, bench, T - 1, "test"))
    R, V, L, VL = (np.zeros((T, T)) for _ in range(4))
    method = METHODS[config.method]
    reg = method.build(config.resolved_strength, config.method_options(), seed) if method.has_strength else None
    generator = torch.Generator().manual_seed(seed)
    seconds: dict[str, float] = {"train": 0.0, "consolidate": 0.0, "evaluate": 0.0}
    for t, task in enumerate(bench.tasks):
        if t == 0 and first is not None:
            model.load_state_dict(first.model)
            optimizer = adam(model, config.lr)
            optimizer.load_state_dict(copy.deepcopy(first.optimizer))  # loading keeps the tensors it is given
            generator.set_state(first.generator)
            if reg is not None:
                reg.load_state_dict(first.regularizer)
            R[0], V[0], L[0], VL[0] = first.rows
            seconds = dict(first.seconds)
            continue
        label = f"seed {seed} · {config.method} · task {t + 1}/{T}"
        on_step = progress(label, config.iterations) if progress else None
        if t == 0 or config.reset_optimizer:
            optimizer = adam(model, config.lr)
        start = time.perf_counter()
        if method.joint:  # upper bound: all data of the tasks so far
            parts = [(bench.tasks[j].train, _joint_transform(bench, j, t)) for j in range(t + 1)]
            train_joint(model, parts, steps=config.iterations, batch_size=config.batch_size,
                        optimizer=optimizer, generator=generator, label=label, on_step=on_step)
        else:
            train_task(model, task.train, steps=config.iterations, batch_size=config.batch_size,
                       optimizer=optimizer, generator=generator, regularizer=reg,
                       output_transform=task_output_transform(task, bench.scenario), label=label, on_step=on_step)
        seconds["train"] += time.perf_counter() - start
        if reg is not None:
            start = time.perf_counter()
            reg.consolidate(model, (task.train.x, task.train.y),
                            output_transform=task_output_transform(task, bench.scenario))
            seconds["consolidate"] += time.perf_counter() - start
        start = time.perf_counter()
        (R[t], L[t]), (V[t], VL[t]) = evaluate(model, bench, t, "test"), evaluate(model, bench, t, "valid")
        seconds["evaluate"] += time.perf_counter() - start
        if t == 0 and on_first is not None:
            on_first(FirstTask(*copy.deepcopy((model.state_dict(), optimizer.state_dict())), generator.get_state(),
                               None if reg is None else copy.deepcopy(reg.state_dict()),
                               (R[0].copy(), V[0].copy(), L[0].copy(), VL[0].copy()), dict(seconds)))
    return SeedRun(seed, R, V, baseline, {k: round(v, 3) for k, v in seconds.items()}, L, VL, baseline_loss,
                   reg and reg.memory())


def _joint_transform(bench: Benchmark, task: int, stage: int):
    # Class-IL: everything seen up to the current stage is active for every sample.
    if bench.scenario == "class":
        return task_output_transform(bench.tasks[stage], "class")
    return task_output_transform(bench.tasks[task], bench.scenario)
