"""The diagonal Fisher information of a classifier: THE place it is computed.

    F_i = E_x E_{y ~ p_θ(·|x)} [(∂ log p_θ(y|x) / ∂θ_i)²]

The square is taken per SAMPLE, then averaged (not the square of a batch-mean gradient). The gradient of
log p(y|x) w.r.t. the logits z is e_y − p, so every estimator is a choice of output cotangents for the
per-sample engine (:mod:`forgetless.per_sample`):

* ``exact``: all C labels weighted by p. Only Σ_c p_c (e_c − p)(e_c − p)ᵀ = diag(p) − ppᵀ matters, a
  matrix of rank C−1: it is written as Σ_k v_k v_kᵀ with C−1 cotangents, batched into one backward
  pass. The cost grows with C (for thousands of classes use ``sampled``);
* ``sampled``: one y ~ p_θ(·|x) per x, drawn from a seeded generator: e_y − p;
* ``empirical``: y = the true target: e_y − p. The "empirical Fisher", a different (often worse) quantity;
* ``batched``: (∂ mean_b −log p(y_n|x_n) / ∂θ)² per mini-batch b, averaged over batches. This is what
  several libraries compute. It is NOT the Fisher (a square of a mean, not a mean of squares, and it
  depends on the batch size); provided for comparison only.
"""
from __future__ import annotations

from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .per_sample import average_over_data, reduce_per_sample

ESTIMATORS = ("exact", "sampled", "empirical", "batched")

__all__ = ["ESTIMATORS", "fisher_diagonal"]


def fisher_diagonal(
    model: nn.Module,
    data: Iterable[tuple[Tensor, Tensor]] | tuple[Tensor, Tensor],
    *,
    estimator: str = "exact",
    output_transform: Callable[[Tensor], Tensor] | None = None,
    generator: torch.Generator | None = None,
    max_samples: int | None = None,
    progress: bool = False,
) -> dict[str, Tensor]:
    """Diagonal Fisher of a classifier ``model`` (logits out), averaged over the samples of ``data``.

    Args:
        model: returns logits of shape (batch, classes). Put in eval mode for the pass (dropout off);
            every module's mode is restored afterwards. Its ``.grad`` are not touched.
        data: an iterable of ``(inputs, targets)`` mini-batches (a DataLoader, a list of pairs), or one
            pair ``(X, Y)`` of tensors holding the whole dataset, read in batches of 512 samples.
            Inputs are moved to the parameters' device.
        estimator: ``exact`` (default), ``sampled``, ``empirical`` or ``batched`` (module docstring).
        output_transform: applied to ``model(x)`` before the softmax, e.g. ``lambda z: z[:, 2:4]`` for a
            task's classes; targets are then indices into the transformed logits.
        generator: draws the labels of ``sampled`` (default: ``torch.Generator().manual_seed(0)``; the
            global RNG is never used).
        max_samples: use at most this many samples (the last batch is truncated).
        progress: show a tqdm progress bar.

    Returns:
        name -> tensor shaped like the parameter, for every parameter with ``requires_grad``. Under
        ``torch.distributed`` the sums and sample counts of all processes are all-reduced before dividing:
        N processes give the Fisher of the union of their shards (call it on every process, with the
        plain module rather than a DistributedDataParallel wrapper; ``max_samples`` is per process).

    Raises:
        ValueError: unknown estimator, empty data, targets out of range, non-finite model outputs.

    Example:
        >>> torch.manual_seed(0) and None
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
        >>> X, Y = torch.randn(100, 4), torch.randint(0, 3, (100,))
        >>> fisher = fisher_diagonal(model, (X, Y))
        >>> {name: tuple(f.shape) for name, f in fisher.items()}
        {'0.weight': (8, 4), '0.bias': (8,), '2.weight': (3, 8), '2.bias': (3,)}
        >>> bool(all((f >= 0).all() for f in fisher.values()))
        True
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown Fisher estimator {estimator!r}; choose one of {', '.join(ESTIMATORS)}")
    desc = f"Fisher ({estimator})"
    if estimator == "batched":
        return average_over_data(
            model, data, lambda x, y, _: (_batched_sums(model, x, y, output_transform), 1),
            max_samples=max_samples, progress=progress, desc=desc,
        )
    if estimator == "sampled" and generator is None:
        generator = torch.Generator().manual_seed(0)
    return reduce_per_sample(
        model, data, _score_cotangents(estimator, generator), reduce="square",
        output_transform=output_transform, max_samples=max_samples, progress=progress, desc=desc,
    )


def _score_cotangents(estimator: str, generator: torch.Generator | None):
    """(logits z, targets) -> (K, N, C): the gradients of log p(y|x) w.r.t. z to square and sum over K."""

    def cotangents(z: Tensor, y: Tensor) -> Tensor:
        p = torch.softmax(z, dim=1)
        n, c = z.shape
        if estimator == "exact":
            return _exact_cotangents(p)
        if estimator == "sampled":
            probs = p.float() if p.dtype in (torch.float16, torch.bfloat16) else p
            y = torch.multinomial(probs.to(generator.device), 1, generator=generator).squeeze(1).to(p.device)
        else:
            y = _check_targets(y, n, c)
        return (F.one_hot(y, c).to(p.dtype) - p).unsqueeze(0)

    return cotangents


def _exact_cotangents(p: Tensor) -> Tensor:
    """C−1 cotangents per sample whose outer products sum to Σ_c p_c (e_c − p)(e_c − p)ᵀ = diag(p) − ppᵀ.

    The C obvious ones, √p_c (e_c − p), are linearly dependent (Σ_c √p_c · them = 0): that matrix has
    rank C−1. Dropping the most probable class r and mixing it into the others,
    v_c = √p_c (e_c − (1−β) p − β e_r) with β = √p_r / (1 + √p_r), gives the same sum with one backward
    direction fewer (C=2: one, as cheap as ``sampled``). p_r >= 1/C keeps β well conditioned.
    """
    n, c = p.shape
    if c == 1:  # log p = 0: no information
        return p.new_zeros(1, n, 1)
    r = p.argmax(1)
    root_r = p.gather(1, r.unsqueeze(1)).sqrt()
    beta = root_r / (1 + root_r)
    e_r = F.one_hot(r, c).to(p.dtype)
    eye = torch.eye(c, dtype=p.dtype, device=p.device)
    every = (eye.unsqueeze(1) - (1 - beta) * p - beta * e_r) * p.T.sqrt().unsqueeze(2)  # (C, N, C)
    others = torch.arange(c, device=p.device).expand(n, c)[F.one_hot(r, c) == 0].view(n, c - 1)
    return every.gather(0, others.T.unsqueeze(2).expand(c - 1, n, c))


def _batched_sums(model, x: Tensor, y: Tensor, transform) -> dict[str, Tensor]:
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    z = model(x)
    z = transform(z) if transform is not None else z
    if not torch.isfinite(z).all():
        raise ValueError("the model's outputs contain NaN or inf: the Fisher would not be finite. "
                         "Check the model's parameters and the inputs.")
    y = _check_targets(y, *z.shape)
    grads = torch.autograd.grad(F.cross_entropy(z, y), list(params.values()), allow_unused=True)
    return {n: torch.zeros_like(p) if g is None else g.square() for (n, p), g in zip(params.items(), grads)}


def _check_targets(y: Tensor, n: int, c: int) -> Tensor:
    if y.shape != (n,) or y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise ValueError(f"targets must be {n} class indices, got shape {tuple(y.shape)} dtype {y.dtype}")
    if n and (int(y.min()) < 0 or int(y.max()) >= c):
        raise ValueError(f"targets must lie in [0, {c}) (indices into the transformed logits), "
                         f"got range [{int(y.min())}, {int(y.max())}]")
    return y.long()

