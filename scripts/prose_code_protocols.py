#!/usr/bin/env python
"""prose-code under protocols the CLI does not expose: the second domain's learning rate, length and
schedule, and parameters frozen while it trains. Used to ask whether any protocol lets EWC come close to
joint training (issue 13); the answers are in results/prose-code/protocols/README.md.

One call is one run on one seed: domain A (prose) is trained once per (seed, A settings, width) and
cached, so every variant of domain B starts from the same weights; the run's numbers (test and
validation loss per domain, nats per byte, after A and after B) are appended to a JSON-lines file.

    .venv/bin/python scripts/prose_code_protocols.py run --seed 0 --method ewc --strength 3 --lr-b 1e-3
    .venv/bin/python scripts/prose_code_protocols.py table      # table.md and tradeoff.png from the file

Domain A: ``--a-iters`` Adam steps at ``--lr-a`` (batch 32, as the benchmark); domain B: a fresh Adam,
``--b-iters`` steps at ``--lr-b``, optionally a linear warm-up and a cosine schedule. ``joint`` trains
B on prose ∪ code; ``naive`` on code alone; a method name (``ewc``, ``ewc-kfac``…) consolidates on
prose's training windows with prose-code's Fisher settings (``sampled``, 512 windows) unless
``--estimator`` / ``--fisher-samples`` say otherwise. One torch thread.
"""
from __future__ import annotations

import argparse
import io
import json
import math
import re
import time
from pathlib import Path

import torch

from forgetless.benchmarks.registry import make_benchmark
from forgetless.data.text import load_prose_code
from forgetless.files import write_atomic
from forgetless.methods import METHODS
from forgetless.run_config import RunConfig
from forgetless.seed_run import evaluate, new_model
from forgetless.training import adam, train_joint, train_task

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results" / "prose-code" / "protocols"
BATCH = 32  # prose-code's batch size


def schedule(optimizer: torch.optim.Optimizer, steps: int, warmup: int, cosine: bool):
    """A per-step callback for the learning-rate schedule, or None for a constant rate."""
    if not warmup and not cosine:
        return None

    def factor(i: int) -> float:
        ramp = min(1.0, (i + 1) / warmup) if warmup else 1.0
        return ramp * (0.5 * (1 + math.cos(math.pi * min(i, steps) / steps)) if cosine else 1.0)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor).step


def losses(model, bench) -> dict[str, float]:
    return {f"{split}_{task.name}": round(loss, 4) for split in ("valid", "test")
            for task, loss in zip(bench.tasks, evaluate(model, bench, len(bench.tasks) - 1, split)[1])}


def run(a: argparse.Namespace) -> dict:
    torch.set_num_threads(1)
    bench = make_benchmark("prose-code", load_prose_code(), scenario="domain", seed=a.seed)
    prose, code = bench.tasks
    options = {k: v for k, v in (("estimator", a.estimator), ("fisher_samples", a.fisher_samples), ("width", a.width)) if v}
    config = RunConfig(benchmark="prose-code", method=a.method, strength=a.strength, options=options)
    model = new_model(config, bench, a.seed)
    generator = torch.Generator().manual_seed(a.seed)
    cosine = a.schedule == "cosine"
    cache = a.cache / f"A-s{a.seed}-i{a.a_iters}-lr{a.lr_a}-{a.schedule}-w{a.width}.pt"
    start = time.perf_counter()
    if cache.exists():
        state = torch.load(cache)
        model.load_state_dict(state["model"])
        generator.set_state(state["generator"])
        after_a = state["losses"]
    else:
        optimizer = adam(model, a.lr_a)
        train_task(model, prose.train, steps=a.a_iters, batch_size=BATCH, optimizer=optimizer, generator=generator,
                   on_step=schedule(optimizer, a.a_iters, 0, cosine))
        after_a = losses(model, bench)
        cache.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        torch.save({"model": model.state_dict(), "generator": generator.get_state(), "losses": after_a}, buffer)
        write_atomic(cache, buffer.getvalue())
    for name, parameter in model.named_parameters():
        if a.freeze and re.search(a.freeze, name):
            parameter.requires_grad_(False)  # no gradient: Adam leaves it where A put it
    if not any(parameter.requires_grad for parameter in model.parameters()):
        raise SystemExit(f"--freeze {a.freeze!r} freezes every parameter: nothing is left to train on B")
    optimizer = adam(model, a.lr_b)
    on_step = schedule(optimizer, a.b_iters, a.warmup, cosine)
    if a.method == "joint":
        train_joint(model, [(prose.train, None), (code.train, None)], steps=a.b_iters, batch_size=BATCH,
                    optimizer=optimizer, generator=generator, on_step=on_step)
    else:
        reg = None
        if METHODS[a.method].has_strength:
            reg = METHODS[a.method].build(a.strength, config.method_options(), a.seed)
            reg.consolidate(model, (prose.train.x, prose.train.y))
        train_task(model, code.train, steps=a.b_iters, batch_size=BATCH, optimizer=optimizer, generator=generator,
                   regularizer=reg, on_step=on_step)
    after_b = losses(model, bench)
    settings = {k: v for k, v in vars(a).items() if k not in ("command", "cache", "out")}
    return settings | {"after_a": after_a, "after_b": after_b, "seconds": round(time.perf_counter() - start, 1)}


def label(r: dict) -> str:
    bits = [r["method"] + (f" {r['strength']:g}" if r.get("strength") is not None else ""), f"lr_B {r['lr_b']:g}"]
    bits += [f"lr_A {r['lr_a']:g}"] if r["lr_a"] != 3e-3 else []
    bits += [f"{k} {r[k]}" for k in ("b_iters", "warmup", "freeze", "estimator", "fisher_samples", "width")
             if r.get(k) and not (k == "b_iters" and r[k] == 2000)]
    return " · ".join(bits + ([r["schedule"]] if r["schedule"] != "constant" else []))


def table(path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    order = {"naive": 0, "ewc": 1, "ewc-kfac": 2, "joint": 9}
    rows.sort(key=lambda r: (r["seed"], r.get("width") or 0, r["schedule"], -r["lr_b"], r.get("freeze") or "",
                             order.get(r["method"], 5), r["method"], r.get("strength") or 0, r["b_iters"]))
    lines = ["| seed | run | prose after A | prose after B | code after B | mean valid after B |", "|---|---|---|---|---|---|"]
    for r in rows:
        b = r["after_b"]
        lines.append(f"| {r['seed']} | {label(r).replace('|', chr(92) + '|')} | {r['after_a']['test_prose']:.3f} | {b['test_prose']:.3f} | "
                     f"{b['test_code']:.3f} | {(b['valid_prose'] + b['valid_code']) / 2:.3f} |")
    (path.parent / "table.md").write_text("Test loss, nats per byte (`scripts/prose_code_protocols.py table`).\n\n"
                                          + "\n".join(lines) + "\n")
    fig, ax = plt.subplots(figsize=(7, 5))
    kinds = {"naive": ("o", "tab:gray"), "joint": ("*", "tab:green"), "ewc": ("s", "tab:blue"),
             "ewc-kfac": ("D", "tab:purple")}
    for r in rows:
        if r["seed"] != 0 or r.get("width") not in (None, 256) or r["after_a"]["test_prose"] > 2 or r.get("freeze") \
                or r["schedule"] != "constant" or r.get("estimator") or r.get("fisher_samples") or r.get("warmup") \
                or r["method"] not in kinds:
            continue  # one point per protocol of the table's first block (a diverged domain A is left out)
        marker, color = kinds[r["method"]]
        alpha = {3e-3: 1.0, 1e-3: 0.6, 3e-4: 0.3}.get(r["lr_b"], 1.0)
        face = "none" if r.get("width") else color  # open markers: the width-256 model
        ax.scatter(r["after_b"]["test_code"], r["after_b"]["test_prose"], marker=marker, edgecolors=color,
                   facecolors=face, alpha=alpha)
        ax.annotate(label(r).replace(" · ", "\n"), (r["after_b"]["test_code"], r["after_b"]["test_prose"]),
                    fontsize=5, alpha=0.8)
    first = rows[0]["after_a"]
    ax.axhline(first["test_prose"], color="black", lw=0.5, ls=":")
    ax.set(xlabel="code test loss after B (nats/byte)", ylabel="prose test loss after B (nats/byte)",
           title="prose-code, seed 0: end points after B (lower left is better)\n"
                 "filled: width 128, open: width 256; paler: lower lr on B; dotted: prose after A (width 128)")
    ax.title.set_fontsize(8)
    fig.tight_layout()
    fig.savefig(path.parent / "tradeoff.png", dpi=150)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--method", default="naive", choices=tuple(METHODS),
                   help="naive, joint or a regularizer (ewc, ewc-kfac, …)")
    r.add_argument("--strength", type=float, default=None)
    r.add_argument("--a-iters", type=int, default=2000)
    r.add_argument("--b-iters", type=int, default=2000)
    r.add_argument("--lr-a", type=float, default=3e-3)
    r.add_argument("--lr-b", type=float, default=3e-3)
    r.add_argument("--schedule", choices=("constant", "cosine"), default="constant", help="per domain")
    r.add_argument("--warmup", type=int, default=0, help="linear warm-up steps at the start of B")
    r.add_argument("--freeze", default="", help="regex of parameter names frozen while B trains")
    r.add_argument("--estimator", default=None)
    r.add_argument("--fisher-samples", type=int, default=None)
    r.add_argument("--width", type=int, default=None, help="the model's width (prose-code's: 128)")
    r.add_argument("--cache", type=Path, default=ROOT / "runs" / "prose-code-protocols")
    r.add_argument("--out", type=Path, default=RESULTS / "results.jsonl")
    t = sub.add_parser("table")
    t.add_argument("--out", type=Path, default=RESULTS / "results.jsonl")
    a = p.parse_args(argv)
    if a.command == "table":
        return table(a.out)
    if a.method not in ("naive", "joint") and a.strength is None:
        p.error(f"--method {a.method} needs --strength")
    record = run(a)
    print(json.dumps(record))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    with a.out.open("a") as f:
        f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
