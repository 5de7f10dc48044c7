"""The extension recipes of CONTRIBUTING.md, done in a test: a new regularizer (its class, and the one
line that lists it), a benchmark (its builder and its registry entry) and the Fisher's estimators
(one tuple) reach the command line, config files and sweeps with nothing else to edit."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from forgetless import fisher
from forgetless.benchmarks import registry
from forgetless.benchmarks.split import split_mnist
from forgetless.cli import build_parser, main
from forgetless.methods import METHODS, methods_of
from forgetless.quadratic import quadratic_penalty
from forgetless.regularizers import EWC, OnlineEWC, Regularizer
from forgetless.regularizers.base import Variant, model_parameters, snapshot
from forgetless.regularizers.options import check_strength
from forgetless.sweep import expand, parse_sweep

from synthetic import other_data_allowed, write_mnist_dir  # noqa: F401  (other data, said so)

FAST = ["--iterations", "5", "--hidden", "16", "--batch-size", "64", "--benchmark", "split-mnist", "--scenario", "task"]


class Shrink(Regularizer):
    """A toy method: (λ/2)·pull·Σ(θ − θ*)² around the latest task's weights.

    Args:
        strength: λ.
        pull: a factor on the penalty.
    """

    name = "shrink"
    strength_grid = (0.1, 1.0)
    variants = {"shrink-double": {"pull": 2.0},   # a variant fixing an option: one line
                "shrink-far": Variant(defaults={"pull": 3.0}, strength=50.0, strength_grid=(20.0, 50.0))}
    _state_keys = ("anchor",)
    _consolidated_keys = ("anchor",)

    def __init__(self, strength: float = 0.5, *, pull: float = 1.0) -> None:
        super().__init__()
        self.strength, self.pull = check_strength("strength", strength), check_strength("pull", pull)
        self.anchor: dict[str, torch.Tensor] = {}

    def penalty(self, model):
        if self.tasks_seen == 0:
            return self._zero(model)
        return 0.5 * self.strength * self.pull * quadratic_penalty(model_parameters(model), self.anchor)

    def consolidate(self, model, data=None, *, output_transform=None) -> None:
        self.anchor = snapshot(model)
        self.tasks_seen += 1

    def hyperparameters(self) -> dict[str, Any]:
        return {"strength": self.strength, "pull": self.pull}


def two_tasks(data, *, scenario: str, seed: int = 0, valid_fraction: float = 0.1, swap: bool = False):
    """A toy benchmark: split MNIST's first two tasks.

    Args:
        swap: train the second task first.
    """
    bench = split_mnist(data, scenario=scenario, seed=seed, valid_fraction=valid_fraction)
    tasks = bench.tasks[:2][::-1] if swap else bench.tasks[:2]
    return type(bench)("two-tasks", tasks, bench.n_outputs, scenario)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return write_mnist_dir(tmp_path_factory.mktemp("mnist"), n_train=600, n_test=200)


@pytest.fixture
def with_shrink(monkeypatch):
    """What the one line ``CLASSES = (..., Shrink)`` in regularizers/__init__.py does."""
    for name, method in methods_of((Shrink,)).items():
        if name not in METHODS:
            monkeypatch.setitem(METHODS, name, method)


def _result(out: Path) -> dict:
    return json.loads((out / "result.json").read_text())


def test_a_new_regularizer_is_its_class_and_one_line(with_shrink, data_dir, tmp_path, capsys):
    out = tmp_path / "shrink"
    assert main(["run", "--method", "shrink", "--pull", "3", "--strength", "auto", "--data-dir", str(data_dir),
                 "--out", str(out), *FAST]) == 0
    result = _result(out)
    assert result["config"]["pull"] == 3.0 and result["strength_search"]["grid"] == [0.1, 1.0]
    assert "--pull" in build_parser()._subparsers._group_actions[0].choices["run"].format_help()
    # its variant: the class with an option fixed (and recorded); --strength default: its own default strength
    assert main(["run", "--method", "shrink-double", "--strength", "default", "--data-dir", str(data_dir),
                 "--out", str(tmp_path / "d"), *FAST]) == 0
    assert _result(tmp_path / "d")["config"]["pull"] == 2.0 and _result(tmp_path / "d")["config"]["strength"] == 0.5
    # a variant with its own default for an option that stays a setting, its own default strength and grid
    assert main(["run", "--method", "shrink-far", "--strength", "default", "--data-dir", str(data_dir),
                 "--out", str(tmp_path / "f"), *FAST]) == 0
    assert _result(tmp_path / "f")["config"]["pull"] == 3.0 and _result(tmp_path / "f")["config"]["strength"] == 50.0
    assert main(["run", "--method", "shrink-far", "--pull", "1", "--strength", "auto", "--data-dir", str(data_dir),
                 "--out", str(tmp_path / "fa"), *FAST]) == 0
    assert _result(tmp_path / "fa")["config"]["pull"] == 1.0
    assert _result(tmp_path / "fa")["strength_search"]["grid"] == [20.0, 50.0]
    # its setting is its own: refused for another method, expanded in a sweep for it alone
    assert main(["run", "--method", "naive", "--pull", "3", "--data-dir", str(data_dir), *FAST]) == 2
    assert "pull is not a setting of method naive on split-mnist: it belongs to method shrink" in capsys.readouterr().err
    spec = parse_sweep({"grid": {"method": ["naive", "shrink"], "pull": [1, 2]}})
    assert [p.label for p in expand(spec)] == ["naive seed 0", "shrink pull=1 seed 0", "shrink pull=2 seed 0"]


def test_a_new_benchmark_is_its_builder_and_one_entry(monkeypatch, data_dir, tmp_path, capsys):
    monkeypatch.setitem(registry.BENCHMARKS, "two-tasks", registry.Entry(two_tasks, "mnist"))
    out = tmp_path / "two"
    argv = ["run", "--benchmark", "two-tasks", "--scenario", "class", "--method", "ewc", "--strength", "100", "--swap",
            "--iterations", "5", "--hidden", "16", "--data-dir", str(data_dir), "--out", str(out)]
    assert main(argv) == 0
    result = _result(out)
    assert result["task_names"] == ["2-3", "0-1"] and result["config"]["swap"] is True
    assert main(["run", "--method", "naive", "--swap", "--data-dir", str(data_dir), *FAST]) == 2
    assert "swap is not a setting of method naive on split-mnist: it belongs to benchmark two-tasks" in capsys.readouterr().err


def test_the_fisher_estimators_are_one_tuple():
    # A new estimator is a branch in fisher.py and its name in fisher.ESTIMATORS: every choice reads that tuple.
    assert EWC.choices["estimator"] is fisher.ESTIMATORS and OnlineEWC.choices["estimator"] is fisher.ESTIMATORS
    commands = build_parser()._subparsers._group_actions[0].choices
    for command in ("seed", "run", "compare"):
        (action,) = [a for a in commands[command]._actions if a.dest == "estimator"]
        assert tuple(action.choices) == fisher.ESTIMATORS
