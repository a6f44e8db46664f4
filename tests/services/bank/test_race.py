"""The race over HTTP: lock mode `none` loses money, `global` and `account` never do, a mode
switch under load keeps every request under one mode, and a client that goes away mid-transfer
never leaves half of it applied."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Callable

import anyio
import pytest

from services.bank.domain import OperationKind

from .conftest import ADMIN_TOKEN, Bank, BankFactory

pytestmark = pytest.mark.anyio

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


async def _until(condition: Callable[[], bool]) -> None:
    """Let the server (same event loop) make progress until ``condition`` holds."""
    while not condition():
        await anyio.wait_all_tasks_blocked()


class _Window:
    """A race window that parks every money move until ``release`` is set."""

    def __init__(self) -> None:
        self.inside = 0
        self.release = anyio.Event()

    async def __call__(self, kind: OperationKind) -> None:
        self.inside += 1
        await self.release.wait()


async def _deposit(bank: Bank, account: str, amount: int) -> None:
    status, body = await bank.call("POST", f"/accounts/{account}/deposit", {"amount": amount})
    assert status == 200, body


@pytest.mark.parametrize(("mode", "final"), [("none", 10), ("global", 200), ("account", 200)])
async def test_concurrent_deposits_lose_money_only_without_a_lock(
    make_bank: BankFactory, mode: str, final: int
) -> None:
    window = _Window()
    bank = await make_bank(lock_mode=mode, race_window=window)
    await bank.open_account("a", 0)
    async with anyio.create_task_group() as tg:
        for _ in range(20):
            tg.start_soon(_deposit, bank, "a", 10)
        # Every request is inside the guard: under `none` all 20 have read the balance 0 and
        # sit in the window; under a lock one is in the window and 19 wait for the lock.
        await _until(lambda: bank.locking.active == 20)
        assert window.inside == (20 if mode == "none" else 1)
        window.release.set()
    assert await bank.balance("a") == final
    audit = await bank.audit()
    assert (audit["expected"], audit["drift"]) == (200, final - 200)


@pytest.mark.parametrize(("mode", "final"), [("none", 11), ("global", 101), ("account", 101)])
async def test_bare_checkpoint_race(make_bank: BankFactory, mode: str, final: int) -> None:
    # io-delay 0: the store awaits a bare checkpoint between read and write. Ten deposits are
    # held at the door of a switch to `mode` and admitted together when it opens; without a
    # lock all ten read the balance before any of them writes.
    start = "account" if mode == "none" else "none"
    window = _Window()
    bank = await make_bank(lock_mode=start, race_window=window)
    await bank.open_account("a", 0)

    async def switch() -> None:
        assert await bank.call("PUT", "/admin/lock", {"mode": mode}, headers=AUTH) == (
            200,
            {"mode": mode},
        )

    async with anyio.create_task_group() as tg:
        tg.start_soon(_deposit, bank, "a", 1)
        await _until(lambda: window.inside == 1)
        # From now on the store's window is the bare checkpoint of io-delay 0.
        bank.store._race_window = None
        tg.start_soon(switch)
        await _until(lambda: bank.locking.switching)
        for _ in range(10):
            tg.start_soon(_deposit, bank, "a", 10)
        await _until(lambda: bank.locking.waiting == 10)
        window.release.set()
    assert await bank.balance("a") == final
    assert (await bank.audit())["drift"] == final - 101
    assert bank.locking.mode == mode


async def test_switch_to_a_lock_under_load_drains_unlocked_requests(
    make_bank: BankFactory,
) -> None:
    window = _Window()
    bank = await make_bank(lock_mode="none", race_window=window)
    await bank.open_account("a", 0)
    switched = anyio.Event()

    async def switch() -> None:
        assert await bank.call("PUT", "/admin/lock", {"mode": "account"}, headers=AUTH) == (
            200,
            {"mode": "account"},
        )
        switched.set()

    async with anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(_deposit, bank, "a", 10)
        await _until(lambda: window.inside == 5)
        tg.start_soon(switch)
        await _until(lambda: bank.locking.switching)
        for _ in range(6):
            tg.start_soon(_deposit, bank, "a", 10)
        await _until(lambda: bank.locking.waiting == 6)
        assert not switched.is_set()
        assert (await bank.call("GET", "/admin/lock", headers=AUTH))[1] == {"mode": "none"}
        window.release.set()
        await switched.wait()
    # The five unlocked deposits lost four updates between them; the six locked ones lost none.
    assert await bank.balance("a") == 10 + 60
    assert (await bank.audit())["drift"] == -40


async def test_switching_between_locks_under_load_keeps_the_books(
    make_bank: BankFactory,
) -> None:
    bank = await make_bank(lock_mode="global", io_delay=0)
    accounts = ["a", "b", "c", "d"]
    for name in accounts:
        await bank.open_account(name, 1000)
    rng = random.Random(7)
    statuses: list[int] = []

    async def transfer(source: str, target: str, amount: int) -> None:
        body = {"from": source, "to": target, "amount": amount}
        status, _ = await bank.call("POST", "/transfers", body)
        statuses.append(status)

    async def toggle() -> None:
        for mode in ["account", "global"] * 5:
            status, _ = await bank.call("PUT", "/admin/lock", {"mode": mode}, headers=AUTH)
            assert status == 200

    async with anyio.create_task_group() as tg:
        tg.start_soon(toggle)
        for _ in range(300):
            source, target = rng.sample(accounts, 2)
            tg.start_soon(transfer, source, target, rng.randint(1, 400))
    audit = await bank.audit()
    assert (audit["total"], audit["drift"], audit["negative_accounts"]) == (4000, 0, [])
    assert set(statuses) <= {200, 409}
    assert statuses.count(200) > 0


@pytest.mark.parametrize("handler_cancellation", [True, False], ids=["cancel-on", "cancel-off"])
async def test_client_gone_mid_transfer_leaves_no_half_transfer(
    make_bank: BankFactory, handler_cancellation: bool
) -> None:
    entered = anyio.Event()
    cancelled = anyio.Event()
    resumed = anyio.Event()
    release = anyio.Event()

    async def window(kind: OperationKind) -> None:
        entered.set()
        try:
            await release.wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        resumed.set()

    bank = await make_bank(
        lock_mode="account", race_window=window, handler_cancellation=handler_cancellation
    )
    await bank.open_account("a", 100)
    await bank.open_account("b", 0)
    server = bank.server.runner.server  # type: ignore[union-attr]
    assert server is not None
    body = json.dumps({"from": "a", "to": "b", "amount": 60}).encode()
    host, port = bank.server.host, bank.server.port
    assert port is not None
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(
        b"POST /transfers HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {bank.key}\r\n".encode()
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    await writer.drain()
    await entered.wait()
    client_address = writer.get_extra_info("sockname")
    (ours,) = [
        handler
        for handler in server.connections
        if handler.transport is not None
        and handler.transport.get_extra_info("peername") == client_address
    ]
    writer.close()
    await writer.wait_closed()
    # The server has seen the client go (aiohttp drops the transport on connection_lost).
    await _until(lambda: ours.transport is None)
    if handler_cancellation:
        await cancelled.wait()
        expected = {"a": 100, "b": 0}
        entries = 2
    else:
        # aiohttp lets the handler run on; the transfer then completes, whole.
        assert not cancelled.is_set()
        release.set()
        await resumed.wait()
        expected = {"a": 40, "b": 60}
        entries = 3
    assert {name: await bank.balance(name) for name in "ab"} == expected
    assert len(await bank.store.journal()) == entries
    audit = await bank.audit()
    assert (audit["total"], audit["drift"]) == (100, 0)
    assert bank.locking.active == 0
