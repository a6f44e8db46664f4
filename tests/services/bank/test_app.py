"""Every route of the bank and every refusal, with its message, on the app factory."""

from __future__ import annotations

import re
from typing import Any

import pytest
from aiohttp import web

from services.bank.domain import is_account_id
from services.bank.http import create_app
from services.bank.http.routes import _account
from services.bank.run.config import BankConfig

from .conftest import ADMIN_TOKEN, Bank, BankFactory

pytestmark = pytest.mark.anyio

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


async def _unchanged(bank: Bank, before: dict[str, Any]) -> None:
    assert await bank.audit() == before


async def test_health(bank: Bank) -> None:
    assert await bank.call("GET", "/health") == (
        200,
        {"status": "ok", "lock_mode": "account", "store": "memory"},
    )


async def test_account_lifecycle(bank: Bank) -> None:
    await bank.open_account("alice", 1000)
    await bank.open_account("bob_2-B", 0)
    assert await bank.call("GET", "/accounts/alice") == (200, {"id": "alice", "balance": 1000})
    assert await bank.call("POST", "/accounts/alice/deposit", {"amount": 250}) == (
        200,
        {"id": "alice", "balance": 1250},
    )
    assert await bank.call("POST", "/accounts/alice/withdraw", {"amount": 1250}) == (
        200,
        {"id": "alice", "balance": 0},
    )
    await bank.call("POST", "/accounts/alice/deposit", {"amount": 10**12})
    assert await bank.call(
        "POST", "/transfers", {"from": "alice", "to": "bob_2-B", "amount": 400}
    ) == (
        200,
        {"from": {"id": "alice", "balance": 10**12 - 400}, "to": {"id": "bob_2-B", "balance": 400}},
    )
    assert await bank.audit() == {
        "accounts": 2,
        "total": 10**12,
        "expected": 10**12,
        "drift": 0,
        "negative_accounts": [],
    }


async def test_opening_balance_bounds(bank: Bank) -> None:
    await bank.open_account("zero", 0)
    await bank.open_account("max", 10**12)
    await bank.open_account("x" * 64, 1)


async def test_account_exists(bank: Bank) -> None:
    await bank.open_account("a", 5)
    before = await bank.audit()
    assert await bank.call("POST", "/accounts", {"id": "a", "balance": 7}) == (
        409,
        {"error": "account_exists", "detail": "account 'a' already exists"},
    )
    await _unchanged(bank, before)
    assert await bank.balance("a") == 5


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/accounts/ghost", None),
        ("POST", "/accounts/ghost/deposit", {"amount": 1}),
        ("POST", "/accounts/ghost/withdraw", {"amount": 1}),
    ],
)
async def test_account_not_found(bank: Bank, method: str, path: str, body: object) -> None:
    assert await bank.call(method, path, body) == (
        404,
        {"error": "account_not_found", "detail": "account 'ghost' does not exist"},
    )


@pytest.mark.parametrize(
    "path",
    ["/accounts/bad.id", "/accounts/%C3%A9t%C3%A9", "/accounts/" + "x" * 65],
)
async def test_malformed_ids_in_the_path_are_not_found(bank: Bank, path: str) -> None:
    status, body = await bank.call("GET", path)
    assert (status, body["error"]) == (404, "account_not_found")
    assert body["detail"].endswith("does not exist")
    status, body = await bank.call("POST", path + "/deposit", {"amount": 1})
    assert (status, body["error"]) == (404, "account_not_found")


async def test_transfer_refusals(bank: Bank) -> None:
    await bank.open_account("a", 10)
    await bank.open_account("b", 0)
    before = await bank.audit()
    cases: list[tuple[dict[str, object], int, dict[str, str]]] = [
        (
            {"from": "a", "to": "b", "amount": 11},
            409,
            {
                "error": "insufficient_funds",
                "detail": "account 'a' holds 10 cents, which does not cover 11 cents",
            },
        ),
        (
            {"from": "a", "to": "a", "amount": 1},
            422,
            {"error": "same_account", "detail": "cannot transfer from account 'a' to itself"},
        ),
        (
            {"from": "a", "to": "nobody", "amount": 1},
            404,
            {"error": "account_not_found", "detail": "account 'nobody' does not exist"},
        ),
        (
            {"from": "nobody", "to": "a", "amount": 1},
            404,
            {"error": "account_not_found", "detail": "account 'nobody' does not exist"},
        ),
    ]
    for body, status, error in cases:
        assert await bank.call("POST", "/transfers", body) == (status, error), body
    await _unchanged(bank, before)


async def test_insufficient_funds_on_withdraw(bank: Bank) -> None:
    await bank.open_account("a", 10)
    before = await bank.audit()
    assert await bank.call("POST", "/accounts/a/withdraw", {"amount": 11}) == (
        409,
        {
            "error": "insufficient_funds",
            "detail": "account 'a' holds 10 cents, which does not cover 11 cents",
        },
    )
    await _unchanged(bank, before)


SHAPE_CASES: list[tuple[str, object, str]] = [
    ("/accounts", [], "body must be a JSON object, got an array"),
    ("/accounts", "x", "body must be a JSON object, got a string"),
    ("/accounts", {"id": "a"}, "missing field 'balance'; expected exactly 'id', 'balance'"),
    ("/accounts", {"balance": 1}, "missing field 'id'"),
    (
        "/accounts",
        {"id": "a", "balance": 1, "owner": "x"},
        "unexpected field 'owner'; expected exactly 'id', 'balance'",
    ),
    ("/accounts", {"id": 5, "balance": 1}, "field 'id' must be a string, got an integer"),
    (
        "/accounts",
        {"id": "", "balance": 1},
        "field 'id' must be 1 to 64 characters from A-Z, a-z, 0-9, '_' and '-', got ''",
    ),
    ("/accounts", {"id": "a b", "balance": 1}, "got 'a b'"),
    ("/accounts", {"id": "a\n", "balance": 1}, "got 'a\\\\n'"),
    ("/accounts", {"id": "x" * 65, "balance": 1}, "must be 1 to 64 characters"),
    ("/accounts", {"id": "ü", "balance": 1}, "must be 1 to 64 characters"),
    ("/accounts", {"id": "a", "balance": -1}, "field 'balance' must be between 0 and 10"),
    (
        "/accounts",
        {"id": "a", "balance": 10**12 + 1},
        "field 'balance' must be between 0 and 1000000000000, got 1000000000001",
    ),
    (
        "/accounts",
        {"id": "a", "balance": True},
        "field 'balance' must be an integer, got a boolean",
    ),
    (
        "/accounts",
        {"id": "a", "balance": 1.0},
        "field 'balance' must be an integer, got a number with a fraction or exponent",
    ),
    ("/accounts", {"id": "a", "balance": "1"}, "must be an integer, got a string"),
    ("/accounts", {"id": "a", "balance": None}, "must be an integer, got null"),
    ("/accounts", {"id": "a", "balance": {}}, "must be an integer, got an object"),
    ("/accounts/a/deposit", {}, "missing field 'amount'; expected exactly 'amount'"),
    ("/accounts/a/deposit", {"amount": 0}, "field 'amount' must be between 1 and 1000000000000"),
    ("/accounts/a/withdraw", {"amount": -5}, "must be between 1 and 1000000000000, got -5"),
    ("/accounts/a/withdraw", {"amount": 10**12 + 1}, "got 1000000000001"),
    ("/accounts/a/deposit", {"amount": 1, "memo": "x"}, "unexpected field 'memo'"),
    ("/accounts/a/deposit", {"amount": 1e3}, "must be an integer, got a number"),
    ("/transfers", {"from": "a", "to": "b"}, "missing field 'amount'"),
    ("/transfers", {"from": "a", "amount": 1}, "missing field 'to'"),
    ("/transfers", {"from": "a", "to": "b", "amount": 0}, "field 'amount' must be between 1"),
    ("/transfers", {"from": "a", "to": ["b"], "amount": 1}, "field 'to' must be a string"),
    ("/transfers", {"from": "a/b", "to": "b", "amount": 1}, "field 'from' must be 1 to 64"),
    ("/transfers", {"from": "a", "to": "b", "amount": False}, "got a boolean"),
]


@pytest.mark.parametrize(("path", "body", "detail"), SHAPE_CASES)
async def test_wrong_shape_is_422(bank: Bank, path: str, body: object, detail: str) -> None:
    await bank.open_account("a", 100)
    await bank.open_account("b", 100)
    before = await bank.audit()
    status, answer = await bank.call("POST", path, body)
    assert status == 422
    assert answer["error"] == "validation_error"
    assert detail.replace("\\\\", "\\") in answer["detail"]
    await _unchanged(bank, before)


async def test_null_body_is_422(bank: Bank) -> None:
    assert await bank.call("POST", "/accounts", raw=b"null") == (
        422,
        {"error": "validation_error", "detail": "body must be a JSON object, got null"},
    )


@pytest.mark.parametrize(
    ("raw", "detail"),
    [
        (b"", "body is not valid JSON: Expecting value at position 0"),
        (b"{", "body is not valid JSON: Expecting property name enclosed in double quotes"),
        (b'{"amount": 1} x', "body is not valid JSON: Extra data at position 14"),
        (b"\xff\xfe", "body is not valid UTF-8 (byte 0)"),
        (b'{"amount": 1, "amount": 2}', "body has the key 'amount' more than once"),
        (b'{"amount": NaN}', "body uses NaN, which is not JSON"),
        (b'{"amount": -Infinity}', "body uses -Infinity, which is not JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "body"),
        (b'{"amount": ' + b"9" * 5000 + b"}", "body is not valid JSON"),
    ],
)
async def test_invalid_json_is_400(bank: Bank, raw: bytes, detail: str) -> None:
    await bank.open_account("a", 100)
    before = await bank.audit()
    status, answer = await bank.call("POST", "/accounts/a/deposit", raw=raw)
    if len(raw) > 64 * 1024:
        assert (status, answer["error"]) == (413, "body_too_large")
    else:
        assert (status, answer["error"]) == (400, "invalid_json")
        assert answer["detail"].startswith(detail)
    await _unchanged(bank, before)


async def test_deep_nesting_is_400(bank: Bank) -> None:
    raw = b"[" * 30_000 + b"]" * 30_000
    status, answer = await bank.call("POST", "/accounts", raw=raw)
    assert (status, answer) == (
        400,
        {"error": "invalid_json", "detail": "body nests arrays or objects too deeply"},
    )


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", ""])
async def test_non_json_content_type_is_415(bank: Bank, content_type: str) -> None:
    await bank.open_account("a", 100)
    before = await bank.audit()
    status, answer = await bank.call(
        "POST", "/accounts/a/deposit", {"amount": 1}, headers={"Content-Type": content_type}
    )
    assert status == 415
    assert answer["error"] == "unsupported_media_type"
    assert answer["detail"].startswith("send the body as application/json, not '")
    await _unchanged(bank, before)


async def test_json_with_charset_is_accepted(bank: Bank) -> None:
    await bank.open_account("a", 100)
    headers = {"Content-Type": "application/json; charset=utf-8"}
    status, _ = await bank.call("POST", "/accounts/a/deposit", {"amount": 1}, headers=headers)
    assert status == 200


async def test_body_over_64_kib_is_413(bank: Bank) -> None:
    await bank.open_account("a", 100)
    before = await bank.audit()
    raw = b'{"amount": 1, "pad": "' + b"x" * (64 * 1024) + b'"}'
    assert await bank.call("POST", "/accounts/a/deposit", raw=raw) == (
        413,
        {"error": "body_too_large", "detail": "request body is larger than 65536 bytes"},
    )
    await _unchanged(bank, before)


async def test_unknown_route_is_json_404(bank: Bank) -> None:
    assert await bank.call("GET", "/nope") == (
        404,
        {"error": "not_found", "detail": "no route for GET '/nope'"},
    )


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("DELETE", "/accounts/a", "GET"),
        ("POST", "/health", "GET"),
        ("GET", "/transfers", "POST"),
        ("PATCH", "/admin/lock", "GET, PUT"),
        ("HEAD", "/audit", "GET"),
    ],
)
async def test_wrong_method_is_json_405(bank: Bank, method: str, path: str, allowed: str) -> None:
    async with bank.client.request(method, path) as resp:
        assert resp.status == 405
        assert resp.headers["Allow"] == allowed
        if method != "HEAD":
            assert await resp.json() == {
                "error": "method_not_allowed",
                "detail": f"{method} is not allowed on {path!r}; allowed: {allowed}",
            }


async def test_admin_lock(bank: Bank) -> None:
    assert await bank.call("GET", "/admin/lock", headers=AUTH) == (200, {"mode": "account"})
    for mode in ("none", "global", "account"):
        assert await bank.call("PUT", "/admin/lock", {"mode": mode}, headers=AUTH) == (
            200,
            {"mode": mode},
        )
        assert await bank.call("GET", "/admin/lock", headers=AUTH) == (200, {"mode": mode})
        assert (await bank.call("GET", "/health"))[1]["lock_mode"] == mode


_ADMIN_PLEASE = "send the admin token as 'Authorization: Bearer <token>'"
_NOBODY = "the bearer token is neither a client's API key nor the admin's"
_MALFORMED = "send the credential as 'Authorization: Bearer <key>'"


@pytest.mark.parametrize(
    ("headers", "detail"),
    [
        ({"Authorization": ""}, _ADMIN_PLEASE),
        ({"Authorization": "Bearer wrong"}, _NOBODY),
        ({"Authorization": f"Basic {ADMIN_TOKEN}"}, _MALFORMED),
        ({"Authorization": f"Bearer {ADMIN_TOKEN}x"}, _NOBODY),
        ({"Authorization": ADMIN_TOKEN}, _MALFORMED),
        ({"Authorization": "Bearer"}, _MALFORMED),
    ],
)
async def test_admin_needs_the_token(bank: Bank, headers: dict[str, str], detail: str) -> None:
    refusal = {"error": "unauthenticated", "detail": detail}
    async with bank.client.get("/admin/lock", headers=bank.credentials("/", headers)) as resp:
        assert resp.status == 401
        assert resp.headers["WWW-Authenticate"] == "Bearer"
        assert await resp.json() == refusal
    # Refused before the body is even looked at, and nothing changes.
    assert await bank.call("PUT", "/admin/lock", {"mode": "none"}, headers=headers) == (
        401,
        refusal,
    )
    assert await bank.call("PUT", "/admin/lock", raw=b"{", headers=headers) == (401, refusal)
    assert bank.locking.mode == "account"


async def test_a_client_key_is_not_the_admin_token(bank: Bank) -> None:
    client_auth = {"Authorization": f"Bearer {bank.key}"}
    for method, path in (("GET", "/admin/lock"), ("GET", "/audit")):
        status, answer = await bank.call(method, path, headers=client_auth)
        assert (status, answer) == (
            403,
            {"error": "forbidden", "detail": "client 'tester' is not the admin"},
        )
    assert bank.locking.mode == "account"


async def test_admin_disabled_without_a_token(make_bank: BankFactory) -> None:
    bank = await make_bank(admin_token=None)
    status, answer = await bank.call("PUT", "/admin/lock", {"mode": "none"})
    assert (status, answer) == (
        401,
        {
            "error": "unauthenticated",
            "detail": "admin endpoints are disabled: start the server with the admin token "
            "in $BANK_ADMIN_TOKEN or a file named by --admin-token-file",
        },
    )
    # No admin token: no token at all is the admin's.
    for headers in ({"Authorization": "Bearer "}, AUTH):
        status, answer = await bank.call("PUT", "/admin/lock", {"mode": "none"}, headers=headers)
        assert (status, answer["error"]) == (401, "unauthenticated")
    assert bank.locking.mode == "account"


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({"mode": "db"}, "field 'mode' must be one of none, global, account, got 'db'"),
        ({"mode": 1}, "field 'mode' must be one of none, global, account, got an integer"),
        ({}, "missing field 'mode'; expected exactly 'mode'"),
        ({"mode": "none", "x": 1}, "unexpected field 'x'"),
    ],
)
async def test_bad_lock_mode_is_422(bank: Bank, body: object, detail: str) -> None:
    status, answer = await bank.call("PUT", "/admin/lock", body, headers=AUTH)
    assert (status, answer["error"]) == (422, "validation_error")
    assert answer["detail"].startswith(detail)
    assert bank.locking.mode == "account"


async def test_admin_body_refusals(bank: Bank) -> None:
    assert (await bank.call("PUT", "/admin/lock", raw=b"nope", headers=AUTH))[0] == 400
    headers = {**AUTH, "Content-Type": "text/plain"}
    assert (await bank.call("PUT", "/admin/lock", {"mode": "none"}, headers=headers))[0] == 415


async def test_openapi_describes_every_route(bank: Bank) -> None:
    status, document = await bank.call("GET", "/openapi.json")
    assert status == 200
    assert document["openapi"].startswith("3.")
    routes = {
        (route.method.lower(), route.resource.canonical)
        for route in bank.app.router.routes()
        if route.resource is not None
    }
    described = {(method, path) for path, item in document["paths"].items() for method in item}
    assert described == routes
    schemas = document["components"]["schemas"]
    for name in ("NewAccount", "AmountRequest", "TransferRequest", "LockMode"):
        assert schemas[name]["additionalProperties"] is False
    assert schemas["AmountRequest"]["properties"]["amount"]["minimum"] == 1
    assert schemas["AmountRequest"]["properties"]["amount"]["maximum"] == 10**12
    assert schemas["NewAccount"]["properties"]["balance"]["minimum"] == 0
    assert schemas["AccountId"]["pattern"] == "^[A-Za-z0-9_-]{1,64}$"
    assert schemas["LockMode"]["properties"]["mode"]["enum"] == ["none", "global", "account"]
    for path, item in document["paths"].items():
        for method, operation in item.items():
            for code, response in operation["responses"].items():
                assert "application/json" in response["content"], (method, path, code)
            if "requestBody" in operation:
                assert {"400", "413", "415", "422"} <= set(operation["responses"]), path


def test_create_app_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="unknown lock mode 'fast'"):
        create_app(BankConfig(lock_mode="fast"))
    with pytest.raises(ValueError, match="unknown store 'redis://x'"):
        create_app(BankConfig(store="redis://x"))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"port": 70000}, "port must be between 0 and 65535, got 70000"),
        ({"io_delay": -0.1}, "io_delay must be a finite number of seconds >= 0, got -0.1"),
        ({"admin_token": ""}, "admin_token must not be empty"),
        ({"max_body_bytes": 0}, "max_body_bytes must be positive, got 0"),
    ],
)
def test_config_rejects_bad_values(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        BankConfig(**kwargs)


@pytest.mark.parametrize(
    "name",
    [
        "body_timeout",
        "header_timeout",
        "keepalive_timeout",
        "drain_timeout",
        "request_timeout",
        "idempotency_retention",
    ],
)
@pytest.mark.parametrize("seconds", [0, -1.0, float("nan"), float("inf"), True, "5", None])
def test_config_refuses_a_bad_duration_in_one_sentence(name: str, seconds: object) -> None:
    # Every duration setting goes through domain.positive_seconds, as the stores' timeouts do.
    sentence = f"{name} must be a finite number of seconds > 0, got {seconds!r}"
    settings: dict[str, Any] = {name: seconds}
    with pytest.raises(ValueError, match=f"^{re.escape(sentence)}$"):
        BankConfig(**settings)


def test_config_hides_the_token() -> None:
    assert "sesame" not in repr(BankConfig(admin_token="sesame"))


@pytest.mark.parametrize("account_id", ["a", "bob_2-B", "Z" * 64, "0-_"])
@pytest.mark.parametrize("balance", [0, 7, -3, 10**15])
@pytest.mark.parametrize("status", [200, 201])
def test_account_answer_is_what_json_response_writes(
    account_id: str, balance: int, status: int
) -> None:
    """The formatted account answer is byte for byte (headers included) json_response's."""
    assert is_account_id(account_id)
    formatted = _account(account_id, balance, status)
    reference = web.json_response({"id": account_id, "balance": balance}, status=status)
    assert formatted.body == reference.body
    assert formatted.status == reference.status
    assert dict(formatted.headers) == dict(reference.headers)
