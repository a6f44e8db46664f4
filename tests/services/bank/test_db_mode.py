"""Lock mode ``db``: the database keeps the books, with one worker or several.

Two worker processes on PostgreSQL under one concurrent load: ``account`` (an in-process
``KeyedLock`` in each worker) loses money, ``db`` loses none. In process: ``db`` is offered on
the database stores, keeps the books under contention over HTTP, retries what the database
aborts (a real deadlock) and answers 503 ``retry_later`` when the aborts go on.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import pytest
from aiohttp import ClientSession, TCPConnector, web
from aiohttp.test_utils import TestClient, TestServer

from services.bank.http import create_app
from services.bank.locking import (
    ALL_LOCK_MODES,
    AccountLock,
    ArrivalOrderAccountLock,
    strategies_for,
)
from services.bank.ports import Store
from services.bank.run.config import BankConfig
from services.bank.stores.postgres import PostgresStore
from services.bank.stores.sqlite import SqliteStore
from services.bank.tools.hammer import HammerSettings, run_hammer
from services.bank.tools.showdown import mode_note, should_hold, start_server, store_label

pytestmark = pytest.mark.anyio

Client = TestClient[web.Request, web.Application]
JSON = {"Content-Type": "application/json"}
AUTH = {"Authorization": "Bearer token"}
#: The API key of the client each test client acts for, by ``id()`` of the test client.
_KEYS: dict[int, str] = {}
ADMIN_ENV = {**os.environ, "BANK_ADMIN_TOKEN": "token"}


# --- several workers -------------------------------------------------------------------------


async def _load(url: str) -> tuple[int, dict[str, Any], int]:
    """Hammer ``url`` with a contended mix; then send one deposit 10 times at once under one
    Idempotency-Key. Return the hammer's drift, the server's /audit and how often the keyed
    deposit was applied."""
    report = await run_hammer(
        HammerSettings(
            url=url,
            concurrency=32,
            requests=300,
            accounts=2,
            seed=7,
            progress=False,
            admin_token="token",
        )
    )
    # 32 connections: the kernel spreads them over both workers.
    async with ClientSession(url, connector=TCPConnector(limit=32, force_close=True)) as session:
        registered = await session.post("/clients", json={"id": "keyed"}, headers=AUTH)
        assert registered.status == 201
        auth = {"Authorization": f"Bearer {(await registered.json())['key']}"}
        opened = await session.post("/accounts", json={"id": "keyed", "balance": 0}, headers=auth)
        assert opened.status == 201

        async def deposit() -> int:
            headers = {"Idempotency-Key": "same-everywhere", **auth}
            async with session.post(
                "/accounts/keyed/deposit", json={"amount": 5}, headers=headers
            ) as response:
                assert response.status == 200, await response.text()
                balance: int = (await response.json())["balance"]
                return balance

        balances = await asyncio.gather(*(deposit() for _ in range(10)))
        async with session.get("/accounts/keyed", headers=auth) as response:
            keyed = (await response.json())["balance"]
        async with session.get("/audit", headers=AUTH) as response:
            audit = await response.json()
            assert response.status == 200, audit
    assert balances == [5] * 10
    return report.drift, audit, keyed // 5


@pytest.mark.postgres
@pytest.mark.parametrize("mode", ["account", "db"])
def test_two_workers_lose_money_under_an_in_process_lock_and_not_under_db(
    postgres_url: str, mode: str
) -> None:
    # A 5 ms await between each read and write and 32 clients on 2 accounts: requests served by
    # the two workers overlap on an account all the time, and each worker's KeyedLock only
    # orders its own.
    args = ["--workers", "2", "--store", postgres_url, "--lock", mode, "--io-delay", "0.005"]
    if mode != "db":
        args.append("--unsafe-in-process-locks")
    with start_server(args, env=ADMIN_ENV) as server:
        drift, audit, applied = asyncio.run(_load(server.url))
    assert applied == 1  # idempotency holds across workers in every mode
    if mode == "account":
        assert drift != 0
        assert audit["drift"] != 0
    else:
        assert drift == 0
        assert audit["drift"] == 0
        assert audit["negative_accounts"] == []


# --- in process ------------------------------------------------------------------------------

AppFactory = Callable[..., Awaitable[Client]]


@pytest.fixture
async def make_client() -> AsyncIterator[AppFactory]:
    async with AsyncExitStack() as stack:

        async def factory(store: Store, lock_mode: str = "db", workers: int = 1) -> Client:
            # The store is given, so the config's URL only has to name a database store.
            config = BankConfig(
                lock_mode=lock_mode,
                store="sqlite:///unused",
                admin_token="token",
                workers=workers,
                # Tests of how a worker of several behaves in an in-process mode.
                unsafe_in_process_locks=workers > 1,
            )
            client: Client = TestClient(TestServer(create_app(config, store=store)))
            await stack.enter_async_context(client)
            async with client.post("/clients", json={"id": "tester"}, headers=AUTH) as answer:
                assert answer.status == 201, await answer.text()
                _KEYS[id(client)] = (await answer.json())["key"]
            return client

        yield factory


async def _call(client: Client, method: str, path: str, body: object = None) -> tuple[int, Any]:
    """Send a request as the admin (admin routes) or as the test client's client (the rest)."""
    data = None if body is None else json.dumps(body)
    auth = AUTH if path.startswith(("/admin", "/audit")) else {}
    if not auth:
        auth = {"Authorization": f"Bearer {_KEYS[id(client)]}"}
    async with client.request(method, path, data=data, headers={**JSON, **auth}) as response:
        return response.status, await response.json()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'bank.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


def _store(url: str, **options: Any) -> Store:
    if url.startswith("sqlite"):
        return SqliteStore(url, **options)
    return PostgresStore(url, pool_size=8, **options)


async def test_db_mode_is_offered_on_database_stores(
    make_client: AppFactory, database_url: str
) -> None:
    client = await make_client(_store(database_url), lock_mode="account")
    status, document = await _call(client, "GET", "/openapi.json")
    assert document["components"]["schemas"]["LockMode"]["properties"]["mode"]["enum"] == [
        "none",
        "global",
        "account",
        "db",
    ]
    assert await _call(client, "PUT", "/admin/lock", {"mode": "db"}) == (200, {"mode": "db"})
    status, health = await _call(client, "GET", "/health")
    assert health["lock_mode"] == "db"
    assert health["store"] == database_url.partition(":")[0]


async def test_a_worker_of_several_refuses_to_switch_alone(
    make_client: AppFactory, tmp_path: Path
) -> None:
    client = await make_client(_store(f"sqlite:///{tmp_path / 'bank.db'}"), "account", workers=2)
    assert await _call(client, "PUT", "/admin/lock", {"mode": "db"}) == (
        409,
        {
            "error": "lock_mode_per_worker",
            "detail": "this server runs 2 worker processes and a switch would reach only the "
            "one that received it; restart it with --lock db instead",
        },
    )
    assert await _call(client, "PUT", "/admin/lock", {"mode": "account"}) == (
        200,
        {"mode": "account"},
    )


async def test_db_mode_keeps_the_books_under_contention(
    make_client: AppFactory, database_url: str
) -> None:
    client = await make_client(_store(database_url, io_delay=0.001))
    for account in ("a", "b"):
        assert (await _call(client, "POST", "/accounts", {"id": account, "balance": 100}))[0] == 201
    statuses: list[int] = []

    async def send(path: str, body: dict[str, Any]) -> None:
        statuses.append((await _call(client, "POST", path, body))[0])

    async with anyio.create_task_group() as tg:
        for _ in range(15):
            tg.start_soon(send, "/transfers", {"from": "a", "to": "b", "amount": 9})
            tg.start_soon(send, "/transfers", {"from": "b", "to": "a", "amount": 8})
            tg.start_soon(send, "/accounts/a/withdraw", {"amount": 11})
            tg.start_soon(send, "/accounts/b/deposit", {"amount": 3})
    assert set(statuses) <= {200, 409}
    status, audit = await _call(client, "GET", "/audit")
    assert (audit["drift"], audit["negative_accounts"]) == (0, [])


@pytest.mark.postgres
async def test_a_deadlock_is_retried_and_applied_once(
    make_client: AppFactory, postgres_url: str
) -> None:
    store = PostgresStore(postgres_url, pool_size=2)
    client = await make_client(store)
    await _call(client, "POST", "/accounts", {"id": "a", "balance": 100})
    await _call(client, "POST", "/accounts", {"id": "b", "balance": 0})
    other = await asyncpg.connect(postgres_url)
    try:
        # The other session's deadlock check waits longer than the store's (1 s default), so
        # PostgreSQL always picks the store's transaction as the victim.
        await other.execute("SET deadlock_timeout = '30s'")
        transaction = other.transaction()
        await transaction.start()
        await other.execute("SELECT 1 FROM bank_accounts WHERE id = 'b' FOR UPDATE")
        async with anyio.create_task_group() as tg:
            result: list[tuple[int, Any]] = []

            async def transfer() -> None:
                result.append(
                    await _call(client, "POST", "/transfers", {"from": "a", "to": "b", "amount": 7})
                )

            tg.start_soon(transfer)
            # Wait (querying, not sleeping) until bank_transfer() holds 'a' and waits for 'b',
            # that is until some session is blocked by this one.
            query = "SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))"
            while not await other.fetchval(query, other.get_server_pid()):
                pass
            # Now close the cycle: the store's transaction is aborted, retried, and then waits
            # for this one, which holds both rows until it commits.
            await other.execute("SELECT 1 FROM bank_accounts WHERE id = 'a' FOR UPDATE")
            await transaction.commit()
    finally:
        await other.close()
    assert result == [(200, {"from": {"id": "a", "balance": 93}, "to": {"id": "b", "balance": 7}})]
    # Once, or again if the retry re-took 'a' before the other session got it (same cycle).
    assert store.retries >= 1
    journal = await store.journal()
    assert [entry.kind for entry in journal].count("transfer") == 1


@pytest.mark.postgres
async def test_postgres_lock_waits_that_keep_failing_are_503(
    make_client: AppFactory, postgres_url: str
) -> None:
    store = PostgresStore(postgres_url, pool_size=2, lock_timeout=0.02, attempts=3)
    client = await make_client(store)
    await _call(client, "POST", "/accounts", {"id": "a", "balance": 100})
    await _call(client, "POST", "/accounts", {"id": "b", "balance": 0})
    other = await asyncpg.connect(postgres_url)
    try:
        async with other.transaction():
            await other.execute("SELECT 1 FROM bank_accounts WHERE id = 'a' FOR UPDATE")
            for path, body in [
                ("/accounts/a/deposit", {"amount": 5}),
                ("/transfers", {"from": "b", "to": "a", "amount": 1}),
            ]:
                status, error = await _call(client, "POST", path, body)
                assert status == 503
                assert error["error"] == "retry_later"
                assert error["detail"] == (
                    "the database aborted the operation 3 times (LockNotAvailableError); "
                    "nothing was applied, retry later"
                )
    finally:
        await other.close()
    assert store.retries == 6
    status, audit = await _call(client, "GET", "/audit")
    assert (audit["total"], audit["drift"]) == (100, 0)
    assert await _call(client, "POST", "/accounts/a/deposit", {"amount": 5}) == (
        200,
        {"id": "a", "balance": 105},
    )


async def test_a_busy_sqlite_file_is_503_after_bounded_retries(
    make_client: AppFactory, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'bank.db'}"
    store = SqliteStore(url, busy_timeout=0.01, attempts=2)
    client = await make_client(store)
    await _call(client, "POST", "/accounts", {"id": "a", "balance": 100})
    # Another process's writer, holding the file's write lock.
    other = sqlite3.connect(tmp_path / "bank.db", isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        status, error = await _call(client, "POST", "/accounts/a/withdraw", {"amount": 5})
        assert (status, error["error"]) == (503, "retry_later")
        assert "aborted the operation 2 times (OperationalError)" in error["detail"]
        other.execute("ROLLBACK")
    finally:
        other.close()
    assert store.retries == 2
    assert await _call(client, "POST", "/accounts/a/withdraw", {"amount": 5}) == (
        200,
        {"id": "a", "balance": 95},
    )


# --- the showdown ----------------------------------------------------------------------------


@pytest.mark.slow
def test_showdown_on_sqlite_with_one_worker_adds_db_and_says_why(tmp_path: Path) -> None:
    report = tmp_path / "showdown.json"
    command = [sys.executable, "-m", "services.bank", "showdown", "--no-progress"]
    command += ["--store", f"sqlite:///{tmp_path / 'bank.db'}", "--requests", "60"]
    command += ["--concurrency", "16", "--accounts", "2", "--io-delay", "0.002"]
    command += ["--json", str(report)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert "why" in result.stdout  # the note column, wrapped as the terminal width allows
    assert "One worker process: every request passes through its locks, so account is enough" in (
        result.stdout
    )
    rows = {row["mode"]: row for row in json.loads(report.read_text())["modes"]}
    assert list(rows) == ["none", "global", "account", "db"]
    assert rows["none"]["verdict"] == "LOSES MONEY"
    for mode in ("global", "account", "db"):
        assert (rows[mode]["drift"], rows[mode]["negative_balances"]) == (0, 0)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--workers", "2"], "2 workers need a store they can share"),
        (["--store", "nosql://x"], "unknown store 'nosql://x'"),
    ],
)
def test_showdown_refuses_bad_store_flags(flags: list[str], message: str) -> None:
    command = [sys.executable, "-m", "services.bank", "showdown", *flags]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert message in result.stderr


def test_showdown_notes() -> None:
    assert store_label("postgresql://bank:secret@db.example:5433/prod") == (
        "postgresql db.example:5433/prod"
    )
    assert store_label("sqlite:///var/bank.db") == "sqlite var/bank.db"
    assert [should_hold(mode, 1) for mode in ALL_LOCK_MODES] == [False, True, True, True]
    assert [should_hold(mode, 2) for mode in ALL_LOCK_MODES] == [False, False, False, True]
    assert "the others' requests never see it" in mode_note("account", "postgresql://x", 2)
    assert "SQLite's file lock" in mode_note("db", "sqlite:///x", 1)


@pytest.mark.parametrize(
    ("store", "url"),
    [("memory", "memory"), ("sqlite", "sqlite:///x.db"), ("postgresql", "postgresql://h/db")],
)
@pytest.mark.parametrize("workers", [1, 2])
def test_showdown_account_note_names_the_lock_the_server_uses(
    store: str, url: str, workers: int
) -> None:
    # The server's account strategy on that store (strategies_for, as create_app builds it).
    strategy = strategies_for(store)["account"]
    note = mode_note("account", url, workers)
    if isinstance(strategy, ArrivalOrderAccountLock):
        assert note.startswith("account locks handed over in arrival order"), note
        assert "KeyedLock" not in note
    else:
        assert isinstance(strategy, AccountLock)
        assert note.startswith("a KeyedLock per account"), note
    assert ("enough" in note) == (workers == 1)
