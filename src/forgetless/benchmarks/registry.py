"""The benchmarks by their command-line names: an explicit dict, no scanning, no import magic.

Each entry says how to build the benchmark, from which data set, with which model, in which
scenarios. Its options are read from the signatures: the builder's keyword parameters
(``build(data, *, scenario, seed, **options) -> Benchmark``) and the model factory's
(``model(bench, **options) -> nn.Module``). This module is also THE place data is loaded and
identified for a benchmark (:func:`load_data`, :func:`data_fingerprint`).
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from torch import nn

from ..data import load_fashion_mnist, load_mnist
from ..models import image_mlp
from ..options import Option, keyword_options
from .base import Benchmark
from .permuted import permuted_mnist
from .post_split import post_split
from .scenarios import SCENARIOS, check_scenario
from .split import split_fashion, split_mnist


@dataclass(frozen=True)
class Entry:
    """A benchmark: its builder, the data set it is built from, its model factory and scenarios."""

    build: Callable[..., Benchmark]
    dataset: str                                   # a key of DATASETS
    model: Callable[..., nn.Module] = image_mlp
    scenarios: tuple[str, ...] = SCENARIOS         # the builder refuses the others, saying why


# Data set name -> loader(data_dir, download=...); the name also keys data fingerprints.
DATASETS: dict[str, Callable[..., Any]] = {"mnist": load_mnist, "fashion": load_fashion_mnist}

BENCHMARKS: dict[str, Entry] = {
    "seed-split": Entry(post_split, "mnist", scenarios=("domain",)),
    "split-mnist": Entry(split_mnist, "mnist"),
    "permuted-mnist": Entry(permuted_mnist, "mnist"),
    "split-fashion": Entry(split_fashion, "fashion"),
}


def entry(name: str) -> Entry:
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; valid benchmarks: {', '.join(BENCHMARKS)}")
    return BENCHMARKS[name]


def required_dataset(name: str) -> str:
    """The data set benchmark ``name`` is built from.

    Example:
        >>> required_dataset("split-fashion"), required_dataset("permuted-mnist")
        ('fashion', 'mnist')
    """
    return entry(name).dataset


def supported_scenarios(name: str) -> tuple[str, ...]:
    """The scenarios benchmark ``name`` can be built in.

    Example:
        >>> supported_scenarios("seed-split"), supported_scenarios("split-mnist")
        (('domain',), ('task', 'domain', 'class'))
    """
    return entry(name).scenarios


def benchmark_option_specs(name: str) -> dict[str, Option]:
    """The builder's options (beyond ``scenario`` and ``seed``), read from its signature."""
    return keyword_options(entry(name).build, skip=("scenario", "seed"))


def benchmark_options(name: str) -> dict[str, Any]:
    """The options of benchmark ``name`` beyond ``scenario`` and ``seed``, with their defaults.

    Example:
        >>> benchmark_options("permuted-mnist")
        {'n_tasks': 10, 'valid_fraction': 0.1, 'permute_first': False, 'padding': 0}
        >>> benchmark_options("split-mnist")
        {'valid_fraction': 0.1, 'task_order': 'fixed'}
    """
    return {k: o.default for k, o in benchmark_option_specs(name).items()}


def model_option_specs(name: str) -> dict[str, Option]:
    """The options of benchmark ``name``'s model factory, read from its signature.

    Example:
        >>> sorted(model_option_specs("split-mnist"))
        ['dropout', 'hidden']
    """
    return keyword_options(entry(name).model)


def _refuse_unknown(what: str, given: dict[str, Any], valid: dict[str, Any]) -> None:
    unknown = sorted(set(given) - set(valid))
    if unknown:
        raise ValueError(f"unknown option{'s' if len(unknown) > 1 else ''} for {what}: {', '.join(unknown)}; "
                         f"valid options: {', '.join(valid) or '(none)'}")


def make_benchmark(name: str, data: Any, *, scenario: str, seed: int = 0, **options: Any) -> Benchmark:
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
    build = entry(name).build
    check_scenario(scenario)
    _refuse_unknown(name, options, benchmark_options(name))
    return build(data, scenario=scenario, seed=seed, **options)


def make_model(name: str, bench: Benchmark, **options: Any) -> nn.Module:
    """The network benchmark ``name`` trains, from its model factory (untrained; seed the caller's RNG)."""
    factory = entry(name).model
    _refuse_unknown(f"{name}'s model", options, model_option_specs(name))
    return factory(bench, **options)


def load_data(name: str, data_dir: str | os.PathLike[str] | None = None, *, download: bool = False) -> Any:
    """The data benchmark ``name`` is built from: THE place the command line loads data.

    Raises:
        DataError: the data cannot be found, read or identified (one line saying how to fix it).
    """
    return DATASETS[required_dataset(name)](data_dir, download=download)


def data_fingerprint(data: Any) -> str:
    """A short sha256 of every array of ``data`` (a dataclass): the same data gives the same value.

    Example:
        >>> from forgetless.data import ImageData
        >>> imgs = np.zeros((4, 28, 28), np.uint8); labels = np.arange(4)
        >>> a = data_fingerprint(ImageData(imgs, labels, imgs, labels, "toy"))
        >>> a == data_fingerprint(ImageData(imgs.copy(), labels, imgs, labels, "elsewhere")), len(a)
        (True, 16)
    """
    h = hashlib.sha256()
    for f in dataclasses.fields(data):
        value = getattr(data, f.name)
        if isinstance(value, np.ndarray):
            a = np.ascontiguousarray(value)
            h.update(f"{f.name}{a.dtype}{a.shape}".encode())
            h.update(a.data)
    return h.hexdigest()[:16]
