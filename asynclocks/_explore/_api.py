"""``explore`` and ``replay``: argument checks, the search, shrinking, nondeterminism checks.

A verdict is only reported when it can be trusted:

* what the explorer cannot control raises :class:`UnsupportedScenario` out of the search, never a
  failing schedule (see ``_unsupported``);
* the first schedule is run again after every search, and a failing one is replayed twice: a
  scenario that behaves differently is flagged nondeterministic, its failure reported as the
  search saw it (error and a trace rebuilt from the step sketch) with the likely cause, found by
  one more watched run (``_nondeterminism``);
* the reported failure's replay records every step's reads and writes to name the race window
  (``_window``).
"""

from __future__ import annotations

import dataclasses
import inspect
import random
import sys
import time
import types
from collections.abc import Callable, Generator
from typing import Any

from ._common import (
    BACKENDS,
    STRATEGIES,
    Backend,
    DeadlockError,
    NondeterminismError,
    Outcome,
    Scenario,
    Strategy,
    take_unsupported,
)
from ._config import ExploreConfig, _check_int
from ._faults import NO_FAULTS, FaultMode, Faults, check_faults
from ._nondeterminism import (
    changed_state,
    likely_cause,
    same_run,
    snapshot,
    user_modules,
    watch_sources,
)
from ._report import (
    Report,
    decode_token,
    encode_token,
    format_trace,
    format_waiting,
    shape_of,
    unwrap_error,
)
from ._schedulers import (
    BuiltinScheduler,
    CustomChooser,
    DfsScheduler,
    FifoScheduler,
    PctScheduler,
    PortfolioScheduler,
    RandomScheduler,
    ReplayChooser,
    ScheduleChooser,
    Scheduler,
)
from ._unsupported import foreign_backend, interruption
from ._window import RaceWindow, WindowChooser, find_window, sketch_steps

#: Shrinking re-runs the failing schedule with fewer preemptions at most this many times.
MAX_SHRINK_RUNS = 200

#: A request to the backend: run the scenario with this chooser (and record a trace or not).
Request = tuple[ScheduleChooser, bool]
Plan = Generator[Request, Outcome, Report]
Progress = Callable[[int, float], None]


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


def check_backend(backend: object) -> Backend:
    """``backend`` itself, once it is known to name a backend."""
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a str, not {type(backend).__name__}")
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    return backend


def check_strategy(strategy: object) -> Strategy | Scheduler:
    """``strategy`` itself, once it is known to name a strategy or be a :class:`Scheduler`."""
    if isinstance(strategy, str):
        if strategy not in STRATEGIES:
            raise ValueError(
                f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)} "
                "(or pass a Scheduler)"
            )
        return strategy
    if isinstance(strategy, type) or not isinstance(strategy, Scheduler):
        raise TypeError(
            "strategy must be a str or a Scheduler instance (with new_execution() and "
            f"next_task()), not {strategy!r}"
        )
    return strategy


def check_arguments(
    scenario: object,
    backend: object,
    strategy: object,
    max_schedules: object,
    seed: object,
    preemption_bound: object,
) -> None:
    """Validate every argument of :func:`explore` before anything runs (None: the config's)."""
    check_scenario(scenario)
    check_backend(backend)
    check_strategy(strategy)
    _check_int("max_schedules", max_schedules, 1, allow_none=True)
    _check_int("seed", seed, 0, allow_none=True)
    _check_int("preemption_bound", preemption_bound, 0, allow_none=True)


def make_config(
    config: object,
    max_schedules: int | None = None,
    seed: int | None = None,
    preemption_bound: int | None = None,
) -> ExploreConfig:
    """``config`` (or the environment's defaults) with the arguments given in code applied."""
    if config is None:
        config = ExploreConfig()
    elif not isinstance(config, ExploreConfig):
        raise TypeError(f"config must be an ExploreConfig or None, not {type(config).__name__}")
    given = {
        name: value
        for name, value in (
            ("max_schedules", max_schedules),
            ("seed", seed),
            ("preemption_bound", preemption_bound),
        )
        if value is not None
    }
    return dataclasses.replace(config, **given) if given else config


def make_scheduler(strategy: Strategy, config: ExploreConfig, backend: Backend) -> BuiltinScheduler:
    """The built-in scheduler a strategy names on ``backend``, set up from ``config``."""
    steps = config.max_steps
    if strategy == "dfs":
        return DfsScheduler(config.preemption_bound, max_steps=steps)
    if strategy == "fifo":
        return FifoScheduler(steps, trio_seed=config.seed if backend == "trio" else None)
    if strategy == "random":
        return RandomScheduler(config.seed, steps)
    if strategy == "pct":
        return PctScheduler(config.seed, config.pct_depth, steps)
    assert strategy == "portfolio"
    seeds = random.Random(config.seed)
    return PortfolioScheduler(
        [
            RandomScheduler(seeds.getrandbits(64), steps),
            PctScheduler(seeds.getrandbits(64), config.pct_depth, steps),
        ]
    )


def _same_failure(a: Outcome, b: Outcome) -> bool:
    if a.kind != b.kind:
        return False
    if a.kind == "exception":
        return type(unwrap_error(a.error)) is type(unwrap_error(b.error))
    return True


def _shrink(first: Outcome, max_steps: int) -> Generator[Request, Outcome, Outcome]:
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
                outcome = yield ReplayChooser(candidate, max_steps), False
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


@dataclasses.dataclass
class _Searched:
    schedules: int = 0
    exhaustive: bool = False
    failure: Outcome | None = None
    first_run: Outcome | None = None
    #: The same schedule prefix offered different choices (the scenario is nondeterministic).
    diverged: bool = False
    timed_out: bool = False


def _search(
    scheduler: Scheduler, config: ExploreConfig, progress: Progress | None, started: float
) -> Generator[Request, Outcome, _Searched]:
    """The search loop: the scheduler starts each schedule, until the budget is spent, one fails,
    or the scheduler has nothing more to try."""
    found = _Searched()
    builtin = scheduler if isinstance(scheduler, BuiltinScheduler) else None
    deadline = None if config.time_limit is None else started + config.time_limit
    last_progress = started
    while found.schedules < config.max_schedules:
        more = scheduler.new_execution()
        if not isinstance(more, bool):
            raise TypeError(
                f"{type(scheduler).__name__}.new_execution() must return a bool, not "
                f"{type(more).__name__}"
            )
        if not more:
            found.exhaustive = builtin is not None and builtin.exhaustive
            break
        chooser: ScheduleChooser
        chooser = (
            builtin.chooser() if builtin is not None else CustomChooser(scheduler, config.max_steps)
        )
        outcome = yield chooser, False
        if isinstance(chooser, CustomChooser) and chooser.error is not None:
            raise chooser.error
        found.schedules += 1
        if found.first_run is None:
            found.first_run = outcome
        if builtin is not None:
            builtin.finished(outcome)
        if chooser.diverged:
            found.diverged = True
            break
        if outcome.kind is not None:
            found.failure = outcome
            break
        if not outcome.decisions:
            found.exhaustive = True  # a single possible schedule: nothing else to try
            break
        now = time.perf_counter()
        if deadline is not None and now >= deadline:
            found.timed_out = True
            break
        if progress is not None and now - last_progress >= 1.0:
            last_progress = now
            progress(found.schedules, now - started)
    return found


def search_plan(
    backend: Backend,
    strategy: Strategy | Scheduler,
    config: ExploreConfig,
    progress: Progress | None = None,
    origin: types.ModuleType | None = None,
    faults: Faults = NO_FAULTS,
) -> Plan:
    """The exploration as a generator of schedules to run; the backend drives it.

    The search itself (:func:`_search`) is wrapped by the checks that make its verdict
    trustworthy: the first schedule run again, a failure shrunk (:func:`_shrink`) and replayed
    twice, a nondeterministic scenario diagnosed (:func:`_diagnose`).

    ``origin`` is the scenario's module: its module-level variables are fingerprinted before the
    first schedule, to name them if they turn out to be state that outlived a schedule.
    """
    started = time.perf_counter()
    initial = snapshot([origin]) if origin is not None else {}
    scheduler = make_scheduler(strategy, config, backend) if isinstance(strategy, str) else strategy
    max_steps = config.max_steps
    searched = yield from _search(scheduler, config, progress, started)
    failure = searched.failure
    first_run = searched.first_run
    nondeterministic_search = searched.diverged
    builtin = scheduler if isinstance(scheduler, BuiltinScheduler) else None
    report = Report(
        failed=False,
        kind=None,
        error=None,
        schedules=searched.schedules,
        exhaustive=searched.exhaustive,
        token=None,
        trace="",
        backend=backend,
        strategy=strategy if isinstance(strategy, str) else "custom",
        preemption_bound=config.preemption_bound,
        reduced=builtin is not None and builtin.reduced,
        faults=faults,
    )
    if builtin is not None:
        report.notes += builtin.notes
    if searched.timed_out:
        report.notes.append(
            f"the search stopped at its time limit of {config.time_limit:g} s "
            f"after {searched.schedules} schedule(s)"
        )
    runs: list[Outcome] = [] if first_run is None else [first_run]
    # The first schedule, run again at the end, must behave as it did: a search whose scenario
    # kept state from one schedule to the next explored a different program every time.
    first_again: Outcome | None = None
    if first_run is not None and (failure is None or failure is not first_run):
        first_again = yield ReplayChooser(first_run.decisions, max_steps), False
        runs.append(first_again)
    drifted = (
        first_again is not None and first_run is not None and not same_run(first_again, first_run)
    )
    if failure is not None:
        shrunk = yield from _shrink(failure, max_steps)
        window = WindowChooser(shrunk.decisions)
        window.max_steps = max_steps
        first = yield window, True
        second = yield ReplayChooser(shrunk.decisions, max_steps), True
        runs += [shrunk, first, second]
        reproduced = not drifted and same_run(first, shrunk) and same_run(second, first)
        report.failed = True
        if reproduced:
            token = encode_token(backend, shrunk.decisions, shrunk.options, faults)
            report.kind = first.kind
            report.injected = [text for _, text in first.faults]
            report.token = token
            report.preemptions = sum(1 for d in shrunk.decisions if d)
            report.error = _error_of(first)
            found = find_window(first, window.accesses) if first.kind == "exception" else None
            keep = found.steps if found is not None else ()
            report.window = found.text if found is not None else ""
            report.trace = format_trace(first, token, keep=keep)
            report._traced = (first, first.steps, keep)
        else:
            # The replays saw another program: report what the search itself saw fail, with the
            # trace rebuilt from its sketch, and its own schedule (shrinking meant nothing).
            token = encode_token(backend, failure.decisions, failure.options, faults)
            steps = sketch_steps(failure.sketch, failure.task_names)
            report.kind = failure.kind
            report.injected = [text for _, text in failure.faults]
            report.token = token
            report.preemptions = sum(1 for d in failure.decisions if d)
            report.error = _error_of(failure)
            report.trace = format_trace(failure, token, steps=steps)
            report._traced = (failure, steps, ())
            report.nondeterministic = True
            cause = yield from _diagnose(failure.decisions, runs, origin, initial, max_steps)
            replayed = _error_of(first)
            again = (
                f"{type(replayed).__name__}: {replayed}"
                if first.kind == "exception"
                else ("a deadlock" if first.kind == "deadlock" else "no failure")
            )
            how = (
                "its first schedule, run again, behaved differently"
                if drifted
                else f"replaying the failing schedule gave {_short(again)}"
            )
            report.notes.append(
                f"the scenario is nondeterministic: {how}, so this failure (reported as the "
                f"search saw it) cannot be replayed reliably; {cause}"
            )
    elif drifted or nondeterministic_search:
        assert first_run is not None
        report.nondeterministic = True
        report.exhaustive = False
        cause = yield from _diagnose(first_run.decisions, runs, origin, initial, max_steps)
        how = (
            "re-running it with the same schedule prefix offered different choices, so the "
            "search stopped"
            if nondeterministic_search
            else "its first schedule, run again after the search, behaved differently, so the "
            "schedules explored are not the program's"
        )
        report.notes.append(f"the scenario is nondeterministic: {how}; {cause}")
    report.seconds = time.perf_counter() - started
    return report


def _short(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _diagnose(
    decisions: list[int],
    runs: list[Outcome],
    origin: types.ModuleType | None,
    initial: dict[tuple[str, str], str],
    max_steps: int,
) -> Generator[Request, Outcome, str]:
    """Run the schedule once more, watching the clock, randomness and module-level state."""
    modules = user_modules(runs)
    if origin is not None and origin not in modules:
        modules.append(origin)
    before = snapshot(modules)
    seen: list[str] = []
    with watch_sources(seen):
        yield ReplayChooser(decisions, max_steps), False
    after = snapshot(modules)
    # Changed since the search began (the scenario's module) or during this one run.
    since_start = {key: value for key, value in before.items() if key in initial}
    changed = changed_state(initial, since_start) if initial else []
    changed += [name for name in changed_state(before, after) if name not in changed]
    return likely_cause(seen, changed)


def _error_of(outcome: Outcome) -> BaseException | None:
    if outcome.kind == "deadlock":
        return DeadlockError(format_waiting(outcome.waiting, outcome.task_names))
    return unwrap_error(outcome.error)


def token_backend(token: str, backend: object) -> Backend:
    """The backend a token was recorded on; ``backend``, when given, must be that one.

    Raises:
        TypeError: ``token`` is not a string or ``backend`` is not a string or None.
        ValueError: The token is malformed or ``backend`` names another backend.
    """
    schedule = decode_token(token)
    if backend is not None and check_backend(backend) != schedule.backend:
        raise ValueError(
            f"token {token!r} was recorded on {schedule.backend}; replay it with "
            f"backend={schedule.backend!r} (or leave backend out), not {backend!r}"
        )
    return schedule.backend


def replay_plan(
    backend: Backend, token: str, strict: bool = True
) -> Generator[Request, Outcome, tuple[Outcome, RaceWindow | None]]:
    """Replay a token's schedule once; returns its outcome and, for an exception, the window."""
    schedule = decode_token(token)
    token_backend(token, backend)
    chooser = WindowChooser(schedule.decisions)
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
    found = find_window(outcome, chooser.accesses) if outcome.kind == "exception" else None
    return outcome, found


def _refuse_inside_trio() -> None:
    # trio marks its thread as running trio; a controlled loop started here would make anyio and
    # sniffio see trio inside the scenario and corrupt the outer run.
    if sys.modules.get("trio") is None:
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


def _unsupported_check(backend: Backend) -> Callable[[Outcome], None]:
    def check(outcome: Outcome) -> None:
        """Stop the search when the schedule did something the explorer cannot control."""
        error = take_unsupported()
        if error is None and outcome.kind == "exception":
            stopped = interruption(outcome.error)
            if stopped is not None:
                raise stopped
            error = foreign_backend(outcome.error, backend)
        if error is not None:
            raise error

    return check


def drive(
    plan: Generator[Request, Outcome, Any],
    scenario: Scenario,
    backend: Backend,
    faults: Faults = NO_FAULTS,
) -> Any:
    """Run a plan to completion on a controlled loop of ``backend``, injecting ``faults``.

    Raises:
        UnsupportedScenario: A schedule did something the explorer cannot control, or the
            scenario is code of the other backend.
    """
    _refuse_inside_trio()
    check = _unsupported_check(backend)
    take_unsupported()  # nothing left over from an earlier search that was interrupted
    try:
        return _drive(plan, scenario, backend, check, faults)
    finally:
        plan.close()  # a plan stopped by an error restores what it patched for a run


def _drive(
    plan: Generator[Request, Outcome, Any],
    scenario: Scenario,
    backend: Backend,
    check: Callable[[Outcome], None],
    faults: Faults,
) -> Any:
    if backend == "asyncio":
        from ._asyncio import AsyncioSession

        with AsyncioSession(faults) as session:
            try:
                request = next(plan)
                while True:
                    outcome = session.run(scenario, *request)
                    check(outcome)
                    request = plan.send(outcome)
            except StopIteration as stop:
                return stop.value
    from ._trio import run_plan

    return run_plan(plan, scenario, check, faults)


def explore(
    scenario: Scenario,
    backend: Backend = "asyncio",
    strategy: Strategy | Scheduler = "dfs",
    max_schedules: int | None = None,
    seed: int | None = None,
    preemption_bound: int | None = None,
    *,
    config: ExploreConfig | None = None,
    progress: Progress | None = None,
    cancel: FaultMode = "off",
    timeouts: FaultMode = "off",
    fault_budget: int = 1,
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
            concurrency testing: random priorities and ``config.pct_depth - 1`` change points),
            ``"portfolio"`` (schedules taken in turn from random and pct: finds what either
            finds), ``"fifo"`` (only the stock event loop's own order; on trio each batch of
            runnable tasks forward or reversed at random, as ``trio.run`` does), or a
            :class:`Scheduler` instance of your own.
        max_schedules: Stop after this many schedules (default: ``config.max_schedules``).
        seed: Seed for ``random``, ``pct`` and ``portfolio``, and for trio's batch order under
            ``fifo`` (default: ``config.seed``).
        preemption_bound: At most this many preemptions (choices that differ from the stock event
            loop's FIFO order) per schedule (default: ``config.preemption_bound``, None: no
            bound).
        config: Budgets and limits (:class:`ExploreConfig`); by default one made from the
            environment's ``ASYNCLOCKS_*`` variables. The three arguments above, when given,
            override its fields.
        progress: Called about once a second as ``progress(schedules, seconds)``.
        cancel: ``"auto"``: at every await, cancelling a task there is one more choice of the
            search (asyncio: ``task.cancel()``; an anyio task: its own innermost cancel scope
            or its task group's; trio: its own innermost cancel scope or its nursery's), so a
            cancellation race needs no canceller task in the scenario. The scenario's own task
            is never cancelled. ``"off"`` (default) leaves the schedules exactly as without it.
        timeouts: ``"auto"``: a pending ``asyncio.timeout``/``wait_for``, anyio
            ``fail_after``/``move_on_after`` or trio deadline may fire at any await before it
            is due, as a choice of the search: a timeout race needs no tuned numbers.
        fault_budget: At most this many injected faults per schedule (each also counts as a
            preemption). The token records the faults, and a replay injects them again.

    Returns:
        A :class:`Report`. A failing schedule is shrunk toward the fewest preemptions, then
        replayed twice to check the scenario is deterministic; for an exception,
        ``report.window`` names the conflicting accesses (the read, the await after it, the
        other task's write) and a long trace is elided around them. The first schedule is also
        run again after the search. A scenario that does not behave the same way twice is
        flagged ``report.nondeterministic``: a failure is then reported as the search saw it
        (its error and trace, not a replay's), and ``report.notes`` give the likely cause
        (module-level state that outlived a schedule, the wall clock, real randomness).

    Raises:
        TypeError: An argument has the wrong type (the scenario is not a zero-argument async
            function, ...), or a custom scheduler answered with the wrong type.
        ValueError: An argument has a wrong value (unknown backend or strategy, negative bound...),
            or a custom scheduler picked a task that was not runnable.
        UnsupportedScenario: The scenario does something the explorer cannot control
            (threads, executors, subprocesses, signals, real sockets outside the simulated
            loopback network), is code of the other backend, or the backend is not installed or
            not a tested version. Never reported as a failing schedule.
    """
    check_arguments(scenario, backend, strategy, max_schedules, seed, preemption_bound)
    settings = make_config(config, max_schedules, seed, preemption_bound)
    faults = check_faults(cancel, timeouts, fault_budget)
    origin = sys.modules.get(getattr(scenario, "__module__", None) or "")
    plan = search_plan(backend, strategy, settings, progress, origin, faults)
    report: Report = drive(plan, scenario, backend, faults)
    return report


def replay(
    scenario: Scenario, token: str, backend: Backend | None = None, *, strict: bool = True
) -> Report:
    """Run ``scenario`` once under the schedule a token recorded.

    Args:
        scenario: The zero-argument async function the token was recorded with.
        token: ``report.token`` from :func:`explore`.
        backend: Optional: the token names the backend it was recorded on; when given, it
            must be that one.
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
        ValueError: The token is malformed or was recorded on another backend than
            ``backend``.
        UnsupportedScenario: The scenario does something the explorer cannot control, is
            code of the other backend, or the backend is not installed.
    """
    check_scenario(scenario)
    backend = token_backend(token, backend)
    if not isinstance(strict, bool):
        raise TypeError(f"strict must be a bool, not {type(strict).__name__}")
    started = time.perf_counter()
    faults = decode_token(token).faults
    outcome, _ = drive(replay_plan(backend, token, strict), scenario, backend, faults)
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
        faults=faults,
        injected=[text for _, text in outcome.faults],
    )


def replay_outcome(
    scenario: Scenario,
    token: str,
    backend: Backend | None = None,
    strict: bool = True,
    full: bool = False,
) -> tuple[bool, str, str]:
    """Replay without raising: (failed, verdict line, trace). For the CLI and pytest."""
    check_scenario(scenario)
    backend = token_backend(token, backend)
    faults = decode_token(token).faults
    outcome, found = drive(replay_plan(backend, token, strict), scenario, backend, faults)
    keep = found.steps if found is not None else ()
    trace = format_trace(outcome, token, full=full, keep=keep)
    if found is not None:
        trace = f"{found.text}\n{trace}"
    if outcome.kind is None:
        return False, f"PASS on {backend}: this schedule no longer fails", trace
    if outcome.kind == "deadlock":
        return True, f"DEADLOCK on {backend} (replayed)", trace
    error = unwrap_error(outcome.error)
    return True, f"FAIL on {backend} (replayed): {type(error).__name__}: {error}", trace
