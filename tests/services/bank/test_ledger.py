"""The ledger: lock mode -> unit of work -> store, on asyncio and trio (it needs no aiohttp)."""

from __future__ import annotations

import anyio
import pytest

from services.bank.domain import (
    AccountNotFound,
    ModeSwitchPerWorker,
    SameAccount,
    UnsupportedLockMode,
)
from services.bank.ledger import Ledger
from services.bank.locking import Locking, strategies_for
from services.bank.ports import StoredResponse, UnitOfWork
from services.bank.stores.memory import MemoryStore

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    backend: str = request.param
    return backend


class _Work:
    """A unit of work that records nothing; the test only follows where it is passed."""

    async def save(self, response: StoredResponse) -> None:
        raise AssertionError("the ledger never saves: the web layer does, with the response")


class _ViewedStore(MemoryStore):
    """A memory store that records every unit of work it is asked to run within."""

    def __init__(self, *, supports_atomic: bool = True) -> None:
        super().__init__()
        self.views: list[UnitOfWork] = []
        self._atomic = supports_atomic

    @property
    def supports_atomic(self) -> bool:
        return self._atomic

    def within(self, work: UnitOfWork) -> MemoryStore:
        self.views.append(work)
        return self


async def _ledger(mode: str = "none", *, workers: int = 1) -> Ledger:
    store = MemoryStore()
    ledger = Ledger(store, Locking(mode), workers=workers)
    for account in ("alice", "bob"):
        await ledger.open_account(account, 1_000)
    return ledger


@pytest.mark.parametrize("mode", ["global", "account"])
async def test_opposite_transfers_keep_the_books_under_a_locking_mode(mode: str) -> None:
    # (Lock mode none losing money is shown with a held race window in test_locking.py.)
    ledger = await _ledger(mode)

    async def move(source: str, target: str) -> None:
        for _ in range(10):
            await ledger.transfer(source, target, 7)

    async with anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(move, "alice", "bob")
            tg.start_soon(move, "bob", "alice")
    assert (await ledger.balance("alice"), await ledger.balance("bob")) == (1_000, 1_000)
    assert (await ledger.audit()).drift == 0
    assert ledger.locking.active == 0


async def test_each_operation_returns_what_the_store_wrote() -> None:
    ledger = await _ledger("account")
    assert await ledger.deposit("alice", 5) == 1_005
    assert await ledger.withdraw("alice", 10) == 995
    assert await ledger.transfer("alice", "bob", 95) == (900, 1_095)
    audit = await ledger.audit()
    assert (audit.accounts, audit.total, audit.drift) == (2, 1_995, 0)


async def test_a_transfer_to_itself_is_refused_before_any_lock() -> None:
    ledger = await _ledger("global")
    # This task holds the global lock: a transfer that reached the lock mode could not finish.
    with anyio.fail_after(5):
        async with ledger.locking.guard("alice"):
            with pytest.raises(SameAccount, match="cannot transfer from account 'alice' to itse"):
                await ledger.transfer("alice", "alice", 1)
            assert ledger.locking.active == 1


async def test_a_unit_of_work_reaches_the_store_of_every_write() -> None:
    store = _ViewedStore()
    ledger = Ledger(store, Locking("account"))
    work = _Work()
    await ledger.open_account("alice", 10, work=work)
    await ledger.open_account("bob", 10, work=work)
    await ledger.deposit("alice", 1, work=work)
    await ledger.withdraw("alice", 1, work=work)
    await ledger.transfer("alice", "bob", 1, work=work)
    assert store.views == [work] * 5
    # Without one, the store itself runs the operation.
    await ledger.deposit("alice", 1)
    assert len(store.views) == 5
    assert await ledger.balance("alice") == 10


async def test_a_missing_account_is_the_stores_refusal() -> None:
    ledger = await _ledger("account")
    with pytest.raises(AccountNotFound):
        await ledger.deposit("carol", 1)
    assert ledger.locking.active == 0


async def test_switching_modes() -> None:
    ledger = await _ledger("none")
    assert await ledger.switch_mode("account") == "account"
    assert ledger.locking.mode == "account"
    with pytest.raises(ValueError, match="unknown lock mode 'fast'"):
        await ledger.switch_mode("fast")


async def test_a_switch_that_would_reach_one_worker_of_several_is_refused() -> None:
    ledger = await _ledger("none", workers=3)
    with pytest.raises(ModeSwitchPerWorker, match="runs 3 worker processes"):
        await ledger.switch_mode("account")
    assert await ledger.switch_mode("none") == "none"  # no switch at all: nothing to refuse


async def test_a_mode_the_store_cannot_provide_is_refused() -> None:
    store = _ViewedStore(supports_atomic=False)
    ledger = Ledger(store, Locking("none", strategies_for("sqlite")))
    with pytest.raises(UnsupportedLockMode, match="lock mode 'db' needs a store that locks"):
        await ledger.switch_mode("db")
    assert ledger.locking.mode == "none"
    with pytest.raises(ValueError, match="lock mode 'db' is not supported by this store"):
        Ledger(store, Locking("db", strategies_for("sqlite")))
