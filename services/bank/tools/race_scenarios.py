"""The bank's race, through its HTTP API, as scenarios for :func:`asynclocks.explore`.

Each scenario starts the real application (``create_app``, memory store, io-delay 0) on an
aiohttp ``TestServer``, sends two concurrent withdrawals of 60 from one account holding 100 with
aiohttp's own client, and reads the state back through the API. Inside an exploration the server
and the client talk over the explorer's simulated loopback network, so every interleaving of the
two requests' handlers can be tried and replayed. Without a lock both withdrawals can read the
balance 100 before either writes it: both succeed and 120 leaves an account that held 100 (the
audit's drift says how much). Under ``account`` or ``global`` one of them is refused.

``none_app``, ``account_app`` and ``global_app`` are factories of fresh apps in each lock mode, for
``python -m asynclocks web services.bank.tools.race_scenarios:none_app --openapi``.

These lessons run in process and never listen on a port, so their banks are built with
``require_keys=False``: the race is the subject, and anonymous requests keep each schedule short
(and let ``asynclocks.web`` generate requests for the money routes, whose OpenAPI security then
lists the anonymous ``{}``). ``/audit`` still needs the admin token (:data:`ADMIN_TOKEN`).

Run it: ``python -m asynclocks explore services.bank.tools.race_scenarios:two_withdrawals_none`` (or
``_account``/``_global`` with ``--preemption-bound 2``), or
``python -m services.bank.tools.race_scenarios [none|account|global]``.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable

import anyio
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from ..http import create_app
from ..run.config import BankConfig

#: The account's opening balance and each withdrawal: one fits, two do not.
OPENING = 100
WITHDRAWAL = 60
#: The lessons' admin token, for their ``GET /audit``.
ADMIN_TOKEN = "race-scenarios-admin"


def _lesson(lock_mode: str) -> BankConfig:
    return BankConfig(
        lock_mode=lock_mode,
        store="memory",
        io_delay=0.0,
        require_keys=False,
        admin_token=ADMIN_TOKEN,
    )


async def two_withdrawals(lock_mode: str) -> None:
    """Two concurrent withdrawals of 60 from 100 through the HTTP API; raises on an overdraft.

    Raises:
        AssertionError: Money was created or destroyed: both withdrawals were accepted, or the
            balance read back does not match the ones accepted.
    """
    app = create_app(_lesson(lock_mode))
    async with TestClient(TestServer(app)) as client:
        created = await client.post("/accounts", json={"id": "alice", "balance": OPENING})
        assert created.status == 201, await created.text()
        statuses: list[int] = []

        async def withdraw() -> None:
            response = await client.post("/accounts/alice/withdraw", json={"amount": WITHDRAWAL})
            await response.read()
            statuses.append(response.status)

        async with anyio.create_task_group() as tg:
            tg.start_soon(withdraw)
            tg.start_soon(withdraw)
        balance = (await (await client.get("/accounts/alice")).json())["balance"]
        admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        audit = await (await client.get("/audit", headers=admin)).json()
    accepted = statuses.count(200)
    # 409: the second withdrawal is refused for insufficient funds, the correct outcome.
    assert set(statuses) <= {200, 409}, statuses
    assert accepted == 1, (
        f"both withdrawals of {WITHDRAWAL} from {OPENING} were accepted (lock mode "
        f"{lock_mode!r}): the balance reads {balance}, the audit's drift is {audit['drift']}"
    )
    assert (balance, audit["drift"]) == (OPENING - WITHDRAWAL, 0), (balance, audit)


async def two_withdrawals_none() -> None:
    """No lock: fails (an overdraft)."""
    await two_withdrawals("none")


async def two_withdrawals_account() -> None:
    """The account's own lock: passes."""
    await two_withdrawals("account")


async def two_withdrawals_global() -> None:
    """One lock for the whole bank: passes."""
    await two_withdrawals("global")


SCENARIOS: dict[str, Callable[[], Awaitable[None]]] = {
    "none": two_withdrawals_none,
    "account": two_withdrawals_account,
    "global": two_withdrawals_global,
}


def scenario(lock_mode: str) -> Callable[[], Awaitable[None]]:
    """The zero-argument scenario for ``lock_mode`` (``none``, ``account`` or ``global``).

    Raises:
        ValueError: An unknown lock mode.
    """
    try:
        return SCENARIOS[lock_mode]
    except KeyError:
        raise ValueError(
            f"unknown lock mode {lock_mode!r}; choose one of {', '.join(SCENARIOS)}"
        ) from None


def none_app() -> web.Application:
    """A fresh bank in lock mode ``none`` (memory store, io-delay 0), for ``asynclocks.web``."""
    return create_app(_lesson("none"))


def account_app() -> web.Application:
    """A fresh bank in lock mode ``account``, for ``asynclocks.web``."""
    return create_app(_lesson("account"))


def global_app() -> web.Application:
    """A fresh bank in lock mode ``global``, for ``asynclocks.web``."""
    return create_app(_lesson("global"))


def main(argv: list[str] | None = None) -> int:
    """Explore one lock mode and print the report; exit 1 when a failure was found."""
    import asynclocks

    args = sys.argv[1:] if argv is None else argv
    mode = args[0] if args else "none"
    report = asynclocks.explore(scenario(mode), preemption_bound=2)
    print(report)
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
