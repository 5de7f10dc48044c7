"""One method on one benchmark over seeds: typed config → accuracy matrices → metrics.

``R[t, k]`` is the test accuracy on task k after training task t (see :mod:`forgetless.metrics`).
"""
from __future__ import annotations

import inspect
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from . import metrics
from .benchmarks import Benchmark
from .benchmarks.registry import BENCHMARKS, SUPPORTED_SCENARIOS
from .benchmarks.scenarios import SCENARIOS, eval_output_transform, task_output_transform
from .fisher import ESTIMATORS
from .models import mlp
from .regularizers import REGULARIZERS, Regularizer
from .strength import check_grid
from .training import accuracy, adam, train_joint, train_task

METHODS: tuple[str, ...] = ("naive", "joint", *REGULARIZERS)
# Defaults for each method's strength (λ, or c for SI); `--strength auto` searches on validation data.
DEFAULT_STRENGTH = {"l2": 1.0, "ewc": 1000.0, "online-ewc": 1000.0, "si": 1.0, "mas": 1.0}


# RunConfig fields that only some benchmarks take: (field, default, benchmarks).
BENCHMARK_ONLY: tuple[tuple[str, Any, tuple[str, ...]], ...] = (
    ("task_order", "fixed", ("split-mnist", "split-fashion")),
    ("padding", 0, ("permuted-mnist",)),
    ("permute_first", False, ("permuted-mnist",)),
)


@dataclass(frozen=True)
class RunConfig:
    """Every setting of a run; the resolved values are written to ``config.json`` before it starts."""

    benchmark: str = "split-mnist"
    scenario: str = "task"
    method: str = "ewc"
    seeds: tuple[int, ...] = (0,)
    strength: float | None = None       # λ (c for SI); None: the method's default
    strength_grid: tuple[float, ...] | None = None  # values `--strength auto` tries; None: the method's grid
    decay: float = 1.0                  # online EWC's γ
    decay_in_penalty: bool = False      # online EWC: γ once more in the penalty (van de Ven & Tolias's λ as is)
    damping: float = 0.1                # SI's ξ
    estimator: str = "exact"            # Fisher estimator for EWC / online EWC
    fisher_samples: int | None = None   # None: all of the task's training data
    hidden: tuple[int, ...] = (400, 400)
    iterations: int = 2000              # mini-batch updates per task
    batch_size: int = 128
    lr: float = 1e-3
    reset_optimizer: bool = True        # a fresh Adam per task; False: one Adam (and its moments) throughout
    n_tasks: int = 10                   # permuted MNIST only
    valid_fraction: float = 0.1         # held out of each task's training data; 0: train on all, no validation
    task_order: str = "fixed"           # split benchmarks: "vandeven2019" = their per-seed digit pairs
    padding: int = 0                    # permuted MNIST: zeros around each image (2: their 32×32, 1024 inputs)
    permute_first: bool = False         # permuted MNIST: permute task 1 too (their code, every seed but 0)

    def __post_init__(self) -> None:
        _choice("benchmark", self.benchmark, tuple(BENCHMARKS))
        _choice("scenario", self.scenario, SCENARIOS)
        _choice("method", self.method, METHODS)
        _choice("estimator", self.estimator, ESTIMATORS)
        if self.scenario not in SUPPORTED_SCENARIOS[self.benchmark]:
            raise ValueError(f"{self.benchmark} has only the {', '.join(SUPPORTED_SCENARIOS[self.benchmark])} scenario")
        if not self.seeds:
            raise ValueError("seeds: give at least one seed")
        if self.strength_grid is not None:
            check_grid(self.strength_grid)
        if self.strength is not None and not (0 <= self.strength < math.inf):
            raise ValueError(f"strength must be a finite number >= 0, got {self.strength}")
        if not 0 <= self.decay <= 1:
            raise ValueError(f"decay must be in [0, 1], got {self.decay}")
        if not self.damping > 0:
            raise ValueError(f"damping must be > 0, got {self.damping}")
        for name in ("iterations", "batch_size", "n_tasks"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.hidden or min(self.hidden) < 1:
            raise ValueError(f"hidden must list layer widths >= 1, got {self.hidden}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        # A benchmark option set for a benchmark without it would be silently ignored: refuse it.
        for name, default, benchmarks in BENCHMARK_ONLY:
            if getattr(self, name) != default and self.benchmark not in benchmarks:
                raise ValueError(f"{name} is an option of {' and '.join(benchmarks)} only, not {self.benchmark}")

    @property
    def resolved_strength(self) -> float | None:
        if self.method not in DEFAULT_STRENGTH:
            return None
        return DEFAULT_STRENGTH[self.method] if self.strength is None else self.strength

    def benchmark_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"valid_fraction": self.valid_fraction}
        if self.benchmark == "permuted-mnist":
            options |= {"n_tasks": self.n_tasks, "padding": self.padding, "permute_first": self.permute_first}
        if self.benchmark in ("split-mnist", "split-fashion"):
            options["task_order"] = self.task_order
        return options

    def resolved(self) -> dict[str, Any]:
        out = asdict(self)
        out["strength"] = self.resolved_strength
        out["hidden"], out["seeds"] = list(self.hidden), list(self.seeds)
        out["strength_grid"] = None if self.strength_grid is None else list(self.strength_grid)
        return out


def _choice(name: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ValueError(f"unknown {name} {value!r}; valid: {', '.join(valid)}")


def make_regularizer(config: RunConfig, seed: int) -> Regularizer | None:
    """The method's regularizer with the config's hyperparameters (None for naive and joint)."""
    if config.method not in REGULARIZERS:
        return None
    cls = REGULARIZERS[config.method]
    available = {**asdict(config), "strength": config.resolved_strength, "seed": seed}
    params = inspect.signature(cls).parameters
    return cls(**{name: available[name] for name in params if name in available})


@dataclass
class SeedRun:
    seed: int
    accuracy_matrix: np.ndarray      # test, R[t, k]
    valid_matrix: np.ndarray         # validation, same layout
    baseline: np.ndarray             # test accuracy of the untrained network, per task
    seconds: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "accuracy_matrix": self.accuracy_matrix.tolist(),
                "valid_matrix": self.valid_matrix.tolist(), "baseline": self.baseline.tolist(),
                "metrics": metrics.summarize(self.accuracy_matrix, self.baseline), "seconds": self.seconds}


def _evaluate(model: nn.Module, bench: Benchmark, trained: int, split: str) -> list[float]:
    return [accuracy(model, getattr(task, split), output_transform=eval_output_transform(bench, trained=trained, evaluated=k))
            for k, task in enumerate(bench.tasks)]


def run_seed(
    config: RunConfig, bench: Benchmark, seed: int,
    progress: Callable[[str, int], Callable[[], None]] | None = None,
) -> SeedRun:
    """Train the sequence once; ``progress(label, total)`` returns a per-step callback."""
    T = len(bench.tasks)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = mlp(bench.tasks[0].train.x.shape[1], config.hidden, bench.n_outputs)
    baseline = np.array(_evaluate(model, bench, T - 1, "test"))
    R, V = np.zeros((T, T)), np.zeros((T, T))
    reg = make_regularizer(config, seed)
    generator = torch.Generator().manual_seed(seed)
    seconds: dict[str, float] = {"train": 0.0, "consolidate": 0.0, "evaluate": 0.0}
    for t, task in enumerate(bench.tasks):
        label = f"seed {seed} · {config.method} · task {t + 1}/{T}"
        on_step = progress(label, config.iterations) if progress else None
        if t == 0 or config.reset_optimizer:
            optimizer = adam(model, config.lr)
        start = time.perf_counter()
        if config.method == "joint":  # upper bound: all data of the tasks so far
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
        R[t], V[t] = _evaluate(model, bench, t, "test"), _evaluate(model, bench, t, "valid")
        seconds["evaluate"] += time.perf_counter() - start
    return SeedRun(seed, R, V, baseline, {k: round(v, 3) for k, v in seconds.items()})


def _joint_transform(bench: Benchmark, task: int, stage: int):
    # Class-IL: everything seen up to the current stage is active for every sample.
    if bench.scenario == "class":
        return task_output_transform(bench.tasks[stage], "class")
    return task_output_transform(bench.tasks[task], bench.scenario)


def aggregate(runs: list[SeedRun]) -> dict[str, dict[str, float]]:
    """Mean and standard deviation (ddof=1 when ≥ 2 seeds) of each metric over seeds."""
    per_seed = [metrics.summarize(r.accuracy_matrix, r.baseline) for r in runs]
    out = {}
    for name in per_seed[0]:
        values = np.array([m[name] for m in per_seed], dtype=float)
        std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        out[name] = {"mean": float(values.mean()), "std": std}
    # NaN (null in JSON) without a validation split (valid_fraction = 0): nothing was scored.
    valid = np.array([r.valid_matrix[-1].mean() for r in runs])
    spread = float(valid.std(ddof=1)) if len(valid) > 1 else (0.0 if np.isfinite(valid).all() else math.nan)
    out["valid_average_accuracy"] = {"mean": float(valid.mean()), "std": spread}
    return out
