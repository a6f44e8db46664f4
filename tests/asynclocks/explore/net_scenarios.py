"""Networked scenarios for the explorer's simulated loopback network, one family per backend.

Each ``*_counter`` factory returns a scenario in which a server handles two concurrent requests
that each read a shared counter, await, and write it back: without the lock one update is lost
(the scenario raises AssertionError); with it, none is.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager, nullcontext
from typing import Any

import h11
import httpx
import trio
from aiohttp import ClientSession, web
from aiohttp.test_utils import TestClient, TestServer
from hypercorn.config import Config
from hypercorn.trio import serve

Scenario = Callable[[], Awaitable[None]]


def _asyncio_lock(locked: bool) -> AbstractAsyncContextManager[Any]:
    return asyncio.Lock() if locked else nullcontext()


def streams_counter(locked: bool) -> Scenario:
    """asyncio.start_server + two open_connection clients, one line each way."""

    async def two_clients() -> None:
        counter = [0]
        lock = _asyncio_lock(locked)

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readline()
            async with lock:
                seen = counter[0]
                await asyncio.sleep(0)
                counter[0] = seen + 1
            writer.write(b"ok\n")
            await writer.drain()
            writer.close()
            await writer.wait_closed()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]

        async def client() -> None:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"hi\n")
            await writer.drain()
            assert await reader.readline() == b"ok\n"
            writer.close()
            await writer.wait_closed()

        async with server:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(client())
                tg.create_task(client())
        assert counter[0] == 2, f"one update lost: counter is {counter[0]}"

    return two_clients


def trio_counter(locked: bool) -> Scenario:
    """trio.serve_tcp + two trio.open_tcp_stream clients."""

    async def two_clients() -> None:
        counter = [0]
        lock: AbstractAsyncContextManager[Any] = trio.Lock() if locked else nullcontext()

        async def handler(stream: trio.SocketStream) -> None:
            await stream.receive_some(100)
            async with lock:
                seen = counter[0]
                await trio.lowlevel.checkpoint()
                counter[0] = seen + 1
            await stream.send_all(b"ok")
            await stream.aclose()

        async with trio.open_nursery() as nursery:
            serve = functools.partial(trio.serve_tcp, handler, 0, host="127.0.0.1")
            listeners = await nursery.start(serve)
            port = listeners[0].socket.getsockname()[1]

            async def client() -> None:
                stream = await trio.open_tcp_stream("127.0.0.1", port)
                await stream.send_all(b"hi")
                assert await stream.receive_some(100) == b"ok"
                await stream.aclose()

            async with trio.open_nursery() as clients:
                clients.start_soon(client)
                clients.start_soon(client)
            nursery.cancel_scope.cancel()
        assert counter[0] == 2, f"one update lost: counter is {counter[0]}"

    return two_clients


def _counter_app(locked: bool) -> tuple[web.Application, list[int]]:
    counter = [0]
    lock = _asyncio_lock(locked)

    async def increment(request: web.Request) -> web.Response:
        async with lock:
            seen = counter[0]
            await asyncio.sleep(0)
            counter[0] = seen + 1
        return web.json_response({"counter": counter[0]})

    app = web.Application()
    app.router.add_post("/increment", increment)
    return app, counter


def aiohttp_test_client_counter(locked: bool) -> Scenario:
    """aiohttp's TestServer + TestClient, two concurrent POSTs to a racy handler."""

    async def two_requests() -> None:
        app, counter = _counter_app(locked)
        async with TestClient(TestServer(app)) as client:

            async def post() -> None:
                response = await client.post("/increment")
                assert response.status == 200
                await response.json()

            async with asyncio.TaskGroup() as tg:
                tg.create_task(post())
                tg.create_task(post())
        assert counter[0] == 2, f"one update lost: counter is {counter[0]}"

    return two_requests


def aiohttp_site_session_counter(locked: bool, host: str = "localhost") -> Scenario:
    """web.AppRunner + web.TCPSite on port 8080, two aiohttp.ClientSession requests."""

    async def two_requests() -> None:
        app, counter = _counter_app(locked)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 8080)
        await site.start()
        try:
            async with ClientSession() as session:

                async def post() -> None:
                    async with session.post(f"http://{host}:8080/increment") as response:
                        assert response.status == 200
                        await response.json()

                async with asyncio.TaskGroup() as tg:
                    tg.create_task(post())
                    tg.create_task(post())
        finally:
            await runner.cleanup()
        assert counter[0] == 2, f"one update lost: counter is {counter[0]}"

    return two_requests


# -- HTTP/1.1 on trio: httpx's AsyncClient against a small h11 server over trio.serve_tcp ------


Handler = Callable[[str, bytes], Awaitable[tuple[int, bytes]]]


async def serve_h11(stream: trio.SocketStream, app: Handler) -> None:
    """Serve HTTP/1.1 requests (keep-alive included) on one connection with h11."""
    conn = h11.Connection(h11.SERVER)

    async def next_event() -> Any:
        while True:
            event = conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            conn.receive_data(await stream.receive_some(65536))

    try:
        while True:
            request = await next_event()
            if not isinstance(request, h11.Request):
                break
            body = b""
            while not isinstance(event := await next_event(), h11.EndOfMessage):
                body += event.data
            status, payload = await app(request.target.decode(), body)
            headers = [("content-type", "application/json"), ("content-length", str(len(payload)))]
            data = conn.send(h11.Response(status_code=status, headers=headers))
            data += conn.send(h11.Data(data=payload)) + conn.send(h11.EndOfMessage())
            await stream.send_all(data)
            if conn.our_state is h11.MUST_CLOSE:
                break
            conn.start_next_cycle()
    except (trio.BrokenResourceError, h11.RemoteProtocolError):
        pass
    finally:
        await stream.aclose()


def httpx_h11_counter(locked: bool) -> Scenario:
    """Two concurrent httpx.AsyncClient requests to an h11 server on trio.serve_tcp."""

    async def two_requests() -> None:
        counter = [0]
        lock: AbstractAsyncContextManager[Any] = trio.Lock() if locked else nullcontext()

        async def app(target: str, body: bytes) -> tuple[int, bytes]:
            if target != "/increment":
                return 404, b'{"error": "not_found"}'
            async with lock:
                seen = counter[0]
                await trio.lowlevel.checkpoint()
                counter[0] = seen + 1
            return 200, json.dumps({"counter": counter[0]}).encode()

        async with trio.open_nursery() as nursery:
            serve = functools.partial(
                trio.serve_tcp, functools.partial(serve_h11, app=app), 0, host="127.0.0.1"
            )
            listeners = await nursery.start(serve)
            port = listeners[0].socket.getsockname()[1]
            # Plain HTTP: verify=False spares loading the CA bundle in every schedule.
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{port}", verify=False
            ) as client:

                async def post() -> None:
                    response = await client.post("/increment")
                    assert response.status_code == 200
                    response.json()

                async with trio.open_nursery() as requests:
                    requests.start_soon(post)
                    requests.start_soon(post)
                missing = await client.get("/nope")
                assert missing.status_code == 404
            nursery.cancel_scope.cancel()
        assert counter[0] == 2, f"one update lost: counter is {counter[0]}"

    return two_requests


def hypercorn_counter(locked: bool) -> Scenario:
    """Hypercorn's trio server serving an ASGI app, two concurrent httpx.AsyncClient requests."""

    async def two_requests() -> None:
        counter = [0]
        lock: AbstractAsyncContextManager[Any] = trio.Lock() if locked else nullcontext()

        async def app(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "lifespan":
                while (await receive())["type"] != "lifespan.shutdown":
                    await send({"type": "lifespan.startup.complete"})
                await send({"type": "lifespan.shutdown.complete"})
                return
            async with lock:
                seen = counter[0]
                await trio.lowlevel.checkpoint()
                counter[0] = seen + 1
            body = json.dumps({"counter": counter[0]}).encode()
            headers = [(b"content-type", b"application/json")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": body})

        config = Config()
        config.bind = ["127.0.0.1:0"]
        config.accesslog = config.errorlog = None  # no "Running on ..." line per schedule
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(
                functools.partial(serve, app, config, shutdown_trigger=stop.wait)
            )
            async with httpx.AsyncClient(base_url=binds[0], verify=False) as client:

                async def post() -> None:
                    response = await client.post("/increment")
                    assert response.status_code == 200
                    response.json()

                async with trio.open_nursery() as requests:
                    requests.start_soon(post)
                    requests.start_soon(post)
            stop.set()
        assert counter[0] == 2, f"one update lost: counter is {counter[0]}"

    return two_requests


#: Zero-argument versions for the command line, e.g.
#: ``python -m asynclocks explore tests/asynclocks/explore/net_scenarios.py:aiohttp_racy``.
aiohttp_racy = aiohttp_test_client_counter(False)
aiohttp_locked = aiohttp_test_client_counter(True)
