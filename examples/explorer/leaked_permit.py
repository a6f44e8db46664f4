"""A connection-pool permit leaked on a cache hit, and the fix with ``async with``."""

import anyio


async def fetch(pool: anyio.Semaphore, cache: dict[str, str], key: str) -> str:
    await pool.acquire()
    if key in cache:
        return cache[key]  # a cache hit returns early: the permit is never released
    await anyio.sleep(0.01)  # the request
    cache[key] = f"fetched {key}"
    pool.release()
    return cache[key]


async def leaked_permit() -> None:
    pool = anyio.Semaphore(1)
    cache = {"a": "cached a"}
    async with anyio.create_task_group() as tg:
        tg.start_soon(fetch, pool, cache, "a", name="fetch a")
        tg.start_soon(fetch, pool, cache, "b", name="fetch b")


async def fetch_fixed(pool: anyio.Semaphore, cache: dict[str, str], key: str) -> str:
    async with pool:
        if key not in cache:
            await anyio.sleep(0.01)
            cache[key] = f"fetched {key}"
        return cache[key]


async def leaked_permit_fixed() -> None:
    pool = anyio.Semaphore(1)
    cache = {"a": "cached a"}
    async with anyio.create_task_group() as tg:
        tg.start_soon(fetch_fixed, pool, cache, "a", name="fetch a")
        tg.start_soon(fetch_fixed, pool, cache, "b", name="fetch b")
