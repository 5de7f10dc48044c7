"""Command line: argv → config → experiment → files. Errors become one line, never a traceback."""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Sequence

from .benchmarks.registry import BENCHMARKS
from .benchmarks.scenarios import SCENARIOS
from .experiment import METHODS
from .fisher import ESTIMATORS

class UsageError(Exception):
    """A problem with what the user asked for; printed as one line."""


def _strength(text: str) -> float | str:
    if text == "auto":
        return text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0 or 'auto', got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"strength must be a finite number >= 0, got {text}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {value}")
    return value


def _add_data_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", type=Path, help="directory with the four MNIST IDX files (raw or .gz)")
    p.add_argument("--download", action="store_true", help="download MNIST from public mirrors if no local copy")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="forgetless", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log details")
    parser.add_argument("--threads", type=_positive_int, default=None,
                        help="CPU threads for torch (default: torch's choice; 1 is fastest for the small MLPs on a busy machine)")
    sub = parser.add_subparsers(dest="command", required=True)
    seed = sub.add_parser("seed", help="the blog post's experiment: even digits, then odd digits")
    seed.add_argument("--seed", type=int, default=0)
    seed.add_argument("--protocol", choices=("fair", "post"), default="fair",
                      help="fair: same epochs for all (default); post: the post's 3+9 epochs and dropout for EWC")
    seed.add_argument("--epochs", type=_positive_int, default=6, help="epochs per task (fair protocol)")
    seed.add_argument("--dropout", type=float, default=0.5, help="dropout after the hidden layer (fair protocol; default 0.5)")
    seed.add_argument("--strength", type=_strength, default=None,
                      help="EWC λ, or 'auto' (default): choose it on validation data")
    seed.add_argument("--strength-grid", type=_floats, default=None,
                      help="values the auto search may try (default: quarter decades 316 … 5623)")
    seed.add_argument("--strength-search", choices=("local", "grid"), default=None,
                      help="local (default): from the grid's middle towards the best value, 3-4 runs; grid: every value")
    seed.add_argument("--lr", type=float, default=None, help="Adam's learning rate, every procedure (fair protocol)")
    seed.add_argument("--l2-strength", type=_strength, default=1.0, help="λ of the L2 anchor (default 1)")
    seed.add_argument("--estimator", choices=ESTIMATORS, default="exact", help="Fisher estimator")
    seed.add_argument("--fisher-samples", type=_positive_int, default=None, help="samples for the Fisher (default all)")
    seed.add_argument("--workers", type=_positive_int, default=None,
                      help="processes running its jobs side by side, one torch thread each (default: the CPUs "
                           "available, at most 8); 1 runs everything in this process with --threads threads")
    seed.add_argument("--out", type=Path, default=None, help="output folder (default: a new one under runs/)")
    _add_data_options(seed)

    run = sub.add_parser("run", help="one method on a benchmark over seeds: accuracy matrix, metrics, plots")
    _add_run_options(run)
    run.add_argument("--method", help=f"one of: {', '.join(METHODS)}")
    compare = sub.add_parser("compare", help="several methods on one benchmark: one table and one plot")
    _add_run_options(compare)
    compare.add_argument("--methods", default="naive,ewc,online-ewc,si",
                         help="comma-separated methods (default: %(default)s)")
    sweep = sub.add_parser("sweep", help="a grid of runs (methods × strengths × seeds …) in parallel, resumable: "
                                         "one table and a stability–plasticity plot")
    sweep.add_argument("--config", type=Path, required=True,
                       help="TOML or YAML sweep file: a [base] table of fixed settings and a [grid] table of lists "
                            "(see configs/sweeps/ and `pydoc forgetless.sweep`)")
    sweep.add_argument("--workers", type=_positive_int, default=None,
                       help="runs at a time (default: min(2, CPUs) processes; with ray: as many as the cluster runs)")
    sweep.add_argument("--executor", choices=("local", "ray"), default="local",
                       help="local: processes on this machine (default); ray: Ray tasks (pip install 'forgetless[ray]')")
    sweep.add_argument("--ray-address", default=None,
                       help="Ray cluster to join, e.g. auto or ray://head:10001 (default: start a local Ray); "
                            "--out must then be on a filesystem every node shares")
    sweep.add_argument("--out", type=Path, default=None,
                       help="output folder (default: runs/sweep-<config file name>); the same command resumes it")
    sweep.add_argument("--dry-run", action="store_true", help="list the runs and which are finished; run nothing")
    _add_data_options(sweep)
    return parser


def _seeds(text: str) -> tuple[int, ...]:
    """'0-4' → (0, 1, 2, 3, 4); '0,3' → (0, 3)."""
    try:
        if "-" in text.strip("-"):
            first, last = (int(v) for v in text.split("-"))
            if last < first:
                raise ValueError
            return tuple(range(first, last + 1))
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seeds like 0-4 or 0,1,2, got {text!r}") from None


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers like 1e2,1e3, got {text!r}") from None


def _widths(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected layer widths like 400,400, got {text!r}") from None


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="TOML or YAML file of settings; flags override it")
    p.add_argument("--benchmark", help=f"one of: {', '.join(BENCHMARKS)}")
    p.add_argument("--scenario", help=f"one of: {', '.join(SCENARIOS)}")
    p.add_argument("--seeds", type=_seeds, help="e.g. 0-4 (mean ± std over seeds)")
    p.add_argument("--strength", type=_strength, help="λ (c for SI), or 'auto': search on validation data")
    p.add_argument("--strength-grid", type=_floats, help="values --strength auto tries, e.g. 1e2,1e3,1e4")
    p.add_argument("--decay", type=float, help="online EWC's γ")
    p.add_argument("--damping", type=float, help="SI's ξ")
    p.add_argument("--estimator", help=f"Fisher estimator: {', '.join(ESTIMATORS)}")
    p.add_argument("--fisher-samples", type=_positive_int)
    p.add_argument("--hidden", type=_widths, help="hidden layer widths, e.g. 400,400")
    p.add_argument("--iterations", type=_positive_int, help="updates per task")
    p.add_argument("--batch-size", type=_positive_int)
    p.add_argument("--lr", type=float)
    p.add_argument("--reset-optimizer", action=argparse.BooleanOptionalAction, default=None,
                   help="a fresh Adam for every task (default), or --no-reset-optimizer: one Adam for the whole sequence")
    p.add_argument("--n-tasks", type=_positive_int, help="permuted MNIST: number of tasks")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: a new one under runs/)")
    _add_data_options(p)


def _new_out_dir(out: Path | None, prefix: str) -> Path:
    if out is None:
        out = Path("runs") / f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}"
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a folder")
    if (out / "result.json").exists():
        raise UsageError(f"{out / 'result.json'} already exists; choose another --out (nothing was overwritten)")
    out.mkdir(parents=True, exist_ok=True)
    return out


def _progress(total: int, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="step", disable=None, leave=False, dynamic_ncols=True)


def cmd_seed(args: argparse.Namespace) -> int:
    from .benchmarks import seed_split
    from .data import load_mnist
    from .plots import save_figure, seed_bars
    from .report import seed_report, seed_table, versions, write_atomic, write_json
    from .seed import SeedConfig, run_seed, steps_total
    from .workers import available_cpus

    if args.l2_strength == "auto":
        raise UsageError("--l2-strength auto is not supported; give a number")
    given = {k: getattr(args, k) for k in ("strength", "strength_grid", "strength_search", "lr") if getattr(args, k) is not None}
    config = SeedConfig(seed=args.seed, protocol=args.protocol, epochs=args.epochs, dropout=args.dropout,
                        l2_strength=args.l2_strength, estimator=args.estimator, fisher_samples=args.fisher_samples, **given)
    data = load_mnist(args.data_dir, download=args.download)
    out = _new_out_dir(args.out, "seed")
    bench = seed_split(data, seed=config.seed, valid_fraction=config.valid_fraction)
    start = time.perf_counter()
    with _progress(steps_total(config, bench), "forgetless seed") as bar:
        def more(steps: int) -> None:
            bar.total += steps
            bar.refresh()

        result = run_seed(config, bench, on_step=lambda: bar.update(1), on_more=more,
                          workers=args.workers or available_cpus(8))
    result |= {"data_source": data.source, "versions": versions(), "seconds": round(time.perf_counter() - start, 2)}
    save_figure(seed_bars(result), out / "accuracy.png")
    write_atomic(out / "report.md", seed_report(result))
    write_json(out / "result.json", result)  # last: its presence means the run finished
    print(seed_table(result))
    c = result["config"]
    print(f"\nEWC λ = {c['strength']:g} ({c['strength_source']}), Fisher `{c['estimator']}`; "
          f"{result['seconds']:.1f} s. Wrote {out}/result.json, report.md, accuracy.png")
    return 0


RUN_FLAGS = ("benchmark", "scenario", "seeds", "strength", "strength_grid", "decay", "damping", "estimator", "fisher_samples",
             "hidden", "iterations", "batch_size", "lr", "reset_optimizer", "n_tasks")


def _run_settings(args: argparse.Namespace, extra: dict) -> tuple[dict, bool]:
    """File settings, then flags; returns (settings, auto_strength)."""
    from .config import read_config_file

    settings = read_config_file(args.config) if args.config else {}
    flags = {k: getattr(args, k) for k in RUN_FLAGS if getattr(args, k) is not None}
    settings = {k.replace("-", "_"): v for k, v in settings.items()} | flags | extra
    auto = settings.get("strength") == "auto"
    if auto:
        del settings["strength"]
        if settings.get("valid_fraction") == 0:  # refused before anything runs (runs.execute checks too)
            from .runs import NO_VALIDATION

            raise UsageError(NO_VALIDATION)
    return settings, auto


def _load_data(args: argparse.Namespace, benchmark: str):
    """The data set ``benchmark`` is built from (MNIST or Fashion-MNIST)."""
    from .benchmarks.registry import required_dataset
    from .data import load_fashion_mnist, load_mnist

    if required_dataset(benchmark) == "fashion":
        return load_fashion_mnist(args.data_dir)
    return load_mnist(args.data_dir, download=args.download)


def _execute(args: argparse.Namespace, config, out: Path, auto: bool) -> dict:
    from .benchmarks.registry import make_benchmark
    from .runs import execute

    data = _load_data(args, config.benchmark)
    cache: dict[int, object] = {}

    def make_bench(seed: int):
        if seed not in cache:
            cache.clear()  # one benchmark in memory at a time (permuted MNIST is large)
            cache[seed] = make_benchmark(config.benchmark, data, scenario=config.scenario, seed=seed,
                                         **config.benchmark_options())
        return cache[seed]

    bars: list = []

    def progress(label: str, total: int):
        if bars:
            bars.pop().close()
        bar = _progress(total, label)
        bars.append(bar)
        return lambda: bar.update(1)

    try:
        return execute(config, out, make_bench, auto_strength=auto, progress=progress, data_source=data.source)
    finally:
        for bar in bars:
            bar.close()


def cmd_run(args: argparse.Namespace) -> int:
    from .config import build_config
    from .experiment import RunConfig
    from .report import _pm

    settings, auto = _run_settings(args, {"method": args.method} if args.method else {})
    config = build_config(RunConfig, settings)
    out = _new_out_dir(args.out, f"{config.benchmark}-{config.scenario}-{config.method}")
    result = _execute(args, config, out, auto)
    for name, stat in result["metrics"].items():
        print(f"{name:>24}: {_pm(stat)}")
    print(f"Wrote {out}/config.json, result.json, metrics.csv, report.md, accuracy_matrix.png, task_curves.png")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from .compare import compare_report, write_compare
    from .config import build_config
    from .experiment import RunConfig
    from .runs import finished_result

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    settings, auto = _run_settings(args, {})
    configs = [build_config(RunConfig, settings, {"method": m}) for m in methods]
    first = configs[0]
    out = args.out or Path("runs") / f"compare-{first.benchmark}-{first.scenario}"
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    for config in configs:
        folder = out / config.method
        requested = config.resolved() | ({"strength": "auto"} if auto else {})
        done = finished_result(folder)
        if done is not None and done.get("requested_config") == requested:
            print(f"{config.method}: reusing the finished run in {folder}")
            results[config.method] = done
            continue
        results[config.method] = _execute(args, config, folder, auto and config.method != "naive")
    write_compare(out, results)
    print(compare_report(results))
    print(f"Wrote {out}/compare.md, compare.json, compare.png")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .sweep import default_workers, plan_sweep, read_sweep, run_plan, summarize, sweep_table, write_summary

    if args.ray_address and args.executor != "ray":
        raise UsageError("--ray-address needs --executor ray")
    spec = read_sweep(args.config)
    out = args.out or Path("runs") / f"sweep-{args.config.stem}"
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a folder")
    plan = plan_sweep(spec, out, data_dir=args.data_dir, download=args.download, where=str(args.config))
    print(f"{len(plan.points)} runs: {len(plan.finished)} finished earlier (reused), {len(plan.pending)} to run")
    if args.dry_run:
        for p in plan.points:
            print(f"  {'done' if p.name in plan.finished else 'todo'}  {p.label:<40}  {out / 'runs' / p.name}")
        return 0
    workers = args.workers or (None if args.executor == "ray" else default_workers())
    bar = tqdm(total=len(plan.points), initial=len(plan.finished), desc="forgetless sweep", unit="run",
               disable=None, dynamic_ncols=True)

    def on_done(point, error):
        if error:
            bar.write(f"failed: {point.label}: {error}", file=sys.stderr)
        bar.update(1)

    try:
        with bar:
            outcome = run_plan(plan, workers=workers, executor=args.executor, data_dir=args.data_dir,
                               ray_address=args.ray_address, on_done=on_done)
    except KeyboardInterrupt:
        print(f"forgetless: interrupted; finished runs are kept in {out}/runs: run the same command to resume",
              file=sys.stderr)
        return 130
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    from .data import DataError
    from .training import TrainingError

    try:
        return {"seed": cmd_seed, "run": cmd_run, "compare": cmd_compare, "sweep": cmd_sweep}[args.command](args)
    except (UsageError, DataError, TrainingError, ValueError) as err:
        if args.verbose:  # the traceback is for developers who ask for it
            raise
        print(f"forgetless: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("forgetless: interrupted; no result.json was written", file=sys.stderr)
        return 130
