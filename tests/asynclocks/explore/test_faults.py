"""Faults chosen by the search: cancellations and early timeouts, with no canceller written.

Every bug of ``fault_scenarios`` is found with ``cancel="auto"`` (or ``timeouts="auto"``) on each
backend it applies to, is *not* found without it (so the fault is what finds it), replays from
its token, and its fixed version is proved: dfs runs out of schedules (``report.exhaustive``)
within the stated bound, one injected fault per schedule and no preemption bound.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import pytest
import trio

from asynclocks import Backend, check_interleavings, explore, replay
from asynclocks.__main__ import main
from asynclocks._explore._faults import Faults, check_faults, faults_from_code
from asynclocks._explore._report import decode_token, encode_token

from . import scenarios
from .fault_scenarios import CANCEL_BUGS, TIMEOUT_BUGS

Scenario = Callable[[], Awaitable[None]]
EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "explorer"

#: Each fixed version is proved in fewer schedules than this (the largest takes under 900).
PROOF_BUDGET = 2_000

CANCEL_CASES = [(name, b) for name, (_, backends) in CANCEL_BUGS.items() for b in backends]
TIMEOUT_CASES = [(name, b) for name, (_, backends) in TIMEOUT_BUGS.items() for b in backends]


def _ids(cases: list[tuple[str, str]]) -> list[str]:
    return [f"{name}-{backend}" for name, backend in cases]


# -- the bugs, found by the faults alone ----------------------------------------------------------


@pytest.mark.parametrize(("name", "backend"), CANCEL_CASES, ids=_ids(CANCEL_CASES))
def test_a_cancellation_bug_is_found_with_no_canceller_and_replays(
    name: str, backend: Backend
) -> None:
    make, _ = CANCEL_BUGS[name]
    assert not explore(make(False), backend).failed, "found without faults: a bad scenario"
    report = explore(make(False), backend, cancel="auto")
    assert report.failed, report
    assert not report.nondeterministic, report
    assert len(report.injected) == 1
    assert report.injected[0].startswith("cancelled #")
    assert f"~ injected by the explorer: {report.injected[0]}" in report.trace
    assert report.token is not None
    assert decode_token(report.token).faults == Faults(cancel=True)
    assert report.error is not None
    with pytest.raises(type(report.error)):
        replay(make(False), report.token)


@pytest.mark.parametrize(("name", "backend"), CANCEL_CASES, ids=_ids(CANCEL_CASES))
def test_the_fixed_version_is_proved_under_injected_cancellations(
    name: str, backend: Backend
) -> None:
    make, _ = CANCEL_BUGS[name]
    report = explore(make(True), backend, cancel="auto", max_schedules=PROOF_BUDGET)
    assert not report.failed, report
    assert report.exhaustive, report
    assert "up to 1 injected fault(s) (cancellation)" in report.coverage


@pytest.mark.parametrize(("name", "backend"), TIMEOUT_CASES, ids=_ids(TIMEOUT_CASES))
def test_a_timeout_race_needs_no_tuned_numbers(name: str, backend: Backend) -> None:
    make, _ = TIMEOUT_BUGS[name]
    # The timeout (5 s) is far longer than the work (1 s): without faults it never fires.
    baseline = explore(make(False), backend)
    assert baseline.exhaustive
    assert not baseline.failed
    report = explore(make(False), backend, timeouts="auto")
    assert report.failed, report
    assert isinstance(report.error, AssertionError)
    assert "early, at t=" in report.injected[0]
    assert report.token is not None
    with pytest.raises(AssertionError, match="a unit went missing"):
        replay(make(False), report.token)
    fixed = explore(make(True), backend, timeouts="auto")
    assert fixed.exhaustive, fixed
    assert not fixed.failed, fixed


@pytest.mark.parametrize(("name", "backend"), CANCEL_CASES[:6], ids=_ids(CANCEL_CASES[:6]))
def test_sleep_sets_under_faults_agree_with_the_unreduced_search(
    name: str, backend: Backend
) -> None:
    # A preemption bound turns the reduction off; one far above what any schedule needs
    # explores the full tree.
    make, _ = CANCEL_BUGS[name]
    for fixed in (False, True):
        reduced = explore(make(fixed), backend, cancel="auto", max_schedules=PROOF_BUDGET)
        full = explore(
            make(fixed), backend, cancel="auto", preemption_bound=50, max_schedules=20_000
        )
        assert full.exhaustive or full.failed
        assert reduced.failed == full.failed
        assert reduced.schedules <= full.schedules


@pytest.mark.parametrize("strategy", ["random", "pct"])
def test_random_and_pct_inject_faults_too(strategy: str) -> None:
    make, _ = CANCEL_BUGS["lock_handoff"]
    report = explore(make(False), strategy=strategy, cancel="auto", max_schedules=2_000)  # type: ignore[arg-type]
    assert report.failed, report
    assert report.token is not None
    with pytest.raises(AssertionError):
        replay(make(False), report.token)


# -- what is and is not cancelled; the budget -----------------------------------------------------


async def _only_the_scenario_task() -> None:
    await asyncio.sleep(1)
    await asyncio.sleep(1)


async def _trio_only_the_scenario_task() -> None:
    await trio.sleep(1)


def test_the_scenario_task_itself_is_never_cancelled(backend: Backend) -> None:
    scenario = _only_the_scenario_task if backend == "asyncio" else _trio_only_the_scenario_task
    report = explore(scenario, backend, cancel="auto")
    assert report.exhaustive
    assert not report.failed
    assert report.schedules == 1


def _two_cancelled() -> Scenario:
    async def scenario() -> None:
        cancelled: list[str] = []

        async def worker(name: str) -> None:
            try:
                await asyncio.sleep(1)
            except asyncio.CancelledError:
                cancelled.append(name)
                raise

        async with asyncio.TaskGroup() as tg:
            tg.create_task(worker("a"))
            tg.create_task(worker("b"))
        assert len(cancelled) < 2, "both workers were cancelled"

    return scenario


def test_the_budget_bounds_the_faults_of_a_schedule() -> None:
    one = explore(_two_cancelled(), cancel="auto")
    assert one.exhaustive
    assert not one.failed
    two = explore(_two_cancelled(), cancel="auto", fault_budget=2)
    assert two.failed
    assert len(two.injected) == 2
    assert two.token is not None
    assert ":a-c2:" in two.token


def test_a_cancelled_shielded_trio_task_is_not_cancelled_inside_its_shield() -> None:
    async def scenario() -> None:
        done: list[int] = []

        async def worker() -> None:
            with trio.CancelScope(shield=True):
                await trio.sleep(1)
                done.append(1)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(worker)
        assert done == [1]

    report = explore(scenario, "trio", cancel="auto")
    assert report.exhaustive, report
    assert not report.failed, report


def test_anyio_shields_hold_on_asyncio_too() -> None:
    async def scenario() -> None:
        done: list[int] = []

        async def worker() -> None:
            with anyio.CancelScope(shield=True):
                await anyio.sleep(1)
                done.append(1)

        async with anyio.create_task_group() as tg:
            tg.start_soon(worker)
        assert done == [1]

    report = explore(scenario, "asyncio", cancel="auto")
    assert report.exhaustive, report
    assert not report.failed, report


# -- defaults unchanged, arguments checked, tokens ------------------------------------------------


def test_faults_off_leaves_schedules_and_tokens_as_they_were() -> None:
    # Recorded before faults existed (docs/explorer.md pins the same tokens).
    spec = importlib.util.spec_from_file_location("_late_update", EXAMPLES / "late_update.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for options in ({}, {"cancel": "off", "timeouts": "off", "fault_budget": 3}):
        report = explore(module.late_lost_update, **options)  # type: ignore[arg-type]
        assert report.token == "al1:a:3:2=1:07ad:c5a9"
        assert report.schedules == 2
    assert decode_token("al1:a:3:2=1:07ad:c5a9").faults == Faults()


def test_a_fault_token_names_its_faults() -> None:
    token = encode_token("trio", [0, 2], [2, 3], Faults(cancel=True, timeouts=True, budget=3))
    assert token.startswith("al1:t-ct3:2:1=2:")
    schedule = decode_token(token)
    assert schedule.faults == Faults(True, True, 3)
    assert schedule.decisions == (0, 2)
    with pytest.raises(ValueError, match="unknown faults"):
        decode_token(_resign("al1:t-x3:2:1=2:" + token.split(":")[4]))


def _resign(body: str) -> str:
    from asynclocks._explore._report import _checksum

    return f"{body}:{_checksum(body)}"


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"cancel": "on"}, ValueError, "cancel must be 'off' or 'auto', not 'on'"),
        ({"timeouts": True}, TypeError, "timeouts must be 'off' or 'auto', not bool"),
        ({"fault_budget": 0}, ValueError, "fault_budget must be >= 1, got 0"),
        ({"fault_budget": 1.5}, TypeError, "fault_budget must be an int, not float"),
    ],
)
def test_bad_fault_arguments_are_refused_before_anything_runs(
    kwargs: dict[str, object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        explore(scenarios.lost_update, **kwargs)  # type: ignore[arg-type]


def test_fault_codes_round_trip() -> None:
    for faults in (Faults(True, False, 1), Faults(False, True, 2), Faults(True, True, 10)):
        assert faults_from_code(faults.code()) == faults
        assert check_faults(**faults.options()) == faults
    assert faults_from_code("") == Faults()
    with pytest.raises(ValueError, match="bad fault code"):
        faults_from_code("c0")


# -- the command line and pytest ------------------------------------------------------------------


def test_the_cli_injects_cancellations_and_replays_them(
    capsys: pytest.CaptureFixture[str],
) -> None:
    target = "examples/explorer/cancel_handoff.py:scenario"
    assert main(["explore", target, "--quiet"]) == 0
    capsys.readouterr()
    assert main(["explore", target, "--quiet", "--cancel", "auto"]) == 1
    out = capsys.readouterr().out
    assert "faults injected by the explorer: cancelled #2" in out
    token = out.rsplit("token: ", 1)[1].strip()
    assert main(["explore", target, "--replay", token]) == 1
    assert "FAIL on asyncio (replayed)" in capsys.readouterr().out


def test_the_cli_refuses_a_bad_fault_budget(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["explore", "examples/explorer/cancel_handoff.py:scenario", "--fault-budget", "0"])
    assert exit_.value.code == 2
    assert "--fault-budget: must be >= 1, got 0" in capsys.readouterr().err


test_check_interleavings_finds_it_with_injected_cancellations = check_interleavings(
    "asyncio", cancel="auto", expect="fail"
)(CANCEL_BUGS["lock_handoff"][0](False))
test_check_interleavings_proves_the_fix_on_both_backends = check_interleavings(cancel="auto")(
    CANCEL_BUGS["two_step_transfer"][0](True)
)
test_check_interleavings_finds_an_early_timeout = check_interleavings(
    timeouts="auto", expect="fail"
)(TIMEOUT_BUGS["anyio_fail_after"][0](False))


def test_check_interleavings_checks_fault_arguments_when_decorating() -> None:
    with pytest.raises(ValueError, match="cancel must be 'off' or 'auto'"):
        check_interleavings(cancel="always")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="fault_budget must be >= 1"):
        check_interleavings(fault_budget=0)


def _own_scope_scenario(backend: Backend) -> Scenario:
    """Only a cancellation of the worker's own scope shows the bug: a cancelled nursery cancels
    the checker too, before it checks."""
    lib = trio if backend == "trio" else anyio

    async def scenario() -> None:
        state = {"a": 1, "b": 0}
        done = lib.Event()

        async def worker() -> None:
            with lib.CancelScope():
                state["a"] -= 1
                await lib.lowlevel.checkpoint()
                state["b"] += 1
            done.set()

        async def checker() -> None:
            await done.wait()
            assert state["a"] + state["b"] == 1, f"half a move: {state}"

        if backend == "trio":
            async with trio.open_nursery() as nursery:
                nursery.start_soon(worker)
                nursery.start_soon(checker)
        else:
            async with anyio.create_task_group() as tg:
                tg.start_soon(worker)
                tg.start_soon(checker)

    return scenario


def test_a_task_s_own_cancel_scope_is_cancelled_alone(backend: Backend) -> None:
    report = explore(_own_scope_scenario(backend), backend, cancel="auto")
    assert report.failed, report
    assert "half a move" in str(report.error)
    assert "(its own innermost cancel scope)" in report.injected[0]


# -- when a timeout fires early, and how the trace shows it ----------------------------------------


def _lone_timeout(backend: Backend, check: bool) -> Scenario:
    """One task, a five-second timeout around a ten-second sleep. Once it sleeps no task can
    run: firing the timeout early is decided where the loop would let time pass."""

    async def scenario() -> None:
        if backend == "trio":
            start = trio.current_time()
            with trio.move_on_after(5) as scope:
                await trio.sleep(10)
            elapsed = trio.current_time() - start
            assert scope.cancelled_caught
        else:
            start = anyio.current_time()
            with anyio.move_on_after(5) as anyio_scope:
                await anyio.sleep(10)
            elapsed = anyio.current_time() - start
            assert anyio_scope.cancelled_caught
        if check and elapsed != 5:
            raise AssertionError(f"the timeout fired at t={elapsed:g}")

    return scenario


def test_a_timeout_fires_early_where_no_task_can_run(backend: Backend) -> None:
    # trio's mock clock jumps to the next deadline before the run loop asks for tasks: the
    # early firing must be offered (and happen) before that jump, while the deadline is ahead.
    report = explore(_lone_timeout(backend, True), backend, timeouts="auto")
    assert report.failed, report
    assert str(report.error) == "the timeout fired at t=0"
    assert len(report.injected) == 1
    assert report.injected[0].endswith(" early, at t=0 (deadline t=5)"), report.injected
    assert report.token is not None
    # The only decision: one task that cannot run, so "let time pass" (index 0) or the fault
    # (FaultLog.choose_idle, reached from each backend's idle point).
    schedule = decode_token(report.token)
    assert schedule.decisions == (1,)
    with pytest.raises(AssertionError, match="the timeout fired at t=0"):
        replay(_lone_timeout(backend, True), report.token)
    # Two schedules in all: time passes (the timeout fires on time), or it fires at once. The
    # sleep's own deadline is no timeout: it is never fired early.
    both = explore(_lone_timeout(backend, False), backend, timeouts="auto")
    assert both.exhaustive
    assert not both.failed
    assert both.schedules == 2


@pytest.mark.parametrize(("name", "backend"), TIMEOUT_CASES, ids=_ids(TIMEOUT_CASES))
def test_an_early_timeout_shows_in_the_trace_as_a_timeout(name: str, backend: Backend) -> None:
    make, _ = TIMEOUT_BUGS[name]
    report = explore(make(False), backend, timeouts="auto")
    assert report.failed, report
    rows = [line.strip() for line in report.trace.splitlines()]
    injected = next(i for i, row in enumerate(rows) if row.startswith("~ injected by the explorer"))
    after = rows[injected + 1 :]
    # As when a deadline fires on time: a timeout event, then the task wakes cancelled by it.
    timeout = next(i for i, row in enumerate(after) if row.startswith("~") and " timeout: " in row)
    woke = next(i for i, row in enumerate(after) if row.endswith(" woke with a cancellation"))
    assert timeout < woke, after
    assert all(row.startswith("~") for row in after[:timeout]), after
