"""A lost update whose first task the user named ``alice``; the second keeps its function name."""

from __future__ import annotations

import asyncio

import anyio
import anyio.lowlevel
import trio

box = [0]


async def increment() -> None:
    value = box[0]
    await anyio.lowlevel.checkpoint()
    box[0] = value + 1


async def asyncio_task_group() -> None:
    box[0] = 0
    async with asyncio.TaskGroup() as tg:
        tg.create_task(increment(), name="alice")
        tg.create_task(increment())
    assert box[0] == 2


async def asyncio_create_task() -> None:
    box[0] = 0
    first = asyncio.create_task(increment(), name="alice")
    second = asyncio.create_task(increment())
    await first
    await second
    assert box[0] == 2


async def trio_nursery() -> None:
    box[0] = 0
    async with trio.open_nursery() as nursery:
        nursery.start_soon(increment, name="alice")
        nursery.start_soon(increment)
    assert box[0] == 2


async def anyio_task_group() -> None:
    box[0] = 0
    async with anyio.create_task_group() as tg:
        tg.start_soon(increment, name="alice")
        tg.start_soon(increment)
    assert box[0] == 2
