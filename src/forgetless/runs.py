"""Run folders: THE place results are kept, reused and never lost.

A run folder holds, at every moment, one of:

- nothing yet but ``.forgetless`` (it says the folder is forgetless's, and is locked while a process
  writes into it: a second process is refused, and the lock dies with its owner);
- ``config.json`` (the settings as asked, the data's fingerprint, the versions) and ``INCOMPLETE``:
  a run going on, or interrupted; never a ``result.json``;
- a finished run: ``result.json`` (written last) and the other output files, no ``INCOMPLETE``.

A finished run is reused when the same settings are asked on the same data, and a finished run of
other settings is never replaced unless the caller says ``overwrite`` (the old ``result.json`` is
then removed when the new run starts). A folder that is not empty and was not written by
forgetless is refused before anything runs.
"""
from __future__ import annotations

import json
import os
import platform
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from .files import finite, write_atomic, write_json

INCOMPLETE = "INCOMPLETE"
MARKER = ".forgetless"
FORMAT = "forgetless.run"


class FolderError(ValueError):
    """An output folder that cannot be used as asked; the message says why and what to do."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM; the message says exactly what was kept."""


def versions() -> dict[str, str]:
    import numpy
    import torch

    from . import __version__

    return {"forgetless": __version__, "torch": torch.__version__, "numpy": numpy.__version__,
            "python": platform.python_version()}


def new_folder(prefix: str, root: Path = Path("runs")) -> Path:
    """A new, empty folder ``root/<prefix>-<date>-<time>`` (``-2``, ``-3``… if that exists): two runs
    started in the same second get two folders."""
    root.mkdir(parents=True, exist_ok=True)
    stem = f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}"
    for n in range(1, 1000):
        folder = root / (stem if n == 1 else f"{stem}-{n}")
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue
    raise FolderError(f"{root}: could not find a free folder name for {stem}")


def _ours(folder: Path) -> bool:
    """Whether a non-empty ``folder`` was written by forgetless (before the marker existed, too)."""
    if (folder / MARKER).exists() or (folder / ".sweep.lock").exists() or (folder / "compare.json").exists():
        return True
    for name in ("config.json", "result.json", "sweep.json"):
        try:
            content = json.loads((folder / name).read_text())
        except (OSError, ValueError):
            continue
        if isinstance(content, dict) and "forgetless" in (content.get("versions") or {}):
            return True
    return False


def check_usable(folder: Path) -> None:
    """Refuse a path that is a file, or a non-empty folder forgetless did not write."""
    if folder.exists() and not folder.is_dir():
        raise FolderError(f"--out {folder} exists and is not a folder")
    if folder.is_dir() and any(folder.iterdir()) and not _ours(folder):
        names = sorted(p.name for p in folder.iterdir())
        shown = ", ".join(names[:4]) + (", …" if len(names) > 4 else "")
        raise FolderError(f"--out {folder} already exists and holds files forgetless did not write ({shown}); "
                          "choose a new or empty folder (nothing was overwritten)")


@contextmanager
def claimed(folder: Path, *, busy: str = "another forgetless process is writing into") -> Iterator[Path]:
    """Create ``folder`` if needed, mark it as forgetless's and lock it while the block runs."""
    check_usable(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / MARKER, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as err:
        raise FolderError(f"cannot write into --out {folder}: {err.strerror or err}") from None
    try:
        _lock(fd, f"{busy} {folder}; wait for it or use another --out")
        if os.fstat(fd).st_size == 0:
            os.write(fd, b"Written by forgetless; locked while a forgetless process writes into this folder.\n")
        yield folder
    finally:
        os.close(fd)  # closing releases the lock; so does the process dying


def _lock(fd: int, message: str) -> None:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no lock
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        raise FolderError(message) from None


def is_finished(folder: Path) -> bool:
    return (folder / "result.json").is_file() and not (folder / INCOMPLETE).exists()


def finished_result(folder: Path) -> dict[str, Any] | None:
    """The result of a finished run in ``folder``, or None (missing, unfinished or unreadable)."""
    if not is_finished(folder):
        return None
    try:
        result = json.loads((folder / "result.json").read_text())
    except (OSError, ValueError):
        return None
    return result if isinstance(result, dict) else None


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(finite(value)))


def same_request(result: dict[str, Any], requested: dict[str, Any], fingerprint: str) -> bool:
    """Whether a finished ``result`` answers ``requested`` on the data with ``fingerprint``: the
    settings it was asked, and those it ran with (but what a search chose), are the requested ones.

    Example:
        >>> done = {"requested_config": {"lr": 0.1, "strength": "auto"}, "config": {"lr": 0.1, "strength": 10.0},
        ...         "data_fingerprint": "d0"}
        >>> same_request(done, {"lr": 0.1, "strength": "auto"}, "d0"), same_request(done, {"lr": 0.2, "strength": "auto"}, "d0")
        (True, False)
        >>> same_request(done, {"lr": 0.1, "strength": "auto"}, "d1")  # other data
        False
    """
    requested = _plain(requested)
    ran = result.get("config") or {}
    return (result.get("requested_config") == requested and result.get("data_fingerprint") == fingerprint
            and all(ran.get(k) == v for k, v in requested.items() if v != "auto"))


def reusable(folder: Path, requested: dict[str, Any], fingerprint: str, *, overwrite: bool = False) -> dict[str, Any] | None:
    """The finished result in ``folder`` if it answers the same request; None if there is none to
    reuse (or ``overwrite``); :class:`FolderError` if it holds a finished run of another config."""
    done = finished_result(folder)
    if done is None or overwrite:
        return None
    if same_request(done, requested, fingerprint):
        return done
    raise FolderError(f"{folder} holds a finished run of another config (or other data); pass --overwrite "
                      "to replace it, or use another --out (nothing was overwritten)")


def produce(
    folder: Path, *, requested: dict[str, Any], data_source: str, fingerprint: str,
    compute: Callable[[], dict[str, Any]], write: Callable[[Path, dict[str, Any]], None], overwrite: bool = False,
) -> tuple[dict[str, Any], bool]:
    """Reuse the finished run in ``folder`` that answers ``requested``, or run ``compute()`` and
    ``write(folder, result)`` (which writes ``result.json`` last). Returns (result, reused)."""
    with claimed(folder):
        done = reusable(folder, requested, fingerprint, overwrite=overwrite)
        if done is not None:
            return done, True
        write_atomic(folder / INCOMPLETE, "This run has not finished (or was interrupted): its results are partial.\n")
        (folder / "result.json").unlink(missing_ok=True)
        write_json(folder / "config.json", {"format": FORMAT, "config": requested, "data_source": data_source,
                                             "data_fingerprint": fingerprint, "versions": versions()})
        start = time.perf_counter()
        try:
            result = compute()
            result |= {"requested_config": _plain(requested), "data_source": data_source,
                       "data_fingerprint": fingerprint, "versions": versions(),
                       "seconds": round(time.perf_counter() - start, 2)}
            write(folder, result)
        except KeyboardInterrupt:
            raise Interrupted(f"nothing finished: {folder} keeps config.json and the {INCOMPLETE} marker, "
                              "no result.json") from None
        (folder / INCOMPLETE).unlink()
        return result, False


def write_outputs(out: Path, result: dict[str, Any]) -> None:
    """A ``run``'s files: the plots (``loss_curves.png`` too: the loss per task), ``metrics.csv``,
    ``report.md``, then ``result.json``."""
    from .plots import accuracy_heatmap, save_figure, task_curves
    from .report import metrics_csv, run_report

    c = result["config"]
    title = f"{c['method']} on {c['benchmark']} ({c['scenario']}-incremental), {len(result['seeds'])} seed(s)"
    names = result["task_names"]
    save_figure(accuracy_heatmap(result["mean_accuracy_matrix"], names, title), out / "accuracy_matrix.png")
    save_figure(task_curves(result["mean_accuracy_matrix"], names, title, result["std_accuracy_matrix"]), out / "task_curves.png")
    unit = f"test loss (nats per {result['loss_per']})"
    save_figure(task_curves(result["mean_loss_matrix"], names, title, result["std_loss_matrix"], ylabel=unit,
                            accuracy=False), out / "loss_curves.png")
    write_atomic(out / "metrics.csv", metrics_csv(result))
    write_atomic(out / "report.md", run_report(result))
    write_json(out / "result.json", result)  # last: its presence means the run finished
