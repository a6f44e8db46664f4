"""Every failure reply tells the truth about the money (issue 14, findings 2 and 4).

Each database fault is injected deterministically and every reply is checked against the journal,
operation by operation (each request carries an amount of its own):

- a connection cut right before / right after COMMIT (keyed) or the autocommit write (unkeyed),
  by a protocol-aware proxy (``_pgproxy.py``): 503 ``outcome_unknown``, and a retry with the key
  replays the committed result or applies it once;
- every connection cut at once under load (a restart, without restarting the shared cluster);
- ``statement_timeout``, ``lock_timeout``, a row held ``FOR UPDATE`` by an outside session, too
  many connections (a role with ``CONNECTION LIMIT 1``), SQLite's "database is locked":
  503 ``retry_later`` with nothing applied, never a 500, other accounts not stalled;
- ``/health`` says ``degraded`` while the database is away or requests are refused.

Before the fix these answered 500 (``InterfaceError`` from the rollback of a dead connection,
``QueryCanceledError``, ``TooManyConnectionsError``, ``sqlite3.OperationalError``) or 503
``retry_later`` "nothing applied" for a COMMIT that had gone through.
"""

from __future__ import annotations

import itertools
import sqlite3
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
import asyncpg
import pytest

from services.bank.domain import JournalEntry
from services.bank.ports import KeyPolicy
from services.bank.stores.postgres import PostgresStore
from services.bank.stores.sqlite import SqliteStore

from ._pgproxy import PgProxy, proxied_url
from ._reliability import Served, ServedFactory
from ._reliability import served_bank as served_bank

pytestmark = pytest.mark.anyio

_amounts = itertools.count(1_001)


def _amount() -> int:
    return next(_amounts)


def _moves(journal: list[JournalEntry], amount: int) -> list[JournalEntry]:
    return [entry for entry in journal if entry.kind != "open" and entry.amount == amount]


async def _open(bank: Served, *accounts: str) -> None:
    for account in accounts:
        status, body = await bank.call("POST", "/accounts", {"id": account, "balance": 10**9})
        assert status == 201, body


@pytest.fixture
async def proxy(postgres_url: str) -> AsyncIterator[PgProxy]:
    parts = urlsplit(postgres_url)
    async with PgProxy(parts.hostname or "127.0.0.1", parts.port or 5432) as running:
        yield running


async def _proxied_bank(
    served_bank: ServedFactory, postgres_url: str, proxy: PgProxy, mode: str, **store: Any
) -> Served:
    pg = PostgresStore(proxied_url(postgres_url, proxy.port), pool_size=4, **store)
    return await served_bank(postgres_url, lock_mode=mode, store=pg)


# --- a connection cut around the commit --------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.parametrize("mode", ["db", "account"])
@pytest.mark.parametrize("when", ["before", "after"])
async def test_a_keyed_commit_cut_is_outcome_unknown_and_the_key_settles_it(
    served_bank: ServedFactory, postgres_url: str, proxy: PgProxy, mode: str, when: str
) -> None:
    bank = await _proxied_bank(served_bank, postgres_url, proxy, mode)
    await _open(bank, "a")
    amount, key = _amount(), {"Idempotency-Key": f"k-{uuid.uuid4()}"}
    sprung = proxy.arm("commit", when)  # type: ignore[arg-type]
    status, body = await bank.call("POST", "/accounts/a/deposit", {"amount": amount}, headers=key)
    assert sprung.is_set()
    assert (status, body["error"]) == (503, "outcome_unknown"), body
    assert "retry with the same Idempotency-Key" in body["detail"]
    # The truth: "before" never reached the server, "after" committed.
    applied = 1 if when == "after" else 0
    assert len(_moves(await bank.store.journal(), amount)) == applied
    # The retry with the key settles it: applied exactly once, whichever it was.
    async with bank.client.post(
        "/accounts/a/deposit", json={"amount": amount}, headers={**key, **bank.auth}
    ) as response:
        assert response.status == 200, await response.text()
        replayed = response.headers.get("Idempotent-Replayed") == "true"
        assert (await response.json())["balance"] == 10**9 + amount
    assert replayed == (when == "after")
    assert len(_moves(await bank.store.journal(), amount)) == 1
    assert (await bank.audit())["drift"] == 0


@pytest.mark.postgres
@pytest.mark.parametrize("when", ["before", "after"])
async def test_an_unkeyed_write_cut_is_outcome_unknown_and_says_so(
    served_bank: ServedFactory, postgres_url: str, proxy: PgProxy, when: str
) -> None:
    bank = await _proxied_bank(served_bank, postgres_url, proxy, "db")
    await _open(bank, "a", "b")
    amount = _amount()
    sprung = proxy.arm("write", when)  # type: ignore[arg-type]
    status, body = await bank.call("POST", "/transfers", {"from": "a", "to": "b", "amount": amount})
    assert sprung.is_set()
    assert (status, body["error"]) == (503, "outcome_unknown"), body
    assert "had no Idempotency-Key" in body["detail"]
    assert len(_moves(await bank.store.journal(), amount)) == (1 if when == "after" else 0)
    assert (await bank.audit())["drift"] == 0


@dataclass
class _Goal:
    """How many replies the load test waits for, and the event set once they arrived."""

    replies: int = 0
    reached: anyio.Event = field(default_factory=anyio.Event)


@pytest.mark.postgres
async def test_every_connection_cut_under_load_never_lies(
    served_bank: ServedFactory, postgres_url: str, proxy: PgProxy
) -> None:
    """A restart seen from the bank: every connection dies at once, several times, under load.

    Replies checked against the journal one by one: 200 journaled once, ``retry_later`` /
    ``deadline_exceeded`` not journaled, ``outcome_unknown`` at most once; never a 500.
    """
    bank = await _proxied_bank(served_bank, postgres_url, proxy, "db", acquire_timeout=5.0)
    accounts = [f"r{n}" for n in range(4)]
    await _open(bank, *accounts)
    replies: dict[int, tuple[int, str]] = {}
    done = anyio.Event()
    goal = _Goal()

    def answered(amount: int, status: int, error: str) -> None:
        replies[amount] = (status, error)
        if len(replies) >= goal.replies:
            goal.reached.set()

    async def client(index: int) -> None:
        position = index
        while not done.is_set():
            amount = _amount()
            position += 1
            source, target = accounts[position % 4], accounts[(position + 1) % 4]
            headers = {"Idempotency-Key": f"l-{amount}"} if amount % 2 else None
            if position % 3 == 0:
                path, body = "/transfers", {"from": source, "to": target, "amount": amount}
            else:
                path, body = f"/accounts/{source}/deposit", {"amount": amount}
            status, answer = await bank.call("POST", path, body, headers=headers)
            answered(amount, status, answer.get("error", ""))

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            for index in range(8):
                tg.start_soon(client, index)
            for _ in range(5):
                goal.replies, goal.reached = len(replies) + 40, anyio.Event()
                await goal.reached.wait()
                assert proxy.cut_all() > 0
            done.set()
    journal = await bank.store.journal()
    counts: dict[str, int] = {}
    for amount, (status, error) in replies.items():
        moves = len(_moves(journal, amount))
        assert status in (200, 503), (status, error)
        if status == 200:
            assert moves == 1, amount
        elif error in ("retry_later", "deadline_exceeded"):
            assert moves == 0, (amount, error)
        else:
            assert error == "outcome_unknown", error
            assert moves <= 1
        counts[error or "ok"] = counts.get(error or "ok", 0) + 1
    assert counts.get("ok", 0) > 100
    assert sum(v for k, v in counts.items() if k != "ok") > 0, counts
    assert (await bank.audit())["drift"] == 0


# --- timeouts and a row held by an outside session ---------------------------------------------


async def _hold_row(postgres_url: str, account: str) -> asyncpg.Connection:
    outside = await asyncpg.connect(postgres_url)
    await outside.execute("BEGIN")
    await outside.execute("SELECT 1 FROM bank_accounts WHERE id = $1 FOR UPDATE", account)
    return outside


@pytest.mark.postgres
@pytest.mark.parametrize("mode", ["db", "account"])
@pytest.mark.parametrize("setting", ["statement_timeout", "lock_timeout"])
async def test_a_row_held_outside_is_retry_later_with_nothing_applied_and_others_flow(
    served_bank: ServedFactory, postgres_url: str, mode: str, setting: str
) -> None:
    timeouts: dict[str, Any] = {setting: 0.2}
    store = PostgresStore(postgres_url, pool_size=4, **timeouts)
    bank = await served_bank(postgres_url, lock_mode=mode, store=store)
    await _open(bank, "held", "free")
    outside = await _hold_row(postgres_url, "held")
    try:
        stuck, keyed = _amount(), _amount()
        status, body = await bank.call("POST", "/accounts/held/deposit", {"amount": stuck})
        assert (status, body["error"]) == (503, "retry_later"), body
        assert "nothing was applied" in body["detail"]
        status, body = await bank.call(
            "POST",
            "/transfers",
            {"from": "free", "to": "held", "amount": keyed},
            headers={"Idempotency-Key": f"h-{keyed}"},
        )
        assert (status, body["error"]) == (503, "retry_later"), body
        # Another account is not stalled while the row stays held.
        with anyio.fail_after(5):
            status, body = await bank.call("POST", "/accounts/free/deposit", {"amount": 5})
        assert status == 200, body
        health_status, health = await bank.call("GET", "/health")
        assert (health_status, health["status"]) == (503, "degraded")
        assert "2 retry_later" in health["reason"]
    finally:
        await outside.close()
    journal = await bank.store.journal()
    assert _moves(journal, stuck) == []
    assert _moves(journal, keyed) == []
    # The key was not recorded: the same request now goes through once.
    status, body = await bank.call(
        "POST",
        "/transfers",
        {"from": "free", "to": "held", "amount": keyed},
        headers={"Idempotency-Key": f"h-{keyed}"},
    )
    assert status == 200, body
    assert len(_moves(await bank.store.journal(), keyed)) == 1
    assert (await bank.audit())["drift"] == 0


@pytest.mark.postgres
async def test_too_many_connections_is_retry_later_with_nothing_applied(
    served_bank: ServedFactory, postgres_url: str
) -> None:
    role = f"bankfault_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(postgres_url)
    schema = await admin.fetchval("SELECT current_schema()")
    await admin.execute(f"CREATE ROLE {role} LOGIN CONNECTION LIMIT 1")
    await admin.execute(f'GRANT USAGE, CREATE ON SCHEMA "{schema}" TO {role}')
    parts = urlsplit(postgres_url)
    limited = parts._replace(netloc=f"{role}@{parts.hostname}:{parts.port or 5432}").geturl()
    try:
        store = PostgresStore(limited, pool_size=2)
        bank = await served_bank(limited, lock_mode="db", store=store)
        await _open(bank, "a", "b")
        # An open unit of work holds the role's one connection (its transaction is begun by
        # its first write); the next request needs a second one, which the server refuses.
        amount = _amount()
        async with store.claim(
            "held-open", "fingerprint", client="tester", policy=KeyPolicy()
        ) as claim:
            await store.within(claim).deposit("a", 3, atomic=True)
            status, body = await bank.call("POST", "/accounts/b/deposit", {"amount": amount})
            assert (status, body["error"]) == (503, "retry_later"), body
            assert "TooManyConnectionsError" in body["detail"]
            status, body = await bank.call(
                "POST",
                "/accounts/b/deposit",
                {"amount": amount},
                headers={"Idempotency-Key": f"t-{amount}"},
            )
            assert (status, body["error"]) == (503, "retry_later"), body
        assert _moves(await bank.store.journal(), amount) == []
        await store.close()
    finally:
        await admin.execute(f"DROP OWNED BY {role}")
        await admin.execute(f"DROP ROLE {role}")
        await admin.close()


@pytest.mark.postgres
async def test_health_is_degraded_while_the_database_is_away(
    served_bank: ServedFactory, postgres_url: str, proxy: PgProxy
) -> None:
    bank = await _proxied_bank(served_bank, postgres_url, proxy, "db", acquire_timeout=2.0)
    assert (await bank.call("GET", "/health"))[1]["status"] == "ok"
    proxy.refusing = True
    proxy.cut_all()
    status, body = await bank.call("GET", "/health")
    assert (status, body["status"]) == (503, "degraded"), body
    assert body["reason"].startswith("the database is unreachable")
    status, body = await bank.call("GET", "/accounts/a")
    assert (status, body["error"]) == (503, "retry_later"), body
    proxy.refusing = False
    # Reads do not count as stalls only if they succeed; this one was refused, so health says so.
    status, body = await bank.call("GET", "/health")
    assert body["status"] == "degraded"
    assert "1 retry_later" in body["reason"]


@pytest.mark.postgres
async def test_key_and_credential_lookups_while_the_database_is_away_are_retry_later(
    served_bank: ServedFactory, postgres_url: str, proxy: PgProxy
) -> None:
    """What runs before a request's own work (the caller's API key, its Idempotency-Key records)
    fails as "nothing applied", and the same key then goes through once."""
    bank = await _proxied_bank(served_bank, postgres_url, proxy, "db", acquire_timeout=2.0)
    await _open(bank, "a")
    amount, key = _amount(), {"Idempotency-Key": f"away-{uuid.uuid4()}"}
    proxy.refusing = True
    proxy.cut_all()
    status, body = await bank.call("POST", "/accounts/a/deposit", {"amount": amount}, headers=key)
    assert (status, body["error"]) == (503, "retry_later"), body
    assert "nothing was applied" in body["detail"]
    # A token this process has not seen must be looked up in the database.
    unknown = {"Authorization": "Bearer bank_" + "0" * 43}
    status, body = await bank.call("POST", "/accounts/a/deposit", {"amount": 1}, headers=unknown)
    assert (status, body["error"]) == (503, "retry_later"), body
    proxy.refusing = False
    status, body = await bank.call("POST", "/accounts/a/deposit", {"amount": amount}, headers=key)
    assert status == 200, body
    assert len(_moves(await bank.store.journal(), amount)) == 1
    assert (await bank.audit())["drift"] == 0


# --- SQLite ------------------------------------------------------------------------------------


async def test_sqlite_locked_by_another_process_is_retry_later_with_nothing_applied(
    served_bank: ServedFactory, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'bank.db'}"
    store = SqliteStore(url, busy_timeout=0.05, attempts=2)
    bank = await served_bank(url, lock_mode="db", store=store)
    await _open(bank, "a")
    outside = sqlite3.connect(tmp_path / "bank.db", isolation_level=None)
    outside.execute("BEGIN IMMEDIATE")
    try:
        for headers in (None, {"Idempotency-Key": "s-1"}):
            amount = _amount()
            status, body = await bank.call(
                "POST", "/accounts/a/deposit", {"amount": amount}, headers=headers
            )
            assert (status, body["error"]) == (503, "retry_later"), body
            assert "nothing was applied" in body["detail"]
            assert _moves(await bank.store.journal(), amount) == []
    finally:
        outside.execute("ROLLBACK")
        outside.close()
    status, _ = await bank.call(
        "POST", "/accounts/a/deposit", {"amount": 1}, headers={"Idempotency-Key": "s-1"}
    )
    assert status == 200


async def test_a_stalled_account_gets_deadline_exceeded_and_others_flow(
    served_bank: ServedFactory,
) -> None:
    """The per-request deadline over an in-process lock wait (memory store, lock mode account)."""
    from services.bank.domain import OperationKind

    inside, release = anyio.Event(), anyio.Event()

    async def window(kind: OperationKind) -> None:
        if not inside.is_set():
            inside.set()
            await release.wait()

    from services.bank.stores.memory import MemoryStore

    store = MemoryStore(race_window=window)
    bank = await served_bank("memory", lock_mode="account", store=store, request_timeout=0.2)
    await _open(bank, "stalled", "other")
    release_at_end = release
    async with anyio.create_task_group() as tg:

        async def first() -> None:
            status, _ = await bank.call("POST", "/accounts/stalled/deposit", {"amount": 1})
            assert status == 200

        tg.start_soon(first)
        await inside.wait()
        status, body = await bank.call("POST", "/accounts/stalled/withdraw", {"amount": 2})
        assert (status, body["error"]) == (503, "deadline_exceeded"), body
        assert "nothing was applied" in body["detail"]
        status, body = await bank.call("POST", "/accounts/other/deposit", {"amount": 3})
        assert status == 200, body
        status, body = await bank.call("GET", "/health")
        assert (status, body["status"]) == (503, "degraded")
        assert "1 deadline_exceeded" in body["reason"]
        release_at_end.set()
    assert [e.amount for e in await store.journal() if e.kind != "open"] == [3, 1]
