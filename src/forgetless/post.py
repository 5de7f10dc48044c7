"""The blog post's experiment, done right: multi-task, naive, L2 and EWC on even → odd MNIST, and a
row the post did not have: EWC with the Kronecker-factored Fisher (``ewc-kfac``).

Two protocols:
- ``fair`` (default): every procedure gets the same network (with Dropout(0.5), which the post found
  EWC needs), the same number of epochs per task, and multi-task training the same number of steps
  over the union of both tasks.
- ``post``: the post's own schedule — 6 epochs for multi-task, 6+6 for naive and L2, 3+9 with
  Dropout(0.5) for EWC (and for K-FAC EWC).
Differences from the post that are deliberate: a correct per-sample Fisher, the squared L2 anchor,
dropout really on while training, a fresh Adam per task, and λ chosen on validation data.

The procedures are a table (:data:`PROCEDURES`): a row names a method of :mod:`forgetless.methods`,
the :class:`PostConfig` field holding its strength (searched on validation data when it is
``"auto"``, over the grid in the field its row names: each row its own search, on its own scale),
its schedule under the post's protocol; its jobs are :mod:`forgetless.post_jobs`. A sequential row's
regularizer is consolidated once after task A, from the model alone (so not SI, which needs task A's
training path), and that state is reused for every strength tried. It runs through the shared
machinery: the λ search of :mod:`forgetless.strength`, the workers of :mod:`forgetless.workers` and
a run folder of :mod:`forgetless.runs`.
"""
from __future__ import annotations

import math
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from .benchmarks import Benchmark
from .methods import METHODS
from .post_jobs import BENCHMARK, PostJobs, Procedure, Schedule, method_options, steps, union
from .post_stacked import submit_round
from .published import BLOG_POST
from .strength import Search, check_grid, score_or_nan
from .workers import job_runner, workers_that_fit

__all__ = ["BENCHMARK", "PROCEDURES", "PostConfig", "PostJobs", "Procedure", "ROWS", "Schedule", "execute", "run_post"]

PROTOCOLS = ("fair", "post")
# Each round of task-B jobs trained as few stacked models as the penalties allow (forgetless.post_stacked)
# unless --no-stacked. `make demo` (2 workers, 2 busy cores, load 4.6-6.7), 4 interleaved pairs against
# stacking EWC's λ only: wall 0.82x, 0.85x, 0.82x, 0.81x, CPU 0.81-0.84x, the same table; quiet: 13.9-14.3 s.
STACKED = True
SEARCHES = ("local", "grid")
# EWC's λ is searched on validation data by default, over quarter decades 10^2.5 … 10^3.75 (316 … 5623):
# the region where the best λ of every seed 0-4 fell in our measurements (see the README); a winner on
# the grid's edge is flagged in result.json (`best_at_grid_edge`), and --strength-grid widens it.
STRENGTH_GRID = tuple(round(10.0 ** (k / 4), 1) for k in range(10, 16))
# K-FAC EWC's: its method's own grid (quarter decades 5.6 … 178, a fact of the ewc-kfac variant).
KFAC_STRENGTH_GRID = METHODS["ewc-kfac"].strength_grid
KFAC_DAMPING = METHODS["ewc-kfac"].options["kfac_damping"].default  # the variant's, 0.3

FISHER = ("estimator", "fisher_samples")  # the PostConfig fields EWC's rows take

PROCEDURES: tuple[Procedure, ...] = (  # the post's numbers for them: forgetless.published.BLOG_POST
    Procedure("multitask", "joint", None, Schedule(6, 0, 0.0)),
    Procedure("naive", "naive", None, Schedule(6, 6, 0.0)),
    Procedure("l2", "l2", "l2_strength", Schedule(6, 6, 0.0)),
    Procedure("ewc", "ewc", "strength", Schedule(3, 9, 0.5), searched=True, grid="strength_grid", options=FISHER),
    # not in the post: EWC's schedule under --protocol post
    Procedure("ewc-kfac", "ewc-kfac", "kfac_strength", Schedule(3, 9, 0.5), searched=True, grid="kfac_strength_grid",
              options=(*FISHER, "kfac_damping")),
)
ROWS = {p.name: p for p in PROCEDURES}


@dataclass(frozen=True)
class PostConfig:
    """Every setting of ``forgetless seed``; all of it is written into ``result.json``."""

    seed: int = 0
    protocol: str = "fair"          # "fair" or "post" (see module docstring)
    epochs: int = 6                 # per task, fair protocol only
    dropout: float = 0.5            # after the hidden layer, every procedure, fair protocol only
    strength: float | str = "auto"  # EWC λ, or "auto": search `strength_grid` on validation data
    l2_strength: float = 1.0        # the post's 0.5·Σ‖θ−θ_A‖² (squared)
    kfac_strength: float | str = "auto"  # K-FAC EWC's λ, or "auto": search `kfac_strength_grid`
    estimator: str = "exact"        # Fisher estimator (EWC and K-FAC EWC)
    kfac_damping: float = KFAC_DAMPING  # K-FAC EWC's damping (0: undamped)
    fisher_samples: int | None = None  # None: the whole training set of task A
    hidden: int = 128
    batch_size: int = 128
    lr: float = 1e-3
    valid_fraction: float = 0.1     # held out of each task's training data, seeded
    strength_grid: tuple[float, ...] = field(default=STRENGTH_GRID)
    kfac_strength_grid: tuple[float, ...] = field(default=KFAC_STRENGTH_GRID)
    strength_search: str = "local"  # "local": hill-climb the grid from its middle (see strength.next_to_try); "grid": all of it

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"unknown protocol {self.protocol!r}; choose one of {', '.join(PROTOCOLS)}")
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        for p in PROCEDURES:
            if p.strength is not None:
                _check_strength(p.strength.replace("_", " "), getattr(self, p.strength), p.searched)
        for name in ("hidden", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not 0 < self.lr < math.inf:
            raise ValueError(f"lr must be a finite number > 0, got {self.lr}")
        for p in PROCEDURES:
            if p.grid is not None:
                check_grid(getattr(self, p.grid), p.grid)
        if self.strength_search not in SEARCHES:
            raise ValueError(f"unknown strength search {self.strength_search!r}; choose one of {', '.join(SEARCHES)}")
        for p in PROCEDURES:  # the methods check their own options (e.g. the Fisher estimator)
            try:
                METHODS[p.method].build(None, method_options(self, p), seed=0)
            except ValueError as err:
                raise ValueError(f"procedure {p.name}: {err}") from None


def _check_strength(name: str, value: float | str, searched: bool) -> None:
    if (isinstance(value, str) and (value != "auto" or not searched)) or (not isinstance(value, str) and not 0 <= value < math.inf):
        raise ValueError(f"{name} must be a finite number >= 0{' or auto' if searched else ''}, got {value!r}")


def schedules(config: PostConfig) -> dict[str, Schedule]:
    """Epochs on A, on B, and dropout for each procedure (multi-task: epochs_a over A ∪ B)."""
    if config.protocol == "post":
        return {p.name: p.post_schedule for p in PROCEDURES}
    e, d = config.epochs, config.dropout
    # multi-task: e epochs over A ∪ B, so every sample is seen e times, as in the sequential procedures
    return {p.name: Schedule(e, 0 if _joint(p) else e, d) for p in PROCEDURES}


def _joint(p: Procedure) -> bool:
    return METHODS[p.method].joint


def _search(config: PostConfig, procedure: Procedure) -> Search:
    return Search(getattr(config, procedure.grid), local=config.strength_search == "local")


def first_strengths(config: PostConfig, procedure: Procedure) -> tuple[float | None, ...]:
    """The strengths a row is trained with first: None (no strength), the given one, the whole
    grid, or a local search's start."""
    if procedure.strength is None:
        return (None,)
    value = getattr(config, procedure.strength)
    if value != "auto":
        return (float(value),)
    return tuple(_search(config, procedure).first())


def steps_total(config: PostConfig, bench: Benchmark) -> int:
    """Mini-batch updates the whole run makes, for the progress bar (a local search may add runs:
    :func:`run_post`'s ``on_more``)."""
    a, b = (t.train for t in bench.tasks)
    plan = schedules(config)
    total = sum(steps(union(a, b), plan[p.name].epochs_a, config.batch_size) for p in PROCEDURES if _joint(p))
    sequential = [p for p in PROCEDURES if not _joint(p)]
    total += sum(steps(a, epochs, config.batch_size) for epochs, _ in {_key(plan[p.name]) for p in sequential})
    return total + sum(len(first_strengths(config, p)) * steps(b, plan[p.name].epochs_b, config.batch_size)
                       for p in sequential)


def _key(schedule: Schedule) -> tuple[int, float]:
    """Rows sharing task A's epochs and dropout share one task-A job."""
    return schedule.epochs_a, schedule.dropout


def run_post(config: PostConfig, bench: Benchmark, on_step: Callable[[], None] | None = None, *, workers: int = 1,
             on_more: Callable[[int], None] | None = None, stacked: bool | None = None) -> dict[str, Any]:
    """Run every procedure, in ``workers`` processes (1: here); returns the ``result.json`` content.

    ``on_step()`` after every training step; ``on_more(n)`` when a local λ search adds n steps to
    :func:`steps_total`'s count. ``stacked`` (None: :data:`STACKED`): each round of task-B jobs (after
    task A every row's first strengths, a local search's first 3; later a search's untried neighbours)
    trained as few stacked models as the penalties allow (:func:`forgetless.post_stacked.bundles`: naive,
    L2 and EWC's λ in one, K-FAC EWC's λ in another), else one job per strength; ``result.json``'s
    ``search_rounds`` says which. The result does not depend on ``workers`` or
    ``stacked`` beyond float rounding: workers use one torch thread each, so a run here with one
    thread gives the same numbers.
    """
    stacked = STACKED if stacked is None else stacked
    workers = workers_that_fit(workers, [t for task in bench.tasks for split in (task.train, task.valid, task.test)
                                         for t in (split.x, split.y)])
    plan = schedules(config)
    sequential = sorted((p for p in PROCEDURES if not _joint(p)), key=lambda p: not p.searched)  # searches start first
    searches = {p.name: _search(config, p) for p in sequential if p.strength and getattr(config, p.strength) == "auto"}
    runs: dict[tuple[str, float | None], Any] = {}  # each (row, strength)'s result: a Future or a post_stacked.Part
    tried: dict[Future, list[tuple[str, list[float]]]] = {}  # a search's jobs: per searched row, the strengths it trains
    rounds: dict[str, list[dict[str, Any]]] = {}  # per row, how each round of strengths was trained (a record per job)
    submitted: list[Future] = []
    checker = PostJobs(config, bench, ROWS)

    def score(name: str, strength: float) -> float:
        valid = runs[name, strength].result()["valid_accuracy"]
        return sum(valid.values()) / len(valid)

    with job_runner(PostJobs, (config, bench, ROWS), workers=workers, on_step=on_step) as jobs:
        groups: dict[tuple[int, float], list[Procedure]] = {}
        for p in sequential:
            groups.setdefault(_key(plan[p.name]), []).append(p)
        task_a = {jobs.submit("task_a_phase", plan[rows[0].name], tuple(p.name for p in rows if p.strength)): key
                  for key, rows in groups.items()}
        joint = {p.name: jobs.submit("multitask", plan[p.name]) for p in PROCEDURES if _joint(p)}
        pending = set(task_a)

        def start(pairs: list[tuple[str, float | None]], after_a: dict[str, Any]) -> None:
            """Train these (row, strength) jobs, stacked where they allow (post_stacked.bundles)."""
            futures, results, records = submit_round(jobs, checker, plan, after_a, pairs, stacked, workers)
            for name, parts in records.items():
                rounds.setdefault(name, []).extend(parts)
            runs.update(results)
            for future, trains in futures:
                searched = {name: [s for n, s in trains if n == name] for name, _ in trains if name in searches}
                if searched:
                    tried[future] = list(searched.items())
                pending.add(future)
                submitted.append(future)

        after: dict[str, dict[str, Any]] = {}
        while pending:
            for done in jobs.wait(pending):
                pending.discard(done)
                if done in task_a:  # the rows' task B starts as soon as their task A is done: one round for all
                    for p in groups[task_a[done]]:
                        after[p.name] = done.result()
                    start([(p.name, s) for p in groups[task_a[done]]
                           for s in (searches[p.name].first() if p.name in searches else first_strengths(config, p))],
                          done.result())
                for name, strengths in tried.get(done, ()):  # a search's run: once all started are scored, maybe more
                    more = [m for strength in strengths
                            for m in searches[name].record(strength, score_or_nan(lambda s: score(name, s), strength))]
                    if more and on_more is not None:
                        on_more(len(more) * steps(bench.tasks[1].train, plan[name].epochs_b, config.batch_size))
                    if more:
                        start([(name, m) for m in more], after[name])
        jobs.wait_all([*joint.values(), *submitted])
    return {**_result(config, joint, runs, searches, task_a, workers), "stacked": stacked, "search_rounds": rounds}


def _result(config: PostConfig, joint: dict[str, Future], runs: dict, searches: dict[str, Search],
            task_a: dict[Future, tuple[int, float]], workers: int) -> dict[str, Any]:
    """The ``result.json`` content: each row at its given or chosen strength, and every search."""
    resolved = asdict(config)
    outcomes, search_records = {}, {}
    for p in PROCEDURES:
        if _joint(p):
            outcomes[p.name] = joint[p.name].result()
            continue
        search = searches[p.name].result() if p.name in searches else None
        strength = search.best if search else first_strengths(config, p)[0]
        if p.searched:
            search_records[f"{p.strength}_search"] = search.as_dict() if search else None
        if p.strength is not None:
            resolved[p.strength] = strength
        if p.searched:
            resolved[f"{p.strength}_source"] = "validation search" if p.name in searches else "given"
        outcomes[p.name] = runs[p.name, strength].result()
    return {
        "procedures": outcomes,
        "config": resolved,
        "strength_search": search_records.pop("strength_search", None),
        **search_records,
        "task_a_seconds": {f"{e} epochs, dropout {d:g}": f.result()["seconds"] for f, (e, d) in task_a.items()},
        # each row's consolidation after task A (EWC's Fisher, K-FAC's factors), done once for every λ tried
        "consolidate_seconds": {name: s for f in task_a for name, s in f.result()["consolidate_seconds"].items()},
        "workers": workers,
        "post": {p.name: dict(zip("AB", BLOG_POST[p.name])) for p in PROCEDURES if p.name in BLOG_POST},
        "selection": "hyperparameters chosen on validation data held out of the training sets; accuracies are on the MNIST test set",
    }


def execute(config: PostConfig, out, bench: Benchmark, *, data_source: str, fingerprint: str, overwrite: bool = False,
            workers: int = 1, on_step: Callable[[], None] | None = None,
            on_more: Callable[[int], None] | None = None, stacked: bool | None = None) -> tuple[dict[str, Any], bool]:
    """The post's experiment into the run folder ``out`` (or the finished run there reused); (result, reused)."""
    from . import runs

    return runs.produce(out, requested=asdict(config), data_source=data_source, fingerprint=fingerprint,
                        compute=lambda: run_post(config, bench, on_step, workers=workers, on_more=on_more, stacked=stacked),
                        write=write_outputs, overwrite=overwrite)


def write_outputs(out, result: dict[str, Any]) -> None:
    """``accuracy.png``, ``report.md``, then ``result.json``."""
    from .files import write_atomic, write_json
    from .plots import post_bars, save_figure
    from .report import post_report

    save_figure(post_bars(result), out / "accuracy.png")
    write_atomic(out / "report.md", post_report(result))
    write_json(out / "result.json", result)  # last: its presence means the run finished
