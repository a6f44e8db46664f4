"""Two transfers that take their two account locks in opposite orders: a deadlock."""

import asyncio


async def transfer(first: asyncio.Lock, second: asyncio.Lock) -> None:
    async with first:
        await asyncio.sleep(0)  # read the balance
        async with second:
            await asyncio.sleep(0)  # write both balances


async def crossed_transfers() -> None:
    alice, bob = asyncio.Lock(), asyncio.Lock()
    async with asyncio.TaskGroup() as tg:
        tg.create_task(transfer(alice, bob), name="alice->bob")
        tg.create_task(transfer(bob, alice), name="bob->alice")
