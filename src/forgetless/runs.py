"""A run folder: config.json first, an INCOMPLETE marker while it runs, result.json last.

An interrupted run leaves ``INCOMPLETE`` (saying so) and never a ``result.json`` that looks finished.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .benchmarks import Benchmark
from .experiment import RunConfig, SeedRun, aggregate, run_seed
from .report import versions, write_atomic, write_json
from .strength import StrengthSearch, search_strength

INCOMPLETE = "INCOMPLETE"
# Log-spaced grids for `--strength auto`, per method (λ for EWC-like methods, c for SI).
STRENGTH_GRIDS: dict[str, tuple[float, ...]] = {
    "ewc": tuple(10.0**k for k in range(0, 9)),
    "online-ewc": tuple(10.0**k for k in range(0, 9)),
    "si": tuple(10.0**k for k in range(-2, 5)),
    "mas": tuple(10.0**k for k in range(-2, 5)),
    "l2": tuple(10.0**k for k in range(-3, 4)),
}
NO_VALIDATION = ("strength 'auto' chooses the strength on validation data, but valid_fraction = 0 holds none out: "
                 "give the strength (e.g. --strength 1e6), or a valid_fraction > 0")
SELECTION = "hyperparameters chosen on validation data held out of the training sets; accuracies are on the test sets"
SELECTION_NONE = ("no validation split (valid_fraction = 0): trained on all training data with the hyperparameters "
                  "given; accuracies are on the test sets")
Progress = Callable[[str, int], Callable[[], None]]
BenchmarkFactory = Callable[[int], Benchmark]


def is_finished(folder: Path) -> bool:
    return (folder / "result.json").is_file() and not (folder / INCOMPLETE).exists()


def finished_result(folder: Path) -> dict[str, Any] | None:
    """The result of a finished run in ``folder``, or None (missing, unfinished or unreadable)."""
    if not is_finished(folder):
        return None
    try:
        return json.loads((folder / "result.json").read_text())
    except (OSError, ValueError, KeyError):
        return None


def choose_strength(
    config: RunConfig, make_bench: BenchmarkFactory, progress: Progress | None
) -> tuple[StrengthSearch, SeedRun]:
    """Search the method's grid with the first seed, scoring validation average accuracy.

    Returns the search and the first seed's run at the chosen strength (not trained twice).
    """
    seed = config.seeds[0]
    bench = make_bench(seed)
    tried: dict[float, SeedRun] = {}

    def score(strength: float) -> float:
        tried[strength] = run_seed(dataclasses.replace(config, strength=strength), bench, seed, progress)
        return float(tried[strength].valid_matrix[-1].mean())

    search = search_strength(score, config.strength_grid or STRENGTH_GRIDS[config.method])
    return search, tried[search.best]


def execute(
    config: RunConfig, out: Path, make_bench: BenchmarkFactory, *, auto_strength: bool = False,
    progress: Progress | None = None, data_source: str = "",
) -> dict[str, Any]:
    """Run every seed of ``config`` into ``out`` and write all files; returns the result.

    Raises:
        ValueError: ``auto_strength`` with ``valid_fraction = 0`` (no validation data to choose on).
    """
    search_needed = auto_strength and config.method in STRENGTH_GRIDS
    if search_needed and config.valid_fraction == 0:
        raise ValueError(NO_VALIDATION)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / INCOMPLETE, "This run has not finished (or was interrupted): its results are partial.\n")
    (out / "result.json").unlink(missing_ok=True)
    write_json(out / "config.json", {"config": config.resolved(), "auto_strength": auto_strength, "versions": versions()})
    start = time.perf_counter()
    requested = config.resolved()
    search = None
    runs: list[SeedRun] = []
    if search_needed:
        search, first = choose_strength(config, make_bench, progress)
        runs.append(first)
        config = dataclasses.replace(config, strength=search.best)
        write_json(out / "config.json", {"config": config.resolved(), "strength_search": search.as_dict(), "versions": versions()})
    for seed in config.seeds[len(runs):]:
        runs.append(run_seed(config, make_bench(seed), seed, progress))
    bench = make_bench(config.seeds[0])
    result = {
        "config": config.resolved(),
        "requested_config": requested | {"strength": "auto" if auto_strength else requested["strength"]},
        "task_names": [t.name for t in bench.tasks],
        "seeds": [r.as_dict() for r in runs],
        "metrics": aggregate(runs),
        "mean_accuracy_matrix": np.mean([r.accuracy_matrix for r in runs], axis=0).tolist(),
        "std_accuracy_matrix": np.std([r.accuracy_matrix for r in runs], axis=0).tolist(),
        "strength_search": search.as_dict() if search else None,
        "selection": SELECTION_NONE if config.valid_fraction == 0 else SELECTION,
        "data_source": data_source,
        "versions": versions(),
        "seconds": round(time.perf_counter() - start, 2),
    }
    write_outputs(out, result)
    (out / INCOMPLETE).unlink()
    return result


def write_outputs(out: Path, result: dict[str, Any]) -> None:
    from .plots import accuracy_heatmap, save_figure, task_curves
    from .report import metrics_csv, run_report

    c = result["config"]
    title = f"{c['method']} on {c['benchmark']} ({c['scenario']}-incremental), {len(result['seeds'])} seed(s)"
    names = result["task_names"]
    save_figure(accuracy_heatmap(result["mean_accuracy_matrix"], names, title), out / "accuracy_matrix.png")
    save_figure(task_curves(result["mean_accuracy_matrix"], names, title, result["std_accuracy_matrix"]), out / "task_curves.png")
    write_atomic(out / "metrics.csv", metrics_csv(result))
    write_atomic(out / "report.md", run_report(result))
    write_json(out / "result.json", result)  # last: its presence means the run finished
