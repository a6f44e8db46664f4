"""The exploration report, the replay token and the readable trace."""

from __future__ import annotations

import os
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from ._common import (
    Backend,
    FailureKind,
    Outcome,
    Step,
    Strategy,
    Waiting,
    format_event,
    format_location,
    source_line,
    step_after,
    step_resumed,
)
from ._faults import NO_FAULTS, Faults, faults_from_code

TOKEN_VERSION = "al1"
_BACKEND_CODES: dict[Backend, str] = {"asyncio": "a", "trio": "t"}
_CODE_BACKENDS = {code: name for name, code in _BACKEND_CODES.items()}
_TOKEN_RE = re.compile(
    r"^al(\d+):([a-z])(?:-([a-z0-9]+))?:(\d+):([0-9=,]*):([0-9a-f]{4}):([0-9a-f]{4})$"
)


@dataclass(frozen=True)
class Schedule:
    """A decoded token: the backend and the index chosen at every scheduling decision."""

    backend: Backend
    decisions: tuple[int, ...]
    shape: str = ""
    #: The faults the search could inject when it recorded the schedule (replayed the same way).
    faults: Faults = NO_FAULTS

    @property
    def preemptions(self) -> int:
        """Decisions that differ from the order the stock event loop would pick."""
        return sum(1 for d in self.decisions if d)


def _checksum(body: str) -> str:
    return f"{zlib.crc32(body.encode()) & 0xFFFF:04x}"


def shape_of(widths: Sequence[int]) -> str:
    """A fingerprint of how many tasks were runnable at each decision (detects a changed tree)."""
    return _checksum(",".join(map(str, widths)))


def encode_token(
    backend: Backend,
    decisions: Sequence[int],
    widths: Sequence[int],
    faults: Faults = NO_FAULTS,
) -> str:
    """A short printable token.

    ``al1:<backend>:<decision count>:<index=choice,...>:<shape>:<checksum>``: only decisions that
    differ from the stock loop's choice are listed; the shape fingerprints the number of runnable
    tasks at every decision so a replay notices a scenario that changed. With faults on, the
    backend is followed by their code (``a-c1``: cancellations, at most one per schedule), since
    they add options to the decisions; tokens without faults are spelled as they always were.
    """
    changed = ",".join(f"{i}={d}" for i, d in enumerate(decisions) if d)
    shape = shape_of(widths)
    code = faults.code()
    where = _BACKEND_CODES[backend] + (f"-{code}" if code else "")
    body = f"{TOKEN_VERSION}:{where}:{len(decisions)}:{changed}:{shape}"
    return f"{body}:{_checksum(body)}"


def decode_token(token: object) -> Schedule:
    """Parse a token made by :func:`encode_token`.

    Raises:
        TypeError: ``token`` is not a string.
        ValueError: it is malformed, of another version, or its checksum does not match.
    """
    if not isinstance(token, str):
        raise TypeError(f"token must be a str, not {type(token).__name__}")
    text = token.strip()
    match = _TOKEN_RE.match(text)
    if match is None:
        if not text.startswith("al"):
            raise ValueError(f"malformed token {token!r}: it must start with {TOKEN_VERSION!r}")
        raise ValueError(
            f"malformed token {token!r}: expected "
            "'al1:<backend>:<count>:<decisions>:<shape>:<checksum>'"
        )
    version, code, fault_code, count_text, changed, shape, checksum = match.groups()
    if f"al{version}" != TOKEN_VERSION:
        raise ValueError(
            f"token {token!r} has version al{version}; this asynclocks reads {TOKEN_VERSION} tokens"
        )
    body = text.rsplit(":", 1)[0]
    if _checksum(body) != checksum:
        raise ValueError(f"token {token!r} is corrupted: its checksum does not match")
    if code not in _CODE_BACKENDS:
        raise ValueError(f"token {token!r} names an unknown backend code {code!r}")
    try:
        faults = faults_from_code(fault_code or "")
    except ValueError:
        raise ValueError(f"token {token!r} names unknown faults {fault_code!r}") from None
    count = int(count_text)
    decisions = [0] * count
    if changed:
        for item in changed.split(","):
            index_text, _, value_text = item.partition("=")
            if not index_text or not value_text:
                raise ValueError(f"malformed token {token!r}: bad decision {item!r}")
            index, value = int(index_text), int(value_text)
            if index >= count or value == 0:
                raise ValueError(f"malformed token {token!r}: decision {item!r} is out of range")
            decisions[index] = value
    return Schedule(_CODE_BACKENDS[code], tuple(decisions), shape, faults)


@dataclass
class Report:
    """What an exploration found.

    Attributes:
        failed: True when some schedule failed.
        kind: ``None``, ``"exception"`` (the scenario raised) or ``"deadlock"``.
        error: The exception the failing schedule raised (a single exception inside an exception
            group is unwrapped), or a :class:`DeadlockError` describing the blocked tasks.
        schedules: How many schedules ran while searching (shrinking and replays not counted).
        exhaustive: True when every schedule within the bound was explored.
        token: Replays the failing schedule with :func:`asynclocks.replay`; None if none failed.
        trace: A readable timeline of the failing schedule (empty when nothing failed). A long
            one is elided around the race window and the end, with a count of the steps left
            out; :meth:`format_trace` with ``full=True`` shows every step.
        backend: ``"asyncio"`` or ``"trio"``.
        strategy: The strategy that ran (``"custom"`` for a :class:`Scheduler` of your own).
        preemption_bound: The bound on preemptions (None: unbounded).
        preemptions: Preemptions in the reported (shrunk) failing schedule.
        nondeterministic: True when a schedule did not behave the same way twice (the failing
            one replayed, or the first one run again after the search): the scenario depends on
            something the explorer does not control. ``error``, ``trace`` and ``token`` are then
            the search's own failing run, and ``notes`` name the likely cause.
        seconds: Wall-clock time the exploration took.
        notes: Sentences about the verdict: why the scenario is nondeterministic and the likely
            cause, what the search could not cover.
        window: For a failure that is an exception: the race window, the conflicting accesses
            the explorer saw (the task's read, the await after it, the other task's write and
            the first task's next access, each with its ``file:line``); "" when none was seen.
        faults: The faults the search could inject (``cancel``/``timeouts``/``fault_budget``).
        injected: What the explorer injected in the reported failing schedule (a task
            cancelled at an await, a timeout fired early), one sentence each; also shown in
            the trace at the step where it happened.
    """

    failed: bool
    kind: FailureKind | None
    error: BaseException | None
    schedules: int
    exhaustive: bool
    token: str | None
    trace: str
    backend: Backend
    strategy: Strategy | Literal["replay", "custom"]
    preemption_bound: int | None = None
    preemptions: int = 0
    nondeterministic: bool = False
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    #: Whether dfs pruned schedules equivalent to explored ones (sleep sets).
    reduced: bool = False
    window: str = ""
    faults: Faults = NO_FAULTS
    injected: list[str] = field(default_factory=list)
    # What the trace was printed from, to print it again in full.
    _traced: tuple[Outcome, list[Step], tuple[int, ...]] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def format_trace(self, full: bool = False) -> str:
        """The trace of the failing schedule; ``full=True`` shows every step, none elided."""
        if self._traced is None or self.token is None:
            return self.trace
        outcome, steps, keep = self._traced
        return format_trace(outcome, self.token, full=full, keep=keep, steps=steps)

    def to_html(self) -> str:
        """The report as a self-contained HTML page: one lane per task on a time axis of steps,
        await points and events marked, the race window highlighted, each step's source line
        on hover (inline CSS and JavaScript; it loads nothing)."""
        from ._html import render_html

        return render_html(self)

    def write_html(self, path: str | os.PathLike[str]) -> None:
        """Write :meth:`to_html` to ``path`` (UTF-8).

        Raises:
            TypeError: ``path`` is not a str or path-like.
            OSError: The file cannot be written.
        """
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a str or os.PathLike, not {type(path).__name__}")
        with open(path, "w", encoding="utf-8") as page:
            page.write(self.to_html())

    @property
    def coverage(self) -> str:
        """One sentence: what was explored and within which bound."""
        bound = (
            "no preemption bound"
            if self.preemption_bound is None
            else f"at most {self.preemption_bound} preemption(s)"
        )
        if self.faults.active:
            kinds = " or ".join(
                kind
                for kind, on in (
                    ("cancellation", self.faults.cancel),
                    ("early timeout", self.faults.timeouts),
                )
                if on
            )
            bound += f", up to {self.faults.budget} injected fault(s) ({kinds})"
        plural = "s" if self.schedules != 1 else ""
        if self.exhaustive:
            how: str = self.strategy
            if self.reduced:
                how += (
                    " with partial-order reduction (DPOR + sleep sets): every schedule not run"
                    " is equivalent to one run"
                )
            return f"all {self.schedules} schedule{plural} with {bound} ({how}; exhaustive)"
        return (
            f"{self.schedules} schedule{plural} with {bound} ({self.strategy}; not exhaustive: "
            "more schedules exist)"
        )

    @property
    def verdict(self) -> str:
        """One line: the headline result."""
        if not self.failed:
            if self.exhaustive:
                return f"PASS on {self.backend}: no failure in {self.coverage}"
            return f"no failure found on {self.backend} in {self.coverage}"
        what = "DEADLOCK" if self.kind == "deadlock" else "FAIL"
        error = f"{type(self.error).__name__}: {self.error}" if self.kind == "exception" else ""
        head = f"{what} on {self.backend} after {self.schedules} schedule(s)"
        if error:
            head += f": {error}"
        if self.nondeterministic:
            head += " (NONDETERMINISTIC: the replay did not reproduce it)"
        return head

    def __str__(self) -> str:
        parts = [self.verdict]
        if self.injected:
            parts.append("faults injected by the explorer: " + "; ".join(self.injected))
        if self.window:
            parts.append(self.window)
        if self.failed:
            parts += [self.trace, f"token: {self.token}"]
        parts += self.notes
        return "\n".join(parts)


def unwrap_error(error: BaseException | None) -> BaseException | None:
    """The single leaf of nested one-exception groups (a TaskGroup wraps a child's error so)."""
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return error


def format_waiting(waiting: Sequence[Waiting], names: dict[int, str]) -> str:
    """The deadlock section: each blocked task, what it waits on, who holds it, the cycle."""
    lines = ["deadlock: every task is blocked and no timer can wake any of them"]
    for item in waiting:
        state = f", {item.state}" if item.state else ""
        if not item.state and item.holder is not None:
            state = f", held by {names.get(item.holder, f'#{item.holder}')}"
        lines.append(
            f"  {item.name} at {format_location(item.where)} waits on {item.waits_on}{state}"
        )
    cycle = wait_for_cycle(waiting)
    if cycle:
        lines.append("wait-for cycle: " + " -> ".join(names.get(t, f"#{t}") for t in cycle))
    return "\n".join(lines)


def wait_for_cycle(waiting: Sequence[Waiting]) -> list[int]:
    """Task ids forming a cycle in the waits-on-a-lock-held-by graph (first repeated at the end)."""
    edges = {w.task: w.holder for w in waiting if w.holder is not None}
    for start in sorted(edges):
        seen: list[int] = []
        node: int | None = start
        while node is not None and node not in seen:
            seen.append(node)
            node = edges.get(node)
        if node is not None:
            cycle = seen[seen.index(node) :]
            return [*cycle, node]
    return []


#: A trace longer than this many steps is elided (unless printed in full).
TRACE_LIMIT = 40
#: Steps kept at the start and the end of an elided trace, and around each window step.
TRACE_HEAD = 4
TRACE_TAIL = 8
TRACE_CONTEXT = 2


def _shown(count: int, keep: Sequence[int]) -> list[bool]:
    shown = [False] * count
    for index in [*range(min(TRACE_HEAD, count)), *range(max(0, count - TRACE_TAIL), count)]:
        shown[index] = True
    for index in keep:
        for near in range(index - TRACE_CONTEXT, index + TRACE_CONTEXT + 1):
            if 0 <= near < count:
                shown[near] = True
    # Eliding a single step saves nothing: show it.
    for index in range(1, count - 1):
        if not shown[index] and shown[index - 1] and shown[index + 1]:
            shown[index] = True
    return shown


def format_trace(
    outcome: Outcome,
    token: str,
    *,
    full: bool = False,
    keep: Sequence[int] = (),
    steps: Sequence[Step] | None = None,
) -> str:
    """A step-by-step timeline of one schedule.

    Args:
        outcome: The schedule's outcome (its steps, unless ``steps`` is given, and its failure).
        token: The schedule's token, shown in the heading.
        full: Show every step. Otherwise a trace of more than ``TRACE_LIMIT`` steps shows its
            first and last steps and those around ``keep``, each gap replaced by a count.
        keep: Indices of steps to show in an elided trace (the race window's).
        steps: The steps to show, when not the outcome's own (rebuilt from its sketch).
    """
    names = outcome.task_names
    steps = outcome.steps if steps is None else steps
    width = max([len(s.name) for s in steps] + [4])
    preemptions = sum(1 for d in outcome.decisions if d)
    lines = [f"schedule {token} ({preemptions} preemption(s))"]
    lines.append(f"  step  {'task':<{width}}  resumed at -> next await")
    if full or len(steps) <= TRACE_LIMIT:
        shown = [True] * len(steps)
    else:
        preempted = [index for index, step in enumerate(steps) if step.preempted]
        shown = _shown(len(steps), [*keep, *preempted[:10]])
    hidden = 0
    started: set[int] = set()
    for number, step in enumerate(steps, 1):
        first_step = step.task not in started  # a task's first step starts it
        started.add(step.task)
        if not shown[number - 1]:
            hidden += 1
            continue
        if hidden:
            lines.append(f"  ... {hidden:,} steps elided ...")
            hidden = 0
        mark = "*" if step.preempted else " "
        for event in step.events:
            lines.append(f"{'':>8}{format_event(event, names)}")
        resumed = step_resumed(step, first_step)
        lines.append(f"{mark}{number:>5}  {step.name:<{width}}  {resumed} -> {step_after(step)}")
        source = None if step.finished else source_line(step.suspended)
        if source:
            lines.append(f"{'':>8}{'':<{width}}  | {source}")
    if hidden:
        lines.append(f"  ... {hidden:,} steps elided ...")
    if any(step.preempted for step in steps):
        lines.append("  (* = a preemption: not the task the stock event loop would have run next)")
    if outcome.kind == "deadlock":
        lines.append(format_waiting(outcome.waiting, names))
    elif outcome.error is not None:
        error = unwrap_error(outcome.error)
        lines.append(f"raised {type(error).__name__}: {error}")
    return "\n".join(lines)
