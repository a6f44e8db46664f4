"""02: the fix, an ``asyncio.Lock`` around the read-modify-write.

Same code as example 01, one change: the read, the ``await`` and the write happen while holding an
``asyncio.Lock``. A task that reaches ``async with lock`` while another task is between its read and
its write waits there, so no task can read a value that is about to be overwritten. Just as
``threading.Lock`` fixes the threaded counter, the total is now exactly the number of increments.

The lock guards the *whole* read-await-write sequence; guarding only the write would not help,
because the stale value was read before the lock was taken.
"""

from __future__ import annotations

import asyncio


class Counter:
    def __init__(self) -> None:
        self.value = 0
        self.lock = asyncio.Lock()


async def increment(counter: Counter) -> None:
    """Add one to the counter; the lock makes read, await and write one step for other tasks."""
    async with counter.lock:
        value = counter.value
        await asyncio.sleep(0)  # still yields, but every other incrementer waits for the lock
        counter.value = value + 1


async def locked_update(tasks: int) -> int:
    """Run ``tasks`` locked increments at once and return the final counter (always ``tasks``)."""
    counter = Counter()
    await asyncio.gather(*(increment(counter) for _ in range(tasks)))
    return counter.value


def main() -> None:
    tasks = 100
    final = asyncio.run(locked_update(tasks))
    print(f"{tasks} tasks each added 1 to a shared counter, holding an asyncio.Lock")
    print(f"expected {tasks}, got {final}: no update lost")


if __name__ == "__main__":
    main()
