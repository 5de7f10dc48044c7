"""Signals against real processes (issue 15): a second Ctrl-C never hangs, SIGTERM or SIGKILL leaves no
orphan worker, and a run folder's lock dies with its owner."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from forgetless import runs

from synthetic import other_data_allowed, write_mnist_dir  # noqa: F401  (other data, said so)

SWEEP = """\
[base]
benchmark = "seed-split"
scenario = "domain"
hidden = [32]
iterations = 100000
[grid]
method = ["naive", "si"]
seeds = [0, 1]
"""


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return write_mnist_dir(tmp_path_factory.mktemp("mnist"), n_train=1000, n_test=200)


def children(pid: int) -> set[int]:
    """Live processes whose parent is ``pid`` (from /proc)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                found.add(int(entry.name))
    return found


def alive(pids: set[int]) -> set[int]:
    out = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            out.add(pid)
    return out


def start(argv: list[str], cwd: Path) -> subprocess.Popen:
    # Ctrl-C handled as in a terminal's foreground job, even when the tests themselves run as a background
    # job (a shell without job control starts those with SIGINT ignored, and Python keeps an inherited SIG_IGN)
    code = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
            "from forgetless.cli import main; sys.exit(main(sys.argv[1:]))")
    # a session of its own: signals to its process group reach it and its workers, as a terminal's Ctrl-C does
    return subprocess.Popen([sys.executable, "-c", code, *argv], cwd=cwd, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_for(condition, timeout: float = 120.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out waiting for the run to start"
        time.sleep(0.2)


def workers_training(proc: subprocess.Popen, folders, count: int = 2, settle: float = 1.0) -> set[int]:
    """Wait until ``count`` workers run and a run folder is INCOMPLETE, then ``settle`` seconds
    (inside training; 0: the workers may still be starting); the workers' pids."""
    wait_for(lambda: len(children(proc.pid)) >= count and any((f / runs.INCOMPLETE).exists() for f in folders()))
    time.sleep(settle)
    return children(proc.pid)


def stopped(proc: subprocess.Popen, workers: set[int], timeout: float = 30.0) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("the main process hangs")
    wait_for(lambda: not alive(workers), timeout=10)
    return proc.returncode, err


def _sweep(data_dir: Path, tmp_path: Path) -> tuple[list[str], Path]:
    cfg = tmp_path / "long.toml"
    cfg.write_text(SWEEP)
    out = tmp_path / "sweep"
    return ["sweep", "--config", str(cfg), "--data-dir", str(data_dir), "--out", str(out), "--workers", "2"], out


def test_sweep_twice_ctrl_c_stops_at_once_and_leaves_no_worker(data_dir, tmp_path):
    argv, out = _sweep(data_dir, tmp_path)
    proc = start(argv, tmp_path)
    workers = workers_training(proc, lambda: (out / "runs").glob("*"))
    os.killpg(proc.pid, signal.SIGINT)
    time.sleep(0.3)
    os.killpg(proc.pid, signal.SIGINT)
    code, err = stopped(proc, workers)
    # 130; or killed by the second SIGINT while the interpreter exits (what a shell also shows as 130)
    assert code in (130, -signal.SIGINT) and "Traceback" not in err
    assert "interrupted; 0 of 4 runs finished and kept in" in err


def test_sweep_sigterm_stops_the_workers_and_frees_the_run_folders(data_dir, tmp_path):
    argv, out = _sweep(data_dir, tmp_path)
    proc = start(argv, tmp_path)
    workers = workers_training(proc, lambda: (out / "runs").glob("*"))
    proc.send_signal(signal.SIGTERM)  # the main process only, as `kill PID` does
    code, err = stopped(proc, workers)
    assert code == 143 and "terminated; 0 of 4 runs finished and kept" in err
    started = [f for f in (out / "runs").iterdir() if (f / runs.INCOMPLETE).exists()]
    assert started
    for folder in started:  # no orphan holds them: a rerun may write there
        with runs.claimed(folder):
            pass


def _seed(data_dir: Path, tmp_path: Path, settle: float = 1.0) -> tuple[subprocess.Popen, set[int], Path]:
    """A long ``forgetless seed`` in two workers, once they are started."""
    out = tmp_path / "seed"
    proc = start(["seed", "--data-dir", str(data_dir), "--epochs", "500", "--strength", "10", "--workers", "2",
                  "--out", str(out)], tmp_path)
    return proc, workers_training(proc, lambda: [out], settle=settle), out


def test_seed_workers_die_with_a_killed_parent(data_dir, tmp_path):
    proc, workers, out = _seed(data_dir, tmp_path)
    proc.send_signal(signal.SIGKILL)  # no cleanup at all in the parent
    proc.communicate(timeout=30)
    wait_for(lambda: not alive(workers), timeout=10)
    with runs.claimed(out):  # the lock died with its owner
        pass


def test_seed_twice_ctrl_c_stops_at_once_and_leaves_no_worker(data_dir, tmp_path):
    proc, workers, _ = _seed(data_dir, tmp_path, settle=0)  # while the workers start: they ignore it too
    os.killpg(proc.pid, signal.SIGINT)
    time.sleep(0.3)
    os.killpg(proc.pid, signal.SIGINT)
    code, err = stopped(proc, workers)
    assert code in (130, -signal.SIGINT) and "nothing finished" in err and "Traceback" not in err
