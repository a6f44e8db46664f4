"""The explorer's own loopback network: TCP between tasks of one scenario, in memory.

Inside an exploration no real socket is connected: listeners live in a table keyed by
``(address, port)``, a connection is a pair of :class:`SimSocket` objects whose receive buffers
the other side writes into, and every event that could wake a task (bytes arrived, the peer shut
its side down or reset the connection, a connection is waiting to be accepted, buffer space freed
up) calls the hooks the backend registered. The backends turn those hooks into loop callbacks
(asyncio) or parking-lot wake-ups (trio), so which ready task runs after a delivery is one more
scheduling choice of the explorer, and a replay token reproduces it exactly.

Addresses: connections and bound addresses are loopback only, ``127.0.0.1``, ``::1`` and the name
``localhost`` (``127.0.0.1`` on IPv4 sockets, ``::1`` on IPv6 ones). A listener may also bind the
wildcard addresses ``0.0.0.0``/``::`` (and ``""``), which on this network means "every loopback
address of the family", so servers that listen on all interfaces by default work unchanged. Any
other address raises :class:`UnsupportedScenario` naming it.

Ports: port 0 picks the next free port counting up from :data:`FIRST_EPHEMERAL_PORT`, the same
sequence in every schedule, because the network is rebuilt empty before each one.

Semantics kept from TCP: bytes arrive in order per direction; ``shutdown(SHUT_WR)`` is a
half-close (the peer reads ``b""`` once the bytes before it are read, and may still send);
``close()`` ends both directions (the peer reads EOF, then its sends fail with ``BrokenPipeError``);
an abortive close (``abort()``, or closing a listener with connections not yet accepted) makes
the peer's next receive fail with ``ConnectionResetError`` and drops what it had not read; each
receive buffer holds at most :data:`RECEIVE_BUFFER` bytes, so a writer whose peer stops reading
is held back (asyncio flow control, trio's ``send`` blocking) instead of buffering without limit.
"""

from __future__ import annotations

import errno
import os
import socket
import sys
import types
from collections import deque
from collections.abc import Callable
from typing import Any

from ._common import is_library, short_path, unsupported, user_frame_text

#: Ports handed out for port 0, counting up (the usual Linux ephemeral range starts here).
FIRST_EPHEMERAL_PORT = 32768
#: Bytes a receive buffer holds before the sending side has to wait.
RECEIVE_BUFFER = 256 * 1024
#: Fake file descriptors count up from here; they never name a real descriptor of the process.
FIRST_FAKE_FD = 1_000_000

LOOPBACK: dict[int, str] = {socket.AF_INET: "127.0.0.1", socket.AF_INET6: "::1"}
WILDCARD: dict[int, str] = {socket.AF_INET: "0.0.0.0", socket.AF_INET6: "::"}
_LOOPBACK_NAMES = {"127.0.0.1", "::1", "localhost"}
_FAMILIES = (socket.AF_INET, socket.AF_INET6)

Hook = Callable[[], None]
Address = tuple[Any, ...]


_EXPLORER_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "")
#: The explorer's functions that run task steps: below them is the caller of explore().
_DRIVERS = {"run_schedule", "_cleanup", "_drive", "run_plan", "drive", "explore", "replay"}


def _caller_outside_packages() -> str | None:
    """``file:line`` of the innermost frame outside the stdlib, asynclocks and installed packages.

    The address usually reaches the network through a client library (aiohttp's resolver,
    httpcore's backend); the line to show is the scenario's call into it.
    """
    frame: types.FrameType | None = sys._getframe(2)  # not_loopback's caller and up
    while frame is not None:
        filename = frame.f_code.co_filename
        if filename.startswith(_EXPLORER_DIR) and frame.f_code.co_name in _DRIVERS:
            return None  # reached the explorer's driver: the call came from a library's task
        parts = set(filename.replace("\\", "/").split("/"))
        if not is_library(filename) and not parts & {"site-packages", "dist-packages"}:
            return f"{short_path(filename)}:{frame.f_lineno}"
        frame = frame.f_back
    return None


def not_loopback(call: str, host: object) -> Exception:
    """The UnsupportedScenario for an address outside the simulated loopback network."""
    error = unsupported(
        f"{call} with address {host!r}",
        "the explorer simulates only a loopback network (127.0.0.1, ::1, localhost), and talking "
        "to any other host would be real I/O whose timing it can neither control nor replay",
        "Start the server inside the scenario and connect to it on 127.0.0.1",
    )
    seen, wanted = user_frame_text(), _caller_outside_packages()
    if seen and wanted and seen != wanted:
        error.args = (str(error).replace(f" at {seen} ", f" at {wanted} ", 1),)
    return error


def loopback_ip(host: object, family: int, call: str, *, listening: bool = False) -> str:
    """The IP address ``host`` stands for on a socket of ``family``, checked to be loopback.

    Args:
        host: A host as user code passes it (``"127.0.0.1"``, ``"localhost"``, ``b"::1"``...).
        family: ``AF_INET`` or ``AF_INET6``.
        call: The call to name in the error.
        listening: Whether the wildcard addresses (``0.0.0.0``, ``::``, ``""``, None) are allowed.

    Raises:
        UnsupportedScenario: The address is not loopback (or a wildcard, when not listening).
    """
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    if host is None or host == "":
        if listening:
            return WILDCARD[family]
        raise not_loopback(call, host)
    if not isinstance(host, str):
        raise TypeError(f"{call}: a host must be a str, not {type(host).__name__}")
    if host == "localhost":
        return LOOPBACK[family]
    if listening and host == WILDCARD[family]:
        return host
    if host == LOOPBACK[family]:
        return host
    if host in _LOOPBACK_NAMES:
        other = "IPv6" if family == socket.AF_INET else "IPv4"
        raise OSError(
            errno.EAFNOSUPPORT,
            f"{host!r} is an {other} address and this socket's family is "
            f"{socket.AddressFamily(family).name}",
        )
    raise not_loopback(call, host)


def is_loopback_host(host: object) -> bool:
    """Whether ``host`` names one of the simulated network's addresses (or a wildcard)."""
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    return host is None or host in _LOOPBACK_NAMES or host in ("", "0.0.0.0", "::")


def _sockaddr(family: int, ip: str, port: int) -> Address:
    return (ip, port, 0, 0) if family == socket.AF_INET6 else (ip, port)


def _split(address: object, family: int, call: str) -> tuple[object, int]:
    if not isinstance(address, tuple) or len(address) < 2:
        raise TypeError(
            f"{call}: an address must be a (host, port) tuple"
            f"{' or (host, port, flowinfo, scope_id)' if family == socket.AF_INET6 else ''}, "
            f"got {address!r}"
        )
    host, port = address[0], address[1]
    if isinstance(port, str) and port.isdigit():
        port = int(port)
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        raise OverflowError(f"{call}: port must be 0-65535, got {port!r}")
    return host, port


class SimSocket:
    """One end of a simulated TCP connection, or a listener: a non-blocking socket in memory.

    It has the synchronous, non-blocking part of :class:`socket.socket`'s interface (operations
    that would block raise :class:`BlockingIOError`); the backends build waiting on top of
    :meth:`add_reader`/:meth:`add_writer` and the persistent hooks.
    """

    def __init__(
        self, network: Network, family: int = socket.AF_INET, type: int = socket.SOCK_STREAM
    ) -> None:
        if family not in _FAMILIES:
            raise OSError(
                errno.EAFNOSUPPORT,
                f"the simulated network has only AF_INET and AF_INET6 sockets, not {family!r}",
            )
        if type & ~(socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC) != socket.SOCK_STREAM:
            raise unsupported(
                f"a socket of type {type!r}",
                "the simulated network carries TCP streams only",
                "Use SOCK_STREAM sockets (TCP) inside the scenario",
            )
        self.network = network
        self.family = socket.AddressFamily(family)
        self.type = socket.SOCK_STREAM
        self.proto = socket.IPPROTO_TCP
        self._fd = network.next_fd()
        self.local: Address | None = None
        self.remote: Address | None = None
        self.listening = False
        self.closed = False
        self.connected = False
        self.backlog: deque[SimSocket] = deque()
        self.peer: SimSocket | None = None
        self.inbox = bytearray()
        self.eof_in = False  # the peer will send nothing more
        self.reset_in = False  # the peer reset the connection
        self.shut_wr = False
        self.shut_rd = False
        self.peer_closed = False  # the peer closed: sending fails
        self._blocking = True
        self._timeout: float | None = None
        self._options: dict[tuple[int, int], int | bytes] = {}
        #: Called on every readable/writable change while set (asyncio transports and servers).
        self.read_hook: Hook | None = None
        self.write_hook: Hook | None = None
        self._readers: list[Hook] = []
        self._writers: list[Hook] = []
        #: add_reader/add_writer registrations of the asyncio loop, by "is it the writer side".
        self.watches: dict[bool, tuple[Callable[..., object], tuple[Any, ...]]] = {}
        network.sockets.append(self)

    def __repr__(self) -> str:
        state = "listening" if self.listening else "connected" if self.connected else "new"
        if self.closed:
            state = "closed"
        return f"<SimSocket fd={self._fd} {state} local={self.local} remote={self.remote}>"

    # -- waiting ------------------------------------------------------------------------------

    def add_reader(self, hook: Hook) -> None:
        """Call ``hook`` once, at the next change that may make :meth:`recv`/:meth:`accept` work."""
        self._readers.append(hook)

    def add_writer(self, hook: Hook) -> None:
        """Call ``hook`` once, at the next change that may make :meth:`send` work."""
        self._writers.append(hook)

    def remove_waiter(self, hook: Hook) -> None:
        """Forget a one-shot hook (its waiter was cancelled)."""
        for hooks in (self._readers, self._writers):
            if hook in hooks:
                hooks.remove(hook)

    def wake_readers(self) -> None:
        if self.read_hook is not None:
            self.read_hook()
        hooks, self._readers = self._readers, []
        for hook in hooks:
            hook()

    def wake_writers(self) -> None:
        if self.write_hook is not None:
            self.write_hook()
        hooks, self._writers = self._writers, []
        for hook in hooks:
            hook()

    # -- state ------------------------------------------------------------------------------

    def readable(self) -> bool:
        """Whether recv/accept would not block (data, EOF, a reset or a pending connection)."""
        if self.closed:
            return True
        if self.listening:
            return bool(self.backlog)
        return bool(self.inbox) or self.eof_in or self.reset_in or self.shut_rd

    def writable(self) -> bool:
        """Whether send would not block (room in the peer's buffer, or an error to report)."""
        peer = self.peer
        if self.closed or peer is None or self.shut_wr or self.peer_closed or self.reset_in:
            return True
        return len(peer.inbox) < RECEIVE_BUFFER

    def _check_open(self) -> None:
        if self.closed:
            raise OSError(errno.EBADF, "Bad file descriptor")

    # -- the socket.socket interface ----------------------------------------------------------

    def fileno(self) -> int:
        return -1 if self.closed else self._fd

    def setblocking(self, flag: bool) -> None:
        self._blocking = bool(flag)
        self._timeout = None if flag else 0.0

    def getblocking(self) -> bool:
        return self._blocking

    def settimeout(self, value: float | None) -> None:
        self._timeout = value
        self._blocking = value != 0.0

    def gettimeout(self) -> float | None:
        return self._timeout

    def setsockopt(self, level: int, optname: int, value: int | bytes, *rest: Any) -> None:
        self._check_open()
        self._options[(level, optname)] = value

    def getsockopt(self, level: int, optname: int, buflen: int | None = None) -> int | bytes:
        self._check_open()
        if level == socket.SOL_SOCKET:
            if optname == socket.SO_ACCEPTCONN:
                return int(self.listening)
            if optname == socket.SO_ERROR:
                return 0
            if optname == socket.SO_TYPE:
                return int(self.type)
            if optname == socket.SO_RCVBUF:
                return RECEIVE_BUFFER
        value = self._options.get((level, optname), 0)
        if buflen is not None:
            return value if isinstance(value, bytes) else bytes(buflen)
        return value

    def getsockname(self) -> Address:
        self._check_open()
        if self.local is None:
            return _sockaddr(self.family, WILDCARD[self.family], 0)
        return self.local

    def getpeername(self) -> Address:
        self._check_open()
        if self.remote is None:
            raise OSError(errno.ENOTCONN, "Transport endpoint is not connected")
        return self.remote

    def bind(self, address: object) -> None:
        self._check_open()
        if self.local is not None:
            raise OSError(errno.EINVAL, "Invalid argument (the socket is already bound)")
        host, port = _split(address, self.family, "socket.bind()")
        ip = loopback_ip(host, self.family, "socket.bind()", listening=True)
        self.local = self.network.bind(self, ip, port)

    def listen(self, backlog: int = 128) -> None:
        self._check_open()
        if self.connected:
            raise OSError(errno.EINVAL, "Invalid argument (the socket is connected)")
        if self.local is None:
            self.local = self.network.bind(self, WILDCARD[self.family], 0)
        self.listening = True

    def accept(self) -> tuple[SimSocket, Address]:
        self._check_open()
        if not self.listening:
            raise OSError(errno.EINVAL, "Invalid argument (the socket is not listening)")
        if not self.backlog:
            raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")
        conn = self.backlog.popleft()
        assert conn.remote is not None
        return conn, conn.remote

    def connect(self, address: object) -> None:
        self._check_open()
        if self.connected:
            raise OSError(errno.EISCONN, "Transport endpoint is already connected")
        if self.listening:
            raise OSError(errno.EINVAL, "Invalid argument (the socket is listening)")
        host, port = _split(address, self.family, "socket.connect()")
        ip = loopback_ip(host, self.family, "socket.connect()")
        self.network.connect(self, ip, port)

    def connect_ex(self, address: object) -> int:
        try:
            self.connect(address)
        except OSError as error:
            return error.errno or errno.EINVAL
        return 0

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        self._check_open()
        if bufsize < 0:
            raise ValueError("negative buffersize in recv")
        if self.reset_in:
            self.inbox.clear()
            raise ConnectionResetError(errno.ECONNRESET, "Connection reset by peer")
        inbox = self.inbox
        if inbox and not self.shut_rd:
            data = bytes(inbox[:bufsize])
            del inbox[:bufsize]
            peer = self.peer
            if peer is not None:
                peer.wake_writers()
            return data
        if self.eof_in or self.shut_rd or not self.connected:
            if not self.connected and not self.eof_in:
                raise OSError(errno.ENOTCONN, "Transport endpoint is not connected")
            return b""
        raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        view = memoryview(buffer).cast("B")
        data = self.recv(nbytes or len(view))
        view[: len(data)] = data
        return len(data)

    def send(self, data: Any, flags: int = 0) -> int:
        self._check_open()
        if self.reset_in:
            raise ConnectionResetError(errno.ECONNRESET, "Connection reset by peer")
        if self.shut_wr or self.peer_closed:
            raise BrokenPipeError(errno.EPIPE, "Broken pipe")
        peer = self.peer
        if peer is None:
            raise OSError(errno.ENOTCONN, "Transport endpoint is not connected")
        view = memoryview(data).cast("B")
        if not view:
            return 0
        room = RECEIVE_BUFFER - len(peer.inbox)
        if room <= 0:
            raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")
        chunk = view[:room]
        peer.inbox += chunk
        peer.wake_readers()
        return len(chunk)

    def sendall(self, data: Any, flags: int = 0) -> None:
        view = memoryview(data).cast("B")
        sent = self.send(view)
        if sent < len(view):
            raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")

    def shutdown(self, how: int) -> None:
        self._check_open()
        if not self.connected:
            raise OSError(errno.ENOTCONN, "Transport endpoint is not connected")
        if how in (socket.SHUT_RD, socket.SHUT_RDWR):
            self.shut_rd = True
            self.wake_readers()
        if how in (socket.SHUT_WR, socket.SHUT_RDWR) and not self.shut_wr:
            self.shut_wr = True
            peer = self.peer
            if peer is not None:
                peer.eof_in = True
                peer.wake_readers()

    def close(self) -> None:
        """Close: the peer reads EOF (after what it has not read yet) and cannot send any more."""
        if self.closed:
            return
        self.closed = True
        self.network.unbind(self)
        if self.listening:
            # Connections nobody accepted are reset, as the kernel does.
            for pending in self.backlog:
                pending.abort()
            self.backlog.clear()
        peer = self.peer
        if peer is not None:
            peer.eof_in = True
            peer.peer_closed = True
            peer.wake_readers()
            peer.wake_writers()
        self.inbox.clear()
        self.wake_readers()
        self.wake_writers()

    def abort(self) -> None:
        """Close abortively (SO_LINGER 0): the peer's next receive fails with a reset."""
        if self.closed:
            return
        peer = self.peer
        if peer is not None and not peer.closed:
            peer.reset_in = True
            peer.inbox.clear()
            peer.peer_closed = True
            peer.wake_readers()
            peer.wake_writers()
        self.peer = None
        self.close()

    def detach(self) -> int:
        fd = self._fd
        self.close()
        return fd

    def __enter__(self) -> SimSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Network:
    """Every listener and connection of one schedule; built empty before each schedule."""

    def __init__(self) -> None:
        self.sockets: list[SimSocket] = []
        self._bound: dict[tuple[int, int], list[SimSocket]] = {}  # (family, port) -> sockets
        self._next_port = FIRST_EPHEMERAL_PORT
        self._next_fd = FIRST_FAKE_FD
        #: Real ``socket.socket`` objects user code created and "connected" through the
        #: simulated network (the real socket is never bound or connected).
        self.adopted: dict[Any, SimSocket] = {}

    def next_fd(self) -> int:
        fd = self._next_fd
        self._next_fd += 1
        return fd

    def socket(self, family: int = socket.AF_INET, type: int = socket.SOCK_STREAM) -> SimSocket:
        """A new unconnected socket on this network."""
        return SimSocket(self, family, type)

    def _free_port(self, family: int) -> int:
        for _ in range(65536):
            port = self._next_port
            self._next_port = port + 1 if port < 65535 else FIRST_EPHEMERAL_PORT
            if not self._bound.get((family, port)):
                return port
        raise OSError(errno.EADDRNOTAVAIL, "no free port left on the simulated network")

    def bind(self, sock: SimSocket, ip: str, port: int) -> Address:
        family = sock.family
        if port == 0:
            port = self._free_port(family)
        holders = self._bound.setdefault((family, port), [])
        wildcard = WILDCARD[family]
        for other in holders:
            assert other.local is not None
            if ip == wildcard or other.local[0] in (ip, wildcard):
                raise OSError(errno.EADDRINUSE, f"Address already in use: {(ip, port)!r}")
        holders.append(sock)
        return _sockaddr(family, ip, port)

    def unbind(self, sock: SimSocket) -> None:
        if sock.local is None:
            return
        holders = self._bound.get((sock.family, sock.local[1]))
        if holders and sock in holders:
            holders.remove(sock)

    def _listener(self, family: int, ip: str, port: int) -> SimSocket | None:
        for sock in self._bound.get((family, port), ()):
            assert sock.local is not None
            if sock.listening and not sock.closed and sock.local[0] in (ip, WILDCARD[family]):
                return sock
        return None

    def connect(self, client: SimSocket, ip: str, port: int) -> None:
        """Connect ``client`` to the listener on ``(ip, port)``, completing at once."""
        family = client.family
        listener = self._listener(family, ip, port)
        if listener is None:
            raise ConnectionRefusedError(
                errno.ECONNREFUSED, f"Connect call failed {_sockaddr(family, ip, port)!r}"
            )
        if client.local is None:
            client.local = self.bind(client, ip, 0)
        server = SimSocket(self, family)
        server.local = _sockaddr(family, ip, port)
        server.remote = client.local
        client.remote = server.local
        client.peer, server.peer = server, client
        client.connected = server.connected = True
        listener.backlog.append(server)
        listener.wake_readers()

    def close(self) -> None:
        """Close every socket and every adopted real socket: the schedule is over."""
        for real in self.adopted:
            real.close()
        self.adopted.clear()
        for sock in self.sockets:
            sock.read_hook = sock.write_hook = None
            sock._readers.clear()
            sock._writers.clear()
            sock.closed = True
        self.sockets.clear()
        self._bound.clear()


def addrinfo(
    host: object, port: object, family: int, kind: int, proto: int, flags: int, call: str
) -> list[tuple[socket.AddressFamily, socket.SocketKind, int, str, Address]]:
    """``getaddrinfo`` on the simulated network: loopback names only, IPv4 before IPv6.

    Raises:
        UnsupportedScenario: ``host`` is not loopback.
        socket.gaierror: A port that is neither a number nor a known service name.
    """
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    if isinstance(port, bytes):
        port = port.decode("ascii", "replace")
    if port is None:
        number = 0
    elif isinstance(port, int) and not isinstance(port, bool):
        number = port
    elif isinstance(port, str) and port.isdigit():
        number = int(port)
    elif isinstance(port, str):
        try:
            number = socket.getservbyname(port, "tcp")
        except OSError:
            raise socket.gaierror(socket.EAI_SERVICE, f"unknown service {port!r}") from None
    else:
        raise TypeError(f"{call}: port must be an int, str or None, not {type(port).__name__}")
    if kind not in (0, socket.SOCK_STREAM) or proto not in (0, socket.IPPROTO_TCP):
        raise unsupported(
            f"{call} for socket type {kind!r}, protocol {proto!r}",
            "the simulated network carries TCP streams only",
            "Use TCP (SOCK_STREAM) inside the scenario",
        )
    families = _FAMILIES if family in (0, socket.AF_UNSPEC) else (family,)
    if any(f not in _FAMILIES for f in families):
        raise socket.gaierror(socket.EAI_FAMILY, f"ai_family not supported: {family!r}")
    results: list[tuple[socket.AddressFamily, socket.SocketKind, int, str, Address]] = []
    for f in families:
        if host is None or host == "":
            if not flags & socket.AI_PASSIVE:
                ip = LOOPBACK[f]
            else:
                ip = WILDCARD[f]
        elif host == "localhost" or host == LOOPBACK[f] or host == WILDCARD[f]:
            ip = LOOPBACK[f] if host == "localhost" else str(host)
        elif is_loopback_host(host):
            continue  # the other family's address
        else:
            raise not_loopback(call, host)
        results.append(
            (
                socket.AddressFamily(f),
                socket.SOCK_STREAM,
                socket.IPPROTO_TCP,
                "",
                _sockaddr(f, ip, number),
            )
        )
    if not results:
        name = socket.AddressFamily(family).name
        raise socket.gaierror(socket.EAI_ADDRFAMILY, f"{host!r} has no address of family {name}")
    return results


def nameinfo(sockaddr: object, flags: int, call: str) -> tuple[str, str]:
    """``getnameinfo`` on the simulated network (the loopback addresses' name is localhost)."""
    if not isinstance(sockaddr, tuple) or len(sockaddr) < 2:
        raise TypeError(f"{call}: sockaddr must be a tuple (host, port), got {sockaddr!r}")
    host, port = sockaddr[0], sockaddr[1]
    if not is_loopback_host(host) or host in (None, ""):
        raise not_loopback(call, host)
    name = str(host) if flags & socket.NI_NUMERICHOST or host in ("0.0.0.0", "::") else "localhost"
    service = str(port)
    if not flags & socket.NI_NUMERICSERV:
        try:
            service = socket.getservbyport(int(port), "tcp")
        except (OSError, ValueError, OverflowError):
            service = str(port)
    return name, service
