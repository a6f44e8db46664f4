"""Random programs of acquire/release/cancel over a few tasks and keys, checked against a model.

Each actor is a real task that obeys commands; after every command the test waits until all
tasks are blocked and compares the lock's observable state (locked(), len(), statistics, and
which actor holds what) with a plain model: one owner per key and a FIFO queue of waiters.
The operations include the awkward one, a release immediately followed by the cancellation of
the waiter it handed the key to; the model encodes each backend's documented answer.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from dataclasses import dataclass, field

import anyio
import pytest
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from asynclocks import KeyedLock, WouldBlock

pytestmark = pytest.mark.anyio

ACTORS = 4
KEYS = 3

Command = tuple[str, int, int]  # (operation, key, target actor for "release_cancel_next")

# (operation, a, b): a and b pick among the choices the current state allows, so that few
# generated steps are no-ops (see `pick`).
operations = st.lists(
    st.tuples(
        st.sampled_from(["acquire", "release", "nowait", "cancel", "release_cancel_next"]),
        st.integers(0, 63),
        st.integers(0, 63),
    ),
    min_size=15,
    max_size=60,
)


def pick(choices: list[tuple[int, int]], index: int) -> tuple[int, int] | None:
    return choices[index % len(choices)] if choices else None


@dataclass
class Model:
    owner: dict[int, int] = field(default_factory=dict)
    queues: dict[int, deque[int]] = field(default_factory=dict)
    held: list[set[int]] = field(default_factory=lambda: [set() for _ in range(ACTORS)])
    waiting: list[int | None] = field(default_factory=lambda: [None] * ACTORS)

    def acquire(self, actor: int, key: int) -> None:
        if key in self.owner:
            self.queues.setdefault(key, deque()).append(actor)
            self.waiting[actor] = key
        else:
            self.owner[key] = actor
            self.held[actor].add(key)

    def hand_over(self, key: int) -> int | None:
        """Release `key`; return the actor it goes to, if any."""
        queue = self.queues.get(key)
        if not queue:
            del self.owner[key]
            self.queues.pop(key, None)
            return None
        actor = queue.popleft()
        if not queue:
            del self.queues[key]
        self.owner[key] = actor
        self.held[actor].add(key)
        self.waiting[actor] = None
        return actor

    def release(self, actor: int, key: int) -> int | None:
        self.held[actor].discard(key)
        return self.hand_over(key)

    def cancel_waiter(self, actor: int) -> None:
        key = self.waiting[actor]
        assert key is not None
        self.queues[key].remove(actor)
        if not self.queues[key]:
            del self.queues[key]
        self.waiting[actor] = None


class Harness:
    def __init__(self, backend: str) -> None:
        self.backend = backend
        self.locks = KeyedLock()
        self.held: list[set[int]] = [set() for _ in range(ACTORS)]
        self.scopes: list[anyio.CancelScope | None] = [None] * ACTORS
        self.tasks: list[asyncio.Task[object] | None] = [None] * ACTORS
        self.nowait_results: list[bool] = []
        self.inboxes: list[MemoryObjectSendStream[Command]] = []

    async def actor(self, me: int, inbox: MemoryObjectReceiveStream[Command]) -> None:
        if self.backend == "asyncio":
            self.tasks[me] = asyncio.current_task()
        async with inbox:
            async for op, key, target in inbox:
                if op == "acquire":
                    await self._acquire(me, key)
                elif op == "nowait":
                    try:
                        self.locks.acquire_nowait(key)
                    except WouldBlock:
                        self.nowait_results.append(False)
                    else:
                        self.held[me].add(key)
                        self.nowait_results.append(True)
                elif op == "release":
                    self.locks.release(key)
                    self.held[me].discard(key)
                elif op == "release_cancel_next":
                    # Release, then cancel the task the key was just handed to, before it runs.
                    self.locks.release(key)
                    self.held[me].discard(key)
                    if self.backend == "asyncio":
                        task = self.tasks[target]
                        assert task is not None
                        task.cancel()
                    else:
                        scope = self.scopes[target]
                        assert scope is not None
                        scope.cancel()

    async def _acquire(self, me: int, key: int) -> None:
        try:
            with anyio.CancelScope() as scope:
                self.scopes[me] = scope
                await self.locks.acquire(key)
                self.held[me].add(key)
        except asyncio.CancelledError:
            # Only a raw Task.cancel() (release_cancel_next on asyncio) gets here; anyio's own
            # cancellation is absorbed by the scope. Swallow it so the actor lives on.
            task = asyncio.current_task()
            assert task is not None
            task.uncancel()
        finally:
            self.scopes[me] = None


async def settle(backend: str) -> None:
    """Return once every other task is blocked.

    anyio.wait_all_tasks_blocked() is exact on trio, but on asyncio it sleeps 0.1 s whenever a
    task is still runnable, which a hand-over always leaves behind; polling with sleep(0) is
    the same condition without the wall-clock wait.
    """
    if backend != "asyncio":
        await anyio.wait_all_tasks_blocked()
        return
    me = asyncio.current_task()
    for _ in range(10_000):
        await asyncio.sleep(0)
        runnable = [
            task
            for task in asyncio.all_tasks()
            if task is not me and (task._fut_waiter is None or task._fut_waiter.done())  # type: ignore[attr-defined]
        ]
        if not runnable:
            return
    raise AssertionError(f"tasks never settled: {runnable}")


def check(model: Model, harness: Harness) -> None:
    locks = harness.locks
    assert harness.held == model.held
    for key in range(KEYS):
        assert locks.locked(key) == (key in model.owner)
    assert len(locks) == len(model.owner)
    stats = locks.statistics()
    assert dict(stats.waiting_per_key) == {k: len(q) for k, q in model.queues.items()}
    assert stats.tasks_waiting == sum(len(q) for q in model.queues.values())


@settings(
    max_examples=150,
    deadline=None,
    # The same programs every run (the project's determinism rule): no random seed, no database.
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(program=operations)
async def test_random_programs_match_the_model(
    anyio_backend: str, program: list[tuple[str, int, int]]
) -> None:
    model = Model()
    harness = Harness(anyio_backend)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            for me in range(ACTORS):
                send, receive = anyio.create_memory_object_stream[Command](math.inf)
                harness.inboxes.append(send)
                tg.start_soon(harness.actor, me, receive)
            await settle(anyio_backend)

            for op, a, b in program:
                idle = [n for n in range(ACTORS) if model.waiting[n] is None]
                if op in ("acquire", "nowait"):
                    choice = pick(
                        [(n, k) for n in idle for k in range(KEYS) if k not in model.held[n]],
                        a * 64 + b,
                    )
                    if choice is None:
                        continue
                    actor, key = choice
                    if op == "acquire":
                        harness.inboxes[actor].send_nowait(("acquire", key, 0))
                        model.acquire(actor, key)
                    else:
                        free = key not in model.owner
                        harness.inboxes[actor].send_nowait(("nowait", key, 0))
                        if free:
                            model.acquire(actor, key)
                        await settle(anyio_backend)
                        assert harness.nowait_results.pop() == free
                elif op == "cancel":
                    choice = pick([(n, 0) for n in range(ACTORS) if n not in idle], a)
                    if choice is None:
                        continue
                    actor = choice[0]
                    scope = harness.scopes[actor]
                    assert scope is not None
                    scope.cancel()
                    model.cancel_waiter(actor)
                elif op == "release":
                    choice = pick([(n, k) for n in idle for k in sorted(model.held[n])], a)
                    if choice is None:
                        continue
                    actor, key = choice
                    harness.inboxes[actor].send_nowait(("release", key, 0))
                    model.release(actor, key)
                else:  # release_cancel_next
                    choice = pick(
                        [
                            (n, k)
                            for n in idle
                            for k in sorted(model.held[n])
                            if model.queues.get(k)
                        ],
                        a,
                    )
                    if choice is None:
                        continue
                    actor, key = choice
                    target = model.queues[key][0]
                    harness.inboxes[actor].send_nowait(("release_cancel_next", key, target))
                    assert model.release(actor, key) == target
                    if anyio_backend == "asyncio":
                        # Cancelled before it ran: the key goes on to the next waiter.
                        model.held[target].discard(key)
                        model.hand_over(key)
                    # trio: the rescheduled task owns the key; the cancellation finds no
                    # checkpoint left inside the acquire's scope.
                event(op)
                await settle(anyio_backend)
                check(model, harness)

            # Wind down: cancel every waiter, release every key, and nothing may remain.
            for actor in range(ACTORS):
                if model.waiting[actor] is not None:
                    scope = harness.scopes[actor]
                    assert scope is not None
                    scope.cancel()
                    model.cancel_waiter(actor)
            await settle(anyio_backend)
            for actor in range(ACTORS):
                for key in sorted(model.held[actor]):
                    harness.inboxes[actor].send_nowait(("release", key, 0))
                    model.release(actor, key)
                    await settle(anyio_backend)
            check(model, harness)
            for inbox in harness.inboxes:
                inbox.close()
    assert len(harness.locks) == 0
    assert harness.locks.statistics().tasks_waiting == 0
