"""fifo: only the stock event loop's own order, one schedule.

On asyncio that is index 0 at every decision (its ready queue is FIFO). trio runs its runnable
tasks in batches, each batch in the order tasks became runnable or in reverse, at random
(``trio.run``'s ``_r.random() < 0.5``); :class:`TrioOrderChooser` does the same with a seeded
generator. Its decisions are recorded as indices like any others, so a token replays without the
seed.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from ._base import BuiltinScheduler, ScheduleChooser


class FifoChooser(ScheduleChooser):
    """Always the stock event loop's own choice (asyncio's)."""

    def pick(self, options: Sequence[int]) -> int:
        return 0


class TrioOrderChooser(ScheduleChooser):
    """trio's own order: each batch forward or reversed, by a coin flip per batch.

    The backend offers the tasks of trio's current batch still to run, in the order they became
    runnable; within a batch the options shrink by the task just run, so a decision whose options
    are not what was left of the last one starts a new batch.
    """

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._rest: tuple[int, ...] = ()
        self._reversed = False

    def pick(self, options: Sequence[int]) -> int:
        # Ids below 0 are the search's own choices (injected faults): never trio's.
        offered = tuple(option for option in options if option >= 0)
        if not offered:
            return 0
        if offered != self._rest:
            # trio pops from the end of its batch list, reversed half of the time: forward order
            # when reversed, last-woken first when not.
            self._reversed = self._rng.random() < 0.5
        task = offered[0] if self._reversed else offered[-1]
        self._rest = tuple(option for option in offered if option != task)
        return list(options).index(task)


class FifoScheduler(BuiltinScheduler):
    """One schedule: what asyncio would have done, or (``trio_seed`` given) what one
    ``trio.run`` seeded so would have done."""

    def __init__(self, max_steps: int, trio_seed: int | None = None) -> None:
        super().__init__()
        self._max_steps = max_steps
        self._trio_seed = trio_seed
        self._ran = False

    def _next_chooser(self) -> ScheduleChooser | None:
        if self._ran:
            return None
        self._ran = True
        chooser: ScheduleChooser
        if self._trio_seed is None:
            chooser = FifoChooser()
        else:
            chooser = TrioOrderChooser(random.Random(self._trio_seed))
        chooser.max_steps = self._max_steps
        return chooser
