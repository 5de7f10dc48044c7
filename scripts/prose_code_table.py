#!/usr/bin/env python
"""results/prose-code/: every finished run copied as ``<folder>.json``, and ``table.md``: the methods side
by side (accuracy and, per domain, the test loss in nats per byte, mean ± SEM over seeds).

    .venv/bin/python scripts/prose_code_table.py [--from RUNS_DIR] [--results FOLDER]

With ``--from``, first copies ``RUNS_DIR/<folder>/result.json`` (the ``OUT`` of ``scripts/prose-code.sh``:
``ewc`` over seeds 0-2, ``naive-s0``… one seed each) for every run that finished. The table is then built
from the committed copies alone (:func:`forgetless.compare.compare_report`): the runs of one method (one
per seed) are pooled, each metric over seeds recomputed from the per-seed metrics
(:func:`forgetless.stats.over_seeds`). ``--results`` names another folder than results/prose-code (e.g.
``results/prose-code/iterations-2000`` for the runs with ``--iterations 2000``).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from forgetless.compare import compare_report
from forgetless.files import write_atomic, write_json
from forgetless.stats import over_seeds

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results" / "prose-code"
ORDER = ("naive", "ewc", "ewc-kfac", "online-ewc", "online-ewc-kfac", "l2", "si", "mas", "joint")


def pooled(runs: list[dict]) -> dict:
    """One method's runs (one per seed, same settings but the seeds) as one result over all their seeds."""
    if len(runs) == 1:
        return runs[0]
    settings = [{k: v for k, v in r["config"].items() if k != "seeds"} for r in runs]
    if any(s != settings[0] for s in settings):
        raise SystemExit(f"{runs[0]['config']['method']}: runs with different settings cannot be pooled")
    seeds = sorted((s for r in runs for s in r["seeds"]), key=lambda s: s["seed"])
    per_seed = [s["metrics"] for s in seeds]
    metrics = {name: over_seeds([m[name] for m in per_seed]) for name in per_seed[0]}
    config = runs[0]["config"] | {"seeds": [s["seed"] for s in seeds]}
    return runs[0] | {"config": config, "seeds": seeds, "metrics": metrics}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from", dest="runs", type=Path, help="the OUT folder of scripts/prose-code.sh")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where the copies and table.md go")
    args = parser.parse_args()
    results_dir = args.results
    if args.runs:
        results_dir.mkdir(parents=True, exist_ok=True)
        for result in sorted(args.runs.glob("*/result.json")):
            write_json(results_dir / f"{result.parent.name}.json", json.loads(result.read_text()))
            print(f"copied {result}")
    found: dict[str, list[dict]] = {}
    for path in sorted(results_dir.glob("*.json")):
        result = json.loads(path.read_text())
        found.setdefault(result["config"]["method"], []).append(result)
    results = {m: pooled(found[m]) for m in sorted(found, key=lambda m: (ORDER + (m,)).index(m))}
    if not results:
        raise SystemExit(f"no results in {results_dir}: run scripts/prose-code.sh OUT, then this with --from OUT")
    write_atomic(results_dir / "table.md", compare_report(results))
    print(f"wrote {results_dir / 'table.md'} ({', '.join(results)})")


if __name__ == "__main__":
    main()
