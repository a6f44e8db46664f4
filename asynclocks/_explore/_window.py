"""The race window of a reported schedule, and traces rebuilt from the search's step sketches.

The window is found by replaying the reported schedule once more with every step's await chains
in hand (:class:`WindowChooser`): each step's reads and writes of names and subscripts, with
their source lines (:func:`._footprint.step_accesses`), show where a task read a value, the await
it was suspended at, and another task's write of that value before the first task used it again.
"""

from __future__ import annotations

import os
import types
from collections.abc import Sequence
from dataclasses import dataclass

from ._common import Frame, Location, Outcome, SketchStep, Step, is_library
from ._footprint import Access, Chain, step_accesses
from ._schedulers import ReplayChooser


class WindowChooser(ReplayChooser):
    """Replays a schedule and records what each step read and wrote, with source lines."""

    footprints = True

    def __init__(self, decisions: Sequence[int]) -> None:
        super().__init__(decisions)
        self.accesses: list[tuple[int, tuple[Access, ...]]] = []

    def wants_footprint(self) -> bool:
        return True

    def watch_chains(self, task: int, before: Chain, after: Chain) -> None:
        """Called by the backend after every step with the task's chains around it."""
        self.accesses.append((task, step_accesses(before, after)))


@dataclass(frozen=True)
class RaceWindow:
    """A read, the await after it, another task's write, and the first task's next access."""

    text: str
    #: Indices (0-based) into the schedule's steps of the read, the write and the next access.
    steps: tuple[int, ...]


def _installed(filename: str) -> bool:
    """Whether a file belongs to an installed package rather than the user's project."""
    return "/site-packages/" in filename or "/dist-packages/" in filename


def _where(filename: str, line: int) -> str:
    # The block is short: file names only (the trace under it has the paths).
    return f"{os.path.basename(filename)}:{line}"


def _await_line(location: Location | None) -> str | None:
    if location is None:
        return None
    filename, line, _ = location[0]
    return _where(filename, line)


def find_window(
    outcome: Outcome, accesses: Sequence[tuple[int, tuple[Access, ...]]]
) -> RaceWindow | None:
    """The conflicting accesses nearest the failure: task A reads ``x`` in one step and awaits;
    task B writes ``x``; A then writes (or reads) ``x`` again, working from a stale value.

    A stale write is preferred over a re-read, then the latest; None when no such accesses
    were seen (the failure involves nothing the footprints can see, or it is a deadlock)."""
    steps = outcome.steps
    if len(steps) != len(accesses) or any(
        s.task != a[0] for s, a in zip(steps, accesses, strict=True)
    ):
        return None  # the two recordings do not line up: no window rather than a wrong one
    names = outcome.task_names
    # (task, key) -> (step index, the read) of a read not yet followed by the task's own access.
    pending: dict[tuple[int, str], tuple[int, Access]] = {}
    # (task, key) -> (step index, the write) of another task's first write after that read.
    clobbered: dict[tuple[int, str], tuple[int, Access]] = {}
    best: tuple[tuple[int, int, bool, int, int], RaceWindow] | None = None
    for index, (task, step_accesses_) in enumerate(accesses):
        last: dict[str, Access] = {}
        # The step's first write of each key, else its first read: ``x -= 1`` reads x afresh,
        # but what it stores is what the stale check let through.
        first: dict[str, Access] = {}
        for access in step_accesses_:
            seen = first.get(access.key)
            if seen is None or (access.write and not seen.write):
                first[access.key] = access
            last[access.key] = access
        for key, access in first.items():
            mine = (task, key)
            if mine in clobbered:
                read_index, read = pending[mine]
                write_index, write = clobbered[mine]
                # Accesses in the user's own files before those inside installed packages (an
                # HTTP framework's bookkeeping races benignly all the time); then a stale write (a
                # lost update), the strongest evidence; then one that re-accesses what it read by
                # the same text (keys match subscripts by their container alone, so
                # ``request[a]`` read and ``request[b]`` written share one, and the objects may
                # differ: each request has its own); then the latest.
                own = not (_installed(read.filename) or _installed(access.filename))
                same = read.text == access.text
                rank = (1 if own else 0, 1 if access.write else 0, same, index, write_index)
                if best is None or rank > best[0]:
                    best = (
                        rank,
                        _describe(
                            steps, names, read_index, read, write_index, write, index, access
                        ),
                    )
                del clobbered[mine]
        for key, access in last.items():
            # Any write of the step clobbers the others' reads, even one the step then re-reads
            # (``x[k] = v; return x[k]``): its first write is the one that made them stale.
            written = first[key] if first[key].write else None
            if written is not None:
                for other, other_key in pending:
                    if other != task and other_key == key and (other, key) not in clobbered:
                        clobbered[(other, key)] = (index, written)
            mine = (task, key)
            if access.write:
                pending.pop(mine, None)
                clobbered.pop(mine, None)
            else:
                # A read after the step's own write is fresh: it starts a new window.
                pending[mine] = (index, access)
                clobbered.pop(mine, None)
    return None if best is None else best[1]


def _describe(
    steps: Sequence[Step],
    names: dict[int, str],
    read_index: int,
    read: Access,
    write_index: int,
    write: Access,
    next_index: int,
    again: Access,
) -> RaceWindow:
    reader = names.get(steps[read_index].task, f"#{steps[read_index].task}")
    writer = names.get(steps[write_index].task, f"#{steps[write_index].task}")
    tag = reader.split(" ", 1)[0]
    awaited = _await_line(steps[read_index].suspended)
    first = f"race window: {reader} read `{read.text}` at {_where(read.filename, read.line)}"
    if awaited is not None:
        first += f", awaited at {awaited}"
    verb = "wrote it" if again.write else "read it again"
    second = (
        f"{' ' * len('race window: ')}{writer} wrote `{write.text}` at "
        f"{_where(write.filename, write.line)} before {tag} {verb} at "
        f"{_where(again.filename, again.line)}"
    )
    return RaceWindow(f"{first};\n{second}", (read_index, write_index, next_index))


# -- traces rebuilt from sketches ---------------------------------------------------------------

_lines: dict[types.CodeType, list[int | None]] = {}


def _line(code: types.CodeType, offset: int) -> int:
    lines = _lines.get(code)
    if lines is None:
        lines = _lines[code] = [position[0] for position in code.co_positions()]
    index = offset // 2
    found = lines[index] if 0 <= index < len(lines) else None
    return found if found is not None else code.co_firstlineno


def key_location(key: tuple[object, ...]) -> Location | None:
    """The user-code location of a chain key (``_footprint.Chain.key``), like ``user_location``."""
    found: Frame | None = None
    caller: Frame | None = None
    for at in range(0, len(key) - 1, 2):
        code, offset = key[at], key[at + 1]
        if not isinstance(code, types.CodeType):
            return None
        if offset is None:
            return None  # created but never started
        if not is_library(code.co_filename):
            caller = found
            found = (code.co_filename, _line(code, int(offset)), code.co_name)  # type: ignore[call-overload]
    return None if found is None else (found, caller)


def sketch_steps(sketch: Sequence[SketchStep], names: dict[int, str]) -> list[Step]:
    """The trace steps of a schedule the search ran without tracing."""
    where: dict[int, Location | None] = {}
    steps: list[Step] = []
    for task, key, preempted in sketch:
        finished = not key
        suspended = None if finished else key_location(key)
        steps.append(
            Step(task, names.get(task, f"#{task}"), where.get(task), suspended, finished, preempted)
        )
        where[task] = suspended
    return steps
