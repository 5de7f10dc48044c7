"""K copies of a small MLP trained at once as one stacked model, each with its own regularizer.

A strength search trains the same network from the same start on the same batches K times, once per
strength λ_k. Stacked, the K parameter sets become one tensor per layer with a leading K axis; every
step does one batched matmul per layer (the first one a single matmul: the batch is shared), one
summed loss and one Adam step over the stacked tensors. The copies never mix, so each copy's
gradient is its own, and Adam is elementwise, so one Adam over the stack is K Adams: each copy
follows its separate run up to float rounding (``tests/test_stacked.py`` checks it).

What makes the copies' runs separate runs, in :func:`train_stacked`:

- the mini-batches come from one ``generator``, drawn as :func:`forgetless.training.train_task` draws
  them: the K separate runs seeded alike see these batches;
- dropout draws one mask per step per layer from the global RNG, with the call ``nn.Dropout`` makes
  on CPU (``bernoulli_(1 - p)`` on a tensor of the activation's shape), shared by the copies: the K
  separate runs started from the same global seed draw these masks;
- copy k's penalty is its own regularizer's, a diagonal quadratic scale_k·Σ w_k·(θ_k − θ*_k)² or
  Kronecker-factored scale_k·Σ tr(G ΔW̄_k A ΔW̄_kᵀ), its gradient added directly
  (:mod:`forgetless.stacked_penalty`; the opt-in fused form of :meth:`Regularizer.add_penalty_gradient_`).

It applies (:func:`stackable`) to ``nn.Sequential`` MLPs of Flatten, Linear, ReLU and Dropout
layers, every parameter trainable, and to regularizers that do nothing between steps and whose penalty
is a diagonal quadratic (EWC, online EWC and MAS with a diagonal Fisher, L2) or Kronecker-factored
(EWC and online EWC with ``structure="kfac"``; only with copies factored over the same layers); not SI.
Everything else trains one model at a time. ``bench/bench_stacked.py`` measures when it pays.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .benchmarks.base import Split
from .regularizers.base import OutputTransform, Regularizer
from .stacked_penalty import penalty_problem, stacked_penalties
from .training import TrainingError, endless_minibatches

_LAYERS = (nn.Flatten, nn.Linear, nn.ReLU, nn.Dropout)


def stackable(model: nn.Module, regularizers: Sequence[Regularizer | None] = ()) -> str | None:
    """Why ``model`` and ``regularizers`` cannot be trained stacked (one line), or None when they can.

    Example:
        >>> from forgetless.models import mlp
        >>> from forgetless.regularizers import EWC, SI
        >>> stackable(mlp(4, (3,), 2, dropout=0.5), [EWC(1.0), EWC(10.0)]) is None
        True
        >>> stackable(mlp(4, (3,), 2), [SI(1.0)])
        'SI acts between steps or has a penalty that is neither a diagonal quadratic nor Kronecker-factored'
    """
    if not isinstance(model, nn.Sequential) or not all(type(m) in _LAYERS for m in model):
        return "the model is not an nn.Sequential of Flatten, Linear, ReLU and Dropout layers"
    if any(isinstance(m, nn.Linear) and m.bias is None for m in model):
        return "a Linear layer has no bias"
    if not all(p.requires_grad for p in model.parameters()):
        return "some parameters are frozen"
    for reg in regularizers:
        if reg is None:
            continue
        hooks = [getattr(type(reg), h) is getattr(Regularizer, h) for h in ("begin_task", "before_step", "after_step")]
        if not all(hooks) or (reg.tasks_seen > 0 and reg.quadratic() is None and reg.kronecker() is None):
            return (f"{type(reg).__name__} acts between steps or has a penalty that is neither a diagonal quadratic "
                    "nor Kronecker-factored")
    return penalty_problem(regularizers)


class StackedMLP(nn.Module):
    """K MLPs of one architecture as one module: ``forward(x)`` gives logits (K, N, C) for inputs (N, ...).

    Example:
        >>> from forgetless.models import mlp
        >>> nets = [mlp(4, (3,), 2) for _ in range(5)]
        >>> stack = StackedMLP(nets)
        >>> x = torch.randn(7, 4)
        >>> torch.allclose(stack(x)[2], nets[2](x), atol=1e-6)
        True
    """

    def __init__(self, models: Sequence[nn.Sequential]) -> None:
        super().__init__()
        problem = stackable(models[0]) if models else "no models given"
        kinds = [[(type(m), getattr(m, "weight", torch.empty(0)).shape) for m in net] for net in models]
        if problem or any(k != kinds[0] for k in kinds):
            raise ValueError(f"cannot stack these models: {problem or 'their architectures differ'}")
        self.k = len(models)
        self.plan: list[tuple[str, int | float]] = []  # ("linear", index into weights) / ("relu", 0) / ("dropout", p)
        self.names: list[str] = []                      # the single model's parameter names, in stack order
        weights, biases = [], []
        for i, layer in enumerate(models[0]):
            if isinstance(layer, nn.Linear):
                self.plan.append(("linear", len(weights)))
                weights.append(nn.Parameter(torch.stack([net[i].weight.detach() for net in models])))
                biases.append(nn.Parameter(torch.stack([net[i].bias.detach() for net in models])))
                self.names += [f"{i}.weight", f"{i}.bias"]
            elif isinstance(layer, nn.ReLU):
                self.plan.append(("relu", 0))
            elif isinstance(layer, nn.Dropout) and layer.p > 0:
                self.plan.append(("dropout", layer.p))
        self.weights, self.biases = nn.ParameterList(weights), nn.ParameterList(biases)

    def stacked_parameters(self) -> list[Tensor]:
        """Each parameter of the single model, stacked (K, ...), in the order of :attr:`names`."""
        return [t for pair in zip(self.weights, self.biases) for t in pair]

    def forward(self, x: Tensor) -> Tensor:
        h = x.flatten(1)
        shared = True  # (N, features) while every copy sees the same tensor, else (K, N, features)
        for kind, arg in self.plan:
            if kind == "linear":
                w, b = self.weights[arg], self.biases[arg]
                if shared:  # one matmul against all K weight matrices side by side
                    h = F.linear(h, w.flatten(0, 1), b.flatten()).unflatten(1, (self.k, -1)).transpose(0, 1)
                    shared = False
                else:
                    h = torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))
            elif kind == "relu":
                h = torch.relu(h)
            elif self.training:  # the mask nn.Dropout draws on CPU for one copy's (N, width) activation
                noise = torch.empty(h.shape[-2:], dtype=h.dtype, device=h.device).bernoulli_(1 - arg).div_(1 - arg)
                h = h * noise
        return h if not shared else h.expand(self.k, *h.shape)

    @torch.no_grad()
    def write_to(self, models: Sequence[nn.Module]) -> None:
        """Copy copy k's parameters into ``models[k]``."""
        for k, net in enumerate(models):
            params = dict(net.named_parameters())
            for name, stacked in zip(self.names, self.stacked_parameters()):
                params[name].copy_(stacked[k])


def train_stacked(
    stack: StackedMLP,
    data: Split,
    *,
    steps: int,
    batch_size: int = 128,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    regularizers: Sequence[Regularizer | None],
    output_transform: OutputTransform | None = None,
    label: str = "training",
    on_step: Callable[[], None] | None = None,
) -> list[float | TrainingError]:
    """:func:`forgetless.training.train_task` for the K copies of ``stack`` at once, copy k under
    ``regularizers[k]`` (each :func:`stackable`). Returns, per copy, the mean task loss of its last 50
    steps, or the :class:`TrainingError` its separate run would have raised (its loss became NaN or
    infinite; the copy is then left alone: nothing it computes reaches the other copies).
    """
    if len(regularizers) != stack.k:
        raise ValueError(f"{stack.k} stacked copies but {len(regularizers)} regularizers")
    if data.y.dim() != 1:
        raise ValueError("stacked training takes one class per sample, not sequences")
    stack.train()
    params = stack.stacked_parameters()
    penalties = stacked_penalties(stack.names, params, regularizers)
    steps_per_epoch = math.ceil(len(data) / batch_size)
    failed: dict[int, TrainingError] = {}
    recent: list[Tensor] = []
    batches = endless_minibatches(data, batch_size, generator)
    for step in range(steps):
        x, y = next(batches)
        logits = stack(x)
        if output_transform is not None:
            logits = output_transform(logits.flatten(0, 1)).unflatten(0, (stack.k, -1))
        losses = F.cross_entropy(logits.flatten(0, 1), y.repeat(stack.k), reduction="none").view(stack.k, -1).mean(1)
        total = losses.detach().clone()
        for penalty in penalties:  # each copy's penalty; its gradient is kept for after backward
            total += penalty.value(params)
        bad = ~torch.isfinite(total)
        if bad.any():
            for k in bad.nonzero().flatten().tolist():
                if k not in failed:
                    failed[k] = TrainingError(
                        f"{label} (copy {k}): the loss became {float(total[k])} at epoch {step // steps_per_epoch + 1} "
                        f"(step {step + 1}); lower the learning rate or the regularization strength")
        optimizer.zero_grad(set_to_none=True)
        losses.sum().backward()  # the copies are independent: each one's gradient is its own loss's
        for penalty in penalties:
            penalty.add_gradient_(params)
        optimizer.step()
        recent.append(losses.detach())
        del recent[:-50]
        if on_step is not None:
            on_step()
    mean = torch.stack(recent).mean(0) if recent else torch.zeros(stack.k)
    return [failed[k] if k in failed else float(mean[k]) for k in range(stack.k)]


@torch.no_grad()
def stacked_accuracy(stack: StackedMLP, data: Split, *, output_transform: OutputTransform | None = None,
                     batch_size: int = 4096) -> list[float]:
    """Each copy's :func:`forgetless.training.accuracy` on ``data``, in eval mode (NaN when empty)."""
    if len(data) == 0:
        return [math.nan] * stack.k
    was_training = stack.training
    stack.eval()
    try:
        correct = torch.zeros(stack.k, dtype=torch.long)
        for start in range(0, len(data), batch_size):
            x, y = data.x[start:start + batch_size], data.y[start:start + batch_size]
            logits = stack(x)
            if output_transform is not None:
                logits = output_transform(logits.flatten(0, 1)).unflatten(0, (stack.k, -1))
            correct += (logits.argmax(-1) == y).sum(1)
        return [int(c) / len(data) for c in correct]
    finally:
        stack.train(was_training)
