"""Offline-first MNIST and Fashion-MNIST loading; the prose-code texts from the standard library.

Every failure raises :class:`DataError` with a one-line message saying what is wrong and how to
fix it. Nothing touches the network unless ``load_mnist(download=True)`` is called. A data folder
is checked to hold the standard files (sha256, :mod:`.identity`); other data needs
``allow_unknown=True``. Logs go to the ``forgetless.data`` logger.

Example:
    >>> from forgetless.data import load_mnist
    >>> data = load_mnist()
    >>> data.train_images.shape, data.test_labels.shape
    ((60000, 28, 28), (10000,))
"""

from ._common import DataError, ImageData, resolve_cache_dir
from .download import DEFAULT_MIRRORS, download_mnist
from .fashion import load_fashion_mnist
from .identity import FASHION_MNIST_IDX_SHA256, MNIST_IDX_SHA256, check_identity, identify
from .idx import encode_idx, load_idx_dir, load_idx_pair, read_idx, write_idx
from .mnist import load_mnist
from .text import CODE_FILES, TextCorpus, TextData, load_prose_code, load_text

__all__ = [
    "CODE_FILES",
    "DEFAULT_MIRRORS",
    "DataError",
    "FASHION_MNIST_IDX_SHA256",
    "ImageData",
    "MNIST_IDX_SHA256",
    "TextCorpus",
    "TextData",
    "download_mnist",
    "check_identity",
    "encode_idx",
    "identify",
    "load_fashion_mnist",
    "load_idx_dir",
    "load_idx_pair",
    "load_mnist",
    "load_prose_code",
    "load_text",
    "read_idx",
    "resolve_cache_dir",
    "write_idx",
]
