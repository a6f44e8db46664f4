"""random: a uniformly random runnable task at every decision."""

from __future__ import annotations

import random
from collections.abc import Sequence

from ._base import BuiltinScheduler, ScheduleChooser


class RandomChooser(ScheduleChooser):
    """Uniformly random among runnable tasks."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng

    def pick(self, options: Sequence[int]) -> int:
        return self._rng.randrange(len(options))


class RandomScheduler(BuiltinScheduler):
    """Every schedule seeded from one generator seeded by ``seed``: the same seed, the same
    schedules."""

    def __init__(self, seed: int, max_steps: int) -> None:
        super().__init__()
        self._rng = random.Random(seed)
        self._max_steps = max_steps

    def _next_chooser(self) -> ScheduleChooser | None:
        chooser = RandomChooser(random.Random(self._rng.getrandbits(64)))
        chooser.max_steps = self._max_steps
        return chooser
