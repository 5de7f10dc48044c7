"""prose-code in the runner: `forgetless run|compare|sweep --benchmark prose-code` on a tiny synthetic
corpus (the registry's text loader replaced), its defaults and their provenance, the loss matrices and
metrics, the refusals; one slow run on the real text."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from forgetless import runs
from forgetless.benchmarks import registry
from forgetless.cli import main
from forgetless.data import TextCorpus, TextData
from forgetless.provenance import sources
from forgetless.run_config import RunConfig, run_configs

TINY = ["--seq-len", "8", "--block-windows", "4", "--width", "16", "--layers", "1", "--heads", "2",
        "--iterations", "30", "--batch-size", "16", "--lr", "0.01"]


def toy_text() -> TextData:
    g = torch.Generator().manual_seed(0)
    words = [b"the ", b"cat ", b"sat ", b"on ", b"a ", b"mat ", b"and ", b"slept. "]
    prose = b"".join(words[int(i)] for i in torch.randint(0, len(words), (1200,), generator=g))
    lines = [b"def f(x):\n", b"    return x + 1\n", b"for i in range(3):\n", b"    print(i)\n"]
    code = b"".join(lines[int(i)] for i in torch.randint(0, len(lines), (400,), generator=g))
    return TextData(TextCorpus("prose", prose, "toy prose"), TextCorpus("code", code, "toy code"))


@pytest.fixture
def toy(monkeypatch) -> TextData:
    data = toy_text()
    monkeypatch.setitem(registry.DATASETS, "text", lambda data_dir=None, download=False: data)
    return data


def test_run_writes_accuracy_and_loss_matrices_with_what_it_ran_on(toy, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "--benchmark", "prose-code", "--method", "ewc", "--strength", "5", "--seeds", "0-1",
                 "--fisher-samples", "64", "--out", str(out), *TINY]) == 0
    for name in ("config.json", "result.json", "metrics.csv", "report.md", "accuracy_matrix.png",
                 "task_curves.png", "loss_curves.png"):
        assert (out / name).is_file(), name
    assert not (out / runs.INCOMPLETE).exists()
    result = json.loads((out / "result.json").read_text())
    assert result["task_names"] == ["prose", "code"] and result["loss_per"] == "byte"
    assert result["config"]["scenario"] == "domain"   # the benchmark's only scenario, not split MNIST's "task"
    info = result["benchmark_info"]
    assert info["domains"]["prose"]["sha256"] == toy.prose.sha256 and info["domains"]["code"]["sha256"] == toy.code.sha256
    assert info["python"] and info["seq_len"] == 8
    L = np.array([s["loss_matrix"] for s in result["seeds"]])
    R = np.array([s["accuracy_matrix"] for s in result["seeds"]])
    assert L.shape == R.shape == (2, 2, 2) and (R >= 0).all() and (R <= 1).all()
    # the untrained transformer (weights ~ N(0, 0.02)) predicts nearly uniform bytes: loss ≈ ln 256
    assert np.allclose([s["baseline_loss"] for s in result["seeds"]], math.log(256), atol=0.05)
    # each seed initialises its own network
    assert result["seeds"][0]["baseline_loss"] != result["seeds"][1]["baseline_loss"]
    assert (L[:, [0, 1], [0, 1]] < math.log(256) - 0.5).all()     # each domain learned when trained on
    m = result["metrics"]
    assert np.allclose(result["mean_loss_matrix"], L.mean(axis=0))
    assert m["average_loss"]["mean"] == pytest.approx(L[:, 1].mean())
    assert m["loss_forgetting"]["mean"] == pytest.approx((L[:, 1, 0] - L[:, 0, 0]).mean())
    assert m["loss_forgetting"]["sem"] == pytest.approx(np.std(L[:, 1, 0] - L[:, 0, 0], ddof=1) / math.sqrt(2))
    assert m["valid_average_loss"]["mean"] == pytest.approx(np.mean([np.mean(s["valid_loss_matrix"][-1])
                                                                    for s in result["seeds"]]))
    sources_ = result["setting_sources"]
    assert sources_["lr"] == "given" and sources_["estimator"].startswith("prose-code's default")
    assert result["config"]["estimator"] == "sampled"
    report = (out / "report.md").read_text()
    last = result["mean_loss_matrix"][-1][0]
    assert f"| prose | {last:.3f} | {last / math.log(2):.3f} | {math.exp(last):.2f} |" in report  # bits/byte, perplexity
    assert "prose after code" in report and "nats per byte" in report and toy.prose.sha256[:12] in report
    assert "average_loss" in capsys.readouterr().out


def test_the_strength_search_scores_validation_loss(toy, tmp_path):
    out = tmp_path / "auto"
    assert main(["run", "--benchmark", "prose-code", "--method", "l2", "--strength", "auto",
                 "--strength-grid", "0,1000", "--out", str(out), *TINY]) == 0
    result = json.loads((out / "result.json").read_text())
    search = result["strength_search"]
    assert search["score"].startswith("mean validation loss")
    assert search["validation_scores"] == search["validation_loss"]          # the loss itself, lower is better
    assert search["best"] == search["grid"][int(np.argmin(search["validation_loss"]))]
    first = result["seeds"][0]
    assert np.mean(first["valid_loss_matrix"][-1]) == pytest.approx(min(search["validation_loss"]))
    assert result["strength_source"] == "validation search (first seed)" and "strength" not in result["setting_sources"]
    assert result["setting_sources"]["strength_grid"] == "given"
    assert "mean validation loss" in (out / "report.md").read_text()


def test_compare_shows_each_domains_loss_per_method(toy, tmp_path):
    out = tmp_path / "compare"
    assert main(["compare", "--benchmark", "prose-code", "--methods", "naive,joint", "--out", str(out), *TINY]) == 0
    text = (out / "compare.md").read_text()
    assert "| method | strength | seeds | prose after prose | prose after code | code after code |" in text
    naive = json.loads((out / "naive" / "result.json").read_text())["seeds"][0]["loss_matrix"]
    assert f"| naive |  | 1 | {naive[0][0]:.3f} | {naive[1][0]:.3f} |" in text   # one seed: no ± (no spread measured)


def test_a_sweep_on_prose_code(toy, tmp_path, monkeypatch):
    from forgetless.executors import local

    monkeypatch.setattr(local, "run_local", lambda fn, jobs, *, workers: ((i, fn(*j), None) for i, j in enumerate(jobs)))
    config = tmp_path / "sweep.toml"
    config.write_text('[base]\nbenchmark = "prose-code"\nseq_len = 8\nblock_windows = 4\nwidth = 16\nlayers = 1\n'
                      'heads = 2\niterations = 10\n[grid]\nmethod = ["naive", "mas"]\n[grid.strength_by_method]\n'
                      'mas = [0.001]\n')
    out = tmp_path / "sweep"
    assert main(["sweep", "--config", str(config), "--out", str(out)]) == 0
    rows = json.loads((out / "sweep.json").read_text())["rows"]
    assert [(r["method"], r["scenario"]) for r in rows] == [("naive", "domain"), ("mas", "domain")]
    mas = json.loads(next((out / "runs").glob("mas-*/result.json")).read_text())
    assert mas["config"]["importance_samples"] == 512 and mas["config"]["batch_size"] == 32   # prose-code's defaults


@pytest.mark.parametrize("flags, message", [
    (["--data-dir", "/somewhere"], "prose-code reads its text from this Python's standard library: it takes no --data-dir"),
    (["--download"], "there is nothing to --download"),
    (["--scenario", "task"], "prose-code has only the domain scenario"),
    (["--hidden", "32"], "hidden is not a setting of method naive on prose-code"),
    (["--width", "30", "--heads", "4"], "width 30 is not a multiple of heads 4"),
])
def test_refusals_are_one_line_and_leave_nothing(flags, message, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "--benchmark", "prose-code", "--method", "naive", "--out", str(out), *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_benchmark_defaults_apply_to_the_runs_that_take_them():
    ewc, si, mas, naive = run_configs(["ewc", "si", "mas", "naive"], {"benchmark": "prose-code"})
    assert (ewc.iterations, ewc.batch_size, ewc.lr, ewc.reset_optimizer) == (1000, 32, 3e-3, True)
    assert (ewc.estimator, ewc.fisher_samples, mas.importance_samples) == ("sampled", 512, 512)
    assert "fisher_samples" not in si.resolved() and "estimator" not in naive.resolved()
    assert ewc.search_grid == (3.0, 10.0, 30.0, 100.0)                   # the benchmark's grid, not EWC's class grid
    assert mas.search_grid == tuple(map(float, mas_class_grid()))        # no grid of its own: the class's
    given = RunConfig(benchmark="prose-code", method="ewc", iterations=7, options={"estimator": "empirical"})
    assert (given.iterations, given.estimator) == (7, "empirical")
    assert sources(given)["iterations"] == sources(given)["estimator"] == "given"
    assert sources(given)["batch_size"].startswith("prose-code's default: ")
    # other benchmarks keep forgetless's defaults, and say so (split Fashion-MNIST has no committed strength search:
    # its strength is searched, forgetless.defaults.resolve_strength)
    mnist = RunConfig(benchmark="split-fashion", method="ewc")
    assert (mnist.iterations, mnist.batch_size, mnist.lr, mnist.estimator, mnist.resolved_strength) == (2000, 128, 1e-3, "exact", "auto")
    assert sources(mnist)["iterations"] == "forgetless's default (run_config.PROTOCOL)"
    assert sources(mnist)["estimator"] == "EWC's default"
    assert "strength" not in sources(mnist)   # the strength's source is strength_source's (forgetless.defaults)
    # a replaced strength (what a search does) keeps the record of what was given
    assert sources(given.with_strength(3.0))["batch_size"] == sources(given)["batch_size"]


def mas_class_grid():
    from forgetless.methods import METHODS

    return METHODS["mas"].strength_grid


def test_the_text_data_fingerprint_follows_the_bytes_and_mnists_is_unchanged():
    from forgetless.data import ImageData

    a, b = toy_text(), toy_text()
    assert registry.data_fingerprint(a) == registry.data_fingerprint(b)
    changed = TextData(a.prose, TextCorpus("code", a.code.text + b"#", "toy code"))
    assert registry.data_fingerprint(changed) != registry.data_fingerprint(a)
    imgs = np.arange(4 * 28 * 28, dtype=np.uint8).reshape(4, 28, 28)
    labels = np.arange(4, dtype=np.int64)
    # the value main computed before text data existed: MNIST run folders and sweep names stay reusable
    assert registry.data_fingerprint(ImageData(imgs, labels, imgs[:2], labels[:2], "toy")) == MNIST_TOY_FINGERPRINT


MNIST_TOY_FINGERPRINT = "4090bee179b39e1e"  # data_fingerprint on main at 183e3da


@pytest.mark.slow
def test_the_real_text_end_to_end(tmp_path):
    """Naive forgets prose while it learns code, EWC keeps more of it (a short protocol: ~50-90 s; with
    150 iterations the model had learned too little prose to show forgetting: 2.42 → 2.43 nats)."""
    out = tmp_path / "compare"
    assert main(["--threads", "1", "compare", "--benchmark", "prose-code", "--methods", "naive,ewc", "--strength", "30",
                 "--iterations", "400", "--width", "64", "--fisher-samples", "256", "--out", str(out)]) == 0
    naive, ewc = (json.loads((out / m / "result.json").read_text()) for m in ("naive", "ewc"))
    assert naive["benchmark_info"]["domains"]["prose"]["bytes"] > 300_000
    L_naive, L_ewc = naive["seeds"][0]["loss_matrix"], ewc["seeds"][0]["loss_matrix"]
    assert L_naive[0][0] == L_ewc[0][0]                    # the same first domain (no penalty before it ends)
    assert L_naive[0][0] < math.log(256) - 2               # prose learned
    assert L_naive[1][0] > L_naive[0][0] + 0.05            # naive forgets prose while learning code (seed 0: 1.897 → 2.010)
    assert L_ewc[1][0] < L_naive[1][0] - 0.05              # EWC forgets less (seed 0: 1.910)


@pytest.mark.parametrize("method, reset", [("ewc", True), ("si", False)])
def test_a_search_resumes_every_strength_after_the_first_task_bit_for_bit(method, reset):
    """The strength search trains the first task once: each strength's run equals a run from scratch."""
    from forgetless.experiment import benchmark_factory, choose_strength, run_seed

    tiny = {"seq_len": 8, "block_windows": 4, "width": 16, "layers": 1, "heads": 2}
    options = tiny | ({"fisher_samples": 64} if method == "ewc" else {})
    config = RunConfig(benchmark="prose-code", method=method, strength="auto", strength_grid=(0.1, 1000.0),
                       iterations=15, batch_size=16, reset_optimizer=reset, options=options)
    make_bench = benchmark_factory(config, toy_text())
    trained: list[str] = []
    search, chosen, curves = choose_strength(config, make_bench, lambda label, total: trained.append(label))
    assert sum("task 1/2" in label for label in trained) == 1 and sum("task 2/2" in label for label in trained) == 2
    for strength in (0.1, 1000.0):
        scratch = run_seed(config.with_strength(strength), make_bench(0), 0)
        assert curves["validation_loss"][curves["strengths"].index(strength)] == np.mean(scratch.valid_loss_matrix[-1])
        if strength == search.best:
            assert np.array_equal(scratch.loss_matrix, chosen.loss_matrix)
            assert np.array_equal(scratch.accuracy_matrix, chosen.accuracy_matrix)
    assert curves["validation_loss"][0] != curves["validation_loss"][1]   # the strengths did differ
