"""Driving an app under test: an ASGI app in-process, an aiohttp app over the explorer's network.

A driver is an async context manager that serves one fresh app for one run and sends it requests
one at a time. ASGI apps (Starlette, FastAPI, ...) run in-process through httpx's
``ASGITransport``, so they run on asyncio and trio; their lifespan is started and shut down as a
server would. aiohttp applications run on aiohttp's own ``TestServer``/``TestClient``, which
inside an exploration listen and connect on the explorer's simulated loopback network (asyncio).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Protocol

import anyio

from .._explore._common import Backend
from ._model import Request, Response

#: What ``check_requests`` is given: a function (sync or async) returning a fresh app.
AppFactory = Callable[[], Any]


class Driver(Protocol):
    """Serves one app for one run."""

    async def __aenter__(self) -> Driver: ...

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None: ...

    async def send(self, request: Request) -> Response:
        """Send one request and wait for its whole response."""
        ...


def prepare() -> None:
    """Import aiohttp's test server now, before an exploration starts.

    A library that makes its own sockets is routed to the explorer's simulated network only when
    it was imported before ``explore()``; imported inside the first schedule, its first server
    would be refused. The cost is aiohttp's import, once, and only where aiohttp is installed.
    """
    if importlib.util.find_spec("aiohttp") is not None:
        importlib.import_module("aiohttp.test_utils")


def is_aiohttp_app(app: object) -> bool:
    """Whether ``app`` is an ``aiohttp.web.Application`` (without importing aiohttp otherwise)."""
    return type(app).__module__.startswith("aiohttp.") and type(app).__name__ == "Application"


def kind_of(app: object) -> str:
    """``"aiohttp"`` or ``"asgi"``.

    Raises:
        TypeError: ``app`` is neither an aiohttp Application nor an ASGI callable.
    """
    if is_aiohttp_app(app):
        return "aiohttp"
    if callable(app):
        return "asgi"
    raise TypeError(
        "the app factory must return an aiohttp web.Application or an ASGI app (a Starlette "
        f"or FastAPI app, any async callable(scope, receive, send)), not {type(app).__name__}"
    )


async def make_app(factory: AppFactory) -> Any:
    """Call the factory (awaiting it when it is async) and check what it returned."""
    app = factory()
    if inspect.isawaitable(app):
        app = await app
    kind_of(app)
    return app


def driver_for(app: Any, backend: Backend, lifespan: bool = True) -> Driver:
    """The driver for ``app`` on ``backend``.

    Raises:
        ValueError: an aiohttp app on trio (aiohttp runs on asyncio only).
    """
    if kind_of(app) == "aiohttp":
        if backend != "asyncio":
            raise ValueError("aiohttp apps run on asyncio only; check them with backend='asyncio'")
        return AiohttpDriver(app)
    return AsgiDriver(app, lifespan)


def _arguments(request: Request) -> dict[str, Any]:
    """The keyword arguments of a client's ``request()`` for ``request`` (httpx and aiohttp)."""
    arguments: dict[str, Any] = {"headers": request.headers}
    if request.json is not None:
        arguments["json"] = request.json
    return arguments


def _body(content: bytes) -> Any:
    if not content:
        return None
    try:
        return json.loads(content)
    except ValueError:
        return content.decode("utf-8", errors="replace")


class AsgiDriver:
    """An ASGI app in-process: lifespan started first, requests through httpx's ASGITransport."""

    def __init__(self, app: Callable[..., Awaitable[None]], lifespan: bool = True) -> None:
        self._app = app
        self._lifespan = lifespan
        self._client: Any = None
        self._group: Any = None
        self._shutdown = anyio.Event()
        self._started = anyio.Event()
        self._stopped = anyio.Event()
        self._failure: str | None = None

    async def __aenter__(self) -> AsgiDriver:
        import httpx

        if self._lifespan:
            self._group = anyio.create_task_group()
            await self._group.__aenter__()
            self._group.start_soon(self._run_lifespan, name="ASGI lifespan")
            await self._started.wait()
            if self._failure is not None:
                raise RuntimeError(f"the app's lifespan startup failed: {self._failure}")
        # raise_app_exceptions=False: an exception in the app is a 500, as a server would answer;
        # whether it is one the app also gives one request at a time is the check's question.
        transport = httpx.ASGITransport(app=self._app, raise_app_exceptions=False)
        self._client = httpx.AsyncClient(transport=transport, base_url="http://testserver")
        return self

    async def send(self, request: Request) -> Response:
        response = await self._client.request(request.method, request.path, **_arguments(request))
        return Response(response.status_code, _body(response.content))

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._client is not None:
            await self._client.aclose()
        if self._group is not None:
            self._shutdown.set()
            await self._stopped.wait()
            await self._group.__aexit__(kind, error, traceback)

    async def _run_lifespan(self) -> None:
        sent_startup = False

        async def receive() -> dict[str, Any]:
            nonlocal sent_startup
            if not sent_startup:
                sent_startup = True
                return {"type": "lifespan.startup"}
            await self._shutdown.wait()
            return {"type": "lifespan.shutdown"}

        async def send(message: dict[str, Any]) -> None:
            kind = message["type"]
            if kind == "lifespan.startup.failed":
                self._failure = str(message.get("message", ""))
            if kind.startswith("lifespan.startup."):
                self._started.set()
            elif kind.startswith("lifespan.shutdown."):
                self._stopped.set()

        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}}
        try:
            await self._app(scope, receive, send)
        except Exception:  # noqa: BLE001 - the ASGI spec: an app without lifespan may raise here
            pass
        finally:
            self._started.set()
            self._stopped.set()


class AiohttpDriver:
    """An aiohttp app on its own TestServer, requests through its TestClient."""

    def __init__(self, app: Any) -> None:
        self._app = app
        self._client: Any = None

    async def __aenter__(self) -> AiohttpDriver:
        from aiohttp.test_utils import TestClient, TestServer

        self._client = TestClient(TestServer(self._app, host="127.0.0.1"))
        await self._client.start_server()
        return self

    async def send(self, request: Request) -> Response:
        arguments = _arguments(request)
        async with self._client.request(request.method, request.path, **arguments) as response:
            return Response(response.status, _body(await response.read()))

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._client is not None:
            await self._client.close()
