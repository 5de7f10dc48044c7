"""forgetless sweep: grid expansion, strictness, parallel runs, resume, summary and plot."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from forgetless import runs, sweep
from forgetless.cli import main
from forgetless.executors import local
from forgetless.run_config import RunConfig
from forgetless.sweep import SweepError, expand, parse_sweep

from synthetic import other_data_allowed, write_mnist_dir  # noqa: F401  (other data, said so)

SWEEP_TOML = """\
description = "tiny test sweep"

[base]
benchmark = "seed-split"
scenario = "domain"
hidden = [8]
iterations = 10
batch_size = 64

[grid]
method = ["naive", "ewc"]
seeds = [0, 1]

[grid.strength_by_method]
ewc = [1, 100]
"""


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return write_mnist_dir(tmp_path_factory.mktemp("mnist"), n_train=600, n_test=200)


@pytest.fixture(scope="module")
def config_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "tiny.toml"
    path.write_text(SWEEP_TOML)
    return path


def _sweep(config_file, data_dir, out, *extra) -> int:
    return main(["sweep", "--config", str(config_file), "--data-dir", str(data_dir), "--out", str(out), *extra])


@pytest.fixture(scope="module")
def swept(config_file, data_dir, tmp_path_factory) -> Path:
    """The tiny sweep, run once with two worker processes."""
    out = tmp_path_factory.mktemp("sweep") / "out"
    assert _sweep(config_file, data_dir, out, "--workers", "2") == 0
    return out


def _results(out: Path) -> dict[str, dict]:
    return {p.name: json.loads((p / "result.json").read_text()) for p in (out / "runs").iterdir()
            if (p / "result.json").exists()}


def _mtimes(out: Path) -> dict[str, int]:
    return {p.name: (p / "result.json").stat().st_mtime_ns for p in (out / "runs").iterdir()
            if (p / "result.json").exists()}


# --- grid expansion -----------------------------------------------------------------------------

def test_expansion_counts_and_methods_without_strength_run_once():
    spec = parse_sweep({"base": {"iterations": 5},
                        "grid": {"method": ["naive", "joint", "l2", "ewc", "si"], "strength": [1, 10, 100],
                                 "seeds": [0, 1, 2]}})
    points = expand(spec)
    by_method = {m: [p for p in points if p.config.method == m] for m in spec.grid["method"]}
    assert {m: len(ps) for m, ps in by_method.items()} == {"naive": 3, "joint": 3, "l2": 9, "ewc": 9, "si": 9}
    assert len(points) == 33 and len({p.name for p in points}) == 33
    assert all(len(p.config.seeds) == 1 and p.config.iterations == 5 for p in points)
    assert {p.config.resolved_strength for p in by_method["naive"]} == {None}
    assert sorted({p.config.strength for p in by_method["ewc"]}) == [1.0, 10.0, 100.0]
    assert [p.config.seeds[0] for p in by_method["si"][:3]] == [0, 1, 2]  # seeds innermost


def test_strength_by_method_and_method_specific_axes():
    spec = parse_sweep({"grid": {"method": ["naive", "l2", "ewc", "online-ewc", "si"], "strength": [1, 2],
                                 "decay": [0.5, 1.0], "damping": [0.1, 0.01],
                                 "strength_by_method": {"ewc": [10, 100, 1000], "si": [0.5]}}})
    count: dict[str, int] = {}
    strengths: dict[str, set] = {}
    for p in expand(spec):
        count[p.config.method] = count.get(p.config.method, 0) + 1
        strengths.setdefault(p.config.method, set()).add(p.config.resolved_strength)
    # naive once; l2: 2 strengths; ewc: its own 3; online-ewc: 2 strengths × 2 decays; si: 1 strength × 2 dampings
    assert count == {"naive": 1, "l2": 2, "ewc": 3, "online-ewc": 4, "si": 2}
    assert strengths["ewc"] == {10.0, 100.0, 1000.0} and strengths["si"] == {0.5} and strengths["l2"] == {1.0, 2.0}


def test_list_valued_fields_take_lists_of_lists_and_seeds_in_base_split():
    spec = parse_sweep({"base": {"method": "naive", "seeds": [3, 4]}, "grid": {"hidden": [[8], [16, 16]]}})
    points = expand(spec)
    assert [(p.config.hidden, p.config.seeds) for p in points] == [((8,), (3,)), ((8,), (4,)),
                                                                  ((16, 16), (3,)), ((16, 16), (4,))]


def test_point_names_are_stable_and_follow_config_and_data():
    spec = parse_sweep({"grid": {"method": ["ewc"], "strength": [10]}})
    first, again = expand(spec, {"mnist": "aaa"}), expand(spec, {"mnist": "aaa"})
    assert [p.name for p in first] == [p.name for p in again]
    assert first[0].name.startswith("ewc-s10-seed0-")
    assert expand(spec, {"mnist": "bbb"})[0].name != first[0].name


@pytest.mark.parametrize(
    "content, message",
    [
        ({"grids": {}}, "unknown key in sweep config: grids; valid keys: base, description, grid"),
        ({"base": {"learning_rate": 0.1}}, "unknown key in sweep config [base]: learning_rate; valid keys: batch_size"),
        ({"grid": {"lambda": [1]}}, "unknown key in sweep config [grid]: lambda; valid keys: batch_size"),
        ({"grid": {"method": "ewc"}}, "grid.method must be a non-empty list"),
        ({"grid": {"seeds": []}}, "grid.seeds must be a non-empty list"),
        ({"base": {"method": "ewc"}, "grid": {"method": ["si"]}}, "method set in both [base] and [grid]"),
        ({"grid": {"method": ["naive", "ewc"], "strength_by_method": {"naive": [1]}}},
         "'naive' is not a method with a strength; valid: l2, ewc, ewc-kfac, online-ewc, online-ewc-kfac, si, mas"),
        ({"grid": {"method": ["ewc"], "strength_by_method": {"si": [1]}}}, "si is not one of the sweep's methods"),
        ({"grid": {"method": ["naive"], "strength": [1, 10]}}, "grid.strength is used by none of the sweep's methods"),
        ({"grid": {"method": ["ewc", "si"], "decay": [0.9, 1.0]}}, "grid.decay is used by none"),
        ({"grid": {"method": ["ewc"], "strength": [1], "strength_by_method": {"ewc": [2]}}},
         "every such method has its own list"),
        ({"grid": {"strength": [1, 1.0]}}, "grid.strength repeats 1.0"),
        ({"grid": {"iterations": ["many"]}}, "grid.iterations: expected int"),
        ({"grid": {"hidden": [16, 32]}}, "each value of hidden is itself a list"),
        ({"grid": {"strength": ["auto"]}}, "'auto' is not supported in a sweep"),
        ({"base": {"strength": "auto"}}, "'auto' is not supported in a sweep"),
        ({"description": 3}, "description must be a string"),
    ],
)
def test_bad_sweep_files_are_refused_with_the_valid_choices(content, message):
    with pytest.raises(SweepError) as err:
        parse_sweep(content)
    assert message in str(err.value)


@pytest.mark.parametrize(
    "content, message",
    [
        ({"grid": {"method": ["ewc", "magic"]}}, "grid point magic seed 0: unknown method 'magic'; valid: naive"),
        ({"base": {"benchmark": "seed-split"}, "grid": {"scenario": ["domain", "class"], "method": ["naive"]}},
         "grid point naive scenario=class seed 0: seed-split has only the domain scenario"),
        ({"grid": {"strength": [1, -1]}}, "grid point ewc strength=-1 seed 0: strength must be a finite number >= 0"),
    ],
)
def test_every_point_is_validated_before_running(content, message):
    with pytest.raises(SweepError, match="grid point") as err:
        expand(parse_sweep(content))
    assert message in str(err.value)


def test_cli_refuses_a_bad_sweep_in_one_line_and_runs_nothing(data_dir, tmp_path, capsys):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[base]\nbenchmark = "seed-split"\n[grid]\nscenario = ["domain", "task"]\nmethod = ["naive"]\n')
    out = tmp_path / "out"
    assert _sweep(cfg, data_dir, out) == 2
    err = capsys.readouterr().err
    assert "seed-split has only the domain scenario" in err and "Traceback" not in err
    assert not (out / "runs").exists() and not (out / "sweep.json").exists()
    cfg.write_text('[grid]\nmethod = ["naive"]\nlearning_rate = [0.1]\n')
    assert _sweep(cfg, data_dir, out) == 2
    assert "unknown key" in capsys.readouterr().err and "learning_rate" in cfg.read_text()


def test_yaml_sweep_is_read(tmp_path):
    cfg = tmp_path / "s.yaml"
    cfg.write_text("base:\n  iterations: 5\ngrid:\n  method: [naive, si]\n  strength_by_method:\n    si: [0.1, 1]\n")
    assert [p.label for p in expand(sweep.read_sweep(cfg))] == ["naive seed 0", "si strength=0.1 seed 0",
                                                                  "si strength=1 seed 0"]


# --- summary (oracle: hand-made accuracy matrices) -----------------------------------------------

def test_summary_rows_are_mean_and_std_over_seeds_of_the_last_row():
    spec = parse_sweep({"base": {"benchmark": "split-mnist", "scenario": "task"},
                        "grid": {"method": ["ewc"], "strength": [1, 2], "seeds": [0, 1, 2]}})
    points = expand(spec)
    R = {0: [[0.9, 0.1, 0.0], [0.8, 0.9, 0.1], [0.6, 0.7, 1.0]],
         1: [[0.9, 0.1, 0.0], [0.8, 0.9, 0.1], [0.8, 0.5, 0.9]],
         2: [[0.9, 0.1, 0.0], [0.8, 0.9, 0.1], [0.7, 0.9, 0.8]]}
    results = {p.name: {"seeds": [{"accuracy_matrix": R[p.config.seeds[0]]}]} for p in points
               if not (p.config.strength == 2.0 and p.config.seeds[0] == 2)}  # one run missing
    plan = sweep.Plan(Path("unused"), points, {}, {"mnist": {"source": "toy", "fingerprint": "0"}})
    summary = sweep.summarize(plan, results, spec)
    first, second = summary["rows"]
    assert (first["method"], first["strength"], first["seeds"]) == ("ewc", 1.0, [0, 1, 2])
    old = [np.mean(R[s][-1][:-1]) for s in (0, 1, 2)]
    assert first["old_tasks_accuracy"]["mean"] == pytest.approx(np.mean(old))
    assert first["old_tasks_accuracy"]["std"] == pytest.approx(np.std(old, ddof=1))
    assert first["newest_task_accuracy"]["mean"] == pytest.approx(0.9)
    average = [np.mean(R[s][-1]) for s in (0, 1, 2)]
    assert first["average_accuracy"]["mean"] == pytest.approx(np.mean(average))
    sem = np.std(average, ddof=1) / np.sqrt(3)
    assert first["average_accuracy"]["sem"] == pytest.approx(sem) and first["average_accuracy"]["n"] == 3
    # beside the published split MNIST Task-IL EWC cell, 98.64 ± 0.22 (their Table 4), in combined SEs
    paper = first["published"]
    assert paper["published_mean"] == 98.64 and paper["difference"] == pytest.approx(100 * np.mean(average) - 98.64)
    assert paper["z"] == pytest.approx(paper["difference"] / np.hypot(100 * sem, 0.22))
    assert second["seeds"] == [0, 1] and second["missing_seeds"] == [2]
    assert second["newest_task_accuracy"]["mean"] == pytest.approx(0.95)
    assert len(summary["missing"]) == 1
    table = sweep.sweep_table(summary)
    assert "| split-mnist | task | ewc | 2 | 0,1 (missing 2) |" in table
    assert f"{np.mean(average):.4f} ± {sem:.4f} (n=3)" in table and "98.64 ± 0.22 (20 runs)" in table
    assert f"{paper['difference']:+.2f} ({paper['z']:+.2f} SE)" in table
    assert "missing" in sweep.sweep_report(summary)


# --- end to end --------------------------------------------------------------------------------

def test_sweep_writes_runs_table_and_plot(swept):
    assert (swept / "stability_plasticity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    results = _results(swept)
    assert len(results) == 6 and not any((p / runs.INCOMPLETE).exists() for p in (swept / "runs").iterdir())
    summary = json.loads((swept / "sweep.json").read_text())
    assert [(r["method"], r["strength"], r["seeds"]) for r in summary["rows"]] == [
        ("naive", None, [0, 1]), ("ewc", 1.0, [0, 1]), ("ewc", 100.0, [0, 1])]
    assert summary["missing"] == [] and len(summary["points"]) == 6
    for row in summary["rows"]:
        # oracle: the run folders' own accuracy matrices
        newest = [results[name]["seeds"][0]["accuracy_matrix"][-1][-1] for name in row["runs"]]
        old = [results[name]["seeds"][0]["accuracy_matrix"][-1][0] for name in row["runs"]]
        assert row["newest_task_accuracy"]["mean"] == pytest.approx(np.mean(newest))
        assert row["old_tasks_accuracy"]["std"] == pytest.approx(np.std(old, ddof=1))
        for name in row["runs"]:
            assert results[name]["config"]["method"] == row["method"]
            assert results[name]["config"]["strength"] == row["strength"]
    report = (swept / "sweep.md").read_text()
    assert "tiny test sweep" in report and "| seed-split | domain | naive | – | 0,1 |" in report
    assert "| seed-split | domain | ewc | 100 | 0,1 |" in report and "stability_plasticity.png" in report
    assert "published" not in report  # no paper has the seed split: no columns for it


def test_resume_reruns_only_unfinished_points_and_one_worker_gives_identical_results(
        swept, config_file, data_dir, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(swept, out)  # copy2: mtimes are kept
    before = _results(out)
    deleted, interrupted = sorted(before)[0], sorted(before)[3]
    (out / "runs" / deleted / "result.json").unlink()
    (out / "runs" / interrupted / "result.json").unlink()
    (out / "runs" / interrupted / runs.INCOMPLETE).write_text("interrupted\n")
    stray = out / "runs" / "from-an-older-grid"
    stray.mkdir()
    (stray / "result.json").write_text("{}")
    mtimes = _mtimes(out)
    capsys.readouterr()

    assert _sweep(config_file, data_dir, out, "--workers", "1") == 0
    assert "6 runs: 4 finished earlier (reused), 2 to run" in capsys.readouterr().out
    after, new_mtimes = _results(out), _mtimes(out)
    assert set(after) == set(before) | {stray.name}  # nothing lost, nothing duplicated
    assert {n for n in new_mtimes if new_mtimes[n] != mtimes.get(n)} == {deleted, interrupted}
    assert not (out / "runs" / interrupted / runs.INCOMPLETE).exists()
    for name in (deleted, interrupted):  # re-run in 1 worker: bit-identical to the 2-worker run
        assert after[name]["seeds"][0]["accuracy_matrix"] == before[name]["seeds"][0]["accuracy_matrix"]
    summary, original = (json.loads((d / "sweep.json").read_text()) for d in (out, swept))
    assert summary["rows"] == original["rows"]
    assert sorted(n for r in summary["rows"] for n in r["runs"]) == sorted(before)

    # complete: a third run starts no worker and rewrites nothing
    assert _sweep(config_file, data_dir, out) == 0
    assert "6 runs: 6 finished earlier (reused), 0 to run" in capsys.readouterr().out
    assert _mtimes(out) == new_mtimes


def test_one_and_two_workers_give_identical_sweeps(swept, config_file, data_dir, tmp_path):
    out = tmp_path / "one"
    assert _sweep(config_file, data_dir, out, "--workers", "1") == 0
    one, two = _results(out), _results(swept)
    assert set(one) == set(two)
    for name in one:
        assert one[name]["seeds"][0]["accuracy_matrix"] == two[name]["seeds"][0]["accuracy_matrix"]
        assert one[name]["seeds"][0]["valid_matrix"] == two[name]["seeds"][0]["valid_matrix"]
    assert json.loads((out / "sweep.json").read_text())["rows"] == json.loads((swept / "sweep.json").read_text())["rows"]


def test_a_finished_run_of_another_config_is_never_overwritten(swept, config_file, data_dir, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(swept, out)
    name = sorted(_results(out))[0]
    path = out / "runs" / name / "result.json"
    result = json.loads(path.read_text())
    result["config"]["lr"] = 0.5
    path.write_text(json.dumps(result))
    assert _sweep(config_file, data_dir, out) == 2
    assert "holds a finished run of another config" in capsys.readouterr().err
    assert json.loads(path.read_text())["config"]["lr"] == 0.5


def test_dry_run_lists_points_and_runs_nothing(swept, config_file, data_dir, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(swept, out)
    shutil.rmtree(out / "runs" / sorted(_results(out))[0])
    mtimes = _mtimes(out)
    assert _sweep(config_file, data_dir, out, "--dry-run") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "6 runs: 5 finished earlier (reused), 1 to run"
    assert sum(line.strip().startswith("todo") for line in lines) == 1
    assert _mtimes(out) == mtimes


def test_one_sweep_at_a_time_per_output_folder(tmp_path):
    with sweep.locked(tmp_path):
        with pytest.raises(runs.FolderError, match="another sweep is running"):
            with sweep.locked(tmp_path):
                pass
    with sweep.locked(tmp_path):  # released
        pass


def test_ray_address_needs_the_ray_executor(config_file, data_dir, tmp_path, capsys):
    assert _sweep(config_file, data_dir, tmp_path / "o", "--ray-address", "auto") == 2
    assert "--ray-address needs --executor ray" in capsys.readouterr().err


def test_importing_forgetless_never_imports_ray():
    code = ("import sys, forgetless, forgetless.sweep, forgetless.executors, forgetless.executors.ray_executor, "
            "forgetless.cli; forgetless.cli.build_parser(); print('ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_run_settings_are_the_sweep_keys():
    # The sweep reads the run settings; a new RunConfig field, hyperparameter or benchmark option is
    # a new valid sweep key automatically, expanded only for the runs that take it.
    import dataclasses

    from forgetless.run_config import setting_names

    assert {f.name for f in dataclasses.fields(RunConfig)} - {"options", "given"} <= set(setting_names())
    assert {"decay", "damping", "estimator", "fisher_samples", "importance_samples", "hidden", "n_tasks",
            "decay_in_penalty", "task_order", "padding", "permute_first"} <= set(setting_names())
    spec = parse_sweep({"grid": {"benchmark": ["split-mnist", "permuted-mnist"], "n_tasks": [2, 3], "method": ["naive"]}})
    assert [(p.config.benchmark, p.config.resolved().get("n_tasks")) for p in expand(spec)] == [
        ("split-mnist", None), ("permuted-mnist", 2), ("permuted-mnist", 3)]


def test_local_executor_reports_a_failing_job_and_finishes_the_others():
    import math

    outcomes = sorted(local.run_local(math.sqrt, [(4.0,), (-1.0,), (9.0,)], workers=2), key=lambda o: o[0])
    assert [(i, r) for i, r, e in outcomes] == [(0, 2.0), (1, None), (2, 3.0)]
    assert isinstance(outcomes[1][2], ValueError)


def test_a_failed_run_is_reported_missing_and_retried_next_time(config_file, data_dir, tmp_path, monkeypatch, capsys):
    def in_process(fn, jobs, *, workers):  # the local executor without processes; job 1 fails
        for i, job in enumerate(jobs):
            yield (i, None, RuntimeError("the loss became NaN")) if i == 1 else (i, fn(*job), None)

    cfg = tmp_path / "naive.toml"
    cfg.write_text(config_file.read_text().replace('["naive", "ewc"]', '["naive"]').split("[grid.strength_by")[0])
    out = tmp_path / "out"
    monkeypatch.setattr(local, "run_local", in_process)
    assert _sweep(cfg, data_dir, out) == 1
    captured = capsys.readouterr()
    assert "failed: naive seed 1: RuntimeError: the loss became NaN" in captured.err
    assert "1 of 2 runs failed" in captured.err and "| naive | – | 0 (missing 1) |" in captured.out
    assert "1 of 2 runs are missing" in (out / "sweep.md").read_text()
    assert len(json.loads((out / "sweep.json").read_text())["missing"]) == 1

    monkeypatch.setattr(local, "run_local", lambda fn, jobs, *, workers: ((i, fn(*j), None) for i, j in enumerate(jobs)))
    assert _sweep(cfg, data_dir, out) == 0
    assert "2 runs: 1 finished earlier (reused), 1 to run" in capsys.readouterr().out
    assert json.loads((out / "sweep.json").read_text())["missing"] == []


def test_ray_executor_without_ray_says_how_to_install_it(config_file, data_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if the extra were not installed
    assert _sweep(config_file, data_dir, tmp_path / "o", "--executor", "ray") == 2
    assert "--executor ray needs Ray: pip install 'forgetless[ray]'" in capsys.readouterr().err
