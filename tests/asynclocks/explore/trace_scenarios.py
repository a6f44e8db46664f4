"""Scenarios whose traces and deadlock reports show wake-ups, cancellations, timeouts, ends."""

from __future__ import annotations

import asyncio
import collections

import anyio
import anyio.lowlevel
import trio
import trio.lowlevel


class Done(Exception):
    """Raised at the end of a scenario so that its (only) schedule is reported with a trace."""


async def handoff() -> None:
    """A lock handed from one task to another, an event set, a value returned."""
    lock = anyio.Lock()
    ready = anyio.Event()

    async def first() -> int:
        async with lock:
            await anyio.sleep(0.25)  # HOLDING
        return 42

    async def second() -> str:
        await anyio.lowlevel.checkpoint()
        async with lock:  # WAITS_FOR_LOCK
            ready.set()
        return "second done"

    async def third() -> None:
        await ready.wait()  # WAITS_FOR_EVENT

    async with anyio.create_task_group() as tg:
        tg.start_soon(first)
        tg.start_soon(second)
        tg.start_soon(third)
    raise Done("the end")


async def cancel_and_timeout() -> None:
    """A task cancelled by its task group, then a deadline that expires (the scenario raises)."""
    never = anyio.Event()

    async def doomed() -> None:
        await anyio.sleep(10)  # DOOMED

    async def impatient() -> None:
        with anyio.fail_after(0.5):
            await never.wait()  # IMPATIENT

    async with anyio.create_task_group() as tg:
        tg.start_soon(doomed)
        await anyio.sleep(0.1)
        tg.cancel_scope.cancel()
    async with anyio.create_task_group() as tg:
        tg.start_soon(impatient)


async def leaked_semaphore() -> None:
    """A permit taken by a task that finishes without releasing it."""
    pool = anyio.Semaphore(1)

    async def leak() -> None:
        await pool.acquire()

    async def want() -> None:
        await anyio.lowlevel.checkpoint()
        await pool.acquire()  # WANTS_PERMIT

    async with anyio.create_task_group() as tg:
        tg.start_soon(leak)
        tg.start_soon(want)


async def handed_over_semaphore() -> None:
    """anyio's fast_acquire semaphore hands a released permit to the task parked on it, which
    finishes without releasing it."""
    pool = anyio.Semaphore(1, fast_acquire=True)

    async def first() -> None:
        await pool.acquire()
        await anyio.sleep(1)
        pool.release()

    async def second() -> None:
        await anyio.lowlevel.checkpoint()
        await pool.acquire()  # parked until first's release hands its permit over

    async def third() -> None:
        await anyio.sleep(2)
        await pool.acquire()  # WANTS_HANDED_PERMIT

    async with anyio.create_task_group() as tg:
        tg.start_soon(first)
        tg.start_soon(second)
        tg.start_soon(third)


async def asyncio_leaked_semaphore() -> None:
    """asyncio's own semaphore, leaked the same way."""
    pool = asyncio.Semaphore(1)

    async def leak() -> None:
        await pool.acquire()

    async def want() -> None:
        await asyncio.sleep(0)
        await pool.acquire()

    async with asyncio.TaskGroup() as tg:
        tg.create_task(leak())
        tg.create_task(want())


async def asyncio_lock_held_by_finished() -> None:
    """An asyncio.Lock acquired by a task that returns without releasing it."""
    lock = asyncio.Lock()

    async def leak() -> None:
        await lock.acquire()

    async def want() -> None:
        await asyncio.sleep(0)
        async with lock:
            pass

    async with asyncio.TaskGroup() as tg:
        tg.create_task(leak())
        tg.create_task(want())


async def many_primitives() -> None:
    """Each task blocked in another primitive: lock, event, limiter, stream, condition."""
    lock = anyio.Lock()
    never = anyio.Event()
    limiter = anyio.CapacityLimiter(1)
    send, receive = anyio.create_memory_object_stream[int](0)
    condition = anyio.Condition()

    async def holder() -> None:
        async with lock:
            await never.wait()

    async def locker() -> None:
        await anyio.lowlevel.checkpoint()
        async with lock:
            pass

    async def borrower() -> None:
        await limiter.acquire()
        await receive.receive()

    async def limited() -> None:
        await anyio.lowlevel.checkpoint()
        await limiter.acquire()

    async def waiter() -> None:
        async with condition:
            await condition.wait()

    async with send, receive, anyio.create_task_group() as tg:
        for task in (holder, locker, borrower, limited, waiter):
            tg.start_soon(task)
        await never.wait()


class PortedLock:
    """A lock written in the user's own code that forgets to wake its first waiter."""

    def __init__(self) -> None:
        self._locked = False
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    def locked(self) -> bool:
        return self._locked

    async def acquire(self) -> None:
        if not self._locked:
            self._locked = True
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        await waiter
        self._locked = True

    def release(self) -> None:
        self._locked = False  # the bug: the first waiter is never woken


async def lost_wakeup() -> None:
    lock = PortedLock()

    async def first() -> None:
        await lock.acquire()
        await asyncio.sleep(0)
        lock.release()

    async def second() -> None:
        await lock.acquire()

    async with asyncio.TaskGroup() as tg:
        tg.create_task(first())
        tg.create_task(second())


async def asyncio_returns() -> None:
    """Tasks of asyncio's own TaskGroup: their return values are the tasks' results."""

    async def answer() -> int:
        await asyncio.sleep(0)
        return 42

    async def greeting() -> str:
        await asyncio.sleep(0)
        return "hello"

    async with asyncio.TaskGroup() as tg:
        tg.create_task(answer())
        tg.create_task(greeting())
    raise Done("the end")


async def trio_returns() -> None:
    """Tasks of a trio nursery: trio hands each one's outcome to its runner."""

    async def answer() -> int:
        await trio.lowlevel.checkpoint()
        return 42

    async def greeting() -> str:
        await trio.lowlevel.checkpoint()
        return "hello"

    async with trio.open_nursery() as nursery:
        nursery.start_soon(answer)
        nursery.start_soon(greeting)
    raise Done("the end")


async def asyncio_timeouts() -> None:
    """asyncio.timeout and asyncio.wait_for, each expiring on an event nobody sets."""
    never = asyncio.Event()

    async def with_timeout() -> None:
        async with asyncio.timeout(0.5):
            await never.wait()

    async def with_wait_for() -> str:
        try:
            await asyncio.wait_for(never.wait(), 0.25)
        except TimeoutError:
            return "timed out"
        return "set"

    async with asyncio.TaskGroup() as tg:
        tg.create_task(with_timeout())
        tg.create_task(with_wait_for())


async def lock_held_by_finished() -> None:
    """An anyio lock taken by a task that returns without releasing it."""
    lock = anyio.Lock()

    async def leak() -> None:
        await lock.acquire()

    async def want() -> None:
        await anyio.lowlevel.checkpoint()
        async with lock:  # WANTS_LOCK
            pass

    async with anyio.create_task_group() as tg:
        tg.start_soon(leak)
        tg.start_soon(want)
