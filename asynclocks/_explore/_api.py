"""``explore`` and ``replay``: argument checks, the search, shrinking, nondeterminism checks."""

from __future__ import annotations

import inspect
import random
import sys
import time
from collections.abc import Callable, Generator
from typing import Any

from ._common import DeadlockError, NondeterminismError, Outcome, Scenario, take_unsupported
from ._report import (
    Report,
    decode_token,
    encode_token,
    format_trace,
    format_waiting,
    shape_of,
    unwrap_error,
)
from ._strategies import (
    STRATEGIES,
    DepthFirst,
    FifoChooser,
    PctChooser,
    RandomChooser,
    ReplayChooser,
    ScheduleChooser,
)

BACKENDS = ("asyncio", "trio")
#: Shrinking re-runs the failing schedule with fewer preemptions at most this many times.
MAX_SHRINK_RUNS = 200
#: PCT's bug depth: catches every race needing up to two ordering constraints (a lost update).
PCT_DEPTH = 3

#: A request to the backend: run the scenario with this chooser (and record a trace or not).
Request = tuple[ScheduleChooser, bool]
Plan = Generator[Request, Outcome, Report]
Progress = Callable[[int, float], None]


def _check_int(name: str, value: object, minimum: int, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, int) or isinstance(value, bool):
        expected = "an int or None" if allow_none else "an int"
        raise TypeError(f"{name} must be {expected}, not {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def check_scenario(scenario: object) -> None:
    """Reject what cannot be a zero-argument async function, with a message saying why."""
    if not callable(scenario):
        raise TypeError(
            f"scenario must be a zero-argument async function, not {type(scenario).__name__}"
        )
    target = scenario
    if not inspect.iscoroutinefunction(target) and not inspect.iscoroutinefunction(
        getattr(target, "__call__", None)  # noqa: B004 - async __call__ on an instance counts
    ):
        raise TypeError(f"scenario must be an async function (async def), got {scenario!r}")
    try:
        signature = inspect.signature(scenario)
    except (TypeError, ValueError):
        return
    required = [
        p
        for p in signature.parameters.values()
        if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    if required:
        names = ", ".join(p.name for p in required)
        raise TypeError(
            f"scenario must take no arguments; {scenario!r} requires {names} "
            "(wrap it: functools.partial or a small async def)"
        )


def check_backend(backend: object) -> str:
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a str, not {type(backend).__name__}")
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    return backend


def check_arguments(
    scenario: object,
    backend: object,
    strategy: object,
    max_schedules: object,
    seed: object,
    preemption_bound: object,
) -> None:
    """Validate every argument of :func:`explore` before anything runs."""
    check_scenario(scenario)
    check_backend(backend)
    if not isinstance(strategy, str):
        raise TypeError(f"strategy must be a str, not {type(strategy).__name__}")
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    _check_int("max_schedules", max_schedules, 1)
    _check_int("seed", seed, 0)
    _check_int("preemption_bound", preemption_bound, 0, allow_none=True)


def _same_failure(a: Outcome, b: Outcome) -> bool:
    if a.kind != b.kind:
        return False
    if a.kind == "exception":
        return type(unwrap_error(a.error)) is type(unwrap_error(b.error))
    return True


def _signature(outcome: Outcome) -> tuple[object, ...]:
    # Not the error's message: it may hold object addresses that differ from run to run.
    error = unwrap_error(outcome.error)
    steps = tuple((s.task, s.resumed, s.suspended, s.finished) for s in outcome.steps)
    return (outcome.kind, type(error), tuple(outcome.decisions), steps)


def _shrink(first: Outcome) -> Generator[Request, Outcome, Outcome]:
    """Re-run the failing schedule with preemptions removed while it keeps failing the same way."""
    best = first
    runs = 0
    improved = True
    while improved and runs < MAX_SHRINK_RUNS:
        improved = False
        decisions = best.decisions
        for at in reversed([i for i, d in enumerate(decisions) if d]):
            for candidate in (
                [*decisions[:at], 0, *decisions[at + 1 :]],
                [*decisions[:at], *([0] * (len(decisions) - at))],
            ):
                runs += 1
                outcome = yield ReplayChooser(candidate), False
                fewer = sum(1 for d in outcome.decisions if d) < sum(1 for d in decisions if d)
                if _same_failure(outcome, first) and fewer:
                    best = outcome
                    improved = True
                    break
                if runs >= MAX_SHRINK_RUNS:
                    break
            if improved or runs >= MAX_SHRINK_RUNS:
                break
    return best


def search_plan(
    backend: str,
    strategy: str,
    max_schedules: int,
    seed: int,
    preemption_bound: int | None,
    progress: Progress | None = None,
) -> Plan:
    """The exploration as a generator of schedules to run; the backend drives it."""
    started = time.perf_counter()
    dfs = DepthFirst(preemption_bound) if strategy == "dfs" else None
    rng = random.Random(seed)
    schedules = 0
    exhaustive = False
    failure: Outcome | None = None
    longest = 8
    nondeterministic_search = False
    last_progress = started
    while schedules < max_schedules:
        chooser: ScheduleChooser | None
        if dfs is not None:
            chooser = dfs.next_chooser()
            if chooser is None:
                exhaustive = True
                break
        elif strategy == "fifo":
            if schedules:
                break
            chooser = FifoChooser()
        elif strategy == "random":
            chooser = RandomChooser(random.Random(rng.getrandbits(64)))
        else:
            chooser = PctChooser(random.Random(rng.getrandbits(64)), PCT_DEPTH, longest)
        outcome = yield chooser, False
        schedules += 1
        longest = max(longest, len(outcome.decisions))
        if chooser.diverged:
            nondeterministic_search = True
            break
        if outcome.kind is not None:
            failure = outcome
            break
        if not outcome.decisions and strategy != "dfs":
            exhaustive = True  # a single possible schedule: nothing else to try
            break
        if progress is not None:
            now = time.perf_counter()
            if now - last_progress >= 1.0:
                last_progress = now
                progress(schedules, now - started)
    report = Report(
        failed=False,
        kind=None,
        error=None,
        schedules=schedules,
        exhaustive=exhaustive,
        token=None,
        trace="",
        backend=backend,
        strategy=strategy,
        preemption_bound=preemption_bound,
        reduced=dfs is not None and dfs.reduce,
    )
    if dfs is not None and dfs.reduce_off is not None:
        report.notes.append(dfs.reduce_off)
    if nondeterministic_search:
        report.nondeterministic = True
        report.exhaustive = False
        report.notes.append(
            "the scenario is nondeterministic: re-running it with the same schedule prefix "
            "offered different choices, so the search stopped (does it read the clock, use "
            "real randomness, threads or I/O?)"
        )
    if failure is not None:
        shrunk = yield from _shrink(failure)
        token = encode_token(backend, shrunk.decisions, shrunk.options)
        first = yield ReplayChooser(shrunk.decisions), True
        second = yield ReplayChooser(shrunk.decisions), True
        report.failed = True
        report.kind = first.kind if first.kind is not None else shrunk.kind
        report.token = token
        report.preemptions = sum(1 for d in shrunk.decisions if d)
        report.trace = format_trace(first, token)
        report.error = _error_of(first if first.kind is not None else shrunk)
        if (
            first.kind is None
            or not _same_failure(first, shrunk)
            or _signature(first) != _signature(second)
        ):
            report.nondeterministic = True
            report.notes.append(
                "the scenario is nondeterministic: replaying this token did not reproduce the "
                "same failure and trace, so it depends on something the explorer does not "
                "control (wall-clock time, real randomness, threads or I/O)"
            )
    report.seconds = time.perf_counter() - started
    return report


def _error_of(outcome: Outcome) -> BaseException | None:
    if outcome.kind == "deadlock":
        return DeadlockError(format_waiting(outcome.waiting, outcome.task_names))
    return unwrap_error(outcome.error)


def replay_plan(
    backend: str, token: str, strict: bool = True
) -> Generator[Request, Outcome, Outcome]:
    schedule = decode_token(token)
    if schedule.backend != backend:
        raise ValueError(
            f"token {token!r} was recorded on {schedule.backend}; replay it with "
            f"backend={schedule.backend!r}, not {backend!r}"
        )
    chooser = ReplayChooser(schedule.decisions)
    outcome = yield chooser, True
    chooser.finish()
    if shape_of(outcome.options) != schedule.shape:
        chooser.diverged = True
    if chooser.diverged and strict:
        raise NondeterminismError(
            f"replaying {token} diverged: the scenario offered different scheduling choices than "
            "when the token was recorded (the scenario changed, or it depends on the clock, real "
            "randomness, threads or I/O)"
        )
    return outcome


def _refuse_inside_trio() -> None:
    # trio marks its thread as running trio; a controlled loop started here would make anyio and
    # sniffio see trio inside the scenario and corrupt the outer run.
    if "trio" not in sys.modules:
        return
    import trio

    try:
        trio.lowlevel.current_trio_token()
    except RuntimeError:
        return
    raise RuntimeError(
        "explore() and replay() run their own event loop and cannot be called from inside "
        "trio.run(); call them from synchronous code (or trio.to_thread.run_sync)"
    )


def _raise_unsupported() -> None:
    """Stop the search when the schedule did something the explorer cannot control."""
    error = take_unsupported()
    if error is not None:
        raise error


def drive(plan: Generator[Request, Outcome, Any], scenario: Scenario, backend: str) -> Any:
    """Run a plan to completion on a controlled loop of ``backend``."""
    _refuse_inside_trio()
    if backend == "asyncio":
        from ._asyncio import AsyncioSession

        take_unsupported()  # nothing left over from an earlier search that was interrupted
        with AsyncioSession() as session:
            try:
                request = next(plan)
                while True:
                    outcome = session.run(scenario, *request)
                    _raise_unsupported()
                    request = plan.send(outcome)
            except StopIteration as stop:
                return stop.value
    from ._trio import run_plan

    take_unsupported()  # nothing left over from an earlier search that was interrupted
    return run_plan(plan, scenario, _raise_unsupported)


def explore(
    scenario: Scenario,
    backend: str = "asyncio",
    strategy: str = "dfs",
    max_schedules: int = 10_000,
    seed: int = 0,
    preemption_bound: int | None = None,
    *,
    progress: Progress | None = None,
) -> Report:
    """Run ``scenario`` under many schedules and report the first one that fails.

    The scenario is an unmodified zero-argument async function that starts its own tasks
    (``asyncio.TaskGroup``, a trio nursery, an anyio task group) and raises when an invariant
    breaks. Each schedule runs it on a controlled event loop that lets one task run at a time and
    uses virtual time, so sleeps and timeouts cost nothing.

    Args:
        scenario: The zero-argument async function to explore.
        backend: ``"asyncio"`` or ``"trio"``.
        strategy: ``"dfs"`` (systematic; proves there is no failure when ``report.exhaustive``;
            without a preemption bound it prunes schedules equivalent to ones already run, with
            sleep sets over what each step touches), ``"random"``, ``"pct"`` (probabilistic
            concurrency testing: random priorities and change points) or ``"fifo"`` (only the
            stock event loop's own order).
        max_schedules: Stop after this many schedules.
        seed: Seed for ``random`` and ``pct``.
        preemption_bound: At most this many preemptions (choices that differ from the stock event
            loop's FIFO order) per schedule; None for no bound.
        progress: Called about once a second as ``progress(schedules, seconds)``.

    Returns:
        A :class:`Report`. A failing schedule is shrunk toward the fewest preemptions, then
        replayed twice to check the scenario is deterministic.

    Raises:
        TypeError: An argument has the wrong type (the scenario is not a zero-argument async
            function, ...).
        ValueError: An argument has a wrong value (unknown backend or strategy, negative bound...).
    """
    check_arguments(scenario, backend, strategy, max_schedules, seed, preemption_bound)
    plan = search_plan(backend, strategy, max_schedules, seed, preemption_bound, progress)
    report: Report = drive(plan, scenario, backend)
    return report


def replay(
    scenario: Scenario, token: str, backend: str = "asyncio", *, strict: bool = True
) -> Report:
    """Run ``scenario`` once under the schedule a token recorded.

    Args:
        scenario: The zero-argument async function the token was recorded with.
        token: ``report.token`` from :func:`explore`.
        backend: The backend the token was recorded on.
        strict: When True, a scenario that no longer offers the recorded choices raises
            :class:`NondeterminismError`. When False (a token pinned as a regression test of a
            since-fixed scenario), the recorded choices are followed while they still apply and
            the stock event loop's order is used after that.

    Returns:
        A passing :class:`Report` (with the schedule's trace) when the schedule no longer fails,
        for instance after a fix.

    Raises:
        BaseException: The failure the schedule produces: the scenario's own exception, or a
            :class:`DeadlockError` describing the blocked tasks.
        NondeterminismError: The scenario no longer offers the choices the token recorded.
        TypeError: ``token`` is not a string, or the scenario is not a zero-argument async
            function.
        ValueError: The token is malformed or was recorded on another backend.
    """
    check_scenario(scenario)
    check_backend(backend)
    decode_token(token)
    if not isinstance(strict, bool):
        raise TypeError(f"strict must be a bool, not {type(strict).__name__}")
    started = time.perf_counter()
    outcome: Outcome = drive(replay_plan(backend, token, strict), scenario, backend)
    if outcome.kind is not None:
        error = _error_of(outcome)
        assert error is not None
        raise error
    return Report(
        failed=False,
        kind=None,
        error=None,
        schedules=1,
        exhaustive=False,
        token=None,
        trace=format_trace(outcome, token),
        backend=backend,
        strategy="replay",
        seconds=time.perf_counter() - started,
    )


def replay_outcome(
    scenario: Scenario, token: str, backend: str, strict: bool = True
) -> tuple[bool, str, str]:
    """Replay without raising: (failed, verdict line, trace). For the CLI and pytest."""
    check_scenario(scenario)
    check_backend(backend)
    decode_token(token)
    outcome: Outcome = drive(replay_plan(backend, token, strict), scenario, backend)
    trace = format_trace(outcome, token)
    if outcome.kind is None:
        return False, f"PASS on {backend}: this schedule no longer fails", trace
    if outcome.kind == "deadlock":
        return True, f"DEADLOCK on {backend} (replayed)", trace
    error = unwrap_error(outcome.error)
    return True, f"FAIL on {backend} (replayed): {type(error).__name__}: {error}", trace
