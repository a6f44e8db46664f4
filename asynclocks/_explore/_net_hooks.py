"""Libraries that create stdlib sockets themselves, routed to the simulated network.

anyio builds listeners from sockets it creates and binds itself (``socket.socket(family)`` in
``anyio._core._sockets``) and hands them to the backend (asyncio: ``loop.sock_accept`` and
``loop.connect_accepted_socket``; trio: ``trio.socket.from_stdlib_socket``); aiohappyeyeballs,
which aiohttp's client connects through, creates the socket it passes to ``loop.sock_connect``.
Inside an exploration those sockets must be the simulated network's: :func:`hook_socket_users`
points the ``socket`` name of those modules at a stand-in module whose ``socket()`` makes a
:class:`SimSocket` while a controlled loop or the explorer's trio run is running on this thread,
and a real socket otherwise (every other attribute is the real module's), so nothing changes
outside an exploration. :func:`hook_trio_wrap` makes ``trio.socket.from_stdlib_socket`` wrap a
:class:`SimSocket` in a trio socket of the network, for the duration of a trio exploration.
"""

from __future__ import annotations

import socket as _socket
import sys
import types
from collections.abc import Callable
from typing import Any

from ._common import unsupported
from ._network import Network, SimSocket

#: Returns the running exploration's network on this thread, or None; set per backend.
_finders: list[Callable[[], Network | None]] = []


def _current_network() -> Network | None:
    for find in _finders:
        network = find()
        if network is not None:
            return network
    return None


def _socket_or_simulated(
    family: int = _socket.AF_INET,
    type: int = _socket.SOCK_STREAM,
    proto: int = 0,
    fileno: Any = None,
) -> Any:
    network = _current_network() if fileno is None else None
    if network is None:
        return _socket.socket(family, type, proto, fileno)
    return network.socket(family, type)


class _SocketModule(types.ModuleType):
    """The stdlib ``socket`` module, except that ``socket()`` knows about explorations."""

    socket = staticmethod(_socket_or_simulated)

    def __getattr__(self, name: str) -> Any:
        return getattr(_socket, name)


#: Modules that call ``socket.socket()`` for connections user code asked for.
SOCKET_USERS = ("anyio._core._sockets", "aiohappyeyeballs.impl", "hypercorn.config")
_STAND_IN = _SocketModule("socket", _socket.__doc__)


def hook_socket_users(find: Callable[[], Network | None]) -> bool:
    """Route the sockets of :data:`SOCKET_USERS` to ``find()``'s network when it has one.

    Returns:
        Whether every one of those modules is hooked (a module imported later is hooked by a
        later call).
    """
    if find not in _finders:
        _finders.append(find)
    done = True
    for name in SOCKET_USERS:
        module = sys.modules.get(name)
        if module is None:
            done = False
        elif getattr(module, "socket", None) is _socket:
            module.socket = _STAND_IN  # type: ignore[attr-defined]
    return done


def hook_trio_wrap(wrap: Callable[[SimSocket], Any]) -> Callable[[], None]:
    """Make ``trio.socket.from_stdlib_socket`` accept a SimSocket; returns the undo."""
    import trio

    original = trio.socket.from_stdlib_socket

    def from_stdlib_socket(sock: Any) -> Any:
        if isinstance(sock, SimSocket):
            return wrap(sock)
        if _current_network() is not None:
            raise unsupported(
                f"trio.socket.from_stdlib_socket() with a real socket {sock!r}",
                "the socket was made outside the simulated loopback network, so its I/O would be "
                "real and neither controlled nor replayable",
                "Create sockets with trio.socket.socket() (or trio.open_tcp_listeners, "
                "trio.serve_tcp...); a library that makes its own, imported only inside the "
                "scenario, is routed to the simulated network when imported before explore()",
            )
        return original(sock)

    trio.socket.from_stdlib_socket = from_stdlib_socket

    def restore() -> None:
        trio.socket.from_stdlib_socket = original

    return restore
