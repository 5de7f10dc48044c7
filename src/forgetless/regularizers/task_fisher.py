"""The Fisher of a finished task, as EWC and online EWC both take it."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..fisher import ESTIMATORS, KFAC_ESTIMATORS, KroneckerFisher, fisher_diagonal, fisher_kfac
from .base import Batches, OutputTransform
from .kronecker_state import check_structure
from .options import check_count

# The Fisher's estimator is named: its allowed values, as a class fact of the methods that use one.
FISHER_CHOICES = {"estimator": ESTIMATORS}


def check_fisher_options(estimator: object, fisher_samples: object) -> tuple[str, int | None]:
    """``(estimator, fisher_samples)`` checked: a known estimator's name, and a count or None."""
    if not isinstance(estimator, str) or estimator not in ESTIMATORS:
        raise ValueError(f"unknown Fisher estimator {estimator!r}; choose one of {', '.join(ESTIMATORS)}")
    return estimator, check_count("fisher_samples", fisher_samples)


def check_structure_options(structure: object, kfac_damping: object, estimator: str) -> tuple[str, float]:
    """``(structure, kfac_damping)`` checked, and that the estimator has Kronecker factors if needed."""
    damping = check_structure(structure, kfac_damping)
    if structure == "kfac" and estimator not in KFAC_ESTIMATORS:
        raise ValueError(f"estimator {estimator!r} has no Kronecker factors (a square of a batch's mean gradient); "
                         f"with structure='kfac' choose one of {', '.join(KFAC_ESTIMATORS)}")
    return structure, damping


def task_fisher(
    owner: str, model: nn.Module, data: Batches | None, *, estimator: str, fisher_samples: int | None,
    seed: int, task_index: int, output_transform: OutputTransform | None, structure: str = "diagonal",
) -> dict[str, Tensor] | KroneckerFisher:
    """``fisher_diagonal`` (or ``fisher_kfac``) with label draws seeded by ``seed + task_index``."""
    if data is None:
        raise ValueError(f"{owner}.consolidate needs the task's data to compute the Fisher")
    generator = torch.Generator().manual_seed(seed + task_index)
    compute = fisher_kfac if structure == "kfac" else fisher_diagonal
    return compute(model, data, estimator=estimator, output_transform=output_transform,
                   generator=generator, max_samples=fisher_samples)
