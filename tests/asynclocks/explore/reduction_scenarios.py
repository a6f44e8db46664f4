"""Races the sleep-set reduction must not prune: each needs a preemption (the stock FIFO order
passes) and hides its conflict somewhere a footprint analysis could miss it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.lowlevel
from anyio.lowlevel import checkpoint

TOTAL = 0


async def _idle(steps: int) -> None:
    for _ in range(steps):
        await anyio.lowlevel.checkpoint()


def through_a_global() -> Callable[[], Awaitable[None]]:
    async def increment(delay: int) -> None:
        global TOTAL
        for _ in range(delay):
            await anyio.lowlevel.checkpoint()
        value = TOTAL
        await anyio.lowlevel.checkpoint()
        TOTAL = value + 1

    async def scenario() -> None:
        global TOTAL
        TOTAL = 0
        async with anyio.create_task_group() as tg:
            tg.start_soon(increment, 0)
            tg.start_soon(increment, 1)
        assert TOTAL == 2, TOTAL

    return scenario


def aliased_dict() -> Callable[[], Awaitable[None]]:
    """Two functions, two local names, one dict."""

    async def scenario() -> None:
        shared: dict[str, int] = {"n": 0}

        async def reader_writer(balances: dict[str, int]) -> None:
            value = balances["n"]
            await anyio.lowlevel.checkpoint()
            balances["n"] = value + 1

        async def late(accounts: dict[str, int]) -> None:
            await anyio.lowlevel.checkpoint()
            accounts["n"] += 1

        async with anyio.create_task_group() as tg:
            tg.start_soon(reader_writer, shared)
            tg.start_soon(late, shared)
        assert shared["n"] == 2, shared

    return scenario


def aliased_list_length() -> Callable[[], Awaitable[None]]:
    """A check with len() in one task, an append through another name in the other."""

    async def scenario() -> None:
        queue: list[int] = []

        async def producer(items: list[int]) -> None:
            await _idle(3)
            items.append(1)

        async def checker(seen: list[int]) -> None:
            empty = len(seen) == 0
            await anyio.lowlevel.checkpoint()
            await anyio.lowlevel.checkpoint()
            if empty:
                assert not seen, "checked empty, acted on a non-empty queue"

        async with anyio.create_task_group() as tg:
            tg.start_soon(checker, queue)
            tg.start_soon(producer, queue)

    return scenario


def attribute_through_two_names() -> Callable[[], Awaitable[None]]:
    class Account:
        balance = 100

    async def scenario() -> None:
        account = Account()

        async def withdraw(acct: Account) -> None:
            if acct.balance >= 80:
                await anyio.lowlevel.checkpoint()
                acct.balance -= 80

        async def spend(wallet: Account) -> None:
            await anyio.lowlevel.checkpoint()
            if wallet.balance >= 50:
                await anyio.lowlevel.checkpoint()
                wallet.balance -= 50

        async with anyio.create_task_group() as tg:
            tg.start_soon(withdraw, account)
            tg.start_soon(spend, account)
        assert account.balance >= 0, account.balance

    return scenario


def inside_a_user_context_manager() -> Callable[[], Awaitable[None]]:
    """The shared write happens in a context manager's code, not in the task's own lines."""

    async def scenario() -> None:
        state = {"active": 0, "peak": 0}

        @asynccontextmanager
        async def tracked() -> Any:
            state["active"] += 1
            state["peak"] = max(state["peak"], state["active"])
            yield
            state["active"] -= 1

        async def worker(delay: int) -> None:
            await _idle(delay)
            async with tracked():
                await anyio.lowlevel.checkpoint()

        async with anyio.create_task_group() as tg:
            tg.start_soon(worker, 0)
            tg.start_soon(worker, 2)
        assert state["peak"] == 1, "two workers were inside at once"

    return scenario


def in_a_helper_that_does_not_suspend() -> Callable[[], Awaitable[None]]:
    """The read and the write happen in plain functions the task calls."""

    async def scenario() -> None:
        box = [0]

        def read() -> int:
            return box[0]

        def write(value: int) -> None:
            box[0] = value

        async def increment(delay: int) -> None:
            await _idle(delay)
            value = read()
            await anyio.lowlevel.checkpoint()
            write(value + 1)

        async with anyio.create_task_group() as tg:
            tg.start_soon(increment, 0)
            tg.start_soon(increment, 1)
        assert box[0] == 2, box

    return scenario


def user_methods_named_like_library_ones() -> Callable[[], Awaitable[None]]:
    """``get``/``set`` here are a user class's methods, not a dict's or an Event's."""

    class Tally:
        def __init__(self) -> None:
            self.n = 0

        def get(self) -> int:
            return self.n

        def set(self, value: int) -> None:
            self.n = value

    async def scenario() -> None:
        tally = Tally()

        async def bump(delay: int) -> None:
            await _idle(delay)
            value = tally.get()
            await anyio.lowlevel.checkpoint()
            tally.set(value + 1)

        async with anyio.create_task_group() as tg:
            tg.start_soon(bump, 0)
            tg.start_soon(bump, 1)
        assert tally.n == 2, tally.n

    return scenario


def a_bare_truth_test() -> Callable[[], Awaitable[None]]:
    """``if pending:`` reads the list (its length) and nothing else in that step reads shared
    state: ``checkpoint`` is a global here, so no attribute load hides the read."""

    async def scenario() -> None:
        queue: list[int] = []

        async def producer(items: list[int]) -> None:
            await checkpoint()
            await checkpoint()
            items.append(1)
            await checkpoint()

        async def consumer(pending: list[int]) -> None:
            await checkpoint()
            if pending:
                raise AssertionError("the item arrived before its turn")
            await checkpoint()

        async with anyio.create_task_group() as tg:
            tg.start_soon(consumer, queue)
            tg.start_soon(producer, queue)

    return scenario


def formatted_in_an_f_string() -> Callable[[], Awaitable[None]]:
    """``f"{pending}"`` reads the list's items (its ``__repr__``) into a local."""

    async def scenario() -> None:
        queue: list[int] = []

        async def producer(items: list[int]) -> None:
            await checkpoint()
            await checkpoint()
            items.append(1)
            await checkpoint()

        async def consumer(pending: list[int]) -> None:
            await checkpoint()
            shown = f"{pending}"
            await checkpoint()
            assert shown == "[]", f"formatted {shown} before the item's turn"
            await checkpoint()

        async with anyio.create_task_group() as tg:
            tg.start_soon(consumer, queue)
            tg.start_soon(producer, queue)

    return scenario


def independent_work_then_lock(tasks: int, idle: int) -> Callable[[], Awaitable[None]]:
    """Unshared awaits (stand-ins for I/O) before a locked increment: reduction's target."""

    async def scenario() -> None:
        box = [0]
        lock = anyio.Lock()

        async def increment() -> None:
            for _ in range(idle):
                await anyio.lowlevel.checkpoint()
            async with lock:
                value = box[0]
                await anyio.lowlevel.checkpoint()
                box[0] = value + 1

        async with anyio.create_task_group() as tg:
            for _ in range(tasks):
                tg.start_soon(increment)
        assert box[0] == tasks, box

    return scenario


def in_a_helper_coroutine_that_returns() -> Callable[[], Awaitable[None]]:
    """The read and the write happen in ``async def`` helpers that end without suspending:
    their bodies run inside the step and are on neither await chain."""

    async def scenario() -> None:
        box = [0]

        async def read() -> int:
            return box[0]

        async def write(value: int) -> None:
            box[0] = value

        async def increment(delay: int) -> None:
            await _idle(delay)
            value = await read()
            await anyio.lowlevel.checkpoint()
            await write(value + 1)

        async with anyio.create_task_group() as tg:
            tg.start_soon(increment, 0)
            tg.start_soon(increment, 1)
        assert box[0] == 2, box

    return scenario


def in_a_helper_coroutine_that_suspends() -> Callable[[], Awaitable[None]]:
    """The whole read-await-write is in an ``async def`` helper: its frame is on the chain."""

    async def scenario() -> None:
        box = [0]

        async def add() -> None:
            value = box[0]
            await anyio.lowlevel.checkpoint()
            box[0] = value + 1

        async def increment(delay: int) -> None:
            await _idle(delay)
            await add()

        async with anyio.create_task_group() as tg:
            tg.start_soon(increment, 0)
            tg.start_soon(increment, 1)
        assert box[0] == 2, box

    return scenario


def through_two_ends_of_a_stream() -> Callable[[], Awaitable[None]]:
    """One task checks the receiving end, the other fills the stream through the sending end:
    two objects, one shared state."""

    async def scenario() -> None:
        send, receive = anyio.create_memory_object_stream[int](1)

        async def put(delay: int) -> None:
            await _idle(delay)
            if receive.statistics().current_buffer_used == 0:
                await anyio.lowlevel.checkpoint()
                try:
                    send.send_nowait(delay)
                except anyio.WouldBlock:
                    raise AssertionError("the other task filled the slot") from None

        async with send, receive:
            async with anyio.create_task_group() as tg:
                tg.start_soon(put, 0)
                tg.start_soon(put, 1)

    return scenario


def through_a_limiters_properties() -> Callable[[], Awaitable[None]]:
    """A task raises a capacity limiter's total for a while; another reads its available
    tokens: two properties of one primitive, no attribute name in common."""

    async def scenario() -> None:
        limiter = anyio.CapacityLimiter(1)

        async def resize() -> None:
            await _idle(1)
            limiter.total_tokens = 2
            await anyio.lowlevel.checkpoint()
            limiter.total_tokens = 1

        async def observe() -> None:
            await _idle(2)
            assert limiter.available_tokens == 1, "saw the limiter resized"

        async with anyio.create_task_group() as tg:
            tg.start_soon(resize)
            tg.start_soon(observe)

    return scenario


RACES = {
    "global": through_a_global,
    "aliased_dict": aliased_dict,
    "aliased_list_length": aliased_list_length,
    "attribute_two_names": attribute_through_two_names,
    "user_context_manager": inside_a_user_context_manager,
    "helper_functions": in_a_helper_that_does_not_suspend,
    "user_methods": user_methods_named_like_library_ones,
    "truth_test": a_bare_truth_test,
    "f_string": formatted_in_an_f_string,
    "helper_coroutines": in_a_helper_coroutine_that_returns,
    "suspending_helper_coroutine": in_a_helper_coroutine_that_suspends,
    "stream_ends": through_two_ends_of_a_stream,
    "limiter_properties": through_a_limiters_properties,
}
