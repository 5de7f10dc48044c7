"""One method on one benchmark over seeds: a typed config → accuracy matrices → metrics.

``R[t, k]`` is the test accuracy on task k after training task t (see :mod:`forgetless.metrics`).
:func:`run_seed` is one training run, a function of (config, benchmark, seed) alone;
:func:`run_experiment` runs every seed (and the strength search) and returns the result's numbers.
Nothing here writes files: :mod:`forgetless.runs` does.
"""
from __future__ import annotations

import logging
import math
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
from .stacked import StackedMLP, stackable, train_stacked
from .strength import StrengthSearch, search_strength
from .training import TrainingError, accuracy, adam, train_joint, train_task

log = logging.getLogger(__name__)

Progress = Callable[[str, int], Callable[[], None]]   # progress(label, total) -> per-step callback
BenchmarkFactory = Callable[[int], Benchmark]         # seed -> the benchmark built with it
SELECTION = "hyperparameters chosen on validation data held out of the training sets; accuracies are on the test sets"
SELECTION_NONE = ("no validation split (valid_fraction = 0): trained on all training data with the hyperparameters "
                  "given; accuracies are on the test sets")
# Copies of the parameters training may hold at once: weights, gradients, Adam's two moments and
# up to four a regularizer keeps (SI during a task: Ω, θ*, ω and θ before the step).
PARAMETER_COPIES = 8
# The strength search trains its strengths stacked (forgetless.stacked) by default up to this many parameters:
# bench/bench_stacked.py measured whole searches 1.7x faster on 784-128-10, 1.3x on 784-400-400-10 (478k).
STACK_MAX_PARAMETERS = 500_000


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
            reg.consolidate(model, (task.train.x, task.train.y), output_transform=task_output_transform(task, bench.scenario))
            seconds["consolidate"] += time.perf_counter() - start
        start = time.perf_counter()
        R[t], V[t] = _evaluate(model, bench, t, "test"), _evaluate(model, bench, t, "valid")
        seconds["evaluate"] += time.perf_counter() - start
    return SeedRun(seed, R, V, baseline, {k: round(v, 3) for k, v in seconds.items()}, reg and reg.memory())


def _joint_transform(bench: Benchmark, task: int, stage: int):
    # Class-IL: everything seen up to the current stage is active for every sample.
    if bench.scenario == "class":
        return task_output_transform(bench.tasks[stage], "class")
    return task_output_transform(bench.tasks[task], bench.scenario)


def choose_strength(config: RunConfig, make_bench: BenchmarkFactory, progress: Progress | None,
                    stack: bool | None = None) -> tuple[StrengthSearch, SeedRun, str]:
    """Search the method's grid with the first seed, scoring validation average accuracy.

    Returns the search, the first seed's run at the chosen strength (not trained twice) and how the
    grid was trained: every strength at once as one stacked model (``stack`` True, or None where
    :func:`stack_problem` finds nothing against it), else one after another.
    """
    seed = config.seeds[0]
    bench = make_bench(seed)
    grid = sorted(set(config.strength_grid or METHODS[config.method].strength_grid))
    problem = stack_problem(config, bench, grid, forced=bool(stack)) if stack is not False else "not asked for"
    if problem is None:
        runs = dict(zip(grid, run_strengths_stacked(config, bench, seed, grid, progress)))
        result = StrengthSearch(tuple(grid), tuple(float(r.valid_matrix[-1].mean()) if r else math.nan for r in runs.values()))
        return result, runs[result.best], f"stacked: {len(grid)} strengths at once"
    if stack:
        raise ValueError(f"the strength search cannot train its strengths stacked: {problem}")
    tried: dict[float, SeedRun] = {}

    def score(strength: float) -> float:
        tried[strength] = run_seed(config.with_strength(strength), bench, seed, progress)
        return float(tried[strength].valid_matrix[-1].mean())

    search = search_strength(score, grid)
    return search, tried[search.best], f"one at a time ({problem})"


def stack_problem(config: RunConfig, bench: Benchmark, strengths: list[float], forced: bool = False) -> str | None:
    """Why the strengths of ``config``'s search cannot (or, unless ``forced``, should not) be trained
    stacked, or None."""
    if len(strengths) < 2:
        return "fewer than two strengths"
    if METHODS[config.method].joint or bench.tasks[0].train.y.dim() != 1:
        return "not a sequence of classification tasks"
    model = new_model(config, bench, config.seeds[0])
    if any(isinstance(m, nn.Dropout) and m.p > 0 for m in model.modules()):
        return "dropout: separate runs draw their masks from the global RNG one after another, not alike"
    size = sum(p.numel() for p in model.parameters())
    if not forced and size > STACK_MAX_PARAMETERS:
        return f"{size} parameters: stacked is not measured to pay above {STACK_MAX_PARAMETERS}"
    task = bench.tasks[0]
    probe = METHODS[config.method].build(1.0, config.method_options(), config.seeds[0])
    if probe is not None and stackable(model, [probe]) is None:  # its state after a task decides (e.g. K-FAC)
        probe.consolidate(model, (task.train.x[:8], task.train.y[:8]),
                          output_transform=task_output_transform(task, bench.scenario))
    return stackable(model, [probe])


def run_strengths_stacked(config: RunConfig, bench: Benchmark, seed: int, strengths: list[float],
                          progress: Progress | None = None) -> list[SeedRun | None]:
    """:func:`run_seed` at each of ``strengths``, trained as one stacked model (:mod:`forgetless.stacked`);
    None for a strength whose training diverged. Seconds are the stacked run's, shared out equally.

    Before the first ``consolidate`` no copy has a penalty, so with a fresh Adam per task the first task
    trains the same for every strength: it is trained, consolidated and scored once, and copied."""
    T, K = len(bench.tasks), len(strengths)
    method = METHODS[config.method]
    models = [new_model(config, bench, seed) for _ in strengths]
    baseline = np.array(_evaluate(models[0], bench, T - 1, "test"))
    regs = [method.build(s, config.method_options(), seed) for s in strengths]
    once = config.reset_optimizer  # the first task once (else Adam's moments would have to be stacked after it)
    stack = None if once else StackedMLP(models)
    R, V = np.zeros((K, T, T)), np.zeros((K, T, T))
    generator = torch.Generator().manual_seed(seed)  # every separate run draws these batches
    seconds: dict[str, float] = {"train": 0.0, "consolidate": 0.0, "evaluate": 0.0}
    failed: set[int] = set()
    for t, task in enumerate(bench.tasks):
        label = f"seed {seed} · {config.method} · {K} strengths at once · task {t + 1}/{T}"
        transform = task_output_transform(task, bench.scenario)
        on_step = progress(label, config.iterations) if progress else None
        start = time.perf_counter()
        if stack is None:
            try:
                train_task(models[0], task.train, steps=config.iterations, batch_size=config.batch_size,
                           optimizer=adam(models[0], config.lr), generator=generator, regularizer=regs[0],
                           output_transform=transform, label=label, on_step=on_step)
                losses: list = [0.0] * K
            except TrainingError as err:
                losses = [err] * K
            for model in models[1:]:
                model.load_state_dict(models[0].state_dict())
            stack = StackedMLP(models)
        else:
            if t == 0 or config.reset_optimizer:
                optimizer = adam(stack, config.lr)
            losses = train_stacked(stack, task.train, steps=config.iterations, batch_size=config.batch_size,
                                   optimizer=optimizer, generator=generator, regularizers=regs,
                                   output_transform=transform, label=label, on_step=on_step)
            stack.write_to(models)
        seconds["train"] += time.perf_counter() - start
        for k, loss in enumerate(losses):
            if isinstance(loss, TrainingError) and k not in failed:
                log.warning("strength %g diverged, skipped: %s", strengths[k], loss)
                failed.add(k)
        alike = once and t == 0  # every copy is the same model: measure it once
        live = [k for k in range(K) if k not in failed][:1 if alike else K]
        start = time.perf_counter()
        for k in live:
            regs[k].consolidate(models[k], (task.train.x, task.train.y), output_transform=transform)
        for k in range(1, K) if alike and live else ():
            regs[k].load_state_dict(regs[0].state_dict())  # the state does not depend on the strength
        seconds["consolidate"] += time.perf_counter() - start
        start = time.perf_counter()
        for k in live:
            R[k, t], V[k, t] = _evaluate(models[k], bench, t, "test"), _evaluate(models[k], bench, t, "valid")
        if alike:
            R[1:, t], V[1:, t] = R[0, t], V[0, t]
        seconds["evaluate"] += time.perf_counter() - start
    shared = {name: round(v / K, 3) for name, v in seconds.items()}
    return [None if k in failed else SeedRun(seed, R[k], V[k], baseline, dict(shared), regs[k].memory()) for k in range(K)]


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


def run_experiment(config: RunConfig, make_bench: BenchmarkFactory, progress: Progress | None = None,
                   stack: bool | None = None) -> dict[str, Any]:
    """Every seed of ``config`` (after the strength search when it asks for one): the result's numbers.
    ``stack``: how the search trains its strengths (see :func:`choose_strength`)."""
    requested = config.resolved()
    source = strength_source(config)
    search, trained = None, None
    runs: list[SeedRun] = []
    if config.auto:
        search, first, trained = choose_strength(config, make_bench, progress, stack)
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
        "strength_search": {**search.as_dict(), "trained": trained} if search else None,
        "strength_source": source,  # given, validation search, or which default (forgetless.defaults)
        "regularizer_memory": runs[0].memory,  # bytes per module of the state after the last task, first seed
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
            overwrite: bool = False, progress: Progress | None = None, stack: bool | None = None) -> tuple[dict[str, Any], bool]:
    """Run ``config`` into the run folder ``out`` (or reuse the finished run there); (result, reused)."""
    from . import runs

    return runs.produce(out, requested=config.resolved(), data_source=data_source, fingerprint=fingerprint,
                        compute=lambda: run_experiment(config, make_bench, progress, stack), write=runs.write_outputs,
                        overwrite=overwrite)


def aggregate(runs: list[SeedRun]) -> dict[str, dict[str, float]]:
    """Each metric over seeds (:func:`forgetless.stats.over_seeds`), and the validation average accuracy."""
    per_seed = [metrics.summarize(r.accuracy_matrix, r.baseline) for r in runs]
    out = {name: over_seeds([m[name] for m in per_seed]) for name in per_seed[0]}
    # NaN (null in JSON) without a validation split (valid_fraction = 0): nothing was scored; the
    # metrics refuse NaN, so the last row's mean is taken here
    out["valid_average_accuracy"] = over_seeds([float(np.mean(r.valid_matrix[-1])) for r in runs])
    return out
