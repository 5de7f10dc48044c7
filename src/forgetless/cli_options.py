"""The command line's options: value parsers, the flags of ``run`` and ``compare`` (the run's own
settings written here; every method's, benchmark's and model's options generated from their
signatures), and the progress bars. Part of the CLI: only :mod:`forgetless.cli` imports it."""
from __future__ import annotations

import argparse
import math
import re
import types
import typing
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

# The run's own settings, as flags (the options' flags are generated in add_run_options).
RUN_FLAGS = ("benchmark", "scenario", "seeds", "strength", "strength_grid", "iterations", "batch_size", "lr",
             "reset_optimizer")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {value}")
    return value


def number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text}")
    return value


def strength(text: str, words: tuple[str, ...] = ("auto",)) -> float | str:
    if text in words:
        return text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0 or {' or '.join(map(repr, words))}, got {text!r}") from None
    if not 0 <= value < math.inf:
        raise argparse.ArgumentTypeError(f"strength must be a finite number >= 0, got {text}")
    return value


def run_strength(text: str) -> float | str:
    """A run's strength: a number, 'auto' or 'default' (:func:`forgetless.defaults.resolve_strength`)."""
    return strength(text, ("auto", "default"))


def seeds(text: str) -> tuple[int, ...]:
    """Seeds as a range or a list.

    Example:
        >>> seeds("0-4"), seeds("0,3")
        ((0, 1, 2, 3, 4), (0, 3))
    """
    try:
        if "-" in text.strip("-"):
            first, last = (int(v) for v in text.split("-"))
            if last < first:
                raise ValueError
            return tuple(range(first, last + 1))
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seeds like 0-4 or 0,1,2, got {text!r}") from None


def floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers like 1e2,1e3, got {text!r}") from None


def ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected whole numbers like 400,400, got {text!r}") from None


def _parser_for(annotation: Any) -> Callable[[str], Any] | None:
    """The flag parser for a setting's type; None for a bool (a --flag/--no-flag pair)."""
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    kind = [a for a in typing.get_args(annotation) if a is not type(None)][0] if union else annotation
    if kind is bool:
        return None
    if typing.get_origin(kind) is tuple:
        return ints if typing.get_args(kind)[0] is int else floats
    return {int: int, float: number}.get(kind, str)


def add_data_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", type=Path, help="directory with the four MNIST IDX files (raw or .gz)")
    p.add_argument("--download", action="store_true", help="download MNIST from public mirrors if no local copy")


def add_output_options(p: argparse.ArgumentParser, default: str = "a new one under runs/") -> None:
    p.add_argument("--out", type=Path, default=None, help=f"output folder (default: {default})")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a finished result in --out that has other settings (default: refuse; the same "
                        "settings are reused)")


def add_run_options(p: argparse.ArgumentParser) -> None:
    from .benchmarks.registry import BENCHMARKS
    from .benchmarks.scenarios import SCENARIOS
    from .run_config import all_options

    p.add_argument("--config", type=Path, help="TOML or YAML file of settings; flags override it")
    p.add_argument("--benchmark", help=f"one of: {', '.join(BENCHMARKS)}")
    p.add_argument("--scenario", help=f"one of: {', '.join(SCENARIOS)}")
    p.add_argument("--seeds", type=seeds, help="e.g. 0-4 (mean ± std over seeds)")
    p.add_argument("--strength", type=run_strength,
                   help="λ (c for SI); 'auto': search on validation data; 'default': no search, the default committed for "
                        "the benchmark and scenario, else the method's global one (default: the committed default, "
                        "else a search; forgetless.defaults)")
    p.add_argument("--strength-grid", type=floats, help="values --strength auto tries, e.g. 1e2,1e3,1e4")
    p.add_argument("--iterations", type=positive_int, help="updates per task")
    p.add_argument("--batch-size", type=positive_int)
    p.add_argument("--lr", type=number)
    p.add_argument("--reset-optimizer", action=argparse.BooleanOptionalAction, default=None,
                   help="a fresh Adam for every task (default), or --no-reset-optimizer: one Adam for the whole sequence")
    for name, owned in sorted(all_options().items()):
        spec = owned[0][1]
        text = f"{_plain(spec.help) or 'option'} ({_owners(owned)}; {_defaults(owned)})"
        parse = _parser_for(spec.annotation)
        flag = "--" + name.replace("_", "-")
        if parse is None:
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=text)
        else:
            p.add_argument(flag, type=parse, default=None, help=text, choices=spec.choices,
                           metavar=None if spec.choices else name.upper())
    add_output_options(p)
    add_data_options(p)


def _plain(text: str) -> str:
    """Docstring markup (``code``, :func:`name`) as plain text for --help."""
    return re.sub(r":\w+:`~?([^`]+)`", r"\1", text).replace("``", "").rstrip(".")


def _owners(owned: list[tuple[str, Any]]) -> str:
    from .benchmarks.registry import BENCHMARKS

    owners = [owner for owner, _ in owned]
    if len(owners) == len(BENCHMARKS) and all(o.endswith("'s model") for o in owners):
        return "every benchmark's model"
    if len(owners) == len(BENCHMARKS) and all(o.startswith("benchmark ") for o in owners):
        return "every benchmark"
    return ", ".join(owners)


def _defaults(owned: list[tuple[str, Any]]) -> str:
    """``default X``, and the owners whose default differs (a variant's, e.g. ewc-kfac's damping)."""
    first = owned[0][1].default
    other: dict[str, list[str]] = {}
    for owner, spec in owned:
        if spec.default != first:
            other.setdefault(_show(spec.default), []).append(owner.removeprefix("method "))
    return "; ".join([f"default {_show(first)}", *(f"{', '.join(o)}: {v}" for v, o in other.items())])


def _show(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


def file_settings(args: argparse.Namespace) -> dict[str, Any]:
    from .config import read_config_file

    return read_config_file(args.config) if args.config else {}


def flag_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The run settings given as flags (those left out are not settings given)."""
    from .run_config import all_options

    return {k: getattr(args, k) for k in (*RUN_FLAGS, *all_options()) if getattr(args, k) is not None}


@contextmanager
def progress_bar(total: int, desc: str, unit: str = "step", initial: int = 0) -> Iterator[Any]:
    from tqdm import tqdm

    with tqdm(total=total, initial=initial, desc=desc, unit=unit, disable=None, leave=False, dynamic_ncols=True) as bar:
        yield bar


def grow(bar: Any) -> Callable[[int], None]:
    """``more(n)``: the work grew by n steps (a local strength search tries another value)."""
    def more(steps: int) -> None:
        bar.total += steps
        bar.refresh()

    return more


@contextmanager
def progress_bars() -> Iterator[Callable[[str, int], Callable[[], None]]]:
    """``progress(label, total)`` opens a bar (closing the previous one) and returns its per-step callback.
    Logged lines (a search's notice, a diverged strength) are printed above the bar, not into it."""
    from tqdm.contrib.logging import logging_redirect_tqdm

    bars: list[Any] = []

    def progress(label: str, total: int) -> Callable[[], None]:
        from tqdm import tqdm

        if bars:
            bars.pop().close()
        bar = tqdm(total=total, desc=label, unit="step", disable=None, leave=False, dynamic_ncols=True)
        bars.append(bar)
        return lambda: bar.update(1)

    try:
        with logging_redirect_tqdm():
            yield progress
    finally:
        for bar in bars:
            bar.close()


def add_stacked(parser: argparse.ArgumentParser, what: str) -> None:
    """``--stacked/--no-stacked`` (default None: the command's own default)."""
    parser.add_argument("--stacked", action=argparse.BooleanOptionalAction, default=None,
                        help=f"{what}; --no-stacked: one at a time")
