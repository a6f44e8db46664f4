"""Load and bookkeeping shared by the fault tests (kill -9 of a worker, PostgreSQL restart).

Every request carries a unique amount, so the journal can be matched to the requests one by one
afterwards: :func:`check_books` asserts that every acknowledged operation is journaled, that every
journal entry is a request that was sent, and that the balances are the journal replayed.
"""

from __future__ import annotations

import itertools
import random
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import aiohttp
import anyio

from services.bank.domain import JournalEntry

__all__ = [
    "ACCOUNTS",
    "OPENING",
    "Load",
    "check_books",
    "pg_isready",
    "postgres_cluster",
    "restart_postgres",
    "start_postgres",
]

ACCOUNTS: Final = [f"f{n}" for n in range(8)]
OPENING: Final = 10**9


def postgres_cluster() -> tuple[str, str]:
    """``(version, name)`` of the local cluster (the one directory under /etc/postgresql)."""
    [version] = [p.name for p in Path("/etc/postgresql").iterdir()]
    return version, "main"


def _pg_ctl(action: str) -> subprocess.CompletedProcess[str]:
    version, name = postgres_cluster()
    return subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, name, action],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def pg_isready() -> bool:
    """Whether the server at 127.0.0.1:5432 accepts connections."""
    result = subprocess.run(
        ["pg_isready", "-q", "-h", "127.0.0.1", "-p", "5432"], timeout=30, check=False
    )
    return result.returncode == 0


def restart_postgres() -> None:
    """Restart the cluster (blocking; run it in a thread)."""
    result = _pg_ctl("restart")
    assert result.returncode == 0, result.stderr


def start_postgres() -> None:
    """Make sure the cluster is up again and accepting connections (for ``finally`` blocks)."""
    if not pg_isready():
        _pg_ctl("start")
    for _ in range(600):
        if pg_isready():
            return
        # Infrastructure, not test synchronisation: pace the probes while the server starts.
        time.sleep(0.1)
    raise AssertionError("PostgreSQL did not come back up")


@dataclass
class Load:
    """Clients sending deposits, withdrawals and transfers with unique amounts.

    Attributes:
        acknowledged: Amount -> the operation, for every request answered 200.
        sent: Amount -> the operation, for every request sent (answered or not).
        statuses: Status (or the exception's name when no answer came) -> count.
        headers: Sent with every request (the client's ``Authorization``).
    """

    base_url: str
    clients: int = 16
    seed: int = 1
    #: Sent with every request: the ``Authorization`` of the client whose accounts it moves.
    headers: dict[str, str] = field(default_factory=dict)
    acknowledged: dict[int, dict[str, Any]] = field(default_factory=dict)
    sent: dict[int, dict[str, Any]] = field(default_factory=dict)
    statuses: Counter[int | str] = field(default_factory=Counter)
    _amounts: Iterator[int] = field(default_factory=lambda: itertools.count(1_000))
    _watchers: list[tuple[Callable[[Load], bool], anyio.Event]] = field(default_factory=list)
    _stop: bool = False

    def when(self, condition: Callable[[Load], bool]) -> anyio.Event:
        """An event set once ``condition(self)`` holds (checked after every answer)."""
        event = anyio.Event()
        self._watchers.append((condition, event))
        self._check()
        return event

    def _check(self) -> None:
        for condition, event in self._watchers:
            if not event.is_set() and condition(self):
                event.set()

    def stop(self) -> None:
        self._stop = True

    def _next(self, rng: random.Random) -> tuple[str, dict[str, Any]]:
        amount = next(self._amounts)
        kind = rng.choice(["deposit", "withdraw", "transfer", "transfer"])
        if kind == "transfer":
            source, target = rng.sample(ACCOUNTS, 2)
            return "/transfers", {"from": source, "to": target, "amount": amount}
        return f"/accounts/{rng.choice(ACCOUNTS)}/{kind}", {"amount": amount}

    async def _client(self, session: aiohttp.ClientSession, rng: random.Random) -> None:
        while not self._stop:
            path, body = self._next(rng)
            self.sent[body["amount"]] = {"path": path, **body}
            try:
                async with session.post(
                    self.base_url + path, json=body, headers=self.headers
                ) as resp:
                    status = resp.status
                    answer = await resp.json(content_type=None)
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                self.statuses[type(exc).__name__] += 1
                self._check()
                continue
            self.statuses[status] += 1
            if status == 200:
                self.acknowledged[body["amount"]] = {"path": path, **body}
            else:
                assert isinstance(answer, dict), answer
                assert set(answer) == {"error", "detail"}, answer
            self._check()

    async def run(self) -> None:
        """Send until :meth:`stop`; each client on its own connection pool entry."""
        timeout = aiohttp.ClientTimeout(total=30)
        connector = aiohttp.TCPConnector(limit=self.clients, force_close=False)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            async with anyio.create_task_group() as tg:
                for index in range(self.clients):
                    tg.start_soon(self._client, session, random.Random(self.seed * 1000 + index))


def check_books(
    load: Load, journal: list[JournalEntry], balances: dict[str, int], audit: dict[str, Any]
) -> None:
    """Assert that nothing acknowledged was lost and nothing was applied twice or by half."""
    moves = [entry for entry in journal if entry.kind != "open"]
    by_amount = {entry.amount: entry for entry in moves}
    assert len(by_amount) == len(moves), "an operation was journaled twice"
    lost = sorted(set(load.acknowledged) - set(by_amount))
    assert not lost, f"acknowledged but not journaled: {[load.acknowledged[a] for a in lost[:5]]}"
    assert set(by_amount) <= set(load.sent), "the journal holds an operation nobody sent"
    for amount, entry in by_amount.items():
        op = load.sent[amount]
        if op["path"] == "/transfers":
            assert (entry.kind, entry.account, entry.counterparty) == (
                "transfer",
                op["from"],
                op["to"],
            )
        else:
            _, _, account, kind = op["path"].split("/")
            assert (entry.kind, entry.account) == (kind, account)
    replay = dict.fromkeys(ACCOUNTS, OPENING)
    for entry in moves:
        if entry.kind == "deposit":
            replay[entry.account] += entry.amount
        elif entry.kind == "withdraw":
            replay[entry.account] -= entry.amount
        else:
            assert entry.counterparty is not None
            replay[entry.account] -= entry.amount
            replay[entry.counterparty] += entry.amount
    assert balances == replay, "the balances are not the journal replayed: a half-applied operation"
    assert audit["drift"] == 0, audit
    assert audit["negative_accounts"] == [], audit
