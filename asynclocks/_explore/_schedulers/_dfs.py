"""dfs: systematic depth-first search of the schedule tree, bounded by preemptions or pruned
with source-set DPOR (``_dpor``) and sleep sets."""

from __future__ import annotations

from collections.abc import Sequence

from .._common import MAX_STEPS
from .._footprint import (
    LABELLING,
    Footprint,
    begin_run,
    independent,
    reduction_unavailable,
)
from ._base import BuiltinScheduler, ScheduleChooser
from ._dpor import Races


class _Node:
    __slots__ = (
        "options",
        "chosen",
        "tried",
        "preemptions",
        "sleep",
        "footprints",
        "backtrack",
        "full",
        "event",
        "tasks",
    )

    def __init__(self, options: tuple[int, ...], preemptions: int) -> None:
        self.options = options
        self.chosen = 0
        self.tried: set[int] = set()
        self.preemptions = preemptions
        # The sleep set on arrival: tasks whose next step commutes with everything explored since
        # an equivalent schedule ran it, so running it here would only repeat that schedule.
        self.sleep: dict[int, Footprint] = {}
        # Footprint of each task's step from this node, learned when that branch ran.
        self.footprints: dict[int, Footprint] = {}
        # DPOR: the indexes of the options to explore (races add to it, see ``_dpor``), or all
        # of them (``full``) where the model is not simple enough to choose.
        self.backtrack: set[int] = set()
        # The tasks among the options (the rest are faults, or letting time pass).
        self.tasks = (
            options
            if not options or min(options) >= 0
            else tuple(option for option in options if option >= 0)
        )
        self.full = len(self.tasks) < len(options)
        # Index of the step chosen here among the schedule's steps (the same in every schedule
        # through this node).
        self.event = 0


class DfsChooser(ScheduleChooser):
    """Follows the DFS path prefix, then extends it, recording new nodes and sleep sets."""

    def __init__(self, search: DepthFirst) -> None:
        self._search = search
        self.max_steps = search.max_steps
        self._depth = 0
        self.footprints = search.reduce
        self._sleep: dict[int, Footprint] = {}
        self._before_step: dict[int, Footprint] | None = None
        self._pending: tuple[_Node, int] | None = None
        self._redundant = False
        # Source-set DPOR over the schedule's steps (None: sleep sets alone, or no reduction).
        self._races: Races | None = None
        self._options: tuple[int, ...] | None = None
        self._node: _Node | None = None
        # Steps taken so far, how many of the first ones repeat the previous schedule's, and how
        # many of those the races hold.
        self._steps = 0
        self._replayed = 0
        self._recorded = 0
        if self.footprints:
            # With DPOR every step may label objects, and LABELLING stays open (begin_run opens
            # it): still the same objects in every schedule through the same decisions (steps
            # that cannot label would count a first touch as touching the whole family, and
            # commute less).
            begin_run()
            races = search.races
            if races is not None:
                # The steps before the decision this schedule changes repeat the previous one's.
                self._replayed = search.path[-1].event if search.path else 0
                self._recorded = races.restart(self._replayed)
                self._races = races

    def pick(self, options: Sequence[int]) -> int:
        search = self._search
        path = search.path
        depth = self._depth
        self._depth += 1
        if self._redundant:
            return 0
        if depth < len(path):
            node = path[depth]
            if node.options != tuple(options):
                self.diverged = True
                self._redundant = True
                return 0
            chosen = node.chosen
            self._prepare(node, chosen)
            if self._races is not None:
                # DPOR: what the coming step was chosen among (an injected fault is a step).
                if node.options[chosen] < 0:
                    self._fault_step(node)
                else:
                    self._options = node.tasks
                    self._node = node
            return chosen
        preemptions = path[-1].preemptions + (path[-1].chosen != 0) if path else 0
        node = _Node(tuple(options), preemptions)
        node.sleep = dict(self._sleep)
        allowed = [i for i, task in enumerate(options) if task not in node.sleep]
        path.append(node)
        if not allowed:
            # Every runnable task sleeps: whatever happens next was covered by an equivalent
            # schedule. Run it out without recording more decisions.
            node.tried.update(range(len(options)))
            self._redundant = True
            search.redundant += 1
            return 0
        chosen = node.chosen = allowed[0]
        node.tried.add(chosen)
        node.backtrack.add(chosen)
        self._prepare(node, chosen)
        races = self._races
        if races is not None:
            node.event = self._steps
            node.full = node.full or races.off
            if options[chosen] < 0:
                self._fault_step(node)
            else:
                self._options = node.tasks
                self._node = node
        return chosen

    def _fault_step(self, node: _Node) -> None:
        """DPOR: the fault chosen at ``node`` is a step of its own (the backend asks no
        footprint for it)."""
        races = self._races
        assert races is not None
        self._steps += 1
        if self._steps > self._replayed:
            races.fault(node, node.tasks)
        self._options = None

    def _prepare(self, node: _Node, index: int) -> None:
        if not self.footprints:
            return
        task = node.options[index]
        if task < 0:
            # An injected fault (or letting time pass) may affect any task: none sleeps on.
            self._pending = None
            self._sleep = {}
            return
        before = dict(node.sleep)
        for tried in node.tried:
            other = node.options[tried]
            if other != task and other in node.footprints:
                before[other] = node.footprints[other]
        self._before_step = before
        self._pending = (node, task)

    def wants_footprint(self) -> bool:
        """Whether the coming step's footprint matters: it was chosen at a decision (siblings
        explored later compare against it; only such steps label new objects, see
        ``_footprint.LABELLING``) or some task sleeps (it may wake up). With DPOR, every step
        not replayed from the previous schedule: each is compared with the earlier ones of its
        schedule (a replayed step's recorded footprint is handed to :meth:`stepped` here)."""
        races = self._races
        if races is not None:
            step = self._steps
            self._steps = step + 1
            if self._redundant:
                return False
            if step < self._recorded:
                # A step the previous schedule took too (the search is deterministic): its
                # footprint is recorded (a ``_dpor.RecordedStep``). Unless computing it labelled
                # new objects (computed again, it labels them alike, and the later steps' labels
                # follow), the sleep sets take the recorded one and the backend computes none.
                recorded = races.steps[step]
                if not recorded[8]:
                    # What :meth:`stepped` does with its sleep sets, without the call (the
                    # node's footprint is known and the step did not make the schedule
                    # redundant: the previous one went on past it). Only a decision's step, or
                    # one with tasks asleep, changes them.
                    if self._pending is not None:
                        self._pending = None
                        self._options = None
                        sleep = self._before_step
                    elif self._sleep:
                        sleep = self._sleep
                    else:
                        return False
                    self._sleep = awake_after(sleep, recorded[0], recorded[2]) if sleep else {}
                    return False
            # The first step, taken without a decision, is the scenario's and the same in every
            # run: it labels what the scenario then holds (see ``_footprint._label_roots``).
            LABELLING.roots = step == 0 and self._options is None
            return True
        decided = self._pending is not None
        LABELLING.open = decided
        return decided or bool(self._sleep)

    def stepped(self, task: int, footprint: Footprint) -> None:
        """Called by the backend after a step when :meth:`wants_footprint` said so."""
        if self._pending is not None:
            node, chosen = self._pending
            self._pending = None
            if chosen == task:
                node.footprints[task] = footprint
            sleep = self._before_step or {}
        else:
            sleep = self._sleep
            if task in sleep and not self._redundant:
                # The only runnable task was asleep: every way on from here is equivalent to a
                # schedule already explored. Run it out without branching.
                self._redundant = True
                self._search.redundant += 1
        races = self._races
        if races is not None:
            if self._steps > self._replayed and not self._redundant and not races.off:
                options = self._options
                if options is not None and task in options:
                    races.step(task, footprint, self._node, options)
                else:
                    # Taken without a decision: it was the only task offered.
                    races.step(task, footprint, None, (task,))
            self._options = None
        # Most steps have nothing asleep: skip the call for them.
        self._sleep = awake_after(sleep, task, footprint) if sleep else {}


def awake_after(
    sleep: dict[int, Footprint], task: int, footprint: Footprint
) -> dict[int, Footprint]:
    """The sleep set after ``task`` took a step of ``footprint``: the sleepers that step is
    independent of stay asleep, the others (and ``task`` itself) wake up."""
    return {
        other: fp for other, fp in sleep.items() if other != task and independent(fp, footprint)
    }


class DepthFirst:
    """Systematic depth-first search of the schedule tree, with DPOR and sleep sets, or bounded
    by preemptions.

    The tree is explored statelessly: each schedule re-runs the scenario from the start, following
    the path to the deepest node that still has an untried child. With a preemption bound, a node
    already at the bound only allows index 0 (the stock loop's choice). Without one, a node
    explores only its backtrack set, the branches that races of explored schedules asked for
    (source-set DPOR, :mod:`._dpor`), and sleep sets (Godefroid) skip a branch when the task's next
    step commutes with every step taken since an equivalent schedule ran it; what a step touches
    comes from :mod:`._footprint`. ``dpor=False`` keeps the sleep sets alone (every branch not
    asleep), for comparison.
    """

    def __init__(
        self,
        preemption_bound: int | None,
        reduce: bool = True,
        max_steps: int = MAX_STEPS,
        dpor: bool = True,
    ) -> None:
        self.bound = preemption_bound
        self.max_steps = max_steps
        # The reduction and a preemption bound do not combine soundly: a schedule pruned as
        # equivalent may need more preemptions than the bound allows.
        self.reduce = reduce and preemption_bound is None
        #: Why the reduction was wanted but is off on this interpreter (None: not the case).
        self.reduce_off: str | None = None
        if self.reduce:
            self.reduce_off = reduction_unavailable()
            self.reduce = self.reduce_off is None
        #: Whether the reduction adds source-set DPOR to the sleep sets (False: sleep sets alone).
        self.dpor = dpor and self.reduce
        self.path: list[_Node] = []
        #: The current schedule's steps for DPOR (None without it).
        self.races = Races(self.path) if self.dpor else None
        self.started = False
        self.redundant = 0

    def next_chooser(self) -> DfsChooser | None:
        if not self.started:
            self.started = True
            return DfsChooser(self)
        path = self.path
        bound = self.bound
        while path:
            node = path[-1]
            if bound is None or node.preemptions < bound:
                # DPOR: only the options races asked for, unless the node explores them all.
                indexes = (
                    sorted(node.backtrack)
                    if self.dpor and not node.full
                    else range(1, len(node.options))
                )
                for index in indexes:
                    if index not in node.tried and node.options[index] not in node.sleep:
                        node.tried.add(index)
                        node.backtrack.add(index)
                        node.chosen = index
                        return DfsChooser(self)
            path.pop()
        return None


class DfsScheduler(BuiltinScheduler):
    """The :class:`DepthFirst` search as a scheduler: done (and exhaustive) when the tree is."""

    def __init__(
        self, preemption_bound: int | None, reduce: bool = True, max_steps: int = MAX_STEPS
    ) -> None:
        super().__init__()
        self.search = DepthFirst(preemption_bound, reduce, max_steps)
        self.reduced = self.search.reduce
        if self.search.reduce_off is not None:
            self.notes = (self.search.reduce_off,)

    def _next_chooser(self) -> ScheduleChooser | None:
        chooser = self.search.next_chooser()
        if chooser is None:
            self.exhaustive = True
        return chooser
