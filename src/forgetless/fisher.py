"""The Fisher information of a classifier, diagonal or Kronecker-factored: THE place it is computed.

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

The estimator says which labels; the structure says which matrix. :func:`fisher_kfac` takes the same
estimators (but ``batched``, which has no per-sample gradient to factor) and keeps, per Linear and
Conv2d layer, the Kronecker factors of K-FAC (Martens & Grosse 2015; KFC, Grosse & Martens 2016 for
convolutions): F_layer ≈ G ⊗ A with A = E[ā āᵀ] over the layer's inputs ā = (a, 1) and
G = E[Σ_y w_y g gᵀ] over g = ∂ log p(y|x)/∂(layer output), the same cotangents as the diagonal.
"""
from __future__ import annotations

from typing import Callable, Iterable, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .per_sample import average_over_data, kronecker_layers, per_sample_kronecker, reduce_per_sample
from .quadratic import bias_name

ESTIMATORS = ("exact", "sampled", "empirical", "batched")
KFAC_ESTIMATORS = tuple(e for e in ESTIMATORS if e != "batched")

__all__ = ["ESTIMATORS", "KFAC_ESTIMATORS", "KroneckerFisher", "fisher_diagonal", "fisher_kfac"]


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


class KroneckerFisher(NamedTuple):
    """The Fisher with one Kronecker-factored block per Linear/Conv2d layer, the diagonal elsewhere.

    Attributes:
        factors: weight name -> (A, G), symmetric: the block of (weight, bias) is ``torch.kron(G, A)``
            for the weight flattened to (out, in) (a Conv2d's to (out, in·kh·kw)) with the bias as a
            last column, vec() reading rows; A has that bias row and column when the layer's bias is
            trainable (see :class:`forgetless.quadratic.KroneckerTerm`).
        diagonal: every other trainable parameter -> its diagonal Fisher, as :func:`fisher_diagonal`.
    """

    factors: dict[str, tuple[Tensor, Tensor]]
    diagonal: dict[str, Tensor]


def fisher_kfac(
    model: nn.Module,
    data: Iterable[tuple[Tensor, Tensor]] | tuple[Tensor, Tensor],
    *,
    estimator: str = "exact",
    output_transform: Callable[[Tensor], Tensor] | None = None,
    generator: torch.Generator | None = None,
    max_samples: int | None = None,
    progress: bool = False,
) -> KroneckerFisher:
    """Kronecker-factored Fisher of a classifier ``model`` (logits out), averaged over ``data``.

    For every ``nn.Linear`` and ``nn.Conv2d`` (groups=1, zero padding) whose weight is trainable and
    its own, A = E[ā āᵀ] and G = E[Σ_y w_y g gᵀ] (module docstring), from one pass of the per-sample
    engine; every other trainable parameter (LayerNorm, Embedding, a tied or functionally used weight, a
    bias whose weight is frozen) gets its diagonal Fisher in the same pass, so any model works. A layer
    called at several positions (a sequence (N, T, in), a convolution's patches, a repeated call)
    follows the "expand" convention (:mod:`forgetless.layer_rules`): A averages ā āᵀ over positions,
    G sums g gᵀ over them. Arguments, eval mode and ``torch.distributed`` as for
    :func:`fisher_diagonal` (sums and sample counts all-reduced, then divided).

    Args:
        estimator: ``exact`` (default: the C−1 cotangents, so G is the expectation over y ~ p(·|x)),
            ``sampled`` or ``empirical``; ``batched`` has no per-sample gradient and is refused.

    Raises:
        ValueError: unknown or ``batched`` estimator, empty data, targets out of range, non-finite outputs.

    Example:
        >>> torch.manual_seed(0) and None
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
        >>> fisher = fisher_kfac(model, (torch.randn(100, 4), torch.randint(0, 3, (100,))))
        >>> {name: (tuple(a.shape), tuple(g.shape)) for name, (a, g) in fisher.factors.items()}
        {'0.weight': ((5, 5), (8, 8)), '2.weight': ((9, 9), (3, 3))}
        >>> fisher.diagonal
        {}
    """
    if estimator not in KFAC_ESTIMATORS:
        hint = " (a square of a batch's mean gradient has no Kronecker factors)" if estimator == "batched" else ""
        raise ValueError(f"unknown Fisher estimator {estimator!r} for fisher_kfac{hint}; choose one of "
                         f"{', '.join(KFAC_ESTIMATORS)}")
    if estimator == "sampled" and generator is None:
        generator = torch.Generator().manual_seed(0)
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    layers = kronecker_layers(model)
    like: dict = dict(params)
    for weight, (a_size, g_size) in layers.items():
        w = params[weight]
        like[(weight, "A")] = w.new_empty(a_size, a_size)
        like[(weight, "G")] = w.new_empty(g_size, g_size)
        like[(weight, "factored")] = w.new_empty(())   # fraction of the samples on which it was
    cotangents = _score_cotangents(estimator, generator)

    def batch(x: Tensor, y: Tensor, first: bool):
        factors, squares = per_sample_kronecker(model, x, y, cotangents, output_transform=output_transform,
                                                check_independence=first)
        for weight, (a, g) in factors.items():
            squares.update({(weight, "A"): a, (weight, "G"): g, (weight, "factored"): a.new_tensor(float(len(x)))})
        return squares, len(x)

    mean = average_over_data(model, data, batch, like=like, max_samples=max_samples, progress=progress,
                             desc=f"K-FAC Fisher ({estimator})")
    factors = {}
    for weight, (a_size, _) in layers.items():
        share = float(mean.pop((weight, "factored")))
        a, g = mean.pop((weight, "A")), mean.pop((weight, "G"))
        if share == 0:
            continue
        if share != 1:
            raise ValueError(f"layer {weight!r} was Kronecker-factored on some batches and not on others "
                             "(its calls or the batch dimension changed between batches)")
        factors[weight] = ((a + a.T) / 2, (g + g.T) / 2)
        del mean[weight]
        if a_size > params[weight][0].numel():
            del mean[bias_name(weight)]
    return KroneckerFisher(factors, mean)


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

