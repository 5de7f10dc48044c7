"""Small MNIST-shaped data that a network can learn: digit d lights up its own 4×4 patch."""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest


def digit_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    images = (rng.random((n, 28, 28)) * 60).astype(np.uint8)
    for i, d in enumerate(labels):
        r, c = divmod(int(d), 5)
        images[i, 4 + 10 * r : 8 + 10 * r, 2 + 5 * c : 6 + 5 * c] = 255
    return images, labels


def idx_bytes(array: np.ndarray) -> bytes:
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


@pytest.fixture(scope="module", autouse=True)
def other_data_allowed():
    """This MNIST-shaped set is not MNIST, and a test module that runs the CLI on it says so explicitly
    (``from synthetic import other_data_allowed``): the data loaders refuse unidentified data otherwise.
    Through the environment, so that worker processes see it too."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FORGETLESS_ALLOW_OTHER_DATA", "1")
        yield


def write_mnist_dir(folder: Path, n_train: int = 1200, n_test: int = 400, gz: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    parts = {"train": digit_images(n_train, 1), "t10k": digit_images(n_test, 2)}
    for prefix, (images, labels) in parts.items():
        for kind, array in (("images-idx3-ubyte", images), ("labels-idx1-ubyte", labels)):
            raw = idx_bytes(array)
            name = folder / f"{prefix}-{kind}"
            if gz:
                name.with_name(name.name + ".gz").write_bytes(gzip.compress(raw))
            else:
                name.write_bytes(raw)
    return folder


def small_model():
    """A 6-8-3 tanh network for regularizer tests."""
    from torch import nn

    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))


def random_task(seed: int, n: int = 40):
    """``n`` random 6-d inputs with random labels among 3 classes."""
    import torch

    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 6, generator=g), torch.randint(0, 3, (n,), generator=g)


def lifecycle_steps(reg, model, x, y, *, steps: int = 3, lr: float = 0.1) -> None:
    """``begin_task`` and a few SGD steps through the whole lifecycle (SI needs its path); no consolidate."""
    import torch
    from torch import nn

    opt = torch.optim.SGD(model.parameters(), lr=lr)
    reg.begin_task(model)
    for _ in range(steps):
        loss = nn.functional.cross_entropy(model(x), y) + reg.penalty(model)
        opt.zero_grad()
        loss.backward()
        opt.step()
        reg.after_step(model)


def perturb(model, seed: int, scale: float = 0.3) -> None:
    """Move every parameter by seeded Gaussian noise (to get away from an anchor)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))


def old_task_accuracy(reg, steps: int = 150, lr: float = 1e-2) -> float:
    """Train two conflicting tasks in a plain user loop with ``reg`` (or None); accuracy on task 1 after.

    Uses the whole lifecycle (begin_task, penalty, after_step, consolidate) as a user would.
    """
    import torch
    from torch import nn

    torch.manual_seed(0)
    x1, y1 = torch.randn(200, 6), torch.randint(0, 3, (200,))
    x2, y2 = torch.randn(200, 6), (y1 + 1) % 3  # conflicting labels on similar inputs
    model = small_model()
    for x, y in ((x1, y1), (x2, y2)):
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        if reg:
            reg.begin_task(model)
        for _ in range(steps):
            loss = nn.functional.cross_entropy(model(x), y) + (reg.penalty(model) if reg else 0)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if reg:
                reg.after_step(model)
        if reg:
            reg.consolidate(model, (x, y))
    return float((model(x1).argmax(1) == y1).float().mean())
