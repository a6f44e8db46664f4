"""The routes: each handler parses its request, calls the ledger, and shapes the JSON answer.

Refusals are raised (domain errors from the ledger and the stores, request errors from the
parsing) and answered by the error middleware; a handler only builds success responses.
"""

from __future__ import annotations

from typing import Protocol

from aiohttp import web

from ..domain import AccountNotFound, OpeningBalanceTooLarge, is_account_id
from ..ports import UnitOfWork
from .auth import hash_key, new_key, require_admin, require_client, require_owner
from .health import degraded_reason
from .idempotency import unit_of_work
from .keys import CONFIG, LEDGER, LOCKING, OPENAPI, STALLS, STORE
from .models import (
    AmountRequest,
    NewAccount,
    NewClient,
    TransferRequest,
    lock_mode_model,
    parse,
)
from .validation import read_json

__all__ = ["add_routes"]


def _account_in_path(request: web.Request) -> str:
    account_id = request.match_info["id"]
    if not is_account_id(account_id):
        # Ids are validated on creation, so a malformed one can only name a missing account.
        raise AccountNotFound(account_id)
    return account_id


def _json(data: object, status: int = 200) -> web.Response:
    return web.json_response(data, status=status)


def _account(account_id: str, balance: int, status: int = 200) -> web.Response:
    """``{"id", "balance"}``, byte for byte as :func:`_json` would write it, formatted directly.

    The answer of every deposit and withdrawal: ``json.dumps`` builds its encoder afresh on
    each call, a measurable part of a deposit. Formatting is exact because an account id only
    reaches here checked (``[A-Za-z0-9_-]``, which JSON quotes as it is) and a balance is an int.
    """
    return web.Response(
        text=f'{{"id": "{account_id}", "balance": {balance}}}',
        status=status,
        content_type="application/json",
    )


async def health(request: web.Request) -> web.Response:
    app = request.app
    mode, store = app[LOCKING].mode, app[STORE]
    reason = await degraded_reason(store.ping, app[STALLS])
    body: dict[str, object] = {
        "status": "ok" if reason is None else "degraded",
        "lock_mode": mode,
        "store": store.name,
    }
    if reason is not None:
        body["reason"] = reason
    unsafe = app[CONFIG].unsafe_reason(mode)
    if unsafe is not None:
        body["unsafe"] = unsafe
    # 503 when degraded: a load balancer's health check takes this instance out of rotation.
    return _json(body, status=200 if reason is None else 503)


async def create_client(request: web.Request) -> web.Response:
    require_admin(request)
    body = parse(NewClient, await read_json(request))
    key = new_key()
    await request.app[STORE].create_client(body.id, hash_key(key))
    # The only time the key is ever shown: the store keeps its digest.
    return _json({"id": body.id, "key": key}, status=201)


async def create_account(request: web.Request) -> web.Response:
    owner = require_client(request)
    body = parse(NewAccount, await read_json(request))
    config = request.app[CONFIG]
    if body.balance > config.max_opening_balance:
        raise OpeningBalanceTooLarge(body.balance, config.max_opening_balance)
    balance = await request.app[LEDGER].open_account(
        body.id,
        body.balance,
        owner=owner,
        max_accounts=config.max_accounts_per_client,
        work=unit_of_work(request),
    )
    return _account(body.id, balance, status=201)


async def get_account(request: web.Request) -> web.Response:
    account_id = _account_in_path(request)
    await require_owner(request, account_id, admin_reads=True)
    balance = await request.app[LEDGER].balance(account_id)
    return _account(account_id, balance)


class _Move(Protocol):
    async def __call__(self, account_id: str, amount: int, *, work: UnitOfWork | None) -> int: ...


async def _move(request: web.Request, move: _Move, *, debit: bool) -> web.Response:
    """A deposit or a withdrawal: ``{"amount"}`` on the account in the path.

    Anyone with a key may credit an account; only its owner may debit it.
    """
    require_client(request)
    amount = parse(AmountRequest, await read_json(request)).amount
    account_id = _account_in_path(request)
    if debit:
        await require_owner(request, account_id, admin_reads=False)
    balance = await move(account_id, amount, work=unit_of_work(request))
    return _account(account_id, balance)


async def deposit(request: web.Request) -> web.Response:
    return await _move(request, request.app[LEDGER].deposit, debit=False)


async def withdraw(request: web.Request) -> web.Response:
    return await _move(request, request.app[LEDGER].withdraw, debit=True)


async def transfer(request: web.Request) -> web.Response:
    require_client(request)
    body = parse(TransferRequest, await read_json(request))
    ledger = request.app[LEDGER]
    source, target = body.source, body.target
    if source != target:
        # A same-account transfer is refused (422) whoever sends it, before any lookup.
        await require_owner(request, source, admin_reads=False)
    balances = await ledger.transfer(source, target, body.amount, work=unit_of_work(request))
    return _json(
        {
            "from": {"id": source, "balance": balances[0]},
            "to": {"id": target, "balance": balances[1]},
        }
    )


async def audit(request: web.Request) -> web.Response:
    require_admin(request)
    report = await request.app[LEDGER].audit()
    return _json(report.to_json())


async def get_lock(request: web.Request) -> web.Response:
    require_admin(request)
    return _json({"mode": request.app[LOCKING].mode})


async def put_lock(request: web.Request) -> web.Response:
    require_admin(request)
    ledger = request.app[LEDGER]
    body = parse(lock_mode_model(ledger.locking.modes), await read_json(request))
    return _json({"mode": await ledger.switch_mode(body.mode)})


async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=request.app[OPENAPI], content_type="application/json")


def add_routes(app: web.Application) -> None:
    """Register every route of the bank on ``app`` (the paths ``/openapi.json`` describes)."""
    app.router.add_get("/health", health, allow_head=False)
    app.router.add_post("/clients", create_client)
    # aiohttp tries the routes under one leading segment ("/accounts") in the order they were
    # added, and these four patterns match disjoint paths: the money-moving ones go first, so
    # a deposit's lookup matches on its first try instead of its third.
    app.router.add_post("/accounts/{id}/deposit", deposit)
    app.router.add_post("/accounts/{id}/withdraw", withdraw)
    app.router.add_get("/accounts/{id}", get_account, allow_head=False)
    app.router.add_post("/accounts", create_account)
    app.router.add_post("/transfers", transfer)
    app.router.add_get("/audit", audit, allow_head=False)
    app.router.add_get("/admin/lock", get_lock, allow_head=False)
    app.router.add_put("/admin/lock", put_lock)
    app.router.add_get("/openapi.json", openapi, allow_head=False)
