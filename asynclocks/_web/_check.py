"""``check_requests``: concurrent requests checked against every sequential order of them.

For each permutation of the concurrent requests, a fresh app runs the setup, then the concurrent
requests one at a time in that order, then the observe requests: the outcomes those runs give are
the *allowed* ones (linearizability: whatever overlapping requests do, the result must be one some
sequential order would give). Then the explorer runs the concurrent requests together, under every
schedule it explores, on a fresh app each time; a schedule whose outcome is not allowed fails.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio

from .._explore import Report, explore
from .._explore._api import check_arguments
from .._explore._common import Backend, Strategy, register_library
from ._drivers import AppFactory, driver_for, make_app, prepare
from ._model import (
    Outcome,
    Request,
    Response,
    differences,
    key_of,
    parse_ignore,
    show,
    without,
)

#: The HTTP stacks a check drives: their frames are not the user's code in a trace.
_HTTP_STACK = ("httpx", "httpcore", "h11", "starlette", "fastapi", "aiohttp", "multidict", "yarl")

#: Concurrent requests in one set: at least two race, more than four explode the permutations.
MIN_CONCURRENT, MAX_CONCURRENT = 2, 4


@dataclass(frozen=True)
class RequestSet:
    """The requests of one check: ``setup`` in order, ``concurrent`` together, ``observe`` in order.

    Raises:
        ValueError: fewer than 2 or more than 4 concurrent requests.
        TypeError: a request is not one :meth:`Request.of` accepts.
    """

    concurrent: tuple[Request, ...]
    setup: tuple[Request, ...] = ()
    observe: tuple[Request, ...] = ()

    def __post_init__(self) -> None:
        for name in ("concurrent", "setup", "observe"):
            value = getattr(self, name)
            if isinstance(value, str | Request | dict):
                raise TypeError(
                    f"{name} must be a list of requests, not one {type(value).__name__}"
                )
            object.__setattr__(self, name, tuple(Request.of(item) for item in value))
        if not MIN_CONCURRENT <= len(self.concurrent) <= MAX_CONCURRENT:
            raise ValueError(
                f"concurrent takes {MIN_CONCURRENT} to {MAX_CONCURRENT} requests (the ones that "
                f"may race), got {len(self.concurrent)}"
            )

    @classmethod
    def of(
        cls, concurrent: Sequence[Any], setup: Sequence[Any] = (), observe: Sequence[Any] = ()
    ) -> RequestSet:
        """A set from requests in any form :meth:`Request.of` accepts."""
        return cls(concurrent, setup, observe)  # type: ignore[arg-type]  # __post_init__ converts

    def label(self, index: int) -> str:
        """``c1``.. for a concurrent request, ``o1``.. for an observe one (an outcome's index)."""
        count = len(self.concurrent)
        return f"c{index + 1}" if index < count else f"o{index - count + 1}"

    def request(self, index: int) -> Request:
        """The request behind position ``index`` of an outcome."""
        count = len(self.concurrent)
        return self.concurrent[index] if index < count else self.observe[index - count]


@dataclass(frozen=True)
class Allowed:
    """One outcome the requests give when run one at a time, and the orders that give it."""

    outcome: Outcome
    orders: tuple[tuple[int, ...], ...]


class NotLinearizable(AssertionError):
    """A schedule's outcome is not one any sequential order of the concurrent requests gives.

    ``str()`` is one line; :attr:`explanation` shows the observed outcome, the nearest allowed one
    and how they differ.
    """

    def __init__(self, requests: RequestSet, observed: Outcome, allowed: Sequence[Allowed]) -> None:
        self.requests = requests
        self.observed = observed
        self.allowed = tuple(allowed)
        self.nearest = min(self.allowed, key=lambda a: len(differences(observed, a.outcome)))
        count = len(requests.concurrent)
        super().__init__(
            f"no order of the {count} concurrent requests, run one at a time, gives this outcome"
        )

    @property
    def explanation(self) -> str:
        """The observed outcome, the nearest allowed one, how they differ, and every allowed one."""
        requests, observed = self.requests, self.observed
        width = max(len(str(requests.request(i))) for i in range(len(observed)))
        lines = ["observed (not linearizable):"]
        for index, response in enumerate(observed):
            request = str(requests.request(index))
            lines.append(f"  {requests.label(index)}  {request:<{width}}  ->  {response}")
        order = " then ".join(requests.label(i) for i in self.nearest.orders[0])
        lines.append(f"nearest sequential order, {order}, would give instead:")
        for index, name, mine, theirs in differences(observed, self.nearest.outcome):
            lines.append(f"  {requests.label(index)} {name}: {show(theirs)}, not {show(mine)}")
        lines.append("every sequential order, and where it differs from what was observed:")
        for allowed in self.allowed:
            orders = " or ".join(
                " then ".join(requests.label(i) for i in o) for o in allowed.orders
            )
            changes = "; ".join(
                f"{requests.label(index)} {name} {show(theirs)}"
                for index, name, _mine, theirs in differences(observed, allowed.outcome)
            )
            lines.append(f"  {orders}: {changes}")
        return "\n".join(lines)


# Shown by pytest and in tracebacks as asynclocks.web.NotLinearizable, the name users import.
NotLinearizable.__module__ = "asynclocks.web"


@dataclass
class WebReport:
    """What :func:`check_requests` found.

    Attributes:
        requests: The request set checked.
        allowed: Every outcome a sequential order gives, with its orders.
        report: The explorer's report of the concurrent runs (its trace, token, coverage).
        observed: The failing schedule's outcome when it was not linearizable, else None.
        error: The failure: a :class:`NotLinearizable`, or whatever else broke the run.
    """

    requests: RequestSet
    allowed: tuple[Allowed, ...]
    report: Report
    observed: Outcome | None = None
    error: BaseException | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        """True when some explored schedule failed."""
        return self.report.failed

    @property
    def verdict(self) -> str:
        """One line: the headline result."""
        report = self.report
        if isinstance(self.error, NotLinearizable):
            return (
                f"NOT LINEARIZABLE on {report.backend} after {report.schedules} schedule(s): "
                f"{self.error}"
            )
        if report.failed:
            return report.verdict
        count = len(self.allowed)
        return (
            f"LINEARIZABLE on {report.backend}: every outcome matched one of the {count} "
            f"sequential outcome(s), in {report.coverage}"
        )

    def __str__(self) -> str:
        parts = [self.verdict]
        if isinstance(self.error, NotLinearizable):
            parts.append(self.error.explanation)
        if self.report.failed:
            if self.report.window:
                parts.append(self.report.window)
            parts += [self.report.trace, f"token: {self.report.token}"]
        parts += self.report.notes + self.notes
        return "\n".join(parts)


def _normalise(outcome: Sequence[Response], ignore: Sequence[tuple[str, ...]]) -> Outcome:
    return tuple(Response(r.status, without(r.body, ignore)) for r in outcome)


async def _run(
    app_factory: AppFactory,
    requests: RequestSet,
    backend: Backend,
    lifespan: bool,
    order: Sequence[int] | None = None,
) -> list[Response]:
    """One run on a fresh app: the setup, the concurrent requests, the observe requests.

    With ``order`` the concurrent requests are sent one at a time in that order; without it,
    together, each in a task named after it (what the explorer's traces show).
    """
    app = await make_app(app_factory)
    responses: list[Response | None] = [None] * len(requests.concurrent)
    async with driver_for(app, backend, lifespan) as driver:
        for request in requests.setup:
            await driver.send(request)

        async def one(index: int) -> None:
            responses[index] = await driver.send(requests.concurrent[index])

        if order is not None:
            for index in order:
                await one(index)
        else:
            async with anyio.create_task_group() as group:
                for index, request in enumerate(requests.concurrent):
                    group.start_soon(one, index, name=f"{requests.label(index)} {request}")
        observed = [await driver.send(request) for request in requests.observe]
    return [r for r in responses if r is not None] + observed


def sequential_outcomes(
    app_factory: AppFactory,
    requests: RequestSet,
    backend: Backend = "asyncio",
    ignore: Sequence[str] = (),
    lifespan: bool = True,
) -> tuple[Allowed, ...]:
    """Every outcome the concurrent requests give when run one at a time, in every order.

    Raises:
        RuntimeError: a run failed even one request at a time (the app or the set is broken).
    """
    ignored = parse_ignore(ignore)
    found: dict[str, tuple[Outcome, list[tuple[int, ...]]]] = {}
    for order in itertools.permutations(range(len(requests.concurrent))):
        box: list[Outcome] = []

        async def run(order: tuple[int, ...] = order, box: list[Outcome] = box) -> None:
            outcome = await _run(app_factory, requests, backend, lifespan, order)
            box.append(_normalise(outcome, ignored))

        # The stock order of the explorer's controlled loop: the same virtual time and the same
        # unsupported-call checks as the concurrent runs, one schedule.
        report = explore(run, backend=backend, strategy="fifo")
        if report.failed or not box:
            labels = ", ".join(requests.label(i) for i in order)
            raise RuntimeError(
                f"the requests fail even one at a time (order {labels}): {report.verdict}"
            )
        outcome = box[0]
        found.setdefault(key_of(outcome), (outcome, []))[1].append(order)
    return tuple(Allowed(outcome, tuple(orders)) for outcome, orders in found.values())


def check_explore_options(
    backend: object, strategy: object, max_schedules: object, seed: object, bound: object
) -> None:
    """Check the explore options as :func:`asynclocks.explore` would, then get ready to explore.

    Raises:
        TypeError: An option has the wrong type.
        ValueError: An option has a wrong value.
    """

    async def shape() -> None:  # the explorer's checks take a scenario of the right shape
        pass

    check_arguments(shape, backend, strategy, max_schedules, seed, bound)
    register_library(*_HTTP_STACK)
    prepare()


def check_requests(
    app_factory: AppFactory,
    *,
    concurrent: Sequence[Any],
    setup: Sequence[Any] = (),
    observe: Sequence[Any] = (),
    backend: Backend = "asyncio",
    ignore: Sequence[str] = (),
    lifespan: bool = True,
    strategy: Strategy = "dfs",
    max_schedules: int = 10_000,
    seed: int = 0,
    preemption_bound: int | None = None,
    progress: Callable[[int, float], None] | None = None,
) -> WebReport:
    """Check that concurrent requests only ever give an outcome some sequential order gives.

    Args:
        app_factory: Returns a fresh app (sync or async): an ``aiohttp.web.Application``, or an
            ASGI app (Starlette, FastAPI). It is called once per run, so no state is shared
            between runs.
        concurrent: 2 to 4 requests started together: the ones that may race. A request is a
            :class:`Request`, a ``(method, path[, json[, headers]])`` tuple, a ``"METHOD /path"``
            string or a mapping with those keys.
        setup: Requests run first, one at a time (create the accounts, the seats...).
        observe: Requests run after the concurrent ones, one at a time (read the state back).
        backend: ``"asyncio"`` or ``"trio"`` (ASGI apps only; aiohttp runs on asyncio).
        ignore: Body fields that legitimately differ between runs (generated ids, timestamps),
            as dotted paths: ``"id"``, ``"items.*.created_at"``.
        lifespan: Run an ASGI app's lifespan startup and shutdown around each run.
        strategy: The explorer's strategy for the concurrent runs (see :func:`asynclocks.explore`).
        max_schedules: As for :func:`asynclocks.explore`.
        seed: As for :func:`asynclocks.explore`.
        preemption_bound: As for :func:`asynclocks.explore`.
        progress: As for :func:`asynclocks.explore`.

    Returns:
        A :class:`WebReport`; ``report.failed`` when a schedule's outcome was not allowed.

    Raises:
        TypeError: An argument has the wrong type.
        ValueError: An argument has a wrong value (fewer than 2 concurrent requests...).
        RuntimeError: The requests fail even one at a time.
        asynclocks.UnsupportedScenario: The app does what the explorer cannot control (threads,
            real sockets, ...).
    """
    if not callable(app_factory):
        raise TypeError(f"app_factory must be callable, not {type(app_factory).__name__}")
    requests = RequestSet.of(concurrent, setup, observe)
    parse_ignore(ignore)  # refused before anything runs
    if not isinstance(lifespan, bool):
        raise TypeError(f"lifespan must be a bool, not {type(lifespan).__name__}")

    check_explore_options(backend, strategy, max_schedules, seed, preemption_bound)
    allowed = sequential_outcomes(app_factory, requests, backend, ignore, lifespan)
    return explore_concurrent(
        app_factory,
        requests,
        allowed,
        backend=backend,
        ignore=ignore,
        lifespan=lifespan,
        strategy=strategy,
        max_schedules=max_schedules,
        seed=seed,
        preemption_bound=preemption_bound,
        progress=progress,
    )


def explore_concurrent(
    app_factory: AppFactory,
    requests: RequestSet,
    allowed: tuple[Allowed, ...],
    *,
    backend: Backend,
    ignore: Sequence[str],
    lifespan: bool,
    strategy: Strategy,
    max_schedules: int,
    seed: int,
    preemption_bound: int | None,
    progress: Callable[[int, float], None] | None = None,
) -> WebReport:
    """The second half of :func:`check_requests`: the concurrent runs against ``allowed``."""
    ignored = parse_ignore(ignore)
    keys = {key_of(a.outcome) for a in allowed}

    async def together() -> None:
        outcome = _normalise(await _run(app_factory, requests, backend, lifespan), ignored)
        if key_of(outcome) not in keys:
            raise NotLinearizable(requests, outcome, allowed)

    report = explore(
        together,
        backend=backend,
        strategy=strategy,
        max_schedules=max_schedules,
        seed=seed,
        preemption_bound=preemption_bound,
        progress=progress,
    )
    result = WebReport(requests, allowed, report, error=report.error)
    if isinstance(report.error, NotLinearizable):
        result.observed = report.error.observed
    return result
