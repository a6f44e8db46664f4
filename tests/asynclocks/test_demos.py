from __future__ import annotations

import dataclasses
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from asynclocks._demos import (
    LOCKS,
    MAX_TASKS,
    NAIVE_ORDER,
    SCENARIOS,
    DemoResult,
    current_backend,
    locks_for,
    make_check,
    run_demo,
    run_scenario,
    validate,
)

pytestmark = pytest.mark.anyio

# Short: the naive-order run always deadlocks before completing anything, so waiting longer only
# slows the suite down.
QUICK_DEADLOCK = 0.05

# trio shuffles the order inside every scheduling batch; enough repeats that a result depending
# on that order would show up.
REPEATS = 20


def unprotected_outcome(scenario: str, tasks: int) -> tuple[int, int]:
    """What `none` ends with, worked out by hand from "every task reads before any task writes"."""
    if scenario == "counter":
        return tasks, 1
    if scenario == "withdraw":
        opening = (tasks // 2) * 10
        return 0, opening - tasks * 10
    # Both directions read the opening balances; every write uses them, so each account ends
    # up credited once and never debited.
    total = 2 * tasks * 10
    return total, total + 2 * 10


@pytest.mark.parametrize("scenario", list(SCENARIOS))
@pytest.mark.parametrize("tasks", [2, 3, 100])
async def test_unprotected_run_fails_the_same_way_every_time(scenario: str, tasks: int) -> None:
    expected, actual = unprotected_outcome(scenario, tasks)
    for _ in range(REPEATS):
        result = await run_scenario(scenario, "none", tasks)
        assert result == DemoResult(scenario, current_backend(), "none", expected, actual, False)


@pytest.mark.parametrize("scenario", list(SCENARIOS))
@pytest.mark.parametrize("lock", ["native", "anyio.Lock", "KeyedLock"])
@pytest.mark.parametrize("tasks", [2, 3, 100])
async def test_every_lock_fixes_every_scenario(
    scenario: str, lock: str, tasks: int, anyio_backend: str
) -> None:
    if lock == "native":
        lock = f"{anyio_backend}.Lock"
    expected, _ = unprotected_outcome(scenario, tasks)
    for _ in range(3):
        result = await run_scenario(scenario, lock, tasks)
        assert result == DemoResult(scenario, anyio_backend, lock, expected, expected, True)


@pytest.mark.parametrize("tasks", [2, 5, 100])
async def test_naive_order_deadlocks_before_any_transfer(tasks: int, anyio_backend: str) -> None:
    for _ in range(5):
        result = await run_scenario("transfer", NAIVE_ORDER, tasks, deadlock_timeout=QUICK_DEADLOCK)
        assert result == DemoResult("transfer", anyio_backend, NAIVE_ORDER, tasks, 0, False)


async def test_naive_order_deadlock_leaves_no_task_behind() -> None:
    # The timeout cancels the deadlocked tasks; the caller's loop carries on as normal.
    await run_scenario("transfer", NAIVE_ORDER, 10, deadlock_timeout=QUICK_DEADLOCK)
    result = await run_scenario("transfer", "anyio.Lock", 10)
    assert result.ok


async def test_current_backend(anyio_backend: str) -> None:
    assert current_backend() == anyio_backend


def test_current_backend_outside_an_event_loop() -> None:
    with pytest.raises(RuntimeError, match="no asyncio or trio event loop"):
        current_backend()


async def test_make_check_raises_assertion_error_when_the_invariant_breaks(
    anyio_backend: str,
) -> None:
    check = make_check("counter", "none", 10)
    with pytest.raises(AssertionError, match=f"counter with none on {anyio_backend}: expected 10"):
        await check()
    await make_check("counter", "anyio.Lock", 10)()
    await make_check("withdraw", "KeyedLock", 10)()
    with pytest.raises(AssertionError, match="transfer with naive-order"):
        await make_check("transfer", NAIVE_ORDER, 4, deadlock_timeout=QUICK_DEADLOCK)()


async def test_make_check_can_run_repeatedly() -> None:
    check = make_check("transfer", "KeyedLock", 6)
    for _ in range(3):
        await check()


@pytest.mark.parametrize(
    ("timeout", "error", "message"),
    [
        (0, ValueError, "deadlock_timeout must be positive, got 0"),
        (-1.5, ValueError, "got -1.5"),
        (float("nan"), ValueError, "got nan"),
        ("1", TypeError, "deadlock_timeout must be a number, got str"),
    ],
)
def test_deadlock_timeout_is_validated(timeout: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        make_check("transfer", NAIVE_ORDER, 2, deadlock_timeout=timeout)
    with pytest.raises(error, match=message):
        run_demo(["asyncio"], 2, deadlock_timeout=timeout)


def test_make_check_validates_eagerly() -> None:
    with pytest.raises(ValueError, match="unknown scenario 'nope'"):
        make_check("nope", "none", 2)
    with pytest.raises(ValueError, match="tasks must be between 2"):
        make_check("counter", "none", 1)


async def test_make_check_rejects_a_lock_of_the_other_backend(anyio_backend: str) -> None:
    other = "trio.Lock" if anyio_backend == "asyncio" else "asyncio.Lock"
    check = make_check("counter", other, 2)
    with pytest.raises(ValueError, match=f"works only on .*, not on {anyio_backend}"):
        await check()


@pytest.mark.parametrize(
    ("args", "error", "message"),
    [
        (("nope", "none", 2), ValueError, r"unknown scenario 'nope'; expected one of: counter"),
        ((3, "none", 2), TypeError, "scenario must be a str, got int"),
        (("counter", "mutex", 2), ValueError, r"unknown lock 'mutex' for scenario 'counter'"),
        (("counter", NAIVE_ORDER, 2), ValueError, "unknown lock 'naive-order'"),
        (("counter", None, 2), TypeError, "lock must be a str, got NoneType"),
        (("counter", "none", 1), ValueError, r"between 2 and 10000 \(a race needs two\), got 1"),
        (("counter", "none", 0), ValueError, "got 0"),
        (("counter", "none", -3), ValueError, "got -3"),
        (("counter", "none", MAX_TASKS + 1), ValueError, "got 10001"),
        (("counter", "none", "5"), TypeError, "tasks must be an int, got str"),
        (("counter", "none", 5.0), TypeError, "tasks must be an int, got float"),
        (("counter", "none", True), TypeError, "tasks must be an int, got bool"),
    ],
)
def test_validate_rejects_bad_arguments(
    args: tuple[Any, Any, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        validate(*args)


@pytest.mark.parametrize(
    ("lock", "backend", "message"),
    [
        ("asyncio.Lock", "trio", "asyncio.Lock works only on asyncio, not on trio"),
        ("trio.Lock", "asyncio", "trio.Lock works only on trio, not on asyncio"),
        ("none", "curio", "unknown backend 'curio'"),
    ],
)
def test_validate_checks_the_backend(lock: str, backend: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validate("counter", lock, 2, backend)


def test_validate_accepts_good_arguments() -> None:
    validate("transfer", NAIVE_ORDER, 2, "trio")
    validate("counter", "asyncio.Lock", MAX_TASKS, "asyncio")


async def test_run_scenario_validates_on_the_running_backend(anyio_backend: str) -> None:
    other = "trio.Lock" if anyio_backend == "asyncio" else "asyncio.Lock"
    with pytest.raises(ValueError, match=f"{other} works only on"):
        await run_scenario("withdraw", other, 2)
    with pytest.raises(ValueError, match="deadlock_timeout must be positive, got 0"):
        await run_scenario("transfer", NAIVE_ORDER, 2, deadlock_timeout=0)


def test_locks_for() -> None:
    assert set(locks_for("asyncio")) | set(locks_for("trio")) == set(LOCKS)
    assert locks_for("asyncio") == ("none", "asyncio.Lock", "anyio.Lock", "KeyedLock")
    assert locks_for("trio") == ("none", "trio.Lock", "anyio.Lock", "KeyedLock")
    assert locks_for("trio", "transfer")[-1] == NAIVE_ORDER
    assert NAIVE_ORDER not in locks_for("asyncio", "counter")
    with pytest.raises(ValueError, match="unknown backend"):
        locks_for("twisted")
    with pytest.raises(ValueError, match="unknown scenario"):
        locks_for("trio", "bank")


def test_scenarios_describe_themselves() -> None:
    assert list(SCENARIOS) == ["counter", "withdraw", "transfer"]
    for name, scenario in SCENARIOS.items():
        assert scenario.name == name
        assert scenario.summary
        assert scenario.expected
    assert SCENARIOS["transfer"].extra_locks == (NAIVE_ORDER,)


def test_demo_result_is_frozen() -> None:
    result = DemoResult("counter", "asyncio", "none", 2, 1, False)
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.ok = True  # type: ignore[misc]
    assert [field.name for field in dataclasses.fields(DemoResult)] == [
        "scenario",
        "backend",
        "lock",
        "expected",
        "actual",
        "ok",
    ]


def test_run_demo_runs_every_protection_on_every_backend() -> None:
    results = run_demo(tasks=4, deadlock_timeout=QUICK_DEADLOCK)
    expected_rows = [
        (scenario, backend, lock)
        for scenario in SCENARIOS
        for backend in ("asyncio", "trio")
        for lock in locks_for(backend, scenario)
    ]
    assert [(r.scenario, r.backend, r.lock) for r in results] == expected_rows
    for result in results:
        assert result.ok is (result.lock not in ("none", NAIVE_ORDER)), result


def test_run_demo_filters() -> None:
    results = run_demo(["trio"], 2, ["withdraw"])
    assert {(r.scenario, r.backend) for r in results} == {("withdraw", "trio")}
    with pytest.raises(ValueError, match="unknown scenario"):
        run_demo(["trio"], 2, ["bank"])
    with pytest.raises(ValueError, match="unknown backend"):
        run_demo(["gevent"], 2)


async def test_tasks_really_run_concurrently_in_the_unprotected_window() -> None:
    # The race is real, not an artefact of the bookkeeping: while one task sits in the window
    # between read and write, every other task is there too.
    in_window = 0
    peak = 0
    original = anyio.lowlevel.checkpoint

    async def counting_checkpoint() -> None:
        nonlocal in_window, peak
        in_window += 1
        peak = max(peak, in_window)
        await original()
        in_window -= 1

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(anyio.lowlevel, "checkpoint", counting_checkpoint)
        await run_scenario("counter", "none", 50)
    assert peak == 50
