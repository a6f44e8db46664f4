"""Where a deposit, a withdrawal or a transfer happens: lock mode -> unit of work -> store.

Every money-moving operation of the service runs through :class:`Ledger`, in three steps that
read top to bottom in each method:

1. the lock mode (``services.bank.locking``): nothing, the global lock, or the accounts' locks
   in sorted order; the mode is held from here to the end of the operation, and for a request
   with a unit of work until that commits or rolls back (:meth:`UnitOfWork.keep`);
2. the unit of work: for a request sent with an ``Idempotency-Key`` the operation runs on
   ``store.within(work)``, whose first write begins the transaction that the web layer commits
   together with the recorded response; without one, each write commits on its own;
3. the store (``services.bank.ports.Store``): read, await (the race window), write and journal,
   all or nothing; ``atomic=True`` when the lock mode leaves the isolation to the database.

Nothing here knows about HTTP: the refusals are the domain's (``services.bank.domain``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from .domain import Audit, ModeSwitchPerWorker, SameAccount, UnsupportedLockMode
from .locking import Locking
from .ports import Store, UnitOfWork

T = TypeVar("T")

__all__ = ["Ledger"]


class Ledger:
    """The bank's operations over one store, under the current lock mode.

    Args:
        store: Where the money lives.
        locking: The lock modes and the current one.
        workers: Processes serving the same store (``serve --workers N``); each has its own
            ledger, so a lock-mode switch here could reach only one of them.

    Raises:
        ValueError: The current lock mode needs a store that isolates operations by itself
            (``db``) and ``store`` does not.
    """

    def __init__(self, store: Store, locking: Locking, *, workers: int = 1) -> None:
        if locking.strategy(locking.mode).atomic_store and not store.supports_atomic:
            raise ValueError(f"lock mode {locking.mode!r} is not supported by this store")
        self.store = store
        self.locking = locking
        self._workers = workers

    def _store_for(self, work: UnitOfWork | None) -> Store:
        return self.store if work is None else self.store.within(work)

    async def _locked(
        self,
        keys: tuple[str, ...],
        work: UnitOfWork,
        operation: Callable[[Store, bool], Awaitable[T]],
    ) -> T:
        """Run ``operation(store, atomic)`` inside the lock mode for ``keys``, on the store of
        ``work``; each operation without a unit of work does the same inline, in a plain
        ``async with`` (fewer frames on the path every request without a key takes).

        The mode is held until ``work`` commits or rolls back: past the operation's return on
        purpose, as released before the commit, the lock would let the next request read the
        balance this commit is about to replace.
        """
        mode = await work.keep(self.locking.guard(*keys))
        return await operation(self.store.within(work), mode.atomic_store)

    async def open_account(
        self,
        account_id: str,
        balance: int,
        *,
        owner: str | None = None,
        max_accounts: int | None = None,
        work: UnitOfWork | None = None,
    ) -> int:
        """Open ``account_id`` for ``owner`` with ``balance`` cents; an insert, so no lock mode
        is needed.

        Raises:
            AccountExists: The id is taken.
            TooManyAccounts: ``owner`` already owns ``max_accounts`` accounts.
        """
        return await self._store_for(work).create_account(
            account_id, balance, owner=owner, max_accounts=max_accounts
        )

    async def balance(self, account_id: str) -> int:
        """Return the balance of ``account_id``.

        Raises:
            AccountNotFound: No such account.
        """
        return await self.store.balance(account_id)

    async def deposit(self, account_id: str, amount: int, *, work: UnitOfWork | None = None) -> int:
        """Credit ``amount`` cents and return the new balance.

        Raises:
            AccountNotFound: No such account.
            BalanceTooLarge: The balance would exceed what the database column holds.
        """
        if work is None:
            # The request without a unit of work, inline: `_locked` and its lambda are two
            # frames more on every request.
            async with self.locking.guard(account_id) as mode:
                return await self.store.deposit(account_id, amount, atomic=mode.atomic_store)
        return await self._locked(
            (account_id,),
            work,
            lambda store, atomic: store.deposit(account_id, amount, atomic=atomic),
        )

    async def withdraw(
        self, account_id: str, amount: int, *, work: UnitOfWork | None = None
    ) -> int:
        """Debit ``amount`` cents and return the new balance.

        Raises:
            AccountNotFound: No such account.
            InsufficientFunds: The balance does not cover ``amount``.
        """
        if work is None:  # inline, as in deposit()
            async with self.locking.guard(account_id) as mode:
                return await self.store.withdraw(account_id, amount, atomic=mode.atomic_store)
        return await self._locked(
            (account_id,),
            work,
            lambda store, atomic: store.withdraw(account_id, amount, atomic=atomic),
        )

    async def transfer(
        self, source: str, target: str, amount: int, *, work: UnitOfWork | None = None
    ) -> tuple[int, int]:
        """Move ``amount`` cents from ``source`` to ``target``; return both new balances.

        Raises:
            SameAccount: ``source == target`` (refused before any lock is taken).
            AccountNotFound: Either account is missing (the source is checked first).
            InsufficientFunds: The source's balance does not cover ``amount``.
        """
        if source == target:
            raise SameAccount(source)
        if work is None:  # inline, as in deposit()
            async with self.locking.guard(source, target) as mode:
                return await self.store.transfer(source, target, amount, atomic=mode.atomic_store)
        return await self._locked(
            (source, target),
            work,
            lambda store, atomic: store.transfer(source, target, amount, atomic=atomic),
        )

    async def audit(self) -> Audit:
        """Return the books: balances against the journal."""
        return await self.store.audit()

    async def switch_mode(self, mode: str) -> str:
        """Switch the lock mode once every operation admitted under the current one finished.

        Returns:
            The mode now in force.

        Raises:
            ValueError: ``mode`` is unknown.
            ModeSwitchPerWorker: Several worker processes serve this store, and the switch
                would reach only this one.
            UnsupportedLockMode: ``mode`` needs a store that isolates by itself, and this one
                does not.
        """
        locking = self.locking
        if self._workers > 1 and mode != locking.mode:
            # Each worker has its own Locking: a switch would reach one process out of N.
            raise ModeSwitchPerWorker(
                f"this server runs {self._workers} worker processes and a switch would reach "
                f"only the one that received it; restart it with --lock {mode} instead"
            )
        if locking.strategy(mode).atomic_store and not self.store.supports_atomic:
            raise UnsupportedLockMode(
                f"lock mode {mode!r} needs a store that locks by itself; "
                f"the {self.store.name} store does not"
            )
        await locking.set_mode(mode)
        return locking.mode
