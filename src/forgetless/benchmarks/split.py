"""Split MNIST and split Fashion-MNIST: five tasks of two classes.

Which classes pair up, and in what order, is ``task_order``:

- ``"fixed"`` (default): 0/1, 2/3, 4/5, 6/7, 8/9, whatever the seed;
- ``"vandeven2019"``: van de Ven & Tolias's code (``continual-learning``, April 2019, ``data.py``)
  for their seed: ``np.random.seed(seed); perm = np.random.permutation(10)`` relabels class ``d``
  as ``perm[d]``, and task t takes the classes relabelled ``2t`` and ``2t+1``, i.e. classes
  ``argsort(perm)[2t]`` then ``argsort(perm)[2t+1]`` (not ``perm[2t]``, ``perm[2t+1]``). Seed 0 is
  their exception: the identity, i.e. the fixed order. Seed 1 gives tasks 4/6, 0/5, 3/9, 2/7, 8/1;
  seed 2 gives 3/1, 5/6, 0/2, 7/4, 9/8. Their published means are over seeds from 1 on.

Labels, outputs and targets follow :mod:`forgetless.benchmarks.scenarios`; for task t (0-based)
holding classes ``order[2t]`` and ``order[2t+1]`` (``j`` = 0 and 1, their index inside the task):

- ``task``:   10 outputs, ``outputs = (2t, 2t+1)``, ``y = j``;
- ``domain``:  2 outputs, ``outputs = (0, 1)``,     ``y = j`` (fixed order: the digit's parity);
- ``class``:  10 outputs, ``outputs = (0, …, 2t+1)``, ``y = 2t + j`` (fixed order: the digit).

Fashion-MNIST's labels are 0 T-shirt/top, 1 trouser, 2 pullover, 3 dress, 4 coat, 5 sandal,
6 shirt, 7 sneaker, 8 bag, 9 ankle boot, so its fixed-order tasks pair them in that order.
"""
from __future__ import annotations

import numpy as np
import torch

from ..data import ImageData
from .base import N_CLASSES, Benchmark, Split, Task, labels_tensor, select, split_train_valid, to_inputs
from .scenarios import check_scenario, n_outputs, target_offset, task_outputs

CLASSES_PER_TASK = 2
TASK_ORDERS: tuple[str, ...] = ("fixed", "vandeven2019")


def class_order(task_order: str = "fixed", seed: int = 0) -> tuple[int, ...]:
    """The classes in task order: task t holds ``order[2t]`` (``j = 0``) and ``order[2t+1]`` (``j = 1``).

    ``"vandeven2019"`` reproduces van de Ven & Tolias's per-seed relabelling (module docstring)
    with a local ``np.random.RandomState(seed)``, the generator ``np.random.seed(seed)`` sets up,
    so the global NumPy RNG is not touched.

    Example:
        >>> class_order("fixed", seed=1)
        (0, 1, 2, 3, 4, 5, 6, 7, 8, 9)
        >>> class_order("vandeven2019", seed=1)
        (4, 6, 0, 5, 3, 9, 2, 7, 8, 1)
        >>> class_order("vandeven2019", seed=0) == class_order("fixed")
        True
    """
    if task_order not in TASK_ORDERS:
        raise ValueError(f"unknown task_order {task_order!r}; valid: {', '.join(TASK_ORDERS)}")
    if task_order == "fixed" or seed == 0:  # their code makes seed 0 the unshuffled exception
        return tuple(range(N_CLASSES))
    relabel = np.random.RandomState(seed).permutation(N_CLASSES)  # class d -> relabel[d]
    return tuple(int(d) for d in np.argsort(relabel))


def split_benchmark(
    data: ImageData, *, name: str, scenario: str, seed: int = 0, valid_fraction: float = 0.1,
    task_order: str = "fixed",
) -> Benchmark:
    """Five two-class tasks from a 10-class image data set; see the module docstring for targets.

    The validation split is a seeded ``valid_fraction`` of each task's training images (none with
    ``valid_fraction=0``); the test split is every test image of the task's two classes, in the
    data set's order.

    Raises:
        ValueError: unknown scenario or task order, labels outside 0..9, or a task without training images.
    """
    check_scenario(scenario)
    order = class_order(task_order, seed)
    generator = torch.Generator().manual_seed(seed)
    # Relabel class order[i] as i: from here on task t holds the relabelled classes 2t and 2t+1.
    rank = torch.as_tensor(np.argsort(order))
    train_labels = rank[labels_tensor(data.train_labels, data.source)]
    test_labels = rank[labels_tensor(data.test_labels, data.source)]
    train_x, test_x = to_inputs(data.train_images), to_inputs(data.test_images)
    n_tasks = N_CLASSES // CLASSES_PER_TASK
    tasks = []
    for t in range(n_tasks):
        first = CLASSES_PER_TASK * t
        classes = order[first : first + CLASSES_PER_TASK]
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


def split_mnist(
    data: ImageData, *, scenario: str, seed: int = 0, valid_fraction: float = 0.1, task_order: str = "fixed"
) -> Benchmark:
    """Split MNIST (van de Ven & Tolias 2019): digits 0/1, 2/3, 4/5, 6/7, 8/9, or their per-seed order.

    Example:
        >>> import numpy as np
        >>> from forgetless.data import ImageData
        >>> imgs = np.zeros((40, 28, 28), np.uint8); labels = np.arange(40) % 10
        >>> bench = split_mnist(ImageData(imgs, labels, imgs, labels, "toy"), scenario="task")
        >>> t = bench.tasks[2]
        >>> (bench.n_outputs, t.name, t.classes, t.outputs, sorted(set(t.test.y.tolist())))
        (10, '4-5', (4, 5), (4, 5), [0, 1])
        >>> [t.name for t in split_mnist(ImageData(imgs, labels, imgs, labels, "toy"), scenario="task",
        ...                               seed=1, task_order="vandeven2019").tasks]
        ['4-6', '0-5', '3-9', '2-7', '8-1']
    """
    return split_benchmark(data, name="split-mnist", scenario=scenario, seed=seed, valid_fraction=valid_fraction,
                           task_order=task_order)


def split_fashion(
    data: ImageData, *, scenario: str, seed: int = 0, valid_fraction: float = 0.1, task_order: str = "fixed"
) -> Benchmark:
    """Split Fashion-MNIST: the same construction as :func:`split_mnist` on Fashion-MNIST.

    Example:
        >>> import numpy as np
        >>> from forgetless.data import ImageData
        >>> imgs = np.zeros((40, 28, 28), np.uint8); labels = np.arange(40) % 10
        >>> bench = split_fashion(ImageData(imgs, labels, imgs, labels, "toy"), scenario="domain")
        >>> (bench.name, bench.n_outputs, bench.tasks[4].outputs, sorted(set(bench.tasks[4].test.y.tolist())))
        ('split-fashion', 2, (0, 1), [0, 1])
    """
    return split_benchmark(data, name="split-fashion", scenario=scenario, seed=seed, valid_fraction=valid_fraction,
                           task_order=task_order)

