"""The service's settings, as one frozen dataclass shared by the app factory and the CLI."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from ..domain import MAX_AMOUNT, positive_seconds

__all__ = [
    "ADMIN_TOKEN_ENV",
    "API_KEY_ENV",
    "DEFAULT_IDEMPOTENCY_QUOTA",
    "DEFAULT_IDEMPOTENCY_RETENTION",
    "DEFAULT_MAX_ACCOUNTS_PER_CLIENT",
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_OPENING_BALANCE",
    "DEFAULT_REQUEST_TIMEOUT",
    "IN_PROCESS_LOCK_MODES",
    "UNSAFE_FLAG",
    "BankConfig",
    "read_token_file",
]

#: Environment variable read for the admin token when ``--admin-token`` is not given.
ADMIN_TOKEN_ENV: Final = "BANK_ADMIN_TOKEN"
#: Environment variable read by ``hammer`` for the client API key it sends.
API_KEY_ENV: Final = "BANK_API_KEY"
#: Bodies larger than this are refused with 413 before they are parsed.
DEFAULT_MAX_BODY_BYTES: Final = 64 * 1024
#: Accounts one client may open unless configured otherwise.
DEFAULT_MAX_ACCOUNTS_PER_CLIENT: Final = 1_000
#: Largest opening balance, in cents (10,000,000.00).
DEFAULT_MAX_OPENING_BALANCE: Final = 10**9
#: Seconds an Idempotency-Key record is kept: a day, longer than any client's retry loop.
DEFAULT_IDEMPOTENCY_RETENTION: Final = 24 * 3600.0
#: Live Idempotency-Key records per client.
DEFAULT_IDEMPOTENCY_QUOTA: Final = 100_000
#: Seconds a money-moving request may wait for its locks and the database before it is answered
#: 503 ``deadline_exceeded`` with nothing applied.
DEFAULT_REQUEST_TIMEOUT: Final = 10.0
#: The lock modes that lock inside one process (``services.bank.locking.LOCK_MODES``).
IN_PROCESS_LOCK_MODES: Final = ("none", "global", "account")
#: The ``serve`` flag that lets several workers run an in-process lock mode, for the lesson.
UNSAFE_FLAG: Final = "--unsafe-in-process-locks"


@dataclass(frozen=True, slots=True)
class BankConfig:
    """Settings of one bank service.

    Attributes:
        host: Address to bind; loopback unless told otherwise.
        port: TCP port; 0 picks a free one (``serve`` prints the one it got).
        lock_mode: Starting lock mode (``none``, ``global``, ``account``; ``db`` on a database
            store).
        store: Store URL: ``memory``, ``sqlite:///PATH`` or ``postgresql://...``.
        io_delay: Seconds the memory store awaits between read and write; 0 is a bare checkpoint.
        admin_token: Bearer token for ``/admin``; ``None`` makes every admin request a 401.
        max_body_bytes: Request body cap (413 above it).
        body_timeout: Seconds a client has to send a request's whole body once its headers
            arrived; a slower one (a slow-drip or a ``Content-Length`` larger than what it
            sends) gets 408 and the connection is closed.
        handler_cancellation: Whether aiohttp cancels a handler whose client went away.
        workers: Processes serving the port together (``serve --workers N``); more than one
            needs a database store, which they share, and lock mode ``db``.
        unsafe_in_process_locks: Let several workers run an in-process lock mode (``none``,
            ``global``, ``account``) although it loses acknowledged money (each worker's lock
            orders only its own requests): for the showdown's lesson, never for a service.
        request_timeout: Seconds a money-moving request may spend waiting for its account locks
            and the database (pool, statements, retries) before it is answered 503
            ``deadline_exceeded`` with nothing applied. The PostgreSQL store's
            ``statement_timeout`` is derived from it.
        header_timeout: Seconds a client has from the first byte of a request head to its
            last; a slower one (slowloris) has its connection closed.
        keepalive_timeout: Seconds a connection may sit idle between requests (or before its
            first) before the server closes it (aiohttp's ``keepalive_timeout``).
        max_connections: Connections one process serves at once; a connection above it gets
            503 ``too_many_connections`` and is closed, those within it keep being served.
        drain_timeout: Seconds requests under way get to finish once the server is told to
            stop (SIGTERM/SIGINT); their replies say ``Connection: close``.

        Access and limits (``services.bank.http.auth``, ``services.bank.http.idempotency``):

        require_keys: Whether money routes need a client's API key (``Authorization: Bearer``)
            and ownership is enforced. ``False`` only for in-process lessons and tests (the
            CLI cannot turn it off): anonymous requests may then do what a client may.
        allowed_hosts: Host names accepted in the ``Host`` header besides ``host`` (and, for a
            loopback ``host``, ``localhost``/``127.0.0.1``/``::1``); a bank bound to a
            wildcard address checks the header only when this lists names.
        max_accounts_per_client: Accounts one client may open (409 ``too_many_accounts``).
        max_opening_balance: Largest opening balance in cents (409
            ``opening_balance_too_large``); more money comes in by deposits.
        idempotency_retention: Seconds an ``Idempotency-Key`` record is kept; a retry within
            it always replays.
        idempotency_quota: Live ``Idempotency-Key`` records one client may hold; a new key
            beyond it is 429 ``idempotency_quota_exceeded`` (nothing is evicted).

    Raises:
        ValueError: A setting out of range (the message names it).
    """

    host: str = "127.0.0.1"
    port: int = 8080
    lock_mode: str = "none"
    store: str = "memory"
    io_delay: float = 0.0
    admin_token: str | None = field(default=None, repr=False)
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    handler_cancellation: bool = False
    body_timeout: float = 10.0
    workers: int = 1
    header_timeout: float = 10.0
    keepalive_timeout: float = 15.0
    max_connections: int = 1000
    drain_timeout: float = 10.0
    unsafe_in_process_locks: bool = False
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT
    # Access and limits.
    require_keys: bool = True
    allowed_hosts: tuple[str, ...] = ()
    max_accounts_per_client: int = DEFAULT_MAX_ACCOUNTS_PER_CLIENT
    max_opening_balance: int = DEFAULT_MAX_OPENING_BALANCE
    idempotency_retention: float = DEFAULT_IDEMPOTENCY_RETENTION
    idempotency_quota: int = DEFAULT_IDEMPOTENCY_QUOTA

    def __post_init__(self) -> None:
        from ..stores import check_store_url

        kind = check_store_url(self.store)
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 1:
            raise ValueError(f"workers must be a positive integer, got {self.workers!r}")
        if kind == "memory" and self.workers > 1:
            raise ValueError(
                f"{self.workers} workers need a store they can share (sqlite:///PATH or "
                "postgresql://...); the memory store lives inside one process"
            )
        if (
            self.workers > 1
            and self.lock_mode in IN_PROCESS_LOCK_MODES
            and not self.unsafe_in_process_locks
        ):
            raise ValueError(
                f"lock mode {self.lock_mode!r} locks inside one process, so {self.workers} "
                "workers would lose acknowledged money (each one's lock orders only its own "
                f"requests); use --lock db, or pass {UNSAFE_FLAG} to demonstrate the loss"
            )
        if kind == "memory" and self.lock_mode == "db":
            raise ValueError(
                "lock mode 'db' needs a database store (sqlite:///PATH or postgresql://...)"
            )
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be between 0 and 65535, got {self.port}")
        if not math.isfinite(self.io_delay) or self.io_delay < 0:
            raise ValueError(
                f"io_delay must be a finite number of seconds >= 0, got {self.io_delay}"
            )
        if self.admin_token is not None and not self.admin_token:
            raise ValueError("admin_token must not be empty; leave it unset to disable /admin")
        for name in (
            "body_timeout",
            "header_timeout",
            "keepalive_timeout",
            "drain_timeout",
            "request_timeout",
        ):
            positive_seconds(name, getattr(self, name))
        if (
            isinstance(self.max_connections, bool)
            or not isinstance(self.max_connections, int)
            or self.max_connections < 1
        ):
            raise ValueError(
                f"max_connections must be a positive integer, got {self.max_connections!r}"
            )
        if self.max_body_bytes < 1:
            raise ValueError(f"max_body_bytes must be positive, got {self.max_body_bytes}")
        for name in ("max_accounts_per_client", "idempotency_quota"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not 0 <= self.max_opening_balance <= MAX_AMOUNT:
            raise ValueError(
                f"max_opening_balance must be between 0 and {MAX_AMOUNT} cents, "
                f"got {self.max_opening_balance}"
            )
        positive_seconds("idempotency_retention", self.idempotency_retention)
        hosts: object = self.allowed_hosts
        if not isinstance(hosts, tuple) or not all(isinstance(name, str) for name in hosts):
            raise TypeError(f"allowed_hosts must be a tuple of host names, got {hosts!r}")

    def unsafe_reason(self, lock_mode: str | None = None) -> str | None:
        """Why this service, running ``lock_mode`` (default: its starting mode), can lose
        acknowledged money on purpose; ``None`` when it cannot.

        Shown in the start banner and by ``GET /health``.
        """
        mode = self.lock_mode if lock_mode is None else lock_mode
        if mode == "none":
            return (
                "lock mode 'none' is unsafe on purpose: concurrent requests on one account "
                "lose updates (a demonstration; use --lock account or db)"
            )
        if self.workers > 1 and mode in IN_PROCESS_LOCK_MODES:
            return (
                f"lock mode {mode!r} with {self.workers} workers is unsafe on purpose "
                f"({UNSAFE_FLAG}): each worker's lock orders only its own requests"
            )
        return None

    @staticmethod
    def token_from_env() -> str | None:
        """Return ``BANK_ADMIN_TOKEN`` if it is set and not empty."""
        return os.environ.get(ADMIN_TOKEN_ENV) or None


def read_token_file(path: str) -> str:
    """Return the secret in ``path``: its first line, without surrounding whitespace.

    Raises:
        ValueError: The file cannot be read or holds no token (the message says which).
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read the token file {path!r}: {exc}") from None
    token = text.strip().splitlines()[0].strip() if text.strip() else ""
    if not token:
        raise ValueError(f"the token file {path!r} is empty")
    return token
