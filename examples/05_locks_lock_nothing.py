"""05: locks lock nothing; they only work if every party takes them.

A lock is an agreement, not a force field around the data. Here 99 well-behaved tasks take the
``asyncio.Lock`` before their read-await-write, and one "rogue" coroutine (say, an admin endpoint
someone added later) does the same read-await-write without it. The lock keeps the 99 from
interfering with each other, but nothing stops the rogue from reading while the lock holder is in
its window, and one of the two writes is lost.

Deterministic on asyncio: an uncontended ``asyncio.Lock`` is taken without yielding, so in the first
round of the FIFO ready queue the first lock holder and the rogue both read 0; in the second both
write 1. The control run, where the rogue takes the lock too, never loses anything.
The threads lesson is the same: a thread that skips ``threading.Lock`` races with all the others.
"""

from __future__ import annotations

import asyncio


class Account:
    def __init__(self) -> None:
        self.balance = 0
        self.lock = asyncio.Lock()


async def polite_deposit(account: Account) -> None:
    """Deposit 1 holding the account's lock."""
    async with account.lock:
        balance = account.balance
        await asyncio.sleep(0)  # e.g. writing the audit log
        account.balance = balance + 1


async def rogue_deposit(account: Account) -> None:
    """Deposit 1 with the same code, minus the lock."""
    balance = account.balance
    await asyncio.sleep(0)
    account.balance = balance + 1


async def one_rogue(tasks: int) -> int:
    """``tasks - 1`` locked deposits and one unlocked one; returns the balance (``tasks - 1``)."""
    account = Account()
    await asyncio.gather(
        *(polite_deposit(account) for _ in range(tasks - 1)), rogue_deposit(account)
    )
    return account.balance


async def all_locked(tasks: int) -> int:
    """The control: all ``tasks`` deposits take the lock; returns the balance (``tasks``)."""
    account = Account()
    await asyncio.gather(*(polite_deposit(account) for _ in range(tasks)))
    return account.balance


def main() -> None:
    tasks = 100
    rogue = asyncio.run(one_rogue(tasks))
    control = asyncio.run(all_locked(tasks))
    print(f"{tasks} deposits of 1 into one account, all but one holding the account's lock")
    print(f"one coroutine skips the lock: expected {tasks}, got {rogue}: lost {tasks - rogue}")
    print(f"every coroutine takes the lock: expected {tasks}, got {control}: nothing lost")


if __name__ == "__main__":
    main()
