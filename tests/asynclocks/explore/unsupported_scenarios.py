"""Held programs the explorer cannot run: each must end in UnsupportedScenario, never a verdict.

Each call carries a ``# MARKER`` comment; the tests check the message names that line.
"""

from __future__ import annotations

import asyncio
import signal
import socket

import anyio
import anyio.to_thread
import trio
import trio.lowlevel


async def trio_nursery() -> None:
    async with trio.open_nursery() as nursery:  # TRIO_NURSERY
        nursery.start_soon(trio.sleep, 0)


async def trio_sleep() -> None:
    await trio.lowlevel.checkpoint()  # TRIO_SLEEP


async def asyncio_task_group() -> None:
    async with asyncio.TaskGroup() as tg:  # ASYNCIO_TASK_GROUP
        tg.create_task(asyncio.sleep(0))


async def asyncio_sleep() -> None:
    await asyncio.sleep(0)  # ASYNCIO_SLEEP


async def asyncio_to_thread() -> None:
    await asyncio.to_thread(sum, [1, 2])  # ASYNCIO_TO_THREAD


async def run_in_executor() -> None:
    await asyncio.get_running_loop().run_in_executor(None, sum, [1])  # RUN_IN_EXECUTOR


async def trio_to_thread() -> None:
    await trio.to_thread.run_sync(sum, [1])  # TRIO_TO_THREAD


async def anyio_to_thread() -> None:
    await anyio.to_thread.run_sync(sum, [1])  # ANYIO_TO_THREAD


async def subprocess_exec() -> None:
    await asyncio.create_subprocess_exec("true")  # SUBPROCESS_EXEC


async def subprocess_shell() -> None:
    await asyncio.create_subprocess_shell("true")  # SUBPROCESS_SHELL


async def trio_run_process() -> None:
    await trio.run_process(["true"])  # TRIO_RUN_PROCESS


async def anyio_run_process() -> None:
    await anyio.run_process(["true"])  # ANYIO_RUN_PROCESS


async def signal_handler() -> None:
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, print)  # SIGNAL_HANDLER


async def real_socket() -> None:
    await asyncio.open_connection("192.0.2.1", 80)  # REAL_SOCKET


async def sock_connect() -> None:
    loop = asyncio.get_running_loop()
    with socket.socket() as sock:
        sock.setblocking(False)
        await loop.sock_connect(sock, ("192.0.2.1", 80))  # SOCK_CONNECT


async def task_factory() -> None:
    asyncio.get_running_loop().set_task_factory(None)  # TASK_FACTORY


async def fd_reader() -> None:
    asyncio.get_running_loop().add_reader(0, print)  # FD_READER


async def caught_to_thread() -> None:
    """Swallowing the error does not make the scenario supported."""
    try:
        await asyncio.to_thread(sum, [1])  # CAUGHT_TO_THREAD
    except Exception:  # noqa: BLE001 - the point of the held program
        pass


async def to_thread_in_a_task() -> None:
    """A child task's unsupported call, after a real interleaving, still stops the search."""
    box = [0]

    async def worker(blocking: bool) -> None:
        box[0] += 1
        await anyio.lowlevel.checkpoint()
        if blocking:
            await anyio.to_thread.run_sync(sum, [1])  # TASK_TO_THREAD

    async with anyio.create_task_group() as tg:
        tg.start_soon(worker, False)
        tg.start_soon(worker, True)
