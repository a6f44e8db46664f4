"""The contract every lock in this project keeps, checked against the locks it stands beside.

One suite, in the style of trio's ``generic_lock_test``, runs over asyncio.Lock (asyncio only),
trio.Lock (trio only), anyio.Lock (both) and KeyedLock adapted to a single key (both). A kind
that lacks a feature (``acquire_nowait``, an owner check on ``release``) is left out of that
test by parametrization, so every collected test really runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol

import anyio
import anyio.lowlevel
import pytest
import trio
import trio.testing

from asynclocks import KeyedLock

pytestmark = pytest.mark.anyio


class ContractLock(Protocol):
    async def acquire(self) -> object: ...

    def release(self) -> None: ...

    def locked(self) -> bool: ...

    async def __aenter__(self) -> object: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None: ...


class NowaitLock(ContractLock, Protocol):
    def acquire_nowait(self) -> None: ...


class SingleKeyLock:
    """KeyedLock seen through one key, so it can stand in for an ordinary lock."""

    KEY = "the-key"

    def __init__(self) -> None:
        self.locks = KeyedLock()

    async def acquire(self) -> None:
        await self.locks.acquire(self.KEY)

    def acquire_nowait(self) -> None:
        self.locks.acquire_nowait(self.KEY)

    def release(self) -> None:
        self.locks.release(self.KEY)

    def locked(self) -> bool:
        return self.locks.locked(self.KEY)

    async def __aenter__(self) -> None:
        await self.locks(self.KEY).__aenter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.locks(self.KEY).__aexit__(exc_type, exc, tb)


@dataclass(frozen=True)
class LockKind:
    name: str
    backends: tuple[str, ...]
    make: Callable[[], ContractLock]
    # The exception acquire_nowait() raises when the lock is taken; None: no acquire_nowait.
    would_block: type[Exception] | None
    # Whether release() from a task that is not the owner raises RuntimeError.
    checks_owner: bool


KINDS = [
    LockKind("asyncio.Lock", ("asyncio",), asyncio.Lock, None, checks_owner=False),
    LockKind("trio.Lock", ("trio",), trio.Lock, trio.WouldBlock, checks_owner=True),
    LockKind("anyio.Lock", ("asyncio", "trio"), anyio.Lock, anyio.WouldBlock, checks_owner=True),
    LockKind("KeyedLock", ("asyncio", "trio"), SingleKeyLock, anyio.WouldBlock, checks_owner=True),
]


def combos(
    where: Callable[[LockKind, str], bool] = lambda kind, backend: True,
) -> pytest.MarkDecorator:
    """Parametrize a test over (lock kind, backend) pairs the kind supports and `where` keeps."""
    params = [
        pytest.param(kind, backend, id=f"{kind.name}-{backend}")
        for kind in KINDS
        for backend in kind.backends
        if where(kind, backend)
    ]
    return pytest.mark.parametrize(("kind", "anyio_backend"), params)


# ---------------------------------------------------------------- mutual exclusion


@combos()
async def test_no_update_is_lost(kind: LockKind, anyio_backend: str) -> None:
    lock = kind.make()
    state = {"value": 0}

    async def increment() -> None:
        for _ in range(10):
            async with lock:
                value = state["value"]
                await anyio.lowlevel.checkpoint()  # every other task gets to run here
                state["value"] = value + 1

    async with anyio.create_task_group() as tg:
        for _ in range(10):
            tg.start_soon(increment)
    assert state["value"] == 100
    assert not lock.locked()


@combos()
async def test_only_one_task_is_inside_at_a_time(kind: LockKind, anyio_backend: str) -> None:
    lock = kind.make()
    inside: list[int] = []
    most = 0

    async def worker(n: int) -> None:
        nonlocal most
        for _ in range(5):
            async with lock:
                inside.append(n)
                most = max(most, len(inside))
                await anyio.lowlevel.checkpoint()
                inside.remove(n)

    async with anyio.create_task_group() as tg:
        for n in range(8):
            tg.start_soon(worker, n)
    assert most == 1
    assert inside == []


# ---------------------------------------------------------------- state


@combos()
async def test_locked_follows_acquire_and_release(kind: LockKind, anyio_backend: str) -> None:
    lock = kind.make()
    assert not lock.locked()
    await lock.acquire()
    assert lock.locked()
    lock.release()
    assert not lock.locked()
    async with lock:
        assert lock.locked()
    assert not lock.locked()


@combos()
async def test_the_lock_is_released_when_the_block_raises(
    kind: LockKind, anyio_backend: str
) -> None:
    lock = kind.make()
    with pytest.raises(ZeroDivisionError):
        async with lock:
            1 / 0  # noqa: B018
    assert not lock.locked()


@combos(lambda kind, backend: kind.would_block is not None)
async def test_acquire_nowait(kind: LockKind, anyio_backend: str) -> None:
    would_block = kind.would_block
    assert would_block is not None
    lock = kind.make()
    assert isinstance(lock, SingleKeyLock | trio.Lock | anyio.Lock)
    nowait: NowaitLock = lock
    nowait.acquire_nowait()
    assert nowait.locked()
    taken, leave = anyio.Event(), anyio.Event()

    async def other_task_tries() -> None:
        with pytest.raises(would_block):
            nowait.acquire_nowait()
        taken.set()
        await leave.wait()

    async with anyio.create_task_group() as tg:
        tg.start_soon(other_task_tries)
        await taken.wait()
        leave.set()
    nowait.release()
    assert not nowait.locked()


@combos()
async def test_release_when_unlocked_raises(kind: LockKind, anyio_backend: str) -> None:
    lock = kind.make()
    with pytest.raises(RuntimeError):
        lock.release()
    assert not lock.locked()


@combos(lambda kind, backend: kind.checks_owner)
async def test_release_from_a_task_that_does_not_hold_it_raises(
    kind: LockKind, anyio_backend: str
) -> None:
    lock = kind.make()
    entered, leave = anyio.Event(), anyio.Event()

    async def holder() -> None:
        async with lock:
            entered.set()
            await leave.wait()

    async with anyio.create_task_group() as tg:
        tg.start_soon(holder)
        await entered.wait()
        with pytest.raises(RuntimeError):
            lock.release()
        assert lock.locked()
        leave.set()
    assert not lock.locked()


# ---------------------------------------------------------------- waiting


@combos()
async def test_waiters_get_the_lock_in_fifo_order(kind: LockKind, anyio_backend: str) -> None:
    lock = kind.make()
    order: list[int] = []
    await lock.acquire()

    async def waiter(n: int) -> None:
        async with lock:
            order.append(n)

    async with anyio.create_task_group() as tg:
        for n in range(5):
            tg.start_soon(waiter, n)
            await anyio.wait_all_tasks_blocked()  # n is queued before n + 1 starts
        lock.release()
    assert order == [0, 1, 2, 3, 4]
    assert not lock.locked()


@combos()
async def test_a_cancelled_waiter_gives_up_its_place(kind: LockKind, anyio_backend: str) -> None:
    lock = kind.make()
    order: list[str] = []
    await lock.acquire()
    doomed = anyio.CancelScope()

    async def waiter(name: str, scope: anyio.CancelScope) -> None:
        with scope:
            async with lock:
                order.append(name)

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter, "first", anyio.CancelScope())
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(waiter, "doomed", doomed)
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(waiter, "last", anyio.CancelScope())
        await anyio.wait_all_tasks_blocked()
        doomed.cancel()
        await anyio.wait_all_tasks_blocked()
        assert lock.locked()  # cancelling a waiter does not touch the holder
        lock.release()
    assert order == ["first", "last"]
    assert not lock.locked()


@combos()
async def test_cancelled_during_handoff_the_next_waiter_still_gets_the_lock(
    kind: LockKind, anyio_backend: str
) -> None:
    # bpo-27585 / gh-90155: the lock is handed to a waiter which is cancelled before it runs.
    # Whatever the lock does with that waiter, the next one must not be stranded.
    lock = kind.make()
    order: list[str] = []
    await lock.acquire()
    doomed = anyio.CancelScope()

    async def first() -> None:
        with doomed:
            async with lock:
                order.append("first in")
                await anyio.lowlevel.checkpoint()
                order.append("first ignored its cancellation")  # pragma: no cover

    async def second() -> None:
        async with lock:
            order.append("second in")

    with anyio.fail_after(5):  # a lost wake-up strands `second`: fail, do not hang
        async with anyio.create_task_group() as tg:
            tg.start_soon(first)
            await anyio.wait_all_tasks_blocked()
            tg.start_soon(second)
            await anyio.wait_all_tasks_blocked()
            lock.release()
            doomed.cancel()
    assert order in (["second in"], ["first in", "second in"])
    assert not lock.locked()


@combos(lambda kind, backend: backend == "asyncio")
async def test_asyncio_task_cancelled_right_after_handoff(
    kind: LockKind, anyio_backend: str
) -> None:
    # The exact asyncio race: Task.cancel() lands after the waiter's future got its result and
    # before the waiter runs. The waiter must not keep the lock and the next one must get it.
    lock = kind.make()
    entered: list[str] = []
    await lock.acquire()

    async def waiter(name: str) -> None:
        async with lock:
            entered.append(name)

    first = asyncio.create_task(waiter("first"))
    second = asyncio.create_task(waiter("second"))
    await anyio.wait_all_tasks_blocked()
    lock.release()
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    with anyio.fail_after(5):  # a lost wake-up strands `second`: fail, do not hang
        await second
    assert entered == ["second"]
    assert not lock.locked()


@combos()
async def test_a_timed_out_wait_leaves_the_lock_usable(kind: LockKind, anyio_backend: str) -> None:
    lock = kind.make()
    entered, leave = anyio.Event(), anyio.Event()

    async def holder() -> None:
        async with lock:
            entered.set()
            await leave.wait()

    async with anyio.create_task_group() as tg:
        tg.start_soon(holder)
        await entered.wait()
        with anyio.move_on_after(0) as scope:
            await lock.acquire()
        assert scope.cancelled_caught
        assert lock.locked()
        leave.set()
    assert not lock.locked()
    async with lock:
        assert lock.locked()


# ---------------------------------------------------------------- a holder that exits holding it


async def _exit_holding(lock: ContractLock) -> None:
    await lock.acquire()


@combos(lambda kind, backend: backend == "trio")
async def test_trio_waiters_of_a_holder_that_exits_holding_it_raise_broken(
    kind: LockKind, anyio_backend: str
) -> None:
    # trio.Lock's rule (trio >= 0.27): the waiter hears of the bug instead of hanging.
    lock = kind.make()
    leave = trio.Event()

    async def holder() -> None:
        await lock.acquire()
        await leave.wait()

    async def waiter() -> None:
        with pytest.raises(trio.BrokenResourceError):
            await lock.acquire()

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(holder)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(waiter)
            await trio.testing.wait_all_tasks_blocked()
            leave.set()
        with pytest.raises(trio.BrokenResourceError):
            await lock.acquire()  # and it stays broken
    assert lock.locked()


@combos(lambda kind, backend: backend == "asyncio")
async def test_asyncio_a_holder_that_exits_holding_it_leaves_it_locked(
    kind: LockKind, anyio_backend: str
) -> None:
    lock = kind.make()
    async with anyio.create_task_group() as tg:
        tg.start_soon(_exit_holding, lock)
    assert lock.locked()
    with anyio.move_on_after(0) as scope:
        await lock.acquire()
    assert scope.cancelled_caught
