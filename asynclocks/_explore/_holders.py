"""Who holds each semaphore, recorded while an exploration runs (no semaphore remembers it).

``acquire``/``acquire_nowait``/``release`` of asyncio's, trio's and anyio's semaphores are
wrapped while a session is open, so the deadlock report can name the tasks holding one. A
release by a task that holds none frees the oldest holding (a semaphore may be released by any
task). Only the backend's own classes are wrapped: exploring on asyncio never imports trio.
"""

from __future__ import annotations

import functools
import sys
import weakref
from collections.abc import Callable
from typing import Any

from ._common import Backend

_holders: weakref.WeakKeyDictionary[Any, list[object]] = weakref.WeakKeyDictionary()
_depth: dict[str, int] = {}
_saved: dict[str, list[tuple[type, str, Any]]] = {}


def holders_of(semaphore: object) -> list[object]:
    """The tasks holding ``semaphore`` now, oldest first ([] when none was recorded)."""
    try:
        return list(_holders.get(semaphore, ()))
    except TypeError:  # not weak-referenceable: never recorded
        return []


def _add(semaphore: object, task: object) -> None:
    try:
        _holders.setdefault(semaphore, []).append(task)
    except TypeError:
        pass


def _wrap_async(original: Any, current: Callable[[], object]) -> Any:
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
        held = _holders.get(self)
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

        # anyio's trio Semaphore wraps a trio.Semaphore: the holders are recorded on that.
        classes.append(trio.Semaphore)

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
        for attr, wrap in (
            ("acquire", _wrap_async),
            ("acquire_nowait", _wrap_nowait),
            ("release", _wrap_release),
        ):
            original = cls.__dict__.get(attr)
            if original is None:
                continue
            saved.append((cls, attr, original))
            setattr(cls, attr, wrap(original, current))
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
