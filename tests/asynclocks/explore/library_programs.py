"""A suite of small library-heavy programs, each with a race bug and its fix.

Shared by the tests (every bug is found by dfs, random, pct and portfolio within a stated budget;
every fix passes) and by ``benchmarks/explore.py --suite`` (schedules to find each bug per
strategy, and whether the fix is proved without a preemption bound). They live here, next to the
explorer's other scenario modules, because the tests import them as a module and the benchmark
runs from the repository root, where ``tests`` is an importable package; ``examples/`` holds
scripts a reader runs, not a library.

The bugs are of kinds known from asyncio/anyio/trio history, written small: a semaphore released
twice on an error path, a condition checked outside its lock (the notification is lost), a hand-made
lock whose woken waiter is cancelled before it runs (the wake-up is lost, bpo-27585's shape), a
capacity limiter checked and then taken (the token is gone), a memory stream shared by two
producers and closed by the first to finish, a transfer that drops its lock halfway, and a
capacity limiter resized by a task to jump its queue. In each, asyncio's stock order
passes: the bug needs the explorer to reorder tasks. Then programs of four to six tasks through
library code, each proved without a preemption bound (issue 13): consumers of an anyio.Condition
woken with ``if`` instead of ``while``, a trio.CapacityLimiter whose worker gives its token back
early, leaves of nested trio nurseries reading outside a lock, an anyio stream pipeline whose
consumer stops before draining, a trio.Lock skipped when it looks free, an asyncio.Lock entered
after a read. The canceller in
the lock program is a task of the scenario (the search chooses when it runs, not where a
cancellation lands).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio
import anyio.lowlevel
import trio
import trio.lowlevel

from asynclocks import Backend

Scenario = Callable[[], Awaitable[None]]


@dataclass(frozen=True)
class Program:
    """One program of the suite: a bug, its fix, the backends it runs on."""

    name: str
    #: What goes wrong, in one line.
    bug: str
    backends: tuple[Backend, ...]
    buggy: Scenario
    fixed: Scenario


async def _checkpoints(count: int) -> None:
    for _ in range(count):
        await anyio.lowlevel.checkpoint()


# -- a semaphore released twice on an error path (anyio.Semaphore; both backends) --------------


def _pool(double_release: bool) -> Scenario:
    async def scenario() -> None:
        slots = anyio.Semaphore(1)
        inside = [0]

        async def flaky() -> None:
            await slots.acquire()
            try:
                try:
                    await anyio.lowlevel.checkpoint()
                    raise OSError("connection reset")
                except OSError:
                    if double_release:
                        slots.release()  # "give the slot back early" ...
            finally:
                slots.release()  # ... and again here: one permit too many

        async def worker(delay: int) -> None:
            await _checkpoints(delay)
            async with slots:
                inside[0] += 1
                assert inside[0] == 1, f"{inside[0]} workers inside a one-slot pool"
                await anyio.lowlevel.checkpoint()
                inside[0] -= 1

        async with anyio.create_task_group() as tg:
            tg.start_soon(flaky)
            tg.start_soon(worker, 1)
            tg.start_soon(worker, 3)

    return scenario


# -- a condition checked outside its lock: the notification is lost (anyio.Condition) ----------


def _mailbox(check_under_lock: bool) -> Scenario:
    async def scenario() -> None:
        ready = anyio.Condition()
        items: list[int] = []

        async def consumer() -> None:
            if check_under_lock:
                async with ready:
                    while not items:
                        await ready.wait()
            else:
                if not items:
                    await anyio.lowlevel.checkpoint()  # say so in the log: an await
                    async with ready:  # the producer may have notified meanwhile
                        await ready.wait()
            assert items == [1]

        async def producer() -> None:
            await _checkpoints(1)
            async with ready:
                items.append(1)
                ready.notify_all()

        async with anyio.create_task_group() as tg:
            tg.start_soon(consumer)
            tg.start_soon(producer)

    return scenario


# -- a hand-made lock whose woken waiter is cancelled before it runs (asyncio futures) -----------


class _FutureLock:
    """A FIFO lock on futures, as asyncio.Lock was before bpo-27585 was fixed (``fixed=False``)."""

    def __init__(self, fixed: bool) -> None:
        self._fixed = fixed
        self._locked = False
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def acquire(self) -> None:
        if not self._locked and all(w.cancelled() for w in self._waiters):
            self._locked = True
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            # Woken (the lock handed over) and cancelled before running: the fix passes the
            # hand-over on; without it the lock stays "locked" by nobody.
            if self._fixed and waiter.done() and not waiter.cancelled():
                self._locked = False
                self._wake_next()
            raise
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
        self._locked = True

    def release(self) -> None:
        self._locked = False
        self._wake_next()

    def _wake_next(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
                self._locked = True  # reserved for the woken waiter
                return

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, *exc: object) -> None:
        self.release()


def _handover(fixed: bool) -> Scenario:
    async def scenario() -> None:
        lock = _FutureLock(fixed)
        done: list[str] = []

        async def user(name: str) -> None:
            async with lock:
                await asyncio.sleep(0)
                done.append(name)

        async def impatient() -> None:
            try:
                await user("impatient")
            except asyncio.CancelledError:
                done.append("gave up")

        async with asyncio.TaskGroup() as tg:
            tg.create_task(user("first"))
            waiter = tg.create_task(impatient())
            tg.create_task(user("last"))

            async def canceller() -> None:
                for _ in range(3):
                    await asyncio.sleep(0)
                waiter.cancel()

            tg.create_task(canceller())
        assert "last" in done

    return scenario


# -- a capacity limiter checked, then taken (anyio.CapacityLimiter; both backends) ---------------


def _limiter(try_then_fall_back: bool) -> Scenario:
    async def scenario() -> None:
        limiter = anyio.CapacityLimiter(1)
        served: list[str] = []

        async def request(name: str, delay: int) -> None:
            await _checkpoints(delay)
            if try_then_fall_back:
                try:
                    limiter.acquire_on_behalf_of_nowait(name)
                except anyio.WouldBlock:
                    served.append(f"{name} queued")
                    return
            else:
                if limiter.available_tokens < 1:
                    served.append(f"{name} queued")
                    return
                await anyio.lowlevel.checkpoint()  # the token can go while this task waits
                limiter.acquire_on_behalf_of_nowait(name)  # WouldBlock
            try:
                await anyio.lowlevel.checkpoint()
                served.append(name)
            finally:
                limiter.release_on_behalf_of(name)

        async with anyio.create_task_group() as tg:
            tg.start_soon(request, "a", 0)
            tg.start_soon(request, "b", 1)

    return scenario


# -- a memory stream shared by two producers, closed by the first to finish (anyio) -------------


def _producers(clone: bool) -> Scenario:
    async def scenario() -> None:
        send, receive = anyio.create_memory_object_stream[int](1)
        got: list[int] = []

        async def produce(stream: anyio.abc.ObjectSendStream[int], first: int, delay: int) -> None:
            async with stream:  # closes the stream: with one shared stream, for both producers
                await _checkpoints(delay)
                await stream.send(first)
                await anyio.lowlevel.checkpoint()

        async def consume() -> None:
            async with receive:
                async for item in receive:
                    got.append(item)

        async with anyio.create_task_group() as tg:
            tg.start_soon(consume)
            if clone:
                async with send:
                    tg.start_soon(produce, send.clone(), 2, 1)
                    tg.start_soon(produce, send.clone(), 1, 0)
            else:
                tg.start_soon(produce, send, 2, 1)
                tg.start_soon(produce, send, 1, 0)
        assert sorted(got) == [1, 2]

    return scenario


# -- a transfer that drops its lock halfway (trio.Lock; trio) ------------------------------------


def _transfer(one_critical_section: bool) -> Scenario:
    async def scenario() -> None:
        lock = trio.Lock()
        accounts = {"a": 10, "b": 0}

        async def transfer(amount: int) -> None:
            if one_critical_section:
                async with lock:
                    accounts["a"] -= amount
                    await trio.lowlevel.checkpoint()
                    accounts["b"] += amount
                return
            async with lock:
                accounts["a"] -= amount
            await trio.lowlevel.checkpoint()
            async with lock:
                accounts["b"] += amount

        async def audit() -> None:
            for _ in range(2):
                await trio.lowlevel.checkpoint()
            async with lock:
                total = accounts["a"] + accounts["b"]
            assert total == 10, f"the books show {total}, not 10"

        async with trio.open_nursery() as nursery:
            nursery.start_soon(transfer, 3)
            nursery.start_soon(audit)

    return scenario


# -- a capacity limiter resized to jump its queue (anyio.CapacityLimiter on asyncio) -----------


def _resized_pool(jump_the_queue: bool, workers: int) -> Scenario:
    async def scenario() -> None:
        limiter = anyio.CapacityLimiter(2)
        inside = [0]
        most = [0]

        async def work() -> None:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
            await anyio.lowlevel.checkpoint()
            inside[0] -= 1

        async def worker() -> None:
            async with limiter:
                await work()

        async def urgent() -> None:
            await _checkpoints(3)
            if not jump_the_queue:
                await worker()
                return
            limiter.total_tokens = 3  # one more token, just for me ...
            async with limiter:
                limiter.total_tokens = 2  # ... and back: a waiting worker may have taken it
                await work()

        async with anyio.create_task_group() as tg:
            for _ in range(workers):
                tg.start_soon(worker)
            tg.start_soon(urgent)
        # Checked once all are done: a task failing inside would cancel the others in the order
        # of anyio's task set (by id), which no two runs share.
        assert most[0] <= 2, f"{most[0]} tasks were inside a two-token limiter at once"

    return scenario


# -- four and five tasks through library code: proved without a bound (issue 13) ---------------


def _condition_queue(recheck: bool) -> Scenario:
    """Three consumers and a producer on one anyio.Condition: a woken consumer must check the
    queue again (``while``), a consumer that came late may have emptied it first."""

    async def scenario() -> None:
        ready = anyio.Condition()
        items: list[int] = []
        got: list[int] = []

        async def consumer(delay: int) -> None:
            await _checkpoints(delay)  # the last comes late, after a notification
            async with ready:
                if recheck:
                    while not items:
                        await ready.wait()
                elif not items:
                    await ready.wait()
                got.append(items.pop())  # IndexError: another consumer took it

        async def producer() -> None:
            for item in range(3):
                await anyio.lowlevel.checkpoint()
                async with ready:
                    items.append(item)
                    ready.notify()

        async with anyio.create_task_group() as tg:
            for delay in (0, 0, 3):
                tg.start_soon(consumer, delay)
            tg.start_soon(producer)
        assert sorted(got) == [0, 1, 2]

    return scenario


def _limited_pool(release_early: bool) -> Scenario:
    """Five workers through a two-token trio.CapacityLimiter; one gives its token back before
    its work is done."""

    async def scenario() -> None:
        limiter = trio.CapacityLimiter(2)
        inside = [0]
        most = [0]

        async def worker(hasty: bool) -> None:
            async with limiter:
                inside[0] += 1
                most[0] = max(most[0], inside[0])
                if not hasty:
                    await trio.lowlevel.checkpoint()
                    inside[0] -= 1
            if hasty:
                await trio.lowlevel.checkpoint()  # still working, the token already back
                inside[0] -= 1

        async with trio.open_nursery() as nursery:
            for number in range(5):
                nursery.start_soon(worker, release_early and number == 0)
        assert most[0] <= 2, f"{most[0]} workers inside a two-token limiter"

    return scenario


def _nested_nurseries(read_under_lock: bool) -> Scenario:
    """Two branches, each a nursery of two leaves, count under one trio.Lock."""

    async def scenario() -> None:
        lock = trio.Lock()
        total = [0]

        async def leaf() -> None:
            if read_under_lock:
                async with lock:
                    value = total[0]
                    await trio.lowlevel.checkpoint()
                    total[0] = value + 1
                return
            value = total[0]  # read before the lock: another leaf may count meanwhile
            async with lock:
                total[0] = value + 1

        async def branch() -> None:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(leaf)
                nursery.start_soon(leaf)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(branch)
            nursery.start_soon(branch)
        assert total[0] == 4, f"four leaves counted {total[0]}"

    return scenario


def _pipeline(drain: bool) -> Scenario:
    """Three producers (clones of one anyio memory stream's sending end) and a consumer that
    reads until every sender is closed; checking for open senders before draining loses
    what is still buffered."""

    async def scenario() -> None:
        send, receive = anyio.create_memory_object_stream[int](3)
        got: list[int] = []

        async def produce(stream: anyio.abc.ObjectSendStream[int], item: int) -> None:
            async with stream:
                await stream.send(item)

        async def consume() -> None:
            async with receive:
                if drain:
                    async for item in receive:
                        got.append(item)
                    return
                while receive.statistics().open_send_streams:
                    try:
                        got.append(receive.receive_nowait())
                    except anyio.WouldBlock:
                        await anyio.lowlevel.checkpoint()

        async with anyio.create_task_group() as tg:
            tg.start_soon(consume)
            async with send:
                for item in range(3):
                    tg.start_soon(produce, send.clone(), item)
        assert sorted(got) == [0, 1, 2], got

    return scenario


def _five_locked(all_locked: bool) -> Scenario:
    """Five tasks count under one trio.Lock; in the bug one of them skips the lock when it looks
    free (check-then-act)."""

    async def scenario() -> None:
        lock = trio.Lock()
        total = [0]

        async def count(shortcut: bool) -> None:
            await trio.lowlevel.checkpoint()
            if shortcut and not lock.locked():
                value = total[0]  # the lock looked free; someone may take it now
                await trio.lowlevel.checkpoint()
                total[0] = value + 1
                return
            async with lock:
                value = total[0]
                await trio.lowlevel.checkpoint()
                total[0] = value + 1

        async with trio.open_nursery() as nursery:
            for number in range(5):
                nursery.start_soon(count, not all_locked and number == 4)
        assert total[0] == 5, f"five counts made {total[0]}"

    return scenario


def _asyncio_locked(all_locked: bool) -> Scenario:
    """Four asyncio tasks count under one asyncio.Lock; in the bug the last one reads the
    counter before it takes the lock."""

    async def scenario() -> None:
        lock = asyncio.Lock()
        total = [0]

        async def count(early_read: bool) -> None:
            await asyncio.sleep(0)
            value = total[0] if early_read else None
            async with lock:
                if value is None:
                    value = total[0]
                await asyncio.sleep(0)
                total[0] = value + 1

        async with asyncio.TaskGroup() as tg:
            for number in range(4):
                tg.create_task(count(not all_locked and number == 0))
        assert total[0] == 4, f"four counts made {total[0]}"

    return scenario


PROGRAMS: tuple[Program, ...] = (
    Program(
        "semaphore-over-release",
        "an error path releases a one-slot anyio.Semaphore twice: two workers get in",
        ("asyncio", "trio"),
        _pool(double_release=True),
        _pool(double_release=False),
    ),
    Program(
        "condition-lost-notify",
        "the consumer checks outside the anyio.Condition's lock; the notify lands before wait()",
        ("asyncio", "trio"),
        _mailbox(check_under_lock=False),
        _mailbox(check_under_lock=True),
    ),
    Program(
        "lock-cancelled-waiter",
        "a lock's woken waiter is cancelled before it runs; the hand-over is lost (deadlock)",
        ("asyncio",),
        _handover(fixed=False),
        _handover(fixed=True),
    ),
    Program(
        "limiter-check-then-acquire",
        "available_tokens checked, an await, then acquire_nowait: the token is gone",
        ("asyncio", "trio"),
        _limiter(try_then_fall_back=False),
        _limiter(try_then_fall_back=True),
    ),
    Program(
        "stream-closed-by-first",
        "two producers share one memory stream; the first to finish closes it on the other",
        ("asyncio", "trio"),
        _producers(clone=False),
        _producers(clone=True),
    ),
    Program(
        "transfer-drops-lock",
        "a transfer releases the trio.Lock between debit and credit; the audit sees money missing",
        ("trio",),
        _transfer(one_critical_section=False),
        _transfer(one_critical_section=True),
    ),
    Program(
        "limiter-resized-to-jump",
        "a task raises a CapacityLimiter's total to get in; a waiting worker gets in too",
        ("asyncio",),
        _resized_pool(jump_the_queue=True, workers=3),
        _resized_pool(jump_the_queue=False, workers=3),
    ),
    Program(
        "condition-queue-4",
        "three consumers wait on an anyio.Condition with `if`: a late one empties the queue",
        ("trio",),
        _condition_queue(recheck=False),
        _condition_queue(recheck=True),
    ),
    Program(
        "limiter-pool-5",
        "five workers, a two-token trio.CapacityLimiter, one gives its token back too early",
        ("trio",),
        _limited_pool(release_early=True),
        _limited_pool(release_early=False),
    ),
    Program(
        "nested-nurseries-6",
        "four leaves in two nested trio nurseries read the count before taking the lock",
        ("trio",),
        _nested_nurseries(read_under_lock=False),
        _nested_nurseries(read_under_lock=True),
    ),
    Program(
        "stream-pipeline-4",
        "a consumer stops when no sender is open, before draining what is buffered (anyio)",
        ("trio",),
        _pipeline(drain=False),
        _pipeline(drain=True),
    ),
    Program(
        "lock-shortcut-5",
        "one of five tasks skips the trio.Lock when it looks free: a lost count",
        ("trio",),
        _five_locked(all_locked=False),
        _five_locked(all_locked=True),
    ),
    Program(
        "lock-early-read-4",
        "one of four asyncio tasks reads the counter before taking the asyncio.Lock",
        ("asyncio",),
        _asyncio_locked(all_locked=False),
        _asyncio_locked(all_locked=True),
    ),
)


def cases() -> list[tuple[Program, Backend]]:
    """Every (program, backend) pair of the suite."""
    return [(program, backend) for program in PROGRAMS for backend in program.backends]
