"""The package's import graph has no cycles, and the layers point one way (training never imports experiments)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).parent.parent / "src"


def _graph() -> dict[str, set[str]]:
    """peftbench module -> the peftbench modules it imports (at module level or inside functions)."""
    modules = {}
    for path in SRC.rglob("*.py"):
        name = ".".join(path.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__")
        modules[name] = path
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("peftbench"):
                submodules = {f"{node.module}.{a.name}" for a in node.names} & modules.keys()
                graph[name] |= submodules or ({node.module} & modules.keys())
            elif isinstance(node, ast.Import):
                graph[name] |= {a.name for a in node.names} & modules.keys()
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles():
    assert _cycles(_graph()) == []


def test_the_checker_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_lower_layers_do_not_import_the_experiments_or_the_demo():
    graph = _graph()
    lower = [m for m in graph if m.startswith(("peftbench.training", "peftbench.data", "peftbench.methods",
                                                "peftbench.evaluation"))]  # fmt: skip
    for module in lower:
        upward = {t for t in graph[module] if t.startswith(("peftbench.experiments", "peftbench.demo"))}
        assert not upward, f"{module} imports {sorted(upward)}"
    assert not {t for t in graph["peftbench.experiments.run"] if t.startswith("peftbench.demo")}


def test_the_data_layers_point_one_way():
    """Task files -> selection -> (encoding) -> examples -> tokenisation -> cache -> pipeline: the loader selects,
    the pipeline encodes; nothing below imports what is above it."""
    graph = _graph()
    order = ["tasks", "superni", "encoding", "examples", "collate", "cache", "pipeline"]
    for i, module in enumerate(order):
        above = {f"peftbench.data.{m}" for m in order[i + 1 :]}
        assert not graph[f"peftbench.data.{module}"] & above, module
    assert "peftbench.data.encoding" not in graph["peftbench.data.superni"]
