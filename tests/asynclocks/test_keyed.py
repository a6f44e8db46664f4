"""KeyedLock behaviour on asyncio and trio: exclusion, errors, many(), timeouts, cleanup."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import math
import re
import subprocess
import sys
import tracemalloc
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

import anyio
import anyio.lowlevel
import outcome
import pytest
import trio
import trio.testing

from asynclocks import KeyedLock, KeyedLockStatistics, WouldBlock

pytestmark = pytest.mark.anyio


async def _holder(
    locks: KeyedLock, key: Hashable, entered: anyio.Event, leave: anyio.Event
) -> None:
    async with locks(key):
        entered.set()
        await leave.wait()


# ---------------------------------------------------------------- mutual exclusion


async def _read_modify_write(
    locks: KeyedLock | None, totals: dict[str, int], key: str, rounds: int
) -> None:
    for _ in range(rounds):
        if locks is None:
            value = totals[key]
            await anyio.lowlevel.checkpoint()  # the race window: an await between read and write
            totals[key] = value + 1
        else:
            async with locks(key):
                value = totals[key]
                await anyio.lowlevel.checkpoint()
                totals[key] = value + 1


async def test_without_a_lock_the_updates_race() -> None:
    # The control for the next test: the workload really does lose updates when unprotected.
    totals = {"a": 0, "b": 0}
    async with anyio.create_task_group() as tg:
        for i in range(10):
            tg.start_soon(_read_modify_write, None, totals, "ab"[i % 2], 20)
    assert totals["a"] < 100
    assert totals["b"] < 100


async def test_no_update_is_lost_per_key() -> None:
    locks = KeyedLock()
    totals = {"a": 0, "b": 0}
    async with anyio.create_task_group() as tg:
        for i in range(10):
            tg.start_soon(_read_modify_write, locks, totals, "ab"[i % 2], 20)
    assert totals == {"a": 100, "b": 100}
    assert len(locks) == 0


async def test_different_keys_do_not_block_each_other() -> None:
    locks = KeyedLock()
    entered, leave = anyio.Event(), anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(_holder, locks, "a", entered, leave)
        await entered.wait()
        locks.acquire_nowait("b")  # would raise WouldBlock if keys shared one lock
        assert locks.locked("a")
        assert locks.locked("b")
        locks.release("b")
        leave.set()
    assert len(locks) == 0


async def test_the_same_key_blocks_other_tasks() -> None:
    locks = KeyedLock()
    entered, leave = anyio.Event(), anyio.Event()
    got_it = anyio.Event()

    async def contender() -> None:
        async with locks("a"):
            got_it.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(_holder, locks, "a", entered, leave)
        await entered.wait()
        tg.start_soon(contender)
        await anyio.wait_all_tasks_blocked()
        assert not got_it.is_set()
        assert locks.statistics() == KeyedLockStatistics(
            keys_locked=1, tasks_waiting=1, waiting_per_key={"a": 1}
        )
        leave.set()
    assert got_it.is_set()
    assert len(locks) == 0


async def test_equal_keys_are_the_same_key() -> None:
    locks = KeyedLock()
    async with locks(1):
        assert locks.locked(1.0)
        assert locks.locked(True)
        assert len(locks) == 1


# ---------------------------------------------------------------- state reporting


async def test_locked_len_statistics_and_repr_follow_the_state() -> None:
    locks = KeyedLock()
    assert not locks.locked("x")
    assert len(locks) == 0
    assert locks.statistics() == KeyedLockStatistics(0, 0, {})
    assert re.fullmatch(
        r"<asynclocks\.KeyedLock keys_locked=0 tasks_waiting=0 at 0x[0-9a-f]+>", repr(locks)
    )
    await locks.acquire("x")
    await locks.acquire("y")
    assert locks.locked("x")
    assert locks.locked("y")
    assert not locks.locked("z")
    assert len(locks) == 2

    async def waiter(key: str) -> None:
        async with locks(key):
            pass

    async with anyio.create_task_group() as tg:
        for key in ("x", "x", "y"):
            tg.start_soon(waiter, key)
        await anyio.wait_all_tasks_blocked()
        stats = locks.statistics()
        assert stats.keys_locked == 2
        assert stats.tasks_waiting == 3
        assert dict(stats.waiting_per_key) == {"x": 2, "y": 1}
        assert f"keys_locked=2 tasks_waiting=3 at {id(locks):#x}>" in repr(locks)
        locks.release("x")
        locks.release("y")
    assert len(locks) == 0
    assert locks.statistics() == KeyedLockStatistics(0, 0, {})


async def test_statistics_is_a_frozen_snapshot() -> None:
    locks = KeyedLock()
    stats = locks.statistics()
    with pytest.raises(AttributeError):
        stats.keys_locked = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        stats.waiting_per_key["k"] = 1  # type: ignore[index]
    await locks.acquire("k")
    assert stats.keys_locked == 0
    assert hash(stats) == hash(KeyedLockStatistics(0, 0, {}))
    assert stats != locks.statistics()
    locks.release("k")


# ---------------------------------------------------------------- errors


async def test_acquire_nowait_raises_wouldblock_when_another_task_holds_the_key() -> None:
    locks = KeyedLock()
    entered, leave = anyio.Event(), anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(_holder, locks, "k", entered, leave)
        await entered.wait()
        with pytest.raises(WouldBlock):
            locks.acquire_nowait("k")
        assert locks.statistics().tasks_waiting == 0
        leave.set()
    locks.acquire_nowait("k")
    assert locks.locked("k")
    locks.release("k")


async def test_reacquiring_a_held_key_raises_instead_of_deadlocking() -> None:
    locks = KeyedLock()
    message = r"already holds KeyedLock key 'k'; KeyedLock is not reentrant"
    async with locks("k"):
        with pytest.raises(RuntimeError, match=message):
            await locks.acquire("k")
        with pytest.raises(RuntimeError, match=message):
            locks.acquire_nowait("k")
        with pytest.raises(RuntimeError, match=message):
            async with locks("k"):
                pass  # pragma: no cover
        with pytest.raises(RuntimeError, match=message):
            await locks.acquire("k", timeout=1)
        assert locks.locked("k")
    assert len(locks) == 0


async def test_releasing_an_unlocked_key_says_it_is_not_locked() -> None:
    locks = KeyedLock()
    with pytest.raises(RuntimeError, match=r"cannot release KeyedLock key 'k': it is not locked"):
        locks.release("k")
    assert len(locks) == 0


async def test_releasing_a_key_held_by_another_task_names_that_task() -> None:
    locks = KeyedLock()
    entered, leave = anyio.Event(), anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(_holder, locks, "k", entered, leave)
        await entered.wait()
        with pytest.raises(
            RuntimeError,
            match=r"cannot release KeyedLock key 'k': it is held by another task \(.*_holder.*\)",
        ):
            locks.release("k")
        assert locks.locked("k")  # the failed release changed nothing
        leave.set()
    assert len(locks) == 0


async def test_unhashable_keys_are_rejected_with_the_type_name() -> None:
    locks = KeyedLock()
    message = r"KeyedLock keys must be hashable, got an object of unhashable type 'list'"
    key: Any = ["a"]  # typed Any: the point is to get past the type checker
    with pytest.raises(TypeError, match=message):
        await locks.acquire(key)
    with pytest.raises(TypeError, match=message):
        locks.acquire_nowait(key)
    with pytest.raises(TypeError, match=message):
        locks.release(key)
    with pytest.raises(TypeError, match=message):
        locks.locked(key)
    with pytest.raises(TypeError, match=message):
        async with locks(key):
            pass  # pragma: no cover
    with pytest.raises(TypeError, match=message):
        locks.many("a", key)
    assert len(locks) == 0


@pytest.mark.parametrize("bad", [-1, -0.001, math.nan, -math.inf])
async def test_bad_timeouts_are_rejected(bad: float) -> None:
    locks = KeyedLock()
    with pytest.raises(ValueError, match=r"timeout must be a non-negative number of seconds"):
        await locks.acquire("k", timeout=bad)
    assert len(locks) == 0


async def test_a_timeout_that_is_not_a_number_is_rejected() -> None:
    locks = KeyedLock()
    bad: Any = "5"
    with pytest.raises(TypeError, match=r"timeout must be a number of seconds or None, got 'str'"):
        await locks.acquire("k", timeout=bad)
    with pytest.raises(TypeError, match=r"got 'bool'"):
        await locks.acquire("k", timeout=True)
    assert len(locks) == 0


def test_use_outside_any_event_loop_is_an_error() -> None:
    locks = KeyedLock()
    with pytest.raises(RuntimeError, match=r"must be used from inside an asyncio task or a trio"):
        locks.acquire_nowait("k")
    with pytest.raises(RuntimeError, match=r"must be used from inside an asyncio task or a trio"):
        locks.release("k")


# ---------------------------------------------------------------- many()


async def test_many_holds_every_key_and_deduplicates() -> None:
    locks = KeyedLock()
    async with locks.many("b", "a", "c", "a"):
        assert [locks.locked(k) for k in "abc"] == [True, True, True]
        assert len(locks) == 3
    assert len(locks) == 0


async def test_many_takes_keys_in_sorted_order() -> None:
    # A task asking for ("b", "a") while "a" is held must wait for "a" holding nothing, so a
    # task holding "a" and wanting "b" is never blocked by it: no lock-order deadlock.
    locks = KeyedLock()
    entered, leave = anyio.Event(), anyio.Event()
    done = anyio.Event()

    async def transfer() -> None:
        async with locks.many("b", "a"):
            done.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(_holder, locks, "a", entered, leave)
        await entered.wait()
        tg.start_soon(transfer)
        await anyio.wait_all_tasks_blocked()
        assert not locks.locked("b")
        assert dict(locks.statistics().waiting_per_key) == {"a": 1}
        leave.set()
    assert done.is_set()
    assert len(locks) == 0


async def test_opposite_order_transfers_do_not_deadlock() -> None:
    locks = KeyedLock()
    balances = {"alice": 100, "bob": 100}

    async def transfer(src: str, dst: str) -> None:
        for _ in range(20):
            async with locks.many(src, dst):
                a, b = balances[src], balances[dst]
                await anyio.lowlevel.checkpoint()
                balances[src], balances[dst] = a - 1, b + 1

    with anyio.fail_after(10):  # a deadlock would hang; fail loudly instead
        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(transfer, "alice", "bob")
                tg.start_soon(transfer, "bob", "alice")
    assert balances == {"alice": 100, "bob": 100}
    assert len(locks) == 0


async def _second_key_service_order(locks: KeyedLock) -> list[str]:
    """Who gets "b", in order, when a many("a", "b") that began first queues on "b" late.

    `held_a` holds "a"; the transfer many("a", "b") begins and waits for it; `early` then
    takes the free "b", and `late` queues for "b" behind it. Only once "a" is released does
    the transfer reach "b"'s queue, which already holds `late`, who arrived after it began.
    """
    order: list[str] = []
    got_a, release_a = anyio.Event(), anyio.Event()
    got_b, release_b = anyio.Event(), anyio.Event()

    async def hold(key: str, name: str, entered: anyio.Event, leave: anyio.Event) -> None:
        async with locks(key):
            order.append(name)
            entered.set()
            await leave.wait()

    async def take_b(name: str) -> None:
        async with locks("b"):
            order.append(name)

    async def transfer() -> None:
        async with locks.many("a", "b"):
            order.append("transfer")

    async with anyio.create_task_group() as tg:
        tg.start_soon(hold, "a", "held_a", got_a, release_a)
        await got_a.wait()
        tg.start_soon(transfer)
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(hold, "b", "early", got_b, release_b)
        await got_b.wait()
        tg.start_soon(take_b, "late")
        await anyio.wait_all_tasks_blocked()
        release_a.set()  # the transfer takes "a" and queues for "b"
        await anyio.wait_all_tasks_blocked()
        assert locks.statistics().waiting_per_key == {"b": 2}
        release_b.set()
    assert len(locks) == 0
    return order


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_asyncio_many_waits_only_for_those_who_came_before_it(anyio_backend: str) -> None:
    # Queued at the end, the transfer would wait for `late` while holding "a": every waiter
    # of "a" would wait for "b"'s queue too (the convoy behind the bank's account-mode p99).
    order = await _second_key_service_order(KeyedLock())
    assert order == ["held_a", "early", "transfer", "late"]


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_trio_many_queues_in_the_parking_lots_order(anyio_backend: str) -> None:
    # trio's parking lots are strictly FIFO: the documented difference between the backends.
    order = await _second_key_service_order(KeyedLock())
    assert order == ["held_a", "early", "late", "transfer"]


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_asyncio_many_cancelled_in_its_second_queue_leaves_the_rest_in_order(
    anyio_backend: str,
) -> None:
    locks = KeyedLock()
    order: list[str] = []
    await locks.acquire("b")

    async def take_b(name: str) -> None:
        async with locks("b"):
            order.append(name)

    first = asyncio.create_task(take_b("first"))
    await anyio.wait_all_tasks_blocked()
    transfer = asyncio.create_task(locks.many("a", "b").__aenter__())
    await anyio.wait_all_tasks_blocked()
    last = asyncio.create_task(take_b("last"))
    await anyio.wait_all_tasks_blocked()
    assert locks.locked("a")
    transfer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await transfer
    assert not locks.locked("a")  # given back
    locks.release("b")
    await asyncio.gather(first, last)
    assert order == ["first", "last"]
    assert len(locks) == 0


async def test_many_times_out_in_all_and_gives_back_what_it_took() -> None:
    locks = KeyedLock()
    entered, leave = anyio.Event(), anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(_holder, locks, "b", entered, leave)
        await entered.wait()
        with anyio.fail_after(10):  # the timeout must fire long before this
            # The whole message: the key's, as a single key's wait says it, then the many().
            message = r"^timed out after 0.05 s waiting for KeyedLock key 'b' "
            with pytest.raises(TimeoutError, match=message + r"\(KeyedLock.many\(\) of 2 keys\)$"):
                async with locks.many("a", "b", timeout=0.05):
                    pytest.fail("many() must not complete while 'b' is held")  # pragma: no cover
        assert not locks.locked("a")  # taken, then given back
        assert locks.statistics() == KeyedLockStatistics(1, 0, {})
        async with locks.many("a", "c", timeout=0):  # free keys: taken even with 0
            assert [locks.locked(k) for k in "ac"] == [True, True]
        leave.set()
    assert len(locks) == 0


async def test_many_with_a_bad_timeout_is_an_error() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        KeyedLock().many("a", timeout=-1)
    with pytest.raises(TypeError, match="number of seconds"):
        KeyedLock().many("a", timeout="1")  # type: ignore[arg-type]


async def test_many_without_keys_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"many\(\) needs at least one key"):
        KeyedLock().many()


async def test_many_with_keys_that_cannot_be_ordered_is_an_error() -> None:
    with pytest.raises(TypeError, match=r"cannot be ordered together \(types: int, str\)") as info:
        KeyedLock().many("a", 1)
    assert "sorted order to avoid deadlocks" in str(info.value)


async def test_many_cancelled_midway_releases_what_it_took() -> None:
    locks = KeyedLock()
    entered, leave = anyio.Event(), anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(_holder, locks, "b", entered, leave)
        await entered.wait()
        with anyio.CancelScope() as scope:

            async def cancel_when_blocked() -> None:
                await anyio.wait_all_tasks_blocked()
                assert locks.locked("a")  # many() took "a" and waits for "b"
                scope.cancel()

            tg.start_soon(cancel_when_blocked)
            async with locks.many("a", "b"):
                pytest.fail("many() must not complete while 'b' is held")  # pragma: no cover
        assert scope.cancelled_caught
        assert not locks.locked("a")
        assert locks.statistics() == KeyedLockStatistics(1, 0, {})
        leave.set()
    assert len(locks) == 0


# ---------------------------------------------------------------- timeouts


async def test_timeout_expires_leaving_no_trace() -> None:
    locks = KeyedLock()
    entered, leave = anyio.Event(), anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(_holder, locks, "k", entered, leave)
        await entered.wait()
        with pytest.raises(
            TimeoutError, match=r"timed out after 0 s waiting for KeyedLock key 'k'"
        ):
            await locks.acquire("k", timeout=0)
        with pytest.raises(TimeoutError):
            await locks.acquire("k", timeout=0.001)
        assert locks.statistics() == KeyedLockStatistics(1, 0, {})
        leave.set()
    assert len(locks) == 0
    locks.acquire_nowait("k")  # nothing stale blocks the key
    locks.release("k")


async def test_timeout_zero_takes_a_free_key() -> None:
    locks = KeyedLock()
    await locks.acquire("k", timeout=0)
    assert locks.locked("k")
    locks.release("k")


async def test_acquire_with_timeout_succeeds_when_released_in_time() -> None:
    locks = KeyedLock()
    entered, leave = anyio.Event(), anyio.Event()
    got_it = anyio.Event()

    async def patient() -> None:
        await locks.acquire("k", timeout=60)
        got_it.set()
        locks.release("k")

    async with anyio.create_task_group() as tg:
        tg.start_soon(_holder, locks, "k", entered, leave)
        await entered.wait()
        tg.start_soon(patient)
        await anyio.wait_all_tasks_blocked()
        leave.set()
    assert got_it.is_set()
    assert len(locks) == 0


async def test_a_timed_out_waiter_does_not_take_the_next_waiters_turn() -> None:
    locks = KeyedLock()
    entered, leave = anyio.Event(), anyio.Event()
    order: list[str] = []

    async def waiter(name: str, patience: float | None) -> None:
        try:
            await locks.acquire("k", timeout=patience)
        except TimeoutError:
            order.append(f"{name} timed out")
            return
        order.append(name)
        locks.release("k")

    async with anyio.create_task_group() as tg:
        tg.start_soon(_holder, locks, "k", entered, leave)
        await entered.wait()
        tg.start_soon(waiter, "first", None)
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(waiter, "quick", 0)
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(waiter, "last", None)
        await anyio.wait_all_tasks_blocked()
        leave.set()
    assert order == ["quick timed out", "first", "last"]
    assert len(locks) == 0


# ---------------------------------------------------------------- fairness and cancellation


async def test_waiters_get_the_key_in_fifo_order_without_barging() -> None:
    locks = KeyedLock()
    order: list[int] = []
    await locks.acquire("k")

    async def waiter(n: int) -> None:
        async with locks("k"):
            order.append(n)

    async with anyio.create_task_group() as tg:
        for n in range(6):
            tg.start_soon(waiter, n)
            await anyio.wait_all_tasks_blocked()  # fixes the queue order
        locks.release("k")
        # Ownership went straight to waiter 0, so a newcomer cannot slip in ahead of it.
        assert locks.locked("k")
        with pytest.raises(WouldBlock):
            locks.acquire_nowait("k")
    assert order == list(range(6))
    assert len(locks) == 0


async def test_a_cancelled_waiter_leaves_the_queue() -> None:
    locks = KeyedLock()
    order: list[str] = []
    await locks.acquire("k")
    scope = anyio.CancelScope()

    async def waiter(name: str, scope: anyio.CancelScope) -> None:
        with scope:
            async with locks("k"):
                order.append(name)

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter, "a", anyio.CancelScope())
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(waiter, "b", scope)
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(waiter, "c", anyio.CancelScope())
        await anyio.wait_all_tasks_blocked()
        scope.cancel()
        await anyio.wait_all_tasks_blocked()
        assert locks.statistics().waiting_per_key == {"k": 2}
        locks.release("k")
    assert order == ["a", "c"]
    assert len(locks) == 0


async def test_cancelled_during_handover_the_next_waiter_still_gets_the_key() -> None:
    # bpo-27585 / gh-90155: the key is handed to a waiter that is cancelled before it runs.
    locks = KeyedLock()
    order: list[str] = []
    await locks.acquire("k")
    scope = anyio.CancelScope()

    async def doomed() -> None:
        with scope:
            async with locks("k"):
                order.append("doomed in")
                await anyio.lowlevel.checkpoint()
                order.append("doomed kept going")  # pragma: no cover

    async def next_waiter() -> None:
        async with locks("k"):
            order.append("next in")

    async with anyio.create_task_group() as tg:
        tg.start_soon(doomed)
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(next_waiter)
        await anyio.wait_all_tasks_blocked()
        locks.release("k")
        scope.cancel()
    assert order[-1] == "next in"
    assert "doomed kept going" not in order
    assert len(locks) == 0


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_asyncio_waiter_cancelled_after_handover_passes_the_key_on(
    anyio_backend: str,
) -> None:
    locks = KeyedLock()
    entered: list[str] = []
    await locks.acquire("k")

    async def waiter(name: str) -> None:
        async with locks("k"):
            entered.append(name)

    first = asyncio.create_task(waiter("first"))
    second = asyncio.create_task(waiter("second"))
    await anyio.wait_all_tasks_blocked()
    locks.release("k")  # hands the key to `first`, whose future now has a result...
    assert first.cancel()  # ...and `first` is cancelled before it gets to run
    with pytest.raises(asyncio.CancelledError):
        await first
    with anyio.fail_after(5):  # a swallowed wake-up strands `second`: fail, do not hang
        await second
    assert entered == ["second"]
    assert len(locks) == 0


async def test_waits_with_different_timeouts_each_end_at_their_own_deadline() -> None:
    # On asyncio the waits share one timer, set for the earliest deadline: a shorter timeout
    # arriving after a longer one must still fire first, on its own key or another, and the
    # long wait must go on until the key is handed to it.
    locks = KeyedLock()
    order: list[str] = []
    messages: list[str] = []
    entered_k, entered_j, leave = anyio.Event(), anyio.Event(), anyio.Event()
    three_out = anyio.Event()

    async def waiter(name: str, key: str, patience: float) -> None:
        try:
            async with locks(key, timeout=patience):
                order.append(f"{name} got {key}")
        except TimeoutError as exc:
            messages.append(str(exc))
            order.append(f"{name} timed out")
            if len(order) == 3:
                three_out.set()

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(_holder, locks, "k", entered_k, leave)
            tg.start_soon(_holder, locks, "j", entered_j, leave)
            await entered_k.wait()
            await entered_j.wait()
            for name, key, patience in [
                ("patient", "k", 60.0),
                ("third", "k", 0.3),
                ("first", "k", 0.05),
                ("second", "j", 0.15),
            ]:
                tg.start_soon(waiter, name, key, patience)
                await anyio.wait_all_tasks_blocked()
            await three_out.wait()
            assert order == ["first timed out", "second timed out", "third timed out"]
            assert messages == [
                f"timed out after {patience} s waiting for KeyedLock key '{key}'"
                for key, patience in [("k", 0.05), ("j", 0.15), ("k", 0.3)]
            ]
            assert locks.statistics().tasks_waiting == 1  # the patient one
            leave.set()
    assert order[3:] == ["patient got k"]
    assert len(locks) == 0


async def test_a_wait_after_all_timed_waits_ended_still_times_out() -> None:
    # The shared timer is dropped once no timed wait is left, and set again by the next one.
    locks = KeyedLock()
    entered, leave = anyio.Event(), anyio.Event()
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(_holder, locks, "k", entered, leave)
            await entered.wait()
            for _ in range(3):
                with pytest.raises(TimeoutError):
                    async with locks("k", timeout=0.01):
                        pytest.fail("the key is held")  # pragma: no cover
            leave.set()
    async with locks("k", timeout=0):  # free: taken, no timer needed
        assert locks.locked("k")


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_asyncio_no_timer_outlives_the_timed_waits(anyio_backend: str) -> None:
    # A timer left behind would wake the loop (and a controlled loop would step through it)
    # long after every wait ended. asyncio's `_scheduled` is the loop's timer heap.
    loop: Any = asyncio.get_running_loop()
    locks = KeyedLock()
    served: list[str] = []

    async def one() -> None:
        async with locks("k", timeout=60):
            served.append("one")

    async def both() -> None:
        async with locks.many("j", "k", timeout=60):
            served.append("both")

    await locks.acquire("k")
    waiters = [asyncio.create_task(one()), asyncio.create_task(both())]
    waiters.append(asyncio.create_task(one()))
    await anyio.wait_all_tasks_blocked()
    assert any(not handle.cancelled() for handle in loop._scheduled)  # the waits are bounded
    locks.release("k")
    await asyncio.gather(*waiters)
    assert served == ["one", "both", "one"]
    assert [handle for handle in loop._scheduled if not handle.cancelled()] == []
    assert len(locks) == 0


def test_asyncio_waits_on_a_second_loop_time_out_while_the_first_is_stopped() -> None:
    # One lock, used by two loops in turn: the shared timer belongs to the first loop, which
    # is stopped with a timed wait still in it, so a wait on the second loop (with a later
    # deadline, which that timer would otherwise cover) needs a timer of its own.
    locks = KeyedLock()
    first = asyncio.new_event_loop()
    try:
        leave = asyncio.Event()

        async def hold_a() -> None:
            async with locks("a"):
                await leave.wait()

        timed_out: list[str] = []

        async def wait_for_a() -> None:
            try:
                async with locks("a", timeout=0.01):
                    pytest.fail("'a' is held throughout")  # pragma: no cover
            except TimeoutError:
                timed_out.append("a")

        async def park() -> list[asyncio.Task[None]]:
            tasks = [asyncio.create_task(hold_a())]
            await asyncio.sleep(0)  # it holds "a"
            tasks.append(asyncio.create_task(wait_for_a()))
            await asyncio.sleep(0)  # it queues itself, with the first loop's timer
            return tasks

        parked = first.run_until_complete(park())

        async def on_the_second_loop() -> None:
            await locks.acquire("b")

            async def blocked() -> None:
                await locks.acquire("b", timeout=0.05)

            with anyio.fail_after(10):
                with pytest.raises(TimeoutError, match="key 'b'"):
                    await asyncio.create_task(blocked())
            locks.release("b")

        asyncio.run(on_the_second_loop())

        async def finish() -> None:
            await parked[1]  # its deadline passed while its loop was stopped: it fires now
            leave.set()
            await parked[0]

        first.run_until_complete(finish())
        assert timed_out == ["a"]
        assert len(locks) == 0
    finally:
        first.close()


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_asyncio_timeout_after_handover_keeps_the_key(anyio_backend: str) -> None:
    # The timer fires in the same loop iteration as the hand-over but after it: the acquire
    # has already succeeded, and the late timer must not undo it.
    locks = KeyedLock()
    await locks.acquire("k")
    waiter = asyncio.create_task(locks.acquire("k", timeout=0))
    await asyncio.sleep(0)  # the waiter queues itself and arms its timer
    locks.release("k")
    await waiter
    assert locks.locked("k")
    assert len(locks) == 1
    with pytest.raises(RuntimeError, match="held by another task"):
        locks.release("k")


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_trio_waiter_cancelled_after_handover_owns_the_key_until_its_next_checkpoint(
    anyio_backend: str,
) -> None:
    locks = KeyedLock()
    order: list[str] = []
    await locks.acquire("k")
    scope = trio.CancelScope()

    async def first() -> None:
        with scope:
            async with locks("k"):
                order.append("first in")
                await trio.lowlevel.checkpoint()
                order.append("first kept going")  # pragma: no cover

    async def second() -> None:
        async with locks("k"):
            order.append("second in")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(first)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(second)
        await trio.testing.wait_all_tasks_blocked()
        locks.release("k")
        scope.cancel()
    assert order == ["first in", "second in"]
    assert len(locks) == 0


# ---------------------------------------------------------------- backend semantics


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_asyncio_acquiring_a_free_key_does_not_yield(anyio_backend: str) -> None:
    locks = KeyedLock()
    ran: list[str] = []

    async def other() -> None:
        ran.append("other")

    task = asyncio.create_task(other())
    await locks.acquire("k")
    async with locks("j"):
        pass
    assert ran == []  # no await in acquire let `other` run
    locks.release("k")
    await task
    assert ran == ["other"]


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_trio_acquire_is_a_checkpoint(anyio_backend: str) -> None:
    locks = KeyedLock()
    with trio.CancelScope() as scope:
        scope.cancel()
        with pytest.raises(trio.Cancelled):
            await locks.acquire("k")  # a free key, but a cancelled task does not take it
    assert len(locks) == 0
    with trio.testing.assert_checkpoints():
        await locks.acquire("k")  # the free-key path yields too (cancel_shielded_checkpoint)
    with trio.testing.assert_no_checkpoints():
        locks.release("k")


# ---------------------------------------------------------------- idle cleanup


async def test_a_million_distinct_keys_leave_nothing_behind() -> None:
    locks = KeyedLock()
    for key in range(1_000_000):
        locks.acquire_nowait(key)
        locks.release(key)
    assert len(locks) == 0
    assert locks.statistics() == KeyedLockStatistics(0, 0, {})


async def test_contended_keys_are_dropped_once_idle() -> None:
    locks = KeyedLock()

    async def worker(key: int) -> None:
        async with locks(key):
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tg:
        for key in range(200):
            for _ in range(3):
                tg.start_soon(worker, key)
    assert len(locks) == 0
    assert locks._aio_waiters == {}
    assert locks._trio_lots == {}


async def test_memory_returns_to_its_baseline_after_many_keys() -> None:
    locks = KeyedLock()
    count = 20_000
    keys = [f"account-{n}" for n in range(count)]  # allocated before measuring
    gc.collect()
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        for key in keys:
            async with locks(key):
                pass
        gc.collect()
        after_sequential = tracemalloc.get_traced_memory()[0] - baseline
        for key in keys[:1000]:  # the measurement can see keys that stay tracked
            locks.acquire_nowait(key)
        while_held = tracemalloc.get_traced_memory()[0] - baseline
        for key in keys[:1000]:
            locks.release(key)
    finally:
        tracemalloc.stop()
    assert while_held > 20_000  # 1000 live dict entries, at least 20 bytes each
    assert after_sequential < 64_000  # 20,000 keys used and nothing kept (a leak: > 1 MB)
    assert len(locks) == 0


async def test_guards_are_ordinary_async_context_managers() -> None:
    # Annotated assignments: mypy checks the guards against the typeshed protocol.
    locks = KeyedLock()
    one: contextlib.AbstractAsyncContextManager[None] = locks("k")
    both: contextlib.AbstractAsyncContextManager[None] = locks.many("k", "j")
    assert isinstance(one, contextlib.AbstractAsyncContextManager)
    assert isinstance(both, contextlib.AbstractAsyncContextManager)
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(one)
        assert locks.locked("k")
    assert not locks.locked("k")
    async with both:
        assert len(locks) == 2
    async with one:  # a guard can be entered again
        assert locks.locked("k")
    assert len(locks) == 0


# ---------------------------------------------------------------- other event loops


async def _asyncio_yield() -> None:
    await asyncio.sleep(0)


async def _contend(locks: KeyedLock, checkpoint: Callable[[], Awaitable[object]]) -> int:
    total = 0

    async def worker() -> None:
        nonlocal total
        for _ in range(20):
            async with locks("k"):
                value = total
                await checkpoint()
                total = value + 1

    async with anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(worker)
    return total


def test_trio_guest_mode_inside_asyncio_uses_the_trio_path() -> None:
    # In guest mode an asyncio loop is running too, but trio tasks must be told apart from it:
    # even a lock that asyncio code in the same loop has used (and cached) must work for them.
    locks = KeyedLock()

    async def trio_main() -> int:
        return await _contend(locks, trio.lowlevel.checkpoint)

    async def asyncio_main() -> tuple[int, int]:
        before = await _contend(locks, _asyncio_yield)
        loop = asyncio.get_running_loop()
        done: asyncio.Future[outcome.Outcome[int]] = loop.create_future()
        trio.lowlevel.start_guest_run(
            trio_main,
            run_sync_soon_threadsafe=loop.call_soon_threadsafe,
            done_callback=done.set_result,
            host_uses_signal_set_wakeup_fd=False,
        )
        return before, (await done).unwrap()

    assert asyncio.run(asyncio_main()) == (100, 100)
    assert len(locks) == 0


def test_waiting_for_a_key_held_in_another_event_loop_is_an_error() -> None:
    # Under guest mode asyncio and trio tasks run at once; a trio task must not queue behind an
    # asyncio owner (its release() would never wake it), and vice versa.
    locks = KeyedLock()
    message = r"KeyedLock key 'k' is held by a task of another event loop"

    async def trio_side(step: str) -> None:
        if step == "wait":
            with pytest.raises(RuntimeError, match=message):
                await locks.acquire("k")
        else:
            await locks.acquire("t")  # held by trio when asyncio asks for it

    async def run_trio(loop: asyncio.AbstractEventLoop, step: str) -> None:
        done: asyncio.Future[outcome.Outcome[None]] = loop.create_future()
        trio.lowlevel.start_guest_run(
            trio_side,
            step,
            run_sync_soon_threadsafe=loop.call_soon_threadsafe,
            done_callback=done.set_result,
            host_uses_signal_set_wakeup_fd=False,
        )
        (await done).unwrap()

    async def asyncio_main() -> None:
        loop = asyncio.get_running_loop()
        await locks.acquire("k")
        await run_trio(loop, "wait")
        locks.release("k")
        await run_trio(loop, "hold")  # the trio task ends, still holding "t"
        with pytest.raises(RuntimeError, match=r"key 't' is held by a task of another event"):
            await locks.acquire("t")

    asyncio.run(asyncio_main())
    assert locks.locked("t")
    assert locks.statistics().tasks_waiting == 0


def test_uvloop() -> None:
    uvloop = pytest.importorskip("uvloop")
    locks = KeyedLock()
    assert uvloop.run(_contend(locks, _asyncio_yield)) == 100
    assert len(locks) == 0


def test_one_lock_serves_successive_runs_on_both_backends() -> None:
    locks = KeyedLock()
    assert asyncio.run(_contend(locks, _asyncio_yield)) == 100
    assert trio.run(_contend, locks, trio.lowlevel.checkpoint) == 100
    assert asyncio.run(_contend(locks, _asyncio_yield)) == 100
    assert len(locks) == 0


def test_works_on_asyncio_without_trio_installed() -> None:
    # trio is an optional extra: KeyedLock must neither import it nor need it on asyncio.
    script = """
import asyncio, sys
sys.modules["trio"] = None  # as if not installed: `import trio` raises ImportError
from asynclocks import KeyedLock

async def main():
    locks = KeyedLock()
    async def worker():
        for _ in range(10):
            async with locks("k"):
                await asyncio.sleep(0)
    await asyncio.gather(*(worker() for _ in range(5)))
    async with locks.many("a", "b"):
        pass
    return len(locks)

assert asyncio.run(main()) == 0
try:
    KeyedLock().acquire_nowait("k")
except RuntimeError as exc:
    print(exc)
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "must be used from inside an asyncio task or a trio task" in result.stdout
