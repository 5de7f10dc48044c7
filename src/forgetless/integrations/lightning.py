"""EWC (or any forgetless regularizer) in Lightning: a callback for the lifecycle, one line for the loss.

    import lightning.pytorch as L
    from forgetless import EWC
    from forgetless.integrations.lightning import EWCCallback, penalty

    class Classifier(L.LightningModule):
        ...
        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = F.cross_entropy(self(x), y)
            return loss + penalty(self)        # the one line EWC needs in your module

    ewc = EWCCallback(EWC(strength=1e3))
    for loader in task_loaders:                # one fit per task, the same callback every time
        L.Trainer(max_epochs=5, callbacks=[ewc]).fit(model, loader)

The callback runs the lifecycle of :class:`~forgetless.Regularizer`: ``begin_task`` when training
starts, ``after_step`` after every training batch (i.e. after the optimizer step), ``consolidate``
when training ends normally (on the fit's training data by default), and it keeps the regularizer's
state in Lightning checkpoints.

**Why a line in ``training_step``.** Lightning gives callbacks no way to change the loss:
``on_before_backward`` sees it but cannot replace it. The alternatives all hide something: adding the
penalty's gradient to ``.grad`` after backward is missing from the logged loss, wrong under mixed
precision (the loss scaler has already scaled the task gradient) and with gradient accumulation, and a
second backward through a DistributedDataParallel model's parameters confuses its reducer; wrapping the
module's ``training_step`` mutates your object and cannot work with manual optimization. So, as in a
plain loop, you add the penalty to your loss yourself, where you can see and log it. Forgetting that
line would silently train without EWC, so the callback checks before every backward that the penalty
was asked for during the batch, and raises if not (``require_penalty=False`` turns the check off).

Checkpoints: the callback's ``state_dict`` holds the regularizer's tensors and whether a task is in
progress. ``Trainer.fit(..., ckpt_path=...)`` on a checkpoint saved mid-task (e.g. by
``ModelCheckpoint``, which saves before training ends, hence before ``consolidate``) resumes that task
without a new ``begin_task`` (SI's path integral goes on). To carry a consolidated regularizer to a
later process, save after ``fit`` returns (``trainer.save_checkpoint``) or use
:func:`forgetless.save` / :func:`forgetless.load`.

Distributed (DDP): every process runs the callback; ``consolidate`` computes the Fisher on each
process's shard of the training data and all-reduces, giving the Fisher of the union (a
``DistributedSampler`` that pads the last batch repeats a few samples). The penalty and state are the
same on every process.

Manual optimization works too (call ``penalty(self)`` in your loss); ``after_step`` then runs once per
batch, after all of that batch's optimizer steps.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable

import torch
from torch import Tensor

from ..regularizers.base import OutputTransform, Regularizer

try:
    from lightning.pytorch import Callback, LightningModule, Trainer
except ModuleNotFoundError as err:  # pragma: no cover - depends on the environment
    raise ModuleNotFoundError(
        "forgetless.integrations.lightning needs Lightning: pip install 'forgetless[lightning]' "
        "(or pip install lightning)", name=err.name,
    ) from err

__all__ = ["EWCCallback", "penalty"]

Data = Iterable[Any] | Callable[[Trainer, LightningModule], Iterable[Any]]


class EWCCallback(Callback):
    """Runs a forgetless regularizer's lifecycle inside ``Trainer.fit``; one fit = one task.

    Args:
        regularizer: any :class:`~forgetless.Regularizer` (EWC, OnlineEWC, SI, MAS, L2), fresh or
            loaded with :func:`forgetless.load`. The callback uses it; you may keep a reference.
        data: what ``consolidate`` reads at the end of each fit: ``None`` (default) for the fit's
            training dataloader (``trainer.train_dataloader``), a callable
            ``(trainer, pl_module) -> iterable`` (called at the end of every fit, so it can give each
            task its own data), or an iterable, used as is at the end of every fit (for one task; a
            generator would be empty the second time). Batches must be ``(inputs, targets)`` pairs
            (tuples or lists), and ``pl_module(inputs)`` must return logits.
        output_transform: passed to ``consolidate`` (e.g. a task's slice of a multi-head output).
        require_penalty: raise before a backward if :meth:`penalty` was not called during that
            batch, i.e. if ``training_step`` forgot to add it to the loss.
    """

    def __init__(
        self,
        regularizer: Regularizer,
        *,
        data: Data | None = None,
        output_transform: OutputTransform | None = None,
        require_penalty: bool = True,
    ) -> None:
        if not isinstance(regularizer, Regularizer):
            raise TypeError(f"EWCCallback needs a forgetless Regularizer, got {type(regularizer).__name__}")
        self.regularizer = regularizer
        self.data = data
        self.output_transform = output_transform
        self.require_penalty = require_penalty
        self._in_task = False           # between begin_task and consolidate
        self._restored_in_task = False  # loaded from a checkpoint saved mid-task
        self._asked = False             # penalty() called since the batch started

    @property
    def state_key(self) -> str:
        # one entry per regularizer class, so EWC and SI callbacks can share a trainer
        return self._generate_state_key(regularizer=type(self.regularizer).__name__)

    def penalty(self, pl_module: LightningModule) -> Tensor:
        """The regularizer's penalty for ``pl_module``: add it to the training loss."""
        self._asked = True
        return self.regularizer.penalty(pl_module)

    # --- lifecycle ---------------------------------------------------------------------------
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        _move_state(self.regularizer, pl_module.device)
        resuming = self._restored_in_task and trainer.ckpt_path is not None
        self._restored_in_task = False
        if not resuming:
            self.regularizer.begin_task(pl_module)
        self._in_task = True

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        self._asked = False

    def on_before_backward(self, trainer: Trainer, pl_module: LightningModule, loss: Tensor) -> None:
        if self.require_penalty and trainer.training and not self._asked:
            raise RuntimeError(
                f"EWCCallback({self.regularizer!r}): the penalty was not added to the loss. Lightning "
                "callbacks cannot change the loss; in training_step return "
                "`loss + forgetless.integrations.lightning.penalty(self)` (or pass require_penalty=False)."
            )

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self.regularizer.after_step(pl_module)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self._in_task:
            return
        if self.data is None:
            data = trainer.train_dataloader
        elif callable(self.data):
            data = self.data(trainer, pl_module)
        else:
            data = self.data
        with torch.enable_grad():
            self.regularizer.consolidate(pl_module, data, output_transform=self.output_transform)
        self._in_task = False

    # --- checkpoints ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        # plain types and tensors only: loadable with torch.load(weights_only=True)
        return {
            "class": type(self.regularizer).__name__,
            "hyperparameters": self.regularizer.hyperparameters(),
            "in_task": self._in_task,
            "state": self.regularizer.state_dict(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        mine = type(self.regularizer).__name__
        if state_dict.get("class") != mine:
            raise ValueError(f"EWCCallback: the checkpoint holds a {state_dict.get('class')} state, "
                             f"this callback has a {mine}")
        self.regularizer.load_state_dict(state_dict["state"])
        self._in_task = self._restored_in_task = bool(state_dict["in_task"])


def penalty(pl_module: LightningModule) -> Tensor:
    """Sum of the penalties of every :class:`EWCCallback` on ``pl_module``'s trainer, for the loss.

    Zero (on the module's device) when the module has no trainer or the trainer no such callback,
    so the same module trains with or without continual learning.
    """
    try:
        trainer = pl_module.trainer
    except RuntimeError:  # not attached to a Trainer
        trainer = None
    total = torch.zeros((), device=pl_module.device)
    for callback in getattr(trainer, "callbacks", None) or ():
        if isinstance(callback, EWCCallback):
            total = total + callback.penalty(pl_module)
    return total


def _move_state(regularizer: Regularizer, device: torch.device) -> None:
    """Put the regularizer's tensors where the model is (a checkpoint or a file may have them elsewhere)."""
    state = regularizer.state_dict()
    if any(t.device != device for t in state.values()):
        regularizer.load_state_dict({k: t.to(device) for k, t in state.items()})
