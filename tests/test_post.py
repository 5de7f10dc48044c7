"""The post's experiment as a table of procedures, on the shared strength search (tiny data, one process)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from forgetless import post
from forgetless.methods import METHODS
from forgetless.post_jobs import method_options
from forgetless.report import post_report
from forgetless.benchmarks import post_split
from forgetless.data import ImageData
from forgetless.strength import next_to_try

from synthetic import digit_images


@pytest.fixture(scope="module")
def bench():
    images, labels = digit_images(400, 1)
    test_images, test_labels = digit_images(100, 2)
    return post_split(ImageData(images, labels.astype(np.int64), test_images, test_labels.astype(np.int64), "toy"))


@pytest.mark.parametrize("stacked", [False, True])
def test_a_local_search_trains_each_strength_once_in_the_order_of_the_search(bench, monkeypatch, stacked):
    trained = []
    real, real_stacked = post.PostJobs.task_b_phase, post.PostJobs.task_b_phases

    def spy(self, name, schedule, after_a, strength=None):
        trained.append((name, strength))
        return real(self, name, schedule, after_a, strength)

    def spy_stacked(self, pairs, schedule, after_a):
        trained.extend(pairs)
        return real_stacked(self, pairs, schedule, after_a)

    monkeypatch.setattr(post.PostJobs, "task_b_phase", spy)
    monkeypatch.setattr(post.PostJobs, "task_b_phases", spy_stacked)
    config = post.PostConfig(epochs=1, hidden=16, strength_grid=(1.0, 10.0, 100.0, 1000.0, 10000.0))
    result = post.run_post(config, bench, stacked=stacked)
    assert result["search_rounds"]["ewc"][0]["trained"] == ("stacked with naive, l2" if stacked else
                                                            "one at a time: not asked for (--no-stacked)")
    tried = [s for name, s in trained if name == "ewc"]
    assert len(tried) == len(set(tried))  # no strength trained twice
    scores = dict(zip(result["strength_search"]["grid"], result["strength_search"]["validation_scores"]))
    assert set(tried) == {s for s, v in scores.items() if v is not None}
    expected, seen = list(next_to_try(config.strength_grid, {})), {}
    while expected:  # the local search's own sequence, replayed on the recorded scores
        seen.update({s: scores[s] for s in expected})
        expected = next_to_try(config.strength_grid, seen)
    assert set(seen) == set(tried)
    assert ("l2", 1.0) in trained and ("naive", None) in trained
    for later in result["search_rounds"]["ewc"][1:]:  # a search's next strengths: stacked within the row
        alone = "one at a time: alone in its round" if len(later["strengths"]) == 1 else "stacked"
        assert later["trained"] == (alone if stacked else "one at a time: not asked for (--no-stacked)")


def test_a_new_row_is_one_entry_in_the_table(bench, monkeypatch):
    row = post.Procedure("l2-strong", "l2", "l2_strength", post.Schedule(6, 6, 0.0))
    monkeypatch.setattr(post, "PROCEDURES", (*post.PROCEDURES, row))
    monkeypatch.setitem(post.ROWS, row.name, row)
    result = post.run_post(post.PostConfig(epochs=1, hidden=16, strength=10.0, l2_strength=3.0), bench)
    assert list(result["procedures"]) == ["multitask", "naive", "l2", "ewc", "ewc-kfac", "l2-strong"]
    assert result["procedures"]["l2-strong"]["hyperparameters"] == {"strength": 3.0}
    assert "l2-strong" not in result["post"]
    from forgetless.report import post_table

    assert "| l2-strong |" in post_table(result) and "– | – |" in post_table(result)


def test_the_kfac_row_searches_its_own_grid_from_one_consolidation(bench, monkeypatch):
    consolidated, trained = [], []
    real_a, real_b, real_stacked = post.PostJobs.task_a_phase, post.PostJobs.task_b_phase, post.PostJobs.task_b_phases

    def spy_a(self, schedule, names):
        consolidated.append(names)
        return real_a(self, schedule, names)

    def spy_b(self, name, schedule, after_a, strength=None):
        trained.append((name, strength))
        return real_b(self, name, schedule, after_a, strength)

    def spy_stacked(self, pairs, schedule, after_a):
        trained.extend(pairs)
        return real_stacked(self, pairs, schedule, after_a)

    monkeypatch.setattr(post.PostJobs, "task_a_phase", spy_a)
    monkeypatch.setattr(post.PostJobs, "task_b_phase", spy_b)
    monkeypatch.setattr(post.PostJobs, "task_b_phases", spy_stacked)
    config = post.PostConfig(epochs=1, hidden=16, strength=10.0, kfac_strength_grid=(1.0, 10.0, 100.0))
    result = post.run_post(config, bench)
    assert consolidated == [("ewc", "ewc-kfac", "l2")]  # task A once; K-FAC's factors once for every λ
    assert sorted(s for n, s in trained if n == "ewc-kfac") == [1.0, 10.0, 100.0] and ("ewc", 10.0) in trained
    search, row = result["kfac_strength_search"], result["procedures"]["ewc-kfac"]
    assert search["grid"] == [1.0, 10.0, 100.0] and result["config"]["kfac_strength"] == search["best"]
    assert result["config"]["kfac_strength_source"] == "validation search" and result["strength_search"] is None
    assert row["hyperparameters"]["structure"] == "kfac" and row["hyperparameters"]["kfac_damping"] == 0.3
    assert row["hyperparameters"]["strength"] == search["best"]
    # its state's size: A (785²) and G (16²) and the anchor of the hidden layer, the same of the output layer
    hidden = 785 * 785 + 16 * 16 + 16 * 785
    assert row["memory"]["1"] == {"structure": "kfac", "state_bytes": 4 * hidden, "parameter_bytes": 4 * 16 * 785}
    assert row["memory"]["4"]["structure"] == "kfac" and result["procedures"]["ewc"]["memory"]["1"]["structure"] == "diagonal"
    assert set(result["consolidate_seconds"]) == {"ewc", "ewc-kfac", "l2"}


def test_a_row_strength_that_cannot_be_searched_is_refused():
    with pytest.raises(ValueError, match="l2 strength must be a finite number >= 0, got 'auto'"):
        post.PostConfig(l2_strength="auto")
    with pytest.raises(ValueError, match="unknown Fisher estimator"):
        post.PostConfig(estimator="diagonal")
    with pytest.raises(ValueError, match="procedure ewc-kfac: estimator 'batched' has no Kronecker factors"):
        post.PostConfig(estimator="batched")
    with pytest.raises(ValueError, match="kfac_strength_grid must list finite strengths"):
        post.PostConfig(kfac_strength_grid=())
    with pytest.raises(ValueError, match="procedure ewc-kfac: kfac_damping must be a finite number >= 0"):
        post.PostConfig(kfac_damping=-1.0)


def test_each_row_gets_only_its_own_options():
    # the damping is an option of class EWC, so of both EWC rows' method: only the K-FAC row may take it
    config = post.PostConfig(kfac_damping=0.0, fisher_samples=100)
    assert method_options(config, post.ROWS["ewc-kfac"]) == {"estimator": "exact", "fisher_samples": 100,
                                                                  "kfac_damping": 0.0}
    assert method_options(config, post.ROWS["ewc"]) == {"estimator": "exact", "fisher_samples": 100}
    assert method_options(config, post.ROWS["l2"]) == {}
    assert post.PostConfig().kfac_damping == METHODS["ewc-kfac"].options["kfac_damping"].default == 0.3


def test_the_search_trained_stacked_chooses_and_scores_as_one_at_a_time(bench, monkeypatch):
    stacked_jobs = []
    real = post.PostJobs.task_b_phases

    def spy(self, pairs, schedule, after_a):
        stacked_jobs.append(pairs)
        return real(self, pairs, schedule, after_a)

    monkeypatch.setattr(post.PostJobs, "task_b_phases", spy)
    config = post.PostConfig(epochs=2, hidden=16, strength_grid=(1.0, 10.0, 100.0, 1e3, 1e4, 1e5),
                             kfac_strength_grid=(1.0, 10.0, 100.0))
    together = post.run_post(config, bench, stacked=True)
    alone = post.run_post(config, bench, stacked=False)
    assert together["stacked"] and not alone["stacked"]
    # after task A: K-FAC EWC's λ (its job is the costlier: submitted first), then EWC's with naive and L2
    assert stacked_jobs[:2] == [[("ewc-kfac", 1.0), ("ewc-kfac", 10.0), ("ewc-kfac", 100.0)],
                                [("ewc", 100.0), ("ewc", 1e3), ("ewc", 1e4), ("naive", None), ("l2", 1.0)]]
    assert all(n == "ewc" for pairs in stacked_jobs[2:] for n, _ in pairs)  # a search's later rounds
    for key in ("strength_search", "kfac_strength_search"):
        assert together[key]["best"] == alone[key]["best"]
        assert together[key]["validation_scores"] == pytest.approx(alone[key]["validation_scores"], abs=1e-9)
    assert len(set(together["strength_search"]["validation_scores"]) - {None}) > 1  # the strengths do differ
    for name, row in alone["procedures"].items():
        for split in ("accuracy", "valid_accuracy"):
            assert together["procedures"][name][split] == pytest.approx(row[split], abs=1e-9), name
    assert together["config"] == alone["config"]
    assert together["search_rounds"]["ewc"][0] == {"strengths": [100.0, 1e3, 1e4], "trained": "stacked with naive, l2"}
    assert together["search_rounds"]["naive"] == [{"strengths": [None], "trained": "stacked with ewc, l2"}]
    assert together["search_rounds"]["ewc-kfac"][0] == {"strengths": [1.0, 10.0, 100.0], "trained": "stacked"}
    assert alone["search_rounds"]["ewc"][0]["trained"] == "one at a time: not asked for (--no-stacked)"
    assert "λ searches (--stacked): EWC: 3 stacked with naive, l2" in post_report(together)
    assert "K-FAC EWC: 3 stacked." in post_report(together)


def test_under_the_posts_protocol_only_rows_with_one_task_a_and_schedule_are_stacked_together(bench):
    # naive and L2 (6+6 epochs, no dropout) share a task-A job; EWC and K-FAC EWC (3+9, dropout) another
    config = post.PostConfig(protocol="post", hidden=16, strength_grid=(1.0, 10.0, 100.0),
                             kfac_strength_grid=(1.0, 10.0, 100.0))
    together = post.run_post(config, bench, stacked=True)
    alone = post.run_post(config, bench, stacked=False)
    rounds = together["search_rounds"]
    assert rounds["naive"] == [{"strengths": [None], "trained": "stacked with l2"}]
    assert rounds["ewc"][0]["trained"] == "stacked" and rounds["ewc-kfac"][0]["trained"] == "stacked"
    for name, row in alone["procedures"].items():
        for split in ("accuracy", "valid_accuracy"):
            assert together["procedures"][name][split] == pytest.approx(row[split], abs=1e-9), name
    assert together["config"] == alone["config"]


@pytest.mark.parametrize("workers", [1, 2, 3, 4, 8])
def test_a_round_becomes_at_least_as_many_jobs_as_there_are_workers(bench, workers):
    from forgetless.post_stacked import bundles

    config = post.PostConfig(epochs=1, hidden=16)
    jobs, plan = post.PostJobs(config, bench, post.ROWS), post.schedules(config)
    after_a = jobs.task_a_phase(plan["ewc"], ("ewc", "ewc-kfac", "l2"))
    kfac, ewc = [("ewc-kfac", s) for s in (17.8, 31.6, 56.2)], [("ewc", s) for s in (1e3, 1778.3, 3162.3)]
    out = bundles(jobs, plan, after_a, [*ewc, *kfac, ("naive", None), ("l2", 1.0)], True, workers)
    assert sum(1 if why is None else len(group) for group, why in out) == max(2, workers)
    assert sorted(map(str, (p for group, _ in out for p in group))) == sorted(map(str, [*ewc, *kfac, ("naive", None), ("l2", 1.0)]))
    if workers <= 2:  # the 2-core machine's default: K-FAC's job first (the costlier), then the other rows'
        assert out == [(kfac, None), ([*ewc, ("naive", None), ("l2", 1.0)], None)]
    if workers == 4:
        assert out == [(kfac[:2], None), (ewc, None), (kfac[2:], "cut for 4 workers"), ([("naive", None), ("l2", 1.0)], None)]


def test_a_stacked_copy_that_diverged_reads_as_its_separate_job_would_fail():
    from concurrent.futures import Future

    from forgetless.post_stacked import Part
    from forgetless.training import TrainingError

    future = Future()
    future.set_result([{"valid_accuracy": {"A": 0.5}}, {"valid_accuracy": {"A": float("nan")}, "diverged": "loss became nan"}])
    assert Part(future, 0).result() == {"valid_accuracy": {"A": 0.5}}
    with pytest.raises(TrainingError, match="loss became nan"):
        Part(future, 1).result()
    assert math.isnan(post.score_or_nan(lambda s: Part(future, 1).result()["valid_accuracy"]["A"], 1.0))  # as a failed job
