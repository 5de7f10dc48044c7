"""Published numbers: every cell says which paper it is from, with its SEM; tables set ours beside
them with the difference in combined standard errors, and say when a SEM is unknown."""
import math

import pytest

from forgetless.compare import compare_report, compare_rows
from forgetless.published import SOURCES, VAN_DE_VEN_2019, beside, published, published_cells


def test_every_cell_names_its_paper_run_count_and_sem():
    for (benchmark, scenario), cells in VAN_DE_VEN_2019.items():
        assert set(cells) == {"naive", "ewc", "online-ewc", "si"}
        for method, cell in cells.items():
            assert cell.source in SOURCES and "arXiv 1904.07734" in SOURCES[cell.source]
            assert cell.n_runs == 20 and 0 < cell.mean < 100 and 0 < cell.sem < 3
            assert published(benchmark, scenario)[method] == pytest.approx(cell.mean / 100)
    assert published_cells("permuted-mnist", "domain")["si"].mean == 95.33


@pytest.mark.parametrize("cell, mean, sem", [
    (("split-mnist", "task", "naive"), 87.19, 0.94),       # Table 4, first and last cells of each column
    (("split-mnist", "domain", "naive"), 59.21, 2.04),
    (("split-mnist", "class", "si"), 19.99, 0.06),
    (("split-mnist", "domain", "online-ewc"), 64.32, 1.90),
    (("permuted-mnist", "task", "online-ewc"), 95.96, 0.06),  # Table 5
    (("permuted-mnist", "domain", "ewc"), 94.31, 0.11),
    (("permuted-mnist", "class", "si"), 29.31, 0.62),
])
def test_cells_as_printed_in_their_tables(cell, mean, sem):
    got = published_cells(*cell[:2])[cell[2]]
    assert (got.mean, got.sem) == (mean, sem)


def test_the_difference_is_in_units_of_the_combined_standard_error():
    # ours 0.9890 ± 0.0030 over 10 seeds; theirs 98.64 ± 0.22: 0.26 points / √(0.30² + 0.22²) = 0.26 / 0.372
    b = beside("split-mnist", "task", "ewc", {"mean": 0.9890, "std": 0.0095, "sem": 0.0030, "n": 10})
    assert b["difference"] == pytest.approx(0.26)
    assert b["combined_se"] == pytest.approx(math.sqrt(0.30**2 + 0.22**2))
    assert b["z"] == pytest.approx(0.26 / 0.37202, rel=1e-4) and b["note"] is None
    one = beside("permuted-mnist", "domain", "ewc", {"mean": 0.8888, "std": 0.0, "sem": 0.0, "n": 1})
    assert one["z"] is None and one["combined_se"] is None and one["difference"] == pytest.approx(-5.43)
    assert one["note"] == "our SEM unknown (1 seed)"
    assert beside("split-fashion", "task", "ewc", {"mean": 0.9, "sem": 0.01, "n": 3}) is None


def _result(benchmark, scenario, mean, sem, n):
    stat = {"mean": mean, "std": sem * math.sqrt(n), "sem": sem, "n": n}
    return {"config": {"benchmark": benchmark, "scenario": scenario, "strength": None},
            "seeds": [{}] * n, "metrics": {"average_accuracy": stat, "average_forgetting": stat, "backward_transfer": stat}}


def test_compare_prints_ours_beside_theirs_and_cites_the_paper():
    report = compare_report({"naive": _result("split-mnist", "task", 0.8610, 0.0158, 10)})
    row = next(line for line in report.splitlines() if line.startswith("| naive"))
    # 86.10 − 87.19 = −1.09 points; √(1.58² + 0.94²) = 1.838: −0.59 SE
    assert "0.8610 ± 0.0158 (n=10)" in row and "87.19 ± 0.94 (20 runs)" in row and "-1.09 (-0.59 SE)" in row
    assert "van de Ven & Tolias 2019" in report and "Tuytelaars" not in report
    assert "combined standard error" in report


def test_compare_says_when_a_sem_is_unknown_and_when_there_is_no_published_cell():
    report = compare_report({"ewc": _result("permuted-mnist", "domain", 0.8888, 0.0, 1)})
    assert "-5.43 (our SEM unknown (1 seed))" in report
    rows = compare_rows({"ewc": _result("seed-split", "domain", 0.8, 0.01, 3)})
    assert rows[0]["published"] is None and "van de Ven" not in compare_report({"ewc": _result("seed-split", "domain", 0.8, 0.01, 3)})
