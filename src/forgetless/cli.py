"""Command line: argv → config → library → printed lines. Argument parsing and dispatch only.

Errors become one line, never a traceback; Ctrl-C and SIGTERM say exactly what was kept.
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path
from typing import Any, Sequence

from . import cli_options as opt


class UsageError(Exception):
    """A problem with what the user asked for; printed as one line."""


def build_parser() -> argparse.ArgumentParser:
    from .fisher import ESTIMATORS
    from .methods import METHODS

    parser = argparse.ArgumentParser(prog="forgetless", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log details")
    parser.add_argument("--threads", type=opt.positive_int, default=None,
                        help="CPU threads for torch (default: torch's choice; 1 is fastest for the small MLPs on a busy machine)")
    sub = parser.add_subparsers(dest="command", required=True)
    post = sub.add_parser("seed", help="the blog post's experiment: even digits, then odd digits")
    post.add_argument("--seed", type=int, default=0)
    post.add_argument("--protocol", choices=("fair", "post"), default="fair",
                      help="fair: same epochs for all (default); post: the post's 3+9 epochs and dropout for EWC (and K-FAC EWC)")
    post.add_argument("--epochs", type=opt.positive_int, default=6, help="epochs per task (fair protocol)")
    post.add_argument("--dropout", type=float, default=0.5, help="dropout after the hidden layer (fair protocol; default 0.5)")
    post.add_argument("--strength", type=opt.strength, default=None,
                      help="EWC λ, or 'auto' (default): choose it on validation data")
    post.add_argument("--strength-grid", type=opt.floats, default=None,
                      help="values the auto search may try (default: quarter decades 316 … 5623)")
    post.add_argument("--strength-search", choices=("local", "grid"), default=None,
                      help="local (default): from the grid's middle towards the best value, 3-4 runs; grid: every value")
    post.add_argument("--kfac-strength", type=opt.strength, default=None,
                      help="K-FAC EWC's λ (method ewc-kfac), or 'auto' (default): choose it on validation data")
    post.add_argument("--kfac-strength-grid", type=opt.floats, default=None,
                      help="values its auto search may try (default: its method's, quarter decades 5.6 … 178)")
    post.add_argument("--kfac-damping", type=float, default=None, help="K-FAC EWC's damping (default: its method's, 0.3)")
    post.add_argument("--lr", type=float, default=None, help="Adam's learning rate, every procedure (fair protocol)")
    post.add_argument("--l2-strength", type=opt.strength, default=1.0, help="λ of the L2 anchor (default 1)")
    post.add_argument("--estimator", choices=ESTIMATORS, default="exact", help="Fisher estimator")
    post.add_argument("--fisher-samples", type=opt.positive_int, default=None, help="samples for the Fisher (default all)")
    post.add_argument("--workers", type=opt.positive_int, default=None,
                      help="processes running its jobs side by side, one torch thread each (default: the CPUs "
                           "available, at most 8); 1 runs everything in this process with --threads threads")
    opt.add_stacked(post, "task-B jobs that start from one task-A model trained as few stacked models as their "
                          "penalties allow: naive, L2 and EWC's λ; K-FAC EWC's λ (default)")
    opt.add_output_options(post)
    opt.add_data_options(post)

    run = sub.add_parser("run", help="one method on a benchmark over seeds: accuracy matrix, metrics, plots")
    opt.add_run_options(run)
    run.add_argument("--method", help=f"one of: {', '.join(METHODS)}")
    opt.add_stacked(run, "--strength auto trains its strengths as one stacked model (default: where it pays, small MLPs)")
    compare = sub.add_parser("compare", help="several methods on one benchmark: one table and one plot")
    opt.add_run_options(compare)
    compare.add_argument("--methods", default="naive,ewc,online-ewc,si",
                         help="comma-separated methods (default: %(default)s)")
    sweep = sub.add_parser("sweep", help="a grid of runs (methods × strengths × seeds …) in parallel, resumable: "
                                         "one table and a stability–plasticity plot")
    sweep.add_argument("--config", type=Path, required=True,
                       help="TOML or YAML sweep file: a [base] table of fixed settings and a [grid] table of lists "
                            "(see configs/sweeps/ and `pydoc forgetless.sweep`)")
    sweep.add_argument("--workers", type=opt.positive_int, default=None,
                       help="runs at a time (default: min(2, CPUs) processes; with ray: as many as the cluster runs)")
    sweep.add_argument("--executor", choices=("local", "ray"), default="local",
                       help="local: processes on this machine (default); ray: Ray tasks (pip install 'forgetless[ray]')")
    sweep.add_argument("--ray-address", default=None,
                       help="Ray cluster to join, e.g. auto or ray://head:10001 (default: start a local Ray); "
                            "--out must then be on a filesystem every node shares")
    sweep.add_argument("--dry-run", action="store_true", help="list the runs and which are finished; run nothing")
    opt.add_output_options(sweep, default="runs/sweep-<config file name>; the same command resumes it")
    opt.add_data_options(sweep)
    return parser


def cmd_post(args: argparse.Namespace) -> int:
    from . import post
    from .benchmarks.registry import data_fingerprint, load_data, make_benchmark
    from .report import post_table
    from .runs import new_folder
    from .workers import available_cpus

    given = {k: getattr(args, k) for k in ("strength", "strength_grid", "kfac_strength", "kfac_strength_grid",
                                           "kfac_damping", "strength_search", "lr") if getattr(args, k) is not None}
    config = post.PostConfig(seed=args.seed, protocol=args.protocol, epochs=args.epochs, dropout=args.dropout,
                             l2_strength=args.l2_strength, estimator=args.estimator,
                             fisher_samples=args.fisher_samples, **given)
    data = load_data(post.BENCHMARK, args.data_dir, download=args.download)
    bench = make_benchmark(post.BENCHMARK, data, scenario="domain", seed=config.seed, valid_fraction=config.valid_fraction)
    out = args.out or new_folder("seed")
    with opt.progress_bar(post.steps_total(config, bench), "forgetless seed") as bar:
        result, reused = post.execute(config, out, bench, data_source=data.source, fingerprint=data_fingerprint(data),
                                      overwrite=args.overwrite, workers=args.workers or available_cpus(8),
                                      on_step=lambda: bar.update(1), on_more=opt.grow(bar), stacked=args.stacked)
    print(post_table(result))
    c = result["config"]
    print(f"\nEWC λ = {c['strength']:g} ({c['strength_source']}), K-FAC EWC λ = {c['kfac_strength']:g} "
          f"({c['kfac_strength_source']}), Fisher `{c['estimator']}`; {result['seconds']:.1f} s. "
          f"{'Reused the finished run in' if reused else 'Wrote'} {out}/result.json, report.md, accuracy.png")
    return 0


def _prepared(args: argparse.Namespace, configs: list) -> tuple[Any, Any, str]:
    """The data, loaded once, a benchmark factory checked against every config, and the data's fingerprint."""
    from .benchmarks.registry import data_fingerprint, load_data
    from .experiment import check_resources, prepare

    data = load_data(configs[0].benchmark, args.data_dir, download=args.download)
    make_bench = prepare(configs[0], data)
    for config in configs[1:]:
        check_resources(config, make_bench(config.seeds[0]))
    return data, make_bench, data_fingerprint(data)


def cmd_run(args: argparse.Namespace) -> int:
    from .experiment import execute
    from .report import pm
    from .run_config import run_config
    from .runs import new_folder

    config = run_config(opt.file_settings(args), opt.flag_settings(args) | ({"method": args.method} if args.method else {}))
    data, make_bench, fingerprint = _prepared(args, [config])
    out = args.out or new_folder(f"{config.benchmark}-{config.scenario}-{config.method}")
    with opt.progress_bars() as progress:
        result, reused = execute(config, out, make_bench, data_source=data.source, fingerprint=fingerprint,
                                 overwrite=args.overwrite, progress=progress, stack=args.stacked)
    for name, stat in result["metrics"].items():
        print(f"{name:>24}: {pm(stat)}")
    if result.get("strength_source"):  # the result of an older run may not say
        print(f"{'strength':>24}: {result['config']['strength']:g} ({result['strength_source']})")
    files = "config.json, result.json, metrics.csv, report.md, accuracy_matrix.png, task_curves.png, loss_curves.png"
    print(f"Reused the finished run in {out}" if reused else f"Wrote {out}/{files}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from .compare import compare, compare_report
    from .run_config import run_configs

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not methods:
        raise UsageError("--methods: give at least one method, e.g. naive,ewc")
    configs = run_configs(methods, opt.file_settings(args), opt.flag_settings(args))
    data, make_bench, fingerprint = _prepared(args, configs)
    out = args.out or Path("runs") / f"compare-{configs[0].benchmark}-{configs[0].scenario}"

    def said(method: str, folder: Path, reused: bool) -> None:
        if reused:
            print(f"{method}: reusing the finished run in {folder}")

    with opt.progress_bars() as progress:
        results = compare(configs, out, make_bench, data_source=data.source, fingerprint=fingerprint,
                          overwrite=args.overwrite, progress=progress, on_method=said)
    print(compare_report(results))
    print(f"Wrote {out}/compare.md, compare.json, compare.png")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from .executors.local import default_workers
    from .sweep import plan_sweep, read_sweep, run_plan, summarize, sweep_table, write_summary

    if args.ray_address and args.executor != "ray":
        raise UsageError("--ray-address needs --executor ray")
    spec = read_sweep(args.config)
    out = args.out or Path("runs") / f"sweep-{args.config.stem}"
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a folder")
    plan = plan_sweep(spec, out, data_dir=args.data_dir, download=args.download, where=str(args.config),
                      overwrite=args.overwrite)
    print(f"{len(plan.points)} runs: {len(plan.finished)} finished earlier (reused), {len(plan.pending)} to run")
    if args.dry_run:
        for p in plan.points:
            print(f"  {'done' if p.name in plan.finished else 'todo'}  {p.label:<40}  {out / 'runs' / p.name}")
        return 0
    workers = args.workers or (None if args.executor == "ray" else default_workers())
    with opt.progress_bar(len(plan.points), "forgetless sweep", unit="run", initial=len(plan.finished)) as bar:
        def on_done(point, error):
            if error:
                bar.write(f"failed: {point.label}: {error}", file=sys.stderr)
            bar.update(1)

        outcome = run_plan(plan, workers=workers, executor=args.executor, data_dir=args.data_dir,
                           ray_address=args.ray_address, on_done=on_done)
    summary = summarize(plan, outcome.results, spec)
    write_summary(out, summary)
    print(sweep_table(summary))
    print(f"Ran {len(outcome.ran)}, reused {len(outcome.reused)}. "
          f"Wrote {out}/sweep.md, sweep.json, stability_plasticity.png; runs in {out}/runs/")
    if outcome.failed:
        print(f"forgetless: error: {len(outcome.failed)} of {len(plan.points)} runs failed (listed above); "
              "run the same command again to retry them", file=sys.stderr)
        return 1
    return 0


COMMANDS = {"seed": cmd_post, "run": cmd_run, "compare": cmd_compare, "sweep": cmd_sweep}


_terminated = False  # set by SIGTERM, for the exit status


def _terminate(signum: int, frame: Any) -> None:
    # SIGTERM takes the same path as Ctrl-C: workers stopped, what finished kept and said.
    global _terminated
    _terminated = True
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    from .data import DataError
    from .training import TrainingError

    global _terminated
    _terminated = False
    try:
        previous = signal.signal(signal.SIGTERM, _terminate)
    except ValueError:  # not the main thread: signals stay as they are
        previous = None
    try:
        return COMMANDS[args.command](args)
    except (UsageError, DataError, TrainingError, ValueError, OSError) as err:
        if args.verbose:  # the traceback is for developers who ask for it
            raise
        print(f"forgetless: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:  # runs.Interrupted says what was kept
        print(f"forgetless: {'terminated' if _terminated else 'interrupted'}; "
              f"{err or 'nothing was written'}", file=sys.stderr)
        return 128 + (signal.SIGTERM if _terminated else signal.SIGINT)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
