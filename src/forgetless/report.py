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
    write_atomic(path, json.dumps(_finite(content), indent=2, allow_nan=False) + "\n")


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
    if result.get("strength_search"):
        lines += search_table(result["strength_search"], "EWC strength search (mean validation accuracy over A and B)", "λ")
    return "\n".join(lines) + "\n"


def search_table(search: dict[str, Any], title: str, symbol: str) -> list[str]:
    """Markdown lines: the validation score of every strength tried, the winner, and a grid-edge warning."""
    lines = ["", f"{title}:", "", f"| {symbol} | validation |", "|---|---|"]
    untried = set(search.get("not_tried", ()))
    for strength, score in zip(search["grid"], search["validation_scores"]):
        cell = f"{score:.4f}" if score is not None else "not needed (local search)" if strength in untried else "diverged"
        lines.append(f"| {strength:g} | {cell}{' ← chosen' if strength == search['best'] else ''} |")
    if search.get("best_at_grid_edge"):
        lines += ["", "The chosen value is at the edge of the grid: a wider grid (--strength-grid) may do better."]
    return lines


def _finite(value: Any) -> Any:
    """JSON has no NaN: undefined metrics (e.g. forgetting with one task) become null."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _pm(stat: dict[str, float | None]) -> str:
    if stat["mean"] is None or stat["mean"] != stat["mean"]:
        return "n/a"
    return f"{stat['mean']:.4f} ± {stat['std']:.4f}"


def metrics_csv(result: dict[str, Any]) -> str:
    """One row per seed and metric, then the mean and std rows."""
    lines = ["seed,metric,value"]
    for run in result["seeds"]:
        for name, value in run["metrics"].items():
            lines.append(f"{run['seed']},{name},{'' if value is None or value != value else repr(float(value))}")
    for name, stat in result["metrics"].items():
        for key in ("mean", "std"):
            v = stat[key]
            lines.append(f"{key},{name},{'' if v is None or v != v else repr(float(v))}")
    return "\n".join(lines) + "\n"


def run_report(result: dict[str, Any]) -> str:
    c = result["config"]
    seeds = [r["seed"] for r in result["seeds"]]
    names = result["task_names"]
    lines = [
        f"# {c['method']} on {c['benchmark']}, {c['scenario']}-incremental",
        "",
        f"Seeds {seeds}; {c['iterations']} iterations per task, batch {c['batch_size']}, Adam lr {c['lr']}, "
        f"hidden {c['hidden']}; strength {c['strength']}" + (" (validation search)" if result.get("strength_search") else ""),
        f"Data: {result.get('data_source', '?')}. {result['selection'].capitalize()}.",
        "",
        "| metric | mean ± std over seeds |",
        "|---|---|",
    ]
    lines += [f"| {name} | {_pm(stat)} |" for name, stat in result["metrics"].items()]
    lines += ["", "Mean test accuracy matrix R[t, k] (row: after training task t; column: task k):", "",
              "| after \\ on | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for name, row in zip(names, result["mean_accuracy_matrix"]):
        lines.append(f"| {name} | " + " | ".join(f"{v:.3f}" for v in row) + " |")
    if result.get("strength_search"):
        lines += search_table(result["strength_search"], "Strength search (validation average accuracy, first seed)", "strength")
    return "\n".join(lines) + "\n"
