"""The package's import graph (and bench/'s) has no cycles, and the layers point one way: nothing imports upward."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).parent.parent
SRC = ROOT / "src"
BENCH = ROOT / "bench"

LAYERS = [
    ("peftbench.errors", "peftbench.version", "peftbench.io", "peftbench.config"),
    ("peftbench.models", "peftbench.data", "peftbench.demodata"),
    ("peftbench.methods", "peftbench.weights"),
    ("peftbench.configure",),
    ("peftbench.training", "peftbench.evaluation", "peftbench.trained", "peftbench.memory"),
    ("peftbench.recipe",),
    ("peftbench.reporting", "peftbench.launch", "peftbench.exporter", "peftbench.method_check"),
    ("peftbench.demo", "peftbench.api", "peftbench.commands", "peftbench.cli", "peftbench.__main__"),
]
"""The package's floors, bottom first: a module imports only from its own floor or those below (README, Design)."""


def _graph(root: Path = SRC) -> dict[str, set[str]]:
    """module -> the modules of the same tree it imports (at module level or inside functions); for bench/ the
    scripts import each other by their bare names."""
    modules = {}
    for path in root.rglob("*.py"):
        name = ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
        modules[name] = path
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module in modules and root == BENCH:
                graph[name].add(node.module)
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("peftbench"):
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


def _floor(module: str) -> int | None:
    found = [i for i, names in enumerate(LAYERS) for n in names if module == n or module.startswith(n + ".")]
    return found[-1] if found else None


def test_no_import_cycles():
    assert _cycles(_graph()) == []
    assert _cycles(_graph(BENCH)) == []


def test_the_checker_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_every_module_has_a_floor_and_none_imports_upward():
    graph = _graph()
    for module, targets in graph.items():
        if module == "peftbench":
            assert targets <= {"peftbench.errors", "peftbench.version"}, targets  # the API is imported lazily
            continue
        floor = _floor(module)
        assert floor is not None, f"{module} is on no floor of LAYERS"
        upward = sorted(t for t in targets if (_floor(t) or 0) > floor or t == "peftbench")
        assert not upward, f"{module} (floor {floor}) imports {upward}"


def test_the_upward_check_finds_an_upward_import():
    assert _floor("peftbench.data.collate") < _floor("peftbench.recipe.run") < _floor("peftbench.cli")
    assert _floor("peftbench.nowhere") is None


def test_side_rules():
    """The report reads run directories and statistics only; launching and reporting do not know each other; the
    SuperNI pipeline never imports the demo's data."""
    graph = _graph()
    for module, targets in graph.items():
        if module.startswith("peftbench.reporting"):
            banned = ("peftbench.methods", "peftbench.training", "peftbench.models", "peftbench.launch")
            assert not {t for t in targets if t.startswith(banned)}, module
        if module.startswith("peftbench.launch"):
            assert not {t for t in targets if t.startswith("peftbench.reporting")}, module
        if module.startswith("peftbench.data"):
            assert not {t for t in targets if t.startswith("peftbench.demodata")}, module


def test_the_data_layers_point_one_way():
    """Task files -> selection -> (encoding) -> examples -> tokenisation -> batching -> cache -> pipeline: the loader
    selects, the pipeline encodes; nothing below imports what is above it."""
    graph = _graph()
    order = ["tasks", "superni", "encoding", "examples", "tokenize", "collate", "cache", "pipeline"]
    for i, module in enumerate(order):
        above = {f"peftbench.data.{m}" for m in order[i + 1 :]}
        assert not graph[f"peftbench.data.{module}"] & above, module
    assert "peftbench.data.encoding" not in graph["peftbench.data.superni"]
