"""The post's two-task run (even digits, then odd) in forgetless and in Avalanche 0.6, side by side.

    python bench/bench_avalanche.py [--rounds R] [--rows naive,ewc,ewc-fused,ewc-exact] [--epochs E]
                                    [--strength λ] [--exact-strength λ] [--threads T] [--seed S]

Avalanche is not a dependency of forgetless: run this from a virtual environment that has both (see
bench/README.md for how to build one). Without Avalanche the script stops with a message saying so.

The same work on both sides, in ONE process, at one torch thread (default), timed by wall clock:
real MNIST (``load_mnist()``), the seed split of ``forgetless seed`` (task A's and task B's training
data after its seeded 10% validation hold-out; their test sets), the network of ``forgetless seed``'s
fair protocol (784-128-5 with Dropout(0.5), the same initial weights on both sides), its optimizer
(Adam, lr 1e-3, fresh per task; ``forgetless.training.adam``, the fused kernel, on both sides), batch
128, 6 epochs on A then 6 on B. A row is timed from building the model to the end of task B's
training, each library doing what its user writes:
  * forgetless: the loop of the README (``train_task`` and ``EWC.consolidate`` after each task);
  * Avalanche: ``Naive`` / ``EWC`` strategies over a two-experience ``tensors_benchmark``,
    ``strategy.train(experience, eval_streams=[], reset_optimizer_state=True)`` per task, with an
    evaluator that has no metrics and no loggers (Avalanche's cheapest setting; its default evaluator
    computes and prints accuracy and loss every epoch and costs more).
Rows:
  * ``naive``: A then B, no penalty.
  * ``ewc``: the same Fisher on both sides. Avalanche's ``EWCPlugin`` computes, after each experience,
    the square of each mini-batch's MEAN-loss gradient (true labels, batches of 128 in order, eval mode)
    averaged over batches; that is forgetless's ``estimator="batched"``, which this row uses, given the
    same in-order batches. Avalanche's penalty is λ_av·Σ F (θ−θ*)², forgetless's (λ/2)·Σ F (θ−θ*)²:
    Avalanche gets ``ewc_lambda = λ/2``. Both consolidate after task B too (Avalanche always does; the
    README's loop does). Avalanche keeps one term per experience where forgetless folds them: with two
    tasks the penalty on B has one term either way. Before the rounds the script computes both Fishers
    of task A on one model and prints their largest difference (measured: 0, bit for bit).
  * ``ewc-fused``: ``ewc`` with forgetless's opt-in fused penalty (``reg.add_penalty_gradient_(model)``
    after the backward instead of the penalty in the loss; the README's loop, written out here), timed
    against the same round's Avalanche ``ewc``.
  * ``ewc-exact``: forgetless's default, the exact per-sample Fisher (a different and costlier
    quantity: Σ over the 5 classes of each sample's squared score), at its own λ; its ratio is taken
    against the same round's Avalanche ``ewc`` time (Avalanche has no per-sample Fisher).
Rounds are interleaved (each round runs every row in both libraries, the library order alternating
between rounds); the ratios are Avalanche's time / forgetless's, per round and their median. Test
accuracies on A and B after task B are printed for both (forgetless's ``accuracy`` on both models), so
a reader sees the same work was done; shuffling and dropout masks differ, so they agree only roughly
(every run starts from the same global seed, so each library repeats its own accuracies every round).
Target (issue 14): the two-task EWC run >= 3x faster than in Avalanche 0.6.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # run from a checkout, uninstalled
ROWS = ("naive", "ewc", "ewc-fused", "ewc-exact")
TARGET = 3.0


def import_avalanche():
    """Avalanche's strategies, or exit with a message. Avalanche imports torchvision, whose PyPI wheels
    are CUDA builds: next to a CPU torch their compiled ops fail to load, and torchvision 0.28 then
    fails at import registering shapes for two detection ops (nms, qnms) it cannot find. Declaring those
    two operators' schemas (no kernels) lets it import; nothing on the path timed here calls them."""
    try:
        import torchvision  # noqa: F401
    except ModuleNotFoundError:
        pass  # Avalanche's own import below says what is missing
    except RuntimeError as err:
        if "torchvision::" not in str(err):
            raise
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        lib = torch.library.Library("torchvision", "DEF")
        for op in ("nms", "qnms"):
            lib.define(op + "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        import_avalanche.keep = lib  # a Library's definitions live as long as the object
        print(f"note: torchvision's compiled ops do not load here ({err}); declared nms/qnms to import it")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # its optional solvers, deprecations of the tensor benchmark
            import avalanche
            from avalanche.benchmarks.scenarios.deprecated.generators import tensors_benchmark
            from avalanche.training.plugins import EvaluationPlugin
            from avalanche.training.supervised import EWC, Naive
    except ImportError as err:
        sys.exit(f"bench_avalanche: Avalanche is not importable ({err}). It is not a dependency of "
                 "forgetless: build a virtual environment with both, as bench/README.md says.")
    return avalanche.__version__, tensors_benchmark, EvaluationPlugin, Naive, EWC


class Work:
    """The data, network and settings shared by both libraries."""

    def __init__(self, args: argparse.Namespace) -> None:
        from forgetless.benchmarks import post_split
        from forgetless.data import load_mnist
        from forgetless.post import PostConfig

        self.config = PostConfig(seed=args.seed)
        self.args = args
        self.bench = post_split(load_mnist(), seed=args.seed, valid_fraction=self.config.valid_fraction)
        self.tasks = self.bench.tasks

    def new_model(self) -> nn.Module:
        from forgetless.models import mlp

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.args.seed)  # the same initial weights in both libraries
            return mlp(784, (self.config.hidden,), 5, self.config.dropout)

    def in_order_batches(self, split):
        from forgetless.training import minibatches

        return minibatches(split, self.config.batch_size)  # as Avalanche's Fisher loader: no shuffling


def run_forgetless(work: Work, row: str) -> nn.Module:
    from forgetless import EWC
    from forgetless.post_jobs import steps
    from forgetless.training import adam, train_task

    c, args = work.config, work.args
    model = work.new_model()
    reg = None
    if row in ("ewc", "ewc-fused"):
        reg = EWC(strength=args.strength, estimator="batched")
    elif row == "ewc-exact":
        reg = EWC(strength=args.exact_strength, estimator="exact")
    generator = torch.Generator().manual_seed(args.seed)
    for task in work.tasks:
        n_steps, optimizer = steps(task.train, args.epochs, c.batch_size), adam(model, c.lr)
        if row == "ewc-fused":
            fused_loop(model, task.train, n_steps, c.batch_size, optimizer, generator, reg)
        else:
            train_task(model, task.train, steps=n_steps, batch_size=c.batch_size, optimizer=optimizer,
                       generator=generator, regularizer=reg)
        if reg is not None:
            reg.consolidate(model, work.in_order_batches(task.train))
    return model


def fused_loop(model, data, n_steps, batch_size, optimizer, generator, reg) -> None:
    """The README's opt-in: the penalty's gradient added to ``.grad`` after the backward, not in the loss
    (the same batches as ``train_task``; its NaN check and loss log left out, as a user's loop would)."""
    from forgetless.training import endless_minibatches, task_loss

    model.train()
    batches = endless_minibatches(data, batch_size, generator)
    for _ in range(n_steps):
        x, y = next(batches)
        loss = task_loss(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        reg.add_penalty_gradient_(model)
        optimizer.step()


def run_avalanche(work: Work, row: str, av) -> nn.Module:
    from forgetless.training import adam

    _, tensors_benchmark, EvaluationPlugin, Naive, EWC = av
    c, args = work.config, work.args
    model = work.new_model()
    scenario = work.av_scenario
    common = dict(model=model, optimizer=adam(model, c.lr), criterion=nn.CrossEntropyLoss(),
                  train_mb_size=c.batch_size, train_epochs=args.epochs, eval_mb_size=4096, device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no loggers specified": none wanted
        common["evaluator"] = EvaluationPlugin(loggers=[])
        strategy = Naive(**common) if row == "naive" else EWC(ewc_lambda=args.strength / 2, **common)
    for experience in scenario.train_stream:
        strategy.train(experience, eval_streams=[], reset_optimizer_state=True)
    return model


def fisher_difference(work: Work) -> float:
    """Largest difference, relative to the largest entry, between Avalanche's EWC importances and
    forgetless's ``batched`` Fisher of task A on one model (untimed): the ``ewc`` rows compute the same."""
    from avalanche.training.plugins import EWCPlugin

    from forgetless import fisher_diagonal
    from forgetless.training import adam

    model = work.new_model()
    ours = fisher_diagonal(model, work.in_order_batches(work.tasks[0].train), estimator="batched")
    theirs = EWCPlugin(1.0).compute_importances(model, nn.CrossEntropyLoss(), adam(model, 1e-3),
                                                work.av_scenario.train_stream[0].dataset, "cpu",
                                                work.config.batch_size)
    scale = max(float(f.abs().max()) for f in ours.values())
    return max(float((ours[n] - theirs[n].data).abs().max()) for n in ours) / scale


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--rows", default=",".join(ROWS), help="comma-separated, of " + ", ".join(ROWS))
    p.add_argument("--epochs", type=int, default=6, help="per task (forgetless seed's fair protocol: 6)")
    p.add_argument("--strength", type=float, default=1e5,
                   help="forgetless's λ for the batched Fisher (Avalanche gets λ/2)")
    p.add_argument("--exact-strength", type=float, default=1778.3,
                   help="λ of the ewc-exact row (what forgetless seed chose on seed 0)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    rows = [r for r in args.rows.split(",") if r]
    if unknown := sorted(set(rows) - set(ROWS)):
        p.error(f"unknown rows {unknown}; choose from {', '.join(ROWS)}")
    av = import_avalanche()
    torch.set_num_threads(args.threads)
    from forgetless.training import accuracy

    work = Work(args)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        work.av_scenario = av[1](
            train_tensors=[(t.train.x, t.train.y) for t in work.tasks],
            test_tensors=[(t.test.x, t.test.y) for t in work.tasks], task_labels=[0, 0])
    print(f"torch {torch.__version__}, Avalanche {av[0]}, {torch.get_num_threads()} thread(s); "
          f"A {len(work.tasks[0].train)} / B {len(work.tasks[1].train)} training samples, "
          f"{args.epochs}+{args.epochs} epochs, batch {work.config.batch_size}, λ {args.strength:g} (batched), "
          f"{args.exact_strength:g} (exact)")
    print(f"Fisher of task A, Avalanche's EWCPlugin against forgetless's batched estimator, same model: "
          f"largest difference {fisher_difference(work):.1e} of the largest entry")
    times = {(lib, r): [] for lib in ("forgetless", "avalanche") for r in rows}
    accs = {}
    for k in range(args.rounds):
        libs = ("forgetless", "avalanche") if k % 2 == 0 else ("avalanche", "forgetless")
        for row in rows:
            for lib in libs:
                if lib == "avalanche" and row in ("ewc-exact", "ewc-fused"):
                    continue
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(args.seed + 1)  # dropout masks (and Avalanche's shuffling): the same every round
                    start = time.perf_counter()
                    model = run_forgetless(work, row) if lib == "forgetless" else run_avalanche(work, row, av)
                    times[lib, row].append(time.perf_counter() - start)
                accs[lib, row] = [accuracy(model, t.test) for t in work.tasks]
                print(f"round {k + 1} {lib:10s} {row:9s} {times[lib, row][-1]:7.2f} s  "
                      f"test A {accs[lib, row][0]:.4f} B {accs[lib, row][1]:.4f}", flush=True)
    print("\nrow        forgetless s (median)  avalanche s (median)  ratio per round            median ratio")
    for row in rows:
        against = "ewc" if row in ("ewc-exact", "ewc-fused") else row
        fl, avs = times["forgetless", row], times.get(("avalanche", against), [])
        if not avs:
            print(f"{row:10s} {statistics.median(fl):8.2f}  (no Avalanche {against} row run)")
            continue
        ratios = [a / f for a, f in zip(avs, fl)]
        print(f"{row:10s} {statistics.median(fl):8.2f}              {statistics.median(avs):8.2f}"
              f"              {' '.join(f'{r:.2f}' for r in ratios):26s} {statistics.median(ratios):.2f}x"
              + ("  (vs Avalanche's ewc)" if against != row else "")
              + (f"  target >= {TARGET:g}x" if row == "ewc" else ""))


if __name__ == "__main__":
    main()
