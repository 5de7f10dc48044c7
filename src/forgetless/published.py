"""Published numbers we compare against, each with the paper it comes from.

Every number here is from one paper (:data:`SOURCES`): van de Ven & Tolias 2019, "Three scenarios
for continual learning", arXiv 1904.07734 (v1, April 2019), its tables of split MNIST (5 tasks,
2×400 units, 2000 iterations per task) and permuted MNIST (10 tasks, 2×1000 units, 5000
iterations per task) results: final average test accuracy (%) over all tasks, the mean over 20
runs (seeds 1, 2, … of their code). Their protocol, cell by cell, with the code it comes from, is in
``results/vandeven2019/PROTOCOL.md``. It is not the 2022 Nature Machine Intelligence paper by van de
Ven, Tuytelaars & Tolias ("Three types of incremental learning"), a later paper with later code.

The tables give each mean with its standard error (SEM over the runs); the SEMs have not been
transcribed here yet (``sem=None``), so nothing may compare against them until they are.
"""
from __future__ import annotations

from dataclasses import dataclass

SOURCES: dict[str, str] = {
    "vandeven2019": 'van de Ven & Tolias 2019, "Three scenarios for continual learning", arXiv 1904.07734 (v1)',
}


@dataclass(frozen=True)
class Published:
    """One cell of a published table: final average test accuracy (%) over all tasks.

    Attributes:
        mean: the mean over ``n_runs`` runs, in percent.
        sem: its standard error in percent, or None where not transcribed.
        n_runs: how many runs (seeds) the mean is over.
        source: a key of :data:`SOURCES`, the paper the number is from.
    """

    mean: float
    sem: float | None
    n_runs: int
    source: str


def _row(naive: float, ewc: float, online_ewc: float, si: float) -> dict[str, Published]:
    means = {"naive": naive, "ewc": ewc, "online-ewc": online_ewc, "si": si}
    return {method: Published(mean, None, 20, "vandeven2019") for method, mean in means.items()}


# (benchmark, scenario) -> method -> cell; rows are None, EWC, online EWC, SI of their tables.
VAN_DE_VEN_2019: dict[tuple[str, str], dict[str, Published]] = {
    ("split-mnist", "task"): _row(87.19, 98.64, 99.12, 99.09),
    ("split-mnist", "domain"): _row(59.21, 63.95, 64.32, 65.36),
    ("split-mnist", "class"): _row(19.90, 20.01, 19.96, 19.99),
    ("permuted-mnist", "task"): _row(81.79, 94.74, 95.96, 94.75),
    ("permuted-mnist", "domain"): _row(78.51, 94.31, 94.42, 95.33),
    ("permuted-mnist", "class"): _row(17.26, 25.04, 33.88, 29.31),
}


def published_cells(benchmark: str, scenario: str) -> dict[str, Published]:
    """The published cells for this benchmark and scenario (method → :class:`Published`), if any.

    Example:
        >>> cell = published_cells("permuted-mnist", "domain")["ewc"]
        >>> cell.mean, cell.n_runs, SOURCES[cell.source][:26]
        (94.31, 20, 'van de Ven & Tolias 2019, ')
        >>> published_cells("seed-split", "domain")
        {}
    """
    return dict(VAN_DE_VEN_2019.get((benchmark, scenario), {}))


def published(benchmark: str, scenario: str) -> dict[str, float]:
    """Published average accuracies (as fractions) for this benchmark and scenario, if any.

    Example:
        >>> published("split-mnist", "task")["naive"]
        0.8719
    """
    return {m: cell.mean / 100 for m, cell in published_cells(benchmark, scenario).items()}
