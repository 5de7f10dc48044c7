#!/usr/bin/env python
"""results/prose-code/: each method's finished run copied as ``<method>.json`` and ``table.md``, the
methods side by side (accuracy and, per domain, the test loss in nats per byte, mean ± SEM over seeds).

    .venv/bin/python scripts/prose_code_table.py [--from RUNS_DIR]

With ``--from``, first copies ``RUNS_DIR/<method>/result.json`` (the ``OUT`` of ``scripts/prose-code.sh``)
for every method that finished. The table is then built from the committed copies alone
(:func:`forgetless.compare.compare_report`), so it is rebuilt from what is committed.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from forgetless.compare import compare_report
from forgetless.files import write_atomic, write_json

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results" / "prose-code"
ORDER = ("naive", "ewc", "online-ewc", "l2", "si", "mas", "joint")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from", dest="runs", type=Path, help="the OUT folder of scripts/prose-code.sh")
    args = parser.parse_args()
    if args.runs:
        RESULTS.mkdir(parents=True, exist_ok=True)
        for result in sorted(args.runs.glob("*/result.json")):
            write_json(RESULTS / f"{result.parent.name}.json", json.loads(result.read_text()))
            print(f"copied {result}")
    found = {p.stem: json.loads(p.read_text()) for p in RESULTS.glob("*.json")}
    results = {m: found[m] for m in sorted(found, key=lambda m: (ORDER + (m,)).index(m))}
    if not results:
        raise SystemExit(f"no results in {RESULTS}: run scripts/prose-code.sh OUT, then this with --from OUT")
    write_atomic(RESULTS / "table.md", compare_report(results))
    print(f"wrote {RESULTS / 'table.md'} ({', '.join(results)})")


if __name__ == "__main__":
    main()
