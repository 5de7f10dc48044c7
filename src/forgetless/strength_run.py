"""The strength search of ``forgetless run --strength auto``: the first seed at each strength of the
grid, scored on validation data (never on test data), trained one at a time (the first task once) or,
where it applies and pays, all at once as one stacked model (:mod:`forgetless.stacked`).
"""
from __future__ import annotations

import logging
import math
import time
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from .benchmarks import Benchmark
from .benchmarks.registry import BENCHMARKS
from .benchmarks.scenarios import task_output_transform
from .methods import METHODS
from .run_config import RunConfig
from .seed_run import FirstTask, Progress, SeedRun, evaluate, new_model, run_seed
from .stacked import StackedMLP, stackable, train_stacked
from .strength import StrengthSearch, search_strength
from .training import TrainingError, adam, train_task

log = logging.getLogger(__name__)
# What a strength search maximises, by the benchmark's registry entry's `selection`.
SCORES = {"accuracy": "mean validation accuracy over the tasks after the last one (higher is better)",
          "loss": "mean validation loss over the tasks after the last one (lower is better)"}
# The search trains its strengths stacked by default up to this many parameters: bench/bench_stacked.py
# on a quiet machine (1 thread, load 1.5-1.9, both paths training the first task once) measured whole
# searches 1.51x faster on 784-128-10 (102k) and 1.01x on 784-400-400-10 (478k): it pays on small nets only.
STACK_MAX_PARAMETERS = 200_000


def choose_strength(config: RunConfig, make_bench: Callable[[int], Benchmark], progress: Progress | None,
                    stack: bool | None = None) -> tuple[StrengthSearch, SeedRun, dict[str, Any]]:
    """Search the grid (:attr:`RunConfig.search_grid`) with the first seed, scoring what the benchmark's
    registry entry selects by (:data:`SCORES`).

    Returns the search, the first seed's run at the chosen strength (not trained twice) and, per
    strength tried, both validation curves (mean accuracy and mean loss after the last task) and how
    the grid was trained (``trained``): every strength at once as one stacked model (``stack`` True, or
    None where :func:`stack_problem` finds nothing against it), else one after another, the first task
    trained once (:class:`~forgetless.seed_run.FirstTask`).
    """
    seed = config.seeds[0]
    bench = make_bench(seed)
    grid = sorted(set(config.search_grid))
    problem = stack_problem(config, bench, grid, forced=bool(stack)) if stack is not False else "not asked for"
    if problem is None:
        runs = dict(zip(grid, run_strengths_stacked(config, bench, seed, grid, progress)))
        result = StrengthSearch(tuple(grid), tuple(float(r.valid_matrix[-1].mean()) if r else math.nan for r in runs.values()))
        done = [r for r in runs.values() if r is not None]
        return result, runs[result.best], _curves(SCORES["accuracy"], [s for s, r in runs.items() if r], done) | {
            "trained": f"stacked: {len(grid)} strengths at once"}
    if stack:
        raise ValueError(f"the strength search cannot train its strengths stacked: {problem}")
    tried: dict[float, SeedRun] = {}
    by_loss = BENCHMARKS[config.benchmark].selection == "loss"
    shared: list[FirstTask] = []

    def score(strength: float) -> float:
        tried[strength] = run_seed(config.with_strength(strength), bench, seed, progress,
                                   first=shared[0] if shared else None, on_first=shared.append)
        last = tried[strength].valid_loss_matrix[-1] if by_loss else tried[strength].valid_matrix[-1]
        return float(-last.mean() if by_loss else last.mean())

    search = search_strength(score, config.search_grid)
    curves = _curves(SCORES["loss" if by_loss else "accuracy"], sorted(tried), [tried[s] for s in sorted(tried)])
    return search, tried[search.best], curves | {"trained": f"one at a time ({problem})"}


def _curves(score: str, strengths: list[float], done: list[SeedRun]) -> dict[str, Any]:
    return {"score": score, "strengths": strengths,
            "validation_accuracy": [float(r.valid_matrix[-1].mean()) for r in done],
            "validation_loss": [float(r.valid_loss_matrix[-1].mean()) for r in done]}



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
    if not forced and probe is not None and probe.kronecker() is not None:
        return "a Kronecker-factored penalty: stacked is not measured to pay in this search"
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
    baseline, baseline_loss = map(np.array, evaluate(models[0], bench, T - 1, "test"))
    regs = [method.build(s, config.method_options(), seed) for s in strengths]
    once = config.reset_optimizer  # the first task once (else Adam's moments would have to be stacked after it)
    stack = None if once else StackedMLP(models)
    R, V, L, VL = (np.zeros((K, T, T)) for _ in range(4))
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
            (R[k, t], L[k, t]), (V[k, t], VL[k, t]) = evaluate(models[k], bench, t, "test"), evaluate(models[k], bench, t, "valid")
        if alike:
            for M in (R, V, L, VL):
                M[1:, t] = M[0, t]
        seconds["evaluate"] += time.perf_counter() - start
    shared = {name: round(v / K, 3) for name, v in seconds.items()}
    return [None if k in failed else SeedRun(seed, R[k], V[k], baseline, dict(shared), L[k], VL[k], baseline_loss,
                                              regs[k].memory()) for k in range(K)]
