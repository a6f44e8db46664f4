"""An asyncio event loop in a thread, for synchronous drivers (Hypothesis state machines,
schemathesis) that talk to an aiohttp app served on that loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from aiohttp import web
from aiohttp.test_utils import TestClient

from .conftest import _Server

__all__ = ["LoopThread", "ServedApp"]

T = TypeVar("T")

Client = TestClient[web.Request, web.Application]


class LoopThread:
    """Run coroutines on a private loop from synchronous code: ``thread.run(coro)``."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        """Run ``coro`` on the loop and return its result (re-raising its exception)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        """Stop the loop and its thread; the loop must have nothing left to clean up."""
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


class ServedApp:
    """An aiohttp app on a real port, served from a :class:`LoopThread`.

    Use as a context manager; ``client`` is a test client bound to the app's server, to be used
    only through ``thread.run``.
    """

    def __init__(self, app: web.Application, *, handler_cancellation: bool = True) -> None:
        self.thread = LoopThread()
        self._server = _Server(app, handler_cancellation=handler_cancellation)
        self._client: Client | None = None
        self.app = app

    @property
    def client(self) -> Client:
        assert self._client is not None, "use ServedApp as a context manager"
        return self._client

    async def _start(self) -> None:
        # Built on the loop it will run on: aiohttp's session binds to the running loop.
        self._client = TestClient(self._server)
        await self._client.start_server()

    @property
    def port(self) -> int:
        port = self._server.port
        assert port is not None
        return port

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ServedApp:
        try:
            self.thread.run(self._start())
        except BaseException:
            self.thread.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            self.thread.run(self.client.close())
        finally:
            self.thread.close()
