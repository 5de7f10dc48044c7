"""The package's shape, read from its source: no import circle, the library core importing nothing
from the runner side, short modules, and one home for each concept the runner once wrote twice."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "forgetless"
# The library a user of EWC alone pulls in: nothing in it may import the runner side.
CORE = ("forgetless.fisher", "forgetless.per_sample", "forgetless.layer_rules", "forgetless.quadratic", "forgetless.kronecker", "forgetless.state",
        "forgetless.regularizers", "forgetless.files", "forgetless.metrics")


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _type_checking_only(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The package modules ``name`` imports, at module level or inside functions (not for type checkers)."""
    tree = ast.parse(path.read_text())
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if _type_checking_only(node, parents):
            continue
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            # `from pkg import sub` imports the submodule when there is one
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        found |= {t for t in targets if t in known and t != name}
    return found


def graph() -> dict[str, set[str]]:
    known = set(modules())
    return {name: imports(name, path, known) for name, path in modules().items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_circle_and_reads_relative_imports():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    edges = graph()
    assert "forgetless.regularizers.base" in edges["forgetless.regularizers.ewc"]
    assert "forgetless.quadratic" in edges["forgetless.regularizers.ewc"]   # from ..quadratic import …
    assert "forgetless.executors.ray_executor" in edges["forgetless.sweep.plan"]  # a function-level import
    assert "forgetless.benchmarks" not in edges["forgetless.models"]          # for type checkers only


def test_the_import_graph_has_no_circle():
    assert find_cycle(graph()) is None


def test_the_core_imports_nothing_from_the_runner_side():
    edges = graph()
    for name, targets in edges.items():
        if name.startswith(CORE):
            outside = sorted(t for t in targets if not t.startswith(CORE) and t != "forgetless")
            assert not outside, f"{name} imports {outside}"


@pytest.mark.parametrize("name", sorted(set(modules()) - {"forgetless.per_sample"}))  # the Fisher engine may be long
def test_modules_are_short(name):
    lines = len(modules()[name].read_text().splitlines())
    limit = 250 if name == "forgetless.cli" else 350
    assert lines <= limit, f"{name}: {lines} lines (at most {limit})"


def _calls(pattern: str) -> set[str]:
    """The modules outside the data package whose source contains ``pattern``."""
    return {name for name, path in modules().items()
            if pattern in path.read_text() and not name.startswith("forgetless.data")}


@pytest.mark.parametrize("pattern, home", [
    ("os.replace(", {"forgetless.files", "forgetless.state"}),
    ("mkstemp(", set()),
    ("ProcessPoolExecutor(", {"forgetless.workers"}),
    ('get_context("spawn")', {"forgetless.workers"}),
    ("flock(", {"forgetless.runs"}),
    ("ddof=", {"forgetless.stats", "forgetless.sweep.summary"}),  # summary: only in the text saying so
    ("np.std(", set()),
    ("load_fashion_mnist", {"forgetless.benchmarks.registry"}),  # outside data/: where the runner loads data
    ("load_mnist", {"forgetless.benchmarks.registry"}),
    ("strength_grid = tuple(", {"forgetless.regularizers.ewc", "forgetless.regularizers.online_ewc",
                                "forgetless.regularizers.si", "forgetless.regularizers.mas", "forgetless.regularizers.l2"}),
    ('== "permuted-mnist"', set()),
])
def test_one_home_per_concept(pattern, home):
    # atomic writes: state.py (and data/, not read here) keep their own writer until their owners move to files.py
    assert _calls(pattern) <= home, f"{pattern!r} written outside its home: {sorted(_calls(pattern) - home)}"


def test_importing_forgetless_pulls_in_nothing_heavy():
    code = ("import sys, forgetless, forgetless.cli; forgetless.cli.build_parser(); "
            "print(sorted(m for m in ('matplotlib', 'ray', 'lightning', 'yaml', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
