"""Published numbers: every cell says which paper it is from; the compare table cites it right."""
import pytest

from forgetless.compare import compare_report
from forgetless.published import SOURCES, VAN_DE_VEN_2019, published, published_cells


def test_every_cell_names_its_paper_and_run_count():
    for (benchmark, scenario), cells in VAN_DE_VEN_2019.items():
        assert set(cells) == {"naive", "ewc", "online-ewc", "si"}
        for method, cell in cells.items():
            assert cell.source in SOURCES and "arXiv 1904.07734" in SOURCES[cell.source]
            assert cell.n_runs == 20 and 0 < cell.mean < 100 and cell.sem is None
            assert published(benchmark, scenario)[method] == pytest.approx(cell.mean / 100)
    assert published_cells("permuted-mnist", "domain")["si"].mean == 95.33


def test_the_citation_is_van_de_ven_and_tolias_not_the_2022_paper():
    assert SOURCES["vandeven2019"].startswith("van de Ven & Tolias 2019")
    stat = {"mean": 0.9, "std": 0.0}
    result = {"config": {"benchmark": "split-mnist", "scenario": "task", "strength": None},
              "seeds": [{}], "metrics": {"average_accuracy": stat, "average_forgetting": stat, "backward_transfer": stat}}
    footer = compare_report({"naive": result}).splitlines()[-1]
    assert "van de Ven & Tolias 2019" in footer and "Tuytelaars" not in footer
