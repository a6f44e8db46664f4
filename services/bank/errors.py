"""Every refusal the bank can give, as exceptions that carry their HTTP status and error code.

The store raises the domain errors (unknown account, insufficient funds, ...); the request parsing
raises the protocol errors (bad JSON, wrong content type, ...). The app's error middleware turns any
of them into the JSON body ``{"error": code, "detail": sentence}`` with ``status``.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "AccountExists",
    "AccountNotFound",
    "BalanceTooLarge",
    "BankError",
    "BodyTimeout",
    "BodyTooLarge",
    "IdempotencyKeyReused",
    "InsufficientFunds",
    "InternalError",
    "InvalidIdempotencyKey",
    "InvalidJson",
    "MethodNotAllowed",
    "ModeSwitchPerWorker",
    "RetryLater",
    "RouteNotFound",
    "SameAccount",
    "Unauthorized",
    "UnsupportedLockMode",
    "UnsupportedMediaType",
    "ValidationFailed",
    "describe_id",
]


def describe_id(value: str, limit: int = 70) -> str:
    """Quote an account id for an error sentence, shortening hostile or huge ones."""
    if len(value) > limit:
        return repr(value[:limit]) + f"... ({len(value)} characters)"
    return repr(value)


class BankError(Exception):
    """Base of every refusal: an HTTP status, a snake_case code and a human sentence.

    Attributes:
        status: The HTTP status the refusal is answered with.
        code: The machine-readable ``error`` field.
        detail: The human-readable ``detail`` field.
    """

    status: ClassVar[int] = 400
    code: ClassVar[str] = "bad_request"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail

    def to_json(self) -> dict[str, str]:
        """Return the JSON error body."""
        return {"error": self.code, "detail": self.detail}


class InvalidJson(BankError):
    """The body is not a JSON document (syntax, encoding, duplicate keys, NaN, nesting)."""

    status = 400
    code = "invalid_json"


class Unauthorized(BankError):
    """An admin endpoint was called without the right bearer token."""

    status = 401
    code = "unauthorized"


class AccountNotFound(BankError):
    """The account named in the path or body does not exist."""

    status = 404
    code = "account_not_found"

    def __init__(self, account_id: str) -> None:
        super().__init__(f"account {describe_id(account_id)} does not exist")
        self.account_id = account_id


class RouteNotFound(BankError):
    """No route matches the path."""

    status = 404
    code = "not_found"


class MethodNotAllowed(BankError):
    """The path exists but not with this method."""

    status = 405
    code = "method_not_allowed"


class AccountExists(BankError):
    """``POST /accounts`` with an id that is taken."""

    status = 409
    code = "account_exists"

    def __init__(self, account_id: str) -> None:
        super().__init__(f"account {describe_id(account_id)} already exists")
        self.account_id = account_id


class InsufficientFunds(BankError):
    """A withdrawal or transfer larger than the balance it debits."""

    status = 409
    code = "insufficient_funds"

    def __init__(self, account_id: str, balance: int, amount: int) -> None:
        super().__init__(
            f"account {describe_id(account_id)} holds {balance} cents, "
            f"which does not cover {amount} cents"
        )
        self.account_id = account_id
        self.balance = balance
        self.amount = amount


class BalanceTooLarge(BankError):
    """A credit that would take a balance beyond what the database column holds."""

    status = 409
    code = "balance_too_large"

    def __init__(self, account_id: str, limit: int) -> None:
        super().__init__(
            f"account {describe_id(account_id)} cannot hold more than {limit} cents; "
            "the credit was refused"
        )
        self.account_id = account_id


class InvalidIdempotencyKey(BankError):
    """An ``Idempotency-Key`` header that is empty, too long, repeated or not printable."""

    status = 400
    code = "invalid_idempotency_key"


class IdempotencyKeyReused(BankError):
    """An ``Idempotency-Key`` sent again with a different request."""

    status = 422
    code = "idempotency_key_reused"

    def __init__(self, key: str) -> None:
        shown = key if len(key) <= 40 else key[:40] + "..."
        super().__init__(
            f"Idempotency-Key {shown!r} was already used for a different request "
            "(method, path or body differ); use a new key for a new operation"
        )
        self.key = key


class ModeSwitchPerWorker(BankError):
    """``PUT /admin/lock`` on a server of several worker processes: it would switch only the
    worker that received it, so it is refused."""

    status = 409
    code = "lock_mode_per_worker"


class RetryLater(BankError):
    """The database kept aborting the operation (deadlocks, serialization failures, lock
    timeouts); nothing was applied and the client may send it again."""

    status = 503
    code = "retry_later"


class BodyTimeout(BankError):
    """The body did not arrive in time (a slow-drip client, or a ``Content-Length`` lie)."""

    status = 408
    code = "body_timeout"


class BodyTooLarge(BankError):
    """The body is larger than the configured cap."""

    status = 413
    code = "body_too_large"


class UnsupportedMediaType(BankError):
    """A body sent with a content type other than ``application/json``."""

    status = 415
    code = "unsupported_media_type"


class ValidationFailed(BankError):
    """A JSON body of the wrong shape: missing or extra field, wrong type, out of range."""

    status = 422
    code = "validation_error"


class SameAccount(BankError):
    """A transfer whose source and target are the same account."""

    status = 422
    code = "same_account"

    def __init__(self, account_id: str) -> None:
        super().__init__(f"cannot transfer from account {describe_id(account_id)} to itself")
        self.account_id = account_id


class UnsupportedLockMode(BankError):
    """A lock mode that exists but that the configured store cannot provide."""

    status = 422
    code = "unsupported_lock_mode"


class InternalError(BankError):
    """A bug. The middleware logs the traceback and never sends it to the client."""

    status = 500
    code = "internal_error"
