"""Does the Kronecker-factored Fisher beat the diagonal on the seed split? A quick calibration.

    python benchmarks/calibrate_kfac.py [--seeds 0,1,2] [--structures diagonal,kfac] [--threads 1]

The fair protocol of ``forgetless seed``, run through its own ``SeedRunner`` (same data split, seeds,
batch order and dropout masks): 784-128-5 with Dropout(0.5), Adam lr 1e-3 fresh per task, batch 128,
6 epochs on task A (even digits) then 6 on task B (odd digits), EWC with the exact Fisher at task A's
optimum, diagonal or Kronecker-factored (``EWC(structure=...)``). λ is chosen per seed and structure
on the validation split (10% held out of each task's training data): a local search over half decades
10 … 10^5 (``forgetless.strength.next_to_try``: the middle three, then towards the best). Prints the
validation curve and the test accuracies on A and B at the chosen λ. Not a timing script: one process,
``--threads`` torch threads (1 by default: a one-thread run gives the numbers ``forgetless seed`` gives).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # run from a checkout, uninstalled
from forgetless.benchmarks import seed_split  # noqa: E402
from forgetless.data import load_mnist  # noqa: E402
from forgetless.regularizers import EWC  # noqa: E402
from forgetless.seed import SeedConfig, SeedRunner, schedules  # noqa: E402
from forgetless.strength import next_to_try  # noqa: E402

GRID = tuple(round(10 ** (k / 2), 1) for k in range(2, 11))  # 10, 31.6, …, 100000


class Runner(SeedRunner):
    """``forgetless seed``'s jobs with EWC of a given Fisher structure."""

    structure = "diagonal"

    def ewc(self, strength: float) -> EWC:
        c = self.config
        return EWC(strength, estimator=c.estimator, structure=self.structure, fisher_samples=c.fisher_samples,
                   seed=c.seed)


def calibrate(seed: int, structures, data) -> dict:
    config = SeedConfig(seed=seed)
    bench = seed_split(data, seed=seed, valid_fraction=config.valid_fraction)
    schedule = schedules(config)["ewc"]
    results = {}
    for structure in structures:
        runner = Runner(config, bench)
        runner.structure = structure
        after_a = runner.task_a_phase(schedule, with_ewc=True)  # the same model for every structure (seeded)
        runs, scores = {}, {}
        while more := next_to_try(GRID, scores):
            for strength in more:
                runs[strength] = runner.task_b_phase("ewc", schedule, after_a, strength)
                valid = runs[strength]["valid_accuracy"]
                scores[strength] = sum(valid.values()) / len(valid)
        best = max(scores, key=scores.get)
        test = runs[best]["accuracy"]
        results[structure] = {"strength": best, "A": test["A"], "B": test["B"], "average": (test["A"] + test["B"]) / 2,
                              "curve": dict(sorted(scores.items())), "task_a_seconds": after_a["seconds"],
                              "task_b_seconds": round(statistics.median(r["seconds"] for r in runs.values()), 1)}
        r = results[structure]
        curve = ", ".join(f"{k:g}: {v:.4f}" for k, v in r["curve"].items())
        print(f"seed {seed} {structure:<8} λ={best:<8g} test A {r['A']:.4f} B {r['B']:.4f} average {r['average']:.4f}"
              f"   (task A + Fisher {r['task_a_seconds']} s, task B {r['task_b_seconds']} s; validation: {curve})",
              flush=True)
    return results


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--structures", default="diagonal,kfac")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--data-dir", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    structures = args.structures.split(",")
    data = load_mnist(args.data_dir)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); load average {os.getloadavg()[0]:.1f}")
    every = [calibrate(int(s), structures, data) for s in args.seeds.split(",")]
    for structure in structures:
        averages = [r[structure]["average"] for r in every]
        strengths = ", ".join(f"{r[structure]['strength']:g}" for r in every)
        print(f"{structure:<8} average over A and B per seed: {', '.join(f'{a:.4f}' for a in averages)}; "
              f"mean {statistics.mean(averages):.4f}; λ {strengths}")
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
