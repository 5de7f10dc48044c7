"""EWC on a GPT-2-small-sized model (124M parameters) on the CPU: the Fisher pass and the penalty step,
against one training step on the same batch, and their peak extra memory against the model's size.

    python bench/bench_gpt2_fisher.py [--sequences 4] [--length 128] [--repeats 3] [--modes full,lora] [--tiny]
                                      [--estimator sampled]

The model is ``GPT2LMHeadModel(GPT2Config())`` with random weights (124M parameters, 498 MB in float32; no
download), dropout off, on a batch of N random token sequences of L tokens, in two modes:
  * ``full``: every parameter trainable (GPT-2's Conv1D layers by their layer rule, its token embedding tied to
    the output head by both modules' rules, no parameter on the engine's torch.func path);
  * ``lora``: PEFT LoRA adapters (r=8 on c_attn, c_proj, c_fc), the base model frozen.
Operations, all on the same batch (through ``forgetless.integrations.causal_lm``):
  * train step: forward, backward, Adam step (the task loss alone);
  * Fisher pass: ``fisher_diagonal(..., estimator="sampled")`` on the N sequences, per-sequence convention
    (``--estimator empirical`` or ``predicted``: one direction too; ``exact`` needs L·(vocabulary − 1)
    directions per sequence and is refused beyond 4096);
  * penalty step: a train step whose loss adds ``ewc.penalty(model)`` (EWC consolidated beforehand).
Time: medians over ``--repeats`` rounds, the three operations interleaved in one process (load on a shared
machine hits them alike); the Fisher over N sequences against a train step over the same N sequences is
the per-sample ratio. Memory: each operation in a fresh subprocess, after a warm-up train step (Adam's
state exists, as in training): the peak resident set size during the operation (Linux VmHWM, reset
through /proc/self/clear_refs just before) minus the resident set size just before it.
Targets (issue 13): Fisher <= 2x a training step per sample; extra peak memory of the Fisher pass <= 3x
the trainable parameters' size.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # run from a checkout, uninstalled
OPERATIONS = ("train step", "Fisher pass", "penalty step")


def build(mode: str, sequences: int, length: int, tiny: bool = False, estimator: str = "sampled"):
    import logging

    import forgetless
    from forgetless.integrations.causal_lm import consolidate_causal_lm
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformers import logging as hf_logging

    hf_logging.set_verbosity_error()
    logging.getLogger("forgetless").setLevel(logging.WARNING)
    torch.manual_seed(0)
    sizes = dict(n_layer=2, n_embd=64, n_head=4, vocab_size=256) if tiny else {}  # --tiny: a smoke test
    model = GPT2LMHeadModel(GPT2Config(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, loss_type="ForCausalLM", **sizes))
    if mode == "lora":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["c_attn", "c_proj", "c_fc"],
                                                 fan_in_fan_out=True))
    ids = torch.randint(0, model.config.vocab_size, (sequences, length), generator=torch.Generator().manual_seed(1))
    batch = {"input_ids": ids, "labels": ids}
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=1e-5)
    ewc = forgetless.EWC(strength=1.0, estimator=estimator)

    def train_step(penalty: bool = False) -> None:
        model.train()
        loss = model(**batch).loss
        if penalty:
            loss = loss + ewc.penalty(model)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def fisher() -> None:
        forgetless.fisher_diagonal(_logits(model), _pairs([batch]), estimator=estimator)

    def consolidate() -> None:
        consolidate_causal_lm(ewc, model, [batch])

    counts = {"all": sum(p.numel() for p in model.parameters()), "trainable": sum(p.numel() for p in trainable)}
    ops = {"train step": train_step, "Fisher pass": fisher, "penalty step": lambda: train_step(True)}
    return ops, consolidate, counts


def _logits(model):
    from forgetless.integrations.causal_lm import CausalLMLogits

    return CausalLMLogits(model)


def _pairs(batches):
    from forgetless.integrations.causal_lm import CausalLMBatches

    return CausalLMBatches(batches)


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def child(args) -> None:
    """One operation in this fresh process; prints JSON: extra peak bytes, parameter counts."""
    torch.set_num_threads(args.threads)
    ops, consolidate, counts = build(args.mode, args.sequences, args.length, args.tiny, args.estimator)
    ops["train step"]()          # Adam's state exists, as it does during training
    if args.child == "penalty step":
        consolidate()            # the EWC state is part of the baseline: it lives through training
    import gc

    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    before = _rss_kib("VmRSS")
    ops[args.child]()
    extra = (_rss_kib("VmHWM") - before) * 1024
    print(json.dumps({"extra": extra, **counts}))


def memory(args, mode: str, op: str) -> dict:
    cmd = [sys.executable, __file__, "--child", op, "--mode", mode, "--sequences", str(args.sequences),
           "--length", str(args.length), "--threads", str(args.threads), "--estimator", args.estimator] + (
               ["--tiny"] if args.tiny else [])
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def times(args, mode: str) -> dict[str, float]:
    torch.set_num_threads(args.threads)
    ops, consolidate, _ = build(mode, args.sequences, args.length, args.tiny, args.estimator)
    ops["train step"]()  # warm-up (allocations, Adam's state)
    consolidate()
    samples: dict[str, list[float]] = {op: [] for op in OPERATIONS}
    for _ in range(args.repeats):
        for op in OPERATIONS:
            start = time.perf_counter()
            ops[op]()
            samples[op].append(time.perf_counter() - start)
    return {op: statistics.median(s) for op, s in samples.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sequences", type=int, default=4)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--modes", default="full,lora")
    parser.add_argument("--estimator", default="sampled", help="the Fisher's estimator (default: sampled)")
    parser.add_argument("--tiny", action="store_true", help="a 2-layer, 64-wide GPT-2: checks the script runs")
    parser.add_argument("--child", choices=OPERATIONS, help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="full", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return 0
    import importlib.util

    missing = [m for m in ("transformers", "peft") if importlib.util.find_spec(m) is None]
    if missing:
        print(f"bench_gpt2_fisher: skipped, needs {' and '.join(missing)} (pip install 'forgetless[transformers]' peft)")
        return 0
    import warnings

    warnings.filterwarnings("ignore")
    print(f"GPT-2 {'tiny' if args.tiny else 'small'} (random), {args.sequences} sequences x {args.length} tokens, CPU, {args.threads} threads, "
          f"torch {torch.__version__}, {platform.processor() or platform.machine()}, estimator {args.estimator}")
    for mode in args.modes.split(","):
        t = times(args, mode)
        mem = {op: memory(args, mode, op) for op in OPERATIONS}
        counts = mem["train step"]
        model_bytes, trainable_bytes = 4 * counts["all"], 4 * counts["trainable"]
        print(f"\n{mode}: {counts['all'] / 1e6:.1f}M parameters ({model_bytes / 2**20:.0f} MiB), "
              f"{counts['trainable'] / 1e6:.3f}M trainable ({trainable_bytes / 2**20:.1f} MiB)")
        print(f"  {'operation':<14}{'seconds':>9}{'x train step':>14}{'extra peak MiB':>16}"
              f"{'x trainable':>13}{'x model':>9}")
        for op in OPERATIONS:
            extra = mem[op]["extra"]
            print(f"  {op:<14}{t[op]:>9.2f}{t[op] / t['train step']:>14.2f}{extra / 2**20:>16.0f}"
                  f"{extra / trainable_bytes:>13.2f}{extra / model_bytes:>9.2f}")
        fisher_ratio = t["Fisher pass"] / t["train step"]
        memory_ratio = mem["Fisher pass"]["extra"] / trainable_bytes
        print(f"  targets: Fisher <= 2x a train step per sample: {fisher_ratio:.2f}x "
              f"({'met' if fisher_ratio <= 2 else 'NOT met'}); Fisher's extra peak <= 3x trainable: "
              f"{memory_ratio:.2f}x ({'met' if memory_ratio <= 3 else 'NOT met'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
