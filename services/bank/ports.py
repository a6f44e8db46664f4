"""The ports of the bank: what the ledger needs from storage, and what the idempotency layer needs
from wherever keys are kept.

- :class:`Store`: balances and the journal. Implemented in ``services.bank.stores`` (memory,
  SQLite, PostgreSQL); checked by the store-contract suite.
- :class:`UnitOfWork`: the writes of one request together with the response recorded under its
  ``Idempotency-Key``, committed as one transaction. A request gets one from
  :meth:`IdempotencyBackend.claim` and hands it to the ledger explicitly, which runs the
  operation on ``store.within(work)``: nothing is bound behind the caller's back.
- :class:`IdempotencyBackend`: where keys live. The durable stores are backends themselves (the
  key is written in the operation's own transaction); the memory store pairs with
  ``services.bank.stores.memory.MemoryIdempotency``.

Contract for every store:

- An operation is all or nothing, even when the calling task is cancelled at any of its awaits: the
  balance writes and the journal entry of one operation are applied together (memory: in one step
  with no await between them; databases: in one transaction, committed under a shield).
- A refused operation (unknown account, insufficient funds, duplicate id) changes nothing.
- The journal is append-only and records exactly the acknowledged operations; ``audit().expected``
  is derived from it, never from the balances.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass, field
from typing import Protocol, TypeVar, runtime_checkable

from .domain import Audit, JournalEntry, OperationKind

__all__ = [
    "Claim",
    "Held",
    "IdempotencyBackend",
    "KeyPolicy",
    "KeyTakenMeanwhile",
    "RaceWindow",
    "Replay",
    "Store",
    "StoredResponse",
    "UnitOfWork",
]

T = TypeVar("T")

#: Awaited by a store between the read and the write of an operation, with the operation's kind.
#: Tests use it to hold an operation inside its race window.
RaceWindow = Callable[[OperationKind], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """The response recorded under a key.

    Attributes:
        status: HTTP status.
        body: The JSON body, as sent.
    """

    status: int
    body: bytes


@dataclass(frozen=True, slots=True)
class KeyPolicy:
    """How long ``Idempotency-Key`` records are kept, and how many one client may hold.

    A record younger than ``retention`` is never dropped: a retry inside the window always
    replays. A client that holds ``quota`` such records has its next new key refused
    (``IdempotencyQuotaExceeded``) instead of anyone's older key being forgotten.

    Attributes:
        retention: Seconds a record is kept after it was written.
        quota: Live records one client may hold.
        clock: Seconds since the epoch; tests pass a fake one.

    Raises:
        ValueError: A retention that is not a positive finite number, or a quota below 1.
    """

    retention: float = 24 * 3600.0
    quota: int = 10_000
    clock: Callable[[], float] = field(default=time.time, compare=False)

    def __post_init__(self) -> None:
        if not (isinstance(self.retention, int | float) and math.isfinite(self.retention)):
            raise ValueError(
                f"retention must be a finite number of seconds, got {self.retention!r}"
            )
        if self.retention <= 0:
            raise ValueError(f"retention must be positive, got {self.retention!r}")
        if isinstance(self.quota, bool) or not isinstance(self.quota, int) or self.quota < 1:
            raise ValueError(f"quota must be a positive integer, got {self.quota!r}")


class KeyTakenMeanwhile(Exception):  # noqa: N818 - a signal to replay, not an error
    """Raised by a backend when a duplicate with the same key committed before this request
    could: the request's own work is rolled back and ``response`` is replayed instead.

    Attributes:
        response: The duplicate's recorded response.
    """

    def __init__(self, response: StoredResponse) -> None:
        super().__init__(f"replay {response.status}")
        self.response = response


class UnitOfWork(Protocol):
    """One request's writes and the response recorded for it: committed together or not at all.

    Leaving the claim that produced it without :meth:`save` rolls the writes back.
    """

    async def keep(self, held: AbstractAsyncContextManager[T]) -> T:
        """Enter ``held`` (the request's lock-mode guard) and exit it only when this unit of
        work ends, after its commit or its rollback.

        Why: a lock released when the operation returns, before the transaction commits, lets
        the next request read the balance the commit is about to replace (a lost update).
        """
        ...

    async def save(self, response: StoredResponse) -> None:
        """Record ``response`` under the key, together with the operation (durable stores:
        in the same transaction, then commit).

        Raises:
            KeyTakenMeanwhile: A duplicate committed first.
        """
        ...


class Claim(UnitOfWork, Protocol):
    """The right to run one request under a key, or the response to replay instead."""

    @property
    def replay(self) -> StoredResponse | None:
        """The response recorded by an earlier request with this key, if there was one."""
        ...


@runtime_checkable
class IdempotencyBackend(Protocol):
    """Where keys live. The durable stores are backends themselves."""

    def claim(
        self, key: str, fingerprint: str, *, client: str, policy: KeyPolicy
    ) -> AbstractAsyncContextManager[Claim]:
        """Claim ``client``'s ``key`` for a request of ``fingerprint``; leaving without
        ``save`` abandons it.

        Keys are scoped per client: two clients' equal keys are two records. Records of
        ``client`` older than ``policy.retention`` may be dropped here, younger ones never.

        Raises:
            IdempotencyKeyReused: The key was used for a different request.
            IdempotencyQuotaExceeded: ``client`` holds ``policy.quota`` live records already.
        """
        ...


class Held:
    """What a unit of work keeps until it ends (:meth:`UnitOfWork.keep`); stores' claims use it.

    :meth:`release` exits everything kept, last in first out.
    """

    __slots__ = ("_stack",)

    def __init__(self) -> None:
        self._stack: AsyncExitStack | None = None

    async def keep(self, held: AbstractAsyncContextManager[T]) -> T:
        if self._stack is None:
            self._stack = AsyncExitStack()
        return await self._stack.enter_async_context(held)

    async def release(self) -> None:
        """Exit everything kept (a no-op when nothing is)."""
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()


class Replay:
    """A claim that found a recorded response: the request is answered with it."""

    def __init__(self, response: StoredResponse) -> None:
        self._response = response

    @property
    def replay(self) -> StoredResponse | None:
        return self._response

    async def save(self, response: StoredResponse) -> None:
        raise RuntimeError("a replayed claim has nothing to save")

    async def keep(self, held: AbstractAsyncContextManager[T]) -> T:
        raise RuntimeError("a replayed claim runs no operation")


class Store(Protocol):
    """The bank's storage. Every method is a coroutine run on the service's event loop.

    ``atomic=False`` (lock modes ``none``, ``global``, ``account``) keeps the read-await-write
    window, so correctness is the caller's lock's job. ``atomic=True`` (lock mode ``db``) asks the
    store to make the operation atomic against concurrent ones by itself (row locks or a
    conditional update); a store that cannot do that reports it through ``supports_atomic``.
    """

    @property
    def name(self) -> str:
        """Short name shown by ``GET /health``: ``memory``, ``sqlite``, ``postgresql``."""
        ...

    @property
    def supports_atomic(self) -> bool:
        """Whether ``atomic=True`` is honoured, which the ``db`` lock mode requires."""
        ...

    def within(self, work: UnitOfWork) -> Store:
        """This store, with every operation run inside ``work``'s transaction.

        The transaction begins at the first write made through the returned store (after the
        caller's lock mode is held) and commits when ``work`` is saved, with the response
        recorded for its ``Idempotency-Key``. A store whose every operation is one step (the
        memory store) returns itself.

        Raises:
            TypeError: ``work`` was not claimed from this store.
        """
        ...

    async def open(self) -> None:
        """Acquire resources (connections, schema). Called once before serving."""
        ...

    async def close(self) -> None:
        """Release resources. Called once after serving."""
        ...

    async def ping(self) -> None:
        """Return once the store answers a trivial query (``GET /health``).

        Raises:
            RetryLater: The database cannot be reached right now.
        """
        ...

    async def create_client(self, client_id: str, key_hash: str) -> None:
        """Register a client under the digest of its API key (never the key itself).

        Raises:
            ClientExists: The id is taken.
        """
        ...

    async def client_for(self, key_hash: str) -> str | None:
        """Return the client whose API key has the digest ``key_hash``, or ``None``."""
        ...

    async def create_account(
        self,
        account_id: str,
        balance: int,
        *,
        owner: str | None = None,
        max_accounts: int | None = None,
    ) -> int:
        """Open an account owned by ``owner`` with an opening balance and journal it; atomic
        on every store.

        Raises:
            AccountExists: The id is taken.
            TooManyAccounts: ``owner`` already owns ``max_accounts`` accounts.
        """
        ...

    async def owner(self, account_id: str) -> str | None:
        """Return the client that opened ``account_id`` (``None``: opened without one).

        Raises:
            AccountNotFound: No such account.
        """
        ...

    async def balance(self, account_id: str) -> int:
        """Return the balance of an account.

        Raises:
            AccountNotFound: No such account.
        """
        ...

    async def deposit(self, account_id: str, amount: int, *, atomic: bool = False) -> int:
        """Credit ``amount`` and return the new balance.

        Raises:
            AccountNotFound: No such account.
        """
        ...

    async def withdraw(self, account_id: str, amount: int, *, atomic: bool = False) -> int:
        """Debit ``amount`` and return the new balance.

        Raises:
            AccountNotFound: No such account.
            InsufficientFunds: The balance read is smaller than ``amount``.
        """
        ...

    async def transfer(
        self, source: str, target: str, amount: int, *, atomic: bool = False
    ) -> tuple[int, int]:
        """Move ``amount`` from ``source`` to ``target``; return both new balances.

        Raises:
            SameAccount: ``source == target``.
            AccountNotFound: Either account is missing (the source is checked first).
            InsufficientFunds: The source's balance read is smaller than ``amount``.
        """
        ...

    async def audit(self, *, full_scan: bool = False) -> Audit:
        """Return the books: balances against the journal.

        By default from totals the store maintains with every change (its cost does not grow
        with the journal); ``full_scan=True`` recomputes them from every balance and journal
        entry, which tests compare against.
        """
        ...

    async def journal(self, *, since: int = 0, limit: int | None = None) -> list[JournalEntry]:
        """Return acknowledged operations with ``seq > since``, oldest first, at most ``limit``."""
        ...
