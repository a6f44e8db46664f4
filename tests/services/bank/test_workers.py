"""``serve --workers N``: the supervisor starts N processes on one port, stops them all on
SIGINT/SIGTERM, and never restarts a dead one silently."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from services.bank.tools.showdown import ServerProcess, start_server

PIDS = re.compile(r"supervisor: (\d+) workers share port (\d+) \(pids ([\d, ]+)\)")


ADMIN = "workers-admin"


def _get(url: str, token: str | None = None) -> dict[str, object]:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    with urllib.request.urlopen(
        urllib.request.Request(url, headers=headers), timeout=10
    ) as response:
        body: dict[str, object] = json.load(response)
        return body


def _post(url: str, body: object, token: str) -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, json.load(response)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _supervisor_line(server: ServerProcess) -> tuple[int, list[int]]:
    assert server.process.stderr is not None
    line = server.process.stderr.readline()
    match = PIDS.match(line)
    assert match, line
    return int(match[2]), [int(pid) for pid in match[3].split(", ")]


@contextmanager
def _workers(tmp_path: Path, *extra: str) -> Iterator[ServerProcess]:
    store = f"sqlite:///{tmp_path / 'bank.db'}"
    args = ["--workers", "2", "--store", store, "--lock", "db", *extra]
    with start_server(args, env={**os.environ, "BANK_ADMIN_TOKEN": ADMIN}) as server:
        yield server


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_workers_share_one_port_and_stop_together(tmp_path: Path, signum: signal.Signals) -> None:
    with _workers(tmp_path) as server:
        port, pids = _supervisor_line(server)
        assert server.url == f"http://127.0.0.1:{port}"
        assert len(pids) == 2
        assert all(_alive(pid) for pid in pids)
        status, client = _post(f"{server.url}/clients", {"id": "tester"}, ADMIN)
        assert status == 201
        key = str(client["key"])
        assert _post(f"{server.url}/accounts", {"id": "a", "balance": 5}, key) == (
            201,
            {"id": "a", "balance": 5},
        )
        for _ in range(10):
            # Fresh connections, spread over both workers: both see the shared file (the
            # client's key too, registered through one of them).
            assert _get(f"{server.url}/accounts/a", key) == {"id": "a", "balance": 5}
        assert _get(f"{server.url}/health") == {
            "status": "ok",
            "lock_mode": "db",
            "store": "sqlite",
        }
        server.process.send_signal(signum)
        assert server.process.wait(timeout=30) == 0
        assert server.process.stderr is not None
        rest = server.process.stderr.read()
        assert f"{signum.name} received; stopping 2 workers" in rest
        assert not any(_alive(pid) for pid in pids)


def test_a_dead_worker_stops_the_supervisor(tmp_path: Path) -> None:
    with _workers(tmp_path) as server:
        _, pids = _supervisor_line(server)
        os.kill(pids[1], signal.SIGKILL)
        assert server.process.wait(timeout=30) == 1
        assert server.process.stderr is not None
        rest = server.process.stderr.read()
        assert (
            f"worker 2 (pid {pids[1]}) was killed by SIGKILL; it is not restarted, "
            "stopping the others"
        ) in rest
        assert not _alive(pids[0])


def test_a_worker_that_cannot_start_is_reported(tmp_path: Path) -> None:
    # A directory where the database file should be: every worker fails to open its store.
    # `serve` checks the store before it starts any worker (test_cli_errors.py), so the
    # supervisor is called directly here, as if the store broke between that check and the start.
    (tmp_path / "bank.db").mkdir()
    script = (
        "import sys\n"
        "from services.bank.run.config import BankConfig\n"
        "from services.bank.run.workers import supervise\n"
        "config = BankConfig(port=0, workers=2, lock_mode='db', store=sys.argv[1])\n"
        "sys.exit(supervise(config))\n"
    )
    command = [sys.executable, "-c", script, f"sqlite:///{tmp_path / 'bank.db'}"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1
    assert result.stdout == ""
    assert re.search(r"worker \d \(pid \d+\) exited with code 1 before listening", result.stderr)


def test_serve_workers_checks_the_store_before_any_worker(tmp_path: Path) -> None:
    (tmp_path / "bank.db").mkdir()
    command = [sys.executable, "-m", "services.bank", "serve", "--port", "0", "--workers", "2"]
    command += ["--lock", "db", "--store", f"sqlite:///{tmp_path / 'bank.db'}"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert result.stdout == ""
    assert (
        result.stderr
        == f"error: cannot open the SQLite database {tmp_path / 'bank.db'}: it is a directory\n"
    )


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--workers", "2"], "2 workers need a store they can share"),
        (["--workers", "0"], "argument --workers: must be between 1 and 64, got 0"),
        (["--lock", "db"], "lock mode 'db' needs a database store"),
        (["--store", "sqlite://rel.db"], "store URL 'sqlite://rel.db' must start with sqlite:///"),
        (["--store", "mysql://x"], "unknown store 'mysql://x'; expected 'memory', 'sqlite:///"),
        (["--store", "postgresql://h:99999/db"], "is not a valid PostgreSQL URL"),
    ],
)
def test_bad_worker_and_store_flags_exit_2(flags: list[str], message: str) -> None:
    command = [sys.executable, "-m", "services.bank", "serve", "--port", "0", *flags]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert result.stdout == ""


def test_one_process_opens_its_store_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # `serve` with one worker used to open the store to check it, close it, then open it again
    # to serve (twice the migration, twice the connections, on a slow database twice the wait).
    import socket

    from services.bank.run.config import BankConfig
    from services.bank.run.workers import serve_forever
    from services.bank.stores.sqlite import SqliteStore

    opened: list[Path] = []
    open_store = SqliteStore.open

    async def counted(store: SqliteStore) -> None:
        opened.append(store.path)
        await open_store(store)

    monkeypatch.setattr(SqliteStore, "open", counted)
    path = tmp_path / "bank.db"
    with socket.socket() as taken:
        # The port is taken, so serving stops right after the store opened: exit 1.
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        config = BankConfig(
            store=f"sqlite:///{path}", port=taken.getsockname()[1], lock_mode="none"
        )
        assert serve_forever(config, loop="asyncio") == 1
    assert opened == [path]
    # The warning of a service unsafe on purpose still comes before it tries to listen.
    warning, error = capsys.readouterr().err.splitlines()
    assert warning == f"warning: {config.unsafe_reason()}"
    assert error.startswith(f"error: cannot listen on 127.0.0.1:{config.port}: ")


def test_one_process_listens_with_its_collector_tuned(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The start-up heap frozen and the young threshold raised (see tune_collector); the
    # caller's process gets its collector back afterwards.
    import gc
    import socket

    from services.bank.run.config import BankConfig
    from services.bank.run.connections import GuardedSite
    from services.bank.run.server import SERVING_GC_THRESHOLD
    from services.bank.run.workers import serve_forever

    at_listen: list[tuple[int, int]] = []
    listen = GuardedSite.start
    thresholds = gc.get_threshold()

    async def counted(site: GuardedSite) -> None:
        at_listen.append((gc.get_freeze_count(), gc.get_threshold()[0]))
        await listen(site)

    monkeypatch.setattr(GuardedSite, "start", counted)
    assert gc.get_freeze_count() == 0
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        config = BankConfig(port=taken.getsockname()[1], lock_mode="account")
        assert serve_forever(config, loop="asyncio") == 1
    assert len(at_listen) == 1
    frozen, threshold = at_listen[0]
    assert frozen > 0
    assert threshold == SERVING_GC_THRESHOLD != thresholds[0]
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == thresholds
    assert "cannot listen" in capsys.readouterr().err
