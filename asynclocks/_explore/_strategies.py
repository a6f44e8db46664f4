"""Scheduling strategies: fifo, random, pct, dfs (bounded, with sleep sets) and replay.

Every strategy sees a decision as a list of runnable task ids in the stock event loop's FIFO order
and answers with an index; index 0 is what asyncio/trio would have done, anything else is a
*preemption*. A schedule is therefore the list of chosen indices, which is what a token stores.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

STRATEGIES = ("dfs", "fifo", "pct", "random")


class ScheduleChooser:
    """Base chooser: records whether it diverged from the schedule it was asked to follow."""

    diverged = False

    def pick(self, options: Sequence[int]) -> int:
        raise NotImplementedError


class FifoChooser(ScheduleChooser):
    """Always the stock event loop's own choice."""

    def pick(self, options: Sequence[int]) -> int:
        return 0


class ReplayChooser(ScheduleChooser):
    """Follows recorded decisions; past their end or when one no longer fits, takes index 0."""

    def __init__(self, decisions: Sequence[int]) -> None:
        self._decisions = decisions
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
        if self._at != len(self._decisions):
            self.diverged = True


class RandomChooser(ScheduleChooser):
    """Uniformly random among runnable tasks."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng

    def pick(self, options: Sequence[int]) -> int:
        return self._rng.randrange(len(options))


class PctChooser(ScheduleChooser):
    """Probabilistic concurrency testing (Burckhardt et al.): random priorities, d-1 change points.

    Each task gets a random priority when first seen; the highest-priority runnable task runs. At
    ``depth - 1`` random decision numbers the task that just ran drops below every other one. A bug
    of depth d among n tasks and k steps is found with probability at least 1/(n * k^(d-1)).
    """

    def __init__(self, rng: random.Random, depth: int, length: int) -> None:
        self._rng = rng
        self._priority: dict[int, float] = {}
        self._changes = {rng.randint(1, max(1, length)) for _ in range(depth - 1)}
        self._count = 0
        self._low = 0.0

    def pick(self, options: Sequence[int]) -> int:
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


class _Node:
    __slots__ = ("options", "chosen", "tried", "preemptions", "sleep")

    def __init__(self, options: tuple[int, ...], preemptions: int) -> None:
        self.options = options
        self.chosen = 0
        self.tried: set[int] = set()
        self.preemptions = preemptions
        # Task ids whose next step was already explored from this node (the sleep set).
        self.sleep: set[int] = set()


class DfsChooser(ScheduleChooser):
    """Follows the DFS path prefix, then extends it with FIFO choices, recording new nodes."""

    def __init__(self, search: DepthFirst) -> None:
        self._search = search
        self._depth = 0

    def pick(self, options: Sequence[int]) -> int:
        search = self._search
        path = search.path
        depth = self._depth
        self._depth += 1
        if depth < len(path):
            node = path[depth]
            if node.options != tuple(options):
                self.diverged = True
                return 0
            return node.chosen
        preemptions = path[-1].preemptions + (path[-1].chosen != 0) if path else 0
        node = _Node(tuple(options), preemptions)
        node.tried.add(0)
        path.append(node)
        return 0


class DepthFirst:
    """Systematic depth-first search of the schedule tree, bounded by preemptions.

    The tree is explored statelessly: each schedule re-runs the scenario from the start, following
    the path to the deepest node that still has an untried child. With a preemption bound, a node
    already at the bound only allows index 0 (the stock loop's choice).
    """

    def __init__(self, preemption_bound: int | None) -> None:
        self.bound = preemption_bound
        self.path: list[_Node] = []
        self.started = False

    def next_chooser(self) -> DfsChooser | None:
        if not self.started:
            self.started = True
            return DfsChooser(self)
        path = self.path
        bound = self.bound
        while path:
            node = path[-1]
            if bound is None or node.preemptions < bound:
                for index in range(1, len(node.options)):
                    if index not in node.tried:
                        node.tried.add(index)
                        node.chosen = index
                        return DfsChooser(self)
            path.pop()
        return None
