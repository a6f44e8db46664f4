"""Controlled trio scheduling: one runnable task per pass of trio's run loop, chosen by a strategy.

trio's run loop takes its batch of runnable tasks with ``list(runner.runq)`` and then calls
``runner.runq.clear()``. The explorer replaces the run queue with :class:`ControlledRunQueue`, whose
iteration hands out exactly one scenario task (the strategy's pick) per pass, so every step is a
scheduling decision. The choice is among the tasks of trio's current *batch*: trio runs every task
that was runnable when a batch began before any task woken meanwhile, so a task woken (or
rescheduled at a checkpoint) waits for the next batch, and the explorer makes only schedules
``trio.run`` can make. Within a batch any order is explored (trio shuffles batches under
Hypothesis; otherwise it runs each forward or reversed, which is what the ``fifo`` baseline does).
Virtual time comes from ``trio.testing.MockClock(autojump_threshold=0)``. This
relies on trio internals, so the trio version is checked against the tested range first.

One ``trio.run`` serves a whole exploration: a driver task runs each schedule in a fresh nursery.
"""

from __future__ import annotations

import inspect
import math
from collections import deque
from collections.abc import Callable, Generator, Iterator, Sequence
from typing import Any

from . import _events, _holders
from ._common import (
    MAX_STEPS,
    Chooser,
    Outcome,
    Scenario,
    StepLimitError,
    TraceEvent,
    UnsupportedScenario,
    Waiting,
    describe_end,
    describe_object,
    format_location,
    task_label,
    user_location,
    waited_object,
)
from ._faults import NO_FAULTS, OWN_SCOPE, Fault, FaultLog, Faults, fault_option
from ._footprint import TRANSPARENT_CODE
from ._steps import StepRecorder
from ._waits import describe_wait

#: trio versions the explorer is tested with; others are refused (their internals may differ).
TESTED_TRIO = ((0, 27), (0, 36))  # lower bound inclusive, upper bound exclusive
TESTED_TRIO_TEXT = ">=0.27,<0.36"


def unwrap_group(error: BaseException) -> BaseException:
    """The single leaf of nested one-exception groups (a nursery wraps a child's error so)."""
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return error


def check_trio_version(version: str | None = None) -> None:
    """Refuse a trio version outside the tested range, with a message saying what to install.

    Raises:
        UnsupportedScenario: trio is missing or its version is not one the explorer was tested
            with.
    """
    if version is None:
        try:
            import trio
        except ImportError:
            raise UnsupportedScenario(
                "backend='trio' is not supported here: trio is not installed. Install it "
                "(pip install 'asynclocks[trio]'), or explore with backend='asyncio'"
            ) from None
        version = trio.__version__
    parts: list[int] = []
    for piece in version.split(".")[:2]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    key = tuple(parts)
    low, high = TESTED_TRIO
    if not low <= key < high:
        raise UnsupportedScenario(
            f"backend='trio' is not supported with trio {version}: the explorer drives trio "
            f"through its internals and is tested with trio {TESTED_TRIO_TEXT}; this is trio "
            f"{version}, which it refuses rather than risk wrong "
            f"answers. Install a tested version: pip install 'trio{TESTED_TRIO_TEXT}'"
        )


_GROUPS = {"Nursery", "NurseryManager", "TaskGroup"}
SPAWN_SCOPE = "the cancel scope of the nursery it was started in"


def _own_scope(task: Any, spawn: Any) -> Any:
    """The innermost cancel scope ``task`` opened itself that code outside it could cancel.

    A shielded scope is skipped (cancelling it would break the shield from inside) and so is one
    with a deadline (only the deadline cancels it: a timeout fault).
    """
    status = task._cancel_status
    while status is not None:
        scope = status._scope
        if scope is spawn:
            return None
        if not scope.shield and scope.deadline == math.inf:
            return scope
        status = status._parent
    return None


_NO_FAULTS: tuple[Fault, ...] = ()
#: The log of every schedule explored without faults: its budget is 0, nothing is ever injected.
_NO_LOG = FaultLog(NO_FAULTS)


class ControlledRunQueue(dict[Any, None]):
    """Stands in for trio's run queue (a deque) and decides which task runs next.

    A dict of every runnable task (system and scenario ones; the values are unused) so that the
    ``len()`` and truth tests trio's run loop makes three times per pass are the dict's own C
    slots rather than Python methods; which task runs is decided from ``_system`` and
    ``_ready``, which :meth:`append` and :meth:`clear` keep alongside.
    """

    def __init__(self, runner: Any, driver: Any, initial: Any) -> None:
        super().__init__(dict.fromkeys(initial))
        self._runner = runner
        self._driver = driver
        self._system: deque[Any] = deque(initial)
        # Value: (pass number, task id). Tasks woken in the same pass of the run loop are ordered
        # by id, because trio wakes simultaneous deadlines in an order that depends on id().
        self._ready: dict[Any, tuple[int, int]] = {}
        # trio's batch: the scenario tasks runnable when the batch began and not yet run, in the
        # order they became runnable. trio runs a whole batch before any task woken meanwhile
        # (those wait for the next one). A task leaves the ready set only by running.
        self._batch: list[Any] = []
        self._pass = 0
        self._selected: list[Any] = []
        self.ids: dict[Any, int] = {}
        self.names: dict[int, str] = {}
        self.active = False
        self.cleaning = False
        self.expect_root = False
        self.root_name = "scenario"
        self.chooser: Chooser | None = None
        self.decisions: list[int] = []
        self.widths: list[int] = []
        self.trace = False
        self.count = 0
        self.max_steps = MAX_STEPS
        self.stopped: str | None = None  # "deadlock" or "limit" when the driver must step in
        self.wakeup: Any = None
        #: The mock clock's own jump to the next deadline, and whether it waits for this pass's
        #: idle decision (see :meth:`autojump`).
        self._clock_jump: Callable[[], None] = lambda: None
        self._jump_deferred = False
        self.track = False
        #: Whether each task that ended while footprints were tracked raised (from trio's
        #: ``task_exited``): a task that returned touched only what its last step did.
        self._failed: dict[Any, bool] = {}
        #: The schedule's steps: the one under way ends at the next pass of trio's run loop.
        self.recorder = StepRecorder(self._task_name)
        #: The task whose step is under way (it ends at the next pass), None between steps.
        self._stepping: Any = None
        self._root_code: Any = None
        self.faults = NO_FAULTS
        self.log = _NO_LOG
        #: The cancel scope of the explorer's own nursery: never cancelled by a fault.
        self.outer_scope: Any = None
        # One trio.run serves every schedule: times are shown from this schedule's start.
        self._time_origin = 0.0
        # While tracing: the clock last seen, how tasks ended (the events are the recorder's).
        self._seen_time = 0.0
        self.ends: dict[Any, str] = {}

    # -- the deque interface trio's run loop uses ---------------------------------------------

    def append(self, task: Any) -> None:
        self[task] = None
        ids = self.ids
        tid = ids.get(task)
        if tid is not None:
            self._ready[task] = (self._pass, tid)
            return
        if self.active:
            if self.expect_root:
                self.expect_root = False
                self._ready[task] = (self._pass, self._register(task, self.root_name))
                return
            nursery = task.parent_nursery
            parent = nursery.parent_task if nursery is not None else None
            if parent in ids:
                tid = self._register(task, task_label(task.name or "task"))
                self._ready[task] = (self._pass, tid)
                return
        self._system.append(task)

    def _register(self, task: Any, name: str) -> int:
        tid = len(self.ids)
        self.ids[task] = tid
        self.names[tid] = f"#{tid} {name}"
        return tid

    def __iter__(self) -> Iterator[Any]:
        self._pass += 1
        task = self._stepping
        if task is not None:
            # The task that ran in the last pass stopped (``_end_step`` inlined: it runs at
            # every step).
            self._stepping = None
            if task.coro.cr_frame is not None:
                self.recorder.end(False, False, "")
            else:
                # trio does not keep a finished task's outcome on the task; ``task_exited`` saw
                # it. One whose end was not seen counts as failed (touching everything).
                failed = self._failed.pop(task, True) if self.track else True
                self.recorder.end(True, failed, self.ends.get(task, "") if self.trace else "")
        if self._system:
            self._selected = list(self._system)
        elif self._ready:
            ready = self._ready
            if self.cleaning:
                # Nothing is recorded while cleaning up.
                self._selected = [next(iter(ready))]
                return iter(self._selected)
            # The decision, in the pass itself: it runs at every step (no call of its own).
            batch = self._batch
            if not batch:
                batch.extend(sorted(ready, key=ready.__getitem__) if len(ready) > 1 else ready)
            preempted = False
            chooser = self.chooser
            offered = self._offered_faults() if self.log.left else _NO_FAULTS
            if (len(batch) > 1 or offered) and chooser is not None:
                # map, not a comprehension: on 3.11 that is a function call of its own.
                options = list(map(self.ids.__getitem__, batch))
                if offered:
                    options += [fault_option(i) for i in range(len(offered))]
                index = chooser.pick(options)
                self.decisions.append(index)
                self.widths.append(len(options))
                if index >= len(batch):
                    # A fault instead of a step: its effects (cancellations delivered, a
                    # deadline expired) show in the next pass of the run loop.
                    injected = self.log.inject(offered[index - len(batch)], self.count)
                    if self.trace:
                        self._note(*injected)
                    self._selected = []
                    return iter(self._selected)
                task = batch.pop(index)
                preempted = index != 0
            else:
                task = batch.pop(0)
            self._stepping = task
            self.recorder.begin(task, self.ids[task], task.coro, preempted)
            self.count += 1
            if self.count > self.max_steps and self.stopped is None:
                self._stop("limit")
            if self.trace:
                self._trace_resume(task)
            self._selected = [task]
        else:
            self._selected = []
            if self.log.left and self.active and not self.cleaning and self._idle_fault():
                # The fault happened before time passed: a deadline it moved to now expires in
                # the next pass, and the clock jumps only if everything is idle again then.
                self._jump_deferred = False
                return iter(self._selected)
            if self._jump_deferred:
                self._jump_deferred = False
                self._clock_jump()
            if self.active and self.stopped is None and self._deadlocked():
                self._stop("deadlock")
                self._selected = list(self._system)
        return iter(self._selected)

    def clear(self) -> None:
        for task in self._selected:
            del self[task]
            if task in self._ready:
                del self._ready[task]
            else:
                self._system.remove(task)
        self._selected = []

    # -- decisions ------------------------------------------------------------------------------

    def autojump(self) -> None:
        """Stands in for the mock clock's ``_autojump``, which trio calls when every task waits.

        trio jumps the clock to the next deadline *before* it takes the pass's batch. When a
        fault may be injected at this idle point, the jump waits for that decision: a timeout
        fired early fires at the time everything went idle, and a deadline the jump would reach
        is still in the future then (it may fire early too). Otherwise the clock jumps now.
        """
        if self.log.left and self.active and not self.cleaning:
            self._jump_deferred = True
        else:
            self._clock_jump()

    def _idle_fault(self) -> bool:
        """No scenario task can run: offer the faults before time passes; True if one was made."""
        if self.stopped is not None or self.chooser is None:
            return False
        offered = self._offered_faults()
        if not offered:
            return False
        injected = self.log.choose_idle(
            offered, self.chooser.pick, self.decisions, self.widths, self.count
        )
        if not injected:
            return False
        if self.trace:
            self._note(*injected)
        return True

    def _offered_faults(self) -> Sequence[Fault]:
        """The faults that could happen now, in a deterministic order (see ``_faults``)."""
        offered: list[Fault] = []
        live = [
            (tid, task)
            for task, tid in sorted(self.ids.items(), key=lambda item: item[1])
            if inspect.getcoroutinestate(task.coro) == inspect.CORO_SUSPENDED
        ]
        if self.faults.cancel:
            cancels: set[int] = set()
            for tid, task in live:
                if tid == 0:
                    continue
                nursery = task.parent_nursery
                spawn = nursery.cancel_scope if nursery is not None else None
                own = _own_scope(task, spawn)
                for scope, what in ((own, OWN_SCOPE), (spawn, SPAWN_SCOPE)):
                    if (
                        scope is None
                        or scope is self.outer_scope
                        or scope.cancel_called
                        or id(scope) in cancels
                    ):
                        continue
                    cancels.add(id(scope))
                    offered.append(Fault(self._cancel_text(task, what), scope.cancel))
        seen: set[int] = set()
        if self.faults.timeouts:
            now = self._runner.clock.current_time()
            start = self._time_origin
            for _, task in live:
                status = task._cancel_status
                if status is not None and _events.in_sleep(task):
                    # A sleep's own deadline: firing it early would end the sleep, not time out.
                    status = status._parent
                while status is not None:
                    scope = status._scope
                    if scope is self.outer_scope:
                        break
                    deadline = scope._registered_deadline
                    if (
                        deadline != math.inf
                        and deadline > now
                        and not scope.cancel_called
                        and id(scope) not in seen
                    ):
                        seen.add(id(scope))
                        fault = self._timeout_fault(task, scope, now - start, deadline - start)
                        offered.append(fault)
                    status = status._parent
        return offered

    def _cancel_text(self, task: Any, what: str) -> Callable[[], str]:
        def text() -> str:
            where = format_location(user_location(task.coro))
            return f"cancelled {self.names[self.ids[task]]} ({what}) at {where}"

        return text

    def _timeout_fault(self, task: Any, scope: Any, at: float, deadline: float) -> Fault:
        def text() -> str:
            where = format_location(user_location(task.coro))
            return (
                f"fired the cancel scope deadline of {self.names[self.ids[task]]} "
                f"at {where} early, at t={at:g} (deadline t={deadline:g})"
            )

        def fire() -> None:
            scope.deadline = self._runner.clock.current_time()

        return Fault(text, fire)

    def _trace_resume(self, task: Any) -> None:
        # One trio.run serves every schedule: its clock is shown from this schedule's start.
        now = float(self._runner.clock.current_time())
        if now > self._seen_time:
            self._seen_time = now
            self._note(_events.time_event(now - self._time_origin))
        cancelled = _events.trio_cancelled(task)
        if cancelled:
            # trio.sleep ends by its own deadline's cancellation: that is a timer, not a cancel.
            timeout = _events.trio_timeout(task, now, self._time_origin, self.ids)
            if timeout is None or timeout.kind == "time":
                cancelled = timeout is None
            else:
                self._note(timeout)
        woke = _events.wake_event(self.ids[task], task.coro, cancelled)
        if woke is not None:
            self._note(woke)

    def _note(self, *noted: TraceEvent) -> None:
        events = self.recorder.events
        if events is not None:
            events.extend(noted)

    def _task_name(self, task: Any) -> str:
        return self.names[self.ids[task]]

    def task_exited(self, task: Any, result: Any) -> None:
        """Told by the wrapped ``runner.task_exited`` (while tracing or tracking footprints)
        how a task ended."""
        if self.trace and task in self.ids:
            self.ends[task] = _events.trio_end(result)
        if self.track:
            self._failed[task] = getattr(result, "error", None) is not None

    def _end_step(self) -> None:
        """The task that ran in the last pass stopped: how it ended is all trio adds."""
        task = self._stepping
        self._stepping = None
        if task.coro.cr_frame is not None:
            self.recorder.end(False, False, "")
            return
        # trio does not keep a finished task's outcome on the task; ``task_exited`` saw it. One
        # whose end was not seen counts as failed (touching everything).
        failed = self._failed.pop(task, True) if self.track else True
        self.recorder.end(True, failed, self.ends.get(task, "") if self.trace else "")

    def _deadlocked(self) -> bool:
        runner = self._runner
        if runner.waiting_for_idle:
            return False
        return bool(runner.deadlines.next_deadline() == math.inf)

    def _stop_reason(self) -> str | None:
        return self.stopped

    def _stop(self, why: str) -> None:
        self.stopped = why
        if self.wakeup is not None:
            self.wakeup.set()

    # -- one schedule ---------------------------------------------------------------------------

    def blocked_tasks(self) -> list[Waiting]:
        waiting: list[Waiting] = []
        for task, tid in sorted(self.ids.items(), key=lambda item: item[1]):
            if task.coro.cr_frame is None:
                continue
            obj = waited_object(task.coro)
            where = user_location(task.coro)
            if (obj is None and tid == 0) or type(obj).__name__ in _GROUPS:
                waiting.append(Waiting(tid, self.names[tid], where, "its child tasks to finish"))
                continue
            described = describe_wait(
                task.coro,
                lambda lock: None,
                lambda t: self.names[self.ids[t]] if t in self.ids else None,
                lambda t: getattr(getattr(t, "coro", None), "cr_frame", 0) is None,
            )
            if described is None:
                waiting.append(Waiting(tid, self.names[tid], where, describe_object(obj)))
                continue
            holder = self.ids.get(described.holder)
            waiting.append(
                Waiting(tid, self.names[tid], where, described.waits_on, holder, described.state)
            )
        return waiting

    async def run_schedule(self, scenario: Scenario, chooser: Chooser, trace: bool) -> Outcome:
        import trio

        from . import _net_trio

        _net_trio.reset()
        self.ids.clear()
        self.names.clear()
        for task in self._ready:
            del self[task]
        self._ready.clear()
        self._batch.clear()
        self.decisions = []
        self.widths = []
        self.chooser = chooser
        self.track = chooser.footprints
        self._failed.clear()
        self.trace = trace
        recorder = self.recorder
        recorder.start(chooser, trace)
        self._stepping = None
        self.ends = {}
        self._seen_time = self._time_origin = float(self._runner.clock.current_time())
        self.count = 0
        self.max_steps = chooser.max_steps
        self.stopped = None
        self.cleaning = False
        self.root_name = getattr(scenario, "__qualname__", "scenario").rpartition("<locals>.")[2]
        self.log = FaultLog(self.faults) if self.faults.active else _NO_LOG
        wakeup = self.wakeup = trio.Event()
        box: list[BaseException] = []

        async def root() -> None:
            try:
                coro = scenario()
                if not hasattr(coro, "send"):
                    raise TypeError(
                        f"the scenario must be an async function taking no arguments; calling "
                        f"{scenario!r} returned {type(coro).__name__}, not a coroutine"
                    )
                await coro
            except BaseException as error:  # noqa: BLE001 - the scenario's failure is the result
                box.append(error)
            finally:
                wakeup.set()

        if root.__code__ is not self._root_code:
            # The same code every schedule; adding it once spares hashing a code object each time.
            self._root_code = root.__code__
            TRANSPARENT_CODE.add(root.__code__)
        steps = recorder.steps
        outcome = Outcome(None, None, self.decisions, self.widths, steps)
        outcome.sketch = recorder.sketch
        if self.log is not _NO_LOG:
            outcome.faults = self.log.injected
        async with trio.open_nursery() as nursery:
            self.outer_scope = nursery.cancel_scope
            self.active = True
            self.expect_root = True
            nursery.start_soon(root)
            await wakeup.wait()
            if self._stepping is not None:
                self._end_step()
            if box and steps and steps[-1].task == 0 and steps[-1].finished:
                # The root wrapper caught the scenario's exception: that is how #0 ended.
                steps[-1].end = describe_end(unwrap_group(box[0]), False, None)
            stopped = self._stop_reason()
            if stopped == "deadlock":
                outcome.kind = "deadlock"
                outcome.waiting = self.blocked_tasks()
            elif stopped == "limit":
                outcome.kind = "exception"
                outcome.error = StepLimitError(
                    f"one schedule ran more than {self.max_steps} steps; a task keeps yielding "
                    "without ever finishing (a busy loop on sleep(0)?)"
                )
            elif box:
                outcome.kind = "exception"
                outcome.error = box[0]
            self.cleaning = True
            self.trace = False
            self.track = False
            nursery.cancel_scope.cancel()
        self.active = False
        self.cleaning = False
        self.chooser = None
        outcome.task_names = dict(self.names)
        return outcome


#: Per registry class, its mirrored stand-in (made on first use: trio is imported lazily).
_MIRRORED_INSTRUMENTS: dict[type, type] = {}


def _mirrored_instruments(instruments: Any) -> Any:
    """trio's instrument registry with its hook names mirrored in a dict, or ``instruments``
    itself when it already is one.

    trio's run loop tests ``"hook" in runner.instruments`` five times per pass; since trio made
    the registry a ``UserDict`` each test is a Python call (about a tenth of a trio schedule's
    instructions). The stand-in is a dict subclass first, so ``in`` is the dict's C slot, over
    the same ``data`` (an instrument added or removed through it, or through the original,
    lands in both, and it re-mirrors the names after its own changes; nothing else changes the
    registry while a ``trio.run`` belongs to the explorer).
    """
    if isinstance(instruments, dict):
        return instruments
    registry = type(instruments)
    mirrored_class = _MIRRORED_INSTRUMENTS.get(registry)
    if mirrored_class is None:

        class MirroredInstruments(dict[str, Any], registry):  # type: ignore[misc,valid-type]
            __slots__ = ()

            def add_instrument(self, instrument: Any) -> None:
                super().add_instrument(instrument)
                self.mirror()

            def remove_instrument(self, instrument: Any) -> None:
                super().remove_instrument(instrument)
                self.mirror()

            def mirror(self) -> None:
                dict.clear(self)
                dict.update(self, self.data)

        mirrored_class = _MIRRORED_INSTRUMENTS[registry] = MirroredInstruments
    mirrored: Any = mirrored_class()
    mirrored.data = instruments.data
    mirrored.mirror()
    return mirrored


async def _drive(
    plan: Generator[Any, Outcome, Any],
    scenario: Scenario,
    after_schedule: Callable[[Outcome], None],
    faults: Faults,
) -> Any:
    import trio
    from trio._core._run import GLOBAL_RUN_CONTEXT

    from . import _net_trio

    runner = GLOBAL_RUN_CONTEXT.runner
    runq = ControlledRunQueue(runner, trio.lowlevel.current_task(), runner.runq)
    runq.faults = faults
    runner.runq = runq  # type: ignore[assignment]  # duck-typed: trio only appends/iterates/clears
    instruments = runner.instruments
    runner.instruments = _mirrored_instruments(instruments)
    # An instance attribute: trio calls ``runner.clock._autojump()`` (MockClock has no slots).
    clock: Any = runner.clock  # the MockClock run_plan made
    runq._clock_jump = clock._autojump
    clock._autojump = runq.autojump
    # How a traced task ended: only trio's runner sees a task's outcome (its class has slots,
    # so the method is wrapped on the class, for this runner only).
    runner_class = type(runner)
    task_exited = runner_class.task_exited

    def exited(self: Any, task: Any, result: Any) -> None:
        if self is runner and (runq.trace or runq.track):
            runq.task_exited(task, result)
        task_exited(self, task, result)

    runner_class.task_exited = exited  # type: ignore[method-assign,assignment]
    restore_network = _net_trio.install()
    try:
        request = next(plan)
        while True:
            _holders.reset()
            outcome = await runq.run_schedule(scenario, *request)
            after_schedule(outcome)
            request = plan.send(outcome)
    except StopIteration as stop:
        return stop.value
    finally:
        restore_network()
        del clock._autojump
        runner_class.task_exited = task_exited  # type: ignore[method-assign]
        runner.runq = deque(runq)
        runner.instruments = instruments


def _virtual_clock() -> Any:
    """``trio.testing.MockClock(autojump_threshold=0)`` whose time costs one call at rate 0.

    trio's run loop reads the clock once per pass; the mock clock's ``current_time`` reads the
    real clock and scales its offset by the rate, two calls. At rate 0 (the explorer's: time
    moves only by jumps) that is its virtual base whatever the real clock says, so the clock's
    instance gets a ``current_time`` returning it directly (the class is final, and has no
    slots), which defers to the mock clock's own if the rate is ever changed.
    """
    import trio.testing

    clock: Any = trio.testing.MockClock(autojump_threshold=0)
    scaled_time = clock.current_time

    def current_time() -> float:
        if clock._rate == 0.0:
            return clock._virtual_base  # type: ignore[no-any-return]
        return scaled_time()  # type: ignore[no-any-return]

    clock.current_time = current_time
    return clock


def run_plan(
    plan: Generator[Any, Outcome, Any],
    scenario: Scenario,
    after_schedule: Callable[[Outcome], None],
    faults: Faults = NO_FAULTS,
) -> Any:
    """Run an exploration plan inside one ``trio.run`` with a virtual clock.

    ``after_schedule`` runs after every schedule with its outcome; it raises to stop the search.
    Worker threads (``trio.to_thread``, anyio's on trio, trio's subprocesses) are refused while it
    runs.
    """
    check_trio_version()
    import trio

    from ._unsupported import patch_trio_threads

    clock = _virtual_clock()
    # For every schedule, not only traced ones: the wrapper is a frame of each await chain, and a
    # replay must walk the same chains as the search did.
    _holders.install("trio")
    try:
        with patch_trio_threads():
            return trio.run(_drive, plan, scenario, after_schedule, faults, clock=clock)
    finally:
        _holders.remove("trio")
