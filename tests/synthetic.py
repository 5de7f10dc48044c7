"""Small MNIST-shaped data that a network can learn: digit d lights up its own 4×4 patch."""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np


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
