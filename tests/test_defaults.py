"""Default strengths per benchmark and scenario: every row of forgetless.defaults is checked against the
committed validation search it cites (oracle: the scores in those files), and a run without --strength
uses it and says where it comes from."""
import json
from pathlib import Path

import pytest

from forgetless.benchmarks.registry import BENCHMARKS
from forgetless.cli import main
from forgetless.defaults import DEFAULTS, default_strength, global_default, lookup
from forgetless.methods import METHODS
from forgetless.run_config import RunConfig, run_config

from synthetic import other_data_allowed, write_mnist_dir  # noqa: F401  (other data, said so)

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--iterations", "20", "--hidden", "32", "--batch-size", "64"]


def validation_curve(files):
    """strength -> validation score after the last task, higher is better, from a search's committed files:
    the mean accuracy, or minus the mean loss where the benchmark scores strengths by loss (prose-code)."""
    curve = {}
    for name in files:
        result = json.loads((ROOT / name).read_text())
        sign = -1 if BENCHMARKS[result["config"]["benchmark"]].selection == "loss" else 1
        search = result.get("strength_search")
        if search:
            curve |= {s: sign * v for s, v in zip(search["grid"], search["validation_scores"]) if v is not None}
        else:  # one run per strength tried
            metric = "valid_average_loss" if sign < 0 else "valid_average_accuracy"
            curve[result["config"]["strength"]] = sign * result["metrics"][metric]["mean"]
    return curve


@pytest.mark.parametrize("key", sorted(DEFAULTS), ids="/".join)
def test_every_default_is_the_best_validation_score_of_its_committed_search(key):
    chosen = DEFAULTS[key]
    assert all((ROOT / name).is_file() for name in chosen.files), chosen.files
    curve = validation_curve(chosen.files)
    assert len(curve) >= 2, f"{key}: a search needs more than one strength, got {curve}"
    best = max(curve.values())
    assert chosen.strength == min(s for s, v in curve.items() if v == best)  # ties: the smaller strength
    for name in chosen.files:
        config = json.loads((ROOT / name).read_text())["config"]
        assert (config["benchmark"], config["scenario"], config["method"]) == key
        assert config["valid_fraction"] > 0  # scored on held-out training data, never the test set


@pytest.mark.parametrize("key", sorted(DEFAULTS), ids="/".join)
def test_every_default_was_searched_with_the_settings_it_states(key):
    chosen = DEFAULTS[key]
    benchmark, scenario, method = key
    stated = run_config({"benchmark": benchmark, "scenario": scenario, "method": method, **chosen.settings}).resolved()
    for name in chosen.files:
        config = json.loads((ROOT / name).read_text())["config"]
        # the settings both know (files written before an option existed lack it: it was then its default)
        differ = {k: (config[k], stated[k]) for k in set(config) & set(stated) - {"seeds", "strength", "strength_grid"}
                  if config[k] != stated[k]}
        assert not differ, f"{name} was searched with {differ} (file, stated)"


def test_without_a_search_the_methods_global_default():
    assert lookup("split-fashion", "task", "ewc") is None
    assert default_strength("split-fashion", "task", "ewc") == global_default("ewc") == METHODS["ewc"].default_strength
    assert default_strength("split-mnist", "task", "naive") is None
    for (benchmark, scenario, method), chosen in DEFAULTS.items():
        assert RunConfig(benchmark=benchmark, scenario=scenario, method=method).resolved_strength == chosen.strength
        assert RunConfig(benchmark=benchmark, scenario=scenario, method=method, strength=3.0).resolved_strength == 3.0


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return write_mnist_dir(tmp_path_factory.mktemp("mnist"), n_train=600, n_test=200)


def _run(data_dir, out, *flags):
    argv = ["run", "--benchmark", "permuted-mnist", "--scenario", "domain", "--n-tasks", "2", "--seeds", "0",
            "--data-dir", str(data_dir), "--out", str(out), *FAST, *flags]
    assert main(argv) == 0
    return json.loads((out / "result.json").read_text()), (out / "report.md").read_text()


def test_a_run_without_strength_trains_with_the_default_and_its_report_says_where_from(data_dir, tmp_path, capsys):
    result, report = _run(data_dir, tmp_path / "ewc", "--method", "ewc")
    chosen = lookup("permuted-mnist", "domain", "ewc")
    assert result["config"]["strength"] == chosen.strength
    assert result["strength_source"].startswith(f"default for permuted-mnist/domain from {chosen.files[0]}")
    assert result["strength_source"] in report and "searched with other settings than this run's" in report
    assert "hidden [1000, 1000] (here [32])" in report  # the search's settings beside this run's
    assert f"strength: {chosen.strength:g} (default for permuted-mnist/domain" in capsys.readouterr().out


def test_a_run_says_when_the_strength_is_given_or_a_global_default(data_dir, tmp_path):
    result, report = _run(data_dir, tmp_path / "mas", "--method", "mas")
    assert result["config"]["strength"] == global_default("mas")
    assert "global default of mas (1): no validation search committed for permuted-mnist/domain" in report
    result, report = _run(data_dir, tmp_path / "given", "--method", "ewc", "--strength", "5")
    assert result["config"]["strength"] == 5.0 and result["strength_source"] == "given" and "strength 5.0 (given)" in report


VERIFIED = sorted((ROOT / "results" / "default-strengths").glob("verify-*.json"))
TASK_IL = [("split-mnist", "task", method) for method in ("ewc", "online-ewc", "si")]


def _final_average(result) -> list[float]:
    """Per seed, the mean of the last row of R (test average accuracy after the last task)."""
    return [sum(run["accuracy_matrix"][-1]) / len(run["accuracy_matrix"][-1]) for run in result["seeds"]]


@pytest.mark.parametrize("path", VERIFIED, ids=lambda p: p.stem)
def test_a_verification_ran_with_the_default_on_seeds_its_search_did_not_use(path):
    result = json.loads(path.read_text())
    config = result["config"]
    key = (config["benchmark"], config["scenario"], config["method"])
    assert path.name == f"verify-{key[0]}-{key[1]}_{key[2]}.json"
    chosen = DEFAULTS[key]
    assert config["strength"] == chosen.strength and config.get("strength_grid") is None
    assert result["strength_source"].startswith(f"default for {key[0]}/{key[1]} from {chosen.files[0]}")
    searched = {s for name in chosen.files for s in json.loads((ROOT / name).read_text())["config"]["seeds"]}
    assert len(config["seeds"]) >= 2 and not set(config["seeds"]) & searched
    assert result["metrics"]["average_accuracy"]["mean"] == pytest.approx(sum(_final_average(result)) / len(config["seeds"]))


@pytest.mark.parametrize("key", TASK_IL, ids="/".join)
def test_task_il_split_mnist_defaults_reach_097_on_unsearched_seeds(key):
    """Issue 11's bar for a newcomer: no --strength, task-IL split MNIST, ≥ 0.97 test average accuracy."""
    path = ROOT / "results" / "default-strengths" / f"verify-{key[0]}-{key[1]}_{key[2]}.json"
    assert key in DEFAULTS and path.is_file(), f"no default or no verification for {key}: {SEARCHES_HELP}"
    result = json.loads(path.read_text())
    assert sum(_final_average(result)) / len(result["seeds"]) >= 0.97


SEARCHES_HELP = "scripts/default-strengths.sh split-mnist task M, a row in DEFAULTS, then scripts/default-strengths.sh verify split-mnist task M"
