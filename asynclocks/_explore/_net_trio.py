"""TCP over the simulated loopback network for the controlled trio run.

While an exploration runs, :func:`install` sets trio's custom socket factory and hostname resolver
(``trio.socket.set_custom_socket_factory``/``set_custom_hostname_resolver``; both are scoped to
the one ``trio.run`` the explorer drives, and the previous ones are put back after it), so
``trio.socket.socket()`` returns a :class:`TrioSimSocket` on the explorer's network and
``trio.open_tcp_stream``, ``trio.serve_tcp``, ``trio.open_tcp_listeners``, ``trio.SocketStream``,
``trio.SocketListener`` and anyio's ``connect_tcp`` and ``create_tcp_listener`` (see
:mod:`._net_hooks`) on trio work unchanged.

A task that has to wait (nothing to receive, no connection to accept, the peer's buffer full)
parks with ``trio.lowlevel.wait_task_rescheduled`` and is rescheduled by the network's hook when
the other side acts; it then re-enters the controlled run queue, so which ready task runs next
is the explorer's choice. Like trio's own sockets, every operation is a checkpoint: a call that
did not have to wait yields once (``cancel_shielded_checkpoint``), a call that waited does not
yield again.
"""

from __future__ import annotations

import socket as _stdlib_socket
import threading
from collections.abc import Callable
from typing import Any

import trio

from ._net_hooks import hook_socket_users, hook_trio_wrap
from ._network import Network, SimSocket, addrinfo, nameinfo

_network: Network | None = None
#: The thread running the explorer's trio run (anyio's listeners are routed only there).
_active: int | None = None
#: Every module of ``SOCKET_USERS`` is hooked: no need to look for them after each schedule.
_users_hooked = False


def current_network() -> Network:
    """The network of the schedule that is running (made on first use)."""
    global _network
    if _network is None:
        _network = Network()
    return _network


def _exploring_network() -> Network | None:
    return current_network() if _active == threading.get_ident() else None


def reset() -> None:
    """Drop every listener and connection: each schedule starts on an empty network."""
    global _network, _users_hooked
    if _network is not None:
        _network.close()
        _network = None
    if _active is not None and not _users_hooked:
        # A library that makes its own sockets may have been imported by the last schedule.
        _users_hooked = hook_socket_users(_exploring_network)


async def _wait(sim: SimSocket, writer: bool) -> None:
    task = trio.lowlevel.current_task()

    def hook() -> None:
        trio.lowlevel.reschedule(task)

    if writer:
        sim.add_writer(hook)
    else:
        sim.add_reader(hook)

    def abort(raise_cancel: Any) -> trio.lowlevel.Abort:
        sim.remove_waiter(hook)
        return trio.lowlevel.Abort.SUCCEEDED

    await trio.lowlevel.wait_task_rescheduled(abort)


async def _nonblocking(sim: SimSocket, operation: Callable[[], Any], writer: bool) -> Any:
    await trio.lowlevel.checkpoint_if_cancelled()
    waited = False
    while True:
        try:
            result = operation()
        except BlockingIOError:
            await _wait(sim, writer)
            waited = True
            continue
        if not waited:
            await trio.lowlevel.cancel_shielded_checkpoint()
        return result


class TrioSimSocket(trio.socket.SocketType):
    """A trio socket on the simulated network (what ``trio.socket.socket()`` returns inside)."""

    def __init__(self, sim: SimSocket) -> None:
        super().__init__()
        # anyio reads the wrapped stdlib socket as ``_sock`` (its ``raw_socket`` attribute).
        self._sock = sim

    def __repr__(self) -> str:
        return f"<trio {self._sock!r}>"

    # -- synchronous part -----------------------------------------------------------------------

    @property
    def family(self) -> _stdlib_socket.AddressFamily:
        return self._sock.family

    @property
    def type(self) -> _stdlib_socket.SocketKind:
        return self._sock.type

    @property
    def proto(self) -> int:
        return int(self._sock.proto)

    @property
    def did_shutdown_SHUT_WR(self) -> bool:  # noqa: N802 - trio's name
        return self._sock.shut_wr

    def fileno(self) -> int:
        return self._sock.fileno()

    def detach(self) -> int:
        return self._sock.detach()

    def getsockname(self) -> Any:
        return self._sock.getsockname()

    def getpeername(self) -> Any:
        return self._sock.getpeername()

    def getsockopt(self, level: int, optname: int, buflen: int | None = None) -> Any:
        return self._sock.getsockopt(level, optname, buflen)

    def setsockopt(self, level: int, optname: int, value: Any, optlen: int | None = None) -> None:
        self._sock.setsockopt(level, optname, value)

    def listen(self, backlog: int = 128) -> None:
        self._sock.listen(backlog)

    def get_inheritable(self) -> bool:
        return False

    def set_inheritable(self, inheritable: bool) -> None:
        pass

    def dup(self) -> TrioSimSocket:
        raise OSError("dup() is not supported on the simulated network")

    def shutdown(self, flag: int) -> None:
        self._sock.shutdown(flag)

    def close(self) -> None:
        self._sock.close()

    def is_readable(self) -> bool:
        return self._sock.readable()

    def __enter__(self) -> TrioSimSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- asynchronous part ----------------------------------------------------------------------

    async def bind(self, address: Any) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        self._sock.bind(address)

    async def connect(self, address: Any) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        self._sock.connect(address)
        await trio.lowlevel.cancel_shielded_checkpoint()

    async def wait_writable(self) -> None:
        sim = self._sock
        if sim.writable():
            await trio.lowlevel.checkpoint()
            return
        while not sim.writable():
            await _wait(sim, True)

    async def accept(self) -> tuple[TrioSimSocket, Any]:
        conn, address = await _nonblocking(self._sock, self._sock.accept, False)
        return TrioSimSocket(conn), address

    async def recv(self, buflen: int, flags: int = 0, /) -> bytes:
        sim = self._sock
        data: bytes = await _nonblocking(sim, lambda: sim.recv(buflen), False)
        return data

    async def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        sim = self._sock
        count: int = await _nonblocking(sim, lambda: sim.recv_into(buffer, nbytes), False)
        return count

    async def send(self, data: Any, flags: int = 0, /) -> int:
        sim = self._sock
        sent: int = await _nonblocking(sim, lambda: sim.send(data), True)
        return sent


class SimSocketFactory(trio.abc.SocketFactory):
    """``trio.socket.socket()`` inside an exploration: sockets on the simulated network."""

    def socket(
        self,
        family: _stdlib_socket.AddressFamily | int | None = None,
        type: _stdlib_socket.SocketKind | int | None = None,
        proto: int | None = None,
    ) -> trio.socket.SocketType:
        if family is None or family == -1:
            family = _stdlib_socket.AF_INET
        if type is None or type == -1:
            type = _stdlib_socket.SOCK_STREAM
        return TrioSimSocket(current_network().socket(family, type))


class SimResolver(trio.abc.HostnameResolver):
    """Names on the simulated network: ``localhost`` and the loopback addresses only."""

    async def getaddrinfo(
        self,
        host: bytes | None,
        port: bytes | str | int | None,
        family: int = 0,
        type: int = 0,
        proto: int = 0,
        flags: int = 0,
    ) -> list[Any]:
        await trio.lowlevel.checkpoint()
        return addrinfo(host, port, family, type, proto, flags, "trio.socket.getaddrinfo()")

    async def getnameinfo(self, sockaddr: Any, flags: int) -> tuple[str, str]:
        await trio.lowlevel.checkpoint()
        return nameinfo(sockaddr, flags, "trio.socket.getnameinfo()")


def install() -> Callable[[], None]:
    """Route trio's sockets and name lookups to the simulated network; returns the undo."""
    global _active, _users_hooked
    old_factory = trio.socket.set_custom_socket_factory(SimSocketFactory())
    old_resolver = trio.socket.set_custom_hostname_resolver(SimResolver())
    _users_hooked = hook_socket_users(_exploring_network)
    unwrap = hook_trio_wrap(TrioSimSocket)
    _active = threading.get_ident()

    def restore() -> None:
        global _active
        _active = None
        unwrap()
        trio.socket.set_custom_socket_factory(old_factory)
        trio.socket.set_custom_hostname_resolver(old_resolver)
        reset()

    return restore
