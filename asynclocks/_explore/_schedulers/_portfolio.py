"""portfolio: round-robin over several schedulers (Shuttle's ``PortfolioRunner``, in one
process), by default random and pct, so a bug one of them is blind to is still found."""

from __future__ import annotations

from collections.abc import Sequence

from .._common import Outcome
from ._base import BuiltinScheduler, ScheduleChooser


class PortfolioScheduler(BuiltinScheduler):
    """Schedule i is run by member ``i % len(members)``; ends when every member has ended."""

    def __init__(self, members: Sequence[BuiltinScheduler]) -> None:
        super().__init__()
        if not members:
            raise ValueError("a portfolio needs at least one scheduler")
        self._members = list(members)
        self._turn = 0
        self._current = self._members[0]

    def _next_chooser(self) -> ScheduleChooser | None:
        while self._members:
            member = self._members[self._turn % len(self._members)]
            if member.new_execution():
                self._turn += 1
                self._current = member
                return member.chooser()
            self._members.remove(member)
        return None

    def finished(self, outcome: Outcome) -> None:
        self._current.finished(outcome)
