"""The bank's HTTP API: ``create_app(config)`` builds the aiohttp application.

Data flow of a money-moving request: validate the body -> enter the lock mode's guard (nothing,
the global lock, or the accounts' locks in sorted order) -> the store reads, awaits, writes and
journals in one step -> JSON response. Every refusal is JSON ``{"error", "detail"}`` with a 4xx
status and changes nothing; a 500 would be a bug, logged with its traceback server-side only.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Final, cast

from aiohttp import web
from aiohttp.http_exceptions import ContentEncodingError

from .config import BankConfig
from .errors import (
    AccountNotFound,
    BankError,
    BodyTimeout,
    BodyTooLarge,
    InternalError,
    InvalidJson,
    MethodNotAllowed,
    ModeSwitchPerWorker,
    RetryLater,
    RouteNotFound,
    Unauthorized,
    UnsupportedLockMode,
    describe_id,
)
from .idempotency import setup_idempotency
from .locking import Locking, strategies_for
from .openapi import openapi_document
from .store import Store, open_store
from .validation import (
    AMOUNT_BODY,
    MODE_BODY,
    NEW_ACCOUNT_BODY,
    check_body,
    check_transfer,
    is_account_id,
    read_json,
)

__all__ = ["CONFIG", "LOCKING", "STORE", "create_app"]

logger = logging.getLogger("services.bank")

CONFIG: Final = web.AppKey("bank_config", BankConfig)
STORE: Final = web.AppKey[Store]("bank_store")
LOCKING: Final = web.AppKey("bank_locking", Locking)
_OPENAPI: Final = web.AppKey("bank_openapi", bytes)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error_response(error: BankError, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(error.to_json(), status=error.status, headers=headers)


def _translate_http_exception(request: web.Request, exc: web.HTTPException) -> web.Response:
    """Give aiohttp's own refusals (no route, wrong method, body too big) the JSON error shape."""
    path = describe_id(request.path)
    if isinstance(exc, web.HTTPNotFound):
        return _error_response(RouteNotFound(f"no route for {request.method} {path}"))
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        error = MethodNotAllowed(f"{request.method} is not allowed on {path}; allowed: {allowed}")
        return _error_response(error, {"Allow": allowed})
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        limit = request.app[CONFIG].max_body_bytes
        return _error_response(BodyTooLarge(f"request body is larger than {limit} bytes"))
    code = (exc.reason or "error").lower().replace(" ", "_").replace("-", "_")
    body = {"error": code, "detail": exc.reason or "request refused"}
    return web.json_response(body, status=exc.status)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer every refusal, aiohttp's included, as JSON; log and hide real bugs."""
    try:
        return await handler(request)
    except BankError as error:
        headers = {"WWW-Authenticate": "Bearer"} if isinstance(error, Unauthorized) else None
        return _error_response(error, headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _translate_http_exception(request, exc)
    except Exception as exc:
        # CancelledError is a BaseException and passes through untouched, as it must.
        if _database_unavailable(exc):
            logger.warning("database unavailable in %s %s: %r", request.method, request.path, exc)
            return _error_response(
                RetryLater(
                    f"the database is unavailable right now ({type(exc).__name__}); the "
                    "operation was not acknowledged: retry later, with the same "
                    "Idempotency-Key to be safe"
                )
            )
        logger.exception("unhandled error in %s %s", request.method, request.path)
        return _error_response(InternalError("internal error; the server log has the details"))


def _database_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` says the database cannot be reached right now (down, restarting, the
    connection dropped) rather than a bug: a 503 the client may retry, not a 500."""
    if isinstance(exc, OSError):
        # Refused, reset or timed out while talking to the database server.
        return True
    if "asyncpg" not in sys.modules:
        return False
    from asyncpg import exceptions as pg

    return isinstance(
        exc,
        pg.PostgresConnectionError  # includes "connection was closed in the middle of operation"
        | pg.CannotConnectNowError  # starting up or shutting down
        | pg.AdminShutdownError
        | pg.CrashShutdownError
        # A pooled connection the server terminated while it sat idle, handed out before its
        # closing was noticed ("cannot switch to state ..."); asyncpg drops it once it has.
        | pg.InternalClientError,
    )


@web.middleware
async def body_deadline_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Receive the whole body, within ``body_timeout`` and the size cap, before anything runs.

    aiohttp waits for a body as long as the client keeps the connection open, so a client that
    drips bytes, or declares a ``Content-Length`` larger than what it sends, would hold a
    connection and a handler forever. The body is cached by ``request.read()``, so the
    idempotency layer and the handlers read it again for free.
    """
    if request.body_exists:
        config = request.app[CONFIG]
        declared = request.content_length
        if declared is not None and declared > config.max_body_bytes:
            # Refused from the header alone: waiting for bytes we would not keep is pointless.
            raise BodyTooLarge(f"request body is larger than {config.max_body_bytes} bytes")
        try:
            if request.content.is_eof():
                # The whole body came with the headers (the usual case for small JSON): reading
                # cannot wait, so skip the timer, which costs more than the rest of this layer.
                await request.read()
            else:
                async with asyncio.timeout(config.body_timeout):
                    await request.read()
        except TimeoutError:
            error = BodyTimeout(
                f"the request body did not arrive within {config.body_timeout:g} seconds"
            )
            response = _error_response(error)
            # The rest of the body may still be on its way: this connection cannot carry
            # another request.
            response.force_close()
            return response
        except web.RequestPayloadError as exc:
            # A body aiohttp could not decode: a Content-Encoding (gzip, deflate) that does not
            # decompress, or broken chunked framing. The client's fault, not a bug (not a 500).
            if isinstance(exc.__cause__, ContentEncodingError):
                what = "its Content-Encoding does not decode"
            else:
                what = "its framing is broken"
            response = _error_response(InvalidJson(f"the request body could not be read: {what}"))
            response.force_close()
            return response
    return await handler(request)


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
    balance = await request.app[STORE].create_account(account_id, opening)
    return _json({"id": account_id, "balance": balance}, status=201)


async def get_account(request: web.Request) -> web.Response:
    account_id = _account_in_path(request)
    balance = await request.app[STORE].balance(account_id)
    return _json({"id": account_id, "balance": balance})


async def deposit(request: web.Request) -> web.Response:
    amount = cast(int, check_body(await read_json(request), AMOUNT_BODY)["amount"])
    account_id = _account_in_path(request)
    app = request.app
    async with app[LOCKING].guard(account_id) as strategy:
        balance = await app[STORE].deposit(account_id, amount, atomic=strategy.atomic_store)
    return _json({"id": account_id, "balance": balance})


async def withdraw(request: web.Request) -> web.Response:
    amount = cast(int, check_body(await read_json(request), AMOUNT_BODY)["amount"])
    account_id = _account_in_path(request)
    app = request.app
    async with app[LOCKING].guard(account_id) as strategy:
        balance = await app[STORE].withdraw(account_id, amount, atomic=strategy.atomic_store)
    return _json({"id": account_id, "balance": balance})


async def transfer(request: web.Request) -> web.Response:
    source, target, amount = check_transfer(await read_json(request))
    app = request.app
    async with app[LOCKING].guard(source, target) as strategy:
        balances = await app[STORE].transfer(source, target, amount, atomic=strategy.atomic_store)
    return _json(
        {
            "from": {"id": source, "balance": balances[0]},
            "to": {"id": target, "balance": balances[1]},
        }
    )


async def audit(request: web.Request) -> web.Response:
    report = await request.app[STORE].audit()
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
    locking = request.app[LOCKING]
    mode = cast(str, check_body(await read_json(request), MODE_BODY(locking.modes))["mode"])
    workers = request.app[CONFIG].workers
    if workers > 1 and mode != locking.mode:
        # Each worker has its own Locking: a switch would reach one process out of N.
        raise ModeSwitchPerWorker(
            f"this server runs {workers} worker processes and a switch would reach only the one "
            f"that received it; restart it with --lock {mode} instead"
        )
    if locking.strategy(mode).atomic_store and not request.app[STORE].supports_atomic:
        raise UnsupportedLockMode(
            f"lock mode {mode!r} needs a store that locks by itself; "
            f"the {request.app[STORE].name} store does not"
        )
    await locking.set_mode(mode)
    return _json({"mode": locking.mode})


async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=request.app[_OPENAPI], content_type="application/json")


def create_app(config: BankConfig, *, store: Store | None = None) -> web.Application:
    """Build the bank application.

    Args:
        config: The service settings.
        store: The store to serve; built from ``config.store`` when omitted. It is opened when
            the app starts and closed when it stops.

    Raises:
        ValueError: ``config.lock_mode`` or ``config.store`` is unknown, or the lock mode needs a
            store that locks by itself and this one does not.
    """
    the_store = open_store(config.store, io_delay=config.io_delay) if store is None else store
    locking = Locking(config.lock_mode, strategies_for(the_store.name))
    if locking.strategy(config.lock_mode).atomic_store and not the_store.supports_atomic:
        raise ValueError(f"lock mode {config.lock_mode!r} is not supported by this store")

    app = web.Application(
        middlewares=[error_middleware, body_deadline_middleware],
        client_max_size=config.max_body_bytes,
    )
    app[CONFIG] = config
    app[STORE] = the_store
    app[LOCKING] = locking
    app[_OPENAPI] = json.dumps(openapi_document(locking.modes), indent=2).encode()

    async def store_lifetime(app: web.Application) -> AsyncIterator[None]:
        await the_store.open()
        try:
            yield
        finally:
            await the_store.close()

    app.cleanup_ctx.append(store_lifetime)
    # Inside the error middleware, so a refused key gets the JSON error shape.
    setup_idempotency(app, the_store)
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
    return app
