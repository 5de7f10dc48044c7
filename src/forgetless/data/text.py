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

Example:
    >>> corpora = load_prose_code()
    >>> [c.name for c in corpora], all(len(c.sha256) == 64 for c in corpora)
    (['prose', 'code'], True)
    >>> corpora[1].text.startswith(b"# file: argparse.py")
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

from ._common import LOG, DataError

# Pure-Python standard-library modules, ~0.5 MB together (a size close to the prose's). Fixed:
# changing it changes the benchmark.
CODE_FILES: tuple[str, ...] = (
    "argparse.py", "difflib.py", "dataclasses.py", "functools.py", "statistics.py", "fractions.py",
    "textwrap.py", "heapq.py", "calendar.py", "shlex.py", "string.py", "bisect.py", "pprint.py",
    "tempfile.py",
)

__all__ = ["CODE_FILES", "TextCorpus", "code_text", "load_prose_code", "prose_text"]


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


def load_prose_code(stdlib: str | os.PathLike[str] | None = None) -> tuple[TextCorpus, TextCorpus]:
    """``(prose, code)``: the two domains of the ``prose-code`` benchmark, in training order."""
    corpora = prose_text(), code_text(stdlib)
    for c in corpora:
        LOG.info("prose-code: %r", c)
    return corpora


def _version() -> str:
    return ".".join(map(str, sys.version_info[:3]))
