"""The package's import layering: the floor imports nothing above it, top-level subpackages form no
cycle (lazy imports in function bodies count; imports only for type checking do not), and the
runtimes load no torch until the torch backend is asked for."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import mfv2

PACKAGE = Path(mfv2.__file__).parent
# Below everything: contracts, geometry, file and config helpers, the runtime packages' import helpers.
FLOOR = {"errors", "fileio", "config", "registry", "artifacts", "geometry", "_openvino", "_tensorrt", "_cuda"}
ROOT = {"__init__", "__main__", "cli"}  # the public façade and the command line import everything, lazily
# Cycles between top-level units that are known and accepted: none (runtimes.runner.cached_export calls
# the exporter lazily, and the exporters import nothing from runtimes). A new cycle fails.
KNOWN_CYCLES: set[frozenset[str]] = set()


def _unit(path: Path) -> str:
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


def _imports(tree: ast.AST, in_type_checking: bool = False) -> Iterator[str]:
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            yield from _imports(ast.Module(body=node.orelse, type_ignores=[]))  # the else branch runs
            continue
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module
            if node.module == "mfv2":  # from mfv2 import models
                yield from (f"mfv2.{a.name}" for a in node.names)
        else:
            yield from _imports(node)


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        unit = _unit(path)
        deps = graph.setdefault(unit, set())
        for name in _imports(ast.parse(path.read_text())):
            parts = name.split(".")
            if parts[0] == "mfv2" and len(parts) > 1 and parts[1] != unit and (PACKAGE / parts[1]).exists() | (PACKAGE / f"{parts[1]}.py").exists():
                deps.add(parts[1])
    return graph


def test_the_floor_imports_only_the_floor() -> None:
    graph = _graph()
    upward = {u: sorted(graph[u] - FLOOR) for u in FLOOR if graph.get(u, set()) - FLOOR}
    assert upward == {}


def _cyclic_components(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components of more than one unit (Tarjan): every set of units that
    import each other round a loop, however many loops run through them."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components: list[frozenset[str]] = []

    def visit(unit: str) -> None:
        index[unit] = low[unit] = len(index)
        stack.append(unit)
        for dep in sorted(graph.get(unit, ())):
            if dep not in index:
                visit(dep)
                low[unit] = min(low[unit], low[dep])
            elif dep in stack:
                low[unit] = min(low[unit], index[dep])
        if low[unit] == index[unit]:
            component = set()
            while True:
                member = stack.pop()
                component.add(member)
                if member == unit:
                    break
            if len(component) > 1:
                components.append(frozenset(component))

    for unit in sorted(graph):
        if unit not in index:
            visit(unit)
    return components


def test_cycle_finder_finds_every_component() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"e"}, "e": {"d", "a"}, "f": {"a"}}
    assert sorted(map(sorted, _cyclic_components(graph))) == [["a", "b", "c"], ["d", "e"]]


def test_no_cycle_between_top_level_subpackages() -> None:
    graph = {u: deps - ROOT for u, deps in _graph().items() if u not in ROOT}
    components = _cyclic_components(graph)
    assert [sorted(c) for c in components if c not in KNOWN_CYCLES] == []
    assert [sorted(c) for c in KNOWN_CYCLES if c not in components] == [], "a known cycle is gone: drop it from KNOWN_CYCLES"


def test_the_runtimes_load_no_torch_except_the_torch_backend() -> None:
    code = (
        "import json, sys, mfv2.runtimes, mfv2.tracking, mfv2.runtimes.onnxruntime_backend, mfv2.runtimes.openvino_backend, "
        "mfv2.runtimes.tensorrt_backend, mfv2.runtimes.runner, mfv2.artifacts, mfv2.geometry; "
        "print(json.dumps([m for m in ('torch', 'mfv2.models', 'mfv2.exporters') if m in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == []
