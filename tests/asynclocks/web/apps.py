"""Small ASGI apps with and without races, for the web checks' tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.lowlevel
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


def seats_app(locked: bool = False, seats: int = 1) -> Starlette:
    """Booking the last seat: check, await, act; ``locked`` holds a lock across all three."""
    state = {"left": seats}
    lock = anyio.Lock()

    async def take() -> JSONResponse:
        if state["left"] <= 0:
            return JSONResponse({"error": "sold_out"}, status_code=409)
        await anyio.lowlevel.checkpoint()
        state["left"] -= 1
        return JSONResponse({"booked": True})

    async def book(request: Request) -> JSONResponse:
        if not locked:
            return await take()
        async with lock:
            return await take()

    async def show(request: Request) -> JSONResponse:
        return JSONResponse(state)

    return Starlette(routes=[Route("/book", book, methods=["POST"]), Route("/seats", show)])


def clock_app() -> Starlette:
    """Answers with the (virtual) time it served a request at: differs between runs by design."""
    state = {"count": 0}

    async def hit(request: Request) -> JSONResponse:
        await anyio.sleep(0.01 * state["count"])
        state["count"] += 1
        return JSONResponse({"served_at": anyio.current_time(), "ok": True})

    return Starlette(routes=[Route("/hit", hit, methods=["POST"])])


def crowded_app() -> Starlette:
    """Fails with a 500 only when two requests are in flight at once."""
    state = {"in_flight": 0}

    async def work(request: Request) -> JSONResponse:
        state["in_flight"] += 1
        try:
            if state["in_flight"] > 1:
                raise RuntimeError("two requests at once")
            await anyio.lowlevel.checkpoint()
            return JSONResponse({"ok": True})
        finally:
            state["in_flight"] -= 1

    return Starlette(routes=[Route("/work", work, methods=["POST"])])


def lifespan_app(events: list[str]) -> Starlette:
    """Opens its 'connection pool' in the lifespan startup; requests fail without it."""
    pool: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        events.append("startup")
        pool["ready"] = True
        yield
        events.append("shutdown")

    async def ping(request: Request) -> JSONResponse:
        return JSONResponse({"pool": pool.get("ready", False)})

    return Starlette(routes=[Route("/ping", ping, methods=["POST", "GET"])], lifespan=lifespan)
