"""03: the same pair on trio: the lost update, then the fix with ``trio.Lock``.

trio deliberately randomises the order in which it runs the tasks that are ready at the same time,
so "it failed in the same way every time on asyncio" is no evidence on trio. The loss is still
certain here, for a structural reason: trio runs ready tasks in batches, and a task that
yields (``await trio.lowlevel.checkpoint()``) goes into the *next* batch. All tasks start in the
same batch, so all of them read the counter before any of them writes it, whatever the order inside
the batch.

``trio.Lock`` fixes it exactly like ``asyncio.Lock`` does: only the holder can be between the read
and the write.
"""

from __future__ import annotations

import trio
import trio.lowlevel


class Counter:
    def __init__(self) -> None:
        self.value = 0


async def lost_update(tasks: int) -> int:
    """Run ``tasks`` unprotected increments in one nursery; returns the final counter (always 1)."""
    counter = Counter()

    async def increment() -> None:
        value = counter.value
        await trio.lowlevel.checkpoint()  # the race window
        counter.value = value + 1

    async with trio.open_nursery() as nursery:
        for _ in range(tasks):
            nursery.start_soon(increment)
    return counter.value


async def locked_update(tasks: int) -> int:
    """The same increments holding a ``trio.Lock``; returns the final counter (always ``tasks``)."""
    counter = Counter()
    lock = trio.Lock()

    async def increment() -> None:
        async with lock:
            value = counter.value
            await trio.lowlevel.checkpoint()
            counter.value = value + 1

    async with trio.open_nursery() as nursery:
        for _ in range(tasks):
            nursery.start_soon(increment)
    return counter.value


def main() -> None:
    tasks = 100
    racy = trio.run(lost_update, tasks)
    locked = trio.run(locked_update, tasks)
    print(f"trio, {tasks} tasks each adding 1 to a shared counter")
    print(f"without a lock: expected {tasks}, got {racy}: lost {tasks - racy} updates")
    print(f"with trio.Lock: expected {tasks}, got {locked}: no update lost")


if __name__ == "__main__":
    main()
