"""pct: probabilistic concurrency testing (Burckhardt et al., ASPLOS 2010)."""

from __future__ import annotations

import random
from collections.abc import Sequence

from .._common import Outcome
from ._base import BuiltinScheduler, ScheduleChooser


class PctChooser(ScheduleChooser):
    """Random priorities, ``depth - 1`` change points.

    Each task gets a random priority when first seen; the highest-priority runnable task runs. At
    ``depth - 1`` random decision numbers the task about to run drops below every other one. A bug
    of depth d among n tasks and k steps is found with probability at least 1/(n * k^(d-1)).
    """

    def __init__(self, rng: random.Random, depth: int, length: int) -> None:
        self._rng = rng
        self._priority: dict[int, float] = {}
        self._changes = {rng.randint(1, max(1, length)) for _ in range(depth - 1)}
        self._count = 0
        self._low = 0.0
        self._length = max(1, length)

    def pick(self, options: Sequence[int]) -> int:
        if options[-1] < 0:
            # Faults on offer (ids < 0, after the tasks): one lands at a uniformly random
            # decision; otherwise the tasks compete by priority (or time passes: WAIT first).
            faults = [i for i, option in enumerate(options) if option < 0 and i]
            if faults and self._rng.random() < 1 / self._length:
                return self._rng.choice(faults)
            if options[0] < 0:
                return 0
            options = [option for option in options if option >= 0]
        self._count += 1
        priority = self._priority
        for task in options:
            if task not in priority:
                priority[task] = 1.0 + self._rng.random()
        best = max(range(len(options)), key=lambda i: priority[options[i]])
        if self._count in self._changes:
            self._low -= 1.0
            priority[options[best]] = self._low
            best = max(range(len(options)), key=lambda i: priority[options[i]])
        return best


class PctScheduler(BuiltinScheduler):
    """PCT schedules of bug depth ``depth``; change points spread over the longest schedule seen
    so far (in decisions; at least 8 before the first one ran)."""

    def __init__(self, seed: int, depth: int, max_steps: int) -> None:
        super().__init__()
        self._rng = random.Random(seed)
        self._depth = depth
        self._max_steps = max_steps
        self._longest = 8

    def _next_chooser(self) -> ScheduleChooser | None:
        chooser = PctChooser(random.Random(self._rng.getrandbits(64)), self._depth, self._longest)
        chooser.max_steps = self._max_steps
        return chooser

    def finished(self, outcome: Outcome) -> None:
        self._longest = max(self._longest, len(outcome.decisions))
