"""forgetless sweep --executor ray: the same sweep on a (here: local, really started) Ray.

Needs the optional extra `forgetless[ray]`; skipped only where Ray is not installed.
"""
import json
import statistics
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from forgetless import sweep  # noqa: E402
from forgetless.cli import main  # noqa: E402
from forgetless.executors.ray_executor import run_ray  # noqa: E402

from synthetic import other_data_allowed, write_mnist_dir  # noqa: E402,F401  (other data, said so)

SWEEP_TOML = """\
[base]
benchmark = "seed-split"
scenario = "domain"
hidden = [8]
iterations = 10
batch_size = 64

[grid]
method = ["naive", "si"]
seeds = [0, 1]

[grid.strength_by_method]
si = [1]
"""


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("ray")
    config = root / "tiny.toml"
    config.write_text(SWEEP_TOML)
    return config, write_mnist_dir(root / "mnist", n_train=600, n_test=200)


def _sweep(setup, out: Path, *extra) -> int:
    config, data_dir = setup
    return main(["sweep", "--config", str(config), "--data-dir", str(data_dir), "--out", str(out), *extra])


def _results(out: Path) -> dict[str, dict]:
    return {p.name: json.loads((p / "result.json").read_text()) for p in (out / "runs").iterdir()
            if (p / "result.json").exists()}


def test_ray_sweep_writes_the_same_outputs_as_local(local_ray, setup, tmp_path, capsys):
    out = tmp_path / "ray"
    assert _sweep(setup, out, "--executor", "ray") == 0
    assert ray.is_initialized()  # a Ray the caller started is left running
    for name in ("sweep.json", "sweep.md", "stability_plasticity.png"):
        assert (out / name).is_file(), name
    on_ray = _results(out)
    summary = json.loads((out / "sweep.json").read_text())
    assert len(on_ray) == 4 and sorted(on_ray) == sorted(p["name"] for p in summary["points"])
    assert [(r["method"], r["seeds"]) for r in summary["rows"]] == [("naive", [0, 1]), ("si", [0, 1])]
    # the local executor runs the same function: here in-process, for speed
    fingerprint = summary["data"]["mnist"]["fingerprint"]
    for point in summary["points"]:
        config = sweep.build_config(sweep.RunConfig, point["config"])
        local = sweep.run_point(config, str(tmp_path / "local" / point["name"]), str(setup[1]), fingerprint)
        assert on_ray[point["name"]]["seeds"][0]["accuracy_matrix"] == local["seeds"][0]["accuracy_matrix"]

    # resume on Ray too: only the removed run is re-run
    gone = sorted(on_ray)[1]
    (out / "runs" / gone / "result.json").unlink()
    mtimes = {n: (out / "runs" / n / "result.json").stat().st_mtime_ns for n in on_ray if n != gone}
    capsys.readouterr()
    assert _sweep(setup, out, "--executor", "ray") == 0
    assert "4 runs: 3 finished earlier (reused), 1 to run" in capsys.readouterr().out
    assert {n: (out / "runs" / n / "result.json").stat().st_mtime_ns for n in mtimes} == mtimes
    assert _results(out)[gone]["seeds"][0]["accuracy_matrix"] == on_ray[gone]["seeds"][0]["accuracy_matrix"]
    assert json.loads((out / "sweep.json").read_text())["rows"] == summary["rows"]


def test_a_failing_ray_task_is_reported_and_the_others_finish(local_ray):
    jobs = [([1.0, 3.0],), ([],), ([9.0],)]
    outcomes = sorted(run_ray(statistics.fmean, jobs, workers=2), key=lambda o: o[0])
    assert [(i, r) for i, r, e in outcomes] == [(0, 2.0), (1, None), (2, 9.0)]
    assert isinstance(outcomes[1][2], statistics.StatisticsError)
