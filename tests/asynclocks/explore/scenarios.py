"""Scenarios the explorer tests share. anyio ones run on both backends unchanged."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable

import anyio
import anyio.lowlevel
import trio
import trio.lowlevel


def marker_line(marker: str) -> int:
    """The line of this file carrying ``marker`` in a comment (traces name it)."""
    with open(__file__, encoding="utf-8") as source:
        for number, line in enumerate(source, 1):
            if line.rstrip().endswith(f"# {marker}"):
                return number
    raise LookupError(marker)


class Box:
    def __init__(self) -> None:
        self.value = 0


async def lost_update() -> None:
    box = Box()

    async def increment() -> None:
        value = box.value
        await anyio.lowlevel.checkpoint()  # WINDOW_OPENS
        box.value = value + 1  # STALE_WRITE

    async with anyio.create_task_group() as tg:
        tg.start_soon(increment)
        tg.start_soon(increment)
    assert box.value == 2, f"lost update: counter is {box.value}, expected 2"


async def lost_update_late() -> None:
    """The race needs one preemption: in the stock FIFO order the first task writes in time."""
    box = Box()

    async def increment(delay: int) -> None:
        for _ in range(delay):
            await anyio.lowlevel.checkpoint()
        value = box.value
        await anyio.lowlevel.checkpoint()
        box.value = value + 1

    async with anyio.create_task_group() as tg:
        tg.start_soon(increment, 0)
        tg.start_soon(increment, 1)
    assert box.value == 2, f"lost update: counter is {box.value}, expected 2"


def locked_counter(tasks: int, checkpoints: int = 1) -> Callable[[], Awaitable[None]]:
    async def scenario() -> None:
        box = Box()
        lock = anyio.Lock()

        async def increment() -> None:
            async with lock:
                value = box.value
                for _ in range(checkpoints):
                    await anyio.lowlevel.checkpoint()
                box.value = value + 1

        async with anyio.create_task_group() as tg:
            for _ in range(tasks):
                tg.start_soon(increment)
        assert box.value == tasks, box.value

    return scenario


locked_counter_three = locked_counter(3)


async def asyncio_lost_update() -> None:
    box = Box()

    async def increment() -> None:
        value = box.value
        await asyncio.sleep(0)
        box.value = value + 1

    async with asyncio.TaskGroup() as tg:
        tg.create_task(increment())
        tg.create_task(increment())
    assert box.value == 2, box.value


async def asyncio_locked_counter() -> None:
    box = Box()
    lock = asyncio.Lock()

    async def increment() -> None:
        async with lock:
            value = box.value
            await asyncio.sleep(0)
            box.value = value + 1

    async with asyncio.TaskGroup() as tg:
        for _ in range(3):
            tg.create_task(increment())
    assert box.value == 3, box.value


async def trio_lost_update() -> None:
    box = Box()

    async def increment() -> None:
        value = box.value
        await trio.lowlevel.checkpoint()
        box.value = value + 1

    async with trio.open_nursery() as nursery:
        nursery.start_soon(increment)
        nursery.start_soon(increment)
    assert box.value == 2, box.value


async def trio_locked_counter() -> None:
    box = Box()
    lock = trio.Lock()

    async def increment() -> None:
        async with lock:
            value = box.value
            await trio.lowlevel.checkpoint()
            box.value = value + 1

    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(increment)
    assert box.value == 3, box.value


async def lock_order_deadlock() -> None:
    first, second = anyio.Lock(), anyio.Lock()

    async def take(a: anyio.Lock, b: anyio.Lock) -> None:
        async with a:
            await anyio.sleep(3600)  # an hour of virtual time
            async with b:
                pass

    async with anyio.create_task_group() as tg:
        tg.start_soon(take, first, second, name="left")
        tg.start_soon(take, second, first, name="right")


async def asyncio_lock_order_deadlock() -> None:
    first, second = asyncio.Lock(), asyncio.Lock()

    async def take(a: asyncio.Lock, b: asyncio.Lock) -> None:
        async with a:
            await asyncio.sleep(0)
            async with b:
                pass

    async with asyncio.TaskGroup() as tg:
        tg.create_task(take(first, second), name="left")
        tg.create_task(take(second, first), name="right")


async def trio_lock_order_deadlock() -> None:
    first, second = trio.Lock(), trio.Lock()

    async def take(a: trio.Lock, b: trio.Lock) -> None:
        async with a:
            await trio.lowlevel.checkpoint()
            async with b:
                pass

    async with trio.open_nursery() as nursery:
        nursery.start_soon(take, first, second, name="left")
        nursery.start_soon(take, second, first, name="right")


async def event_never_set() -> None:
    event = anyio.Event()

    async def waiter() -> None:
        await event.wait()

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter, name="waiter")


async def long_sleeps_and_timeouts() -> None:
    """An hour of sleeping and a timeout that must fire: virtual time makes both instant."""
    event = anyio.Event()
    with anyio.move_on_after(30) as scope:
        await event.wait()
    assert scope.cancelled_caught
    await anyio.sleep(3600)
    with anyio.fail_after(10):
        await anyio.sleep(5)


async def timeout_race() -> None:
    """A worker that must finish before a deadline; the deadline fires first in virtual time."""
    done = anyio.Event()

    async def worker() -> None:
        await anyio.sleep(2)
        done.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(worker)
        with anyio.fail_after(1):
            await done.wait()


def fails_only_the_first_time() -> Callable[[], Awaitable[None]]:
    """Depends on state outside the scenario: replaying its failure does not fail again."""
    calls = itertools.count()

    async def scenario() -> None:
        await anyio.lowlevel.checkpoint()
        if next(calls) == 0:
            raise AssertionError("failed on the first run only")

    return scenario


def changing_task_count() -> Callable[[], Awaitable[None]]:
    """Each run starts a different number of tasks (as real randomness would)."""
    calls = itertools.count()

    async def scenario() -> None:
        async def nap() -> None:
            await anyio.lowlevel.checkpoint()
            await anyio.lowlevel.checkpoint()

        async with anyio.create_task_group() as tg:
            for _ in range(2 + next(calls) % 3):
                tg.start_soon(nap)

    return scenario


async def spins_forever() -> None:
    while True:  # noqa: ASYNC110 - the point: a task that never stops yielding
        await anyio.lowlevel.checkpoint()


async def needs_an_argument(x: int) -> None:
    await anyio.sleep(x)
