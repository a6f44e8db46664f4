"""Source-set dynamic partial-order reduction for dfs: races of one schedule, and the branches
their reversals need.

Abdulla, Aronis, Jonsson and Sagonas, "Optimal dynamic partial order reduction" (POPL 2014),
Algorithm 1 ("source DPOR"), on the stateless search of ``_dfs``: a decision explores only the
tasks in its *backtrack set* (the first task it ran, then those races add), minus its sleep set.
After each step ``e`` of task ``p``, every earlier step ``e'`` of another task that is dependent
with ``e`` (:func:`.._footprint.independent` says no) and does not happen before it through other
steps is a race; to reverse it, the decision where ``e'`` ran must also explore an *initial* of
``v``, the steps after ``e'`` that do not happen after it followed by ``e``: a task whose first step
in ``v`` has no predecessor in ``v``. If one already is in the backtrack or sleep set, nothing is
added.

Happens-before is tracked with vector clocks over program order (a task's steps), dependency,
and *appearance*: the step after which a task entered the options (spawned, woken, or a new trio
batch) happens before that task's next step. That covers wake-ups without the backends saying
who woke whom, and it is sound for trio's batches too: a task in no option list cannot be an
initial anywhere its appearance has not happened yet. A step taken without a decision offered
exactly one task (asyncio: the only runnable one; trio: the last of its batch).

Where the model is not that simple the decision explores every option (as sleep sets alone did):
a decision offering faults (negative ids), a race with a step whose footprint is unknown (it
touches everything: a task ending with an error may cancel its siblings), and a race whose
initials are not among the decision's options. An injected fault (or letting time pass) may
affect any task: every decision before it explores every option.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._footprint import Footprint, independent

if TYPE_CHECKING:
    from ._dfs import _Node

#: The pseudo-task of an injected fault's event: it is dependent with every step.
FAULT_TASK = -1
#: Steps of one schedule that DPOR follows. Each step is compared with the earlier steps that
#: do not happen before it, so a long schedule of independent steps (a task spinning on
#: ``sleep(0)`` until the step limit) costs quadratic time: past this many, every decision of
#: the schedule explores every option, as with sleep sets alone.
MAX_TRACKED_STEPS = 1_000


class Races:
    """The steps of one schedule with their vector clocks; adds race reversals to the nodes."""

    __slots__ = (
        "tasks",
        "footprints",
        "seqs",
        "clocks",
        "nodes",
        "_slot",
        "_count",
        "_last",
        "_events",
        "_appeared",
        "_present",
        "_path",
        "check_from",
        "fallbacks",
        "off",
    )

    def __init__(self, path: list[_Node], check_from: int) -> None:
        #: Per step: its task, footprint, number within its task (from 1), vector clock (indexed
        #: by task slot: the number of that task's steps that happen before or are this one), and
        #: the node it was chosen at (None: taken without a decision).
        self.tasks: list[int] = []
        self.footprints: list[Footprint] = []
        self.seqs: list[int] = []
        self.clocks: list[list[int]] = []
        self.nodes: list[_Node | None] = []
        self._slot: dict[int, int] = {}
        # Per task slot: its number of steps, its last step, and the indexes of its steps.
        self._count: list[int] = []
        self._last: list[int] = []
        self._events: list[list[int]] = []
        self._appeared: dict[int, int] = {}
        self._present: frozenset[int] | tuple[int, ...] = ()
        self._path = path
        #: Steps before this index repeat the previous schedule's (the replayed prefix): their
        #: races were handled when they first ran.
        self.check_from = check_from
        #: Races reversed conservatively (every option) because no initial was among the options.
        self.fallbacks = 0
        #: Set past :data:`MAX_TRACKED_STEPS`: every decision of this schedule explores every
        #: option, and steps are no longer recorded.
        self.off = False

    def step(
        self,
        task: int,
        footprint: Footprint,
        node: _Node | None,
        present: frozenset[int] | tuple[int, ...],
    ) -> None:
        """Record a step (``present``: the tasks offered before it) and reverse its races."""
        k = len(self.tasks)
        if k >= MAX_TRACKED_STEPS:
            self.off = True
            for node in self._path:
                node.full = True
            return
        previous = self._present
        appeared = self._appeared
        for other in present:
            if other not in previous:
                appeared[other] = k - 1
        self._present = present
        slot = self._slot.get(task)
        if slot is None:
            slot = self._slot[task] = len(self._count)
            self._count.append(0)
            self._last.append(-1)
            self._events.append([])
        seq = self._count[slot] + 1
        self._count[slot] = seq
        clocks = self.clocks
        last = self._last[slot]
        clock = clocks[last][:] if last >= 0 else []
        enabler = appeared.get(task, -1)
        if enabler > last:
            _join(clock, clocks[enabler])
        if len(clock) <= slot:
            clock.extend([0] * (slot + 1 - len(clock)))
        clock[slot] = seq
        tasks = self.tasks
        seqs = self.seqs
        footprints = self.footprints
        slots = self._slot
        races: list[int] = []
        check = k >= self.check_from
        # Latest first: a step that happens before a later predecessor of this one is covered
        # by that predecessor's clock and is no race. Steps before ``low`` (the earliest step of
        # another task not covered yet) are all covered: the scan stops there.
        low = self._uncovered(clock, slot)
        i = k - 1
        while i >= low:
            other_slot = slots[tasks[i]]
            if not (other_slot < len(clock) and clock[other_slot] >= seqs[i]) and not independent(
                footprints[i], footprint
            ):
                if check:
                    races.append(i)
                _join(clock, clocks[i])
                low = self._uncovered(clock, slot)
            i -= 1
        tasks.append(task)
        footprints.append(footprint)
        seqs.append(seq)
        clocks.append(clock)
        self.nodes.append(node)
        self._last[slot] = k
        self._events[slot].append(k)
        for i in races:
            self._reverse(i, k)

    def _uncovered(self, clock: list[int], slot: int) -> int:
        """The index of the earliest step of a task other than ``slot``'s that ``clock`` does not
        cover (the number of steps past the last one when there is none)."""
        low = len(self.tasks)
        width = len(clock)
        for other, events in enumerate(self._events):
            if other == slot:
                continue
            covered = clock[other] if other < width else 0
            if covered < len(events) and events[covered] < low:
                low = events[covered]
        return low

    def fault(self, node: _Node) -> None:
        """An injected fault (or time let pass) at ``node``: it may affect any task, so every
        decision so far explores every option, and every later step happens after it."""
        for earlier in self._path:
            earlier.full = True
            if earlier is node:
                break
        self.step(FAULT_TASK, None, node, self._present)

    def _reverse(self, i: int, k: int) -> None:
        node = self.nodes[i]
        if node is None or node.full:
            if node is None:
                # No decision there (one option): by the appearance rule no race can start at
                # such a step, so this is the model falling short; every decision before it
                # explores every option, as sleep sets alone would.
                self.fallbacks += 1
                for earlier in self.nodes[:i]:
                    if earlier is not None:
                        earlier.full = True
            return
        footprints = self.footprints
        if footprints[i] is None or footprints[k] is None:
            node.full = True
            return
        initials = self._initials(i, k)
        done = {node.options[index] for index in node.backtrack}
        if not initials.isdisjoint(done) or not initials.isdisjoint(node.sleep):
            return
        task = self.tasks[k]
        options = node.options
        if task in initials and task in options:
            node.backtrack.add(options.index(task))
            return
        for index, option in enumerate(options):
            if option in initials:
                node.backtrack.add(index)
                return
        self.fallbacks += 1
        node.full = True

    def _initials(self, i: int, k: int) -> set[int]:
        """The tasks whose first step in ``v`` (the steps after ``i`` that do not happen after
        it, then ``k``) has no predecessor in ``v``."""
        tasks = self.tasks
        seqs = self.seqs
        clocks = self.clocks
        slots = self._slot
        race_slot = slots[tasks[i]]
        race_seq = seqs[i]
        # First step in v of each task, in order.
        first: dict[int, int] = {}
        for j in range(i + 1, k):
            task = tasks[j]
            if task in first:
                continue
            clock = clocks[j]
            if race_slot < len(clock) and clock[race_slot] >= race_seq:
                continue  # happens after i: not in v
            first[task] = j
        first.setdefault(tasks[k], k)
        initials: set[int] = set()
        for task, j in first.items():
            clock = clocks[j]
            preceded = False
            for other, start in first.items():
                if start >= j:
                    continue
                other_slot = slots[other]
                if other_slot < len(clock) and clock[other_slot] >= seqs[start]:
                    preceded = True
                    break
            if not preceded:
                initials.add(task)
        return initials


def _join(clock: list[int], other: list[int]) -> None:
    if len(clock) < len(other):
        clock.extend([0] * (len(other) - len(clock)))
    for index, value in enumerate(other):
        if clock[index] < value:
            clock[index] = value
