"""Published numbers we compare against: THE place they are written down.

The blog post the project grew from ("Overcoming catastrophic forgetting", after Kirkpatrick et al.
2017): test accuracy on task A (even digits) and task B (odd digits) per procedure, as it reports them.

van de Ven, Tuytelaars & Tolias 2019, "Three scenarios for continual learning" (arXiv 1904.07734),
Table 4/5: final average test accuracy (%) over all tasks, split MNIST (5 tasks, 2×400 units,
2000 iterations per task) and permuted MNIST (10 tasks, 2×1000 units, 5000 iterations per task).
"""
from __future__ import annotations

BLOG_POST: dict[str, tuple[float, float]] = {
    "multitask": (0.972, 0.974), "naive": (0.266, 0.983), "l2": (0.904, 0.598), "ewc": (0.768, 0.709),
}

VAN_DE_VEN_2019: dict[tuple[str, str], dict[str, float]] = {
    ("split-mnist", "task"): {"naive": 87.19, "ewc": 98.64, "online-ewc": 99.12, "si": 99.09},
    ("split-mnist", "domain"): {"naive": 59.21, "ewc": 63.95, "online-ewc": 64.32, "si": 65.36},
    ("split-mnist", "class"): {"naive": 19.90, "ewc": 20.01, "online-ewc": 19.96, "si": 19.99},
    ("permuted-mnist", "task"): {"naive": 81.79, "ewc": 94.74, "online-ewc": 95.96, "si": 94.75},
    ("permuted-mnist", "domain"): {"naive": 78.51, "ewc": 94.31, "online-ewc": 94.42, "si": 95.33},
    ("permuted-mnist", "class"): {"naive": 17.26, "ewc": 25.04, "online-ewc": 33.88, "si": 29.31},
}


def published(benchmark: str, scenario: str) -> dict[str, float]:
    """Published average accuracies (as fractions) for this benchmark and scenario, if any."""
    return {m: v / 100 for m, v in VAN_DE_VEN_2019.get((benchmark, scenario), {}).items()}
