"""Only safe configurations by accident (issue 14, finding 1).

Before: ``serve --workers 2 --lock account`` (or ``global``, ``none``) on a database store started
and answered every lost update with 200 while ``/health`` said ok. Now such a server refuses to
start, naming ``db`` and the flag for the lesson; with the flag, and with lock mode ``none``, the
banner and ``/health`` say the service is unsafe on purpose.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from services.bank.run.config import BankConfig
from services.bank.tools.showdown import start_server

from .conftest import BankFactory

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("mode", ["none", "global", "account"])
def test_several_workers_refuse_an_in_process_lock_mode(tmp_path: Path, mode: str) -> None:
    store = f"sqlite:///{tmp_path / 'bank.db'}"
    with pytest.raises(ValueError, match=r"use --lock db, or pass --unsafe-in-process-locks"):
        BankConfig(store=store, workers=2, lock_mode=mode)
    config = BankConfig(store=store, workers=2, lock_mode=mode, unsafe_in_process_locks=True)
    assert config.unsafe_reason() is not None
    assert BankConfig(store=store, workers=2, lock_mode="db").unsafe_reason() is None


def test_serve_refuses_before_starting_and_says_why(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "services.bank", "serve", "--port", "0", "--workers", "2"]
    command += ["--store", f"sqlite:///{tmp_path / 'bank.db'}", "--lock", "account"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, lines
    assert lines[0] == (
        "python -m services.bank serve: error: lock mode 'account' locks inside one process, "
        "so 2 workers would lose acknowledged money (each one's lock orders only its own "
        "requests); use --lock db, or pass --unsafe-in-process-locks to demonstrate the loss"
    )
    # Nothing was created: the refusal came before any store was opened.
    assert not (tmp_path / "bank.db").exists()


def test_the_flag_starts_it_and_the_banner_and_health_say_unsafe(tmp_path: Path) -> None:
    import json
    import urllib.request

    args = ["--workers", "2", "--store", f"sqlite:///{tmp_path / 'bank.db'}", "--lock", "global"]
    with start_server([*args, "--unsafe-in-process-locks"]) as server:
        with urllib.request.urlopen(server.url + "/health", timeout=10) as response:
            health = json.loads(response.read())
        assert server.stop() == 0
        assert server.process.stderr is not None
        stderr = server.process.stderr.read()
    assert health["status"] == "ok"
    assert health["unsafe"] == (
        "lock mode 'global' with 2 workers is unsafe on purpose (--unsafe-in-process-locks): "
        "each worker's lock orders only its own requests"
    )
    assert stderr.splitlines()[0] == f"warning: {health['unsafe']}"


async def test_health_says_lock_mode_none_is_unsafe_and_follows_a_switch(
    make_bank: BankFactory,
) -> None:
    from .conftest import ADMIN_TOKEN

    bank = await make_bank(lock_mode="none")
    status, body = await bank.call("GET", "/health")
    assert status == 200
    assert body["unsafe"].startswith("lock mode 'none' is unsafe on purpose")
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    assert (await bank.call("PUT", "/admin/lock", {"mode": "account"}, headers=auth))[0] == 200
    status, body = await bank.call("GET", "/health")
    assert (status, body) == (200, {"status": "ok", "lock_mode": "account", "store": "memory"})


def test_showdown_still_runs_an_in_process_mode_over_workers(tmp_path: Path) -> None:
    from services.bank.tools.showdown import ShowdownSettings, run_showdown

    settings = ShowdownSettings(
        requests=60,
        concurrency=4,
        accounts=2,
        modes=("account",),
        progress=False,
        store=f"sqlite:///{tmp_path / 'bank.db'}",
        workers=2,
    )
    [row] = run_showdown(settings)
    assert row.mode == "account"
    assert row.report.requests == 60
