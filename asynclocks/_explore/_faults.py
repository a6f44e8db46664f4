"""Faults the search injects itself: a task cancelled at an await, a timeout fired early.

With ``cancel="auto"`` or ``timeouts="auto"``, every decision of a schedule offers the runnable
tasks (the stock loop's order, as always) followed by one option per fault that could happen
right there. At a point where no task can run, the decision is :data:`WAIT` (let virtual time
pass: the stock loop's choice, index 0) followed by the faults. A fault is therefore one more
index in the schedule, recorded in the token like any preemption, and a replay injects it at the
same point. Faults are offered while the schedule's budget lasts (``fault_budget``, one by
default), so with faults off the decisions, and every token recorded before, are unchanged.

What a fault does, per backend:

* cancel, asyncio: ``task.cancel()`` of a task that stands at an await (started, not finished,
  not already being cancelled). A task of an anyio task group is cancelled through scopes
  instead, as anyio code only ever is (a raw ``task.cancel()`` would go through its shields):
  its own innermost cancel scope, and its group's.
* cancel, trio: the task's own innermost cancel scope, if it opened one, and the cancel scope of
  the nursery it was started in (its siblings are cancelled with it). That is how cancellation
  reaches a trio task from outside, and the task's shielded scopes keep it out, as they would.
  A shielded scope or one with a deadline is never cancelled itself (that would break the shield
  from inside, or time out a scope early: a timeout fault does that). The scenario's own task is
  never cancelled: its failure would be the explorer's, not the code's.
* timeout (both): the deadline of a pending ``asyncio.timeout``/``asyncio.wait_for``, anyio's
  ``fail_after``/``move_on_after`` or a trio cancel scope with a deadline is moved to the
  current virtual time, so it fires now, through the library's own expiry path (``TimeoutError``,
  ``TooSlowError``, a ``move_on`` that is ``cancelled_caught``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from ._common import TraceEvent

#: The values ``cancel`` and ``timeouts`` take.
FaultMode = Literal["off", "auto"]
FAULT_MODES: tuple[FaultMode, ...] = ("off", "auto")

#: The kind of the trace event of an injected fault (``~ injected by the explorer: ...``).
INJECTED = "injected by the explorer"

#: How a fault's text names a task's own innermost cancel scope (both backends cancel it).
OWN_SCOPE = "its own innermost cancel scope"

#: The option id meaning "no task can run: let the loop wait" (index 0 at such a decision).
WAIT = -1

_CODE_RE = re.compile(r"^(c?)(t?)(\d+)$")


def fault_option(index: int) -> int:
    """The option id of the ``index``-th fault offered at a decision (task ids are >= 0)."""
    return -2 - index


@dataclass(frozen=True)
class Faults:
    """Which faults the search may inject, and how many per schedule."""

    cancel: bool = False
    timeouts: bool = False
    budget: int = 1

    @property
    def active(self) -> bool:
        """Whether any fault can be injected at all."""
        return (self.cancel or self.timeouts) and self.budget > 0

    def code(self) -> str:
        """The token's spelling: ``""`` when off, else e.g. ``"ct1"`` (cancel, timeouts, budget)."""
        if not self.active:
            return ""
        return f"{'c' if self.cancel else ''}{'t' if self.timeouts else ''}{self.budget}"

    def options(self) -> dict[str, object]:
        """The keyword arguments of :func:`asynclocks.explore` that select these faults."""
        return {
            "cancel": "auto" if self.cancel else "off",
            "timeouts": "auto" if self.timeouts else "off",
            "fault_budget": self.budget,
        }


NO_FAULTS = Faults()


def faults_from_code(code: str) -> Faults:
    """Parse :meth:`Faults.code` (the empty string is no faults).

    Raises:
        ValueError: ``code`` is not one :meth:`Faults.code` makes.
    """
    if not code:
        return NO_FAULTS
    match = _CODE_RE.match(code)
    if match is None or not (match.group(1) or match.group(2)) or int(match.group(3)) < 1:
        raise ValueError(f"bad fault code {code!r}")
    return Faults(bool(match.group(1)), bool(match.group(2)), int(match.group(3)))


def check_faults(cancel: object, timeouts: object, fault_budget: object) -> Faults:
    """The :class:`Faults` these arguments of :func:`asynclocks.explore` ask for.

    Raises:
        TypeError: An argument has the wrong type.
        ValueError: ``cancel``/``timeouts`` is not ``"off"`` or ``"auto"``, or the budget is < 1.
    """
    for name, value in (("cancel", cancel), ("timeouts", timeouts)):
        if not isinstance(value, str):
            raise TypeError(f"{name} must be 'off' or 'auto', not {type(value).__name__}")
        if value not in FAULT_MODES:
            raise ValueError(f"{name} must be 'off' or 'auto', not {value!r}")
    if not isinstance(fault_budget, int) or isinstance(fault_budget, bool):
        raise TypeError(f"fault_budget must be an int, not {type(fault_budget).__name__}")
    if fault_budget < 1:
        raise ValueError(f"fault_budget must be >= 1, got {fault_budget}")
    return Faults(cancel == "auto", timeouts == "auto", fault_budget)


@dataclass
class Fault:
    """One fault on offer at a decision: what the trace will say, and how to make it happen.

    ``expired`` is the trace's event for a timeout whose early firing the backend does not see
    as a timer coming due (asyncio's ``reschedule`` to now calls back at once): the same event a
    deadline that fires on time shows.
    """

    text: Callable[[], str]
    inject: Callable[[], object]
    expired: TraceEvent | None = None


class FaultLog:
    """One schedule's faults: the budget left and what was injected, at which step."""

    __slots__ = ("left", "injected")

    def __init__(self, faults: Faults) -> None:
        self.left = faults.budget if faults.active else 0
        #: (number of steps taken before it, text) per injected fault.
        self.injected: list[tuple[int, str]] = []

    def inject(self, fault: Fault, steps: int) -> tuple[TraceEvent, ...]:
        """Inject ``fault`` now (after ``steps`` steps), recording it; the trace's events for it
        (the injection, then the timeout's expiry when the backend will not show that itself)."""
        self.left -= 1
        text = fault.text()
        self.injected.append((steps, text))
        fault.inject()
        event = TraceEvent(INJECTED, text)
        return (event,) if fault.expired is None else (event, fault.expired)

    def choose_idle(
        self,
        offered: Sequence[Fault],
        pick: Callable[[Sequence[int]], int],
        decisions: list[int],
        widths: list[int],
        steps: int,
    ) -> tuple[TraceEvent, ...]:
        """No task can run: decide between :data:`WAIT` and the ``offered`` faults (not empty).

        The decision is recorded in ``decisions``/``widths``; a chosen fault is injected (after
        ``steps`` steps) and its trace events returned, none when the choice was to wait.
        """
        options = [WAIT, *(fault_option(i) for i in range(len(offered)))]
        index = pick(options)
        decisions.append(index)
        widths.append(len(options))
        return self.inject(offered[index - 1], steps) if index else ()
