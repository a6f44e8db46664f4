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

from services.bank.domain import MAX_AMOUNT
from services.bank.http import CONFIG, LOCKING, STORE, create_app
from services.bank.locking import Locking
from services.bank.ports import Store
from services.bank.run.config import BankConfig

from .conftest import ADMIN_PATHS, ADMIN_TOKEN, _Server, register_client, request_json

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
    """A running bank app, its client and its insides.

    :meth:`call` sends the admin token to the admin paths and ``key`` (the API key of the
    client ``tester``, registered once per store) everywhere else, unless the request names
    its own ``Authorization`` (``""`` sends none).
    """

    client: Client
    app: web.Application
    port: int
    key: str | None = None

    @property
    def auth(self) -> dict[str, str]:
        """The ``Authorization`` header of the client ``tester``."""
        return {} if self.key is None else {"Authorization": f"Bearer {self.key}"}

    def credentials(self, path: str, headers: dict[str, str] | None = None) -> dict[str, str]:
        """``headers`` with the default credential for ``path`` added (see the class)."""
        sent = dict(headers or {})
        if "Authorization" in sent:
            if not sent["Authorization"]:
                del sent["Authorization"]
            return sent
        token = self.app[CONFIG].admin_token if path.startswith(ADMIN_PATHS) else self.key
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        return sent

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
        return await request_json(
            self.client, method, path, body, raw=raw, headers=self.credentials(path, headers)
        )

    async def audit(self) -> dict[str, Any]:
        status, body = await self.call("GET", "/audit")
        assert status == 200, body
        return dict(body)


ServedFactory = Callable[..., Awaitable[Served]]


@pytest.fixture
async def served_bank() -> AsyncIterator[ServedFactory]:
    """``await served_bank(store_url, lock_mode=..., store=..., handler_cancellation=...)``."""
    keys: dict[str, str] = {}
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
            config.setdefault("max_opening_balance", MAX_AMOUNT)
            app = create_app(BankConfig(store=url, lock_mode=lock_mode, **config), store=store)
            server = _Server(app, handler_cancellation=handler_cancellation)
            client: Client = TestClient(server)
            await stack.enter_async_context(client)
            assert server.port is not None
            token = config["admin_token"]
            # A database is shared by the apps of one test, and so is its client; a memory
            # store (even of the same URL) is each app's own.
            if token is not None and (url == "memory" or url not in keys):
                keys[url] = await register_client(client, "tester", token)
            return Served(client=client, app=app, port=server.port, key=keys.get(url))

        yield factory
