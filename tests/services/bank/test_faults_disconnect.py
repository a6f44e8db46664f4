"""Clients that hang up in the middle of their requests, under a concurrent load.

32 clients send a mix of deposits, withdrawals and transfers; about one request in four is cut:
its client closes the connection while the server is inside that request. Where the cut lands
is made certain, not left to timing: a test middleware tags each request, and

- for the lock modes that keep a race window (``account``), the store's window of a tagged
  request tells the client "I am between my read and my write", waits until the client has
  closed its connection, then (with aiohttp's ``handler_cancellation`` on) waits for the
  cancellation that the disconnect delivers, or (off) carries on and writes;
- for ``db`` (no window: the database does it in one statement), the middleware tells the
  client the handler is starting, and the cut lands wherever the handler is by then, usually
  inside the shielded database write.

Every amount is unique, so the journal can be matched request by request afterwards:

- every operation a client saw acknowledged is in the journal;
- with ``handler_cancellation`` on, no request cut in its race window is in the journal; with it
  off, every one of them is (the handler finished without anyone listening);
- the balances are exactly the opening balances plus the journal replayed: no half transfer;
- ``/audit`` shows drift 0 and no negative balance.
"""

from __future__ import annotations

import contextvars
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from services.bank.domain import OperationKind
from services.bank.http import create_app
from services.bank.ports import Store
from services.bank.run.config import BankConfig
from services.bank.stores.memory import MemoryStore
from services.bank.stores.postgres import PostgresStore
from services.bank.stores.sqlite import SqliteStore

from ._reliability import url_for
from .conftest import ADMIN_AUTH, ADMIN_TOKEN, _Server, act_as_client

pytestmark = pytest.mark.anyio

CLIENTS = 32
REQUESTS = 480
ACCOUNTS = [f"acct{n}" for n in range(6)]
OPENING = 10**9
TAG_HEADER = "X-Test-Tag"

_TAG: contextvars.ContextVar[int | None] = contextvars.ContextVar("test_tag", default=None)


@dataclass
class Cut:
    """The rendezvous of one request that its client will cut."""

    inside: anyio.Event = field(default_factory=anyio.Event)
    closed: anyio.Event = field(default_factory=anyio.Event)
    #: How the server side ended: "cancelled" in the window, or "went on" to write.
    outcome: str = ""


@dataclass
class Harness:
    """The server-side hooks shared by the store's window and the test middleware."""

    handler_cancellation: bool
    in_window: bool
    cuts: dict[int, Cut] = field(default_factory=dict)

    async def window(self, kind: OperationKind) -> None:
        tag = _TAG.get()
        cut = self.cuts.get(tag) if tag is not None else None
        if cut is None or not self.in_window:
            await anyio.lowlevel.checkpoint()
            return
        cut.inside.set()
        await cut.closed.wait()
        if self.handler_cancellation:
            try:
                # The disconnect cancels this handler; if it did not, the test fails loudly.
                with anyio.fail_after(10):
                    await anyio.sleep_forever()
            except BaseException:
                cut.outcome = "cancelled"
                raise
        cut.outcome = "went on"

    @web.middleware
    async def middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        raw = request.headers.get(TAG_HEADER)
        tag = int(raw) if raw is not None else None
        token = _TAG.set(tag)
        try:
            cut = self.cuts.get(tag) if tag is not None else None
            if cut is not None and not self.in_window:
                cut.inside.set()
            return await handler(request)
        finally:
            _TAG.reset(token)


@dataclass(frozen=True)
class Op:
    tag: int
    kind: str
    path: str
    body: dict[str, Any]
    cut: bool


def _plan(seed: int) -> list[Op]:
    rng = random.Random(seed)
    ops = []
    for tag in range(REQUESTS):
        amount = 1_000 + tag  # unique: the journal entry of each request can be found
        kind = rng.choice(["deposit", "withdraw", "transfer", "transfer"])
        if kind == "transfer":
            source, target = rng.sample(ACCOUNTS, 2)
            path, body = "/transfers", {"from": source, "to": target, "amount": amount}
        else:
            path, body = f"/accounts/{rng.choice(ACCOUNTS)}/{kind}", {"amount": amount}
        ops.append(Op(tag, kind, path, body, cut=rng.random() < 0.25))
    return ops


def _make_store(kind: str, url: str, harness: Harness) -> Store:
    if kind == "memory":
        return MemoryStore(race_window=harness.window)
    if kind == "sqlite":
        return SqliteStore(url, race_window=harness.window)
    return PostgresStore(url, race_window=harness.window, pool_size=20)


async def _send(client: TestClient[web.Request, web.Application], op: Op, harness: Harness) -> Any:
    """Send one request; return its JSON answer, or None when this client cut it."""
    headers = {TAG_HEADER: str(op.tag)}
    if not op.cut:
        async with client.post(op.path, json=op.body, headers=headers) as resp:
            assert resp.status in (200, 409), await resp.text()
            return await resp.json() if resp.status == 200 else None
    cut = harness.cuts[op.tag]
    async with anyio.create_task_group() as tg:

        async def request() -> None:
            async with client.post(op.path, json=op.body, headers=headers) as resp:
                raise AssertionError(f"a cut request got an answer: {resp.status}")

        tg.start_soon(request)
        await cut.inside.wait()
        # Cancelling the client's request closes its connection: the server sees the hang-up.
        tg.cancel_scope.cancel()
    cut.closed.set()
    return None


@pytest.mark.parametrize(
    "handler_cancellation", [True, False], ids=["cancellation-on", "cancellation-off"]
)
@pytest.mark.parametrize(
    ("kind", "lock_mode"),
    [
        ("memory", "account"),
        ("sqlite", "account"),
        ("sqlite", "db"),
        pytest.param("postgresql", "account", marks=pytest.mark.postgres),
        pytest.param("postgresql", "db", marks=pytest.mark.postgres),
    ],
)
async def test_disconnects_under_load_lose_nothing_and_split_nothing(
    kind: str,
    lock_mode: str,
    handler_cancellation: bool,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    url = url_for(kind, tmp_path, request)
    harness = Harness(handler_cancellation, in_window=lock_mode != "db")
    store = _make_store(kind, url, harness)
    config = BankConfig(store=url, lock_mode=lock_mode, admin_token=ADMIN_TOKEN)
    app = create_app(config, store=store)
    running = Running()
    app.middlewares.insert(0, running.middleware)
    app.middlewares.append(harness.middleware)
    ops = _plan(seed=7)
    harness.cuts = {op.tag: Cut() for op in ops if op.cut}
    server = _Server(app, handler_cancellation=handler_cancellation)
    connector = aiohttp.TCPConnector(limit=CLIENTS * 2)
    async with TestClient(server, connector=connector) as client:
        await act_as_client(client)
        for account in ACCOUNTS:
            async with client.post("/accounts", json={"id": account, "balance": OPENING}) as r:
                assert r.status == 201
        acknowledged: dict[int, Any] = {}
        queue = iter(ops)

        async def worker() -> None:
            for op in queue:
                answer = await _send(client, op, harness)
                if answer is not None:
                    acknowledged[op.tag] = answer

        async with anyio.create_task_group() as tg:
            for _ in range(CLIENTS):
                tg.start_soon(worker)
        # Handlers of cut requests may still run (cancellation off); wait for every one.
        await running.idle()
        journal = await store.journal()
        balances = {}
        for account in ACCOUNTS:
            async with client.get(f"/accounts/{account}") as r:
                balances[account] = (await r.json())["balance"]
        async with client.get("/audit", headers=ADMIN_AUTH) as r:
            audit = await r.json()

    by_amount = {entry.amount: entry for entry in journal if entry.kind != "open"}
    cut_ops = [op for op in ops if op.cut]
    # Every acknowledged operation is journaled, with what its answer said.
    for tag in acknowledged:
        assert 1_000 + tag in by_amount, ops[tag]
    # Each cut landed, and the window outcome decides whether the operation happened.
    assert all(harness.cuts[op.tag].inside.is_set() for op in cut_ops)
    if harness.in_window:
        for op in cut_ops:
            outcome = harness.cuts[op.tag].outcome
            if handler_cancellation:
                assert outcome == "cancelled", op
                assert op.body["amount"] not in by_amount, op
            else:
                assert outcome == "went on", op
                assert op.body["amount"] in by_amount, op
    # Every journal entry is one of the requests sent, applied once.
    sent = {op.body["amount"]: op for op in ops}
    assert set(by_amount) <= set(sent)
    # Replaying the journal gives the balances: no half transfer anywhere.
    replay = dict.fromkeys(ACCOUNTS, OPENING)
    for entry in journal:
        if entry.kind == "deposit":
            replay[entry.account] += entry.amount
        elif entry.kind == "withdraw":
            replay[entry.account] -= entry.amount
        elif entry.kind == "transfer":
            assert entry.counterparty is not None
            replay[entry.account] -= entry.amount
            replay[entry.counterparty] += entry.amount
    assert balances == replay
    assert audit["drift"] == 0
    assert audit["negative_accounts"] == []
    assert len(acknowledged) == len(ops) - len(cut_ops)


class Running:
    """A middleware counting running handlers, and a way to wait until none is left."""

    def __init__(self) -> None:
        self.count = 0
        self._idle = anyio.Event()

    @web.middleware
    async def middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        self.count += 1
        try:
            return await handler(request)
        finally:
            self.count -= 1
            if self.count == 0:
                self._idle.set()
                self._idle = anyio.Event()

    async def idle(self) -> None:
        with anyio.fail_after(20):
            while self.count:
                await self._idle.wait()
