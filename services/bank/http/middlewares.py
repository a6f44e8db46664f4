"""The one middleware every request passes, and the two steps of its own: JSON refusals
outside, the body deadline inside.

``bank_middleware`` runs a request's layers in order, each a plain function of its module rather
than a middleware of its own (every aiohttp middleware costs a ``partial`` call and a coroutine
per request, five of them a measurable share of a deposit): the body deadline
(:func:`receive_body`), then who is asking (``auth.authenticate``), then the
``Idempotency-Key`` (``idempotency.respond``), then the route's handler. Around all of them it
answers every refusal (the bank's and aiohttp's own) as JSON ``{"error", "detail"}`` with its
status, turns a database failure no store mapped into a 503 (``retry_later`` for a read,
``outcome_unknown`` for a write), and logs any other exception with its traceback while the
client gets a bare 500. :func:`receive_body` receives the whole body within ``body_timeout`` and
the size cap before any handler runs.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Awaitable, Callable

from aiohttp import hdrs, web
from aiohttp.http_exceptions import ContentEncodingError

from ..domain import BankError, OutcomeUnknown, RetryLater, describe_id
from .auth import authenticate
from .errors import (
    BodyTimeout,
    BodyTooLarge,
    InternalError,
    InvalidJson,
    MethodNotAllowed,
    RouteNotFound,
    Unauthenticated,
    error_response,
)
from .headers import HEADER
from .idempotency import respond
from .keys import CONFIG, STALLS

__all__ = ["Handler", "bank_middleware", "receive_body"]

logger = logging.getLogger("services.bank")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _translate_http_exception(request: web.Request, exc: web.HTTPException) -> web.Response:
    """Give aiohttp's own refusals (no route, wrong method, body too big) the JSON error shape."""
    path = describe_id(request.path)
    if isinstance(exc, web.HTTPNotFound):
        return error_response(RouteNotFound(f"no route for {request.method} {path}"))
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        error = MethodNotAllowed(f"{request.method} is not allowed on {path}; allowed: {allowed}")
        return error_response(error, {"Allow": allowed})
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return error_response(_too_large(request.app[CONFIG].max_body_bytes))
    code = (exc.reason or "error").lower().replace(" ", "_").replace("-", "_")
    body = {"error": code, "detail": exc.reason or "request refused"}
    return web.json_response(body, status=exc.status)


def _too_large(limit: int) -> BodyTooLarge:
    """The refusal of a body over the cap, whether its header or its bytes said so."""
    return BodyTooLarge(f"request body is larger than {limit} bytes")


@web.middleware
async def bank_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Run a request's layers (body, credential, idempotency key, handler); answer every
    refusal, aiohttp's included, as JSON; log and hide real bugs.

    Every 503 is noted in the app's ``StallWatch``, which ``/health`` reads.
    """
    try:
        if request.body_exists:
            receiving = receive_body(request)
            if receiving is not None:
                refused = await receiving
                if refused is not None:
                    return refused
        pending = authenticate(request)
        if pending is not None:
            await pending
        response = await respond(request, handler)
    except BankError as error:
        headers = {"WWW-Authenticate": "Bearer"} if isinstance(error, Unauthenticated) else None
        response = error_response(error, headers)
        if response.status == 503:
            request.app[STALLS].note(error.code)
        return response
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _translate_http_exception(request, exc)
    except Exception as exc:
        # CancelledError is a BaseException and passes through untouched, as it must.
        if _database_unavailable(exc):
            # The stores map their failures to RetryLater / OutcomeUnknown themselves; this is
            # the safety net for one that did not, and it cannot know whether a write
            # committed, so it does not claim that nothing was applied.
            logger.warning("database unavailable in %s %s: %r", request.method, request.path, exc)
            if request.method in ("GET", "HEAD"):
                request.app[STALLS].note(RetryLater.code)
                return error_response(
                    RetryLater(
                        f"the database is unavailable right now ({type(exc).__name__}); retry later"
                    )
                )
            keyed = HEADER in request.headers
            request.app[STALLS].note(OutcomeUnknown.code)
            return error_response(OutcomeUnknown(type(exc).__name__, keyed=keyed))
        logger.exception("unhandled error in %s %s", request.method, request.path)
        return error_response(InternalError("internal error; the server log has the details"))
    if response.status == 503 and request.path != "/health":
        # A refusal answered inside (the idempotency layer answers its requests' own).
        request.app[STALLS].note(_code_of(response))
    return response


def _code_of(response: web.StreamResponse) -> str:
    """The ``error`` code of a JSON error response (only read for the rare 503s)."""
    body = response.body if isinstance(response, web.Response) else None
    try:
        code = json.loads(body)["error"] if isinstance(body, bytes) else None
    except (ValueError, TypeError, KeyError):
        code = None
    return code if isinstance(code, str) else "service_unavailable"


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


def receive_body(request: web.Request) -> Awaitable[web.Response | None] | None:
    """Make sure the whole body of a request that has one is here, within ``body_timeout`` and
    the size cap, before anything runs.

    aiohttp waits for a body as long as the client keeps the connection open, so a client that
    drips bytes, or declares a ``Content-Length`` larger than what it sends, would hold a
    connection and a handler forever. The body is cached by ``request.read()``, so the
    idempotency layer and the handlers read it again for free.

    Returns:
        ``None`` when the whole body is already here, intact, its length declared and not
        compressed (the usual case for small JSON: it came with the headers, so no read can
        wait, fail on its framing or exceed the cap); otherwise what
        receives it, to await, which gives the refusal to answer instead, if any.

    Raises:
        BodyTooLarge: The declared length is over the cap.
    """
    config = request.app[CONFIG]
    declared = request.content_length
    if declared is not None and declared > config.max_body_bytes:
        # Refused from the header alone: waiting for bytes we would not keep is pointless.
        raise _too_large(config.max_body_bytes)
    content = request.content
    if (
        declared is not None
        and content.is_eof()
        and content.exception() is None
        and hdrs.CONTENT_ENCODING not in request.headers
    ):
        # All here, intact, and no larger than declared (not compressed, not chunked): nothing
        # to wait for, to refuse, or to fail, so the handler's read is the first one, which
        # spares this step a coroutine and the timer.
        return None
    return _receive(request, config.body_timeout)


async def _receive(request: web.Request, body_timeout: float) -> web.Response | None:
    """Read the body within ``body_timeout``; the refusal to answer if it breaks or is late.

    Raises:
        aiohttp.web.HTTPRequestEntityTooLarge: The body read is over the cap.
    """
    try:
        async with asyncio.timeout(body_timeout):
            await request.read()
    except TimeoutError:
        error = BodyTimeout(f"the request body did not arrive within {body_timeout:g} seconds")
        response = error_response(error)
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
        response = error_response(InvalidJson(f"the request body could not be read: {what}"))
        response.force_close()
        return response
    return None
