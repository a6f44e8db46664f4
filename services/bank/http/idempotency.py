"""Idempotent retries: the ``Idempotency-Key`` header of the POST endpoints.

A client that did not get an answer (timeout, dropped connection) cannot know whether its
transfer happened. Sending the request again with the same ``Idempotency-Key`` is safe: the first
request that completes stores its response under the key, and every later request with that key
and the same method, path and body gets that response back (status and body, with the header
``Idempotent-Replayed: true``) without the operation being applied again. The same key with a
different request is refused with 422 ``idempotency_key_reused``.

Where the key is stored:

- durable stores (SQLite, PostgreSQL) keep it in the database, written in the same transaction
  as the operation itself: the operation and its recorded response commit together or not at
  all, across restarts and across worker processes. A duplicate arriving while the first is in
  flight waits on the database (the key's row is locked by the first transaction) and then
  replays its response;
- the memory store keeps it in an in-process table per client; a duplicate arriving while the
  first is in flight waits for it.

Keys are scoped per client (the API key's owner; anonymous requests of a ``require_keys=False``
bank share one scope): the same key from two clients names two operations. A record is kept
for ``BankConfig.idempotency_retention`` seconds after it was written and never dropped
earlier; a client holding ``idempotency_quota`` live records gets 429
``idempotency_quota_exceeded`` for a new key instead of anyone's older record being forgotten.
``POST /clients`` ignores the header: its answer holds an API key, which is never stored.

The claim of a key is the request's unit of work (``services.bank.ports.UnitOfWork``):
:func:`respond` (which the app's middleware calls) hands it to the route, which passes it to
the ledger, whose writes join its transaction; then it records the response with :meth:`save`,
which commits.

Which responses are kept: every answer below 500, refusals included (a 409 ``insufficient_funds``
is replayed as such, as the operation was tried and refused). A 5xx (503 ``retry_later``, a bug)
is not kept, so the client may retry the key. Requests refused before a route ran (unknown
path, wrong method, body over the size cap) are not kept either.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable
from typing import Final

from aiohttp import web
from aiohttp.typedefs import Handler

from ..domain import BankError, IdempotencyKeyReused
from ..ports import IdempotencyBackend, KeyPolicy, KeyTakenMeanwhile, StoredResponse, UnitOfWork
from ..stores.memory import MemoryIdempotency
from .auth import principal
from .errors import InvalidIdempotencyKey, error_response
from .headers import HEADER, MAX_KEY_LENGTH, REPLAYED_HEADER
from .keys import CONFIG

__all__ = [
    "HEADER",
    "MAX_KEY_LENGTH",
    "REPLAYED_HEADER",
    "check_key",
    "fingerprint",
    "respond",
    "setup_idempotency",
    "unit_of_work",
]


def check_key(values: list[str]) -> str:
    """Return the one key of a request, given every ``Idempotency-Key`` header it sent.

    Raises:
        InvalidIdempotencyKey: Sent more than once, empty, longer than 128 characters, or with
            a character outside printable ASCII (space to ``~``).
    """
    if len(values) != 1:
        raise InvalidIdempotencyKey(f"send the {HEADER} header once, not {len(values)} times")
    key = values[0]
    if not 1 <= len(key) <= MAX_KEY_LENGTH:
        raise InvalidIdempotencyKey(
            f"{HEADER} must be 1 to {MAX_KEY_LENGTH} characters, got {len(key)}"
        )
    for position, char in enumerate(key):
        if not " " <= char <= "~":
            raise InvalidIdempotencyKey(
                f"{HEADER} must be printable ASCII (space to '~'); character {position} is {char!r}"
            )
    return key


def fingerprint(method: str, path: str, body: bytes) -> str:
    """Digest of what makes two requests "the same": method, path and JSON body.

    A body that parses as JSON is compared by its meaning (key order and spacing do not matter);
    anything else by its bytes.
    """
    try:
        canonical = json.dumps(
            json.loads(body), sort_keys=True, separators=(",", ":"), ensure_ascii=True
        ).encode()
    except (ValueError, RecursionError):
        canonical = b"raw:" + body
    digest = hashlib.sha256()
    for part in (method.encode(), path.encode("utf-8", "surrogateescape"), canonical):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


_BACKEND: Final = web.AppKey("bank_idempotency", IdempotencyBackend)
_POLICY: Final = web.AppKey("bank_key_policy", KeyPolicy)
#: Routes whose answers are never recorded under a key.
_UNRECORDED: Final = frozenset({"/clients"})
_WORK: Final = web.RequestKey[UnitOfWork | None]("bank_unit_of_work")


def unit_of_work(request: web.Request) -> UnitOfWork | None:
    """The unit of work of a request sent with an ``Idempotency-Key``, for the ledger; ``None``
    for a request without one (each of its writes then commits on its own).

    Raises:
        KeyError: The request did not pass :func:`respond`.
    """
    # Indexing, not .get(): respond() sets it on every request, and a missing key would
    # cost a raised KeyError (about a microsecond) on each.
    return request[_WORK]


def respond(request: web.Request, handler: Handler) -> Awaitable[web.StreamResponse]:
    """The answer of ``handler`` to ``request``, under its ``Idempotency-Key`` on the POST
    routes: replayed, or claimed and recorded. Every other request goes to ``handler`` as it is
    (its own awaitable, no layer around it).

    Raises:
        InvalidIdempotencyKey: See :func:`check_key`.
    """
    if (
        request.method != "POST"
        or HEADER not in request.headers
        # No route (404/405): nothing would run, so nothing is recorded.
        or request.match_info.http_exception is not None
        or request.path in _UNRECORDED
    ):
        request[_WORK] = None
        return handler(request)
    key = check_key(request.headers.getall(HEADER))
    who = principal(request)
    if who.client is None and (who.admin or request.app[CONFIG].require_keys):
        # Refused by the route (401/403) without running: nothing to record, and a stranger
        # must not fill a scope of keys.
        request[_WORK] = None
        return handler(request)
    return _keyed(request, handler, key, who.client or "")


async def _keyed(
    request: web.Request, handler: Handler, key: str, scope: str
) -> web.StreamResponse:
    # aiohttp caches the body, so the handler reads it again for free; a body over the cap
    # raises 413 here, before anything is claimed.
    body = await request.read()
    digest = fingerprint(request.method, request.path, body)
    claiming = request.app[_BACKEND].claim(key, digest, client=scope, policy=request.app[_POLICY])
    async with claiming as claim:
        if claim.replay is not None:
            return _replayed(claim.replay)
        # The handler passes it to the ledger, whose writes join its transaction.
        request[_WORK] = claim
        try:
            try:
                response = await handler(request)
            except IdempotencyKeyReused:
                raise  # about this key, not the operation: never recorded under it
            except BankError as error:
                response = error_response(error)
            if not isinstance(response, web.Response) or response.status >= 500:
                # Not recorded: the claim is abandoned (rolled back), so the key may be retried.
                return response
            body_bytes = response.body
            if not isinstance(body_bytes, bytes):
                return response
            await claim.save(StoredResponse(response.status, body_bytes))
        except KeyTakenMeanwhile as taken:
            # A duplicate won the race; this request's work was rolled back.
            return _replayed(taken.response)
        return response


def _replayed(response: StoredResponse) -> web.Response:
    return web.Response(
        body=response.body,
        status=response.status,
        content_type="application/json",
        headers={REPLAYED_HEADER: "true"},
    )


def setup_idempotency(app: web.Application, store: object, policy: KeyPolicy) -> None:
    """Prepare ``app`` for :func:`respond`: keys in ``store`` if it is a backend, else in
    memory, kept and capped as ``policy`` says.

    The app's middleware calls :func:`respond` inside its error handling (its refusals get the
    JSON error shape) and after ``auth.authenticate`` (it knows the request's client).
    """
    app[_BACKEND] = store if isinstance(store, IdempotencyBackend) else MemoryIdempotency()
    app[_POLICY] = policy
