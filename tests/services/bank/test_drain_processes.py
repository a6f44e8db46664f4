"""SIGTERM to a real ``serve`` process, and to the supervisor of ``serve --workers 2``: the
request under way is answered, its reply says ``Connection: close``, and the process exits 0.

(``test_connections.py`` holds the drain's cases in-process, where the store's race window
pins a request down; here a request is kept under way from outside the server: the SQLite
file's write lock, held by the test.)

Nothing here waits a guessed time. Each step waits for a condition that makes the next one
certain: the server has *read* the deposit (the client's bytes are acknowledged and the server's
socket has none left unread: aiohttp parses what it reads in the same callback, and the handler
runs before the loop gets to the signal queued after it), and the drain *has begun* (the port
refuses connections: the server marks its drain before it closes its listener), before the
test lets the deposit through. So the reply is written during the drain, by construction.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import sqlite3
import struct
import termios
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from services.bank.tools.showdown import ServerProcess, start_server


def _connect(server: ServerProcess) -> socket.socket:
    host, _, port = server.url.removeprefix("http://").rpartition(":")
    return socket.create_connection((host, int(port)), timeout=20)


ADMIN = "drain-admin"
#: The servers' environment: the admin token, with which each test registers its client.
ENV = {**os.environ, "BANK_ADMIN_TOKEN": ADMIN}


def _request(method: str, path: str, body: object, token: str) -> bytes:
    data = b"" if body is None else json.dumps(body).encode()
    return (
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {token}\r\nContent-Length: {len(data)}\r\n\r\n"
    ).encode() + data


def _read_reply(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed without a reply: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {
        name.strip().lower(): value.strip()
        for name, _, value in (line.partition(":") for line in lines)
    }
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "closed mid-body"
        body += chunk
    return int(status_line.split()[1]), headers, body[:length]


def _closed(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except ConnectionError:
        return True


def _open_account(sock: socket.socket, account: str) -> str:
    """Register a client and open ``account`` for it, on ``sock``; return the client's key."""
    sock.sendall(_request("POST", "/clients", {"id": "tester"}, ADMIN))
    status, _, body = _read_reply(sock)
    assert status == 201
    key: str = json.loads(body)["key"]
    sock.sendall(_request("POST", "/accounts", {"id": account, "balance": 100}, key))
    status, headers, _ = _read_reply(sock)
    assert status == 201
    assert headers.get("connection", "keep-alive").lower() != "close"
    return key


def _wait_until(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def _unread_by_server(sock: socket.socket) -> int:
    """Bytes the server's end of ``sock`` has received and its process not yet read (Linux:
    ``rx_queue`` of that socket in /proc/net/tcp; -1 while it is not listed)."""
    client_port = sock.getsockname()[1]
    server_port = sock.getpeername()[1]
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as rows:
            next(rows)  # the header
            for row in rows:
                fields = row.split()
                local_port = int(fields[1].rpartition(":")[2], 16)
                remote_port = int(fields[2].rpartition(":")[2], 16)
                if (local_port, remote_port) == (server_port, client_port):
                    return int(fields[4].partition(":")[2], 16)
    return -1


def _unacknowledged(sock: socket.socket) -> int:
    """Bytes ``sock`` sent that the peer's kernel has not acknowledged (SIOCOUTQ)."""
    queued: int = struct.unpack("i", fcntl.ioctl(sock, termios.TIOCOUTQ, struct.pack("i", 0)))[0]
    return queued


def _read_by_server(sock: socket.socket) -> bool:
    """Whether the server process has read everything sent on ``sock``: its kernel has it
    (acknowledged), and none of it is left in the server socket's receive queue."""
    return _unacknowledged(sock) == 0 and _unread_by_server(sock) == 0


def _refuses_connections(server: ServerProcess) -> bool:
    """Whether the server's port refuses a new connection (every listener is closed)."""
    host, _, port = server.url.removeprefix("http://").rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


def _deposit_during_the_drain(args: list[str], path: Path) -> None:
    """Start a server with ``args`` on the SQLite file ``path``, keep a deposit under way (the
    test holds the file's write lock), SIGTERM the server, and let the deposit through once the
    drain has begun: its reply must be the deposit's, with ``Connection: close``."""
    with start_server([*args, "--store", f"sqlite:///{path}"], env=ENV) as server:
        with _connect(server) as sock:
            key = _open_account(sock, "alice")
            blocker = sqlite3.connect(path, isolation_level=None)
            try:
                # Hold the file's write lock: the server's deposit waits for it (busy_timeout).
                blocker.execute("BEGIN IMMEDIATE")
                sock.sendall(_request("POST", "/accounts/alice/deposit", {"amount": 5}, key))
                _wait_until(lambda: _read_by_server(sock), "the server to read the deposit")
                server.process.send_signal(signal.SIGTERM)
                _wait_until(lambda: _refuses_connections(server), "the server's drain to begin")
            finally:
                blocker.execute("ROLLBACK")
                blocker.close()
            status, headers, body = _read_reply(sock)
            assert (status, json.loads(body)) == (200, {"id": "alice", "balance": 105})
            assert headers["connection"].lower() == "close"
            assert _closed(sock)
        assert server.process.wait(timeout=30) == 0
    with sqlite3.connect(path) as check:
        row = check.execute("SELECT balance FROM bank_accounts WHERE id = 'alice'").fetchone()
    assert row == (105,)


pytestmark = pytest.mark.skipif(
    not Path("/proc/net/tcp").exists(), reason="reads the server's receive queue from /proc"
)


def test_sigterm_answers_the_request_under_way_with_connection_close(tmp_path: Path) -> None:
    _deposit_during_the_drain(["--lock", "account"], tmp_path / "bank.db")


def test_workers_drain_on_sigterm_to_the_supervisor(tmp_path: Path) -> None:
    _deposit_during_the_drain(["--workers", "2", "--lock", "db"], tmp_path / "bank.db")
