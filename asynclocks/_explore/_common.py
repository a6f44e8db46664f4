"""Shared pieces of the controlled schedulers: outcomes, code locations, blocked tasks."""

from __future__ import annotations

import importlib.util
import linecache
import os
import sys
import sysconfig
import types
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

#: A zero-argument async function: what the explorer runs once per schedule.
Scenario = Callable[[], Awaitable[Any]]

#: The event loops the explorer controls.
Backend = Literal["asyncio", "trio"]
#: The exploration strategies (see :func:`asynclocks.explore`).
Strategy = Literal["dfs", "fifo", "pct", "portfolio", "random"]
#: How a schedule failed: the scenario raised, or every task blocked.
FailureKind = Literal["exception", "deadlock"]

BACKENDS: tuple[Backend, ...] = ("asyncio", "trio")
STRATEGIES: tuple[Strategy, ...] = ("dfs", "fifo", "pct", "portfolio", "random")

#: (file, line, function) of a user-code frame.
Frame = tuple[str, int, str]
#: Where a task stands: its innermost user-code frame and that frame's user-code caller, if any.
Location = tuple[Frame, Frame | None]

#: Steps a single schedule may take by default before the explorer gives up on it (a task
#: spinning on ``sleep(0)`` forever would otherwise hang the exploration); see ExploreConfig.
MAX_STEPS = 20_000


class DeadlockError(RuntimeError):
    """Every task of the scenario is blocked and no timer can wake any of them.

    The message names each blocked task, what it waits on and, for locks, who holds it.
    """


class NondeterminismError(RuntimeError):
    """The scenario did not behave the same way when given the same schedule.

    It depends on something the explorer does not control (wall-clock time, real randomness,
    threads, I/O), so a failing schedule cannot be replayed reliably.
    """


class UnsupportedScenario(Exception):
    """The scenario does something the explorer cannot control, or the call was a usage mistake.

    Never a verdict about the scenario's correctness: threads, executors, subprocesses, real
    sockets outside the simulated loopback network, code of one backend explored on the other,
    a backend package that is not installed. The message names the call, the user's
    ``file:line`` and what to do instead. :func:`asynclocks.explore` and
    :func:`asynclocks.replay` raise it; the command line prints it in one line and exits 2;
    :func:`asynclocks.check_interleavings` errors the test.
    """


#: Raised inside a schedule, an UnsupportedScenario may be caught or wrapped by the scenario's own
#: code (an ``except Exception``, a task group); it is also recorded here so that the search stops
#: with it whatever the scenario did with the exception.
_unsupported: list[UnsupportedScenario] = []


def user_frame_text(skip_library: bool = True) -> str | None:
    """``file:line`` of the innermost user-code frame on the current call stack, if any."""
    frame: types.FrameType | None = sys._getframe(1)
    while frame is not None:
        filename = frame.f_code.co_filename
        if not (skip_library and is_library(filename)):
            return f"{short_path(filename)}:{frame.f_lineno}"
        frame = frame.f_back
    return None


def unsupported(call: str, why: str, instead: str) -> UnsupportedScenario:
    """Build (and record for the running search) the error for an unsupported call.

    Args:
        call: What the scenario called, e.g. ``"asyncio.to_thread()"``.
        why: Why the explorer cannot run it, e.g. ``"threads run outside its control"``.
        instead: What to do instead, as an imperative sentence.
    """
    where = user_frame_text()
    at = f" at {where}" if where else ""
    error = UnsupportedScenario(
        f"{call}{at} is not supported inside an exploration: {why}. {instead}"
    )
    _unsupported.append(error)
    return error


def take_unsupported() -> UnsupportedScenario | None:
    """The first UnsupportedScenario recorded since the last call, clearing the record."""
    if not _unsupported:
        return None
    first = _unsupported[0]
    _unsupported.clear()
    return first


class StepLimitError(RuntimeError):
    """One schedule ran more steps than the explorer allows (a task that never stops yielding)."""


class Chooser(Protocol):
    """Decides which runnable task runs next. Called only when there is a real choice."""

    #: When True the backend computes what each step touched and calls :meth:`stepped`.
    footprints: bool
    #: Steps the schedule may take before it stops with a :class:`StepLimitError`.
    max_steps: int

    def pick(self, options: Sequence[int]) -> int:
        """Return the index into ``options`` (task ids, the event loop's own FIFO order first)."""
        ...

    def wants_footprint(self) -> bool:
        """Whether the coming step's footprint is needed."""
        ...

    def stepped(self, task: int, footprint: Any) -> None:
        """Told after each step what it touched (see ``_footprint``)."""
        ...


@dataclass(frozen=True)
class TraceEvent:
    """Something a trace shows between steps: a wake-up, a cancellation, a timeout, the clock.

    ``kind`` is a short label that leads the line (``"woke"``, ``"cancelled"``, ``"timeout"``,
    ``"time"``, or any other a recorder adds, e.g. an injected fault); ``detail`` says more;
    ``task`` is the task it happened to (None for the clock).
    """

    kind: str
    detail: str = ""
    task: int | None = None


@dataclass
class Step:
    """One step of one task: from the point it resumed to the point it next suspended.

    ``events`` happened after the previous step and before this one (recorded only while
    tracing); ``end`` says how a finished task ended (``"returned 3"``, ``"raised KeyError: 'x'"``,
    ``"cancelled"``), "" when unknown.
    """

    task: int
    name: str
    resumed: Location | None
    suspended: Location | None
    finished: bool
    preempted: bool = False
    events: tuple[TraceEvent, ...] = ()
    end: str = ""


@dataclass
class Waiting:
    """What a blocked task waits on, found when the schedule deadlocked.

    ``waits_on`` names the primitive (``"asyncio.Semaphore"``); ``state`` says what keeps it
    shut (``"held by #1 worker, which finished without releasing it"``, ``"free"``, ``"not
    set"``), "" when nothing is known; ``holder`` is the live task holding it, for the cycle.
    """

    task: int
    name: str
    where: Location | None
    waits_on: str
    holder: int | None = None
    state: str = ""


#: One step as the search records it (cheaply, while not tracing): the task id, the code
#: positions of its await chain where it stopped (``()`` when it finished; see
#: ``_footprint.Chain.key``) and whether the step was a preemption. Enough to print the trace of
#: a failing schedule that does not replay, and to tell two runs of a schedule apart.
SketchStep = tuple[int, tuple[object, ...], bool]


@dataclass
class Outcome:
    """The result of running the scenario once under one schedule."""

    kind: FailureKind | None
    error: BaseException | None
    decisions: list[int]
    options: list[int]  # how many options each decision had
    steps: list[Step] = field(default_factory=list)
    waiting: list[Waiting] = field(default_factory=list)
    task_names: dict[int, str] = field(default_factory=dict)
    sketch: list[SketchStep] = field(default_factory=list)
    #: Faults the explorer injected (see ``_faults``): (steps taken before it, what it did).
    faults: list[tuple[int, str]] = field(default_factory=list)


_LIBRARY_DIRS: tuple[str, ...] | None = None
_library_cache: dict[str, bool] = {}


#: Packages whose frames are never the user's code in a trace (more with register_library()).
_LIBRARY_PACKAGES = ["trio", "anyio", "sniffio", "outcome", "exceptiongroup"]


def register_library(*names: str) -> None:
    """Count the frames of these packages (e.g. the web frameworks a check drives) as library code,
    so traces and footprints point at the user's own lines."""
    global _LIBRARY_DIRS
    added = [name for name in names if name not in _LIBRARY_PACKAGES]
    if added:
        _LIBRARY_PACKAGES.extend(added)
        _LIBRARY_DIRS = None
        _library_cache.clear()


def _library_dirs() -> tuple[str, ...]:
    global _LIBRARY_DIRS
    if _LIBRARY_DIRS is None:
        # All of asynclocks (the explorer, the web checks...) is library code, never the user's.
        package = os.path.dirname(os.path.dirname(__file__))
        dirs = {sysconfig.get_paths()["stdlib"], package}
        for name in _LIBRARY_PACKAGES:
            # Located, not imported: exploring on asyncio must not import trio.
            try:
                spec = importlib.util.find_spec(name)
            except (ImportError, ValueError):
                continue
            module_file = spec.origin if spec is not None else None
            if module_file:
                dirs.add(os.path.dirname(module_file))
        _LIBRARY_DIRS = tuple(os.path.join(d, "") for d in dirs)
    return _LIBRARY_DIRS


def is_library(filename: str) -> bool:
    """Whether a frame in ``filename`` belongs to the event loop or a library, not user code."""
    cached = _library_cache.get(filename)
    if cached is None:
        cached = filename.startswith(_library_dirs()) or filename.startswith("<frozen")
        _library_cache[filename] = cached
    return cached


def _awaited(obj: Any) -> Any:
    for attr in ("cr_await", "gi_yieldfrom", "ag_await"):
        inner = getattr(obj, attr, None)
        if inner is not None:
            return inner
    return None


def _frame(obj: Any) -> types.FrameType | None:
    for attr in ("cr_frame", "gi_frame", "ag_frame"):
        frame = getattr(obj, attr, None)
        if frame is not None:
            return frame  # type: ignore[no-any-return]
    return None


def frames(coro: Any) -> Iterator[types.FrameType]:
    """The frames of a suspended coroutine, outermost first, following what each one awaits."""
    obj = coro
    depth = 0
    while obj is not None and depth < 200:
        frame = _frame(obj)
        if frame is None:
            return
        if getattr(obj, "cr_suspended", True) is False and not getattr(obj, "cr_running", False):
            return  # created but never started: no location yet ("start" in the trace)
        yield frame
        obj = _awaited(obj)
        depth += 1


def user_location(coro: Any) -> Location | None:
    """Where the innermost user-code frame of a suspended coroutine stands, and its caller."""
    found: Frame | None = None
    caller: Frame | None = None
    for frame in frames(coro):
        code = frame.f_code
        if not is_library(code.co_filename):
            caller = found
            found = (code.co_filename, frame.f_lineno, code.co_name)
    if found is None:
        return None
    return (found, caller)


def waited_object(coro: Any) -> object | None:
    """The object whose method the innermost user frame is awaiting (a lock, an event...)."""
    seen_user = False
    candidate: object | None = None
    for frame in frames(coro):
        if not is_library(frame.f_code.co_filename):
            seen_user = True
            candidate = None
            continue
        if seen_user and candidate is None:
            candidate = frame.f_locals.get("self")
    return candidate


def short_path(filename: str) -> str:
    """A file as a trace shows it: an installed package's from its site-packages (the same on
    every machine), anything else relative to the working directory when that is shorter."""
    for marker in ("/site-packages/", "/dist-packages/"):
        _, found, inside = filename.rpartition(marker)
        if found:
            return inside
    try:
        relative = os.path.relpath(filename)
    except ValueError:
        relative = filename
    return relative if len(relative) < len(filename) else filename


def _format_frame(frame: Frame) -> str:
    filename, line, function = frame
    return f"{short_path(filename)}:{line} ({function})"


def format_location(location: Location | None) -> str:
    """``file:line (function)``, plus ``in file:line (caller)`` when a user function called it."""
    if location is None:
        return "?"
    frame, caller = location
    text = _format_frame(frame)
    if caller is not None:
        text += f" in {_format_frame(caller)}"
    return text


def format_event(event: TraceEvent, names: dict[int, str]) -> str:
    """One event line of a trace: ``~ #1 worker woke: asyncio.Lock acquired``."""
    who = "" if event.task is None else f"{names.get(event.task, f'#{event.task}')} "
    detail = f": {event.detail}" if event.detail else ""
    if event.kind == "time":
        return f"~ {event.detail}"
    return f"~ {who}{event.kind}{detail}"


def source_line(location: Location | None) -> str:
    """The stripped source text of a location's line ("" when the file cannot be read)."""
    if location is None:
        return ""
    filename, line, _ = location[0]
    return linecache.getline(filename, line).strip()


def step_resumed(step: Step, first: bool) -> str:
    """Where a step resumed: a location, "start" (a task's first step) or "library code"."""
    if step.resumed is not None:
        return format_location(step.resumed)
    # A later step with no frame of the user's stood only in library code (an HTTP server's own
    # tasks, say).
    return "start" if first else "library code"


def step_after(step: Step) -> str:
    """Where a step ended: how its task ended if it finished, else the await it stopped at."""
    if step.finished:
        return step.end or "finished"
    return "library code" if step.suspended is None else format_location(step.suspended)


def describe_object(obj: object) -> str:
    """A short, process-independent name for a synchronisation object."""
    if obj is None:
        return "something outside the scenario (nothing in it can wake this task)"
    cls = type(obj)
    module = cls.__module__
    public = {
        "asyncio.locks": "asyncio",
        "trio._sync": "trio",
        "trio._core._parking_lot": "trio.lowlevel",
        "anyio._core._synchronization": "anyio",
        "anyio._backends._asyncio": "anyio",
        "anyio._backends._trio": "anyio",
    }.get(module, module)
    return f"{public}.{cls.__qualname__}"


def short_repr(value: object, limit: int = 40) -> str:
    """``repr(value)`` cut to ``limit`` characters (a trace line stays one line)."""
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - a broken __repr__ must not break the trace
        text = f"<{type(value).__name__}>"
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe_end(error: BaseException | None, cancelled: bool, result: object) -> str:
    """How a task ended, as a trace shows it: returned, raised or cancelled."""
    if cancelled:
        return "cancelled"
    if error is not None:
        text = " ".join(str(error).split())
        if len(text) > 60:
            text = text[:57] + "..."
        return f"raised {type(error).__name__}" + (f": {text}" if text else "")
    # None is also what anyio's task wrapper returns whatever the function did: say no more.
    return "returned" if result is None else f"returned {short_repr(result)}"


def task_label(name: str) -> str:
    """A task's name without the ``module.`` prefix anyio and trio add to function names."""
    parts = name.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        if ".".join(parts[:cut]) in sys.modules:
            name = ".".join(parts[cut:])
            break
    return name.rpartition("<locals>.")[2] or name
