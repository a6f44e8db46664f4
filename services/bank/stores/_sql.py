"""What the SQLite and PostgreSQL stores share: the race window, the shield, the retry loop, and
turning their rows into the store protocol's records.

Both database drivers (aiosqlite, asyncpg) are asyncio-only, so these helpers are too.
"""

from __future__ import annotations

import asyncio
import copy
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, ClassVar, Final, Generic, Protocol, Self, TypeVar, cast

import anyio

from ..domain import (
    Audit,
    BalanceTooLarge,
    IdempotencyKeyReused,
    IdempotencyQuotaExceeded,
    JournalEntry,
    OperationKind,
    RetryLater,
    positive_seconds,
)
from ..ports import Claim, Held, KeyPolicy, RaceWindow, Replay, StoredResponse, UnitOfWork

__all__ = [
    "DEFAULT_ATTEMPTS",
    "DatabaseClaim",
    "DatabaseStore",
    "MAX_BALANCE",
    "Window",
    "audit_from_rows",
    "check_attempts",
    "check_balance",
    "check_seconds",
    "journal_from_rows",
    "recorded_response",
    "money_delta_sql",
    "retrying",
    "scoped_key",
    "shielded",
]

T = TypeVar("T")
C = TypeVar("C")
S = TypeVar("S")

#: Largest balance both databases can hold: a signed 64-bit integer.
MAX_BALANCE: Final = 2**63 - 1
#: How many times an operation the database aborted (deadlock, serialization failure, lock
#: timeout, busy file) is tried before the client is told 503 ``retry_later``.
DEFAULT_ATTEMPTS: Final = 5

#: SQL expression of an operation's effect on the bank's total, from the journal's columns.
money_delta_sql: Final = (
    "CASE kind WHEN 'withdraw' THEN -amount WHEN 'transfer' THEN 0 ELSE amount END"
)


class Row(Protocol):
    """A result row of either driver (an ``asyncpg.Record`` or an ``sqlite3`` tuple)."""

    def __getitem__(self, index: int, /) -> Any: ...


def journal_from_rows(rows: Iterable[Row]) -> list[JournalEntry]:
    """Build journal entries from ``(seq, kind, account, amount, counterparty)`` rows."""
    return [
        JournalEntry(
            seq=row[0],
            kind=cast(OperationKind, row[1]),
            account=row[2],
            amount=row[3],
            counterparty=row[4],
        )
        for row in rows
    ]


def audit_from_rows(figures: Row, negative: Iterable[Row]) -> Audit:
    """Build the audit from an ``(accounts, total, expected)`` row and ``(id, balance)`` rows.

    ``int()`` because PostgreSQL's sums come back as text (a sum of ``bigint`` is ``numeric``,
    which may exceed 64 bits).
    """
    return Audit(
        accounts=int(figures[0]),
        total=int(figures[1]),
        expected=int(figures[2]),
        negative_accounts=tuple((row[0], row[1]) for row in negative),
    )


def recorded_response(row: Row | None, key: str, fingerprint: str) -> StoredResponse:
    """The response recorded under ``key``, from its ``(fingerprint, status, body)`` row.

    Raises:
        IdempotencyKeyReused: The key was recorded for another request, or (``row`` is None)
            taken by one whose transaction rolled its row back meanwhile.
    """
    if row is None or row[0] != fingerprint:
        raise IdempotencyKeyReused(key)
    return StoredResponse(row[1], bytes(row[2]))


def scoped_key(client: str, key: str) -> str:
    """The primary key of ``client``'s ``Idempotency-Key``: client ids never contain ``:``, so
    two clients' equal keys never meet."""
    return f"{client}:{key}"


def check_attempts(attempts: int) -> int:
    """Return ``attempts`` if it is a positive integer.

    Raises:
        ValueError: It is not.
    """
    if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
        raise ValueError(f"attempts must be a positive integer, got {attempts!r}")
    return attempts


def check_seconds(name: str, seconds: float | None) -> float | None:
    """Return ``seconds`` if it is ``None`` or a finite number of seconds > 0.

    Raises:
        ValueError: It is not (the message names the setting).
    """
    return None if seconds is None else positive_seconds(name, seconds)


def check_balance(account_id: str, balance: int) -> int:
    """Return ``balance`` if a 64-bit database column can hold it.

    Raises:
        BalanceTooLarge: It cannot (a 409; the operation is refused and changes nothing).
    """
    if balance > MAX_BALANCE:
        raise BalanceTooLarge(account_id, MAX_BALANCE)
    return balance


class Window:
    """The await between a non-atomic operation's read and its write.

    The read and the write are separate database round trips already, so another request can
    always slip in between; ``io_delay`` widens the gap (as slower I/O would) and ``race_window``
    lets a test hold an operation inside it.

    Raises:
        ValueError: ``io_delay`` is negative or not finite.
    """

    def __init__(self, io_delay: float, race_window: RaceWindow | None) -> None:
        if isinstance(io_delay, bool) or not isinstance(io_delay, int | float):
            raise TypeError(f"io_delay must be a number of seconds, got {io_delay!r}")
        if not math.isfinite(io_delay) or io_delay < 0:
            raise ValueError(f"io_delay must be a finite number of seconds >= 0, got {io_delay!r}")
        self.io_delay = float(io_delay)
        self._race_window = race_window

    async def __call__(self, kind: OperationKind) -> None:
        if self._race_window is not None:
            await self._race_window(kind)
        elif self.io_delay:
            await anyio.sleep(self.io_delay)


async def shielded(run: Callable[[], Awaitable[T]]) -> T:
    """Run ``run()`` to its end even if the caller is cancelled meanwhile, then re-raise.

    A database write (its statements and its COMMIT) must not be abandoned halfway: a cancelled
    request either applied its whole operation or nothing. ``anyio.CancelScope(shield=True)``
    alone does not stop a native ``Task.cancel()`` (which aiohttp uses when a client goes away),
    so the write runs in its own task and the caller waits for that task however often it is
    cancelled.

    Every database write of a request comes through here, so the common path (no
    cancellation) is kept cheap: it waits on a bare future instead of ``asyncio.wait`` and
    enters the anyio shield only once a cancellation has arrived (about 8 us less per write).
    """
    task = asyncio.ensure_future(run())
    try:
        await _finished(task)
    except asyncio.CancelledError as first:
        cancelled = first
        # The anyio shield stops anyio from re-delivering a cancelled scope's cancellation at
        # every await (a busy loop) while the write finishes.
        with anyio.CancelScope(shield=True):
            while not task.done():
                try:
                    await _finished(task)
                except asyncio.CancelledError as again:
                    cancelled = again
        if not task.cancelled():
            # Retrieved so asyncio does not report it as lost; the cancellation is what the
            # caller gets, and the write either committed whole or not at all.
            task.exception()
        raise cancelled from None
    return task.result()


def _finished(task: asyncio.Future[T]) -> asyncio.Future[None]:
    """A future that completes when ``task`` does; cancelling it leaves ``task`` running."""
    waiter: asyncio.Future[None] = task.get_loop().create_future()

    def wake(_: asyncio.Future[T]) -> None:
        if not waiter.done():  # a cancelled waiter is left alone
            waiter.set_result(None)

    task.add_done_callback(wake)
    return waiter


async def retrying(
    run: Callable[[], Awaitable[T]],
    *,
    attempts: int,
    transient: Callable[[BaseException], bool],
    on_retry: Callable[[BaseException], None] | None = None,
    budget: float | None = None,
) -> T:
    """Call ``run()`` until it does not raise an error ``transient`` accepts, at most
    ``attempts`` times, and no new attempt once ``budget`` seconds have passed.

    Raises:
        RetryLater: Every attempt was aborted by the database (a 503 for the client); nothing
            was applied, as an aborted transaction leaves no trace.
    """
    last: BaseException | None = None
    tries = 0
    give_up = None if budget is None else time.monotonic() + budget
    while tries < attempts:
        tries += 1
        try:
            return await run()
        except Exception as exc:
            if not transient(exc):
                raise
            last = exc
            if on_retry is not None:
                on_retry(exc)
            if give_up is not None and time.monotonic() >= give_up:
                break
    reason = type(last).__name__ if last is not None else "an aborted transaction"
    raise RetryLater(
        f"the database aborted the operation {tries} times ({reason}); nothing was applied, "
        "retry later"
    )


class DatabaseStore(Generic[C]):
    """What the SQLite and PostgreSQL stores share: the race window, the bounded retries of what
    the database aborted, and the views :meth:`within` hands out for units of work.

    A view is a shallow copy of the store (same connection or pool, same locks) whose operations
    join the transaction of one claim of type ``C``, the store's own claim class. The retries a
    view makes are counted on the store it was made from.

    Args:
        io_delay: Seconds awaited between the read and the write of a non-atomic operation.
        race_window: Awaited instead of the delay, with the operation's kind (tests).
        attempts: Tries of an operation the database aborts before answering 503.
        retry_budget: Seconds after which an aborted operation is not tried again; ``None``
            has no limit but ``attempts``.

    Raises:
        ValueError: A bad setting.
    """

    #: The store's claim class: the only units of work :meth:`within` accepts.
    claim_type: ClassVar[type[Any]]

    def __init__(
        self,
        io_delay: float,
        race_window: RaceWindow | None,
        attempts: int,
        *,
        retry_budget: float | None = None,
    ) -> None:
        self._window = Window(io_delay, race_window)
        self._attempts = check_attempts(attempts)
        self._retry_budget = check_seconds("retry_budget", retry_budget)
        # Set on the views within() returns: the unit of work whose transaction their writes
        # join. The store itself has none, so each of its operations commits on its own.
        self._work: C | None = None
        self._origin = self
        #: Operations the database aborted (busy file, deadlock, ...) and that were tried again.
        self.retries = 0

    @staticmethod
    def _transient(exc: BaseException) -> bool:
        """Whether the database rolled ``exc``'s statement back, so trying again is right."""
        raise NotImplementedError

    @property
    def supports_atomic(self) -> bool:
        return True

    @property
    def io_delay(self) -> float:
        """Seconds awaited in each non-atomic operation's race window."""
        return self._window.io_delay

    def within(self, work: UnitOfWork) -> Self:
        if not isinstance(work, self.claim_type) or work._store is not self:
            raise TypeError(f"the unit of work was not claimed from this {type(self).__name__}")
        view = copy.copy(self)
        view._work = cast(C, work)
        return view

    def _count_retry(self, exc: BaseException) -> None:
        self._origin.retries += 1

    async def _keys_of(self, client: str, scoped: str, cutoff: float) -> tuple[int, Row | None]:
        """Drop ``client``'s records saved before ``cutoff``; return how many it still holds
        and the ``(fingerprint, status, body)`` row recorded under ``scoped``, if any."""
        raise NotImplementedError

    @asynccontextmanager
    async def claim(
        self, key: str, fingerprint: str, *, client: str, policy: KeyPolicy
    ) -> AsyncIterator[Claim]:
        """Run one ``Idempotency-Key`` request so that its writes and its recorded response
        commit in one transaction (how, the store's claim class says).

        ``client``'s records older than the retention window are deleted first (only those:
        the delete is by client and age), then the key is looked up: a recorded response is
        replayed. Otherwise the claim is the request's unit of work, abandoned (rolled back)
        if it is left without ``save``. The quota is counted over committed records, so a
        client may pass it by as many keyed requests as it has in flight at once.

        Raises:
            IdempotencyKeyReused: The key was recorded for a different request.
            IdempotencyQuotaExceeded: The client holds its quota of records.
        """
        scoped = scoped_key(client, key)
        held, row = await self._keys_of(client, scoped, policy.clock() - policy.retention)
        if row is not None:
            yield Replay(recorded_response(row, key, fingerprint))
            return
        if held >= policy.quota:
            raise IdempotencyQuotaExceeded(policy.quota, policy.retention)
        claim = self.claim_type(self, scoped, fingerprint)
        claim.client = client
        claim.clock = policy.clock
        try:
            yield claim
        finally:
            try:
                await claim.abandon()
            finally:
                # The request's locks, kept until its transaction ended (committed or not).
                await claim.held.release()

    async def _retried(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """Run ``attempt()`` until the database stops aborting it, to its end (shielded)."""

        async def run() -> T:
            return await retrying(
                attempt,
                attempts=self._attempts,
                transient=self._transient,
                on_retry=self._count_retry,
                budget=self._retry_budget,
            )

        return await shielded(run)


class DatabaseClaim(Generic[S]):
    """The claim of one key on a database store ``S``: the request's unit of work.

    Args:
        store: The store that issued it.
        key: The ``Idempotency-Key``.
        fingerprint: What the request was (see ``services.bank.http.idempotency``).
    """

    def __init__(self, store: S, key: str, fingerprint: str) -> None:
        self._store = store
        #: The scoped key (see :func:`scoped_key`).
        self._key = key
        self._fingerprint = fingerprint
        self.committed = False
        #: The client the key belongs to, and the clock that dates its record.
        self.client = ""
        self.clock: Callable[[], float] = time.time
        #: What the request keeps until the claim ends (its lock mode's locks).
        self.held = Held()

    def _shown(self) -> str:
        """The key as the client sent it, for refusals."""
        return self._key.partition(":")[2]

    @property
    def replay(self) -> StoredResponse | None:
        return None

    async def keep(self, held: AbstractAsyncContextManager[T]) -> T:
        return await self.held.keep(held)
