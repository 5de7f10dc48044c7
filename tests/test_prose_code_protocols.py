"""scripts/prose_code_protocols.py: domain A trained once and reused, frozen parameters stay put, and the
committed table is the one its results file builds."""
from __future__ import annotations

import importlib.util
import json
import math
import shutil
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "results" / "prose-code" / "protocols"


def _script():
    spec = importlib.util.spec_from_file_location("prose_code_protocols", ROOT / "scripts" / "prose_code_protocols.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_domain_a_is_trained_once_and_every_variant_of_b_starts_from_it(tmp_path):
    script, out = _script(), tmp_path / "runs.jsonl"
    base = ["run", "--a-iters", "3", "--b-iters", "2", "--cache", str(tmp_path / "cache"), "--out", str(out)]
    script.main(base + ["--method", "ewc", "--strength", "1"])
    script.main(base + ["--method", "joint"])
    ewc, joint = (json.loads(line) for line in out.read_text().splitlines())
    assert len(list((tmp_path / "cache").iterdir())) == 1
    assert ewc["after_a"] == joint["after_a"]
    assert all(math.isfinite(v) for r in (ewc, joint) for v in r["after_b"].values())
    assert ewc["after_b"] != joint["after_b"]
    assert (ewc["method"], ewc["strength"], ewc["b_iters"]) == ("ewc", 1.0, 2)


def test_the_committed_table_is_the_one_its_results_build(tmp_path):
    shutil.copy(COMMITTED / "results.jsonl", tmp_path / "results.jsonl")
    _script().table(tmp_path / "results.jsonl")
    assert (tmp_path / "table.md").read_text() == (COMMITTED / "table.md").read_text()
    assert (tmp_path / "tradeoff.png").stat().st_size > 10_000


def test_frozen_parameters_stay_where_domain_a_left_them(tmp_path, monkeypatch):
    script, seen = _script(), []
    evaluate = script.losses
    monkeypatch.setattr(script, "losses", lambda model, bench: seen.append(
        {k: v.clone() for k, v in model.state_dict().items()}) or evaluate(model, bench))
    args = ["run", "--a-iters", "2", "--b-iters", "2", "--cache", str(tmp_path / "c"), "--out", str(tmp_path / "r")]
    script.main(args + ["--freeze", r"^blocks\."])
    after_a, after_b = seen
    moved = {k for k in after_a if not torch.equal(after_a[k], after_b[k])}
    assert moved and all(not k.startswith("blocks.") for k in moved)
    assert "head.weight" in moved
    with pytest.raises(SystemExit, match="freezes every parameter"):
        script.main(args + ["--freeze", "."])
