"""The events a traced schedule shows between steps, as each backend lets them be seen.

Called by the backends only while a trace is recorded (the reported schedule's replays), never
on the search's hot path. Each function returns a :class:`~._common.TraceEvent` or None; a
recorder of other kinds (an injected fault, say) makes its own ``TraceEvent(kind, detail,
task)`` and hands it to the backend's pending list the same way.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ._common import TraceEvent, describe_end
from ._waits import waited, wake_text

#: Timer callbacks that are a timeout firing, by ``__qualname__``, with what to call them.
_TIMEOUT_CALLBACKS = {
    "Timeout._on_timeout": "asyncio.timeout expired",
    "_release_waiter": "asyncio.wait_for timed out",
    "CancelScope._timeout": "anyio deadline expired",
    "CancelScope._deliver_cancellation": "",  # anyio re-delivering, not a new timeout
}


def time_event(now: float) -> TraceEvent:
    """The virtual clock jumped to ``now`` (every task was waiting on a timer)."""
    return TraceEvent("time", f"virtual time advanced to {now:g} s")


def wake_event(task: int, coro: Any, cancelled: bool) -> TraceEvent | None:
    """Why a task resumes: cancelled, or woken by the primitive it was suspended in."""
    if cancelled:
        return TraceEvent("cancelled", "woke with a cancellation", task)
    text = wake_text(coro)
    return None if text is None else TraceEvent("woke", text, task)


# -- asyncio ----------------------------------------------------------------------------------


def asyncio_cancelled(task: Any, handles: Iterable[Any]) -> bool:
    """Whether this step of an asyncio task delivers a cancellation to it."""
    if getattr(task, "_must_cancel", False):
        return True
    for handle in handles:
        for arg in getattr(handle, "_args", None) or ():
            cancelled = getattr(arg, "cancelled", None)
            if callable(cancelled) and getattr(arg, "done", lambda: False)() and cancelled():
                return True
    return False


def asyncio_timer_event(handle: Any, ids: dict[Any, int]) -> TraceEvent | None:
    """A due timer that is a timeout firing (asyncio.timeout, wait_for, anyio's deadlines)."""
    callback = getattr(handle, "_callback", None)
    name = getattr(getattr(callback, "__func__", callback), "__qualname__", "")
    text = _TIMEOUT_CALLBACKS.get(name)
    if not text:
        return None
    owner = getattr(callback, "__self__", None)
    target = getattr(owner, "_task", None) or getattr(owner, "_host_task", None)
    return TraceEvent("timeout", text, ids.get(target))


def asyncio_end(task: Any) -> str:
    """How a finished asyncio task ended."""
    if task.cancelled():
        return describe_end(None, True, None)
    error = task.exception()
    return describe_end(error, False, None if error is not None else task.result())


# -- trio -------------------------------------------------------------------------------------


def _is_cancelled(error: object) -> bool:
    return type(error).__name__ == "Cancelled"


def trio_cancelled(task: Any) -> bool:
    """Whether a trio task about to run resumes with a Cancelled."""
    sent = getattr(task, "_next_send", None)
    return _is_cancelled(getattr(sent, "error", sent))


def trio_timeout(task: Any, now: float, origin: float, ids: dict[Any, int]) -> TraceEvent | None:
    """A cancelled trio task's cancellation came from a deadline that has passed.

    A ``kind == "time"`` event (never shown) means the expired deadline was a sleep's own: the
    task woke from ``trio.sleep``/``anyio.sleep``, it was not cancelled. None: no deadline
    passed (a plain cancellation). A sleep that ends at the instant a scope around it is
    cancelled (a timeout fired early, a cancellation) wakes with that scope's cancellation: the
    scopes outside the sleep's own are looked at too.
    """
    status = getattr(task, "_cancel_status", None)
    innermost = True
    slept = cancelled = False
    for _ in range(100):
        if status is None:
            break
        scope = getattr(status, "_scope", None)
        if getattr(scope, "cancel_called", False):
            deadline = getattr(scope, "deadline", None)
            if deadline is not None and deadline <= now:
                if innermost and in_sleep(task):
                    slept = True
                else:
                    detail = f"deadline {deadline - origin:g} s expired"
                    return TraceEvent("timeout", detail, ids.get(task))
            else:
                cancelled = True
        innermost = False
        status = getattr(status, "_parent", None)
    return TraceEvent("time", "slept") if slept and not cancelled else None


def in_sleep(task: Any) -> bool:
    """Whether a trio task waits in ``trio.sleep``/``sleep_until`` (anyio's sleeps on trio too).

    Its innermost cancel scope is then the sleep's own (``sleep_until`` is ``with
    move_on_at(deadline): await sleep_forever()``): that deadline ends a sleep, it is no timeout.
    A bare ``sleep_forever`` opens no scope, so the innermost one is the caller's.
    """
    return "sleep_until" in waited(task.coro).functions


def trio_end(result: Any) -> str:
    """How a trio task ended, from the outcome trio handed to ``task_exited``."""
    error = getattr(result, "error", None)
    if error is not None:
        return (
            describe_end(None, True, None)
            if _is_cancelled(error)
            else describe_end(error, False, None)
        )
    return describe_end(None, False, getattr(result, "value", None))
