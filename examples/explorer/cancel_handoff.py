"""A lock that hands itself to the next waiter, and a waiter cancelled after it was woken.

No task here cancels anything: ``--cancel auto`` makes "cancel this task at this await" a choice
of the search, and it finds the one point where a cancellation leaves the lock locked forever.
"""

import asyncio
from collections import deque


class HandoffLock:
    def __init__(self, fixed: bool = False) -> None:
        self.fixed = fixed
        self.locked = False
        self.waiters: deque[asyncio.Future[None]] = deque()

    async def acquire(self) -> None:
        if not self.locked:
            self.locked = True
            return
        waiter = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        try:
            await waiter  # release() hands the lock over here
        except asyncio.CancelledError:
            if waiter in self.waiters:
                self.waiters.remove(waiter)
            elif self.fixed and not waiter.cancelled():
                self.release()  # woken (so the owner), then cancelled: pass the lock on
            raise

    def release(self) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the lock stays locked: it now belongs to the waiter
                return
        self.locked = False


async def two_users(lock: HandoffLock) -> None:
    async def user() -> None:
        await lock.acquire()
        try:
            await asyncio.sleep(0)
        finally:
            lock.release()

    async with asyncio.TaskGroup() as tg:
        tg.create_task(user())
        tg.create_task(user())
    assert not lock.locked, "the lock is locked and nobody holds it"


async def scenario() -> None:
    await two_users(HandoffLock())


async def scenario_fixed() -> None:
    await two_users(HandoffLock(fixed=True))
