"""Results → files. Every file is written atomically: a crash never leaves a half-written one."""
from __future__ import annotations

import json
import os
import platform
import tempfile
from pathlib import Path
from typing import Any


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write to a temporary file beside ``path`` then rename it into place."""
    path = Path(path)
    raw = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, content: Any) -> None:
    write_atomic(path, json.dumps(content, indent=2, sort_keys=False) + "\n")


def versions() -> dict[str, str]:
    import numpy
    import torch

    from . import __version__

    return {"forgetless": __version__, "torch": torch.__version__, "numpy": numpy.__version__,
            "python": platform.python_version()}


def seed_table(result: dict[str, Any]) -> str:
    """Markdown table: our test accuracies beside the post's."""
    rows = ["| procedure | task A | task B | mean | post A | post B |", "|---|---|---|---|---|---|"]
    for name, proc in result["procedures"].items():
        a, b = proc["accuracy"]["A"], proc["accuracy"]["B"]
        post = result["post"][name]
        rows.append(f"| {name} | {a:.3f} | {b:.3f} | {(a + b) / 2:.3f} | {post['A']:.3f} | {post['B']:.3f} |")
    return "\n".join(rows)


def seed_report(result: dict[str, Any]) -> str:
    c = result["config"]
    lines = [
        "# forgetless seed: the post's experiment, even digits (A) then odd digits (B)",
        "",
        seed_table(result),
        "",
        f"Protocol `{c['protocol']}`, seed {c['seed']}, EWC λ = {c['strength']:g} ({c['strength_source']}), "
        f"Fisher estimator `{c['estimator']}`, L2 λ = {c['l2_strength']:g}.",
        f"Data: {result.get('data_source', '?')}. {result['selection'].capitalize()}.",
    ]
    search = result.get("strength_search")
    if search:
        lines += ["", "EWC strength search (mean validation accuracy over A and B):", "",
                  "| λ | validation |", "|---|---|"]
        lines += [f"| {s:g} | {v:.4f} |" for s, v in zip(search["grid"], search["validation_scores"])]
    return "\n".join(lines) + "\n"
