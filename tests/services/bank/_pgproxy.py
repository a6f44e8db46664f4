"""A fault-injecting TCP proxy on 127.0.0.1 between the bank and PostgreSQL.

It reads the frontend side of the PostgreSQL wire protocol (message type and length), so a test
can cut a connection at an exact point, deterministically:

- ``arm("commit", "before")``: the next ``COMMIT`` query is not forwarded; the connection is
  closed instead. The server rolls the transaction back; the bank sees its COMMIT fail with the
  connection gone (outcome unknown to it, nothing applied in truth).
- ``arm("commit", "after")``: the next ``COMMIT`` is forwarded; once the server answers (the
  commit is then durable), the answer is dropped and the connection closed. Applied in truth,
  unknown to the bank.
- ``arm("write", ...)``: the same around the ``Sync`` that ends an autocommit write statement
  (an unkeyed request's only commit).
- :meth:`PgProxy.cut_all` closes every connection (a restart, or ``pg_terminate_backend``,
  without touching the shared cluster); ``refusing = True`` closes new ones at once (the server
  is away).

The store URL must carry ``sslmode=disable`` (:func:`proxied_url`), or the protocol is encrypted.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

__all__ = ["PgProxy", "proxied_url"]

What = Literal["commit", "write"]
When = Literal["before", "after"]

_SSL_REQUEST = 80877103
_GSSENC_REQUEST = 80877104
#: Statements that write money (and so commit on their own outside a transaction).
_WRITES = (b"INSERT INTO bank_journal", b"bank_set_two(", b"bank_transfer(")


def proxied_url(url: str, port: int) -> str:
    """``url`` pointed at the proxy on 127.0.0.1:``port``, without TLS."""
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")
    user = netloc[0] + "@" if netloc[1] else ""
    query = [(k, v) for k, v in parse_qsl(parts.query) if k not in ("ssl", "sslmode")]
    query.append(("sslmode", "disable"))
    return urlunsplit(parts._replace(netloc=f"{user}127.0.0.1:{port}", query=urlencode(query)))


@dataclass
class _Trap:
    what: What
    when: When
    sprung: asyncio.Event = field(default_factory=asyncio.Event)


class _Link:
    """One proxied connection: the bank's side and the server's side."""

    def __init__(
        self,
        proxy: PgProxy,
        client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        server: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    ) -> None:
        self.proxy = proxy
        self.client_reader, self.client_writer = client
        self.server_reader, self.server_writer = server
        # Statement name -> SQL, from Parse messages; the name of the last Bind's statement.
        self.statements: dict[bytes, bytes] = {}
        self.bound: bytes = b""
        # After an "after" trap: the server's next answer is dropped and the link closed.
        self.swallow: _Trap | None = None
        self.closed = False

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for writer in (self.client_writer, self.server_writer):
            writer.close()

    async def frontend(self) -> None:
        """Bank -> server, message by message."""
        reader = self.client_reader
        try:
            # Untyped start-up messages: SSLRequest / GSSENCRequest, then StartupMessage.
            while True:
                header = await reader.readexactly(4)
                (length,) = struct.unpack("!I", header)
                body = await reader.readexactly(length - 4)
                await self._send(header + body)
                code = struct.unpack("!I", body[:4])[0] if len(body) >= 4 else 0
                if code not in (_SSL_REQUEST, _GSSENC_REQUEST):
                    break
            while True:
                kind = await reader.readexactly(1)
                header = await reader.readexactly(4)
                (length,) = struct.unpack("!I", header)
                body = await reader.readexactly(length - 4)
                trap = self._trap_for(kind, body)
                if trap is not None and trap.when == "before":
                    self.proxy.cuts.append(("before", trap.what))
                    trap.sprung.set()
                    self.close()
                    return
                await self._send(kind + header + body)
                if trap is not None:
                    self.swallow = trap
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        finally:
            self.close()

    def _trap_for(self, kind: bytes, body: bytes) -> _Trap | None:
        trap = self.proxy._trap
        if kind == b"P":  # Parse: statement name, query
            name, _, rest = body.partition(b"\0")
            self.statements[name] = rest.partition(b"\0")[0]
        elif kind == b"B":  # Bind: portal name, statement name
            rest = body.partition(b"\0")[2]
            self.bound = rest.partition(b"\0")[0]
        if trap is None:
            return None
        if trap.what == "commit":
            hit = kind == b"Q" and body.rstrip(b"\0").strip().rstrip(b";").upper() == b"COMMIT"
        else:
            sql = self.statements.get(self.bound, b"")
            hit = kind == b"S" and any(marker in sql for marker in _WRITES)
            if kind == b"S":
                self.bound = b""
        if not hit:
            return None
        self.proxy._trap = None
        return trap

    async def _send(self, data: bytes) -> None:
        self.server_writer.write(data)
        await self.server_writer.drain()

    async def backend(self) -> None:
        """Server -> bank, as bytes (nothing to parse this way)."""
        try:
            while True:
                data = await self.server_reader.read(65536)
                if not data:
                    return
                if self.swallow is not None:
                    # The server answered the trapped COMMIT/Sync: it is durable. Drop the
                    # answer and the connection.
                    trap, self.swallow = self.swallow, None
                    self.proxy.cuts.append(("after", trap.what))
                    trap.sprung.set()
                    return
                self.client_writer.write(data)
                await self.client_writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self.close()


class PgProxy:
    """``async with PgProxy(host, port) as proxy:`` listens on ``proxy.port``.

    Attributes:
        refusing: Close new connections at once (the server looks away).
        cuts: ``(when, what)`` of every trap sprung, in order.
    """

    def __init__(self, host: str, port: int) -> None:
        self._upstream = (host, port)
        self._links: set[_Link] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._trap: _Trap | None = None
        self._server: asyncio.Server | None = None
        self.refusing = False
        self.cuts: list[tuple[str, str]] = []
        self.port = 0

    async def __aenter__(self) -> PgProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        self.cut_all()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._server.wait_closed()

    def arm(self, what: What, when: When) -> asyncio.Event:
        """Cut the next connection that sends ``what``, ``when``; the event is set once done."""
        self._trap = _Trap(what, when)
        return self._trap.sprung

    def cut_all(self) -> int:
        """Close every proxied connection now; return how many there were."""
        links = [link for link in self._links if not link.closed]
        for link in links:
            link.close()
        return len(links)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            writer.close()
            return
        try:
            server = await asyncio.open_connection(*self._upstream)
        except OSError:
            writer.close()
            return
        link = _Link(self, (reader, writer), server)
        self._links.add(link)
        for pump in (link.frontend(), link.backend()):
            task = asyncio.ensure_future(pump)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
