"""Integrations with training frameworks, one optional module each.

Nothing here is imported by ``import forgetless``; import the module you need, which needs its extra:

- :mod:`forgetless.integrations.lightning`: ``EWCCallback`` for Lightning (``pip install 'forgetless[lightning]'``).
- :mod:`forgetless.integrations.huggingface`: ``ContinualTrainer``, a ``transformers.Trainer`` with a
  regularizer (``pip install 'forgetless[transformers]'``; with LoRA, also ``peft``).
- :mod:`forgetless.integrations.causal_lm`: Hugging Face causal-LM batches and outputs as the Fisher
  engine's ``(x, y)`` and logits (needs no extra).
"""
