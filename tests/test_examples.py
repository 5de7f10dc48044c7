"""The examples run as a user would run them: a fresh interpreter, PYTHONPATH=src, exit code 0.

Most of each run is importing torch (and Lightning), so the runs are started together, once per
module, and each test waits for its own.
"""
from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HAS_LIGHTNING = importlib.util.find_spec("lightning") is not None
HAS_PEFT = all(importlib.util.find_spec(m) is not None for m in ("transformers", "peft"))


def start(name: str, *args: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))}
    return subprocess.Popen([sys.executable, str(ROOT / "examples" / name), *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen) -> str:
    try:
        out, err = process.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
    assert process.returncode == 0, f"{process.args} exited {process.returncode}\n{out}\n{err}"
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("examples")
    started = {
        "plain": start("plain_pytorch.py", "--epochs", "2"),
        "first": start("resume_later.py", "--part", "first", "--out", str(folder / "resume"), "--epochs", "2"),
    }
    if HAS_LIGHTNING:
        started["lightning"] = start("lightning_callback.py", "--epochs", "2", "--out", str(folder / "lightning"))
    if HAS_PEFT:
        started["huggingface"] = start("huggingface_lora.py", "--out", str(folder / "huggingface"))
    yield folder, started
    for process in started.values():
        if process.poll() is None:
            process.kill()
            process.communicate()


def test_plain_pytorch_ewc_keeps_more_of_task_1(runs):
    out = finish(runs[1]["plain"])
    match = re.search(r"task 1 accuracy after task 2: without EWC ([\d.]+), with EWC ([\d.]+)", out)
    assert match, out
    without, with_ewc = map(float, match.groups())
    assert with_ewc > without + 0.1, out


def test_resume_later_in_two_processes(runs):
    folder, started = runs
    first = finish(started["first"])
    assert "saved model.safetensors and ewc.safetensors" in first
    assert {p.name for p in (folder / "resume").iterdir()} == {"model.safetensors", "ewc.safetensors"}
    later = finish(start("resume_later.py", "--part", "later", "--out", str(folder / "resume"), "--epochs", "2"))
    assert re.search(r"later: loaded EWC\(strength=200\.0, .*\) after 1 task", later), later
    assert "EWC now protects 2 tasks" in later, later


@pytest.mark.skipif(not HAS_LIGHTNING, reason="needs forgetless[lightning]")
def test_lightning_callback(runs):
    folder, started = runs
    out = finish(started["lightning"])
    assert "after task 2: task 1 " in out and "EWC tasks consolidated: 2" in out, out
    assert "identical: True" in out, out
    assert (folder / "lightning" / "after-task-2.ckpt").is_file()


@pytest.mark.skipif(not HAS_PEFT, reason="needs forgetless[transformers] and peft")
def test_huggingface_trainer_with_lora(runs):
    folder, started = runs
    out = finish(started["huggingface"])
    match = re.search(r"prose loss: before fine-tuning ([\d.]+); after, naive ([\d.]+), with EWC ([\d.]+)", out)
    assert match, out
    before, naive, with_ewc = map(float, match.groups())
    assert naive > before + 0.04 and with_ewc < naive - 0.03, out   # naive forgets prose, EWC much less
    match = re.search(r"EWC protects (\d+) parameters: the adapters' (\d+)", out)
    assert match and match.group(1) == match.group(2), out
    assert re.search(r"checkpoint-\d+/forgetless-regularizer.safetensors: EWC\(strength=1000.0, .*\), 1 task", out), out
    assert (folder / "huggingface" / "ewc").is_dir()
