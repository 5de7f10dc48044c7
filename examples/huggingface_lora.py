"""EWC inside Hugging Face's ``Trainer``, with LoRA: fine-tune on code without forgetting prose.

    pip install 'forgetless[transformers]' peft
    python examples/huggingface_lora.py [--strength 1000] [--steps 60] [--out DIR]

Small stand-ins keep it offline and fast: a tiny GPT-2 built from a config and trained for a moment
on English prose plays the pretrained model (in practice ``from_pretrained``), bytes play tokens (a
vocabulary of 256; in practice a tokenizer), and the texts are the two domains of forgetless's
``prose-code`` benchmark (prose from ``pydoc_data``, then Python source of the standard library).

LoRA adapters are then fine-tuned on code twice from the same model: with a plain ``Trainer``
(naive), and with EWC: ``consolidate_causal_lm`` on prose first (the Fisher of the adapters on what
the model already does well), then ``ContinualTrainer(..., regularizer=ewc)`` in place of
``Trainer(...)``, the one line EWC needs in training. Only the adapters are trainable, so only they
are protected: the EWC state has exactly their size and the frozen base model costs nothing. The
trainer's checkpoint (in ``--out``, default a temporary folder) holds the EWC state; the script
loads it back to show it.
"""
from __future__ import annotations

import argparse
import copy
import logging
import tempfile
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments
from transformers import logging as hf_logging

import forgetless
from forgetless.benchmarks.prose_code import prose_code_benchmark
from forgetless.integrations.causal_lm import consolidate_causal_lm
from forgetless.integrations.huggingface import STATE_FILE, ContinualTrainer

TRAIN, TEST = 2048, 256  # windows of 64 bytes per domain


def as_examples(split, n):
    """Hugging Face-style examples: the labels are the input ids (the model shifts them)."""
    return [{"input_ids": x, "labels": x} for x in split.x[:n]]


def collate(examples):
    return {key: torch.stack([e[key] for e in examples]) for key in examples[0]}


def batches(examples, size=64):
    return [collate(examples[i:i + size]) for i in range(0, len(examples), size)]


@torch.no_grad()
def loss_on(model, examples) -> float:
    model.eval()
    return float(model(**collate(examples)).loss)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--strength", type=float, default=1000.0, help="EWC's λ (default 1000)")
    parser.add_argument("--pretrain-steps", type=int, default=150, help="steps of the stand-in pretraining")
    parser.add_argument("--steps", type=int, default=60, help="LoRA fine-tuning steps on code (default 60)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="folder for checkpoints (default: a temp dir)")
    args = parser.parse_args(argv)
    hf_logging.set_verbosity_error()
    logging.getLogger("forgetless").setLevel(logging.WARNING)

    prose, code = prose_code_benchmark(seed=args.seed).tasks
    prose_train, prose_test = as_examples(prose.train, TRAIN), as_examples(prose.test, TEST)
    code_train, code_test = as_examples(code.train, TRAIN), as_examples(code.test, TEST)
    settings = dict(per_device_train_batch_size=16, lr_scheduler_type="constant", report_to=[],
                    logging_strategy="no", disable_tqdm=True, use_cpu=True, seed=args.seed)

    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        # 1. the stand-in for a pretrained model: a tiny GPT-2 that has read some prose
        torch.manual_seed(args.seed)
        base = GPT2LMHeadModel(GPT2Config(vocab_size=256, n_positions=64, n_embd=64, n_layer=2, n_head=4,
                                          bos_token_id=0, eos_token_id=0, loss_type="ForCausalLM"))
        Trainer(model=base, args=TrainingArguments(output_dir=str(out / "base"), max_steps=args.pretrain_steps,
                                                   learning_rate=3e-3, save_strategy="no", **settings),
                train_dataset=prose_train, data_collator=collate).train()
        lora = LoraConfig(r=8, lora_alpha=16, target_modules=["c_attn", "c_proj", "c_fc"], fan_in_fan_out=True)
        finetune = dict(max_steps=args.steps, learning_rate=1e-2, save_strategy="steps", save_steps=args.steps, **settings)

        # 2. naive LoRA fine-tuning on code
        naive = get_peft_model(copy.deepcopy(base), lora)
        Trainer(model=naive, args=TrainingArguments(output_dir=str(out / "naive"), **finetune),
                train_dataset=code_train, data_collator=collate).train()

        # 3. the same with EWC: protect the adapters' effect on prose, then the one-line change
        with_ewc = get_peft_model(copy.deepcopy(base), lora)
        ewc = forgetless.EWC(strength=args.strength, estimator="sampled", fisher_samples=512)
        consolidate_causal_lm(ewc, with_ewc, batches(prose_train))
        ContinualTrainer(model=with_ewc, args=TrainingArguments(output_dir=str(out / "ewc"), **finetune),
                         train_dataset=code_train, data_collator=collate, regularizer=ewc).train()

        print(f"prose loss: before fine-tuning {loss_on(base, prose_test):.3f}; after, naive "
              f"{loss_on(naive, prose_test):.3f}, with EWC {loss_on(with_ewc, prose_test):.3f}")
        print(f"code loss: before fine-tuning {loss_on(base, code_test):.3f}; after, naive "
              f"{loss_on(naive, code_test):.3f}, with EWC {loss_on(with_ewc, code_test):.3f}")

        adapter = sum(p.numel() for p in with_ewc.parameters() if p.requires_grad)
        frozen = sum(p.numel() for p in with_ewc.parameters() if not p.requires_grad)
        protected = sum(t.numel() for name, t in ewc.state_dict().items() if name.startswith("importance."))
        print(f"EWC protects {protected} parameters: the adapters' {adapter} (the frozen base model's {frozen} "
              f"cost nothing); tasks consolidated: {ewc.tasks_seen}")

        saved = forgetless.load(out / "ewc" / f"checkpoint-{args.steps}" / STATE_FILE)
        print(f"checkpoint-{args.steps}/{STATE_FILE}: {saved!r}, {saved.tasks_seen} task(s) before this one")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
