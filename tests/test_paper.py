"""Our runs beside the published table, cell by cell (forgetless.paper and scripts/vandeven2019_table.py).
Oracles: hand-made accuracy matrices whose means, SEMs and differences are worked out here."""
import importlib.util
import json
import math
from pathlib import Path

import pytest

from forgetless.paper import beyond, cells, compact, compact_json, read_runs, summary_of, table_markdown

ROOT = Path(__file__).resolve().parents[1]
TASK = {"benchmark": "split-mnist", "scenario": "task", "strength_grid": None, "iterations": 2000}


def _result(method, strength, seeds, last_rows):
    """A result.json whose seed s ends with the accuracy row last_rows[s] (two tasks)."""
    config = TASK | {"method": method, "strength": strength, "seeds": list(seeds)}
    return {"config": config, "seeds": [{"seed": s, "accuracy_matrix": [[1.0, 0.5], last_rows[s]]} for s in seeds]}


def _write(folder: Path, result) -> None:
    folder.mkdir(parents=True)
    (folder / "result.json").write_text(json.dumps(result))


def test_read_runs_reads_sweep_compare_run_folders_and_compact_copies(tmp_path):
    rows = {1: [0.9, 0.8], 2: [0.7, 0.8], 3: [0.9, 0.9]}
    sweep = tmp_path / "sweep"
    for s in (1, 2):
        _write(sweep / "runs" / f"ewc-seed{s}", _result("ewc", 1e7, [s], rows))
    (sweep / "runs" / "ewc-seed3").mkdir()          # unfinished: config.json and INCOMPLETE only
    (sweep / "runs" / "ewc-seed3" / "INCOMPLETE").write_text("")
    assert sorted(c["seeds"][0] for c, _, _ in read_runs(sweep)) == [1, 2]
    compare = tmp_path / "compare"
    _write(compare / "naive", _result("naive", None, [1, 2, 3], rows))
    _write(compare / "si", _result("si", 50.0, [1, 2], rows))
    entries = read_runs(compare)
    assert sorted((c["method"], c["seeds"][0]) for c, _, _ in entries) == [
        ("naive", 1), ("naive", 2), ("naive", 3), ("si", 1), ("si", 2)]
    assert [R for c, R, _ in entries if c["method"] == "naive" and c["seeds"] == [2]] == [[[1.0, 0.5], [0.7, 0.8]]]
    assert len(read_runs(compare / "si")) == 2                     # a run folder
    copy = tmp_path / "copy.json"
    copy.write_text(compact_json(compact(entries, source=str(compare))))
    assert sorted(map(str, read_runs(copy))) == sorted(map(str, entries))  # the compact copy loses nothing a table needs
    with pytest.raises(ValueError, match="no such file or folder"):
        read_runs(tmp_path / "nowhere")


def test_cells_measure_each_protocol_against_the_published_cell():
    # their protocol: EWC over 3 seeds, average accuracy 0.99, 0.98, 0.97 -> 98.00 ± 0.577 (SEM in points)
    theirs = [(TASK | {"method": "ewc", "strength": 1e7, "seeds": [s]}, [[1.0, 0.5], [a, a]], f"s{s}")
              for s, a in ((1, 0.99), (2, 0.98), (3, 0.97))]
    ours = [(TASK | {"method": "ewc", "strength": 1e5, "seeds": [0]}, [[1.0, 0.5], [0.995, 0.995]], "s0")]
    rows = cells({"their protocol": theirs, "our protocol": ours})
    assert len(rows) == 1 and rows[0]["published"] == {"mean": 98.64, "sem": 0.22, "runs": 20}
    measured = rows[0]["protocols"]["their protocol"]
    sem = 1.0 / math.sqrt(3)                                     # std of (99, 98, 97) is 1 point
    assert measured["average_accuracy"]["mean"] == pytest.approx(0.98)
    assert measured["published"]["z"] == pytest.approx(-0.64 / math.hypot(sem, 0.22))
    single = rows[0]["protocols"]["our protocol"]["published"]
    assert single["z"] is None and single["note"] == "our SEM unknown (1 seed)"
    line = table_markdown(rows, ["their protocol", "our protocol"]).splitlines()[2]
    assert line == (f"| split-mnist | task | ewc | 98.64 ± 0.22 | 98.00 ± 0.58 (n=3, strength 1e+07) | "
                    f"-0.64 ({-0.64 / math.hypot(sem, 0.22):+.2f} SE) | 99.50 (n=1, strength 100000) | "
                    "+0.86 (our SEM unknown (1 seed)) |")
    plain = summary_of(rows)[0]
    assert plain["their protocol"]["seeds"] == [1, 2, 3] and plain["our protocol"]["strength"] == 1e5
    json.dumps(plain)  # plain JSON


def test_a_protocol_with_two_configurations_of_one_cell_is_refused():
    two = [(TASK | {"method": "ewc", "strength": s, "seeds": [0]}, [[1.0, 0.5], [0.9, 0.9]], str(s)) for s in (10.0, 100.0)]
    with pytest.raises(ValueError, match="two configurations of split-mnist/task/ewc"):
        cells({"ours": two})


def test_cells_the_paper_does_not_have_are_left_out():
    seed_split = [({"benchmark": "seed-split", "scenario": "domain", "method": "ewc", "strength": 1.0, "seeds": [0]},
                   [[1.0, 0.5], [0.9, 0.9]], "x")]
    assert cells({"ours": seed_split}) == []


def _script():
    spec = importlib.util.spec_from_file_location("vandeven2019_table", ROOT / "scripts" / "vandeven2019_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_script_copies_finished_runs_and_never_drops_a_method(tmp_path, monkeypatch, capsys):
    script = _script()
    monkeypatch.setattr(script, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(script, "ROOT", tmp_path)
    runs_dir = tmp_path / "runs"
    rows = {1: [0.9, 0.8], 2: [0.7, 0.8]}
    for method, strength in (("naive", None), ("ewc", 1e7)):
        for s in (1, 2):
            _write(runs_dir / "vandeven2019-theirs-split-mnist-task" / "runs" / f"{method}-{s}", _result(method, strength, [s], rows))
    _write(runs_dir / "vandeven2019-ours-split-mnist-task" / "naive", _result("naive", None, [1, 2], rows))
    assert script.main(["--from", str(runs_dir)]) == 0
    theirs = json.loads((tmp_path / "results" / "theirs" / "split-mnist-task.json").read_text())
    assert len(theirs["runs"]) == 4 and "configs/vandeven2019/theirs/split-mnist-task.toml" in theirs["command"]
    table = (tmp_path / "results" / "table.md").read_text()
    assert "| split-mnist | task | ewc | 98.64 ± 0.22 | 80.00 ± 5.00 (n=2, strength 1e+07) |" in table
    assert json.loads((tmp_path / "results" / "table.json").read_text())["rows"][0]["method"] == "naive"
    # ours now holds naive and si; a compare folder with naive alone does not replace it
    _write(runs_dir / "vandeven2019-ours-split-mnist-task" / "si", _result("si", 1.0, [1, 2], rows))
    assert script.main(["--from", str(runs_dir)]) == 0
    (runs_dir / "vandeven2019-ours-split-mnist-task" / "si" / "result.json").unlink()
    capsys.readouterr()
    assert script.main(["--from", str(runs_dir)]) == 0
    assert "ours/split-mnist-task.json kept" in capsys.readouterr().out
    kept = json.loads((tmp_path / "results" / "ours" / "split-mnist-task.json").read_text())
    assert {run["config"]["method"] for run in kept["runs"]} == {"naive", "si"}
    assert script.main(["--from", str(tmp_path / "nowhere")]) == 2


def test_the_committed_table_is_what_the_committed_runs_give():
    text, _ = _script().build()
    assert (ROOT / "results" / "vandeven2019" / "table.md").read_text() == text


def test_every_cell_beyond_2_se_in_the_committed_table_is_explained_in_the_readme():
    script = _script()
    _, rows = script.build()
    readme = (ROOT / "results" / "vandeven2019" / "README.md").read_text()
    assert f"## {script.GAPS}" in readme
    section = readme.split(f"## {script.GAPS}")[1].split("\n## ")[0]
    for cell in beyond(rows):
        protocol, name = cell.split(" (")[0].split(": ")
        assert f"**{protocol}: {name}**" in section, f"{cell}: not in README.md, {script.GAPS!r}"


def test_the_kfac_rows_are_set_beside_our_diagonal_rows_of_the_same_cell(tmp_path, monkeypatch):
    script = _script()
    monkeypatch.setattr(script, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(script, "ROOT", tmp_path)
    runs_dir = tmp_path / "runs"
    diagonal = {0: [0.6, 0.6], 1: [0.7, 0.7], 2: [0.8, 0.8]}   # average 0.7 ± 0.0577 (SEM)
    kfac = {0: [0.8, 0.8], 1: [0.9, 0.9], 2: [1.0, 1.0]}       # average 0.9 ± 0.0577
    _write(runs_dir / "vandeven2019-ours-split-mnist-domain" / "ewc", _result("ewc", 100.0, [0, 1, 2], diagonal)
           | {"config": TASK | {"scenario": "domain", "method": "ewc", "strength": 100.0, "seeds": [0, 1, 2]}})
    _write(runs_dir / "vandeven2019-kfac-split-mnist-domain" / "ewc-kfac", _result("ewc-kfac", 31.6, [0, 1], kfac)
           | {"config": TASK | {"scenario": "domain", "method": "ewc-kfac", "strength": 31.6, "seeds": [0, 1]}})
    assert script.main(["--from", str(runs_dir)]) == 0
    table = (tmp_path / "results" / "table.md").read_text()
    # K-FAC seeds 0-1: 0.85 ± 0.05; diagonal 0.7 ± 0.1/√3; +15 points / √(5² + 5.7735²) = +1.96 SE; seeds differ
    assert ("| split-mnist | domain | ewc-kfac | 85.00 ± 5.00 (n=2, strength 31.6) | ewc: 70.00 ± 5.77 (n=3, "
            "strength 100) | +15.00 (+1.96 SE) | no |") in table
