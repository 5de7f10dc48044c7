"""The Fisher of a finished task, as EWC and online EWC both take it."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..fisher import ESTIMATORS, fisher_diagonal
from .base import Batches, OutputTransform
from .options import check_count


def check_fisher_options(estimator: object, fisher_samples: object) -> tuple[str, int | None]:
    """``(estimator, fisher_samples)`` checked: a known estimator's name, and a count or None."""
    if not isinstance(estimator, str) or estimator not in ESTIMATORS:
        raise ValueError(f"unknown Fisher estimator {estimator!r}; choose one of {', '.join(ESTIMATORS)}")
    return estimator, check_count("fisher_samples", fisher_samples)


def task_fisher(
    owner: str, model: nn.Module, data: Batches | None, *, estimator: str, fisher_samples: int | None,
    seed: int, task_index: int, output_transform: OutputTransform | None,
) -> dict[str, Tensor]:
    """``fisher_diagonal`` with label draws seeded by ``seed + task_index`` (reproducible per task)."""
    if data is None:
        raise ValueError(f"{owner}.consolidate needs the task's data to compute the Fisher")
    generator = torch.Generator().manual_seed(seed + task_index)
    return fisher_diagonal(model, data, estimator=estimator, output_transform=output_transform,
                           generator=generator, max_samples=fisher_samples)
