"""The package's import graph: no cycle among ``train`` modules, counting imports inside functions too."""

from __future__ import annotations

import ast

from conftest import ROOT


def import_graph() -> dict[str, set[str]]:
    """Module → the ``train`` modules it imports (at the top or inside a function)."""
    modules = {}
    for path in (ROOT / "train").rglob("*.py"):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        modules[name] = path
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                targets = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                continue
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while (top := stack.pop()) != node:
                component.append(top)
            if component:
                found.append(sorted([node, *component]))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_cycles_are_found():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_in_the_package():
    graph = import_graph()
    assert "train.training.sweep" in graph["train.cli"]  # the graph sees imports inside functions
    assert cycles(graph) == []


def imported_modules(path) -> set[str]:
    """Every module a file imports, at the top or inside a function (absolute names, as written)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return found


def test_workflows_and_families_reach_tracking_only_through_the_recorder():
    """No module under train/training/ or train/models/ (nor the recorder interface) imports mlflow,
    even inside a function: the MLflow recorder in train/tracking/ is the one seam."""
    files = [
        *(ROOT / "train/training").rglob("*.py"),
        *(ROOT / "train/models").rglob("*.py"),
        ROOT / "train/tracking/recorder.py",
    ]
    assert len(files) > 10 and ROOT / "train/models/transformer.py" in files
    offenders = {
        str(path.relative_to(ROOT)): sorted(m for m in imported_modules(path) if m.split(".")[0] == "mlflow")
        for path in files
    }
    assert {path: mods for path, mods in offenders.items() if mods} == {}
    assert "mlflow" in imported_modules(ROOT / "train/tracking/mlflow_recorder.py")  # the check sees imports
