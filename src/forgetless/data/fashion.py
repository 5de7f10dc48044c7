"""Fashion-MNIST from IDX files (same format and file names as MNIST)."""

from __future__ import annotations

import os

from ._common import DataError, ImageData
from .idx import load_idx_dir

# Where the Debian/Ubuntu package `dataset-fashion-mnist` installs the four standard files,
# gzip-compressed: train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz,
# t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz.
SYSTEM_DIR = "/usr/share/datasets/fashion-mnist"
DEBIAN_PACKAGE = "dataset-fashion-mnist"


def load_fashion_mnist(data_dir: str | os.PathLike[str] | None = None) -> ImageData:
    """Load Fashion-MNIST (60000 train, 10000 test) from IDX files.

    Looks in ``data_dir``, else env ``FORGETLESS_FASHION_DATA``, else :data:`SYSTEM_DIR`.

    Args:
        data_dir: directory with the four standard IDX files (raw or ``.gz``).

    Raises:
        DataError: the directory is missing, incomplete or holds invalid files; the message
            names the Debian package and the flag that fix it.

    Example:
        >>> data = load_fashion_mnist()  # doctest: +SKIP
        >>> data.train_images.shape  # doctest: +SKIP
        (60000, 28, 28)
    """
    if data_dir is not None:
        return load_idx_dir(data_dir, "Fashion-MNIST data directory")
    if os.environ.get("FORGETLESS_FASHION_DATA"):
        return load_idx_dir(os.environ["FORGETLESS_FASHION_DATA"], "FORGETLESS_FASHION_DATA directory")
    if not os.path.isdir(SYSTEM_DIR):
        raise DataError(f"Fashion-MNIST not found: {SYSTEM_DIR} does not exist. Fix: "
                        f"`sudo apt-get install {DEBIAN_PACKAGE}` (Debian/Ubuntu), or pass --data-dir DIR "
                        "(or set FORGETLESS_FASHION_DATA) with the four Fashion-MNIST IDX files")
    try:
        return load_idx_dir(SYSTEM_DIR, "Fashion-MNIST directory")
    except DataError as err:
        raise DataError(f"{err} (reinstall with `sudo apt-get install --reinstall {DEBIAN_PACKAGE}`)") from None
