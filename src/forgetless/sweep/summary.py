"""A sweep's results → one row per config but the seed: table, report, plot, files."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from .. import metrics
from ..published import SOURCES, beside
from ..stats import over_seeds, undefined
from .plan import Plan
from .spec import HEAD, SweepSpec, show

DEFINITIONS = {
    "average_accuracy": "mean over tasks of R[T-1, k]: every task after the last one",
    "old_tasks_accuracy": "mean over k < T-1 of R[T-1, k]: the earlier tasks after the last one (stability)",
    "newest_task_accuracy": "R[T-1, T-1]: the last task just after learning it (plasticity)",
}


def group_rows(entries: Iterable[tuple[Mapping[str, Any], list | None, str]], extra: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Runs → one row per config but the seed: the three accuracies over its finished seeds (mean, std,
    sem, n), and the published average accuracy beside ours where the paper has the cell.

    ``entries``: (a one-seed run's resolved config, its test accuracy matrix R — None where the run has
    not finished —, its name); ``extra``: the settings besides the strength that tell rows apart.

    Example:
        >>> c = {"benchmark": "split-mnist", "scenario": "task", "method": "naive", "strength": None}
        >>> rows = group_rows([(c | {"seeds": [1]}, [[1.0, 0.5], [0.8, 0.9]], "a"),
        ...                    (c | {"seeds": [2]}, [[1.0, 0.5], [0.6, 0.9]], "b"), (c | {"seeds": [3]}, None, "c")])
        >>> r = rows[0]; r["seeds"], r["missing_seeds"], r["average_accuracy"]["mean"], r["average_accuracy"]["n"]
        ([1, 2], [3], 0.8, 2)
        >>> round(r["published"]["published_mean"], 2)   # their Table 4, None (naive) Task-IL
        87.19
    """
    groups: dict[str, dict[str, Any]] = {}
    for resolved, R, name in entries:
        key = json.dumps({k: v for k, v in resolved.items() if k != "seeds"}, sort_keys=True)
        row = groups.setdefault(key, {
            "benchmark": resolved["benchmark"], "scenario": resolved["scenario"], "method": resolved["method"],
            "strength": resolved["strength"], "settings": {k: resolved.get(k) for k in extra},
            "seeds": [], "runs": [], "missing_seeds": [], "per_seed": []})
        if R is None:
            row["missing_seeds"].append(resolved["seeds"][0])
            continue
        row["seeds"].append(resolved["seeds"][0])
        row["runs"].append(name)
        row["per_seed"].append({metric: getattr(metrics, metric)(R) for metric in DEFINITIONS})
    rows = []
    for row in groups.values():
        per_seed = row.pop("per_seed")
        for metric in DEFINITIONS:
            row[metric] = over_seeds([m[metric] for m in per_seed]) if per_seed else undefined()
        row["published"] = beside(row["benchmark"], row["scenario"], row["method"], row["average_accuracy"]) \
            if per_seed else None
        rows.append(row)
    return rows


def summarize(plan: Plan, results: Mapping[str, dict[str, Any]], spec: SweepSpec) -> dict[str, Any]:
    """One row per config-but-the-seed (:func:`group_rows`), with the plan's points and what is missing."""
    from ..runs import versions

    extra = [k for k in spec.grid if k not in HEAD and k != "strength"]
    points, entries = [], []
    for p in plan.points:
        resolved = p.config.resolved()
        result = results.get(p.name)
        points.append({"name": p.name, "label": p.label, "config": resolved,
                       "status": "finished" if result else "missing"})
        entries.append((resolved, result["seeds"][0]["accuracy_matrix"] if result else None, p.name))
    return {"description": spec.description, "spec": spec.as_dict(), "data": plan.data, "extra_axes": extra,
            "definitions": DEFINITIONS, "rows": group_rows(entries, extra), "points": points,
            "missing": [p["name"] for p in points if p["status"] == "missing"],
            "std": "std: sample standard deviation, ddof=1; sem = std / sqrt(n); no sem with one seed",
            "versions": versions()}


def sweep_table(summary: dict[str, Any]) -> str:
    """The markdown table of :func:`summarize`'s rows; where a paper has a row's cell, the published
    average accuracy beside ours and the difference in combined standard errors."""
    from ..report import pm, versus

    extra = summary["extra_axes"]
    with_paper = any(r.get("published") for r in summary["rows"])
    head = ["benchmark", "scenario", "method", "strength", *extra, "seeds",
            "average accuracy", "old tasks (stability)", "newest task (plasticity)"]
    head += ["published (%)", "ours − published"] if with_paper else []
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in summary["rows"]:
        strength = "–" if r["strength"] is None else f"{r['strength']:g}"
        seeds = ",".join(map(str, r["seeds"])) or "none"
        if r["missing_seeds"]:
            seeds += f" (missing {','.join(map(str, r['missing_seeds']))})"
        settings = ["–" if r["settings"][k] is None else show(r["settings"][k]) for k in extra]
        cells = [r["benchmark"], r["scenario"], r["method"], strength, *settings,
                 seeds, pm(r["average_accuracy"]), pm(r["old_tasks_accuracy"]), pm(r["newest_task_accuracy"])]
        cells += list(versus(r.get("published"))) if with_paper else []
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def sweep_report(summary: dict[str, Any]) -> str:
    lines = ["# forgetless sweep", ""]
    if summary["description"]:
        lines += [summary["description"], ""]
    lines += [sweep_table(summary), "",
              "Test accuracies after the last task, mean ± standard error over seeds (n seeds) "
              f"({summary['std']}). "
              "R[t, k] = test accuracy on task k after training task t; T tasks:"]
    lines += [f"- {name.replace('_', ' ')}: {text}" for name, text in summary["definitions"].items()]
    lines += ["", "Data: " + "; ".join(f"{k}: {v['source']} (fingerprint {v['fingerprint']})"
                                      for k, v in summary["data"].items()) + "."]
    if any(r.get("published") for r in summary["rows"]):
        lines += ["", f"Published: {SOURCES['vandeven2019']}, mean ± SEM over 20 runs, in percent; ours − published "
                      "in percentage points and in units of the combined standard error √(SEM_ours² + SEM_published²)."]
    if summary["missing"]:
        lines += ["", f"**{len(summary['missing'])} of {len(summary['points'])} runs are missing** "
                      "(failed or not run): run the same command again to finish them."]
    lines += ["", "![stability–plasticity](stability_plasticity.png)"]
    return "\n".join(lines) + "\n"


def plot_points(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows as points for :func:`forgetless.plots.stability_plasticity`."""
    combos = {(r["benchmark"], r["scenario"]) for r in summary["rows"]}
    out = []
    for r in summary["rows"]:
        old, new = r["old_tasks_accuracy"], r["newest_task_accuracy"]
        if not r["seeds"] or math.isnan(old["mean"]):
            continue  # no finished seed, or a single task: no old tasks
        settings = [f"{k}={show(v)}" for k, v in r["settings"].items() if v is not None]
        point = {"curve": ", ".join([r["method"], *settings]), "strength": r["strength"],
                 "plasticity": (new["mean"], new["std"]), "stability": (old["mean"], old["std"])}
        if len(combos) > 1:
            point["panel"] = f"{r['benchmark']} ({r['scenario']}-incremental)"
        out.append(point)
    return out


def write_summary(out: Path, summary: dict[str, Any]) -> None:
    """``sweep.json``, ``sweep.md`` and ``stability_plasticity.png`` (each written atomically)."""
    from ..files import write_atomic, write_json

    points = plot_points(summary)
    if points:
        from ..plots import save_figure, stability_plasticity

        combos = sorted({(r["benchmark"], r["scenario"]) for r in summary["rows"]})
        title = (f"{combos[0][0]} ({combos[0][1]}-incremental): " if len(combos) == 1 else "") + \
            "stability vs plasticity, labels = strength"
        save_figure(stability_plasticity(points, title), out / "stability_plasticity.png", dpi=110)
    write_atomic(out / "sweep.md", sweep_report(summary))
    write_json(out / "sweep.json", summary)
