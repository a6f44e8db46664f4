"""The bank's domain: amounts, account ids, journal entries, the books, and every refusal.

Nothing here knows about HTTP, databases or event loops: the ledger and the stores speak these
types, and the web layer (``services.bank.http``) maps each refusal to its status.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import ClassVar, Final, Literal

__all__ = [
    "ACCOUNT_ID_PATTERN",
    "MAX_AMOUNT",
    "OPERATION_KINDS",
    "AccountExists",
    "AccountNotFound",
    "Audit",
    "BalanceTooLarge",
    "BankError",
    "ClientExists",
    "DeadlineExceeded",
    "IdempotencyKeyReused",
    "IdempotencyQuotaExceeded",
    "InsufficientFunds",
    "JournalEntry",
    "ModeSwitchPerWorker",
    "OpeningBalanceTooLarge",
    "OperationKind",
    "OutcomeUnknown",
    "RetryLater",
    "SameAccount",
    "TooManyAccounts",
    "UnsupportedLockMode",
    "describe_id",
    "is_account_id",
    "positive_seconds",
]

#: Largest amount or opening balance, in cents.
MAX_AMOUNT: Final = 10**12

OperationKind = Literal["open", "deposit", "withdraw", "transfer"]

#: Every operation kind, in the order the memory store's compact journal numbers them.
OPERATION_KINDS: Final[tuple[OperationKind, ...]] = ("open", "deposit", "withdraw", "transfer")


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One acknowledged operation.

    Attributes:
        seq: Position in the journal, from 1.
        kind: ``open`` (account creation), ``deposit``, ``withdraw`` or ``transfer``.
        account: The account opened, credited, debited, or the transfer's source.
        amount: Cents moved (the opening balance for ``open``).
        counterparty: The transfer's target; ``None`` for the other kinds.
    """

    seq: int
    kind: OperationKind
    account: str
    amount: int
    counterparty: str | None = None

    @property
    def money_delta(self) -> int:
        """How this operation changes the bank's total: transfers move money, they add none."""
        if self.kind in ("open", "deposit"):
            return self.amount
        if self.kind == "withdraw":
            return -self.amount
        return 0


@dataclass(frozen=True, slots=True)
class Audit:
    """The books: what the balances add up to against what the journal says they should.

    Attributes:
        accounts: Number of accounts.
        total: Sum of all balances.
        expected: Opening balances + acknowledged deposits - acknowledged withdrawals.
        negative_accounts: ``(id, balance)`` of every account below zero, sorted by id.
    """

    accounts: int
    total: int
    expected: int
    negative_accounts: tuple[tuple[str, int], ...]

    @property
    def drift(self) -> int:
        """``total - expected``: money created (> 0) or lost (< 0) by races. 0 when correct."""
        return self.total - self.expected

    def to_json(self) -> dict[str, object]:
        """Return the ``GET /audit`` body."""
        return {
            "accounts": self.accounts,
            "total": self.total,
            "expected": self.expected,
            "drift": self.drift,
            "negative_accounts": [
                {"id": account_id, "balance": balance}
                for account_id, balance in self.negative_accounts
            ],
        }


#: Account ids: 1 to 64 ASCII letters, digits, ``_`` or ``-``.
ACCOUNT_ID_PATTERN: Final = r"^[A-Za-z0-9_-]{1,64}$"
# fullmatch without anchors: `$` would also accept a trailing newline.
_ACCOUNT_ID: Final = re.compile(r"[A-Za-z0-9_-]{1,64}", re.ASCII)


def is_account_id(value: object) -> bool:
    """Whether ``value`` is a well-formed account id."""
    return isinstance(value, str) and _ACCOUNT_ID.fullmatch(value) is not None


def describe_id(value: str, limit: int = 70) -> str:
    """Quote an account id for an error sentence, shortening hostile or huge ones."""
    if len(value) > limit:
        return repr(value[:limit]) + f"... ({len(value)} characters)"
    return repr(value)


def positive_seconds(name: str, seconds: object) -> float:
    """Return ``seconds`` as a float if it is a finite number of seconds > 0.

    The one check of every duration setting (the server's timeouts, the lock modes' wait, the
    database stores' timeouts), so that each refuses a bad value with the same sentence.

    Raises:
        ValueError: It is not (a bool, another type, NaN, infinite, zero or negative); the
            message names the setting.
    """
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, int | float)
        or not math.isfinite(seconds)
        or seconds <= 0
    ):
        raise ValueError(f"{name} must be a finite number of seconds > 0, got {seconds!r}")
    return float(seconds)


class BankError(Exception):
    """Base of every refusal: a snake_case code and a human sentence.

    Which HTTP status answers it is the web layer's business (``services.bank.http.errors``):
    the ledger and the stores raise these without knowing they will become HTTP responses.

    Attributes:
        code: The machine-readable ``error`` field.
        detail: The human-readable ``detail`` field.
    """

    code: ClassVar[str] = "bad_request"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail

    def to_json(self) -> dict[str, str]:
        """Return the JSON error body."""
        return {"error": self.code, "detail": self.detail}


class AccountNotFound(BankError):
    """The account named in the path or body does not exist."""

    code = "account_not_found"

    def __init__(self, account_id: str) -> None:
        super().__init__(f"account {describe_id(account_id)} does not exist")
        self.account_id = account_id


class AccountExists(BankError):
    """``POST /accounts`` with an id that is taken."""

    code = "account_exists"

    def __init__(self, account_id: str) -> None:
        super().__init__(f"account {describe_id(account_id)} already exists")
        self.account_id = account_id


class InsufficientFunds(BankError):
    """A withdrawal or transfer larger than the balance it debits."""

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

    code = "balance_too_large"

    def __init__(self, account_id: str, limit: int) -> None:
        super().__init__(
            f"account {describe_id(account_id)} cannot hold more than {limit} cents; "
            "the credit was refused"
        )
        self.account_id = account_id


class SameAccount(BankError):
    """A transfer whose source and target are the same account."""

    code = "same_account"

    def __init__(self, account_id: str) -> None:
        super().__init__(f"cannot transfer from account {describe_id(account_id)} to itself")
        self.account_id = account_id


class IdempotencyKeyReused(BankError):
    """An ``Idempotency-Key`` sent again with a different request."""

    code = "idempotency_key_reused"

    def __init__(self, key: str) -> None:
        shown = key if len(key) <= 40 else key[:40] + "..."
        super().__init__(
            f"Idempotency-Key {shown!r} was already used for a different request "
            "(method, path or body differ); use a new key for a new operation"
        )
        self.key = key


class RetryLater(BankError):
    """Nothing was applied, and the client may send the request again: the database kept
    aborting the operation (deadlocks, serialization failures, lock or statement timeouts), or
    could not be reached before anything was written.

    Only raised when the store knows nothing was applied; see :class:`OutcomeUnknown`."""

    code = "retry_later"


class DeadlineExceeded(RetryLater):
    """The request did not get its lock mode's locks (or past a mode switch) or its database
    connection within the service's ``request_timeout``; nothing was applied."""

    code = "deadline_exceeded"


class OutcomeUnknown(BankError):
    """The connection to the database was lost while the operation was being committed: it may
    or may not have been applied.

    A request sent with an ``Idempotency-Key`` is findable by it: a retry with the same key
    replays the committed response, or applies the operation once if it did not commit.

    Args:
        keyed: Whether the request carried an ``Idempotency-Key`` (the advice differs).
        reason: What happened, for the sentence (e.g. the driver's exception name).
    """

    code = "outcome_unknown"

    def __init__(self, reason: str, *, keyed: bool) -> None:
        if keyed:
            advice = (
                "retry with the same Idempotency-Key: it replays the result if the operation "
                "was applied, and applies it once if it was not"
            )
        else:
            advice = (
                "the request had no Idempotency-Key, so a retry may apply it twice: read the "
                "balance first, and send money-moving requests with an Idempotency-Key"
            )
        super().__init__(
            f"the database connection was lost while the operation was committing ({reason}); "
            f"it may or may not have been applied: {advice}"
        )
        self.keyed = keyed


class UnsupportedLockMode(BankError):
    """A lock mode that exists but that the configured store cannot provide."""

    code = "unsupported_lock_mode"


class ModeSwitchPerWorker(BankError):
    """``PUT /admin/lock`` on a server of several worker processes: it would switch only the
    worker that received it, so it is refused."""

    code = "lock_mode_per_worker"


class ClientExists(BankError):
    """``POST /clients`` with a client id that is taken."""

    code = "client_exists"

    def __init__(self, client_id: str) -> None:
        super().__init__(f"client {describe_id(client_id)} already exists")
        self.client_id = client_id


class TooManyAccounts(BankError):
    """A client that already owns as many accounts as one client may."""

    code = "too_many_accounts"

    def __init__(self, client_id: str, limit: int) -> None:
        super().__init__(
            f"client {describe_id(client_id)} already owns {limit} accounts, the most one "
            "client may open"
        )
        self.client_id = client_id
        self.limit = limit


class OpeningBalanceTooLarge(BankError):
    """An opening balance above the service's cap (money is brought in by deposits)."""

    code = "opening_balance_too_large"

    def __init__(self, balance: int, limit: int) -> None:
        super().__init__(
            f"an account may open with at most {limit} cents, got {balance}; deposit the rest"
        )
        self.limit = limit


class IdempotencyQuotaExceeded(BankError):
    """A client holding as many live ``Idempotency-Key`` records as its quota allows: the new
    key is refused rather than an older one forgotten (which would break its exactly-once)."""

    code = "idempotency_quota_exceeded"

    def __init__(self, quota: int, retention: float) -> None:
        super().__init__(
            f"this client already holds {quota} Idempotency-Keys younger than the "
            f"{retention:g} s retention window; retry once older ones expire, or send the "
            "request without a key"
        )
        self.quota = quota
