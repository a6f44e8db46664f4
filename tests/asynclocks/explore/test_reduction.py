"""Partial-order reduction (sleep sets over step footprints): it prunes, and never hides a race."""

from __future__ import annotations

from collections.abc import Generator

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
