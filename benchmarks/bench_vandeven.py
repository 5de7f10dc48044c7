"""CPU cost of the van de Ven & Tolias 2019 runs (configs/vandeven2019/): per step, per consolidation,
per evaluation round, and the CPU-hours of the full runs, measured here and now.

    python benchmarks/bench_vandeven.py [--steps 200] [--rounds 3]

Random MNIST-shaped data (the cost does not depend on the pixels), one torch thread (what a sweep
worker uses). For each protocol and method, interleaved round by round so that load on a shared
machine hits all of them alike (medians over rounds):
  * a training step as `forgetless run` takes it (batch 128, Adam, the method's penalty active and,
    for SI, its path integral), after one consolidation;
  * one consolidation on a whole task's training set (split MNIST ~12,000 images; permuted MNIST
    60,000 with their protocol, 54,000 with ours), with the protocol's Fisher estimator;
  * one evaluation round: the test sets of all tasks (and the validation sets in ours).
A run is then T·iterations steps + T consolidations + T evaluation rounds.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # run from a checkout, uninstalled
from forgetless.benchmarks.base import Split  # noqa: E402
from forgetless.models import mlp  # noqa: E402
from forgetless.regularizers import REGULARIZERS  # noqa: E402
from forgetless.training import accuracy, adam, train_task  # noqa: E402

# name: inputs, hidden, outputs, tasks, iterations, lr, training images per task, test (+valid) images
# evaluated per round, estimator, online EWC's (γ, decay_in_penalty), seeds × cells of the full runs.
PROTOCOLS = {
    "split theirs": dict(inputs=784, hidden=(400, 400), outputs=10, tasks=5, iterations=2000, lr=1e-3,
                         train=12000, evaluated=10000, estimator="predicted", decay=(0.8, True), runs=10 * 3),
    "split ours": dict(inputs=784, hidden=(400, 400), outputs=10, tasks=5, iterations=2000, lr=1e-3,
                       train=10800, evaluated=16000, estimator="exact", decay=(1.0, False), runs=10 * 3),
    "permuted theirs": dict(inputs=1024, hidden=(1000, 1000), outputs=10, tasks=10, iterations=5000, lr=1e-4,
                            train=60000, evaluated=100000, estimator="predicted", decay=(0.9, True), runs=3),
    "permuted ours": dict(inputs=784, hidden=(1000, 1000), outputs=10, tasks=10, iterations=5000, lr=1e-4,
                          train=54000, evaluated=160000, estimator="exact", decay=(1.0, False), runs=3),
}
METHODS = ("naive", "ewc", "online-ewc", "si")
STRENGTH = {"ewc": 100.0, "online-ewc": 100.0, "si": 1.0}


def _data(n: int, inputs: int, outputs: int, seed: int) -> Split:
    g = torch.Generator().manual_seed(seed)
    return Split(torch.rand(n, inputs, generator=g), torch.randint(0, outputs, (n,), generator=g))


def _regularizer(method: str, p: dict):
    if method == "naive":
        return None
    if method == "si":
        return REGULARIZERS["si"](strength=STRENGTH["si"])
    options = {"estimator": p["estimator"]}
    if method == "online-ewc":
        options |= {"decay": p["decay"][0], "decay_in_penalty": p["decay"][1]}
    return REGULARIZERS[method](strength=STRENGTH[method], **options)


def measure(p: dict, method: str, steps: int) -> dict[str, float]:
    """Seconds per step, per consolidation and per evaluation round for one protocol and method."""
    torch.manual_seed(0)
    model = mlp(p["inputs"], p["hidden"], p["outputs"])
    task = _data(p["train"], p["inputs"], p["outputs"], 1)
    reg = _regularizer(method, p)
    optimizer = adam(model, p["lr"])
    generator = torch.Generator().manual_seed(0)
    consolidate = 0.0
    if reg is not None:
        train_task(model, task, steps=5, optimizer=optimizer, generator=generator, regularizer=reg)
        start = time.perf_counter()
        reg.consolidate(model, (task.x, task.y))
        consolidate = time.perf_counter() - start
    train_task(model, task, steps=10, optimizer=optimizer, generator=generator, regularizer=reg)  # warm-up
    start = time.perf_counter()
    train_task(model, task, steps=steps, optimizer=optimizer, generator=generator, regularizer=reg)
    step = (time.perf_counter() - start) / steps
    evaluated = _data(p["evaluated"], p["inputs"], p["outputs"], 2)
    start = time.perf_counter()
    accuracy(model, evaluated)
    return {"step": step, "consolidate": consolidate, "evaluate": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200, help="timed training steps per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (medians are reported)")
    parser.add_argument("--protocols", default=",".join(PROTOCOLS), help="comma-separated, of: " + ", ".join(PROTOCOLS))
    args = parser.parse_args()
    torch.set_num_threads(1)
    chosen = [name.strip() for name in args.protocols.split(",")]
    samples: dict[tuple[str, str], list[dict[str, float]]] = {}
    for _ in range(args.rounds):
        for name in chosen:
            for method in METHODS:
                samples.setdefault((name, method), []).append(measure(PROTOCOLS[name], method, args.steps))
    print(f"torch {torch.__version__}, 1 thread, {args.steps} steps × {args.rounds} rounds (medians)\n")
    print("| protocol | method | ms/step | consolidate s | eval round s | one run, CPU-min | runs | CPU-h |")
    print("|---|---|---|---|---|---|---|---|")
    total: dict[str, float] = {}
    for (name, method), values in samples.items():
        p = PROTOCOLS[name]
        med = {k: statistics.median(v[k] for v in values) for k in values[0]}
        run = p["tasks"] * (p["iterations"] * med["step"] + med["consolidate"] + med["evaluate"])
        hours = run * p["runs"] / 3600
        total[name] = total.get(name, 0.0) + hours
        print(f"| {name} | {method} | {1000 * med['step']:.2f} | {med['consolidate']:.2f} | {med['evaluate']:.2f} | "
              f"{run / 60:.1f} | {p['runs']} | {hours:.2f} |")
    print()
    for name, hours in total.items():
        print(f"{name}: {hours:.1f} CPU-hours for every method's runs (before any strength search)")


if __name__ == "__main__":
    main()
