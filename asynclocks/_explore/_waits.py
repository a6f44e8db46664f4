"""What a suspended task waits in: the primitive, why it is shut, who holds it, why it woke.

Shared by both backends for the deadlock report (:func:`describe_wait`) and, while tracing, for
the wake-up events of a trace (:func:`wake_text`). Primitives are recognised by class name and
read through their private state (asyncio, trio and anyio on either backend), so nothing here
imports trio. A semaphore remembers no holders of its own: :mod:`._holders` records them.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import _holders
from ._common import describe_object, frames, is_library

#: Primitive kinds by class name (any module: asyncio, trio, anyio's backends and anyio's own).
_KINDS = {
    "Lock": "lock",
    "StrictFIFOLock": "lock",
    "Semaphore": "semaphore",
    "BoundedSemaphore": "semaphore",
    "Condition": "condition",
    "Event": "event",
    "CapacityLimiter": "limiter",
    "MemoryObjectReceiveStream": "receive",
    "MemoryReceiveChannel": "receive",
    "MemoryObjectSendStream": "send",
    "MemorySendChannel": "send",
    "Queue": "queue",
    "PriorityQueue": "queue",
    "LifoQueue": "queue",
}

#: What waking from each kind of wait means (the trace's "woke: ..." line).
_WAKES = {
    "lock": "acquired",
    "semaphore": "acquired",
    "condition": "notified",
    "event": "set",
    "limiter": "token borrowed",
    "receive": "ready to receive",
    "send": "ready to send",
    "queue": "ready",
}


@dataclass
class Waited:
    """A suspended task's innermost wait: the primitive, the library functions it is in, and,
    for a wait no library frame explains, the user object and the thing awaited."""

    obj: object | None
    functions: tuple[str, ...]
    user_locals: dict[str, Any]


def waited(coro: Any) -> Waited:
    """Where a suspended coroutine waits: the object whose method its innermost user frame
    awaits, and the names of the library functions below that frame."""
    obj: object | None = None
    functions: list[str] = []
    user_locals: dict[str, Any] = {}
    seen_user = False
    for frame in frames(coro):
        if not is_library(frame.f_code.co_filename):
            seen_user = True
            obj = None
            functions = []
            user_locals = frame.f_locals
            continue
        if seen_user:
            if not functions:
                obj = frame.f_locals.get("self")
            functions.append(frame.f_code.co_name)
    return Waited(obj, tuple(functions), user_locals if obj is None else {})


def _inner(obj: object) -> object:
    """anyio's trio classes wrap trio's in a name-mangled ``__original``."""
    name = type(obj).__name__
    inner = getattr(obj, f"_{name}__original", None)
    return obj if inner is None else inner


def kind_of(obj: object | None) -> str | None:
    """``"lock"``, ``"semaphore"``, ... for a known primitive; None otherwise."""
    if obj is None:
        return None
    return _KINDS.get(type(obj).__name__)


def wake_text(coro: Any) -> str | None:
    """What a task resuming now was woken by, from where it was suspended (None: a plain
    yield such as ``sleep(0)``, or nothing known)."""
    where = waited(coro)
    kind = kind_of(where.obj)
    if kind is None or any("checkpoint" in name for name in where.functions):
        # A checkpoint inside the primitive (anyio yields once after a fast acquire) is a
        # plain yield: the task was not blocked, nothing woke it.
        return None
    if kind == "condition" and "wait" not in where.functions:
        return f"{describe_object(where.obj)}'s lock acquired"
    return f"{describe_object(where.obj)} {_WAKES[kind]}"


#: How the backends name a task for the report (None: not one of the scenario's) and tell
#: whether it has finished.
NameOf = Callable[[object], str | None]
Finished = Callable[[object], bool]


@dataclass
class Described:
    """A wait as the deadlock report shows it."""

    waits_on: str
    state: str = ""
    holder: object | None = None


def _holders_text(holders: list[object], name_of: NameOf, finished: Finished) -> str:
    names: list[str] = []
    for task in holders:
        name = name_of(task)
        if name is None:
            names.append("a task outside the scenario")
        elif finished(task):
            names.append(f"{name}, which finished without releasing it")
        else:
            names.append(name)
    return "; ".join(names)


def _live(holders: list[object], name_of: NameOf, finished: Finished) -> object | None:
    for task in holders:
        if name_of(task) is not None and not finished(task):
            return task
    return None


def _lock_owner(lock: object, owner_of: Callable[[object], object | None]) -> object | None:
    inner = _inner(lock)
    for attr in ("_owner", "_owner_task"):
        owner: object | None = getattr(inner, attr, None)
        if owner is not None:
            return owner
    return owner_of(inner)


def _locked(lock: object) -> bool | None:
    method = getattr(lock, "locked", None)
    if callable(method):
        try:
            return bool(method())
        except Exception:  # noqa: BLE001 - a user's locked() must not break the report
            return None
    return None


def _lock_state(
    lock: object,
    owner_of: Callable[[object], object | None],
    name_of: NameOf,
    finished: Finished,
) -> tuple[str, object | None]:
    owner = _lock_owner(lock, owner_of)
    if owner is not None:
        return "held by " + _holders_text([owner], name_of, finished), _live(
            [owner], name_of, finished
        )
    if _locked(lock) is False:
        return "which is free: nobody holds it, yet no one woke this task", None
    return "", None


def describe_wait(
    coro: Any,
    owner_of: Callable[[object], object | None],
    name_of: NameOf,
    finished: Finished,
) -> Described | None:
    """The primitive a blocked task waits in, what keeps it shut and its live holder.

    Args:
        coro: The blocked task's coroutine.
        owner_of: The recorded owner of a lock that does not remember its own (asyncio.Lock).
        name_of: A task's name in the report, None when it is not one of the scenario's.
        finished: Whether a task has finished.

    Returns:
        None when the task waits in nothing recognised (the backend then says what it knows).
    """
    where = waited(coro)
    obj = where.obj
    kind = kind_of(obj)
    if obj is None or kind is None:
        return _user_primitive(where)
    name = describe_object(obj)
    inner = _inner(obj)
    if kind == "lock":
        state, holder = _lock_state(obj, owner_of, name_of, finished)
        return Described(name, state, holder)
    if kind == "semaphore":
        holders = _holders.holders_of(inner)
        value = getattr(inner, "_value", None)
        if holders:
            return Described(
                name,
                "held by " + _holders_text(holders, name_of, finished),
                _live(holders, name_of, finished),
            )
        if value:
            return Described(name, f"which has {value} permit(s) free, yet no one woke this task")
        return Described(name, "no permit free")
    if kind == "condition":
        lock = getattr(obj, "_lock", None)
        if "wait" in where.functions:
            text = "waiting to be notified; no task notified it"
            return Described(name, text)
        if lock is not None:
            state, holder = _lock_state(lock, owner_of, name_of, finished)
            return Described(f"{name}'s lock", state, holder)
        return Described(name)
    if kind == "event":
        is_set = getattr(obj, "is_set", None)
        if callable(is_set) and not is_set():
            return Described(name, "not set; no task set it")
        return Described(name)
    if kind == "limiter":
        borrowers = list(getattr(inner, "_borrowers", ()))
        total = getattr(inner, "_total_tokens", "?")
        if borrowers:
            tasks = [b for b in borrowers if name_of(b) is not None]
            text = f"all {total} token(s) borrowed"
            if tasks:
                text += " by " + _holders_text(tasks, name_of, finished)
            return Described(name, text, _live(tasks, name_of, finished))
        return Described(name, f"{total} token(s)")
    if kind in ("receive", "send"):
        return Described(name, _stream_state(kind, getattr(obj, "_state", None)))
    if kind == "queue":
        size = getattr(obj, "qsize", None)
        empty = callable(size) and size() == 0
        return Described(name, "empty" if empty else "full")
    return Described(name)


def _stream_state(kind: str, state: object) -> str:
    if state is None:
        return ""
    buffer = getattr(state, "buffer", None)
    if buffer is None:
        buffer = getattr(state, "data", ())
    senders = getattr(state, "open_send_channels", "?")
    receivers = getattr(state, "open_receive_channels", "?")
    size = getattr(state, "max_buffer_size", "?")
    if kind == "receive":
        return f"empty; {senders} send stream(s) still open, no task sending"
    return (
        f"full ({len(buffer or ())} of {size} buffered); {receivers} receive stream(s) open, "
        "no task receiving"
    )


def _user_primitive(where: Waited) -> Described | None:
    """A wait on a bare future that a primitive written in the user's code keeps in a queue."""
    owner = where.user_locals.get("self")
    if owner is None:
        return None
    # The future the method awaits is one of its locals, and one of its object's queues holds it.
    mine = [value for name, value in where.user_locals.items() if name != "self"]
    attrs = getattr(owner, "__dict__", None) or {}
    for attr, value in attrs.items():
        if isinstance(value, (collections.deque, list, set, dict, tuple)) and any(
            item is local for item in value for local in mine
        ):
            module = type(owner).__module__.rpartition(".")[2]
            name = f"{module}.{type(owner).__qualname__.rpartition('<locals>.')[2]}"
            state = ""
            locked = _locked(owner)
            if locked is False:
                state = "which is free: nobody holds it, yet no one woke this task"
            elif locked:
                state = "locked"
            return Described(f"{name} (a future in its {attr} queue)", state)
    return None
