"""The server's connections, through the real ``serve()``: the header read timeout (slowloris),
the keep-alive timeout, the connection cap, the drain on stop and the half-closed client.

Every server here is ``serve(config, stop=...)`` in the test's own event loop, reached with raw
sockets on 127.0.0.1 (bounded counts). Where a request must be under way at a given moment, the
store's race window holds it there until the test lets it go, so nothing depends on timing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import anyio
import anyio.abc
import pytest

from services.bank.domain import OperationKind
from services.bank.run.config import BankConfig
from services.bank.run.server import serve
from services.bank.stores.memory import MemoryStore

from ._raw_http import RawResponse, read_response, request_bytes

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "uvloop"])
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    """aiohttp runs on asyncio only; ``serve`` uses uvloop when installed, whose transports
    differ (they are not ``asyncio.Transport`` subclasses), so both loops are tested."""
    if request.param == "asyncio":
        return "asyncio", {}
    uvloop = pytest.importorskip("uvloop")
    return "asyncio", {"loop_factory": uvloop.new_event_loop}


# Connection handling is the subject: the raw requests reach the routes without a key
# (require_keys=False, which the CLI cannot set; test_auth.py holds the keys).
BASE = BankConfig(port=0, lock_mode="account", require_keys=False)
DEPOSIT = b'{"amount": 5}'


class Gate:
    """A race window that holds every operation until ``open()``, counting who waits."""

    def __init__(self) -> None:
        self.waiting = 0
        self._changed = asyncio.Condition()
        self._open = asyncio.Event()

    async def __call__(self, kind: OperationKind) -> None:
        async with self._changed:
            self.waiting += 1
            self._changed.notify_all()
        await self._open.wait()

    async def until_waiting(self, count: int) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self.waiting >= count)

    def open(self) -> None:
        self._open.set()


class Server:
    def __init__(self, port: int, stop: asyncio.Event, task: asyncio.Task[None]) -> None:
        self.port = port
        self.stop = stop
        self.task = task

    async def connect(self) -> anyio.abc.SocketStream:
        return await anyio.connect_tcp("127.0.0.1", self.port)


@asynccontextmanager
async def running(config: BankConfig, store: MemoryStore | None = None) -> AsyncIterator[Server]:
    stop = asyncio.Event()
    announced: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve(config, announce=announced.set_result, stop=stop, store=store))

    def ended(task: asyncio.Task[None]) -> None:
        if not announced.done():
            failure = None if task.cancelled() else task.exception()
            announced.set_exception(failure or RuntimeError("serve() ended before listening"))

    task.add_done_callback(ended)
    port = int((await announced).rsplit(":", 1)[1])
    server = Server(port, stop, task)
    try:
        yield server
    finally:
        stop.set()
        with anyio.fail_after(30):
            await task


async def ask(stream: anyio.abc.SocketStream, data: bytes) -> RawResponse | None:
    await stream.send(data)
    return await read_response(stream, bytearray())


async def closed_by_server(stream: anyio.abc.SocketStream) -> bool:
    """Whether the server closed the connection (reading gives EOF or a reset, no bytes)."""
    try:
        data = await stream.receive()
    except (anyio.EndOfStream, anyio.BrokenResourceError, ConnectionError):
        return True
    raise AssertionError(f"expected the connection closed, got {data!r}")


async def open_account(server: Server, account: str, balance: int = 100) -> None:
    body = f'{{"id": "{account}", "balance": {balance}}}'.encode()
    async with await server.connect() as stream:
        response = await ask(stream, request_bytes("POST", "/accounts", body))
    assert response is not None
    assert response.status == 201, response.body


HEALTH = request_bytes("GET", "/health")


# --- header read timeout ----------------------------------------------------------------------


async def test_slowloris_heads_are_closed_while_others_are_served() -> None:
    config = replace(BASE, header_timeout=0.5, keepalive_timeout=60.0)
    slow_clients = 40
    dribble_steps = 60  # one header line every 0.1 s: 6 s if the server let it
    async with running(config) as server:
        closed_after: list[float] = []
        served: list[int] = []

        async def slowloris() -> None:
            async with await server.connect() as stream:
                started = time.monotonic()
                await stream.send(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                try:
                    for step in range(dribble_steps):
                        await stream.send(f"X-Drip-{step}: a\r\n".encode())
                        await anyio.sleep(0.1)
                except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                    closed_after.append(time.monotonic() - started)
                    return
                # Still open after the whole dribble: the server never cut it.
                assert await closed_by_server(stream)
                closed_after.append(time.monotonic() - started)

        async def legitimate() -> None:
            async with await server.connect() as stream:
                for _ in range(20):
                    response = await ask(stream, HEALTH)
                    assert response is not None
                    served.append(response.status)
                    await anyio.sleep(0.05)

        async with anyio.create_task_group() as tg:
            for _ in range(slow_clients):
                tg.start_soon(slowloris)
            tg.start_soon(legitimate)
    assert served == [200] * 20
    assert len(closed_after) == slow_clients
    # Closed after about header_timeout, far before their dribble would have ended.
    assert max(closed_after) < dribble_steps * 0.1 / 2, closed_after
    assert min(closed_after) >= 0.4, closed_after


async def test_a_slow_head_within_the_timeout_is_served_and_the_timer_restarts() -> None:
    config = replace(BASE, header_timeout=1.0, keepalive_timeout=60.0)
    async with running(config) as server, await server.connect() as stream:
        for _ in range(3):
            # Each head takes 0.6 s: under the timeout on its own, over it if the timer of
            # the first head kept running into the next one.
            for piece in (b"GET /health HTTP/1.1\r\n", b"Host: 127.0.0.1\r\n", b"\r\n"):
                await stream.send(piece)
                await anyio.sleep(0.3)
            response = await read_response(stream, bytearray())
            assert response is not None
            assert response.status == 200


# --- keep-alive timeout -----------------------------------------------------------------------


async def test_idle_connection_closed_after_keepalive_timeout() -> None:
    config = replace(BASE, keepalive_timeout=0.5, header_timeout=60.0)
    async with running(config) as server, await server.connect() as stream:
        for _ in range(3):
            await anyio.sleep(0.2)  # idle, but less than the timeout: kept
            response = await ask(stream, HEALTH)
            assert response is not None
            assert response.status == 200
            assert response.headers.get("connection", "keep-alive").lower() != "close"
        idle_since = time.monotonic()
        with anyio.fail_after(10):
            assert await closed_by_server(stream)
        assert time.monotonic() - idle_since >= 0.45


async def test_connection_that_sends_nothing_is_closed_after_keepalive_timeout() -> None:
    config = replace(BASE, keepalive_timeout=0.3, header_timeout=60.0)
    async with running(config) as server, await server.connect() as stream:
        with anyio.fail_after(10):
            assert await closed_by_server(stream)


# --- connection cap ---------------------------------------------------------------------------


async def test_connections_above_the_cap_get_503_and_those_within_keep_being_served() -> None:
    cap = 4
    config = replace(BASE, max_connections=cap)
    async with running(config) as server:
        held = [await server.connect() for _ in range(cap)]
        try:
            for stream in held:
                response = await ask(stream, HEALTH)
                assert response is not None
                assert response.status == 200
            for _ in range(3):
                async with await server.connect() as extra:
                    refused = await ask(extra, HEALTH)
                    assert refused is not None
                    assert refused.status == 503
                    assert refused.headers["connection"].lower() == "close"
                    body = refused.json()
                    assert body["error"] == "too_many_connections"
                    assert str(cap) in body["detail"]
                    assert await closed_by_server(extra)
                # The connections within the cap are unaffected.
                for stream in held:
                    response = await ask(stream, HEALTH)
                    assert response is not None
                    assert response.status == 200
            await held.pop().aclose()
            # The slot frees once the server has seen the close; then a new client is served.
            with anyio.fail_after(10):
                while True:
                    async with await server.connect() as fresh:
                        response = await ask(fresh, HEALTH)
                    assert response is not None
                    if response.status == 200:
                        break
                    assert response.status == 503
                    await anyio.sleep(0.05)
        finally:
            for stream in held:
                await stream.aclose()


# --- drain on stop ----------------------------------------------------------------------------


async def test_stop_answers_requests_under_way_with_connection_close() -> None:
    gate = Gate()
    store = MemoryStore(race_window=gate)
    in_flight = 3
    async with running(BASE, store) as server:
        for index in range(in_flight):
            await open_account(server, f"acct{index}")
        busy = [await server.connect() for _ in range(in_flight)]
        idle = await server.connect()
        try:
            for stream in [*busy, idle]:
                warm = await ask(stream, HEALTH)
                assert warm is not None
                assert warm.headers.get("connection", "keep-alive").lower() != "close"
            for index, stream in enumerate(busy):
                await stream.send(request_bytes("POST", f"/accounts/acct{index}/deposit", DEPOSIT))
            with anyio.fail_after(10):
                await gate.until_waiting(in_flight)
            server.stop.set()
            # The idle connection is closed at once, without a reply (no request was read).
            with anyio.fail_after(10):
                assert await closed_by_server(idle)
            gate.open()
            for stream in busy:
                with anyio.fail_after(10):
                    response = await read_response(stream, bytearray())
                assert response is not None
                assert response.status == 200, response.body
                assert response.headers["connection"].lower() == "close"
                assert await closed_by_server(stream)
        finally:
            for stream in [*busy, idle]:
                await stream.aclose()
        with anyio.fail_after(30):
            await server.task
    for index in range(in_flight):
        assert await store.balance(f"acct{index}") == 105


# --- half-close -------------------------------------------------------------------------------


async def test_half_closed_client_gets_its_reply() -> None:
    gate = Gate()
    store = MemoryStore(race_window=gate)
    async with running(BASE, store) as server:
        await open_account(server, "alice")
        async with await server.connect() as stream:
            await stream.send(request_bytes("POST", "/accounts/alice/deposit", DEPOSIT))
            await stream.send_eof()
            with anyio.fail_after(10):
                await gate.until_waiting(1)
            gate.open()
            with anyio.fail_after(10):
                response = await read_response(stream, bytearray())
            assert response is not None
            assert response.status == 200, response.body
            assert response.json()["balance"] == 105
            assert response.headers["connection"].lower() == "close"
            assert await closed_by_server(stream)
    assert await store.balance("alice") == 105


async def test_half_close_with_nothing_under_way_closes_the_connection() -> None:
    async with running(BASE) as server, await server.connect() as stream:
        response = await ask(stream, HEALTH)
        assert response is not None
        await stream.send_eof()
        with anyio.fail_after(10):
            assert await closed_by_server(stream)


def test_limits_are_checked() -> None:
    for name in ("header_timeout", "keepalive_timeout", "drain_timeout"):
        for bad in (0, -1.0, float("nan"), float("inf")):
            with pytest.raises(ValueError, match=name):
                BankConfig(**{name: bad})  # type: ignore[arg-type]
    for bad_count in (0, -3, True):
        with pytest.raises(ValueError, match="max_connections"):
            BankConfig(max_connections=bad_count)
