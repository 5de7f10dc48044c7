"""How long does the Fisher take, compared with one training epoch and with a batch-size-1 loop?

    python benchmarks/bench_fisher.py [--quick] [--samples N] [--repeats R]

Random MNIST-shaped data (N = 30000 samples of 784 pixels in [0, 1], 5 or 10 classes). For each network,
in ONE process, interleaved round by round so that load on a shared machine hits all of them alike:
  * one plain training epoch: Adam (lr 1e-3, fused as in training), batch 128, cross-entropy, over the same N samples;
  * fisher_diagonal for each estimator, given the data in batches of 128 (what a user's DataLoader
    yields; the engine gathers them into passes of 512), of 512 and of 2048;
  * the straightforward per-sample loop (batch size 1, autograd.grad on log p; for ``exact`` a loop over
    classes weighted by p) on a subset, extrapolated to N; it is also the correctness reference.
Times are medians over repeats; the "flops" column is the ratio of multiply-adds, the floor that
Fisher/epoch would reach if both ran at the same speed (the epoch pays for small batches and Adam).
Targets (performance issues), with batches of 128: exact <= 0.6 epoch, sampled/empirical/predicted
<= 0.45 epoch, and >= 100x faster than the batch-size-1 loop.
"""
from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # run from a checkout, uninstalled
from forgetless.fisher import fisher_diagonal  # noqa: E402
from forgetless.training import adam  # noqa: E402

NETWORKS = {"784-128-5 (seed)": ((128,), 5), "784-400-400-10": ((400, 400), 10),
            "784-1000-1000-10": ((1000, 1000), 10)}
ESTIMATORS = ("exact", "sampled", "empirical", "predicted", "batched")
TARGET = {"exact": 0.6, "sampled": 0.45, "empirical": 0.45, "predicted": 0.45}
USER_BATCH = 128  # the targets hold for data in the batches a DataLoader typically yields


def mlp(hidden: tuple[int, ...], classes: int) -> nn.Module:
    layers, width = [], 784
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    return nn.Sequential(*layers, nn.Linear(width, classes))


def flops_ratio(hidden: tuple[int, ...], classes: int, estimator: str) -> float:
    """Multiply-adds of the Fisher pass / of a training step, per sample: the floor of Fisher/epoch.

    Training: forward F + weight gradients (F again) + input gradients B of layers 2..L. The Fisher:
    forward F + K backward directions of input gradients K·B + one weight-gradient-sized product per
    layer for the reduction (F); K = C−1 for exact, 1 for sampled/empirical; batched = training.
    """
    dims = (784, *hidden, classes)
    fwd = sum(a * b for a, b in zip(dims, dims[1:]))
    back = fwd - dims[0] * dims[1]
    k = classes - 1 if estimator == "exact" else 1
    return (2 * fwd + k * back) / (2 * fwd + back)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def train_epoch(model, opt, x, y, batch=128) -> None:
    model.train()
    order = torch.randperm(len(x))
    for i in range(0, len(x), batch):
        idx = order[i:i + batch]
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()


def loop_fisher(model, x, y, estimator) -> dict[str, torch.Tensor]:
    """The batch-size-1 reference (sampled costs what empirical costs: one gradient per sample)."""
    model.eval()
    params = [p for p in model.parameters() if p.requires_grad]
    total = [torch.zeros_like(p) for p in params]
    for i in range(len(x)):
        logp = torch.log_softmax(model(x[i:i + 1]), dim=1)[0]
        terms = [(float(logp[c].detach().exp()), c) for c in range(len(logp))] if estimator == "exact" \
            else [(1.0, int(y[i]))]
        for w, c in terms:
            for t, g in zip(total, torch.autograd.grad(logp[c], params, retain_graph=True)):
                t.add_(g.square(), alpha=w)
    return {n: t / len(x) for (n, _), t in zip(model.named_parameters(), total)}


def rel_error(a: dict, b: dict) -> float:
    """Largest |a − b| relative to the largest |b| of the same tensor (tensors that are 0 in b: absolute)."""
    return max(float((a[n] - b[n]).abs().max() / b[n].abs().max().clamp_min(1e-30)) for n in b)


def bench(name, hidden, classes, n, repeats, loop_n, batch_sizes):
    torch.manual_seed(0)
    x, y = torch.rand(n, 784), torch.randint(0, classes, (n,))
    model = mlp(hidden, classes)
    trained = copy.deepcopy(model)  # epochs on random labels kill its ReLUs: the Fisher uses the fresh one
    opt = adam(trained, 1e-3)  # the optimizer forgetless trains with (fused where torch has it)
    batches = {bs: [(x[i:i + bs], y[i:i + bs]) for i in range(0, n, bs)] for bs in batch_sizes}
    runs = {"epoch": lambda: train_epoch(trained, opt, x, y)}
    for est in ESTIMATORS:
        for bs in batch_sizes:
            runs[(est, bs)] = lambda est=est, bs=bs: fisher_diagonal(model, batches[bs], estimator=est)
    for fn in runs.values():  # warm-up: allocator, vmap and autograd caches
        fn()
    times = {key: [] for key in runs}
    for _ in range(repeats):  # interleaved rounds
        for key, fn in runs.items():
            times[key].append(timed(fn))
    t = {key: statistics.median(v) for key, v in times.items()}

    # the bs-1 loop on a subset, in `repeats` chunks; extrapolated to n; doubles as the reference
    loop, errors = {}, {}
    sub = max(1, loop_n // repeats)
    for est in ("exact", "empirical"):
        chunk_times = []
        for r in range(repeats):
            xs, ys = x[r * sub:(r + 1) * sub], y[r * sub:(r + 1) * sub]
            chunk_times.append(timed(lambda: loop_fisher(model, xs, ys, est)))
        loop[est] = statistics.median(chunk_times) * n / sub
        ref = loop_fisher(model, x[:sub], y[:sub], est)
        errors[est] = rel_error(fisher_diagonal(model, (x[:sub], y[:sub]), estimator=est), ref)
    loop["sampled"] = loop["predicted"] = loop["empirical"]

    epoch = t["epoch"]
    print(f"\n{name}: N={n}, {classes} classes, data in batches of {USER_BATCH}; one training epoch "
          f"(Adam, batch 128) = {epoch:.3f} s "
          f"(load average {os.getloadavg()[0]:.1f})")
    print(f"  {'estimator':<10} {'Fisher s':>9} {'Fisher/epoch':>13} {'target':>7} "
          f"{'flops':>6} {'bs-1 loop s':>12} {'loop/Fisher':>12}   Fisher/epoch at each incoming batch size")
    for est in ESTIMATORS:
        tf = t[(est, USER_BATCH)]
        ratio = tf / epoch
        target = TARGET.get(est)
        verdict = "" if target is None else ("ok" if ratio <= target else "MISS") + f"<={target}"
        lp = f"{loop[est]:12.1f} {loop[est] / tf:11.0f}x" if est in loop else f"{'-':>12} {'-':>12}"
        sizes = ", ".join(f"{bs}: {t[(est, bs)] / epoch:.2f}x" for bs in batch_sizes)
        floor = flops_ratio(hidden, classes, est)
        print(f"  {est:<10} {tf:9.3f} {ratio:12.2f}x {verdict:>7} {floor:5.2f}x {lp}   {sizes}")
    print("  flops = multiply-adds of the Fisher pass / of a training step (Fisher/epoch if both ran "
          "equally fast)")
    print(f"  max relative error vs the bs-1 loop on {sub} samples: "
          + ", ".join(f"{e} {v:.1e}" for e, v in errors.items()))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="N=3000, 2 repeats, 60-sample loop: a smoke run")
    ap.add_argument("--samples", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--networks", default=",".join(NETWORKS), help="comma-separated names or prefixes of: "
                    + "; ".join(NETWORKS))
    args = ap.parse_args(argv)
    n = args.samples or (3000 if args.quick else 30000)
    repeats = args.repeats or (2 if args.quick else 5)
    loop_n = 60 if args.quick else 300
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, Python {platform.python_version()}, {torch.get_num_threads()} threads, "
          f"float32, CPU; load average before: {os.getloadavg()[0]:.1f}")
    chosen = [name for name in NETWORKS if any(name.startswith(p.strip()) for p in args.networks.split(","))]
    for name in chosen:
        hidden, classes = NETWORKS[name]
        bench(name, hidden, classes, n, repeats, loop_n, batch_sizes=(USER_BATCH, 512, 2048))
    print(f"\nload average after: {os.getloadavg()[0]:.1f} (other processes on the machine inflate all times)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
