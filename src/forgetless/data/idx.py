"""The IDX file format of MNIST-like data sets: read, write, and find the four standard files.

Format (http://yann.lecun.com/exdb/mnist/): two zero bytes, a dtype code, the number of
dimensions, one big-endian uint32 per dimension, then the payload in C order, big-endian.
Files are often gzip-compressed; compression is detected from the content, not the name.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from ._common import LOG, DataError, ImageData, atomic_write

# IDX dtype codes -> big-endian numpy dtypes.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODES = {dt.newbyteorder("="): code for code, dt in IDX_DTYPES.items()}

# The four files of an MNIST-like data set, keyed by role.
IDX_FILES: dict[str, str] = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

_GZIP_MAGIC = b"\x1f\x8b"


def _header(array: np.ndarray) -> tuple[bytes, np.dtype]:
    """IDX header for ``array`` and the big-endian dtype its payload is written in."""
    if not 1 <= array.ndim <= 255:  # the header stores ndim in one byte; 0-d is not IDX
        raise DataError(f"cannot write a {array.ndim}-dimensional array as IDX")
    code = _CODES.get(array.dtype.newbyteorder("="))
    if code is None:
        raise DataError(f"cannot write dtype {array.dtype} as IDX; use one of uint8, int8, "
                        "int16, int32, float32, float64")
    header = struct.pack(">BBBB", 0, 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header, IDX_DTYPES[code]


def encode_idx(array: np.ndarray) -> bytes:
    """Serialise an array as uncompressed IDX bytes (header + big-endian payload).

    Example:
        >>> encode_idx(np.array([1, 2], np.uint8)).hex()
        '00000801000000020102'
    """
    array = np.asarray(array)
    header, dtype = _header(array)
    return header + np.ascontiguousarray(array, dtype=dtype).tobytes()


def idx_sha256(array: np.ndarray) -> str:
    """sha256 hex digest of ``encode_idx(array)``.

    Hashes the array buffer in place instead of building the bytes (47 MB for MNIST).

    Example:
        >>> import hashlib
        >>> a = np.arange(6, dtype=np.uint8).reshape(2, 3)
        >>> idx_sha256(a) == hashlib.sha256(encode_idx(a)).hexdigest()
        True
    """
    array = np.asarray(array)
    header, dtype = _header(array)
    digest = hashlib.sha256(header)
    digest.update(np.ascontiguousarray(array, dtype=dtype).reshape(-1).view(np.uint8))
    return digest.hexdigest()


def write_idx(path: str | os.PathLike[str], array: np.ndarray, *, compress: bool | None = None) -> Path:
    """Write ``array`` as an IDX file, atomically.

    Args:
        path: destination.
        array: data of a supported dtype.
        compress: gzip the file; by default, when the name ends in ``.gz``.

    Returns:
        The path written.
    """
    path = Path(path)
    data = encode_idx(array)
    if compress if compress is not None else path.suffix == ".gz":
        # mtime=0 makes the output byte-for-byte reproducible.
        data = gzip.compress(data, compresslevel=6, mtime=0)
    atomic_write(path, lambda f: f.write(data))
    return path


def parse_idx(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Parse IDX bytes (raw or gzip) into a native-endian array.

    Args:
        data: the file content.
        name: used in error messages.

    Raises:
        DataError: corrupt gzip, bad magic, unknown dtype, or a payload whose length does not
            match the dimensions in the header.

    Example:
        >>> parse_idx(bytes.fromhex("00000801000000020102"))
        array([1, 2], dtype=uint8)
    """
    if data[:2] == _GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (EOFError, OSError, zlib.error) as err:  # truncated stream, bad CRC, garbage
            raise DataError(f"{name}: corrupt or truncated gzip data ({err}); delete the file "
                            "and obtain it again") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DataError(f"{name}: not an IDX file (bad magic {data[:4].hex() or 'empty'}, "
                        "expected 0000 + dtype + ndim); check that you passed the right file")
    code, ndim = data[2], data[3]
    if code not in IDX_DTYPES:
        raise DataError(f"{name}: unknown IDX dtype code 0x{code:02x}; the file is corrupt or "
                        "not an IDX file")
    if ndim == 0:
        raise DataError(f"{name}: IDX header declares 0 dimensions; the file is corrupt")
    offset = 4 + 4 * ndim
    if len(data) < offset:
        raise DataError(f"{name}: truncated IDX header ({len(data)} bytes); obtain the file again")
    shape = struct.unpack(f">{ndim}I", data[4:offset])
    dtype = IDX_DTYPES[code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    got = len(data) - offset
    if got != expected:
        what = "truncated" if got < expected else "has trailing bytes"
        raise DataError(f"{name}: {what}: header says shape {shape} ({expected} payload bytes) "
                        f"but the file has {got}; obtain the file again")
    # astype copies into a writable, native-endian array (frombuffer on bytes is read-only).
    return np.frombuffer(data, dtype, offset=offset).reshape(shape).astype(dtype.newbyteorder("="))


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file, raw or gzip-compressed (detected by its first bytes, not its name).

    Raises:
        DataError: unreadable or invalid file; the message names the file.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DataError(f"cannot read {path}: {err.strerror or err}") from None
    return parse_idx(data, str(path))


def load_idx_pair(images_path: str | os.PathLike[str],
                  labels_path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """Read matching image and label files and check they belong together.

    Returns:
        ``(images, labels)``: uint8 (N, 28, 28) and int64 (N,).

    Raises:
        DataError: a file is invalid, has the wrong shape or dtype, or the counts differ.
    """
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
        raise DataError(f"{images_path}: expected uint8 images of shape (N, 28, 28), got "
                        f"{images.dtype} {images.shape}; is this an image file?")
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise DataError(f"{labels_path}: expected 1-D integer labels, got {labels.dtype} "
                        f"{labels.shape}; is this a label file?")
    if len(images) != len(labels):
        raise DataError(f"{images_path} has {len(images)} images but {labels_path} has "
                        f"{len(labels)} labels; the files do not belong together")
    return images, labels.astype(np.int64)


def find_idx_files(directory: Path) -> tuple[dict[str, Path], list[str]]:
    """Locate the four standard IDX files in ``directory``.

    Each may be raw or ``.gz``; the dotted spelling some mirrors use (``train-images.idx3-ubyte``)
    is accepted too. Raw files win over ``.gz`` because they load faster.

    Returns:
        ``(found, missing)``: role -> path, and the standard names that were not found.
    """
    found, missing = {}, []
    for role, name in IDX_FILES.items():
        dotted = name.replace("-idx", ".idx")
        for candidate in (name, name + ".gz", dotted, dotted + ".gz"):
            if (directory / candidate).is_file():
                found[role] = directory / candidate
                break
        else:
            missing.append(name)
    return found, missing


def load_idx_dir(directory: str | os.PathLike[str], what: str = "IDX data") -> ImageData:
    """Load the four standard IDX files from ``directory``.

    Args:
        directory: a directory that must exist and contain all four files.
        what: how to name the directory in messages (e.g. "MNIST data directory").

    Raises:
        DataError: the directory does not exist, lacks files, or a file is invalid.
    """
    directory = Path(directory).expanduser()
    if directory.exists() and not directory.is_dir():
        raise DataError(f"{what} {directory} is a file, not a directory; pass the directory containing "
                        "the four IDX files")
    if not directory.is_dir():
        raise DataError(f"{what} {directory} does not exist; pass an existing directory containing "
                        "the four IDX files")
    found, missing = find_idx_files(directory)
    if missing:
        raise DataError(f"{what} {directory} lacks {', '.join(missing)} (raw or .gz); put the "
                        "four IDX files there")
    LOG.debug("reading IDX files from %s", directory)
    train = load_idx_pair(found["train_images"], found["train_labels"])
    test = load_idx_pair(found["test_images"], found["test_labels"])
    return ImageData(*train, *test, source=str(directory))
