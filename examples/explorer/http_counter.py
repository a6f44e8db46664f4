"""A page-view counter behind aiohttp, hit by two clients at once: a lost update over HTTP.

Nothing here knows about the explorer: a real aiohttp server and client. Inside an exploration they
talk over the explorer's simulated loopback network, so which handler runs when is its choice and
the failing interleaving replays from a token.
"""

import asyncio

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer


def make_app(locked: bool) -> web.Application:
    views = {"home": 0}
    lock = asyncio.Lock()

    async def count() -> int:
        seen = views["home"]
        await asyncio.sleep(0)  # the database round trip
        views["home"] = seen + 1
        return views["home"]

    async def hit(request: web.Request) -> web.Response:
        if locked:
            async with lock:
                return web.json_response({"views": await count()})
        return web.json_response({"views": await count()})

    app = web.Application()
    app.router.add_post("/home", hit)
    return app


async def two_clients(locked: bool) -> None:
    async with TestClient(TestServer(make_app(locked))) as client:

        async def visit() -> None:
            async with client.post("/home") as response:
                assert response.status == 200

        async with asyncio.TaskGroup() as tg:
            tg.create_task(visit(), name="visitor 1")
            tg.create_task(visit(), name="visitor 2")
        async with client.post("/home") as response:
            views = (await response.json())["views"]
    assert views == 3, f"3 visits counted as {views}"


async def racy() -> None:
    await two_clients(locked=False)


async def locked() -> None:
    await two_clients(locked=True)
