"""A purchase that takes the stock, then times out before it records the order.

The payment takes one second and the timeout is five: on the stock event loop (and in virtual
time) the timeout never fires. ``--timeouts auto`` lets it fire at any await before its
deadline, so the race needs no tuned numbers.
"""

import asyncio


async def purchase() -> None:
    state = {"stock": 5, "orders": 0}

    async def buy() -> None:
        try:
            async with asyncio.timeout(5):
                state["stock"] -= 1
                await asyncio.sleep(1)  # the payment
                state["orders"] += 1
        except TimeoutError:
            pass  # bug: the unit taken from the stock is not put back

    async with asyncio.TaskGroup() as tg:
        tg.create_task(buy())
    assert state["stock"] + state["orders"] == 5, f"a unit went missing: {state}"
