"""Running one bank process: ``serve(config)`` until SIGINT or SIGTERM, on asyncio or uvloop.

``services.bank.run.workers`` runs several of them on one port.
"""

from __future__ import annotations

import asyncio
import gc
import signal
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar

from aiohttp import web

from ..http import create_app
from ..ports import Store
from .config import BankConfig
from .connections import ConnectionGuard, GuardedSite
from .preflight import STORE_CHECK_TIMEOUT, store_failure

__all__ = ["LoopKind", "format_url", "freeze_startup_heap", "run", "serve"]

LoopKind = Literal["auto", "asyncio", "uvloop"]
T = TypeVar("T")


def format_url(host: str, port: int) -> str:
    """``http://host:port``, with IPv6 hosts in brackets."""
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def freeze_startup_heap() -> None:
    """Take every object alive now out of the cyclic garbage collector's sight (``gc.freeze``).

    For a server process, once it has started: the modules, the app, its routes, models and
    OpenAPI document live as long as the process, yet every full collection would walk them
    all again, a lump of work landing on whichever request happens to trigger it. Garbage is
    collected first, so that none of it is kept for good; what the requests allocate later is
    collected as before. Not for a process that goes on to do other work (a test run).
    """
    gc.collect()
    gc.freeze()


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
