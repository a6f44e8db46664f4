"""01: the lost update, asyncio edition.

The threads lesson starts with ``counter += 1`` run by 20 threads: the OS may switch threads between
the read and the write, and the total comes out short. Coroutines are never interrupted like that;
they switch only where the code says ``await``. So put an ``await`` between the read and the write
(in real code: a database query, an HTTP call, a log write) and the same bug comes back:

    value = counter.value      # read
    await asyncio.sleep(0)     # any await: the event loop runs the other tasks here
    counter.value = value + 1  # write, based on what may now be a stale read

Here the loss is not luck. ``asyncio.gather`` starts the tasks in order; each one reads, then
yields to the back of the loop's FIFO ready queue, so every task has read 0 before the first one
writes. 100 increments leave the counter at 1, on every run.
"""

from __future__ import annotations

import asyncio


class Counter:
    def __init__(self) -> None:
        self.value = 0


async def increment(counter: Counter) -> None:
    """Add one to the counter with an ``await`` between the read and the write."""
    value = counter.value
    await asyncio.sleep(0)  # the race window: every other task runs here
    counter.value = value + 1


async def lost_update(tasks: int) -> int:
    """Run ``tasks`` unprotected increments at once and return the final counter (always 1)."""
    counter = Counter()
    await asyncio.gather(*(increment(counter) for _ in range(tasks)))
    return counter.value


def main() -> None:
    tasks = 100
    final = asyncio.run(lost_update(tasks))
    print(f"{tasks} tasks each added 1 to a shared counter, with an await between read and write")
    print(f"expected {tasks}, got {final}: lost {tasks - final} updates")


if __name__ == "__main__":
    main()
