"""SIGTERM to a real ``serve`` process, and to the supervisor of ``serve --workers 2``: the
request under way is answered, its reply says ``Connection: close``, and the process exits 0.

(``test_connections.py`` holds the drain's cases in-process, where the store's race window
pins a request down; here a request is kept under way from outside the server: a long
``--io-delay``, or the SQLite file's write lock held by the test.)
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import time
from pathlib import Path

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


def test_sigterm_answers_the_request_under_way_with_connection_close() -> None:
    # The deposit spends 3 s between its read and its write; SIGTERM comes 0.5 s in.
    with start_server(["--lock", "account", "--io-delay", "3"], env=ENV) as server:
        with _connect(server) as sock:
            key = _open_account(sock, "alice")
            sock.sendall(_request("POST", "/accounts/alice/deposit", {"amount": 5}, key))
            time.sleep(0.5)
            server.process.send_signal(signal.SIGTERM)
            status, headers, body = _read_reply(sock)
            assert (status, json.loads(body)) == (200, {"id": "alice", "balance": 105})
            assert headers["connection"].lower() == "close"
            assert _closed(sock)
        assert server.process.wait(timeout=20) == 0


def test_workers_drain_on_sigterm_to_the_supervisor(tmp_path: Path) -> None:
    path = tmp_path / "bank.db"
    args = ["--workers", "2", "--store", f"sqlite:///{path}", "--lock", "db"]
    with start_server(args, env=ENV) as server:
        with _connect(server) as sock:
            key = _open_account(sock, "alice")
            blocker = sqlite3.connect(path, isolation_level=None)
            try:
                # Hold the file's write lock: the worker's deposit waits for it (busy_timeout).
                blocker.execute("BEGIN IMMEDIATE")
                sock.sendall(_request("POST", "/accounts/alice/deposit", {"amount": 5}, key))
                time.sleep(1.0)
                server.process.send_signal(signal.SIGTERM)
                time.sleep(0.5)
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
