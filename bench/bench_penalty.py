"""What does a regularizer's penalty add to a training step, and does it grow with the number of tasks?

    python bench/bench_penalty.py [--quick] [--tasks 1,10,100] [--repeats R] [--threads T]

For each network (784-128-5 = the seed net, 784-400-400-10, 784-1000-1000-10), batch 128, Adam, random
MNIST-shaped data, in ONE process, interleaved round by round so that load on a shared machine hits all
of them alike (each round times a block of steps of every variant; ratios are medians over rounds of
the ratio to the plain step of the same round, times are medians):

1. implementations of ``quadratic_penalty`` (one task, EWC-shaped weights): a step with
   ``0.5·λ·penalty`` added, relative to a plain step; the penalty's forward+backward alone; and the
   bytes the penalty's graph keeps alive until the backward (allocations recorded by torch's profiler),
   relative to the parameters' bytes. The original loop is kept here as the reference.
2. the regularizers (EWC, OnlineEWC, SI with its ``after_step``, MAS, L2) after 1, 10, 100
   ``consolidate`` calls, through autograd (``loss + reg.penalty(model)``) and with the opt-in fused
   gradient (``reg.add_penalty_gradient_(model)`` after ``backward``); ``consolidate`` on 256 samples;
   and the naive EWC — a Python sum over tasks
   of separate terms, what EWC would cost without folding — after the largest number of tasks.
3. regularizer state bytes (the tensors of ``state_dict()``) relative to the model's parameter bytes;
   SI both between tasks and during one (it keeps the path integral while a task runs, and a copy of
   the parameters from step to step unless ``before_step`` is called before every step).

4. Kronecker-factored EWC (issue 10) on the seed net (with its Dropout(0.5)) and 784-400-400-10:
   EWC(structure="kfac") after 1, 2, 5, 10 tasks (one term per task: the cost grows), OnlineEWC(kfac)
   with separate terms and with merged ones (constant), beside the diagonal EWC; the floor of the ratio
   if every multiply-add ran at the same speed (the penalty's G·ΔW̄·A per layer and term against the
   step's forward and backward); state bytes and memory() per layer.

Targets (performance issue): step with penalty <= 1.15x a plain step, state <= 3x the parameters, and
neither growing with the number of tasks. Issue 10: a step with the K-FAC penalty (one task) <= 2.0x a
plain step on the seed net, <= 1.3x on 784-400-400-10. RSS is a process-lifetime peak and torch's CPU allocator
keeps no statistics, so memory is counted in tensor bytes: the state, and what the graph keeps.
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # run from a checkout, uninstalled
from forgetless import quadratic  # noqa: E402
from forgetless.fisher import fisher_diagonal  # noqa: E402
from forgetless.models import mlp  # noqa: E402
from forgetless.regularizers import EWC, L2, MAS, SI, OnlineEWC  # noqa: E402
from forgetless.regularizers.base import Regularizer, snapshot, trainable_parameters  # noqa: E402

NETWORKS = {"784-128-5 (seed)": ((128,), 5), "784-400-400-10": ((400, 400), 10),
            "784-1000-1000-10": ((1000, 1000), 10)}
TARGET_STEP, TARGET_STATE = 1.15, 3.0
BATCH, SAMPLES = 128, 256


# --- 1. implementations of Σ w (θ − θ*)² ---------------------------------------------------------
def loop_original(params, anchor, weight=None):
    """forgetless before the performance issue: autograd through a loop, new_zeros + adds."""
    names = list(anchor)
    total = params[names[0]].new_zeros(())
    for name in names:
        diff = params[name] - anchor[name]
        squares = diff * diff if weight is None else weight[name] * diff * diff
        total = total + squares.sum()
    return total


def loop_dot(params, anchor, weight=None):
    """Autograd, one dot product per tensor, stacked."""
    terms = []
    for name, a in anchor.items():
        d = (params[name] - a).reshape(-1)
        terms.append(torch.dot(d if weight is None else weight[name].reshape(-1) * d, d))
    return torch.stack(terms).sum()


def foreach_autograd(params, anchor, weight=None):
    """Autograd through torch._foreach_sub/_foreach_mul (on CPU they loop in C++, no fused kernel)."""
    names = list(anchor)
    d = torch._foreach_sub([params[n] for n in names], [anchor[n] for n in names])
    wd = d if weight is None else torch._foreach_mul(d, [weight[n] for n in names])
    return torch.stack([torch.dot(x.reshape(-1), y.reshape(-1)) for x, y in zip(wd, d)]).sum()


class _Recompute(torch.autograd.Function):
    """Saves nothing but the inputs; the backward recomputes 2·w·(θ − θ*)."""

    @staticmethod
    def forward(ctx, anchors, weights, *thetas):
        d = torch._foreach_sub(thetas, anchors)
        wd = d if weights is None else torch._foreach_mul(d, weights)
        ctx.anchors, ctx.weights, ctx.thetas = anchors, weights, thetas
        return torch.stack([torch.dot(x.reshape(-1), y.reshape(-1)) for x, y in zip(wd, d)]).sum()

    @staticmethod
    def backward(ctx, g):
        d = torch._foreach_sub(ctx.thetas, ctx.anchors)
        if ctx.weights is not None:
            torch._foreach_mul_(d, ctx.weights)
        torch._foreach_mul_(d, 2 * g)
        return (None, None, *d)


class _NewGrad(torch.autograd.Function):
    """Keeps w·(θ − θ*) for the backward, which returns new tensors 2·grad·w·(θ − θ*)."""

    @staticmethod
    def forward(ctx, anchors, weights, *thetas):
        d = torch._foreach_sub(thetas, anchors)
        wd = d if weights is None else torch._foreach_mul(d, weights)
        ctx.save_for_backward(*wd)
        return torch.stack([torch.dot(x.reshape(-1), y.reshape(-1)) for x, y in zip(wd, d)]).sum()

    @staticmethod
    def backward(ctx, g):
        return (None, None, *torch._foreach_mul(ctx.saved_tensors, 2 * g))


def function_new_grad(params, anchor, weight=None):
    names = list(anchor)
    return _NewGrad.apply([anchor[n] for n in names], None if weight is None else [weight[n] for n in names],
                          *[params[n] for n in names])


def function_recompute(params, anchor, weight=None):
    names = list(anchor)
    return _Recompute.apply([anchor[n] for n in names], None if weight is None else [weight[n] for n in names],
                            *[params[n] for n in names])


IMPLEMENTATIONS = {
    "loop (original)": loop_original,
    "loop + dot": loop_dot,
    "foreach, autograd": foreach_autograd,
    "Function, recompute": function_recompute,
    "Function, keeps w*d, new grads": function_new_grad,
    "forgetless (keeps w*d, grad in it)": quadratic.quadratic_penalty,
}


# --- helpers -------------------------------------------------------------------------------------
def nbytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def param_bytes(model) -> int:
    return nbytes(trainable_parameters(model).values())


def state_bytes(reg: Regularizer) -> int:
    """Bytes of the per-parameter state tensors; the 0-d scalars (task count, EWC's constant: a few
    bytes whatever the model) are left out, so that "3x" reads 3.00x and not 3.00001x."""
    seen, total = set(), 0
    for t in (t for t in reg.state_dict().values() if t.dim() > 0):
        key = (t.untyped_storage().data_ptr(), t.numel())
        if key not in seen:  # a tensor stored under two names counts once
            seen.add(key)
            total += t.numel() * t.element_size()
    return total


def kept_bytes(fn) -> int:
    """Bytes allocated while ``fn()`` runs that are still alive when it returns: what the penalty's
    graph keeps for its backward (plus the 0-d result). Torch's profiler records CPU allocations."""
    from torch.profiler import ProfilerActivity, profile

    sys.stderr.flush()
    saved_fd = os.dup(2)  # the profiler's C++ side logs its start and stop on stderr
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            out = fn()
        kept = sum(e.self_cpu_memory_usage for e in prof.key_averages())
    finally:
        os.dup2(saved_fd, 2)
        os.close(saved_fd)
        os.close(devnull)
    del out
    return kept


class NaiveEWC:
    """EWC as a sum over tasks of separate terms (what folding avoids): state and cost grow with tasks."""

    def __init__(self, strength: float) -> None:
        self.strength, self.terms = strength, []

    def add(self, fisher, theta) -> None:
        self.terms.append((fisher, theta))

    def penalty(self, model):
        params = trainable_parameters(model)
        return 0.5 * self.strength * sum(quadratic.quadratic_penalty(params, a, f) for f, a in self.terms)

    def after_step(self, model) -> None:
        pass

    def state_bytes(self) -> int:
        return sum(nbytes(f.values()) + nbytes(a.values()) for f, a in self.terms)


def fused_foreach(reg: Regularizer, model) -> None:
    """The opt-in fused gradient as it was before it went tensor by tensor and looked parameters up by
    name (kept as the reference): every parameter by name, one _foreach_sub over all tensors, then one
    _foreach_addcmul_."""
    scale, anchor, weight = reg.quadratic()
    thetas, anchors, weights, _ = quadratic._gather(dict(model.named_parameters()), anchor, weight)
    with torch.no_grad():
        diffs = torch._foreach_sub([t.detach() for t in thetas], anchors)
        torch._foreach_addcmul_([t.grad for t in thetas], diffs, weights, value=2 * scale)


class Stepper:
    """One model, one Adam, cycling over a few fixed batches: every variant runs the same step."""

    def __init__(self, model, classes: int) -> None:
        self.model = model
        self.opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        self.x, self.y = torch.rand(8 * BATCH, 784), torch.randint(0, classes, (8 * BATCH,))
        self.i = 0

    def batch(self):
        s = (self.i % 8) * BATCH
        self.i += 1
        return self.x[s:s + BATCH], self.y[s:s + BATCH]

    def step(self, extra=None, after=None, before=None) -> None:
        x, y = self.batch()
        loss = F.cross_entropy(self.model(x), y)
        if extra is not None:
            loss = loss + extra()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if before is not None:
            before()
        self.opt.step()
        if after is not None:
            after()


def interleaved(runs: dict, repeats: int, block: int) -> tuple[dict, dict]:
    """Seconds per call of each run, timed in blocks of ``block`` calls, round by round.

    Returns (median seconds, median over rounds of the ratio to the first run of the same round):
    the paired ratio cancels load that changes between rounds.
    """
    for fn in runs.values():  # warm-up
        for _ in range(2):
            fn()
    times = {key: [] for key in runs}
    for _ in range(repeats):
        for key, fn in runs.items():
            fn()  # untimed: whatever the previous run left in caches and the allocator is not charged here
            start = time.perf_counter()
            for _ in range(block):
                fn()
            times[key].append((time.perf_counter() - start) / block)
    first = next(iter(runs))
    ratios = {key: statistics.median(a / b for a, b in zip(v, times[first])) for key, v in times.items()}
    return {key: statistics.median(v) for key, v in times.items()}, ratios


def block_for(stepper: Stepper, seconds: float) -> int:
    stepper.step()
    start = time.perf_counter()
    for _ in range(3):
        stepper.step()
    return max(2, round(seconds / ((time.perf_counter() - start) / 3)))


def verdict(ratio: float, target: float) -> str:
    return "ok" if ratio <= target else "MISS"


def si_during_task(si: Regularizer, model) -> tuple[int, int]:
    """SI's state bytes three steps into the next task, started where the kept SI's last task ended (on
    copies: nothing here moves), with ``before_step`` called
    before every step as train_task does, and with ``after_step`` alone (it then keeps a copy of θ)."""
    sizes = []
    for with_before in (True, False):
        reg, net = copy.deepcopy(si), copy.deepcopy(model)
        stepper = Stepper(net, net[-1].out_features)
        reg.begin_task(net)
        for _ in range(3):
            stepper.step(after=lambda: reg.after_step(net), before=(lambda: reg.before_step(net)) if with_before else None)
        sizes.append(state_bytes(reg))
    return sizes[0], sizes[1]


# --- the three sections --------------------------------------------------------------------------
def bench_implementations(name, hidden, classes, repeats, block_s) -> None:
    torch.manual_seed(0)
    model = mlp(784, hidden, classes)
    stepper = Stepper(model, classes)
    block = block_for(stepper, block_s)
    params = trainable_parameters(model)
    anchor = {n: p.detach() + 0.01 * torch.randn_like(p) for n, p in params.items()}
    weight = {n: torch.rand_like(p) * 1e-3 for n, p in params.items()}
    strength = 1.0
    # correctness against the original, value and gradient
    errors = {}
    ref = loop_original(params, anchor, weight)
    ref_grad = torch.autograd.grad(ref, list(params.values()))
    for key, impl in IMPLEMENTATIONS.items():
        value = impl(params, anchor, weight)
        grads = torch.autograd.grad(value, list(params.values()))
        errors[key] = max([abs(float(value.detach() - ref.detach())) / abs(float(ref.detach()))]
                          + [float((g - r).abs().max() / r.abs().max()) for g, r in zip(grads, ref_grad)])
    steps = {"plain": stepper.step}
    alone = {}
    for key, impl in IMPLEMENTATIONS.items():
        steps[key] = lambda impl=impl: stepper.step(lambda: 0.5 * strength * impl(trainable_parameters(model), anchor, weight))
        alone[key] = lambda impl=impl: (0.5 * strength * impl(trainable_parameters(model), anchor, weight)).backward()
    for p in params.values():  # penalty alone: accumulate into an existing .grad, as in a step
        p.grad = torch.zeros_like(p)
    t_alone, _ = interleaved(alone, repeats, block)
    t, ratios = interleaved(steps, repeats, block)
    pb = param_bytes(model)
    print(f"\n{name}: {pb / 1e6:.2f} MB of parameters; plain step (Adam, batch {BATCH}) = "
          f"{t['plain'] * 1e3:.3f} ms; {block} steps per block (load average {os.getloadavg()[0]:.1f})")
    print(f"  {'implementation':<34} {'step/plain':>10} {'target':>7} {'penalty fwd+bwd ms':>19} "
          f"{'kept/params':>12} {'max rel err':>12}")
    for key, impl in IMPLEMENTATIONS.items():
        ratio = ratios[key]
        kb = kept_bytes(lambda impl=impl: impl(params, anchor, weight)) / pb
        print(f"  {key:<34} {ratio:9.3f}x {verdict(ratio, TARGET_STEP):>7} {t_alone[key] * 1e3:19.3f} "
              f"{kb:11.2f}x {errors[key]:12.1e}")


def bench_regularizers(name, hidden, classes, task_counts, repeats, block_s) -> dict:
    torch.manual_seed(0)
    model = mlp(784, hidden, classes)
    stepper = Stepper(model, classes)
    data = [(torch.rand(SAMPLES, 784), torch.randint(0, classes, (SAMPLES,)))]
    makers = {
        "ewc": lambda: EWC(1.0, fisher_samples=SAMPLES),
        "online-ewc": lambda: OnlineEWC(1.0, decay=0.9, fisher_samples=SAMPLES),
        "si": lambda: SI(1.0),
        "mas": lambda: MAS(1.0, importance_samples=SAMPLES),
        "l2": lambda: L2(1.0),
    }
    regs = {k: make() for k, make in makers.items()}
    naive = NaiveEWC(1.0)
    kept: dict[tuple[str, int], Regularizer] = {}
    at_task: dict[int, torch.nn.Module] = {}
    between: dict[tuple[str, int], int] = {}  # state bytes right after consolidating, before the next task
    setup = time.perf_counter()
    for t in range(1, max(task_counts) + 1):
        regs["si"].begin_task(model)
        for _ in range(2):  # a short "task": the parameters move, SI's path integral has something
            stepper.step(after=lambda: regs["si"].after_step(model))
        for reg in regs.values():
            reg.consolidate(model, data)
        naive.add(fisher_diagonal(model, data, max_samples=SAMPLES), snapshot(model))
        if t in task_counts:
            for k, reg in regs.items():
                kept[(k, t)] = copy.deepcopy(reg)
                between[(k, t)] = state_bytes(kept[(k, t)])
                # the next task starts here, where this one ended: as in training (SI's after_step needs it,
                # and SI shares its start with the anchor when they coincide)
                kept[(k, t)].begin_task(model)
            at_task[t] = copy.deepcopy(model)  # where the model was when these were kept
    setup = time.perf_counter() - setup
    biggest = max(task_counts)
    # the folded EWC equals the naive sum (the constant included)
    folded = float(kept[("ewc", biggest)].penalty(model).detach())
    summed = float(naive.penalty(model).detach())
    fold_err = abs(folded - summed) / max(abs(summed), 1e-30)
    during_si = {t: si_during_task(kept[("si", t)], at_task[t]) for t in task_counts}

    block = block_for(stepper, block_s)
    runs = {"plain": stepper.step}
    for (k, t), reg in kept.items():
        runs[(k, t)] = lambda reg=reg: stepper.step(lambda: reg.penalty(model), lambda: reg.after_step(model),
                                                    lambda: reg.before_step(model))  # as train_task does
        # the opt-in fused form: the penalty's gradient added to .grad after backward, before the step
        runs[(f"{k} fused", t)] = lambda reg=reg: stepper.step(
            None, lambda: reg.after_step(model), lambda: (reg.add_penalty_gradient_(model), reg.before_step(model)))
        if k == "ewc":
            runs[("ewc fused, before", t)] = lambda reg=reg: stepper.step(
                None, lambda: reg.after_step(model), lambda: (fused_foreach(reg, model), reg.before_step(model)))
    times, ratios = interleaved(runs, repeats, block)
    # the naive sum walks 100x the state: timed on its own against the plain step, not to disturb the others
    naive_runs = {"plain": stepper.step, ("naive-ewc", biggest): lambda: stepper.step(lambda: naive.penalty(model))}
    naive_times, naive_ratios = interleaved(naive_runs, max(3, repeats // 3), block)
    times.update({k: v for k, v in naive_times.items() if k != "plain"})
    ratios.update({k: v for k, v in naive_ratios.items() if k != "plain"})
    plain = times["plain"]
    pb = param_bytes(model)
    print(f"\n{name}: plain step = {plain * 1e3:.3f} ms; setup of {biggest} tasks {setup:.1f} s; "
          f"{block} steps per block (load average {os.getloadavg()[0]:.1f})")
    cols = "".join(f"{f'{t} task' + ('s' if t > 1 else ''):>12}" for t in task_counts)
    print(f"  step with penalty / plain step{'':<4}{cols}   target <= {TARGET_STEP}x")
    rows = [*makers, *(f"{k} fused" for k in makers), "ewc fused, before", "naive-ewc"]
    for k in rows:
        cells, worst = "", 0.0
        for t in task_counts:
            if (k, t) in times:
                r = ratios[(k, t)]
                worst = max(worst, r)
                cells += f"{r:11.3f}x"
            else:
                cells += f"{'-':>12}"
        label = k + (" (+before/after_step)" if k == "si" else "") + (" (sum of terms)" if k == "naive-ewc" else "") \
            + (" (opt-in)" if k.endswith("fused") else "") + (" (reference)" if k.endswith("before") else "")
        print(f"  {label:<34}{cells}   {verdict(worst, TARGET_STEP) if k in makers or k.endswith('fused') else ''}")
    print(f"  folded EWC vs naive sum after {biggest} tasks: relative difference {fold_err:.1e}")

    print(f"  state bytes / parameter bytes ({pb / 1e6:.2f} MB){'':<3}{cols}   target <= {TARGET_STATE}x")
    for k in makers:
        cells = "".join(f"{between[(k, t)] / pb:11.2f}x" for t in task_counts)
        worst = max(between[(k, t)] / pb for t in task_counts)
        print(f"  {k + (' (between tasks)' if k == 'si' else ''):<34}{cells}   {verdict(worst, TARGET_STATE)}")
        if k == "si":
            for i, how in enumerate(("during a task, before_step too", "during a task, after_step only")):
                cells = "".join(f"{during_si[t][i] / pb:11.2f}x" for t in task_counts)
                worst = max(during_si[t][i] / pb for t in task_counts)
                print(f"  {'si (' + how + ')':<34}{cells}   {verdict(worst, TARGET_STATE)}")
    cells = "".join(f"{'-':>12}" for t in task_counts[:-1]) + f"{naive.state_bytes() / pb:11.2f}x"
    print(f"  {'naive-ewc (sum of terms)':<34}{cells}")
    ewc = kept[("ewc", biggest)]
    print(f"  kept by the penalty's graph until backward, after {biggest} tasks: EWC "
          f"{kept_bytes(lambda: ewc.penalty(model)) / pb:.2f}x the parameters, naive sum "
          f"{kept_bytes(lambda: naive.penalty(model)) / pb:.2f}x")
    return times


KFAC_TARGET = {"784-128-5 (seed)": 2.0, "784-400-400-10": 1.3}
KFAC_TASKS = (1, 2, 5, 10)


def kfac_flops_floor(hidden, classes, terms: int) -> float:
    """(step + penalty) / step in multiply-adds: per layer and term out·n·(out + n), n = inputs + 1."""
    dims = (784, *hidden, classes)
    fwd = sum(a * b for a, b in zip(dims, dims[1:]))
    step = BATCH * (3 * fwd - dims[0] * dims[1])  # forward, weight gradients, input gradients of layers 2..L
    penalty = sum(b * (a + 1) * (b + a + 1) for a, b in zip(dims, dims[1:]))
    return (step + terms * penalty) / step


def bench_kfac(name, hidden, classes, task_counts, repeats, block_s) -> None:
    torch.manual_seed(0)
    seed_net = name.startswith("784-128-5")
    model = mlp(784, hidden, classes, dropout=0.5 if seed_net else 0.0)  # the seed net as `forgetless seed` runs it
    stepper = Stepper(model, classes)
    data = [(torch.rand(SAMPLES, 784), torch.randint(0, classes, (SAMPLES,)))]
    makers = {
        "ewc (diagonal)": lambda: EWC(1.0, fisher_samples=SAMPLES),
        "ewc-kfac": lambda: EWC(1.0, structure="kfac", fisher_samples=SAMPLES),
        "online-ewc-kfac separate": lambda: OnlineEWC(1.0, decay=0.9, structure="kfac", fisher_samples=SAMPLES),
        "online-ewc-kfac merged": lambda: OnlineEWC(1.0, decay=0.9, structure="kfac", factor_sum="merged",
                                                    fisher_samples=SAMPLES),
    }
    regs = {k: make() for k, make in makers.items()}
    kept: dict[tuple[str, int], Regularizer] = {}
    for t in range(1, max(task_counts) + 1):
        for _ in range(2):  # the parameters move between tasks
            stepper.step()
        for reg in regs.values():
            reg.consolidate(model, data)
        if t in task_counts:
            for k, reg in regs.items():
                kept[(k, t)] = copy.deepcopy(reg)
    block = block_for(stepper, block_s)
    runs = {"plain": stepper.step}
    for (k, t), reg in kept.items():
        if k == "ewc (diagonal)" and t > 1:
            continue  # folded: the same cost for any number of tasks (section 2)
        runs[(k, t)] = lambda reg=reg: stepper.step(lambda: reg.penalty(model))
    times, ratios = interleaved(runs, repeats, block)
    pb = param_bytes(model)
    print(f"\n{name}{' with Dropout(0.5)' if seed_net else ''}: plain step = {times['plain'] * 1e3:.3f} ms; "
          f"{block} steps per block (load average {os.getloadavg()[0]:.1f})")
    cols = "".join(f"{f'{t} task' + ('s' if t > 1 else ''):>12}" for t in task_counts)
    target = KFAC_TARGET.get(name)
    print(f"  step with penalty / plain step{'':<6}{cols}   target (1 task)")
    for k in makers:
        cells = "".join(f"{ratios[(k, t)]:11.3f}x" if (k, t) in ratios else f"{'-':>12}" for t in task_counts)
        verdict_1 = "" if target is None or k == "ewc (diagonal)" else f"{verdict(ratios[(k, 1)], target)} <= {target}x"
        print(f"  {k:<36}{cells}   {verdict_1}")
    floor = "".join(f"{kfac_flops_floor(hidden, classes, t):11.3f}x" for t in task_counts)
    print(f"  {'floor: equal speed per multiply-add':<36}{floor}   (ewc-kfac, separate terms)")
    print(f"  state bytes / parameter bytes ({pb / 1e6:.2f} MB){'':<1}{cols}")
    for k in makers:
        cells = "".join(f"{state_bytes(kept[(k, t)]) / pb:11.2f}x" for t in task_counts)
        print(f"  {k:<36}{cells}")
    memory = kept[("ewc-kfac", 1)].memory()
    print("  ewc-kfac after 1 task, per layer: " + "; ".join(
        f"{m}: {e['structure']} {e['state_bytes'] / 1e6:.2f} MB ({e['state_bytes'] / e['parameter_bytes']:.1f}x its "
        f"parameters)" for m, e in memory.items()))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="tasks 1,3; 3 rounds, short blocks: a smoke run")
    ap.add_argument("--tasks", default=None, help="comma-separated task counts (default 1,10,100)")
    ap.add_argument("--repeats", type=int, default=None, help="interleaved rounds (default 15)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--networks", default=None, help="comma-separated subset of: seed,400,1000")
    ap.add_argument("--sections", default="1,2,4", help="comma-separated subset of 1,2,4 (2 includes 3)")
    args = ap.parse_args(argv)
    task_counts = tuple(int(t) for t in (args.tasks or ("1,3" if args.quick else "1,10,100")).split(","))
    repeats = args.repeats or (3 if args.quick else 15)
    block_s = 0.03 if args.quick else 0.05
    torch.set_num_threads(args.threads)
    keys = {"seed": "784-128-5 (seed)", "400": "784-400-400-10", "1000": "784-1000-1000-10"}
    names = [keys[k] for k in args.networks.split(",")] if args.networks else list(NETWORKS)
    print(f"torch {torch.__version__}, Python {platform.python_version()}, {torch.get_num_threads()} threads, "
          f"float32, CPU; load average before: {os.getloadavg()[0]:.1f}")
    sections = set(args.sections.split(","))
    if "1" in sections:
        print("\n=== 1. implementations of quadratic_penalty (one task, EWC-shaped weights) ===")
        for name in names:
            bench_implementations(name, *NETWORKS[name], repeats, block_s)
    if "2" in sections:
        print(f"\n=== 2-3. regularizers after {', '.join(map(str, task_counts))} tasks: step time and state ===")
        for name in names:
            bench_regularizers(name, *NETWORKS[name], task_counts, repeats, block_s)
    if "4" in sections:
        kfac_tasks = (1, 2) if args.quick else KFAC_TASKS
        print(f"\n=== 4. Kronecker-factored EWC after {', '.join(map(str, kfac_tasks))} tasks (issue 10) ===")
        for name in (n for n in names if n in KFAC_TARGET or args.networks):  # 784-1000-1000: only when named
            bench_kfac(name, *NETWORKS[name], kfac_tasks, repeats, block_s)
    print(f"\nload average after: {os.getloadavg()[0]:.1f} (other processes on the machine inflate all times)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
