"""A controlled asyncio event loop: one ready task at a time, chosen by a strategy, on virtual time.

The loop is created once per exploration and reused for every schedule (creating an event loop is
slower than running a small scenario). Task steps are recognised by their callbacks: asyncio's
``Task`` schedules ``task.__step``/``task.__wakeup``, both bound to the task, through
``call_soon``. Every other callback (future callbacks, timer callbacks, anyio's cancellation
delivery) runs as soon as it is due and is never a scheduling choice.
"""

from __future__ import annotations

import asyncio
import contextvars
import heapq
import inspect
import math
import sys
import weakref
from asyncio import events, format_helpers
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

from . import _events, _holders
from ._common import (
    MAX_STEPS,
    Chooser,
    Outcome,
    Scenario,
    StepLimitError,
    TraceEvent,
    Waiting,
    describe_object,
    format_location,
    task_label,
    unsupported,
    user_location,
)
from ._faults import NO_FAULTS, OWN_SCOPE, Fault, FaultLog, Faults, fault_option
from ._net_asyncio import SimulatedNetworkLoop
from ._steps import StepRecorder
from ._unsupported import UnsupportedLoopAPI, patch_anyio_threads
from ._waits import describe_wait
from ._waits import waited as _waited

_Task = asyncio.Task
_Handle = asyncio.Handle
_new_object = object.__new__
_copy_context = contextvars.copy_context
# call_soon fills in a Handle's slots itself rather than through Handle.__init__ (two calls per
# task step: __init__ and its get_debug()), as long as Handle has exactly the slots it fills.
_HANDLE_SLOTS = frozenset(
    ("_callback", "_args", "_cancelled", "_loop", "_source_traceback", "_repr", "_context")
)
_FAST_HANDLES = frozenset(_Handle.__slots__) - {"__weakref__"} == _HANDLE_SLOTS
_DEFAULT_NAME_PREFIX = "Task-"

# asyncio.Lock does not remember its owner; the deadlock report needs it, so while an exploration
# runs, acquire/release are wrapped to record it (only for locks used on a controlled loop).
_lock_owner: weakref.WeakKeyDictionary[asyncio.Lock, asyncio.Task[Any]] = (
    weakref.WeakKeyDictionary()
)
_patch_depth = 0
_orig_acquire = asyncio.Lock.acquire
_orig_release = asyncio.Lock.release


async def _tracking_acquire(self: asyncio.Lock) -> bool:
    result = await _orig_acquire(self)
    loop = events._get_running_loop()
    if isinstance(loop, ControlledLoop):
        task = asyncio.current_task()
        if task is not None:
            _lock_owner[self] = task
    return result


def _tracking_release(self: asyncio.Lock) -> None:
    _orig_release(self)
    _lock_owner.pop(self, None)


def _install_lock_tracking() -> None:
    global _patch_depth
    if _patch_depth == 0:
        asyncio.Lock.acquire = _tracking_acquire  # type: ignore[method-assign,assignment]
        asyncio.Lock.release = _tracking_release  # type: ignore[method-assign]
    _patch_depth += 1


def _remove_lock_tracking() -> None:
    global _patch_depth
    _patch_depth -= 1
    if _patch_depth == 0:
        asyncio.Lock.acquire = _orig_acquire  # type: ignore[method-assign]
        asyncio.Lock.release = _orig_release  # type: ignore[method-assign]


class ControlledLoop(SimulatedNetworkLoop, UnsupportedLoopAPI):
    """An event loop whose scheduling decisions are made by a :class:`Chooser`.

    Tasks, futures and timers are implemented here; TCP over loopback comes from
    :class:`SimulatedNetworkLoop` (the explorer's in-memory network); every other I/O method is
    refused by :class:`UnsupportedLoopAPI` with an :class:`~asynclocks.UnsupportedScenario` naming
    the call.
    """

    def __init__(self) -> None:
        self._callbacks: deque[asyncio.Handle] = deque()
        # Insertion order of this dict is the order tasks became ready: asyncio's own FIFO order.
        self._runnable: dict[asyncio.Task[Any], list[asyncio.Handle]] = {}
        self._timers: list[tuple[float, int, asyncio.TimerHandle]] = []
        self._timer_seq = 0
        self._time = 0.0
        self._running = False
        self._closed = False
        self._ids: dict[asyncio.Task[Any], int] = {}
        self._errors: list[dict[str, Any]] = []
        self.faults = NO_FAULTS
        # Events seen since the last step, while a trace is recorded (None: not tracing).
        self._events: list[TraceEvent] | None = None
        self._recorder = StepRecorder(self._name, _ended)

    # -- the parts of the event loop API that asyncio, anyio and user code use ------------------

    def time(self) -> float:
        return self._time

    def call_soon(  # type: ignore[override]
        self,
        callback: Callable[..., object],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.Handle:
        if _FAST_HANDLES:
            # What Handle.__init__ does when the loop is not in debug mode (never, here).
            fast: Any = _new_object(_Handle)
            fast._context = _copy_context() if context is None else context
            fast._loop = self
            fast._callback = callback
            fast._args = args
            fast._cancelled = False
            fast._repr = None
            fast._source_traceback = None
            handle: asyncio.Handle = fast
        else:
            handle = _Handle(callback, args, self, context)
        owner = getattr(callback, "__self__", None)
        if isinstance(owner, _Task):
            pending = self._runnable.get(owner)
            if pending is None:
                if owner not in self._ids:
                    self._ids[owner] = len(self._ids)
                self._runnable[owner] = [handle]
            else:
                pending.append(handle)
        else:
            self._callbacks.append(handle)
        return handle

    def call_soon_threadsafe(  # type: ignore[override]
        self,
        callback: Callable[..., object],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.Handle:
        return self.call_soon(callback, *args, context=context)

    def call_at(  # type: ignore[override]
        self,
        when: float,
        callback: Callable[..., object],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.TimerHandle:
        handle = asyncio.TimerHandle(when, callback, args, self, context)
        self._timer_seq += 1
        heapq.heappush(self._timers, (when, self._timer_seq, handle))
        return handle

    def call_later(  # type: ignore[override]
        self,
        delay: float,
        callback: Callable[..., object],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.TimerHandle:
        return self.call_at(self._time + delay, callback, *args, context=context)

    def _timer_handle_cancelled(self, handle: asyncio.TimerHandle) -> None:
        # Cancelled timers are skipped when they come due; nothing to do eagerly.
        pass

    def create_future(self) -> asyncio.Future[Any]:
        return asyncio.Future(loop=self)

    def create_task(  # type: ignore[override]
        self,
        coro: Coroutine[Any, Any, Any],
        *,
        name: str | None = None,
        context: contextvars.Context | None = None,
    ) -> asyncio.Task[Any]:
        return asyncio.Task(coro, loop=self, name=name, context=context)

    def get_task_factory(self) -> None:
        return None

    def set_task_factory(self, factory: Any) -> None:
        raise unsupported(
            "loop.set_task_factory()",
            "the explorer recognises a task's steps by asyncio's own Task",
            "Use the default task factory inside the scenario (create_task, a TaskGroup)",
        )

    def get_debug(self) -> bool:
        return False

    def set_debug(self, enabled: bool) -> None:
        pass

    def is_running(self) -> bool:
        return self._running

    def is_closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        self._closed = True

    def call_exception_handler(self, context: dict[str, Any]) -> None:
        # Errors of tasks nobody awaited and of callbacks: kept, never printed mid-exploration.
        self._errors.append(context)

    def default_exception_handler(self, context: dict[str, Any]) -> None:
        self._errors.append(context)

    def get_exception_handler(self) -> None:
        return None

    # -- driving one schedule ---------------------------------------------------------------------

    def _due_timers(self) -> None:
        timers = self._timers
        while timers and timers[0][0] <= self._time:
            handle = heapq.heappop(timers)[2]
            if not handle._cancelled:
                self._callbacks.append(handle)
                if self._events is not None:
                    self._timer_event(handle)

    def _advance_time(self) -> bool:
        timers = self._timers
        while timers and timers[0][2]._cancelled:
            heapq.heappop(timers)
        if not timers:
            return False
        if self._events is not None and timers[0][0] > self._time:
            self._events.append(_events.time_event(timers[0][0]))
        self._time = max(self._time, timers[0][0])
        self._due_timers()
        return True

    def _timer_event(self, handle: asyncio.TimerHandle) -> None:
        event = _events.asyncio_timer_event(handle, self._ids)
        if event is not None and self._events is not None:
            self._events.append(event)

    def _run_callbacks(self) -> None:
        callbacks = self._callbacks
        rounds = 0
        while callbacks:
            for _ in range(len(callbacks)):
                handle = callbacks.popleft()
                if not handle._cancelled:
                    handle._run()
            rounds += 1
            if self._runnable or rounds > MAX_STEPS:
                return

    def _name(self, task: asyncio.Task[Any]) -> str:
        tid = self._ids.get(task, -1)
        name = task.get_name()
        coro = task.get_coro()
        if name.startswith(_DEFAULT_NAME_PREFIX) and name[len(_DEFAULT_NAME_PREFIX) :].isdigit():
            name = getattr(coro, "__qualname__", "task")
        return f"#{tid} {task_label(name)}"

    def run_schedule(
        self, scenario: Scenario, chooser: Chooser, trace: bool, max_steps: int = MAX_STEPS
    ) -> Outcome:
        """Run the scenario once, asking ``chooser`` whenever more than one task can run."""
        self._time = 0.0
        self._ids.clear()
        self._errors.clear()
        self._net_reset()
        recorder = self._recorder
        recorder.start(chooser, trace)
        noted = self._events = recorder.events
        decisions: list[int] = []
        widths: list[int] = []
        outcome = Outcome(None, None, decisions, widths, recorder.steps)
        outcome.sketch = recorder.sketch
        # Bound once: this loop runs every step of every schedule.
        runnable = self._runnable
        callbacks = self._callbacks
        timers = self._timers
        ids = self._ids
        pick = chooser.pick
        begin = recorder.begin
        end = recorder.end
        step = recorder.step
        previous = events._get_running_loop()
        events._set_running_loop(self)
        self._running = True
        try:
            coro = scenario()
            if not asyncio.iscoroutine(coro):
                raise TypeError(
                    f"the scenario must be an async function taking no arguments; calling "
                    f"{scenario!r} returned {type(coro).__name__}, not a coroutine"
                )
            main = self.create_task(coro)
            count = 0
            # Faults off (the default) must cost the hot loop nothing but one test per pass.
            log = FaultLog(self.faults) if self.faults.active else None
            if log is not None:
                outcome.faults = log.injected
            offered: list[Fault] = []
            while not main.done():
                if timers and timers[0][0] <= self._time:
                    self._due_timers()
                if callbacks:
                    self._run_callbacks()
                if log is not None and log.left:
                    offered = self._offered_faults(main)
                if runnable:
                    preempted = False
                    if len(runnable) == 1 and not offered:
                        task = next(iter(runnable))
                    else:
                        tasks = list(runnable)
                        options = [ids[t] for t in tasks]
                        if offered:
                            options += [fault_option(i) for i in range(len(offered))]
                        index = pick(options)
                        decisions.append(index)
                        widths.append(len(options))
                        if index >= len(tasks):
                            assert log is not None
                            injected = log.inject(offered[index - len(tasks)], count)
                            if noted is not None:
                                noted.extend(injected)
                            offered = []
                            continue
                        task = tasks[index]
                        preempted = index != 0
                    handles = runnable.pop(task)
                    tid = ids[task]
                    task_coro = task.get_coro()
                    if noted is not None:
                        cancelled = _events.asyncio_cancelled(task, handles)
                        woke = _events.wake_event(tid, task_coro, cancelled)
                        if woke is not None:
                            noted.append(woke)
                    if len(handles) == 1 and not handles[0]._cancelled:
                        # The usual step, one handle: Handle._run's work without its call, and
                        # the recorder's in one call. A task's step raises only what _run lets
                        # through; anything else goes to the exception handler as in _run.
                        handle: Any = handles[0]
                        try:
                            step(
                                task,
                                tid,
                                task_coro,
                                preempted,
                                handle._context.run,
                                handle._callback,
                                handle._args,
                                type(task).done,
                            )
                        except (SystemExit, KeyboardInterrupt):
                            raise
                        except BaseException as failure:  # noqa: BLE001 - as Handle._run
                            self._callback_failed(handle, failure)
                    else:
                        begin(task, tid, task_coro, preempted)
                        for handle in handles:
                            if not handle._cancelled:
                                handle._run()
                        if task.done():
                            failed = task.cancelled() or task.exception() is not None
                            end(True, failed, "" if noted is None else _events.asyncio_end(task))
                        else:
                            end(False, False, "")
                    count += 1
                    if count > max_steps:
                        outcome.kind = "exception"
                        outcome.error = StepLimitError(
                            f"one schedule ran more than {max_steps} steps; a task keeps yielding "
                            "without ever finishing (a busy loop on sleep(0)?)"
                        )
                        break
                    continue
                if callbacks:
                    continue
                if offered:
                    # Nothing can run: before time passes (or the deadlock is declared), a fault.
                    assert log is not None
                    injected = log.choose_idle(offered, pick, decisions, widths, count)
                    offered = []
                    if injected:
                        if noted is not None:
                            noted.extend(injected)
                        continue
                if self._advance_time():
                    continue
                outcome.kind = "deadlock"
                outcome.waiting = self._blocked_tasks(main)
                break
            else:
                error = main.exception()
                if error is not None:
                    outcome.kind = "exception"
                    outcome.error = error
            if trace or outcome.kind is not None:
                outcome.task_names = {tid: self._name(t) for t, tid in self._ids.items()}
            self._events = None
            self._cleanup()
        finally:
            self._events = None
            self._running = False
            events._set_running_loop(previous)
        return outcome

    def _callback_failed(self, handle: asyncio.Handle, error: BaseException) -> None:
        """What ``Handle._run`` does when its callback raises: tell the exception handler."""
        callback: Any = handle._callback  # type: ignore[attr-defined]
        source = format_helpers._format_callback_source(callback, handle._args)
        context: dict[str, Any] = {
            "message": f"Exception in callback {source}",
            "exception": error,
            "handle": handle,
        }
        if handle._source_traceback:  # type: ignore[attr-defined]
            context["source_traceback"] = handle._source_traceback  # type: ignore[attr-defined]
        self.call_exception_handler(context)

    def _offered_faults(self, main: asyncio.Task[Any]) -> list[Fault]:
        """The faults that could happen now, in a deterministic order (see ``_faults``)."""
        offered: list[Fault] = []
        if self.faults.cancel:
            anyio_states = _anyio_task_states()
            scopes: set[int] = set()
            for task in self._ids:
                if task is main or task.done() or task.cancelling():
                    continue
                coro = task.get_coro()
                if inspect.getcoroutinestate(coro) != inspect.CORO_SUSPENDED:  # type: ignore[arg-type]
                    continue  # not started: not at an await yet
                spawn, own = _anyio_scopes(anyio_states, task)
                if spawn is None:
                    offered.append(Fault(self._cancel_text(task), task.cancel))
                    continue
                for scope, what in ((own, OWN_SCOPE), (spawn, GROUP_SCOPE)):
                    if scope is not None and id(scope) not in scopes and not scope.cancel_called:
                        scopes.add(id(scope))
                        offered.append(Fault(self._cancel_text(task, what), scope.cancel))
        if self.faults.timeouts:
            for when, _, handle in sorted(self._timers, key=lambda t: t[:2]):
                if handle._cancelled or when <= self._time:
                    continue
                fault = self._timeout_fault(handle, when)
                if fault is not None:
                    offered.append(fault)
        return offered

    def _cancel_text(self, task: asyncio.Task[Any], what: str = "") -> Callable[[], str]:
        def text() -> str:
            where = format_location(user_location(task.get_coro()))
            via = f" ({what})" if what else ""
            return f"cancelled {self._name(task)}{via} at {where}"

        return text

    def _timeout_fault(self, handle: asyncio.TimerHandle, when: float) -> Fault | None:
        """ "Fire now" for the timer of a timeout; None for a timer that is not one (a sleep)."""
        callback: Any = handle._callback  # type: ignore[attr-defined]
        owner: Any = getattr(callback, "__self__", None)
        original: Callable[..., object] = callback
        fire: Callable[[], None]
        task: object = None
        if isinstance(owner, asyncio.Timeout):
            timeout = owner
            task = getattr(timeout, "_task", None)
            what = "asyncio.timeout"

            def fire() -> None:
                timeout.reschedule(self._time)

        elif type(owner).__name__ == "CancelScope" and hasattr(owner, "_host_task"):
            scope = owner
            task = scope._host_task
            what = "anyio cancel scope deadline"

            def fire() -> None:
                scope.deadline = self._time

        elif callback is getattr(asyncio.tasks, "_release_waiter", None):
            # asyncio.wait_for/asyncio.wait before 3.12: the timer releases the waiter.
            what = "asyncio.wait_for/wait timeout"

            def fire() -> None:
                args = handle._args  # cancel() forgets them
                handle.cancel()
                self.call_soon(original, *args)

        else:
            return None

        def text() -> str:
            whose = ""
            if isinstance(task, _Task):
                where = format_location(user_location(task.get_coro()))
                whose = f" of {self._name(task)} at {where}"
            return f"fired the {what}{whose} early, at t={self._time:g} (deadline t={when:g})"

        # Fired early, the timeout calls back at once rather than through a timer coming due:
        # its expiry is shown as the timer's would be.
        return Fault(text, fire, _events.asyncio_timer_event(handle, self._ids))

    def _blocked_tasks(self, main: asyncio.Task[Any]) -> list[Waiting]:
        waiting: list[Waiting] = []
        for task, tid in sorted(self._ids.items(), key=lambda item: item[1]):
            if task.done():
                continue
            coro = task.get_coro()
            waiting.append(self._waiting(task, tid, coro, main))
        return waiting

    def _waiting(self, task: asyncio.Task[Any], tid: int, coro: Any, main: Any) -> Waiting:
        obj = _waited(coro).obj
        where = user_location(coro)
        if isinstance(obj, asyncio.TaskGroup) or type(obj).__name__ == "TaskGroup":
            return Waiting(tid, self._name(task), where, "its child tasks to finish")
        if isinstance(obj, asyncio.Task):
            return Waiting(tid, self._name(task), where, f"task {self._name(obj)} to finish")
        described = describe_wait(
            coro,
            lambda lock: _lock_owner.get(lock) if isinstance(lock, asyncio.Lock) else None,
            lambda t: self._name(t) if t in self._ids else None,
            lambda t: isinstance(t, _Task) and t.done(),
        )
        if described is None:
            what = (
                "its child tasks to finish"
                if obj is None and task is main
                else describe_object(obj)
            )
            return Waiting(tid, self._name(task), where, what)
        holder = described.holder
        return Waiting(
            tid,
            self._name(task),
            where,
            described.waits_on,
            self._ids.get(holder) if isinstance(holder, _Task) else None,
            described.state,
        )

    def _cleanup(self) -> None:
        """Cancel whatever is still alive so the loop starts the next schedule empty."""
        for _ in range(3):
            alive = [t for t in self._ids if not t.done()]
            if not alive:
                break
            for task in alive:
                task.cancel()
            callbacks = self._callbacks
            # One budget for callbacks and steps alike: anyio re-delivers a cancellation in a
            # callback every round until its task acts on it, so a task that never runs again
            # (its step was cut short by an exception raised into the explorer) would keep
            # ``_run_callbacks`` busy for MAX_STEPS rounds per step, MAX_STEPS steps long.
            for _ in range(MAX_STEPS):
                self._due_timers()
                if callbacks:
                    for _ in range(len(callbacks)):
                        handle = callbacks.popleft()
                        if not handle._cancelled:
                            handle._run()
                if self._runnable:
                    task, handles = next(iter(self._runnable.items()))
                    del self._runnable[task]
                    for handle in handles:
                        if not handle._cancelled:
                            handle._run()
                    continue
                if not callbacks and not self._advance_time():
                    break
        for task in self._ids:
            if not task.done():
                # A task that swallows cancellation and waits again: drop it rather than hang.
                task.get_coro().close()
        self._runnable.clear()
        self._callbacks.clear()
        self._timers.clear()
        for task in self._ids:
            if task.done() and not task.cancelled():
                task.exception()  # mark retrieved: no "never retrieved" noise at collection
        self._ids.clear()
        if self._net is not None:
            # Only a schedule that used the network has one to drop; the next schedule's start
            # hooks modules imported meanwhile.
            self._net_reset()


def _ended(task: asyncio.Task[Any], trace: bool) -> tuple[bool, str]:
    """How a finished task ended, for the recorder: whether it failed, and the trace's text."""
    failed = task.cancelled() or task.exception() is not None
    return failed, _events.asyncio_end(task) if trace else ""


def _anyio_task_states() -> Any:
    module = sys.modules.get("anyio._backends._asyncio")
    return getattr(module, "_task_states", None)


GROUP_SCOPE = "its task group's cancel scope"


def _anyio_scopes(states: Any, task: asyncio.Task[Any]) -> tuple[Any, Any]:
    """The cancel scope of the anyio task group ``task`` was started in (None if it was not),
    and the innermost scope the task opened itself that code outside it could cancel (not a
    shield, which that would break from inside, nor one with a deadline: a timeout fault)."""
    if states is None:
        return None, None
    state = states.get(task)
    scope = getattr(state, "cancel_scope", None)
    own = None
    # The task's own scopes are hosted by it; the first one that is not is its group's.
    while scope is not None and scope._host_task is task:
        if own is None and not scope.shield and scope.deadline == math.inf:
            own = scope
        scope = scope._parent_scope
    return scope, own


def _ordered_delivery(original: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    """anyio's cancellation delivery, waking the tasks it cancels in task-id order.

    anyio walks a cancel scope's tasks (and child scopes) as sets, so the order they become
    runnable depends on their addresses. An injected cancellation must replay exactly; the stock
    order among tasks cancelled in one delivery is arbitrary anyway.
    """

    def deliver(scope: Any, origin: Any) -> bool:
        loop = events._get_running_loop()
        if not isinstance(loop, ControlledLoop):
            return original(scope, origin)
        runnable = loop._runnable
        before = len(runnable)
        result = original(scope, origin)
        if len(runnable) - before > 1:
            items = list(runnable.items())
            woken = sorted(items[before:], key=lambda item: loop._ids[item[0]])
            runnable.clear()
            runnable.update(items[:before])
            runnable.update(woken)
        return result

    return deliver


class AsyncioSession:
    """One controlled loop reused across every schedule of an exploration."""

    backend = "asyncio"

    def __init__(self, faults: Faults = NO_FAULTS) -> None:
        self._loop = ControlledLoop()
        self._loop.faults = faults
        _install_lock_tracking()
        # For every schedule, not only traced ones: the wrapper is a frame of each await chain,
        # and a replay must walk the same chains as the search did.
        _holders.install("asyncio")
        patch_anyio_threads(True)
        self._closed = False
        self._anyio_scope: Any = None
        self._anyio_delivery: Any = None

    def run(self, scenario: Scenario, chooser: Chooser, trace: bool) -> Outcome:
        if self._loop.faults.cancel and self._anyio_scope is None:
            module = sys.modules.get("anyio._backends._asyncio")
            if module is not None:  # imported by the scenario, maybe only in its first run
                self._anyio_scope = scope = module.CancelScope
                self._anyio_delivery = scope._deliver_cancellation
                scope._deliver_cancellation = _ordered_delivery(scope._deliver_cancellation)
        _holders.reset()
        return self._loop.run_schedule(scenario, chooser, trace, chooser.max_steps)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self._anyio_scope is not None:
                self._anyio_scope._deliver_cancellation = self._anyio_delivery
            _remove_lock_tracking()
            _holders.remove("asyncio")
            patch_anyio_threads(False)
            self._loop.close()

    def __enter__(self) -> AsyncioSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
