"""Exactly-once that holds: ``Idempotency-Key`` records scoped per client, kept for the
retention window on every store, and a quota that refuses instead of evicting.

Before the scoping, the memory store kept one table of 100,000 keys for everyone, forgetting the
oldest first: a flood of cheap keyed requests (404s will do) from anyone pushed out another
client's record, and that client's retried deposit was applied a second time. The HTTP test at
the end is that flood, scaled down by a small quota, and the backend tests run every store with
a fake clock, so the window's edges are hit exactly, every run.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from services.bank.domain import IdempotencyQuotaExceeded
from services.bank.ports import IdempotencyBackend, KeyPolicy, StoredResponse
from services.bank.stores.memory import MemoryIdempotency
from services.bank.stores.postgres import PostgresStore
from services.bank.stores.sqlite import SqliteStore

from .conftest import BankFactory, register_client

pytestmark = pytest.mark.anyio


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    kind: str = request.param
    if kind == "memory":
        yield MemoryIdempotency()
        return
    store: SqliteStore | PostgresStore
    if kind == "sqlite":
        store = SqliteStore(f"sqlite:///{tmp_path / 'keys.db'}")
    else:
        store = PostgresStore(request.getfixturevalue("postgres_url"), pool_size=2)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def record(
    keys: IdempotencyBackend, client: str, key: str, policy: KeyPolicy, body: bytes = b"{}"
) -> StoredResponse | None:
    """Claim ``key`` for ``client``; save ``body`` if it is new. Return the replay, if any."""
    async with keys.claim(key, "f", client=client, policy=policy) as claim:
        if claim.replay is not None:
            return claim.replay
        await claim.save(StoredResponse(200, body))
        return None


async def test_a_flood_from_one_client_never_evicts_another_clients_key(backend: Any) -> None:
    policy = KeyPolicy(retention=3600, quota=20)
    assert await record(backend, "victim", "deposit-1", policy, b"first") is None
    for index in range(20):
        assert await record(backend, "flood", f"k{index}", policy) is None
    # The flooder is refused; nothing of anyone's is forgotten to make room.
    with pytest.raises(IdempotencyQuotaExceeded, match="already holds 20 Idempotency-Keys"):
        await record(backend, "flood", "one-more", policy)
    assert await record(backend, "victim", "deposit-1", policy) == StoredResponse(200, b"first")
    assert await record(backend, "flood", "k0", policy) == StoredResponse(200, b"{}")


async def test_the_same_key_from_two_clients_is_two_records(backend: Any) -> None:
    policy = KeyPolicy()
    assert await record(backend, "alice", "same", policy, b"alice") is None
    assert await record(backend, "bob", "same", policy, b"bob") is None
    assert await record(backend, "alice", "same", policy) == StoredResponse(200, b"alice")
    assert await record(backend, "bob", "same", policy) == StoredResponse(200, b"bob")


async def test_records_are_kept_for_the_window_and_no_younger_one_is_dropped(
    backend: Any,
) -> None:
    clock = FakeClock()
    policy = KeyPolicy(retention=100, quota=2, clock=clock)
    assert await record(backend, "c", "old", policy, b"old") is None
    clock.now += 50
    assert await record(backend, "c", "young", policy, b"young") is None
    clock.now += 50  # "old" is exactly 100 s old: still inside the window
    assert await record(backend, "c", "old", policy) == StoredResponse(200, b"old")
    with pytest.raises(IdempotencyQuotaExceeded):
        await record(backend, "c", "third", policy)
    clock.now += 1  # "old" is past the window, "young" is 51 s old
    assert await record(backend, "c", "third", policy, b"third") is None
    assert await record(backend, "c", "young", policy) == StoredResponse(200, b"young")
    # "old" was dropped when it expired: the key is free again, a new record.
    clock.now += 50  # "young" is 101 s old now, "third" 50 s
    assert await record(backend, "c", "old", policy, b"new") is None
    assert await record(backend, "c", "third", policy) == StoredResponse(200, b"third")


async def test_expiry_is_per_client(backend: Any) -> None:
    clock = FakeClock()
    policy = KeyPolicy(retention=10, quota=5, clock=clock)
    assert await record(backend, "a", "k", policy, b"a") is None
    clock.now += 11
    # Another client's claim cleans only its own records; "a"'s expired one goes at its next.
    assert await record(backend, "b", "k", policy, b"b") is None
    assert await record(backend, "a", "k", policy, b"a2") is None
    assert await record(backend, "b", "k", policy) == StoredResponse(200, b"b")


async def test_a_retried_deposit_within_the_window_replays_after_a_flood(
    make_bank: BankFactory,
) -> None:
    bank = await make_bank(idempotency_quota=50)
    await bank.open_account("mine", 100)
    deposit = {"amount": 7}
    keyed = {"Idempotency-Key": "deposit-1"}
    assert await bank.call("POST", "/accounts/mine/deposit", deposit, headers=keyed) == (
        200,
        {"id": "mine", "balance": 107},
    )
    flooder = await register_client(bank.client, "flooder")
    flood = {"Authorization": f"Bearer {flooder}"}
    statuses = []
    for index in range(60):
        headers = {**flood, "Idempotency-Key": f"f{index}"}
        status, _ = await bank.call("POST", "/accounts/nobody/deposit", deposit, headers=headers)
        statuses.append(status)
    # Cheap 404s, recorded until the quota, then refused: never an eviction.
    assert statuses == [404] * 50 + [429] * 10
    status, answer = await bank.call("POST", "/accounts/x/deposit", deposit, headers=headers)
    assert (status, answer["error"]) == (429, "idempotency_quota_exceeded")
    async with bank.client.post(
        "/accounts/mine/deposit",
        data=json.dumps(deposit),
        headers=bank.credentials("/accounts", {**keyed, "Content-Type": "application/json"}),
    ) as response:
        assert response.status == 200
        assert response.headers["Idempotent-Replayed"] == "true"
        assert await response.json() == {"id": "mine", "balance": 107}
    assert await bank.balance("mine") == 107
