"""One method on one benchmark over seeds: a typed config → accuracy matrices → metrics.

``R[t, k]`` is the test accuracy on task k after training task t, ``L[t, k]`` the mean test loss there
(nats per sample, or per byte for a language model; see :mod:`forgetless.metrics`).
:func:`run_seed` is one training run, a function of (config, benchmark, seed) alone;
:func:`run_experiment` runs every seed (and the strength search) and returns the result's numbers.
Nothing here writes files: :mod:`forgetless.runs` does.
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
from .benchmarks.registry import BENCHMARKS, make_model
from .benchmarks.scenarios import eval_output_transform, task_output_transform
from .memory import check_fits
from .methods import METHODS
from .provenance import sources, strength_source
from .run_config import RunConfig
from .stats import elementwise_over_seeds, over_seeds
from .strength import StrengthSearch, search_strength
from .training import accuracy_and_loss, adam, train_joint, train_task

Progress = Callable[[str, int], Callable[[], None]]   # progress(label, total) -> per-step callback
BenchmarkFactory = Callable[[int], Benchmark]         # seed -> the benchmark built with it
SELECTION = "hyperparameters chosen on validation data held out of the training sets; accuracies are on the test sets"
SELECTION_NONE = ("no validation split (valid_fraction = 0): trained on all training data with the hyperparameters "
                  "given; accuracies are on the test sets")
# What a strength search maximises, by the benchmark's registry entry's `selection`.
SCORES = {"accuracy": "mean validation accuracy over the tasks after the last one (higher is better)",
          "loss": "mean validation loss over the tasks after the last one (lower is better)"}
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


def _evaluate(model: nn.Module, bench: Benchmark, trained: int, split: str) -> tuple[list[float], list[float]]:
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
    baseline, baseline_loss = map(np.array, _evaluate(model, bench, T - 1, "test"))
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
        (R[t], L[t]), (V[t], VL[t]) = _evaluate(model, bench, t, "test"), _evaluate(model, bench, t, "valid")
        seconds["evaluate"] += time.perf_counter() - start
        if t == 0 and on_first is not None:
            on_first(FirstTask(*copy.deepcopy((model.state_dict(), optimizer.state_dict())), generator.get_state(),
                               None if reg is None else copy.deepcopy(reg.state_dict()),
                               (R[0].copy(), V[0].copy(), L[0].copy(), VL[0].copy()), dict(seconds)))
    return SeedRun(seed, R, V, baseline, {k: round(v, 3) for k, v in seconds.items()}, L, VL, baseline_loss)


def _joint_transform(bench: Benchmark, task: int, stage: int):
    # Class-IL: everything seen up to the current stage is active for every sample.
    if bench.scenario == "class":
        return task_output_transform(bench.tasks[stage], "class")
    return task_output_transform(bench.tasks[task], bench.scenario)


def choose_strength(config: RunConfig, make_bench: BenchmarkFactory,
                    progress: Progress | None) -> tuple[StrengthSearch, SeedRun, dict[str, Any]]:
    """Search the grid (:attr:`RunConfig.search_grid`) with the first seed, scoring what the benchmark's
    registry entry selects by (:data:`SCORES`).

    Returns the search, the first seed's run at the chosen strength (not trained twice) and, per
    strength tried, both validation curves (mean accuracy and mean loss after the last task). The
    first task is trained once (:class:`FirstTask`).
    """
    seed = config.seeds[0]
    bench = make_bench(seed)
    tried: dict[float, SeedRun] = {}
    by_loss = BENCHMARKS[config.benchmark].selection == "loss"
    shared: list[FirstTask] = []

    def score(strength: float) -> float:
        tried[strength] = run_seed(config.with_strength(strength), bench, seed, progress,
                                   first=shared[0] if shared else None, on_first=shared.append)
        last = tried[strength].valid_loss_matrix[-1] if by_loss else tried[strength].valid_matrix[-1]
        return float(-last.mean() if by_loss else last.mean())

    search = search_strength(score, config.search_grid)
    done = [tried[s] for s in sorted(tried)]
    curves = {"score": SCORES["loss" if by_loss else "accuracy"], "strengths": sorted(tried),
              "validation_accuracy": [float(r.valid_matrix[-1].mean()) for r in done],
              "validation_loss": [float(r.valid_loss_matrix[-1].mean()) for r in done]}
    return search, tried[search.best], curves


def run_experiment(config: RunConfig, make_bench: BenchmarkFactory, progress: Progress | None = None) -> dict[str, Any]:
    """Every seed of ``config`` (after the strength search when it asks for one): the result's numbers."""
    requested, setting_sources, source = config.resolved(), sources(config), strength_source(config)
    search, curves = None, None
    runs: list[SeedRun] = []
    if config.auto:
        search, first, curves = choose_strength(config, make_bench, progress)
        runs.append(first)
        config = config.with_strength(search.best)
    for seed in config.seeds[len(runs):]:
        runs.append(run_seed(config, make_bench(seed), seed, progress))
    bench = make_bench(config.seeds[0])
    mean, std = elementwise_over_seeds([r.accuracy_matrix for r in runs])
    mean_loss, std_loss = elementwise_over_seeds([r.loss_matrix for r in runs])
    strength_search = None if search is None else search.as_dict() | curves
    if strength_search is not None and strength_search["score"] == SCORES["loss"]:  # the search maximised −loss
        strength_search["validation_scores"] = [None if v is None else -v for v in strength_search["validation_scores"]]
    return {
        "config": config.resolved(),
        "requested_config": requested,  # what was asked ("auto"), beside what ran
        "task_names": [t.name for t in bench.tasks],
        "seeds": [r.as_dict() for r in runs],
        "metrics": aggregate(runs),
        "mean_accuracy_matrix": mean.tolist(),
        "std_accuracy_matrix": std.tolist(),  # sample std over seeds, as every std in results
        "strength_search": strength_search,
        "strength_source": source,  # given, validation search, or which default (forgetless.defaults)
        "selection": SELECTION_NONE if config.benchmark_options().get("valid_fraction") == 0 else SELECTION,
        "mean_loss_matrix": mean_loss.tolist(),  # L[t, k], test
        "std_loss_matrix": std_loss.tolist(),
        "mean_valid_loss_matrix": elementwise_over_seeds([r.valid_loss_matrix for r in runs])[0].tolist(),
        "baseline_loss": elementwise_over_seeds([r.baseline_loss for r in runs])[0].tolist(),
        "loss_per": BENCHMARKS[config.benchmark].loss_per,  # the losses are nats per sample, or per byte
        "benchmark_info": bench.info,  # what the benchmark was built from (prose-code: text digests, Python)
        "setting_sources": setting_sources,  # where each other setting's value comes from (forgetless.provenance)
    }


def benchmark_factory(config: RunConfig, data: Any) -> BenchmarkFactory:
    """``seed -> benchmark`` for ``config``, keeping one benchmark in memory at a time (permuted MNIST is large)."""
    from .benchmarks.registry import make_benchmark

    cache: dict[int, Benchmark] = {}

    def make(seed: int) -> Benchmark:
        if seed not in cache:
            cache.clear()
            cache[seed] = make_benchmark(config.benchmark, data, scenario=config.scenario, seed=seed,
                                         **config.benchmark_options())
        return cache[seed]

    return make


def prepare(config: RunConfig, data: Any) -> BenchmarkFactory:
    """Build the first seed's benchmark and check the model fits, before any folder is made."""
    make_bench = benchmark_factory(config, data)
    check_resources(config, make_bench(config.seeds[0]))
    return make_bench


def execute(config: RunConfig, out, make_bench: BenchmarkFactory, *, data_source: str, fingerprint: str,
            overwrite: bool = False, progress: Progress | None = None) -> tuple[dict[str, Any], bool]:
    """Run ``config`` into the run folder ``out`` (or reuse the finished run there); (result, reused)."""
    from . import runs

    return runs.produce(out, requested=config.resolved(), data_source=data_source, fingerprint=fingerprint,
                        compute=lambda: run_experiment(config, make_bench, progress), write=runs.write_outputs,
                        overwrite=overwrite)


def aggregate(runs: list[SeedRun]) -> dict[str, dict[str, float]]:
    """Each metric over seeds (:func:`forgetless.stats.over_seeds`), and the validation average accuracy."""
    per_seed = [r.metrics() for r in runs]
    out = {name: over_seeds([m[name] for m in per_seed]) for name in per_seed[0]}
    # NaN (null in JSON) without a validation split (valid_fraction = 0): nothing was scored; the
    # metrics refuse NaN, so the last row's mean is taken here
    out["valid_average_accuracy"] = over_seeds([float(np.mean(r.valid_matrix[-1])) for r in runs])
    out["valid_average_loss"] = over_seeds([float(np.mean(r.valid_loss_matrix[-1])) for r in runs])
    return out
