"""The import graph of a package, read from its source, for the tests that hold its layout.

Every ``import`` statement counts, those inside functions included, so a circle hidden behind a
lazy import is a circle too. ``runtime=True`` leaves out what sits under ``if TYPE_CHECKING:``:
such an import never runs, so it closes no circle at import time (the type checker reads it).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ImportGraph:
    """Modules of one package, what each imports of the package, and which outside packages."""

    modules: dict[str, Path]
    internal: dict[str, set[str]]
    external: dict[str, set[str]]

    def reachable(self, start: str) -> set[str]:
        """Every module of the package that importing ``start`` may import (``start`` too)."""
        seen = {start}
        todo = [start]
        while todo:
            for target in self.internal.get(todo.pop(), ()):
                if target not in seen:
                    seen.add(target)
                    todo.append(target)
        return seen


def _module_name(root: Path, package: str, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([package, *parts])


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(tree: ast.AST, runtime: bool) -> list[ast.Import | ast.ImportFrom]:
    found: list[ast.Import | ast.ImportFrom] = []
    todo: list[ast.AST] = [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        if runtime and isinstance(node, ast.If) and _is_type_checking(node):
            todo.extend(node.orelse)  # the body runs only under the type checker
            continue
        todo.extend(ast.iter_child_nodes(node))
    return found


def read_graph(root: Path, package: str, *, runtime: bool = False) -> ImportGraph:
    """The import graph of ``package``, whose ``__init__.py`` is in ``root``."""
    modules = {_module_name(root, package, path): path for path in sorted(root.rglob("*.py"))}
    internal: dict[str, set[str]] = {}
    external: dict[str, set[str]] = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        inside: set[str] = set()
        outside: set[str] = set()

        def add(target: str, inside: set[str] = inside, outside: set[str] = outside) -> None:
            if target == package or target.startswith(package + "."):
                inside.add(target)
            else:
                outside.add(target.partition(".")[0])

        for node in _import_nodes(ast.parse(path.read_text(), str(path)), runtime):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    add(alias.name)
                continue
            if node.level:
                base = name.split(".")
                if not is_package:
                    base.pop()
                base = base[: len(base) - (node.level - 1)]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            for alias in node.names:
                submodule = f"{module}.{alias.name}"
                add(submodule if submodule in modules else module)
        inside.discard(name)
        internal[name], external[name] = inside, outside
    return ImportGraph(modules, internal, external)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """Return one import circle as a path that starts and ends at the same module, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state:
                found = visit(target)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None
