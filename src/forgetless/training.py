"""A plain training loop written only with the public regularizer API.

It is what a user would write: task loss + ``reg.penalty(model)``, ``reg.before_step`` and
``reg.after_step`` around each step, ``reg.consolidate`` at the end of the task (done by the caller, who owns the sequence).
"""
from __future__ import annotations

import math
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .benchmarks.base import Split
from .regularizers.base import OutputTransform, Regularizer


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. a NaN loss); the message names where it happened."""


def adam(model: nn.Module, lr: float) -> torch.optim.Optimizer:
    """Adam, fused into one kernel where this torch offers it for the parameters' device.

    The fused step is the same update (up to float rounding); on small CPU nets it makes a training
    step about 14% cheaper (``benchmarks/bench_seed.py``, what-if table).
    """
    try:
        return torch.optim.Adam(model.parameters(), lr=lr, fused=True)
    except (RuntimeError, TypeError):  # older torch, or a device without the fused kernel
        return torch.optim.Adam(model.parameters(), lr=lr)


def minibatches(split: Split, batch_size: int, generator: torch.Generator | None = None) -> Iterator[tuple[Tensor, Tensor]]:
    """One pass over ``split`` in mini-batches, shuffled with ``generator`` (in order if None)."""
    n = len(split)
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        # index_select: the same rows as split.x[idx], ~5% of a seed-net step cheaper (bench_seed.py what-if)
        yield split.x.index_select(0, idx), split.y.index_select(0, idx)


def endless_minibatches(split: Split, batch_size: int, generator: torch.Generator) -> Iterator[tuple[Tensor, Tensor]]:
    """Shuffled mini-batches for as long as asked (iteration-based protocols)."""
    while True:
        yield from minibatches(split, batch_size, generator)


def train_task(
    model: nn.Module,
    data: Split,
    *,
    steps: int,
    batch_size: int = 128,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    regularizer: Regularizer | None = None,
    output_transform: OutputTransform | None = None,
    label: str = "training",
    on_step: Callable[[], None] | None = None,
) -> float:
    """Train for ``steps`` mini-batch updates; returns the mean task loss of the last 50 steps.

    Raises:
        TrainingError: the loss became NaN or infinite (names ``label`` and the epoch).
    """
    model.train()
    steps_per_epoch = math.ceil(len(data) / batch_size)
    if regularizer is not None:
        regularizer.begin_task(model)
    recent: list[float] = []
    batches = endless_minibatches(data, batch_size, generator)
    for step in range(steps):
        x, y = next(batches)
        logits = model(x)
        if output_transform is not None:
            logits = output_transform(logits)
        task_loss = F.cross_entropy(logits, y)
        loss = task_loss if regularizer is None else task_loss + regularizer.penalty(model)
        if not torch.isfinite(loss):
            epoch = step // steps_per_epoch + 1
            raise TrainingError(
                f"{label}: the loss became {float(loss.detach())} at epoch {epoch} (step {step + 1}); "
                "lower the learning rate or the regularization strength"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if regularizer is not None:
            regularizer.before_step(model)
        optimizer.step()
        if regularizer is not None:
            regularizer.after_step(model)
        recent.append(float(task_loss.detach()))
        del recent[:-50]
        if on_step is not None:
            on_step()
    return sum(recent) / max(1, len(recent))


@torch.no_grad()
def accuracy(model: nn.Module, data: Split, *, output_transform: OutputTransform | None = None, batch_size: int = 4096) -> float:
    """Fraction of ``data`` classified correctly, in eval mode (mode restored afterwards).

    NaN for an empty split (e.g. the validation split of a run with ``valid_fraction=0``): there
    is nothing to score, and 0.0 would read as a measurement.

    Example:
        >>> model = nn.Linear(2, 2)
        >>> accuracy(model, Split(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long)))
        nan
    """
    if len(data) == 0:
        return math.nan
    was_training = model.training
    model.eval()
    try:
        correct = 0
        for x, y in minibatches(data, batch_size):
            logits = model(x)
            if output_transform is not None:
                logits = output_transform(logits)
            correct += int((logits.argmax(dim=1) == y).sum())
        return correct / len(data)
    finally:
        model.train(was_training)


def train_joint(
    model: nn.Module,
    parts: list[tuple[Split, OutputTransform | None]],
    *,
    steps: int,
    batch_size: int = 128,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    label: str = "joint training",
    on_step: Callable[[], None] | None = None,
) -> None:
    """Train on the union of several tasks at once, each sample under its own task's output transform.

    Mini-batches are drawn from the union; the loss is the mean over the batch of each sample's
    cross-entropy on its own task's outputs (what Task-IL needs; Domain/Class-IL pass one transform).
    """
    model.train()
    union = Split(torch.cat([s.x for s, _ in parts]), torch.cat([s.y for s, _ in parts]))
    owner = torch.cat([torch.full((len(s),), i, dtype=torch.long) for i, (s, _) in enumerate(parts)])
    steps_per_epoch = math.ceil(len(union) / batch_size)
    indexed = Split(torch.arange(len(union)), owner)
    batches = endless_minibatches(indexed, batch_size, generator)
    for step in range(steps):
        idx, task_of = next(batches)
        logits = model(union.x.index_select(0, idx))
        y = union.y.index_select(0, idx)
        loss = logits.new_zeros(())
        for i, (_, transform) in enumerate(parts):
            mine = task_of == i
            if mine.any():
                z = logits[mine] if transform is None else transform(logits[mine])
                loss = loss + F.cross_entropy(z, y[mine], reduction="sum")
        loss = loss / len(idx)
        if not torch.isfinite(loss):
            raise TrainingError(
                f"{label}: the loss became {float(loss.detach())} at epoch {step // steps_per_epoch + 1} "
                f"(step {step + 1}); lower the learning rate"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if on_step is not None:
            on_step()
