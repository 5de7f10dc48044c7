"""Several finished runs on one benchmark → one table (with published numbers) and one plot."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .published import SOURCES, published
from .report import _pm, write_atomic, write_json


def compare_rows(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for method, result in results.items():
        c = result["config"]
        ref = published(c["benchmark"], c["scenario"]).get(method)
        m = result["metrics"]
        rows.append({
            "method": method, "strength": c["strength"], "seeds": len(result["seeds"]),
            "average_accuracy": m["average_accuracy"], "average_forgetting": m["average_forgetting"],
            "backward_transfer": m["backward_transfer"], "forward_transfer": m.get("forward_transfer"),
            "published_average_accuracy": ref,
        })
    return rows


def compare_report(results: dict[str, dict[str, Any]]) -> str:
    first = next(iter(results.values()))["config"]
    lines = [f"# {first['benchmark']}, {first['scenario']}-incremental: methods compared", "",
             "| method | strength | seeds | average accuracy | forgetting | BWT | FWT | published |",
             "|---|---|---|---|---|---|---|---|"]
    for r in compare_rows(results):
        ref = "" if r["published_average_accuracy"] is None else f"{r['published_average_accuracy']:.4f}"
        fwt = _pm(r["forward_transfer"]) if r["forward_transfer"] else "n/a"
        strength = "" if r["strength"] is None else f"{r['strength']:g}"
        lines.append(f"| {r['method']} | {strength} | {r['seeds']} | {_pm(r['average_accuracy'])} | "
                     f"{_pm(r['average_forgetting'])} | {_pm(r['backward_transfer'])} | {fwt} | {ref} |")
    lines += ["", f"Published: {SOURCES['vandeven2019']}, mean over 20 runs, where the paper reports the cell."]
    return "\n".join(lines) + "\n"


def write_compare(out: Path, results: dict[str, dict[str, Any]]) -> None:
    from .plots import method_bars, save_figure

    rows = compare_rows(results)
    first = next(iter(results.values()))["config"]
    bars = {r["method"]: (r["average_accuracy"]["mean"], r["average_accuracy"]["std"]) for r in rows}
    reference = {r["method"]: r["published_average_accuracy"] for r in rows if r["published_average_accuracy"] is not None}
    save_figure(method_bars(bars, f"{first['benchmark']}, {first['scenario']}-incremental", reference), out / "compare.png")
    write_atomic(out / "compare.md", compare_report(results))
    write_json(out / "compare.json", {"rows": rows})
