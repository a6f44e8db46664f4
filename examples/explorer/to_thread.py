"""A scenario the explorer cannot control: a thread. It says so, instead of calling it a race."""

import asyncio


def checksum(data: bytes) -> int:
    return sum(data) % 256


async def in_a_thread() -> None:
    await asyncio.to_thread(checksum, b"payload")
