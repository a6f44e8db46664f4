"""PostgreSQL restarted under load: 503 while it is away (never a 500), recovery without help,
nothing acknowledged lost.

The service runs in this process on a PostgreSQL schema of its own, in lock mode ``db``; 16
clients keep sending operations with unique amounts while the cluster is restarted with
``pg_ctlcluster ... restart``. The test waits for events, not for time: enough acknowledgements
before the restart, the restart command returning, then enough acknowledgements after it. A
``finally`` makes sure the cluster is up again whatever happens, as other tests need it.
"""

from __future__ import annotations

import anyio
import pytest

from services.bank.stores.postgres import PostgresStore

from ._faults import ACCOUNTS, OPENING, Load, check_books, restart_postgres, start_postgres
from ._reliability import ServedFactory
from ._reliability import served_bank as served_bank

pytestmark = [pytest.mark.anyio, pytest.mark.postgres, pytest.mark.slow]


async def test_postgres_restart_under_load(served_bank: ServedFactory, postgres_url: str) -> None:
    store = PostgresStore(postgres_url, pool_size=16)
    bank = await served_bank(postgres_url, lock_mode="db", store=store)
    for account in ACCOUNTS:
        assert (await bank.call("POST", "/accounts", {"id": account, "balance": OPENING}))[0] == 201
    load = Load(f"http://127.0.0.1:{bank.port}", headers=bank.auth)
    try:
        with anyio.fail_after(50):
            async with anyio.create_task_group() as tg:
                tg.start_soon(load.run)
                await load.when(lambda s: len(s.acknowledged) >= 200).wait()
                await anyio.to_thread.run_sync(restart_postgres)
                after_restart = len(load.acknowledged)
                # Recovery by itself: the same pool, the same process, new acknowledgements.
                await load.when(lambda s: len(s.acknowledged) >= after_restart + 200).wait()
                load.stop()
    finally:
        await anyio.to_thread.run_sync(start_postgres)
    statuses = dict(load.statuses)
    assert not [s for s in statuses if isinstance(s, int) and s >= 500 and s != 503], statuses
    assert statuses.get(503, 0) > 0, f"the outage was never seen: {statuses}"
    assert not [s for s in statuses if isinstance(s, str)], statuses
    journal = await store.journal()
    balances = {}
    for account in ACCOUNTS:
        status, body = await bank.call("GET", f"/accounts/{account}")
        assert status == 200, body
        balances[account] = body["balance"]
    check_books(load, journal, balances, await bank.audit())
