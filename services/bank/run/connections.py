"""The connections of one server: a cap on how many, a deadline for each request head, the
half-closed client, and the drain that tells every client ``Connection: close``.

aiohttp's own knobs cover part of this and are used as they are: ``keepalive_timeout`` closes a
connection idle between requests (and one that never sends a byte), ``shutdown_timeout`` bounds
how long running handlers get once the server stops. What aiohttp has no knob for is done here,
at the protocol level, because only there is the connection visible before a request exists:

- **Header read timeout.** aiohttp waits for a request head as long as bytes keep coming (its
  keep-alive timer only counts from the last response), so a client dribbling one header byte at
  a time holds a connection and its buffers (slowloris). ``_Connection`` notes when the first
  byte of a head arrived, the request starting (its handler, which ``_Connection`` wraps) clears
  it, and one sweep per
  server (a quarter of the timeout apart, at most a second) closes every connection whose head
  is older than the timeout. One sweep rather than a timer per request: arming and cancelling
  a timer for every request would cost every request, for the sake of the rare slow one.
- **Connection cap.** asyncio accepts every connection the kernel hands it. Above the cap, a
  new connection gets a complete 503 ``too_many_connections`` reply with ``Connection: close``
  (so a well-behaved client learns why, and the connections within the cap keep being served),
  then the server reads and discards what the client sent until it hangs up, for a second at
  most: closing with unread bytes would make the kernel send a reset, which can destroy the
  503 before the client reads it.
- **Half-close.** asyncio closes a transport whose peer shut its sending side unless the
  protocol asks to keep it; aiohttp does not ask, so a client that sends a deposit and then
  half-closes got no reply while the deposit was applied. The choice here: such a client *gets
  its reply* (the request is answered as usual, with ``Connection: close``, and the connection
  closes after it). A half-close with no request under way closes the connection at once.
- **Drain.** When the server stops, every reply written from then on says ``Connection: close``
  (aiohttp's own shutdown closes keep-alive connections after their reply without saying so, and
  a client then sends its next request into a closing socket). Requests behind it on a
  pipelined connection are not run; by HTTP/1.1's rules (RFC 9112 section 9.6) the client sees the
  ``close`` and retries them.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from enum import Enum, auto
from typing import Final, cast

from aiohttp import StreamReader, web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

__all__ = ["ConnectionGuard", "GuardedSite"]

#: Seconds a refused connection is read (and discarded) before it is closed anyway.
_REFUSAL_LINGER: Final = 1.0


def _refusal_bytes(max_connections: int) -> bytes:
    body = json.dumps(
        {
            "error": "too_many_connections",
            "detail": f"the server already holds {max_connections} connections (its "
            "max_connections); nothing was read or applied: retry later",
        }
    ).encode()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\n"
        "Content-Type: application/json; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Retry-After: 1\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class _State(Enum):
    IDLE = auto()  # no request under way, no byte of the next head received
    HEAD = auto()  # bytes of a request head received (head_since set), the sweep watches it
    REQUEST = auto()  # a request's handler runs (its head complete)


_AppHandler = Callable[[BaseRequest], Awaitable[web.StreamResponse]]


class _Connection(asyncio.Protocol):
    """One accepted connection: aiohttp's ``RequestHandler`` inside, the guard's rules outside.

    The connection learns that a request started and ended by standing in for the handler
    aiohttp's ``RequestHandler`` calls for each request (the app's): no middleware, whose
    ``partial`` call, coroutine and lookup of the connection would cost every request.
    """

    def __init__(self, guard: ConnectionGuard, inner: RequestHandler) -> None:
        self._guard = guard
        self._inner = inner
        # aiohttp reads this attribute afresh for every request of the connection.
        self._app_handler = cast(_AppHandler, inner._request_handler)
        inner._request_handler = self._handle
        self._transport: asyncio.Transport | None = None
        # Looked up once per connection rather than on every request head.
        self._loop = asyncio.get_running_loop()
        self._state = _State.IDLE
        #: Loop time of the first byte of the head being received, while there is one.
        self.head_since: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._body: StreamReader | None = None
        self._next_head_started = False
        self._refused = False
        self.peer_closed = False

    # --- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport: uvloop's does not subclass asyncio.Transport, so no isinstance.
        transport = cast(asyncio.Transport, transport)
        self._transport = transport
        guard = self._guard
        if guard.draining or len(guard.live) >= guard.max_connections:
            self._refuse(transport)
            return
        guard.admit(self._inner, self)
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # read only so that closing does not reset the 503 away
        if self._state is _State.IDLE:
            self._state = _State.HEAD
            self.head_since = self._loop.time()
        elif self._state is _State.REQUEST and (self._body is None or self._body.is_eof()):
            # The running request's body is complete, so these bytes start the next head; its
            # timer starts once this request is answered (it must not cut the reply short).
            self._next_head_started = True
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        self.peer_closed = True
        if self._refused or self._state is _State.IDLE:
            return None  # nothing to answer: let the transport close
        # A request is under way (or its head is here): keep our half open for the reply.
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._transport = None
        if self._refused:
            self._guard.refused.discard(self)
            return
        self._guard.forget(self._inner)
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if not self._refused:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if not self._refused:
            self._inner.resume_writing()

    # --- the request's life -------------------------------------------------------------------

    async def _handle(self, request: BaseRequest) -> web.StreamResponse:
        """Run the app's handler, telling the connection its request started and ended; add
        ``Connection: close`` to replies during the drain and to a client that half-closed."""
        self.request_started(request.content)
        try:
            response = await self._app_handler(request)
            if self._guard.draining or self.peer_closed:
                response.force_close()
            return response
        finally:
            self.request_finished()

    def request_started(self, body: StreamReader) -> None:
        self.head_since = None
        self._state = _State.REQUEST
        self._body = body
        self._next_head_started = False

    def request_finished(self) -> None:
        self._body = None
        if self._next_head_started:
            self._state = _State.HEAD
            self.head_since = self._loop.time()
        else:
            self._state = _State.IDLE

    # --- the rest -----------------------------------------------------------------------------

    def _refuse(self, transport: asyncio.Transport) -> None:
        self._refused = True
        self._guard.refused.add(self)
        transport.write(self._guard.refusal)
        if transport.can_write_eof():
            transport.write_eof()
        self._timer = asyncio.get_running_loop().call_later(_REFUSAL_LINGER, self.close)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def close(self) -> None:
        """Close the connection (a head that came too slowly, or a refusal's linger is over)."""
        self._timer = None
        self.head_since = None
        if self._transport is not None:
            self._transport.close()


class ConnectionGuard:
    """The connection rules of one server, shared by its connections.

    Args:
        max_connections: Connections served at once; more are refused with 503.
        header_timeout: Seconds from the first byte of a request head to its last.

    Raises:
        ValueError: A limit out of range.
    """

    def __init__(self, *, max_connections: int, header_timeout: float) -> None:
        if max_connections < 1:
            raise ValueError(f"max_connections must be positive, got {max_connections}")
        if not header_timeout > 0:
            raise ValueError(f"header_timeout must be > 0 seconds, got {header_timeout}")
        self.max_connections = max_connections
        self.header_timeout = header_timeout
        self.refusal = _refusal_bytes(max_connections)
        self.draining = False
        self.live: dict[RequestHandler, _Connection] = {}
        self.refused: set[_Connection] = set()
        self._sweep_every = min(1.0, header_timeout / 4)
        self._sweeper: asyncio.TimerHandle | None = None

    def protocol_factory(
        self, server: Callable[[], RequestHandler]
    ) -> Callable[[], asyncio.Protocol]:
        """Wrap aiohttp's protocol factory (``runner.server``) in the guard's rules."""

        def factory() -> asyncio.Protocol:
            return _Connection(self, server())

        return factory

    def admit(self, handler: RequestHandler, connection: _Connection) -> None:
        """Count a new connection; start the sweep if it is the only one."""
        self.live[handler] = connection
        if self._sweeper is None:
            loop = asyncio.get_running_loop()
            self._sweeper = loop.call_later(self._sweep_every, self._sweep)

    def forget(self, handler: RequestHandler) -> None:
        """Drop a closed connection from the count."""
        self.live.pop(handler, None)

    def _sweep(self) -> None:
        """Close the connections whose request head is older than ``header_timeout``."""
        loop = asyncio.get_running_loop()
        too_old = loop.time() - self.header_timeout
        for connection in list(self.live.values()):
            since = connection.head_since
            if since is not None and since <= too_old:
                connection.close()
        # Runs while there are connections; the next one to arrive starts it again.
        self._sweeper = loop.call_later(self._sweep_every, self._sweep) if self.live else None

    def start_drain(self) -> None:
        """From now on every reply says ``Connection: close`` and no connection is accepted."""
        self.draining = True
        for connection in list(self.refused):
            connection.close()


class GuardedSite(web.BaseSite):
    """A TCP site whose connections pass through a :class:`ConnectionGuard`.

    aiohttp's ``TCPSite`` hands the runner's protocol factory to ``loop.create_server`` as it
    is; this one wraps it first. Everything else (``runner.addresses``, ``runner.cleanup()``)
    works as for ``TCPSite``.
    """

    __slots__ = ("_guard", "_host", "_port", "_reuse_port")

    def __init__(
        self,
        runner: web.BaseRunner,
        guard: ConnectionGuard,
        host: str,
        port: int,
        *,
        reuse_port: bool = False,
        backlog: int = 128,
    ) -> None:
        super().__init__(runner, backlog=backlog)
        self._guard = guard
        self._host = host
        self._port = port
        self._reuse_port = reuse_port

    @property
    def name(self) -> str:
        """``http://host:port`` as asked (port 0 before the start)."""
        shown = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{shown}:{self._port}"

    async def start(self) -> None:
        """Listen."""
        await super().start()
        server = self._runner.server
        assert server is not None
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._guard.protocol_factory(server),
            self._host,
            self._port,
            backlog=self._backlog,
            reuse_address=True,
            reuse_port=self._reuse_port or None,
        )
