from __future__ import annotations

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
from services.bank.stores import open_store
from services.bank.stores.memory import MemoryStore

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    # The memory store only uses anyio, so it is tested on both backends.
    backend: str = request.param
    return backend


async def test_open_read_and_move_money() -> None:
    store = MemoryStore()
    assert await store.create_account("a", 100) == 100
    assert await store.create_account("b", 0) == 0
    assert await store.deposit("a", 50) == 150
    assert await store.withdraw("a", 30) == 120
    assert await store.transfer("a", "b", 20) == (100, 20)
    assert await store.balance("a") == 100
    assert await store.balance("b") == 20
    assert await store.audit() == Audit(accounts=2, total=120, expected=120, negative_accounts=())
    assert await store.journal() == [
        JournalEntry(1, "open", "a", 100),
        JournalEntry(2, "open", "b", 0),
        JournalEntry(3, "deposit", "a", 50),
        JournalEntry(4, "withdraw", "a", 30),
        JournalEntry(5, "transfer", "a", 20, "b"),
    ]
    assert [entry.seq for entry in await store.journal(since=2, limit=2)] == [3, 4]
    assert [entry.money_delta for entry in await store.journal()] == [100, 0, 50, -30, 0]


async def test_refusals_change_nothing() -> None:
    store = MemoryStore()
    await store.create_account("a", 10)
    await store.create_account("b", 5)
    before = (await store.audit(), await store.journal())
    with pytest.raises(AccountExists, match="account 'a' already exists"):
        await store.create_account("a", 99)
    with pytest.raises(AccountNotFound, match="account 'zz' does not exist"):
        await store.balance("zz")
    with pytest.raises(AccountNotFound, match="account 'zz' does not exist"):
        await store.deposit("zz", 1)
    with pytest.raises(InsufficientFunds, match="'a' holds 10 cents, which does not cover 11"):
        await store.withdraw("a", 11)
    with pytest.raises(InsufficientFunds, match="account 'b' holds 5 cents"):
        await store.transfer("b", "a", 6)
    with pytest.raises(AccountNotFound, match="'nope'"):
        await store.transfer("a", "nope", 1)
    with pytest.raises(AccountNotFound, match="'nope'"):
        await store.transfer("nope", "a", 1)
    with pytest.raises(SameAccount, match="cannot transfer from account 'a' to itself"):
        await store.transfer("a", "a", 1)
    assert (await store.audit(), await store.journal()) == before
    assert await store.balance("a") == 10


async def test_audit_lists_negative_accounts_and_drift() -> None:
    store = MemoryStore()
    await store.create_account("b", 3)
    await store.create_account("a", 1)
    # Only a race can make a balance negative; reach in to stage one (through the write the
    # operations use, which keeps the audit's running totals).
    store._write("a", -4)
    store._write("b", -1)
    audit = await store.audit()
    assert audit == await store.audit(full_scan=True)
    assert audit.negative_accounts == (("a", -4), ("b", -1))
    assert audit.drift == -5 - 4
    assert audit.to_json() == {
        "accounts": 2,
        "total": -5,
        "expected": 4,
        "drift": -9,
        "negative_accounts": [{"id": "a", "balance": -4}, {"id": "b", "balance": -1}],
    }


async def test_lost_update_by_construction_with_a_bare_checkpoint() -> None:
    # Every task reads the balance, then yields at the checkpoint; all of them read before any
    # writes, so each write overwrites the others': 20 deposits acknowledged, one applied.
    store = MemoryStore(io_delay=0)
    await store.create_account("a", 0)
    async with anyio.create_task_group() as tg:
        for _ in range(20):
            tg.start_soon(store.deposit, "a", 10)
    audit = await store.audit()
    assert await store.balance("a") == 10
    assert audit.expected == 200
    assert audit.drift == -190


async def test_atomic_operations_skip_the_window() -> None:
    store = MemoryStore(io_delay=0)
    await store.create_account("a", 0)
    await store.create_account("b", 1000)
    async with anyio.create_task_group() as tg:
        for _ in range(20):
            tg.start_soon(lambda: store.deposit("a", 10, atomic=True))
            tg.start_soon(lambda: store.transfer("b", "a", 5, atomic=True))
    assert await store.balance("a") == 300
    assert (await store.audit()).drift == 0


async def test_stale_read_overdraws_without_a_lock() -> None:
    # Two withdrawals of 60 from 100 both see 100 and both are acknowledged: 120 paid out.
    store = MemoryStore()
    await store.create_account("a", 100)
    async with anyio.create_task_group() as tg:
        tg.start_soon(store.withdraw, "a", 60)
        tg.start_soon(store.withdraw, "a", 60)
    audit = await store.audit()
    assert audit.expected == -20
    assert audit.total == 40
    assert audit.drift == 60


async def test_race_window_hook_holds_the_operation_between_read_and_write() -> None:
    entered = anyio.Event()
    release = anyio.Event()
    kinds: list[OperationKind] = []

    async def window(kind: OperationKind) -> None:
        kinds.append(kind)
        entered.set()
        await release.wait()

    store = MemoryStore(race_window=window)
    await store.create_account("a", 5)
    await store.create_account("b", 0)
    async with anyio.create_task_group() as tg:
        tg.start_soon(store.transfer, "a", "b", 5)
        await entered.wait()
        assert (await store.balance("a"), await store.balance("b")) == (5, 0)
        release.set()
    assert (await store.balance("a"), await store.balance("b")) == (0, 5)
    assert kinds == ["transfer"]


async def test_cancelled_in_the_window_applies_nothing() -> None:
    entered = anyio.Event()

    async def window(kind: OperationKind) -> None:
        entered.set()
        await anyio.sleep_forever()

    store = MemoryStore(race_window=window)
    await store.create_account("a", 5)
    await store.create_account("b", 0)
    async with anyio.create_task_group() as tg:
        tg.start_soon(store.transfer, "a", "b", 5)
        await entered.wait()
        tg.cancel_scope.cancel()
    assert (await store.balance("a"), await store.balance("b")) == (5, 0)
    assert len(await store.journal()) == 2
    assert (await store.audit()).drift == 0


@pytest.mark.parametrize(
    ("delay", "error", "match"),
    [
        (-1, ValueError, "io_delay must be a finite number of seconds >= 0, got -1"),
        (float("nan"), ValueError, "got nan"),
        (float("inf"), ValueError, "got inf"),
        ("1", TypeError, "io_delay must be a number of seconds, got '1'"),
        (True, TypeError, "got True"),
    ],
)
def test_bad_io_delay(delay: object, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        MemoryStore(io_delay=delay)  # type: ignore[arg-type]


def test_open_store() -> None:
    store = open_store("memory", io_delay=0.5)
    assert isinstance(store, MemoryStore)
    assert store.io_delay == 0.5
    assert store.name == "memory"
    with pytest.raises(ValueError, match="unknown store 'redis://x'; expected 'memory'"):
        open_store("redis://x")
