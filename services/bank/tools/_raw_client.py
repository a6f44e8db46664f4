"""A lean HTTP/1.1 keep-alive client for the hammer's load phase.

aiohttp's ClientSession costs about 170 us of CPU per request; on a 2-core machine that CPU is
taken from the server being measured. This client does only what the load phase needs: one
connection per concurrent client, requests already encoded as bytes, and a parser that reads the
status code and finds the end of the response (``Content-Length``, chunked, or the end of the
connection) without building header objects.

Every failure (refused, reset, closed before the answer, a malformed response) raises
:class:`RawHTTPError` or :class:`OSError`: the caller cannot know whether the server applied the
request, so it must never count it as acknowledged.
"""

from __future__ import annotations

import asyncio
import ssl as ssl_module
from typing import Final, cast

__all__ = ["RawConnection", "RawHTTPError", "connect", "encode_post"]

#: Longest response head accepted; the bank's are about 150 bytes.
_MAX_HEAD: Final = 64 * 1024
#: Statuses that never carry a body (RFC 9112 section 6.3).
_NO_BODY: Final = frozenset({204, 304})


class RawHTTPError(Exception):
    """The server's answer was not a well-formed HTTP/1.x response, or never came."""


def encode_post(host: str, path: str, body: bytes, *, token: str | None = None) -> bytes:
    """The bytes of ``POST path`` with a JSON body, ready for :meth:`RawConnection.request`;
    with ``token``, sent as ``Authorization: Bearer``."""
    auth = "" if token is None else f"Authorization: Bearer {token}\r\n"
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("latin-1") + body


class RawConnection(asyncio.Protocol):
    """One keep-alive connection carrying one request at a time.

    Attributes:
        closed: The connection cannot carry another request (the server closed it, asked to
            close it, or broke the protocol); open a new one.
    """

    def __init__(self) -> None:
        self.closed = False
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._waiter: asyncio.Future[int] | None = None
        # Status of a response whose body runs to the end of the connection.
        self._until_eof: int | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)

    def request(self, data: bytes) -> asyncio.Future[int]:
        """Send ``data`` (one complete request); the future resolves to the response status.

        Raises:
            RawHTTPError: The connection is closed or still busy with a request.
        """
        if self.closed or self._transport is None:
            raise RawHTTPError("connection is closed")
        if self._waiter is not None:
            raise RawHTTPError("connection is busy with another request")
        waiter: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiter = waiter
        self._transport.write(data)
        return waiter

    def close(self) -> None:
        """Drop the connection; a request in flight fails."""
        self.closed = True
        if self._transport is not None:
            self._transport.abort()

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if self._waiter is None:
            # Nothing was asked: bytes the server should not have sent.
            self._fail(RawHTTPError("unsolicited data from the server"))
            return
        try:
            self._parse()
        except RawHTTPError as exc:
            self._fail(exc)

    def eof_received(self) -> bool | None:
        return None  # close the transport; connection_lost settles any waiter

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter, self._waiter = self._waiter, None
        if waiter is None or waiter.done():
            return
        if self._until_eof is not None:
            waiter.set_result(self._until_eof)
        else:
            waiter.set_exception(
                RawHTTPError(f"server closed the connection before answering ({exc or 'EOF'})")
            )

    def _fail(self, exc: Exception) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        self.close()

    def _parse(self) -> None:
        buffer = self._buffer
        if self._until_eof is not None:
            buffer.clear()  # the body is not needed, only where it ends
            return
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(buffer) > _MAX_HEAD:
                raise RawHTTPError("response head too long")
            return
        # Only three headers matter; finding them in the lowered head costs a few C calls
        # instead of a Python loop over every header line.
        head = bytes(buffer[:end]).lower()
        line_end = head.find(b"\r\n")
        status_line = head if line_end < 0 else head[:line_end]
        version, _, rest = status_line.partition(b" ")
        code = rest[:3]
        if (
            version not in (b"http/1.1", b"http/1.0")
            or not code.isdigit()
            or rest[3:4] not in (b"", b" ")
        ):
            raise RawHTTPError(f"bad status line {bytes(buffer[:80])!r}")
        status = int(code)
        close = version == b"http/1.0"
        length: int | None = None
        value = _header(head, b"\r\ncontent-length:")
        if value is not None:
            if not value.isdigit():
                raise RawHTTPError(f"bad Content-Length {value[:40]!r}")
            length = int(value)
        value = _header(head, b"\r\ntransfer-encoding:")
        chunked = value is not None and value.endswith(b"chunked")
        value = _header(head, b"\r\nconnection:")
        if value is not None:
            tokens = {token.strip() for token in value.split(b",")}
            if b"close" in tokens:
                close = True
            elif b"keep-alive" in tokens:
                close = False
        start = end + 4
        if 100 <= status < 200:
            # An interim answer (100 Continue): the real one follows.
            del buffer[:start]
            self._parse()
            return
        if status in _NO_BODY:
            consumed: int | None = start
        elif chunked:
            consumed = _chunked_end(buffer, start)
        elif length is not None:
            consumed = start + length if len(buffer) >= start + length else None
        else:
            # No length: the body is everything until the server closes.
            self.closed = True
            self._until_eof = status
            buffer.clear()
            return
        if consumed is None:
            return  # the rest of the body is still on its way
        leftover = len(buffer) > consumed
        del buffer[:consumed]
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(status)
        if close or leftover:
            # Bytes after a complete answer to a single request are a protocol error; the
            # answer itself was whole, so it stands, but the connection is not reused.
            self.close()


def _header(head: bytes, name: bytes) -> bytes | None:
    """The stripped value of header ``name`` (``b"\\r\\nname:"``, lower case) in ``head``."""
    start = head.find(name)
    if start < 0:
        return None
    start += len(name)
    end = head.find(b"\r\n", start)
    return (head[start:] if end < 0 else head[start:end]).strip()


def _chunked_end(buffer: bytearray, position: int) -> int | None:
    """Offset just past a complete chunked body starting at ``position``; None if incomplete."""
    while True:
        line_end = buffer.find(b"\r\n", position)
        if line_end < 0:
            return None
        size_text = bytes(buffer[position:line_end]).partition(b";")[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise RawHTTPError(f"bad chunk size {size_text[:40]!r}") from None
        if size < 0:
            raise RawHTTPError(f"bad chunk size {size_text[:40]!r}")
        position = line_end + 2
        if size == 0:
            # Trailers, if any, then an empty line.
            while True:
                line_end = buffer.find(b"\r\n", position)
                if line_end < 0:
                    return None
                if line_end == position:
                    return line_end + 2
                position = line_end + 2
        if len(buffer) < position + size + 2:
            return None
        if buffer[position + size : position + size + 2] != b"\r\n":
            raise RawHTTPError("chunk not followed by CRLF")
        position += size + 2


async def connect(
    host: str, port: int, *, ssl: ssl_module.SSLContext | bool | None = None
) -> RawConnection:
    """Open one connection to ``host:port``.

    Raises:
        OSError: The connection was refused or could not be made.
    """
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_connection(RawConnection, host, port, ssl=ssl or None)
    return protocol
