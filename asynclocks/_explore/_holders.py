"""Who holds each semaphore, recorded while an exploration runs (no semaphore remembers it).

``acquire``/``acquire_nowait``/``release`` of asyncio's, trio's and anyio's semaphores are
wrapped while an exploration runs (every schedule: the wrapper is a frame of the await chains a
replay compares), so the deadlock report can name the tasks holding one. A
release by a task that holds none frees the oldest holding (a semaphore may be released by any
task). Only the backend's own classes are wrapped: exploring on asyncio never imports trio.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

from ._common import Backend

# id(semaphore) -> (the semaphore, kept alive so its id is not reused; its holders). A plain
# dict, emptied before every schedule (:func:`reset`): cheaper than weak references per acquire.
_holders: dict[int, tuple[object, list[object]]] = {}
_depth: dict[str, int] = {}
_saved: dict[str, list[tuple[type, str, Any]]] = {}


def reset() -> None:
    """Forget every holder (a new schedule starts)."""
    _holders.clear()


def holders_of(semaphore: object) -> list[object]:
    """The tasks holding ``semaphore`` now, oldest first ([] when none was recorded)."""
    entry = _holders.get(id(semaphore))
    return list(entry[1]) if entry is not None else []


def _add(semaphore: object, task: object) -> None:
    entry = _holders.get(id(semaphore))
    if entry is None:
        _holders[id(semaphore)] = (semaphore, [task])
    else:
        entry[1].append(task)


def _wrap_async(original: Any, current: Callable[[], object], nowait_inside: bool) -> Any:
    # The wrapper's code is named ``acquire`` like the method: the reduction's footprints know
    # a primitive's frames by name.
    if nowait_inside:
        return _wrap_counted(original, current)

    @functools.wraps(original)
    async def acquire(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = await original(self, *args, **kwargs)
        _add(self, current())
        return result

    return acquire


def _wrap_counted(original: Any, current: Callable[[], object]) -> Any:
    @functools.wraps(original)
    async def acquire(self: Any, *args: Any, **kwargs: Any) -> Any:
        me = current()
        held = holders_of(self).count(me)
        result = await original(self, *args, **kwargs)
        # acquire_nowait (wrapped too) may already have recorded this acquisition.
        if holders_of(self).count(me) == held:
            _add(self, me)
        return result

    return acquire


def _wrap_handed_over(original: Any, current: Callable[[], object]) -> Any:
    # anyio's trio Semaphore with fast_acquire=True parks on the trio semaphore's lot when no
    # permit is free: the releasing task hands its permit over without calling acquire or
    # acquire_nowait, the methods that record a holder. The holder is recorded on the trio
    # semaphore inside (where the other acquisitions are recorded) once the wait is over.
    @functools.wraps(original)
    async def acquire(self: Any, *args: Any, **kwargs: Any) -> Any:
        inner = getattr(self, "_Semaphore__original", self)
        me = current()
        held = holders_of(inner).count(me)
        result = await original(self, *args, **kwargs)
        if holders_of(inner).count(me) == held:
            _add(inner, me)
        return result

    return acquire


def _wrap_nowait(original: Any, current: Callable[[], object]) -> Any:
    @functools.wraps(original)
    def acquire_nowait(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = original(self, *args, **kwargs)
        _add(self, current())
        return result

    return acquire_nowait


def _wrap_release(original: Any, current: Callable[[], object]) -> Any:
    @functools.wraps(original)
    def release(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = original(self, *args, **kwargs)
        entry = _holders.get(id(self))
        held = entry[1] if entry is not None else None
        if held:
            me = current()
            if me in held:
                held.remove(me)
            else:
                held.pop(0)
        return result

    return release


def _classes(backend: Backend) -> tuple[list[type], Callable[[], object]]:
    classes: list[type] = []
    current: Callable[[], object]
    if backend == "asyncio":
        import asyncio

        classes.append(asyncio.Semaphore)  # BoundedSemaphore inherits the wrapped methods
        if "anyio" in sys.modules:
            from anyio._backends import _asyncio as anyio_asyncio

            classes.append(anyio_asyncio.Semaphore)

        def current() -> object:
            try:
                return asyncio.current_task()
            except RuntimeError:
                return None

    else:
        import trio

        # anyio's trio Semaphore wraps a trio.Semaphore: the holders are recorded on that, and
        # only anyio's acquire is wrapped (for the permits handed over, see _wrap_handed_over).
        classes.append(trio.Semaphore)
        if "anyio" in sys.modules:
            from anyio._backends import _trio as anyio_trio

            classes.append(anyio_trio.Semaphore)

        def current() -> object:
            try:
                return trio.lowlevel.current_task()
            except RuntimeError:
                return None

    return classes, current


def install(backend: Backend) -> None:
    """Start recording semaphore holders for ``backend`` (nested calls are counted)."""
    depth = _depth.get(backend, 0)
    _depth[backend] = depth + 1
    if depth:
        return
    classes, current = _classes(backend)
    saved: list[tuple[type, str, Any]] = []
    for cls in classes:
        # trio's acquire calls acquire_nowait first; asyncio's and anyio's never do.
        nowait_inside = cls.__module__.startswith("trio")
        wraps_inner = cls.__module__ == "anyio._backends._trio"
        for attr in ("acquire",) if wraps_inner else ("acquire", "acquire_nowait", "release"):
            original = cls.__dict__.get(attr)
            if original is None:
                continue
            if wraps_inner:
                wrapped = _wrap_handed_over(original, current)
            elif attr == "acquire":
                wrapped = _wrap_async(original, current, nowait_inside)
            elif attr == "acquire_nowait":
                wrapped = _wrap_nowait(original, current)
            else:
                wrapped = _wrap_release(original, current)
            saved.append((cls, attr, original))
            setattr(cls, attr, wrapped)
    _saved[backend] = saved


def remove(backend: Backend) -> None:
    """Undo :func:`install` once every nested call has been undone."""
    depth = _depth.get(backend, 0) - 1
    _depth[backend] = max(depth, 0)
    if depth > 0:
        return
    for cls, attr, original in reversed(_saved.pop(backend, [])):
        setattr(cls, attr, original)
    _holders.clear()
