"""A failure that does not replay is reported as the search saw it, flagged, with a likely cause."""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import asynclocks
from asynclocks import Backend

from . import state_scenarios

pytest_plugins = ["pytester"]

HELD = Path(state_scenarios.__file__)


def line(marker: str) -> int:
    for number, text in enumerate(HELD.read_text(encoding="utf-8").splitlines(), 1):
        if text.rstrip().endswith(f"# {marker}"):
            return number
    raise LookupError(marker)


@pytest.fixture(autouse=True)
def fresh_module_state() -> Iterator[None]:
    # The held programs keep state at module level on purpose; every test starts it afresh.
    state_scenarios.cache.clear()
    state_scenarios.runs[0] = 0
    yield
    state_scenarios.cache.clear()
    state_scenarios.runs[0] = 0


def test_module_level_state_reports_the_original_failure_and_trace(backend: Backend) -> None:
    report = asynclocks.explore(state_scenarios.cached_fetch, backend=backend)
    assert report.failed
    assert report.nondeterministic
    # The search's own failure, not the re-run's "fetched 0 times".
    assert str(report.error) == "fetched 2 times"
    assert "fetched 2 times (NONDETERMINISTIC" in report.verdict
    assert report.trace.endswith("raised AssertionError: fetched 2 times")
    # The trace is the failing run's: both tasks stopped at the fetch's await.
    fetching = f"state_scenarios.py:{line('FETCHING')} (get)"
    assert report.trace.count(f"start -> tests/asynclocks/explore/{fetching}") == 2
    note = " ".join(report.notes)
    assert "replaying the failing schedule gave AssertionError: fetched 0 times" in note
    assert "state that outlived a schedule" in note
    assert "`tests.asynclocks.explore.state_scenarios.cache`" in note


def test_the_token_of_a_nondeterministic_failure_is_the_search_own(backend: Backend) -> None:
    report = asynclocks.explore(state_scenarios.cached_fetch, backend=backend)
    assert report.token is not None
    assert report.token in report.trace


def test_a_passing_search_whose_first_schedule_does_not_rerun_is_flagged(
    backend: Backend,
) -> None:
    report = asynclocks.explore(state_scenarios.growing_counter, backend=backend)
    assert not report.failed
    assert report.nondeterministic
    assert not report.exhaustive
    assert not report.verdict.startswith("PASS")
    note = " ".join(report.notes)
    assert "its first schedule, run again after the search, behaved differently" in note
    assert "`tests.asynclocks.explore.state_scenarios.runs`" in note


def test_a_deterministic_scenario_is_not_flagged(backend: Backend) -> None:
    from . import scenarios

    failing = asynclocks.explore(scenarios.lost_update_late, backend=backend)
    assert failing.failed
    assert not failing.nondeterministic
    assert failing.notes == []
    passing = asynclocks.explore(scenarios.locked_counter_three, backend=backend)
    assert passing.exhaustive
    assert not passing.nondeterministic


def test_the_wall_clock_is_named_as_the_likely_cause(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A clock that moves one second per reading: the first run reads 1 (odd: it fails).
    ticks = itertools.count(1)
    monkeypatch.setattr(time, "time", lambda: float(next(ticks)))
    report = asynclocks.explore(state_scenarios.wall_clock, backend=backend)
    assert report.nondeterministic
    assert str(report.error) == "odd second"
    note = " ".join(report.notes)
    assert f"the wall clock: time.time() at {_where('CLOCK')}" in note
    assert "virtual time" in note


def test_real_randomness_is_named_as_the_likely_cause(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    draws = itertools.chain([0.9], itertools.repeat(0.1))
    monkeypatch.setattr(random, "random", lambda: next(draws))
    report = asynclocks.explore(state_scenarios.real_randomness, backend=backend)
    assert report.nondeterministic
    assert str(report.error) == "unlucky draw"
    note = " ".join(report.notes)
    assert f"real randomness: random.random() at {_where('RANDOM')}" in note


def _where(marker: str) -> str:
    return f"tests/asynclocks/explore/state_scenarios.py:{line(marker)}"


def test_the_clock_patches_are_removed_after_the_diagnosis(backend: Backend) -> None:
    originals = (time.time, time.monotonic, random.random)
    asynclocks.explore(state_scenarios.cached_fetch, backend=backend)
    assert (time.time, time.monotonic, random.random) == originals


EXPECT_FAIL = """
import anyio
import anyio.lowlevel
import asynclocks

cache = {}

@asynclocks.check_interleavings("asyncio", expect="fail")
async def test_a_failure_that_does_not_replay_is_not_a_race() -> None:
    fetched = [0]

    async def get(key):
        if key not in cache:
            fetched[0] += 1
            await anyio.lowlevel.checkpoint()
            cache[key] = key
        return cache[key]

    async with anyio.create_task_group() as tg:
        tg.start_soon(get, "a")
        tg.start_soon(get, "a")
    assert fetched[0] == 1, f"fetched {fetched[0]} times"
"""


def test_expect_fail_is_not_satisfied_by_a_failure_that_does_not_replay(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_state=EXPECT_FAIL)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*found only one that does not replay*fetched 2 times*"])
