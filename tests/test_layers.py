"""The layers' import direction: graphs → nodes → memory → errors, server above all, no
cycles.

``errors.py`` (the one error hierarchy) imports nothing of ours; ``memory/`` (ports,
adapters, persistence) imports only it; ``nodes/`` (agents, state schema, LLM layer)
imports ``memory/``; ``graphs/`` only wires nodes; ``server/`` (entry points, routes,
application services, settings, wiring) may import any of them and nothing imports it;
``migrations/`` sees the tables in ``memory/`` only. Imports are read from the source
(``ast``), including those inside functions and under ``TYPE_CHECKING``, so a lazy
import cannot hide an arrow.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("errors", "memory", "nodes", "graphs", "server", "migrations")
MAY_IMPORT: Mapping[str, frozenset[str]] = {
    "errors": frozenset(),
    "memory": frozenset({"memory", "errors"}),
    "nodes": frozenset({"nodes", "memory", "errors"}),
    "graphs": frozenset({"graphs", "nodes", "memory", "errors"}),
    "server": frozenset({"server", "graphs", "nodes", "memory", "errors"}),
    "migrations": frozenset({"migrations", "memory", "errors"}),
}
"""What each layer may import (its own modules included)."""

Graph = dict[str, set[str]]


def modules(root: Path = ROOT) -> dict[str, Path]:
    """Every module of the layers, by dotted name (packages by their own name)."""
    found: dict[str, Path] = {}
    for layer in LAYERS:
        single = root / f"{layer}.py"
        paths = [single] if single.is_file() else sorted((root / layer).rglob("*.py"))
        for path in paths:
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def _imported(tree: ast.AST) -> Iterator[str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            # ``from memory import errors`` imports the module errors.
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def import_graph(found: Mapping[str, Path]) -> Graph:
    """Module → the modules of ours it imports."""
    graph: Graph = {}
    for name, path in found.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        graph[name] = {target for target in _imported(tree) if target in found} - {name}
    return graph


def violations(graph: Graph) -> list[str]:
    """Every arrow that points the wrong way, as ``a -> b (layer a may not import b)``."""
    wrong = []
    for source, targets in sorted(graph.items()):
        layer = source.split(".")[0]
        for target in sorted(targets):
            if target.split(".")[0] not in MAY_IMPORT[layer]:
                wrong.append(
                    f"{source} -> {target} ({layer} may not import {target.split('.')[0]})"
                )
    return wrong


def cycles(graph: Graph) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            advanced = False
            for succ in successors:
                if succ not in index:
                    index[succ] = low[succ] = counter
                    counter += 1
                    stack.append(succ)
                    on_stack.add(succ)
                    work.append((succ, iter(sorted(graph.get(succ, ())))))
                    advanced = True
                    break
                if succ in on_stack:
                    low[node] = min(low[node], index[succ])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    groups.append(sorted(group))
    return groups


@pytest.fixture(scope="module")
def graph() -> Graph:
    found = modules()
    assert {name.split(".")[0] for name in found} == set(LAYERS)
    return import_graph(found)


def test_every_import_points_down(graph: Graph) -> None:
    assert violations(graph) == []


def test_nothing_below_imports_the_server(graph: Graph) -> None:
    importers = {
        source
        for source, targets in graph.items()
        if any(t.split(".")[0] == "server" for t in targets)
    }
    assert {source.split(".")[0] for source in importers} <= {"server"}


def test_no_module_cycles(graph: Graph) -> None:
    assert cycles(graph) == []


def test_the_checks_see_wrong_arrows_and_cycles() -> None:
    """The rules are not vacuous: an upward import and a cycle are reported."""
    graph: Graph = {
        "nodes.a": {"graphs.novel"},
        "graphs.novel": {"nodes.a"},
        "memory.x": {"memory.y"},
        "memory.y": {"memory.x"},
        "server.cli": {"memory.x"},
        "errors": {"memory.x"},
    }
    assert violations(graph) == [
        "errors -> memory.x (errors may not import memory)",
        "nodes.a -> graphs.novel (nodes may not import graphs)",
    ]
    assert sorted(cycles(graph)) == [["graphs.novel", "nodes.a"], ["memory.x", "memory.y"]]


def test_imports_are_read_from_functions_and_from_clauses(tmp_path: Path) -> None:
    for layer in LAYERS[1:]:
        (tmp_path / layer).mkdir()
    (tmp_path / "errors.py").write_text("", encoding="utf-8")
    (tmp_path / "memory" / "store.py").write_text(
        "def lazy():\n    from server.settings import Settings\n", encoding="utf-8"
    )
    (tmp_path / "server" / "settings.py").write_text("", encoding="utf-8")
    (tmp_path / "nodes" / "agent.py").write_text("from memory import store\n", encoding="utf-8")
    graph = import_graph(modules(tmp_path))
    assert graph["memory.store"] == {"server.settings"}
    assert graph["nodes.agent"] == {"memory.store"}
    assert graph["errors"] == set()
