#!/usr/bin/env python
"""results/vandeven2019/table.md and table.json: van de Ven & Tolias 2019 (arXiv 1904.07734), cell by
cell, their protocol and ours beside the published mean ± SEM.

    .venv/bin/python scripts/vandeven2019_table.py [--from RUNS_DIR ...]

With ``--from``, first copies the finished runs of every folder ``RUNS_DIR/vandeven2019-<protocol>-<cell>``
(the ``--out`` of the commands in results/vandeven2019/README.md: sweep folders for their protocol,
compare folders for ours) into the compact files ``results/vandeven2019/<protocol>/<cell>.json``
(per seed: config and test accuracy matrix). A cell keeps its file while its folder has no finished run
of one of the methods the file holds (a compare still running).
Then builds the table from those compact files alone, so the table is rebuilt from what is committed.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from forgetless.files import write_atomic, write_json
from forgetless.paper import beyond, cells, compact, compact_json, measured_text, read_runs, summary_of, table_markdown
from forgetless.sweep.summary import group_rows

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results" / "vandeven2019"
GAPS = "Cells beyond 2 combined SEs: what explains each"  # the heading of README.md's section on them
CELLS = ("split-mnist-task", "split-mnist-domain", "split-mnist-class", "permuted-mnist-domain")
PROTOCOLS = {  # folder name -> the table's name for it, and the command behind its runs
    "theirs": ("their protocol", "forgetless --threads 1 sweep --config configs/vandeven2019/theirs/{cell}.toml "
                                 "--workers 1 --out {folder}"),
    "ours": ("our protocol", "forgetless --threads 1 compare --config configs/vandeven2019/ours/{bench}.toml "
                             "--scenario {scenario} --methods naive,ewc,online-ewc,si --out {folder}"),
    # not in the paper: the Kronecker-factored EWC (issue 10), our protocol, set beside our diagonal rows
    "kfac": ("our protocol, Kronecker-factored", "forgetless --threads 1 compare --config configs/vandeven2019/ours/{bench}.toml "
                                                 "--scenario {scenario} --methods M --seeds 0-2 --strength-grid G "
                                                 "--out {folder}/M (M, G: README.md, \"K-FAC rows\")"),
}
DIAGONAL = {"ewc-kfac": "ewc", "online-ewc-kfac": "online-ewc"}  # a K-FAC row -> the diagonal row it is set beside


def refresh(runs_dir: Path) -> list[str]:
    """Copy the finished runs under ``runs_dir`` into the compact files; returns what was copied."""
    said = []
    for protocol, (_, command) in PROTOCOLS.items():
        for cell in CELLS:
            folder = runs_dir / f"vandeven2019-{protocol}-{cell}"
            entries = read_runs(folder) if folder.is_dir() else []
            target = RESULTS / protocol / f"{cell}.json"
            have = {c["method"] for c, _, _ in read_runs(target)} if target.is_file() else set()
            found = {c["method"] for c, _, _ in entries}
            if not entries or not have <= found:  # never drop a method the table has (a compare still running)
                if entries:
                    said.append(f"{protocol}/{cell}.json kept: {folder} has finished only {', '.join(sorted(found))}")
                continue
            bench, scenario = cell.rsplit("-", 1)
            about = {"protocol": protocol, "cell": cell, "source": str(folder),
                     "command": command.format(cell=cell, bench=bench, scenario=scenario, folder=folder)}
            target.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(target, compact_json(compact(entries, **about)))
            said.append(f"{protocol}/{cell}.json: {len(entries)} runs from {folder}")
    return said


def build() -> tuple[str, list]:
    """The table from the compact files, and the notes saying where each file's runs come from."""
    protocols, notes = {}, []
    for protocol, (name, _) in PROTOCOLS.items():
        entries: list = []
        for path in sorted((RESULTS / protocol).glob("*.json")):
            data = json.loads(path.read_text())
            entries += read_runs(path)
            notes.append(f"- {name}, `{path.relative_to(ROOT)}`: {len(data['runs'])} runs from {data['source']}; "
                         f"command: `{data['command']}`" + (f". {data['note']}" if data.get("note") else ""))
        protocols[name] = entries
    rows = cells(protocols)
    title = ["# van de Ven & Tolias 2019 (arXiv 1904.07734), cell by cell", "",
             "Final average test accuracy over all tasks. Rebuilt by `.venv/bin/python scripts/vandeven2019_table.py` "
             "(see README.md); the protocols are in PROTOCOL.md.", "", ""]
    flagged = [f"- {cell}" for cell in beyond(rows)] or ["- none"]
    gaps = [f"Cells more than 2 combined SEs from the published value, or with no SE (one seed); what explains "
            f"each, measured, or that it is not explained yet: README.md, \"{GAPS}\".", "", *flagged]
    kfac = protocols.pop(PROTOCOLS["kfac"][0])
    extra = beside_diagonal(kfac, protocols[PROTOCOLS["ours"][0]])
    text = ("\n".join(title) + table_markdown(rows, list(protocols)) + "\n" + "\n".join(gaps) + "\n\n"
            + "".join(line + "\n" for line in extra) + ("\n" if extra else "") + "Runs:\n\n" + "\n".join(notes) + "\n")
    return text, rows


def beside_diagonal(kfac: list, ours: list) -> list[str]:
    """Markdown: each Kronecker-factored row (no published cell) beside our protocol's diagonal row of the
    same cell, the difference in points and in combined standard errors, and whether the seeds are the same."""
    diagonal = {(r["benchmark"], r["scenario"], r["method"]): r for r in group_rows(ours)}
    lines = ["## Beyond the paper: Kronecker-factored EWC beside the diagonal (our protocol)", "",
             "| benchmark | scenario | method | measured (%) | diagonal row (%) | K-FAC − diagonal | same seeds |",
             "|---|---|---|---|---|---|---|"]
    for row in group_rows(kfac):
        base = diagonal.get((row["benchmark"], row["scenario"], DIAGONAL[row["method"]]))
        cells = [row["benchmark"], row["scenario"], row["method"], measured_text(row)]
        if base is None:
            cells += ["–", "–", "–"]
        else:
            a, b = row["average_accuracy"], base["average_accuracy"]
            se = (a["sem"] ** 2 + b["sem"] ** 2) ** 0.5 if a["n"] > 1 and b["n"] > 1 else None
            diff = 100 * (a["mean"] - b["mean"])
            cells += [f"{DIAGONAL[row['method']]}: {measured_text(base)}",
                      f"{diff:+.2f}" + (f" ({diff / (100 * se):+.2f} SE)" if se else ""),
                      "yes" if sorted(row["seeds"]) == sorted(base["seeds"]) else "no"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines if len(lines) > 4 else []



def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from", dest="sources", type=Path, action="append", default=[],
                        help="a folder holding vandeven2019-<protocol>-<cell> run folders (repeatable)")
    args = parser.parse_args(argv)
    for runs_dir in args.sources:
        if not runs_dir.is_dir():
            print(f"vandeven2019_table: error: --from {runs_dir}: no such folder", file=sys.stderr)
            return 2
        for line in refresh(runs_dir):
            print(line)
    text, rows = build()
    write_atomic(RESULTS / "table.md", text)
    write_json(RESULTS / "table.json", {"rows": summary_of(rows)})
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
