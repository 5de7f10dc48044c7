"""The seed post's split: task A = even digits, task B = odd digits, label = digit // 2.

Both tasks share one 5-way head (domain-incremental: same outputs, new inputs).
"""
from __future__ import annotations

import torch

from ..data import ImageData
from .base import Benchmark, Split, Task, labels_tensor, select, split_train_valid, to_inputs


def seed_split(data: ImageData, *, seed: int = 0, valid_fraction: float = 0.1) -> Benchmark:
    """Build the two tasks from MNIST; the validation split is held out of each task's training data.

    Raises:
        ValueError: labels outside 0..9 (they would be targets beyond the 5-way head).

    Example:
        >>> import numpy as np
        >>> from forgetless.data import ImageData
        >>> imgs = np.zeros((20, 28, 28), np.uint8); labels = np.arange(20) % 10
        >>> bench = seed_split(ImageData(imgs, labels, imgs, labels, "toy"))
        >>> [(t.name, t.classes) for t in bench.tasks]
        [('A', (0, 2, 4, 6, 8)), ('B', (1, 3, 5, 7, 9))]
        >>> bench.tasks[1].test.y.tolist()[:5]
        [0, 1, 2, 3, 4]
    """
    generator = torch.Generator().manual_seed(seed)
    train_digits = labels_tensor(data.train_labels, data.source)
    test_digits = labels_tensor(data.test_labels, data.source)
    train_x, test_x = to_inputs(data.train_images), to_inputs(data.test_images)
    tasks = []
    for name, parity in (("A", 0), ("B", 1)):
        def keep(d: torch.Tensor, parity: int = parity) -> torch.Tensor:
            return d % 2 == parity

        x, digits = select(train_x, train_digits, keep)
        train, valid = split_train_valid(x, digits // 2, valid_fraction, generator)
        tx, tdigits = select(test_x, test_digits, keep)
        tasks.append(Task(name, train, valid, Split(tx, tdigits // 2), tuple(range(parity, 10, 2)), tuple(range(5))))
    return Benchmark("seed-split", tuple(tasks), n_outputs=5, scenario="domain")
