"""The bank's race found through its HTTP API by the explorer, and its locks proven.

Two concurrent withdrawals of 60 from an account holding 100, sent with aiohttp's client to the
real ``create_app`` (memory store, io-delay 0) over the explorer's simulated loopback network.
Lock mode ``none`` lets both read the balance before either writes it (an overdraft the API's
own balance and audit show); ``account`` and ``global`` are proven: every schedule with at most
two preemptions passes (the search is exhaustive within that bound; an unbounded search of two
HTTP exchanges does not finish, because the reduction treats aiohttp's code as touching
everything).
"""

from __future__ import annotations

import pytest

from asynclocks import explore, replay
from services.bank.tools.race_scenarios import OPENING, WITHDRAWAL, scenario

BOUND = 2


def test_lock_mode_none_overdraws_through_http() -> None:
    report = explore(scenario("none"), preemption_bound=BOUND)
    assert report.failed, str(report)
    assert report.schedules <= 10
    assert isinstance(report.error, AssertionError)
    message = str(report.error)
    assert f"both withdrawals of {WITHDRAWAL} from {OPENING} were accepted" in message
    assert f"the balance reads {OPENING - WITHDRAWAL}" in message  # a lost update, too
    # The trace shows both handlers waiting in the store's window between read and write, and the
    # race window above it names that read and that write.
    assert report.trace.count("services/bank/stores/memory.py") >= 2
    assert "read `self._balances[account_id]` at memory.py:" in report.window
    assert "wrote `self._balances[account_id]` at memory.py:" in report.window
    assert "(withdraw)" in report.trace
    assert report.token is not None
    with pytest.raises(AssertionError, match="both withdrawals"):
        replay(scenario("none"), report.token)


@pytest.mark.parametrize("mode", ["account", "global"])
def test_locked_modes_never_overdraw_through_http(mode: str) -> None:
    report = explore(scenario(mode), preemption_bound=BOUND)
    assert not report.failed, str(report)
    assert report.exhaustive, report.coverage
    assert report.schedules > 100  # the two requests really interleave
