"""Does the Kronecker-factored Fisher beat the diagonal on the seed split? A quick calibration.

    python benchmarks/calibrate_kfac.py [--seeds 0,1,2] [--variants diagonal,kfac,kfac-damped] [--threads 1]

The fair protocol of ``forgetless seed``, run through its own ``SeedRunner`` (same data split, seeds,
batch order and dropout masks): 784-128-5 with Dropout(0.5), Adam lr 1e-3 fresh per task, batch 128,
6 epochs on task A (even digits) then 6 on task B (odd digits), EWC with the exact Fisher at task A's
optimum. Variants (``VARIANTS``): the diagonal Fisher, K-FAC undamped, K-FAC with damping 0.3. λ is
chosen per seed and variant on the validation split (10% held out of each task's training data) by
the local search of ``forgetless seed`` (``forgetless.strength.next_to_try``: the middle three values
of the variant's quarter-decade grid, then towards the best). Prints the validation curve and the
test accuracies on A and B at the chosen λ. Not a timing script: one process, ``--threads`` torch
threads (1 by default: a one-thread run gives the numbers ``forgetless seed`` gives).
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
from forgetless.seed import STRENGTH_GRID, SeedConfig, SeedRunner, schedules  # noqa: E402
from forgetless.strength import next_to_try  # noqa: E402


def quarter_decades(lo: int, hi: int) -> tuple[float, ...]:
    return tuple(round(10.0 ** (k / 4), 1) for k in range(lo, hi + 1))


# name -> (structure, damping, λ grid); the diagonal's grid is forgetless seed's (316 … 5623)
VARIANTS = {
    "diagonal": ("diagonal", 0.0, STRENGTH_GRID),
    "kfac": ("kfac", 0.0, quarter_decades(8, 14)),          # 100 … 3162
    "kfac-damped": ("kfac", 0.3, quarter_decades(3, 9)),    # 5.6 … 178
}


class Runner(SeedRunner):
    """``forgetless seed``'s jobs with EWC of a given Fisher structure and damping."""

    structure, damping = "diagonal", 0.0

    def ewc(self, strength: float) -> EWC:
        c = self.config
        return EWC(strength, estimator=c.estimator, structure=self.structure, kfac_damping=self.damping,
                   fisher_samples=c.fisher_samples, seed=c.seed)


def calibrate(seed: int, variants, data) -> dict:
    config = SeedConfig(seed=seed)
    bench = seed_split(data, seed=seed, valid_fraction=config.valid_fraction)
    schedule = schedules(config)["ewc"]
    results = {}
    for variant in variants:
        runner = Runner(config, bench)
        runner.structure, runner.damping, grid = VARIANTS[variant]
        after_a = runner.task_a_phase(schedule, with_ewc=True)  # the same model for every variant (seeded)
        runs, scores = {}, {}
        while more := next_to_try(grid, scores):
            for strength in more:
                runs[strength] = runner.task_b_phase("ewc", schedule, after_a, strength)
                valid = runs[strength]["valid_accuracy"]
                scores[strength] = sum(valid.values()) / len(valid)
        best = max(scores, key=scores.get)
        test = runs[best]["accuracy"]
        results[variant] = {"strength": best, "A": test["A"], "B": test["B"], "average": (test["A"] + test["B"]) / 2,
                              "curve": dict(sorted(scores.items())), "task_a_seconds": after_a["seconds"],
                              "task_b_seconds": round(statistics.median(r["seconds"] for r in runs.values()), 1)}
        r = results[variant]
        curve = ", ".join(f"{k:g}: {v:.4f}" for k, v in r["curve"].items())
        print(f"seed {seed} {variant:<11} λ={best:<8g} test A {r['A']:.4f} B {r['B']:.4f} average {r['average']:.4f}"
              f"   (task A + Fisher {r['task_a_seconds']} s, task B {r['task_b_seconds']} s; validation: {curve})",
              flush=True)
    return results


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--data-dir", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    variants = args.variants.split(",")
    data = load_mnist(args.data_dir)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); load average {os.getloadavg()[0]:.1f}")
    every = [calibrate(int(s), variants, data) for s in args.seeds.split(",")]
    for variant in variants:
        averages = [r[variant]["average"] for r in every]
        strengths = ", ".join(f"{r[variant]['strength']:g}" for r in every)
        print(f"{variant:<11} average over A and B per seed: {', '.join(f'{a:.4f}' for a in averages)}; "
              f"mean {statistics.mean(averages):.4f}; λ {strengths}")
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
