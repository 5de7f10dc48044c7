"""Run folders and settings under bad input and faults (issue 15): nothing lost or overwritten,
nothing silently wrong, one clear line for each mistake, and no folder left by a failed call."""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from forgetless import runs
from forgetless.cli import main
from forgetless.run_config import run_configs

from synthetic import other_data_allowed, write_mnist_dir  # noqa: F401  (other data, said so)

FAST = ["--iterations", "5", "--hidden", "16", "--batch-size", "64"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return write_mnist_dir(tmp_path_factory.mktemp("mnist"), n_train=600, n_test=200)


def _run(data_dir, out, *extra, command="run") -> list[str]:
    argv = [command, "--benchmark", "split-mnist", "--scenario", "task", "--data-dir", str(data_dir), *FAST, *extra]
    if command == "run" and "--method" not in extra:
        argv += ["--method", "naive"]
    return argv + (["--out", str(out)] if out is not None else [])


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def _no_training(monkeypatch):
    """Fail the test if any training starts."""
    from forgetless import post_jobs, seed_run, strength_run

    def trained(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(seed_run, "train_task", trained)
    monkeypatch.setattr(strength_run, "train_task", trained)
    monkeypatch.setattr(post_jobs, "train_task", trained)


# --- 2: one folder per run, and one process per folder ----------------------------------------------

def test_default_folder_names_are_unique_within_a_second(tmp_path, monkeypatch):
    monkeypatch.setattr(runs.time, "strftime", lambda fmt: "20260101-120000")
    first, second = runs.new_folder("run", tmp_path), runs.new_folder("run", tmp_path)
    assert first != second and first.is_dir() and second.is_dir()
    assert [first.name, second.name] == ["run-20260101-120000", "run-20260101-120000-2"]


def test_a_run_folder_another_process_writes_into_is_refused(data_dir, tmp_path, capsys, monkeypatch):
    out = tmp_path / "busy"
    _no_training(monkeypatch)
    with runs.claimed(out):  # as another process would hold it
        assert main(_run(data_dir, out)) == 2
        assert "another forgetless process is writing into" in _one_line_error(capsys)
        assert main(["seed", "--data-dir", str(data_dir), "--out", str(out)]) == 2
    assert sorted(p.name for p in out.iterdir()) == [runs.MARKER]  # nothing written beside the other's files
    with runs.claimed(out):  # released with its owner
        pass


# --- 7: read-only and foreign folders, refused before training ----------------------------------------

def test_a_read_only_out_is_refused_before_training(data_dir, tmp_path, capsys, monkeypatch):
    out = tmp_path / "read-only"
    out.mkdir()
    out.chmod(stat.S_IRUSR | stat.S_IXUSR)
    real_open = os.open

    def denied(path, *args, **kwargs):  # root ignores the mode bits: refuse as the filesystem would
        if Path(path).parent == out:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", denied)
    _no_training(monkeypatch)
    try:
        assert main(["seed", "--data-dir", str(data_dir), "--out", str(out)]) == 2
        assert "cannot write into --out" in _one_line_error(capsys)
        assert main(_run(data_dir, out)) == 2
        assert "Permission denied" in _one_line_error(capsys)
    finally:
        out.chmod(stat.S_IRWXU)
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("command", ["run", "seed", "compare"])
def test_a_folder_forgetless_did_not_write_is_refused(command, data_dir, tmp_path, capsys, monkeypatch):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "report.md").write_text("my own notes\n")
    (out / "config.json").write_text('{"my": "settings"}\n')
    _no_training(monkeypatch)
    argv = ["seed", "--data-dir", str(data_dir), "--out", str(out)] if command == "seed" else \
        _run(data_dir, out, command=command)
    assert main(argv) == 2
    err = _one_line_error(capsys)
    assert "holds files forgetless did not write" in err and "report.md" in err
    assert (out / "report.md").read_text() == "my own notes\n" and sorted(p.name for p in out.iterdir()) == [
        "config.json", "report.md"]


# --- 1 (run and seed too): finished results are reused, or replaced only when asked ---------------------

def test_a_finished_run_is_reused_refused_or_overwritten(data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_run(data_dir, out)) == 0
    first = (out / "result.json").stat().st_mtime_ns
    capsys.readouterr()
    assert main(_run(data_dir, out)) == 0
    assert "Reused the finished run" in capsys.readouterr().out
    assert main(_run(data_dir, out, "--lr", "0.01")) == 2
    assert "holds a finished run of another config" in _one_line_error(capsys)
    assert (out / "result.json").stat().st_mtime_ns == first
    assert main(_run(data_dir, out, "--lr", "0.01", "--overwrite")) == 0
    assert json.loads((out / "result.json").read_text())["config"]["lr"] == 0.01


# --- 8, 9: settings -----------------------------------------------------------------------------------

@pytest.mark.parametrize("extra, message", [
    (["--seeds", "0,0"], "seeds: 0 given twice"),
    (["--method", "naive", "--decay", "0.5"], "decay is not a setting of method naive on split-mnist: it belongs to method online-ewc"),
    (["--method", "naive", "--strength", "123"], "method naive takes no strength"),
    (["--method", "naive", "--estimator", "sampled"], "estimator is not a setting of method naive"),
    (["--method", "si", "--n-tasks", "1000"], "n_tasks is not a setting of method si on split-mnist: it belongs to benchmark permuted-mnist"),
    (["--method", "mas", "--fisher-samples", "10"], "fisher_samples is not a setting of method mas"),
    (["--method", "si", "--damping", "0"], "damping must be a finite number > 0, got 0.0"),
])
def test_settings_a_run_does_not_use_are_refused_before_any_folder(extra, message, data_dir, tmp_path, capsys):
    out = tmp_path / "never"
    assert main(_run(data_dir, out, *extra)) == 2
    assert message in _one_line_error(capsys)
    assert not out.exists()


def test_compare_gives_each_method_only_the_settings_it_takes(data_dir, tmp_path, capsys):
    naive, online = run_configs(["naive", "online-ewc"], {"decay": 0.5, "estimator": "sampled"},
                                {"online-ewc": {"fisher_samples": 100}})
    assert "decay" not in naive.resolved() and "estimator" not in naive.resolved()
    assert (online.decay, online.estimator, online.fisher_samples) == (0.5, "sampled", 100)
    assert main(_run(data_dir, tmp_path / "cmp", "--methods", "naive,si", "--decay", "0.5", command="compare")) == 2
    assert "decay is used by none of the methods compared (naive, si)" in _one_line_error(capsys)
    assert main(_run(data_dir, tmp_path / "cmp", "--methods", " , ", command="compare")) == 2
    assert "--methods: give at least one method" in _one_line_error(capsys)
    assert not (tmp_path / "cmp").exists()


# --- 13 and the noisy cases: one line, and no folder left behind ---------------------------------------

def test_failed_calls_leave_no_folder(data_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default --out is under ./runs
    assert main(["seed", "--data-dir", str(tmp_path / "nowhere")]) == 2
    assert main(_run(tmp_path / "nowhere", None)) == 2
    assert main(["run", "--benchmark", "permuted-mnist", "--n-tasks", "0", "--method", "naive",
                 "--data-dir", str(data_dir)]) == 2
    assert "n_tasks must be a positive integer" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_out_that_is_a_file_or_under_one_is_one_line(data_dir, tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert main(_run(data_dir, afile, "--methods", "naive", command="compare")) == 2
    assert "exists and is not a folder" in _one_line_error(capsys)
    assert main(_run(data_dir, afile / "sub")) == 2
    assert "Not a directory" in _one_line_error(capsys)
    assert afile.read_text() == "x"


def test_sizes_that_cannot_fit_are_refused_up_front(data_dir, tmp_path, capsys, monkeypatch):
    from forgetless import memory

    assert main(_run(data_dir, tmp_path / "big", "--hidden", "100000,100000")) == 2
    assert "needs about" in (err := _one_line_error(capsys)) and "GB of memory" in err
    monkeypatch.setattr(memory, "available_bytes", lambda: 1 << 30)  # 1 GB; 1000 permuted tasks of this data: ~2.5 GB
    assert main(["run", "--benchmark", "permuted-mnist", "--scenario", "domain", "--n-tasks", "1000", "--method",
                 "naive", "--data-dir", str(data_dir), "--out", str(tmp_path / "perm")]) == 2
    assert "permuted-mnist with 1000 tasks" in _one_line_error(capsys)
    assert not (tmp_path / "big").exists() and not (tmp_path / "perm").exists()


# --- also: permissions, and what an interrupt keeps --------------------------------------------------

def test_run_files_follow_the_umask(data_dir, tmp_path):
    before = os.umask(0o022)
    try:
        assert main(_run(data_dir, tmp_path / "run")) == 0
    finally:
        os.umask(before)
    for name in ("config.json", "result.json", "report.md", "metrics.csv", "accuracy_matrix.png", runs.MARKER):
        assert stat.S_IMODE((tmp_path / "run" / name).stat().st_mode) == 0o644, name


def test_an_interrupt_says_what_was_kept(data_dir, tmp_path, capsys, monkeypatch):
    from forgetless import experiment

    real = experiment.run_experiment

    def interrupted_at_ewc(config, *args, **kwargs):
        if config.method == "ewc":
            raise KeyboardInterrupt
        return real(config, *args, **kwargs)

    monkeypatch.setattr(experiment, "run_experiment", interrupted_at_ewc)
    out = tmp_path / "cmp"
    assert main(_run(data_dir, out, "--methods", "naive,ewc,si", command="compare")) == 130
    err = _one_line_error(capsys)
    assert f"interrupted; 1 of 3 methods finished and kept in {out} (naive)" in err
    assert runs.is_finished(out / "naive")
    assert (out / "ewc" / runs.INCOMPLETE).is_file() and not (out / "ewc" / "result.json").exists()
    assert main(_run(data_dir, tmp_path / "one", "--method", "ewc")) == 130
    assert "nothing finished" in (err := _one_line_error(capsys)) and "keeps config.json and the INCOMPLETE marker" in err
