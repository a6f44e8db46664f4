"""KeyedLock.wait_idle(): wait until no key is held, on asyncio and trio."""

from __future__ import annotations

import asyncio

import anyio
import anyio.lowlevel
import pytest
import trio
import trio.testing

from asynclocks import KeyedLock

pytestmark = pytest.mark.anyio


async def _wait_idle_then(locks: KeyedLock, log: list[str], name: str) -> None:
    await locks.wait_idle()
    log.append(f"{name} idle with {len(locks)} keys held")


async def test_wait_idle_returns_once_the_last_key_is_released() -> None:
    locks = KeyedLock()
    log: list[str] = []
    await locks.acquire("a")
    await locks.acquire("b")
    async with anyio.create_task_group() as tg:
        tg.start_soon(_wait_idle_then, locks, log, "first")
        tg.start_soon(_wait_idle_then, locks, log, "second")
        await anyio.wait_all_tasks_blocked()
        locks.release("a")
        await anyio.wait_all_tasks_blocked()
        assert log == []  # "b" is still held
        locks.release("b")
    assert sorted(log) == ["first idle with 0 keys held", "second idle with 0 keys held"]
    assert locks._idle == []


async def test_a_key_handed_from_task_to_task_keeps_the_lock_busy() -> None:
    locks = KeyedLock()
    log: list[str] = []

    async def worker(n: int) -> None:
        async with locks("k"):
            log.append(f"worker {n}")
            await anyio.lowlevel.checkpoint()

    await locks.acquire("k")
    async with anyio.create_task_group() as tg:
        for n in range(3):
            tg.start_soon(worker, n)
            await anyio.wait_all_tasks_blocked()  # n queues before n + 1 starts
        tg.start_soon(_wait_idle_then, locks, log, "shutdown")
        await anyio.wait_all_tasks_blocked()
        locks.release("k")
    assert log == ["worker 0", "worker 1", "worker 2", "shutdown idle with 0 keys held"]


async def test_wait_idle_sees_every_way_a_key_is_freed() -> None:
    # The uncontended `async with` exit, many()'s exit and release() free keys by different
    # paths.
    locks = KeyedLock()
    log: list[str] = []
    in_block, leave = anyio.Event(), anyio.Event()

    async def hold_with_block() -> None:
        async with locks("block"):
            in_block.set()
            await leave.wait()

    async with anyio.create_task_group() as tg:
        tg.start_soon(hold_with_block)
        await in_block.wait()
        await locks.acquire("released")
        many_in, many_leave = anyio.Event(), anyio.Event()

        async def hold_many() -> None:
            async with locks.many("m1", "m2"):
                many_in.set()
                await many_leave.wait()

        tg.start_soon(hold_many)
        await many_in.wait()
        tg.start_soon(_wait_idle_then, locks, log, "idle")
        for step in ("block", "many", "released"):
            await anyio.wait_all_tasks_blocked()
            assert log == []
            if step == "block":
                leave.set()
            elif step == "many":
                many_leave.set()
            else:
                locks.release("released")
    assert log == ["idle idle with 0 keys held"]


async def test_a_cancelled_wait_idle_leaves_no_trace() -> None:
    locks = KeyedLock()
    await locks.acquire("k")
    with anyio.move_on_after(0) as scope:
        await locks.wait_idle()
    assert scope.cancelled_caught
    assert locks._idle == []
    locks.release("k")
    assert len(locks) == 0


async def test_wait_idle_after_an_idle_moment_is_not_woken_twice() -> None:
    locks = KeyedLock()
    log: list[str] = []
    for round_ in range(2):
        await locks.acquire("k")
        async with anyio.create_task_group() as tg:
            tg.start_soon(_wait_idle_then, locks, log, f"round {round_}")
            await anyio.wait_all_tasks_blocked()
            locks.release("k")
    assert log == ["round 0 idle with 0 keys held", "round 1 idle with 0 keys held"]


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_asyncio_wait_idle_on_an_idle_lock_does_not_yield(anyio_backend: str) -> None:
    locks = KeyedLock()
    ran: list[str] = []

    async def other() -> None:
        ran.append("other")

    task = asyncio.create_task(other())
    await locks.wait_idle()
    assert ran == []  # like asyncio.Event.wait() on a set event
    await task


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_trio_wait_idle_is_a_checkpoint(anyio_backend: str) -> None:
    locks = KeyedLock()
    with trio.testing.assert_checkpoints():
        await locks.wait_idle()  # like trio.Event.wait() on a set event
    with trio.CancelScope() as scope:
        scope.cancel()
        with pytest.raises(trio.Cancelled):
            await locks.wait_idle()


def test_wait_idle_outside_any_event_loop_is_an_error() -> None:
    coro = KeyedLock().wait_idle()
    with pytest.raises(RuntimeError, match="inside an asyncio task or a trio task"):
        coro.send(None)
