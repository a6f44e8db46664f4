"""An exception that is not the scenario's failure (KeyboardInterrupt, SystemExit, a test
runner's own outcome raised into the run) stops the search and propagates, as asyncio.run
re-raises KeyboardInterrupt: it is never reported, shrunk or replayed as a found failure."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio
import pytest

import asynclocks
from asynclocks import Backend
from asynclocks._explore._unsupported import interruption


class Stopped(BaseException):
    """Stands for pytest's ``Failed`` from a per-test timeout: a BaseException of no library."""


def interrupted_by(error: type[BaseException]) -> Callable[[], Awaitable[None]]:
    runs = [0]

    async def scenario() -> None:
        async def worker() -> None:
            await anyio.lowlevel.checkpoint()
            runs[0] += 1
            if runs[0] == 3:  # the second schedule, not the first: the search is under way
                raise error("from outside the scenario")

        async with anyio.create_task_group() as tg:
            tg.start_soon(worker)
            tg.start_soon(worker)

    return scenario


@pytest.mark.parametrize("error", [KeyboardInterrupt, SystemExit, Stopped])
def test_an_interruption_stops_the_search_and_propagates(
    backend: Backend, error: type[BaseException]
) -> None:
    with pytest.raises(error, match="from outside the scenario"):
        asynclocks.explore(interrupted_by(error), backend=backend)


def test_a_failure_of_the_scenario_is_still_a_finding(backend: Backend) -> None:
    report = asynclocks.explore(interrupted_by(ValueError), backend=backend)
    assert report.failed
    assert isinstance(report.error, ValueError)


def test_cancellations_and_groups_of_failures_are_not_interruptions() -> None:
    import asyncio

    import trio

    assert interruption(asyncio.CancelledError()) is None
    assert interruption(BaseExceptionGroup("g", [ValueError(), asyncio.CancelledError()])) is None
    assert interruption(GeneratorExit()) is None
    assert interruption(None) is None
    stop = KeyboardInterrupt()
    assert interruption(BaseExceptionGroup("g", [ValueError(), stop])) is stop
    # trio.Cancelled cannot be built by hand; its class is what the rule names.
    assert issubclass(trio.Cancelled, BaseException)
    assert not issubclass(trio.Cancelled, Exception)
