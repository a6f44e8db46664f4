"""What KeyedLock takes from trio.Lock on trio: broken keys and KeyboardInterrupt protection.

Both are trio's alone: asyncio has no KeyboardInterrupt protection, and an asyncio.Lock whose
holder ends stays locked (the last test shows KeyedLock matches that on asyncio).
"""

from __future__ import annotations

import signal
from collections.abc import Hashable

import anyio
import pytest
import trio
import trio.testing

from asynclocks import KeyedLock, KeyedLockStatistics

pytestmark = pytest.mark.anyio


def _broken(key: str, holder: str) -> str:
    return (
        rf"KeyedLock key '{key}' is broken: the task holding it \('{holder}'\) exited without "
        "releasing it"
    )


async def _exit_holding(locks: KeyedLock, *keys: Hashable) -> None:
    """A task that acquires and returns without releasing: the bug trio.Lock reports."""
    for key in keys:
        await locks.acquire(key)


# ---------------------------------------------------------------- a holder that exits


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_trio_waiters_raise_broken_when_the_holder_exits_holding_the_key(
    anyio_backend: str,
) -> None:
    locks = KeyedLock()
    leave = trio.Event()
    broken: list[int] = []

    async def holder() -> None:
        await locks.acquire("k")
        await leave.wait()

    async def waiter(n: int) -> None:
        with pytest.raises(trio.BrokenResourceError, match=_broken("k", "holder")):
            await locks.acquire("k")
        broken.append(n)

    with trio.fail_after(5):  # the bug this fixes is a hang: fail instead
        async with trio.open_nursery() as nursery:
            nursery.start_soon(holder, name="holder")
            await trio.testing.wait_all_tasks_blocked()
            for n in range(3):
                nursery.start_soon(waiter, n)
            await trio.testing.wait_all_tasks_blocked()
            assert locks.statistics().tasks_waiting == 3
            leave.set()
    assert sorted(broken) == [0, 1, 2]
    # Like trio.Lock, the key stays held and broken: later acquirers fail at once.
    assert locks.statistics() == KeyedLockStatistics(1, 0, {})
    with pytest.raises(trio.BrokenResourceError, match=_broken("k", "holder")):
        await locks.acquire("k", timeout=5)
    async with locks("other"):  # other keys are unaffected
        pass


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_trio_a_key_left_held_before_anyone_waited_is_broken_too(anyio_backend: str) -> None:
    locks = KeyedLock()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_exit_holding, locks, "k", name="leaker")
    assert locks.locked("k")
    with trio.fail_after(5):
        with pytest.raises(trio.BrokenResourceError, match=_broken("k", "leaker")):
            await locks.acquire("k")
        with pytest.raises(trio.BrokenResourceError, match=_broken("k", "leaker")):
            async with locks.many("a", "k"):
                pytest.fail("many() must not get a broken key")  # pragma: no cover
    assert locks.statistics() == KeyedLockStatistics(1, 0, {})  # many() gave "a" back


def test_trio_a_key_left_held_by_an_earlier_run_is_broken() -> None:
    locks = KeyedLock()
    trio.run(_exit_holding, locks, "k")

    async def later_run() -> None:
        with trio.fail_after(5):
            with pytest.raises(trio.BrokenResourceError, match=r"KeyedLock key 'k' is broken"):
                await locks.acquire("k")

    trio.run(later_run)


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_trio_the_breaker_follows_the_key_from_owner_to_owner(anyio_backend: str) -> None:
    # A releases to B while C waits; B then exits holding the key. C must hear of B's exit,
    # and A's own exit (after releasing) must break nothing.
    locks = KeyedLock()
    order: list[str] = []
    a_release = trio.Event()

    async def a() -> None:
        await locks.acquire("k")
        await a_release.wait()
        locks.release("k")
        order.append("a released")

    async def b() -> None:
        await locks.acquire("k")
        order.append("b exits holding the key")

    async def c() -> None:
        with pytest.raises(trio.BrokenResourceError, match=_broken("k", "b")):
            await locks.acquire("k")
        order.append("c broken")

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            for task in (a, b, c):
                nursery.start_soon(task, name=task.__name__)
                await trio.testing.wait_all_tasks_blocked()
            a_release.set()
    assert order == ["a released", "b exits holding the key", "c broken"]


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_trio_a_waiter_with_a_timeout_raises_broken_not_timeout(anyio_backend: str) -> None:
    locks = KeyedLock()
    leave = trio.Event()

    async def holder() -> None:
        await locks.acquire("k")
        await leave.wait()

    async def waiter() -> None:
        with pytest.raises(trio.BrokenResourceError, match=_broken("k", "holder")):
            await locks.acquire("k", timeout=30)

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(holder, name="holder")
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(waiter)
            await trio.testing.wait_all_tasks_blocked()
            leave.set()


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_trio_a_holder_that_releases_after_its_waiters_left_breaks_nothing(
    anyio_backend: str,
) -> None:
    # The only waiter gives up (its lot stays, registered); the holder then releases and exits:
    # the lot must be dropped with the key, and the next user of the key must not find it
    # broken.
    locks = KeyedLock()
    leave = trio.Event()

    async def holder() -> None:
        await locks.acquire("k")
        await leave.wait()
        locks.release("k")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(holder)
        await trio.testing.wait_all_tasks_blocked()
        with trio.move_on_after(0):
            await locks.acquire("k")
        assert locks.statistics() == KeyedLockStatistics(1, 0, {})
        leave.set()
    assert len(locks) == 0
    assert locks._trio_lots == {}
    async with locks("k"):
        assert locks.locked("k")


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_asyncio_a_key_left_held_stays_held_as_with_asyncio_lock(anyio_backend: str) -> None:
    locks = KeyedLock()
    async with anyio.create_task_group() as tg:
        tg.start_soon(_exit_holding, locks, "k")
    assert locks.locked("k")
    with pytest.raises(TimeoutError, match=r"waiting for KeyedLock key 'k'"):
        await locks.acquire("k", timeout=0)


# ---------------------------------------------------------------- KeyboardInterrupt protection


class _ProtectionSpy:
    """A key that records, each time it is hashed, whether trio's KI protection is on."""

    def __init__(self, name: str, seen: list[bool]) -> None:
        self.name = name
        self.seen = seen

    def __hash__(self) -> int:
        self.seen.append(trio.lowlevel.currently_ki_protected())
        return hash(self.name)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _ProtectionSpy) and other.name == self.name

    def __lt__(self, other: _ProtectionSpy) -> bool:
        return self.name < other.name


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_trio_every_operation_on_a_key_runs_protected_from_keyboard_interrupt(
    anyio_backend: str,
) -> None:
    # KeyedLock hashes the key wherever it reads or changes its state, so a key that asks
    # trio at each hash sees every such moment.
    seen: list[bool] = []
    k, j = _ProtectionSpy("k", seen), _ProtectionSpy("j", seen)
    hash(k)
    assert seen == [False], "the spy must be able to see unprotected code"
    seen.clear()
    locks = KeyedLock()

    async def waiter() -> None:
        async with locks(k):
            pass

    async with locks(k):
        assert locks.locked(k)
    await locks.acquire(k, timeout=1)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        locks.release(k)  # a hand-over
    locks.acquire_nowait(k)
    locks.release(k)
    async with locks.many(j, k):
        pass
    await locks.wait_idle()
    assert len(seen) > 10
    assert all(seen)


class _InterruptingKey:
    """A key whose next hash, once armed, raises SIGINT: a Ctrl-C inside the lock's code."""

    def __init__(self) -> None:
        self.armed = False
        self.fired = False

    def __hash__(self) -> int:
        if self.armed:
            self.armed = False
            self.fired = True
            # raise_signal runs the Python-level handler before it returns: trio's handler,
            # which raises KeyboardInterrupt here unless the code running is protected.
            signal.raise_signal(signal.SIGINT)
        return 1

    def __eq__(self, other: object) -> bool:
        return other is self


def test_trio_ctrl_c_inside_a_release_waits_until_the_key_is_handed_over() -> None:
    locks = KeyedLock()
    key = _InterruptingKey()
    log: list[str] = []

    async def waiter() -> None:
        async with locks(key):
            log.append("waiter got the key")

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await locks.acquire(key)
            nursery.start_soon(waiter)
            await trio.testing.wait_all_tasks_blocked()
            key.armed = True
            locks.release(key)
            log.append("release completed")
            assert locks.statistics() == KeyedLockStatistics(1, 0, {})  # the waiter's now
            with trio.fail_after(5):
                await trio.sleep_forever()  # trio delivers the deferred KeyboardInterrupt here

    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # so trio installs its
    with pytest.RaisesGroup(KeyboardInterrupt):  # raised in the nursery's body
        trio.run(main)
    assert key.fired
    assert log == ["release completed", "waiter got the key"]
    assert len(locks) == 0
