"""Raw HTTP/1.1 over a TCP socket to 127.0.0.1, for requests no well-behaved client would send.

aiohttp's client (and yarl) normalise paths, compute ``Content-Length`` and refuse malformed
headers; the hostile-input tests need the exact bytes on the wire instead.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.abc

__all__ = ["RawResponse", "exchange", "read_response", "request_bytes"]

#: Longest response the tests accept; anything bigger is a bug in itself.
_MAX_RESPONSE = 1 << 20


@dataclass
class RawResponse:
    """One HTTP response as read off the socket."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip()

    def json(self) -> Any:
        """The body decoded as JSON (asserting that it is JSON)."""
        assert self.content_type == "application/json", (self.status, self.headers, self.body)
        return json.loads(self.body)


def request_bytes(
    method: str,
    target: bytes | str,
    body: bytes = b"",
    *,
    headers: dict[str, str] | None = None,
    content_length: int | str | None = -1,
) -> bytes:
    """Build a request; ``content_length=-1`` means the true length, ``None`` means no header."""
    raw_target = target.encode() if isinstance(target, str) else target
    lines = [method.encode() + b" " + raw_target + b" HTTP/1.1", b"Host: 127.0.0.1"]
    sent = {"Content-Type": "application/json"}
    sent.update(headers or {})
    for name, value in sent.items():
        lines.append(f"{name}: {value}".encode("latin-1"))
    if content_length == -1:
        content_length = len(body)
    if content_length is not None:
        lines.append(f"Content-Length: {content_length}".encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


async def read_response(stream: anyio.abc.ByteStream, buffer: bytearray) -> RawResponse | None:
    """Read one response from ``stream``; ``None`` when the server closed without one.

    ``buffer`` holds bytes already received and keeps what follows the response.
    """
    while b"\r\n\r\n" not in buffer:
        try:
            chunk = await stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError, ConnectionError):
            if buffer:
                raise AssertionError(f"connection closed mid-response: {bytes(buffer)!r}") from None
            return None
        buffer.extend(chunk)
        assert len(buffer) < _MAX_RESPONSE
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    status = int(status_line.split(" ")[1])
    headers: dict[str, str] = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    assert "chunked" not in headers.get("transfer-encoding", ""), headers
    length = int(headers.get("content-length", "0"))
    body = bytearray(rest)
    while len(body) < length:
        try:
            body.extend(await stream.receive())
        except (anyio.EndOfStream, anyio.BrokenResourceError, ConnectionError):
            raise AssertionError(f"connection closed mid-body: {bytes(body)!r}") from None
    buffer[:] = body[length:]
    return RawResponse(status, headers, bytes(body[:length]))


async def exchange(port: int, data: bytes, *, half_close: bool = False) -> RawResponse | None:
    """Send ``data`` on a new connection and read one response (``None``: closed without one).

    ``half_close`` shuts the sending side down after ``data``, as a client that lied about its
    ``Content-Length`` and then hung up its half would.
    """
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        await stream.send(data)
        if half_close:
            await stream.send_eof()
        return await read_response(stream, bytearray())
