"""KeyedLock on trio, with trio.Lock's semantics.

Imported only once a trio task uses a KeyedLock (trio is an optional extra), so this module
may import trio. What it takes from ``trio.Lock`` (trio's ``_sync.py``):

- ``acquire`` is always a checkpoint; a cancelled task does not take even a free key.
- Waiters park in a :class:`trio.lowlevel.ParkingLot` per contended key, which is registered
  with trio as broken by the key's owner (``add_parking_lot_breaker``): if that task exits
  without releasing, trio breaks the lot and every waiter raises
  :exc:`trio.BrokenResourceError` instead of hanging. The key then stays held, and broken,
  as a ``trio.Lock`` does: later acquirers raise the same error.
- Every entry point is protected from :exc:`KeyboardInterrupt` (``enable_ki_protection``): a
  Ctrl-C arriving while the lock's state is half updated is delivered at the next checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from functools import partial
from typing import Any, final

import trio
from trio.lowlevel import (
    Abort,
    ParkingLot,
    RaiseCancelT,
    Task,
    add_parking_lot_breaker,
    cancel_shielded_checkpoint,
    checkpoint_if_cancelled,
    current_task,
    enable_ki_protection,
    remove_parking_lot_breaker,
    reschedule,
    wait_task_rescheduled,
)

from ._common import (
    LockState,
    describe,
    foreign_owner_error,
    reacquire_error,
    release_error,
    take_nowait,
    task_name,
    timed_out,
    unhashable,
    wake_idle,
)


def protect(functions: tuple[Callable[..., Any], ...]) -> None:
    """Protect from KeyboardInterrupt the facade functions that lead into this module.

    Since trio 0.28 ``enable_ki_protection`` marks the function's code object rather than
    wrapping it, so marking functions defined elsewhere protects them wherever they are
    called. (On trio 0.27 it wraps, and this does nothing; the functions of this module, which
    change the lock's state, are protected on every version.)
    """
    for function in functions:
        enable_ki_protection(function)


def _broken(key: object, owner: object) -> trio.BrokenResourceError:
    return trio.BrokenResourceError(
        f"KeyedLock key {describe(key)} is broken: the task holding it "
        f"({task_name(owner)}) exited without releasing it"
    )


@final
class TrioBackend:
    """The trio half of KeyedLock; the facade calls it once it has detected a trio task."""

    __slots__ = ()

    @enable_ki_protection
    async def acquire(
        self,
        state: LockState,
        key: Hashable,
        timeout: float | None,  # noqa: ASYNC109 - see KeyedLock.acquire
    ) -> None:
        task = current_task()
        try:
            owner = state._owners.get(key)  # owner_of(), inlined: a contended entry is frames
        except TypeError as exc:
            raise unhashable(key, exc) from exc
        if owner is task:
            raise reacquire_error(key)
        # Like trio.Lock: a cancelled task does not get the lock, even a free one.
        await checkpoint_if_cancelled()
        # That checkpoint lets other tasks run only when it raises, so `owner` is still current.
        if owner is None:
            state._owners[key] = task
            await cancel_shielded_checkpoint()
            return
        if not isinstance(owner, Task):
            raise foreign_owner_error(key, owner)
        lot = state._trio_lots.get(key)
        if lot is None:
            lot = ParkingLot()
            try:
                # Raises if the owner has exited already (it left the key held, unwatched).
                add_parking_lot_breaker(owner, lot)
            except trio.BrokenResourceError:
                raise _broken(key, owner) from None
            state._trio_lots[key] = lot
        try:
            if timeout is None:
                await lot.park()
                return
            with trio.move_on_after(timeout) as scope:
                await lot.park()
        except trio.BrokenResourceError:
            # The holder exited while we waited; it is still the owner, as it never released.
            raise _broken(key, state._owners.get(key)) from None
        if scope.cancelled_caught:
            raise timed_out(key, timeout)

    @enable_ki_protection
    def acquire_nowait(self, state: LockState, key: Hashable) -> None:
        take_nowait(state, key, current_task())

    @enable_ki_protection
    def release(self, state: LockState, key: Hashable) -> None:
        task = current_task()
        owners = state._owners
        try:
            owner = owners.get(key)  # owner_of(), inlined as in acquire()
        except TypeError as exc:
            raise unhashable(key, exc) from exc
        if owner is not task:
            raise release_error(key, owner)
        lot = state._trio_lots.get(key)
        if lot is not None:
            remove_parking_lot_breaker(task, lot)
            successors = lot.unpark(count=1)
            if successors:
                # The lot stays with the key, watching its new owner, even if now empty.
                owners[key] = successors[0]
                add_parking_lot_breaker(successors[0], lot)
                return
            del state._trio_lots[key]  # no waiter left (all cancelled or timed out)
        del owners[key]
        if state._idle and not owners:
            wake_idle(state)

    @enable_ki_protection
    async def wait_idle(self, state: LockState) -> None:
        await checkpoint_if_cancelled()
        if not state._owners:
            await cancel_shielded_checkpoint()
            return
        wake = partial(reschedule, current_task())
        state._idle.append(wake)

        def abort(_: RaiseCancelT) -> Abort:
            # trio calls this only while we wait, i.e. before wake_idle() took `wake` out.
            state._idle.remove(wake)
            return Abort.SUCCEEDED

        await wait_task_rescheduled(abort)
