"""Permuted MNIST: every task is all of MNIST with its own fixed shuffle of the pixels.

Labels, outputs and targets follow :mod:`forgetless.benchmarks.scenarios` with 10 classes per
task; for task t (0-based) and digit d:

- ``task``:   10·T outputs, ``outputs = (10t, …, 10t+9)``, ``y = d``;
- ``domain``: 10 outputs,   ``outputs = (0, …, 9)``,       ``y = d`` (the usual protocol);
- ``class``:  10·T outputs, ``outputs = (0, …, 10t+9)``,   ``y = 10t + d``.

Choices, and why:

- **First task unpermuted by default** (``permute_first=False``): task 1 is plain MNIST. Both
  conventions exist: van de Ven & Tolias's code leaves the first task unpermuted for seed 0 only
  (every version of ``continual-learning``) and permutes it for every other seed, so their
  published runs (seeds 1, 2, …) are ``permute_first=True``; Avalanche permutes every task. For a
  fully connected network a pixel permutation changes nothing about how hard a task is, so the
  choice does not move results; an unpermuted task 1 is simply recognisable and checkable by eye.
  The permutations are drawn for every task either way, so tasks 2..T are the same whatever
  ``permute_first`` says, and task t's permutation does not depend on ``n_tasks``.
- **28×28 inputs by default** (784 of them). ``padding=2`` is van de Ven & Tolias's protocol:
  every image gets 2 rows/columns of zeros on each side (torchvision's ``Pad(2)``) and all
  32×32 = 1024 positions are permuted, zeros included, so the network takes 1024 inputs. Two
  tasks then share fewer inputs that ever carry ink (about 784/1024 as many), which makes the
  tasks interfere less; and the first layer's default initialisation, U(±1/√fan_in), is smaller.
  Their permutations come from NumPy's global RNG; ours from a seeded torch generator: the same
  distribution (uniform over permutations), not the same draws.
- **One held-out set of rows for all tasks**: the validation images are the same MNIST training
  images (each under its task's permutation) in every task, so no image used for model
  selection was ever trained on, under any permutation.
- **Materialised eagerly as float32**: ``Split`` stays a plain tensor that the training loop
  indexes directly. Each task of full MNIST takes 70 000 × 784 × 4 B ≈ 220 MB (2.2 GB for ten)
  and 0.2–0.4 s to build on two idle cores, mostly the first touch of the new memory. Rows and
  pixels are gathered on uint8 (4× less traffic) and converted last, straight into the final
  tensors, so peak memory is the final size. The lazy alternatives were rejected: tasks built on
  demand hide a cache or a cost behind the plain data, and uint8 storage converted per
  mini-batch would need ``Split`` and the training loop to accept uint8 inputs.
"""
from __future__ import annotations

import logging

import numpy as np
import torch
from torch import Tensor

from ..data import ImageData
from .base import N_CLASSES, Benchmark, Split, Task, labels_tensor, split_train_valid
from .scenarios import check_scenario, n_outputs, target_offset, task_outputs

LOG = logging.getLogger(__name__)

SIDE = 28
N_PIXELS = SIDE * SIDE


def n_inputs(padding: int = 0) -> int:
    """Inputs per image after zero-padding each side by ``padding``: (28 + 2·padding)².

    Example:
        >>> n_inputs(0), n_inputs(2)
        (784, 1024)
    """
    if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
        raise ValueError(f"padding must be a whole number of pixels >= 0, got {padding!r}")
    return (SIDE + 2 * padding) ** 2


def pixel_permutations(
    n_tasks: int, *, seed: int = 0, permute_first: bool = False, padding: int = 0
) -> tuple[Tensor, ...]:
    """The pixel permutation of each task of ``permuted_mnist(..., seed=seed, padding=padding)``.

    Task t's inputs are ``padded_image.flatten()[perm[t]]``: output pixel i is input pixel
    ``perm[t][i]`` of the zero-padded image. Drawn from a local generator seeded by ``seed`` (the
    global RNG is never touched).

    Example:
        >>> perms = pixel_permutations(3, seed=0)
        >>> bool((perms[0] == torch.arange(784)).all()), sorted(perms[1].tolist()) == list(range(784))
        (True, True)
        >>> bool((pixel_permutations(3, seed=0, permute_first=True)[1] == perms[1]).all())
        True
        >>> len(pixel_permutations(2, seed=0, padding=2)[1])
        1024
    """
    n = n_inputs(padding)
    drawn = _draw_permutations(torch.Generator().manual_seed(seed), n_tasks, permute_first, n)
    return tuple(torch.arange(n) if p is None else torch.from_numpy(p) for p in drawn)


def permuted_mnist(
    data: ImageData,
    *,
    scenario: str,
    n_tasks: int = 10,
    seed: int = 0,
    valid_fraction: float = 0.1,
    permute_first: bool = False,
    padding: int = 0,
) -> Benchmark:
    """``n_tasks`` tasks, each all ten digits under a fixed pixel permutation (see module docstring).

    ``valid_fraction=0`` trains on all training images (empty validation splits); ``padding=2``
    with ``permute_first=True`` is van de Ven & Tolias's protocol (1024 inputs per image).

    Example:
        >>> import numpy as np
        >>> from forgetless.data import ImageData
        >>> imgs = np.zeros((20, 28, 28), np.uint8); labels = np.arange(20) % 10
        >>> bench = permuted_mnist(ImageData(imgs, labels, imgs, labels, "toy"), scenario="class", n_tasks=3)
        >>> (bench.n_outputs, [t.name for t in bench.tasks], bench.tasks[1].outputs[-1], bench.tasks[1].test.y.tolist()[:3])
        (30, ['P1', 'P2', 'P3'], 19, [10, 11, 12])
        >>> padded = permuted_mnist(ImageData(imgs, labels, imgs, labels, "toy"), scenario="domain", n_tasks=2,
        ...                         padding=2, valid_fraction=0.0)
        >>> tuple(padded.tasks[0].train.x.shape), len(padded.tasks[0].valid)
        ((20, 1024), 0)
    """
    check_scenario(scenario)
    if isinstance(n_tasks, bool) or not isinstance(n_tasks, int) or n_tasks < 1:
        raise ValueError(f"n_tasks must be a positive integer, got {n_tasks!r}")
    n_pixels = n_inputs(padding)
    train_images, test_images = _flat(data.train_images, padding), _flat(data.test_images, padding)
    train_labels = labels_tensor(data.train_labels, data.source)
    test_labels = labels_tensor(data.test_labels, data.source)
    if len(train_labels) < 2:
        raise ValueError(f"permuted-mnist: {data.source} has {len(train_labels)} training images; need at least 2")

    generator = torch.Generator().manual_seed(seed)
    # Permutations first, so they depend on the seed alone (not on valid_fraction or the data size).
    perms = _draw_permutations(generator, n_tasks, permute_first, n_pixels)
    # Split row indices rather than images: the same rows are held out in every task.
    rows, held_out = split_train_valid(torch.arange(len(train_labels)), train_labels, valid_fraction, generator)
    train_rows, valid_rows = rows.x.numpy(), held_out.x.numpy()

    n_bytes = 4 * n_pixels * n_tasks * (len(train_labels) + len(test_labels))
    LOG.info("permuted-mnist: building %d tasks, %.2f GB of float32 inputs", n_tasks, n_bytes / 1e9)
    tasks = []
    for t, perm in enumerate(perms):
        offset = target_offset(scenario, t, N_CLASSES)
        tasks.append(
            Task(
                f"P{t + 1}",
                Split(_inputs(train_images, train_rows, perm), train_labels[train_rows] + offset),
                Split(_inputs(train_images, valid_rows, perm), train_labels[valid_rows] + offset),
                Split(_inputs(test_images, None, perm), test_labels + offset),
                classes=tuple(range(N_CLASSES)),
                outputs=task_outputs(scenario, t, N_CLASSES),
            )
        )
    return Benchmark("permuted-mnist", tuple(tasks), n_outputs(scenario, n_tasks, N_CLASSES), scenario)


def _draw_permutations(
    generator: torch.Generator, n_tasks: int, permute_first: bool, n_pixels: int
) -> list[np.ndarray | None]:
    """One permutation per task (None = identity); all are drawn so later tasks never shift."""
    drawn: list[np.ndarray | None] = [torch.randperm(n_pixels, generator=generator).numpy() for _ in range(n_tasks)]
    if not permute_first and drawn:
        drawn[0] = None
    return drawn


def _flat(images: np.ndarray, padding: int) -> np.ndarray:
    """(N, 28, 28) uint8 → (N, (28 + 2·padding)²), zeros around each image (torchvision's ``Pad``)."""
    if images.shape[1:] != (SIDE, SIDE):
        raise ValueError(f"permuted-mnist needs {SIDE}×{SIDE} images, got shape {images.shape[1:]}")
    if padding:
        images = np.pad(images, ((0, 0), (padding, padding), (padding, padding)))
    return np.ascontiguousarray(images).reshape(len(images), -1)


def _inputs(images: np.ndarray, rows: np.ndarray | None, perm: np.ndarray | None) -> Tensor:
    """Gather rows and permute pixels on uint8 (4× less memory traffic), then float32 in [0, 1].

    ``.float().div_(255.0)`` is exactly what :func:`~forgetless.benchmarks.base.to_inputs` does.
    """
    part = images if rows is None else images[rows]
    if perm is not None:
        part = np.take(part, perm, axis=1)
    elif rows is None:
        part = part.copy()  # torch.from_numpy warns on a read-only array (e.g. a memory-mapped cache)
    return torch.from_numpy(part).float().div_(255.0)

