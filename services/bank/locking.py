"""Lock modes: what a request holds around its read-await-write.

- ``none``: nothing. Two requests on one account overlap in the store's race window and one of
  the writes is lost: the bank loses (or invents) money.
- ``global``: one lock around every money-moving operation. Correct, and the whole service
  becomes sequential.
- ``account``: a :class:`asynclocks.KeyedLock`, one lock per account; a transfer takes both of its
  accounts in sorted order (so two opposite transfers cannot deadlock). Correct and concurrent.
  On a store with one connection (SQLite), :class:`ArrivalOrderAccountLock` instead: the
  accounts are handed over in the order the requests arrived, as that connection serves them.

The mode can be switched while requests are in flight. Each request runs under one mode from
start to end, and two modes never overlap: a switch closes the door to new requests, waits until
every request admitted under the old mode has finished, changes the mode, then reopens. Without the
drain, a request still running unlocked under ``none`` could race one that already holds an
account lock under ``account``, and the switch would not be the fix it looks like.

Waits are bounded: with a ``wait_timeout``, a request that cannot get its locks (or be admitted
past a switch) in time is refused with :class:`services.bank.domain.DeadlineExceeded` before it
touched anything, so one stalled account never holds the requests queued behind it forever. A
free lock is taken without starting a timer.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections import deque
from collections.abc import Awaitable, Mapping
from contextvars import ContextVar
from types import TracebackType
from typing import TYPE_CHECKING, Final, Protocol, cast

import anyio

from asynclocks import KeyedLock

from .domain import DeadlineExceeded, positive_seconds

__all__ = [
    "ALL_LOCK_MODES",
    "LOCK_MODES",
    "SERIAL_STORES",
    "AccountLock",
    "ArrivalOrderAccountLock",
    "ArrivalOrderLock",
    "DbLock",
    "GlobalLock",
    "Guard",
    "Hold",
    "LockStrategy",
    "Locking",
    "NoLock",
    "default_strategies",
    "strategies_for",
]

#: The modes of the in-process service, in the order the showdown runs them.
LOCK_MODES: Final = ("none", "global", "account")


class Hold(Protocol):
    """What a strategy holds around one operation: an async context manager whose exit
    releases what it holds without yielding to other tasks first (when called, or as the
    awaitable it returns starts): the guard counts the request out as it calls the exit (see
    ``Guard._exit``), and no other task runs before the release."""

    def __aenter__(self) -> Awaitable[object]: ...

    def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
        /,
    ) -> Awaitable[bool | None]: ...


class LockStrategy(Protocol):
    """One lock mode.

    Attributes:
        name: The mode's name, as given to ``--lock`` and ``PUT /admin/lock``.
        atomic_store: True when the store itself provides the isolation (the ``db`` mode): the
            request then calls the store with ``atomic=True``.
    """

    @property
    def name(self) -> str: ...

    @property
    def atomic_store(self) -> bool: ...

    def hold(self, keys: tuple[str, ...], timeout: float | None = None) -> Hold:
        """Return what to hold around one operation on the accounts ``keys``.

        Entering it raises ``TimeoutError`` if the locks are not had within ``timeout``
        seconds (``None``: wait as long as it takes), leaving nothing held.
        """
        ...


class _Nothing:
    """What ``none`` and ``db`` hold: nothing, entered and left without a coroutine frame.

    ``contextlib.nullcontext`` would do, but its ``async def`` methods cost a frame each on
    every request; these return an awaitable that finishes at once (see ``_DONE``).
    """

    __slots__ = ()

    def __aenter__(self) -> Awaitable[None]:
        return _DONE

    def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
        /,
    ) -> Awaitable[None]:
        return _DONE


class _Done:
    """An awaitable that finishes at once, on either backend, as often as needed.

    ``__await__`` is the ``__iter__`` of an exhausted iterator, a C method: awaiting this gets
    that iterator back, which ends at its first step, with no Python frame.
    """

    __slots__ = ()
    __await__ = iter(()).__iter__


_DONE: Final = cast("Awaitable[None]", _Done())
_NOTHING: Final = _Nothing()


class NoLock:
    """Lock mode ``none``: hold nothing."""

    name: Final = "none"
    atomic_store: Final = False

    def hold(self, keys: tuple[str, ...], timeout: float | None = None) -> Hold:
        return _NOTHING


#: The one key of the ``global`` mode's lock.
_EVERYTHING: Final = "every account"


class GlobalLock:
    """Lock mode ``global``: one lock for every operation of the process.

    The lock is a :class:`KeyedLock` used with one key: FIFO like ``anyio.Lock``, with a wait
    bounded by its own timer (set only if the request has to wait) rather than a cancel scope
    around every acquire, and taken without a coroutine frame when free.
    """

    name: Final = "global"
    atomic_store: Final = False

    def __init__(self) -> None:
        self._lock = KeyedLock()
        # A KeyedLock guard keeps no state of its own, so every request can enter the same
        # one: the last one made, while the requests' timeout stays the same (it always does).
        self._timeout: float | None = None
        self._guard = self._lock(_EVERYTHING)

    def hold(self, keys: tuple[str, ...], timeout: float | None = None) -> Hold:
        if timeout != self._timeout:
            self._guard = self._lock(_EVERYTHING, timeout=timeout)
            self._timeout = timeout
        return self._guard


# Tickets in the order requests asked for their accounts' locks, and the current request's one.
_tickets = itertools.count()
_arrival: ContextVar[int] = ContextVar("bank_request_arrival")


class _ArrivalOrder:
    """Whether an :class:`ArrivalOrderLock` exists in this process: only then does a request
    record its ticket. Setting a context variable costs about as much as the rest of taking a
    free account lock, and with no such lock nothing would ever read it."""

    wanted = False


class AccountLock:
    """Lock mode ``account``: one lock per account, taken in sorted order for transfers."""

    name: Final = "account"
    atomic_store: Final = False

    def __init__(self) -> None:
        self._locks = KeyedLock()

    def hold(self, keys: tuple[str, ...], timeout: float | None = None) -> Hold:
        # The request's place in line for what it meets once it holds its accounts (see
        # ArrivalOrderLock), if anything does. Only here: under the other modes requests reach
        # the store in the order they arrive already, and every request would pay for the
        # context variable.
        if _ArrivalOrder.wanted:
            _arrival.set(next(_tickets))
        # KeyedLock bounds only the waits: a free key is taken without a timer, and a wait
        # shares the lock's one timer with the others (every request has the same timeout).
        if len(keys) == 1:
            return self._locks(keys[0], timeout=timeout)
        # many() bounds the waits in all and gives back what it took; unlike acquiring the keys
        # one by one, it keeps its place in line on each later key (no convoy behind a
        # transfer that holds its first account).
        return self._locks.many(*keys, timeout=timeout)


class _Request:
    """One request's place in :class:`ArrivalOrderAccountLock`'s queues."""

    __slots__ = ("event", "keys", "pending")

    def __init__(self, keys: tuple[str, ...]) -> None:
        self.keys = keys
        #: Queues in which some earlier request is still ahead of this one.
        self.pending = 0
        #: Set when ``pending`` drops to 0 (only made for a request that has to wait).
        self.event: anyio.Event | None = None


class ArrivalOrderAccountLock:
    """Lock mode ``account`` on a store that runs one operation at a time (SQLite's connection).

    A request joins the queue of every account it names at once, when it asks, and holds them
    all when it is first in each: the accounts are handed over in the order the requests
    arrived, and a request that waits holds none of them meanwhile. On a store with a single
    connection this is what keeps the tail at ``global``'s: with :class:`AccountLock`, a
    transfer holds its first account while it waits for its second, whose holder may have
    arrived later and waits for the connection behind everyone who came before it; the first
    account's queue waits for all of them, and so on down the chains of transfers (fairness.py
    measured a p99 3.4x ``global``'s). Here the request that arrived first among those not yet
    done is first in all its queues, so it holds its accounts and, through
    :class:`ArrivalOrderLock`, gets the connection next: the connection serves the requests in
    the order they arrived, as under ``global``, while requests on other accounts still
    overlap outside the connection (the race window's await). Deadlock-free without sorting:
    every queue is in the same (arrival) order.

    Not for stores that run operations side by side (memory, PostgreSQL's pool): there an
    account left free while its next request waits for another one is lost throughput, which
    :class:`AccountLock` does not lose.
    """

    name: Final = "account"
    atomic_store: Final = False

    def __init__(self) -> None:
        # Per account, the requests that asked for it in arrival order; the first holds it.
        self._queues: dict[str, deque[_Request]] = {}

    def locked(self, key: str) -> bool:
        """Whether some request holds (or waits for) the account ``key``."""
        return key in self._queues

    def hold(self, keys: tuple[str, ...], timeout: float | None = None) -> Hold:
        _arrival.set(next(_tickets))  # the request's place at the connection (ArrivalOrderLock)
        return _QueuedKeys(self, tuple(dict.fromkeys(keys)), timeout)


class _QueuedKeys:
    """One request's accounts in :class:`ArrivalOrderAccountLock`: queued for all at once."""

    __slots__ = ("_lock", "_request", "_timeout")

    def __init__(
        self, lock: ArrivalOrderAccountLock, keys: tuple[str, ...], timeout: float | None
    ) -> None:
        self._lock = lock
        self._request = _Request(keys)
        self._timeout = timeout

    async def __aenter__(self) -> None:
        request, queues = self._request, self._lock._queues
        # Joined in one step, with no await between the queues: every queue stays in
        # arrival order, which is what makes the hand-over deadlock-free.
        for key in request.keys:
            queue = queues.get(key)
            if queue is None:
                queues[key] = deque((request,))
            else:
                queue.append(request)
                request.pending += 1
        if not request.pending:
            return  # every account was free: no yield, no timer
        event = request.event = anyio.Event()
        try:
            with anyio.fail_after(self._timeout):
                await event.wait()
        except BaseException:
            if event.is_set():
                self._leave()  # handed the accounts, then cancelled before running: pass on
            else:
                self._withdraw()
            raise

    def _withdraw(self) -> None:
        """Leave every queue without having held the accounts."""
        request, queues = self._request, self._lock._queues
        for key in request.keys:
            queue = queues[key]
            first = queue[0] is request
            queue.remove(request)
            if not queue:
                del queues[key]
            elif first:
                # Only possible for a request still waiting on another account: the next one
                # in this queue moves up as if this one had been served.
                _moved_up(queue[0])

    def _leave(self) -> None:
        request, queues = self._request, self._lock._queues
        for key in request.keys:
            queue = queues[key]
            queue.popleft()
            if queue:
                _moved_up(queue[0])
            else:
                del queues[key]

    async def __aexit__(self, *exc_info: object) -> None:
        self._leave()


def _moved_up(request: _Request) -> None:
    """``request`` became first in one more of its queues: wake it if that was the last."""
    request.pending -= 1
    if not request.pending:
        assert request.event is not None, "a queued request waits on its event"
        request.event.set()


class DbLock:
    """Lock mode ``db``: hold nothing in the process; the database store isolates the operation.

    The only mode that stays correct with several worker processes: the others lock inside one
    process, which the other processes' requests never see. Offered on the SQLite and PostgreSQL
    stores (see their modules for how each one isolates).
    """

    name: Final = "db"
    atomic_store: Final = True

    def hold(self, keys: tuple[str, ...], timeout: float | None = None) -> Hold:
        return _NOTHING


#: Every mode, ``db`` included (which needs a database store).
ALL_LOCK_MODES: Final = (*LOCK_MODES, "db")


def default_strategies() -> dict[str, LockStrategy]:
    """Return a fresh strategy for every mode in :data:`LOCK_MODES`."""
    return {"none": NoLock(), "global": GlobalLock(), "account": AccountLock()}


#: Stores that run one operation at a time (one connection per process): lock mode
#: ``account`` hands their accounts over in arrival order (:class:`ArrivalOrderAccountLock`).
SERIAL_STORES: Final = frozenset({"sqlite"})


def strategies_for(store_name: str) -> dict[str, LockStrategy]:
    """The modes a service on the store named ``store_name`` offers: ``db`` on the databases;
    ``account`` by arrival order on a store of :data:`SERIAL_STORES`."""
    strategies = default_strategies()
    if store_name in SERIAL_STORES:
        strategies["account"] = ArrivalOrderAccountLock()
    if store_name != "memory":
        strategies["db"] = DbLock()
    return strategies


class Locking:
    """The current lock mode of a service, and the guard every money-moving request enters.

    Args:
        mode: The starting mode.
        strategies: Mode name to strategy; :func:`default_strategies` when omitted.
        wait_timeout: Seconds a request may wait for its locks (and at the door during a
            switch) before :meth:`guard` refuses it with ``DeadlineExceeded``; ``None`` waits
            as long as it takes.

    Raises:
        ValueError: ``mode`` is not one of the strategies, or ``wait_timeout`` is not a
            positive number of seconds.
    """

    def __init__(
        self,
        mode: str,
        strategies: Mapping[str, LockStrategy] | None = None,
        *,
        wait_timeout: float | None = None,
    ) -> None:
        self._strategies = dict(default_strategies() if strategies is None else strategies)
        self._check_mode(mode)
        if wait_timeout is not None:
            positive_seconds("wait_timeout", wait_timeout)
        self.wait_timeout = wait_timeout
        self._mode = mode
        self._active = 0
        self._waiting = 0
        # Set while a switch is in progress: new requests wait on it before being admitted.
        self._gate: anyio.Event | None = None
        # Set by the last request to leave while a switch is waiting for the old mode to drain.
        self._drained: anyio.Event | None = None
        self._switch_lock = anyio.Lock()

    def _check_mode(self, mode: str) -> None:
        if mode not in self._strategies:
            choices = ", ".join(self._strategies)
            raise ValueError(f"unknown lock mode {mode!r}; expected one of {choices}")

    @property
    def mode(self) -> str:
        """The mode new requests are admitted under."""
        return self._mode

    @property
    def modes(self) -> tuple[str, ...]:
        """Every mode this service can switch to."""
        return tuple(self._strategies)

    def strategy(self, mode: str) -> LockStrategy:
        """Return the strategy of ``mode``.

        Raises:
            ValueError: ``mode`` is unknown.
        """
        self._check_mode(mode)
        return self._strategies[mode]

    @property
    def active(self) -> int:
        """Requests currently inside :meth:`guard`."""
        return self._active

    @property
    def switching(self) -> bool:
        """Whether a mode switch is draining the old mode (new requests wait at the door)."""
        return self._gate is not None

    @property
    def waiting(self) -> int:
        """Requests held at the door while a switch drains the old mode."""
        return self._waiting

    def guard(self, *keys: str) -> Guard:
        """Hold the current mode's lock for the accounts ``keys``; ``async with`` yields the
        strategy.

        The request is admitted under one mode and keeps it until it leaves, even if a switch is
        requested meanwhile (the switch waits for it).
        """
        # Guard(self, keys) without running its __init__: a call from C into Python, which
        # CPython 3.11 cannot inline, on every request; three slot stores do the same.
        guard = _new_guard(Guard)
        guard._locking = self
        guard._keys = keys
        guard._hold = None
        return guard

    async def _admit(self) -> None:
        self._waiting += 1
        try:
            with anyio.fail_after(self.wait_timeout):
                while self._gate is not None:
                    await self._gate.wait()
        finally:
            self._waiting -= 1

    def _too_late(self, waited: str) -> DeadlineExceeded:
        """The refusal of a request that waited ``wait_timeout`` seconds for what ``waited``
        says (the door of a switch, or the mode's locks), before it touched anything."""
        return DeadlineExceeded(
            f"the request waited {self.wait_timeout:g} s {waited}; nothing was applied, retry later"
        )

    def _leave(self) -> None:
        self._active -= 1
        if self._active == 0 and self._drained is not None:
            self._drained.set()

    async def set_mode(self, mode: str) -> str:
        """Switch to ``mode`` once every request admitted under the current one has finished.

        Returns:
            The previous mode.

        Raises:
            ValueError: ``mode`` is unknown.
        """
        self._check_mode(mode)
        async with self._switch_lock:
            previous = self._mode
            if mode == previous:
                return previous
            gate = self._gate = anyio.Event()
            try:
                while self._active:
                    drained = self._drained = anyio.Event()
                    await drained.wait()
                self._mode = mode
            finally:
                # Also on cancellation: the switch is abandoned and requests flow again.
                self._drained = None
                self._gate = None
                gate.set()
            return previous


class ArrivalOrderLock:
    """A lock handed to the waiter whose request asked for its accounts first (asyncio only).

    For what every request passes through after its lock mode, such as the SQLite store's one
    connection. Under lock mode ``account`` the requests holding the accounts' locks queue
    for it; in the order they reach it (FIFO), a request that waited long behind others on a
    busy account gets no more turns than one that took a free account at once, so every
    request on a busy account waits for the turns of all the others: the holders of busy
    accounts fall behind, their queues grow, and a few requests wait many times the average.
    Handing the lock to the request that arrived first (by the ticket :class:`AccountLock`
    gave it when it asked for its accounts) drains the busy accounts first, which is the order
    ``global`` serves them in. A caller
    outside any lock mode (opening an account, the audit) queues as if it arrived on asking.
    Ties cannot happen: every ticket is drawn once.

    Like :class:`asyncio.Lock`, acquiring a free lock does not yield, and a waiter cancelled
    after the lock was handed to it passes the lock on.
    """

    __slots__ = ("_held", "_waiters")

    def __init__(self) -> None:
        # From now on requests of lock mode `account` record their tickets. (A lock made
        # while requests are already waiting for their accounts sees theirs as arriving when
        # they ask it; stores make theirs when they are built, before serving.)
        _ArrivalOrder.wanted = True
        self._held = False
        # A heap of (ticket, future) in ticket order; release() completes the first future.
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    def locked(self) -> bool:
        """Whether some task holds the lock."""
        return self._held

    async def acquire(self) -> None:
        """Take the lock, waiting behind every waiter whose request arrived earlier."""
        if not self._held:
            self._held = True
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        ticket = _arrival.get(None)
        entry = (next(_tickets) if ticket is None else ticket, fut)
        heapq.heappush(self._waiters, entry)
        try:
            await fut
        except BaseException:
            if fut.done() and not fut.cancelled():
                self.release()  # handed to us, then cancelled before we ran: pass it on
            else:
                self._waiters.remove(entry)
                heapq.heapify(self._waiters)
            raise

    def release(self) -> None:
        """Hand the lock to the earliest-arrived waiter, or free it."""
        waiters = self._waiters
        while waiters:
            _, fut = heapq.heappop(waiters)
            if not fut.done():
                fut.set_result(None)
                return
        self._held = False

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


_AT_THE_DOOR: Final = (
    "to be admitted while the lock mode was being switched (the switch waits for every request "
    "of the old mode to finish)"
)


def _waited_for(mode: str) -> str:
    """What a request of lock mode ``mode`` waited for, in :meth:`Locking._too_late`."""
    if mode == "global":
        return (
            "for the global lock without getting it (another request holds it or the database "
            "is slow)"
        )
    if mode == "account":
        return (
            "for its account locks without getting them (another request holds them or the "
            "database is slow)"
        )
    return f"for the locks of lock mode {mode!r} without getting them"


_new_guard: Final = object.__new__


class Guard:
    """``async with locking.guard(*keys) as strategy``: one request inside its lock mode.

    A plain class rather than a generator-based context manager: it is entered by every
    money-moving request, and this keeps its cost to a couple of attribute lookups.
    """

    __slots__ = ("_hold", "_keys", "_locking")

    def __init__(self, locking: Locking, keys: tuple[str, ...]) -> None:
        self._locking = locking
        self._keys = keys
        self._hold: Hold | None = None

    async def __aenter__(self) -> LockStrategy:
        locking = self._locking
        if locking._gate is not None:
            try:
                await locking._admit()
            except TimeoutError:
                raise locking._too_late(_AT_THE_DOOR) from None
        strategy = locking._strategies[locking._mode]
        hold = strategy.hold(self._keys, locking.wait_timeout)
        locking._active += 1
        try:
            await hold.__aenter__()
        except TimeoutError:
            locking._leave()
            raise locking._too_late(_waited_for(strategy.name)) from None
        except BaseException:
            locking._leave()
            raise
        self._hold = hold
        return strategy

    def _exit(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Awaitable[bool | None]:
        # A plain method, not a coroutine (one frame less on every request): `async with`
        # awaits what the hold's exit returned before any other task can run, and no hold
        # yields before it releases (see Hold), so no task sees the request counted out while
        # its locks are still held.
        hold, self._hold = self._hold, None
        assert hold is not None, "guard exited without being entered"
        try:
            return hold.__aexit__(exc_type, exc, tb)
        finally:
            self._locking._leave()

    if TYPE_CHECKING:
        # What type checkers see: an ordinary async context manager (Held.keep takes one).
        async def __aexit__(
            self,
            exc_type: type[BaseException] | None,
            exc: BaseException | None,
            tb: TracebackType | None,
        ) -> None: ...

    else:
        __aexit__ = _exit
