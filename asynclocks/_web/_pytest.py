"""pytest integration: a request set as a test, on the chosen backends.

pytest is imported only when the helper is used, so the library does not depend on it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from .._explore._api import check_arguments, check_backend
from .._explore._common import Backend, Strategy
from .._explore._pytest import InterleavingFailure
from ._check import RequestSet, check_requests
from ._drivers import AppFactory
from ._model import parse_ignore


def linearizable(
    app_factory: AppFactory,
    *,
    concurrent: Sequence[Any],
    setup: Sequence[Any] = (),
    observe: Sequence[Any] = (),
    backends: Backend | Sequence[Backend] = ("asyncio", "trio"),
    ignore: Sequence[str] = (),
    expect: str = "pass",
    strategy: Strategy = "dfs",
    max_schedules: int = 10_000,
    seed: int = 0,
    preemption_bound: int | None = None,
) -> Callable[..., None]:
    """A pytest test that checks a request set with :func:`asynclocks.web.check_requests`.

    Assign it to a ``test_`` name in a test module::

        test_redeem_once = asynclocks.web.linearizable(
            make_app, concurrent=["POST /coupons/A/redeem"] * 2, observe=["GET /coupons/A"]
        )

    The test is parametrized over ``backends`` (ids ``asyncio``/``trio``; aiohttp apps run on
    asyncio only). It fails with :class:`asynclocks.InterleavingFailure`, whose message is the
    report: the observed outcome, the nearest sequential one, the trace and the replay token.

    Args:
        app_factory: As for :func:`check_requests`.
        concurrent: As for :func:`check_requests`.
        setup: As for :func:`check_requests`.
        observe: As for :func:`check_requests`.
        backends: ``"asyncio"``, ``"trio"`` or a sequence of them (default: both).
        ignore: As for :func:`check_requests`.
        expect: ``"pass"`` (default), or ``"fail"`` to keep a demonstration of a race honest: the
            test then fails when every schedule was linearizable.
        strategy: As for :func:`asynclocks.explore`.
        max_schedules: As for :func:`asynclocks.explore`.
        seed: As for :func:`asynclocks.explore`.
        preemption_bound: As for :func:`asynclocks.explore`.

    Raises:
        TypeError: A bad argument type (checked at once, at import of the test module).
        ValueError: A bad argument value (checked at once).
    """
    import pytest

    if isinstance(backends, str):
        backends = (backends,)
    backends = tuple(check_backend(b) for b in backends)
    if not backends:
        raise ValueError("backends must name at least one backend")
    if expect not in ("pass", "fail"):
        raise ValueError(f"expect must be 'pass' or 'fail', not {expect!r}")
    if not callable(app_factory):
        raise TypeError(f"app_factory must be callable, not {type(app_factory).__name__}")
    requests = RequestSet.of(concurrent, setup, observe)
    parse_ignore(ignore)

    async def shape() -> None:  # argument checks need a scenario of the right shape
        pass

    check_arguments(shape, backends[0], strategy, max_schedules, seed, preemption_bound)

    def test(asynclocks_backend: Backend) -> None:
        __tracebackhide__ = True
        report = check_requests(
            app_factory,
            concurrent=concurrent,
            setup=setup,
            observe=observe,
            backend=asynclocks_backend,
            ignore=ignore,
            strategy=strategy,
            max_schedules=max_schedules,
            seed=seed,
            preemption_bound=preemption_bound,
        )
        if expect == "pass" and (report.failed or report.report.nondeterministic):
            raise InterleavingFailure(str(report))
        if expect == "fail" and not report.failed:
            raise InterleavingFailure(f"expected a failing schedule, found none: {report}")

    test.__doc__ = f"Concurrent {', '.join(str(r) for r in requests.concurrent)}"
    parametrized: Callable[..., None] = pytest.mark.parametrize("asynclocks_backend", backends)(
        test
    )
    return parametrized
