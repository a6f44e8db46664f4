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

from bisect import bisect_left
from typing import TYPE_CHECKING

from .._footprint import OBJECT_LABELS, Footprint, independent

if TYPE_CHECKING:
    from ._dfs import _Node

#: The pseudo-task of an injected fault's event: it is dependent with every step.
FAULT_TASK = -1
#: Steps of one schedule that DPOR follows. Each step is compared with the earlier steps that
#: do not happen before it, so a long schedule of independent steps (a task spinning on
#: ``sleep(0)`` until the step limit) costs quadratic time: past this many, every decision of
#: the schedule explores every option, as with sleep sets alone.
MAX_TRACKED_STEPS = 1_000


#: A step of the schedule, as :class:`Races` records it: ``(task, slot, footprint, seq, clock,
#: node, present, labelled, labelling)`` (read by index: this runs at every new step of every
#: schedule): the task and its slot (its index in the clocks), its footprint, its number within
#: its task (from 1), its vector clock (per slot: how many of that task's steps happen before it
#: or are it), the node it was chosen at (None: taken without a decision), the tasks offered
#: before it, how many objects the run had labelled once its footprint was computed, and whether
#: computing it labelled any. A replayed step that labelled none need not be computed again
#: (``_dfs``): its footprint is the one recorded, and the later steps' labels stay the same.
RecordedStep = tuple[
    int, int, Footprint, int, list[int], "_Node | None", tuple[int, ...], int, bool
]


class Races:
    """The steps of the current schedule with their vector clocks; adds race reversals to the
    nodes. One per search: a schedule repeats the previous one's steps up to the decision it
    changes (the search is deterministic), so those are kept, not recomputed (:meth:`restart`).
    """

    __slots__ = ("steps", "_slot", "_events", "_path", "fallbacks", "off")

    def __init__(self, path: list[_Node]) -> None:
        #: The schedule's steps (see :data:`RecordedStep`).
        self.steps: list[RecordedStep] = []
        self._slot: dict[int, int] = {}
        # Per task slot: the indexes of its steps.
        self._events: list[list[int]] = []
        self._path = path
        #: Races reversed conservatively (every option) because no initial was among the options.
        self.fallbacks = 0
        #: Set past :data:`MAX_TRACKED_STEPS`: every decision of this schedule explores every
        #: option, and steps are no longer recorded.
        self.off = False

    def restart(self, keep: int) -> int:
        """A new schedule that repeats the first ``keep`` steps of the previous one; returns how
        many of those are recorded (all of them, unless the previous schedule went past
        :data:`MAX_TRACKED_STEPS`)."""
        steps = self.steps
        # Past the limit already (every decision there explores every option): stay off.
        self.off = keep > len(steps)
        del steps[keep:]
        for events in self._events:
            # Step indexes in order: cut at the first one not kept.
            del events[bisect_left(events, keep) :]
        return len(steps)

    def step(
        self,
        task: int,
        footprint: Footprint,
        node: _Node | None,
        present: tuple[int, ...],
    ) -> None:
        """Record a step (``present``: the tasks offered before it) and reverse its races."""
        steps = self.steps
        k = len(steps)
        if k >= MAX_TRACKED_STEPS:
            self.off = True
            for earlier in self._path:
                earlier.full = True
            return
        slot = self._slot.get(task)
        events = self._events
        if slot is None:
            slot = self._slot[task] = len(events)
            events.append([])
        mine = events[slot]
        seq = len(mine) + 1
        width = len(events)
        if mine:
            last = mine[-1]
            # Clocks are as wide as the tasks seen when they were made: widen this one to all.
            clock = steps[last][4][:]
            if len(clock) < width:
                clock.extend([0] * (width - len(clock)))
        else:
            last = -1
            clock = [0] * width
        # Appearance: the step after which the task entered the options (walking back over the
        # steps it was offered before, down to its own last step, which program order covers).
        j = k - 1
        while j > last and task in steps[j][6]:
            j -= 1
        if j > last:
            for index, value in enumerate(steps[j][4]):
                if clock[index] < value:
                    clock[index] = value
        clock[slot] = seq
        # Latest first: a step that happens before a later predecessor of this one is covered
        # by that predecessor's clock and is no race. Steps before ``low`` (the earliest step of
        # another task not covered yet) are all covered: the scan stops there. (Inlined twice:
        # this runs at every new step of every schedule.)
        # (Its own task is skipped without a test: ``clock[slot]`` is past its recorded steps.)
        low = k
        for other, theirs in enumerate(events):
            covered = clock[other]
            if covered < len(theirs) and theirs[covered] < low:
                low = theirs[covered]
        races: list[int] | None = None
        i = k - 1
        while i >= low:
            prior = steps[i]
            # One footprint object (steps at one code position, resolved alike, are memoised to
            # the same) that writes conflicts with itself: no call to find that out.
            seen = prior[2]
            if clock[prior[1]] < prior[3] and (
                (seen is footprint and seen is not None and seen[1])
                or not independent(seen, footprint)
            ):
                if races is None:
                    races = [i]
                else:
                    races.append(i)
                for index, value in enumerate(prior[4]):
                    if clock[index] < value:
                        clock[index] = value
                if i - low > width:
                    # The bound only rises with the clock: worth finding again only when more
                    # steps are left to scan than it costs (one pass over the tasks).
                    low = k
                    for other, theirs in enumerate(events):
                        covered = clock[other]
                        if covered < len(theirs) and theirs[covered] < low:
                            low = theirs[covered]
            i -= 1
        labelled = len(OBJECT_LABELS)
        labelling = labelled > (steps[-1][7] if steps else 0)
        steps.append((task, slot, footprint, seq, clock, node, present, labelled, labelling))
        mine.append(k)
        if races is not None:
            for i in races:
                self._reverse(i, k)

    def fault(self, node: _Node, tasks: tuple[int, ...]) -> None:
        """An injected fault (or time let pass) at ``node`` (offering ``tasks``): it may affect
        any task, so every decision so far explores every option, and every later step happens
        after it (its footprint is unknown)."""
        if self.off:
            return
        for earlier in self._path:
            earlier.full = True
            if earlier is node:
                break
        self.step(FAULT_TASK, None, node, tasks)

    def _reverse(self, i: int, k: int) -> None:
        steps = self.steps
        node = steps[i][5]
        if node is None:
            # No decision there (one option): by the appearance rule no race can start at such
            # a step, so this is the model falling short; every decision before it explores
            # every option, as sleep sets alone would.
            self.fallbacks += 1
            for earlier in steps[:i]:
                if earlier[5] is not None:
                    earlier[5].full = True
            return
        options = node.options
        if node.full or len(node.backtrack) == len(options):
            return  # every option is explored there already
        if steps[i][2] is None or steps[k][2] is None:
            node.full = True
            return
        task = steps[k][0]
        # Adjacent steps: v is the later step alone, its task the only initial.
        initials = {task} if i == k - 1 else self._initials(i, k)
        for index in node.backtrack:
            if options[index] in initials:
                return
        if not initials.isdisjoint(node.sleep):
            return
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
        steps = self.steps
        race_slot = steps[i][1]
        race_seq = steps[i][3]
        # The first step in v of each task, in order.
        first: dict[int, int] = {}
        for j in range(i + 1, k):
            task = steps[j][0]
            if task in first:
                continue
            clock = steps[j][4]
            if race_slot < len(clock) and clock[race_slot] >= race_seq:
                continue  # happens after i: not in v
            first[task] = j
        first.setdefault(steps[k][0], k)
        initials: set[int] = set()
        for task, j in first.items():
            clock = steps[j][4]
            width = len(clock)
            preceded = False
            for start in first.values():
                if start >= j:
                    break  # in order: the rest start no earlier
                other = steps[start][1]
                if other < width and clock[other] >= steps[start][3]:
                    preceded = True
                    break
            if not preceded:
                initials.add(task)
        return initials
