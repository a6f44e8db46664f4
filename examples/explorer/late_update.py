"""A lost update that the stock event loop never shows: it takes one preemption."""

import asyncio


class Counter:
    value = 0


async def slow_increment(counter: Counter) -> None:
    value = counter.value
    await asyncio.sleep(0)  # save a copy somewhere: the window between read and write
    counter.value = value + 1


async def late_increment(counter: Counter) -> None:
    await asyncio.sleep(0)  # arrives one lap late
    counter.value += 1  # no await inside: atomic on its own


async def late_lost_update() -> None:
    counter = Counter()
    async with asyncio.TaskGroup() as tg:
        tg.create_task(slow_increment(counter))
        tg.create_task(late_increment(counter))
    assert counter.value == 2, f"lost update: {counter.value}"
