"""Held programs whose schedules do not replay: state kept at module level, the clock, randomness.

``cached_fetch`` is the issue's case: a cache at module level survives from one schedule to the
next. In the first schedule both tasks miss it and fetch (the real failure: "fetched 2 times");
every later run finds it warm and fetches nothing ("fetched 0 times"), its tasks never awaiting.
"""

from __future__ import annotations

import random
import time

import anyio
import anyio.lowlevel

cache: dict[str, str] = {}


async def cached_fetch() -> None:
    fetched = [0]

    async def get(key: str) -> str:
        if key not in cache:  # CACHE_MISS
            fetched[0] += 1
            await anyio.lowlevel.checkpoint()  # FETCHING
            cache[key] = key.upper()
        return cache[key]

    async with anyio.create_task_group() as tg:
        tg.start_soon(get, "a")
        tg.start_soon(get, "a")
    assert fetched[0] == 1, f"fetched {fetched[0]} times"


runs = [0]


async def growing_counter() -> None:
    """Passes in every schedule, but only its first run awaits: the count outlives it."""
    runs[0] += 1

    async def step() -> None:
        if runs[0] == 1:
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tg:
        tg.start_soon(step)
        tg.start_soon(step)


async def _two_workers() -> None:
    async def worker() -> None:
        await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tg:
        tg.start_soon(worker)
        tg.start_soon(worker)


async def wall_clock() -> None:
    """Fails when the wall clock reads an odd second (the tests drive the clock)."""
    await _two_workers()
    assert int(time.time()) % 2 == 0, "odd second"  # CLOCK


async def real_randomness() -> None:
    """Fails on an unlucky draw (the tests choose the draws)."""
    await _two_workers()
    assert random.random() < 0.5, "unlucky draw"  # RANDOM
