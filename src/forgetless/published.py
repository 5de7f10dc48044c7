"""Published numbers we compare against, each with where it comes from: THE place they are written down.

The blog post the project grew from (:data:`BLOG_POST`, "Overcoming catastrophic forgetting", after
Kirkpatrick et al. 2017): test accuracy on task A (even digits) and task B (odd digits) of each
procedure of ``forgetless seed``, one run, as the post reports them.

Every table cell (:data:`VAN_DE_VEN_2019`) is from one paper (:data:`SOURCES`): van de Ven & Tolias 2019, "Three scenarios
for continual learning", arXiv 1904.07734 (v1, April 2019), its Table 4 (split MNIST: 5 tasks, 2×400
units, 2000 iterations per task) and Table 5 (permuted MNIST: 10 tasks, 2×1000 units, 5000
iterations per task): final average test accuracy (%) over all tasks, "the mean (± SEM)" over 20
runs (seeds 1, 2, … of their code; SEM = sample std / √20, their ``_compare.py``). Their protocol, cell by
cell, with the code it comes from, is in ``results/vandeven2019/PROTOCOL.md``. It is not the 2022 Nature
Machine Intelligence paper by van de Ven, Tuytelaars & Tolias ("Three types of incremental learning"),
a later paper with later code.

Where the numbers were read (:data:`TRANSCRIBED_FROM`): the paper's PDF as kept in the public repository
francisco-perez-sorrosal/deep-learning-papers (``Generative Replay/Three Scenarios for Continual
Learning.pdf``, added in commit 148902b; the PDF was made on 2019-04-18, three days after v1), whose
tables 4 and 5 are also in that repository as the images ``Generative Replay/images/3smnist.png`` and
``3pmnist.png``; every mean equals the one transcribed here before the SEMs were (none changed). The
EWC row of Table 4, 98.64 (± 0.22) / 63.95 (± 1.90) / 20.01 (± 0.06), was checked against a third
party's quotation of the v1 text. Table 5's 12 cells are also, to the digit, those of Table 4 of the
authors' earlier "Generative replay with feedback connections as a general strategy for continual
learning" (arXiv 1809.10635): the same permuted-MNIST runs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from .stats import difference, sem_or_none

SOURCES: dict[str, str] = {
    "vandeven2019": 'van de Ven & Tolias 2019, "Three scenarios for continual learning", arXiv 1904.07734 (v1)',
    "blogpost": 'the blog post "Overcoming catastrophic forgetting" (shared/seed/NOTES.md), one run',
}
TRANSCRIBED_FROM = ("arXiv 1904.07734 Tables 4 and 5, read from the PDF in github.com/francisco-perez-sorrosal/"
                    "deep-learning-papers ('Generative Replay/Three Scenarios for Continual Learning.pdf', commit 148902b)")

# procedure -> (task A, task B) test accuracy, as fractions
BLOG_POST: dict[str, tuple[float, float]] = {
    "multitask": (0.972, 0.974), "naive": (0.266, 0.983), "l2": (0.904, 0.598), "ewc": (0.768, 0.709),
}


@dataclass(frozen=True)
class Published:
    """One cell of a published table: final average test accuracy (%) over all tasks.

    Attributes:
        mean: the mean over ``n_runs`` runs, in percent.
        sem: its standard error (SEM over the runs) in percent, or None where the paper gives none.
        n_runs: how many runs (seeds) the mean is over.
        source: a key of :data:`SOURCES`, the paper the number is from.
    """

    mean: float
    sem: float | None
    n_runs: int
    source: str


Cell = tuple[float, float]  # (mean, SEM) in percent, as printed: "87.19 (± 0.94)"


def _row(naive: Cell, ewc: Cell, online_ewc: Cell, si: Cell) -> dict[str, Published]:
    cells = {"naive": naive, "ewc": ewc, "online-ewc": online_ewc, "si": si}
    return {method: Published(mean, sem, 20, "vandeven2019") for method, (mean, sem) in cells.items()}


# (benchmark, scenario) -> method -> cell; rows are None, EWC, online EWC, SI of their Tables 4 and 5.
VAN_DE_VEN_2019: dict[tuple[str, str], dict[str, Published]] = {
    ("split-mnist", "task"): _row((87.19, 0.94), (98.64, 0.22), (99.12, 0.11), (99.09, 0.15)),
    ("split-mnist", "domain"): _row((59.21, 2.04), (63.95, 1.90), (64.32, 1.90), (65.36, 1.57)),
    ("split-mnist", "class"): _row((19.90, 0.02), (20.01, 0.06), (19.96, 0.07), (19.99, 0.06)),
    ("permuted-mnist", "task"): _row((81.79, 0.48), (94.74, 0.05), (95.96, 0.06), (94.75, 0.14)),
    ("permuted-mnist", "domain"): _row((78.51, 0.24), (94.31, 0.11), (94.42, 0.13), (95.33, 0.11)),
    ("permuted-mnist", "class"): _row((17.26, 0.19), (25.04, 0.50), (33.88, 0.49), (29.31, 0.62)),
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


def beside(benchmark: str, scenario: str, method: str, ours: Mapping[str, Any]) -> dict[str, Any] | None:
    """Our average accuracy (a statistic over seeds, as fractions: mean, sem, n) beside the published
    cell, in percent: both means and SEMs, ``ours - published`` and that difference in units of the
    combined standard error √(SEM_ours² + SEM_published²) (``z``; None when a SEM is unknown, with
    ``note`` saying which). None when the paper has no such cell.

    Example:
        >>> b = beside("split-mnist", "task", "ewc", {"mean": 0.989, "sem": 0.0019, "n": 10})
        >>> b["published_mean"], b["published_sem"], round(b["difference"], 2), round(b["z"], 2)
        (98.64, 0.22, 0.26, 0.89)
        >>> beside("permuted-mnist", "domain", "ewc", {"mean": 0.8888, "sem": 0.0, "n": 1})["note"]
        'our SEM unknown (1 seed)'
        >>> beside("seed-split", "domain", "ewc", {"mean": 0.8, "sem": 0.01, "n": 3}) is None
        True
    """
    cell = published_cells(benchmark, scenario).get(method)
    if cell is None:
        return None
    sem = sem_or_none(ours)
    ours_sem = None if sem is None else 100 * sem
    out = {"published_mean": cell.mean, "published_sem": cell.sem, "published_runs": cell.n_runs,
           "source": cell.source, "ours_mean": 100 * ours["mean"], "ours_sem": ours_sem, "ours_n": ours.get("n")}
    out |= difference(out["ours_mean"], ours_sem, cell.mean, cell.sem)
    unknown = ([f"our SEM unknown ({ours.get('n', '?')} seed{'' if ours.get('n') == 1 else 's'})"] if ours_sem is None else []) \
        + (["published SEM unknown"] if cell.sem is None else [])
    out["note"] = "; ".join(unknown) or None
    return out
