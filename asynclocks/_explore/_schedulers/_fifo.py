"""fifo: only the stock event loop's own order, one schedule."""

from __future__ import annotations

from collections.abc import Sequence

from ._base import BuiltinScheduler, ScheduleChooser


class FifoChooser(ScheduleChooser):
    """Always the stock event loop's own choice."""

    def pick(self, options: Sequence[int]) -> int:
        return 0


class FifoScheduler(BuiltinScheduler):
    """One schedule: what asyncio or trio would have done."""

    def __init__(self, max_steps: int) -> None:
        super().__init__()
        self._max_steps = max_steps
        self._ran = False

    def _next_chooser(self) -> ScheduleChooser | None:
        if self._ran:
            return None
        self._ran = True
        chooser = FifoChooser()
        chooser.max_steps = self._max_steps
        return chooser
