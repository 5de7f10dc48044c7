"""Save a regularizer to one file and load it back, in another process, another day.

    forgetless.save(ewc, "ewc.safetensors")      # after task 1
    ewc = forgetless.load("ewc.safetensors")     # later: EWC(strength=..., ...) with its state

The file is a safetensors file: the tensors of ``regularizer.state_dict()`` plus string metadata
naming the format and its version, the regularizer (its key in ``REGULARIZERS``), its
``hyperparameters()`` as JSON and a sha256 digest. Loading it never executes code: safetensors is a
JSON header followed by raw tensor bytes, with nothing unpickled (unlike ``torch.load`` without
``weights_only=True``), and ``load`` only builds classes listed in the registry it is given.

The digest covers the regularizer's name, its hyperparameters and every tensor's name, dtype,
shape and bytes, so a flipped bit anywhere in the data, not only in the header, is refused. It is
an integrity check against damage, not a signature: whoever can write the file can recompute it.
The model itself is not in the file; save it as you usually do (``model.state_dict()``).
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path
from typing import Mapping

import torch
from safetensors.torch import load as _load_tensors
from safetensors.torch import save as _save_tensors
from torch import Tensor

from .files import write_atomic
from .regularizers import REGULARIZERS, Regularizer

FORMAT = "forgetless.regularizer"
FORMAT_VERSION = 1
_MAX_HEADER = 100 * 1024 * 1024  # the safetensors library's own limit on the JSON header

__all__ = ["FORMAT", "FORMAT_VERSION", "StateFileError", "load", "save"]


class StateFileError(ValueError):
    """A state file cannot be loaded; the message names the file and what is wrong with it."""


def save(
    regularizer: Regularizer, path: str | os.PathLike, *, registry: Mapping[str, type[Regularizer]] = REGULARIZERS
) -> Path:
    """Write ``regularizer`` (its class, hyperparameters and state) to ``path`` atomically.

    The file is written next to ``path`` under a temporary name and renamed over it, so a reader
    never sees half a file and a crash leaves the old file in place. Tensors are stored on the CPU.

    Args:
        regularizer: any regularizer whose class is in ``registry``, before or after ``consolidate``
            (mid-task SI state included).
        path: the file to write (conventionally ``*.safetensors``); its folder must exist (else a
            ``FileNotFoundError`` names it).
        registry: name -> class; the name of ``type(regularizer)`` is what ``load`` looks up.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: the class is not in ``registry``, or its hyperparameters are not JSON.

    Example:
        >>> import tempfile, torch, forgetless
        >>> model = torch.nn.Linear(4, 3)
        >>> ewc = forgetless.EWC(strength=50.0, estimator="empirical")
        >>> ewc.consolidate(model, [(torch.randn(8, 4), torch.randint(0, 3, (8,)))])
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     path = forgetless.save(ewc, f"{folder}/ewc.safetensors")
        ...     again = forgetless.load(path)
        >>> again
        EWC(strength=50.0, estimator='empirical', structure='diagonal', kfac_damping=0.0, fisher_samples=None, seed=0)
        >>> bool(torch.equal(again.importance["weight"], ewc.importance["weight"]))
        True
    """
    path = Path(path)
    cls = type(regularizer)
    names = [name for name, c in registry.items() if c is cls]
    if not names:
        raise ValueError(f"cannot save a {cls.__name__}: its class is not in the registry "
                         f"({', '.join(registry)}); pass registry={{'name': {cls.__name__}, ...}}")
    try:
        hyperparameters = json.dumps(regularizer.hyperparameters(), sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise ValueError(f"cannot save {regularizer!r}: hyperparameters are not plain JSON ({err})") from None
    # own CPU copies: safetensors refuses views of shared storage and device tensors
    tensors = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in regularizer.state_dict().items()}
    metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "regularizer": names[0],
        "class": cls.__name__,  # for people reading the header; ``regularizer`` is what is used
        "hyperparameters": hyperparameters,
        # safetensors stores tensors sorted; the original order keeps sums (the penalty) bit-identical
        "order": json.dumps(list(tensors)),
        "sha256": _digest(names[0], hyperparameters, tensors),
    }
    write_atomic(path, _save_tensors(tensors, metadata=metadata))
    return path


def load(
    path: str | os.PathLike, *, device: torch.device | str | None = None,
    registry: Mapping[str, type[Regularizer]] = REGULARIZERS,
) -> Regularizer:
    """Rebuild the regularizer saved by :func:`save`: same class, hyperparameters and state.

    Args:
        path: a file written by :func:`save`.
        device: where to put the state tensors (default: the CPU). Put them where the model's
            parameters are, e.g. ``device="cuda"``, before calling ``penalty``; a device this
            machine lacks is a ``ValueError`` naming it, before the file is read.
        registry: name -> class; only classes listed here can be built.

    Raises:
        FileNotFoundError: (and other ``OSError``) the file cannot be read.
        StateFileError: a ``ValueError`` with one line naming the file and what is wrong: not a
            safetensors file, truncated or damaged (digest mismatch), not written by :func:`save`, a
            newer format version, an unknown regularizer, hyperparameters its class refuses, or a
            state its class refuses (:meth:`Regularizer.state_problem`, the check
            ``load_state_dict`` makes too).
    """
    path = Path(path)
    if device is not None:
        device = _available(device)
    data = path.read_bytes()

    def fail(what: str) -> StateFileError:
        return StateFileError(f"{path}: {what}")

    meta = _read_metadata(data, fail)
    try:
        tensors = _load_tensors(data)
    except Exception as err:  # SafetensorError and friends: a damaged header or data section
        raise fail(f"not a valid safetensors file ({_one_line(err)})") from None
    if meta.get("format") != FORMAT:
        raise fail(f"not a forgetless regularizer file (metadata 'format' is {meta.get('format')!r}, "
                   f"expected {FORMAT!r})")
    version = meta.get("format_version", "")
    if not (version.isascii() and version.isdigit()):
        raise fail(f"bad format_version {version!r}")
    if int(version) > FORMAT_VERSION:
        raise fail(f"format version {version} is newer than this forgetless reads ({FORMAT_VERSION}); "
                   "upgrade forgetless")
    name, hyperparameters = meta.get("regularizer"), meta.get("hyperparameters")
    if name is None or hyperparameters is None or meta.get("sha256") is None or meta.get("order") is None:
        raise fail("metadata lacks 'regularizer', 'hyperparameters', 'order' or 'sha256'")
    # the digest first: damage is reported as damage, not as whatever it happened to break
    tensors = _in_order(meta["order"], tensors)
    if tensors is None or _digest(name, hyperparameters, tensors) != meta["sha256"]:
        raise fail("sha256 mismatch: the file is damaged (its tensors or metadata changed after it was written)")
    if name not in registry:
        raise fail(f"unknown regularizer {name!r} (known: {', '.join(registry)})")
    try:
        kwargs = json.loads(hyperparameters)
    except json.JSONDecodeError as err:
        raise fail(f"hyperparameters are not valid JSON ({err})") from None
    if not isinstance(kwargs, dict):
        raise fail(f"hyperparameters must be a JSON object, got {type(kwargs).__name__}")
    cls = registry[name]
    try:
        regularizer = cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise fail(f"{cls.__name__} refuses the hyperparameters {kwargs} ({_one_line(err)})") from None
    problem = cls.state_problem(tensors)
    if problem:
        raise fail(f"{cls.__name__} state {problem}")
    regularizer.load_state_dict({k: v.to(device) for k, v in tensors.items()} if device is not None else tensors)
    return regularizer


# --------------------------------------------------------------------------------------------------
def _digest(name: str, hyperparameters: str, tensors: Mapping[str, Tensor]) -> str:
    """sha256 over the name, the hyperparameters' JSON and each tensor's name, dtype, shape and bytes, in order."""
    h = hashlib.sha256()
    for text in (FORMAT, name, hyperparameters):
        h.update(text.encode() + b"\0")
    for key in tensors:
        t = tensors[key].detach().to("cpu").contiguous()
        h.update(f"{key}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())  # the raw bytes, whatever the dtype (bf16, bool…)
    return h.hexdigest()


def _in_order(order_json: str, tensors: dict[str, Tensor]) -> dict[str, Tensor] | None:
    """``tensors`` in the order saved in the metadata; None if that is not a permutation of their names."""
    try:
        order = json.loads(order_json)
    except json.JSONDecodeError:
        return None
    if not isinstance(order, list) or not all(isinstance(k, str) for k in order) or sorted(order) != sorted(tensors):
        return None
    return {key: tensors[key] for key in order}


def _read_metadata(data: bytes, fail) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors header: u64 little-endian length, then that much JSON."""
    if len(data) < 8:
        raise fail(f"not a safetensors file (only {len(data)} bytes)")
    (n,) = struct.unpack("<Q", data[:8])
    if n > min(_MAX_HEADER, len(data) - 8):
        raise fail(f"not a safetensors file, or truncated (header of {n} bytes in a {len(data)}-byte file)")
    try:
        header = json.loads(data[8:8 + n])
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise fail(f"damaged safetensors header ({_one_line(err)})") from None
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise fail("not a forgetless regularizer file (no string metadata in its header)")
    return meta


def _available(device: torch.device | str) -> torch.device:
    """``device`` as a ``torch.device``, checked to exist here (e.g. "cuda" on a machine without CUDA)."""
    try:
        resolved = torch.device(device)
        torch.empty(0, device=resolved)
    except (RuntimeError, AssertionError, TypeError) as err:  # torch says "not compiled with CUDA" by assert
        raise ValueError(f"device={device!r} is not available on this machine ({_one_line(err)})") from None
    return resolved


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__
