"""The simulated loopback network: TCP semantics on both backends, unmodified networking libraries
inside explore() (asyncio streams, aiohttp's server and client, trio's TCP helpers, anyio,
httpx against an h11 server and against hypercorn's trio server), tokens that replay, and every
other address refused.

Racy versions must fail; locked versions must pass every schedule (exhaustively within the stated
preemption bound: the reduction treats library code as touching everything, so an unbounded
search of an HTTP exchange does not finish).
"""

from __future__ import annotations

import asyncio
import errno
import functools
import socket
from collections.abc import Awaitable, Callable
from typing import Any, cast

import anyio
import pytest
import trio

from asynclocks import Backend, UnsupportedScenario, explore, replay
from asynclocks._explore._network import FIRST_EPHEMERAL_PORT, RECEIVE_BUFFER

from . import net_scenarios

Scenario = Callable[[], Awaitable[None]]


def run_once(scenario: Scenario, backend: Backend = "asyncio") -> None:
    """Run the scenario in the stock order on the simulated network; re-raise its failure."""
    report = explore(scenario, backend=backend, strategy="fifo")
    if report.failed:
        raise AssertionError(str(report)) from report.error


# -- a racy server found, its lock proven, through each library ---------------------------------

CASES = [
    ("asyncio", "streams_counter", 2),
    ("asyncio", "aiohttp_test_client_counter", 2),
    ("trio", "trio_counter", 1),
    ("trio", "httpx_h11_counter", 1),
    ("trio", "hypercorn_counter", 1),
]


@pytest.mark.parametrize(("backend", "name", "bound"), CASES)
def test_racy_server_fails_and_locked_server_passes(
    backend: Backend, name: str, bound: int
) -> None:
    factory = getattr(net_scenarios, name)
    racy = explore(factory(False), backend=backend, preemption_bound=bound)
    assert racy.failed, str(racy)
    assert isinstance(racy.error, AssertionError)
    assert "one update lost" in str(racy.error)
    assert racy.token is not None
    with pytest.raises(AssertionError, match="one update lost"):
        replay(factory(False), racy.token, backend=backend)

    locked = explore(factory(True), backend=backend, preemption_bound=bound)
    assert not locked.failed, str(locked)
    assert locked.exhaustive, locked.coverage
    assert locked.schedules > 10  # the requests really interleave


def test_client_session_against_tcp_site_via_localhost() -> None:
    # "localhost" goes through aiohttp's resolver (loop.getaddrinfo); in the stock order the
    # first request is answered before the second connects, so the race needs a preemption.
    stock_order = explore(net_scenarios.aiohttp_site_session_counter(False), strategy="fifo")
    assert not stock_order.failed, str(stock_order)
    racy = explore(net_scenarios.aiohttp_site_session_counter(False), preemption_bound=2)
    assert racy.failed, str(racy)
    assert racy.preemptions >= 1
    assert isinstance(racy.error, AssertionError)
    locked = explore(net_scenarios.aiohttp_site_session_counter(True), preemption_bound=2)
    assert not locked.failed, str(locked)
    assert locked.exhaustive


@pytest.mark.parametrize(
    "factory",
    [net_scenarios.aiohttp_test_client_counter, net_scenarios.aiohttp_site_session_counter],
)
def test_aiohttp_opens_no_real_socket(
    monkeypatch: pytest.MonkeyPatch, factory: Callable[[bool], Scenario]
) -> None:
    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("a real socket was created inside the exploration")

    monkeypatch.setattr(socket, "socket", forbidden)
    run_once(factory(True))


def test_a_token_replays_the_same_trace() -> None:
    racy = explore(net_scenarios.streams_counter(False))
    assert racy.token is not None
    first = explore(net_scenarios.streams_counter(False))
    assert (first.token, first.trace) == (racy.token, racy.trace)


# -- addresses outside the simulated network -----------------------------------------------------


async def _asyncio_connect(host: str) -> None:
    await asyncio.open_connection(host, 80)


async def _asyncio_server(host: str) -> None:
    await asyncio.start_server(lambda r, w: None, host, 0)


async def _asyncio_sock_connect(host: str) -> None:
    with socket.socket() as sock:
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (host, 80))


async def _aiohttp_get(host: str) -> None:
    from aiohttp import ClientSession

    async with ClientSession() as session:
        await session.get(f"http://{host}/")


async def _trio_connect(host: str) -> None:
    await trio.open_tcp_stream(host, 80)


async def _trio_listen(host: str) -> None:
    await trio.open_tcp_listeners(0, host=host)


async def _anyio_connect(host: str) -> None:
    await anyio.connect_tcp(host, 80)


UNSUPPORTED = [
    ("asyncio", _asyncio_connect, "example.com"),
    ("asyncio", _asyncio_connect, "192.0.2.1"),
    ("asyncio", _asyncio_server, "192.0.2.1"),
    ("asyncio", _asyncio_sock_connect, "192.0.2.1"),
    ("asyncio", _aiohttp_get, "example.com"),
    ("asyncio", _anyio_connect, "example.com"),
    ("trio", _trio_connect, "example.com"),
    ("trio", _trio_connect, "192.0.2.1"),
    ("trio", _trio_listen, "192.0.2.1"),
    ("trio", _anyio_connect, "192.0.2.1"),
]


@pytest.mark.parametrize(("backend", "call", "host"), UNSUPPORTED)
def test_any_other_address_is_unsupported(
    backend: Backend, call: Callable[[str], Awaitable[None]], host: str
) -> None:
    with pytest.raises(UnsupportedScenario, match=f"'{host}'.*loopback"):
        explore(functools.partial(call, host), backend=backend)


async def _httpx_get(host: str) -> None:
    import httpx

    async with httpx.AsyncClient() as client:
        await client.get(f"http://{host}/")  # the line the error names


@pytest.mark.parametrize(
    ("backend", "call"),
    [("asyncio", _asyncio_connect), ("trio", _trio_connect), ("trio", _httpx_get)],
)
def test_the_error_names_the_scenarios_line(
    backend: Backend, call: Callable[[str], Awaitable[None]]
) -> None:
    # Not the client library's resolver or backend that passed the address on.
    line = call.__code__.co_firstlineno + (4 if call is _httpx_get else 1)
    with pytest.raises(UnsupportedScenario, match=rf"at \S*test_network.py:{line} is not"):
        explore(functools.partial(call, "example.com"), backend=backend)


def test_tls_is_unsupported() -> None:
    import ssl

    async def scenario() -> None:
        await asyncio.open_connection("127.0.0.1", 80, ssl=ssl.create_default_context())

    with pytest.raises(UnsupportedScenario, match="with ssl"):
        explore(scenario)


# -- TCP semantics, asyncio ---------------------------------------------------------------------


def test_asyncio_half_close_order_and_eof() -> None:
    async def scenario() -> None:
        async def echo_upper(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            data = await reader.read()  # until the client's EOF
            writer.write(data.upper())
            writer.close()

        server = await asyncio.start_server(echo_upper, "::1", 0)
        host, port = server.sockets[0].getsockname()[:2]
        assert (host, port) == ("::1", FIRST_EPHEMERAL_PORT)
        reader, writer = await asyncio.open_connection("localhost", port, family=socket.AF_INET6)
        for part in (b"ab", b"cd", b"ef"):
            writer.write(part)
        writer.write_eof()
        assert await reader.read() == b"ABCDEF"
        assert reader.at_eof()
        writer.close()
        server.close()
        await server.wait_closed()

    run_once(scenario)


def test_asyncio_reset_refused_and_ports() -> None:
    async def scenario() -> None:
        lost: list[BaseException | None] = []
        gone = asyncio.Event()

        class Recorder(asyncio.Protocol):
            def connection_lost(self, exc: Exception | None) -> None:
                lost.append(exc)
                gone.set()

        server = await asyncio.get_running_loop().create_server(Recorder, "127.0.0.1", 0)
        other = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        ports = [s.sockets[0].getsockname()[1] for s in (server, other)]
        assert ports == [FIRST_EPHEMERAL_PORT, FIRST_EPHEMERAL_PORT + 1]
        with pytest.raises(OSError, match="in use") as in_use:
            await asyncio.start_server(lambda r, w: None, "0.0.0.0", ports[0])
        assert in_use.value.errno == errno.EADDRINUSE
        _, writer = await asyncio.open_connection("127.0.0.1", ports[0])
        peer = writer.get_extra_info("peername")
        assert writer.get_extra_info("sockname") == ("127.0.0.1", FIRST_EPHEMERAL_PORT + 2)
        assert peer == ("127.0.0.1", ports[0])
        assert writer.get_extra_info("socket").getpeername() == peer
        writer.transport.abort()
        await gone.wait()
        assert isinstance(lost[0], ConnectionResetError)
        server.close()
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", ports[0])
        other.close()

    # Every schedule starts on an empty network: the same ports every time.
    run_once(scenario)
    run_once(scenario)


def test_asyncio_flow_control() -> None:
    events: list[str] = []

    async def scenario() -> None:
        received = bytearray()
        done = asyncio.Event()
        transports: list[asyncio.Transport] = []

        class Slow(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                assert isinstance(transport, asyncio.Transport)
                transport.pause_reading()
                transports.append(transport)

            def data_received(self, data: bytes) -> None:
                received.extend(data)

            def eof_received(self) -> None:
                done.set()

        class Writer(asyncio.Protocol):
            def pause_writing(self) -> None:
                events.append("pause")

            def resume_writing(self) -> None:
                events.append("resume")

        loop = asyncio.get_running_loop()
        server = await loop.create_server(Slow, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        transport, _ = await loop.create_connection(Writer, "127.0.0.1", port)
        transport.set_write_buffer_limits(high=1024)
        assert transport.get_write_buffer_limits() == (256, 1024)
        payload = bytes(range(256)) * (RECEIVE_BUFFER // 256 + 64)  # more than the peer buffers
        transport.write(payload)
        assert transport.get_write_buffer_size() == len(payload) - RECEIVE_BUFFER
        assert events == ["pause"]
        await asyncio.sleep(0)
        assert not received  # reading is paused on the server side
        transports[0].resume_reading()
        transport.write_eof()
        await done.wait()
        assert received == payload
        assert transport.get_write_buffer_size() == 0
        assert events == ["pause", "resume"]
        transport.close()
        server.close()

    run_once(scenario)


def test_asyncio_sock_calls_on_a_real_socket_never_connect_it() -> None:
    real: list[socket.socket] = []

    async def scenario() -> None:
        loop = asyncio.get_running_loop()

        async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(await reader.readexactly(5))
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        sock = socket.socket()
        real.append(sock)
        sock.setblocking(False)
        await loop.sock_connect(sock, server.sockets[0].getsockname())
        with pytest.raises(OSError, match="not connected"):
            sock.getpeername()  # the kernel's socket was never connected
        await loop.sock_sendall(sock, b"hello")
        buffer = bytearray(3)
        assert await loop.sock_recv_into(sock, buffer) == 3
        assert buffer == b"hel"
        assert await loop.sock_recv(sock, 10) == b"lo"
        assert await loop.sock_recv(sock, 10) == b""
        server.close()

    run_once(scenario)
    assert real[0].fileno() == -1  # closed when the schedule ended


def test_asyncio_sock_accept_and_getaddrinfo() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo("localhost", "8000", type=socket.SOCK_STREAM)
        assert [info[4] for info in infos] == [("127.0.0.1", 8000), ("::1", 8000, 0, 0)]
        assert await loop.getnameinfo(("127.0.0.1", 8000), socket.NI_NUMERICSERV) == (
            "localhost",
            "8000",
        )
        with pytest.raises(socket.gaierror, match="'::1' has no address of family AF_INET$"):
            await loop.getaddrinfo("::1", 80, family=socket.AF_INET)
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 8000)
        listener: Any = server.sockets[0]
        server.close()
        # A listening socket of the simulated network also works with the sock_* calls.
        listener = type(listener)(listener.network)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        ready = asyncio.Event()
        loop.add_reader(listener, ready.set)
        accept = asyncio.ensure_future(loop.sock_accept(listener))
        _, writer = await asyncio.open_connection(*listener.getsockname())
        await ready.wait()  # the pending connection made the listener readable
        assert loop.remove_reader(listener)
        assert not loop.remove_reader(listener)
        conn, address = await accept
        assert address == writer.get_extra_info("sockname")
        writer.write(b"x")
        assert await loop.sock_recv(conn, 1) == b"x"
        writer.close()

    run_once(scenario)


def test_asyncio_buffered_protocol_writelines_and_eof_once() -> None:
    async def scenario() -> None:
        received = bytearray()
        eofs: list[bool] = []
        got_eof = asyncio.Event()
        closed = asyncio.Event()

        transports: list[asyncio.Transport] = []

        class Buffered(asyncio.BufferedProtocol):
            def __init__(self) -> None:
                self.buffer = bytearray(3)

            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                assert isinstance(transport, asyncio.Transport)
                transports.append(transport)

            def get_buffer(self, sizehint: int) -> bytearray:
                return self.buffer

            def buffer_updated(self, nbytes: int) -> None:
                received.extend(self.buffer[:nbytes])

            def eof_received(self) -> bool:
                eofs.append(True)
                got_eof.set()
                return True  # half-open: keep the transport

            def connection_lost(self, exc: Exception | None) -> None:
                closed.set()

        loop = asyncio.get_running_loop()
        server = await loop.create_server(Buffered, "127.0.0.1", 0)
        _, writer = await asyncio.open_connection(*server.sockets[0].getsockname())
        assert writer.can_write_eof()
        writer.writelines([b"abc", b"defg"])
        writer.write_eof()
        await got_eof.wait()
        assert received == b"abcdefg"  # delivered three bytes at a time, in order
        transports[0].pause_reading()
        transports[0].resume_reading()  # as StreamReaderProtocol does when its buffer drains
        await asyncio.sleep(0)
        assert eofs == [True]  # EOF is reported once
        cast(Any, server).close_clients()  # asyncio.Server has it from 3.13 on
        await closed.wait()
        writer.close()
        server.close()

    run_once(scenario)


def test_asyncio_serve_forever_and_context_manager() -> None:
    async def scenario() -> None:
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0, start_serving=False)
        assert not server.is_serving()
        async with server:
            task = asyncio.ensure_future(server.serve_forever())
            await asyncio.sleep(0)
            assert server.is_serving()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        assert not server.is_serving()
        assert server.sockets == ()

    run_once(scenario)


# -- TCP semantics, trio and anyio -----------------------------------------------------------------


def test_trio_half_close_reset_refused_and_ports() -> None:
    async def scenario() -> None:
        async def upper(stream: trio.SocketStream) -> None:
            data = b""
            while chunk := await stream.receive_some(2):
                data += chunk
            await stream.send_all(data.upper())
            await stream.aclose()

        async with trio.open_nursery() as nursery:
            serve = functools.partial(trio.serve_tcp, upper, 0, host="127.0.0.1")
            listeners = await nursery.start(serve)
            port = listeners[0].socket.getsockname()[1]
            assert port == FIRST_EPHEMERAL_PORT
            stream = await trio.open_tcp_stream("localhost", port)
            assert stream.socket.getpeername() == ("127.0.0.1", port)
            await stream.send_all(b"abc")
            await stream.send_all(b"def")
            await stream.send_eof()
            assert await stream.receive_some(100) == b"ABCDEF"
            assert await stream.receive_some(100) == b""
            await stream.aclose()

            # An abortive close: the server's receive fails with a reset.
            reset = trio.Event()

            async def expect_reset(server_stream: trio.SocketStream) -> None:
                with pytest.raises(trio.BrokenResourceError):
                    await server_stream.receive_some(10)
                reset.set()

            serve = functools.partial(trio.serve_tcp, expect_reset, 0, host="127.0.0.1")
            other = (await nursery.start(serve))[0].socket.getsockname()[1]
            client = trio.socket.socket()
            await client.connect(("127.0.0.1", other))
            client._sock.abort()  # type: ignore[attr-defined]
            await reset.wait()
            nursery.cancel_scope.cancel()
        with pytest.raises(OSError, match="all attempts to connect"):
            await trio.open_tcp_stream("127.0.0.1", port)

    run_once(scenario, "trio")
    run_once(scenario, "trio")


def test_trio_backpressure_blocks_the_sender() -> None:
    async def scenario() -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        client = await trio.open_tcp_stream("127.0.0.1", port)
        server = await listeners[0].accept()
        payload = bytes(range(256)) * (RECEIVE_BUFFER // 128)  # twice what the peer buffers
        sent = trio.Event()

        async def send() -> None:
            await client.send_all(payload)
            sent.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send)
            await trio.testing.wait_all_tasks_blocked()
            assert not sent.is_set()  # held back until the server reads
            received = b""
            while len(received) < len(payload):
                received += await server.receive_some(65536)
        assert received == payload
        await client.wait_send_all_might_not_block()  # room again: returns at once
        assert not server.socket.is_readable()
        await client.send_all(b"!")
        assert server.socket.is_readable()
        await client.aclose()
        await server.aclose()
        await listeners[0].aclose()

    import trio.testing

    run_once(scenario, "trio")


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_anyio_connect_tcp_on_both_backends(backend: Backend) -> None:
    async def serve_asyncio(port_box: list[int]) -> Any:
        async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(await reader.readexactly(4))
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        port_box.append(server.sockets[0].getsockname()[1])
        return server

    async def scenario() -> None:
        ports: list[int] = []
        async with anyio.create_task_group() as tg:
            if backend == "asyncio":
                await serve_asyncio(ports)
            else:

                async def echo(stream: trio.SocketStream) -> None:
                    await stream.send_all(await stream.receive_some(4))
                    await stream.aclose()

                serve = functools.partial(trio.serve_tcp, echo, 0, host="127.0.0.1")
                listeners: Any = await tg.start(serve)
                ports.append(listeners[0].socket.getsockname()[1])
            async with await anyio.connect_tcp("localhost", ports[0]) as stream:
                await stream.send(b"ping")
                assert await stream.receive() == b"ping"
                assert stream.extra(anyio.abc.SocketAttribute.remote_port) == ports[0]
            tg.cancel_scope.cancel()

    run_once(scenario, backend)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_anyio_listener_and_client_on_both_backends(backend: Backend) -> None:
    async def scenario() -> None:
        served: list[bytes] = []

        async def echo(stream: anyio.abc.SocketStream) -> None:
            async with stream:
                data = await stream.receive()
                served.append(data)
                await stream.send(data.upper())

        listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        assert port == FIRST_EPHEMERAL_PORT
        async with listener, anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, echo)
            async with await anyio.connect_tcp("127.0.0.1", port) as client:
                await client.send(b"ping")
                assert await client.receive() == b"PING"
            tg.cancel_scope.cancel()
        assert served == [b"ping"]

    run_once(scenario, backend)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_connecting_is_a_scheduling_point(backend: Backend) -> None:
    # On a real network a connect takes at least one loop turn: another task can run meanwhile.
    async def scenario() -> None:
        connecting = [False]

        async def connect(port: int) -> None:
            connecting[0] = True
            if backend == "asyncio":
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                connecting[0] = False
                writer.close()
            else:
                stream = await trio.open_tcp_stream("127.0.0.1", port)
                connecting[0] = False
                await stream.aclose()

        async def observe() -> None:
            assert not connecting[0], "saw a connection being made"

        # Never accepted from: the connection waits in the listener's backlog.
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        async with listener, anyio.create_task_group() as tg:
            tg.start_soon(connect, port)
            tg.start_soon(observe)

    report = explore(scenario, backend=backend)
    assert report.failed, str(report)
    assert "saw a connection being made" in str(report.error)


def test_outside_an_exploration_nothing_changes() -> None:
    # The hooks installed by explorations fall back to the real thing on a stock loop.
    run_once(net_scenarios.aiohttp_test_client_counter(True))

    async def real_listener() -> None:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
        async with listener:
            raw = listener.extra(anyio.abc.SocketAttribute.raw_socket)
            assert type(raw) is socket.socket

    async def over_real_sockets() -> None:
        await net_scenarios.aiohttp_test_client_counter(True)()

    asyncio.run(over_real_sockets())
    anyio.run(real_listener, backend="asyncio")
    anyio.run(real_listener, backend="trio")


def test_a_real_socket_reaching_trio_is_unsupported() -> None:
    async def scenario() -> None:
        with socket.socket() as sock:
            trio.socket.from_stdlib_socket(sock)

    with pytest.raises(UnsupportedScenario, match=r"from_stdlib_socket\(\) with a real socket"):
        explore(scenario, backend="trio")
