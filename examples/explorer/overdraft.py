"""A check-then-act race in plain anyio code, and its fix with anyio.Lock."""

import anyio


class Account:
    def __init__(self, balance: int) -> None:
        self.balance = balance


async def withdraw(account: Account, amount: int) -> None:
    if account.balance >= amount:  # check
        await anyio.sleep(0.05)  # talk to the payment network
        account.balance -= amount  # act on a stale check


async def overdraft() -> None:
    account = Account(100)
    async with anyio.create_task_group() as tg:
        tg.start_soon(withdraw, account, 80)
        tg.start_soon(withdraw, account, 50)
    assert account.balance >= 0, f"overdrawn: {account.balance}"


async def overdraft_fixed() -> None:
    account = Account(100)
    lock = anyio.Lock()

    async def safe_withdraw(amount: int) -> None:
        async with lock:
            await withdraw(account, amount)

    async with anyio.create_task_group() as tg:
        tg.start_soon(safe_withdraw, 80)
        tg.start_soon(safe_withdraw, 50)
    assert account.balance >= 0, f"overdrawn: {account.balance}"
