"""``--store URL``: which store a URL names, and the clear refusal of a bad one."""

from __future__ import annotations

import re

import pytest

from services.bank.stores import check_store_url, open_store
from services.bank.stores.memory import MemoryStore
from services.bank.stores.postgres import DEFAULT_POOL_SIZE, PostgresStore, check_postgres_url
from services.bank.stores.sqlite import SqliteStore, sqlite_path


def test_urls_name_their_store() -> None:
    assert check_store_url("memory") == "memory"
    assert check_store_url("sqlite:///bank.db") == "sqlite"
    assert check_store_url("postgresql://postgres@127.0.0.1:5432/test") == "postgresql"
    assert check_store_url("postgres://h/db") == "postgresql"
    assert isinstance(open_store("memory", io_delay=0.5), MemoryStore)
    sqlite = open_store("sqlite:////tmp/bank.db", io_delay=0.25)
    assert isinstance(sqlite, SqliteStore)
    assert (str(sqlite.path), sqlite.io_delay) == ("/tmp/bank.db", 0.25)
    assert isinstance(open_store("postgresql://h/db"), PostgresStore)


def test_sqlite_paths() -> None:
    assert sqlite_path("sqlite:///bank.db") == "bank.db"
    assert sqlite_path("sqlite:////var/lib/bank.db") == "/var/lib/bank.db"


def test_postgres_pool_size_is_read_from_the_url_and_not_sent_to_the_server() -> None:
    assert check_postgres_url("postgresql://h/db?search_path=s&pool_size=32") == (
        "postgresql://h/db?search_path=s",
        32,
    )
    assert check_postgres_url("postgresql://h/db") == ("postgresql://h/db", DEFAULT_POOL_SIZE)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("", "unknown store ''; expected 'memory', 'sqlite:///PATH' or 'postgresql://"),
        ("Memory", "unknown store 'Memory'"),
        ("redis://h", "unknown store 'redis://h'"),
        ("sqlite://bank.db", "store URL 'sqlite://bank.db' must start with sqlite:///"),
        ("sqlite:///", "store URL 'sqlite:///' names no file; expected sqlite:///PATH"),
        ("sqlite:///data/", "names no file"),
        ("sqlite:///:memory:", "is not a file; use 'memory' for a store that lives in the process"),
        ("postgresql://h:70000/db", "is not a valid PostgreSQL URL: Port out of range"),
        ("postgresql://h/db?pool_size=0", "pool_size must be one integer from 1 to 1000"),
        ("postgresql://h/db?pool_size=2&pool_size=3", "pool_size must be one integer"),
    ],
)
def test_bad_store_urls_are_refused(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        check_store_url(url)


def test_store_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="io_delay must be a finite number of seconds >= 0"):
        SqliteStore("sqlite:///x.db", io_delay=-1)
    with pytest.raises(ValueError, match="attempts must be a positive integer, got 0"):
        PostgresStore("postgresql://h/db", attempts=0)
    with pytest.raises(ValueError, match="pool_size must be a positive integer, got 0"):
        PostgresStore("postgresql://h/db", pool_size=0)
    with pytest.raises(ValueError, match="lock_timeout must be a finite number of seconds > 0"):
        PostgresStore("postgresql://h/db", lock_timeout=0)
