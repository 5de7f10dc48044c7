"""Hugging Face causal language models as the Fisher engine sees a model: ``(x, y)`` in, logits out.

A Hugging Face batch is a dict (``input_ids``, ``attention_mask``, ``labels``) and a causal LM
returns an output object whose ``logits[:, t]`` predict the token at t+1 (the model shifts the labels
inside its loss). The per-sample engine wants ``model(x)`` to return logits of shape (N, T, C) and
targets ``y`` (N, T) at the same positions. Two adapters bridge that, with no import of
``transformers`` (anything that takes ``input_ids=`` and ``attention_mask=`` and returns ``.logits``
works):

- :class:`CausalLMBatches` turns each batch into ``y = labels[:, 1:]`` (N, L-1), with -100 (no
  target) wherever the label is -100 or the attention mask is 0, and ``x = input_ids`` (N, L) when the
  attention mask says nothing the model needs (no padding, or padding only at the end: causal
  attention never looks ahead, so the scored positions do not see it), else
  ``x = stack(input_ids, attention_mask)`` (N, 2, L);
- :class:`CausalLMLogits` wraps the model: ``wrapper(x) = model(input_ids, attention_mask).logits[:, :-1]``,
  the logits aligned with those shifted labels (without a mask, and when the model's ``forward`` takes
  ``position_ids``, it passes positions 0…L-1 for every sequence: the values the model would use,
  but one row per sequence, so that a learned position embedding (GPT-2's ``wpe``) is looked up with
  the batch on dim 0 and keeps its layer rule instead of the ``torch.func`` path). It owns the
  model's submodules under their own names, so ``wrapper.named_parameters()`` yields the model's
  parameters under the model's names: a regularizer consolidated through the wrapper penalises the
  model itself (``reg.penalty(model)``). With PEFT, only the adapter's parameters have
  ``requires_grad``, so only they get a Fisher and an anchor.

:func:`consolidate_causal_lm` puts the two together. Requires the sequence support of the Fisher
engine: outputs (N, T, C), targets (N, T) with -100 ignored, each sequence's token gradients summed
before squaring (see :mod:`forgetless.fisher`).

Why the mask is dropped when it can be: parameters without a layer rule (Llama's ``RMSNorm``, …) go
through the engine's ``torch.func`` path, which runs the model per sample under ``vmap``, and Hugging
Face's attention-mask preparation branches on the mask's values, which ``vmap`` cannot do. Without a
mask the model takes its plain causal path, which ``vmap`` runs. Left-padded batches need their mask:
they work when every trainable parameter has a layer rule (e.g. LoRA adapters, which are
``nn.Linear``), and raise a clear error otherwise (a full GPT-2 too: with a mask, its positions are
left to the model, shared by the batch, and its position embedding takes the ``torch.func`` path).
"""
from __future__ import annotations

import inspect
from typing import Any, Iterable, Iterator, Mapping

import torch
from torch import Tensor, nn

from ..regularizers.base import Regularizer

IGNORE = -100

__all__ = ["CausalLMBatches", "CausalLMLogits", "consolidate_causal_lm"]


class CausalLMBatches:
    """Re-iterable view of Hugging Face causal-LM batches as the engine's ``(x, y)`` pairs.

    ``labels`` defaults to ``input_ids`` (what ``DataCollatorForLanguageModeling(mlm=False)`` does),
    ``attention_mask`` to all ones.

    Example:
        >>> batch = {"input_ids": torch.tensor([[5, 6, 7, 0]]), "attention_mask": torch.tensor([[1, 1, 1, 0]])}
        >>> x, y = next(iter(CausalLMBatches([batch])))
        >>> x.tolist(), y.tolist()         # y[t] is the token after position t; padding is -100
        ([[5, 6, 7, 0]], [[6, 7, -100]])
        >>> left = {"input_ids": torch.tensor([[0, 6, 7]]), "attention_mask": torch.tensor([[0, 1, 1]])}
        >>> next(iter(CausalLMBatches([left])))[0].tolist()   # the mask matters: it travels with x
        [[[0, 6, 7], [0, 1, 1]]]
    """

    def __init__(self, batches: Iterable[Mapping[str, Any]]) -> None:
        self.batches = batches

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        for batch in self.batches:
            yield causal_lm_pair(batch)

    def __len__(self) -> int:
        return len(self.batches)  # type: ignore[arg-type]


def causal_lm_pair(batch: Mapping[str, Any]) -> tuple[Tensor, Tensor]:
    """One Hugging Face batch → ``(x, y (N, L-1))``, x (N, L) or (N, 2, L); see :class:`CausalLMBatches`."""
    if not isinstance(batch, Mapping) or "input_ids" not in batch:
        raise TypeError(f"a causal-LM batch must be a mapping with 'input_ids', got {type(batch).__name__}")
    ids = torch.as_tensor(batch["input_ids"])
    if ids.dim() != 2 or ids.is_floating_point():
        raise ValueError(f"input_ids must be integer (batch, length), got {ids.dtype} {tuple(ids.shape)}")
    mask = torch.as_tensor(batch["attention_mask"]) if batch.get("attention_mask") is not None else torch.ones_like(ids)
    labels = torch.as_tensor(batch["labels"]) if batch.get("labels") is not None else ids
    if mask.shape != ids.shape or labels.shape != ids.shape:
        raise ValueError(f"input_ids {tuple(ids.shape)}, attention_mask {tuple(mask.shape)} and labels "
                         f"{tuple(labels.shape)} must have the same shape")
    mask = mask.to(ids.device)
    y = labels[:, 1:].long().masked_fill(mask[:, 1:] == 0, IGNORE)
    if bool((mask[:, 1:] <= mask[:, :-1]).all()) and bool((mask[:, :1] == 1).all()):
        return ids.long(), y  # ones then zeros in every row: nothing a scored position could see
    return torch.stack([ids.long(), mask.long()], dim=1), y


class CausalLMLogits(nn.Module):
    """``x ↦ model(input_ids, attention_mask).logits[:, :-1]``, with the model's parameter names.

    ``x`` is ``input_ids`` (N, L) or ``stack(input_ids, attention_mask)`` (N, 2, L), as
    :class:`CausalLMBatches` makes it.

    Example:
        >>> class Tiny(nn.Module):                  # any model taking input_ids/attention_mask, returning .logits
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.embed, self.lm_head = nn.Embedding(10, 4), nn.Linear(4, 10)
        ...     def forward(self, input_ids, attention_mask=None):
        ...         return type("Out", (), {"logits": self.lm_head(self.embed(input_ids))})()
        >>> model = Tiny()
        >>> wrapper = CausalLMLogits(model)
        >>> [n for n, _ in wrapper.named_parameters()] == [n for n, _ in model.named_parameters()]
        True
        >>> tuple(wrapper(torch.zeros(3, 5, dtype=torch.long)).shape)
        (3, 4, 10)
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self._wrapped = (model,)  # a tuple: not registered, so the model is no child and adds no prefix
        self._takes_positions = "position_ids" in inspect.signature(model.forward).parameters
        for name, child in model.named_children():
            self.add_module(name, child)
        for name, p in model.named_parameters(recurse=False):
            self.register_parameter(name, p)
        for name, b in model.named_buffers(recurse=False):
            self.register_buffer(name, b)

    def forward(self, x: Tensor) -> Tensor:
        model = self._wrapped[0]
        # the model's own flag is not among our modules: give it ours (eval during a Fisher pass)
        was_training, model.training = model.training, self.training
        try:
            if x.dim() == 2 and self._takes_positions:
                positions = torch.arange(x.shape[1], device=x.device).expand(x.shape[0], -1)
                logits = model(input_ids=x, position_ids=positions).logits
            elif x.dim() == 2:
                logits = model(input_ids=x).logits
            elif _under_vmap():
                raise ValueError(
                    "a left-padded batch (its attention mask matters) reached the torch.func path of the Fisher "
                    "engine, which Hugging Face's mask preparation cannot run under; pad on the right "
                    "(tokenizer.padding_side = 'right') or train only parameters with a layer rule (e.g. LoRA)")
            else:
                logits = model(input_ids=x[:, 0], attention_mask=x[:, 1]).logits
        finally:
            model.training = was_training
        return logits[:, :-1]


def _under_vmap() -> bool:
    try:
        return torch._C._functorch.peek_interpreter_stack() is not None
    except AttributeError:  # pragma: no cover - a torch without the hook
        return False


def consolidate_causal_lm(
    regularizer: Regularizer, model: nn.Module, batches: Iterable[Mapping[str, Any]]
) -> None:
    """``regularizer.consolidate`` on a causal LM and its Hugging Face batches (the end of a task).

    Afterwards ``regularizer.penalty(model)`` protects what ``model`` learned from ``batches``. For
    L2 and SI the data is not read; EWC, online EWC and MAS read it through the adapters above.
    """
    with torch.enable_grad():
        regularizer.consolidate(CausalLMLogits(model), CausalLMBatches(batches))
