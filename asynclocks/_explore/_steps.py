"""The step recorder both backends share: the trace's steps, the footprints, the search's sketch.

A backend tells a :class:`StepRecorder` when a task starts a step (:meth:`StepRecorder.begin`:
the task, its id, its coroutine, whether the choice was a preemption) and when the step is over
(:meth:`StepRecorder.end`: whether the task finished, whether it failed, how it ended). Between
the two the task runs; on asyncio that is a few lines later, on trio the next pass of trio's run
loop. The recorder builds the trace's :class:`~._common.Step` with the events noted since the
previous step, walks the await chains the chooser's ``stepped`` needs (reusing the chain a task
stopped at as the one it resumes from) and appends the :data:`~._common.SketchStep` every
schedule keeps. What stays in each backend is what only it knows: which task runs, where its
coroutine is, how it ended and what happened around it (wake-ups, timers, the clock).

It runs on every step of every schedule, so it is kept lean: slots, the chooser's methods bound
once per schedule, and nothing but the sketch when neither a trace nor footprints are wanted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._common import Chooser, Location, SketchStep, Step, TraceEvent, user_location
from ._footprint import EMPTY_CHAIN, Chain, chain, chain_key, step_footprint


class StepRecorder:
    """Records the steps of one schedule: the trace (when asked), footprints, the sketch.

    Args:
        chooser: The schedule's chooser: its ``footprints`` says whether steps are tracked,
            ``wants_footprint``/``stepped`` are called around each tracked step, and a
            ``watch_chains`` method (the race window's replay) is given every tracked step's
            chains.
        trace: Whether to build the trace's steps; the backend then adds its events to
            :attr:`events` before or during a step.
        name: How a task is named in the trace, called when a traced step ends.
    """

    __slots__ = (
        "steps",
        "sketch",
        "events",
        "task",
        "_track",
        "_wants",
        "_stepped",
        "_watch",
        "_chains",
        "_name",
        "_tid",
        "_coro",
        "_preempted",
        "_tracking",
        "_before",
        "_resumed",
    )

    def __init__(self, chooser: Chooser, trace: bool, name: Callable[[Any], str]) -> None:
        #: The trace's steps (only while tracing).
        self.steps: list[Step] = []
        #: Every step, cheaply: what a schedule that does not replay is told apart by.
        self.sketch: list[SketchStep] = []
        #: Events noted since the last step ended (None: not tracing); the next step takes them.
        self.events: list[TraceEvent] | None = [] if trace else None
        #: The task of the step under way (None between steps).
        self.task: Any = None
        self._track = chooser.footprints
        self._wants = chooser.wants_footprint
        self._stepped = chooser.stepped
        # Only the reported schedule's replay looks at the chains themselves (the race window).
        self._watch: Callable[[int, Chain, Chain], None] | None = getattr(
            chooser, "watch_chains", None
        )
        # Where each task stopped, for the tasks whose last step was tracked: where it resumes.
        self._chains: dict[Any, Chain] = {}
        self._name = name
        self._tid = 0
        self._coro: Any = None
        self._preempted = False
        self._tracking = False
        self._before: Chain = EMPTY_CHAIN
        self._resumed: Location | None = None

    def begin(self, task: Any, tid: int, coro: Any, preempted: bool) -> None:
        """Task ``tid`` (``task`` to the backend, running ``coro``) is about to take a step."""
        self.task = task
        self._tid = tid
        self._coro = coro
        self._preempted = preempted
        if self._track:
            if self._wants():
                self._tracking = True
                # Where a task stopped is where it resumes: reuse that chain.
                self._before = self._chains.pop(task, EMPTY_CHAIN) or chain(coro)
            else:
                self._tracking = False
                self._chains.pop(task, None)
        if self.events is not None:
            self._resumed = user_location(coro)

    def end(self, finished: bool, failed: bool, end: str) -> None:
        """The step under way is over.

        Args:
            finished: The task's coroutine returned or raised.
            failed: It finished by raising (or being cancelled): such a step counts as touching
                everything (it may have cancelled its siblings). Read only when ``finished``.
            end: How it finished, for the trace (``"returned 3"``); read only while tracing.
        """
        task = self.task
        self.task = None
        tid = self._tid
        coro = self._coro
        self._coro = None
        if self._tracking:
            self._tracking = False
            before = self._before
            after = EMPTY_CHAIN if finished else chain(coro)
            if after:
                self._chains[task] = after
            self._stepped(tid, step_footprint(before, after, finished, finished and failed))
            if self._watch is not None:
                self._watch(tid, before, after)
            self._before = EMPTY_CHAIN
            # The chain just walked gives the sketch its key.
            self.sketch.append((tid, after.key, self._preempted))
        else:
            self.sketch.append((tid, () if finished else chain_key(coro), self._preempted))
        events = self.events
        if events is not None:
            self.steps.append(
                Step(
                    tid,
                    self._name(task),
                    self._resumed,
                    None if finished else user_location(coro),
                    finished,
                    self._preempted,
                    tuple(events),
                    end if finished else "",
                )
            )
            events.clear()
