"""Shared pieces of the reliability suite: a bank on any store behind a test server.

``store_url`` is parametrized over memory, SQLite (a temporary file) and PostgreSQL (a schema of
its own, see ``_postgres.py``); ``served_bank`` starts the app for a config and returns a
:class:`Served` with a client and handles on the app's insides.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from services.bank.http import LOCKING, STORE, create_app
from services.bank.locking import Locking
from services.bank.ports import Store
from services.bank.run.config import BankConfig

from .conftest import ADMIN_TOKEN, _Server, request_json

__all__ = ["STORE_KINDS", "Served", "ServedFactory", "served_bank", "store_url", "url_for"]

Client = TestClient[web.Request, web.Application]

#: Every store, PostgreSQL marked so CI can insist on it.
STORE_KINDS = ["memory", "sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


def url_for(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """The store URL of ``kind`` for one test (PostgreSQL: a fresh schema, dropped after)."""
    if kind == "memory":
        return "memory"
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'bank.db'}"
    assert kind == "postgresql", kind
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture(params=STORE_KINDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store URL, once per store kind."""
    return url_for(str(request.param), tmp_path, request)


@dataclass
class Served:
    """A running bank app, its client and its insides."""

    client: Client
    app: web.Application
    port: int

    @property
    def store(self) -> Store:
        return self.app[STORE]

    @property
    def locking(self) -> Locking:
        return self.app[LOCKING]

    async def call(
        self,
        method: str,
        path: str,
        body: object = None,
        *,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        """Send a request; return the status and the decoded JSON body (asserting it is JSON)."""
        return await request_json(self.client, method, path, body, raw=raw, headers=headers)

    async def audit(self) -> dict[str, Any]:
        status, body = await self.call("GET", "/audit")
        assert status == 200, body
        return dict(body)


ServedFactory = Callable[..., Awaitable[Served]]


@pytest.fixture
async def served_bank() -> AsyncIterator[ServedFactory]:
    """``await served_bank(store_url, lock_mode=..., store=..., handler_cancellation=...)``."""
    async with AsyncExitStack() as stack:

        async def factory(
            url: str = "memory",
            *,
            lock_mode: str = "account",
            store: Store | None = None,
            handler_cancellation: bool = True,
            **config: Any,
        ) -> Served:
            config.setdefault("admin_token", ADMIN_TOKEN)
            app = create_app(BankConfig(store=url, lock_mode=lock_mode, **config), store=store)
            server = _Server(app, handler_cancellation=handler_cancellation)
            client: Client = TestClient(server)
            await stack.enter_async_context(client)
            assert server.port is not None
            return Served(client=client, app=app, port=server.port)

        yield factory
