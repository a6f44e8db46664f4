"""The explorer's public API on both backends: finding, replaying, tracing and proving."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import asynclocks
from asynclocks import (
    Backend,
    DeadlockError,
    NondeterminismError,
    Report,
    Strategy,
    explore,
    replay,
)
from asynclocks._explore._report import _checksum
from asynclocks._explore._trio import check_trio_version

from . import scenarios
from .scenarios import marker_line

Scenario = Callable[[], Awaitable[None]]


def native(backend: Backend, name: str) -> Scenario:
    """The scenario written with the backend's own API (asyncio.TaskGroup, trio nursery...)."""
    scenario: Scenario = getattr(scenarios, f"{backend}_{name}")
    return scenario


# -- finding a race ---------------------------------------------------------------------------


@pytest.mark.parametrize("flavour", ["anyio", "native"])
def test_dfs_finds_the_lost_update_within_three_schedules(backend: Backend, flavour: str) -> None:
    scenario = scenarios.lost_update if flavour == "anyio" else native(backend, "lost_update")
    report = explore(scenario, backend=backend, strategy="dfs")
    assert report.failed
    assert report.kind == "exception"
    assert isinstance(report.error, AssertionError)
    assert report.schedules <= 3
    assert report.token is not None
    assert report.token.startswith("al1:")
    assert report.backend == backend
    assert not report.nondeterministic


def test_the_trace_shows_the_two_await_points_of_the_window(backend: Backend) -> None:
    report = explore(scenarios.lost_update, backend=backend)
    window = f"scenarios.py:{marker_line('WINDOW_OPENS')} (increment)"
    lines = report.trace.splitlines()
    # Both tasks stop at the await between read and write before either writes.
    stops = [line for line in lines if line.endswith(window) and "->" in line]
    assert len(stops) >= 2, report.trace
    resumed_in_window = [line for line in lines if line.endswith(f"{window} -> returned")]
    assert len(resumed_in_window) == 2, report.trace
    assert "#1 increment" in report.trace
    assert "#2 increment" in report.trace
    assert "raised AssertionError: lost update: counter is 1, expected 2" in report.trace


def test_a_race_that_needs_a_preemption_is_found_and_marked(backend: Backend) -> None:
    report = explore(scenarios.lost_update_late, backend=backend)
    assert report.failed
    assert report.preemptions >= 1
    assert any(line.startswith("*") for line in report.trace.splitlines()), report.trace


def test_a_preemption_bound_of_zero_explores_only_the_stock_order(backend: Backend) -> None:
    report = explore(scenarios.lost_update_late, backend=backend, preemption_bound=0)
    assert not report.failed
    assert report.exhaustive
    assert report.schedules == 1
    assert "at most 0 preemption(s)" in report.coverage
    found = explore(scenarios.lost_update_late, backend=backend, preemption_bound=1)
    assert found.failed
    assert found.preemptions == 1


@pytest.mark.parametrize("strategy", ["random", "pct", "fifo"])
def test_other_strategies_find_the_lost_update(backend: Backend, strategy: Strategy) -> None:
    report = explore(scenarios.lost_update, backend=backend, strategy=strategy, seed=3)
    assert report.failed
    assert isinstance(report.error, AssertionError)
    assert report.strategy == strategy


@pytest.mark.parametrize("strategy", ["random", "pct"])
def test_seeded_strategies_are_reproducible(backend: Backend, strategy: Strategy) -> None:
    first = explore(scenarios.lost_update_late, backend=backend, strategy=strategy, seed=7)
    second = explore(scenarios.lost_update_late, backend=backend, strategy=strategy, seed=7)
    assert first.failed
    assert second.failed
    assert (first.token, first.schedules, first.trace) == (
        second.token,
        second.schedules,
        second.trace,
    )


def test_shrinking_removes_needless_preemptions(backend: Backend) -> None:
    # Random schedules of the basic lost update preempt a lot; the race needs none.
    report = explore(scenarios.lost_update, backend=backend, strategy="random", seed=11)
    assert report.failed
    assert report.preemptions == 0, report.trace


# -- replay -----------------------------------------------------------------------------------


def test_replay_raises_the_same_failure_every_time(backend: Backend) -> None:
    report = explore(scenarios.lost_update_late, backend=backend)
    assert report.token is not None
    for _ in range(3):
        with pytest.raises(AssertionError, match="lost update: counter is 1"):
            replay(scenarios.lost_update_late, report.token, backend=backend)


def test_exploring_twice_gives_the_same_token_and_trace(backend: Backend) -> None:
    first = explore(scenarios.lost_update_late, backend=backend)
    second = explore(scenarios.lost_update_late, backend=backend)
    assert (first.token, first.trace) == (second.token, second.trace)


def test_tokens_are_stable_across_processes(backend: Backend) -> None:
    here = explore(scenarios.lost_update_late, backend=backend)
    code = (
        "import asynclocks\n"
        "from tests.asynclocks.explore import scenarios\n"
        f"r = asynclocks.explore(scenarios.lost_update_late, backend={backend!r})\n"
        "print(r.token)\n"
    )
    there = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert there.stdout.strip() == here.token


def test_replay_of_a_fixed_scenario_passes_and_returns_the_trace(backend: Backend) -> None:
    report = explore(scenarios.lost_update, backend=backend, strategy="fifo")
    assert report.token is not None
    fixed = scenarios.locked_counter(2)
    result = replay(fixed, report.token, backend=backend, strict=False)
    assert isinstance(result, Report)
    assert not result.failed
    assert "#1 increment" in result.trace


def test_strict_replay_of_a_changed_scenario_reports_the_divergence(backend: Backend) -> None:
    report = explore(scenarios.lost_update_late, backend=backend)
    assert report.token is not None
    with pytest.raises(NondeterminismError, match="diverged"):
        replay(scenarios.locked_counter(3), report.token, backend=backend)


def test_replay_refuses_a_token_from_the_other_backend(backend: Backend) -> None:
    report = explore(scenarios.lost_update, backend=backend)
    assert report.token is not None
    other: Backend = "trio" if backend == "asyncio" else "asyncio"
    with pytest.raises(ValueError, match=f"recorded on {backend}"):
        replay(scenarios.lost_update, report.token, backend=other)


# -- deadlocks --------------------------------------------------------------------------------


def test_a_lock_order_deadlock_is_reported_with_the_wait_for_cycle(backend: Backend) -> None:
    report = explore(scenarios.lock_order_deadlock, backend=backend)
    assert report.failed
    assert report.kind == "deadlock"
    assert isinstance(report.error, DeadlockError)
    trace = report.trace
    assert "deadlock: every task is blocked" in trace
    assert "#1 left" in trace
    assert "#2 right" in trace
    assert "waits on anyio.Lock, held by #2 right" in trace
    assert "waits on anyio.Lock, held by #1 left" in trace
    assert "wait-for cycle: #1 left -> #2 right -> #1 left" in trace
    assert "waits on its child tasks to finish" in trace
    assert report.token is not None
    with pytest.raises(DeadlockError, match="wait-for cycle"):
        replay(scenarios.lock_order_deadlock, report.token, backend=backend)


def test_native_lock_deadlocks_name_the_holders(backend: Backend) -> None:
    report = explore(native(backend, "lock_order_deadlock"), backend=backend)
    assert report.kind == "deadlock"
    assert f"waits on {backend}.Lock, held by #2 right" in report.trace
    assert "wait-for cycle: #1 left -> #2 right -> #1 left" in report.trace


def test_waiting_for_an_event_nobody_sets_is_a_deadlock(backend: Backend) -> None:
    report = explore(scenarios.event_never_set, backend=backend)
    assert report.kind == "deadlock"
    assert "#1 waiter" in report.trace
    assert "Event" in report.trace


# -- virtual time -----------------------------------------------------------------------------


def test_sleeps_and_timeouts_run_on_virtual_time(backend: Backend) -> None:
    report = explore(scenarios.long_sleeps_and_timeouts, backend=backend)
    assert not report.failed
    assert report.exhaustive


def test_a_timeout_that_fires_is_a_failure_not_a_deadlock(backend: Backend) -> None:
    report = explore(scenarios.timeout_race, backend=backend)
    assert report.kind == "exception"
    assert isinstance(report.error, TimeoutError)


# -- proofs -----------------------------------------------------------------------------------


@pytest.mark.parametrize("flavour", ["anyio", "native"])
def test_the_locked_counter_is_proved_exhaustively(backend: Backend, flavour: str) -> None:
    scenario = (
        scenarios.locked_counter(3) if flavour == "anyio" else native(backend, "locked_counter")
    )
    report = explore(scenario, backend=backend)
    assert not report.failed
    assert report.exhaustive
    assert 1 < report.schedules < 1000
    assert report.verdict.startswith(f"PASS on {backend}")
    assert "partial-order reduction (DPOR + sleep sets)" in report.coverage
    assert report.coverage.endswith("exhaustive)")


def test_max_schedules_stops_a_search_before_it_is_exhaustive(backend: Backend) -> None:
    report = explore(scenarios.locked_counter(3), backend=backend, max_schedules=5)
    assert not report.failed
    assert report.schedules == 5
    assert not report.exhaustive
    assert "not exhaustive" in report.coverage


# -- nondeterminism and runaway scenarios -----------------------------------------------------


def test_a_failure_that_does_not_replay_is_reported_as_nondeterministic(backend: Backend) -> None:
    report = explore(scenarios.fails_only_the_first_time(), backend=backend)
    assert report.failed
    assert report.nondeterministic
    assert "NONDETERMINISTIC" in report.verdict
    assert any("nondeterministic" in note for note in report.notes)


def test_a_scenario_whose_choices_change_between_runs_is_detected(backend: Backend) -> None:
    report = explore(scenarios.changing_task_count(), backend=backend)
    assert report.nondeterministic
    assert not report.exhaustive
    assert "nondeterministic" in str(report)


def test_a_task_that_never_stops_yielding_is_reported(backend: Backend) -> None:
    report = explore(scenarios.spins_forever, backend=backend, max_schedules=1)
    assert report.kind == "exception"
    assert "more than" in str(report.error)


# -- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"backend": "curio"}, ValueError, "unknown backend 'curio'"),
        ({"backend": 1}, TypeError, "backend must be a str"),
        ({"strategy": "bfs"}, ValueError, "unknown strategy 'bfs'"),
        ({"strategy": None}, TypeError, "strategy must be a str"),
        ({"max_schedules": 0}, ValueError, "max_schedules must be >= 1"),
        ({"max_schedules": "10"}, TypeError, "max_schedules must be an int"),
        ({"max_schedules": True}, TypeError, "max_schedules must be an int"),
        ({"seed": -1}, ValueError, "seed must be >= 0"),
        ({"seed": 1.5}, TypeError, "seed must be an int"),
        ({"preemption_bound": -1}, ValueError, "preemption_bound must be >= 0"),
        ({"preemption_bound": 2.0}, TypeError, "preemption_bound must be an int or None"),
    ],
)
def test_bad_arguments_are_refused(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        explore(scenarios.lost_update, **kwargs)


def test_a_scenario_must_be_a_zero_argument_async_function(backend: Backend) -> None:
    with pytest.raises(TypeError, match="requires x"):
        explore(scenarios.needs_an_argument, backend=backend)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="async function"):
        explore(lambda: None, backend=backend)  # type: ignore[arg-type,return-value]
    with pytest.raises(TypeError, match="not int"):
        explore(3, backend=backend)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("token", "error", "match"),
    [
        (42, TypeError, "token must be a str"),
        ("", ValueError, "must start with 'al1'"),
        ("hello", ValueError, "must start with 'al1'"),
        ("al1:a:3", ValueError, "expected 'al1:<backend>"),
        ("al2:a:3::abcd:6150", ValueError, "has version al2"),
        ("al1:a:3::abcd:0000", ValueError, "checksum does not match"),
        (f"al1:x:3::abcd:{_checksum('al1:x:3::abcd')}", ValueError, "unknown backend code 'x'"),
    ],
)
def test_malformed_tokens_are_refused(token: object, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        replay(scenarios.lost_update, token)  # type: ignore[arg-type]


def test_tokens_with_a_decision_out_of_range_are_refused() -> None:
    body = "al1:a:3:5=1:abcd"
    with pytest.raises(ValueError, match="out of range"):
        replay(scenarios.lost_update, f"{body}:{_checksum(body)}")


def test_report_names_are_public() -> None:
    for name in ("explore", "replay", "Report", "DeadlockError", "NondeterminismError"):
        assert name in asynclocks.__all__


# -- trio version pin -------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["0.27.0", "0.30.0", "0.35.0", "0.35.1.dev0"])
def test_tested_trio_versions_are_accepted(version: str) -> None:
    check_trio_version(version)


@pytest.mark.parametrize("version", ["0.26.2", "0.36.0", "1.0.0", "0.9"])
def test_untested_trio_versions_are_refused_with_a_clear_message(version: str) -> None:
    with pytest.raises(
        asynclocks.UnsupportedScenario,
        match=rf"tested with trio >=0.27,<0.36; this is trio {version}",
    ):
        check_trio_version(version)


def test_exploring_on_an_untested_trio_fails_before_running(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import trio

    monkeypatch.setattr(trio, "__version__", "0.99.0")
    with pytest.raises(asynclocks.UnsupportedScenario, match="pip install 'trio>=0.27,<0.36'"):
        explore(scenarios.lost_update, backend="trio")


def test_exploring_from_inside_trio_is_refused(backend: Backend) -> None:
    import trio

    async def main() -> None:
        with pytest.raises(RuntimeError, match=r"cannot be called from inside trio.run\(\)"):
            explore(scenarios.lost_update, backend=backend)

    trio.run(main)


def test_exploring_from_inside_asyncio_works(backend: Backend) -> None:
    import asyncio

    async def main() -> Report:
        return explore(scenarios.lost_update, backend=backend)

    report = asyncio.run(main())
    assert report.failed
