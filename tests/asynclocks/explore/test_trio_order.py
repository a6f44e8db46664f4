"""trio's own order: the explorer makes only schedules real ``trio.run`` can make (a whole batch
of runnable tasks runs before any task woken meanwhile), and its trio baseline (``fifo``) runs
each batch forward or reversed as ``trio.run`` does, seeded."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio
import anyio.lowlevel
import pytest
import trio
import trio.lowlevel

from asynclocks import explore

NAMES = "abc"
ROUNDS = 3


def lockstep(log: list[str], seen: list[str] | None = None) -> Callable[[], Awaitable[None]]:
    """Three tasks that each log their name and checkpoint, three times."""

    async def scenario() -> None:
        log.clear()

        async def task(name: str) -> None:
            for _ in range(ROUNDS):
                log.append(name)
                await trio.lowlevel.checkpoint()

        async with trio.open_nursery() as nursery:
            for name in NAMES:
                nursery.start_soon(task, name)
        if seen is not None:
            seen.append("".join(log))

    return scenario


def batches(order: str) -> list[str]:
    return [order[i : i + len(NAMES)] for i in range(0, len(order), len(NAMES))]


def test_every_schedule_runs_a_whole_batch_before_a_task_runs_again() -> None:
    # Always runnable, the three tasks advance in lock step on real trio: each batch holds all
    # three. Without batches the explorer would also run "aab...": a task twice in a row.
    seen: list[str] = []
    report = explore(lockstep([], seen), backend="trio", strategy="random", max_schedules=300)
    assert not report.failed
    assert len(set(seen)) > 50  # many different schedules...
    for order in seen:  # ...and every one of them a sequence of whole batches
        assert all(sorted(batch) == list(NAMES) for batch in batches(order)), order


def test_the_exhaustive_tree_is_every_order_of_every_batch() -> None:
    report = explore(lockstep([]), backend="trio")
    assert report.exhaustive
    # 3! orders in each of the 3 rounds, and of the 3 exits: 6**4, as trio's shuffle
    # (Hypothesis mode) can make; the default mode makes 2 of the 6 per batch.
    assert report.schedules == 6**4


def _forward_or_reversed(order: str) -> bool:
    previous = NAMES
    for batch in batches(order):
        if batch not in (previous, previous[::-1]):
            return False
        previous = batch
    return True


def test_the_trio_baseline_runs_each_batch_forward_or_reversed_as_trio_run_does() -> None:
    orders = []
    for seed in range(8):
        log: list[str] = []
        report = explore(lockstep(log), backend="trio", strategy="fifo", seed=seed)
        assert report.schedules == 1
        orders.append("".join(log))
    assert all(_forward_or_reversed(order) for order in orders), orders
    # Seeded: the same seed, the same order; different seeds, different orders.
    again: list[str] = []
    explore(lockstep(again), backend="trio", strategy="fifo", seed=3)
    assert "".join(again) == orders[3]
    assert len(set(orders)) > 2
    # Both orientations occur, in the first batch too.
    assert {order[:3] for order in orders} == {NAMES, NAMES[::-1]}


@pytest.mark.parametrize("seed", range(8))
def test_real_trio_runs_whole_batches_too(seed: int) -> None:
    # The model checked against trio itself, its batch-order generator seeded here. Under
    # Hypothesis (pytest-trio turns it on) trio shuffles each batch, any order; otherwise it runs
    # a batch forward or reversed. Either way, a batch is whole: what the explorer explores.
    from trio._core import _run

    log: list[str] = []
    state = _run._r.getstate()
    try:
        _run._r.seed(seed)
        trio.run(lockstep(log))
    finally:
        _run._r.setstate(state)
    order = "".join(log)
    assert all(sorted(batch) == list(NAMES) for batch in batches(order)), order
    if not _run._ALLOW_DETERMINISTIC_SCHEDULING:
        assert _forward_or_reversed(order), order


def test_a_race_only_an_impossible_trio_schedule_shows_is_not_reported() -> None:
    # The consumer checks and takes the condition's lock in one step; for the notification to
    # be lost, the producer would have to run twice while the consumer, runnable, waited: trio
    # never does that (both are in one batch). asyncio's ready queue can, and the race is real.
    async def scenario() -> None:
        ready = anyio.Condition()
        items: list[int] = []

        async def consumer() -> None:
            if not items:
                async with ready:
                    await ready.wait()

        async def producer() -> None:
            await anyio.lowlevel.checkpoint()
            async with ready:
                items.append(1)
                ready.notify_all()

        async with anyio.create_task_group() as tg:
            tg.start_soon(consumer)
            tg.start_soon(producer)

    on_trio = explore(scenario, backend="trio")
    assert not on_trio.failed
    assert on_trio.exhaustive
    on_asyncio = explore(scenario, backend="asyncio")
    assert on_asyncio.kind == "deadlock"


def test_trio_statistics_count_the_runnable_tasks_in_every_schedule() -> None:
    # The explorer's run queue answers trio's len() (``current_statistics().tasks_runnable``)
    # from the runnable tasks it mirrors, which must follow every append and every pass, across
    # schedules: 2 once the root has spawned both children, then 1 for the first child (its
    # sibling is still runnable: the rest of trio's batch stays in the queue here, where trio.run
    # holds it outside and would say 0) and 0 for the second.
    counts: list[list[int]] = []

    async def scenario() -> None:
        seen = [trio.lowlevel.current_statistics().tasks_runnable]
        counts.append(seen)

        async def child() -> None:
            seen.append(trio.lowlevel.current_statistics().tasks_runnable)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(child)
            nursery.start_soon(child)
            seen.append(trio.lowlevel.current_statistics().tasks_runnable)

    report = explore(scenario, backend="trio")
    assert report.exhaustive
    assert not report.failed
    assert report.schedules == 2
    assert len(counts) >= 2
    assert all(seen == [0, 2, 1, 0] for seen in counts), counts


def test_an_instrument_the_scenario_adds_is_called_until_it_is_removed() -> None:
    # The explorer stands in a dict that mirrors trio's instrument registry (trio's run loop
    # asks it for a hook's name five times per pass): an instrument added or removed during a
    # schedule must be seen by the run loop at once.
    log: list[str] = []

    class Steps(trio.abc.Instrument):
        def before_task_step(self, task: trio.lowlevel.Task) -> None:
            log.append("step")

    async def worker() -> None:
        await trio.lowlevel.checkpoint()

    async def scenario() -> None:
        instrument = Steps()
        log.append("added")
        trio.lowlevel.add_instrument(instrument)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(worker)
            nursery.start_soon(worker)
        trio.lowlevel.remove_instrument(instrument)
        log.append("removed")
        await trio.lowlevel.checkpoint()

    report = explore(scenario, backend="trio")
    assert report.exhaustive
    assert not report.failed
    runs = "".join(log).split("added")[1:]
    assert len(runs) >= report.schedules > 1
    for run in runs:
        # Both workers' two steps and the root's after the nursery, then nothing once removed.
        assert run.count("step") >= 5
        assert run.endswith("stepremoved")
