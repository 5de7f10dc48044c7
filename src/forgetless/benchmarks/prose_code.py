"""``prose-code``: a byte-level language model learns English prose, then Python code.

Two tasks (domains), in this order, from text that ships with Python (:mod:`forgetless.data.text`):
``prose`` (the language reference's help topics) then ``code`` (standard-library source files).
Forgetting shows as the prose loss rising while the model learns code.

How the text becomes samples, fixed so that every run sees the same windows:

- **Windows.** Each domain's bytes b are cut into consecutive, non-overlapping windows of
  ``seq_len`` bytes: sample i has ``x = b[i·T : (i+1)·T]`` and ``y = b[i·T+1 : (i+1)·T+1]`` (the
  next byte at every position), T = ``seq_len`` (default 64). Every byte after the first is a target
  exactly once; the tail that does not fill a window is dropped.
- **Blocks.** Windows are grouped into blocks of ``block_windows`` consecutive windows (default 16,
  i.e. 1 KiB at T = 64) and whole blocks are assigned to splits, so a held-out window's neighbours
  are mostly held out too (less overlap of context between training and test text than a split by
  window).
- **Test** (fixed, the same for every seed): every 10th block, blocks 9, 19, 29, … (10% of the text,
  spread over all of it).
- **Validation** (seeded): a random ``valid_fraction`` (default 10%) of the remaining blocks, drawn
  with ``torch.Generator().manual_seed(seed)``; the rest is training data. Training windows are
  stored in a random order drawn from the same generator, so the first N of them are a random sample
  of the domain (what a Fisher on ``fisher_samples`` windows reads); validation and test windows keep
  the text's order.
- **Targets.** One output head of 256 units (a byte), shared by both domains: only the ``domain``
  scenario exists. ``Task.classes`` and ``Task.outputs`` are ``range(256)``.

Sizes on Python 3.11.7, seed 0: prose 466 196 bytes → 7 284 windows of 64 (train 5 908, valid 656,
test 720); code 506 842 bytes → 7 919 windows (train 6 415, valid 720, test 784). ``Benchmark.info``
records the Python version, each domain's byte count, sha256 and source, and the windowing
settings: results are comparable only when the digests agree (the texts change between Python
versions; on 3.11.7 prose is ``7cfbd9e6…``, code ``e4fc09a0…``).
"""
from __future__ import annotations

import sys

import torch
from torch import Tensor

from ..data.text import TextCorpus, load_prose_code
from .base import Benchmark, Split, Task
from .defaults import BenchmarkDefaults, Default
from .scenarios import check_scenario

N_BYTES = 256
TEST_EVERY = 10  # every 10th block is test data

__all__ = ["N_BYTES", "PROSE_CODE_DEFAULTS", "byte_windows", "prose_code", "prose_code_benchmark"]


def byte_windows(text: bytes, seq_len: int) -> tuple[Tensor, Tensor]:
    """Consecutive non-overlapping windows: ``(x, y)`` int64 (N, seq_len), y = x shifted by one byte.

    Example:
        >>> x, y = byte_windows(b"abcdefgh", 3)
        >>> x.tolist(), y.tolist()
        ([[97, 98, 99], [100, 101, 102]], [[98, 99, 100], [101, 102, 103]])
    """
    if seq_len < 1:
        raise ValueError(f"seq_len must be >= 1, got {seq_len}")
    data = torch.frombuffer(bytearray(text), dtype=torch.uint8).long()
    n = (len(data) - 1) // seq_len
    x = data[: n * seq_len].view(n, seq_len)
    y = data[1 : n * seq_len + 1].view(n, seq_len)
    return x.clone(), y.clone()


def prose_code(
    data: tuple[TextCorpus, TextCorpus],
    *,
    scenario: str = "domain",
    seed: int = 0,
    seq_len: int = 64,
    valid_fraction: float = 0.1,
    block_windows: int = 16,
) -> Benchmark:
    """The two domains of ``data`` (``prose`` then ``code``) as next-byte prediction tasks.

    Args:
        data: the corpora in training order, e.g. :func:`forgetless.data.text.load_prose_code`.
        scenario: ``"domain"``, the only one (one byte head shared by both domains).
        seed: draws the validation blocks (the test blocks are fixed).
        seq_len: bytes per window (the model's context).
        valid_fraction: share of the non-test blocks held out for validation.
        block_windows: windows per block, the unit assigned to a split.

    Raises:
        ValueError: another scenario (with the reason), bad sizes, or a domain too short to give
            training, validation and test blocks.

    Example:
        >>> toy = (TextCorpus("prose", b"the cat sat on the mat. " * 80, "toy"),
        ...        TextCorpus("code", b"def f(x):\\n    return x\\n" * 80, "toy"))
        >>> bench = prose_code(toy, scenario="domain", seq_len=8, block_windows=4)
        >>> [t.name for t in bench.tasks], bench.n_outputs, tuple(bench.tasks[0].train.x.shape[1:])
        (['prose', 'code'], 256, (8,))
        >>> [len(t.train) + len(t.valid) + len(t.test) for t in bench.tasks]
        [239, 229]
        >>> bench.info["domains"]["prose"]["sha256"] == toy[0].sha256
        True
    """
    check_scenario(scenario)
    if scenario != "domain":
        raise ValueError(
            f"prose-code has only the domain scenario, not {scenario!r}: both domains predict the next "
            "byte with one shared 256-way head, so there are no per-task output units to give or grow"
        )
    if not 0.0 < valid_fraction < 1.0:
        raise ValueError(f"valid_fraction must be in (0, 1), got {valid_fraction}")
    if block_windows < 1:
        raise ValueError(f"block_windows must be >= 1, got {block_windows}")
    generator = torch.Generator().manual_seed(seed)
    tasks = tuple(_task(corpus, seq_len, block_windows, valid_fraction, generator) for corpus in data)
    info = {
        "python": ".".join(map(str, sys.version_info[:3])),
        "seq_len": seq_len,
        "block_windows": block_windows,
        "test_every": TEST_EVERY,
        "valid_fraction": valid_fraction,
        "domains": {c.name: {"bytes": len(c.text), "sha256": c.sha256, "source": c.source} for c in data},
    }
    return Benchmark("prose-code", tasks, N_BYTES, scenario, info)


def prose_code_benchmark(
    data: tuple[TextCorpus, TextCorpus] | None = None, *, scenario: str = "domain", seed: int = 0, **options
) -> Benchmark:
    """:func:`prose_code` on this Python's texts when ``data`` is None (the registry's signature)."""
    return prose_code(load_prose_code() if data is None else data, scenario=scenario, seed=seed, **options)


def _task(corpus: TextCorpus, seq_len: int, block_windows: int, valid_fraction: float,
          generator: torch.Generator) -> Task:
    x, y = byte_windows(corpus.text, seq_len)
    n_blocks = -(-len(x) // block_windows)
    block = torch.arange(len(x)) // block_windows
    is_test = torch.arange(n_blocks) % TEST_EVERY == TEST_EVERY - 1
    rest = torch.nonzero(~is_test).squeeze(1)
    n_valid = max(1, int(round(valid_fraction * len(rest))))
    if not is_test.any() or len(rest) - n_valid < 1:
        raise ValueError(
            f"prose-code: domain {corpus.name!r} gives {n_blocks} blocks of {block_windows} windows of "
            f"{seq_len} bytes; need at least {TEST_EVERY} (a test block, validation and training blocks)"
        )
    is_valid = torch.zeros(n_blocks, dtype=torch.bool)
    is_valid[rest[torch.randperm(len(rest), generator=generator)[:n_valid]]] = True
    where = {"test": is_test[block], "valid": is_valid[block]}
    where["train"] = ~(where["test"] | where["valid"])
    splits = {name: Split(x[mask], y[mask]) for name, mask in where.items()}
    order = torch.randperm(len(splits["train"]), generator=generator)
    splits["train"] = Split(splits["train"].x[order], splits["train"].y[order])
    outputs = tuple(range(N_BYTES))
    return Task(corpus.name, splits["train"], splits["valid"], splits["test"], outputs, outputs)



_STAGE_1 = "the protocol of issue 13 stage 1's measurements (naive forgot prose, EWC kept more of it, 3 seeds)"
# The benchmark's own run-setting defaults (forgetless.benchmarks.defaults), each with where its value
# comes from. Its default strengths are in forgetless.defaults, with the committed search that chose them.
PROSE_CODE_DEFAULTS = BenchmarkDefaults(
    settings={
        "iterations": Default(1000, _STAGE_1),
        "batch_size": Default(32, _STAGE_1),
        "lr": Default(3e-3, _STAGE_1),
        "reset_optimizer": Default(True, f"{_STAGE_1}: a fresh Adam per domain"),
        "estimator": Default("sampled", "exact needs T·(C−1) = 64·255 backward directions per window (refused "
                                        "beyond 4096); sampled is its unbiased estimate with one"),
        "fisher_samples": Default(512, _STAGE_1),
        "importance_samples": Default(512, "the Fisher's budget (fisher_samples = 512)"),
    },
    strength_grid={  # EWC's class grid (1e2…1e6, for MNIST) misses this model's scale by orders of magnitude
        "ewc": Default((3.0, 10.0, 30.0, 100.0), "half decades from stage 1's λ = 10; the grid of the committed "
                                                 "search (forgetless.defaults, scripts/prose-code.sh)"),
    },
)
