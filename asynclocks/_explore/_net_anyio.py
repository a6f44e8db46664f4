"""anyio's ``create_tcp_listener`` on the simulated network.

anyio builds listeners from stdlib sockets it creates and binds itself (``socket.socket(family)``
in ``anyio._core._sockets``), then hands them to the backend (asyncio: ``loop.sock_accept`` and
``loop.connect_accepted_socket``; trio: ``trio.socket.from_stdlib_socket``). Inside an
exploration those sockets must be the simulated network's: :func:`hook_anyio` points the
``socket`` name of ``anyio._core._sockets`` at a stand-in module whose ``socket()`` makes a
:class:`SimSocket` while a controlled loop or the explorer's trio run is running, and a real
socket otherwise (every other attribute is the real module's), and :func:`hook_trio_wrap` makes
``trio.socket.from_stdlib_socket`` wrap a :class:`SimSocket` in a trio socket of the network.
"""

from __future__ import annotations

import asyncio
import socket as _socket
import sys
import types
from collections.abc import Callable
from typing import Any

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


_hooked = False


def hook_anyio(find: Callable[[], Network | None]) -> None:
    """Route the sockets anyio's listeners create to ``find()``'s network when it has one."""
    global _hooked
    if find not in _finders:
        _finders.append(find)
    if _hooked:
        return
    module = sys.modules.get("anyio._core._sockets")
    if module is None or getattr(module, "socket", None) is not _socket:
        return
    _hooked = True
    module.socket = _SocketModule("socket", _socket.__doc__)  # type: ignore[attr-defined]


def asyncio_network() -> Network | None:
    """The running controlled asyncio loop's network, if the running loop is one."""
    from ._net_asyncio import SimulatedNetworkLoop

    loop = asyncio._get_running_loop()
    if isinstance(loop, SimulatedNetworkLoop):
        return loop._net_network()
    return None


def hook_trio_wrap(wrap: Callable[[SimSocket], Any]) -> Callable[[], None]:
    """Make ``trio.socket.from_stdlib_socket`` accept a SimSocket; returns the undo."""
    import trio

    original = trio.socket.from_stdlib_socket

    def from_stdlib_socket(sock: Any) -> Any:
        if isinstance(sock, SimSocket):
            return wrap(sock)
        return original(sock)

    trio.socket.from_stdlib_socket = from_stdlib_socket

    def restore() -> None:
        trio.socket.from_stdlib_socket = original

    return restore
