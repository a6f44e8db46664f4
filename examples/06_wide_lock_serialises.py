"""06: a lock held too widely serialises the program.

The threads lesson's warning: put the lock around the whole loop body and the threads run one after
another, so they were pointless. The async version is the same. Each task here makes a slow call
(``asyncio.sleep(DELAY)`` standing in for an HTTP request that computes the amount), then updates a
shared total with a read-await-write.

* wide: the lock is taken before the slow call. The calls cannot overlap: N x DELAY.
* narrow: the slow call happens first, outside the lock; only the read-await-write is locked.
  The calls overlap: about one DELAY.

Both totals are correct; only the time differs. The figures are printed, not asserted: timing is
measured, never promised.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

TASKS = 20
DELAY = 0.05


class Total:
    def __init__(self) -> None:
        self.value = 0
        self.lock = asyncio.Lock()


async def slow_amount(delay: float) -> int:
    """Stand-in for a slow I/O call that does not touch the shared state."""
    await asyncio.sleep(delay)
    return 1


async def wide(total: Total, delay: float) -> None:
    """Holds the lock across the slow call too."""
    async with total.lock:
        amount = await slow_amount(delay)
        value = total.value
        await asyncio.sleep(0)
        total.value = value + amount


async def narrow(total: Total, delay: float) -> None:
    """Does the slow call first; holds the lock only around the read-await-write."""
    amount = await slow_amount(delay)
    async with total.lock:
        value = total.value
        await asyncio.sleep(0)
        total.value = value + amount


async def timed(
    update: Callable[[Total, float], Awaitable[None]], tasks: int, delay: float
) -> tuple[int, float]:
    """Run ``tasks`` updates at once; returns the final total and the seconds taken."""
    total = Total()
    start = time.perf_counter()
    await asyncio.gather(*(update(total, delay) for _ in range(tasks)))
    return total.value, time.perf_counter() - start


def main() -> None:
    wide_total, wide_seconds = asyncio.run(timed(wide, TASKS, DELAY))
    narrow_total, narrow_seconds = asyncio.run(timed(narrow, TASKS, DELAY))
    print(f"{TASKS} tasks, each a {DELAY * 1000:.0f} ms call then an update of a shared total")
    print(f"wide lock (around the slow call):  total {wide_total}, {wide_seconds:.3f} s")
    print(f"narrow lock (update only):         total {narrow_total}, {narrow_seconds:.3f} s")
    print(f"speed-up of the narrow lock: {wide_seconds / narrow_seconds:.1f}x")


if __name__ == "__main__":
    main()
