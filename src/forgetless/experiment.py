"""One method on one benchmark over seeds: a typed config → accuracy matrices → metrics.

``R[t, k]`` is the test accuracy on task k after training task t, ``L[t, k]`` the mean test loss there
(nats per sample, or per byte for a language model; see :mod:`forgetless.metrics`).
:func:`~forgetless.seed_run.run_seed` is one training run, a function of (config, benchmark, seed) alone;
:func:`run_experiment` runs every seed (after the strength search of :mod:`forgetless.strength_run`,
asked for, or run where no default strength is committed: then :func:`forgetless.provenance.search_notice`
is logged as a warning first) and returns the result's numbers.
Nothing here writes files: :mod:`forgetless.runs` does.
"""
from __future__ import annotations

import logging
from typing import Any, Callable

import numpy as np

from .benchmarks import Benchmark
from .benchmarks.registry import BENCHMARKS
from .provenance import search_notice, sources, strength_source
from .run_config import RunConfig
from .seed_run import Progress, SeedRun, check_resources, run_seed
from .stats import elementwise_over_seeds, over_seeds
from .strength_run import SCORES, choose_strength

__all__ = ["run_experiment", "execute", "prepare", "benchmark_factory", "aggregate", "check_resources",
           "choose_strength", "run_seed", "Progress", "BenchmarkFactory", "SeedRun"]

log = logging.getLogger(__name__)
BenchmarkFactory = Callable[[int], Benchmark]         # seed -> the benchmark built with it
SELECTION = "hyperparameters chosen on validation data held out of the training sets; accuracies are on the test sets"
SELECTION_NONE = ("no validation split (valid_fraction = 0): trained on all training data with the hyperparameters "
                  "given; accuracies are on the test sets")


def run_experiment(config: RunConfig, make_bench: BenchmarkFactory, progress: Progress | None = None,
                   stack: bool | None = None) -> dict[str, Any]:
    """Every seed of ``config`` (after the strength search when it asks for one): the result's numbers.
    ``stack``: how the search trains its strengths (see :func:`forgetless.strength_run.choose_strength`)."""
    requested, setting_sources, source = config.resolved(), sources(config), strength_source(config)
    search, curves = None, None
    runs: list[SeedRun] = []
    if config.auto:
        if notice := search_notice(config):  # a search not asked for: said loudly, before it trains
            log.warning(notice)
        search, first, curves = choose_strength(config, make_bench, progress, stack)
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
        "regularizer_memory": runs[0].memory,  # bytes per module of the state after the last task, first seed
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
            overwrite: bool = False, progress: Progress | None = None, stack: bool | None = None) -> tuple[dict[str, Any], bool]:
    """Run ``config`` into the run folder ``out`` (or reuse the finished run there); (result, reused)."""
    from . import runs

    return runs.produce(out, requested=config.resolved(), data_source=data_source, fingerprint=fingerprint,
                        compute=lambda: run_experiment(config, make_bench, progress, stack), write=runs.write_outputs,
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
