"""04: one backend-neutral version with ``anyio.Lock``, run on asyncio and on trio.

Library code often cannot choose its event loop. anyio gives one API over both: a task group instead
of ``gather``/nurseries, ``anyio.lowlevel.checkpoint()`` as the await in the race window, and
``anyio.Lock`` as the fix. The same two functions below run unchanged on both backends, and on both
the unprotected version loses every update but one (all tasks are started in the same scheduling
round and read before anyone writes) while the locked version loses none.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager, nullcontext
from typing import Any

import anyio
import anyio.lowlevel

BACKENDS = ("asyncio", "trio")


async def count(tasks: int, lock: AbstractAsyncContextManager[Any]) -> int:
    """Run ``tasks`` increments of one counter inside ``lock``; returns the final value."""
    value = 0

    async def increment() -> None:
        nonlocal value
        async with lock:
            read = value
            await anyio.lowlevel.checkpoint()  # the race window
            value = read + 1

    async with anyio.create_task_group() as group:
        for _ in range(tasks):
            group.start_soon(increment)
    return value


async def lost_update(tasks: int) -> int:
    """Unprotected: ``nullcontext()`` neither locks nor yields. Returns 1 on either backend."""
    return await count(tasks, nullcontext())


async def locked_update(tasks: int) -> int:
    """The same code holding an ``anyio.Lock``. Returns ``tasks`` on either backend."""
    return await count(tasks, anyio.Lock())


def main() -> None:
    tasks = 100
    print(f"{tasks} tasks each adding 1 to a shared counter, the same code on both backends")
    for backend in BACKENDS:
        racy = anyio.run(lost_update, tasks, backend=backend)
        locked = anyio.run(locked_update, tasks, backend=backend)
        print(f"{backend:>7}: no lock -> {racy} (lost {tasks - racy}); anyio.Lock -> {locked}")


if __name__ == "__main__":
    main()
