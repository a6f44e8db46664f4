"""The library's import graph has no circles, lazy imports included.

Read from the source (``tests/import_graph.py``). An import under ``if TYPE_CHECKING:`` is left
out: it never runs, so it cannot close a circle at import time (``_html`` names ``Report`` in a
type annotation of the function that ``Report.to_html`` calls).
"""

from __future__ import annotations

from pathlib import Path

import asynclocks
from tests.import_graph import find_cycle, read_graph

ROOT = Path(asynclocks.__file__).parent
GRAPH = read_graph(ROOT, "asynclocks", runtime=True).internal


def test_the_graph_reader_sees_lazy_imports_and_skips_type_checking_ones() -> None:
    # Guards the reader itself: if it resolved nothing, the check below would pass vacuously.
    assert "asynclocks._explore._common" in GRAPH["asynclocks._explore._report"]
    assert "asynclocks._explore._html" in GRAPH["asynclocks._explore._report"]  # a lazy import
    assert "asynclocks._explore._report" not in GRAPH["asynclocks._explore._html"]
    every = read_graph(ROOT, "asynclocks").internal
    assert "asynclocks._explore._report" in every["asynclocks._explore._html"]


def test_the_type_checking_filter_keeps_the_else_branch(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from . import b\nelse:\n    from . import c\n"
        "def late():\n    from . import d\n"
    )
    for name in "bcd":
        (package / f"{name}.py").write_text("")
    runtime = read_graph(package, "pkg", runtime=True).internal["pkg.a"]
    assert runtime == {"pkg.c", "pkg.d"}
    assert read_graph(package, "pkg").internal["pkg.a"] == {"pkg.b", "pkg.c", "pkg.d"}


def test_no_import_circles() -> None:
    assert find_cycle(GRAPH) is None
