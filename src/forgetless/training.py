"""A plain training loop written only with the public regularizer API.

It is what a user would write: task loss + ``reg.penalty(model)``, ``reg.before_step`` and
``reg.after_step`` around each step, ``reg.consolidate`` at the end of the task (done by the caller, who owns the sequence).

Two kinds of targets (see :class:`~forgetless.benchmarks.base.Split`): one class per sample (logits
(N, C), targets (N,)) or one per position of a sequence (logits (N, T, C), targets (N, T), -100 =
no target). For sequences the loss is the mean cross-entropy over the target positions of the batch
(every token weighs the same, as in language-model training), accuracy is next-token accuracy over
those positions, and :func:`accuracy_and_loss` gives the mean loss per token (perplexity = e^loss).
"""
from __future__ import annotations

import math
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .benchmarks.base import Split
from .fisher import IGNORE_INDEX
from .regularizers.base import OutputTransform, Regularizer


IGNORE = IGNORE_INDEX  # a sequence target that is not scored (padding), as in F.cross_entropy and Hugging Face


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. a NaN loss); the message names where it happened."""


def adam(model: nn.Module, lr: float) -> torch.optim.Optimizer:
    """Adam, fused into one kernel where this torch offers it for the parameters' device.

    The fused step is the same update (up to float rounding); on small CPU nets it makes a training
    step about 14% cheaper (``bench/bench_post.py``, what-if table).
    """
    try:
        return torch.optim.Adam(model.parameters(), lr=lr, fused=True)
    except (RuntimeError, TypeError):  # older torch, or a device without the fused kernel
        return torch.optim.Adam(model.parameters(), lr=lr)


def task_loss(logits: Tensor, y: Tensor) -> Tensor:
    """Mean cross-entropy: per sample for (N, C) logits, per target position for (N, T, C) ones.

    Example:
        >>> z = torch.zeros(2, 3, 4); y = torch.tensor([[0, 1, -100], [2, 3, -100]])
        >>> round(float(task_loss(z, y)), 4) == round(math.log(4), 4)   # 4 scored positions, uniform
        True
    """
    if logits.dim() == 3:
        return F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=IGNORE)
    return F.cross_entropy(logits, y)


def _summed_loss(logits: Tensor, y: Tensor) -> Tensor:
    if logits.dim() == 3:
        return F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=IGNORE, reduction="sum")
    return F.cross_entropy(logits, y, reduction="sum")


def _n_targets(y: Tensor) -> int:
    """How many targets a batch scores: its samples, or its non-ignored positions."""
    return len(y) if y.dim() == 1 else max(1, int((y != IGNORE).sum()))


def minibatches(split: Split, batch_size: int, generator: torch.Generator | None = None) -> Iterator[tuple[Tensor, Tensor]]:
    """One pass over ``split`` in mini-batches, shuffled with ``generator`` (in order if None)."""
    n = len(split)
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        # index_select: the same rows as split.x[idx], ~5% of a post-net step cheaper (bench_post.py what-if)
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
        data_loss = task_loss(logits, y)
        loss = data_loss if regularizer is None else data_loss + regularizer.penalty(model)
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
        recent.append(float(data_loss.detach()))
        del recent[:-50]
        if on_step is not None:
            on_step()
    return sum(recent) / max(1, len(recent))


@torch.no_grad()
def accuracy(model: nn.Module, data: Split, *, output_transform: OutputTransform | None = None, batch_size: int = 4096) -> float:
    """Fraction of ``data``'s targets predicted right (samples, or sequence positions), in eval mode.

    The model's mode is restored afterwards. For sequences, ``batch_size`` counts tokens. NaN when
    nothing is scored (an empty split, e.g. the validation split of a run with ``valid_fraction=0``,
    or only ignored positions): 0.0 would read as a measurement.

    Example:
        >>> model = nn.Linear(2, 2)
        >>> accuracy(model, Split(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long)))
        nan
    """
    return _score(model, data, output_transform, batch_size, with_loss=False)[0]


@torch.no_grad()
def accuracy_and_loss(
    model: nn.Module, data: Split, *, output_transform: OutputTransform | None = None, batch_size: int = 4096
) -> tuple[float, float]:
    """``(accuracy, mean cross-entropy per target in nats)`` of ``data`` in one pass, in eval mode.

    Both NaN when nothing is scored (see :func:`accuracy`). For a language model the loss is per
    token and ``math.exp(loss)`` the perplexity. The loss is NaN (undefined: the target's probability
    is 0) when a target is not among the outputs, e.g. class-incremental, a task whose classes are not
    yet active; the accuracy is then what it is (those samples are wrong).

    Example:
        >>> model = nn.Linear(3, 2)
        >>> with torch.no_grad():
        ...     _ = model.weight.zero_(); _ = model.bias.copy_(torch.tensor([1.0, 0.0]))
        >>> acc, loss = accuracy_and_loss(model, Split(torch.zeros(4, 3), torch.tensor([0, 0, 0, 1])))
        >>> acc, round(loss, 4), round(3 / 4 * math.log(1 + math.exp(-1)) + 1 / 4 * math.log(1 + math.exp(1)), 4)
        (0.75, 0.5633, 0.5633)
    """
    return _score(model, data, output_transform, batch_size, with_loss=True)


def _score(model, data: Split, transform, batch_size: int, with_loss: bool) -> tuple[float, float]:
    if len(data) == 0:
        return math.nan, math.nan
    was_training = model.training
    model.eval()
    if data.y.dim() == 2:  # sequences: batch_size counts tokens
        batch_size = max(1, batch_size // max(1, data.y.shape[1]))
    try:
        correct, total, loss = 0, 0, 0.0
        for x, y in minibatches(data, batch_size):
            logits = model(x)
            if transform is not None:
                logits = transform(logits)
            if y.dim() == 1:
                correct += int((logits.argmax(dim=1) == y).sum())
                total += len(y)
            else:
                scored = y != IGNORE
                correct += int(((logits.argmax(dim=-1) == y) & scored).sum())
                total += int(scored.sum())
            if with_loss:  # a target beyond the outputs has probability 0: an undefined loss
                loss += math.nan if int(y.max()) >= logits.shape[-1] else float(_summed_loss(logits, y))
        if total == 0:
            return math.nan, math.nan
        return correct / total, loss / total
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
    cross-entropy on its own task's outputs (what Task-IL needs; Domain/Class-IL pass one transform);
    for sequences, the mean over the batch's scored positions.
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
                loss = loss + _summed_loss(z, y[mine])
        loss = loss / _n_targets(y)  # samples, or scored positions of sequences
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
