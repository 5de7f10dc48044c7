"""Writing files: THE atomic writer of the package.

Every file forgetless writes goes through :func:`write_atomic`: a temporary file beside the target,
renamed into place, so a reader (or a crash) sees the old file or the new one, never half of one.
The file gets the permissions any other tool would give it (``0o666`` less the user's umask), so a
shared results folder stays readable to colleagues (``tempfile.mkstemp`` would make it 0600).
"""
from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any


def write_atomic(path: str | os.PathLike[str], data: bytes | str) -> None:
    """Write ``data`` to ``path`` atomically, with the umask's permissions.

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> write_atomic(folder / "note.txt", "hello\\n")
        >>> (folder / "note.txt").read_text(), [p.name for p in folder.iterdir()]
        ('hello\\n', ['note.txt'])
    """
    path = Path(path)
    payload = data.encode() if isinstance(data, str) else data
    if not path.parent.is_dir():  # else the error would name our temporary file, not the user's folder
        raise FileNotFoundError(f"cannot save {path}: folder {path.parent} does not exist"
                                + (" (it is a file)" if path.parent.exists() else ""))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        # os.open honours the umask, unlike mkstemp's 0600
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:  # e.g. permission denied: name the file asked for, not the temporary one
        tmp.unlink(missing_ok=True)
        raise type(err)(err.errno, f"cannot save {path}: {err.strerror or _one_line(err)}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _sync_folder(path.parent)


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def _sync_folder(folder: Path) -> None:
    """Make a rename durable (POSIX; best effort: some filesystems refuse)."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_json(path: str | os.PathLike[str], content: Any) -> None:
    """``content`` as indented JSON, atomically; NaN (an undefined metric) is written as null."""
    write_atomic(path, json.dumps(finite(content), indent=2, allow_nan=False) + "\n")


def finite(value: Any) -> Any:
    """``value`` with every float NaN replaced by None, recursively (JSON has no NaN).

    Example:
        >>> finite({"a": [1.0, float("nan")], "b": (2,)})
        {'a': [1.0, None], 'b': [2]}
    """
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value
