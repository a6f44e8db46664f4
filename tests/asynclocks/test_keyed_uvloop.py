"""KeyedLock's uncontended path under uvloop, whose loop has no ``_thread_id`` to validate."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from types import ModuleType

import pytest

from asynclocks import KeyedLock


@pytest.fixture
def uvloop() -> ModuleType:
    module: ModuleType = pytest.importorskip("uvloop")
    return module


def _run(uvloop: ModuleType, main: Callable[[], Awaitable[None]]) -> None:
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()


def test_uncontended_guard_creates_no_coroutine(uvloop: ModuleType) -> None:
    async def main() -> None:
        locks = KeyedLock()
        # The first use caches the loop (through acquire(), a coroutine).
        async with locks("warm-up"):
            pass
        guard = locks("k")
        # Typed as the protocol's coroutine, but the point is that it is not one.
        entered: Awaitable[None] = guard.__aenter__()
        assert not asyncio.iscoroutine(entered), "entry left the fast path"
        await entered
        assert locks.locked("k")
        exited: Awaitable[None] = guard.__aexit__(None, None, None)
        assert not asyncio.iscoroutine(exited), "exit left the fast path"
        await exited
        assert len(locks) == 0

    _run(uvloop, main)


def test_fast_path_never_calls_acquire_or_release(
    uvloop: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    acquire, release = KeyedLock.acquire, KeyedLock.release

    async def counting_acquire(self: KeyedLock, key: object, **kwargs: float | None) -> None:
        calls.append("acquire")
        await acquire(self, key, **kwargs)

    def counting_release(self: KeyedLock, key: object) -> None:
        calls.append("release")
        release(self, key)

    monkeypatch.setattr(KeyedLock, "acquire", counting_acquire)
    monkeypatch.setattr(KeyedLock, "release", counting_release)

    async def main() -> None:
        locks = KeyedLock()
        async with locks("warm-up"):
            pass
        calls.clear()
        for i in range(10):
            async with locks(i):
                assert locks.locked(i)
        assert calls == []
        assert len(locks) == 0

    _run(uvloop, main)


def test_cached_loop_run_again_in_another_thread_is_not_mistaken_for_ours(
    uvloop: ModuleType,
) -> None:
    """The lock caches loop A; A then runs a task in another thread, stopped mid-step, while
    this thread runs loop B. A guard entered on B must belong to B's task, not to A's."""
    locks = KeyedLock()
    first: asyncio.AbstractEventLoop = uvloop.new_event_loop()

    async def cache_first() -> None:
        async with locks("warm-up"):
            pass

    first.run_until_complete(cache_first())
    in_step, resume = threading.Event(), threading.Event()

    async def parked() -> None:
        # Blocks the thread inside a task step, so `first` has a current task meanwhile.
        in_step.set()
        resume.wait()

    thread = threading.Thread(target=first.run_until_complete, args=(parked(),))
    thread.start()
    try:
        assert in_step.wait(timeout=30)

        async def on_second() -> None:
            me = asyncio.current_task()
            async with locks("k"):
                # Releasing checks ownership: it raises if the key went to `first`'s task.
                locks.release("k")
                locks.acquire_nowait("k")
                assert me is not None

        _run(uvloop, on_second)
    finally:
        resume.set()
        thread.join()
        first.close()
    assert len(locks) == 0
