"""TCP over the simulated loopback network for the controlled asyncio loop.

:class:`SimulatedNetworkLoop` is the first base of ``ControlledLoop``: it implements the event
loop's networking methods (``create_server``, ``create_connection``, ``getaddrinfo``,
``sock_connect``/``sock_recv``/``sock_sendall``/``sock_accept``...) on :mod:`._network`, so
``asyncio.start_server``/``open_connection``, aiohttp's server and client and anyio's
``connect_tcp`` run unchanged inside an exploration.

A transport receives through a loop callback (``call_soon``), never inside the sender's step: the
callback runs before the next scheduling decision, and the tasks it wakes (a reader waiting in
``StreamReader.read``) become runnable like any other, so which of them runs next is the
explorer's choice and a replay token reproduces it.

aiohttp's ``TestServer`` binds a real socket by default (its ``socket_factory``); from the first
schedule on, that default is replaced with one that binds on the simulated network when the
running loop is a controlled one and calls aiohttp's own otherwise, so nothing changes outside an
exploration. anyio's listeners and aiohappyeyeballs' sockets are routed the same way
(:mod:`._net_hooks`); a real socket that still reaches ``sock_connect`` is never connected: a
simulated one stands in for it and the real one is closed.
"""

from __future__ import annotations

import _socket
import asyncio
import errno
import socket
import sys
from collections.abc import Callable, Iterable
from typing import Any

from ._common import unsupported
from ._net_hooks import hook_socket_users
from ._network import Network, SimSocket, addrinfo, nameinfo

#: The class of every stdlib socket (``socket.socket`` derives from it), which a test replacing
#: ``socket.socket`` to catch real sockets being made does not replace.
_RealSocket = _socket.socket
#: Bytes one delivery hands to a protocol at most (asyncio's selector transports read 256 KiB).
MAX_READ = 256 * 1024

_AIOHTTP_HOOKED = False
_SOCKETS_HOOKED = False


def _simulated_port_socket(original: Callable[..., Any]) -> Callable[..., Any]:
    def port_socket(host: str, port: int, family: socket.AddressFamily) -> Any:
        loop = asyncio._get_running_loop()
        if not isinstance(loop, SimulatedNetworkLoop):
            return original(host, port, family)
        sock = loop._net_network().socket(family)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        return sock

    port_socket.__wrapped__ = original  # type: ignore[attr-defined]
    return port_socket


def _hook_aiohttp_test_server() -> None:
    """Make aiohttp's TestServer bind on the simulated network inside an exploration."""
    global _AIOHTTP_HOOKED
    if _AIOHTTP_HOOKED:
        return
    test_utils = sys.modules.get("aiohttp.test_utils")
    if test_utils is None:
        return
    _AIOHTTP_HOOKED = True
    defaults = getattr(test_utils.BaseTestServer.__init__, "__kwdefaults__", None)
    if defaults and defaults.get("socket_factory") is test_utils.get_port_socket:
        defaults["socket_factory"] = _simulated_port_socket(test_utils.get_port_socket)


def asyncio_network() -> Network | None:
    """The running controlled asyncio loop's network, if the running loop is one."""
    loop = asyncio._get_running_loop()
    if isinstance(loop, SimulatedNetworkLoop):
        return loop._net_network()
    return None


def _hook_socket_users() -> None:
    global _SOCKETS_HOOKED
    _SOCKETS_HOOKED = hook_socket_users(asyncio_network)


def _no_tls(call: str) -> Exception:
    return unsupported(
        f"{call} with ssl",
        "the simulated network carries plain TCP and does not run TLS",
        "Explore the scenario over plain TCP (TLS does not change where tasks interleave)",
    )


class SimTransport(asyncio.Transport):
    """A stream transport over one :class:`SimSocket`."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: SimSocket,
        protocol: asyncio.BaseProtocol,
        server: SimServer | None = None,
    ) -> None:
        super().__init__()
        self._loop = loop
        self._sock = sock
        self._protocol = protocol
        self._server = server
        self._wbuf = bytearray()
        self._high = 64 * 1024
        self._low = 16 * 1024
        self._closing = False
        self._lost = False  # connection_lost is scheduled or done
        self._paused = False
        self._writing_paused = False
        self._eof_written = False
        self._eof_pending = False
        self._read_scheduled = False
        self._flush_scheduled = False
        self._eof_seen = False
        sock.read_hook = self._on_readable
        sock.write_hook = self._on_writable
        if server is not None:
            server._attach()

    def __repr__(self) -> str:
        return f"<SimTransport {self._sock!r}>"

    def _start(self) -> None:
        self._protocol.connection_made(self)
        self._on_readable()

    # -- info ---------------------------------------------------------------------------------

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "socket":
            return self._sock
        if name == "sockname":
            return self._sock.local
        if name == "peername":
            return self._sock.remote
        return default

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol

    def is_closing(self) -> bool:
        return self._closing

    # -- reading ------------------------------------------------------------------------------

    def _on_readable(self) -> None:
        if self._paused or self._closing or self._read_scheduled or self._eof_seen:
            return
        if not self._sock.readable():
            return
        self._read_scheduled = True
        self._loop.call_soon(self._deliver)

    def _deliver(self) -> None:
        self._read_scheduled = False
        if self._paused or self._closing:
            return
        sock = self._sock
        protocol = self._protocol
        try:
            if isinstance(protocol, asyncio.BufferedProtocol):
                buffer = protocol.get_buffer(-1)
                count = sock.recv_into(buffer)
                if count:
                    protocol.buffer_updated(count)
            else:
                data = sock.recv(MAX_READ)
                count = len(data)
                if count:
                    protocol.data_received(data)  # type: ignore[attr-defined]
        except BlockingIOError:
            return
        except OSError as error:
            self._force_close(error)
            return
        if not count:
            self._eof_seen = True  # nothing more will arrive
            keep_open = protocol.eof_received()  # type: ignore[attr-defined]
            if not keep_open:
                self.close()
            return
        self._on_readable()

    def pause_reading(self) -> None:
        self._paused = True

    def resume_reading(self) -> None:
        if self._paused and not self._closing:
            self._paused = False
            self._on_readable()

    def is_reading(self) -> bool:
        return not self._paused and not self._closing

    # -- writing ------------------------------------------------------------------------------

    def write(self, data: Any) -> None:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(
                f"data argument must be a bytes-like object, not {type(data).__name__!r}"
            )
        if self._eof_written:
            raise RuntimeError("Cannot call write() after write_eof()")
        if not data or self._lost:
            return
        if not self._wbuf:
            try:
                sent = self._sock.send(data)
            except BlockingIOError:
                sent = 0
            except OSError as error:
                self._force_close(error)
                return
            view = memoryview(data).cast("B")
            if sent == len(view):
                return
            data = view[sent:]
        self._wbuf += data
        self._maybe_pause_protocol()

    def writelines(self, list_of_data: Iterable[Any]) -> None:
        self.write(b"".join(list_of_data))

    def _on_writable(self) -> None:
        if self._flush_scheduled or self._lost:
            return
        if self._wbuf or self._eof_pending:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._lost:
            return
        if self._wbuf:
            try:
                sent = self._sock.send(self._wbuf)
            except BlockingIOError:
                sent = 0
            except OSError as error:
                self._force_close(error)
                return
            del self._wbuf[:sent]
            self._maybe_resume_protocol()
        if not self._wbuf:
            if self._closing:
                self._finish_close(None)
            elif self._eof_pending:
                self._eof_pending = False
                self._sock.shutdown(socket.SHUT_WR)

    def write_eof(self) -> None:
        if self._closing or self._eof_written:
            return
        self._eof_written = True
        if self._wbuf:
            self._eof_pending = True
        else:
            self._sock.shutdown(socket.SHUT_WR)

    def can_write_eof(self) -> bool:
        return True

    def get_write_buffer_size(self) -> int:
        return len(self._wbuf)

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return (self._low, self._high)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if high is None:
            high = 64 * 1024 if low is None else 4 * low
        if low is None:
            low = high // 4
        if not high >= low >= 0:
            raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
        self._high, self._low = high, low
        self._maybe_pause_protocol()

    def _maybe_pause_protocol(self) -> None:
        if not self._writing_paused and len(self._wbuf) > self._high:
            self._writing_paused = True
            self._protocol.pause_writing()

    def _maybe_resume_protocol(self) -> None:
        if self._writing_paused and len(self._wbuf) <= self._low:
            self._writing_paused = False
            self._protocol.resume_writing()

    # -- closing ------------------------------------------------------------------------------

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        if not self._wbuf:
            self._finish_close(None)

    def abort(self) -> None:
        self._force_close(None)

    def _force_close(self, error: Exception | None) -> None:
        if self._lost:
            return
        self._wbuf.clear()
        self._closing = True
        if error is None:
            self._sock.abort()
        self._finish_close(error)

    def _finish_close(self, error: Exception | None) -> None:
        if self._lost:
            return
        self._lost = True
        self._sock.close()
        self._loop.call_soon(self._connection_lost, error)

    def _connection_lost(self, error: Exception | None) -> None:
        try:
            self._protocol.connection_lost(error)
        finally:
            server, self._server = self._server, None
            if server is not None:
                server._detach()


class SimServer(asyncio.AbstractServer):
    """The listening side of ``create_server`` on the simulated network."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sockets: list[SimSocket],
        protocol_factory: Callable[[], asyncio.BaseProtocol],
    ) -> None:
        self._loop = loop
        self._sockets = sockets
        self._factory = protocol_factory
        self._serving = False
        self._closed = False
        self._active = 0
        self._transports: list[SimTransport] = []
        self._waiters: list[asyncio.Future[None]] = []
        self._forever: asyncio.Future[None] | None = None

    def __repr__(self) -> str:
        return f"<SimServer sockets={tuple(s.local for s in self._sockets)}>"

    @property
    def sockets(self) -> tuple[SimSocket, ...]:
        return () if self._closed else tuple(self._sockets)

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def is_serving(self) -> bool:
        return self._serving

    def _start_serving(self) -> None:
        if self._serving or self._closed:
            return
        self._serving = True
        for sock in self._sockets:
            sock.read_hook = self._accept_hook(sock)
            if sock.backlog:
                self._loop.call_soon(self._accept, sock)

    def _accept_hook(self, sock: SimSocket) -> Callable[[], None]:
        def hook() -> None:
            self._loop.call_soon(self._accept, sock)

        return hook

    def _accept(self, sock: SimSocket) -> None:
        while self._serving and sock.backlog:
            conn, _ = sock.accept()
            transport = SimTransport(self._loop, conn, self._factory(), server=self)
            self._transports.append(transport)
            transport._start()

    async def start_serving(self) -> None:
        self._start_serving()

    async def serve_forever(self) -> None:
        if self._forever is not None:
            raise RuntimeError(f"server {self!r} is already being awaited on serve_forever()")
        if self._closed:
            raise RuntimeError(f"server {self!r} is closed")
        self._start_serving()
        self._forever = self._loop.create_future()
        try:
            await self._forever
        except asyncio.CancelledError:
            try:
                self.close()
                await self.wait_closed()
            finally:
                raise
        finally:
            self._forever = None

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._serving = False
        for sock in self._sockets:
            sock.read_hook = None
            sock.close()
        if self._forever is not None and not self._forever.done():
            self._forever.cancel()
        self._wake()

    def close_clients(self) -> None:
        for transport in list(self._transports):
            transport.close()

    def abort_clients(self) -> None:
        for transport in list(self._transports):
            transport.abort()

    def _attach(self) -> None:
        self._active += 1

    def _detach(self) -> None:
        self._active -= 1
        self._transports = [t for t in self._transports if not t._lost]
        self._wake()

    def _wake(self) -> None:
        if self._closed and self._active == 0:
            waiters, self._waiters = self._waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    async def wait_closed(self) -> None:
        # Python 3.11 returns at once once the server is closed; 3.12 also waits for every
        # connection it accepted to close. Keep the running interpreter's behaviour.
        if self._closed and (sys.version_info < (3, 12) or self._active == 0):
            return
        waiter = self._loop.create_future()
        self._waiters.append(waiter)
        await waiter


class SimulatedNetworkLoop(asyncio.AbstractEventLoop):
    """The networking part of the controlled loop: TCP on the explorer's loopback network."""

    _net: Network | None = None

    def _net_network(self) -> Network:
        net = self._net
        if net is None:
            net = self._net = Network()
        return net

    def _net_reset(self) -> None:
        """Drop every listener and connection: each schedule starts on an empty network."""
        if self._net is not None:
            self._net.close()
            self._net = None
        if not _AIOHTTP_HOOKED:
            _hook_aiohttp_test_server()
        if not _SOCKETS_HOOKED:
            _hook_socket_users()

    def _net_socket(self, sock: object, call: str) -> SimSocket:
        if isinstance(sock, SimSocket):
            if sock.network is not self._net:
                raise OSError(errno.EBADF, f"{call}: the socket belongs to an earlier schedule")
            return sock
        net = self._net_network()
        if isinstance(sock, _RealSocket):
            sim = net.adopted.get(sock)
            if sim is not None:
                return sim
        raise unsupported(
            f"{call} on {type(sock).__name__} {sock!r}",
            "only sockets connected through the simulated loopback network can be used, and "
            "this one is a real socket bound or listening outside it",
            "Create servers with loop.create_server()/asyncio.start_server() on 127.0.0.1",
        )

    async def _net_wait(self, sock: SimSocket, writer: bool = False) -> None:
        waiter: asyncio.Future[None] = self.create_future()

        def hook() -> None:
            if not waiter.done():
                waiter.set_result(None)

        if writer:
            sock.add_writer(hook)
        else:
            sock.add_reader(hook)
        try:
            await waiter
        finally:
            sock.remove_waiter(hook)

    # -- names ----------------------------------------------------------------------------------

    async def getaddrinfo(  # type: ignore[override]
        self,
        host: bytes | str | None,
        port: bytes | str | int | None,
        *,
        family: int = 0,
        type: int = 0,
        proto: int = 0,
        flags: int = 0,
    ) -> list[tuple[socket.AddressFamily, socket.SocketKind, int, str, tuple[Any, ...]]]:
        infos = addrinfo(host, port, family, type, proto, flags, "loop.getaddrinfo()")
        await asyncio.sleep(0)  # the stock loop resolves in a thread: other tasks run meanwhile
        return infos

    async def getnameinfo(self, sockaddr: tuple[Any, ...], flags: int = 0) -> tuple[str, str]:
        names = nameinfo(sockaddr, flags, "loop.getnameinfo()")
        await asyncio.sleep(0)  # the stock loop resolves in a thread: other tasks run meanwhile
        return names

    # -- connections --------------------------------------------------------------------------

    async def create_connection(  # type: ignore[override]
        self,
        protocol_factory: Callable[[], asyncio.BaseProtocol],
        host: str | None = None,
        port: int | str | None = None,
        *,
        ssl: Any = None,
        family: int = 0,
        proto: int = 0,
        flags: int = 0,
        sock: Any = None,
        local_addr: tuple[str, int] | None = None,
        server_hostname: str | None = None,
        ssl_handshake_timeout: float | None = None,
        ssl_shutdown_timeout: float | None = None,
        happy_eyeballs_delay: float | None = None,
        interleave: int | None = None,
        all_errors: bool = False,
    ) -> tuple[asyncio.Transport, asyncio.BaseProtocol]:
        if ssl:
            raise _no_tls("loop.create_connection()")
        net = self._net_network()
        if sock is not None:
            if host is not None or port is not None:
                raise ValueError("host/port and sock can not be specified at the same time")
            sim = self._net_socket(sock, "loop.create_connection(sock=...)")
            if isinstance(sock, _RealSocket):
                # The real socket was never connected; the simulated one carries the bytes.
                del net.adopted[sock]
                sock.close()
            if not sim.connected:
                raise OSError(errno.ENOTCONN, "Transport endpoint is not connected")
        else:
            if host is None and port is None:
                raise ValueError("host and port was not specified and no sock specified")
            infos = addrinfo(
                host, port, family, socket.SOCK_STREAM, proto, flags, "loop.create_connection()"
            )
            # Connecting takes the stock loop at least one turn: other tasks may run (and the
            # listener may go away) before the connection is made.
            await asyncio.sleep(0)
            errors: list[OSError] = []
            for info_family, _, _, _, address in infos:
                sim = net.socket(info_family)
                try:
                    if local_addr is not None:
                        sim.bind(local_addr)
                    sim.connect(address)
                    break
                except OSError as error:
                    sim.close()
                    errors.append(error)
            else:
                if len(errors) == 1 or all(str(e) == str(errors[0]) for e in errors):
                    raise errors[0]
                raise OSError(f"Multiple exceptions: {', '.join(str(e) for e in errors)}")
        transport = SimTransport(self, sim, protocol_factory())
        transport._start()
        return transport, transport.get_protocol()

    async def create_server(  # type: ignore[override]
        self,
        protocol_factory: Callable[[], asyncio.BaseProtocol],
        host: str | Iterable[str] | None = None,
        port: int | None = None,
        *,
        family: int = socket.AF_UNSPEC,
        flags: int = socket.AI_PASSIVE,
        sock: Any = None,
        backlog: int = 100,
        ssl: Any = None,
        reuse_address: bool | None = None,
        reuse_port: bool | None = None,
        keep_alive: bool | None = None,
        ssl_handshake_timeout: float | None = None,
        ssl_shutdown_timeout: float | None = None,
        start_serving: bool = True,
    ) -> SimServer:
        if ssl:
            raise _no_tls("loop.create_server()")
        net = self._net_network()
        sockets: list[SimSocket] = []
        if sock is not None:
            if host is not None or port is not None:
                raise ValueError("host/port and sock can not be specified at the same time")
            if not isinstance(sock, SimSocket):
                raise unsupported(
                    "loop.create_server(sock=...) with a real socket",
                    "the socket was bound outside the simulated loopback network",
                    "Pass host='127.0.0.1' and port=0 instead of a socket",
                )
            sockets.append(self._net_socket(sock, "loop.create_server(sock=...)"))
        else:
            hosts: list[str | None]
            if host is None or isinstance(host, str):
                hosts = [host or None]
            else:
                hosts = list(host)
            seen: set[tuple[Any, ...]] = set()
            try:
                for one in hosts:
                    infos = addrinfo(
                        one,
                        port,
                        family,
                        socket.SOCK_STREAM,
                        0,
                        flags | socket.AI_PASSIVE,
                        "loop.create_server()",
                    )
                    for info_family, _, _, _, address in infos:
                        if (info_family, *address) in seen:
                            continue
                        seen.add((info_family, *address))
                        listener = net.socket(info_family)
                        sockets.append(listener)
                        listener.bind(address)
            except BaseException:
                for listener in sockets:
                    listener.close()
                raise
        for listener in sockets:
            listener.listen(backlog)
        server = SimServer(self, sockets, protocol_factory)
        if start_serving:
            server._start_serving()
            await asyncio.sleep(0)  # as the stock loop does once it starts serving
        return server

    async def connect_accepted_socket(  # type: ignore[override]
        self,
        protocol_factory: Callable[[], asyncio.BaseProtocol],
        sock: Any,
        *,
        ssl: Any = None,
        ssl_handshake_timeout: float | None = None,
        ssl_shutdown_timeout: float | None = None,
    ) -> tuple[asyncio.Transport, asyncio.BaseProtocol]:
        if ssl:
            raise _no_tls("loop.connect_accepted_socket()")
        sim = self._net_socket(sock, "loop.connect_accepted_socket()")
        if not sim.connected:
            raise OSError(errno.ENOTCONN, "Transport endpoint is not connected")
        transport = SimTransport(self, sim, protocol_factory())
        transport._start()
        return transport, transport.get_protocol()

    # -- readiness callbacks on simulated sockets (anyio's wait_socket_readable, ...) ------------

    def _net_watch(
        self, sock: SimSocket, writer: bool, callback: Callable[..., object], args: tuple[Any, ...]
    ) -> None:
        watches = sock.watches
        entry = (callback, args)
        watches[writer] = entry
        arm = sock.add_writer if writer else sock.add_reader

        def hook() -> None:
            if watches.get(writer) is not entry or sock.closed:
                return  # removed, or replaced by a newer registration with its own hook
            if sock.writable() if writer else sock.readable():
                self.call_soon(callback, *args)
            arm(hook)  # level-triggered, like a selector: armed again for the next change

        arm(hook)
        if sock.writable() if writer else sock.readable():
            self.call_soon(callback, *args)

    def add_reader(  # type: ignore[override]
        self, fd: Any, callback: Callable[..., object], *args: Any
    ) -> None:
        if not isinstance(fd, SimSocket):
            return super().add_reader(fd, callback, *args)
        self._net_watch(fd, False, callback, args)

    def add_writer(  # type: ignore[override]
        self, fd: Any, callback: Callable[..., object], *args: Any
    ) -> None:
        if not isinstance(fd, SimSocket):
            return super().add_writer(fd, callback, *args)
        self._net_watch(fd, True, callback, args)

    def remove_reader(self, fd: Any) -> bool:
        if not isinstance(fd, SimSocket):
            return super().remove_reader(fd)
        return fd.watches.pop(False, None) is not None

    def remove_writer(self, fd: Any) -> bool:
        if not isinstance(fd, SimSocket):
            return super().remove_writer(fd)
        return fd.watches.pop(True, None) is not None

    # -- low-level socket operations ------------------------------------------------------------

    async def sock_connect(self, sock: Any, address: Any) -> None:
        net = self._net_network()
        await asyncio.sleep(0)  # a non-blocking connect completes a loop turn later at best
        if isinstance(sock, _RealSocket) and sock not in net.adopted:
            sim = net.socket(sock.family, sock.type)
            try:
                sim.connect(address)
            except BaseException:
                sim.close()
                raise
            net.adopted[sock] = sim
            return
        self._net_socket(sock, "loop.sock_connect()").connect(address)

    async def sock_recv(self, sock: Any, n: int) -> bytes:
        sim = self._net_socket(sock, "loop.sock_recv()")
        while True:
            try:
                return sim.recv(n)
            except BlockingIOError:
                await self._net_wait(sim)

    async def sock_recv_into(self, sock: Any, buf: Any) -> int:
        sim = self._net_socket(sock, "loop.sock_recv_into()")
        while True:
            try:
                return sim.recv_into(buf)
            except BlockingIOError:
                await self._net_wait(sim)

    async def sock_sendall(self, sock: Any, data: Any) -> None:
        sim = self._net_socket(sock, "loop.sock_sendall()")
        view = memoryview(data).cast("B")
        while view:
            try:
                sent = sim.send(view)
            except BlockingIOError:
                await self._net_wait(sim, writer=True)
                continue
            view = view[sent:]

    async def sock_accept(self, sock: Any) -> tuple[Any, Any]:
        sim = self._net_socket(sock, "loop.sock_accept()")
        waited = False
        while True:
            try:
                accepted = sim.accept()
            except BlockingIOError:
                await self._net_wait(sim)
                waited = True
                continue
            if not waited:
                await asyncio.sleep(0)  # the stock loop always waits for the accept callback
            return accepted
