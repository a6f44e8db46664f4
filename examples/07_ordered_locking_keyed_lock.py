"""07: two locks, two orders: sorted order works, "source then destination" deadlocks.

A transfer must lock both accounts. The natural code locks the source, then the destination. Run
alice -> bob and bob -> alice at the same time and each can end up holding its first lock while
waiting forever for the other's: a deadlock, with threads or with coroutines alike.

The fix is a global order: always lock the accounts in sorted order. ``KeyedLock.many(a, b)``
does that (sorted, de-duplicated), so both directions ask for ``alice`` first, and whoever gets it
finishes.

The naive run below forces the deadlocking interleaving with events (each direction's first lock
holder waits until the other direction holds its first lock before asking for the second), so it
deadlocks on every run instead of once a month in production. A timeout detects it; the example
never hangs. It runs on asyncio and on trio.
"""

from __future__ import annotations

import anyio
import anyio.lowlevel

from asynclocks import KeyedLock

ACCOUNTS = ("alice", "bob")
AMOUNT = 10
DEADLOCK_TIMEOUT = 0.5


def route(index: int) -> tuple[str, str]:
    """Even transfers go alice -> bob, odd ones bob -> alice."""
    return (ACCOUNTS[0], ACCOUNTS[1]) if index % 2 == 0 else (ACCOUNTS[1], ACCOUNTS[0])


async def move(balances: dict[str, int], source: str, destination: str) -> None:
    """Read both balances, then write each, with awaits between: it needs both accounts locked."""
    source_balance, destination_balance = balances[source], balances[destination]
    await anyio.lowlevel.checkpoint()
    balances[source] = source_balance - AMOUNT
    await anyio.lowlevel.checkpoint()
    balances[destination] = destination_balance + AMOUNT


async def ordered_transfers(tasks: int) -> tuple[int, int]:
    """``tasks`` transfers in both directions with ``KeyedLock.many``.

    Returns:
        (transfers completed, total money after); always ``(tasks, 2 * tasks * AMOUNT)``.
    """
    locks = KeyedLock()
    balances = dict.fromkeys(ACCOUNTS, tasks * AMOUNT)
    completed = 0

    async def transfer(index: int) -> None:
        nonlocal completed
        source, destination = route(index)
        async with locks.many(source, destination):
            await move(balances, source, destination)
        completed += 1

    async with anyio.create_task_group() as group:
        for index in range(tasks):
            group.start_soon(transfer, index)
    return completed, sum(balances.values())


async def naive_transfers(
    tasks: int, deadlock_timeout: float = DEADLOCK_TIMEOUT
) -> tuple[int, bool]:
    """``tasks`` transfers locking source then destination, with the deadlock forced.

    Returns:
        (transfers completed, whether the deadlock was detected); always ``(0, True)``.
    """
    locks = KeyedLock()
    holding = {account: anyio.Event() for account in ACCOUNTS}
    balances = dict.fromkeys(ACCOUNTS, tasks * AMOUNT)
    completed = 0

    async def transfer(index: int) -> None:
        nonlocal completed
        source, destination = route(index)
        async with locks(source):
            holding[source].set()
            await holding[destination].wait()  # forced: the other direction holds its first lock
            async with locks(destination):
                await move(balances, source, destination)
        completed += 1

    with anyio.move_on_after(deadlock_timeout) as scope:
        async with anyio.create_task_group() as group:
            for index in range(tasks):
                group.start_soon(transfer, index)
    return completed, scope.cancelled_caught


def main() -> None:
    tasks = 10
    print(f"{tasks} transfers of {AMOUNT} between alice and bob, in both directions at once")
    for backend in ("asyncio", "trio"):
        done, total = anyio.run(ordered_transfers, tasks, backend=backend)
        print(
            f"{backend:>7}: sorted order (KeyedLock.many): {done} of {tasks} done, "
            f"total {total} (expected {2 * tasks * AMOUNT})"
        )
        done, deadlocked = anyio.run(naive_transfers, tasks, backend=backend)
        verdict = f"deadlock detected after {DEADLOCK_TIMEOUT} s" if deadlocked else "no deadlock"
        print(f"{backend:>7}: source-then-destination: {verdict}, {done} of {tasks} done")


if __name__ == "__main__":
    main()
