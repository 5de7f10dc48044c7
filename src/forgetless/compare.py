"""Several methods on one benchmark, each in its own run folder → one table (beside the published
numbers) and one plot. Every method's settings and reusable finished run are checked before the
first trains, and an interrupt keeps the methods that finished."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

from .experiment import BenchmarkFactory, Progress, execute
from .files import write_atomic, write_json
from .published import SOURCES, beside, published
from .report import key_cells, pm, versus
from .run_config import RunConfig
from .runs import Interrupted, check_usable, claimed, reusable
from .stats import over_seeds, sem_or_none


def compare(
    configs: Sequence[RunConfig], out: Path, make_bench: BenchmarkFactory, *, data_source: str, fingerprint: str,
    overwrite: bool = False, progress: Progress | None = None,
    on_method: Callable[[str, Path, bool], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """Run (or reuse) every config into ``out/<method>``, then write ``compare.md``, ``.json``, ``.png``.

    ``on_method(method, folder, reused)`` after each method. Raises :class:`~forgetless.runs.Interrupted`
    saying how many methods finished and were kept.
    """
    results: dict[str, dict[str, Any]] = {}
    with claimed(out):
        for config in configs:  # refuse a foreign folder, or another config's finished run, before training any
            check_usable(out / config.method)
            reusable(out / config.method, config.resolved(), fingerprint, overwrite=overwrite)
        try:
            for config in configs:
                folder = out / config.method
                results[config.method], reused = execute(config, folder, make_bench, data_source=data_source,
                                                          fingerprint=fingerprint, overwrite=overwrite, progress=progress)
                if on_method is not None:
                    on_method(config.method, folder, reused)
        except KeyboardInterrupt:
            kept = f" ({', '.join(results)})" if results else ""
            raise Interrupted(f"{len(results)} of {len(configs)} methods finished and kept in {out}{kept}: "
                              "run the same command to finish the others") from None
        write_compare(out, results)
    return results


def compare_rows(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per method: its settings, its metrics over seeds and, where the paper has the cell, the
    published average accuracy beside ours (:func:`forgetless.published.beside`)."""
    rows = []
    for method, result in results.items():
        c = result["config"]
        m = result["metrics"]
        ref = published(c["benchmark"], c["scenario"]).get(method)
        rows.append({
            "method": method, "strength": c["strength"], "strength_source": result.get("strength_source"),
            "seeds": len(result["seeds"]),
            "average_accuracy": m["average_accuracy"], "average_forgetting": m["average_forgetting"],
            "backward_transfer": m["backward_transfer"], "forward_transfer": m.get("forward_transfer"),
            "published_average_accuracy": ref,
            "published": beside(c["benchmark"], c["scenario"], method, m["average_accuracy"]),
            # the loss (lower is better): mean over tasks and each task's after the last one (absent in old runs)
            "average_loss": m.get("average_loss"), "loss_forgetting": m.get("loss_forgetting"),
            "final_loss": dict(zip(result["task_names"], result["mean_loss_matrix"][-1])) if "mean_loss_matrix" in result else None,
        })
    return rows


def compare_report(results: dict[str, dict[str, Any]]) -> str:
    first = next(iter(results.values()))["config"]
    lines = [f"# {first['benchmark']}, {first['scenario']}-incremental: methods compared", "",
             "| method | strength | average accuracy | forgetting | BWT | FWT | published (%) | ours − published |",
             "|---|---|---|---|---|---|---|---|"]
    rows = compare_rows(results)
    for r in rows:
        fwt = pm(r["forward_transfer"]) if r["forward_transfer"] else "n/a"
        strength = "" if r["strength"] is None else f"{r['strength']:g}"
        ref, diff = versus(r["published"])
        lines.append(f"| {r['method']} | {strength} | {pm(r['average_accuracy'])} | "
                     f"{pm(r['average_forgetting'])} | {pm(r['backward_transfer'])} | {fwt} | {ref} | {diff} |")
    lines += ["", "Our numbers: mean ± standard error over seeds (n seeds), test accuracy as a fraction."]
    if any(r["published"] for r in rows):
        lines += [f"Published: {SOURCES['vandeven2019']}, mean ± SEM over 20 runs, in percent; ours − published "
                  "in percentage points and in units of the combined standard error √(SEM_ours² + SEM_published²)."]
    sources = [f"{r['method']}: {r['strength_source']}" for r in rows if r["strength_source"]]
    if sources:
        lines += ["Strengths: " + "; ".join(sources) + "."]
    if all(r.get("loss_per") == "byte" for r in results.values()):
        lines += loss_table(results)
    return "\n".join(lines) + "\n"


def loss_table(results: dict[str, dict[str, Any]]) -> list[str]:
    """A language model's methods by test loss (nats per byte, lower is better): each task's just after
    learning it and after the last task, mean ± SEM over seeds."""
    cells = key_cells(next(iter(results.values()))["task_names"])
    lines = ["", "Test loss in nats per byte (mean ± SEM over seeds; lower is better):", "",
             "| method | strength | seeds | " + " | ".join(c[0] for c in cells) + " | loss forgetting |",
             "|---" * (len(cells) + 4) + "|"]
    for method, result in results.items():
        strength = result["config"]["strength"]
        stats = [over_seeds([s["loss_matrix"][t][k] for s in result["seeds"]]) for _, t, k in cells]
        forgetting = result["metrics"]["loss_forgetting"]
        lines.append(f"| {method} | {'' if strength is None else f'{strength:g}'} | {len(result['seeds'])} | "
                     + " | ".join(map(_loss_cell, stats)) + f" | {_loss_cell(forgetting)} |")
    return lines


def _loss_cell(stat: dict[str, float]) -> str:
    sem = sem_or_none(stat)  # one seed: no spread measured, no ± shown
    return f"{stat['mean']:.3f}" + ("" if sem is None else f" ± {sem:.3f}")


def write_compare(out: Path, results: dict[str, dict[str, Any]]) -> None:
    from .plots import method_bars, save_figure

    rows = compare_rows(results)
    first = next(iter(results.values()))["config"]
    bars = {r["method"]: (r["average_accuracy"]["mean"], r["average_accuracy"]["std"]) for r in rows}
    reference = {r["method"]: r["published_average_accuracy"] for r in rows if r["published_average_accuracy"] is not None}
    save_figure(method_bars(bars, f"{first['benchmark']}, {first['scenario']}-incremental", reference), out / "compare.png")
    write_atomic(out / "compare.md", compare_report(results))
    write_json(out / "compare.json", {"rows": rows})
