"""The race demos: three read-modify-write races at an ``await``, with and without locks.

Every scenario starts N tasks together and gives each the same code; only the protection around the
critical section changes between runs:

``counter``
    each task does ``value = shared.value``, awaits a checkpoint, ``shared.value = value + 1``.
``withdraw``
    check-then-act on one account whose balance covers only half of the withdrawals.
``transfer``
    transfers between two accounts in both directions at once; money must be conserved.
    The extra protection ``naive-order`` takes the per-account locks source-then-destination and
    forces the interleaving that deadlocks (detected with a timeout, never a hang).

Why the unprotected runs fail on every run, not by luck: all tasks wait on one start event, so they
become runnable in the same scheduling round (asyncio's FIFO ready queue; trio's batch). Each task
executes exactly the same sequence of checkpoints, and neither scheduler runs a task twice before
every other runnable task has run once (trio shuffles the order *within* a batch, never across
batches). So every task reads before any task writes, whatever the order inside each round, and the
outcome is the same number every time. A lock breaks that lockstep: a task that holds it runs its
read and write while the others wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol

import anyio
import anyio.lowlevel

__all__ = [
    "BACKENDS",
    "DEFAULT_DEADLOCK_TIMEOUT",
    "LOCKS",
    "MAX_TASKS",
    "NAIVE_ORDER",
    "SCENARIOS",
    "DemoResult",
    "Scenario",
    "current_backend",
    "locks_for",
    "make_check",
    "run_demo",
    "run_scenario",
    "validate",
]

Backend = Literal["asyncio", "trio"]

BACKENDS: Final[tuple[Backend, ...]] = ("asyncio", "trio")
#: Protections every scenario accepts, in table order. Backend-specific ones are filtered out by
#: :func:`locks_for`.
LOCKS: Final[tuple[str, ...]] = ("none", "asyncio.Lock", "trio.Lock", "anyio.Lock", "KeyedLock")
#: The transfer-only protection that takes per-account locks source-then-destination.
NAIVE_ORDER: Final = "naive-order"
#: Upper bound on ``tasks``: far beyond what the lesson needs, low enough to finish in seconds.
MAX_TASKS: Final = 10_000
#: How long the ``naive-order`` run may make no progress before it is reported as a deadlock.
DEFAULT_DEADLOCK_TIMEOUT: Final = 0.5

_LOCK_BACKEND: Final[Mapping[str, Backend]] = {"asyncio.Lock": "asyncio", "trio.Lock": "trio"}

_WITHDRAWAL: Final = 10
_TRANSFER_AMOUNT: Final = 10
_ACCOUNTS: Final = ("alice", "bob")


@dataclass(frozen=True)
class DemoResult:
    """The outcome of one scenario run.

    Attributes:
        scenario: The scenario name, e.g. ``"counter"``.
        backend: ``"asyncio"`` or ``"trio"``.
        lock: The protection used, e.g. ``"none"`` or ``"anyio.Lock"``.
        expected: What a correct run ends with (see :class:`Scenario`).
        actual: What this run ended with.
        ok: Whether ``actual == expected``.
    """

    scenario: str
    backend: str
    lock: str
    expected: int
    actual: int
    ok: bool


class _Guard(Protocol):
    """Mutual exclusion over a set of keys, acquired in one fixed (sorted) order."""

    def hold(self, *keys: str) -> AbstractAsyncContextManager[None]: ...


class _NoGuard:
    """The unprotected run: entering it neither locks nor yields to the scheduler."""

    def hold(self, *keys: str) -> AbstractAsyncContextManager[None]:
        return contextlib.nullcontext()


class _PerKeyLocks:
    """One lock of a given kind per key, taken in sorted key order so no two tasks cross."""

    def __init__(self, factory: Callable[[], AbstractAsyncContextManager[Any]]) -> None:
        self._factory = factory
        self._locks: dict[str, AbstractAsyncContextManager[Any]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, *keys: str) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            for key in sorted(set(keys)):
                lock = self._locks.get(key)
                if lock is None:
                    lock = self._locks[key] = self._factory()
                await stack.enter_async_context(lock)
            yield


class _KeyedGuard:
    """asynclocks.KeyedLock: one lock per key, ``many()`` for the sorted multi-key acquire."""

    def __init__(self) -> None:
        from ._keyed import KeyedLock

        self._locks = KeyedLock()

    @contextlib.asynccontextmanager
    async def hold(self, *keys: str) -> AsyncIterator[None]:
        if len(keys) == 1:
            async with self._locks(keys[0]):
                yield
        else:
            async with self._locks.many(*keys):
                yield


def _make_guard(lock: str) -> _Guard:
    if lock == "none":
        return _NoGuard()
    if lock == "asyncio.Lock":
        return _PerKeyLocks(asyncio.Lock)
    if lock == "trio.Lock":
        import trio

        return _PerKeyLocks(trio.Lock)
    if lock == "anyio.Lock":
        return _PerKeyLocks(anyio.Lock)
    if lock == "KeyedLock":
        return _KeyedGuard()
    raise AssertionError(f"unvalidated lock {lock!r}")  # pragma: no cover - validate() runs first


async def _start_together(
    tasks: int, body: Callable[[int], Awaitable[None]], give_up_after: float | None = None
) -> bool:
    """Run ``body(0) ... body(tasks - 1)`` released by one event; False if they took too long."""
    start = anyio.Event()

    async def task(index: int) -> None:
        await start.wait()
        await body(index)

    with anyio.move_on_after(give_up_after) as scope:
        async with anyio.create_task_group() as group:
            for index in range(tasks):
                group.start_soon(task, index)
            # Every task becomes runnable in the same scheduling round: that is "started together".
            start.set()
    return not scope.cancelled_caught


async def _counter(lock: str, tasks: int, deadlock_timeout: float) -> tuple[int, int]:
    guard = _make_guard(lock)
    value = 0

    async def increment(index: int) -> None:
        nonlocal value
        async with guard.hold("counter"):
            read = value
            await anyio.lowlevel.checkpoint()  # the await between read and write: the race window
            value = read + 1

    await _start_together(tasks, increment)
    return tasks, value


def _withdraw_opening(tasks: int) -> int:
    return (tasks // 2) * _WITHDRAWAL


async def _withdraw(lock: str, tasks: int, deadlock_timeout: float) -> tuple[int, int]:
    guard = _make_guard(lock)
    opening = _withdraw_opening(tasks)
    balance = opening

    async def withdraw(index: int) -> None:
        nonlocal balance
        async with guard.hold("account"):
            if balance >= _WITHDRAWAL:
                await anyio.lowlevel.checkpoint()  # e.g. asking the payment provider
                balance -= _WITHDRAWAL

    await _start_together(tasks, withdraw)
    # Correct: exactly the withdrawals the balance covers go through, the others are refused.
    expected = opening - min(tasks, opening // _WITHDRAWAL) * _WITHDRAWAL
    return expected, balance


def _transfer_route(index: int) -> tuple[str, str]:
    # Alternate directions so both directions run at once whatever N is (N >= 2).
    return (_ACCOUNTS[0], _ACCOUNTS[1]) if index % 2 == 0 else (_ACCOUNTS[1], _ACCOUNTS[0])


async def _move_money(balances: dict[str, int], source: str, destination: str) -> None:
    """A transfer the way a store does it: read both balances, then write each one."""
    source_balance = balances[source]
    destination_balance = balances[destination]
    await anyio.lowlevel.checkpoint()  # the round-trip of the reads
    balances[source] = source_balance - _TRANSFER_AMOUNT
    await anyio.lowlevel.checkpoint()  # the round-trip of the first write
    balances[destination] = destination_balance + _TRANSFER_AMOUNT


def _opening_balances(tasks: int) -> dict[str, int]:
    return dict.fromkeys(_ACCOUNTS, tasks * _TRANSFER_AMOUNT)


async def _transfer(lock: str, tasks: int, deadlock_timeout: float) -> tuple[int, int]:
    if lock == NAIVE_ORDER:
        return await _naive_order_transfer(tasks, deadlock_timeout)
    guard = _make_guard(lock)
    balances = _opening_balances(tasks)
    expected = sum(balances.values())

    async def transfer(index: int) -> None:
        source, destination = _transfer_route(index)
        async with guard.hold(source, destination):
            await _move_money(balances, source, destination)

    await _start_together(tasks, transfer)
    return expected, sum(balances.values())


async def _naive_order_transfer(tasks: int, deadlock_timeout: float) -> tuple[int, int]:
    """Per-account locks taken source-then-destination, with the deadlocking schedule forced.

    The first task of each direction to get its source lock announces it, then waits until the
    other direction holds *its* source lock before asking for the destination: the hold-and-wait
    cycle. No other task can get in the way: they all queue on one of the two held locks. Under
    sorted order this schedule cannot happen, since both directions want the same first lock.
    """
    locks = {account: anyio.Lock() for account in _ACCOUNTS}
    holding = {account: anyio.Event() for account in _ACCOUNTS}
    balances = _opening_balances(tasks)
    completed = 0

    async def transfer(index: int) -> None:
        nonlocal completed
        source, destination = _transfer_route(index)
        async with locks[source]:
            holding[source].set()
            await holding[destination].wait()
            async with locks[destination]:
                await _move_money(balances, source, destination)
        completed += 1

    await _start_together(tasks, transfer, give_up_after=deadlock_timeout)
    return tasks, completed


@dataclass(frozen=True)
class Scenario:
    """One race demo.

    Attributes:
        name: Its name on the command line and in results.
        summary: One sentence saying what the tasks do.
        expected: What ``expected`` means in its results.
        extra_locks: Protections only this scenario accepts (beyond :data:`LOCKS`).
        run: ``await run(lock, tasks, deadlock_timeout)`` runs it once on the current backend
            and returns ``(expected, actual)``; arguments are not validated (use
            :func:`run_scenario`).
    """

    name: str
    summary: str
    expected: str
    extra_locks: tuple[str, ...]
    run: Callable[[str, int, float], Awaitable[tuple[int, int]]]


SCENARIOS: Final[Mapping[str, Scenario]] = {
    scenario.name: scenario
    for scenario in (
        Scenario(
            "counter",
            "each task reads a shared counter, awaits, and writes the value it read plus one",
            "the number of increments (N)",
            (),
            _counter,
        ),
        Scenario(
            "withdraw",
            "each task checks the balance covers a withdrawal, awaits, then withdraws; the balance "
            "covers N // 2 of them",
            "the correct final balance (0: the other withdrawals are refused)",
            (),
            _withdraw,
        ),
        Scenario(
            "transfer",
            "tasks move money between two accounts in both directions at once",
            "the total money (naive-order: the number of transfers, N)",
            (NAIVE_ORDER,),
            _transfer,
        ),
    )
}


def locks_for(backend: str, scenario: str | None = None) -> tuple[str, ...]:
    """The protections that run on ``backend``, in table order.

    Args:
        backend: ``"asyncio"`` or ``"trio"``.
        scenario: When given, also the protections only that scenario accepts.

    Raises:
        ValueError: If the backend or the scenario is unknown.
    """
    _check_backend(backend)
    extra = _check_scenario(scenario).extra_locks if scenario is not None else ()
    return tuple(lock for lock in LOCKS if _LOCK_BACKEND.get(lock, backend) == backend) + extra


def _check_backend(backend: object) -> Backend:
    if backend == "asyncio":
        return "asyncio"
    if backend == "trio":
        return "trio"
    raise ValueError(f"unknown backend {backend!r}; expected one of: {', '.join(BACKENDS)}")


def _check_scenario(name: object) -> Scenario:
    if not isinstance(name, str):
        raise TypeError(f"scenario must be a str, got {type(name).__name__}")
    try:
        return SCENARIOS[name]
    except KeyError:
        raise ValueError(
            f"unknown scenario {name!r}; expected one of: {', '.join(SCENARIOS)}"
        ) from None


def validate(name: object, lock: object, tasks: object, backend: object | None = None) -> None:
    """Check a scenario's arguments without running it.

    Args:
        name: A key of :data:`SCENARIOS`.
        lock: One of :data:`LOCKS`, or one of the scenario's ``extra_locks``.
        tasks: How many tasks to start, an int from 2 to :data:`MAX_TASKS`.
        backend: When given, the backend the lock must work on.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If a name is unknown, ``tasks`` is out of range, or the lock does not run on
            the backend.
    """
    scenario = _check_scenario(name)
    if not isinstance(lock, str):
        raise TypeError(f"lock must be a str, got {type(lock).__name__}")
    accepted = LOCKS + scenario.extra_locks
    if lock not in accepted:
        raise ValueError(
            f"unknown lock {lock!r} for scenario {scenario.name!r}; "
            f"expected one of: {', '.join(accepted)}"
        )
    if not isinstance(tasks, int) or isinstance(tasks, bool):
        raise TypeError(f"tasks must be an int, got {type(tasks).__name__}")
    if not 2 <= tasks <= MAX_TASKS:
        raise ValueError(f"tasks must be between 2 and {MAX_TASKS} (a race needs two), got {tasks}")
    if backend is not None:
        checked = _check_backend(backend)
        needs = _LOCK_BACKEND.get(lock, checked)
        if needs != checked:
            raise ValueError(f"{lock} works only on {needs}, not on {checked}")


def _check_deadlock_timeout(deadlock_timeout: object) -> None:
    if not isinstance(deadlock_timeout, int | float) or isinstance(deadlock_timeout, bool):
        raise TypeError(f"deadlock_timeout must be a number, got {type(deadlock_timeout).__name__}")
    if not deadlock_timeout > 0:
        raise ValueError(f"deadlock_timeout must be positive, got {deadlock_timeout}")


def current_backend() -> Backend:
    """The async library running the calling task.

    Raises:
        RuntimeError: If called outside asyncio and trio.
    """
    trio = sys.modules.get("trio")
    if trio is not None and trio.lowlevel.in_trio_run():
        return "trio"
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        raise RuntimeError("no asyncio or trio event loop is running") from None
    return "asyncio"


async def run_scenario(
    name: str, lock: str, tasks: int, *, deadlock_timeout: float = DEFAULT_DEADLOCK_TIMEOUT
) -> DemoResult:
    """Run one scenario on the current backend.

    Args:
        name: A key of :data:`SCENARIOS`.
        lock: The protection: one of :data:`LOCKS` that runs on this backend, or ``"naive-order"``
            for ``transfer``.
        tasks: How many tasks start together (2 to :data:`MAX_TASKS`).
        deadlock_timeout: Seconds without completion after which ``naive-order`` is reported as
            deadlocked.

    Returns:
        The result; ``ok`` is False for ``none`` and ``naive-order`` on every run, True otherwise.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If an argument is invalid or the lock does not run on this backend.
    """
    backend = current_backend()
    validate(name, lock, tasks, backend)
    _check_deadlock_timeout(deadlock_timeout)
    expected, actual = await SCENARIOS[name].run(lock, tasks, deadlock_timeout)
    return DemoResult(name, backend, lock, expected, actual, actual == expected)


def make_check(
    name: str, lock: str, tasks: int, *, deadlock_timeout: float = DEFAULT_DEADLOCK_TIMEOUT
) -> Callable[[], Awaitable[None]]:
    """A zero-argument async callable that runs one scenario and checks its invariant.

    Arguments are validated now; the backend when the callable runs.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If an argument is invalid.
    """
    validate(name, lock, tasks)
    _check_deadlock_timeout(deadlock_timeout)

    async def check() -> None:
        result = await run_scenario(name, lock, tasks, deadlock_timeout=deadlock_timeout)
        if not result.ok:
            raise AssertionError(
                f"{name} with {lock} on {result.backend}: "
                f"expected {result.expected}, got {result.actual}"
            )

    check.__qualname__ = check.__name__ = f"check_{name}_{lock}"
    return check


def run_demo(
    backends: Sequence[str] = BACKENDS,
    tasks: int = 100,
    scenarios: Sequence[str] | None = None,
    *,
    deadlock_timeout: float = DEFAULT_DEADLOCK_TIMEOUT,
    on_result: Callable[[DemoResult], None] | None = None,
) -> list[DemoResult]:
    """Run every scenario with every protection each backend supports (one event loop each).

    ``on_result`` is called with each result as soon as it is known (a progress display).

    Returns:
        Results ordered by scenario, then backend, then protection.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If an argument is invalid.
    """
    names = list(SCENARIOS) if scenarios is None else list(scenarios)
    _check_deadlock_timeout(deadlock_timeout)
    for backend in backends:
        for name in names:
            validate(name, "none", tasks, backend)

    async def run_all(backend: str) -> list[DemoResult]:
        results = []
        for name in names:
            for lock in locks_for(backend, name):
                result = await run_scenario(name, lock, tasks, deadlock_timeout=deadlock_timeout)
                if on_result is not None:
                    on_result(result)
                results.append(result)
        return results

    by_backend = {backend: anyio.run(run_all, backend, backend=backend) for backend in backends}
    order = {name: position for position, name in enumerate(names)}
    merged = [result for results in by_backend.values() for result in results]
    # Stable sort: within one scenario and backend the protections keep table order.
    return sorted(merged, key=lambda result: order[result.scenario])
