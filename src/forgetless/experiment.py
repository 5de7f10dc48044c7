"""One method on one benchmark over seeds: a typed config → accuracy matrices → metrics.

``R[t, k]`` is the test accuracy on task k after training task t (see :mod:`forgetless.metrics`).
:func:`run_seed` is one training run, a function of (config, benchmark, seed) alone;
:func:`run_experiment` runs every seed (and the strength search) and returns the result's numbers.
Nothing here writes files: :mod:`forgetless.runs` does.
"""
from __future__ import annotations

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
from .defaults import global_default, lookup
from .run_config import RunConfig, run_config
from .stats import elementwise_over_seeds, over_seeds
from .strength import StrengthSearch, search_strength
from .training import accuracy, adam, train_joint, train_task

Progress = Callable[[str, int], Callable[[], None]]   # progress(label, total) -> per-step callback
BenchmarkFactory = Callable[[int], Benchmark]         # seed -> the benchmark built with it
SELECTION = "hyperparameters chosen on validation data held out of the training sets; accuracies are on the test sets"
SELECTION_NONE = ("no validation split (valid_fraction = 0): trained on all training data with the hyperparameters "
                  "given; accuracies are on the test sets")
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
    memory: dict[str, Any] | None = None  # the regularizer's state after the last task (Regularizer.memory)

    def as_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "accuracy_matrix": self.accuracy_matrix.tolist(),
                "valid_matrix": self.valid_matrix.tolist(), "baseline": self.baseline.tolist(),
                "metrics": metrics.summarize(self.accuracy_matrix, self.baseline), "seconds": self.seconds}


def new_model(config: RunConfig, bench: Benchmark, seed: int) -> nn.Module:
    """The benchmark's untrained network, its weights drawn from ``seed`` (the global RNG untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return make_model(config.benchmark, bench, **config.model_options())


def check_resources(config: RunConfig, bench: Benchmark) -> None:
    """Refuse, in one line, a model too big to train here (built on the meta device: no memory)."""
    with torch.device("meta"):
        model = make_model(config.benchmark, bench, **config.model_options())
    count = sum(p.numel() for p in model.parameters())
    check_fits(count * 4 * PARAMETER_COPIES, f"training a {count / 1e6:.1f}M-parameter model "
                                             f"(its weights, gradients, Adam's moments and the method's state)")


def _evaluate(model: nn.Module, bench: Benchmark, trained: int, split: str) -> list[float]:
    return [accuracy(model, getattr(task, split), output_transform=eval_output_transform(bench, trained=trained, evaluated=k))
            for k, task in enumerate(bench.tasks)]


def run_seed(config: RunConfig, bench: Benchmark, seed: int, progress: Progress | None = None) -> SeedRun:
    """Train the sequence once with ``seed``; ``progress(label, total)`` returns a per-step callback."""
    T = len(bench.tasks)
    model = new_model(config, bench, seed)
    baseline = np.array(_evaluate(model, bench, T - 1, "test"))
    R, V = np.zeros((T, T)), np.zeros((T, T))
    method = METHODS[config.method]
    reg = method.build(config.resolved_strength, config.method_options(), seed) if method.has_strength else None
    generator = torch.Generator().manual_seed(seed)
    seconds: dict[str, float] = {"train": 0.0, "consolidate": 0.0, "evaluate": 0.0}
    for t, task in enumerate(bench.tasks):
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
        R[t], V[t] = _evaluate(model, bench, t, "test"), _evaluate(model, bench, t, "valid")
        seconds["evaluate"] += time.perf_counter() - start
    return SeedRun(seed, R, V, baseline, {k: round(v, 3) for k, v in seconds.items()},
                   reg.memory() if reg is not None else None)


def _joint_transform(bench: Benchmark, task: int, stage: int):
    # Class-IL: everything seen up to the current stage is active for every sample.
    if bench.scenario == "class":
        return task_output_transform(bench.tasks[stage], "class")
    return task_output_transform(bench.tasks[task], bench.scenario)


def choose_strength(config: RunConfig, make_bench: BenchmarkFactory,
                    progress: Progress | None) -> tuple[StrengthSearch, SeedRun]:
    """Search the method's grid with the first seed, scoring validation average accuracy.

    Returns the search and the first seed's run at the chosen strength (not trained twice).
    """
    seed = config.seeds[0]
    bench = make_bench(seed)
    tried: dict[float, SeedRun] = {}

    def score(strength: float) -> float:
        tried[strength] = run_seed(config.with_strength(strength), bench, seed, progress)
        return float(tried[strength].valid_matrix[-1].mean())

    search = search_strength(score, config.strength_grid or METHODS[config.method].strength_grid)
    return search, tried[search.best]


def strength_source(config: RunConfig) -> str | None:
    """Where the run's strength comes from, said in its report: given, a validation search, the default
    chosen for its benchmark and scenario (which file, which command, and which settings of the search
    differ from the run's), or the method's global default where no search was committed.

    Example:
        >>> strength_source(RunConfig(method="ewc", strength=5.0)), strength_source(RunConfig(method="naive"))
        ('given', None)
        >>> strength_source(RunConfig(benchmark="split-fashion", method="ewc"))[:73]
        'global default of ewc (1000): no validation search committed for split-fa'
        >>> print(strength_source(RunConfig(benchmark="permuted-mnist", scenario="domain", method="ewc")).split("; ")[1])
        searched with other settings than this run's: hidden [1000, 1000] (here [400, 400]), iterations 5000 (here 2000), lr 0.0001 (here 0.001), reset_optimizer false (here true)
    """
    if not METHODS[config.method].has_strength:
        return None
    if config.auto:
        return "validation search (first seed)"
    if config.strength is not None:
        return "given"
    where = f"{config.benchmark}/{config.scenario}"
    chosen = lookup(config.benchmark, config.scenario, config.method)
    if chosen is None:
        return (f"global default of {config.method} ({global_default(config.method):g}): no validation search committed "
                f"for {where} (forgetless.defaults); give --strength, or --strength auto to search")
    more = f" (and {len(chosen.files) - 1} more)" if len(chosen.files) > 1 else ""
    text = f"default for {where} from {chosen.files[0]}{more}, a validation search: {chosen.command}"
    searched = run_config({"benchmark": config.benchmark, "scenario": config.scenario, "method": config.method,
                           **chosen.settings}).resolved()
    mine = config.resolved()
    differ = [f"{k} {_shown(searched[k])} (here {_shown(mine.get(k))})" for k in sorted(searched)
              if k not in ("seeds", "strength", "strength_grid") and searched[k] != mine.get(k)]
    if differ:
        text += "; searched with other settings than this run's: " + ", ".join(differ)
    return text


def _shown(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def run_experiment(config: RunConfig, make_bench: BenchmarkFactory, progress: Progress | None = None) -> dict[str, Any]:
    """Every seed of ``config`` (after the strength search when it asks for one): the result's numbers."""
    requested = config.resolved()
    source = strength_source(config)
    search = None
    runs: list[SeedRun] = []
    if config.auto:
        search, first = choose_strength(config, make_bench, progress)
        runs.append(first)
        config = config.with_strength(search.best)
    for seed in config.seeds[len(runs):]:
        runs.append(run_seed(config, make_bench(seed), seed, progress))
    bench = make_bench(config.seeds[0])
    mean, std = elementwise_over_seeds([r.accuracy_matrix for r in runs])
    return {
        "config": config.resolved(),
        "requested_config": requested,  # what was asked ("auto"), beside what ran
        "task_names": [t.name for t in bench.tasks],
        "seeds": [r.as_dict() for r in runs],
        "metrics": aggregate(runs),
        "mean_accuracy_matrix": mean.tolist(),
        "std_accuracy_matrix": std.tolist(),  # sample std over seeds, as every std in results
        "strength_search": search.as_dict() if search else None,
        "strength_source": source,  # given, validation search, or which default (forgetless.defaults)
        # bytes per module of the method's state after the last task, first seed (None: no regularizer)
        "regularizer_memory": runs[0].memory,
        "selection": SELECTION_NONE if config.benchmark_options().get("valid_fraction") == 0 else SELECTION,
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
    per_seed = [metrics.summarize(r.accuracy_matrix, r.baseline) for r in runs]
    out = {name: over_seeds([m[name] for m in per_seed]) for name in per_seed[0]}
    # NaN (null in JSON) without a validation split (valid_fraction = 0): nothing was scored; the
    # metrics refuse NaN, so the last row's mean is taken here
    out["valid_average_accuracy"] = over_seeds([float(np.mean(r.valid_matrix[-1])) for r in runs])
    return out
