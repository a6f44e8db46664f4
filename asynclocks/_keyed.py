"""KeyedLock: one mutual-exclusion lock per hashable key, for asyncio and trio.

The state is two plain dicts instead of one lock object per key, so that an idle key costs
nothing: a key is present only while some task holds it (and then perhaps other tasks wait
for it). Ownership passes directly from the releasing task to the first waiter (FIFO, no
barging), which is also what keeps cancellation safe: a waiter never has to compete again
after being woken, so a wake-up cannot be lost (the bug class of CPython bpo-27585 /
gh-90155).
"""

from __future__ import annotations

import asyncio
import math
import reprlib
import sys
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Mapping
from dataclasses import dataclass, field
from threading import get_ident
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING, Any, Final, cast, final

from anyio import WouldBlock

if TYPE_CHECKING:
    import trio

    class _CachedLoop(asyncio.AbstractEventLoop):
        # BaseEventLoop sets this while run_forever() runs and resets it to None afterwards.
        _thread_id: int | None


__all__ = ["KeyedLock", "KeyedLockStatistics"]

_get_running_loop: Final = asyncio._get_running_loop
_get_ident: Final = get_ident

# On Python 3.11 ``asyncio.current_task`` is a Python function that looks up this dict; calling
# the dict's C ``get`` directly saves a frame on every acquire and release. Later versions
# implement ``current_task`` in C, so use it there.
_current_task: Callable[[asyncio.AbstractEventLoop], asyncio.Task[Any] | None]
_current_tasks: dict[asyncio.AbstractEventLoop, asyncio.Task[Any]] | None = getattr(
    asyncio.tasks, "_current_tasks", None
)
if sys.version_info < (3, 12) and isinstance(_current_tasks, dict):
    _current_task = _current_tasks.get
else:  # pragma: no cover - exercised on newer Pythons only
    _current_task = asyncio.current_task


class _NoLoop:
    """Stands in for "no loop cached yet": its thread id never matches a real thread's."""

    _thread_id = None


_NO_LOOP: Final = cast("_CachedLoop", _NoLoop())

_key_repr = reprlib.Repr()
_key_repr.maxstring = 60
_key_repr.maxother = 60


# The trio module, set once a trio task has used a KeyedLock. trio is an optional extra: it is
# only looked up in sys.modules (a trio run implies it was imported), never imported here.
_trio_module: Any = None


def _trio_task_or_none() -> trio.lowlevel.Task | None:
    """Return the current trio task, or None when not called from one."""
    global _trio_module
    trio_mod = sys.modules.get("trio")
    if trio_mod is None or not trio_mod.lowlevel.in_trio_task():
        return None
    _trio_module = trio_mod
    task: trio.lowlevel.Task = trio_mod.lowlevel.current_task()
    return task


def _trio_task() -> trio.lowlevel.Task:
    """Return the current trio task, or raise if neither an asyncio nor a trio task runs."""
    task = _trio_task_or_none()
    if task is None:
        raise _no_backend()
    return task


def _describe(key: object) -> str:
    return _key_repr.repr(key)


def _unhashable(key: object, exc: TypeError) -> TypeError:
    return TypeError(
        f"KeyedLock keys must be hashable, got an object of unhashable type "
        f"{type(key).__qualname__!r}: {exc}"
    )


def _no_backend() -> RuntimeError:
    return RuntimeError("KeyedLock must be used from inside an asyncio task or a trio task")


def _check_timeout(timeout: float) -> None:
    if not isinstance(timeout, int | float) or isinstance(timeout, bool):
        raise TypeError(
            f"timeout must be a number of seconds or None, got {type(timeout).__qualname__!r}"
        )
    if math.isnan(timeout) or timeout < 0:
        raise ValueError(
            f"timeout must be a non-negative number of seconds or None, got {timeout!r}"
        )


def _expire(fut: asyncio.Future[None], key: object, timeout: float) -> None:
    # Runs as a loop callback; if ownership was already handed over, the acquire succeeded and
    # the late timer must not undo it.
    if not fut.done():
        fut.set_exception(
            TimeoutError(f"timed out after {timeout} s waiting for KeyedLock key {_describe(key)}")
        )


def _task_name(task: object) -> str:
    get_name = getattr(task, "get_name", None)
    if get_name is not None:
        return repr(get_name())
    return repr(getattr(task, "name", task))


@final
@dataclass(frozen=True, slots=True)
class KeyedLockStatistics:
    """A snapshot of a :class:`KeyedLock`'s state, for debugging and monitoring.

    Attributes:
        keys_locked: How many keys some task holds right now. A key that tasks wait for is
            always held (ownership is handed over directly), so this is also ``len(lock)``.
        tasks_waiting: How many tasks are blocked waiting for a key, over all keys.
        waiting_per_key: For each key with waiters, how many tasks wait for it.
    """

    keys_locked: int
    tasks_waiting: int
    # Left out of the hash (a mapping has none) so that snapshots stay hashable.
    waiting_per_key: Mapping[Hashable, int] = field(hash=False)


@final
class KeyedLock:
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
    - **trio**: like :class:`trio.Lock`, ``acquire`` is always a checkpoint
      (``checkpoint_if_cancelled``, then ``cancel_shielded_checkpoint`` when the key is free).
      Once a waiter has been handed the key (rescheduled), it owns it: a cancellation arriving
      after that is delivered at the task's next checkpoint, i.e. inside the ``async with``
      body, whose exit releases the key.
    - **Fairness**: ownership goes straight to the longest-waiting task (FIFO); a task that
      arrives while others wait queues behind them, even in the instant after a release.
    - **Timeouts** (``acquire(key, timeout=...)``) behave like cancellation: a timed-out waiter
      leaves the queue and raises :exc:`TimeoutError`. If the key was handed over just before the
      deadline, the acquire succeeds.
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

    __slots__ = (
        "__weakref__",
        "_aio_waiters",
        "_loop",
        "_loop_thread",
        "_owners",
        "_ready",
        "_trio_waiters",
    )

    def __init__(self) -> None:
        # key -> owning task (asyncio.Task or trio.lowlevel.Task). A free key is absent.
        self._owners: dict[Hashable, object] = {}
        # key -> FIFO of waiters; present only while non-empty, and only for held keys.
        self._aio_waiters: dict[
            Hashable, deque[tuple[asyncio.Task[Any], asyncio.Future[None]]]
        ] = {}
        self._trio_waiters: dict[Hashable, deque[trio.lowlevel.Task]] = {}
        # The asyncio loop seen last. asyncio._get_running_loop() calls getpid() on every call
        # (a system call); checking that this loop is still running in this thread is far
        # cheaper and just as exact, since a thread runs at most one loop at a time.
        self._loop: asyncio.AbstractEventLoop = _NO_LOOP
        # What tells whether `_loop` runs in this thread: the loop itself when its `_thread_id`
        # says so (BaseEventLoop), else _NO_LOOP, whose `_thread_id` never matches, so that
        # the uncontended entry falls back to `_get_running_loop() is _loop` (uvloop exposes no
        # thread id; the cached loop and a thread ident alone would not notice the loop being
        # stopped and run in another thread, whose current task would then be taken for ours).
        self._loop_thread: _CachedLoop = _NO_LOOP
        # A completed future of that loop: what the uncontended ``async with`` entry and exit
        # return to be awaited, since awaiting a done future runs no Python frame.
        self._ready: asyncio.Future[None] | None = None

    # ------------------------------------------------------------------ public API

    def __call__(self, key: Hashable) -> _KeyGuard:
        """Return an async context manager that holds the lock for ``key``.

        Args:
            key: Any hashable object.

        Returns:
            An async context manager: ``async with locks(key):`` acquires the key on entry
            (waiting if another task holds it) and releases it on exit.
        """
        # No __init__ and two slot stores: no Python frame for the guard on this hot path.
        guard = _KeyGuard()
        guard._lock = self
        guard._key = key
        return guard

    def many(self, *keys: Hashable) -> _ManyGuard:
        """Return an async context manager that holds the locks for all ``keys``.

        The keys are de-duplicated and taken in sorted order, so tasks locking overlapping sets
        of keys in any order cannot deadlock each other. If acquiring is cancelled (or fails)
        midway, the keys already taken are released before the exception propagates.

        Args:
            *keys: One or more hashable keys that can be sorted together (for example all
                ``str``, all ``int``, or tuples of those).

        Returns:
            An async context manager holding every key for the duration of the block.

        Raises:
            ValueError: If no key is given.
            TypeError: If a key is unhashable, or the keys cannot be ordered together.
        """
        if not keys:
            raise ValueError("KeyedLock.many() needs at least one key")
        for key in keys:
            try:
                hash(key)
            except TypeError as exc:
                raise _unhashable(key, exc) from exc
        unique = set(keys)
        try:
            ordered = sorted(unique)  # type: ignore[type-var]
        except TypeError as exc:
            kinds = sorted({type(key).__qualname__ for key in unique})
            raise TypeError(
                "KeyedLock.many() takes keys in sorted order to avoid deadlocks, but these keys "
                f"cannot be ordered together (types: {', '.join(kinds)}): {exc}"
            ) from exc
        return _ManyGuard(self, tuple(ordered))

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
        """
        if timeout is not None:
            _check_timeout(timeout)
        loop: asyncio.AbstractEventLoop | None = self._loop
        if self._loop_thread._thread_id != _get_ident():
            # Not the cached loop's thread: trio first, as it is cheaper to detect.
            trio_task = _trio_task_or_none()
            if trio_task is not None:
                await self._trio_acquire(key, trio_task, timeout)
                return
            loop = self._running_loop()
        task = None if loop is None else _current_task(loop)
        if task is None:
            # No asyncio task: trio's guest mode in this loop's thread, or no backend at all.
            await self._trio_acquire(key, _trio_task(), timeout)
            return
        owners = self._owners
        try:
            owner = owners.get(key)
        except TypeError as exc:
            raise _unhashable(key, exc) from exc
        if owner is None:
            owners[key] = task
            return
        if owner is task:
            raise self._reacquire_error(key)

        # Contended: queue a future and wait for release() to hand the key over.
        assert loop is not None
        if not isinstance(owner, asyncio.Task) or owner.get_loop() is not loop:
            raise self._foreign_owner_error(key, owner)
        fut = loop.create_future()
        item = (task, fut)
        queue = self._aio_waiters.get(key)
        if queue is None:
            queue = self._aio_waiters[key] = deque()
        queue.append(item)
        timer = None if timeout is None else loop.call_later(timeout, _expire, fut, key, timeout)
        try:
            await fut
        except BaseException:
            if owners.get(key) is task:
                # The key was handed to us, then we were cancelled before we could run: pass
                # it on, or the next waiter would never be woken.
                self._aio_pass_on(key)
            else:
                self._aio_discard(key, item)
            raise
        finally:
            if timer is not None:
                timer.cancel()

    def acquire_nowait(self, key: Hashable) -> None:
        """Acquire the lock for ``key`` if it is free, without waiting or yielding.

        Args:
            key: Any hashable object.

        Raises:
            asynclocks.WouldBlock: If another task holds ``key``.
            TypeError: If ``key`` is unhashable.
            RuntimeError: If the current task already holds ``key``.
        """
        task = self._current_task()
        owners = self._owners
        try:
            owner = owners.get(key)
        except TypeError as exc:
            raise _unhashable(key, exc) from exc
        if owner is None:
            owners[key] = task
            return
        if owner is task:
            raise self._reacquire_error(key)
        raise WouldBlock

    def release(self, key: Hashable) -> None:
        """Release the lock for ``key``, handing it to the first waiter if there is one.

        Args:
            key: A key the current task holds.

        Raises:
            RuntimeError: If the current task does not hold ``key`` (the message says whether
                the key is unlocked or held by another task).
            TypeError: If ``key`` is unhashable.
        """
        loop: asyncio.AbstractEventLoop | None = self._loop
        if self._loop_thread._thread_id != _get_ident():
            trio_task = _trio_task_or_none()
            if trio_task is not None:
                self._trio_release(key, trio_task)
                return
            loop = self._running_loop()
        task = None if loop is None else _current_task(loop)
        if task is None:
            self._trio_release(key, _trio_task())
            return
        owners = self._owners
        try:
            owner = owners.get(key)
        except TypeError as exc:
            raise _unhashable(key, exc) from exc
        if owner is not task:
            raise self._release_error(key, owner)
        if key in self._aio_waiters:
            self._aio_hand_over(key)
        else:
            del owners[key]

    def locked(self, key: Hashable) -> bool:
        """Return whether some task holds the lock for ``key``.

        Raises:
            TypeError: If ``key`` is unhashable.
        """
        try:
            return key in self._owners
        except TypeError as exc:
            raise _unhashable(key, exc) from exc

    def statistics(self) -> KeyedLockStatistics:
        """Return a snapshot of how many keys are held and how many tasks wait for them."""
        per_key: dict[Hashable, int] = {}
        for key, aio_queue in self._aio_waiters.items():
            per_key[key] = len(aio_queue)
        for key, trio_queue in self._trio_waiters.items():
            per_key[key] = per_key.get(key, 0) + len(trio_queue)
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

    # ------------------------------------------------------------------ helpers

    def _running_loop(self) -> asyncio.AbstractEventLoop | None:
        """Return the running asyncio loop (or None), caching it when it can be validated.

        Callers ask trio first: that is cheaper than _get_running_loop() (a getpid() system
        call), and under trio's guest mode an asyncio loop runs too, but the caller is trio's.
        """
        loop = _get_running_loop()
        if loop is not None and loop is not self._loop:
            ready: asyncio.Future[None] = loop.create_future()
            ready.set_result(None)
            self._loop, self._ready = loop, ready
            # Trust `_thread_id` only where it has just been seen to name this thread.
            if getattr(loop, "_thread_id", None) == _get_ident():
                self._loop_thread = cast("_CachedLoop", loop)
            else:
                self._loop_thread = _NO_LOOP
        return loop

    def _current_task(self) -> object:
        loop: asyncio.AbstractEventLoop | None = self._loop
        if self._loop_thread._thread_id != _get_ident():
            trio_task = _trio_task_or_none()
            if trio_task is not None:
                return trio_task
            loop = self._running_loop()
        task = None if loop is None else _current_task(loop)
        if task is not None:
            return task
        return _trio_task()

    @staticmethod
    def _reacquire_error(key: object) -> RuntimeError:
        return RuntimeError(
            f"the current task already holds KeyedLock key {_describe(key)}; KeyedLock is not "
            "reentrant, so acquiring it again would deadlock"
        )

    @staticmethod
    def _foreign_owner_error(key: object, owner: object) -> RuntimeError:
        # Waiting would never end: the owner's release() hands over to its own loop's waiters.
        return RuntimeError(
            f"KeyedLock key {_describe(key)} is held by a task of another event loop "
            f"({_task_name(owner)}); one KeyedLock serves one event loop at a time"
        )

    @staticmethod
    def _release_error(key: object, owner: object) -> RuntimeError:
        if owner is None:
            return RuntimeError(f"cannot release KeyedLock key {_describe(key)}: it is not locked")
        return RuntimeError(
            f"cannot release KeyedLock key {_describe(key)}: it is held by another task "
            f"({_task_name(owner)}), not the current one"
        )

    # asyncio ---------------------------------------------------------------

    def _aio_pass_on(self, key: Hashable) -> None:
        if key in self._aio_waiters:
            self._aio_hand_over(key)
        else:
            del self._owners[key]

    def _aio_hand_over(self, key: Hashable) -> None:
        queue = self._aio_waiters[key]
        while queue:
            waiter, fut = queue.popleft()
            # A done future belongs to a waiter that was cancelled or timed out but has not run
            # yet to remove itself; skip it.
            if not fut.done():
                self._owners[key] = waiter
                fut.set_result(None)
                break
        else:
            del self._owners[key]
        if not queue:
            del self._aio_waiters[key]

    def _aio_discard(
        self, key: Hashable, item: tuple[asyncio.Task[Any], asyncio.Future[None]]
    ) -> None:
        queue = self._aio_waiters.get(key)
        if queue is None:
            return
        try:
            queue.remove(item)
        except ValueError:
            pass  # release() already skipped and dropped it
        if not queue:
            del self._aio_waiters[key]

    # trio ------------------------------------------------------------------

    async def _trio_acquire(
        self,
        key: Hashable,
        task: trio.lowlevel.Task,
        timeout: float | None,  # noqa: ASYNC109
    ) -> None:
        lowlevel = _trio_module.lowlevel
        owners = self._owners
        try:
            owner = owners.get(key)
        except TypeError as exc:
            raise _unhashable(key, exc) from exc
        if owner is task:
            raise self._reacquire_error(key)
        # Like trio.Lock: a cancelled task does not get the lock, even a free one.
        await lowlevel.checkpoint_if_cancelled()
        # That checkpoint lets other tasks run only when it raises, so `owner` is still current.
        if owner is None:
            owners[key] = task
            await lowlevel.cancel_shielded_checkpoint()
            return
        if type(owner) is not type(task):
            raise self._foreign_owner_error(key, owner)
        queue = self._trio_waiters.get(key)
        if queue is None:
            queue = self._trio_waiters[key] = deque()
        queue.append(task)

        def abort(_: trio.lowlevel.RaiseCancelT) -> trio.lowlevel.Abort:
            # trio calls this only while we are still parked, i.e. before any hand-over.
            waiters = self._trio_waiters[key]
            waiters.remove(task)
            if not waiters:
                del self._trio_waiters[key]
            succeeded: trio.lowlevel.Abort = lowlevel.Abort.SUCCEEDED
            return succeeded

        if timeout is None:
            await lowlevel.wait_task_rescheduled(abort)
            return
        with _trio_module.move_on_after(timeout) as scope:
            await lowlevel.wait_task_rescheduled(abort)
        if scope.cancelled_caught:
            raise TimeoutError(
                f"timed out after {timeout} s waiting for KeyedLock key {_describe(key)}"
            )

    def _trio_release(self, key: Hashable, task: trio.lowlevel.Task) -> None:
        owners = self._owners
        try:
            owner = owners.get(key)
        except TypeError as exc:
            raise _unhashable(key, exc) from exc
        if owner is not task:
            raise self._release_error(key, owner)
        queue = self._trio_waiters.get(key)
        if queue is None:
            del owners[key]
            return
        waiter = queue.popleft()
        if not queue:
            del self._trio_waiters[key]
        owners[key] = waiter
        _trio_module.lowlevel.reschedule(waiter)


@final
class _KeyGuard:
    """``async with locks(key):`` holds one key for the duration of the block.

    A guard holds no state of its own (ownership lives in the lock), so one guard may be
    entered by several tasks or several times in turn.

    ``__aenter__`` and ``__aexit__`` are plain methods returning an awaitable rather than
    coroutine functions: on the uncontended asyncio path they do their work inline and return
    an already-completed future, which costs no coroutine frame. Everything else is delegated
    to the lock's ``acquire``/``release``.
    """

    __slots__ = ("_key", "_lock")

    _lock: KeyedLock
    _key: Hashable

    def _enter(self) -> Awaitable[None]:
        lock = self._lock
        loop = lock._loop
        # Both checks make sure `loop` is the loop running this code, not one that used the
        # lock earlier and now runs in another thread: the cheap `_thread_id` one where the
        # loop has it, the running loop itself otherwise (uvloop).
        if lock._loop_thread._thread_id == _get_ident() or _get_running_loop() is loop:
            task = _current_task(loop)
            if task is not None:
                owners = lock._owners
                key = self._key
                try:
                    if key not in owners:
                        owners[key] = task
                        return lock._ready  # type: ignore[return-value]
                except TypeError:
                    pass  # acquire() raises the explanatory error
        return lock.acquire(self._key)

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
            lock.release(self._key)  # trio, or a loop the lock has not cached
            return _completed()
        owners = lock._owners
        key = self._key
        waiters = lock._aio_waiters
        if not waiters or key not in waiters:
            # Nobody waits for this key: pop first, check after, restore on a mismatch.
            owner = owners.pop(key, None)
            if owner is task:
                return lock._ready  # type: ignore[return-value]
            if owner is not None:
                owners[key] = owner  # not ours: put it back; release() explains
        elif owners.get(key) is task:
            # Others wait for this key (with many tasks on many keys, some key often has
            # waiters): hand it over as release() would, without its backend detection.
            lock._aio_hand_over(key)
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


async def _completed() -> None:
    """An awaitable that finishes at once, for the paths that have done their work already."""


@final
class _ManyGuard:
    """``async with locks.many(*keys):`` holds several keys, taken in sorted order."""

    __slots__ = ("_keys", "_lock")

    def __init__(self, lock: KeyedLock, keys: tuple[Hashable, ...]) -> None:
        self._lock = lock
        self._keys = keys

    async def __aenter__(self) -> None:
        lock = self._lock
        taken: list[Hashable] = []
        try:
            for key in self._keys:
                await lock.acquire(key)
                taken.append(key)
        except BaseException:
            for key in reversed(taken):
                lock.release(key)
            raise

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for key in reversed(self._keys):
            self._lock.release(key)
