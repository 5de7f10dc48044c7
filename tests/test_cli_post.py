import json
from pathlib import Path

import pytest

from forgetless.cli import main

from synthetic import other_data_allowed, write_mnist_dir  # noqa: F401  (other data, said so)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return write_mnist_dir(tmp_path_factory.mktemp("mnist"))


def test_seed_writes_result_report_and_plot(data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["seed", "--data-dir", str(data_dir), "--epochs", "2", "--strength", "50", "--kfac-strength", "10",
                 "--out", str(out)])
    assert code == 0
    result = json.loads((out / "result.json").read_text())
    assert set(result["procedures"]) == {"multitask", "naive", "l2", "ewc", "ewc-kfac"}
    for proc in result["procedures"].values():
        assert set(proc["accuracy"]) == {"A", "B"}
        assert all(0.0 <= v <= 1.0 for v in proc["accuracy"].values())
    config = result["config"]
    assert config["estimator"] == "exact" and config["strength"] == 50.0 and config["l2_strength"] == 1.0
    assert config["kfac_strength"] == 10.0 and config["kfac_strength_source"] == "given"
    assert result["strength_search"] is None and result["kfac_strength_search"] is None
    kfac = result["procedures"]["ewc-kfac"]
    assert kfac["hyperparameters"]["structure"] == "kfac" and kfac["hyperparameters"]["kfac_damping"] == 0.3
    report = (out / "report.md").read_text()
    assert report.startswith("# forgetless seed") and "| ewc-kfac |" in report
    assert "K-FAC EWC λ = 10 (given); K-FAC damping 0.3." in report
    assert "The method's state after task A (K-FAC EWC): " in report
    assert (out / "accuracy.png").read_bytes()[:4] == b"\x89PNG"
    printed = capsys.readouterr().out
    assert "| ewc |" in printed and "| ewc-kfac |" in printed and "post A" in printed
    assert "K-FAC EWC λ = 10 (given)" in printed
    # the synthetic digits are easy: multi-task must learn both tasks
    assert min(result["procedures"]["multitask"]["accuracy"].values()) > 0.9


def test_seed_auto_strength_records_the_search(data_dir, tmp_path):
    out = tmp_path / "auto"
    assert main(["seed", "--data-dir", str(data_dir), "--epochs", "1", "--strength", "auto", "--out", str(out)]) == 0
    result = json.loads((out / "result.json").read_text())
    search = result["strength_search"]
    grid, scores = search["grid"], search["validation_scores"]
    assert len(grid) == len(scores) > 3
    assert result["config"]["strength"] == search["best"]
    assert result["config"]["strength_source"] == "validation search"
    scored = {s: v for s, v in zip(grid, scores) if v is not None}
    assert scores[grid.index(search["best"])] == max(scored.values())
    # a local search: the best value's neighbours on the grid were scored too, the rest listed as not tried
    i = grid.index(search["best"])
    assert all(grid[j] in scored for j in (i - 1, i + 1) if 0 <= j < len(grid))
    assert 3 <= len(scored) < len(grid) and sorted(search["not_tried"]) == sorted(set(grid) - set(scored))
    assert "not needed (local search)" in (out / "report.md").read_text()
    kfac = result["kfac_strength_search"]  # K-FAC EWC's own search, on its own grid
    assert kfac["grid"] == [5.6, 10.0, 17.8, 31.6, 56.2, 100.0, 177.8] and result["config"]["kfac_strength"] == kfac["best"]
    assert "K-FAC EWC strength search" in (out / "report.md").read_text()


def test_seed_grid_search_scores_every_strength(data_dir, tmp_path):
    out = tmp_path / "grid"
    assert main(["seed", "--data-dir", str(data_dir), "--epochs", "1", "--strength-grid", "1,10,100,1000", "--kfac-strength", "10",
                 "--strength-search", "grid", "--workers", "1", "--out", str(out)]) == 0
    search = json.loads((out / "result.json").read_text())["strength_search"]
    assert None not in search["validation_scores"] and search["not_tried"] == []


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--estimator", "diagonal"], "invalid choice"),
        (["--strength", "-3"], "strength must be"),
        (["--strength", "lots"], "expected a number"),
        (["--kfac-strength", "-1"], "strength must be"),
        (["--kfac-strength-grid", "1,x"], "expected numbers"),
        (["--epochs", "0"], "expected a number >= 1"),
    ],
)
def test_bad_options_exit_nonzero_with_one_line(argv, message, data_dir, tmp_path, capsys):
    out = tmp_path / "bad"
    with pytest.raises(SystemExit) as exc:
        main(["seed", "--data-dir", str(data_dir), "--out", str(out), *argv])
    assert exc.value.code != 0
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (out / "result.json").exists()


@pytest.mark.parametrize("argv, message", [
    (["--estimator", "batched"], "procedure ewc-kfac: estimator 'batched' has no Kronecker factors"),
    (["--kfac-damping", "-1"], "procedure ewc-kfac: kfac_damping must be a finite number >= 0"),
])
def test_options_the_kfac_row_refuses_are_one_clear_line(argv, message, data_dir, tmp_path, capsys):
    out = tmp_path / "refused"
    assert main(["seed", "--data-dir", str(data_dir), *argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"forgetless: error: {message}")
    assert len(err.splitlines()) == 1 and not out.exists()


def test_missing_data_dir_is_one_clear_line(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["seed", "--data-dir", str(tmp_path / "nowhere"), "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code != 0 and "nowhere" in err and "does not exist" in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (out / "result.json").exists()


def test_corrupt_data_is_one_clear_line(data_dir, tmp_path, capsys):
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in data_dir.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    victim = broken / "train-images-idx3-ubyte.gz"
    victim.write_bytes(victim.read_bytes()[:500])  # truncated gzip
    out = tmp_path / "run"
    code = main(["seed", "--data-dir", str(broken), "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code != 0 and "train-images" in err and len(err.splitlines()) == 1
    assert not (out / "result.json").exists()


def test_existing_result_is_never_overwritten(data_dir, tmp_path, capsys):
    out = tmp_path / "done"
    out.mkdir()
    (out / "result.json").write_text("{}")
    assert main(["seed", "--data-dir", str(data_dir), "--out", str(out)]) != 0
    assert (out / "result.json").read_text() == "{}"
    assert "already exists" in capsys.readouterr().err


def _procedures(out: Path) -> dict:
    result = json.loads((out / "result.json").read_text())
    return {name: (p["accuracy"], p["valid_accuracy"]) for name, p in result["procedures"].items()} | {
        "search": result["strength_search"], "strength": result["config"]["strength"],
        "kfac_search": result["kfac_strength_search"]}


def test_seed_in_worker_processes_gives_the_numbers_of_one_process(data_dir, tmp_path):
    import torch

    threads = torch.get_num_threads()
    try:  # workers use one torch thread each; the in-process run must too, for identical rounding
        runs = {}
        for workers in (1, 2):
            out = tmp_path / f"w{workers}"
            argv = ["--threads", "1", "seed", "--data-dir", str(data_dir), "--epochs", "1",
                    "--strength-grid", "10,100,1000", "--kfac-strength-grid", "1,10,100", "--workers", str(workers),
                    "--out", str(out)]
            assert main(argv) == 0
            runs[workers] = _procedures(out)
            assert json.loads((out / "result.json").read_text())["workers"] == workers
    finally:
        torch.set_num_threads(threads)
    assert runs[1] == runs[2]
    assert len(runs[2]["search"]["validation_scores"]) == 3


def test_seed_failure_in_a_worker_is_one_clear_line(data_dir, tmp_path, capsys):
    out = tmp_path / "nan"
    code = main(["seed", "--data-dir", str(data_dir), "--epochs", "1", "--strength", "50", "--kfac-strength", "10", "--lr", "1e30",
                 "--workers", "2", "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code != 0 and "loss became" in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (out / "result.json").exists()


def test_post_protocol_trains_ewc_task_a_on_its_own_schedule(data_dir, tmp_path):
    out = tmp_path / "post"
    assert main(["seed", "--data-dir", str(data_dir), "--protocol", "post", "--strength", "50", "--kfac-strength", "10",
                 "--out", str(out)]) == 0
    result = json.loads((out / "result.json").read_text())
    assert set(result["task_a_seconds"]) == {"3 epochs, dropout 0.5", "6 epochs, dropout 0"}
    assert result["procedures"]["ewc"]["schedule"] == {"epochs_a": 3, "epochs_b": 9, "dropout": 0.5}
    assert result["procedures"]["ewc-kfac"]["schedule"] == {"epochs_a": 3, "epochs_b": 9, "dropout": 0.5}


def test_seed_runs_in_one_process_when_shared_memory_is_too_small(data_dir, tmp_path, monkeypatch, caplog):
    import forgetless.workers

    monkeypatch.setattr(forgetless.workers, "shared_memory_free", lambda: 1 << 20)  # Docker's default is 64 MB
    out = tmp_path / "small-shm"
    with caplog.at_level("WARNING", logger="forgetless.workers"):
        assert main(["seed", "--data-dir", str(data_dir), "--epochs", "1", "--strength", "50", "--kfac-strength", "10",
                     "--workers", "2", "--out", str(out)]) == 0
    assert json.loads((out / "result.json").read_text())["workers"] == 1
    assert "shared memory" in caplog.text and "--shm-size" in caplog.text


def test_seed_reuses_its_finished_run_and_refuses_other_settings_in_its_folder(data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["seed", "--data-dir", str(data_dir), "--epochs", "1", "--strength", "50", "--kfac-strength", "10",
            "--workers", "1", "--out", str(out)]
    assert main(argv) == 0
    written = (out / "result.json").stat().st_mtime_ns
    assert json.loads((out / "config.json").read_text())["config"]["strength"] == 50.0  # written before training
    capsys.readouterr()
    assert main(argv) == 0
    assert "Reused the finished run in" in capsys.readouterr().out
    assert main([*argv, "--l2-strength", "2"]) == 2
    assert "holds a finished run of another config" in capsys.readouterr().err
    assert (out / "result.json").stat().st_mtime_ns == written
