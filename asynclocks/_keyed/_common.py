"""What both backends share: the lock's state, its statistics, the checks and the messages."""

from __future__ import annotations

import asyncio
import itertools
import math
import reprlib
from collections import deque
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, cast, final

from anyio import WouldBlock

if TYPE_CHECKING:
    import trio

    class CachedLoop(asyncio.AbstractEventLoop):
        # BaseEventLoop sets this while run_forever() runs and resets it to None afterwards.
        _thread_id: int | None


#: An asyncio waiter: its ticket, its task, the future that ``release()`` completes, and for a
#: wait with a timeout that the lock's watchdog bounds, its deadline (the loop's clock) and the
#: timeout (for the message); else None and None.
AioWaiter = tuple[int, asyncio.Task[Any], asyncio.Future[None], float | None, float | None]


class _NoLoop:
    """Stands in for "no loop cached yet": its thread id never matches a real thread's."""

    _thread_id = None


NO_LOOP: Final = cast("CachedLoop", _NoLoop())

_key_repr = reprlib.Repr()
_key_repr.maxstring = 60
_key_repr.maxother = 60


class LockState:
    """The state of one KeyedLock, which the backend modules read and change.

    A key is present in ``_owners`` only while some task holds it, and has waiters only while
    held: ownership passes directly from the releasing task to the first waiter. One lock
    serves one event loop at a time, so one ``_owners`` dict serves both backends.
    """

    __slots__ = (
        "_aio_waiters",
        "_idle",
        "_loop",
        "_loop_thread",
        "_owners",
        "_ready",
        "_stock_loop",
        "_tickets",
        "_timed_live",
        "_trio_lots",
        "_watch_at",
        "_watch_loop",
        "_watchdog",
    )

    def __init__(self) -> None:
        # key -> owning task (asyncio.Task or trio.lowlevel.Task). A free key is absent.
        self._owners: dict[Hashable, object] = {}
        # asyncio: key -> waiters in the order of their tickets (FIFO but for many(), see
        # _ManyGuard); present only while non-empty, and only for held keys.
        self._aio_waiters: dict[Hashable, deque[AioWaiter]] = {}
        # Numbers the asyncio acquisitions that wait, in the order they began.
        self._tickets = itertools.count()
        # asyncio: how many waits with a deadline the watchdog bounds are under way: one loop
        # timer per lock, not one per wait (see _asyncio.wait_for_key); at 0 it is cancelled.
        self._timed_live = 0
        # The watchdog's timer, when it fires (never later than the earliest deadline of a
        # wait it bounds), and the loop of those waits (another loop's get timers of their own).
        self._watchdog: asyncio.TimerHandle | None = None
        self._watch_at = 0.0
        self._watch_loop: asyncio.AbstractEventLoop | None = None
        # trio: key -> the parking lot its waiters park in, registered with trio as broken by
        # the key's owner should that task exit without releasing (then it stays, broken).
        self._trio_lots: dict[Hashable, trio.lowlevel.ParkingLot] = {}
        # One callable per task in wait_idle(), which wakes it; called once no key is held.
        self._idle: list[Callable[[], object]] = []
        # The asyncio loop seen last. asyncio._get_running_loop() calls getpid() on every call
        # (a system call); checking that this loop is still running in this thread is far
        # cheaper and just as exact, since a thread runs at most one loop at a time.
        self._loop: asyncio.AbstractEventLoop = NO_LOOP
        # What tells whether `_loop` runs in this thread: the loop itself when its `_thread_id`
        # says so (BaseEventLoop), else NO_LOOP, whose `_thread_id` never matches, so that
        # the uncontended entry falls back to `_get_running_loop() is _loop` (uvloop exposes no
        # thread id; the cached loop and a thread ident alone would not notice the loop being
        # stopped and run in another thread, whose current task would then be taken for ours).
        self._loop_thread: CachedLoop = NO_LOOP
        # A completed future of that loop: what the uncontended ``async with`` entry and exit
        # return to be awaited, since awaiting a done future runs no Python frame.
        self._ready: asyncio.Future[None] | None = None
        # Whether `_loop` makes its futures and tells the time as asyncio's own loops do
        # (``Future(loop=loop)``, ``time.monotonic()``): a wait then does both without the
        # loop's two Python methods (uvloop, or a loop with its own clock, keeps them).
        self._stock_loop = False


def wake_idle(state: LockState) -> None:
    """Wake every task in ``wait_idle()``; callers check first that no key is held."""
    wakers, state._idle = state._idle, []
    for wake in wakers:
        wake()


def owner_of(state: LockState, key: Hashable) -> object | None:
    """Return the task holding ``key``, or None; raise the explanatory error if unhashable."""
    try:
        return state._owners.get(key)
    except TypeError as exc:
        raise unhashable(key, exc) from exc


def try_take(state: LockState, key: Hashable, task: object) -> object | None:
    """Give ``key`` to ``task`` and return None if it is free, else return its owner."""
    owner = owner_of(state, key)
    if owner is None:
        state._owners[key] = task
    elif owner is task:
        raise reacquire_error(key)
    return owner


def take_nowait(state: LockState, key: Hashable, task: object) -> None:
    """``acquire_nowait()`` on either backend, once it knows the current task."""
    if try_take(state, key, task) is not None:
        raise WouldBlock


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


# ---------------------------------------------------------------- checks and messages


def describe(key: object) -> str:
    return _key_repr.repr(key)


def task_name(task: object) -> str:
    get_name = getattr(task, "get_name", None)
    if get_name is not None:
        return repr(get_name())
    return repr(getattr(task, "name", task))


def check_timeout(timeout: float) -> None:
    if not isinstance(timeout, int | float) or isinstance(timeout, bool):
        raise TypeError(
            f"timeout must be a number of seconds or None, got {type(timeout).__qualname__!r}"
        )
    if math.isnan(timeout) or timeout < 0:
        raise ValueError(
            f"timeout must be a non-negative number of seconds or None, got {timeout!r}"
        )


def timed_out(key: object, timeout: float, many: int | None = None) -> TimeoutError:
    # `many`: how many keys the KeyedLock.many() that waited for `key` takes, for its message.
    where = "" if many is None else f" (KeyedLock.many() of {many} keys)"
    return TimeoutError(
        f"timed out after {timeout} s waiting for KeyedLock key {describe(key)}{where}"
    )


def unhashable(key: object, exc: TypeError) -> TypeError:
    return TypeError(
        f"KeyedLock keys must be hashable, got an object of unhashable type "
        f"{type(key).__qualname__!r}: {exc}"
    )


def no_backend() -> RuntimeError:
    return RuntimeError("KeyedLock must be used from inside an asyncio task or a trio task")


def reacquire_error(key: object) -> RuntimeError:
    return RuntimeError(
        f"the current task already holds KeyedLock key {describe(key)}; KeyedLock is not "
        "reentrant, so acquiring it again would deadlock"
    )


def foreign_owner_error(key: object, owner: object) -> RuntimeError:
    # Waiting would never end: the owner's release() hands over to its own loop's waiters.
    return RuntimeError(
        f"KeyedLock key {describe(key)} is held by a task of another event loop "
        f"({task_name(owner)}); one KeyedLock serves one event loop at a time"
    )


def release_error(key: object, owner: object) -> RuntimeError:
    if owner is None:
        return RuntimeError(f"cannot release KeyedLock key {describe(key)}: it is not locked")
    return RuntimeError(
        f"cannot release KeyedLock key {describe(key)}: it is held by another task "
        f"({task_name(owner)}), not the current one"
    )
