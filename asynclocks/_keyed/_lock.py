"""The KeyedLock facade: the public API, the one backend detection, the ``async with`` guards.

Every entry point asks :meth:`KeyedLock._asyncio_task` which backend runs the caller, then
either does the asyncio work itself (the uncontended paths, inlined for speed) or calls into
``_asyncio`` (waiting, handing over) or ``_trio`` (everything on trio).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Hashable
from threading import get_ident
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING, Any, Final, cast, final

import anyio

from . import _asyncio
from ._asyncio import current_task as _current_task
from ._asyncio import hand_over as _aio_hand_over
from ._asyncio import wait_for_key as _aio_wait_for_key
from ._common import (
    NO_LOOP,
    KeyedLockStatistics,
    LockState,
    check_timeout,
    no_backend,
    reacquire_error,
    take_nowait,
    timed_out,
    try_take,
    unhashable,
    wake_idle,
)

if TYPE_CHECKING:
    from ._common import CachedLoop
    from ._trio import TrioBackend

_get_running_loop: Final = asyncio._get_running_loop
_get_ident: Final = get_ident


def _in_trio_task() -> bool:
    # trio is an optional extra: it is only looked up in sys.modules (a trio run implies it
    # was imported), never imported for this question.
    trio = sys.modules.get("trio")
    return trio is not None and bool(trio.lowlevel.in_trio_task())


_trio_backend: TrioBackend | None = None


def _load_trio() -> TrioBackend:
    """Return the trio backend, importing it first (a trio task is running, so trio is)."""
    global _trio_backend
    if _trio_backend is None:
        from ._trio import TrioBackend, protect

        protect(_TRIO_ENTRY_POINTS)
        _trio_backend = TrioBackend()
    return _trio_backend


@final
class KeyedLock(LockState):
    """A mutual-exclusion lock per hashable key, created on demand and dropped when idle.

    ``async with locks(key):`` holds the lock for ``key`` only; tasks working on other keys run
    concurrently. ``async with locks.many(a, b):`` takes several keys in sorted order, so two
    tasks taking the same keys in opposite order cannot deadlock.

    Example:
        ::

            locks = KeyedLock()

            async def transfer(src: str, dst: str, amount: int) -> None:
                async with locks.many(src, dst):
                    balance = await store.read(src)
                    ...

    The backend is detected on every call, and the semantics match the backend's own lock:

    - **asyncio**: like :class:`asyncio.Lock`, acquiring a free key does not yield to the event
      loop and is not a cancellation point. A blocked acquire waits on a future. If the key is
      handed to a waiter that is then cancelled before it gets to run, that waiter passes the
      key on to the next waiter (or frees it) and raises :exc:`asyncio.CancelledError`: a
      cancelled task never keeps the key, and the next waiter's wake-up is never swallowed.
      A task that ends while holding a key leaves it held, as with :class:`asyncio.Lock`.
    - **trio**: like :class:`trio.Lock`, ``acquire`` is always a checkpoint
      (``checkpoint_if_cancelled``, then ``cancel_shielded_checkpoint`` when the key is free).
      Once a waiter has been handed the key (rescheduled), it owns it: a cancellation arriving
      after that is delivered at the task's next checkpoint, i.e. inside the ``async with``
      body, whose exit releases the key. If a task exits while holding a key, the key is
      broken: its waiters, and every later acquirer, raise :exc:`trio.BrokenResourceError`
      instead of waiting forever. Every method is protected from :exc:`KeyboardInterrupt`
      (``trio.lowlevel.enable_ki_protection``; on trio 0.27 only the parts that change state).
    - **Fairness**: ownership goes straight to the longest-waiting task (FIFO); a task that
      arrives while others wait queues behind them, even in the instant after a release.
      ``many()`` takes its keys one at a time in sorted order, holding the earlier ones; on
      asyncio it queues for each later key by the time it began, ahead of the waiters that
      came after it (so the holder of its first key does not wait for them too); on trio
      each key's waiters are served strictly in the order they queued.
    - **Timeouts** (``acquire(key, timeout=...)``, ``locks(key, timeout=...)``,
      ``many(..., timeout=...)``) behave like cancellation: a timed-out waiter leaves the queue
      and raises :exc:`TimeoutError`. If the key was handed over just before the deadline, the
      acquire succeeds. A free key is taken without a timer; on asyncio the waits of one lock
      share one loop timer, set for the earliest deadline.
    - The lock is not reentrant: acquiring a key the task already holds raises
      :exc:`RuntimeError` instead of deadlocking.
    - Keys are compared like dict keys (``1``, ``1.0`` and ``True`` are the same key). A key is
      tracked only while held: its entry is deleted as soon as it is idle, so ``len(locks)``
      returns to 0 however many distinct keys were used, and no memory accumulates. (After a
      burst of very many keys held at once, CPython keeps the dict's table until later inserts
      make it resize; it never shrinks a dict on deletion.)
    - One ``KeyedLock`` serves one event loop at a time, like the locks it mirrors: it is not
      thread-safe, and a key held by an asyncio task cannot be waited for by a trio task (under
      trio's guest mode both run at once). It can be reused by later runs, on either backend.
    - Speed: on asyncio the uncontended ``async with locks(key)`` costs about 1.3x an
      ``asyncio.Lock`` (``benchmarks/locks.py``), with no coroutine frame. It caches the running
      loop, validated by the loop's ``_thread_id``; for loops without that attribute (uvloop)
      the entry checks ``asyncio._get_running_loop()`` instead, which is as exact and only a
      little slower.
    """

    __slots__ = ("__weakref__",)

    # ------------------------------------------------------------------ public API

    # As in acquire(), the timeout bounds only the wait (ASYNC109).
    def __call__(self, key: Hashable, *, timeout: float | None = None) -> _KeyGuard:  # noqa: ASYNC109
        """Return an async context manager that holds the lock for ``key``.

        Args:
            key: Any hashable object.
            timeout: Give up after waiting this many seconds; ``None`` waits for as long as it
                takes. A free key is taken even with ``timeout=0``, and without a timer.

        Returns:
            An async context manager: ``async with locks(key):`` acquires the key on entry
            (waiting if another task holds it) and releases it on exit; entering it raises
            :exc:`TimeoutError` if the key could not be had in time.

        Raises:
            ValueError: If ``timeout`` is negative or NaN.
            TypeError: If ``timeout`` is not a number.
        """
        # A float >= 0 is valid as it is (NaN fails the comparison): the full check only for
        # the rest, so that the timed guard costs one comparison more than the untimed one.
        if timeout is not None and not (type(timeout) is float and timeout >= 0.0):
            check_timeout(timeout)
        # No __init__ and slot stores: no Python frame for the guard on this hot path.
        guard = _KeyGuard()
        guard._lock = self
        guard._key = key
        guard._timeout = timeout
        return guard

    # As in acquire(), the timeout bounds only the waits (ASYNC109).
    def many(self, *keys: Hashable, timeout: float | None = None) -> _ManyGuard:  # noqa: ASYNC109
        """Return an async context manager that holds the locks for all ``keys``.

        The keys are de-duplicated and taken in sorted order, so tasks locking overlapping sets
        of keys in any order cannot deadlock each other. If acquiring is cancelled (or fails,
        or times out) midway, the keys already taken are released before the exception
        propagates.

        Args:
            *keys: One or more hashable keys that can be sorted together (for example all
                ``str``, all ``int``, or tuples of those).
            timeout: Give up after waiting this many seconds in all; ``None`` waits for as
                long as it takes. Free keys are taken even with ``timeout=0``.

        Returns:
            An async context manager holding every key for the duration of the block; entering
            it raises :exc:`TimeoutError` if the keys could not all be had in time.

        Raises:
            ValueError: If no key is given, or ``timeout`` is negative or NaN.
            TypeError: If a key is unhashable, the keys cannot be ordered together, or
                ``timeout`` is not a number.
        """
        if not keys:
            raise ValueError("KeyedLock.many() needs at least one key")
        if timeout is not None:
            check_timeout(timeout)
        for key in keys:
            try:
                hash(key)
            except TypeError as exc:
                raise unhashable(key, exc) from exc
        unique = set(keys)
        try:
            ordered = sorted(unique)  # type: ignore[type-var]
        except TypeError as exc:
            kinds = sorted({type(key).__qualname__ for key in unique})
            raise TypeError(
                "KeyedLock.many() takes keys in sorted order to avoid deadlocks, but these keys "
                f"cannot be ordered together (types: {', '.join(kinds)}): {exc}"
            ) from exc
        return _ManyGuard(self, tuple(ordered), timeout)

    # The timeout parameter is deliberate (ASYNC109): it bounds only the wait in the queue, which a
    # surrounding cancel scope cannot express as "give up waiting but take a free key".
    async def acquire(self, key: Hashable, *, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """Acquire the lock for ``key``, waiting (FIFO) while another task holds it.

        Args:
            key: Any hashable object.
            timeout: Give up after waiting this many seconds; ``None`` waits for as long as it
                takes. A free key is taken even with ``timeout=0``.

        Raises:
            TimeoutError: If the key could not be acquired in time (nothing is left behind).
            ValueError: If ``timeout`` is negative or NaN.
            TypeError: If ``key`` is unhashable or ``timeout`` is not a number.
            RuntimeError: If the current task already holds ``key``, or no asyncio or trio task
                is running.
            trio.BrokenResourceError: On trio, if the task holding ``key`` exited without
                releasing it.
        """
        await self._acquire(key, timeout)

    def _acquire(
        self, key: Hashable, timeout: float | None, began: int | None = None
    ) -> Awaitable[None]:
        """Take ``key`` if free, and return what to await to finish acquiring it.

        ``acquire()`` without its own coroutine frame, which the ``async with`` entry awaits
        directly: a completed future if the key was free on asyncio, else the backend's wait.
        ``began``: the ticket of the ``many()`` this is part of (see ``_ManyGuard``).
        """
        if timeout is not None:
            check_timeout(timeout)
        task = self._asyncio_task()
        if task is None:
            return (_trio_backend or _load_trio()).acquire(self, key, timeout)
        owner = try_take(self, key, task)
        if owner is None:
            return self._ready  # type: ignore[return-value]
        return _asyncio.wait_for_key(self, key, task, owner, self._loop, timeout, began)

    def acquire_nowait(self, key: Hashable) -> None:
        """Acquire the lock for ``key`` if it is free, without waiting or yielding.

        Args:
            key: Any hashable object.

        Raises:
            asynclocks.WouldBlock: If another task holds ``key``.
            TypeError: If ``key`` is unhashable.
            RuntimeError: If the current task already holds ``key``.
        """
        task = self._asyncio_task()
        if task is None:
            (_trio_backend or _load_trio()).acquire_nowait(self, key)
        else:
            take_nowait(self, key, task)

    def release(self, key: Hashable) -> None:
        """Release the lock for ``key``, handing it to the first waiter if there is one.

        Args:
            key: A key the current task holds.

        Raises:
            RuntimeError: If the current task does not hold ``key`` (the message says whether
                the key is unlocked or held by another task).
            TypeError: If ``key`` is unhashable.
        """
        task = self._asyncio_task()
        if task is None:
            (_trio_backend or _load_trio()).release(self, key)
        else:
            _asyncio.release(self, key, task)

    async def wait_idle(self) -> None:
        """Wait until no key is held, for a graceful shutdown.

        Returns at once if no key is held (on asyncio without yielding, on trio after a
        checkpoint, as each backend's ``Event.wait`` does), else as soon as the last key is
        released. Keys handed from one task to the next stay held throughout. Acquiring is
        not blocked meanwhile: stop starting new work first, then wait. A key whose holder
        ended without releasing it stays held, so bound the wait with a timeout
        (``asyncio.timeout``, ``trio.move_on_after``) where that could happen.

        Raises:
            RuntimeError: If no asyncio or trio task is running.
        """
        task = self._asyncio_task()
        if task is None:
            await (_trio_backend or _load_trio()).wait_idle(self)
        else:
            await _asyncio.wait_idle(self, self._loop)

    def locked(self, key: Hashable) -> bool:
        """Return whether some task holds the lock for ``key``.

        Raises:
            TypeError: If ``key`` is unhashable.
        """
        try:
            return key in self._owners
        except TypeError as exc:
            raise unhashable(key, exc) from exc

    def statistics(self) -> KeyedLockStatistics:
        """Return a snapshot of how many keys are held and how many tasks wait for them."""
        per_key: dict[Hashable, int] = {}
        for key, aio_queue in self._aio_waiters.items():
            per_key[key] = len(aio_queue)
        for key, lot in self._trio_lots.items():
            if lot:  # a lot can outlive its waiters: all cancelled, or broken
                per_key[key] = per_key.get(key, 0) + len(lot)
        return KeyedLockStatistics(
            keys_locked=len(self._owners),
            tasks_waiting=sum(per_key.values()),
            waiting_per_key=MappingProxyType(per_key),
        )

    def __len__(self) -> int:
        """Return the number of keys currently tracked: held, possibly with waiters."""
        return len(self._owners)

    def __repr__(self) -> str:
        stats = self.statistics()
        return (
            f"<asynclocks.KeyedLock keys_locked={stats.keys_locked} "
            f"tasks_waiting={stats.tasks_waiting} at {id(self):#x}>"
        )

    # ------------------------------------------------------------------ backend detection

    def _asyncio_task(self) -> asyncio.Task[Any] | None:
        """Return the running asyncio task, or None when the caller is a trio task.

        The one place where the backends are told apart. On a hit of the loop cache it costs
        two attribute loads and a dict lookup. Otherwise trio is asked first, as that is
        cheaper than ``_get_running_loop()`` (a ``getpid()`` system call), and because under
        trio's guest mode an asyncio loop runs too, but the caller is trio's.

        Raises:
            RuntimeError: If neither an asyncio task nor a trio task is running.
        """
        loop = self._loop
        if self._loop_thread._thread_id != _get_ident():
            if _in_trio_task():
                return None
            running = self._running_loop()
            if running is None:
                raise no_backend()
            loop = running
        task = _current_task(loop)
        if task is None:
            # No asyncio task: trio's guest mode in this loop's thread, or no backend at all.
            if _in_trio_task():
                return None
            raise no_backend()
        return task

    def _running_loop(self) -> asyncio.AbstractEventLoop | None:
        """Return the running asyncio loop (or None), caching it when it can be validated."""
        loop = _get_running_loop()
        if loop is not None and loop is not self._loop:
            ready: asyncio.Future[None] = loop.create_future()
            ready.set_result(None)
            self._loop, self._ready = loop, ready
            kind = type(loop)
            self._stock_loop = (
                kind.create_future is asyncio.BaseEventLoop.create_future
                and kind.time is asyncio.BaseEventLoop.time
            )
            # Trust `_thread_id` only where it has just been seen to name this thread.
            if getattr(loop, "_thread_id", None) == _get_ident():
                self._loop_thread = cast("CachedLoop", loop)
            else:
                self._loop_thread = NO_LOOP
        return loop


@final
class _KeyGuard:
    """``async with locks(key):`` holds one key for the duration of the block.

    A guard holds no state of its own (ownership lives in the lock), so one guard may be
    entered by several tasks or several times in turn.

    ``__aenter__`` and ``__aexit__`` are plain methods returning an awaitable rather than
    coroutine functions: on the uncontended asyncio path they do their work inline and return
    an already-completed future, which costs no coroutine frame. Everything else is delegated
    to the lock (``_acquire``, which is ``acquire`` without its coroutine, and ``release``).
    """

    __slots__ = ("_key", "_lock", "_timeout")

    _lock: KeyedLock
    _key: Hashable
    _timeout: float | None

    def _enter(self) -> Awaitable[None]:
        lock = self._lock
        loop = lock._loop
        # A hit of the loop cache that acquire() would check first: `loop` is the loop running
        # this code, not one that used the lock earlier and now runs in another thread. The
        # cheap `_thread_id` check where the loop has it, the running loop itself otherwise
        # (uvloop).
        if lock._loop_thread._thread_id == _get_ident() or _get_running_loop() is loop:
            task = _current_task(loop)
            if task is not None:
                owners = lock._owners
                key = self._key
                try:
                    if key not in owners:
                        owners[key] = task
                        return lock._ready  # type: ignore[return-value]
                    owner = owners[key]
                except TypeError:
                    pass  # _acquire() raises the explanatory error
                else:
                    if owner is not task:  # else _acquire() raises the reentrancy error
                        # Held by another task: queue, without _acquire()'s detection again.
                        return _aio_wait_for_key(lock, key, task, owner, loop, self._timeout)
        elif _trio_backend is not None and _in_trio_task():
            # Straight to trio, without _acquire()'s and _asyncio_task()'s frames: on trio
            # every entry comes this way, and a contended one is mostly frames.
            return _trio_backend.acquire(lock, self._key, self._timeout)
        return lock._acquire(self._key, self._timeout)

    def _exit(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Awaitable[None]:
        lock = self._lock
        # No thread check needed: if the cached loop's current task owns the key, it is the
        # task leaving this block (the entry bound the lock to this task's loop, and the block
        # still holds the key, so no other loop can have used the lock since).
        task = _current_task(lock._loop)
        if task is None:
            if _trio_backend is not None and _in_trio_task():
                _trio_backend.release(lock, self._key)  # as release() would, in fewer frames
            else:
                lock.release(self._key)  # a loop the lock has not cached
            return _COMPLETED
        owners = lock._owners
        key = self._key
        waiters = lock._aio_waiters
        if not waiters or key not in waiters:
            # Nobody waits for this key: pop first, check after, restore on a mismatch.
            owner = owners.pop(key, None)
            if owner is task:
                if lock._idle and not owners:
                    wake_idle(lock)
                return lock._ready  # type: ignore[return-value]
            if owner is not None:
                owners[key] = owner  # not ours: put it back; release() explains
        elif owners.get(key) is task:
            # Others wait for this key (with many tasks on many keys, some key often has
            # waiters): hand it over as release() would, without its backend detection.
            _aio_hand_over(lock, key)
            return lock._ready  # type: ignore[return-value]
        lock.release(key)
        # An asyncio task: a completed future is awaited without yielding, whatever its loop.
        return lock._ready  # type: ignore[return-value]

    if TYPE_CHECKING:
        # What type checkers see: an ordinary async context manager, so that a guard satisfies
        # contextlib.AbstractAsyncContextManager (whose protocol asks for coroutines).
        async def __aenter__(self) -> None: ...

        async def __aexit__(
            self,
            exc_type: type[BaseException] | None,
            exc: BaseException | None,
            tb: TracebackType | None,
        ) -> None: ...

    else:
        __aenter__ = _enter
        __aexit__ = _exit


@final
class _Completed:
    """An awaitable that finishes at once, for the paths that have done their work already.

    Cheaper than a coroutine, which costs a frame to create and to run: ``__await__`` is the
    ``__iter__`` of an exhausted iterator, a C method bound to it, so awaiting this gets that
    iterator back and ends at its first step, on either backend and as often as needed.
    """

    __slots__ = ()
    __await__ = iter(()).__iter__


_COMPLETED: Final = cast("Awaitable[None]", _Completed())


@final
class _ManyGuard:
    """``async with locks.many(*keys):`` holds several keys, taken in sorted order.

    On asyncio, keys that are all free are taken (and later released) inline: only a key that
    must be waited for starts a coroutine of its own, which takes the rest. The exit is a
    plain method returning a completed future, as ``_KeyGuard``'s.
    """

    __slots__ = ("_keys", "_lock", "_timeout")

    def __init__(self, lock: KeyedLock, keys: tuple[Hashable, ...], timeout: float | None) -> None:
        self._lock = lock
        self._keys = keys
        self._timeout = timeout

    async def __aenter__(self) -> None:
        # A coroutine, unlike _KeyGuard's entry (``create_task(guard.__aenter__())`` works), but
        # one frame only: on asyncio the free keys are taken inline, and the rest by a
        # coroutine of its own only if one must be waited for.
        lock = self._lock
        loop = lock._loop
        # The loop cache's check, as in _KeyGuard._enter.
        if lock._loop_thread._thread_id == _get_ident() or _get_running_loop() is loop:
            task = _current_task(loop)
            if task is not None:
                owners = lock._owners
                taken = 0
                # many() checked that every key hashes: `in` cannot raise here.
                for key in self._keys:
                    if key in owners:
                        break  # held (by us: _aio_take_rest raises the reentrancy error)
                    owners[key] = task
                    taken += 1
                else:
                    return
                await self._aio_take_rest(task, loop, taken)
                return
        await self._take_all()

    async def _aio_take_rest(
        self, task: asyncio.Task[Any], loop: asyncio.AbstractEventLoop, taken: int
    ) -> None:
        """Take ``keys[taken:]`` on asyncio, holding the first ``taken`` (free, taken inline).

        The keys are taken one by one, in sorted order, holding the earlier ones meanwhile:
        taking a later key before an earlier one could deadlock with a task that nests
        ``async with locks(a): async with locks(b)``. What keeps the wait for a later key
        short is its place in line: it goes ahead of every waiter that came after this
        ``many()`` began (the ticket drawn here, before anything else could run: nothing ran
        since the free keys were taken). Joining at the end instead makes it wait for those
        too, while holding its first key: that key's waiters then wait for both queues, and
        the convoys this builds under load gave the bank's `account` mode a p99 several times
        `global`'s.
        """
        lock, keys, timeout = self._lock, self._keys, self._timeout
        began = next(lock._tickets)
        # The loop's clock, which the waits' timers run on: the deadline covers every wait.
        deadline = None if timeout is None else loop.time() + timeout
        owners = lock._owners
        try:
            for key in keys[taken:]:
                owner = owners.get(key)
                if owner is None:
                    owners[key] = task
                elif owner is task:
                    raise reacquire_error(key)
                elif deadline is None:
                    await _aio_wait_for_key(lock, key, task, owner, loop, None, began)
                else:
                    try:
                        await _aio_wait_for_key(
                            lock, key, task, owner, loop, timeout, began, deadline
                        )
                    except TimeoutError:
                        raise self._timed_out(key) from None
                taken += 1
        except BaseException:
            for key in reversed(keys[:taken]):
                lock.release(key)
            raise

    async def _take_all(self) -> None:
        """Take every key through ``_acquire()``: on trio, or where the loop cache misses."""
        lock, timeout = self._lock, self._timeout
        # The asyncio ticket (see _aio_take_rest), which the trio backend does not use: on trio
        # the waits are trio's parking lots, strictly FIFO.
        began = next(lock._tickets)
        # anyio's clock: the running backend's own (the loop's, or trio's), on either.
        deadline = None if timeout is None else anyio.current_time() + timeout
        taken: list[Hashable] = []
        try:
            for key in self._keys:
                if deadline is None:
                    await lock._acquire(key, None, began)
                else:
                    left = max(0.0, deadline - anyio.current_time())
                    try:
                        await lock._acquire(key, left, began)
                    except TimeoutError:
                        raise self._timed_out(key) from None
                taken.append(key)
        except BaseException:
            for key in reversed(taken):
                lock.release(key)
            raise

    def _timed_out(self, key: Hashable) -> TimeoutError:
        # Only reached with a timeout: the waits without one never raise TimeoutError.
        assert self._timeout is not None
        return timed_out(key, self._timeout, len(self._keys))

    def _exit(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Awaitable[None]:
        lock = self._lock
        # As in _KeyGuard._exit: the cached loop's current task, if it holds the keys, is the
        # task leaving this block.
        task = _current_task(lock._loop)
        if task is None:
            for key in reversed(self._keys):
                lock.release(key)
            return _COMPLETED
        owners = lock._owners
        waiters = lock._aio_waiters
        for key in reversed(self._keys):
            if owners.get(key) is not task:
                lock.release(key)  # not ours: release() raises the explanation
            elif key in waiters:
                _aio_hand_over(lock, key)  # may free it, and then wake wait_idle()
            else:
                del owners[key]
        if lock._idle and not owners:
            wake_idle(lock)
        return lock._ready  # type: ignore[return-value]

    if TYPE_CHECKING:
        # What type checkers see, as for _KeyGuard.
        async def __aexit__(
            self,
            exc_type: type[BaseException] | None,
            exc: BaseException | None,
            tb: TracebackType | None,
        ) -> None: ...

    else:
        __aexit__ = _exit


# What a trio task runs through on its way into the trio backend, protected from
# KeyboardInterrupt like trio.Lock's own methods once that backend is loaded (see _trio.protect).
_TRIO_ENTRY_POINTS: Final = (
    KeyedLock.acquire,
    KeyedLock._acquire,
    KeyedLock.acquire_nowait,
    KeyedLock.release,
    KeyedLock.wait_idle,
    KeyedLock.many,
    KeyedLock.locked,
    KeyedLock._asyncio_task,
    _KeyGuard._enter,
    _KeyGuard._exit,
    _ManyGuard.__aenter__,
    _ManyGuard._take_all,
    _ManyGuard._exit,
)
