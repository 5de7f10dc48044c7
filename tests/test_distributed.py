"""Under torch.distributed, N processes give the Fisher (and MAS importance) of the union of their shards.

Two real processes (gloo, CPU, a file:// rendezvous) each compute on their own shard; the parent
compares what every rank got with one process computing on the union. The shards are uneven (different
sample AND batch counts), so averaging the two ranks' averages instead of all-reducing sums and counts
would fail. The model mixes fast-path layers (Linear) with a torch.func one (LayerNorm).
"""
from __future__ import annotations

import datetime
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from forgetless import EWC, ESTIMATORS, MAS, OnlineEWC, fisher_diagonal, fisher_kfac
from forgetless.per_sample import output_norm_sensitivity

WORLD = 2
SEED = 11  # of the `sampled` estimator's generator, the same on every rank (as EWC does)
TOL = dict(rtol=1e-5, atol=1e-8)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.LayerNorm(8), nn.Tanh(), nn.Linear(8, 4))


def _batches(task: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Five mini-batches of uneven sizes; rank 0 gets the first three (29 samples), rank 1 the last two (16)."""
    g = torch.Generator().manual_seed(100 + task)
    return [(torch.randn(n, 6, generator=g), torch.randint(0, 4, (n,), generator=g)) for n in (12, 9, 8, 10, 6)]


def _shard(batches, rank):
    return batches[:3] if rank == 0 else batches[3:]


def _perturb(model):
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=g))


def _compute(rank: int | None) -> dict[str, dict[str, torch.Tensor]]:
    """Everything the test compares; rank None: one process on the union of the shards."""
    pick = (lambda b: b) if rank is None else (lambda b: _shard(b, rank))
    model, task0, task1 = _model(), pick(_batches(0)), pick(_batches(1))
    out = {}
    for estimator in ESTIMATORS:
        out[f"fisher/{estimator}"] = fisher_diagonal(
            model, task0, estimator=estimator, generator=torch.Generator().manual_seed(SEED))
    for estimator in ("exact", "empirical"):  # factors of both Linears, the diagonal for the LayerNorm
        kfac = fisher_kfac(model, task0, estimator=estimator)
        out[f"kfac/{estimator}"] = {**{f"{w}/{i}": f[i] for w, f in kfac.factors.items() for i in (0, 1)},
                                    **kfac.diagonal}
    out["mas/importance"] = output_norm_sensitivity(model, task0)
    # a rank with no data at all still takes part (its sums and count are zeros)
    only_rank0 = _shard(_batches(0), 0) if rank in (None, 0) else []
    out["fisher/rank 1 empty"] = fisher_diagonal(model, only_rank0)
    kfac = fisher_kfac(model, only_rank0)
    out["kfac/rank 1 empty"] = {**{f"{w}/{i}": f[i] for w, f in kfac.factors.items() for i in (0, 1)}, **kfac.diagonal}
    # two tasks through the regularizers, with the parameters moved in between
    regs = {"ewc": EWC(strength=3.0), "online-ewc": OnlineEWC(strength=2.0, decay=0.5, estimator="empirical"),
            "mas": MAS(strength=1.0), "ewc-batched": EWC(estimator="batched")}
    for reg in regs.values():
        reg.consolidate(model, task0)
    _perturb(model)
    for reg in regs.values():
        reg.consolidate(model, task1)
    for name, reg in regs.items():
        out[name] = reg.state_dict()
    return out


def _worker(rank: int, rendezvous: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    if sys.platform.startswith("linux"):  # loopback: no dependence on how the host name resolves
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=WORLD,
                            timeout=datetime.timedelta(seconds=60))
    try:
        torch.save(_compute(rank), Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _sampled_union() -> dict[str, torch.Tensor]:
    """`sampled` draws labels from a generator seeded the same on every rank, so its union is the
    sample-weighted mean of what each shard gives alone with that generator."""
    model, batches = _model(), _batches(0)
    sizes = [sum(len(x) for x, _ in _shard(batches, r)) for r in range(WORLD)]
    parts = [fisher_diagonal(model, _shard(batches, r), estimator="sampled",
                             generator=torch.Generator().manual_seed(SEED)) for r in range(WORLD)]
    return {name: sum(n * part[name] for n, part in zip(sizes, parts)) / sum(sizes) for name in parts[0]}


def test_two_processes_give_the_fisher_and_importance_of_the_union(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path / "rendezvous"), str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    union = _compute(None)
    union["fisher/sampled"] = _sampled_union()
    assert not dist.is_initialized()  # the parent really is a single process
    for r, got in enumerate(ranks):
        assert got.keys() == union.keys()
        for what, expected in union.items():
            assert got[what].keys() == expected.keys(), (r, what)
            for name in expected:
                torch.testing.assert_close(got[what][name], expected[name], **TOL,
                                           msg=lambda m: f"rank {r}, {what}, {name}: {m}")
    # sanity: the union differs from either shard alone (so the test can fail)
    alone = fisher_diagonal(_model(), _shard(_batches(0), 0))
    assert not torch.allclose(alone["3.weight"], union["fisher/exact"]["3.weight"], rtol=1e-3)
    # and the batched estimator is "average over all batches of all ranks": 5 batches, not 2 shards
    model, batches = _model(), _batches(0)
    per_shard = [fisher_diagonal(model, _shard(batches, r), estimator="batched") for r in range(WORLD)]
    mean_of_shards = (per_shard[0]["3.weight"] + per_shard[1]["3.weight"]) / 2
    weighted = (3 * per_shard[0]["3.weight"] + 2 * per_shard[1]["3.weight"]) / 5
    torch.testing.assert_close(union["fisher/batched"]["3.weight"], weighted, **TOL)
    assert not torch.allclose(union["fisher/batched"]["3.weight"], mean_of_shards, rtol=1e-3)
