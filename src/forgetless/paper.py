"""Our runs beside a paper's table, cell by cell: finished runs (from run, compare or sweep folders, or
their compact copies) → one row per (benchmark, scenario, method) the paper reports, with each
protocol's measurement (mean ± SEM over seeds, n) and its difference from the published cell in
combined standard errors.

The statistics are the sweep summary's (:func:`forgetless.sweep.summary.group_rows`: the same
metrics of R, the same :func:`~forgetless.stats.over_seeds`, the same
:func:`~forgetless.published.beside`); this module only gathers the runs and lays the cells out.
A compact copy (:func:`compact`) keeps, per seed, the config and the test accuracy matrix R[t, k]:
all a table needs, a few kB per cell.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from .published import SOURCES, VAN_DE_VEN_2019, published_cells
from .report import versus
from .run_config import all_options, applicable
from .stats import sem_or_none
from .sweep.summary import group_rows

Entry = tuple[dict[str, Any], list, str]  # (a one-seed config, its test accuracy matrix R, a name)


def seed_entries(result: Mapping[str, Any], name: str) -> list[Entry]:
    """One entry per seed of a ``result.json`` (a run of several seeds, or one sweep point).

    Example:
        >>> result = {"config": {"method": "ewc", "seeds": [1, 2]},
        ...           "seeds": [{"seed": 1, "accuracy_matrix": [[0.9]]}, {"seed": 2, "accuracy_matrix": [[0.8]]}]}
        >>> [(c["seeds"], R) for c, R, _ in seed_entries(result, "ewc")]
        [([1], [[0.9]]), ([2], [[0.8]])]
    """
    return [(dict(result["config"], seeds=[run["seed"]]), run["accuracy_matrix"], f"{name}/seed{run['seed']}")
            for run in result["seeds"]]


def read_runs(path: Path) -> list[Entry]:
    """The finished runs under ``path``: a compact copy (``.json`` with ``runs``), a ``result.json``, a
    run folder, a sweep folder (``runs/<point>/``) or a compare folder (``<method>/``). Unfinished runs
    (no ``result.json``) are left out. ValueError when there is nothing to read."""
    path = Path(path)
    if path.is_file():
        data = json.loads(path.read_text())
        if "runs" in data:
            return [(run["config"], run["accuracy_matrix"], run["name"]) for run in data["runs"]]
        return seed_entries(data, path.parent.name)
    if not path.is_dir():
        raise ValueError(f"{path}: no such file or folder")
    if (path / "result.json").is_file():
        return read_runs(path / "result.json")
    folders = sorted(p.parent for p in [*path.glob("runs/*/result.json"), *path.glob("*/result.json")])
    return [entry for folder in folders for entry in read_runs(folder / "result.json")]


def compact(entries: Sequence[Entry], **about: Any) -> dict[str, Any]:
    """A compact copy of ``entries``: per seed its name, config and test accuracy matrix, plus ``about``
    (where they were copied from, the command that ran them).

    Example:
        >>> c = compact([({"method": "si", "seeds": [3]}, [[0.5]], "si/seed3")], source="runs/x")
        >>> c["source"], c["runs"]
        ('runs/x', [{'name': 'si/seed3', 'config': {'method': 'si', 'seeds': [3]}, 'accuracy_matrix': [[0.5]]}])
    """
    runs = [{"name": name, "config": config, "accuracy_matrix": R}
            for config, R, name in sorted(entries, key=lambda e: (e[0]["method"], e[0]["seeds"][0], e[2]))]
    return {**about, "runs": runs}


def compact_json(data: Mapping[str, Any]) -> str:
    """:func:`compact`'s copy as JSON text, one run per line (a diff then shows which runs changed).

    Example:
        >>> data = compact([({"method": "si", "seeds": [3]}, [[0.5]], "si/seed3")], source="runs/x")
        >>> print(compact_json(data), end="")
        {
          "source": "runs/x",
          "runs": [
            {"name": "si/seed3", "config": {"method": "si", "seeds": [3]}, "accuracy_matrix": [[0.5]]}
          ]
        }
        >>> json.loads(compact_json(data)) == data
        True
    """
    head = [f"  {json.dumps(k)}: {json.dumps(v, allow_nan=False)}," for k, v in data.items() if k != "runs"]
    runs = ",\n".join(f"    {json.dumps(run, allow_nan=False)}" for run in data["runs"])
    return "\n".join(["{", *head, '  "runs": [', runs, "  ]", "}"]) + "\n"


def cells(protocols: Mapping[str, Iterable[Entry]], paper: str = "vandeven2019") -> list[dict[str, Any]]:
    """One row per published cell that some protocol measured: the published mean ± SEM and, per
    protocol, the sweep summary's row (strength, seeds, accuracies, and ``published``: ours beside theirs).

    A protocol with two configurations of one cell (e.g. two strengths) is refused: give one.
    """
    measured: dict[tuple[str, str, str], dict[str, Any]] = {}
    for protocol, entries in protocols.items():
        for row in group_rows([(comparable(config), R, name) for config, R, name in entries]):
            key = (row["benchmark"], row["scenario"], row["method"])
            cell = measured.setdefault(key, {})
            if protocol in cell:
                raise ValueError(f"protocol {protocol!r} has two configurations of {'/'.join(key)} "
                                 f"(strengths {cell[protocol]['strength']} and {row['strength']}): give one")
            cell[protocol] = row
    out = []
    for (benchmark, scenario, method), rows in measured.items():
        ref = published_cells(benchmark, scenario).get(method)
        if ref is None or ref.source != paper:
            continue
        out.append({"benchmark": benchmark, "scenario": scenario, "method": method,
                    "published": {"mean": ref.mean, "sem": ref.sem, "runs": ref.n_runs}, "protocols": rows})
    # the paper's order: its tables (benchmark, scenario), then its rows (methods)
    tables = [key for key, row in VAN_DE_VEN_2019.items() if any(ref.source == paper for ref in row.values())]
    methods = {m: i for i, m in enumerate(("naive", "ewc", "online-ewc", "si"))}
    return sorted(out, key=lambda c: (tables.index((c["benchmark"], c["scenario"])), methods.get(c["method"], len(methods))))


def comparable(config: Mapping[str, Any]) -> dict[str, Any]:
    """A run's config with only what makes it that run: the settings its method and benchmark take,
    and of those none that is unset (None) or at its default. Configs written by different versions
    (one listing every setting, a later one only those the method takes) then compare equal.

    Example:
        >>> old = {"benchmark": "permuted-mnist", "scenario": "domain", "method": "naive", "strength": None,
        ...        "seeds": [1], "estimator": "predicted", "task_order": "fixed", "dropout": None, "lr": 1e-4}
        >>> comparable(old) == comparable(old | {"dropout": 0.0} | {"estimator": None})
        True
        >>> sorted(comparable(old))
        ['benchmark', 'lr', 'method', 'scenario', 'seeds', 'strength']
    """
    kept = ("benchmark", "scenario", "method", "strength", "seeds")
    options, out = all_options(), {}
    for key, value in applicable(config, config["method"], config["benchmark"]).items():
        defaults = [option.default for _, option in options.get(key, [])]
        if key in kept or not (value is None or (defaults and all(value == d for d in defaults))):
            out[key] = value
    return {**{k: config.get(k) for k in kept}, **out}


def measured_text(row: Mapping[str, Any]) -> str:
    """A row of :func:`group_rows` as one table cell: its average accuracy in percent, mean ± SEM (no SEM
    with one seed), the number of seeds and the strength.

    Example:
        >>> measured_text({"strength": 1e7, "average_accuracy": {"mean": 0.8, "std": 0.1, "sem": 0.05, "n": 4}})
        '80.00 ± 5.00 (n=4, strength 1e+07)'
    """
    stat = row["average_accuracy"]
    strength = "" if row["strength"] is None else f", strength {row['strength']:g}"
    sem = sem_or_none(stat)
    mean = f"{100 * stat['mean']:.2f}" + ("" if sem is None else f" ± {100 * sem:.2f}")
    return f"{mean} (n={stat['n']}{strength})"


def _measured(row: Mapping[str, Any] | None) -> tuple[str, str]:
    if row is None:
        return "–", "–"
    return measured_text(row), versus(row["published"])[1]


def table_markdown(rows: Sequence[Mapping[str, Any]], protocols: Sequence[str], paper: str = "vandeven2019") -> str:
    """The markdown table of :func:`cells`: per row the published cell, then per protocol ours and the difference.

    Example:
        >>> c = {"benchmark": "split-mnist", "scenario": "task", "method": "naive", "strength": None, "seeds": [1]}
        >>> last = {1: [0.9, 0.85], 2: [0.9, 0.80]}   # average accuracy 0.875 and 0.85: 86.25 ± 1.25
        >>> rows = cells({"theirs": [(c | {"seeds": [s]}, [[1.0, 0.5], last[s]], str(s)) for s in (1, 2)]})
        >>> print(table_markdown(rows, ["theirs"]).splitlines()[2])   # -0.94 / √(1.25² + 0.94²) = -0.60
        | split-mnist | task | naive | 87.19 ± 0.94 | 86.25 ± 1.25 (n=2) | -0.94 (-0.60 SE) |
    """
    head = ["benchmark", "scenario", "method", "published (%)"]
    for p in protocols:
        head += [f"{p}: measured (%)", f"{p}: measured − published"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        ref = r["published"]
        cells_ = [r["benchmark"], r["scenario"], r["method"],
                  f"{ref['mean']:.2f}" + ("" if ref["sem"] is None else f" ± {ref['sem']:.2f}")]
        for p in protocols:
            cells_ += list(_measured(r["protocols"].get(p)))
        lines.append("| " + " | ".join(cells_) + " |")
    lines += ["", f"Published: {SOURCES[paper]}, mean ± SEM over 20 runs. Measured: ours, mean ± SEM over n seeds (no "
              "SEM with one seed), with the strength used; measured − published in percentage points and in units of the "
              "combined standard error √(SEM_measured² + SEM_published²)."]
    return "\n".join(lines) + "\n"


def beyond(rows: Sequence[Mapping[str, Any]], limit: float = 2.0) -> list[str]:
    """The cells of :func:`cells` whose measurement is more than ``limit`` combined standard errors from the
    published mean, or whose standard error is unknown (one seed), named ``<protocol>: <benchmark>/<scenario>/<method>``
    with the difference: the cells a reader must be told the reason for.

    Example:
        >>> c = {"benchmark": "split-mnist", "scenario": "task", "method": "naive", "strength": None}
        >>> runs = [(c | {"seeds": [s]}, [[1.0, 0.5], [a, a]], str(s)) for s, a in ((1, 0.99), (2, 0.98))]
        >>> beyond(cells({"theirs": runs}))    # 98.5 ± 0.5 vs 87.19 ± 0.94: 11.31 / √(0.5² + 0.94²) = 10.62
        ['theirs: split-mnist/task/naive (+11.31 points, +10.62 SE)']
        >>> beyond(cells({"theirs": runs[:1]}))
        ['theirs: split-mnist/task/naive (+11.81 points, SE unknown: our SEM unknown (1 seed))']
    """
    out = []
    for r in rows:
        for protocol, row in r["protocols"].items():
            diff = row["published"]
            z = diff["z"]
            if z is None or abs(z) > limit:
                said = f"{z:+.2f} SE" if z is not None else f"SE unknown: {diff['note']}"
                out.append(f"{protocol}: {r['benchmark']}/{r['scenario']}/{r['method']} ({diff['difference']:+.2f} points, {said})")
    return out


def summary_of(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The rows as plain JSON: the published cell and, per protocol, ours (in percent), the seeds and the difference."""
    def ours(row: Mapping[str, Any]) -> dict[str, Any]:
        return {"strength": row["strength"], "seeds": row["seeds"], "average_accuracy": row["average_accuracy"],
                "beside_published": row["published"]}

    return [{"benchmark": r["benchmark"], "scenario": r["scenario"], "method": r["method"], "published": r["published"],
             **{p: ours(row) for p, row in r["protocols"].items()}} for r in rows]
