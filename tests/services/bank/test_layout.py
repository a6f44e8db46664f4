"""The bank's tree is its architecture: no import circles, and the inner layers stay off the web.

The import graph is read from the source (``tests/import_graph.py``: every ``import`` statement,
those inside functions and under ``TYPE_CHECKING`` included), so a circle hidden behind a lazy
import counts too. Then the claim that matters to
users is checked for real, in a fresh interpreter: building a SQLite or PostgreSQL store and a
``BankConfig`` loads no aiohttp.
"""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

import services.bank
from services.bank import domain
from services.bank.http import errors as http_errors
from services.bank.http import headers
from tests.import_graph import find_cycle, read_graph

ROOT = Path(services.bank.__file__).parent
PACKAGE = "services.bank"

#: The layers that must never import aiohttp, directly or through another module of the bank.
OFF_THE_WEB = (
    "services.bank",
    "services.bank.domain",
    "services.bank.ports",
    "services.bank.locking",
    "services.bank.ledger",
    "services.bank.stores",
    "services.bank.run",
    "services.bank.run.config",
)


_GRAPH = read_graph(ROOT, PACKAGE)
MODULES = _GRAPH.modules
GRAPH = _GRAPH.internal
EXTERNAL = _GRAPH.external
_reachable = _GRAPH.reachable


def test_the_graph_reader_sees_the_layers() -> None:
    # Guards the reader itself: if it resolved nothing, the checks below would pass vacuously.
    assert "services.bank.ledger" in GRAPH["services.bank.http.app"]
    assert "services.bank.stores.sqlite" in GRAPH["services.bank.stores"]  # a lazy import
    assert GRAPH["services.bank.ledger"] == {
        "services.bank.domain",
        "services.bank.locking",
        "services.bank.ports",
    }
    assert "aiohttp" in EXTERNAL["services.bank.http.app"]


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_no_import_circles() -> None:
    assert find_cycle(GRAPH) is None


@pytest.mark.parametrize("module", OFF_THE_WEB)
def test_the_inner_layers_never_reach_aiohttp(module: str) -> None:
    reached = _reachable(module)
    with_aiohttp = sorted(name for name in reached if "aiohttp" in EXTERNAL[name])
    assert with_aiohttp == [], f"{module} reaches aiohttp through {with_aiohttp}"


def test_every_store_is_off_the_web() -> None:
    stores = [name for name in MODULES if name.startswith("services.bank.stores")]
    assert {"services.bank.stores.memory", "services.bank.stores.sqlite"} <= set(stores)
    for name in stores:
        assert not any("aiohttp" in EXTERNAL[other] for other in _reachable(name)), name


def test_a_database_store_and_its_config_load_no_aiohttp() -> None:
    script = """
import sys
from services.bank import BankConfig
from services.bank.ledger import Ledger
from services.bank.locking import Locking, strategies_for
from services.bank.stores import open_store
from services.bank.stores.postgres import PostgresStore
from services.bank.stores.sqlite import SqliteStore

for url in ("sqlite:///bank.db", "postgresql://postgres@127.0.0.1:5432/test"):
    config = BankConfig(store=url, lock_mode="db")
    store = open_store(config.store)
    Ledger(store, Locking("db", strategies_for(store.name)))
assert isinstance(open_store("sqlite:///bank.db"), SqliteStore)
assert PostgresStore
loaded = sorted(name for name in sys.modules if name.partition(".")[0] == "aiohttp")
print(loaded)
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]"


def _refusals(module: object) -> list[type[domain.BankError]]:
    return [
        value
        for value in vars(module).values()
        if inspect.isclass(value)
        and issubclass(value, domain.BankError)
        and value.__module__ == getattr(module, "__name__", None)
    ]


def test_domain_refusals_carry_no_http_status() -> None:
    refusals = _refusals(domain)
    assert len(refusals) >= 8
    for refusal in refusals:
        assert not hasattr(refusal, "status"), refusal


def test_every_refusal_has_exactly_one_status() -> None:
    refusals = _refusals(domain) + _refusals(http_errors)
    assert set(refusals) == set(http_errors.STATUS)
    assert all(400 <= status <= 599 for status in http_errors.STATUS.values())


def test_the_bank_header_names_are_spelled_once() -> None:
    # Spelled in several places, a renamed header would be read under the new name and looked
    # for under the old one (the error middleware once asked for a literal "Idempotency-Key").
    names = {headers.HEADER, headers.REPLAYED_HEADER}
    spelled = sorted(
        name
        for name, path in MODULES.items()
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Constant) and node.value in names
    )
    assert spelled == ["services.bank.http.headers", "services.bank.http.headers"]
