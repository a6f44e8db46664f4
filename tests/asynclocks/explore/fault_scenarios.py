"""Cancellation and timeout bugs of the kinds found in asyncio's and anyio's history, each with
its fix. None of them has a canceller task or a tuned timeout: the explorer injects the fault.

Which backends a bug applies to is part of the bug. "Cancelled after being woken" needs a
cancellation that lands on a task whose wait already succeeded: asyncio's ``task.cancel()`` does
that (the CancelledError is thrown at the finished await), trio and anyio's scopes never do (a
task rescheduled with a value is cancelled at its next checkpoint instead). Those bugs are
asyncio's; the anyio ones (a checkpoint after the state changed, a cleanup that is not shielded,
a two-step update) are explored on both backends.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable

import anyio
import anyio.lowlevel
import trio
import trio.lowlevel

Scenario = Callable[[], Awaitable[None]]


# -- 1. a lock that hands itself to the next waiter (bpo-27585) -----------------------------------


class HandoffLock:
    """``release()`` hands the lock to the first waiter, which stays the owner until it runs."""

    def __init__(self, fixed: bool) -> None:
        self.fixed = fixed
        self.locked = False
        self.waiters: deque[asyncio.Future[None]] = deque()

    async def acquire(self) -> None:
        if not self.locked:
            self.locked = True
            return
        waiter = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter in self.waiters:
                self.waiters.remove(waiter)
            elif self.fixed and not waiter.cancelled():
                self.release()  # woken, then cancelled: the lock was ours, pass it on
            raise

    def release(self) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():  # one cancelled before it was woken is skipped
                waiter.set_result(None)
                return
        self.locked = False


def lock_handoff(fixed: bool) -> Scenario:
    async def scenario() -> None:
        lock = HandoffLock(fixed)

        async def user() -> None:
            await lock.acquire()
            try:
                await asyncio.sleep(0)
            finally:
                lock.release()

        async with asyncio.TaskGroup() as tg:
            tg.create_task(user())
            tg.create_task(user())
        assert not lock.locked, "the lock is held by nobody and locked forever"

    return scenario


# -- 2. a semaphore whose release hands the permit over -------------------------------------------


class HandoffSemaphore:
    def __init__(self, value: int, fixed: bool) -> None:
        self.fixed = fixed
        self.value = value
        self.waiters: deque[asyncio.Future[None]] = deque()

    async def acquire(self) -> None:
        if self.value > 0 and not self.waiters:
            self.value -= 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter in self.waiters:
                self.waiters.remove(waiter)
            elif self.fixed and not waiter.cancelled():
                self.release()  # the permit was handed to us: give it back
            raise

    def release(self) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.value += 1


def semaphore_permit(fixed: bool) -> Scenario:
    async def scenario() -> None:
        semaphore = HandoffSemaphore(1, fixed)

        async def user() -> None:
            await semaphore.acquire()
            try:
                await asyncio.sleep(0)
            finally:
                semaphore.release()

        async with asyncio.TaskGroup() as tg:
            for _ in range(2):
                tg.create_task(user())
        assert semaphore.value == 1, f"a permit was lost: value {semaphore.value}, not 1"

    return scenario


# -- 3. a condition whose notified waiter is cancelled (gh-112202) --------------------------------


class Condition:
    def __init__(self, fixed: bool) -> None:
        self.fixed = fixed
        self.lock = asyncio.Lock()
        self.waiters: deque[asyncio.Future[None]] = deque()

    async def wait(self) -> None:
        waiter = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        self.lock.release()
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter in self.waiters:
                self.waiters.remove(waiter)
            elif self.fixed and not waiter.cancelled():
                self.notify(1)  # notified, then cancelled: the wake-up goes to the next one
            raise
        finally:
            await self.lock.acquire()

    def notify(self, count: int) -> None:
        while count and self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                count -= 1


def condition_notify(fixed: bool) -> Scenario:
    async def scenario() -> None:
        condition = Condition(fixed)
        items: list[int] = []
        state = {"done": False}

        async def consumer() -> None:
            async with condition.lock:
                while not items and not state["done"]:
                    await condition.wait()
                if items:
                    items.pop()
                    state["done"] = True
                    condition.notify(2)  # the others may stop waiting

        async with asyncio.TaskGroup() as tg:
            tg.create_task(consumer())
            tg.create_task(consumer())
            await asyncio.sleep(0)
            async with condition.lock:
                items.append(1)
                condition.notify(1)

    return scenario


# -- 4. wait_for that returns the result and drops the cancellation (bpo-42130) -------------------


async def wait_for(job: Awaitable[int], delay: float, fixed: bool) -> int:
    loop = asyncio.get_running_loop()
    inner = asyncio.ensure_future(job)
    waiter: asyncio.Future[None] = loop.create_future()

    def release(_: object = None) -> None:
        if not waiter.done():
            waiter.set_result(None)

    handle = loop.call_later(delay, release)
    inner.add_done_callback(release)
    try:
        await waiter
    except asyncio.CancelledError:
        if inner.done() and not fixed:
            return inner.result()  # the result wins, the cancellation is lost
        inner.cancel()
        raise
    finally:
        handle.cancel()
    if not inner.done():
        inner.cancel()
        raise TimeoutError
    return inner.result()


def wait_for_swallow(fixed: bool) -> Scenario:
    async def scenario() -> None:
        async def job() -> int:
            await asyncio.sleep(0)
            return 1

        async def worker() -> None:
            await wait_for(job(), 10, fixed)
            task = asyncio.current_task()
            assert task is not None
            assert not task.cancelling(), "wait_for swallowed the cancellation of its caller"

        async with asyncio.TaskGroup() as tg:
            tg.create_task(worker())

    return scenario


# -- 5. a capacity limiter whose acquire can be cancelled after it took the slot ------------------


class Limiter:
    """anyio's rule: an acquire that succeeded must not raise a cancellation afterwards."""

    def __init__(self, total: int, fixed: bool) -> None:
        self.fixed = fixed
        self.total = total
        self.borrowers: set[object] = set()
        self.waiting: deque[tuple[object, anyio.Event]] = deque()

    async def acquire(self, borrower: object) -> None:
        await anyio.lowlevel.checkpoint_if_cancelled()
        if len(self.borrowers) < self.total and not self.waiting:
            self.borrowers.add(borrower)
            if self.fixed:
                await anyio.lowlevel.cancel_shielded_checkpoint()
            else:
                await anyio.lowlevel.checkpoint()  # cancellable after the slot was taken
            return
        event = anyio.Event()
        self.waiting.append((borrower, event))
        try:
            await event.wait()
        except BaseException:
            if (borrower, event) in self.waiting:
                self.waiting.remove((borrower, event))
            else:
                self.release(borrower)
            raise

    def release(self, borrower: object) -> None:
        self.borrowers.remove(borrower)
        if self.waiting:
            nxt, event = self.waiting.popleft()
            self.borrowers.add(nxt)
            event.set()


def limiter_borrower(fixed: bool) -> Scenario:
    async def scenario() -> None:
        limiter = Limiter(1, fixed)

        async def borrower(name: str) -> None:
            await limiter.acquire(name)
            try:
                await anyio.lowlevel.checkpoint()
            finally:
                limiter.release(name)

        async with anyio.create_task_group() as tg:
            tg.start_soon(borrower, "a")
            tg.start_soon(borrower, "b")
        assert not limiter.borrowers, f"slots leaked to {sorted(map(str, limiter.borrowers))}"

    return scenario


# -- 6. a memory stream whose send is cancelled after the item was taken --------------------------


class Stream:
    """An unbuffered stream: a send hands its item to a waiting receiver."""

    def __init__(self, fixed: bool) -> None:
        self.fixed = fixed
        self.receivers: deque[tuple[list[int], anyio.Event]] = deque()
        self.senders: deque[anyio.Event] = deque()
        self.closed = False

    async def send(self, item: int) -> None:
        if self.fixed:
            await anyio.lowlevel.checkpoint()  # cancellable while nothing has happened yet
        if not self.receivers:
            ready = anyio.Event()
            self.senders.append(ready)
            await ready.wait()
        box, event = self.receivers.popleft()
        box.append(item)
        event.set()
        if not self.fixed:
            await anyio.lowlevel.checkpoint()  # the item is delivered, yet this may raise

    def close(self) -> None:
        """No more items: every waiting receiver gets None."""
        self.closed = True
        while self.receivers:
            self.receivers.popleft()[1].set()

    async def receive(self) -> int | None:
        if self.closed:
            return None
        box: list[int] = []
        event = anyio.Event()
        self.receivers.append((box, event))
        if self.senders:
            self.senders.popleft().set()
        await event.wait()
        return box[0] if box else None


def stream_send(fixed: bool) -> Scenario:
    async def scenario() -> None:
        stream = Stream(fixed)
        failed: list[int] = []
        received: list[int] = []

        async def sender() -> None:
            try:
                await stream.send(7)
            except anyio.get_cancelled_exc_class():
                failed.append(7)  # the caller is told the item was not sent
                raise
            finally:
                stream.close()

        async def receiver() -> None:
            item = await stream.receive()
            if item is not None:
                received.append(item)

        async with anyio.create_task_group() as tg:
            tg.start_soon(receiver)
            tg.start_soon(sender)
        lost = set(failed) & set(received)
        assert not lost, f"send raised a cancellation but item {sorted(lost)} was received"

    return scenario


# -- 7. a two-step update interrupted between its steps -------------------------------------------


def two_step_transfer(fixed: bool) -> Scenario:
    async def scenario() -> None:
        accounts = {"a": 100, "b": 0}

        async def move() -> None:
            accounts["a"] -= 10
            await anyio.lowlevel.checkpoint()  # the write-ahead log, say
            accounts["b"] += 10

        async def transfer() -> None:
            if fixed:
                with anyio.CancelScope(shield=True):
                    await move()
            else:
                await move()

        async with anyio.create_task_group() as tg:
            tg.start_soon(transfer)
            tg.start_soon(transfer)
        total = accounts["a"] + accounts["b"]
        assert total == 100, f"money appeared or vanished: {accounts}"

    return scenario


# -- 8. a cleanup that awaits without a shield ----------------------------------------------------


class Pool:
    def __init__(self) -> None:
        self.open = 0


class Connection:
    def __init__(self, pool: Pool) -> None:
        self.pool = pool

    async def __aenter__(self) -> Connection:
        await anyio.lowlevel.checkpoint()
        self.pool.open += 1
        return self

    async def aclose(self) -> None:
        await anyio.lowlevel.checkpoint()  # tell the server goodbye
        self.pool.open -= 1


def shielded_cleanup(fixed: bool) -> Scenario:
    async def scenario() -> None:
        pool = Pool()

        async def worker() -> None:
            connection = await Connection(pool).__aenter__()
            try:
                await anyio.sleep(1)
            finally:
                if fixed:
                    with anyio.CancelScope(shield=True):
                        await connection.aclose()
                else:
                    await connection.aclose()

        async with anyio.create_task_group() as tg:
            tg.start_soon(worker)
            tg.start_soon(worker)
        assert pool.open == 0, f"{pool.open} connection(s) never closed"

    return scenario


def trio_shielded_cleanup(fixed: bool) -> Scenario:
    """The same cleanup bug in plain trio."""

    async def scenario() -> None:
        pool = Pool()

        async def worker() -> None:
            await trio.lowlevel.checkpoint()
            pool.open += 1
            try:
                await trio.sleep(1)
            finally:
                with trio.CancelScope(shield=fixed):
                    await trio.lowlevel.checkpoint()
                    pool.open -= 1

        async with trio.open_nursery() as nursery:
            nursery.start_soon(worker)
            nursery.start_soon(worker)
        assert pool.open == 0, f"{pool.open} connection(s) never closed"

    return scenario


#: name -> (scenario factory, backends it applies to).
CANCEL_BUGS: dict[str, tuple[Callable[[bool], Scenario], tuple[str, ...]]] = {
    "lock_handoff": (lock_handoff, ("asyncio",)),
    "semaphore_permit": (semaphore_permit, ("asyncio",)),
    "condition_notify": (condition_notify, ("asyncio",)),
    "wait_for_swallow": (wait_for_swallow, ("asyncio",)),
    "limiter_borrower": (limiter_borrower, ("asyncio", "trio")),
    "stream_send": (stream_send, ("asyncio", "trio")),
    "two_step_transfer": (two_step_transfer, ("asyncio", "trio")),
    "shielded_cleanup": (shielded_cleanup, ("asyncio", "trio")),
    "trio_shielded_cleanup": (trio_shielded_cleanup, ("trio",)),
}


# -- timeouts that race with no tuned numbers -----------------------------------------------------


def _stock(body: Callable[[dict[str, int]], Awaitable[None]]) -> Scenario:
    async def scenario() -> None:
        state = {"stock": 5, "orders": 0}
        await body(state)
        assert state["stock"] + state["orders"] == 5, f"a unit went missing: {state}"

    return scenario


def asyncio_timeout(fixed: bool) -> Scenario:
    async def body(state: dict[str, int]) -> None:
        async def buy() -> None:
            try:
                async with asyncio.timeout(5):
                    state["stock"] -= 1
                    await asyncio.sleep(1)  # the payment: far quicker than the timeout
                    state["orders"] += 1
            except TimeoutError:
                if fixed:
                    state["stock"] += 1

        async with asyncio.TaskGroup() as tg:
            tg.create_task(buy())

    return _stock(body)


def asyncio_wait_for(fixed: bool) -> Scenario:
    async def body(state: dict[str, int]) -> None:
        async def pay() -> None:
            await asyncio.sleep(1)
            state["orders"] += 1

        async def buy() -> None:
            state["stock"] -= 1
            try:
                await asyncio.wait_for(pay(), 5)
            except TimeoutError:
                if fixed:
                    state["stock"] += 1

        async with asyncio.TaskGroup() as tg:
            tg.create_task(buy())

    return _stock(body)


def anyio_fail_after(fixed: bool) -> Scenario:
    async def body(state: dict[str, int]) -> None:
        async def buy() -> None:
            try:
                with anyio.fail_after(5):
                    state["stock"] -= 1
                    await anyio.sleep(1)
                    state["orders"] += 1
            except TimeoutError:
                if fixed:
                    state["stock"] += 1

        async with anyio.create_task_group() as tg:
            tg.start_soon(buy)

    return _stock(body)


def trio_move_on_after(fixed: bool) -> Scenario:
    async def body(state: dict[str, int]) -> None:
        async def buy() -> None:
            with trio.move_on_after(5) as scope:
                state["stock"] -= 1
                await trio.sleep(1)
                state["orders"] += 1
            if fixed and scope.cancelled_caught:
                state["stock"] += 1

        async with trio.open_nursery() as nursery:
            nursery.start_soon(buy)

    return _stock(body)


TIMEOUT_BUGS: dict[str, tuple[Callable[[bool], Scenario], tuple[str, ...]]] = {
    "asyncio_timeout": (asyncio_timeout, ("asyncio",)),
    "asyncio_wait_for": (asyncio_wait_for, ("asyncio",)),
    "anyio_fail_after": (anyio_fail_after, ("asyncio", "trio")),
    "trio_move_on_after": (trio_move_on_after, ("trio",)),
}
