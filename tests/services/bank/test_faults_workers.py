"""``kill -9`` of one of two workers serving a load on PostgreSQL, then a restart: every
operation acknowledged to a client is in the journal and in the balances, and the drift is 0.

The supervisor never restarts a dead worker silently: it stops the other one and exits 1 (see
``services.bank.run.workers``); the service is then started again on the same database, as an
operator would, and the books are checked against what the clients were told. The kill happens
once 300 operations were acknowledged (an event, not a timer), while 16 clients are mid-flight.
"""

from __future__ import annotations

import os
import re
import signal
from typing import Any

import anyio
import pytest

from services.bank.stores.postgres import PostgresStore
from services.bank.tools.showdown import ServerProcess, start_server

from ._faults import ACCOUNTS, OPENING, Load, check_books
from .conftest import ADMIN_AUTH, ADMIN_TOKEN

pytestmark = [pytest.mark.anyio, pytest.mark.postgres, pytest.mark.slow]

PIDS = re.compile(r"supervisor: (\d+) workers share port (\d+) \(pids ([\d, ]+)\)")
SERVE = ["--workers", "2", "--lock", "db"]


def _worker_pids(server: ServerProcess) -> list[int]:
    assert server.process.stderr is not None
    line = server.process.stderr.readline()
    match = PIDS.match(line)
    assert match, line
    return [int(pid) for pid in match[3].split(", ")]


ADMIN_ENV = {**os.environ, "BANK_ADMIN_TOKEN": ADMIN_TOKEN}


async def _post(url: str, body: object, headers: dict[str, str]) -> tuple[int, Any]:
    import aiohttp

    async with (
        aiohttp.ClientSession() as session,
        session.post(url, json=body, headers=headers) as resp,
    ):
        return resp.status, await resp.json()


async def _get(url: str, headers: dict[str, str]) -> dict[str, object]:
    import aiohttp

    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as resp:
        assert resp.status == 200, await resp.text()
        body: dict[str, object] = await resp.json()
        return body


async def test_kill_9_of_a_worker_loses_nothing_acknowledged(postgres_url: str) -> None:
    with start_server([*SERVE, "--store", postgres_url], env=ADMIN_ENV) as server:
        pids = _worker_pids(server)
        status, client = await _post(f"{server.url}/clients", {"id": "tester"}, ADMIN_AUTH)
        assert status == 201
        auth = {"Authorization": f"Bearer {client['key']}"}
        for account in ACCOUNTS:
            status, _ = await _post(
                f"{server.url}/accounts", {"id": account, "balance": OPENING}, auth
            )
            assert status == 201
        load = Load(server.url, clients=16, headers=auth)
        with anyio.fail_after(50):
            async with anyio.create_task_group() as tg:
                tg.start_soon(load.run)
                await load.when(lambda s: len(s.acknowledged) >= 300).wait()
                os.kill(pids[1], signal.SIGKILL)
                # The supervisor notices, stops the other worker (which drains its requests)
                # and exits 1; the clients then find nobody listening.
                code = await anyio.to_thread.run_sync(server.process.wait)
                load.stop()
        assert code == 1
        assert server.process.stderr is not None
        assert f"(pid {pids[1]}) was killed by SIGKILL" in server.process.stderr.read()
    statuses = dict(load.statuses)
    assert not [s for s in statuses if isinstance(s, int) and s >= 500 and s != 503], statuses
    assert len(load.acknowledged) >= 300

    # An operator starts the service again on the same database.
    with start_server([*SERVE, "--store", postgres_url], env=ADMIN_ENV) as server:
        _worker_pids(server)
        balances = {}
        for account in ACCOUNTS:
            # The client's key outlives the restart: it is in the database.
            body = await _get(f"{server.url}/accounts/{account}", auth)
            balances[account] = int(str(body["balance"]))
        audit = await _get(f"{server.url}/audit", ADMIN_AUTH)
        store = PostgresStore(postgres_url, pool_size=1)
        await store.open()
        try:
            journal = await store.journal()
        finally:
            await store.close()
    check_books(load, journal, balances, audit)
