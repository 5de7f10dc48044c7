"""The three continual-learning scenarios of van de Ven & Tolias 2019 ("Three scenarios for continual
learning", arXiv 1904.07734).

One rule holds in every scenario and every benchmark::

    a sample (x, y) of task t belongs to network output  t.outputs[y]

i.e. ``Split.y`` is an index into ``Task.outputs``, which is exactly the column of the logits
after ``logits[:, task.outputs]`` (what :func:`task_output_transform` returns). With ``C`` classes
per task, ``T`` tasks, ``j`` the class's index inside its task (0 ≤ j < C):

==========  ===================  ===========================  ===============  ==================
scenario    ``n_outputs``        ``Task.outputs`` of task t   ``Split.y``      transform
==========  ===================  ===========================  ===============  ==================
``task``    C·T                  ``range(C·t, C·(t+1))``      j                ``z[:, outputs]``
``domain``  C                    ``range(C)``                 j                None
``class``   C·T                  ``range(0, C·(t+1))``        C·t + j          ``z[:, outputs]``
==========  ===================  ===========================  ===============  ==================

- **task** (Task-IL): task identity is given at training *and* test time. Each task owns its own
  C units of one shared output layer ("multi-head" as disjoint slices); the other units are left
  out of the softmax for training and testing alike.
- **domain** (Domain-IL): no task identity; one head of C units shared by all tasks (split MNIST:
  odd vs even, y = digit % 2; permuted MNIST: y = digit).
- **class** (Class-IL): no task identity; one head that grows with the classes seen. Task t's
  outputs are *all units seen so far* (van de Ven & Tolias's "active classes"); y is the global class
  index, which lies inside that range, so ``outputs[y] == y``.

Training on task t uses ``task_output_transform(task_t, scenario)``. Evaluating task k after
training tasks 0..t uses :func:`eval_output_transform`: task k's own slice in Task-IL, nothing in
Domain-IL, and in Class-IL the units seen so far, i.e. those of task **t** (not k). In Class-IL a
not-yet-trained task (k > t) has targets outside the active units and so scores 0 — its classes
cannot be predicted yet, which is the point of the scenario.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from .base import Benchmark, Task

SCENARIOS: tuple[str, ...] = ("task", "domain", "class")


def check_scenario(scenario: str) -> str:
    """Return ``scenario`` if it is one of :data:`SCENARIOS`, else raise a ValueError listing them."""
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; valid scenarios: {', '.join(SCENARIOS)}")
    return scenario


def n_outputs(scenario: str, n_tasks: int, classes_per_task: int) -> int:
    """Width of the output layer: one shared head (domain) or a unit per class of every task.

    Example:
        >>> [n_outputs(s, 5, 2) for s in SCENARIOS]
        [10, 2, 10]
    """
    check_scenario(scenario)
    return classes_per_task if scenario == "domain" else classes_per_task * n_tasks


def task_outputs(scenario: str, task_index: int, classes_per_task: int) -> tuple[int, ...]:
    """``Task.outputs`` of task ``task_index`` (0-based); see the module's table.

    Example:
        >>> [task_outputs(s, 2, 2) for s in SCENARIOS]
        [(4, 5), (0, 1), (0, 1, 2, 3, 4, 5)]
    """
    check_scenario(scenario)
    c, t = classes_per_task, task_index
    if scenario == "task":
        return tuple(range(c * t, c * (t + 1)))
    if scenario == "domain":
        return tuple(range(c))
    return tuple(range(c * (t + 1)))


def target_offset(scenario: str, task_index: int, classes_per_task: int) -> int:
    """What to add to a class's within-task index ``j`` to get its target ``Split.y``.

    Example:
        >>> [target_offset(s, 2, 2) for s in SCENARIOS]
        [0, 0, 4]
    """
    check_scenario(scenario)
    return classes_per_task * task_index if scenario == "class" else 0


@dataclass(frozen=True)
class SelectOutputs:
    """``logits ↦ logits[..., outputs]``: keep a task's active units (the last dimension), in order.

    A small dataclass rather than a lambda so that it has a readable repr (it goes into results),
    compares by value and pickles. Contiguous outputs (all of ours) are taken as a view.

    Example:
        >>> import torch
        >>> SelectOutputs((2, 3))(torch.arange(12.0).reshape(2, 6)).tolist()
        [[2.0, 3.0], [8.0, 9.0]]
    """

    outputs: tuple[int, ...]

    def __post_init__(self) -> None:
        if not self.outputs:
            raise ValueError("SelectOutputs needs at least one output")

    def __call__(self, logits: Tensor) -> Tensor:
        first, last = self.outputs[0], self.outputs[-1]
        if self.outputs == tuple(range(first, last + 1)):
            return logits[..., first : last + 1]
        return logits[..., list(self.outputs)]


def task_output_transform(task: Task, scenario: str) -> SelectOutputs | None:
    """The transform for training on ``task`` (and, in Task-IL, for testing it): None in Domain-IL.

    Example:
        >>> import torch
        >>> from forgetless.benchmarks.base import Split
        >>> empty = Split(torch.zeros(0, 784), torch.zeros(0, dtype=torch.long))
        >>> task = Task("4-5", empty, empty, empty, classes=(4, 5), outputs=(4, 5))
        >>> task_output_transform(task, "task")
        SelectOutputs(outputs=(4, 5))
        >>> task_output_transform(task, "domain") is None
        True
    """
    check_scenario(scenario)
    return None if scenario == "domain" else SelectOutputs(task.outputs)


def eval_output_transform(benchmark: Benchmark, *, trained: int, evaluated: int) -> SelectOutputs | None:
    """The transform for evaluating (valid or test split of) task ``evaluated`` after training tasks ``0..trained`` (0-based).

    Task-IL: the evaluated task's own units. Domain-IL: None. Class-IL: every unit seen so far,
    which are the outputs of task ``trained`` (whatever task is evaluated).

    Example:
        >>> import numpy as np
        >>> from forgetless.data import ImageData
        >>> from forgetless.benchmarks.split import split_mnist
        >>> imgs = np.zeros((40, 28, 28), np.uint8); labels = np.arange(40) % 10
        >>> bench = split_mnist(ImageData(imgs, labels, imgs, labels, "toy"), scenario="class")
        >>> eval_output_transform(bench, trained=2, evaluated=0)
        SelectOutputs(outputs=(0, 1, 2, 3, 4, 5))
    """
    scenario = check_scenario(benchmark.scenario)
    for name, index in (("trained", trained), ("evaluated", evaluated)):
        if not 0 <= index < len(benchmark.tasks):
            raise ValueError(f"{name}={index} is not a task index of {benchmark.name} (0..{len(benchmark.tasks) - 1})")
    if scenario == "class":
        return SelectOutputs(benchmark.tasks[trained].outputs)
    return task_output_transform(benchmark.tasks[evaluated], scenario)

