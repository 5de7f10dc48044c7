"""EWC (or any forgetless regularizer) inside Hugging Face ``transformers.Trainer``, with or without LoRA.

    pip install 'forgetless[transformers]'

    from forgetless.integrations.huggingface import ContinualTrainer

    ewc = forgetless.EWC(strength=..., estimator="sampled")
    for task in tasks:                                   # one train() per task, the same regularizer
        trainer = ContinualTrainer(model=model, args=args, train_dataset=task, data_collator=collator,
                                   regularizer=ewc)       # the one line: instead of Trainer(...)
        trainer.train()

``ContinualTrainer`` is a ``Trainer`` that

- adds ``regularizer.penalty(model)`` to the training loss in ``compute_loss`` (not to evaluation
  losses), counted once per optimizer step under gradient accumulation;
- runs the lifecycle: ``begin_task`` when training starts, ``before_step`` / ``after_step`` around
  every optimizer step (after gradient clipping), and, when ``train()`` returns, ``consolidate`` on
  the task's data: the training dataloader, or ``consolidation_data`` (any iterable of batches),
  through the causal-LM adapters of :mod:`forgetless.integrations.causal_lm` (logits aligned with the
  shifted labels, padding ignored);
- saves the regularizer's state with every checkpoint (and every ``save_model``):
  ``forgetless-regularizer.safetensors`` (:func:`forgetless.save`'s format, no pickle) and
  ``forgetless-trainer.json`` (whether a task was in progress); ``train(resume_from_checkpoint=...)``
  restores it, and a checkpoint saved mid-task resumes the task (SI's path integral goes on).

With PEFT (``get_peft_model``) only the adapter's parameters require gradients, so only they are
protected: the regularizer's state has exactly the adapter's size and the frozen base model costs no
memory. To protect what a pretrained base model does on some data while fine-tuning adapters, call
:func:`~forgetless.integrations.causal_lm.consolidate_causal_lm` on that data before the first task.

A Trainer subclass of your own (e.g. trl's ``SFTTrainer``) combines as ``class T(ContinualTrainer,
SFTTrainer)``: every override here calls ``super()``. Single process or DDP; not FSDP/DeepSpeed
(sharded parameters). Needs transformers >= 4.55: the penalty follows Trainer's rule for scaling a
micro-batch's loss under gradient accumulation, which changed before that (tested: 4.55.4, 5.24.0).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch
from torch import nn

from ..regularizers.base import Regularizer
from ..state import load, save
from .causal_lm import consolidate_causal_lm

try:
    from transformers import Trainer, TrainerCallback
    from transformers.trainer_utils import get_last_checkpoint
except ModuleNotFoundError as err:  # pragma: no cover - depends on the environment
    raise ModuleNotFoundError(
        "forgetless.integrations.huggingface needs transformers: pip install 'forgetless[transformers]'",
        name=err.name,
    ) from err

LOG = logging.getLogger(__name__)
STATE_FILE = "forgetless-regularizer.safetensors"
TRAINER_FILE = "forgetless-trainer.json"

__all__ = ["STATE_FILE", "TRAINER_FILE", "ContinualTrainer"]


class ContinualTrainer(Trainer):
    """``transformers.Trainer`` with a forgetless regularizer; one ``train()`` is one task.

    Args:
        *args, **kwargs: everything ``Trainer`` takes.
        regularizer: any :class:`~forgetless.Regularizer` (EWC, OnlineEWC, SI, MAS, L2), fresh,
            carried over from the previous task's trainer, or loaded with :func:`forgetless.load`.
        consolidation_data: the batches (dicts with ``input_ids``, optional ``attention_mask`` and
            ``labels``) ``consolidate`` reads when ``train()`` ends; default: the training dataloader.
    """

    def __init__(self, *args: Any, regularizer: Regularizer,
                 consolidation_data: Iterable[Mapping[str, Any]] | None = None, **kwargs: Any) -> None:
        if not isinstance(regularizer, Regularizer):
            raise TypeError(f"ContinualTrainer needs a forgetless Regularizer, got {type(regularizer).__name__}")
        super().__init__(*args, **kwargs)
        self.regularizer = regularizer
        self.consolidation_data = consolidation_data
        self.in_task = False             # between begin_task and consolidate
        self._resuming_in_task = False   # restored from a checkpoint saved mid-task
        self.add_callback(_Lifecycle(self))

    # --- the loss --------------------------------------------------------------------------------
    def compute_loss(self, model: nn.Module, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None, **kwargs: Any) -> Any:
        out = super().compute_loss(model, inputs, return_outputs=return_outputs,
                                   num_items_in_batch=num_items_in_batch, **kwargs)
        if not model.training:  # evaluation: the task's loss alone
            return out
        loss, outputs = out if return_outputs else (out, None)
        penalty = self.regularizer.penalty(self.model)
        if self._loss_scaled_for_accumulation(num_items_in_batch):
            # Trainer will not divide this micro-batch's loss by the accumulation steps: we do, so
            # the penalty counts once per optimizer step, like the task loss
            penalty = penalty / self.current_gradient_accumulation_steps
        loss = loss + penalty.to(loss.device)
        return (loss, outputs) if return_outputs else loss

    def _loss_scaled_for_accumulation(self, num_items_in_batch: Any) -> bool:
        """Whether ``Trainer.training_step`` leaves the loss undivided by the accumulation steps: its
        ``loss_is_scaled_for_ga`` (5.x), else its rule since 4.55 (the model normalised the loss by
        the tokens of the whole accumulated batch, or a ``compute_loss_func`` did)."""
        flag = getattr(self, "loss_is_scaled_for_ga", None)
        if flag is not None:
            return bool(flag)
        return bool((self.model_accepts_loss_kwargs and num_items_in_batch is not None)
                    or self.compute_loss_func is not None)

    # --- a task ----------------------------------------------------------------------------------
    def train(self, resume_from_checkpoint: str | bool | None = None, *args: Any, **kwargs: Any) -> Any:
        """``Trainer.train``, restoring the regularizer from the checkpoint when resuming, then consolidating."""
        if resume_from_checkpoint:
            folder = (get_last_checkpoint(self.args.output_dir) if resume_from_checkpoint is True
                      else resume_from_checkpoint)
            if folder is not None:  # None: Trainer says there is no checkpoint
                self._restore(Path(folder))
        output = super().train(resume_from_checkpoint, *args, **kwargs)
        self.consolidate()
        return output

    def consolidate(self) -> None:
        """End the task: ``regularizer.consolidate`` on the task's data (see the class docstring)."""
        data = self.consolidation_data if self.consolidation_data is not None else self.get_train_dataloader()
        consolidate_causal_lm(self.regularizer, self.model, data)
        self.in_task = False
        LOG.info("ContinualTrainer: %r consolidated after %d task(s)", self.regularizer, self.regularizer.tasks_seen)

    # --- checkpoints -----------------------------------------------------------------------------
    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        super().save_model(output_dir, _internal_call=_internal_call)
        if self.args.should_save:
            folder = Path(output_dir if output_dir is not None else self.args.output_dir)
            folder.mkdir(parents=True, exist_ok=True)
            save(self.regularizer, folder / STATE_FILE)
            (folder / TRAINER_FILE).write_text(json.dumps({"in_task": self.in_task}) + "\n")

    def _restore(self, folder: Path) -> None:
        path = folder / STATE_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"{folder} has no {STATE_FILE}: it was not saved by ContinualTrainer, so the regularizer's "
                "state cannot be restored (resume with the Trainer that wrote it, or start the task afresh)"
            )
        saved = load(path)
        if type(saved) is not type(self.regularizer):
            raise ValueError(f"{path} holds a {type(saved).__name__} state, this trainer has a "
                             f"{type(self.regularizer).__name__}")
        if saved.hyperparameters() != self.regularizer.hyperparameters():
            LOG.warning("resuming with %r; the checkpoint was written by %r", self.regularizer, saved)
        self.regularizer.load_state_dict(saved.state_dict())
        trainer_file = folder / TRAINER_FILE
        in_task = json.loads(trainer_file.read_text())["in_task"] if trainer_file.is_file() else True
        self._resuming_in_task = bool(in_task)


class _Lifecycle(TrainerCallback):
    """The regularizer's per-step hooks; Trainer calls callbacks where no method can be overridden."""

    def __init__(self, trainer: ContinualTrainer) -> None:
        self.trainer = trainer

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        t = self.trainer
        _move_state(t.regularizer, next(t.model.parameters()).device)
        if not t._resuming_in_task:
            t.regularizer.begin_task(t.model)
        t._resuming_in_task = False
        t.in_task = True

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.trainer.regularizer.before_step(self.trainer.model)

    def on_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.trainer.regularizer.after_step(self.trainer.model)


def _move_state(regularizer: Regularizer, device: torch.device) -> None:
    """Put the regularizer's tensors where the model is (a checkpoint loads them on the CPU)."""
    state = regularizer.state_dict()
    if any(t.device != device for t in state.values()):
        regularizer.load_state_dict({k: t.to(device) for k, t in state.items()})

