"""Does training a λ search's K strengths as one stacked model (forgetless.stacked) pay?

    python bench/bench_stacked.py [--quick] [--k 3,6] [--steps 60] [--rounds 3] [--threads 1]
                                  [--penalties diagonal,kfac,rows] [--no-search] [--search-iterations 20]

The λ search's task-B phase as the post's experiment runs it: K copies of one task-A model, each under
its regularizer (its state consolidated once), trained on the same batches of 128 with the same dropout
masks. Penalties: ``diagonal`` (EWC at K λ), ``kfac`` (the ewc-kfac variant at K λ: damped Kronecker
factors shared by the copies; seed net only) and ``rows`` (the post's rows that share task A: naive, L2
and K − 2 EWC λ; seed net only). Per network (784-128-5 with Dropout(0.5) = the seed net;
784-400-400-10, no dropout) and K, in ONE process, interleaved round by round so that load on a shared
machine hits both alike:

- one at a time: K × ``train_task`` (autograd penalty, fused Adam), what ``PostJobs.task_b_phase`` does;
- stacked: one ``train_stacked`` over the K copies.

Each round times ``--steps`` steps of each (after a warm-up); the ratio is the median over rounds of
(one-at-a-time time / stacked time) in the same round: > 1 means stacked is faster. Only the
training steps are timed here.

Then the whole search of ``forgetless run --strength auto`` (``experiment.choose_strength``: training,
a Fisher per task and strength, evaluation) on split MNIST's five tasks made of random MNIST-shaped
images, EWC's grid cut to ``--k``'s largest value, ``--search-iterations`` steps per task, no dropout
(``run`` stacks only without it), ``stack=True`` against ``stack=False``, both forced.

Random data throughout. Prints the load average with the numbers: on a shared machine, repeat.
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # run from a checkout, uninstalled
import numpy as np  # noqa: E402

from forgetless.benchmarks.base import Split  # noqa: E402
from forgetless.data import ImageData  # noqa: E402
from forgetless.experiment import benchmark_factory, choose_strength  # noqa: E402
from forgetless.run_config import RunConfig  # noqa: E402
from forgetless.models import mlp  # noqa: E402
from forgetless.regularizers import EWC, L2  # noqa: E402
from forgetless.regularizers.kronecker_state import KFAC_DAMPING, KFAC_STRENGTH_GRID as KFAC_GRID  # noqa: E402
from forgetless.stacked import StackedMLP, train_stacked  # noqa: E402
from forgetless.training import adam, train_task  # noqa: E402

NETWORKS = {"784-128-5 (seed, dropout 0.5)": ((128,), 5, 0.5), "784-400-400-10": ((400, 400), 10, 0.0)}
GRID = (316.2, 562.3, 1000.0, 1778.3, 3162.3, 5623.4)  # post.STRENGTH_GRID
BATCH = 128


def setup(hidden, outputs, dropout, k, penalty="diagonal"):
    """The model, data and K copies' regularizers: EWC at K strengths (``diagonal`` or ``kfac``, the
    ewc-kfac variant's damping and grid), or ``rows``: the post's rows sharing task A (naive, L2 and
    K - 2 EWC strengths)."""
    torch.manual_seed(0)
    model = mlp(784, hidden, outputs, dropout)
    data = Split(torch.rand(4096, 784), torch.randint(0, outputs, (4096,)))
    kfac = penalty == "kfac"
    ewc = EWC(1.0, structure="kfac", kfac_damping=KFAC_DAMPING) if kfac else EWC(1.0)
    ewc.consolidate(model, (data.x[:512], data.y[:512]))
    regs = []
    for strength in ((KFAC_GRID if kfac else GRID) * 2)[:k if penalty != "rows" else k - 2]:
        reg = EWC(strength, structure="kfac", kfac_damping=KFAC_DAMPING) if kfac else EWC(strength)
        reg.load_state_dict(ewc.state_dict())
        regs.append(reg)
    if penalty == "rows":
        l2 = L2(1.0)
        l2.consolidate(model)
        regs += [None, l2]
    return model, data, regs


def one_at_a_time(model, data, regs, steps):
    for reg in regs:
        m = copy.deepcopy(model)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(2)
            train_task(m, data, steps=steps, batch_size=BATCH, optimizer=adam(m, 1e-3),
                       generator=torch.Generator().manual_seed(2), regularizer=reg)


def stacked(model, data, regs, steps):
    stack = StackedMLP([copy.deepcopy(model) for _ in regs])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(2)
        train_stacked(stack, data, steps=steps, batch_size=BATCH, optimizer=adam(stack, 1e-3),
                      generator=torch.Generator().manual_seed(2), regularizers=regs)


def timed(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and rounds (a smoke run)")
    parser.add_argument("--k", default="3,6", help="numbers of strengths, comma-separated")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the post's workers use 1)")
    parser.add_argument("--penalties", default="diagonal,kfac,rows",
                        help="EWC diagonal, EWC kfac (seed net only), rows: naive + L2 + K-2 EWC (seed net only)")
    parser.add_argument("--no-search", action="store_true", help="skip the whole-search part")
    parser.add_argument("--search-iterations", type=int, default=20, help="steps per task in the run search")
    parser.add_argument("--search-rounds", type=int, default=2)
    args = parser.parse_args()
    steps, rounds = (10, 2) if args.quick else (args.steps, args.rounds)
    search_iterations, search_rounds = (5, 1) if args.quick else (args.search_iterations, args.search_rounds)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), {steps} steps x {rounds} rounds, "
          f"batch {BATCH}; load average at start {os.getloadavg()[0]:.2f}")
    print(f"{'network':32} {'K':>2} {'one-at-a-time ms/step':>22} {'stacked ms/step':>16} {'speed-up':>9}")
    cases = [(name, net, k, penalty) for penalty in args.penalties.split(",") for name, net in NETWORKS.items()
             for k in (int(v) for v in args.k.split(",")) if penalty == "diagonal" or name.endswith("(seed, dropout 0.5)")]
    for name, (hidden, outputs, dropout), k, penalty in cases:
        model, data, regs = setup(hidden, outputs, dropout, k, penalty)
        name = f"{name.split(' ')[0]} {penalty}"
        one_at_a_time(model, data, regs, 3), stacked(model, data, regs, 3)  # warm-up
        single, stack, ratios = [], [], []
        for _ in range(rounds):
            a = timed(one_at_a_time, model, data, regs, steps)
            b = timed(stacked, model, data, regs, steps)
            single.append(a * 1e3 / (k * steps))
            stack.append(b * 1e3 / (k * steps))
            ratios.append(a / b)
        print(f"{name:32} {k:>2} {statistics.median(single):>22.3f} {statistics.median(stack):>16.3f} "
              f"{statistics.median(ratios):>8.2f}x  (rounds {min(ratios):.2f}-{max(ratios):.2f})")
    print(f"load average now {os.getloadavg()[0]:.2f}; ms/step counts one copy's step (stacked: the stacked step / K)")
    if args.no_search:
        return
    k = max(int(v) for v in args.k.split(","))
    rng = np.random.default_rng(0)
    data = ImageData(rng.integers(0, 256, (3000, 28, 28), dtype=np.uint8), rng.integers(0, 10, 3000),
                     rng.integers(0, 256, (500, 28, 28), dtype=np.uint8), rng.integers(0, 10, 500), "random")
    print(f"\nforgetless run --strength auto: EWC, {k} strengths, split MNIST (5 tasks, random images, "
          f"{search_iterations} steps per task), whole search; {search_rounds} rounds")
    print(f"{'network':32} {'one-at-a-time s':>16} {'stacked s':>10} {'speed-up':>9}")
    for name, hidden in (("784-128-10", (128,)), ("784-400-400-10", (400, 400))):
        config = RunConfig(method="ewc", strength="auto", strength_grid=tuple(10.0 ** i for i in range(k)),
                           iterations=search_iterations, options={"hidden": hidden})
        make_bench = benchmark_factory(config, data)
        single, stack, ratios = [], [], []
        for _ in range(search_rounds):
            a = timed(choose_strength, config, make_bench, None, False)
            b = timed(choose_strength, config, make_bench, None, True)
            single.append(a), stack.append(b), ratios.append(a / b)
        print(f"{name:32} {statistics.median(single):>16.2f} {statistics.median(stack):>10.2f} "
              f"{statistics.median(ratios):>8.2f}x  (rounds {min(ratios):.2f}-{max(ratios):.2f})")
    print(f"load average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
