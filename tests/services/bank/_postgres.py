"""The PostgreSQL the tests run against: one fresh schema per test, dropped afterwards.

The server is ``BANK_TEST_POSTGRES_DSN`` (default ``postgresql://postgres@127.0.0.1:5432/test``).
A test that needs it is skipped only when the server is unreachable and ``BANK_REQUIRE_POSTGRES``
is unset; CI sets it, so there an unreachable server fails the run instead.
"""

from __future__ import annotations

import asyncio
import os
import threading
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Final, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg
import pytest

T = TypeVar("T")

DSN_ENV: Final = "BANK_TEST_POSTGRES_DSN"
REQUIRE_ENV: Final = "BANK_REQUIRE_POSTGRES"
DEFAULT_DSN: Final = "postgresql://postgres@127.0.0.1:5432/test"


def postgres_dsn() -> str:
    """The server's DSN, from the environment or the default."""
    return os.environ.get(DSN_ENV) or DEFAULT_DSN


def with_search_path(dsn: str, schema: str) -> str:
    """Return ``dsn`` with its tables in ``schema`` (asyncpg passes the parameter to the server)."""
    parts = urlsplit(dsn)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "search_path"]
    query.append(("search_path", schema))
    return urlunsplit(parts._replace(query=urlencode(query)))


def run_async(make: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine on a private event loop in a thread, away from the test's own loop."""
    result: list[T] = []
    error: list[BaseException] = []

    def target() -> None:
        async def main() -> T:
            return await make()

        try:
            result.append(asyncio.run(main()))
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


def _connect_or_skip(dsn: str) -> None:
    async def probe() -> None:
        conn = await asyncpg.connect(dsn, timeout=5)
        await conn.close()

    try:
        run_async(probe)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        message = f"PostgreSQL is unreachable at {dsn}: {type(exc).__name__}: {exc}"
        if os.environ.get(REQUIRE_ENV):
            pytest.fail(f"{message} ({REQUIRE_ENV} is set, so this is a failure, not a skip)")
        pytest.skip(message)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A store URL whose tables live in a schema of their own, dropped after the test."""
    dsn = postgres_dsn()
    _connect_or_skip(dsn)
    schema = f"bank_test_{uuid.uuid4().hex[:16]}"

    async def execute(sql: str) -> None:
        conn = await asyncpg.connect(dsn, timeout=5)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    run_async(lambda: execute(f'CREATE SCHEMA "{schema}"'))
    try:
        yield with_search_path(dsn, schema)
    finally:
        run_async(lambda: execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
