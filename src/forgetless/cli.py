"""Command line: argv → config → experiment → files. Errors become one line, never a traceback."""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Sequence

from .fisher import ESTIMATORS

log = logging.getLogger("forgetless")


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
    seed.add_argument("--strength", type=_strength, default=None,
                      help="EWC λ, or 'auto' to choose it on validation data (default: %(default)s → built-in)")
    seed.add_argument("--l2-strength", type=_strength, default=1.0, help="λ of the L2 anchor (default 1)")
    seed.add_argument("--estimator", choices=ESTIMATORS, default="exact", help="Fisher estimator")
    seed.add_argument("--fisher-samples", type=_positive_int, default=None, help="samples for the Fisher (default all)")
    seed.add_argument("--out", type=Path, default=None, help="output folder (default: a new one under runs/)")
    _add_data_options(seed)
    return parser


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
    from .plots import seed_bars
    from .report import seed_report, seed_table, versions, write_atomic, write_json
    from .seed import DEFAULT_EWC_STRENGTH, SeedConfig, run_seed, steps_total

    strength = DEFAULT_EWC_STRENGTH if args.strength is None else args.strength
    if args.l2_strength == "auto":
        raise UsageError("--l2-strength auto is not supported; give a number")
    config = SeedConfig(seed=args.seed, protocol=args.protocol, epochs=args.epochs, strength=strength,
                        l2_strength=args.l2_strength, estimator=args.estimator, fisher_samples=args.fisher_samples)
    data = load_mnist(args.data_dir, download=args.download)
    out = _new_out_dir(args.out, "seed")
    bench = seed_split(data, seed=config.seed, valid_fraction=config.valid_fraction)
    start = time.perf_counter()
    with _progress(steps_total(config, bench), "forgetless seed") as bar:
        result = run_seed(config, bench, on_step=lambda: bar.update(1))
    result |= {"data_source": data.source, "versions": versions(), "seconds": round(time.perf_counter() - start, 2)}
    fig = seed_bars(result)
    fig.savefig(out / "accuracy.png", dpi=120)
    write_atomic(out / "report.md", seed_report(result))
    write_json(out / "result.json", result)  # last: its presence means the run finished
    print(seed_table(result))
    c = result["config"]
    print(f"\nEWC λ = {c['strength']:g} ({c['strength_source']}), Fisher `{c['estimator']}`; "
          f"{result['seconds']:.1f} s. Wrote {out}/result.json, report.md, accuracy.png")
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
        return {"seed": cmd_seed}[args.command](args)
    except (UsageError, DataError, TrainingError, ValueError) as err:
        print(f"forgetless: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("forgetless: interrupted; no result.json was written", file=sys.stderr)
        return 130
