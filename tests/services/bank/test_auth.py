"""Authentication and ownership, the Host check, and the caps on accounts and opening balances.

Before these, any client could move any account's money (no credential at all), open 200,000
accounts in 42 s with opening balances of its choosing, read ``/audit`` (a full scan) as often as
it liked, and a page on another site whose name was re-pointed at 127.0.0.1 reached the bank.
Each test below sends what an attacker would and checks the refusal and that nothing changed.
"""

from __future__ import annotations

from typing import Any

import pytest

from services.bank.http.auth import KEY_PREFIX, allowed_host, hash_key
from services.bank.run.config import (
    DEFAULT_MAX_ACCOUNTS_PER_CLIENT,
    DEFAULT_MAX_OPENING_BALANCE,
    BankConfig,
)

from .conftest import ADMIN_AUTH, Bank, BankFactory, register_client

pytestmark = pytest.mark.anyio


def _as(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def _two_clients(bank: Bank) -> tuple[dict[str, str], dict[str, str]]:
    """alice (owns 'a', 100) and mallory (owns 'm', 100)."""
    alice = _as(await register_client(bank.client, "alice"))
    mallory = _as(await register_client(bank.client, "mallory"))
    for auth, account in ((alice, "a"), (mallory, "m")):
        status, _ = await bank.call(
            "POST", "/accounts", {"id": account, "balance": 100}, headers=auth
        )
        assert status == 201
    return alice, mallory


async def test_a_client_gets_its_key_once_and_the_store_keeps_only_its_digest(
    bank: Bank,
) -> None:
    status, body = await bank.call("POST", "/clients", {"id": "alice"})
    assert status == 201
    assert set(body) == {"id", "key"}
    assert body["id"] == "alice"
    key: str = body["key"]
    assert key.startswith(KEY_PREFIX)
    assert len(key) > 40
    assert await bank.store.client_for(hash_key(key)) == "alice"
    assert key not in repr(vars(bank.store))
    # The same id again is refused, and no second key is issued.
    assert await bank.call("POST", "/clients", {"id": "alice"}) == (
        409,
        {"error": "client_exists", "detail": "client 'alice' already exists"},
    )
    # Only the admin registers clients.
    status, answer = await bank.call("POST", "/clients", {"id": "eve"}, headers=_as(key))
    assert (status, answer["error"]) == (403, "forbidden")
    status, answer = await bank.call(
        "POST", "/clients", {"id": "eve"}, headers={"Authorization": ""}
    )
    assert (status, answer["error"]) == (401, "unauthenticated")
    assert await bank.store.client_for(hash_key("eve")) is None


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/accounts", {"id": "x", "balance": 1}),
        ("POST", "/accounts/a/deposit", {"amount": 1}),
        ("POST", "/accounts/a/withdraw", {"amount": 1}),
        ("POST", "/transfers", {"from": "a", "to": "m", "amount": 1}),
        ("GET", "/accounts/a", None),
        ("GET", "/audit", None),
    ],
)
async def test_without_a_key_nothing_moves_and_nothing_is_read(
    bank: Bank, method: str, path: str, body: Any
) -> None:
    await _two_clients(bank)
    before = await bank.audit()
    for headers in ({"Authorization": ""}, _as("bank_not-a-real-key"), _as("")):
        status, answer = await bank.call(method, path, body, headers=headers)
        assert (status, answer["error"]) == (401, "unauthenticated"), headers
    assert await bank.audit() == before


async def test_money_leaves_an_account_only_with_its_owners_key(bank: Bank) -> None:
    alice, mallory = await _two_clients(bank)
    before = await bank.audit()
    forbidden = {
        "error": "forbidden",
        "detail": "account 'a' belongs to another client; only its owner may read it or move "
        "money out of it",
    }
    for method, path, body in [
        ("POST", "/accounts/a/withdraw", {"amount": 100}),
        ("POST", "/transfers", {"from": "a", "to": "m", "amount": 100}),
        ("GET", "/accounts/a", None),
    ]:
        assert await bank.call(method, path, body, headers=mallory) == (403, forbidden)
        # Not with an Idempotency-Key either, and the refusal is not recorded under it.
        keyed = {**mallory, "Idempotency-Key": f"steal-{path}"}
        assert await bank.call(method, path, body, headers=keyed) == (403, forbidden)
    # The admin reads any account but moves no money.
    assert await bank.call("GET", "/accounts/a", headers=ADMIN_AUTH) == (
        200,
        {"id": "a", "balance": 100},
    )
    status, answer = await bank.call(
        "POST", "/accounts/a/withdraw", {"amount": 1}, headers=ADMIN_AUTH
    )
    assert (status, answer["error"]) == (403, "forbidden")
    assert await bank.audit() == before
    # Anyone with a key may pay into someone else's account; its owner takes it out.
    assert await bank.call("POST", "/accounts/a/deposit", {"amount": 5}, headers=mallory) == (
        200,
        {"id": "a", "balance": 105},
    )
    assert await bank.call(
        "POST", "/transfers", {"from": "a", "to": "m", "amount": 5}, headers=alice
    ) == (
        200,
        {"from": {"id": "a", "balance": 100}, "to": {"id": "m", "balance": 105}},
    )
    assert await bank.call("POST", "/accounts/a/withdraw", {"amount": 100}, headers=alice) == (
        200,
        {"id": "a", "balance": 0},
    )
    # A missing account is 404 for everyone, as before.
    status, answer = await bank.call(
        "POST", "/accounts/zz/withdraw", {"amount": 1}, headers=mallory
    )
    assert (status, answer["error"]) == (404, "account_not_found")


async def test_the_same_idempotency_key_of_two_clients_is_two_operations(bank: Bank) -> None:
    alice, mallory = await _two_clients(bank)
    key = {"Idempotency-Key": "pay-1"}
    assert await bank.call(
        "POST", "/accounts/a/deposit", {"amount": 3}, headers={**alice, **key}
    ) == (
        200,
        {"id": "a", "balance": 103},
    )
    # mallory's request with alice's key name is mallory's own: applied, not alice's replay, and
    # not a 422 for a "different request under the same key".
    assert await bank.call(
        "POST", "/accounts/m/deposit", {"amount": 4}, headers={**mallory, **key}
    ) == (
        200,
        {"id": "m", "balance": 104},
    )


async def test_audit_and_admin_routes_need_the_admin_token(bank: Bank) -> None:
    alice, _ = await _two_clients(bank)
    for method, path, body in [
        ("GET", "/audit", None),
        ("GET", "/admin/lock", None),
        ("PUT", "/admin/lock", {"mode": "none"}),
        ("POST", "/clients", {"id": "bob"}),
    ]:
        status, answer = await bank.call(method, path, body, headers=alice)
        assert (status, answer["error"]) == (403, "forbidden"), path
    assert bank.locking.mode == "account"
    assert (await bank.call("GET", "/audit", headers=ADMIN_AUTH))[0] == 200


async def test_health_and_the_document_need_no_credential(bank: Bank) -> None:
    for path in ("/health", "/openapi.json"):
        async with bank.client.get(path) as response:
            assert response.status == 200


async def test_the_openapi_document_declares_who_may_call_what(bank: Bank) -> None:
    async with bank.client.get("/openapi.json") as response:
        document = await response.json()
    schemes = document["components"]["securitySchemes"]
    assert schemes == {
        "clientKey": {
            "type": "http",
            "scheme": "bearer",
            "description": "a client's API key, from POST /clients",
        },
        "adminToken": {
            "type": "http",
            "scheme": "bearer",
            "description": "the admin token the server was started with",
        },
    }
    paths = document["paths"]
    client: list[dict[str, list[str]]] = [{"clientKey": []}]
    admin: list[dict[str, list[str]]] = [{"adminToken": []}]
    assert paths["/accounts"]["post"]["security"] == client
    assert paths["/accounts/{id}/withdraw"]["post"]["security"] == client
    assert paths["/transfers"]["post"]["security"] == client
    assert paths["/accounts/{id}"]["get"]["security"] == [{"clientKey": []}, {"adminToken": []}]
    for path, method in (("/audit", "get"), ("/clients", "post"), ("/admin/lock", "put")):
        assert paths[path][method]["security"] == admin
        assert {"401", "403"} <= set(paths[path][method]["responses"])
    assert "security" not in paths["/health"]["get"]


async def test_a_lesson_bank_without_keys_says_so_in_its_document(make_bank: BankFactory) -> None:
    bank = await make_bank(require_keys=False)
    async with bank.client.get("/openapi.json") as response:
        document = await response.json()
    assert document["paths"]["/transfers"]["post"]["security"] == [{"clientKey": []}, {}]
    assert document["paths"]["/audit"]["get"]["security"] == [{"adminToken": []}]
    status, _ = await bank.call(
        "POST", "/accounts", {"id": "anon", "balance": 1}, headers={"Authorization": ""}
    )
    assert status == 201


# --- Host header ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "host", "allowed", "accepted"),
    [
        ("127.0.0.1:8080", "127.0.0.1", (), True),
        ("localhost:8080", "127.0.0.1", (), True),
        ("LOCALHOST", "127.0.0.1", (), True),
        ("[::1]:8080", "127.0.0.1", (), True),
        ("evil.example", "127.0.0.1", (), False),
        ("evil.example:8080", "127.0.0.1", (), False),
        ("127.0.0.1.evil.example", "127.0.0.1", (), False),
        ("bank.internal:443", "10.0.0.5", ("bank.internal",), True),
        ("10.0.0.5", "10.0.0.5", (), True),
        ("localhost", "10.0.0.5", (), False),
        ("anything", "0.0.0.0", (), True),
        ("anything", "0.0.0.0", ("bank.example",), False),
        ("bank.example:80", "0.0.0.0", ("bank.example",), True),
    ],
)
def test_allowed_host(header: str, host: str, allowed: tuple[str, ...], accepted: bool) -> None:
    assert allowed_host(header, host, allowed) is accepted


async def test_dns_rebinding_is_refused_before_anything_runs(bank: Bank) -> None:
    await bank.open_account("mine", 10)
    before = await bank.audit()
    for path, body in [("/accounts/mine/withdraw", {"amount": 10}), ("/health", None)]:
        method = "POST" if body else "GET"
        status, answer = await bank.call(method, path, body, headers={"Host": "evil.example"})
        assert status == 421
        assert answer == {
            "error": "misdirected_request",
            "detail": "this server answers to '127.0.0.1', not to Host 'evil.example'; add "
            "the name to the server's allowed hosts if it is really this server",
        }
    assert await bank.audit() == before


# --- caps -------------------------------------------------------------------------------------


def test_the_caps_have_documented_defaults() -> None:
    config = BankConfig()
    assert config.max_accounts_per_client == DEFAULT_MAX_ACCOUNTS_PER_CLIENT == 1_000
    assert config.max_opening_balance == DEFAULT_MAX_OPENING_BALANCE == 10**9
    assert config.require_keys is True


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"max_accounts_per_client": 0}, "max_accounts_per_client must be a positive integer"),
        ({"idempotency_quota": 0}, "idempotency_quota must be a positive integer"),
        ({"max_opening_balance": -1}, "max_opening_balance must be between 0 and"),
        ({"idempotency_retention": 0.0}, "idempotency_retention must be a finite number"),
        ({"idempotency_retention": float("inf")}, "idempotency_retention must be a finite"),
    ],
)
def test_bad_caps_are_refused(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BankConfig(**settings)


async def test_a_client_opens_at_most_its_cap_of_accounts(make_bank: BankFactory) -> None:
    bank = await make_bank(max_accounts_per_client=3)
    for index in range(3):
        await bank.open_account(f"acc{index}", 1)
    before = await bank.audit()
    assert await bank.call("POST", "/accounts", {"id": "acc3", "balance": 1}) == (
        409,
        {
            "error": "too_many_accounts",
            "detail": "client 'tester' already owns 3 accounts, the most one client may open",
        },
    )
    assert await bank.audit() == before
    # Another client has a cap of its own.
    other = _as(await register_client(bank.client, "other"))
    status, _ = await bank.call("POST", "/accounts", {"id": "acc3", "balance": 1}, headers=other)
    assert status == 201


async def test_opening_balances_are_capped(make_bank: BankFactory) -> None:
    bank = await make_bank(max_opening_balance=DEFAULT_MAX_OPENING_BALANCE)
    await bank.open_account("rich", DEFAULT_MAX_OPENING_BALANCE)
    before = await bank.audit()
    assert await bank.call("POST", "/accounts", {"id": "richer", "balance": 10**9 + 1}) == (
        409,
        {
            "error": "opening_balance_too_large",
            "detail": "an account may open with at most 1000000000 cents, got 1000000001; "
            "deposit the rest",
        },
    )
    assert await bank.audit() == before
