"""The step recorder both backends share: the trace's steps, the footprints, the search's sketch.

A backend tells its schedule's :class:`StepRecorder` when a task starts a step
(``begin(task, tid, coro, preempted)``) and when the step is over (``end(finished, failed,
text)``). Between the two the task runs: on asyncio a few lines later, on trio in the next pass
of trio's run loop. The recorder builds the trace's :class:`~._common.Step` with the events noted
since the previous step, walks the await chains the chooser's ``stepped`` needs (reusing the
chain a task stopped at as the one it resumes from) and appends the :data:`~._common.SketchStep`
every schedule keeps. What stays in each backend is what only it knows: which task runs, where
its coroutine is, how it ended and what happened around it (wake-ups, timers, the clock).

It runs on every step of every schedule: when neither a trace nor a footprint is wanted, a step
costs two calls, a tuple and the sketch's chain key.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._common import Chooser, Location, SketchStep, Step, TraceEvent, user_location
from ._footprint import EMPTY_CHAIN, Chain, chain, chain_key, step_footprint

#: What :class:`StepRecorder` holds between steps.
_NO_STEP: tuple[Any, int, Any, bool, Chain | None, Location | None] = (
    None,
    -1,
    None,
    False,
    None,
    None,
)


class StepRecorder:
    """Records the steps of each schedule: the trace (when asked), footprints, the sketch.

    One recorder serves a backend's whole exploration; :meth:`start` readies it for a schedule.
    :attr:`begin` and :attr:`end` are closures over the schedule's state rather than methods: a
    closure's variables cost less to reach than attributes, and made once (not per schedule)
    they stay the same function objects, which keeps their call sites specialised.

    Args:
        name: How a task is named in the trace, called when a traced step ends.
        ended: For :attr:`step`: how a task that finished ended, ``(failed, text)`` (``text``
            only when the second argument, tracing, is True); called only when the finished
            step is tracked or traced.
    """

    __slots__ = ("steps", "sketch", "events", "start", "begin", "end", "step")

    def __init__(
        self,
        name: Callable[[Any], str],
        ended: Callable[[Any, bool], tuple[bool, str]] = lambda task, trace: (True, ""),
    ) -> None:
        #: The current schedule's trace steps (only while tracing).
        self.steps: list[Step] = []
        #: Every step of the current schedule, cheaply: what a schedule that does not replay is
        #: told apart by.
        self.sketch: list[SketchStep] = []
        #: Events noted since the last step ended (None: not tracing); the next step takes them.
        self.events: list[TraceEvent] | None = None
        steps = self.steps
        append = self.sketch.append
        events = self.events
        track = False
        wants: Callable[[], bool] = _never
        stepped: Callable[[int, Any], None] = _ignore
        watch: Callable[[int, Chain, Chain], None] | None = None
        # Where each task stopped, for the tasks whose last step was tracked: where it resumes.
        chains: dict[Any, Chain] = {}
        # The step under way: task, id, coroutine, preempted, the chain it resumed from (None
        # when not tracked) and where it resumed (None when not tracing).
        current = _NO_STEP

        def start(chooser: Chooser, trace: bool) -> None:
            """A schedule begins, run under ``chooser``; ``trace``: build its trace's steps.

            The chooser's ``footprints`` says whether steps are tracked; its
            ``wants_footprint``/``stepped`` are called around each tracked step, and a
            ``watch_chains`` method (the race window's replay) is given every tracked step's
            chains.
            """
            nonlocal steps, append, events, track, wants, stepped, watch, chains, current
            steps = self.steps = []
            sketch: list[SketchStep] = []
            self.sketch = sketch
            append = sketch.append
            events = self.events = [] if trace else None
            track = chooser.footprints
            wants = chooser.wants_footprint
            stepped = chooser.stepped
            # Only the reported schedule's replay looks at the chains themselves (its window).
            watch = getattr(chooser, "watch_chains", None)
            chains = {}
            current = _NO_STEP

        def begin(task: Any, tid: int, coro: Any, preempted: bool) -> None:
            """Task ``tid`` (``task`` to the backend, running ``coro``) is about to take a step."""
            nonlocal current
            before: Chain | None = None
            if track:
                if wants():
                    # Where a task stopped is where it resumes: reuse that chain.
                    before = chains.pop(task, EMPTY_CHAIN) or chain(coro)
                else:
                    chains.pop(task, None)
            current = (
                task,
                tid,
                coro,
                preempted,
                before,
                None if events is None else user_location(coro),
            )

        def end(finished: bool, failed: bool, text: str) -> None:
            """The step under way is over.

            Args:
                finished: The task's coroutine returned or raised.
                failed: It finished by raising (or being cancelled): such a step counts as
                    touching everything (it may have cancelled its siblings). Read only when
                    ``finished``.
                text: How it finished, for the trace (``"returned 3"``); read only while
                    tracing.
            """
            nonlocal current
            task, tid, coro, preempted, before, resumed = current
            current = _NO_STEP
            if before is not None:
                after = EMPTY_CHAIN if finished else chain(coro)
                if after:
                    chains[task] = after
                stepped(tid, step_footprint(before, after, finished, finished and failed))
                if watch is not None:
                    watch(tid, before, after)
                # The chain just walked gives the sketch its key.
                append((tid, after.key, preempted))
            else:
                append((tid, () if finished else chain_key(coro), preempted))
            if events is not None:
                steps.append(
                    Step(
                        tid,
                        name(task),
                        resumed,
                        None if finished else user_location(coro),
                        finished,
                        preempted,
                        tuple(events),
                        text if finished else "",
                    )
                )
                events.clear()

        #: Readies the recorder for a schedule: ``start(chooser, trace)``.
        self.start: Callable[[Chooser, bool], None] = start
        #: Called when a task starts a step: ``begin(task, tid, coro, preempted)``.
        self.begin: Callable[[Any, int, Any, bool], None] = begin

        def step(
            task: Any,
            tid: int,
            coro: Any,
            preempted: bool,
            run: Callable[..., object],
            callback: object,
            args: tuple[Any, ...],
            done: Callable[[Any], bool],
        ) -> None:
            """A whole step in one call, where the backend's step is one call too (asyncio's
            ``context.run(callback, *args)``): what ``begin``, running it and ``end`` do, for
            one call per step instead of two. ``done(task)`` says after it whether the task
            finished (an unbound method: no bound method is made per step). Whatever the step
            raises is raised after the step is recorded.
            """
            before: Chain | None = None
            if track:
                if wants():
                    before = chains.pop(task, EMPTY_CHAIN) or chain(coro)
                else:
                    chains.pop(task, None)
            resumed = None if events is None else user_location(coro)
            try:
                run(callback, *args)
            finally:
                finished = done(task)
                # As end() does (repeated here: a call of it would cost what this one saves).
                if before is not None:
                    after = EMPTY_CHAIN if finished else chain(coro)
                    if after:
                        chains[task] = after
                    failed, text = ended(task, events is not None) if finished else (False, "")
                    stepped(tid, step_footprint(before, after, finished, failed))
                    if watch is not None:
                        watch(tid, before, after)
                    append((tid, after.key, preempted))
                else:
                    append((tid, () if finished else chain_key(coro), preempted))
                if events is not None:
                    if finished and before is None:
                        failed, text = ended(task, True)
                    steps.append(
                        Step(
                            tid,
                            name(task),
                            resumed,
                            None if finished else user_location(coro),
                            finished,
                            preempted,
                            tuple(events),
                            text if finished else "",
                        )
                    )
                    events.clear()

        #: Called when the step is over: ``end(finished, failed, text)``.
        self.end: Callable[[bool, bool, str], None] = end
        #: A step run in one call: ``step(task, tid, coro, preempted, run, callback, args,
        #: done)``.
        self.step: Callable[
            [
                Any,
                int,
                Any,
                bool,
                Callable[..., object],
                object,
                tuple[Any, ...],
                Callable[[Any], bool],
            ],
            None,
        ] = step


def _never() -> bool:
    return False


def _ignore(task: int, footprint: Any) -> None:
    pass
