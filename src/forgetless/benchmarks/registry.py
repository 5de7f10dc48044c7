"""The benchmarks by their command-line names: an explicit dict, no scanning, no import magic.

Every builder has the signature ``build(data, *, scenario, seed, **options) -> Benchmark``.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable

from ..data import ImageData
from .base import Benchmark
from .permuted import permuted_mnist
from .scenarios import SCENARIOS, check_scenario
from .seed_split import seed_split
from .split import split_fashion, split_mnist


def seed_split_benchmark(data: ImageData, *, scenario: str, seed: int = 0, valid_fraction: float = 0.1) -> Benchmark:
    """:func:`~forgetless.benchmarks.seed_split.seed_split` behind the common signature.

    Raises:
        ValueError: ``scenario`` is not ``"domain"`` — the only one this benchmark has.
    """
    check_scenario(scenario)
    if scenario != "domain":
        raise ValueError(
            f"seed-split has only the domain scenario, not {scenario!r}: its two tasks (even digits, "
            "odd digits) share one 5-way head by definition (label = digit // 2, the seed post's "
            "protocol); for task- or class-incremental learning use split-mnist"
        )
    return seed_split(data, seed=seed, valid_fraction=valid_fraction)


BENCHMARKS: dict[str, Callable[..., Benchmark]] = {
    "seed-split": seed_split_benchmark,
    "split-mnist": split_mnist,
    "permuted-mnist": permuted_mnist,
    "split-fashion": split_fashion,
}

# Which data set each benchmark is built from, so the CLI loads the right one.
DATASETS: dict[str, str] = {
    "seed-split": "mnist",
    "split-mnist": "mnist",
    "permuted-mnist": "mnist",
    "split-fashion": "fashion",
}

# What each builder accepts (for --help and choices); the builders themselves enforce it, with the
# reason, and a test checks the two agree.
SUPPORTED_SCENARIOS: dict[str, tuple[str, ...]] = {
    "seed-split": ("domain",),
    "split-mnist": SCENARIOS,
    "permuted-mnist": SCENARIOS,
    "split-fashion": SCENARIOS,
}


def _check_name(name: str) -> str:
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; valid benchmarks: {', '.join(BENCHMARKS)}")
    return name


def required_dataset(name: str) -> str:
    """``"mnist"`` or ``"fashion"``: the data set benchmark ``name`` is built from.

    Example:
        >>> required_dataset("split-fashion"), required_dataset("permuted-mnist")
        ('fashion', 'mnist')
    """
    return DATASETS[_check_name(name)]


def supported_scenarios(name: str) -> tuple[str, ...]:
    """The scenarios benchmark ``name`` can be built in.

    Example:
        >>> supported_scenarios("seed-split"), supported_scenarios("split-mnist")
        (('domain',), ('task', 'domain', 'class'))
    """
    return SUPPORTED_SCENARIOS[_check_name(name)]


def benchmark_options(name: str) -> dict[str, Any]:
    """The options of benchmark ``name`` beyond ``scenario`` and ``seed``, with their defaults.

    Read from the builder's signature, so it cannot drift from the code.

    Example:
        >>> benchmark_options("permuted-mnist")
        {'n_tasks': 10, 'valid_fraction': 0.1, 'permute_first': False, 'padding': 0}
        >>> benchmark_options("split-mnist")
        {'valid_fraction': 0.1, 'task_order': 'fixed'}
    """
    parameters = inspect.signature(BENCHMARKS[_check_name(name)]).parameters.values()
    return {
        p.name: p.default
        for p in parameters
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in ("scenario", "seed")
    }


def make_benchmark(name: str, data: ImageData, *, scenario: str, seed: int = 0, **options: Any) -> Benchmark:
    """Build benchmark ``name`` from ``data`` in ``scenario``.

    Raises:
        ValueError: an unknown name, scenario or option (the message lists the valid ones), or a
            scenario this benchmark does not have (the message says why).

    Example:
        >>> import numpy as np
        >>> from forgetless.data import ImageData
        >>> imgs = np.zeros((40, 28, 28), np.uint8); labels = np.arange(40) % 10
        >>> data = ImageData(imgs, labels, imgs, labels, "toy")
        >>> bench = make_benchmark("permuted-mnist", data, scenario="domain", n_tasks=2)
        >>> bench.name, bench.scenario, len(bench.tasks), bench.n_outputs
        ('permuted-mnist', 'domain', 2, 10)
        >>> make_benchmark("split-mnist", data, scenario="domain", n_tasks=2)
        Traceback (most recent call last):
        ...
        ValueError: unknown option for split-mnist: n_tasks; valid options: valid_fraction, task_order
    """
    _check_name(name)
    check_scenario(scenario)
    valid = benchmark_options(name)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(
            f"unknown option{'s' if len(unknown) > 1 else ''} for {name}: {', '.join(unknown)}; "
            f"valid options: {', '.join(valid) or '(none)'}"
        )
    # A builder refuses the scenarios it does not have itself, saying why (see seed_split_benchmark).
    return BENCHMARKS[name](data, scenario=scenario, seed=seed, **options)
