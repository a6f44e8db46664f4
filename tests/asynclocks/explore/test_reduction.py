"""Partial-order reduction (DPOR and sleep sets over step footprints): it prunes, and never
hides a race."""

from __future__ import annotations

import asyncio
from collections.abc import Generator
from typing import Any

import pytest

from asynclocks import Backend, explore
from asynclocks._explore._api import drive
from asynclocks._explore._common import Outcome
from asynclocks._explore._schedulers import DepthFirst, DfsChooser

from .reduction_scenarios import RACES, independent_work_then_lock


def count_schedules(scenario: object, backend: Backend, reduce: bool) -> int:
    """Exhaust the DFS tree, with or without sleep sets, and count the schedules."""

    def plan() -> Generator[tuple[DfsChooser, bool], Outcome, int]:
        search = DepthFirst(None, reduce=reduce)
        schedules = 0
        while (chooser := search.next_chooser()) is not None:
            outcome: Outcome = yield chooser, False
            assert outcome.kind is None, outcome.error
            schedules += 1
        return schedules

    count: int = drive(plan(), scenario, backend)  # type: ignore[arg-type]
    return count


@pytest.mark.parametrize("name", sorted(RACES))
def test_the_stock_order_passes_so_only_a_preemption_finds_it(backend: Backend, name: str) -> None:
    report = explore(RACES[name](), backend=backend, strategy="fifo")
    assert not report.failed, report.trace


#: Races that need one task two steps ahead of another that stays runnable: trio runs every
#: runnable task once per batch, so on trio they cannot happen (the tasks advance in lock step).
TRIO_LOCKSTEP = {"aliased_list_length", "f_string", "truth_test", "user_context_manager"}


@pytest.mark.parametrize("name", sorted(RACES))
def test_reduction_never_hides_a_race(backend: Backend, name: str) -> None:
    report = explore(RACES[name](), backend=backend)
    if backend == "trio" and name in TRIO_LOCKSTEP:
        # Not hidden by the reduction: the full tree, unreduced, has no failing schedule either.
        assert not report.failed, report.trace
        assert report.exhaustive
        assert count_schedules(RACES[name](), backend, reduce=False) >= report.schedules
        return
    assert report.failed, f"{name}: {report.verdict}"
    assert isinstance(report.error, AssertionError)


def test_independent_steps_are_explored_once(backend: Backend) -> None:
    scenario = independent_work_then_lock(3, 1)
    full = count_schedules(scenario, backend, reduce=False)
    reduced = count_schedules(scenario, backend, reduce=True)
    assert reduced < full / 3, (reduced, full)
    report = explore(scenario, backend=backend)
    assert not report.failed
    assert report.exhaustive
    assert report.schedules == reduced


def test_the_reduced_proof_scales_where_the_full_tree_explodes(backend: Backend) -> None:
    # Without reduction this tree has tens of thousands of schedules.
    report = explore(independent_work_then_lock(3, 2), backend=backend, max_schedules=5_000)
    assert not report.failed
    assert report.exhaustive, report.coverage


def test_a_preemption_bound_turns_the_reduction_off(backend: Backend) -> None:
    scenario = independent_work_then_lock(2, 1)
    bounded = explore(scenario, backend=backend, preemption_bound=10)
    full = count_schedules(scenario, backend, reduce=False)
    assert bounded.exhaustive
    assert bounded.schedules == full


class _Box:
    def __init__(self) -> None:
        self.n = 0


def own_state_then_lock(keyed: bool, shared_box: bool) -> Any:
    """Three tasks bump their own box (or their own key of one dict) across two checkpoints,
    then a shared counter under one asyncio.Lock (issue 13's example)."""

    async def scenario() -> None:
        lock = asyncio.Lock()
        shared = [0]
        table = dict.fromkeys(range(3), 0)
        one = _Box()
        boxes = [one if shared_box else _Box() for _ in range(3)]

        async def by_object(i: int, box: _Box) -> None:
            for _ in range(2):
                box.n += 1
                await asyncio.sleep(0)
            async with lock:
                shared[0] += 1

        async def by_key(i: int, box: _Box) -> None:
            for _ in range(2):
                table[i] += 1
                await asyncio.sleep(0)
            async with lock:
                shared[0] += 1

        worker = by_key if keyed else by_object
        async with asyncio.TaskGroup() as tg:
            for i, box in enumerate(boxes):
                tg.create_task(worker(i, box))
        assert shared[0] == 3

    return scenario


@pytest.mark.parametrize("keyed", [False, True])
def test_own_objects_and_own_keys_commute(keyed: bool) -> None:
    full = count_schedules(own_state_then_lock(keyed, False), "asyncio", reduce=False)
    reduced = count_schedules(own_state_then_lock(keyed, False), "asyncio", reduce=True)
    assert full == 1680
    # The 6 orders of the lock acquisitions (sleep sets alone took 168 and 72: test_dpor.py).
    assert 6 <= reduced <= 60, reduced


def test_one_box_shared_by_all_tasks_is_not_reduced_as_own() -> None:
    shared = count_schedules(own_state_then_lock(False, True), "asyncio", reduce=True)
    own = count_schedules(own_state_then_lock(False, False), "asyncio", reduce=True)
    assert shared > own
