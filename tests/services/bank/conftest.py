"""Fixtures for the bank service: an app factory behind aiohttp's TestServer, under anyio.

aiohttp is asyncio-only, so this package narrows ``anyio_backend`` to asyncio; modules that test
backend-neutral parts (the store, the lock modes) widen it again to asyncio and trio.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import BaseTestServer, TestClient, TestServer
from aiohttp.web_runner import BaseRunner

from services.bank.domain import MAX_AMOUNT
from services.bank.http import CONFIG, LOCKING, create_app
from services.bank.locking import Locking
from services.bank.ports import RaceWindow
from services.bank.run.config import BankConfig
from services.bank.stores.memory import MemoryStore

from ._postgres import postgres_url as postgres_url

ADMIN_TOKEN = "test-admin-token"

Client = TestClient[web.Request, web.Application]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class _Server(TestServer):
    """TestServer that lets a test choose aiohttp's handler_cancellation (it forces True)."""

    def __init__(self, app: web.Application, *, handler_cancellation: bool) -> None:
        super().__init__(app)
        self._handler_cancellation = handler_cancellation

    async def _make_runner(self, **kwargs: Any) -> BaseRunner:
        kwargs["handler_cancellation"] = self._handler_cancellation
        return await super()._make_runner(**kwargs)


async def request_json(
    client: Client,
    method: str,
    path: str,
    body: object = None,
    *,
    raw: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    """Send a JSON request (or ``raw`` bytes); return the status and the decoded JSON body.

    Asserts that the answer is JSON, as every answer of the bank must be.
    """
    sent_headers = {"Content-Type": "application/json"}
    sent_headers.update(headers or {})
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    async with client.request(method, path, data=data, headers=sent_headers) as resp:
        text = await resp.text()
        assert resp.content_type == "application/json", (resp.status, text)
        return resp.status, json.loads(text)


#: Paths whose default credential in :meth:`Bank.call` is the admin token.
ADMIN_PATHS = ("/audit", "/admin/", "/clients")


async def register_client(client: Client, client_id: str, admin_token: str = ADMIN_TOKEN) -> str:
    """Register ``client_id`` through ``POST /clients``; return its API key."""
    status, body = await request_json(
        client,
        "POST",
        "/clients",
        {"id": client_id},
        headers={"Authorization": f"Bearer {admin_token}"},
    )
    assert status == 201, body
    key: str = body["key"]
    return key


async def act_as_client(
    client: Client, admin_token: str = ADMIN_TOKEN, client_id: str = "tester"
) -> str:
    """Register ``client_id`` and make its API key the default ``Authorization`` of every
    request ``client`` sends (a request's own header still wins); return the key."""
    key = await register_client(client, client_id, admin_token)
    client.session.headers["Authorization"] = f"Bearer {key}"
    return key


#: The admin's ``Authorization`` header in the tests.
ADMIN_AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@dataclass
class Bank:
    """A running bank app and handles on its insides.

    :meth:`call` sends the admin token to the admin paths and ``key`` (the API key of the
    client ``tester``, registered when the bank started) everywhere else, unless the request
    names its own ``Authorization`` (``""`` sends none).
    """

    client: Client
    store: MemoryStore
    app: web.Application
    server: BaseTestServer
    key: str | None = None

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
        """Send a request; return the status and the decoded JSON body."""
        return await request_json(
            self.client, method, path, body, raw=raw, headers=self.credentials(path, headers)
        )

    def credentials(self, path: str, headers: dict[str, str] | None = None) -> dict[str, str]:
        """``headers`` with the default credential for ``path`` added (see the class)."""
        sent = dict(headers or {})
        if "Authorization" in sent:
            if not sent["Authorization"]:
                del sent["Authorization"]
            return sent
        token = self.admin_token if path.startswith(ADMIN_PATHS) else self.key
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        return sent

    @property
    def admin_token(self) -> str | None:
        return self.app[CONFIG].admin_token

    async def open_account(self, account_id: str, balance: int) -> None:
        status, body = await self.call("POST", "/accounts", {"id": account_id, "balance": balance})
        assert (status, body) == (201, {"id": account_id, "balance": balance})

    async def balance(self, account_id: str) -> int:
        status, body = await self.call("GET", f"/accounts/{account_id}")
        assert status == 200, body
        balance: int = body["balance"]
        return balance

    async def audit(self) -> dict[str, Any]:
        status, body = await self.call("GET", "/audit")
        assert status == 200
        return dict(body)


BankFactory = Callable[..., Awaitable[Bank]]


@pytest.fixture
async def make_bank() -> AsyncIterator[BankFactory]:
    """Return ``await make_bank(lock_mode=..., ...)``, a started app with a test client."""
    async with AsyncExitStack() as stack:

        async def factory(
            *,
            lock_mode: str = "account",
            admin_token: str | None = ADMIN_TOKEN,
            io_delay: float = 0.0,
            race_window: RaceWindow | None = None,
            handler_cancellation: bool = True,
            **settings: Any,
        ) -> Bank:
            store = MemoryStore(io_delay=io_delay, race_window=race_window)
            # Tests of other things open accounts with any balance the schema allows; the cap
            # itself is tested with its default (test_auth.py).
            settings.setdefault("max_opening_balance", MAX_AMOUNT)
            config = BankConfig(
                lock_mode=lock_mode, admin_token=admin_token, io_delay=io_delay, **settings
            )
            app = create_app(config, store=store)
            server = _Server(app, handler_cancellation=handler_cancellation)
            client: Client = TestClient(server)
            await stack.enter_async_context(client)
            key = None
            if admin_token is not None:
                key = await register_client(client, "tester", admin_token)
            return Bank(client=client, store=store, app=app, server=server, key=key)

        yield factory


@pytest.fixture
async def bank(make_bank: BankFactory) -> Bank:
    """A bank in lock mode ``account`` with the admin token set."""
    return await make_bank()
