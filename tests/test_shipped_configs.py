"""The config files shipped under configs/ must stay valid as the code changes."""
import json
from pathlib import Path

import numpy as np
import pytest

from forgetless.benchmarks import make_benchmark
from forgetless.config import read_config_file
from forgetless.data import ImageData
from forgetless.methods import METHODS
from forgetless.run_config import RunConfig, run_config, run_configs
from forgetless.sweep import expand, read_sweep

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
VANDEVEN = CONFIGS / "vandeven2019"

# Their protocol, cell by cell (results/vandeven2019/PROTOCOL.md): network, training, and per method
# the strength (λ, or c for SI) with online EWC's γ, from their param_values.py.
THEIR_TRAINING = {"split-mnist": ((400, 400), 1e-3, 2000), "permuted-mnist": ((1000, 1000), 1e-4, 5000)}
THEIR_CELLS = {
    ("split-mnist", "task"): {"ewc": 1e7, "online-ewc": 1e8, "si": 50.0, "gamma": 0.8},
    ("split-mnist", "domain"): {"ewc": 1e6, "online-ewc": 1e8, "si": 500.0, "gamma": 0.7},
    ("split-mnist", "class"): {"ewc": 1e8, "online-ewc": 1e9, "si": 0.5, "gamma": 0.8},
    ("permuted-mnist", "domain"): {"ewc": 500.0, "online-ewc": 1000.0, "si": 5.0, "gamma": 0.9},
}


def _toy_data() -> ImageData:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (60, 28, 28), dtype=np.uint8)
    labels = np.arange(60) % 10
    return ImageData(images, labels, images[:20], labels[:20], "toy")


def test_their_protocol_has_one_file_per_cell_of_their_table():
    assert sorted(p.stem for p in (VANDEVEN / "theirs").glob("*.toml")) == sorted(f"{b}-{s}" for b, s in THEIR_CELLS)


@pytest.mark.parametrize("path", sorted((VANDEVEN / "theirs").glob("*.toml")), ids=lambda p: p.stem)
def test_their_protocol_configs_hold_their_values(path):
    points = expand(read_sweep(path))
    config = points[0].config
    cell = THEIR_CELLS[config.benchmark, config.scenario]
    split = config.benchmark == "split-mnist"
    assert {p.config.method for p in points} == {"naive", "ewc", "online-ewc", "si"}
    assert sorted({p.config.seeds[0] for p in points}) == (list(range(1, 11)) if split else [1, 2, 3])
    assert len(points) == 4 * (10 if split else 3)  # one strength per method: one run per method and seed
    for point in points:
        c = point.config
        assert (c.hidden, c.lr, c.iterations) == THEIR_TRAINING[c.benchmark]
        assert c.batch_size == 128 and c.reset_optimizer is False and c.valid_fraction == 0.0
        # each method gets the settings it takes, and only those
        taken = {"ewc": {"estimator"}, "online-ewc": {"estimator", "decay", "decay_in_penalty"},
                 "si": {"damping"}, "naive": set()}[c.method]
        assert taken == set(c.options) & {"estimator", "decay", "decay_in_penalty", "damping"}
        if "estimator" in taken:
            assert c.estimator == "predicted"
        if c.method == "si":
            assert c.damping == 0.1
        if split:
            assert c.task_order == "vandeven2019"
        else:
            assert (c.n_tasks, c.padding, c.permute_first) == (10, 2, True)
        if c.method != "naive":
            assert c.strength == cell[c.method]
            reg = METHODS[c.method].build(c.strength, c.method_options(), c.seeds[0])
            assert reg.strength == cell[c.method]
            if c.method == "online-ewc":
                assert (reg.decay, reg.decay_in_penalty, reg.estimator) == (cell["gamma"], True, "predicted")


@pytest.mark.parametrize("path", sorted((VANDEVEN / "theirs").glob("*.toml")), ids=lambda p: p.stem)
def test_their_protocol_configs_build_their_benchmark(path):
    config = expand(read_sweep(path))[0].config
    options = config.benchmark_options() | ({"n_tasks": 2} if config.benchmark == "permuted-mnist" else {})
    bench = make_benchmark(config.benchmark, _toy_data(), scenario=config.scenario, seed=1, **options)
    assert all(len(task.valid) == 0 and len(task.train) > 0 for task in bench.tasks)
    if config.benchmark == "split-mnist":
        assert [t.name for t in bench.tasks] == ["4-6", "0-5", "3-9", "2-7", "8-1"]  # their seed 1
    else:
        assert bench.tasks[0].train.x.shape[1] == 1024


@pytest.mark.parametrize("path", sorted((VANDEVEN / "ours").glob("*.toml")), ids=lambda p: p.stem)
def test_our_protocol_configs_choose_strengths_on_validation(path):
    settings = read_config_file(path)
    assert settings["strength"] == "auto"  # chosen on validation data
    naive, ewc, online, si = run_configs(["naive", "ewc", "online-ewc", "si"], settings)
    config = ewc
    assert (config.hidden, config.lr, config.iterations) == THEIR_TRAINING[config.benchmark]
    assert config.batch_size == 128 and config.reset_optimizer is False  # their training, our choices:
    assert ewc.estimator == online.estimator == "exact" and config.valid_fraction == 0.1
    assert online.decay_in_penalty is False and online.decay == 1.0 and si.damping == 0.1
    assert all(c.auto for c in (ewc, online, si)) and naive.strength is None
    assert run_config(settings, {"method": "si", "scenario": "class"}).damping == 0.1  # the README's `run --method si`
    bench = make_benchmark(config.benchmark, _toy_data(), scenario="domain", seed=1,
                           **(config.benchmark_options() | ({"n_tasks": 2} if config.benchmark == "permuted-mnist" else {})))
    assert bench.tasks[0].train.x.shape[1] == 784 and all(len(t.valid) > 0 for t in bench.tasks)
    if config.benchmark == "split-mnist":
        assert [t.name for t in bench.tasks] == ["0-1", "2-3", "4-5", "6-7", "8-9"]


@pytest.mark.parametrize("path", sorted((CONFIGS / "sweeps").glob("*.toml")), ids=lambda p: p.stem)
def test_sweep_configs_expand_to_valid_runs(path):
    runs = expand(read_sweep(path))
    assert runs and all(isinstance(run.config, RunConfig) for run in runs)


def test_more_seeds_of_a_cell_run_exactly_that_cells_settings():
    more = expand(read_sweep(VANDEVEN / "more-seeds" / "permuted-mnist-domain-naive.toml"))
    theirs = [p for p in expand(read_sweep(VANDEVEN / "theirs" / "permuted-mnist-domain.toml")) if p.config.method == "naive"]
    assert sorted(p.config.seeds[0] for p in more) == [4, 5, 6]

    def settings(point):
        return {k: v for k, v in point.config.resolved().items() if k != "seeds"}
    assert {json.dumps(settings(p), sort_keys=True) for p in more} == {json.dumps(settings(p), sort_keys=True) for p in theirs}
