"""Figures. Functions return a matplotlib Figure; the caller decides where it goes."""
from __future__ import annotations

from typing import Any


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers and CI
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path, dpi: int = 120) -> None:
    """Write ``fig`` to ``path`` as a PNG, atomically (:func:`forgetless.files.write_atomic`), and free
    it (pyplot keeps every open figure alive)."""
    import io

    from .files import write_atomic

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    _pyplot().close(fig)
    write_atomic(path, buffer.getvalue())


def post_bars(result: dict[str, Any]):
    """Bar chart: test accuracy on A and B per procedure, the post's numbers as markers."""
    plt = _pyplot()
    names = list(result["procedures"])
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.38
    for i, task in enumerate(("A", "B")):
        xs = [j + (i - 0.5) * width for j in range(len(names))]
        ours = [result["procedures"][n]["accuracy"][task] for n in names]
        ax.bar(xs, ours, width, label=f"task {task} (forgetless)", color=f"C{i}")
        published = [(x, result["post"][n][task]) for x, n in zip(xs, names) if n in result["post"]]
        ax.scatter([x for x, _ in published], [v for _, v in published], marker="_", s=400, color="black", zorder=3,
                   label="the post's numbers" if i == 0 else None)
    ax.set_xticks(range(len(names)), names)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("test accuracy")
    c = result["config"]
    kfac = f", K-FAC EWC λ={c['kfac_strength']:g}" if "ewc-kfac" in result["procedures"] else ""
    ax.set_title(f"Even → odd MNIST, protocol {c['protocol']}, EWC λ={c['strength']:g}{kfac}", fontsize=10)
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    return fig


def accuracy_heatmap(matrix, task_names, title: str = ""):
    """Heat map of R[t, k] (rows: after training task t; columns: accuracy on task k)."""
    import numpy as np

    plt = _pyplot()
    R = np.asarray(matrix, dtype=float)
    fig, ax = plt.subplots(figsize=(1.0 + 0.6 * len(task_names), 0.8 + 0.55 * len(task_names)))
    image = ax.imshow(R, vmin=0, vmax=1, cmap="viridis")
    for t in range(R.shape[0]):
        for k in range(R.shape[1]):
            ax.text(k, t, f"{R[t, k]:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if R[t, k] < 0.6 else "black")
    ax.set_xticks(range(len(task_names)), task_names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(task_names)), task_names, fontsize=8)
    ax.set_xlabel("accuracy on task k")
    ax.set_ylabel("after training task t")
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig


def task_curves(mean_matrix, task_names, title: str = "", std_matrix=None, *, ylabel: str = "test accuracy",
                accuracy: bool = True):
    """Accuracy on each task (one line per task) as the sequence goes on; with ``accuracy=False`` any
    other matrix of the same layout, e.g. the loss L[t, k] (the y axis then starts at 0, unbounded).

    Example:
        >>> fig = task_curves([[1.5, 5.5], [1.9, 1.3]], ["prose", "code"], ylabel="test loss", accuracy=False)
        >>> fig.axes[0].get_ylabel(), float(fig.axes[0].get_ylim()[0])
        ('test loss', 0.0)
    """
    import numpy as np

    plt = _pyplot()
    R = np.asarray(mean_matrix, dtype=float)
    fig, ax = plt.subplots(figsize=(7, 4))
    steps = np.arange(1, R.shape[0] + 1)
    for k, name in enumerate(task_names):
        ys = R[k:, k]
        ax.plot(steps[k:], ys, marker="o", label=name)
        if std_matrix is not None:
            s = np.asarray(std_matrix, dtype=float)[k:, k]
            ax.fill_between(steps[k:], ys - s, ys + s, alpha=0.15)
    ax.plot(steps, [R[t, : t + 1].mean() for t in range(R.shape[0])], "k--", lw=2, label="average (seen tasks)")
    ax.set_xticks(steps, task_names, rotation=45, ha="right", fontsize=8)
    ax.set_xlabel("after training task")
    ax.set_ylabel(ylabel)
    if accuracy:
        ax.set_ylim(0, 1.02)
    else:
        ax.set_ylim(bottom=0)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def method_bars(rows: dict[str, tuple[float, float]], title: str = "", reference: dict[str, float] | None = None):
    """Average accuracy (mean ± std) per method; ``reference`` values drawn as markers."""
    plt = _pyplot()
    names = list(rows)
    fig, ax = plt.subplots(figsize=(1.5 + 1.0 * len(names), 4))
    ax.bar(range(len(names)), [rows[n][0] for n in names], yerr=[rows[n][1] for n in names], capsize=4, color="C0")
    if reference:
        xs = [i for i, n in enumerate(names) if n in reference]
        ax.scatter(xs, [reference[names[i]] for i in xs], marker="_", s=400, color="black", zorder=3,
                   label="published")
        ax.legend(fontsize=8)
    ax.set_xticks(range(len(names)), names)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("average accuracy")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def stability_plasticity(points: list[dict[str, Any]], title: str = ""):
    """Stability against plasticity: one curve per method through its strengths, annotated.

    x = accuracy on the newest task just after learning it (plasticity), y = mean accuracy on the
    old tasks after the last one (stability), both (mean, std) over seeds, drawn with error bars.
    A strong regularizer moves a method up and to the left; a method without a strength (naive,
    joint) is a lone square.

    Args:
        points: dicts with ``curve`` (legend label, e.g. the method), ``strength`` (float, or None
            for a method without one), ``plasticity`` and ``stability`` as (mean, std), and
            optionally ``panel`` (one subplot per distinct panel, e.g. per benchmark).
        title: the figure's title.

    Example:
        >>> fig = stability_plasticity([
        ...     {"curve": "ewc", "strength": 1.0, "plasticity": (0.99, 0.01), "stability": (0.5, 0.05)},
        ...     {"curve": "ewc", "strength": 1e3, "plasticity": (0.9, 0.02), "stability": (0.8, 0.03)},
        ...     {"curve": "naive", "strength": None, "plasticity": (0.99, 0.0), "stability": (0.4, 0.1)}])
        >>> len(fig.axes), [t.get_text() for t in fig.axes[0].texts]
        (1, ['1', '1000'])
    """
    plt = _pyplot()
    panels = list(dict.fromkeys(p.get("panel", "") for p in points)) or [""]
    curves = list(dict.fromkeys(p["curve"] for p in points))
    colors = {c: f"C{i % 10}" for i, c in enumerate(curves)}
    # Curves can coincide (EWC and online EWC are the same method for two tasks): line styles and
    # markers differ too, so a curve drawn over another stays visible.
    styles = {c: ("-", "--", ":", "-.")[i % 4] for i, c in enumerate(curves)}
    markers = {c: "ovD^<>"[i % 6] for i, c in enumerate(curves)}
    sizes = {c: 3 + 1.5 * (len(curves) - i) for i, c in enumerate(curves)}  # earlier curves peek out
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 5), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        for curve in curves:
            mine = [p for p in points if p.get("panel", "") == panel and p["curve"] == curve]
            if not mine:
                continue
            mine.sort(key=lambda p: -1.0 if p["strength"] is None else p["strength"])
            xs = [p["plasticity"][0] for p in mine]
            ys = [p["stability"][0] for p in mine]
            lone = all(p["strength"] is None for p in mine)
            ax.errorbar(xs, ys, xerr=[p["plasticity"][1] for p in mine], yerr=[p["stability"][1] for p in mine],
                        color=colors[curve], marker="s" if lone else markers[curve], markersize=6 if lone else sizes[curve],
                        linestyle="none" if lone else styles[curve], capsize=2, lw=1.2, label=curve,
                        markerfacecolor="none" if styles[curve] != "-" else colors[curve])
            for p, x, y in zip(mine, xs, ys):
                if p["strength"] is not None:
                    ax.annotate(f"{p['strength']:g}", (x, y), textcoords="offset points", xytext=(4, 3),
                                fontsize=7, color=colors[curve])
        ax.set_xlabel("accuracy on the newest task (plasticity)")
        ax.set_ylabel("mean accuracy on the old tasks (stability)")
        ax.grid(alpha=0.3)
        ax.margins(0.08)
        # accuracies end at 1: keep error bars from stretching the axes past it
        ax.set_xlim(right=min(ax.get_xlim()[1], 1.01))
        ax.set_ylim(top=min(ax.get_ylim()[1], 1.01))
        if panel:
            ax.set_title(panel, fontsize=9)
        ax.legend(fontsize=7, loc="best")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
