"""Each footprint rule that sees through library code or a user coroutine, held by a program
whose outcomes differ between schedules only through the access that rule reports.

A rule that missed that access would make the two racing steps look independent, and the
reduced dfs would explore one order of them only: it would observe fewer outcomes than the full
tree. Every program is correct (no schedule fails), so nothing but the comparison of the two
outcome sets can catch the mistake, and the expected set is spelled out so that a program whose
schedules all agree (a test that could not fail) is refused.

The scenario touches every shared object in a step of its own before it starts the tasks: the
step that touches an object first numbers it, and conflicts with every other such step (see
``LABELLING`` in ``_footprint``). A task's first touch would also be a second access racing
with the other task's step, which orders the two tasks whatever the rule under test says and
hides its mistake. The tasks' steps are then judged on what they touch only.
"""

from __future__ import annotations

import types
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import anyio
import anyio.lowlevel
import pytest
import trio

from asynclocks import Backend

from .test_reduction_property import explore_all

#: A program: the scenario and the list each of its schedules appends its outcome to.
Program = tuple[Callable[[], Awaitable[None]], list[Any]]


class Box:
    n = 0


def check(
    make: Callable[[], Program], backend: Backend, expected: set[Any] | dict[str, set[Any]]
) -> None:
    """The full tree observes ``expected`` (per backend when it is a dict: trio runs every
    runnable task once per batch, so the tasks advance in lock step); the reduced tree observes
    the same."""
    if isinstance(expected, dict):
        expected = expected[backend]
    full_count, everything = explore_all(*make(), backend, reduce=False)
    reduced_count, kept = explore_all(*make(), backend, reduce=True)
    assert everything == expected, "the program does not race as the test assumes"
    assert kept == everything, f"reduced dfs lost {everything - kept}"
    assert reduced_count <= full_count


async def run(*tasks: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run the tasks in a task group; the caller has labelled the shared objects just before
    (its step that made them is unknown: it called user classes)."""
    async with anyio.create_task_group() as group:
        for task in tasks:
            group.start_soon(task)


checkpoint = anyio.lowlevel.checkpoint


# -- calls of ``async def`` helpers ------------------------------------------------------------


def helper_returns_within_the_step() -> Program:
    """Guards: a coroutine that ran to its end inside the step is on neither chain, so its call
    is unknown (``_Code._awaited_at``): only one the frame stops awaiting is seen through."""
    outcomes: list[Any] = []

    async def peek(box: Box) -> int:
        return box.n

    async def scenario() -> None:
        box = Box()
        seen = -1

        async def reader() -> None:
            nonlocal seen
            seen = await peek(box)
            await checkpoint()

        async def writer() -> None:
            box.n = 1
            await checkpoint()

        await checkpoint()
        _ = box.n  # labelled before the tasks start (see the module's docstring)
        await checkpoint()
        await run(reader, writer)
        outcomes.append(seen)

    return scenario, outcomes


def helper_suspends() -> Program:
    """Guards: the frame of a helper coroutine entered within the step (it suspends halfway)
    is analysed from its start (``_step_footprint`` over the chain it stopped in)."""
    outcomes: list[Any] = []

    async def bump(box: Box) -> None:
        box.n += 1
        await checkpoint()
        box.n += 1

    async def scenario() -> None:
        box = Box()
        seen = (-1, -1)

        async def bumper() -> None:
            await bump(box)
            await checkpoint()

        async def reader() -> None:
            nonlocal seen
            first = box.n
            await checkpoint()
            seen = (first, box.n)
            await checkpoint()

        await checkpoint()
        _ = box.n  # labelled before the tasks start (see the module's docstring)
        await checkpoint()
        await run(bumper, reader)
        outcomes.append(seen)

    return scenario, outcomes


def helper_in_a_variable() -> Program:
    """Guards: a function called from a variable is checked per step to be a coroutine function
    (the ``coro`` access): two tasks run the same code, at the same positions, once with an
    ``async def`` helper and once with a plain function that bumps the box before handing back
    that helper's coroutine. The template cached from the first must not excuse the second."""
    outcomes: list[Any] = []

    async def scenario() -> None:
        box = Box()
        seen = -1

        async def gentle(target: Box) -> None:
            await checkpoint()

        def sneaky(target: Box) -> Awaitable[None]:
            target.n += 1
            return gentle(target)

        async def worker(work: Callable[[Box], Awaitable[None]]) -> None:
            await work(box)
            await checkpoint()

        async def plain() -> None:
            await worker(gentle)

        async def bumping() -> None:
            await worker(sneaky)

        async def reader() -> None:
            nonlocal seen
            seen = box.n
            await checkpoint()

        await checkpoint()
        _ = box.n  # labelled before the tasks start (see the module's docstring)
        await checkpoint()
        await run(plain, bumping, reader)
        outcomes.append(seen)

    return scenario, outcomes


@pytest.mark.parametrize(
    "make",
    [helper_returns_within_the_step, helper_suspends, helper_in_a_variable],
    ids=lambda make: make.__name__,
)
def test_helper_coroutines(backend: Backend, make: Callable[[], Program]) -> None:
    if make is helper_suspends:
        # (first read, second read): either may fall before, between or after the halves.
        pairs = {(0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2)}
        check(make, backend, {"asyncio": pairs, "trio": {(0, 1), (1, 1), (0, 2), (1, 2)}})
    else:
        check(make, backend, {0, 1})


# -- memory streams ----------------------------------------------------------------------------


def stream_ends() -> Program:
    """Guards: a send and a receive on the two ends of one memory stream touch the state the
    ends share (``_primitive_labels`` of a stream)."""
    outcomes: list[Any] = []

    async def scenario() -> None:
        send, receive = anyio.create_memory_object_stream[int](1)
        seen = -2

        async def sender() -> None:
            send.send_nowait(1)
            await checkpoint()

        async def receiver() -> None:
            nonlocal seen
            seen = receive.receive_nowait() if receive.statistics().current_buffer_used else -1
            await checkpoint()

        await checkpoint()
        _ = send.statistics()  # labelled before the tasks start (see the module's docstring)
        await checkpoint()
        with send, receive:
            await run(sender, receiver)
        outcomes.append(seen)

    return scenario, outcomes


def trio_channel_ends() -> Program:
    """Guards: the same for trio's memory channels."""
    outcomes: list[Any] = []

    async def scenario() -> None:
        send, receive = trio.open_memory_channel[int](1)
        seen = -2

        async def sender() -> None:
            send.send_nowait(1)
            await trio.lowlevel.checkpoint()

        async def receiver() -> None:
            nonlocal seen
            seen = receive.receive_nowait() if receive.statistics().current_buffer_used else -1
            await trio.lowlevel.checkpoint()

        await trio.lowlevel.checkpoint()
        _ = send.statistics()  # labelled before the tasks start (see the module's docstring)
        await checkpoint()
        with send, receive:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(sender)
                nursery.start_soon(receiver)
        outcomes.append(seen)

    return scenario, outcomes


def async_for_over_a_stream() -> Program:
    """Guards: ``async for`` over an anyio memory stream touches the stream: anyio's receive
    checkpoints first, so the loop takes its item in a step resumed in the stream's
    ``__anext__`` and ``receive`` (``_library_frame``'s primitive frames)."""
    outcomes: list[Any] = []

    async def scenario() -> None:
        send, receive = anyio.create_memory_object_stream[int](1)
        buffered = -1
        send.send_nowait(1)

        async def consumer() -> None:
            async for _item in receive:
                break
            await checkpoint()

        async def watcher() -> None:
            nonlocal buffered
            await checkpoint()
            buffered = send.statistics().current_buffer_used
            await checkpoint()

        await checkpoint()
        _ = send.statistics()  # labelled before the tasks start (see the module's docstring)
        await checkpoint()
        with send, receive:
            await run(consumer, watcher)
        outcomes.append(buffered)

    return scenario, outcomes


def async_for_ends_on_a_closed_channel() -> Program:
    """Guards: ``async for`` over a trio channel touches the channel (``_Code._aiter_marker``):
    on a closed channel the loop ends without suspending, so no library frame shows it."""
    outcomes: list[Any] = []

    async def scenario() -> None:
        send, receive = trio.open_memory_channel[int](0)
        waiting = -1

        async def closer() -> None:
            nonlocal waiting
            waiting = send.statistics().tasks_waiting_receive
            send.close()
            await trio.lowlevel.checkpoint()

        async def consumer() -> None:
            async for _item in receive:
                pass
            await trio.lowlevel.checkpoint()

        await trio.lowlevel.checkpoint()
        _ = send.statistics()  # labelled before the tasks start (see the module's docstring)
        await checkpoint()
        with send, receive:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(closer)
                nursery.start_soon(consumer)
        outcomes.append(waiting)

    return scenario, outcomes


def test_anyio_memory_streams(backend: Backend) -> None:
    check(stream_ends, backend, {1, -1})


def test_trio_memory_channels() -> None:
    check(trio_channel_ends, "trio", {1, -1})


def test_async_for_over_a_stream(backend: Backend) -> None:
    check(async_for_over_a_stream, backend, {0, 1})


def test_async_for_ends_on_a_closed_channel() -> None:
    check(async_for_ends_on_a_closed_channel, "trio", {0, 1})


# -- properties of primitives ------------------------------------------------------------------


def limiter_resized() -> Program:
    """Guards: an attribute of a library primitive (a property) touches the primitive
    (``_compile_location``'s primitive case): a resize and a read of the free tokens."""
    outcomes: list[Any] = []

    async def scenario() -> None:
        limiter = anyio.CapacityLimiter(1)
        seen = -1.0

        async def resizer() -> None:
            limiter.total_tokens = 2
            await checkpoint()

        async def reader() -> None:
            nonlocal seen
            seen = limiter.available_tokens
            await checkpoint()

        await checkpoint()
        _ = limiter.available_tokens  # labelled before the tasks start (see the module's docstring)
        await checkpoint()
        await run(resizer, reader)
        outcomes.append(seen)

    return scenario, outcomes


def test_primitive_properties(backend: Backend) -> None:
    check(limiter_resized, backend, {1, 2})


# -- task groups -------------------------------------------------------------------------------


def spawn_into_a_closing_group() -> Program:
    """Guards: ``start_soon`` and a task group's normal exit both touch ``JOIN`` (the
    ``_SPAWN_METHODS`` call and the task-group exit of ``_Code._combine``/``_TASK_GROUP``): a
    child started before the group closes runs; one started after is refused."""
    outcomes: list[Any] = []

    async def scenario() -> None:
        box = Box()
        groups: list[anyio.abc.TaskGroup] = []
        ready = anyio.Event()
        refused = False

        async def child() -> None:
            box.n += 1

        async def owner() -> None:
            async with anyio.create_task_group() as group:
                groups.append(group)
                ready.set()
                await checkpoint()
                await checkpoint()
            await checkpoint()

        async def spawner() -> None:
            nonlocal refused
            await ready.wait()
            group = groups[0]
            await checkpoint()
            try:
                group.start_soon(child)
            except RuntimeError:
                refused = True
            await checkpoint()

        await checkpoint()
        _ = box.n, groups[:]  # labelled before the tasks start (see the module's docstring)
        await checkpoint()
        await run(owner, spawner)
        outcomes.append((refused, box.n))

    return scenario, outcomes


# A child started while the group's exit is under way on asyncio is never run (anyio has seen
# the group empty); its coroutine is collected unawaited.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_task_group_spawn_and_exit(backend: Backend) -> None:
    # (refused, the box the child bumps).
    expected = {
        "asyncio": {(True, 0), (False, 0), (False, 1)},
        "trio": {(True, 0), (False, 1)},
    }
    check(spawn_into_a_closing_group, backend, expected)


# -- module attributes -------------------------------------------------------------------------

settings = types.ModuleType("settings")
package = types.ModuleType("package")
package.settings = settings  # type: ignore[attr-defined]


def module_attribute() -> Program:
    """Guards: ``module.name`` and ``package.module.name`` read the global ``name`` of that
    module (``_global_module``), which a write of the attribute writes."""
    outcomes: list[Any] = []

    async def scenario() -> None:
        settings.limit = 1  # type: ignore[attr-defined]
        seen: list[int] = []

        async def writer() -> None:
            settings.limit = 2  # type: ignore[attr-defined]
            await checkpoint()

        async def reader() -> None:
            direct = settings.limit
            await checkpoint()
            through_package = package.settings.limit
            await checkpoint()
            seen.extend((direct, through_package))

        await run(writer, reader)
        outcomes.append(tuple(seen))

    return scenario, outcomes


def test_module_attributes(backend: Backend) -> None:
    check(
        module_attribute, backend, {"asyncio": {(1, 1), (1, 2), (2, 2)}, "trio": {(1, 2), (2, 2)}}
    )


# -- exceptions --------------------------------------------------------------------------------


class Counted(Exception):
    """A user exception whose constructor runs user code (bumps a box)."""

    def __init__(self, box: Box) -> None:
        box.n += 1
        super().__init__(box.n)


def raising() -> Program:
    """Guards: only Python's own exception classes are free to make (``_builtin_exception``);
    a user one runs its ``__init__``. The builtin one's argument is still read."""
    outcomes: list[Any] = []

    async def scenario() -> None:
        box = Box()
        table = {"k": 0}
        carried = counted = -1

        async def raiser() -> None:
            nonlocal carried
            try:
                raise Counted(box)
            except Counted:
                pass
            await checkpoint()
            try:
                raise KeyError(table["k"])
            except KeyError as error:
                carried = error.args[0]
            await checkpoint()

        async def other() -> None:
            nonlocal counted
            counted = box.n
            await checkpoint()
            table["k"] = 1
            await checkpoint()

        await checkpoint()
        _ = box.n, table["k"]  # labelled before the tasks start (see the module's docstring)
        await checkpoint()
        await run(raiser, other)
        outcomes.append((counted, carried))

    return scenario, outcomes


def test_exceptions(backend: Backend) -> None:
    check(raising, backend, {(0, 0), (0, 1), (1, 0), (1, 1)})


# -- a capacity limiter's acquisition ------------------------------------------------------------


def limiter_waiter_cancelled() -> Program:
    """Guards: a step that resumes in a limiter's acquisition and leaves it touches the limiter
    unless the task then holds a token (``_left_acquisition``): a waiter cancelled in the queue
    leaves it on its way out (on asyncio: trio takes it out when cancelling), which a task
    counting the queue after the cancellation sees or not."""
    outcomes: list[Any] = []

    async def scenario() -> None:
        limiter = anyio.CapacityLimiter(1)
        counts: list[int] = []
        scope = anyio.CancelScope()
        queued = anyio.Event()
        cancelled = anyio.Event()
        looked = anyio.Event()
        left = anyio.Event()

        # Every step but the scenario's and the waiter's first and last is known; the
        # scenario's cancelling step comes before both looks, its next one after the looks and
        # the waiter's way out of the queue, so only that way out orders the looks.
        async def waiter() -> None:
            # Bound a step before: the line the step that leaves the queue resumes on then names
            # no attribute of the limiter (which would touch it; see ``_compile_location``).
            take = limiter.acquire
            await checkpoint()
            with scope:
                queued.set()
                try:
                    await take()
                except BaseException:
                    left.set()  # cancelled in the queue: it left it in this step
                else:
                    # Not on a path to the next checkpoint: the step that leaves the queue is
                    # judged on the library frames it left, not on a release it did not run.
                    limiter.release()
                    return
                try:
                    await checkpoint()  # the scope is still cancelled: raises again
                except BaseException:
                    pass

        async def counter() -> None:
            await cancelled.wait()
            counts.append(limiter.statistics().tasks_waiting)
            await checkpoint()
            counts.append(limiter.statistics().tasks_waiting)
            await checkpoint()
            looked.set()
            await checkpoint()

        await limiter.acquire()  # the scenario holds the only token: the waiter queues
        _ = limiter.statistics(), counts[:]  # labelled before the tasks start
        await checkpoint()
        async with anyio.create_task_group() as group:
            group.start_soon(counter)
            group.start_soon(waiter)
            await queued.wait()
            await checkpoint()  # the waiter is in the queue
            scope.cancel()
            cancelled.set()
            await looked.wait()
            await left.wait()
        limiter.release()
        outcomes.append(tuple(counts))

    return scenario, outcomes


def test_limiter_acquisition_left() -> None:
    # The queue's length at the counter's two looks, both after the cancellation.
    check(limiter_waiter_cancelled, "asyncio", {(1, 1), (1, 0), (0, 0)})
