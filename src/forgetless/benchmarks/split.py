"""Split MNIST and split Fashion-MNIST: five tasks of two classes, 0/1, 2/3, 4/5, 6/7, 8/9.

Labels, outputs and targets follow :mod:`forgetless.benchmarks.scenarios`; for task t (0-based),
holding classes ``2t`` and ``2t+1``:

- ``task``:   10 outputs, ``outputs = (2t, 2t+1)``, ``y = label - 2t`` (0 or 1);
- ``domain``:  2 outputs, ``outputs = (0, 1)``,     ``y = label % 2``;
- ``class``:  10 outputs, ``outputs = (0, …, 2t+1)``, ``y = label``.

Fashion-MNIST's labels are 0 T-shirt/top, 1 trouser, 2 pullover, 3 dress, 4 coat, 5 sandal,
6 shirt, 7 sneaker, 8 bag, 9 ankle boot, so its tasks pair them in that order.
"""
from __future__ import annotations

import torch

from ..data import ImageData
from .base import N_CLASSES, Benchmark, Split, Task, labels_tensor, select, split_train_valid, to_inputs
from .scenarios import check_scenario, n_outputs, target_offset, task_outputs

CLASSES_PER_TASK = 2


def split_benchmark(
    data: ImageData, *, name: str, scenario: str, seed: int = 0, valid_fraction: float = 0.1
) -> Benchmark:
    """Five two-class tasks from a 10-class image data set; see the module docstring for targets.

    The validation split is a seeded ``valid_fraction`` of each task's training images; the test
    split is every test image of the task's two classes, in the data set's order.

    Raises:
        ValueError: unknown scenario, labels outside 0..9, or a task without training images.
    """
    check_scenario(scenario)
    generator = torch.Generator().manual_seed(seed)
    train_labels = labels_tensor(data.train_labels, data.source)
    test_labels = labels_tensor(data.test_labels, data.source)
    train_x, test_x = to_inputs(data.train_images), to_inputs(data.test_images)
    n_tasks = N_CLASSES // CLASSES_PER_TASK
    tasks = []
    for t in range(n_tasks):
        first = CLASSES_PER_TASK * t
        classes = tuple(range(first, first + CLASSES_PER_TASK))
        task_name = "-".join(map(str, classes))

        def keep(labels: torch.Tensor, first: int = first) -> torch.Tensor:
            return (labels >= first) & (labels < first + CLASSES_PER_TASK)

        # y = index of the class inside its task + the scenario's offset (2t in class-IL only).
        shift = target_offset(scenario, t, CLASSES_PER_TASK) - first
        x, labels = select(train_x, train_labels, keep)
        if len(labels) < 2:
            raise ValueError(f"{name}: task {task_name} has {len(labels)} training images in {data.source}; need at least 2")
        train, valid = split_train_valid(x, labels + shift, valid_fraction, generator)
        tx, tlabels = select(test_x, test_labels, keep)
        outputs = task_outputs(scenario, t, CLASSES_PER_TASK)
        tasks.append(Task(task_name, train, valid, Split(tx, tlabels + shift), classes, outputs))
    return Benchmark(name, tuple(tasks), n_outputs(scenario, n_tasks, CLASSES_PER_TASK), scenario)


def split_mnist(data: ImageData, *, scenario: str, seed: int = 0, valid_fraction: float = 0.1) -> Benchmark:
    """Split MNIST (van de Ven et al. 2019): digits 0/1, 2/3, 4/5, 6/7, 8/9.

    Args:
        valid_fraction: the share of each task's training images held out for validation (seeded).

    Example:
        >>> import numpy as np
        >>> from forgetless.data import ImageData
        >>> imgs = np.zeros((40, 28, 28), np.uint8); labels = np.arange(40) % 10
        >>> bench = split_mnist(ImageData(imgs, labels, imgs, labels, "toy"), scenario="task")
        >>> t = bench.tasks[2]
        >>> (bench.n_outputs, t.name, t.classes, t.outputs, sorted(set(t.test.y.tolist())))
        (10, '4-5', (4, 5), (4, 5), [0, 1])
    """
    return split_benchmark(data, name="split-mnist", scenario=scenario, seed=seed, valid_fraction=valid_fraction)


def split_fashion(data: ImageData, *, scenario: str, seed: int = 0, valid_fraction: float = 0.1) -> Benchmark:
    """Split Fashion-MNIST: the same construction as :func:`split_mnist` on Fashion-MNIST.

    Args:
        valid_fraction: the share of each task's training images held out for validation (seeded).

    Example:
        >>> import numpy as np
        >>> from forgetless.data import ImageData
        >>> imgs = np.zeros((40, 28, 28), np.uint8); labels = np.arange(40) % 10
        >>> bench = split_fashion(ImageData(imgs, labels, imgs, labels, "toy"), scenario="domain")
        >>> (bench.name, bench.n_outputs, bench.tasks[4].outputs, sorted(set(bench.tasks[4].test.y.tolist())))
        ('split-fashion', 2, (0, 1), [0, 1])
    """
    return split_benchmark(data, name="split-fashion", scenario=scenario, seed=seed, valid_fraction=valid_fraction)
