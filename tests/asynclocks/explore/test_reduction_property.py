"""Sleep sets must keep every reachable outcome: a property test over generated scenarios.

Each example is a small program (two or three tasks, each a few statements touching shared state
in different ways: attributes, closure cells, dict items, a list, a lock, checkpoints). Its dfs
tree is explored in full twice, with and without the reduction, recording the final shared state
of every schedule. Equivalent schedules end in the same state, so the two sets must be equal: a
reduction that pruned a schedule it should not have would lose a final state.
"""

from __future__ import annotations

import textwrap
from collections.abc import Awaitable, Callable, Generator
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asynclocks import Backend
from asynclocks._explore._api import drive
from asynclocks._explore._common import Outcome
from asynclocks._explore._schedulers import DepthFirst, DfsChooser
from tests.depth import by_depth

OPERATIONS = [
    "value = shared.x",
    "shared.x = value + 1",
    "value = cell",
    "cell = value + 1",
    "value = table['k']",
    "table['k'] = value + 1",
    "table['k'] += 1",
    "items.append(len(items))",
    "value = len(items)",
    "await anyio.lowlevel.checkpoint()",
    "await anyio.sleep(0)",
    "async with lock:\n    value = cell\n    await anyio.sleep(0)\n    cell = value + 1",
    "if len(items) < 2:\n    await anyio.lowlevel.checkpoint()\n    items.append(-1)",
    "if shared.x == 0:\n    shared.x = 10",
    # A bare truth test reads the list's length (3.13: TO_BOOL; before: the jump itself).
    "value = 1 if items else 0",
    # Per-object and per-key state (precise footprints): the task's own box and key, the other
    # task's box and key, and the same objects reached through other names and coarse reads.
    "mine.n += 1",
    "value = mine.n",
    "theirs.n = value + 1",
    "table[me] += 1",
    "value = table[other]",
    "table[other] = value",
    "value = len(table)",
    "value = vars(theirs).get('n', 0)",
    "alias = boxes[me]\nalias.n = value",
    # Through library code and user coroutines: a helper coroutine that ends within the step
    # (its body is on no chain) and one that suspends; a builtin exception; a memory stream's
    # two ends; a capacity limiter resized (a property that wakes waiters) and read; a task
    # group of the task's own, whose child bumps the task's box.
    "value = await peek(theirs)",
    "await bump(mine)",
    "value = theirs.n",
    "try:\n    raise KeyError(table['k'])\nexcept KeyError as error:\n    value = error.args[0]",
    "send.send_nowait(value)",
    "value = receive.receive_nowait() if receive.statistics().current_buffer_used else -1",
    "limiter.total_tokens = 2",
    "value = limiter.available_tokens",
    "async with anyio.create_task_group() as inner:\n    inner.start_soon(bump, mine)",
    # A task's own object and own key across a checkpoint (issue 13's example), a semaphore
    # two tasks may hold at once, a capacity limiter, a one-slot semaphore nested with the lock
    # in both orders (a deadlock when two tasks take them crosswise) and an event some task
    # waits for (a deadlock when no task sets it).
    "mine.n += 1\nawait anyio.sleep(0)\nmine.n += 1",
    "table[me] += 1\nawait anyio.lowlevel.checkpoint()\nvalue = table[me]",
    "async with semaphore:\n    value = cell\n    await anyio.sleep(0)\n    cell = value + 1",
    "async with limiter:\n    table[me] += 1\n    await anyio.lowlevel.checkpoint()\n"
    "    value = table['k']",
    "async with gate:\n    async with lock:\n        cell += 1",
    "async with lock:\n    await anyio.lowlevel.checkpoint()\n    async with gate:\n"
    "        table['k'] += 1",
    "if not event.is_set():\n    await anyio.lowlevel.checkpoint()\n    event.set()",
    "await event.wait()\nvalue = cell",
    # Per-primitive synchronisation: the task's own lock, the other's, an event and a condition
    # whose lock is the first task's.
    "async with mylock:\n    value = table[me]\n    await anyio.sleep(0)\n"
    "    table[me] = value + 1",
    "async with theirlock:\n    value = mine.n\n    await anyio.lowlevel.checkpoint()\n"
    "    mine.n = value + 1",
    "event.set()",
    "value = 1 if event.is_set() else 0",
    "async with condition:\n    value = len(items)\n    condition.notify_all()",
    "async with mylock:\n    table['k'] = table['k'] * 2",
    "async with condition:\n    table['k'] += 1",
]
LOCKED_MINE = OPERATIONS[-7]
LOCKED_THEIRS = OPERATIONS[-6]
NOTIFY = OPERATIONS[-3]
DOUBLE = OPERATIONS[-2]
INCREMENT = OPERATIONS[-1]


class Shared:
    x = 0
    n = 0


def build(tasks: list[list[int]]) -> tuple[Callable[[], Awaitable[None]], list[Any]]:
    """Compile a scenario from operation indexes; returns it and the set it records into.

    Besides the final shared state, each task records what it observed after every operation
    (in a local dict, published through its own closure cell when it ends): equivalent
    schedules observe the same values, so comparing observations checks that no class of
    equivalent schedules was pruned, not only that the final states survived.
    """
    outcomes: list[Any] = []
    bodies = []
    for number, ops in enumerate(tasks):
        lines = [
            f"nonlocal cell, out{number}",
            "value = 0",
        ]
        for step, i in enumerate(ops):
            lines.append(OPERATIONS[i])
            # A key of the task's own dict: precise, so it conflicts with no other task's step.
            lines.append(f"seen[{step}] = value")
        # A last checkpoint keeps each operation out of the task's finishing step (which
        # conflicts with every other finishing step anyway).
        lines.append("await anyio.lowlevel.checkpoint()")
        lines.append(f"out{number} = tuple(seen.items())")
        body = textwrap.indent("\n".join(lines), "    ")
        # The task's own objects are parameters: locals not rebound, so resolved precisely.
        other = (number + 1) % len(tasks)
        parameters = (
            f"me={number}, other={other}, mine=boxes[{number}], theirs=boxes[{other}],"
            f" mylock=locks[{number}], theirlock=locks[{other}], seen={{}}"
        )
        bodies.append(f"async def task{number}({parameters}):\n{body}\n")
    outs = ", ".join(f"out{n}" for n in range(len(tasks)))
    spawn = "\n".join(f"        tg.start_soon(task{n})" for n in range(len(tasks)))
    source = (
        "def make(anyio, Shared, outcomes):\n"
        "    async def scenario():\n"
        "        shared = Shared()\n"
        "        cell = 0\n"
        "        table = {'k': 0, 0: 0, 1: 0, 2: 0}\n"
        f"        boxes = [Shared() for _ in range({len(tasks)})]\n"
        f"        locks = [anyio.Lock() for _ in range({len(tasks)})]\n"
        "        event = anyio.Event()\n"
        "        semaphore = anyio.Semaphore(2)\n"
        "        gate = anyio.Semaphore(1)\n"
        "        limiter = anyio.CapacityLimiter(1)\n"
        "        condition = anyio.Condition(locks[0])\n"
        "        items = []\n"
        "        lock = anyio.Lock()\n"
        "        send, receive = anyio.create_memory_object_stream(10)\n"
        "        async def peek(box):\n"
        "            return box.n\n"
        "        async def bump(box):\n"
        "            box.n += 1\n"
        "            await anyio.lowlevel.checkpoint()\n"
        "            box.n += 1\n"
        + "".join(f"        out{n} = None\n" for n in range(len(tasks)))
        + textwrap.indent("\n".join(bodies), "        ")
        # The streams are closed on every way out, a deadlocked schedule's included (the
        # explorer closes its coroutine): an unclosed stream warns when collected.
        + "\n        try:\n"
        + "            async with anyio.create_task_group() as tg:\n"
        + textwrap.indent(spawn, "        ")
        + f"\n            outcomes.append((shared.x, cell, tuple(sorted(table.items(), key=str)),"
        " tuple(items), tuple(tuple(sorted(vars(box).items())) for box in boxes),"
        " receive.statistics().current_buffer_used, limiter.total_tokens,"
        f" {outs}))\n"
        "        finally:\n"
        "            send.close()\n"
        "            receive.close()\n"
        "    return scenario\n"
    )
    namespace: dict[str, Any] = {}
    exec(compile(source, "<generated scenario>", "exec"), namespace)  # noqa: S102
    scenario: Callable[[], Awaitable[None]] = namespace["make"](anyio, Shared, outcomes)
    return scenario, outcomes


def explore_all(
    scenario: Callable[[], Awaitable[None]], outcomes: list[Any], backend: Backend, reduce: bool
) -> tuple[int, set[Any]]:
    """Exhaust the dfs tree; returns the schedule count and what the schedules observed.

    With sleep sets, a schedule that reaches a state where every runnable task sleeps is
    redundant: the search runs it out, but its observations do not count, because a sound
    reduction must have covered them with the schedules it did not cut short. A deadlock (tasks
    taking the lock and a semaphore crosswise, an event nobody sets) is an outcome too: which
    tasks are stuck where, and what the others observed.
    """
    observed: set[Any] = set()

    def plan() -> Generator[tuple[DfsChooser, bool], Outcome, int]:
        search = DepthFirst(None, reduce=reduce)
        count = 0
        while (chooser := search.next_chooser()) is not None:
            cut = search.redundant
            recorded = len(outcomes)
            outcome = yield chooser, False
            assert outcome.kind in (None, "deadlock"), outcome.error
            if search.redundant == cut:
                if outcome.kind == "deadlock":
                    stuck = sorted((w.task, str(w.where), w.waits_on) for w in outcome.waiting)
                    observed.add(("deadlock", tuple(stuck)))
                else:
                    assert len(outcomes) == recorded + 1
                    observed.add(outcomes[-1])
            count += 1
            assert count < 50_000, "generated tree too large"
        return count

    count: int = drive(plan(), scenario, backend)
    return count, observed


def check(backend: Backend, tasks: list[list[int]]) -> tuple[int, int, set[Any]]:
    """Full and reduced schedule counts, and what the full tree observed (the same as the
    reduced one, asserted)."""
    scenario, outcomes = build(tasks)
    full, everything = explore_all(scenario, outcomes, backend, reduce=False)
    reduced_scenario, reduced_outcomes = build(tasks)
    reduced, kept = explore_all(reduced_scenario, reduced_outcomes, backend, reduce=True)
    assert reduced <= full
    assert kept == everything, (tasks, full, reduced)
    return full, reduced, everything


#: Programs per property test: 10 in ``make test``, 20 in ``make test-deep`` (tests/depth.py).
SETTINGS = settings(
    max_examples=by_depth(10, deep=20),
    deadline=None,
    # The same programs every run (the project's determinism rule): no random seed, no database.
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
operation = st.integers(0, len(OPERATIONS) - 1)


def op(text: str) -> int:
    return OPERATIONS.index(text)


CHECKPOINT = op("await anyio.lowlevel.checkpoint()")
LOCKED_MINE = (
    "async with mylock:\n    value = table[me]\n    await anyio.sleep(0)\n    table[me] = value + 1"
)
LOCKED_THEIRS = (
    "async with theirlock:\n    value = mine.n\n    await anyio.lowlevel.checkpoint()\n"
    "    mine.n = value + 1"
)
OWN_OBJECT = "mine.n += 1\nawait anyio.sleep(0)\nmine.n += 1"
OWN_KEY = "table[me] += 1\nawait anyio.lowlevel.checkpoint()\nvalue = table[me]"
SEMAPHORE = (
    "async with semaphore:\n    value = cell\n    await anyio.sleep(0)\n    cell = value + 1"
)
LIMITER = (
    "async with limiter:\n    table[me] += 1\n    await anyio.lowlevel.checkpoint()\n"
    "    value = table['k']"
)
GATE_THEN_LOCK = "async with gate:\n    async with lock:\n        cell += 1"
LOCK_THEN_GATE = (
    "async with lock:\n    await anyio.lowlevel.checkpoint()\n    async with gate:\n"
    "        table['k'] += 1"
)
SET_ONCE = "if not event.is_set():\n    await anyio.lowlevel.checkpoint()\n    event.set()"
WAIT_EVENT = "await event.wait()\nvalue = cell"
# Three tasks each taking a lock of its own around an await would make full (unreduced) trees of
# hundreds of thousands of schedules: those operations are left to the two-task programs, and so
# are the own-state operations with an await inside (three of them make trees of thousands).
light_operation = st.sampled_from(
    [
        i
        for i, text in enumerate(OPERATIONS)
        if (not text.startswith("async with") or text.startswith("async with lock:"))
        and text not in (OWN_OBJECT, OWN_KEY, SET_ONCE, WAIT_EVENT)
    ]
)
# Read-checkpoint-write races on every kind of shared state, and the check-then-act on the list:
# each loses an update in some schedules, which a wrong independence claim would prune.
KNOWN_RACES = [
    [[op("value = shared.x"), CHECKPOINT, op("shared.x = value + 1")]] * 2,
    [[op("value = cell"), CHECKPOINT, op("cell = value + 1")]] * 2,
    [[op("value = table['k']"), CHECKPOINT, op("table['k'] = value + 1")]] * 2,
    [[op("value = len(items)"), CHECKPOINT, op("items.append(len(items))")]] * 2,
    [[op("if len(items) < 2:\n    await anyio.lowlevel.checkpoint()\n    items.append(-1)")]] * 3,
    [[op("value = 1 if items else 0")], [op("items.append(len(items))")]],
    # The other task's box and key, against the task's own: a lost update or a stale read.
    [[op("value = mine.n"), CHECKPOINT, op("mine.n += 1")], [op("theirs.n = value + 1")]],
    [[CHECKPOINT, op("table[me] += 1")], [op("value = table[other]"), CHECKPOINT]],
    [[op("table[me] += 1"), CHECKPOINT], [op("value = len(table)"), op("table[other] = value")]],
    [[CHECKPOINT, op("mine.n += 1")], [op("value = vars(theirs).get('n', 0)"), CHECKPOINT]],
    [
        [op("value = mine.n"), CHECKPOINT, op("mine.n += 1")],
        [op("alias = boxes[me]\nalias.n = value")],
    ],
    # Two locks: the second task takes the first one's box under its own lock.
    [[op(LOCKED_MINE), op(LOCKED_THEIRS)], [op(LOCKED_MINE), CHECKPOINT]],
    [[op(LOCKED_MINE), CHECKPOINT], [op(NOTIFY)]],
    [[op("event.set()")], [op("value = 1 if event.is_set() else 0"), CHECKPOINT]],
    # The first task's lock is the condition's: which one gets it first decides the result.
    [[op(DOUBLE)], [op(INCREMENT)]],
    # Found by the generated programs: the second task first labels another object (a read),
    # so the lock's label differs between runs; the step that labels anything new conflicts.
    [[op(DOUBLE)], [op("value = shared.x"), op(INCREMENT)]],
    # DPOR: a deadlock only when the lock and the semaphore are taken crosswise; an event waited
    # for that only one order sets; two holders of one semaphore losing an update; the issue's
    # shape (own object, own key across a checkpoint, then shared state), three tasks.
    [[op(GATE_THEN_LOCK)], [op(LOCK_THEN_GATE)]],
    [[op(WAIT_EVENT)], [op(SET_ONCE), CHECKPOINT]],
    [[op(WAIT_EVENT)], [op("value = 1 if event.is_set() else 0"), op("event.set()")]],
    [[op(SEMAPHORE)], [op(SEMAPHORE)]],
    [[op(LIMITER)], [op("table['k'] += 1"), CHECKPOINT]],
    [[op(OWN_OBJECT)], [op(OWN_KEY)], [op("table['k'] += 1")]],
    [[op(OWN_OBJECT)], [op(OWN_OBJECT)], [op("theirs.n = value + 1")]],
    [[op(OWN_KEY)], [op("value = table[other]")], [op(SET_ONCE)]],
]


PEEK = op("value = await peek(theirs)")
BUMP = op("await bump(mine)")
RAISE = op(
    "try:\n    raise KeyError(table['k'])\nexcept KeyError as error:\n    value = error.args[0]"
)
SEND = op("send.send_nowait(value)")
RECEIVE = op("value = receive.receive_nowait() if receive.statistics().current_buffer_used else -1")
RESIZE = op("limiter.total_tokens = 2")
AVAILABLE = op("value = limiter.available_tokens")
THEIRS = op("value = theirs.n")
MINE = op("value = mine.n")
TABLE = op("value = table['k']")
GROUP = op("async with anyio.create_task_group() as inner:\n    inner.start_soon(bump, mine)")
# One per footprint rule that sees through library code or a user coroutine: the two tasks
# really conflict (the full tree observes more than one outcome), so a rule that claimed
# independence here would lose one.
LIBRARY_RACES = [
    # Each task first reads what its racing step touches, a checkpoint before that step: a step
    # that labels objects first conflicts with every other such step (see ``_footprint``), so
    # the racing steps are judged on what they touch only.
    # The other task's box, read by a helper coroutine that returns within the step.
    [[THEIRS, CHECKPOINT, PEEK], [MINE, CHECKPOINT, op("mine.n += 1")]],
    # A helper coroutine that suspends halfway through bumping the box the other task reads.
    [[MINE, CHECKPOINT, BUMP], [THEIRS, CHECKPOINT, THEIRS]],
    # Making the exception is free; reading what it carries is not.
    [[TABLE, CHECKPOINT, RAISE], [TABLE, CHECKPOINT, op("table['k'] += 1")]],
    # The send and the receive end share one state.
    [[RECEIVE, CHECKPOINT, SEND], [RECEIVE, CHECKPOINT, RECEIVE]],
    # A resize and a read of a limiter's tokens: two properties of one primitive.
    [[AVAILABLE, CHECKPOINT, RESIZE], [AVAILABLE, CHECKPOINT, AVAILABLE]],
    # The child of a task's own task group bumps the box the other task reads.
    [[MINE, CHECKPOINT, GROUP], [THEIRS, CHECKPOINT, CHECKPOINT, THEIRS]],
]


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@pytest.mark.parametrize("tasks", LIBRARY_RACES)
def test_library_races_keep_every_outcome(backend: Backend, tasks: list[list[int]]) -> None:
    _, _, everything = check(backend, tasks)
    assert len(everything) > 1, "no race here: the test would prove nothing"


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@pytest.mark.parametrize("tasks", KNOWN_RACES)
def test_known_races_keep_every_final_state(backend: Backend, tasks: list[list[int]]) -> None:
    check(backend, tasks)


@pytest.mark.depth
@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@SETTINGS
@given(tasks=st.lists(st.lists(operation, min_size=1, max_size=3), min_size=2, max_size=2))
def test_two_tasks_keep_every_final_state(backend: Backend, tasks: list[list[int]]) -> None:
    check(backend, tasks)


#: The primitives and the own-state operations: drawn more often for the two-task programs.
SYNCHRONISING = [
    op(text)
    for text in (
        OWN_OBJECT,
        OWN_KEY,
        SEMAPHORE,
        LIMITER,
        GATE_THEN_LOCK,
        LOCK_THEN_GATE,
        SET_ONCE,
        WAIT_EVENT,
        LOCKED_MINE,
        LOCKED_THEIRS,
        NOTIFY,
        "event.set()",
        "table['k'] += 1",
        "mine.n += 1",
        "value = table[other]",
    )
]


@pytest.mark.depth
@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@SETTINGS
@given(
    tasks=st.lists(
        st.lists(st.sampled_from(SYNCHRONISING), min_size=1, max_size=2), min_size=2, max_size=2
    )
)
def test_two_tasks_on_primitives_keep_every_final_state(
    backend: Backend, tasks: list[list[int]]
) -> None:
    check(backend, tasks)


@pytest.mark.depth
@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@SETTINGS
@given(tasks=st.lists(st.lists(light_operation, min_size=1, max_size=1), min_size=3, max_size=3))
def test_three_tasks_keep_every_final_state(backend: Backend, tasks: list[list[int]]) -> None:
    check(backend, tasks)
