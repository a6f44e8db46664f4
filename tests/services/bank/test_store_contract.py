"""The Store contract, run against every store: memory, SQLite and PostgreSQL.

The durable stores also keep their books across a restart and share them between two store
objects (as two worker processes would), where only ``atomic=True`` keeps the money right.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio
import pytest

from services.bank.domain import (
    AccountExists,
    AccountNotFound,
    Audit,
    InsufficientFunds,
    JournalEntry,
    OperationKind,
    SameAccount,
)
from services.bank.ports import Store
from services.bank.stores.memory import MemoryStore
from services.bank.stores.postgres import PostgresStore
from services.bank.stores.sqlite import SqliteStore

pytestmark = pytest.mark.anyio

StoreFactory = Callable[..., Awaitable[Store]]

ALL_STORES = ["memory", "sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
DURABLE_STORES = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


def _url(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if kind == "memory":
        return "memory"
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'bank.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
async def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreFactory]:
    """``await make_store(**options)``: an opened store of the parametrized kind, all of one
    test's stores on the same database; closed after the test."""
    url = _url(request.param, request, tmp_path)
    async with AsyncExitStack() as stack:

        async def factory(**options: Any) -> Store:
            store: Store
            if url == "memory":
                store = MemoryStore(**options)
            elif url.startswith("sqlite"):
                store = SqliteStore(url, **options)
            else:
                store = PostgresStore(url, pool_size=options.pop("pool_size", 4), **options)
            await store.open()
            stack.push_async_callback(store.close)
            return store

        yield factory


def _stores(kinds: list[Any]) -> pytest.MarkDecorator:
    return pytest.mark.parametrize("make_store", kinds, indirect=True)


class Barrier:
    """A race window that parks operations until ``expected`` of them are inside."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.inside = 0
        self.release = anyio.Event()
        self.entered = anyio.Event()

    async def __call__(self, kind: OperationKind) -> None:
        self.inside += 1
        self.entered.set()
        if self.inside >= self.expected:
            self.release.set()
        await self.release.wait()


@_stores(ALL_STORES)
async def test_open_read_and_move_money(make_store: StoreFactory) -> None:
    store = await make_store()
    assert await store.create_account("a", 100) == 100
    assert await store.create_account("b", 0) == 0
    assert await store.deposit("a", 50) == 150
    assert await store.withdraw("a", 30) == 120
    assert await store.transfer("a", "b", 20) == (100, 20)
    assert await store.deposit("b", 5, atomic=True) == 25
    assert await store.withdraw("b", 5, atomic=True) == 20
    assert await store.transfer("b", "a", 10, atomic=True) == (10, 110)
    assert (await store.balance("a"), await store.balance("b")) == (110, 10)
    assert await store.audit() == Audit(accounts=2, total=120, expected=120, negative_accounts=())
    assert await store.journal() == [
        JournalEntry(1, "open", "a", 100),
        JournalEntry(2, "open", "b", 0),
        JournalEntry(3, "deposit", "a", 50),
        JournalEntry(4, "withdraw", "a", 30),
        JournalEntry(5, "transfer", "a", 20, "b"),
        JournalEntry(6, "deposit", "b", 5),
        JournalEntry(7, "withdraw", "b", 5),
        JournalEntry(8, "transfer", "b", 10, "a"),
    ]
    assert [entry.seq for entry in await store.journal(since=2, limit=2)] == [3, 4]


@_stores(ALL_STORES)
@pytest.mark.parametrize("atomic", [False, True])
async def test_refusals_change_nothing(make_store: StoreFactory, atomic: bool) -> None:
    store = await make_store()
    await store.create_account("a", 10)
    await store.create_account("b", 5)
    before = (await store.audit(), await store.journal())
    with pytest.raises(AccountExists, match="account 'a' already exists"):
        await store.create_account("a", 99)
    with pytest.raises(AccountNotFound, match="account 'zz' does not exist"):
        await store.balance("zz")
    with pytest.raises(AccountNotFound, match="account 'zz' does not exist"):
        await store.deposit("zz", 1, atomic=atomic)
    with pytest.raises(AccountNotFound, match="account 'zz' does not exist"):
        await store.withdraw("zz", 1, atomic=atomic)
    with pytest.raises(InsufficientFunds, match="'a' holds 10 cents, which does not cover 11"):
        await store.withdraw("a", 11, atomic=atomic)
    with pytest.raises(InsufficientFunds, match="account 'b' holds 5 cents"):
        await store.transfer("b", "a", 6, atomic=atomic)
    with pytest.raises(AccountNotFound, match="'nope'"):
        await store.transfer("a", "nope", 1, atomic=atomic)
    with pytest.raises(AccountNotFound, match="'nope'"):
        await store.transfer("nope", "a", 1, atomic=atomic)
    with pytest.raises(SameAccount, match="cannot transfer from account 'a' to itself"):
        await store.transfer("a", "a", 1, atomic=atomic)
    assert (await store.audit(), await store.journal()) == before


@_stores(ALL_STORES)
async def test_overlapping_reads_lose_updates_unless_atomic(make_store: StoreFactory) -> None:
    # Five deposits all read 0 before any of them writes: four credits are lost.
    window = Barrier(5)
    store = await make_store(race_window=window)
    await store.create_account("a", 0)
    async with anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(lambda: store.deposit("a", 10))
    assert await store.balance("a") == 10
    audit = await store.audit()
    assert (audit.expected, audit.drift) == (50, -40)

    # The same with atomic=True: the store never enters the window and loses nothing.
    async with anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(lambda: store.deposit("a", 10, atomic=True))
    assert window.inside == 5
    assert await store.balance("a") == 60
    assert (await store.audit()).drift == -40


@_stores(ALL_STORES)
async def test_atomic_operations_keep_the_books_under_contention(make_store: StoreFactory) -> None:
    store = await make_store()
    await store.create_account("a", 100)
    await store.create_account("b", 100)
    refused = 0

    async def withdraw() -> None:
        nonlocal refused
        try:
            await store.withdraw("a", 30, atomic=True)
        except InsufficientFunds:
            refused += 1

    async def transfer(source: str, target: str) -> None:
        # Refused when the withdrawals got there first; the books hold either way.
        with contextlib.suppress(InsufficientFunds):
            await store.transfer(source, target, 7, atomic=True)

    async with anyio.create_task_group() as tg:
        for _ in range(10):
            tg.start_soon(withdraw)
        for _ in range(10):
            # Opposite directions at once: the row locks are taken in id order, no deadlock.
            tg.start_soon(transfer, "b", "a")
            tg.start_soon(transfer, "a", "b")
            tg.start_soon(lambda: store.deposit("b", 1, atomic=True))
    audit = await store.audit()
    assert audit.drift == 0
    assert audit.negative_accounts == ()
    # 'a' holds at most 100 + 70 received, at least 100 - 70 sent: 1 to 5 withdrawals are paid.
    assert 5 <= refused <= 9
    assert audit.total == 200 + 10 - 30 * (10 - refused)


@_stores(ALL_STORES)
async def test_a_request_cancelled_in_its_window_applies_nothing(make_store: StoreFactory) -> None:
    window = Barrier(2)  # never reached by one transfer: it stays parked until cancelled
    store = await make_store(race_window=window)
    await store.create_account("a", 50)
    await store.create_account("b", 0)
    before = (await store.audit(), await store.journal())
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: store.transfer("a", "b", 20))
        await window.entered.wait()
        tg.cancel_scope.cancel()
    assert window.inside == 1
    assert (await store.audit(), await store.journal()) == before
    assert (await store.balance("a"), await store.balance("b")) == (50, 0)


@_stores(DURABLE_STORES)
async def test_the_books_survive_a_restart(make_store: StoreFactory) -> None:
    first = await make_store()
    await first.create_account("a", 100)
    await first.create_account("b", 0)
    await first.transfer("a", "b", 40, atomic=True)
    await first.withdraw("a", 10)
    books = (await first.audit(), await first.journal())
    await first.close()
    # Opening again re-runs the schema creation, which must leave the data alone.
    second = await make_store()
    assert (await second.audit(), await second.journal()) == books
    assert (await second.balance("a"), await second.balance("b")) == (50, 40)


@_stores(DURABLE_STORES)
async def test_two_processes_race_unless_the_database_isolates(make_store: StoreFactory) -> None:
    # Two store objects on one database stand for two worker processes: whatever lock each
    # holds in its own process, both read the balance before either writes.
    window = Barrier(2)
    one = await make_store(race_window=window)
    two = await make_store(race_window=window)
    await one.create_account("a", 100)
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: one.withdraw("a", 60))
        tg.start_soon(lambda: two.withdraw("a", 60))
    # Both saw 100, both paid out 60: the bank handed out 120 from 100.
    assert await one.balance("a") == 40
    assert (await two.audit()).drift == 60  # 40 held, 100 - 120 = -20 expected

    await one.create_account("b", 100)
    outcomes: list[str] = []

    async def withdraw(store: Store) -> None:
        try:
            await store.withdraw("b", 60, atomic=True)
            outcomes.append("paid")
        except InsufficientFunds:
            outcomes.append("refused")

    async with anyio.create_task_group() as tg:
        tg.start_soon(withdraw, one)
        tg.start_soon(withdraw, two)
    assert sorted(outcomes) == ["paid", "refused"]
    assert await two.balance("b") == 40
    assert (await one.audit()).drift == 60
