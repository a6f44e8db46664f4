"""The hammer's raw HTTP/1.1 client, against the real app and a scripted server.

The real app checks parsing, keep-alive reuse and the books; the scripted server sends what the
app never does (chunked bodies split across writes, a body ending with the connection, a closed
connection instead of an answer, a garbled status line, refused connections), and the counts show
that only a well-formed answer is ever booked.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from rich.console import Console

from services.bank.tools.hammer import HammerReport, HammerSettings, run_hammer

from .conftest import Bank

pytestmark = pytest.mark.anyio

OPENING = 1_000_000


def _quiet() -> Console:
    return Console(stderr=True, quiet=True)


def _deposits(url: str, requests: int, concurrency: int = 1, **kwargs: object) -> HammerSettings:
    return HammerSettings(
        url=url,
        requests=requests,
        concurrency=concurrency,
        accounts=1,
        mix={"deposit": 1},
        opening_balance=OPENING,
        progress=False,
        client="raw",
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("client", ["raw", "aiohttp"])
async def test_both_clients_keep_the_books_of_the_real_app(bank: Bank, client: str) -> None:
    settings = HammerSettings(
        url=str(bank.server.make_url("/")),
        concurrency=8,
        requests=400,
        accounts=3,
        seed=3,
        progress=False,
        client=client,
        api_key=bank.key,
    )
    report = await run_hammer(settings, console=_quiet())
    assert sum(report.status.values()) == report.requests == 400
    assert set(report.status) <= {"200", "409"}
    assert report.status.get("200", 0) > 0
    assert report.correct
    assert (await bank.audit())["drift"] == 0


def _counting_app(connection_close: bool) -> tuple[web.Application, list[object]]:
    """A bank stand-in whose deposits record the client's address (one per connection)."""
    peers: list[object] = []
    balance = {"value": OPENING}

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def open_account(request: web.Request) -> web.Response:
        return web.json_response({}, status=201)

    async def deposit(request: web.Request) -> web.Response:
        amount = (await request.json())["amount"]
        balance["value"] += amount
        peers.append(request.transport.get_extra_info("peername") if request.transport else None)
        headers = {"Connection": "close"} if connection_close else None
        return web.json_response({"balance": balance["value"]}, headers=headers)

    async def read(request: web.Request) -> web.Response:
        return web.json_response({"balance": balance["value"]})

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_post("/accounts", open_account)
    app.router.add_post("/accounts/{id}/deposit", deposit)
    app.router.add_get("/accounts/{id}", read)
    return app, peers


async def test_keep_alive_one_connection_per_client() -> None:
    app, peers = _counting_app(connection_close=False)
    async with TestServer(app, host="127.0.0.1") as server:
        report = await run_hammer(_deposits(str(server.make_url("/")), 60, 3), console=_quiet())
    assert report.status == {"200": 60}
    assert report.correct
    assert len(peers) == 60
    assert len(set(peers)) == 3


async def test_reconnects_when_the_server_closes_after_each_answer() -> None:
    app, peers = _counting_app(connection_close=True)
    async with TestServer(app, host="127.0.0.1") as server:
        report = await run_hammer(_deposits(str(server.make_url("/")), 20, 2), console=_quiet())
    assert report.status == {"200": 20}
    assert report.correct
    assert len(set(peers)) == 20


@asynccontextmanager
async def _scripted(
    deposit_reply: bytes | list[bytes] | None, *, close_after: bool = False, refuse: bool = False
) -> AsyncIterator[str]:
    """A server that answers the hammer's setup and read-back properly and deposits as scripted.

    ``deposit_reply`` is written as is (a list: one write per item, drained in between); None
    closes the connection without an answer. ``refuse`` stops listening once the account is
    opened, so the load phase's connections are refused.
    """
    listener: asyncio.Server | None = None

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                length = 0
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value)
                await reader.readexactly(length)
                method, path, _ = lines[0].split(" ")
                if path.endswith("/deposit"):
                    if deposit_reply is None:
                        return
                    for part in (
                        deposit_reply if isinstance(deposit_reply, list) else [deposit_reply]
                    ):
                        writer.write(part)
                        await writer.drain()
                        await asyncio.sleep(0)  # let the parts arrive as separate reads
                    if close_after:
                        return
                    continue
                status, body = (201, b"{}") if method == "POST" else (200, b"{}")
                if path.startswith("/accounts/"):
                    body = json.dumps({"balance": OPENING}).encode()
                writer.write(
                    f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
                )
                await writer.drain()
                if method == "POST" and refuse and listener is not None:
                    listener.close()
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()

    listener = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        listener.close()


async def _run(url: str, requests: int) -> HammerReport:
    return await run_hammer(_deposits(url, requests, stall_timeout=10.0), console=_quiet())


async def test_chunked_answers_split_across_reads() -> None:
    reply = [b"HTTP/1.1 200 OK\r\nTransfer-", b"Encoding: chunked\r\n\r\n2\r\n{", b"}\r\n0\r\n\r\n"]
    async with _scripted(reply) as url:
        report = await _run(url, 5)
    assert report.status == {"200": 5}
    # The scripted server keeps no books: every acknowledged deposit shows as a drift.
    assert report.expected_total > OPENING


async def test_body_that_ends_with_the_connection() -> None:
    async with _scripted(b"HTTP/1.1 200 OK\r\n\r\n{}", close_after=True) as url:
        report = await _run(url, 4)
    assert report.status == {"200": 4}


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param(None, id="closed-before-answering"),
        pytest.param(b"HTTX/1.1 200 OK\r\n\r\n", id="garbled-status-line"),
        pytest.param(b"HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n", id="status-not-a-number"),
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n", id="bad-length"),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", id="bad-chunk"
        ),
    ],
)
async def test_failed_requests_are_errors_never_acknowledged(reply: bytes | None) -> None:
    async with _scripted(reply) as url:
        report = await _run(url, 3)
    assert report.status == {"error": 3}
    assert report.expected_total == OPENING


async def test_other_statuses_are_counted_not_booked() -> None:
    reply = b"HTTP/1.1 418 I'm a teapot\r\nContent-Length: 2\r\n\r\n{}"
    async with _scripted(reply) as url:
        report = await _run(url, 4)
    assert report.status == {"418": 4}
    assert report.expected_total == OPENING


async def test_refused_connections_are_errors() -> None:
    reply = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"
    async with _scripted(reply, refuse=True) as url:
        report = await _run(url, 3)
    assert report.status == {"error": 3}
    assert report.expected_total == OPENING


def test_unknown_client() -> None:
    with pytest.raises(ValueError, match="client must be one of raw, aiohttp, got 'curl'"):
        HammerSettings(url="http://127.0.0.1:1/", client="curl")
