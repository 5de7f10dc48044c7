"""The diagonal Fisher information of a classifier: THE place it is computed.

    F_i = E_x E_{y ~ p_θ(·|x)} [(∂ log p_θ(y|x) / ∂θ_i)²]

The square is taken per SAMPLE, then averaged (not the square of a batch-mean gradient). The gradient of
log p(y|x) w.r.t. the logits z is e_y − p, so every estimator is a choice of output cotangents for the
per-sample engine (:mod:`forgetless.per_sample`):

* ``exact``: all C labels weighted by p. Only Σ_c p_c (e_c − p)(e_c − p)ᵀ = diag(p) − ppᵀ matters, a
  matrix of rank C−1: it is written as Σ_k v_k v_kᵀ with C−1 cotangents, batched into one backward
  pass. The cost grows with C (for thousands of classes, or sequences, use ``sampled``);
* ``sampled``: one y ~ p_θ(·|x) per x, drawn from a seeded generator: e_y − p;
* ``empirical``: y = the true target: e_y − p. The "empirical Fisher", a different (often worse) quantity;
* ``predicted``: y = the model's most probable label, argmax p: what van de Ven & Tolias's 2019 code and
  many others use. Not the Fisher either (a confident model makes it close to ``empirical``);
* ``batched``: (∂ mean_b −log p(y_n|x_n) / ∂θ)² per mini-batch b, averaged over batches. This is what
  several libraries compute. It is NOT the Fisher (a square of a mean, not a mean of squares, and it
  depends on the batch size); provided for comparison only.

Sequences (outputs with positions, e.g. a language model's logits (N, T, C) and targets (N, T)): the
convention is **per sequence**. A sample is a sequence x, its log-likelihood the sum over positions
Σ_t log p(y_t | x, t) (teacher forcing: each position is conditioned on the data, not on drawn
labels), and the Fisher averages over sequences the square of that sum's gradient. Draws at
different positions are independent given x, so the expected cross terms vanish and ``exact`` is the
sum over positions of each position's exact Fisher, T·(C−1) backward directions per sequence: it is
refused beyond :data:`EXACT_MAX_DIRECTIONS` (use ``sampled``: one direction, unbiased). ``sampled``,
``predicted`` and ``empirical`` put one label at every position and square the summed gradient.
Targets equal to :data:`IGNORE_INDEX` (−100, as in PyTorch and Hugging Face) mark positions that do
not count (padding, a prompt), for every estimator; the average is still over sequences.
"""
from __future__ import annotations

import math
from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .per_sample import MEMORY_BUDGET, average_over_data, reduce_per_sample

ESTIMATORS = ("exact", "sampled", "empirical", "predicted", "batched")
IGNORE_INDEX = -100          # a target with this value marks a position that does not count
EXACT_MAX_DIRECTIONS = 4096  # exact needs positions × (C−1) backward directions per sample: refused beyond

__all__ = ["ESTIMATORS", "EXACT_MAX_DIRECTIONS", "IGNORE_INDEX", "fisher_diagonal"]


def fisher_diagonal(
    model: nn.Module,
    data: Iterable[tuple[Tensor, Tensor]] | tuple[Tensor, Tensor],
    *,
    estimator: str = "exact",
    output_transform: Callable[[Tensor], Tensor] | None = None,
    generator: torch.Generator | None = None,
    max_samples: int | None = None,
    progress: bool = False,
    memory_budget: int = MEMORY_BUDGET,
) -> dict[str, Tensor]:
    """Diagonal Fisher of a classifier ``model`` (logits out), averaged over the samples of ``data``.

    Args:
        model: returns logits of shape (batch, classes), or (batch, positions..., classes) for
            sequences (per-sequence convention, see the module docstring). Put in eval mode for the
            pass (dropout off); every module's mode is restored afterwards. Its ``.grad`` are not touched.
        data: an iterable of ``(inputs, targets)`` mini-batches (a DataLoader, a list of pairs), or one
            pair ``(X, Y)`` of tensors holding the whole dataset. Either way it is read in passes of
            512 samples (smaller batches are gathered; the result does not depend on the batch size,
            except for ``batched``). Inputs are moved to the parameters' device.
        estimator: ``exact`` (default), ``sampled``, ``empirical``, ``predicted`` or ``batched``
            (module docstring).
        output_transform: applied to ``model(x)`` before the softmax, e.g. ``lambda z: z[:, 2:4]`` for a
            task's classes; targets are then indices into the transformed logits.
        generator: draws the labels of ``sampled`` (default: ``torch.Generator().manual_seed(0)``; the
            global RNG is never used).
        max_samples: use at most this many samples (the last batch is truncated).
        progress: show a tqdm progress bar.
        memory_budget: bytes the engine's per-sample intermediates may take in one pass; larger
            passes are split (see :func:`forgetless.per_sample.per_sample_sums`).

    Returns:
        name -> tensor shaped like the parameter, for every parameter with ``requires_grad``. Under
        ``torch.distributed`` the sums and sample counts of all processes are all-reduced before dividing:
        N processes give the Fisher of the union of their shards (call it on every process, with the
        plain module rather than a DistributedDataParallel wrapper; ``max_samples`` is per process).

    Raises:
        ValueError: unknown estimator, empty data, targets out of range, non-finite model outputs,
            ``exact`` on outputs needing more than :data:`EXACT_MAX_DIRECTIONS` backward directions.

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
        model, data, _ScoreCotangents(estimator, generator), reduce="square", output_transform=output_transform,
        max_samples=max_samples, progress=progress, desc=desc, memory_budget=memory_budget,
    )


class _ScoreCotangents:
    """(logits z (N, ..., C), targets) -> (K, N, ..., C): gradients of log p(y|x) w.r.t. z, to square and sum over K."""

    def __init__(self, estimator: str, generator: torch.Generator | None) -> None:
        self.estimator, self.generator = estimator, generator

    def directions(self, shape: torch.Size) -> int:
        """K for one sample's output ``shape`` (positions..., C); refuses an ``exact`` too costly."""
        if self.estimator != "exact":
            return 1
        positions, c = math.prod(shape[:-1]), shape[-1]
        k = max(1, positions * (c - 1))
        if k > EXACT_MAX_DIRECTIONS:
            raise ValueError(
                f"the exact Fisher of outputs shaped {tuple(shape)} needs {positions} positions × {c - 1} = {k} "
                f"backward directions per sample (more than {EXACT_MAX_DIRECTIONS}): use estimator='sampled' "
                "(one direction per sample, an unbiased estimate of exact)")
        return k

    def __call__(self, z: Tensor, y: Tensor) -> Tensor:
        p = torch.softmax(z, dim=-1)
        c = z.shape[-1]
        counts = _counted_positions(y, z.shape)
        if self.estimator == "exact":
            self.directions(z.shape[1:])
            v = _exact_cotangents(p) if z.dim() == 2 else _exact_sequence_cotangents(p)
            return v if counts is None else v * counts.unsqueeze(-1).to(v.dtype)
        if self.estimator == "sampled":
            probs = p.float() if p.dtype in (torch.float16, torch.bfloat16) else p
            flat = probs.reshape(-1, c).to(self.generator.device)
            labels = torch.multinomial(flat, 1, generator=self.generator).view(z.shape[:-1]).to(p.device)
        elif self.estimator == "predicted":
            labels = p.argmax(-1)
        else:
            labels = _check_targets(y, z.shape[:-1], c)
        v = F.one_hot(labels.clamp(min=0), c).to(p.dtype) - p
        if counts is not None:
            v = v * counts.unsqueeze(-1).to(v.dtype)
        return v.unsqueeze(0)


def _counted_positions(y: Tensor, shape: torch.Size) -> Tensor | None:
    """A 0/1 mask of the positions whose target is not IGNORE_INDEX, or None when every position counts.

    Targets that do not have the outputs' shape without classes (e.g. MAS's placeholders, or labels
    ``exact`` does not need) mask nothing."""
    if not isinstance(y, Tensor) or y.shape != shape[:-1] or y.is_floating_point() or y.dtype == torch.bool:
        return None
    ignored = y == IGNORE_INDEX
    return ~ignored if bool(ignored.any()) else None


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


def _exact_sequence_cotangents(p: Tensor) -> Tensor:
    """Outputs with positions, p (N, P..., C): the C−1 cotangents of every position, each zero elsewhere.

    Returns (P·(C−1), N, P..., C); direction (t, j) is position t's j-th cotangent of
    :func:`_exact_cotangents`. Their outer products sum to Σ_t J_tᵀ (diag p_t − p_t p_tᵀ) J_t.
    """
    n, c = p.shape[0], p.shape[-1]
    positions = math.prod(p.shape[1:-1])
    each = _exact_cotangents(p.reshape(n * positions, c)).view(-1, n, positions, c)  # (C−1, N, P, C)
    out = p.new_zeros(each.shape[0], positions, n, positions, c)
    at = torch.arange(positions, device=p.device)
    out[:, at, :, at, :] = each.permute(2, 0, 1, 3)  # direction (j, t) lives at position t only
    return out.reshape(-1, *p.shape)


def _batched_sums(model, x: Tensor, y: Tensor, transform) -> dict[str, Tensor]:
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    z = model(x)
    z = transform(z) if transform is not None else z
    if not torch.isfinite(z).all():
        raise ValueError("the model's outputs contain NaN or inf: the Fisher would not be finite. "
                         "Check the model's parameters and the inputs.")
    y = _check_targets(y, z.shape[:-1], z.shape[-1])
    loss = F.cross_entropy(z.reshape(-1, z.shape[-1]), y.reshape(-1), ignore_index=IGNORE_INDEX)
    grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
    return {n: torch.zeros_like(p) if g is None else g.square() for (n, p), g in zip(params.items(), grads)}


def _check_targets(y: Tensor, shape: torch.Size, c: int) -> Tensor:
    """Class indices of the outputs' shape without classes; IGNORE_INDEX allowed (masked by the caller)."""
    if not isinstance(y, Tensor) or y.shape != shape or y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        got = f"shape {tuple(y.shape)} dtype {y.dtype}" if isinstance(y, Tensor) else type(y).__name__
        raise ValueError(f"targets must be class indices of shape {tuple(shape)}, got {got}")
    counted = y[y != IGNORE_INDEX]
    if counted.numel() and (int(counted.min()) < 0 or int(counted.max()) >= c):
        raise ValueError(f"targets must lie in [0, {c}) (indices into the transformed logits) or be "
                         f"{IGNORE_INDEX} (ignored), got range [{int(counted.min())}, {int(counted.max())}]")
    return y.long()

