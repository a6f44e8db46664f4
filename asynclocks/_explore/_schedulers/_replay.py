"""replay: follow recorded decisions (tokens, shrinking, the nondeterminism checks)."""

from __future__ import annotations

from collections.abc import Sequence

from .._common import MAX_STEPS
from ._base import ScheduleChooser


class ReplayChooser(ScheduleChooser):
    """Follows recorded decisions; past their end or when one no longer fits, takes index 0."""

    def __init__(self, decisions: Sequence[int], max_steps: int = MAX_STEPS) -> None:
        self._decisions = decisions
        self.max_steps = max_steps
        self._at = 0

    def pick(self, options: Sequence[int]) -> int:
        at = self._at
        self._at += 1
        if at >= len(self._decisions):
            self.diverged = True
            return 0
        choice = self._decisions[at]
        if choice >= len(options):
            self.diverged = True
            return 0
        return choice

    def finish(self) -> None:
        """Marks the replay diverged when the schedule ended before its decisions did."""
        if self._at != len(self._decisions):
            self.diverged = True
