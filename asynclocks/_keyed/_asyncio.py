"""KeyedLock on asyncio: waiting on futures, handing keys over, waiting for idle.

The uncontended paths are not here but inlined in ``_lock`` (``KeyedLock.acquire`` and the
``async with`` guard), where a function call would be a measurable share of their cost.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import deque
from collections.abc import Callable, Hashable
from typing import Any, cast

from ._common import (
    AioWaiter,
    LockState,
    foreign_owner_error,
    owner_of,
    release_error,
    timed_out,
    wake_idle,
)

_Future = asyncio.Future
_monotonic = time.monotonic

# On Python 3.11 ``asyncio.current_task`` is a Python function that looks up this dict; calling
# the dict's C ``get`` directly saves a frame on every acquire and release. Later versions
# implement ``current_task`` in C, so use it there.
current_task: Callable[[asyncio.AbstractEventLoop], asyncio.Task[Any] | None]
_current_tasks: dict[asyncio.AbstractEventLoop, asyncio.Task[Any]] | None = getattr(
    asyncio.tasks, "_current_tasks", None
)
if sys.version_info < (3, 12) and isinstance(_current_tasks, dict):
    current_task = _current_tasks.get
else:  # pragma: no cover - exercised on newer Pythons only
    current_task = asyncio.current_task


async def wait_for_key(
    state: LockState,
    key: Hashable,
    task: asyncio.Task[Any],
    owner: object,
    loop: asyncio.AbstractEventLoop,
    timeout: float | None,  # noqa: ASYNC109 - see KeyedLock.acquire
    began: int | None = None,
    deadline: float | None = None,
) -> None:
    """Queue ``task`` behind ``owner`` and wait until ``release()`` hands it the key.

    ``began`` is the ticket a ``many()`` drew when it began; the waiter goes ahead of every
    waiter queued after that (see ``_ManyGuard``). Without it the waiter joins at the end.
    With a ``timeout``, the wait ends at ``deadline`` (the loop's clock; ``timeout`` from now
    when omitted) with a :exc:`TimeoutError` that names ``timeout``.

    The deadline is kept in the waiter's entry, and one loop timer per lock, the watchdog,
    fires at the earliest deadline of all the waits (see ``_watch``). A timer per wait would
    cost a handle, a heap push, a cancel and a heap pop on each: more than the rest of a
    contended hand-over. Only a wait on another loop than the one the watchdog serves (one
    lock used by several loops in turn) gets a timer of its own.
    """
    if not isinstance(owner, asyncio.Task) or owner.get_loop() is not loop:
        raise foreign_owner_error(key, owner)
    stock = state._stock_loop
    fut: asyncio.Future[None] = _Future(loop=loop) if stock else loop.create_future()
    ticket = next(state._tickets) if began is None else began
    timer = None
    if timeout is not None:
        if deadline is None:
            deadline = (_monotonic() if stock else loop.time()) + timeout
        if state._timed_live and state._watch_loop is not loop:
            timer = loop.call_at(deadline, _expire, fut, key, timeout)
            deadline = timeout = None  # not the watchdog's
    item = (ticket, task, fut, deadline, timeout)
    queue = state._aio_waiters.get(key)
    if queue is None:
        queue = state._aio_waiters[key] = deque()
    if began is None or not queue or queue[-1][0] < ticket:
        queue.append(item)  # a fresh ticket is the latest: no comparison needed
    else:
        position = len(queue) - 1
        while position and queue[position - 1][0] > ticket:
            position -= 1
        queue.insert(position, item)
    if deadline is not None:
        state._timed_live += 1
        state._watch_loop = loop
        if state._watchdog is None or deadline < state._watch_at:
            _set_watchdog(state, loop, deadline)
    try:
        await fut
    except BaseException:
        if state._owners.get(key) is task:
            # The key was handed to us, then we were cancelled before we could run: pass it
            # on, or the next waiter would never be woken.
            _pass_on(state, key)
        else:
            _discard(state, key, item)
        raise
    finally:
        if deadline is not None:
            state._timed_live -= 1
            if not state._timed_live and state._watchdog is not None:
                state._watchdog.cancel()  # no wait left to bound
                state._watchdog = None
        elif timer is not None:
            timer.cancel()


def _set_watchdog(state: LockState, loop: asyncio.AbstractEventLoop, when: float) -> None:
    if state._watchdog is not None:
        state._watchdog.cancel()
    state._watch_at = when
    state._watchdog = loop.call_at(when, _watch, state, loop)


def _watch(state: LockState, loop: asyncio.AbstractEventLoop) -> None:
    """The watchdog: fail every wait whose deadline has come, then wait for the next one.

    It looks at every waiter, which is cheap where the waits are short next to the timeout:
    it then fires about once per timeout. (If many waits expire one after another behind a
    stalled holder, each expiry costs a look at all the waiters.)
    """
    state._watchdog = None
    # The loop runs a timer up to its clock's resolution early: its time has come all the same.
    now = max(state._watch_at, loop.time())
    earliest = None
    due: list[tuple[float, asyncio.Future[None], Hashable, float]] = []
    for key, queue in state._aio_waiters.items():
        for _, _, fut, deadline, timeout in queue:
            if deadline is None or fut.done():
                continue  # no deadline (or its own timer), or served, cancelled, timed out
            if deadline <= now:
                due.append((deadline, fut, key, cast(float, timeout)))
            elif earliest is None or deadline < earliest:
                earliest = deadline
    # In the order of the deadlines, as timers of their own would have fired on a late loop:
    # the waiters wake up in that order.
    due.sort(key=_deadline)
    for _, fut, key, timeout in due:
        fut.set_exception(timed_out(key, timeout))
    if earliest is not None:
        _set_watchdog(state, loop, earliest)


def _deadline(entry: tuple[float, asyncio.Future[None], Hashable, float]) -> float:
    return entry[0]


def release(state: LockState, key: Hashable, task: asyncio.Task[Any]) -> None:
    """Release ``key`` held by ``task``, handing it to the first waiter if there is one."""
    owner = owner_of(state, key)
    if owner is not task:
        raise release_error(key, owner)
    _pass_on(state, key)


def hand_over(state: LockState, key: Hashable) -> None:
    """Give the held ``key`` to its first live waiter, or free it if none is left."""
    queue = state._aio_waiters[key]
    while queue:
        _, waiter, fut, _, _ = queue.popleft()
        # A done future belongs to a waiter that was cancelled or timed out but has not run
        # yet to remove itself; skip it.
        if not fut.done():
            state._owners[key] = waiter
            fut.set_result(None)
            break
    else:
        _free(state, key)
    if not queue:
        del state._aio_waiters[key]


async def wait_idle(state: LockState, loop: asyncio.AbstractEventLoop) -> None:
    """Wait until no key is held; return at once, without yielding, if none is."""
    if not state._owners:
        return
    fut: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not fut.done():  # else cancelled, and about to remove itself
            fut.set_result(None)

    state._idle.append(wake)
    try:
        await fut
    except BaseException:
        if wake in state._idle:
            state._idle.remove(wake)
        raise


def _pass_on(state: LockState, key: Hashable) -> None:
    if key in state._aio_waiters:
        hand_over(state, key)
    else:
        _free(state, key)


def _free(state: LockState, key: Hashable) -> None:
    owners = state._owners
    del owners[key]
    if state._idle and not owners:
        wake_idle(state)


def _discard(state: LockState, key: Hashable, item: AioWaiter) -> None:
    queue = state._aio_waiters.get(key)
    if queue is None:
        return
    try:
        queue.remove(item)
    except ValueError:
        pass  # release() already skipped and dropped it
    if not queue:
        del state._aio_waiters[key]


def _expire(fut: asyncio.Future[None], key: Hashable, timeout: float) -> None:
    # Runs as a loop callback; if ownership was already handed over, the acquire succeeded and
    # the late timer must not undo it.
    if not fut.done():
        fut.set_exception(timed_out(key, timeout))
