"""Where the money lives: the stores behind ``services.bank.ports.Store``, and the registry of store
URLs (``--store``).

- ``memory``: :class:`services.bank.stores.memory.MemoryStore`, balances in a dict;
- ``sqlite:///PATH``: :class:`services.bank.stores.sqlite.SqliteStore`;
- ``postgresql://...``: :class:`services.bank.stores.postgres.PostgresStore`;
- ``_sql``: what the two database stores share.

A store module imports only its driver and the domain: nothing here knows about HTTP. Each
store is imported when its URL is first used, so naming a memory store never loads a driver.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from ..ports import Store

__all__ = ["STORE_URL_FORMS", "check_store_url", "open_store"]


#: What ``--store`` accepts, for error messages and help texts.
STORE_URL_FORMS: Final = "'memory', 'sqlite:///PATH' or 'postgresql://USER@HOST:PORT/DATABASE'"


def check_store_url(url: str) -> str:
    """Return the kind of store ``url`` names: ``memory``, ``sqlite`` or ``postgresql``.

    Raises:
        ValueError: An unknown or malformed store URL (the message says which part is wrong).
    """
    if url == "memory":
        return "memory"
    if url.startswith("sqlite:"):
        from .sqlite import sqlite_path

        sqlite_path(url)
        return "sqlite"
    if url.startswith(("postgresql:", "postgres:")):
        from .postgres import check_postgres_url

        check_postgres_url(url)
        return "postgresql"
    raise ValueError(f"unknown store {url!r}; expected {STORE_URL_FORMS}")


def open_store(url: str, *, io_delay: float = 0.0, request_timeout: float | None = None) -> Store:
    """Build the store named by ``--store``.

    Args:
        url: ``memory``, ``sqlite:///PATH`` (see ``services.bank.stores.sqlite``) or
            ``postgresql://...`` (see ``services.bank.stores.postgres``).
        io_delay: Seconds every store awaits between the read and the write of an operation
            that is not atomic (on the durable stores, on top of the real round trips).
        request_timeout: The service's per-request deadline, which bounds the database
            stores' waits: PostgreSQL's ``statement_timeout`` and pool wait, half of it for
            ``lock_timeout`` (so one retry fits), SQLite's ``busy_timeout``, and the time
            retries of aborted operations may take. ``None`` leaves every wait unbounded.

    Raises:
        ValueError: An unknown or malformed store URL.
    """
    kind = check_store_url(url)
    if kind == "sqlite":
        from .sqlite import SqliteStore

        if request_timeout is None:
            return SqliteStore(url, io_delay=io_delay)
        return SqliteStore(
            url,
            io_delay=io_delay,
            busy_timeout=min(5.0, request_timeout),
            retry_budget=request_timeout,
        )
    if kind == "postgresql":
        from .postgres import PostgresStore

        if request_timeout is None:
            return PostgresStore(url, io_delay=io_delay)
        return PostgresStore(
            url,
            io_delay=io_delay,
            statement_timeout=request_timeout,
            lock_timeout=request_timeout / 2,
            acquire_timeout=request_timeout,
            retry_budget=request_timeout,
        )
    from .memory import MemoryStore

    return MemoryStore(io_delay=io_delay)
