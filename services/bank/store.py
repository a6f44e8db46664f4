"""Where the money lives: the ``Store`` protocol and the in-memory store.

Every store keeps the race window of a real database: an operation reads the balances it needs,
awaits (the I/O of a database round trip; for :class:`MemoryStore` a configurable delay, 0 meaning a
bare checkpoint), then writes the new balances it computed from what it read. Two operations on one
account that overlap in that window lose an update unless the caller's lock mode keeps them apart
(see ``services.bank.locking``), or unless the caller asks the store to be ``atomic`` on its own
(the ``db`` lock mode of the durable stores).

Contract for every implementation (the SQLite and PostgreSQL stores follow it too):

- An operation is all or nothing, even when the calling task is cancelled at any of its awaits: the
  balance writes and the journal entry of one operation are applied together (memory: in one step
  with no await between them; databases: in one transaction, committed under a shield).
- A refused operation (unknown account, insufficient funds, duplicate id) changes nothing.
- The journal is append-only and records exactly the acknowledged operations; ``audit().expected``
  is derived from it, never from the balances.
"""

from __future__ import annotations

from array import array
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final, Literal, Protocol

import anyio

from .errors import AccountExists, AccountNotFound, InsufficientFunds, SameAccount

__all__ = [
    "MAX_AMOUNT",
    "Audit",
    "JournalEntry",
    "MemoryStore",
    "OperationKind",
    "RaceWindow",
    "STORE_URL_FORMS",
    "Store",
    "check_store_url",
    "open_store",
]

#: Largest amount or opening balance, in cents.
MAX_AMOUNT: Final = 10**12

OperationKind = Literal["open", "deposit", "withdraw", "transfer"]

#: Awaited by :class:`MemoryStore` between the read and the write of an operation, with the
#: operation's kind. Tests use it to hold an operation inside its race window.
RaceWindow = Callable[[OperationKind], Awaitable[None]]

_KINDS: Final[tuple[OperationKind, ...]] = ("open", "deposit", "withdraw", "transfer")
_KIND_CODE: Final[dict[OperationKind, int]] = {kind: code for code, kind in enumerate(_KINDS)}


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

    async def open(self) -> None:
        """Acquire resources (connections, schema). Called once before serving."""
        ...

    async def close(self) -> None:
        """Release resources. Called once after serving."""
        ...

    async def create_account(self, account_id: str, balance: int) -> int:
        """Open an account with an opening balance and journal it; atomic on every store.

        Raises:
            AccountExists: The id is taken.
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

    async def audit(self) -> Audit:
        """Return the books: balances against the journal."""
        ...

    async def journal(self, *, since: int = 0, limit: int | None = None) -> list[JournalEntry]:
        """Return acknowledged operations with ``seq > since``, oldest first, at most ``limit``."""
        ...


class MemoryStore:
    """Balances in a dict, with an await between each operation's read and write.

    The journal is kept in compact arrays (about 17 bytes an operation) so that a soak of a million
    requests does not grow the server by hundreds of megabytes, and ``expected`` is kept as running
    sums updated in the same step as each journal append, so ``audit()`` costs O(accounts).

    Args:
        io_delay: Seconds awaited in each operation's race window; 0 is a bare checkpoint, which
            still lets every other ready task run between the read and the write.
        race_window: Awaited instead of the delay, with the operation's kind; for tests that hold
            an operation inside its window.

    Raises:
        ValueError: ``io_delay`` is negative or not finite.
    """

    def __init__(self, *, io_delay: float = 0.0, race_window: RaceWindow | None = None) -> None:
        if not isinstance(io_delay, int | float) or isinstance(io_delay, bool):
            raise TypeError(f"io_delay must be a number of seconds, got {io_delay!r}")
        if not 0 <= io_delay < float("inf"):
            raise ValueError(f"io_delay must be a finite number of seconds >= 0, got {io_delay!r}")
        self._io_delay = float(io_delay)
        self._race_window = race_window
        self._balances: dict[str, int] = {}
        self._index: dict[str, int] = {}
        self._ids: list[str] = []
        self._j_kind = array("B")
        self._j_account = array("i")
        self._j_counterparty = array("i")
        self._j_amount = array("q")
        self._opened = 0
        self._deposited = 0
        self._withdrawn = 0

    @property
    def name(self) -> str:
        return "memory"

    @property
    def supports_atomic(self) -> bool:
        # Skipping the window is enough: with no await between read and write, no other task of
        # this event loop can run in between.
        return True

    @property
    def io_delay(self) -> float:
        """Seconds awaited in each operation's race window."""
        return self._io_delay

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def _window(self, kind: OperationKind, atomic: bool) -> None:
        if atomic:
            return
        if self._race_window is not None:
            await self._race_window(kind)
        else:
            await anyio.sleep(self._io_delay)

    def _read(self, account_id: str) -> int:
        try:
            return self._balances[account_id]
        except KeyError:
            raise AccountNotFound(account_id) from None

    def _append(self, kind: OperationKind, account: str, amount: int, counterparty: str) -> None:
        # Called in the same synchronous step as the balance writes it records.
        self._j_kind.append(_KIND_CODE[kind])
        self._j_account.append(self._index[account])
        self._j_counterparty.append(self._index[counterparty] if counterparty else -1)
        self._j_amount.append(amount)

    async def create_account(self, account_id: str, balance: int) -> int:
        # No window: creating is an insert that either happens or finds the id taken, like an
        # INSERT against a primary key.
        if account_id in self._balances:
            raise AccountExists(account_id)
        self._index[account_id] = len(self._ids)
        self._ids.append(account_id)
        self._balances[account_id] = balance
        self._opened += balance
        self._append("open", account_id, balance, "")
        return balance

    async def balance(self, account_id: str) -> int:
        return self._read(account_id)

    async def deposit(self, account_id: str, amount: int, *, atomic: bool = False) -> int:
        balance = self._read(account_id)
        await self._window("deposit", atomic)
        new = balance + amount
        self._balances[account_id] = new
        self._deposited += amount
        self._append("deposit", account_id, amount, "")
        return new

    async def withdraw(self, account_id: str, amount: int, *, atomic: bool = False) -> int:
        balance = self._read(account_id)
        await self._window("withdraw", atomic)
        # Checked against the value read before the window, as code that fetched a row, did its
        # I/O, then decided would: under lock mode `none` that read may be stale.
        if balance < amount:
            raise InsufficientFunds(account_id, balance, amount)
        new = balance - amount
        self._balances[account_id] = new
        self._withdrawn += amount
        self._append("withdraw", account_id, amount, "")
        return new

    async def transfer(
        self, source: str, target: str, amount: int, *, atomic: bool = False
    ) -> tuple[int, int]:
        if source == target:
            raise SameAccount(source)
        source_balance = self._read(source)
        target_balance = self._read(target)
        await self._window("transfer", atomic)
        if source_balance < amount:
            raise InsufficientFunds(source, source_balance, amount)
        new_source = source_balance - amount
        new_target = target_balance + amount
        # Both writes and the journal entry in one step: a cancellation can land before the
        # window's await returns or after this method, never between the two writes.
        self._balances[source] = new_source
        self._balances[target] = new_target
        self._append("transfer", source, amount, target)
        return new_source, new_target

    async def audit(self) -> Audit:
        balances = self._balances
        negative = tuple(sorted((key, value) for key, value in balances.items() if value < 0))
        return Audit(
            accounts=len(balances),
            total=sum(balances.values()),
            expected=self._opened + self._deposited - self._withdrawn,
            negative_accounts=negative,
        )

    async def journal(self, *, since: int = 0, limit: int | None = None) -> list[JournalEntry]:
        end = len(self._j_kind) if limit is None else min(len(self._j_kind), since + limit)
        entries = []
        for position in range(max(since, 0), end):
            counterparty = self._j_counterparty[position]
            entries.append(
                JournalEntry(
                    seq=position + 1,
                    kind=_KINDS[self._j_kind[position]],
                    account=self._ids[self._j_account[position]],
                    amount=self._j_amount[position],
                    counterparty=None if counterparty < 0 else self._ids[counterparty],
                )
            )
        return entries


#: What ``--store`` accepts, for error messages and help texts.
STORE_URL_FORMS: Final = "'memory', 'sqlite:///PATH' or 'postgresql://USER@HOST:PORT/DATABASE'"


def check_store_url(url: str) -> str:
    """Return the kind of store ``url`` names: ``memory``, ``sqlite`` or ``postgresql``.

    Raises:
        ValueError: An unknown or malformed store URL (the message says which part is wrong).
    """
    if url == "memory":
        return "memory"
    if url.startswith("sqlite:"):
        from .store_sqlite import sqlite_path

        sqlite_path(url)
        return "sqlite"
    if url.startswith(("postgresql:", "postgres:")):
        from .store_postgres import check_postgres_url

        check_postgres_url(url)
        return "postgresql"
    raise ValueError(f"unknown store {url!r}; expected {STORE_URL_FORMS}")


def open_store(url: str, *, io_delay: float = 0.0) -> Store:
    """Build the store named by ``--store``.

    Args:
        url: ``memory``, ``sqlite:///PATH`` (see ``services.bank.store_sqlite``) or
            ``postgresql://...`` (see ``services.bank.store_postgres``).
        io_delay: Seconds every store awaits between the read and the write of an operation
            that is not atomic (on the durable stores, on top of the real round trips).

    Raises:
        ValueError: An unknown or malformed store URL.
    """
    kind = check_store_url(url)
    if kind == "sqlite":
        from .store_sqlite import SqliteStore

        return SqliteStore(url, io_delay=io_delay)
    if kind == "postgresql":
        from .store_postgres import PostgresStore

        return PostgresStore(url, io_delay=io_delay)
    return MemoryStore(io_delay=io_delay)
