"""The helpers of the database stores: the shield around a write and the bounded retry."""

from __future__ import annotations

import asyncio

import anyio
import pytest

from services.bank.domain import RetryLater
from services.bank.stores._sql import retrying, shielded

pytestmark = pytest.mark.anyio


async def test_a_cancelled_caller_waits_for_the_write_to_finish() -> None:
    started = asyncio.Event()
    finish = asyncio.Event()
    log: list[str] = []

    async def write() -> str:
        started.set()
        await finish.wait()
        log.append("committed")
        return "done"

    caller = asyncio.ensure_future(shielded(write))
    await started.wait()
    caller.cancel()  # what aiohttp does when the client goes away
    await anyio.wait_all_tasks_blocked()
    assert not caller.done()  # still waiting for the write, not abandoning it halfway
    caller.cancel()  # a second cancellation changes nothing either
    await anyio.wait_all_tasks_blocked()
    finish.set()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert log == ["committed"]


async def test_the_write_result_and_errors_pass_through() -> None:
    async def ok() -> int:
        return 7

    async def fails() -> int:
        raise ValueError("boom")

    assert await shielded(ok) == 7
    with pytest.raises(ValueError, match="boom"):
        await shielded(fails)


async def test_retrying_is_bounded_and_ends_in_retry_later() -> None:
    calls: list[int] = []
    retried: list[BaseException] = []

    async def aborted() -> None:
        calls.append(1)
        raise TimeoutError("deadlock")

    with pytest.raises(RetryLater, match=r"aborted the operation 3 times \(TimeoutError\)"):
        await retrying(
            aborted,
            attempts=3,
            transient=lambda exc: isinstance(exc, TimeoutError),
            on_retry=retried.append,
        )
    assert (len(calls), len(retried)) == (3, 3)

    async def not_transient() -> None:
        raise KeyError("x")

    with pytest.raises(KeyError):
        await retrying(not_transient, attempts=3, transient=lambda exc: False)
