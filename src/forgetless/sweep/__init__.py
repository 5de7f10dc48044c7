"""Sweeps: a grid of runs (methods × strengths × seeds × …), run in parallel processes, resumable.

A sweep file (TOML, or YAML of the same shape) has a ``[base]`` table of fixed
:mod:`run settings <forgetless.run_config>` and a ``[grid]`` table whose keys are settings with
*lists* of values; every combination is one run::

    description = "EWC's λ against SI's c on the seed split"   # optional, copied into sweep.md

    [base]                      # fixed settings (any run setting)
    benchmark = "seed-split"
    scenario = "domain"
    hidden = [128]
    iterations = 1270

    [grid]                      # settings -> lists of values
    method = ["naive", "ewc", "si"]
    seeds = [0, 1, 2]           # every seed is its own run (its own folder); rows average over them
    strength = [1, 10]          # for every method with a strength and no entry below

    [grid.strength_by_method]   # per-method strength lists: λ for EWC-like methods, c for SI
    ewc = [10, 100, 1000]
    si = [0.1, 1, 10]

Rules (all checked, with the valid choices in the message, before anything runs):

- only ``description``, ``base`` and ``grid`` at the top level; ``base`` and ``grid`` only take
  run settings (``grid`` also ``strength_by_method``); a key may not be in both; grid values are
  non-empty lists without repeats (a list-valued field such as ``hidden`` takes a list of lists:
  ``hidden = [[128], [400, 400]]``);
- a grid axis a run does not take is not expanded for it: ``naive`` and ``joint`` run once per
  combination of the other axes, however many strengths there are; ``decay`` is expanded only for
  online EWC, ``damping`` only for SI, ``estimator`` and ``fisher_samples`` only for EWC and online
  EWC, ``n_tasks`` only for permuted MNIST (read from the regularizers' constructors and the
  benchmarks' builders, so it cannot drift from them); an axis no run of the sweep takes is an
  error, and so is a ``[base]`` setting none takes (one some take applies to those only);
- ``strength_by_method`` keys must be methods of the sweep that have a strength; a method listed
  there takes its own strengths, the others ``grid.strength`` (or ``base.strength``, else
  ``"default"``: the default committed for their benchmark and scenario, else the method's global
  default, :mod:`forgetless.defaults` — a sweep never starts a search of its own);
- ``seeds`` (in ``grid`` or ``base``) always means one run per seed; ``strength = "auto"`` is not
  supported: the sweep is the search.

Each run is :func:`forgetless.experiment.execute` of a one-seed RunConfig into ``OUT/runs/<name>/``
(a run folder, see :mod:`forgetless.runs`), where ``<name>`` is
``<method>[-s<strength>]-seed<seed>-<hash>`` and the hash covers the resolved config and a
fingerprint of the data. Re-running a sweep skips every point whose folder holds a finished result
with the same resolved config, re-runs unfinished ones (``INCOMPLETE``) and leaves any other run
folder alone: nothing is lost or duplicated. One sweep at a time may use an ``OUT`` folder, and one
process a run folder (locks). A point whose folder holds a finished run of other settings is refused
unless ``--overwrite``. A run that fails is reported and left for the next invocation; the others go on.

Outputs, besides the run folders: ``OUT/sweep.md`` and ``OUT/sweep.json``, one row per config
but the seed, with mean ± std (and sem) over seeds of the average accuracy, the accuracy on the old tasks
(mean of ``R[T-1, k]`` for ``k < T-1``: stability) and on the newest task (``R[T-1, T-1]``:
plasticity); and ``OUT/stability_plasticity.png`` (:func:`forgetless.plots.stability_plasticity`).

Runs execute in spawned processes on this machine (``--workers``, one torch thread each), or as
Ray tasks (``--executor ray``, see :mod:`forgetless.executors`); both call :func:`run_point`, and a
point's result does not depend on which worker ran it or what it ran before.

Modules: :mod:`~forgetless.sweep.spec` (the file, its points), :mod:`~forgetless.sweep.plan`
(data, reuse, running), :mod:`~forgetless.sweep.summary` (rows, table, report, plot).
"""

from __future__ import annotations

from ..run_config import RunConfig, run_config
from .plan import Plan, SweepOutcome, locked, plan_sweep, run_plan, run_point
from .spec import Point, SweepError, SweepSpec, expand, parse_sweep, point_name, read_sweep
from .summary import DEFINITIONS, plot_points, summarize, sweep_report, sweep_table, write_summary

__all__ = [
    "DEFINITIONS", "Plan", "Point", "RunConfig", "SweepError", "SweepOutcome", "SweepSpec", "expand", "locked", "parse_sweep",
    "plan_sweep", "plot_points", "point_name", "read_sweep", "run_config", "run_plan", "run_point", "summarize",
    "sweep_report", "sweep_table", "write_summary",
]
