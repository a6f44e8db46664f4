"""The explorer against the project's own races: the demos, the examples and the bank's transfers.

Racy versions must fail on every backend they run on; locked versions must pass every schedule the
explorer can produce (exhaustively, within the stated bound).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import ModuleType

import anyio
import pytest

from asynclocks import Backend, explore
from asynclocks._demos import SCENARIOS, locks_for, make_check
from services.bank.domain import InsufficientFunds
from services.bank.locking import Locking
from services.bank.stores.memory import MemoryStore

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"

Scenario = Callable[[], Awaitable[None]]


def load_example(filename: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{filename[:2]}", EXAMPLES / filename)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- the race demos ---------------------------------------------------------------------------


def demo_cases() -> list[tuple[str, str, str]]:
    return [
        (backend, name, lock)
        for backend in ("asyncio", "trio")
        for name in SCENARIOS
        for lock in locks_for(backend, name)
    ]


@pytest.mark.parametrize(("backend", "name", "lock"), demo_cases())
def test_every_demo_fails_unprotected_and_passes_locked(
    backend: Backend, name: str, lock: str
) -> None:
    report = explore(make_check(name, lock, 2), backend=backend)
    if lock in ("none", "naive-order"):
        assert report.failed, report.verdict
        assert isinstance(report.error, AssertionError)
        assert report.token is not None
    else:
        assert not report.failed, str(report)
        assert report.exhaustive, report.coverage


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_three_task_counter_demo_is_proved_within_a_preemption_bound(backend: Backend) -> None:
    report = explore(make_check("counter", "anyio.Lock", 3), backend=backend, preemption_bound=3)
    assert not report.failed
    assert report.exhaustive
    assert "at most 3 preemption(s)" in report.coverage


# -- the examples -----------------------------------------------------------------------------


def example_scenarios() -> list[tuple[str, str, Scenario, bool]]:
    """(id, backend, scenario, racy) for every example function with a checkable invariant."""
    ex01 = load_example("01_lost_update_asyncio.py")
    ex02 = load_example("02_fix_with_asyncio_lock.py")
    ex03 = load_example("03_trio_race_and_lock.py")
    ex04 = load_example("04_anyio_both_backends.py")
    ex05 = load_example("05_locks_lock_nothing.py")
    ex06 = load_example("06_wide_lock_serialises.py")
    ex07 = load_example("07_ordered_locking_keyed_lock.py")

    def counts(update: Callable[[int], Awaitable[int]], tasks: int = 2) -> Scenario:
        async def scenario() -> None:
            final = await update(tasks)
            assert final == tasks, f"{update.__name__}: expected {tasks}, got {final}"

        return scenario

    def timed(update: Callable[..., Awaitable[None]]) -> Scenario:
        async def scenario() -> None:
            total, _ = await ex06.timed(update, 2, 0.05)
            assert total == 2, total

        return scenario

    async def ordered() -> None:
        done, money = await ex07.ordered_transfers(2)
        assert (done, money) == (2, 2 * 2 * ex07.AMOUNT)

    async def naive() -> None:
        done, deadlocked = await ex07.naive_transfers(2)
        assert not deadlocked, f"deadlock: {done} of 2 transfers done"

    cases: list[tuple[str, str, Scenario, bool]] = [
        ("01-lost_update", "asyncio", counts(ex01.lost_update), True),
        ("02-locked_update", "asyncio", counts(ex02.locked_update), False),
        ("03-lost_update", "trio", counts(ex03.lost_update), True),
        ("03-locked_update", "trio", counts(ex03.locked_update), False),
        ("05-one_rogue", "asyncio", counts(ex05.one_rogue), True),
        ("05-all_locked", "asyncio", counts(ex05.all_locked), False),
        ("06-wide", "asyncio", timed(ex06.wide), False),
        ("06-narrow", "asyncio", timed(ex06.narrow), False),
    ]
    for backend in ("asyncio", "trio"):
        cases += [
            (f"04-lost_update-{backend}", backend, counts(ex04.lost_update), True),
            (f"04-locked_update-{backend}", backend, counts(ex04.locked_update), False),
            (f"07-ordered-{backend}", backend, ordered, False),
            (f"07-naive-{backend}", backend, naive, True),
        ]
    return cases


@pytest.mark.parametrize(
    ("backend", "scenario", "racy"),
    [pytest.param(b, s, r, id=i) for i, b, s, r in example_scenarios()],
)
def test_every_example_is_checked_by_the_explorer(
    backend: Backend, scenario: Scenario, racy: bool
) -> None:
    report = explore(scenario, backend=backend, preemption_bound=3)
    if racy:
        assert report.failed, report.verdict
    else:
        assert not report.failed, str(report)
        assert report.exhaustive, report.coverage


# -- the bank's transfer logic ----------------------------------------------------------------


def bank_scenario(mode: str) -> Scenario:
    """Transfers both ways and a withdrawal, through the service's own guard and memory store."""

    async def scenario() -> None:
        store = MemoryStore()
        locking = Locking(mode)
        await store.create_account("alice", 100)
        await store.create_account("bob", 100)

        async def transfer(source: str, target: str, amount: int) -> None:
            async with locking.guard(source, target) as strategy:
                try:
                    await store.transfer(source, target, amount, atomic=strategy.atomic_store)
                except InsufficientFunds:
                    pass  # refused (409): moves no money

        async def withdraw(account: str, amount: int) -> None:
            async with locking.guard(account) as strategy:
                try:
                    await store.withdraw(account, amount, atomic=strategy.atomic_store)
                except InsufficientFunds:
                    pass  # a refused withdrawal (409) moves no money

        async with anyio.create_task_group() as tg:
            tg.start_soon(transfer, "alice", "bob", 30)
            tg.start_soon(transfer, "bob", "alice", 20)
            tg.start_soon(withdraw, "alice", 90)
        audit = await store.audit()
        assert audit.drift == 0, f"money {'created' if audit.drift > 0 else 'lost'}: {audit}"
        assert not audit.negative_accounts, audit

    scenario.__qualname__ = scenario.__name__ = f"bank_{mode}"
    return scenario


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_bank_transfers_lose_money_without_a_lock(backend: Backend) -> None:
    report = explore(bank_scenario("none"), backend=backend)
    assert report.failed
    assert isinstance(report.error, AssertionError)
    assert "bank_none" in report.trace


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@pytest.mark.parametrize("mode", ["account", "global"])
def test_bank_transfers_are_proved_with_a_lock(backend: Backend, mode: str) -> None:
    report = explore(bank_scenario(mode), backend=backend, preemption_bound=2)
    assert not report.failed, str(report)
    assert report.exhaustive, report.coverage
