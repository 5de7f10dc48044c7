"""How long does `forgetless seed` take, compared with one training epoch, and where does the time go?

    python bench/bench_post.py [--quick] [--repeats R] [--no-table] [--no-profile] [--no-whatif]

Real MNIST (whatever `load_mnist()` finds: a data directory, the cache, or the embedded copy), the seed
net 784-128-5 with Dropout(0.5), Adam lr 1e-3, batch 128 (the defaults of `forgetless seed`). In ONE
process, round by round, at torch's default number of threads and at 1 thread:
  * one plain training epoch of the seed net over task A's training data (forgetless.training.train_task);
  * the Fisher pass of task A (EWC.consolidate on task A's training data, as the seed run does it);
  * the whole default run, `forgetless.cli.main(["seed", "--out", tmp])`, output silenced: in its
    default worker processes, and all in this process (`--workers 1`) at torch's default threads and at 1.
Times are medians over rounds; the runs are "warm" (imports done): the one-off import costs a fresh
`forgetless seed` process also pays are measured separately at the start.
Then (unless turned off):
  * a breakdown of one default run at 1 thread, by wrapping the functions it calls with timers
    (training steps split into forward, loss, backward, optimizer, batching, penalty; the Fisher;
    evaluation; data loading; plotting; report files);
  * what-if (1 thread, median of 5): one epoch of task A with changes the library could make (a mirror
    of train_task, so the first two rows check that the mirror costs what train_task costs).
The table also lists the optimizer steps of each procedure (the default run's time is mostly steps), and
times the default run (λ searched on validation data) and one with a given λ (--strength 2000).
Target (performance issue): `forgetless seed` <= 20 s on 2 cores.
"""
from __future__ import annotations

import time

_T0 = time.perf_counter()
import torch  # noqa: E402

_TORCH_IMPORT = time.perf_counter() - _T0

import argparse  # noqa: E402
import contextlib  # noqa: E402
import io  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from collections import defaultdict  # noqa: E402
from pathlib import Path  # noqa: E402

import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # run from a checkout, uninstalled
TARGET_S = 20.0
BATCH = 128


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def import_costs() -> dict[str, float]:
    """One-off imports a fresh `forgetless seed` pays, beyond what this script already imported."""
    costs = {"torch": _TORCH_IMPORT}
    for label, module in (("forgetless CLI + post modules", "forgetless.cli"),
                          ("torch._dynamo (first torch.optim step)", "torch._dynamo"),
                          ("matplotlib.pyplot (the figure)", "matplotlib.pyplot")):
        start = time.perf_counter()
        __import__(module)
        if module == "forgetless.cli":
            for also in ("forgetless.post", "forgetless.report", "forgetless.plots", "tqdm"):
                __import__(also)
        costs[label] = time.perf_counter() - start
    return costs


# --- the plain epoch, the Fisher, the whole run -------------------------------------------------------
class Setup:
    def __init__(self) -> None:
        from forgetless.benchmarks import post_split
        from forgetless.data import load_mnist
        from forgetless.post import PostConfig

        self.config = PostConfig()
        start = time.perf_counter()
        self.data = load_mnist()
        self.load_s = time.perf_counter() - start
        start = time.perf_counter()
        self.bench = post_split(self.data, seed=self.config.seed, valid_fraction=self.config.valid_fraction)
        self.split_s = time.perf_counter() - start
        self.task_a = self.bench.tasks[0].train
        self.model = None

    def new_model(self) -> nn.Module:
        from forgetless.models import mlp

        torch.manual_seed(0)
        return mlp(784, (self.config.hidden,), 5, self.config.dropout)

    def epoch(self) -> None:
        from forgetless.training import adam, train_task

        model = self.new_model()
        opt = adam(model, self.config.lr)
        train_task(model, self.task_a, steps=math.ceil(len(self.task_a) / BATCH), batch_size=BATCH,
                   optimizer=opt, generator=torch.Generator().manual_seed(1))
        self.model = model

    def fisher(self) -> None:
        from forgetless.regularizers import EWC

        EWC(2000.0).consolidate(self.model, (self.task_a.x, self.task_a.y))


def seed_run(threads: int | None, extra: list[str]) -> float:
    from forgetless.cli import main

    out = Path(tempfile.mkdtemp(prefix="bench-seed-"))
    argv = (["--threads", str(threads)] if threads else []) + ["seed", "--out", str(out / "run"), *extra]
    default = torch.get_num_threads()
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            start = time.perf_counter()
            code = main(argv)
            seconds = time.perf_counter() - start
        if code != 0:
            raise SystemExit(f"forgetless {' '.join(argv)} exited with {code}")
    finally:
        torch.set_num_threads(default)  # main() sets it process-wide
        shutil.rmtree(out, ignore_errors=True)
    return seconds


# --- breakdown by timers -----------------------------------------------------------------------------
class Timers:
    """Wrap functions (module or class attributes) with accumulating timers; restore afterwards."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._patches: list[tuple[object, str, object]] = []

    def wrap(self, owner, attr: str, label: str) -> None:
        original = getattr(owner, attr)

        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[label] += time.perf_counter() - start
                self.calls[label] += 1

        setattr(owner, attr, wrapper)
        self._patches.append((owner, attr, original))

    def wrap_generator(self, owner, attr: str, label: str) -> None:
        original = getattr(owner, attr)

        def wrapper(*args, **kwargs):
            inner = original(*args, **kwargs)
            while True:
                start = time.perf_counter()
                try:
                    item = next(inner)
                except StopIteration:
                    return
                finally:
                    self.seconds[label] += time.perf_counter() - start
                self.calls[label] += 1
                yield item

        setattr(owner, attr, wrapper)
        self._patches.append((owner, attr, original))

    def restore(self) -> None:
        for owner, attr, original in reversed(self._patches):
            setattr(owner, attr, original)
        self._patches.clear()


def breakdown(threads: int) -> None:
    import matplotlib.figure

    import forgetless.benchmarks.registry
    import forgetless.data
    import forgetless.files
    import forgetless.plots
    import forgetless.post
    import forgetless.report
    import forgetless.training
    from forgetless.regularizers import EWC, L2

    t = Timers()
    top = [  # disjoint, called from cmd_seed / run_post
        (forgetless.data, "load_mnist", "data: load_mnist"),
        (forgetless.benchmarks.registry, "post_split", "data: post_split (tasks, validation split)"),
        (forgetless.benchmarks.registry, "data_fingerprint", "data: fingerprint (sha256)"),
        (forgetless.post, "_union", "data: A ∪ B for multi-task"),
        (forgetless.post, "train_task", "training steps (train_task)"),
        (EWC, "consolidate", "Fisher of task A (EWC.consolidate)"),
        (forgetless.post, "accuracy", "evaluation (accuracy, test + valid)"),
        (forgetless.plots, "post_bars", "plot: post_bars"),
        (matplotlib.figure.Figure, "savefig", "plot: savefig"),
        (forgetless.report, "post_report", "report.md"),
        (forgetless.files, "write_json", "config.json, result.json"),
    ]
    inner = [  # inside train_task
        (nn.Sequential, "forward", "forward (model(x))"),
        (nn.Dropout, "forward", "  of which dropout"),
        (F, "cross_entropy", "loss (cross_entropy)"),
        (EWC, "penalty", "penalty: EWC (forward)"),
        (L2, "penalty", "penalty: L2 (forward)"),
        (torch.isfinite, None, None),
        (torch.Tensor, "backward", "backward (loss.backward)"),
        (torch.optim.Optimizer, "zero_grad", "optimizer.zero_grad"),
        (torch.optim.Adam, "step", "optimizer.step (Adam)"),
    ]
    for owner, attr, label in top:
        t.wrap(owner, attr, label)
    for owner, attr, label in inner:
        if attr is None:
            t.wrap(torch, "isfinite", "torch.isfinite(loss) check")
        else:
            t.wrap(owner, attr, label)
    t.wrap_generator(forgetless.training, "minibatches", "mini-batches (index + shuffle)")
    try:
        total = seed_run(threads, ["--workers", "1"])  # the timers see this process only
    finally:
        t.restore()
    steps = t.calls["optimizer.step (Adam)"]
    print(f"\nWhere one default `forgetless seed` run goes ({threads} thread(s)), {total:.2f} s warm, "
          f"{steps} optimizer steps ({1e3 * t.seconds['training steps (train_task)'] / max(1, steps):.3f} ms "
          f"per step in train_task):")
    print(f"  {'part':<48} {'seconds':>8} {'share':>6} {'calls':>7} {'ms/call':>8}")

    def row(label, indent=""):
        s, n = t.seconds[label], t.calls[label]
        print(f"  {indent + label:<48} {s:8.2f} {s / total:6.1%} {n:7d} {1e3 * s / max(1, n):8.3f}")

    accounted = 0.0
    for _, _, label in top:
        row(label)
        accounted += t.seconds[label]
        if label.startswith("training steps"):
            inside = 0.0
            for lab in ("forward (model(x))", "  of which dropout", "loss (cross_entropy)", "penalty: EWC (forward)",
                        "penalty: L2 (forward)", "torch.isfinite(loss) check", "backward (loss.backward)",
                        "optimizer.zero_grad", "optimizer.step (Adam)", "mini-batches (index + shuffle)"):
                row(lab, "    ")
                if not lab.startswith("  of which"):
                    inside += t.seconds[lab]
            rest = t.seconds[label] - inside
            print(f"  {'    rest of the loop (Python, float(loss), tqdm)':<48} {rest:8.2f} {rest / total:6.1%}")
    other = total - accounted
    print(f"  {'other (model copies, argument parsing, ...)':<48} {other:8.2f} {other / total:6.1%}")


# --- what-if: one epoch of task A under changes ---------------------------------------------------------
class FastDropout(nn.Module):
    """Dropout from a uniform draw (torch.rand) instead of bernoulli_: same distribution, other stream."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x):
        if not self.training or self.p == 0:
            return x
        return x * (torch.rand_like(x) >= self.p) * (1.0 / (1.0 - self.p))


def whatif_epoch(setup: Setup, *, index_select=True, fused=True, fast_dropout=False, skip_checks=False):
    """A mirror of train_task for one epoch of task A, with optional changes."""
    model = setup.new_model()
    if fast_dropout:
        for i, m in enumerate(model):
            if isinstance(m, nn.Dropout):
                model[i] = FastDropout(m.p)
    opt = torch.optim.Adam(model.parameters(), lr=setup.config.lr, fused=fused)
    x_all, y_all = setup.task_a.x, setup.task_a.y
    order = torch.randperm(len(x_all), generator=torch.Generator().manual_seed(1))
    model.train()
    recent = []
    for start in range(0, len(x_all), BATCH):
        idx = order[start:start + BATCH]
        if index_select:
            x, y = x_all.index_select(0, idx), y_all.index_select(0, idx)
        else:
            x, y = x_all[idx], y_all[idx]
        loss = F.cross_entropy(model(x), y)
        if not skip_checks and not torch.isfinite(loss):
            raise RuntimeError("nan")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        recent.append(loss.detach() if skip_checks else float(loss.detach()))
        del recent[:-50]


def whatif(setup: Setup, repeats: int, threads: int) -> None:
    variants = {
        "train_task as now": setup.epoch,
        "mirror of train_task": lambda: whatif_epoch(setup),
        "- index_select (x[idx] instead)": lambda: whatif_epoch(setup, index_select=False),
        "- fused Adam (foreach, torch's default)": lambda: whatif_epoch(setup, fused=False),
        "+ dropout mask from torch.rand": lambda: whatif_epoch(setup, fast_dropout=True),
        "+ no per-step isfinite/float sync": lambda: whatif_epoch(setup, skip_checks=True),
        "both": lambda: whatif_epoch(setup, fast_dropout=True, skip_checks=True),
    }
    default = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for fn in variants.values():
            fn()
        times = {k: [] for k in variants}
        for _ in range(repeats):
            for k, fn in variants.items():
                times[k].append(timed(fn))
    finally:
        torch.set_num_threads(default)
    t = {k: statistics.median(v) for k, v in times.items()}
    base = t["mirror of train_task"]
    steps = math.ceil(len(setup.task_a) / BATCH)
    print(f"\nWhat-if: one epoch of task A ({steps} steps), {threads} thread(s), median of {repeats}:")
    print(f"  {'variant':<36} {'epoch s':>8} {'ms/step':>8} {'vs mirror':>9}")
    for k, v in t.items():
        print(f"  {k:<36} {v:8.3f} {1e3 * v / steps:8.3f} {v / base:8.2f}x")


# --- main --------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="1 round, `seed --epochs 1`, no breakdown or what-if")
    ap.add_argument("--repeats", type=int, default=None, help="rounds (default 2; quick 1)")
    ap.add_argument("--no-profile", action="store_true", help="skip the breakdown of one run")
    ap.add_argument("--no-whatif", action="store_true", help="skip the what-if epochs")
    ap.add_argument("--no-table", action="store_true", help="skip the epoch / Fisher / whole-run table")
    args = ap.parse_args(argv)
    repeats = args.repeats or (1 if args.quick else 2)
    extra = ["--epochs", "1"] if args.quick else []
    default = torch.get_num_threads()
    print(f"torch {torch.__version__}, Python {platform.python_version()}, CPU, torch default threads {default}, "
          f"{os.cpu_count()} CPUs; load average before: {os.getloadavg()[0]:.1f}")
    costs = import_costs()
    setup = Setup()
    print("One-off costs of a fresh process: " + ", ".join(f"import {k} {v:.2f} s" for k, v in costs.items())
          + f"; load_mnist {setup.load_s:.2f} s ({setup.data.source}); post_split {setup.split_s:.2f} s")
    print(f"Task A: {len(setup.task_a)} training samples, {math.ceil(len(setup.task_a) / BATCH)} steps per epoch")

    from forgetless.post import ROWS, _steps, _union, first_strengths, schedules

    a, b = (t.train for t in setup.bench.tasks)
    epochs = int(extra[1]) if extra else setup.config.epochs
    cfg = type(setup.config)(epochs=epochs)
    plan = schedules(cfg)
    print(f"\nSteps of the default run{' (--epochs 1)' if extra else ''} (task-A phase shared by naive, l2, ewc):")
    total_steps = 0
    for name, s in plan.items():
        if name == "multitask":
            n = _steps(_union(a, b), s.epochs_a, cfg.batch_size)
            print(f"  {name:<10} {s.epochs_a} epochs over A ∪ B ({len(a) + len(b)} samples): {n} steps")
        else:
            n_a = _steps(a, s.epochs_a, cfg.batch_size) if name == "naive" else 0
            n = n_a + _steps(b, s.epochs_b, cfg.batch_size)
            shared = "" if name == "naive" else " (A shared with naive)"
            print(f"  {name:<10} {s.epochs_a} epochs on A + {s.epochs_b} on B: {n} steps{shared}")
        total_steps += n
    tried = len(first_strengths(cfg, ROWS["ewc"]))
    search = (tried - 1) * _steps(b, plan["ewc"].epochs_b, cfg.batch_size)
    print(f"  total {total_steps} optimizer steps with a given λ (--strength 2000); the default local λ search starts "
          f"with {tried} λ, {tried - 1} more B phases ({search} steps; its run at the chosen λ is the EWC result): "
          f"{total_steps + search}, plus one B phase ({search // max(1, tried - 1)} steps) per value it adds")

    if args.no_table:
        repeats = 0
    from forgetless.workers import available_cpus

    workers = available_cpus(8)
    # (label, threads for torch in this process, seed arguments); workers use one thread each
    settings = [(f"{workers} workers (default)", 1, []),
                (f"1 process, {default} threads", None, ["--workers", "1"]),
                ("1 process, 1 thread", 1, ["--workers", "1"])]
    times = {(label, what): [] for label, _, _ in settings for what in ("epoch", "fisher", "seed", "fixed")}
    # warm-up: the first optimizer step imports torch._dynamo, the first run imports matplotlib
    setup.epoch()
    setup.fisher()
    for r in range(repeats):
        for label, threads, args_ in settings:
            torch.set_num_threads(threads or default)
            times[(label, "epoch")].append(timed(setup.epoch))
            times[(label, "fisher")].append(timed(setup.fisher))
            torch.set_num_threads(default)
            times[(label, "seed")].append(seed_run(threads, [*extra, *args_]))
            times[(label, "fixed")].append(seed_run(threads, [*extra, *args_, "--strength", "2000"]))
    med = {k: statistics.median(v) if v else math.nan for k, v in times.items()}
    fresh = sum(costs.values()) + setup.load_s + setup.split_s
    if repeats:
        print(f"\n{'how':<28} {'epoch A s':>9} {'Fisher A s':>10} {'Fisher/epoch':>12} {'run':<14} {'seed run s':>10} "
              f"{'seed/epoch':>10} {'+fresh process s':>16} {'target':>8}")
        for label, _, _ in settings:
            e, f = med[(label, "epoch")], med[(label, "fisher")]
            for what, run in (("seed", "default (auto)"), ("fixed", "--strength 2000")):
                s = med[(label, what)]
                est = s + fresh - setup.load_s - setup.split_s  # the warm run already loads the data
                verdict = ("ok" if est <= TARGET_S else "MISS") + f"<={TARGET_S:g}"
                print(f"{label:<28} {e:9.3f} {f:10.3f} {f / e:11.2f}x {run:<14} {s:10.2f} {s / e:9.1f}x {est:16.1f} {verdict:>8}")
        print(f"(epoch and Fisher at the threads of one process or of one worker; seed run: warm (this process's "
              f"imports done; workers are spawned and import afresh), median of {repeats}; '+fresh process' adds the one-off imports above; "
              f"all runs: {', '.join(f'{v:.1f}' for k, vs in times.items() if k[1] in ('seed', 'fixed') for v in vs)} s)")

    if not args.quick and not args.no_profile:
        breakdown(1)
    if not args.quick and not args.no_whatif:
        whatif(setup, 5, 1)
    print(f"\nload average after: {os.getloadavg()[0]:.1f} (other processes on the machine inflate all times)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
