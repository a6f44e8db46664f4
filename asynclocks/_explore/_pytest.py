"""pytest integration: ``@check_interleavings`` turns a scenario into a test of every schedule.

pytest is imported only when the decorator is used, so the library does not depend on it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

from ._api import check_arguments, check_backend, explore, replay_outcome
from ._common import BACKENDS, Backend, Strategy
from ._faults import FaultMode, check_faults
from ._report import decode_token

EXPECTATIONS = ("pass", "fail")


class InterleavingFailure(AssertionError):
    """A schedule broke the scenario (or an expected failure was not found).

    Raised by tests made with :func:`check_interleavings`; the message holds the verdict, the
    trace of the failing schedule and its replay token.
    """


# Shown by pytest as asynclocks.InterleavingFailure, the name users import it by.
InterleavingFailure.__module__ = "asynclocks"


def check_interleavings(
    backends: Backend | Sequence[Backend] = BACKENDS,
    *,
    strategy: Strategy = "dfs",
    max_schedules: int | None = None,
    seed: int | None = None,
    preemption_bound: int | None = None,
    replay_token: str | None = None,
    expect: str = "pass",
    cancel: FaultMode = "off",
    timeouts: FaultMode = "off",
    fault_budget: int = 1,
) -> Callable[[Callable[[], Any]], Callable[..., None]]:
    """Decorate a zero-argument ``async def`` so pytest explores it instead of running it once.

    The test fails when any explored schedule fails; the failure message is the explorer's
    verdict, the trace of the failing schedule and its replay token. The test is parametrized
    over ``backends`` (ids ``asyncio``/``trio``).

    Args:
        backends: ``"asyncio"``, ``"trio"`` or a sequence of them (default: both).
        strategy: Exploration strategy, as for :func:`asynclocks.explore`.
        max_schedules: As for :func:`asynclocks.explore` (default 10,000, or
            ``ASYNCLOCKS_MAX_SCHEDULES``).
        seed: As for :func:`asynclocks.explore` (default 0, or ``ASYNCLOCKS_SEED``).
        preemption_bound: As for :func:`asynclocks.explore`.
        replay_token: Pin one schedule as a regression test: run only the schedule this token
            recorded (following it as far as it still applies after a fix) and fail if it fails.
            Only the token's own backend runs.
        expect: ``"pass"`` (default): fail the test when a schedule fails. ``"fail"``: fail the
            test when *no* failing schedule is found (to keep a demo of a race honest); a
            failure that does not replay (nondeterministic) does not count.
        cancel: As for :func:`asynclocks.explore`: ``"auto"`` makes cancelling a task at any
            await a choice of the search.
        timeouts: As for :func:`asynclocks.explore`: ``"auto"`` lets pending timeouts fire at
            any await before their deadline.
        fault_budget: As for :func:`asynclocks.explore`.

    A scenario the explorer cannot run (threads, subprocesses, real sockets, code of the other
    backend, a backend that is not installed) raises :class:`~asynclocks.UnsupportedScenario`
    out of the test whatever ``expect`` says: it is never a verdict about the code.

    Returns:
        A decorator producing a synchronous pytest test function.

    Raises:
        TypeError: A bad argument type (checked when decorating).
        ValueError: A bad argument value or malformed token (checked when decorating).

    Example::

        @asynclocks.check_interleavings(preemption_bound=2)
        async def test_counter_is_exact() -> None:
            ...  # start tasks, then assert the invariant
    """
    if isinstance(backends, str):
        backends = (backends,)
    backends = tuple(check_backend(b) for b in backends)
    if not backends:
        raise ValueError("backends must name at least one backend")
    if expect not in EXPECTATIONS:
        raise ValueError(f"expect must be 'pass' or 'fail', not {expect!r}")
    check_faults(cancel, timeouts, fault_budget)
    if replay_token is not None:
        backends = (decode_token(replay_token).backend,)

    def decorate(scenario: Callable[[], Any]) -> Callable[..., None]:
        import pytest

        check_arguments(scenario, backends[0], strategy, max_schedules, seed, preemption_bound)

        @functools.wraps(scenario)
        def test(asynclocks_backend: Backend) -> None:
            __tracebackhide__ = True
            if replay_token is not None:
                _run_replay(scenario, replay_token, asynclocks_backend)
                return
            report = explore(
                scenario,
                backend=asynclocks_backend,
                strategy=strategy,
                max_schedules=max_schedules,
                seed=seed,
                preemption_bound=preemption_bound,
                cancel=cancel,
                timeouts=timeouts,
                fault_budget=fault_budget,
            )
            if expect == "pass" and (report.failed or report.nondeterministic):
                raise InterleavingFailure(
                    f"{report}\nreplay it: asynclocks.replay({scenario.__name__}, "
                    f"{report.token!r}); pin it: "
                    f"@check_interleavings(replay_token={report.token!r})"
                )
            if expect == "fail" and (not report.failed or report.nondeterministic):
                found = "only one that does not replay" if report.failed else "none"
                raise InterleavingFailure(f"expected a failing schedule, found {found}: {report}")

        # pytest reads the signature through __wrapped__; it must see the backend parameter,
        # not the scenario's empty one.
        del test.__wrapped__
        parametrized: Callable[..., None] = pytest.mark.parametrize("asynclocks_backend", backends)(
            test
        )
        return parametrized

    return decorate


def _run_replay(scenario: Callable[[], Any], token: str, backend: Backend) -> None:
    __tracebackhide__ = True
    failed, verdict, trace = replay_outcome(scenario, token, backend, strict=False)
    if failed:
        raise InterleavingFailure(f"pinned schedule {token}: {verdict}\n{trace}")
