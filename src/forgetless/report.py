"""Results → text: the markdown reports and tables of a run and of the post's experiment (the files
are written by :mod:`forgetless.runs` through :mod:`forgetless.files`)."""
from __future__ import annotations

from typing import Any

from .stats import sem_or_none


def post_table(result: dict[str, Any]) -> str:
    """Markdown table: our test accuracies beside the post's."""
    rows = ["| procedure | task A | task B | mean | post A | post B |", "|---|---|---|---|---|---|"]
    for name, proc in result["procedures"].items():
        a, b = proc["accuracy"]["A"], proc["accuracy"]["B"]
        post = result["post"].get(name)
        published = f"{post['A']:.3f} | {post['B']:.3f}" if post else "– | –"
        rows.append(f"| {name} | {a:.3f} | {b:.3f} | {(a + b) / 2:.3f} | {published} |")
    return "\n".join(rows)


# the searched rows of `forgetless seed`: (row, its strength's config key, its name in text, its grid's flag)
POST_SEARCHED = (("ewc", "strength", "EWC", "--strength-grid"), ("ewc-kfac", "kfac_strength", "K-FAC EWC", "--kfac-strength-grid"))


def post_report(result: dict[str, Any]) -> str:
    c = result["config"]
    rows = [(row, key, text, flag) for row, key, text, flag in POST_SEARCHED if row in result["procedures"]]
    strengths = "; ".join(f"{text} λ = {c[key]:g} ({c[f'{key}_source']})" for _, key, text, _ in rows)
    damping = result["procedures"].get("ewc-kfac", {}).get("hyperparameters", {}).get("kfac_damping")
    lines = [
        "# forgetless seed: the post's experiment, even digits (A) then odd digits (B)",
        "",
        post_table(result),
        "",
        f"Protocol `{c['protocol']}`, seed {c['seed']}, Fisher estimator `{c['estimator']}`, L2 λ = {c['l2_strength']:g}; "
        f"{strengths}" + (f"; K-FAC damping {damping:g}." if damping is not None else "."),
        f"Data: {result.get('data_source', '?')}. {result['selection'].capitalize()}.",
    ]
    if "search_rounds" in result:  # older results do not say
        lines += ["", f"λ searches ({'--stacked' if result['stacked'] else '--no-stacked'}): " + "; ".join(
            f"{text}: " + ", then ".join(f"{len(r['strengths'])} {r['trained']}" for r in result["search_rounds"][row])
            for row, _, text, _ in rows if row in result["search_rounds"]) + "."]
    memory = [(text, result["procedures"][row].get("memory")) for row, _, text, _ in rows]
    lines += [""] + [memory_line(m, f"after task A ({text})") for text, m in memory if m]
    for row, key, text, flag in rows:
        if result.get(f"{key}_search"):
            lines += search_table(result[f"{key}_search"], f"{text} strength search (mean validation accuracy over A and B)",
                                  "λ", flag)
    return "\n".join(lines) + "\n"


def search_table(search: dict[str, Any], title: str, symbol: str, flag: str = "--strength-grid") -> list[str]:
    """Markdown lines: the validation score of every strength tried, the winner, and a grid-edge warning;
    with both validation curves (accuracy and loss) where the search recorded them."""
    score = f", scoring the {search['score']}" if search.get("score") else ""
    curves = {s: (a, v) for s, a, v in zip(search.get("strengths", ()), search.get("validation_accuracy", ()),
                                          search.get("validation_loss", ()))}
    head = "validation accuracy | validation loss" if curves else "validation"
    lines = ["", f"{title}{score}:", "", f"| {symbol} | {head} |", "|---|---|" + ("---|" if curves else "")]
    untried = set(search.get("not_tried", ()))
    for strength, value in zip(search["grid"], search["validation_scores"]):
        if strength in curves:
            cell = " | ".join("n/a" if v is None else f"{v:.4f}" for v in curves[strength])
        else:
            cell = f"{value:.4f}" if value is not None else "not needed (local search)" if strength in untried else "diverged"
            cell += " | " if curves else ""
        lines.append(f"| {strength:g} | {cell}{' ← chosen' if strength == search['best'] else ''} |")
    if search.get("best_at_grid_edge"):
        lines += ["", f"The chosen value is at the edge of the grid: a wider grid ({flag}) may do better."]
    return lines


def pm(stat: dict[str, float | None]) -> str:
    """A statistic over seeds as a table shows it: mean ± standard error (SEM) and the number of seeds.
    With one seed there is no spread to measure: no ± is shown. A result written before the SEM was
    recorded shows its sample standard deviation, labelled as such.

    Example:
        >>> pm({"mean": 0.7, "std": 0.2, "sem": 0.11547, "n": 3}), pm({"mean": 0.8, "std": 0.0, "sem": 0.0, "n": 1})
        ('0.7000 ± 0.1155 (n=3)', '0.8000 (n=1)')
        >>> pm({"mean": 0.7, "std": 0.2}), pm({"mean": float("nan"), "std": float("nan")})
        ('0.7000 (std 0.2000)', 'n/a')
    """
    if stat["mean"] is None or stat["mean"] != stat["mean"]:
        return "n/a"
    if "sem" not in stat:
        return f"{stat['mean']:.4f} (std {stat['std']:.4f})"
    sem = sem_or_none(stat)
    spread = "" if sem is None else f" ± {sem:.4f}"
    return f"{stat['mean']:.4f}{spread} (n={stat['n']})"


def versus(cell: dict[str, Any] | None) -> tuple[str, str]:
    """Two table cells for :func:`forgetless.published.beside`'s comparison, in percent: the published
    mean ± SEM, and ours − published with that difference in combined standard errors (or why not).

    Example:
        >>> versus({"published_mean": 98.64, "published_sem": 0.22, "published_runs": 20, "difference": 0.26,
        ...         "z": 0.894, "note": None})
        ('98.64 ± 0.22 (20 runs)', '+0.26 (+0.89 SE)')
        >>> versus({"published_mean": 94.31, "published_sem": 0.11, "published_runs": 20, "difference": -5.43,
        ...         "z": None, "note": "our SEM unknown (1 seed)"})
        ('94.31 ± 0.11 (20 runs)', '-5.43 (our SEM unknown (1 seed))')
        >>> versus(None)
        ('–', '–')
    """
    if cell is None:
        return "–", "–"
    sem = "" if cell["published_sem"] is None else f" ± {cell['published_sem']:.2f}"
    z = f"{cell['z']:+.2f} SE" if cell["z"] is not None else cell["note"]
    return f"{cell['published_mean']:.2f}{sem} ({cell['published_runs']} runs)", f"{cell['difference']:+.2f} ({z})"


def metrics_csv(result: dict[str, Any]) -> str:
    """One row per seed and metric, then the rows of the statistics over seeds: mean, std, sem, n."""
    lines = ["seed,metric,value"]
    for run in result["seeds"]:
        for name, value in run["metrics"].items():
            lines.append(f"{run['seed']},{name},{'' if value is None or value != value else repr(float(value))}")
    for name, stat in result["metrics"].items():
        for key in ("mean", "std", "sem", "n"):
            if key not in stat:
                continue
            v = stat[key]
            lines.append(f"{key},{name},{'' if v is None or v != v else repr(float(v))}")
    return "\n".join(lines) + "\n"


def run_report(result: dict[str, Any]) -> str:
    c = result["config"]
    seeds = [r["seed"] for r in result["seeds"]]
    names = result["task_names"]
    lines = [
        f"# {c['method']} on {c['benchmark']}, {c['scenario']}-incremental",
        "",
        f"Seeds {seeds}; {c['iterations']} iterations per task, batch {c['batch_size']}, Adam lr {c['lr']}"
        + (f", hidden {c['hidden']}" if "hidden" in c else "")
        + f"; strength {c['strength']}" + (f" ({result['strength_source']})" if result.get("strength_source") else
                                           " (validation search)" if result.get("strength_search") else ""),
        f"Data: {result.get('data_source', '?')}. {result['selection'].capitalize()}.",
    ]
    if result.get("benchmark_info"):
        lines += ["", f"Built from: {benchmark_info_line(result['benchmark_info'])}."]
    lines += ["", "| metric | mean ± standard error over seeds (n seeds) |", "|---|---|"]
    lines += [f"| {name} | {pm(stat)} |" for name, stat in result["metrics"].items()]
    lines += ["", "Mean test accuracy matrix R[t, k] (row: after training task t; column: task k):", ""]
    lines += matrix_table(names, result["mean_accuracy_matrix"], "{:.3f}")
    if "mean_loss_matrix" in result:
        lines += loss_section(result)
    if result.get("regularizer_memory"):
        lines += ["", memory_line(result["regularizer_memory"], "after the last task")]
    if result.get("strength_search"):
        lines += search_table(result["strength_search"], "Strength search (first seed)", "strength")
    if result.get("setting_sources"):
        lines += settings_table(c, result["setting_sources"])
    return "\n".join(lines) + "\n"


def memory_line(memory: dict[str, dict[str, Any]], when: str) -> str:
    """One line: the regularizer's state in bytes, against the parameters it protects, and its structures.

    Example:
        >>> memory_line({"fc": {"structure": "kfac", "state_bytes": 3000, "parameter_bytes": 1000},
        ...              "out": {"structure": "diagonal", "state_bytes": 80, "parameter_bytes": 40}}, "after task A")
        "The method's state after task A: 3.0 KiB, 2.96x the 1.0 KiB of parameters it protects (kfac: fc; diagonal: out)."
    """
    state = sum(m["state_bytes"] for m in memory.values())
    params = sum(m["parameter_bytes"] for m in memory.values())
    kinds: dict[str, list[str]] = {}
    for module, m in memory.items():
        kinds.setdefault(m["structure"], []).append(module or "(the model)")
    ratio = f"{state / params:.2f}x" if params else "n/a"
    structures = "; ".join(f"{k}: {', '.join(v)}" for k, v in kinds.items())
    return (f"The method's state {when}: {_size(state)}, {ratio} the {_size(params)} of parameters it protects "
            f"({structures}).")


def _size(n: int) -> str:
    for unit, scale in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def matrix_table(names: list[str], matrix: list[list[float]], cell: str, std: list[list[float]] | None = None) -> list[str]:
    """Markdown lines of a (T, T) matrix, rows "after task t", columns "on task k" (± std if given)."""
    lines = ["| after \\ on | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for t, (name, row) in enumerate(zip(names, matrix)):
        cells = [_cell(cell, v) + ("" if std is None or _cell(cell, v) == "n/a" else " ± " + _cell(cell, std[t][k]))
                 for k, v in enumerate(row)]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def _cell(cell: str, value: float | None) -> str:
    return "n/a" if value is None or value != value else cell.format(value)  # undefined (NaN, null in JSON)


def loss_section(result: dict[str, Any]) -> list[str]:
    """The loss matrices (test ± std, validation), the untrained network's loss, each task's loss per seed,
    and for a language model bits per byte and perplexity."""
    names, unit = result["task_names"], f"nats per {result.get('loss_per', 'sample')}"
    untrained = ", ".join(f"{n} {v:.3f}" for n, v in zip(names, result["baseline_loss"]))
    lines = ["", f"Mean test loss matrix L[t, k] ({unit}; ± std over seeds; lower is better). "
                 f"The untrained network: {untrained}.", ""]
    lines += matrix_table(names, result["mean_loss_matrix"], "{:.3f}", result["std_loss_matrix"])
    lines += ["", f"Mean validation loss matrix ({unit}):", ""]
    lines += matrix_table(names, result["mean_valid_loss_matrix"], "{:.3f}")
    lines += seed_table(result)
    if result.get("loss_per") == "byte":
        import math

        last = result["mean_loss_matrix"][-1]
        lines += ["", "After the last task (test; bits per byte = loss / ln 2, perplexity = e^loss per byte):", "",
                  "| task | nats per byte | bits per byte | perplexity |", "|---|---|---|---|"]
        lines += [f"| {n} | {v:.3f} | {v / math.log(2):.3f} | {math.exp(v):.2f} |" for n, v in zip(names, last)]
    return lines


def key_cells(names: list[str]) -> list[tuple[str, int, int]]:
    """The cells of a (T, T) matrix that tell forgetting: each task k just after learning it (t = k)
    and after the last task (t = T−1), as ``(label, t, k)``.

    Example:
        >>> key_cells(["prose", "code"])
        [('prose after prose', 0, 0), ('prose after code', 1, 0), ('code after code', 1, 1)]
    """
    T = len(names)
    return [(f"{names[k]} after {names[t]}", t, k) for k in range(T) for t in sorted({k, T - 1})]


def seed_table(result: dict[str, Any]) -> list[str]:
    """Per seed: each task's test loss and accuracy just after learning it and after the last task."""
    from .stats import over_seeds

    cells = key_cells(result["task_names"])
    lines = ["", "Per seed, test loss (accuracy) of each task just after learning it and after the last task:", "",
             "| seed | " + " | ".join(c[0] for c in cells) + " |", "|---" * (len(cells) + 1) + "|"]
    for run in result["seeds"]:
        L, R = run["loss_matrix"], run["accuracy_matrix"]
        lines.append(f"| {run['seed']} | " + " | ".join(f"{L[t][k]:.3f} ({R[t][k]:.3f})" for _, t, k in cells) + " |")
    if len(result["seeds"]) > 1:
        stats = [over_seeds([run["loss_matrix"][t][k] for run in result["seeds"]]) for _, t, k in cells]
        lines.append("| mean ± SEM | " + " | ".join(f"{s['mean']:.3f} ± {s['sem']:.3f}" for s in stats) + " |")
    return lines


def benchmark_info_line(info: dict[str, Any]) -> str:
    """``Benchmark.info`` in one line (prose-code: the Python version, each text's size and sha256)."""
    parts = [f"{k} {v}" for k, v in info.items() if k != "domains"]
    for name, facts in info.get("domains", {}).items():
        parts.append(f"{name}: {facts['bytes']} bytes, sha256 {facts['sha256'][:12]}…, {facts['source']}")
    return "; ".join(parts)


def settings_table(config: dict[str, Any], sources: dict[str, str]) -> list[str]:
    """Every setting with a default: its value and where it comes from (given, the benchmark, forgetless)."""
    lines = ["", "Where each setting comes from:", "", "| setting | value | from |", "|---|---|---|"]
    for name, source in sources.items():
        lines.append(f"| {name} | {config.get(name)} | {source} |")
    return lines
