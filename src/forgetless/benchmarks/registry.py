"""The benchmarks by their command-line names: an explicit dict, no scanning, no import magic.

Each entry says how to build the benchmark, from which data set, with which model, in which
scenarios, with which defaults of its own (:mod:`.defaults`), what a strength search scores and what
its loss is per. Its options are read from the signatures: the builder's keyword parameters
(``build(data, *, scenario, seed, **options) -> Benchmark``) and the model factory's
(``model(bench, **options) -> nn.Module``; a parameter named ``seed`` receives the run's seed). This
module is also THE place data is loaded and identified for a benchmark (:func:`load_data`,
:func:`data_fingerprint`).
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from torch import nn

from ..data import load_fashion_mnist, load_mnist, load_text
from ..models import byte_model, image_mlp
from ..options import Option, keyword_options
from .base import Benchmark
from .defaults import NO_DEFAULTS, BenchmarkDefaults
from .permuted import permuted_mnist
from .post_split import post_split
from .prose_code import PROSE_CODE_DEFAULTS, prose_code
from .scenarios import SCENARIOS, check_scenario
from .split import split_fashion, split_mnist


@dataclass(frozen=True)
class Entry:
    """A benchmark: its builder, data set, model factory, scenarios (the first is the default one),
    its own defaults, what ``--strength auto`` scores and what its loss is per.

    ``selection``: ``"accuracy"`` scores a strength by the mean validation accuracy over the tasks
    after the last one (higher is better); ``"loss"`` by their mean validation loss (lower is better).
    """

    build: Callable[..., Benchmark]
    dataset: str                                   # a key of DATASETS
    model: Callable[..., nn.Module] = image_mlp
    scenarios: tuple[str, ...] = SCENARIOS         # the builder refuses the others, saying why
    defaults: BenchmarkDefaults = NO_DEFAULTS
    selection: str = "accuracy"
    loss_per: str = "sample"                       # the loss is the mean cross-entropy per sample, or per byte


# Data set name -> loader(data_dir, download=...); the name also keys data fingerprints.
DATASETS: dict[str, Callable[..., Any]] = {"mnist": load_mnist, "fashion": load_fashion_mnist, "text": load_text}

BENCHMARKS: dict[str, Entry] = {
    "seed-split": Entry(post_split, "mnist", scenarios=("domain",)),
    "split-mnist": Entry(split_mnist, "mnist"),
    "permuted-mnist": Entry(permuted_mnist, "mnist"),
    "split-fashion": Entry(split_fashion, "fashion"),
    # a language model: strengths scored by validation loss (why: prose_code.py's module docstring)
    "prose-code": Entry(prose_code, "text", model=byte_model, scenarios=("domain",), defaults=PROSE_CODE_DEFAULTS,
                        selection="loss", loss_per="byte"),
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
    """The options of benchmark ``name``'s model factory, read from its signature (but ``seed``).

    Example:
        >>> sorted(model_option_specs("split-mnist"))
        ['dropout', 'hidden']
        >>> sorted(model_option_specs("prose-code"))
        ['dropout', 'heads', 'layers', 'mlp_ratio', 'width']
    """
    return keyword_options(entry(name).model, skip=("seed",))


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


def make_model(name: str, bench: Benchmark, *, seed: int = 0, **options: Any) -> nn.Module:
    """The network benchmark ``name`` trains, from its model factory, untrained: a factory that takes
    ``seed`` gets it, the others draw from the global RNG (the caller seeds it)."""
    factory = entry(name).model
    _refuse_unknown(f"{name}'s model", options, model_option_specs(name))
    run = {"seed": seed} if "seed" in keyword_options(factory) else {}
    return factory(bench, **options, **run)


def load_data(name: str, data_dir: str | os.PathLike[str] | None = None, *, download: bool = False) -> Any:
    """The data benchmark ``name`` is built from: THE place the command line loads data.

    Raises:
        DataError: the data cannot be found, read or identified (one line saying how to fix it).
    """
    return DATASETS[required_dataset(name)](data_dir, download=download)


def data_fingerprint(data: Any) -> str:
    """A short sha256 of every array and byte string of ``data`` (a dataclass or a named tuple, nested):
    the same data gives the same value, wherever it was read from.

    Example:
        >>> from forgetless.data import ImageData, TextCorpus, TextData
        >>> imgs = np.zeros((4, 28, 28), np.uint8); labels = np.arange(4)
        >>> a = data_fingerprint(ImageData(imgs, labels, imgs, labels, "toy"))
        >>> a == data_fingerprint(ImageData(imgs.copy(), labels, imgs, labels, "elsewhere")), len(a)
        (True, 16)
        >>> text = lambda code: TextData(TextCorpus("prose", b"ab", "x"), TextCorpus("code", code, "y"))
        >>> data_fingerprint(text(b"cd")) == data_fingerprint(text(b"ce"))
        False
    """
    h = hashlib.sha256()
    _hash_into(h, data)
    return h.hexdigest()[:16]


def _hash_into(h: Any, data: Any, prefix: str = "") -> None:
    names = [f.name for f in dataclasses.fields(data)] if dataclasses.is_dataclass(data) else list(data._fields)
    for name in names:
        value = getattr(data, name)
        if isinstance(value, np.ndarray):  # MNIST's arrays: hashed as they always were (run folders stay reusable)
            a = np.ascontiguousarray(value)
            h.update(f"{prefix}{name}{a.dtype}{a.shape}".encode())
            h.update(a.data)
        elif isinstance(value, bytes):
            h.update(f"{prefix}{name}bytes{len(value)}".encode())
            h.update(value)
        elif dataclasses.is_dataclass(value) or hasattr(value, "_fields"):
            _hash_into(h, value, f"{prefix}{name}.")
