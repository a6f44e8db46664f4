"""The public :class:`Scheduler` protocol, the backends' per-schedule chooser, and the adapter
that lets a user's scheduler drive the search.

The backends see one *chooser* per schedule: asked at each decision with the runnable task ids in
the stock event loop's order, it answers an index (0 is what asyncio/trio would have done, anything
else is a preemption), so a schedule is the list of chosen indices a token stores. A *scheduler*
lives across the whole search: :meth:`Scheduler.new_execution` starts each schedule (or ends the
search) and :meth:`Scheduler.next_task` picks a task.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from .._common import MAX_STEPS

if TYPE_CHECKING:
    from .._common import Outcome
    from .._footprint import Footprint


@runtime_checkable
class Scheduler(Protocol):
    """Decides the order tasks run in, one schedule (execution) after another.

    Pass an instance as ``strategy`` to :func:`asynclocks.explore`. The search calls
    :meth:`new_execution` before each schedule, then :meth:`next_task` at every point where more
    than one task could run, until the scenario ends; then the next schedule, until the budget
    (``max_schedules``, ``time_limit``) is spent, a schedule fails, or :meth:`new_execution`
    returns False. Its choices are recorded, so a failing schedule it found shrinks, replays and
    gets a token like any other.
    """

    def new_execution(self) -> bool:
        """Prepare the next schedule; False ends the search (nothing more to try)."""
        ...

    def next_task(self, runnable: Sequence[int]) -> int:
        """Pick the task that runs next.

        Args:
            runnable: Ids of the tasks that can run (the scenario's task is 0, then in order of
                creation), the stock event loop's own choice first. Always two or more.

        Returns:
            One of ``runnable``.
        """
        ...


class ScheduleChooser:
    """What a backend calls during one schedule: records whether it diverged from a schedule it
    was asked to follow."""

    diverged = False
    #: Whether the backend must compute each step's footprint and call ``stepped``.
    footprints = False
    #: Steps this schedule may take before it is stopped as a busy loop.
    max_steps = MAX_STEPS

    def wants_footprint(self) -> bool:
        """Whether the backend should compute the coming step's footprint."""
        return False

    def stepped(self, task: int, footprint: Footprint) -> None:
        """Told after a step what it touched (only when ``footprints`` is set)."""

    def pick(self, options: Sequence[int]) -> int:
        """The index into ``options`` (task ids, the stock loop's choice first) to run."""
        raise NotImplementedError


class BuiltinScheduler:
    """Base of the built-in schedulers: each schedule is run by a chooser the backends call
    directly (no per-decision indirection), and the search tells it each outcome."""

    #: Set when :meth:`new_execution` returned False because every schedule was explored.
    exhaustive = False
    #: Whether schedules equivalent to explored ones are pruned (dfs's DPOR and sleep sets).
    reduced = False
    #: Sentences for the report about what the scheduler could not do.
    notes: tuple[str, ...] = ()

    def __init__(self) -> None:
        self._chooser: ScheduleChooser = ScheduleChooser()

    def new_execution(self) -> bool:
        """Prepare the next schedule's chooser; False ends the search."""
        chooser = self._next_chooser()
        if chooser is None:
            return False
        self._chooser = chooser
        return True

    def _next_chooser(self) -> ScheduleChooser | None:
        raise NotImplementedError

    def chooser(self) -> ScheduleChooser:
        """The chooser of the schedule :meth:`new_execution` prepared."""
        return self._chooser

    def next_task(self, runnable: Sequence[int]) -> int:
        """The :class:`Scheduler` view of the current chooser."""
        return runnable[self._chooser.pick(runnable)]

    def finished(self, outcome: Outcome) -> None:
        """Told each schedule's outcome (pct learns how long schedules are)."""


class CustomChooser(ScheduleChooser):
    """Runs one schedule for a user's :class:`Scheduler`; a wrong answer is kept, not raised inside
    the event loop, and raised by the search once the schedule is over."""

    def __init__(self, scheduler: Scheduler, max_steps: int) -> None:
        self._scheduler = scheduler
        self.max_steps = max_steps
        self.error: BaseException | None = None

    def pick(self, options: Sequence[int]) -> int:
        if self.error is not None:
            return 0
        # Only tasks are offered: ids below 0 are the search's own choices (injected faults),
        # which a user's scheduler does not make.
        runnable = tuple(option for option in options if option >= 0)
        if len(runnable) < 2:
            return list(options).index(runnable[0]) if runnable else 0
        try:
            task = self._scheduler.next_task(runnable)
        except Exception as error:  # noqa: BLE001 - re-raised by the search, out of the loop
            self.error = error
            return 0
        name = type(self._scheduler).__name__
        if not isinstance(task, int) or isinstance(task, bool):
            self.error = TypeError(
                f"{name}.next_task() must return a task id (an int), not {type(task).__name__}"
            )
            return 0
        if task in runnable:
            return list(options).index(task)
        self.error = ValueError(
            f"{name}.next_task({list(runnable)}) returned {task}, which is not one of the "
            "runnable task ids it was given"
        )
        return 0
