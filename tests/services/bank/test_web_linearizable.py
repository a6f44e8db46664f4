"""The bank's HTTP API checked for linearizability with no hand-written invariant.

Request sets are generated from the bank's own ``/openapi.json`` (asynclocks.web); with lock mode
``none`` some set is not linearizable (a lost update), with ``account`` and ``global`` every set
passes every schedule within the default bound of 2 preemptions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import asynclocks.web as web
from services.bank import BankConfig
from services.bank.http import create_app

SEED = 1
SETS = 12
#: Each locked set is proved within 2 preemptions (a few hundred schedules of a fresh app each).
LOCKED_SETS = 4


def bank(mode: str) -> Callable[[], Any]:
    return lambda: create_app(BankConfig(lock_mode=mode, store="memory", io_delay=0.0))


def test_lock_mode_none_is_not_linearizable() -> None:
    summary = web.check_openapi(bank("none"), sets=SETS, seed=SEED, stop_on_failure=True)
    assert summary.failures, summary.summary
    failure = summary.failures[0]
    assert isinstance(failure.error, web.NotLinearizable)
    assert failure.verdict.startswith("NOT LINEARIZABLE on asyncio")
    # The outcome loses money: the audit's drift is not 0 where every sequential order keeps it 0.
    assert failure.observed is not None
    audits = [
        response.body
        for request, response in zip(
            [*failure.requests.concurrent, *failure.requests.observe], failure.observed, strict=True
        )
        if request.path == "/audit"
    ]
    assert audits
    assert audits[0]["drift"] != 0
    assert all(
        r.body["drift"] == 0
        for allowed in failure.allowed
        for q, r in zip(
            [*failure.requests.concurrent, *failure.requests.observe], allowed.outcome, strict=True
        )
        if q.path == "/audit"
    )
    assert failure.report.token is not None


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("mode", ["account", "global"])
def test_locked_modes_are_linearizable_on_every_generated_set(mode: str) -> None:
    summary = web.check_openapi(bank(mode), sets=LOCKED_SETS, seed=SEED)
    assert summary.failures == [], str(summary.failures[0])
    assert len(summary.reports) == LOCKED_SETS
    assert all(report.report.exhaustive for report in summary.reports)
    assert all(report.report.preemption_bound == 2 for report in summary.reports)
