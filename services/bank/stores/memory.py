"""The in-memory store and its idempotency keys: the bank inside one process.

The store keeps the race window of a real database: an operation reads the balances it needs,
awaits (a configurable delay standing for a database round trip, 0 meaning a bare checkpoint),
then writes the new balances it computed from what it read. Two operations on one account that
overlap in that window lose an update unless the caller's lock mode keeps them apart (see
``services.bank.locking``), or unless the caller asks for ``atomic`` (which skips the window).
"""

from __future__ import annotations

import asyncio
from array import array
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Final, TypeVar

import anyio

from ..domain import (
    OPERATION_KINDS,
    AccountExists,
    AccountNotFound,
    Audit,
    ClientExists,
    IdempotencyKeyReused,
    IdempotencyQuotaExceeded,
    InsufficientFunds,
    JournalEntry,
    OperationKind,
    SameAccount,
    TooManyAccounts,
)
from ..ports import Claim, Held, KeyPolicy, RaceWindow, Replay, StoredResponse, UnitOfWork

__all__ = ["MemoryIdempotency", "MemoryStore"]

_KIND_CODE: Final[dict[OperationKind, int]] = {
    kind: code for code, kind in enumerate(OPERATION_KINDS)
}


_library_var: ContextVar[str | None] | None
try:
    from sniffio import current_async_library_cvar
    from sniffio import thread_local as _library_thread
except ImportError:  # pragma: no cover - anyio runs without sniffio, and then on asyncio alone
    _library_var = None
else:
    _library_var = current_async_library_cvar


def _off_asyncio() -> bool:
    """Whether the running async library is one other than asyncio (trio), by sniffio's own
    first two lookups; asyncio sets neither, trio sets the thread's name in every task step."""
    if _library_var is None:  # pragma: no cover - no sniffio: no trio either (trio needs it)
        return False
    name = _library_thread.name or _library_var.get()
    return name is not None and name != "asyncio"


class MemoryStore:
    """Balances in a dict, with an await between each operation's read and write.

    The journal is kept in compact arrays (about 17 bytes an operation) so that a soak of a million
    requests does not grow the server by hundreds of megabytes. The audit's figures (``expected``,
    the balances' total, the accounts below zero) are kept up to date in the same step as each
    write, so ``audit()`` costs O(negative accounts), not O(accounts) or O(journal).

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
        # The sum of the balances as written (lost updates included) and who is below zero.
        self._total = 0
        self._negative: set[str] = set()
        self._clients: dict[str, str] = {}
        self._client_ids: set[str] = set()
        self._owners: dict[str, str | None] = {}
        self._owned: dict[str, int] = {}

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

    def within(self, work: UnitOfWork) -> MemoryStore:
        # Every operation writes and journals in one step, and the memory claim records its
        # response with no await: nothing to bind, the store is its own unit of work.
        return self

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def _window(self, kind: OperationKind, atomic: bool) -> None:
        if atomic:
            return
        if self._race_window is not None:
            await self._race_window(kind)
        elif self._io_delay or _off_asyncio():
            await anyio.sleep(self._io_delay)
        else:
            # What anyio.sleep(0) runs on asyncio, without first finding the running library
            # (sniffio, asyncio.current_task and, on Python 3.11, a getpid() system call).
            await asyncio.sleep(0)

    def _read(self, account_id: str) -> int:
        try:
            return self._balances[account_id]
        except KeyError:
            raise AccountNotFound(account_id) from None

    def _write(self, account_id: str, new: int) -> None:
        # The running total follows what is overwritten, not what was read: a lost update
        # shows as drift in the incremental audit exactly as in a full scan.
        self._total += new - self._balances[account_id]
        self._balances[account_id] = new
        if new < 0:
            self._negative.add(account_id)
        elif self._negative:  # almost always empty: no call then
            self._negative.discard(account_id)

    def _append(self, kind: OperationKind, account: str, amount: int, counterparty: str) -> None:
        # Called in the same synchronous step as the balance writes it records.
        self._j_kind.append(_KIND_CODE[kind])
        self._j_account.append(self._index[account])
        self._j_counterparty.append(self._index[counterparty] if counterparty else -1)
        self._j_amount.append(amount)

    async def create_client(self, client_id: str, key_hash: str) -> None:
        if client_id in self._client_ids:
            raise ClientExists(client_id)
        self._client_ids.add(client_id)
        self._clients[key_hash] = client_id

    async def client_for(self, key_hash: str) -> str | None:
        return self._clients.get(key_hash)

    async def create_account(
        self,
        account_id: str,
        balance: int,
        *,
        owner: str | None = None,
        max_accounts: int | None = None,
    ) -> int:
        # No window: creating is an insert that either happens or finds the id taken, like an
        # INSERT against a primary key.
        if account_id in self._balances:
            raise AccountExists(account_id)
        owned = self._owned.get(owner, 0) if owner is not None else 0
        if owner is not None and max_accounts is not None and owned >= max_accounts:
            raise TooManyAccounts(owner, max_accounts)
        if owner is not None:
            self._owned[owner] = owned + 1
        self._owners[account_id] = owner
        self._index[account_id] = len(self._ids)
        self._ids.append(account_id)
        self._balances[account_id] = 0
        self._write(account_id, balance)
        self._opened += balance
        self._append("open", account_id, balance, "")
        return balance

    async def balance(self, account_id: str) -> int:
        return self._read(account_id)

    async def owner(self, account_id: str) -> str | None:
        try:
            return self._owners[account_id]
        except KeyError:
            raise AccountNotFound(account_id) from None

    async def deposit(self, account_id: str, amount: int, *, atomic: bool = False) -> int:
        balance = self._read(account_id)
        await self._window("deposit", atomic)
        new = balance + amount
        self._write(account_id, new)
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
        self._write(account_id, new)
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
        self._write(source, new_source)
        self._write(target, new_target)
        self._append("transfer", source, amount, target)
        return new_source, new_target

    async def audit(self, *, full_scan: bool = False) -> Audit:
        balances = self._balances
        if full_scan:
            expected = sum(entry.money_delta for entry in await self.journal())
            return Audit(
                accounts=len(balances),
                total=sum(balances.values()),
                expected=expected,
                negative_accounts=tuple(
                    sorted((key, value) for key, value in balances.items() if value < 0)
                ),
            )
        return Audit(
            accounts=len(balances),
            total=self._total,
            expected=self._opened + self._deposited - self._withdrawn,
            negative_accounts=tuple(sorted((key, balances[key]) for key in self._negative)),
        )

    async def journal(self, *, since: int = 0, limit: int | None = None) -> list[JournalEntry]:
        end = len(self._j_kind) if limit is None else min(len(self._j_kind), since + limit)
        entries = []
        for position in range(max(since, 0), end):
            counterparty = self._j_counterparty[position]
            entries.append(
                JournalEntry(
                    seq=position + 1,
                    kind=OPERATION_KINDS[self._j_kind[position]],
                    account=self._ids[self._j_account[position]],
                    amount=self._j_amount[position],
                    counterparty=None if counterparty < 0 else self._ids[counterparty],
                )
            )
        return entries

    async def ping(self) -> None:
        return None


T = TypeVar("T")


@dataclass
class _Entry:
    fingerprint: str
    response: StoredResponse | None = None
    done: anyio.Event | None = None
    #: When the response was recorded (``KeyPolicy.clock``); None while in flight.
    saved_at: float | None = None


class _MemoryClaim:
    def __init__(self, entry: _Entry, clock: Callable[[], float]) -> None:
        self._entry = entry
        self._clock = clock
        self.saved = False
        self.held = Held()

    @property
    def replay(self) -> StoredResponse | None:
        return None

    async def keep(self, held: AbstractAsyncContextManager[T]) -> T:
        return await self.held.keep(held)

    async def save(self, response: StoredResponse) -> None:
        # No await before the record: nothing can run between the operation's last step and it.
        self._entry.response = response
        self._entry.saved_at = self._clock()
        self.saved = True


class MemoryIdempotency:
    """Keys kept in process, for the memory store (whose balances do not outlive it either).

    Each client has its own table, ordered by when each response was recorded. A claim first
    forgets that client's records older than the policy's retention (never a younger one, and
    never another client's), then refuses a new key if the client still holds its quota of
    records: one client's flood of keys cannot push out anyone's exactly-once.
    """

    def __init__(self) -> None:
        self._tables: dict[str, OrderedDict[str, _Entry]] = {}

    def __len__(self) -> int:
        return sum(len(table) for table in self._tables.values())

    def held_by(self, client: str) -> int:
        """How many records (live or in flight) ``client`` holds."""
        table = self._tables.get(client)
        return 0 if table is None else len(table)

    @staticmethod
    def _expire(table: OrderedDict[str, _Entry], policy: KeyPolicy) -> None:
        cutoff = policy.clock() - policy.retention
        while table:
            oldest = next(iter(table.values()))
            # Ordered by saved_at, in-flight entries aside: stop at the first young or
            # in-flight one, so nothing younger than the window can go.
            if oldest.saved_at is None or oldest.saved_at >= cutoff:
                break
            table.popitem(last=False)

    @asynccontextmanager
    async def claim(
        self, key: str, fingerprint: str, *, client: str, policy: KeyPolicy
    ) -> AsyncIterator[Claim]:
        table = self._tables.setdefault(client, OrderedDict())
        self._expire(table, policy)
        while True:
            entry = table.get(key)
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
        if len(table) >= policy.quota:
            raise IdempotencyQuotaExceeded(policy.quota, policy.retention)
        entry = _Entry(fingerprint, done=anyio.Event())
        table[key] = entry
        claim = _MemoryClaim(entry, policy.clock)
        try:
            yield claim
        finally:
            # The request's locks: its operation and its recorded response are one step here,
            # so holding them to the end costs nothing and keeps every store alike.
            await claim.held.release()
            done, entry.done = entry.done, None
            if not claim.saved:
                del table[key]
                if not table and self._tables.get(client) is table:
                    del self._tables[client]
            else:
                # Kept in the order responses were recorded, which expiry relies on.
                table.move_to_end(key)
            assert done is not None
            done.set()
