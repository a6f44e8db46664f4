"""Running one bank process: ``serve(config)`` until SIGINT or SIGTERM, on asyncio or uvloop.

``services.bank.run.workers`` runs several of them on one port.
"""

from __future__ import annotations

import asyncio
import gc
import signal
from collections.abc import Callable, Coroutine
from typing import Any, Final, Literal, TypeVar

from aiohttp import web

from ..http import create_app
from ..ports import Store
from .config import BankConfig
from .connections import ConnectionGuard, GuardedSite
from .preflight import STORE_CHECK_TIMEOUT, store_failure

__all__ = ["SERVING_GC_THRESHOLD", "LoopKind", "format_url", "run", "serve", "tune_collector"]

LoopKind = Literal["auto", "asyncio", "uvloop"]
#: The collector's first threshold while serving: ten times CPython's 700, above what the
#: requests of 64 connections hold at once (benchmarks/instructions.py: no young collection in
#: 12,000 deposits, where 700 gave one every few dozen).
SERVING_GC_THRESHOLD: Final = 7_000
T = TypeVar("T")


def format_url(host: str, port: int) -> str:
    """``http://host:port``, with IPv6 hosts in brackets."""
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def tune_collector() -> None:
    """Set the cyclic garbage collector up for serving requests; call once start-up is done.

    Two costs of the collector that a server pays for nothing. Every full collection walks every
    object alive, and most of them are the start-up's (modules, the app, its routes, models and
    OpenAPI document), which live as long as the process: ``gc.freeze()`` takes them out of its
    sight (garbage is collected first, so that none of it is kept for good). And a young
    collection starts whenever 700 (CPython's threshold) more tracked objects are alive than at
    the last one; the objects of the requests in flight go up and down around that, so each
    crossing walks every request in flight and finds nothing (a request leaves no cyclic
    garbage): about 16,000 instructions per deposit at 64 connections, 5% of it. The first
    threshold goes to ``SERVING_GC_THRESHOLD``.

    For a process that only serves: :func:`services.bank.run.workers.serve_forever` gives the
    caller its collector back as it was.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(SERVING_GC_THRESHOLD, *gc.get_threshold()[1:])


def _announce(line: str) -> None:
    print(line, flush=True)


async def serve(
    config: BankConfig,
    *,
    announce: Callable[[str], None] = _announce,
    stop: asyncio.Event | None = None,
    reuse_port: bool = False,
    store: Store | None = None,
    before_listening: Callable[[], None] | None = None,
) -> None:
    """Serve the bank until ``stop`` is set, or until SIGINT/SIGTERM when ``stop`` is omitted.

    ``announce`` receives ``listening on http://HOST:PORT`` once the socket accepts connections
    (with the real port when ``config.port`` is 0). ``store`` replaces the one ``config.store``
    names (tests hold one open to look inside). ``before_listening`` is called once the store
    is open, before the port is bound (the ``serve`` command's warnings go there, so that a
    store that cannot be opened is the only line).

    Stopping drains: the port stops accepting, idle connections are closed, requests under way
    get ``config.drain_timeout`` seconds to finish and their replies say ``Connection: close``;
    then the store is closed.

    Raises:
        OSError: The address cannot be bound.
        StoreUnavailable: The store cannot be opened, or did not open within
            ``STORE_CHECK_TIMEOUT`` seconds.
    """
    app = create_app(config, store=store)
    guard = ConnectionGuard(
        max_connections=config.max_connections, header_timeout=config.header_timeout
    )
    runner = web.AppRunner(
        app,
        handle_signals=False,
        access_log=None,
        handler_cancellation=config.handler_cancellation,
        keepalive_timeout=config.keepalive_timeout,
        shutdown_timeout=config.drain_timeout,
    )
    try:
        # The app's start-up opens the store: its failures are the store's, never the port's.
        # Bounded like the check of `serve --workers N` (preflight.check_store), which one
        # process does not run: this is its only opening.
        async with asyncio.timeout(STORE_CHECK_TIMEOUT):
            await runner.setup()
    except Exception as exc:
        raise store_failure(config.store, exc) from exc
    try:
        if before_listening is not None:
            before_listening()
        # reuse_port: the workers of `serve --workers N` all bind the same port.
        site = GuardedSite(runner, guard, config.host, config.port, reuse_port=reuse_port)
        await site.start()
        host, port = runner.addresses[0][:2]
        if stop is None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, stop.set)
        announce(f"listening on {format_url(host, port)}")
        await stop.wait()
    finally:
        guard.start_drain()
        await runner.cleanup()


def _loop_factory(kind: LoopKind) -> Callable[[], asyncio.AbstractEventLoop] | None:
    if kind == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if kind == "uvloop":
            raise RuntimeError("uvloop is not installed (pip install uvloop)") from None
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run(main: Coroutine[Any, Any, T], *, loop: LoopKind = "auto") -> T:
    """Run ``main`` on a fresh event loop: uvloop when asked (or, with ``auto``, when installed).

    Raises:
        RuntimeError: ``loop="uvloop"`` and uvloop is not installed.
    """
    try:
        factory = _loop_factory(loop)
    except RuntimeError:
        main.close()
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)
