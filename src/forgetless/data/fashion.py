"""Fashion-MNIST from IDX files (same format and file names as MNIST).

forgetless never downloads Fashion-MNIST: it comes from the Debian package ``dataset-fashion-mnist``,
installed system-wide (root) or unpacked into the per-user cache without root (``make fashion-mnist``
does whichever it can), or from any folder with the four files.
"""

from __future__ import annotations

import os

from ._common import DataError, ImageData, resolve_cache_dir
from .identity import check_identity
from .idx import find_idx_files, load_idx_dir

# Where the Debian/Ubuntu package `dataset-fashion-mnist` installs the four standard files,
# gzip-compressed: train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz,
# t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz.
SYSTEM_DIR = "/usr/share/datasets/fashion-mnist"
DEBIAN_PACKAGE = "dataset-fashion-mnist"
CACHE_SUBDIR = "fashion-mnist"  # <cache dir>/fashion-mnist: the package's files unpacked without root
HOW_TO_GET = (f"`sudo apt-get install {DEBIAN_PACKAGE}`; or without root, in a checkout of forgetless, "
              f"`make fashion-mnist` (apt-get download + dpkg-deb -x into the per-user cache); or pass "
              "--data-dir DIR (or set FORGETLESS_FASHION_DATA) with the four Fashion-MNIST IDX files")


def load_fashion_mnist(data_dir: str | os.PathLike[str] | None = None, *, download: bool = False,
                       cache_dir: str | os.PathLike[str] | None = None, allow_unknown: bool = False) -> ImageData:
    """Load Fashion-MNIST (60000 train, 10000 test) from IDX files, checked by sha256.

    Looks in ``data_dir``, else env ``FORGETLESS_FASHION_DATA``, else :data:`SYSTEM_DIR`, else
    ``<cache dir>/fashion-mnist``.

    Args:
        data_dir: directory with the four standard IDX files (raw or ``.gz``).
        download: accepted for symmetry with :func:`load_mnist`; there is no download of
            Fashion-MNIST, so when no local copy is found the error says so and how to get one.
        cache_dir: the per-user cache (see :func:`resolve_cache_dir`).
        allow_unknown: accept files that are not Fashion-MNIST's; the ``source`` then says
            ``(not Fashion-MNIST: <what was found>)``. Env ``FORGETLESS_ALLOW_OTHER_DATA=1`` too.

    Raises:
        DataError: the directory is missing, incomplete, holds invalid files or other data than
            Fashion-MNIST; the message names the Debian package and the flag that fix it.

    Example:
        >>> data = load_fashion_mnist()
        >>> data.train_images.shape
        (60000, 28, 28)
    """
    def checked(data: ImageData) -> ImageData:
        return check_identity(data, "Fashion-MNIST", allow_unknown=allow_unknown)

    if data_dir is not None:
        return checked(load_idx_dir(data_dir, "Fashion-MNIST data directory"))
    if os.environ.get("FORGETLESS_FASHION_DATA"):
        return checked(load_idx_dir(os.environ["FORGETLESS_FASHION_DATA"], "FORGETLESS_FASHION_DATA directory"))
    if os.path.isdir(SYSTEM_DIR):
        try:
            return checked(load_idx_dir(SYSTEM_DIR, "Fashion-MNIST directory"))
        except DataError as err:
            raise DataError(f"{err} (reinstall with `sudo apt-get install --reinstall {DEBIAN_PACKAGE}`)") from None
    cache = resolve_cache_dir(cache_dir) / CACHE_SUBDIR
    if cache.is_dir() and not find_idx_files(cache)[1]:
        return checked(load_idx_dir(cache, "Fashion-MNIST cache directory"))
    no_download = " and forgetless has no download for it (--download fetches MNIST only)" if download else ""
    raise DataError(f"Fashion-MNIST not found: {SYSTEM_DIR} does not exist, nor does {cache} hold the four "
                    f"files{no_download}. Fix: {HOW_TO_GET}")
