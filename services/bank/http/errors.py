"""The web layer's refusals, and the one table that gives every refusal its HTTP status.

The domain errors (``services.bank.domain``) carry a code and a sentence but no status; the
refusals defined here are about the request itself (bad JSON, wrong content type, no route, ...).
:func:`error_response` answers either as ``{"error": code, "detail": sentence}`` with its status.
"""

from __future__ import annotations

from typing import Final

from aiohttp import web

from ..domain import (
    AccountExists,
    AccountNotFound,
    BalanceTooLarge,
    BankError,
    ClientExists,
    DeadlineExceeded,
    IdempotencyKeyReused,
    IdempotencyQuotaExceeded,
    InsufficientFunds,
    ModeSwitchPerWorker,
    OpeningBalanceTooLarge,
    OutcomeUnknown,
    RetryLater,
    SameAccount,
    TooManyAccounts,
    UnsupportedLockMode,
)

__all__ = [
    "STATUS",
    "BodyTimeout",
    "BodyTooLarge",
    "InternalError",
    "InvalidIdempotencyKey",
    "InvalidJson",
    "MethodNotAllowed",
    "RouteNotFound",
    "Forbidden",
    "MisdirectedRequest",
    "Unauthenticated",
    "UnsupportedMediaType",
    "ValidationFailed",
    "error_response",
    "status_of",
]


class InvalidJson(BankError):
    """The body is not a JSON document (syntax, encoding, duplicate keys, NaN, nesting)."""

    code = "invalid_json"


class Unauthenticated(BankError):
    """No credential where one is needed, or a bearer token nobody has."""

    code = "unauthenticated"


class Forbidden(BankError):
    """A valid credential that may not do this (another client's account, a client on an admin
    route)."""

    code = "forbidden"


class MisdirectedRequest(BankError):
    """A ``Host`` header that does not name this server (DNS rebinding)."""

    code = "misdirected_request"


class RouteNotFound(BankError):
    """No route matches the path."""

    code = "not_found"


class MethodNotAllowed(BankError):
    """The path exists but not with this method."""

    code = "method_not_allowed"


class InvalidIdempotencyKey(BankError):
    """An ``Idempotency-Key`` header that is empty, too long, repeated or not printable."""

    code = "invalid_idempotency_key"


class BodyTimeout(BankError):
    """The body did not arrive in time (a slow-drip client, or a ``Content-Length`` lie)."""

    code = "body_timeout"


class BodyTooLarge(BankError):
    """The body is larger than the configured cap."""

    code = "body_too_large"


class UnsupportedMediaType(BankError):
    """A body sent with a content type other than ``application/json``."""

    code = "unsupported_media_type"


class ValidationFailed(BankError):
    """A JSON body of the wrong shape: missing or extra field, wrong type, out of range."""

    code = "validation_error"


class InternalError(BankError):
    """A bug. The middleware logs the traceback and never sends it to the client."""

    code = "internal_error"


#: The status of every refusal, domain and web alike.
STATUS: Final[dict[type[BankError], int]] = {
    # The request itself.
    InvalidJson: 400,
    InvalidIdempotencyKey: 400,
    Unauthenticated: 401,
    Forbidden: 403,
    MisdirectedRequest: 421,
    RouteNotFound: 404,
    MethodNotAllowed: 405,
    BodyTimeout: 408,
    BodyTooLarge: 413,
    UnsupportedMediaType: 415,
    ValidationFailed: 422,
    InternalError: 500,
    # The domain.
    AccountNotFound: 404,
    AccountExists: 409,
    InsufficientFunds: 409,
    BalanceTooLarge: 409,
    ModeSwitchPerWorker: 409,
    ClientExists: 409,
    TooManyAccounts: 409,
    OpeningBalanceTooLarge: 409,
    IdempotencyQuotaExceeded: 429,
    SameAccount: 422,
    IdempotencyKeyReused: 422,
    UnsupportedLockMode: 422,
    RetryLater: 503,
    DeadlineExceeded: 503,
    OutcomeUnknown: 503,
    # A refusal of a class not listed above (a subclass is answered as its parent).
    BankError: 400,
}


def status_of(error: BankError) -> int:
    """Return the HTTP status of ``error`` (of its nearest listed class, for a subclass)."""
    status = STATUS.get(type(error))
    if status is not None:
        return status
    return next(STATUS[kind] for kind in type(error).__mro__ if kind in STATUS)


def error_response(error: BankError, headers: dict[str, str] | None = None) -> web.Response:
    """Answer ``error`` as its JSON body with its status."""
    return web.json_response(error.to_json(), status=status_of(error), headers=headers)
