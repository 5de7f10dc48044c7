"""Shared pieces of :mod:`forgetless.data`: the error type, the result type, the cache directory.

Kept free of I/O at import time: nothing here touches the disk until a function is called.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# One logger for the whole package (child modules log here too) so the CLI configures it once.
LOG = logging.getLogger("forgetless.data")


class DataError(Exception):
    """A data set could not be found, read or trusted.

    The message is always one line saying what is wrong and how to fix it: the CLI prints
    ``str(err)`` and exits non-zero, so it must make sense without a traceback.
    """


@dataclass(frozen=True, eq=False, repr=False)
class ImageData:
    """A 28x28 grey-scale image classification data set (MNIST, Fashion-MNIST).

    ``eq=False`` because element-wise array comparison has no single truth value; compare the
    arrays themselves (``np.array_equal``) when needed.

    Attributes:
        train_images: uint8, shape (N, 28, 28), pixel values 0..255.
        train_labels: int64, shape (N,).
        test_images: uint8, shape (M, 28, 28).
        test_labels: int64, shape (M,).
        source: human-readable origin (a directory, a package file, a cache file).

    Example:
        >>> import numpy as np
        >>> x, y = np.zeros((2, 28, 28), np.uint8), np.array([3, 1])
        >>> ImageData(x, y, x[:1], y[:1], source="toy")
        ImageData(train=2, test=1, source='toy')
    """

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    source: str

    def __post_init__(self) -> None:
        # Validate once here so every consumer can rely on dtype and shape without re-checking.
        for split in ("train", "test"):
            images = getattr(self, f"{split}_images")
            labels = getattr(self, f"{split}_labels")
            if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
                raise DataError(
                    f"{self.source}: {split} images must be uint8 of shape (N, 28, 28), "
                    f"got {images.dtype} {images.shape}"
                )
            if labels.dtype != np.int64 or labels.shape != images.shape[:1]:
                raise DataError(
                    f"{self.source}: {split} labels must be int64 of shape ({len(images)},), "
                    f"got {labels.dtype} {labels.shape}"
                )

    def __repr__(self) -> str:
        # The default repr would print four large arrays.
        return (
            f"ImageData(train={len(self.train_labels)}, test={len(self.test_labels)}, "
            f"source={self.source!r})"
        )


def resolve_cache_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Return the per-user cache directory (not created).

    Order: the ``cache_dir`` argument, env ``FORGETLESS_CACHE``, ``$XDG_CACHE_HOME/forgetless``
    (the XDG spec says to ignore a relative value), then ``~/.cache/forgetless``.

    Example:
        >>> resolve_cache_dir("/tmp/x").as_posix()
        '/tmp/x'
    """
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    if os.environ.get("FORGETLESS_CACHE"):
        return Path(os.environ["FORGETLESS_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "forgetless"
    return Path.home() / ".cache" / "forgetless"


def atomic_write(path: Path, write) -> None:
    """Create ``path`` via a temporary file in the same directory and ``os.replace``.

    A reader (or a concurrent run) therefore sees either no file or a complete one, never a
    half-written cache; on any failure the temporary file is removed.

    Args:
        path: final location; its parent directory is created if needed.
        write: callable receiving a binary file object opened for writing.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
