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
- the memory store keeps it in a bounded in-process table; a duplicate arriving while the first
  is in flight waits for it.

Which responses are kept: every answer below 500, refusals included (a 409 ``insufficient_funds``
is replayed as such, as the operation was tried and refused). A 5xx (503 ``retry_later``, a bug)
is not kept, so the client may retry the key. Requests refused before a route ran (unknown
path, wrong method, body over the size cap) are not kept either.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Final, Protocol, runtime_checkable

import anyio
from aiohttp import web

from .errors import BankError, IdempotencyKeyReused, InvalidIdempotencyKey

__all__ = [
    "HEADER",
    "MAX_KEY_LENGTH",
    "REPLAYED_HEADER",
    "Claim",
    "IdempotencyBackend",
    "KeyTakenMeanwhile",
    "MemoryIdempotency",
    "Replay",
    "StoredResponse",
    "check_key",
    "fingerprint",
    "idempotency_middleware",
    "setup_idempotency",
]

#: The request header carrying the key.
HEADER: Final = "Idempotency-Key"
#: Set to ``true`` on a response replayed from an earlier request.
REPLAYED_HEADER: Final = "Idempotent-Replayed"
#: Longest key accepted, in characters.
MAX_KEY_LENGTH: Final = 128

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """The response recorded under a key.

    Attributes:
        status: HTTP status.
        body: The JSON body, as sent.
    """

    status: int
    body: bytes


class KeyTakenMeanwhile(Exception):  # noqa: N818 - a signal to replay, not an error
    """Raised by a backend when a duplicate with the same key committed before this request
    could: the request's own work is rolled back and ``response`` is replayed instead.

    Attributes:
        response: The duplicate's recorded response.
    """

    def __init__(self, response: StoredResponse) -> None:
        super().__init__(f"replay {response.status}")
        self.response = response


class Claim(Protocol):
    """The right to run one request under a key, or the response to replay instead."""

    @property
    def replay(self) -> StoredResponse | None:
        """The response recorded by an earlier request with this key, if there was one."""
        ...

    async def save(self, response: StoredResponse) -> None:
        """Record ``response`` under the key, together with the operation (durable stores:
        in the same transaction, then commit).

        Raises:
            KeyTakenMeanwhile: A duplicate committed first.
        """
        ...


@runtime_checkable
class IdempotencyBackend(Protocol):
    """Where keys live. The durable stores are backends themselves."""

    def claim(self, key: str, fingerprint: str) -> AbstractAsyncContextManager[Claim]:
        """Claim ``key`` for a request of ``fingerprint``; leaving without ``save`` abandons it.

        Raises:
            IdempotencyKeyReused: The key was used for a different request.
        """
        ...


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


class Replay:
    """A claim that found a recorded response: the request is answered with it."""

    def __init__(self, response: StoredResponse) -> None:
        self._response = response

    @property
    def replay(self) -> StoredResponse | None:
        return self._response

    async def save(self, response: StoredResponse) -> None:
        raise RuntimeError("a replayed claim has nothing to save")


@dataclass
class _Entry:
    fingerprint: str
    response: StoredResponse | None = None
    done: anyio.Event | None = None


class _MemoryClaim:
    def __init__(self, entry: _Entry) -> None:
        self._entry = entry
        self.saved = False

    @property
    def replay(self) -> StoredResponse | None:
        return None

    async def save(self, response: StoredResponse) -> None:
        # No await before the record: nothing can run between the operation's last step and it.
        self._entry.response = response
        self.saved = True


class MemoryIdempotency:
    """Keys kept in process, for the memory store (whose balances do not outlive it either).

    Args:
        capacity: How many completed keys are remembered; the oldest are forgotten first.

    Raises:
        ValueError: ``capacity`` is not positive.
    """

    def __init__(self, capacity: int = 100_000) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be positive, got {capacity}")
        self._capacity = capacity
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    @asynccontextmanager
    async def claim(self, key: str, fingerprint: str) -> AsyncIterator[Claim]:
        while True:
            entry = self._entries.get(key)
            if entry is None:
                break
            if entry.fingerprint != fingerprint:
                raise IdempotencyKeyReused(key)
            if entry.response is not None:
                yield Replay(entry.response)
                return
            # In flight: wait for the first request, then look again (it may have been abandoned).
            assert entry.done is not None
            await entry.done.wait()
        entry = _Entry(fingerprint, done=anyio.Event())
        self._entries[key] = entry
        claim = _MemoryClaim(entry)
        try:
            yield claim
        finally:
            done, entry.done = entry.done, None
            if not claim.saved:
                del self._entries[key]
            else:
                while len(self._entries) > self._capacity:
                    oldest = next(iter(self._entries))
                    if self._entries[oldest].response is None:
                        break
                    del self._entries[oldest]
            assert done is not None
            done.set()


_BACKEND: Final = web.AppKey("bank_idempotency", IdempotencyBackend)


def _response_of(error: BankError) -> web.Response:
    return web.json_response(error.to_json(), status=error.status)


@web.middleware
async def idempotency_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Apply ``Idempotency-Key`` to the POST routes; pass every other request through."""
    if request.method != "POST" or HEADER not in request.headers:
        return await handler(request)
    if request.match_info.http_exception is not None:
        # No route (404/405): nothing would run, so nothing is recorded.
        return await handler(request)
    key = check_key(request.headers.getall(HEADER))
    # aiohttp caches the body, so the handler reads it again for free; a body over the cap
    # raises 413 here, before anything is claimed.
    body = await request.read()
    digest = fingerprint(request.method, request.path, body)
    async with request.app[_BACKEND].claim(key, digest) as claim:
        if claim.replay is not None:
            return _replayed(claim.replay)
        try:
            try:
                response = await handler(request)
            except IdempotencyKeyReused:
                raise  # about this key, not the operation: never recorded under it
            except BankError as error:
                response = _response_of(error)
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


def setup_idempotency(app: web.Application, store: object) -> None:
    """Install the middleware on ``app``: keys in ``store`` if it is a backend, else in memory.

    Call it after the app's error middleware is in place (this one runs inside it, so its own
    refusals get the JSON error shape).
    """
    app[_BACKEND] = store if isinstance(store, IdempotencyBackend) else MemoryIdempotency()
    app.middlewares.append(idempotency_middleware)
