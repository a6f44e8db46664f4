"""The app factory: ``create_app(config)`` wires the store, the lock modes and the ledger into
an aiohttp application.

A request passes one middleware, ``middlewares.bank_middleware``, which runs its layers in
order, each a plain function of its own module: ``middlewares.receive_body`` (the whole body, in
time) -> ``auth.authenticate`` (the Host header, then who is asking) -> ``idempotency.respond``
(replay, or claim the client's key: the claim is the request's unit of work) -> the route's
handler (parse, call the ledger, answer), with every refusal answered as JSON around them all.
One middleware rather than one per layer: each aiohttp middleware costs a ``partial`` call and
a coroutine on every request. Every refusal is JSON ``{"error", "detail"}`` with a 4xx status
and changes nothing; a 500 would be a bug, logged with its traceback server-side only.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from aiohttp import web

from ..ledger import Ledger
from ..locking import Locking, strategies_for
from ..ports import KeyPolicy, Store
from ..run.config import BankConfig
from ..stores import open_store
from .auth import setup_auth
from .health import StallWatch
from .idempotency import setup_idempotency
from .keys import CONFIG, LEDGER, LOCKING, OPENAPI, STALLS, STORE
from .middlewares import bank_middleware
from .openapi import openapi_document
from .routes import add_routes

__all__ = ["create_app"]


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
    the_store = (
        open_store(config.store, io_delay=config.io_delay, request_timeout=config.request_timeout)
        if store is None
        else store
    )
    locking = Locking(
        config.lock_mode, strategies_for(the_store.name), wait_timeout=config.request_timeout
    )
    ledger = Ledger(the_store, locking, workers=config.workers)

    app = web.Application(
        middlewares=[bank_middleware],
        client_max_size=config.max_body_bytes,
    )
    app[CONFIG] = config
    app[STORE] = the_store
    app[LOCKING] = locking
    app[LEDGER] = ledger
    app[STALLS] = StallWatch()
    app[OPENAPI] = json.dumps(
        openapi_document(
            locking.modes,
            require_keys=config.require_keys,
            max_body_bytes=config.max_body_bytes,
        ),
        indent=2,
    ).encode()

    async def store_lifetime(app: web.Application) -> AsyncIterator[None]:
        await the_store.open()
        try:
            yield
        finally:
            await the_store.close()

    app.cleanup_ctx.append(store_lifetime)
    # The state the middleware's credential and idempotency steps keep.
    setup_auth(app)
    policy = KeyPolicy(retention=config.idempotency_retention, quota=config.idempotency_quota)
    setup_idempotency(app, the_store, policy)
    add_routes(app)
    return app
