"""Held programs for the race window and long traces. Lines the tests check end in ``# MARKER``."""

from __future__ import annotations

import anyio
import anyio.lowlevel


class Account:
    def __init__(self) -> None:
        self.balance = 100


async def double_withdraw() -> None:
    account = Account()

    async def withdraw(amount: int) -> None:
        if account.balance >= amount:  # CHECK
            await anyio.lowlevel.checkpoint()  # AWAIT
            account.balance -= amount  # DEBIT

    async with anyio.create_task_group() as tg:
        tg.start_soon(withdraw, 80, name="alice")
        tg.start_soon(withdraw, 80, name="bob")
    assert account.balance >= 0, f"overdrawn: {account.balance}"


async def ledger_lost_update() -> None:
    ledger = {"total": 0}

    async def add(amount: int) -> None:
        current = ledger["total"]  # LEDGER_READ
        await anyio.lowlevel.checkpoint()  # LEDGER_AWAIT
        ledger["total"] = current + amount  # LEDGER_WRITE

    async with anyio.create_task_group() as tg:
        tg.start_soon(add, 1)
        tg.start_soon(add, 2)
    assert ledger["total"] == 3, f"lost update: total is {ledger['total']}"


async def late_race() -> None:
    """A lost update after a long run of unrelated steps: the elided trace keeps the window."""
    box = [0]

    async def idle() -> None:
        for _ in range(200):
            await anyio.lowlevel.checkpoint()

    async def increment() -> None:
        for _ in range(30):
            await anyio.lowlevel.checkpoint()
        value = box[0]  # LATE_READ
        await anyio.lowlevel.checkpoint()  # LATE_AWAIT
        box[0] = value + 1  # LATE_WRITE

    async with anyio.create_task_group() as tg:
        tg.start_soon(idle)
        tg.start_soon(increment)
        tg.start_soon(increment)
    assert box[0] == 2, f"lost update: {box[0]}"


async def busy_wait() -> None:
    """Polls a flag instead of waiting on an event: the setter's timer never comes due, because
    virtual time only moves when every task is idle. The schedule runs into the step limit."""
    ready = [False]

    async def waiter() -> None:
        while not ready[0]:  # noqa: ASYNC110 - the point: a busy loop
            await anyio.lowlevel.checkpoint()  # BUSY

    async def setter() -> None:
        await anyio.sleep(1)
        ready[0] = True

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter)
        tg.start_soon(setter)


async def fails_without_sharing() -> None:
    async def worker() -> None:
        await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tg:
        tg.start_soon(worker)
        tg.start_soon(worker)
    raise ValueError("no shared state involved")


def current_total(ledger: dict[str, int]) -> int:
    return ledger["total"]  # HELPER_READ


async def lost_update_through_a_helper() -> None:
    """The read happens in a plain function called during the step, not on the await chain."""
    ledger = {"total": 0}

    async def add(amount: int) -> None:
        current = current_total(ledger)
        await anyio.lowlevel.checkpoint()  # HELPER_AWAIT
        ledger["total"] = current + amount  # HELPER_WRITE

    async with anyio.create_task_group() as tg:
        tg.start_soon(add, 1)
        tg.start_soon(add, 2)
    assert ledger["total"] == 3, f"lost update: total is {ledger['total']}"
