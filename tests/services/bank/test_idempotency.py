"""``Idempotency-Key``: a repeated request is answered from the record, never applied twice.

Run over the app on every store: memory (keys in process), SQLite and PostgreSQL (keys in the
database, in the operation's transaction).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from multidict import CIMultiDict

from services.bank.domain import IdempotencyKeyReused, OperationKind
from services.bank.http import LOCKING, create_app
from services.bank.http.errors import InvalidIdempotencyKey
from services.bank.http.idempotency import check_key, fingerprint
from services.bank.ports import KeyPolicy, RaceWindow, Store, StoredResponse
from services.bank.run.config import BankConfig
from services.bank.stores.memory import MemoryIdempotency, MemoryStore
from services.bank.stores.postgres import PostgresStore
from services.bank.stores.sqlite import SqliteStore

pytestmark = pytest.mark.anyio

Client = TestClient[web.Request, web.Application]


ADMIN = "idempotency-admin"


class Api:
    """A test client with JSON helpers, acting for one client (its ``Authorization`` header)."""

    def __init__(self, client: Client, store: Store, api_key: str | None = None) -> None:
        self.client = client
        self.store = store
        self.auth = {} if api_key is None else {"Authorization": f"Bearer {api_key}"}

    async def register(self, client_id: str) -> str:
        """Register ``client_id`` with the admin token; return its API key."""
        admin = {"Authorization": f"Bearer {ADMIN}"}
        async with self.client.post("/clients", json={"id": client_id}, headers=admin) as answer:
            assert answer.status == 201, await answer.text()
            key: str = (await answer.json())["key"]
            return key

    async def post(
        self, path: str, body: object, key: str | None = None, **headers: str
    ) -> tuple[int, Any, CIMultiDict[str]]:
        sent = CIMultiDict({"Content-Type": "application/json", **self.auth, **headers})
        if key is not None:
            sent["Idempotency-Key"] = key
        async with self.client.post(path, data=json.dumps(body), headers=sent) as response:
            return response.status, await response.json(), CIMultiDict(response.headers)

    async def balance(self, account: str) -> int:
        async with self.client.get(f"/accounts/{account}", headers=self.auth) as response:
            balance: int = (await response.json())["balance"]
            return balance


ApiFactory = Callable[..., Awaitable[Api]]


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def make_api(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ApiFactory]:
    """``await make_api(lock_mode=..., race_window=...)``: the app on the parametrized store;
    every app of one test shares the same database."""
    kind: str = request.param
    url = (
        "memory"
        if kind == "memory"
        else f"sqlite:///{tmp_path / 'bank.db'}"
        if kind == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    keys: dict[str, str] = {}
    async with AsyncExitStack() as stack:

        async def factory(
            lock_mode: str = "account",
            race_window: RaceWindow | None = None,
            client_id: str = "tester",
        ) -> Api:
            store: Store
            if kind == "memory":
                store = MemoryStore(race_window=race_window)
            elif kind == "sqlite":
                store = SqliteStore(url, race_window=race_window)
            else:
                store = PostgresStore(url, race_window=race_window, pool_size=4)
            config = BankConfig(lock_mode=lock_mode, store=url, admin_token=ADMIN)
            app = create_app(config, store=store)
            client: Client = TestClient(TestServer(app))
            await stack.enter_async_context(client)
            api = Api(client, store)
            # The databases are shared by every app of a test, and so is their client; each
            # memory store has its own.
            if kind == "memory" or client_id not in keys:
                keys[client_id] = await api.register(client_id)
            return Api(client, store, keys[client_id])

        yield factory


async def test_a_repeated_request_is_answered_from_the_record(make_api: ApiFactory) -> None:
    api = await make_api()
    status, body, headers = await api.post("/accounts", {"id": "a", "balance": 100}, key="k-open")
    assert (status, body) == (201, {"id": "a", "balance": 100})
    assert "Idempotent-Replayed" not in headers
    # The same key again: the first answer, not a 409 account_exists.
    status, body, headers = await api.post("/accounts", {"balance": 100, "id": "a"}, key="k-open")
    assert (status, body, headers["Idempotent-Replayed"]) == (
        201,
        {"id": "a", "balance": 100},
        "true",
    )
    first = await api.post("/accounts/a/withdraw", {"amount": 30}, key="k-w")
    again = await api.post("/accounts/a/withdraw", {"amount": 30}, key="k-w")
    assert first[:2] == again[:2] == (200, {"id": "a", "balance": 70})
    assert await api.balance("a") == 70
    # Without a key, or with another one, it is a new operation.
    assert (await api.post("/accounts/a/withdraw", {"amount": 30}))[:2] == (
        200,
        {"id": "a", "balance": 40},
    )
    assert (await api.post("/accounts/a/withdraw", {"amount": 30}, key="k-w2"))[1]["balance"] == 10
    audit = await api.store.audit()
    assert (audit.total, audit.drift) == (10, 0)


async def test_a_key_reused_for_another_request_is_refused(make_api: ApiFactory) -> None:
    api = await make_api()
    await api.post("/accounts", {"id": "a", "balance": 100})
    await api.post("/accounts", {"id": "b", "balance": 0})
    assert (await api.post("/accounts/a/deposit", {"amount": 5}, key="k"))[0] == 200
    for path, body in [
        ("/accounts/a/deposit", {"amount": 6}),
        ("/accounts/a/withdraw", {"amount": 5}),
        ("/accounts/b/deposit", {"amount": 5}),
    ]:
        status, error, _ = await api.post(path, body, key="k")
        assert status == 422
        assert error == {
            "error": "idempotency_key_reused",
            "detail": "Idempotency-Key 'k' was already used for a different request (method, "
            "path or body differ); use a new key for a new operation",
        }
    assert (await api.balance("a"), await api.balance("b")) == (105, 0)


async def test_refusals_are_replayed_too(make_api: ApiFactory) -> None:
    api = await make_api()
    await api.post("/accounts", {"id": "a", "balance": 10})
    refused = await api.post("/accounts/a/withdraw", {"amount": 50}, key="try")
    assert refused[:2] == (
        409,
        {
            "error": "insufficient_funds",
            "detail": "account 'a' holds 10 cents, which does not cover 50 cents",
        },
    )
    await api.post("/accounts/a/deposit", {"amount": 100})
    # The operation was tried and refused under this key; the key keeps that answer.
    assert (await api.post("/accounts/a/withdraw", {"amount": 50}, key="try"))[:2] == refused[:2]
    assert await api.balance("a") == 110


@pytest.mark.parametrize(
    ("key", "detail"),
    [
        ("", "Idempotency-Key must be 1 to 128 characters, got 0"),
        ("x" * 129, "Idempotency-Key must be 1 to 128 characters, got 129"),
        ("a\tb", "Idempotency-Key must be printable ASCII (space to '~'); character 1 is '\\t'"),
    ],
)
async def test_malformed_keys_are_refused(make_api: ApiFactory, key: str, detail: str) -> None:
    api = await make_api()
    await api.post("/accounts", {"id": "a", "balance": 10})
    status, body, _ = await api.post("/accounts/a/deposit", {"amount": 1}, key=key)
    assert (status, body) == (400, {"error": "invalid_idempotency_key", "detail": detail})
    assert await api.balance("a") == 10


async def test_concurrent_duplicates_apply_once(make_api: ApiFactory) -> None:
    # Every duplicate is held in the store's race window until all of them are in flight, so
    # without the key they would all apply.
    inside = 0
    release = anyio.Event()

    async def window(kind: OperationKind) -> None:
        nonlocal inside
        inside += 1
        await release.wait()

    api = await make_api(lock_mode="none", race_window=window)
    async with anyio.create_task_group() as tg:
        # Accounts are opened outside the window (creating has none).
        await api.post("/accounts", {"id": "a", "balance": 0})
        results: list[tuple[int, Any]] = []

        async def deposit() -> None:
            status, body, _ = await api.post("/accounts/a/deposit", {"amount": 7}, key="once")
            results.append((status, body))

        for _ in range(8):
            tg.start_soon(deposit)
        # The first request sits in the window; under the memory store the others wait for
        # its outcome at the key, under the databases they read too and lose the race to
        # record the key at their first write (which is rolled back).
        while inside < 1:
            await anyio.wait_all_tasks_blocked()
        release.set()
    assert results == [(200, {"id": "a", "balance": 7})] * 8
    assert await api.balance("a") == 7


async def test_a_key_is_free_again_when_its_request_never_completed(make_api: ApiFactory) -> None:
    entered = anyio.Event()
    calls = 0

    async def window(kind: OperationKind) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            entered.set()
            await anyio.sleep_forever()

    api = await make_api(race_window=window)
    await api.post("/accounts", {"id": "a", "balance": 0})
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: api.post("/accounts/a/deposit", {"amount": 5}, key="lost"))
        await entered.wait()
        # The client gives up mid-operation; the test server cancels the handler.
        tg.cancel_scope.cancel()
    # Nothing was applied or recorded under the key: the retry (which waits for the abandoned
    # request to be cancelled if it has not been yet) runs the operation, once.
    status, body, headers = await api.post("/accounts/a/deposit", {"amount": 5}, key="lost")
    assert (status, body) == (200, {"id": "a", "balance": 5})
    assert "Idempotent-Replayed" not in headers
    assert calls == 2
    assert (await api.store.audit()).drift == 0


def test_check_key() -> None:
    assert check_key(["abc-123 ~!"]) == "abc-123 ~!"
    assert check_key(["x" * 128]) == "x" * 128
    with pytest.raises(InvalidIdempotencyKey, match="send the Idempotency-Key header once, not 2"):
        check_key(["a", "b"])
    with pytest.raises(InvalidIdempotencyKey, match="character 3 is 'é'"):
        check_key(["caf\u00e9"])


def test_fingerprint_compares_json_by_meaning() -> None:
    one = fingerprint("POST", "/transfers", b'{"from": "a", "to": "b", "amount": 5}')
    assert one == fingerprint("POST", "/transfers", b'{"amount":5,"to":"b","from":"a"}')
    assert one != fingerprint("POST", "/transfers", b'{"from": "a", "to": "b", "amount": 6}')
    assert one != fingerprint("POST", "/transfer", b'{"from": "a", "to": "b", "amount": 5}')
    assert fingerprint("POST", "/x", b"{not json") != fingerprint("POST", "/x", b"{not  json")


async def test_memory_keys_are_checked() -> None:
    keys = MemoryIdempotency()
    policy = KeyPolicy()
    async with keys.claim("b", "f", client="c", policy=policy) as claim:
        await claim.save(StoredResponse(200, b"b"))
    with pytest.raises(IdempotencyKeyReused, match="'b' was already used"):
        async with keys.claim("b", "other", client="c", policy=policy):
            pass
    async with keys.claim("b", "other", client="d", policy=policy) as claim:
        assert claim.replay is None  # another client's key of the same name


async def test_the_openapi_document_describes_the_key(make_api: ApiFactory) -> None:
    api = await make_api()
    async with api.client.get("/openapi.json") as response:
        document = await response.json()
    for path in ("/accounts", "/accounts/{id}/deposit", "/accounts/{id}/withdraw", "/transfers"):
        operation = document["paths"][path]["post"]
        names = [parameter["name"] for parameter in operation["parameters"]]
        assert "Idempotency-Key" in names
        assert "idempotency_key_reused" in operation["responses"]["422"]["description"]
        assert "invalid_idempotency_key" in operation["responses"]["400"]["description"]
        assert "retry_later" in operation["responses"]["503"]["description"]


async def test_keyed_and_unkeyed_requests_on_one_account_do_not_deadlock(
    make_api: ApiFactory,
) -> None:
    # The unkeyed deposit holds the account's lock while it waits in the race window; the keyed
    # one queues for that lock. The keyed request must not hold the database connection (or
    # the SQLite write lock) meanwhile, or the unkeyed one could never write.
    entered = anyio.Event()
    release = anyio.Event()

    async def window(kind: OperationKind) -> None:
        if not entered.is_set():
            entered.set()
            await release.wait()

    api = await make_api(lock_mode="account", race_window=window)
    await api.post("/accounts", {"id": "a", "balance": 0})
    results: list[tuple[int, Any]] = []

    async def deposit(amount: int, key: str | None) -> None:
        status, body, _ = await api.post("/accounts/a/deposit", {"amount": amount}, key=key)
        results.append((status, body["balance"]))

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(deposit, 1, None)
            await entered.wait()
            tg.start_soon(deposit, 10, "keyed")
            # Both requests inside their lock mode: the keyed one queued for the account lock.
            locking = api.client.app[LOCKING] if api.client.app is not None else None
            assert locking is not None
            while locking.active < 2:
                await anyio.wait_all_tasks_blocked()
            release.set()
    assert sorted(results) == [(200, 1), (200, 11)]
    assert await api.balance("a") == 11
