"""The routes: each handler parses its request, calls the ledger, and shapes the JSON answer.

Refusals are raised (domain errors from the ledger and the stores, request errors from the
parsing) and answered by the error middleware; a handler only builds success responses.
"""

from __future__ import annotations

import hmac
from typing import cast

from aiohttp import web

from ..domain import AccountNotFound, is_account_id
from .errors import Unauthorized
from .idempotency import unit_of_work
from .keys import CONFIG, LEDGER, LOCKING, OPENAPI, STORE
from .validation import (
    AMOUNT_BODY,
    MODE_BODY,
    NEW_ACCOUNT_BODY,
    check_body,
    check_transfer,
    read_json,
)

__all__ = ["add_routes"]


def _account_in_path(request: web.Request) -> str:
    account_id = request.match_info["id"]
    if not is_account_id(account_id):
        # Ids are validated on creation, so a malformed one can only name a missing account.
        raise AccountNotFound(account_id)
    return account_id


def _json(data: object, status: int = 200) -> web.Response:
    return web.json_response(data, status=status)


async def health(request: web.Request) -> web.Response:
    app = request.app
    return _json({"status": "ok", "lock_mode": app[LOCKING].mode, "store": app[STORE].name})


async def create_account(request: web.Request) -> web.Response:
    fields = check_body(await read_json(request), NEW_ACCOUNT_BODY)
    account_id, opening = cast(str, fields["id"]), cast(int, fields["balance"])
    ledger = request.app[LEDGER]
    balance = await ledger.open_account(account_id, opening, work=unit_of_work(request))
    return _json({"id": account_id, "balance": balance}, status=201)


async def get_account(request: web.Request) -> web.Response:
    account_id = _account_in_path(request)
    balance = await request.app[LEDGER].balance(account_id)
    return _json({"id": account_id, "balance": balance})


async def deposit(request: web.Request) -> web.Response:
    amount = cast(int, check_body(await read_json(request), AMOUNT_BODY)["amount"])
    account_id = _account_in_path(request)
    ledger = request.app[LEDGER]
    balance = await ledger.deposit(account_id, amount, work=unit_of_work(request))
    return _json({"id": account_id, "balance": balance})


async def withdraw(request: web.Request) -> web.Response:
    amount = cast(int, check_body(await read_json(request), AMOUNT_BODY)["amount"])
    account_id = _account_in_path(request)
    ledger = request.app[LEDGER]
    balance = await ledger.withdraw(account_id, amount, work=unit_of_work(request))
    return _json({"id": account_id, "balance": balance})


async def transfer(request: web.Request) -> web.Response:
    source, target, amount = check_transfer(await read_json(request))
    ledger = request.app[LEDGER]
    balances = await ledger.transfer(source, target, amount, work=unit_of_work(request))
    return _json(
        {
            "from": {"id": source, "balance": balances[0]},
            "to": {"id": target, "balance": balances[1]},
        }
    )


async def audit(request: web.Request) -> web.Response:
    report = await request.app[LEDGER].audit()
    return _json(report.to_json())


def _require_admin(request: web.Request) -> None:
    token = request.app[CONFIG].admin_token
    if token is None:
        raise Unauthorized(
            "admin endpoints are disabled: start the server with --admin-token "
            "or BANK_ADMIN_TOKEN to enable them"
        )
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    # Compare bytes in constant time; surrogateescape keeps any header byte comparable.
    expected = token.encode("utf-8", "surrogateescape")
    offered = given.strip().encode("utf-8", "surrogateescape")
    if scheme.lower() != "bearer" or not hmac.compare_digest(offered, expected):
        raise Unauthorized("send the admin token as 'Authorization: Bearer <token>'")


async def get_lock(request: web.Request) -> web.Response:
    _require_admin(request)
    return _json({"mode": request.app[LOCKING].mode})


async def put_lock(request: web.Request) -> web.Response:
    _require_admin(request)
    ledger = request.app[LEDGER]
    modes = ledger.locking.modes
    mode = cast(str, check_body(await read_json(request), MODE_BODY(modes))["mode"])
    return _json({"mode": await ledger.switch_mode(mode)})


async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=request.app[OPENAPI], content_type="application/json")


def add_routes(app: web.Application) -> None:
    """Register every route of the bank on ``app`` (the paths ``/openapi.json`` describes)."""
    app.router.add_get("/health", health, allow_head=False)
    app.router.add_post("/accounts", create_account)
    app.router.add_get("/accounts/{id}", get_account, allow_head=False)
    app.router.add_post("/accounts/{id}/deposit", deposit)
    app.router.add_post("/accounts/{id}/withdraw", withdraw)
    app.router.add_post("/transfers", transfer)
    app.router.add_get("/audit", audit, allow_head=False)
    app.router.add_get("/admin/lock", get_lock, allow_head=False)
    app.router.add_put("/admin/lock", put_lock)
    app.router.add_get("/openapi.json", openapi, allow_head=False)
