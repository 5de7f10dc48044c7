"""Text that ships with every Python installation: the two domains of the ``prose-code`` benchmark.

Nothing is downloaded. The two corpora are read from the running interpreter's standard library:

- **prose** (domain A): the English prose of the language reference's help topics,
  ``pydoc_data.topics.topics`` (what ``help("assert")`` prints), every topic in sorted key order,
  each followed by a blank line, encoded as UTF-8 (about 0.47 MB on Python 3.11);
- **code** (domain B): the Python source files of the standard library listed in
  :data:`CODE_FILES`, in that order, each preceded by a ``# file: <name>`` line, as raw bytes
  (about 0.5 MB on Python 3.11). The list is fixed: pure-Python modules present, under the same
  names, from Python 3.9 to 3.13 at least.

Both texts change between Python versions (new topics, edited modules), so a result must say what
it ran on: every :class:`TextCorpus` carries the sha256 of its exact bytes, and the ``prose-code``
benchmark writes both digests (and the Python version) into ``Benchmark.info``. Two runs compare
only if their digests agree.

The runner (``forgetless run --benchmark prose-code``) loads them through :func:`load_text`, which
refuses ``--data-dir`` and ``--download``: there is nothing to point at and nothing to fetch.

Example:
    >>> corpora = load_prose_code()
    >>> [c.name for c in corpora], all(len(c.sha256) == 64 for c in corpora)
    (['prose', 'code'], True)
    >>> corpora.code.text.startswith(b"# file: argparse.py")
    True
"""
from __future__ import annotations

import hashlib
import importlib
import os
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from ._common import LOG, DataError

# Pure-Python standard-library modules, ~0.5 MB together (a size close to the prose's). Fixed:
# changing it changes the benchmark.
CODE_FILES: tuple[str, ...] = (
    "argparse.py", "difflib.py", "dataclasses.py", "functools.py", "statistics.py", "fractions.py",
    "textwrap.py", "heapq.py", "calendar.py", "shlex.py", "string.py", "bisect.py", "pprint.py",
    "tempfile.py",
)

__all__ = ["CODE_FILES", "TextCorpus", "TextData", "code_text", "load_prose_code", "load_text", "prose_text"]


@dataclass(frozen=True, repr=False)
class TextCorpus:
    """One domain's text as bytes, where it came from, and the sha256 of those bytes.

    Example:
        >>> TextCorpus("toy", b"hello", "a string")
        TextCorpus('toy', 5 bytes, sha256 2cf24dba5fb0…, from a string)
    """

    name: str
    text: bytes
    source: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text).hexdigest()

    def __repr__(self) -> str:
        return f"TextCorpus({self.name!r}, {len(self.text)} bytes, sha256 {self.sha256[:12]}…, from {self.source})"


class TextData(NamedTuple):
    """The two domains in training order; a tuple ``(prose, code)`` that also says where it came from.

    Example:
        >>> data = TextData(TextCorpus("prose", b"ab", "x"), TextCorpus("code", b"cd", "y"))
        >>> prose, code = data
        >>> code.name, data.source
        ('code', 'prose: x (sha256 fb8e20fc2e4c…); code: y (sha256 21e721c35a58…)')
    """

    prose: TextCorpus
    code: TextCorpus

    @property
    def source(self) -> str:
        return "; ".join(f"{c.name}: {c.source} (sha256 {c.sha256[:12]}…)" for c in self)


def prose_text() -> TextCorpus:
    """Domain A: every topic of ``pydoc_data.topics``, sorted by key, blank-line separated, UTF-8.

    Raises:
        DataError: this Python has no ``pydoc_data`` (some distributions ship it separately).
    """
    try:
        topics = importlib.import_module("pydoc_data.topics").topics
    except ImportError:
        raise DataError(
            "prose-code needs pydoc_data.topics from the standard library, which this Python lacks; "
            "install your distribution's full standard library (e.g. Debian's libpython3-stdlib)"
        ) from None
    text = "".join(topics[key].rstrip("\n") + "\n\n" for key in sorted(topics)).encode("utf-8")
    return TextCorpus("prose", text, f"pydoc_data.topics of Python {_version()}")


def code_text(stdlib: str | os.PathLike[str] | None = None) -> TextCorpus:
    """Domain B: the files of :data:`CODE_FILES` from ``stdlib`` (default: this Python's), concatenated.

    Raises:
        DataError: a listed file is missing or unreadable (the message names it).
    """
    folder = Path(stdlib) if stdlib is not None else Path(sysconfig.get_paths()["stdlib"])
    parts = []
    for name in CODE_FILES:
        try:
            parts.append(f"# file: {name}\n".encode() + (folder / name).read_bytes())
        except OSError as err:
            raise DataError(f"prose-code: cannot read standard-library file {folder / name} "
                            f"({err.strerror or err}); pass the standard library's folder") from None
    return TextCorpus("code", b"\n".join(parts), f"{len(CODE_FILES)} files of {folder} (Python {_version()})")


def load_prose_code(stdlib: str | os.PathLike[str] | None = None) -> TextData:
    """``(prose, code)``: the two domains of the ``prose-code`` benchmark, in training order."""
    corpora = TextData(prose_text(), code_text(stdlib))
    for c in corpora:
        LOG.info("prose-code: %r", c)
    return corpora


def load_text(data_dir: str | os.PathLike[str] | None = None, *, download: bool = False) -> TextData:
    """The runner's loader of the ``prose-code`` texts: this Python's, never a folder or a download.

    Raises:
        DataError: ``data_dir`` or ``download`` given (one line: the text ships with Python), or
            the texts cannot be read.

    Example:
        >>> load_text("/data")
        Traceback (most recent call last):
        ...
        forgetless.data._common.DataError: prose-code reads its text from this Python's standard library: it takes no --data-dir (got /data)
    """
    if data_dir is not None:
        raise DataError(f"prose-code reads its text from this Python's standard library: it takes no --data-dir "
                        f"(got {data_dir})")
    if download:
        raise DataError("prose-code reads its text from this Python's standard library: there is nothing to --download")
    return load_prose_code()


def _version() -> str:
    return ".".join(map(str, sys.version_info[:3]))
