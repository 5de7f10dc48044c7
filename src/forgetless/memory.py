"""Refusing work that cannot fit in memory, up front, in one line (instead of an allocator's
traceback minutes later, or the kernel killing the process)."""
from __future__ import annotations

from pathlib import Path


class NotEnoughMemory(ValueError):
    """The work asked for needs more memory than this machine has available."""


def available_bytes() -> int | None:
    """Memory this process may still use: the kernel's MemAvailable, capped by a cgroup limit
    (containers); None where neither can be read (not Linux)."""
    found = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        usage = Path("/sys/fs/cgroup/memory.current").read_text().strip()
        if limit != "max":
            found.append(int(limit) - int(usage))
    except (OSError, ValueError):
        pass
    return min(found) if found else None


def check_fits(need: int, what: str) -> None:
    """Raise :class:`NotEnoughMemory` when ``need`` bytes exceed what is available.

    Example:
        >>> check_fits(1 << 10, "a kilobyte")
        >>> check_fits(1 << 60, "an exabyte")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        forgetless.memory.NotEnoughMemory: an exabyte needs about 1152921504.6 GB of memory; ... available
    """
    have = available_bytes()
    if have is not None and need > have:
        raise NotEnoughMemory(f"{what} needs about {need / 1e9:.1f} GB of memory; "
                              f"this machine has {have / 1e9:.1f} GB available")
