"""The command-line methods ewc-kfac and online-ewc-kfac: variants of EWC and OnlineEWC (the Kronecker-
factored structure fixed, the damping a setting with its own default, their own strength scale), through
`forgetless run`, and their state files."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import forgetless
from forgetless.cli import main
from forgetless.defaults import lookup
from forgetless.methods import METHODS, methods_of
from forgetless.regularizers import EWC
from forgetless.regularizers.base import Variant

from synthetic import other_data_allowed, write_mnist_dir  # noqa: F401  (other data, said so)

FAST = ["--benchmark", "split-mnist", "--scenario", "domain", "--iterations", "10", "--hidden", "8",
        "--batch-size", "64"]
KFAC_GRID = (5.6, 10.0, 17.8, 31.6, 56.2, 100.0, 177.8)  # quarter decades around 31.6


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return write_mnist_dir(tmp_path_factory.mktemp("mnist"), n_train=600, n_test=200)


@pytest.mark.parametrize("name, cls, extra", [("ewc-kfac", forgetless.EWC, {}),
                                               ("online-ewc-kfac", forgetless.OnlineEWC, {"factor_sum": "merged"})])
def test_the_variants_are_their_class_with_kfac_fixed_and_their_own_defaults(name, cls, extra):
    method = METHODS[name]
    assert method.regularizer is cls and dict(method.fixed) == {"structure": "kfac"}
    assert method.default_strength == 31.6 and method.strength_grid == KFAC_GRID
    assert not method.takes("structure") and method.takes("kfac_damping") and method.takes("strength_grid")
    reg = method.build(None, {}, seed=0)
    expected = {"strength": 31.6, "structure": "kfac", "kfac_damping": 0.3, **extra}
    assert {k: reg.hyperparameters()[k] for k in expected} == expected
    # the damping (and online EWC's factor sum) stay settings: given, they win over the variant's default
    given = method.build(10.0, {"kfac_damping": 0.01, **({"factor_sum": "separate"} if extra else {})}, seed=0)
    assert given.strength == 10.0 and given.kfac_damping == 0.01
    assert getattr(given, "factor_sum", "separate") == "separate"
    # the classes themselves are unchanged
    assert METHODS[cls.name].default_strength == 1000.0 and METHODS[cls.name].options["kfac_damping"].default == 0.0


def test_a_variant_setting_no_option_of_its_class_is_refused():
    class Bad(EWC):
        name = "bad"
        variants = {"bad-kfac": Variant(fixed={"structure": "kfac"}, defaults={"dampening": 0.3})}

    with pytest.raises(ValueError, match="variant bad-kfac of Bad sets dampening, not options of its constructor"):
        methods_of((Bad,))
    with pytest.raises(ValueError, match="a variant's strength and strength grid are finite numbers >= 0"):
        Variant(strength_grid=(1.0, float("inf")))


@pytest.mark.parametrize("name", ["ewc-kfac", "online-ewc-kfac"])
def test_state_files_of_the_variants_round_trip(name, tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 4), torch.nn.ReLU(), torch.nn.Linear(4, 3))
    reg = METHODS[name].build(None, {}, seed=0)
    for t in range(2):  # two tasks: separate terms (EWC), or a merged one (online EWC)
        g = torch.Generator().manual_seed(t)
        reg.consolidate(model, [(torch.randn(32, 6, generator=g), torch.randint(0, 3, (32,), generator=g))])
        with torch.no_grad():
            model[0].weight.add_(0.1)
    again = forgetless.load(forgetless.save(reg, tmp_path / "reg.safetensors"))
    assert type(again) is type(reg) and again.hyperparameters() == reg.hyperparameters()
    assert again.hyperparameters()["structure"] == "kfac" and again.hyperparameters()["kfac_damping"] == 0.3
    assert torch.equal(again.penalty(model), reg.penalty(model)) and float(reg.penalty(model).detach()) > 0
    assert again.memory() == reg.memory()
    assert len(reg.terms()) == (2 if name == "ewc-kfac" else 1)


def test_run_ewc_kfac_records_its_settings_and_what_its_state_costs(data_dir, tmp_path, capsys):
    out = tmp_path / "kfac"
    # --strength default: the variant's own default strength (no default is committed for split-mnist/domain)
    assert main(["run", "--method", "ewc-kfac", "--strength", "default", "--data-dir", str(data_dir), "--out", str(out), *FAST]) == 0
    result = json.loads((out / "result.json").read_text())
    config = result["config"]
    assert (config["method"], config["structure"], config["kfac_damping"], config["strength"]) == ("ewc-kfac", "kfac", 0.3, 31.6)
    # after 5 tasks: per task A (785², the bias row included), G (8²) and an anchor of the hidden layer (8 × 785)
    memory = result["regularizer_memory"]
    assert memory["1"] == {"structure": "kfac", "state_bytes": 5 * 4 * (785 * 785 + 8 * 8 + 8 * 785),
                           "parameter_bytes": 4 * 8 * 785}
    assert memory["3"]["structure"] == "kfac"
    assert "The method's state after the last task: " in (out / "report.md").read_text()
    # the damping is a setting (given, recorded); the structure is the variant's, not a setting
    damped = tmp_path / "damped"
    assert main(["run", "--method", "ewc-kfac", "--kfac-damping", "0.01", "--strength", "31.6", "--data-dir", str(data_dir),
                 "--out", str(damped), *FAST]) == 0
    assert json.loads((damped / "result.json").read_text())["config"]["kfac_damping"] == 0.01
    capsys.readouterr()
    assert main(["run", "--method", "ewc-kfac", "--structure", "diagonal", "--data-dir", str(data_dir), *FAST]) == 2
    assert "structure is not a setting of method ewc-kfac on split-mnist: it belongs to method ewc, method online-ewc" \
        in capsys.readouterr().err


def test_run_without_a_regularizer_records_no_memory(data_dir, tmp_path):
    out = tmp_path / "naive"
    assert main(["run", "--method", "naive", "--data-dir", str(data_dir), "--out", str(out), *FAST]) == 0
    assert json.loads((out / "result.json").read_text())["regularizer_memory"] is None


def test_strength_auto_searches_the_variants_own_grid(data_dir, tmp_path):
    out = tmp_path / "auto"
    assert main(["run", "--method", "online-ewc-kfac", "--strength", "auto", "--data-dir", str(data_dir),
                 "--out", str(out), *FAST]) == 0
    result = json.loads((out / "result.json").read_text())
    assert tuple(result["strength_search"]["grid"]) == KFAC_GRID
    assert result["config"]["strength"] == result["strength_search"]["best"] and result["config"]["factor_sum"] == "merged"


def test_compare_runs_the_variants_beside_diagonal_ewc(data_dir, tmp_path):
    out = tmp_path / "cmp"
    # --strength default: no search; EWC takes its committed split-mnist/domain default, the K-FAC variants
    # (none committed there) their own global default
    assert main(["compare", "--methods", "ewc,ewc-kfac,online-ewc-kfac", "--strength", "default", "--data-dir", str(data_dir),
                 "--out", str(out), *FAST]) == 0
    table = (out / "compare.md").read_text()
    assert all(f"| {m} |" in table for m in ("ewc", "ewc-kfac", "online-ewc-kfac"))
    configs = {m: json.loads((out / m / "result.json").read_text())["config"] for m in ("ewc", "ewc-kfac", "online-ewc-kfac")}
    assert configs["ewc"]["structure"] == "diagonal" and configs["ewc"]["strength"] == lookup("split-mnist", "domain", "ewc").strength
    assert lookup("split-mnist", "domain", "ewc-kfac") is None and lookup("split-mnist", "domain", "online-ewc-kfac") is None
    assert {configs[m]["structure"] for m in ("ewc-kfac", "online-ewc-kfac")} == {"kfac"}
    assert configs["online-ewc-kfac"]["factor_sum"] == "merged" and configs["ewc-kfac"]["strength"] == 31.6


SWEEP = """\
[base]
benchmark = "split-mnist"
scenario = "domain"
hidden = [8]
iterations = 10
batch_size = 64

[grid]
method = ["naive", "ewc-kfac", "online-ewc-kfac"]
kfac_damping = [0.0, 0.3]
seeds = [0]

[grid.strength_by_method]
ewc-kfac = [10, 100]
"""


def test_a_sweep_crosses_the_variants_with_their_settings(data_dir, tmp_path):
    config = tmp_path / "kfac.toml"
    config.write_text(SWEEP)
    out = tmp_path / "sweep"
    assert main(["sweep", "--config", str(config), "--data-dir", str(data_dir), "--out", str(out), "--workers", "1"]) == 0
    done = [json.loads((p / "result.json").read_text())["config"] for p in (out / "runs").iterdir()]
    points = sorted((c["method"], c.get("kfac_damping"), c.get("strength")) for c in done)
    # naive once; ewc-kfac: 2 dampings x its own 2 strengths; online-ewc-kfac: 2 dampings at its default strength
    assert points == [("ewc-kfac", 0.0, 10.0), ("ewc-kfac", 0.0, 100.0), ("ewc-kfac", 0.3, 10.0), ("ewc-kfac", 0.3, 100.0),
                      ("naive", None, None), ("online-ewc-kfac", 0.0, 31.6), ("online-ewc-kfac", 0.3, 31.6)]
    assert all(c["structure"] == "kfac" for c in done if c["method"] != "naive")
    assert "| ewc-kfac |" in (out / "sweep.md").read_text()
