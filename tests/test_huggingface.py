"""forgetless in Hugging Face transformers.Trainer (and with PEFT/LoRA), on tiny random models built from configs."""
from __future__ import annotations

import copy
import json

import pytest
import torch

transformers = pytest.importorskip("transformers")  # only users without the extra skip; CI installs it

from tiny_transformers import quiet_transformers, tiny_gpt2  # noqa: E402,F401  (quiet_transformers: autouse)
from transformers import LlamaConfig, LlamaForCausalLM, TrainingArguments  # noqa: E402
from transformers import default_data_collator  # noqa: E402

import forgetless  # noqa: E402
from forgetless import EWC, L2, SI, fisher_diagonal  # noqa: E402
from forgetless.integrations.causal_lm import CausalLMBatches, CausalLMLogits, consolidate_causal_lm  # noqa: E402
from forgetless.integrations.huggingface import STATE_FILE, TRAINER_FILE, ContinualTrainer  # noqa: E402
from forgetless.training import task_loss  # noqa: E402

VOCAB, LENGTH = 32, 10


def gpt2(seed=0):
    return tiny_gpt2(VOCAB, seed)


def llama(seed=0):
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=16,
                         bos_token_id=0, eos_token_id=0, pad_token_id=0)
    return LlamaForCausalLM(config)


def examples(n=8, seed=0, pad_last=0, pad_first=0):
    """Token sequences as a dataset of dicts; odd rows end (start) with ``pad_last`` (``pad_first``) pads."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (n, LENGTH), generator=g)
    mask = torch.ones_like(ids)
    if pad_last:
        mask[1::2, -pad_last:] = 0
        ids[1::2, -pad_last:] = 0
    if pad_first:
        mask[1::2, :pad_first] = 0
        ids[1::2, :pad_first] = 0
    labels = ids.masked_fill(mask == 0, -100)
    # Position 0 is never a target (the model shifts labels). Saying so keeps Trainer's token count
    # right: transformers 5.24 counts unshifted labels for models whose config leaves loss_type unset
    # (GPT-2), scaling their training loss by (L-1)/L.
    labels[:, 0] = -100
    return [{"input_ids": i, "attention_mask": m, "labels": lab} for i, m, lab in zip(ids, mask, labels)]


def batch_of(data):
    return default_data_collator(data)


def arguments(tmp_path, **overrides):
    options = dict(output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, max_steps=2, learning_rate=0.1,
                   optim="sgd", lr_scheduler_type="constant", max_grad_norm=0.0, weight_decay=0.0,
                   report_to=[], logging_strategy="no", save_strategy="no", disable_tqdm=True, use_cpu=True, seed=0)
    options.update(overrides)
    return TrainingArguments(**options)


def trainer(model, tmp_path, regularizer, data, **overrides):
    return ContinualTrainer(model=model, args=arguments(tmp_path, **overrides), train_dataset=data,
                            data_collator=default_data_collator, regularizer=regularizer)


def per_sequence_fisher(model, data):
    """The oracle: mean over sequences of (Σ_t ∂ log p(label_{t+1} | tokens ≤ t) / ∂θ)², one sequence at a time,
    through the model's own forward with its attention mask (no adapter involved)."""
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    total = {n: torch.zeros_like(p) for n, p in params.items()}
    for example in data:
        ids, mask, labels = (example[k].unsqueeze(0) for k in ("input_ids", "attention_mask", "labels"))
        logits = model(input_ids=ids, attention_mask=mask).logits[0, :-1]
        target = labels[0, 1:]
        scored = (target != -100) & (mask[0, 1:] == 1)
        log_likelihood = torch.log_softmax(logits, -1)[scored].gather(1, target[scored].unsqueeze(1)).sum()
        for name, g in zip(params, torch.autograd.grad(log_likelihood, list(params.values()))):
            total[name] += g.square()
    return {name: t / len(data) for name, t in total.items()}


def assert_fisher_close(got, want):
    assert set(got) == set(want)
    for name, f in want.items():
        torch.testing.assert_close(got[name], f, rtol=1e-4, atol=1e-4 * float(f.abs().max()) + 1e-12, msg=name)


def lora(model, **options):
    peft = pytest.importorskip("peft")
    return peft.get_peft_model(model, peft.LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"], **options))


def displaced_l2(model, strength=3.0):
    """An L2 anchored at the model's weights, then the model moved away: a non-zero penalty."""
    reg = L2(strength=strength)
    consolidate_causal_lm(reg, model, [])
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return reg


# --- the adapters ------------------------------------------------------------------------------------
@pytest.mark.parametrize("build", [gpt2, llama])
def test_logits_are_aligned_with_the_shifted_labels(build):
    model = build().eval()
    batch = batch_of(examples(4, pad_last=3))
    (x, y), = list(CausalLMBatches([batch]))
    wrapper = CausalLMLogits(model)
    z = wrapper(x)
    assert z.shape == (4, LENGTH - 1, VOCAB) and y.shape == (4, LENGTH - 1)
    assert int((y == -100).sum()) == 2 * 3                  # the padded positions score nothing
    # the oracle: the model's own loss, computed by Hugging Face from unshifted labels
    hf_loss = model(**batch).loss
    torch.testing.assert_close(task_loss(z, y), hf_loss, rtol=1e-5, atol=1e-6)
    names = [(n, id(p)) for n, p in wrapper.named_parameters()]
    assert names == [(n, id(p)) for n, p in model.named_parameters()]


def test_left_padding_keeps_its_mask():
    model = llama().eval()
    batch = batch_of(examples(4, pad_first=3))
    (x, y), = list(CausalLMBatches([batch]))
    assert x.shape == (4, 2, LENGTH) and int((y == -100).sum()) == 2 * 2   # the pads after the first: shifted out
    torch.testing.assert_close(task_loss(CausalLMLogits(model)(x), y), model(**batch).loss, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("build", [gpt2, llama])
def test_fisher_through_the_adapters_is_the_per_sequence_fisher(build):
    """GPT-2's Conv1D and Llama's RMSNorm take the engine's torch.func path: the right-padded mask is dropped."""
    model = build().eval()
    data = examples(6, pad_last=3)
    got = fisher_diagonal(CausalLMLogits(model), CausalLMBatches([batch_of(data[:4]), batch_of(data[4:])]),
                          estimator="empirical")
    assert_fisher_close(got, per_sequence_fisher(model, data))


def test_left_padding_on_the_torch_func_path_is_refused_clearly():
    model = llama().eval()
    with pytest.raises(ValueError, match="left-padded batch .* pad on the right"):
        fisher_diagonal(CausalLMLogits(model), CausalLMBatches([batch_of(examples(4, pad_first=2))]),
                        estimator="sampled")


def test_the_wrapper_gives_the_model_its_mode_and_restores_it():
    model = gpt2().train()
    wrapper = CausalLMLogits(model).eval()
    seen = []
    model.register_forward_pre_hook(lambda m, args: seen.append(m.training))
    wrapper(torch.ones(1, 2, 4, dtype=torch.long))
    assert seen == [False] and model.training


# --- the loss -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("accepts_loss_kwargs", [True, False])
def test_penalty_counts_once_per_optimizer_step_under_gradient_accumulation(tmp_path, accepts_loss_kwargs):
    data = examples(4)
    start = gpt2()
    reg = displaced_l2(start)

    # the oracle: one SGD step on the mean loss over the 4 sequences plus the penalty, by hand
    by_hand = copy.deepcopy(start)
    loss = by_hand(**batch_of(data)).loss + reg.penalty(by_hand)
    loss.backward()
    with torch.no_grad():
        expected = {n: p - 0.1 * p.grad for n, p in by_hand.named_parameters()}

    for batch_size, accumulation in ((4, 1), (2, 2)):
        model = copy.deepcopy(start)
        t = trainer(model, tmp_path, copy.deepcopy(reg), data, max_steps=1, per_device_train_batch_size=batch_size,
                    gradient_accumulation_steps=accumulation)
        t.model_accepts_loss_kwargs = accepts_loss_kwargs
        t.train()
        for name, p in model.named_parameters():
            torch.testing.assert_close(p, expected[name], rtol=1e-5, atol=1e-6, msg=f"{name}, {accumulation} micro-batches")


def test_evaluation_loss_is_the_task_loss_alone(tmp_path):
    model = gpt2()
    reg = displaced_l2(model, strength=100.0)
    assert float(reg.penalty(model).detach()) > 1.0
    data = examples(4)
    metrics = trainer(model, tmp_path, reg, data).evaluate(eval_dataset=data)
    with torch.no_grad():
        expected = float(model(**batch_of(data)).loss)
    torch.testing.assert_close(metrics["eval_loss"], expected, rtol=1e-5, atol=1e-6)


# --- tasks, checkpoints, resuming ---------------------------------------------------------------------
def test_two_tasks_consolidate_and_checkpoints_hold_the_state(tmp_path):
    model = gpt2()
    reg = L2(strength=1.0)
    first = trainer(model, tmp_path, reg, examples(8, seed=1), save_strategy="steps", save_steps=1)
    first.train()
    assert reg.tasks_seen == 1 and not first.in_task
    for name, p in model.named_parameters():
        assert torch.equal(reg.anchor[name], p.detach()), name
    checkpoint = tmp_path / "out" / "checkpoint-2"
    assert json.loads((checkpoint / TRAINER_FILE).read_text()) == {"in_task": True}   # saved before consolidate
    assert forgetless.load(checkpoint / STATE_FILE).tasks_seen == 0

    second = trainer(model, tmp_path, reg, examples(8, seed=2))
    second.train()
    assert reg.tasks_seen == 2
    second.save_model(str(tmp_path / "final"))
    again = forgetless.load(tmp_path / "final" / STATE_FILE)
    assert again.tasks_seen == 2 and json.loads((tmp_path / "final" / TRAINER_FILE).read_text()) == {"in_task": False}
    assert all(torch.equal(again.anchor[n], reg.anchor[n]) for n in reg.anchor)


def test_resuming_mid_task_continues_si_path(tmp_path):
    """Four steps straight == two steps, a checkpoint, then resume to four (SI's ω goes on)."""
    data = examples(16, seed=3)
    straight = SI(strength=1.0)
    trainer(gpt2(), tmp_path / "a", straight, data, max_steps=4).train()

    first = SI(strength=1.0)
    t = trainer(gpt2(), tmp_path / "b", first, data, max_steps=4, save_strategy="steps", save_steps=2)

    class StopAfterTwo(transformers.TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 2:
                control.should_training_stop = True

    t.add_callback(StopAfterTwo())
    t.train()  # stops after the checkpoint of step 2 (and consolidates: that run is thrown away)
    resumed = SI(strength=1.0)
    trainer(gpt2(), tmp_path / "b", resumed, data, max_steps=4).train(resume_from_checkpoint=True)
    assert resumed.tasks_seen == 1
    for name, omega in straight.importance.items():
        torch.testing.assert_close(resumed.importance[name], omega, rtol=1e-4, atol=1e-8, msg=name)


def test_resuming_needs_the_regularizer_state(tmp_path):
    t = transformers.Trainer(model=gpt2(), args=arguments(tmp_path, save_strategy="steps", save_steps=2),
                             train_dataset=examples(8), data_collator=default_data_collator)
    t.train()
    with pytest.raises(FileNotFoundError, match=f"checkpoint-2 has no {STATE_FILE}: it was not saved by ContinualTrainer"):
        trainer(gpt2(), tmp_path, L2(), examples(8)).train(resume_from_checkpoint=True)
    with pytest.raises(TypeError, match="needs a forgetless Regularizer, got str"):
        ContinualTrainer(model=gpt2(), args=arguments(tmp_path), regularizer="ewc")


def test_ewc_consolidates_the_per_sequence_fisher_of_the_task_at_its_end(tmp_path):
    model = gpt2()
    data = examples(8, seed=4, pad_last=2)
    ewc = EWC(strength=10.0, estimator="empirical")
    t = trainer(model, tmp_path, ewc, data)
    t.train()
    assert ewc.tasks_seen == 1
    assert_fisher_close(ewc.importance, per_sequence_fisher(model.eval(), data))
    for name, p in model.named_parameters():
        assert torch.equal(ewc.anchor[name], p.detach()), name


# --- PEFT / LoRA --------------------------------------------------------------------------------------
def test_ewc_with_lora_left_padded_fisher_and_state_of_the_adapters_size(tmp_path):
    model = lora(llama())
    adapter = {n: p for n, p in model.named_parameters() if p.requires_grad}
    data = examples(8, seed=5, pad_first=2)
    ewc = EWC(strength=10.0, estimator="empirical")
    trainer(model, tmp_path, ewc, data).train()
    # every trainable parameter (nn.Linear adapters) has a layer rule: the mask is used, no torch.func
    assert_fisher_close(ewc.importance, per_sequence_fisher(model.eval(), data))
    state = ewc.state_dict()
    n_adapter = sum(p.numel() for p in adapter.values())
    assert sum(t.numel() for t in state.values() if t.dim()) == 2 * n_adapter   # Fisher + anchor: nothing else
    assert {k.split(".", 1)[1] for k in state if k.startswith("importance.")} == set(adapter)


@pytest.mark.parametrize("make", [L2, SI])
def test_with_lora_only_the_adapter_is_protected(tmp_path, make):
    model = lora(llama())
    adapter = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert adapter and all("lora_" in n for n in adapter)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    reg = make(strength=1.0)
    trainer(model, tmp_path, reg, examples(8)).train()
    state = reg.state_dict()
    for group in ("anchor", "importance"):
        tensors = {k.split(".", 1)[1]: v for k, v in state.items() if k.startswith(group + ".")}
        if group == "importance" and make is L2:
            assert not tensors   # L2 weighs every parameter 1: no importance at all
            continue
        assert set(tensors) == set(adapter)
        assert sum(t.numel() for t in tensors.values()) == sum(p.numel() for p in adapter.values())
    for name, p in model.named_parameters():
        if name in frozen:
            assert torch.equal(p, frozen[name]), name   # the base model did not move
