import json
from pathlib import Path

import pytest

from forgetless import EWC, runs
from forgetless.cli import main
from forgetless.defaults import lookup

from synthetic import other_data_allowed, write_mnist_dir  # noqa: F401  (other data, said so)

FAST = ["--iterations", "20", "--hidden", "32", "--batch-size", "64"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return write_mnist_dir(tmp_path_factory.mktemp("mnist"), n_train=1000, n_test=300)


def test_run_writes_every_file_and_a_consistent_result(data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["run", "--benchmark", "split-mnist", "--scenario", "class", "--method", "ewc", "--seeds", "0-1",
            "--data-dir", str(data_dir), "--out", str(out), *FAST]
    assert main(argv) == 0
    for name in ("config.json", "result.json", "metrics.csv", "report.md", "accuracy_matrix.png", "task_curves.png"):
        assert (out / name).is_file(), name
    assert not (out / runs.INCOMPLETE).exists()
    result = json.loads((out / "result.json").read_text())
    assert [s["seed"] for s in result["seeds"]] == [0, 1]
    R = result["seeds"][0]["accuracy_matrix"]
    assert len(R) == 5 and all(len(row) == 5 for row in R)
    # class-incremental: a task whose classes are not yet active cannot be right
    assert R[0][4] == 0.0
    # ... and its loss is undefined (null), while every cell the loss metrics read is a loss
    L = result["seeds"][0]["loss_matrix"]
    assert L[0][4] is None and all(L[t][k] >= 0 for t in range(5) for k in range(t + 1))
    assert "n/a" in (out / "report.md").read_text()
    # the reported average accuracy is the mean of the last rows over seeds
    last = [sum(s["accuracy_matrix"][-1]) / 5 for s in result["seeds"]]
    assert result["metrics"]["average_accuracy"]["mean"] == pytest.approx(sum(last) / 2)
    # every std over seeds is the sample std (ddof=1), the accuracy matrix's too
    import numpy as np

    matrices = np.array([s["accuracy_matrix"] for s in result["seeds"]])
    assert np.allclose(result["std_accuracy_matrix"], matrices.std(axis=0, ddof=1))
    assert result["metrics"]["average_accuracy"]["std"] == pytest.approx(np.std(last, ddof=1))
    assert result["metrics"]["average_accuracy"]["n"] == 2
    # no --strength: the default committed for split-mnist/class (forgetless.defaults), said in the result
    assert result["config"]["method"] == "ewc" and result["config"]["strength"] == lookup("split-mnist", "class", "ewc").strength
    assert result["strength_source"].split(" from ")[0] == "default for split-mnist/class"
    assert "average_accuracy" in capsys.readouterr().out
    assert "mean,average_accuracy," in (out / "metrics.csv").read_text()


def test_config_file_with_flags_overriding(data_dir, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('benchmark = "split-mnist"\nscenario = "domain"\nmethod = "si"\nstrength = 5.0\niterations = 20\nhidden = [16]\n')
    out = tmp_path / "run"
    assert main(["run", "--config", str(cfg), "--strength", "2", "--data-dir", str(data_dir), "--out", str(out)]) == 0
    config = json.loads((out / "result.json").read_text())["config"]
    assert config["method"] == "si" and config["strength"] == 2.0 and config["hidden"] == [16]
    assert config["scenario"] == "domain"


@pytest.mark.parametrize(
    "content, message",
    [
        ('benchmark = "split-mnist"\nlearning_rate = 0.1\n', "unknown setting 'learning_rate'"),
        ('iterations = "many"\n', "iterations: expected int"),
        ('method = "magic"\n', "unknown method 'magic'; valid: naive, joint, l2, ewc"),
        ('benchmark = "cifar"\n', "unknown benchmark 'cifar'; valid: seed-split, split-mnist"),
        ('benchmark = "seed-split"\nscenario = "class"\n', "seed-split has only the domain scenario"),
        ("iterations = [\n", "could not be parsed"),
        # issue 15: settings a run does not use, values that are not finite, a method's table
        ('benchmark = "split-mnist"\nn_tasks = 1000\n', "n_tasks is not a setting"),
        ('method = "si"\nlr = inf\n', "lr must be a finite number > 0, got inf"),
        ('method = "si"\ndamping = inf\n', "damping must be a finite number > 0, got inf"),
        ('method = "si"\n[online-ewc]\nlambda = 3\n', "[online-ewc] lambda: not a setting of method online-ewc"),
    ],
)
def test_bad_config_is_refused_before_anything_runs(content, message, data_dir, tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text(content)
    out = tmp_path / "run"
    assert main(["run", "--config", str(cfg), "--data-dir", str(data_dir), "--out", str(out)]) != 0
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (out / "result.json").exists()
    assert not out.exists()  # refused before any folder is made (issue 15.13)


def test_yaml_config_is_read(data_dir, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("benchmark: split-mnist\nscenario: task\nmethod: naive\niterations: 10\nhidden: [16]\n")
    out = tmp_path / "run"
    assert main(["run", "--config", str(cfg), "--data-dir", str(data_dir), "--out", str(out)]) == 0
    assert json.loads((out / "result.json").read_text())["config"]["method"] == "naive"


def test_interrupted_run_leaves_incomplete_marker_and_no_result(data_dir, tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(runs, "write_outputs", boom)
    out = tmp_path / "run"
    code = main(["run", "--benchmark", "split-mnist", "--method", "naive", "--data-dir", str(data_dir),
                 "--out", str(out), *FAST])
    assert code == 130
    assert (out / runs.INCOMPLETE).is_file() and (out / "config.json").is_file()
    assert not (out / "result.json").exists()
    assert not runs.is_finished(out)


def test_compare_runs_methods_and_reuses_finished_runs(data_dir, tmp_path, capsys):
    out = tmp_path / "cmp"
    argv = ["compare", "--benchmark", "split-mnist", "--scenario", "task", "--methods", "naive,ewc",
            "--data-dir", str(data_dir), "--out", str(out), *FAST]
    assert main(argv) == 0
    table = (out / "compare.md").read_text()
    assert "| naive |" in table and "| ewc |" in table
    naive = next(line for line in table.splitlines() if line.startswith("| naive |"))
    # the published None (naive) cell with its SEM; one seed: no SEM of ours, said instead of a z
    assert "87.19 ± 0.94 (20 runs)" in naive and "(our SEM unknown (1 seed))" in naive
    assert (out / "compare.png").is_file()
    first = (out / "ewc" / "result.json").stat().st_mtime_ns
    capsys.readouterr()
    assert main(argv) == 0
    assert "ewc: reusing the finished run" in capsys.readouterr().out
    assert (out / "ewc" / "result.json").stat().st_mtime_ns == first
    # a changed setting is not reused, and never silently replaces a finished run (issue 15.1) ...
    capsys.readouterr()
    assert main([*argv, "--lr", "0.002"]) == 2
    err = capsys.readouterr().err
    assert "holds a finished run of another config" in err and "--overwrite" in err and len(err.splitlines()) == 1
    assert (out / "ewc" / "result.json").stat().st_mtime_ns == first
    assert "| ewc |" in (out / "compare.md").read_text()
    # ... unless asked to
    assert main([*argv, "--lr", "0.002", "--overwrite"]) == 0
    assert json.loads((out / "ewc" / "result.json").read_text())["config"]["lr"] == 0.002


def test_auto_strength_searches_on_validation(data_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(EWC, "strength_grid", (1.0, 100.0))
    out = tmp_path / "auto"
    argv = ["run", "--benchmark", "split-mnist", "--scenario", "domain", "--method", "ewc", "--strength", "auto",
            "--data-dir", str(data_dir), "--out", str(out), *FAST]
    assert main(argv) == 0
    result = json.loads((out / "result.json").read_text())
    search = result["strength_search"]
    assert search["grid"] == [1.0, 100.0] and len(search["validation_scores"]) == 2
    assert result["config"]["strength"] == search["best"]
    # the first seed's run at the chosen strength is the search's own run: identical to a fresh one
    fixed = tmp_path / "fixed"
    assert main(["run", "--benchmark", "split-mnist", "--scenario", "domain", "--method", "ewc",
                 "--strength", str(search["best"]), "--data-dir", str(data_dir), "--out", str(fixed), *FAST]) == 0
    again = json.loads((fixed / "result.json").read_text())
    assert again["seeds"][0]["accuracy_matrix"] == result["seeds"][0]["accuracy_matrix"]


@pytest.mark.parametrize("flag, optimizers", [([], 5), (["--no-reset-optimizer"], 1)])
def test_one_optimizer_for_the_sequence_when_asked(flag, optimizers, data_dir, tmp_path, monkeypatch):
    from forgetless import seed_run as experiment  # where a run builds its optimizers

    made = []
    real_adam = experiment.adam
    monkeypatch.setattr(experiment, "adam", lambda model, lr: made.append(lr) or real_adam(model, lr))
    out = tmp_path / "run"
    assert main(["run", "--benchmark", "split-mnist", "--scenario", "task", "--method", "naive",
                 "--data-dir", str(data_dir), "--out", str(out), *FAST, *flag]) == 0
    assert len(made) == optimizers  # split MNIST has 5 tasks
    assert json.loads((out / "result.json").read_text())["config"]["reset_optimizer"] is not bool(flag)


# --- van de Ven & Tolias's protocol: their task order, 32×32 permuted inputs, no validation split ---

THEIR_SPLIT = ('benchmark = "split-mnist"\nscenario = "domain"\nmethod = "online-ewc"\nstrength = 1e8\ndecay = 0.7\n'
               'decay_in_penalty = true\nvalid_fraction = 0.0\ntask_order = "vandeven2019"\nseeds = [1]\n'
               'iterations = 5\nhidden = [16]\n')


def test_their_split_protocol_runs_without_validation(data_dir, tmp_path, monkeypatch):
    from forgetless.methods import Method

    made = []
    real = Method.build
    monkeypatch.setattr(Method, "build", lambda self, *a, **k: made.append(real(self, *a, **k)) or made[-1])
    cfg = tmp_path / "theirs.toml"
    cfg.write_text(THEIR_SPLIT)
    out = tmp_path / "run"
    assert main(["run", "--config", str(cfg), "--data-dir", str(data_dir), "--out", str(out)]) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["task_names"] == ["4-6", "0-5", "3-9", "2-7", "8-1"]  # their seed-1 pairs
    assert result["config"]["task_order"] == "vandeven2019" and result["config"]["decay_in_penalty"] is True
    trained = [reg for reg in made if reg is not None][-1]  # the first is the config's own check
    assert trained.decay_in_penalty is True and trained.decay == 0.7 and trained.strength == 1e8
    seed = result["seeds"][0]
    assert all(v is None for row in seed["valid_matrix"] for v in row)  # nothing held out: no score, not 0
    assert all(v is not None for row in seed["accuracy_matrix"] for v in row)
    assert {k: result["metrics"]["valid_average_accuracy"][k] for k in ("mean", "std")} == {"mean": None, "std": None}
    assert "valid_fraction = 0" in result["selection"] and "validation data held out" not in result["selection"]
    assert "| valid_average_accuracy | n/a |" in (out / "report.md").read_text()


def test_their_permuted_protocol_builds_a_1024_input_network(data_dir, tmp_path, monkeypatch):
    from forgetless import models

    widths = []
    real = models.mlp
    monkeypatch.setattr(models, "mlp", lambda n, *a: widths.append(n) or real(n, *a))
    out = tmp_path / "run"
    cfg = tmp_path / "perm.toml"
    cfg.write_text('benchmark = "permuted-mnist"\nscenario = "domain"\nmethod = "naive"\nn_tasks = 2\npadding = 2\n'
                   'permute_first = true\nvalid_fraction = 0.0\nseeds = [1]\niterations = 3\nhidden = [8]\n')
    assert main(["run", "--config", str(cfg), "--data-dir", str(data_dir), "--out", str(out)]) == 0
    assert set(widths) == {1024}  # built twice: once on the meta device, to check it fits in memory
    config = json.loads((out / "result.json").read_text())["config"]
    assert (config["padding"], config["permute_first"], config["valid_fraction"]) == (2, True, 0.0)


@pytest.mark.parametrize("command", ["run", "compare"])
def test_auto_strength_without_validation_is_refused_before_anything_runs(command, data_dir, tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text('benchmark = "split-mnist"\nmethod = "ewc"\nvalid_fraction = 0.0\nstrength = "auto"\n')
    out = tmp_path / "run"
    assert main([command, "--config", str(cfg), "--data-dir", str(data_dir), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "strength 'auto' chooses the strength on validation data, but valid_fraction = 0 holds none out" in err
    assert "Traceback" not in err and not out.exists()


def test_execute_refuses_auto_strength_without_validation(tmp_path):
    from forgetless.run_config import run_config

    with pytest.raises(ValueError, match="valid_fraction = 0 holds none out"):
        run_config({"method": "si", "valid_fraction": 0.0, "strength": "auto"})


@pytest.mark.parametrize("settings, message", [
    ({"benchmark": "permuted-mnist", "task_order": "vandeven2019"},
     "task_order is not a setting of method ewc on permuted-mnist: it belongs to benchmark split-mnist, benchmark split-fashion"),
    ({"benchmark": "split-mnist", "padding": 2}, "padding is not a setting of method ewc on split-mnist: it belongs to benchmark permuted-mnist"),
    ({"benchmark": "seed-split", "scenario": "domain", "permute_first": True}, "permute_first is not a setting .* permuted-mnist"),
])
def test_benchmark_options_for_another_benchmark_are_refused(settings, message):
    from forgetless.run_config import run_config

    with pytest.raises(ValueError, match=message):
        run_config(settings)
