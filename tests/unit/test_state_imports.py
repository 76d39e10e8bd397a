"""The modules of ``durable_streams.state`` import each other without a cycle.

Read from the source, so imports inside functions (the usual way to hide a
cycle) count too. A package's ``__init__`` running before its submodules is
how Python imports, not a cycle, so it is not an edge.
"""

from __future__ import annotations

import ast
from pathlib import Path

import durable_streams

PACKAGE = Path(durable_streams.__file__).parent


def _modules(root: Path) -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, whether it is a package's ``__init__``)."""
    found = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts.pop()
        found[".".join(parts)] = (path, is_package)
    return found


def import_graph(root: Path) -> dict[str, set[str]]:
    """Which modules of the package under ``root`` each of its modules imports."""
    modules = _modules(root)
    graph: dict[str, set[str]] = {}
    for name, (path, is_package) in modules.items():
        here = name.split(".") if is_package else name.split(".")[:-1]
        imported: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                imported.update(a.name for a in node.names if a.name in modules)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here[: len(here) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if target not in modules:
                    continue
                for alias in node.names:
                    submodule = f"{target}.{alias.name}"
                    imported.add(submodule if submodule in modules else target)
        graph[name] = imported - {name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_sees_a_cycle_hidden_in_a_function(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("from .a import x\n")
    (package / "a.py").write_text("from . import b\nx = 1\n")
    (package / "b.py").write_text("def f():\n    from .a import x\n    return x\n")
    (package / "c.py").write_text("from pkg import a\n")
    graph = import_graph(package)
    assert graph["pkg.c"] == {"pkg.a"}
    assert cycles(graph) == [["pkg.a", "pkg.b"]]


def test_no_import_cycle_among_the_state_modules():
    graph = import_graph(PACKAGE)
    assert "durable_streams.state.hooks" in graph
    state_cycles = [c for c in cycles(graph) if any(".state." in m for m in c)]
    assert state_cycles == []


def test_querysets_depend_on_registrations_and_emission_not_on_hooks():
    imported = import_graph(PACKAGE)["durable_streams.state.querysets"]
    assert "durable_streams.state.hooks" not in imported
    assert {"durable_streams.state.registration", "durable_streams.state.emission"} <= imported
