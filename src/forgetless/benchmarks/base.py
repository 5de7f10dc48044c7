"""Plain data: no hidden "current task" counter, nothing advances when you read it."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor


@dataclass(frozen=True)
class Split:
    """Inputs and targets of one split, first dimension = samples.

    Images: x float32 (N, D), pixels in [0, 1] (D = 784 for 28×28 images); y int64 (N,), indices
    into the task's outputs.
    Sequences (``prose-code``): x int64 (N, T) byte windows; y int64 (N, T), the next byte at each
    position (-100 = no target there, as in PyTorch's and Hugging Face's cross-entropy).
    """

    x: Tensor
    y: Tensor

    def __len__(self) -> int:
        return len(self.y)

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y):
            raise ValueError(f"Split: {len(self.x)} inputs but {len(self.y)} targets")


@dataclass(frozen=True)
class Task:
    """One task of a sequence.

    ``classes`` are the original labels (e.g. digits) in this task; ``outputs`` the indices of the
    network outputs the task uses (its head or its slice of a shared head).
    """

    name: str
    train: Split
    valid: Split
    test: Split
    classes: tuple[int, ...]
    outputs: tuple[int, ...]


@dataclass(frozen=True)
class Benchmark:
    """A named sequence of tasks; ``n_outputs`` is the width of the network's output layer.

    ``info`` holds plain-JSON facts a result must record to say what it ran on (e.g. ``prose-code``'s
    text fingerprints); empty for benchmarks whose data is fixed by a checksum elsewhere.
    """

    name: str
    tasks: tuple[Task, ...]
    n_outputs: int
    scenario: str
    info: dict[str, Any] = field(default_factory=dict, hash=False)


N_CLASSES = 10  # the data sets' labels: MNIST's digits, Fashion-MNIST's ten kinds of clothing


def labels_tensor(labels, source: str) -> Tensor:
    """int64 tensor of class labels, checked to lie in 0..9 (a wrong data set fails here, clearly).

    Example:
        >>> labels_tensor(np.array([3, 12]), "toy")
        Traceback (most recent call last):
        ...
        ValueError: toy: labels must lie in 0..9, got 3..12
    """
    labels = torch.as_tensor(labels, dtype=torch.long)
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= N_CLASSES):
        raise ValueError(f"{source}: labels must lie in 0..{N_CLASSES - 1}, got {int(labels.min())}..{int(labels.max())}")
    return labels


def to_inputs(images: np.ndarray) -> Tensor:
    """uint8 (N, 28, 28) → float32 (N, 784) in [0, 1]."""
    return torch.from_numpy(images.reshape(len(images), -1)).float().div_(255.0)


def split_train_valid(
    x: Tensor, y: Tensor, valid_fraction: float, generator: torch.Generator
) -> tuple[Split, Split]:
    """Hold a seeded random ``valid_fraction`` out of the training data for model selection.

    ``valid_fraction=0`` trains on all of it (van de Ven & Tolias's protocol, hyperparameters
    given rather than searched): the validation split is then empty and the training split is the
    data as given, in order, without drawing from ``generator``.

    Example:
        >>> x, y = torch.arange(10.0).reshape(10, 1), torch.arange(10)
        >>> train, valid = split_train_valid(x, y, 0.2, torch.Generator().manual_seed(0))
        >>> len(train), len(valid)
        (8, 2)
        >>> train, valid = split_train_valid(x, y, 0.0, torch.Generator())
        >>> len(train), len(valid), tuple(valid.x.shape)
        (10, 0, (0, 1))
    """
    if not 0.0 <= valid_fraction < 1.0:
        raise ValueError(f"valid_fraction must be in [0, 1), got {valid_fraction}")
    if valid_fraction == 0.0:
        return Split(x, y), Split(x[:0], y[:0])
    order = torch.randperm(len(y), generator=generator)
    n_valid = max(1, int(round(valid_fraction * len(y))))
    valid, train = order[:n_valid], order[n_valid:]
    return Split(x[train], y[train]), Split(x[valid], y[valid])


def select(x: Tensor, labels: Tensor, keep: Callable[[Tensor], Tensor]) -> tuple[Tensor, Tensor]:
    mask = keep(labels)
    return x[mask], labels[mask]
