"""What a step touches, for the partial-order reduction of ``dfs`` (sleep sets).

Two steps of different tasks are *independent* when running them in either order leaves the
program in the same state; then a systematic search needs to try only one order. Python gives no
cheap way to watch memory, so the footprint of a step is computed statically from the bytecode the
step can have executed:

* For every user-code frame on the task's await chain when it resumed and when it next suspended,
  the instructions on some control-flow path between the two points (both whole lines included,
  so the awaited call counts) are classified.
* Names read or written (globals, closure cells, attributes; one namespace, so aliasing a module
  attribute as a global still conflicts) give precise read/write sets. ``obj[key]`` stores, in-place
  operators and mutating container methods write a shared ``heap``; subscripts, comparisons,
  iteration, container reads, truth tests (``if items:``) and formatting (f-strings) read it.
* Precise accesses, per object: where the bytecode shows that ``obj.n``, ``table[key]``,
  ``box.n += 1`` or ``x += 1`` applies to plain variables (a local not rebound within the step's
  range, a closure cell or global not stored by the step), the objects are looked up in the frame
  when the step's footprint is computed, and the access touches ``(object, attribute)`` or
  ``(dict, key)`` (a list: all of its items) instead of every attribute of that name and the
  whole heap. An attribute counts only on a plain instance (no ``__getattr__``/``__setattr__``/
  ``__getattribute__`` of its class, no property or other data descriptor for it) and is keyed by
  the instance dict, so ``vars(obj)["n"]`` is the same resource; a module's attribute is its
  global. An in-place operator that stored an immutable value (int, str, ...) computed from
  another one only rebinds its target. Each precise access also names its *family* (the
  attribute name, the heap, synchronisation), with which every coarse access of that family
  still conflicts (see :func:`independent`). The analysis is cached per code position in
  symbolic form; the objects are resolved per step (``_resolve``).
* Lock, event and other synchronisation calls (``async with``, ``acquire``, ``set``, ``wait``...)
  and library frames of those primitives' methods on the await chain touch that primitive (and a
  condition's lock too); a sleep with a non-zero delay writes ``timers``; ``sleep(0)`` and
  checkpoints touch nothing. Primitives are modelled rather than traced: their internals touch
  only their own state and the scheduler's, which the explorer controls, so two steps on
  different primitives commute. A primitive that cannot be resolved writes one shared ``sync``.
  A step that resumed in anyio's asyncio ``CapacityLimiter`` acquisition and left it touches the
  limiter only when its borrower holds no token at the end (``_left_acquisition``).
* Memory streams (anyio's object streams, trio's channels) are primitives too: a send, receive,
  clone or close of any end, ``async with`` and ``async for`` over it, touch the state all ends
  share. An attribute of a library primitive (``limiter.total_tokens = 3``, a property that
  wakes waiters) touches the primitive. A task group (trio's nursery) touches only ``join``:
  starting a child, leaving the block normally (waiting for the children, whose ends write it);
  leaving it with an exception cancels the children and is unknown.
* Calling an ``async def`` function runs none of its body: the call is free when the frame
  stops in the await of that very coroutine (its frame is next on the chain, analysed there) and
  the call cannot have run twice in the step; a call that only sits on a whole line added around
  the range ran in an earlier step. Making a builtin exception (``raise OSError(...)``) is free.
* Anything the analysis cannot see through (a call to an unknown function, a user function that
  ran to completion inside the step, library code other than scheduling and synchronisation, a
  task ending with an error) makes the footprint *unknown*: dependent with every other step.

Objects are named by labels, not ``id()``: sleep sets compare footprints from different runs of
the scenario (see ``begin_run``). Why this design rather than dynamic tracing: tracing every
library frame (``sys.monitoring``/``settrace``) would cost on every step of every schedule, while
the static tables cost one cache lookup per step plus a lookup per precise access.

Independence is therefore claimed only when nothing one step may write is read or written by the
other. Local variables are private to their frame and never conflict.

The instructions are CPython's, which change with every minor version: the tables below are
written for the versions in :data:`SUPPORTED_PYTHONS`. On any other version the reduction is off
(:func:`reduction_unavailable` says why and the report carries it), never guessed.
"""

from __future__ import annotations

import builtins
import collections
import dis
import inspect
import itertools
import sys
import types
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any, NamedTuple

from ._common import is_library

#: A footprint: (read, written) resources, optionally followed by (families read precisely,
#: families written precisely), or None for "unknown: touches everything". A resource is a name
#: (``str``) or a precise ``(object label, key)``; see :func:`independent`.
Footprint = tuple[frozenset[Any], ...] | None
#: What one instruction does: (read, written) resources, a :class:`_Late` access resolved per
#: step against the frame, or None (unknown).
_Effect = tuple[frozenset[str], frozenset[str]]

HEAP = "<heap>"
SYNC = "<sync>"
TIMERS = "<timers>"
JOIN = "<join>"
_UNKNOWN = "<unknown>"
_MISSING: Any = object()
_CM = "<cm>"
_AITER = "<aiter>"

_PURE_BUILTINS = {
    builtins.range: False,  # (reads heap?)
    builtins.len: True,
    builtins.isinstance: False,
    builtins.print: False,
    builtins.repr: True,
    builtins.str: True,
    builtins.int: True,
    builtins.float: True,
    builtins.bool: True,
    builtins.abs: True,
    builtins.min: True,
    builtins.max: True,
    builtins.sum: True,
    builtins.sorted: True,
    builtins.tuple: True,
    builtins.list: True,
    builtins.dict: True,
    builtins.set: True,
}
_SCHEDULING_NAMES = {
    "sleep",
    "checkpoint",
    "cancel_shielded_checkpoint",
    "checkpoint_if_cancelled",
    "current_time",
    "current_task",
    "get_running_loop",
}
_SCHEDULING_MODULES = ("asyncio", "anyio", "trio")
_SYNC_METHODS = {
    "acquire",
    "acquire_nowait",
    "release",
    "locked",
    "set",
    "is_set",
    "wait",
    "notify",
    "notify_all",
    "statistics",
    # A memory stream's (anyio) or channel's (trio) ends: every call touches the state the ends
    # and their clones share (see ``_primitive_labels``).
    "send",
    "send_nowait",
    "receive",
    "receive_nowait",
    "clone",
    "close",
    "aclose",
}
_CONTAINER_READS = {"get", "keys", "values", "items", "copy", "count", "index"}
_CONTAINER_WRITES = {
    "append",
    "appendleft",
    "extend",
    "insert",
    "pop",
    "popleft",
    "popitem",
    "remove",
    "discard",
    "add",
    "update",
    "setdefault",
    "clear",
}
# Library frames that may sit on a task's await chain without touching the program's data.
_LIBRARY_SCHEDULING_FRAMES = {
    "sleep",
    "__sleep0",
    "checkpoint",
    "cancel_shielded_checkpoint",
    "checkpoint_if_cancelled",
    "wait_task_rescheduled",
    "_async_yield",
    "sleep_until",
    "_real_async_yield",
}
# Library coroutines that run a task's coroutine: they enter the task's own cancel scope, await it
# and, when it ends, signal the task group (covered by the finishing step writing JOIN).
_LIBRARY_TASK_WRAPPERS = {"_run_coro"}
#: Code objects of the explorer's own wrappers around the scenario (registered by the backends).
TRANSPARENT_CODE: set[types.CodeType] = set()
_LIBRARY_SYNC_FRAMES = {
    "_tracking_acquire",  # the explorer's owner-recording wrapper of asyncio.Lock.acquire
    "acquire",
    "_acquire",
    "release",
    "wait",
    "park",
    "__aenter__",
    "__aexit__",
    "acquire_on_behalf_of",
    "send",
    "receive",
    "__anext__",
    "aclose",
}
_STREAM_OWNERS = (
    "MemoryObjectSendStream",
    "MemoryObjectReceiveStream",
    "MemorySendChannel",
    "MemoryReceiveChannel",
)
_LIBRARY_SYNC_OWNERS = (
    "Lock",
    "Event",
    "Condition",
    "Semaphore",
    "ParkingLot",
    "CapacityLimiter",
    *_STREAM_OWNERS,
)

_NAME_READS = {
    "LOAD_GLOBAL",
    "LOAD_NAME",
    "LOAD_DEREF",
    "LOAD_CLASSDEREF",
    "LOAD_ATTR",
    "LOAD_METHOD",
}
_NAME_WRITES = {
    "STORE_GLOBAL",
    "STORE_NAME",
    "STORE_DEREF",
    "DELETE_GLOBAL",
    "DELETE_NAME",
    "DELETE_DEREF",
}
#: CPython minor versions whose bytecode the tables below classify; each one is tested.
SUPPORTED_PYTHONS = ((3, 11), (3, 12), (3, 13))
#: The version the tables are built for and the support check reads (a test may patch it).
PYTHON: tuple[int, int] = (sys.version_info[0], sys.version_info[1])


def reduction_unavailable() -> str | None:
    """Why the sleep-set reduction cannot run on this interpreter, or None when it can.

    The analysis reads bytecode, whose opcodes differ between CPython versions; on a version it
    was not written and tested for it would silently misjudge steps, so it is off there.
    """
    if PYTHON in SUPPORTED_PYTHONS:
        return None
    known = ", ".join(f"{major}.{minor}" for major, minor in SUPPORTED_PYTHONS)
    return (
        f"sleep-set reduction off: its footprint analysis reads CPython bytecode and knows the "
        f"opcodes of Python {known}; this is Python {PYTHON[0]}.{PYTHON[1]}, so dfs ran every "
        f"schedule (the verdict holds; the search was not pruned)"
    )


_FREE = {
    "NOP",
    "RESUME",
    "CACHE",
    "EXTENDED_ARG",
    "POP_TOP",
    "PUSH_NULL",
    "COPY",
    "SWAP",
    "LOAD_CONST",
    "LOAD_FAST",
    "LOAD_FAST_CHECK",
    "STORE_FAST",
    "DELETE_FAST",
    "LOAD_CLOSURE",
    "MAKE_CELL",
    "COPY_FREE_VARS",
    "RETURN_VALUE",
    "RETURN_GENERATOR",
    "YIELD_VALUE",
    "SEND",
    "GET_AWAITABLE",
    "JUMP_FORWARD",
    "JUMP_BACKWARD",
    "JUMP_BACKWARD_NO_INTERRUPT",
    "POP_JUMP_FORWARD_IF_TRUE",
    "POP_JUMP_FORWARD_IF_FALSE",
    "POP_JUMP_BACKWARD_IF_TRUE",
    "POP_JUMP_BACKWARD_IF_FALSE",
    "POP_JUMP_FORWARD_IF_NONE",
    "POP_JUMP_FORWARD_IF_NOT_NONE",
    "POP_JUMP_BACKWARD_IF_NONE",
    "POP_JUMP_BACKWARD_IF_NOT_NONE",
    "JUMP_IF_TRUE_OR_POP",
    "JUMP_IF_FALSE_OR_POP",
    "BUILD_TUPLE",
    "BUILD_LIST",
    "BUILD_MAP",
    "BUILD_SET",
    "BUILD_CONST_KEY_MAP",
    "BUILD_STRING",
    "BUILD_SLICE",
    "FORMAT_VALUE",
    "PRECALL",
    "KW_NAMES",
    "PUSH_EXC_INFO",
    "POP_EXCEPT",
    "RERAISE",
    "CHECK_EXC_MATCH",
    "CHECK_EG_MATCH",
    "PREP_RERAISE_STAR",
    "LOAD_ASSERTION_ERROR",
    "RAISE_VARARGS",
    "MAKE_FUNCTION",
    "END_ASYNC_FOR",
}
_HEAP_READS = {
    "BINARY_SUBSCR",
    "COMPARE_OP",
    "IS_OP",
    "CONTAINS_OP",
    "UNARY_POSITIVE",
    "UNARY_NEGATIVE",
    "UNARY_NOT",
    "UNARY_INVERT",
    "UNPACK_SEQUENCE",
    "UNPACK_EX",
    "GET_ITER",
    "FOR_ITER",
    "LIST_APPEND",
    "SET_ADD",
    "MAP_ADD",
    "LIST_EXTEND",
    "SET_UPDATE",
    "DICT_UPDATE",
    "DICT_MERGE",
    "LIST_TO_TUPLE",
}
_HEAP_WRITES = {"STORE_SUBSCR", "DELETE_SUBSCR", "STORE_ATTR", "DELETE_ATTR"}
_SYNC_OPS = {"BEFORE_ASYNC_WITH", "BEFORE_WITH", "WITH_EXCEPT_START"}
_INPLACE_BINARY_OPS = set(range(13, 26))  # NB_INPLACE_ADD .. NB_INPLACE_XOR (3.11 to 3.13)
# Instructions that test a value's truth: for anything but a bool that runs __bool__/__len__,
# which reads the object (``if items:`` reads the list). Free when the tested value is a bool
# the preceding instruction just made (see ``_BOOL_MAKERS``).
_TRUTH_TESTS = {
    "POP_JUMP_FORWARD_IF_TRUE",
    "POP_JUMP_FORWARD_IF_FALSE",
    "POP_JUMP_BACKWARD_IF_TRUE",
    "POP_JUMP_BACKWARD_IF_FALSE",
    "JUMP_IF_TRUE_OR_POP",
    "JUMP_IF_FALSE_OR_POP",
}
# WITH_EXCEPT_START: __exit__'s result, whose call the with statement's marker judges.
_BOOL_MAKERS = {
    "IS_OP",
    "CONTAINS_OP",
    "CHECK_EXC_MATCH",
    "UNARY_NOT",
    "COMPARE_OP",
    "WITH_EXCEPT_START",
}
# The instructions of one ``await`` after its GET_AWAITABLE (3.11 to 3.13).
_AWAIT_LOOP = {
    "LOAD_CONST",
    "SEND",
    "YIELD_VALUE",
    "RESUME",
    "JUMP_BACKWARD_NO_INTERRUPT",
    "END_SEND",
    "CLEANUP_THROW",
}
# CALL_INTRINSIC_1/2 by their dis name: those that only handle the frame's own values.
_FREE_INTRINSICS: set[str] = set()
_HEAP_READ_INTRINSICS: set[str] = set()
# The call instructions whose callee ``_callee`` can tell from the code before them.
_CALL_OPS = {"CALL"}

if PYTHON >= (3, 12):
    # 3.12: PRECALL and the POP_JUMP_FORWARD/BACKWARD_* forms are gone; comprehensions are
    # inlined (LOAD_FAST_AND_CLEAR saves the loop variable); await loops end in END_SEND with
    # CLEANUP_THROW on the throw path; a few operations moved into CALL_INTRINSIC_*.
    _FREE |= {
        "RETURN_CONST",
        "END_FOR",
        "END_SEND",
        "CLEANUP_THROW",
        "LOAD_FAST_CHECK",
        "LOAD_FAST_AND_CLEAR",
        "POP_JUMP_IF_NONE",
        "POP_JUMP_IF_NOT_NONE",
    }
    _TRUTH_TESTS = {"POP_JUMP_IF_TRUE", "POP_JUMP_IF_FALSE"}
    _NAME_READS |= {"LOAD_FROM_DICT_OR_GLOBALS", "LOAD_FROM_DICT_OR_DEREF", "LOAD_SUPER_ATTR"}
    _HEAP_READS |= {"BINARY_SLICE"}
    _HEAP_WRITES |= {"STORE_SLICE"}
    _FREE_INTRINSICS = {
        "INTRINSIC_STOPITERATION_ERROR",  # a StopIteration leaving a coroutine: its own error
        "INTRINSIC_ASYNC_GEN_WRAP",
        "INTRINSIC_PREP_RERAISE_STAR",
    }
    _HEAP_READ_INTRINSICS = {"INTRINSIC_UNARY_POSITIVE", "INTRINSIC_LIST_TO_TUPLE"}
if PYTHON >= (3, 13):
    # 3.13: conditional jumps take only bools (TO_BOOL converts first, and is the truth test);
    # pairs of local loads/stores are fused; keyword calls are CALL_KW; f-strings use
    # CONVERT_VALUE / FORMAT_SIMPLE / FORMAT_WITH_SPEC; a function's defaults, closure and
    # annotations are set by SET_FUNCTION_ATTRIBUTE.
    _FREE |= {
        "POP_JUMP_IF_TRUE",
        "POP_JUMP_IF_FALSE",
        "LOAD_FAST_LOAD_FAST",
        "STORE_FAST_LOAD_FAST",
        "STORE_FAST_STORE_FAST",
        "SET_FUNCTION_ATTRIBUTE",
    }
    _TRUTH_TESTS = {"TO_BOOL"}
    _HEAP_READS -= {"UNARY_NOT"}  # its operand is a bool already
    _FREE.add("UNARY_NOT")
    _HEAP_READS |= {"CONVERT_VALUE", "FORMAT_SIMPLE", "FORMAT_WITH_SPEC"}
    _CALL_OPS = {"CALL", "CALL_KW"}
_FREE -= _TRUTH_TESTS
# Formatting a value runs its __format__/__repr__, which reads a container's items.
_FREE.discard("FORMAT_VALUE")
_HEAP_READS.add("FORMAT_VALUE")
# Instructions that end a block: no fall-through to the next instruction.
_STOPS = {
    "RETURN_VALUE",
    "RETURN_CONST",
    "RERAISE",
    "RAISE_VARARGS",
    "JUMP_FORWARD",
    "JUMP_BACKWARD",
    "JUMP_BACKWARD_NO_INTERRUPT",
}
# Loads of a local by name; the fused 3.13 forms push the second name last.
_LOCAL_LOADS = {"LOAD_FAST", "LOAD_FAST_CHECK"}
_FUSED_LOCAL_LOADS = {"LOAD_FAST_LOAD_FAST", "STORE_FAST_LOAD_FAST"}
_LOCAL_STORES = {"STORE_FAST", "DELETE_FAST", "LOAD_FAST_AND_CLEAR"}
# Fused 3.13 forms that store locals: how many of their names (first ones) they store.
_FUSED_LOCAL_STORES = {"STORE_FAST_LOAD_FAST": 1, "STORE_FAST_STORE_FAST": 2}
# Values whose operators neither read nor change any other object: an in-place operator whose
# operands are such values only rebinds its target.
_IMMUTABLE = (int, bool, float, complex, str, bytes, type(None))
# Dictionary keys kept precisely: their equality is the builtin one (``1 == True`` included,
# which a frozenset of resources compares the same way a dict does). Floats are left out (NaN).
_KEYS = (int, bool, str, bytes, type(None))
_ITEMS = "<items>"  # the resource of every element of a list

#: Where a value comes from: ("fast" | "deref" | "global", variable name) or ("const", value).
_Spec = tuple[str, Any]


class _Late(NamedTuple):
    """An access whose object is known only when a step runs: the object behind a variable.

    ``loc`` is ("attr", object, name), ("item", container, key) or, for an in-place operator's
    target, also ("var", variable). ``kind`` is "read", "write" or "inplace" (``right`` is then
    the operator's other operand). ``coarse`` is the effect when the object cannot be resolved.
    """

    kind: str
    loc: tuple[Any, ...]
    right: _Spec | None
    coarse: _Effect
    #: How often a local it reads may be stored within the step's range (an in-place operator
    #: on a variable stores it once).
    stores_allowed: int = 0

    def locals(self) -> list[tuple[str, int]]:
        """The locals it reads, each with how often the range may store it."""
        specs: list[Any] = [*self.loc[1:], self.right]
        return [
            (spec[1], self.stores_allowed if spec is self.loc[1] else 0)
            for spec in specs
            if isinstance(spec, tuple) and spec[0] == "fast"
        ]


#: A range's footprint with its precise accesses still symbolic: (reads, writes, accesses).
_Template = tuple[frozenset[str], frozenset[str], tuple[_Late, ...]]


class _Code:
    """Per code object: instructions, control-flow graph and per-instruction classification."""

    def __init__(self, code: types.CodeType) -> None:
        self.code = code
        self.instructions = list(dis.get_instructions(code))
        self.index = {ins.offset: i for i, ins in enumerate(self.instructions)}
        count = len(self.instructions)
        self.successors: list[list[int]] = [[] for _ in range(count)]
        self.predecessors: list[list[int]] = [[] for _ in range(count)]
        self.lines: dict[int | None, list[int]] = {}
        for i, ins in enumerate(self.instructions):
            self.lines.setdefault(ins.positions.lineno if ins.positions else None, []).append(i)
            if ins.opname not in _STOPS and i + 1 < count:
                self._edge(i, i + 1)
            if ins.opcode in dis.hasjrel or ins.opcode in dis.hasjabs:
                target = self.index.get(ins.argval)
                if target is not None:
                    self._edge(i, target)
        for entry in dis._parse_exception_table(code):  # type: ignore[attr-defined]
            target = self.index.get(entry.target)
            if target is None:
                continue
            for offset, i in self.index.items():
                if entry.start <= offset < entry.end:
                    self._edge(i, target)
        self.effects: list[_Effect | _Late | None] = [self._classify(i) for i in range(count)]
        self._ranges: dict[tuple[int, int], _Template | None] = {}

    def _edge(self, a: int, b: int) -> None:
        self.successors[a].append(b)
        self.predecessors[b].append(a)

    def _reach(self, start: int, edges: list[list[int]]) -> set[int]:
        seen = {start}
        stack = [start]
        while stack:
            for nxt in edges[stack.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append(nxt)
        return seen

    # -- classification ---------------------------------------------------------------------

    def _classify(self, i: int) -> _Effect | _Late | None:
        late = _late_access(self, i)
        if late is not None:
            return late
        ins = self.instructions[i]
        name = ins.opname
        if name in _FREE:
            if name == "GET_AWAITABLE" and ins.arg == 2:
                return self._cm_marker(i)  # awaiting __aexit__
            return frozenset(), frozenset()
        if name in _NAME_READS:
            return frozenset(
                {str(ins.argval), HEAP}
                if name in ("LOAD_ATTR", "LOAD_METHOD", "LOAD_SUPER_ATTR")
                else {str(ins.argval)}
            ), frozenset()
        if name in _NAME_WRITES:
            return frozenset(), frozenset({str(ins.argval)})
        if name in _HEAP_WRITES:
            written = {HEAP}
            if name in ("STORE_ATTR", "DELETE_ATTR"):
                written.add(str(ins.argval))
            return frozenset(), frozenset(written)
        if name in _HEAP_READS:
            if name in ("GET_ITER", "FOR_ITER") and self._iterates_range(i):
                return frozenset(), frozenset()
            return frozenset({HEAP}), frozenset()
        if name == "BINARY_OP":
            if ins.arg in _INPLACE_BINARY_OPS:
                return frozenset({HEAP}), frozenset({HEAP})
            return frozenset({HEAP}), frozenset()
        if name in _TRUTH_TESTS:
            previous = self.instructions[i - 1] if i else None
            if previous is not None and not ins.is_jump_target and previous.opname in _BOOL_MAKERS:
                return frozenset(), frozenset()  # the bool just made; its maker counted already
            if self._tests_aexit_result(i):
                return frozenset(), frozenset()
            return frozenset({HEAP}), frozenset()
        if name in ("CALL_INTRINSIC_1", "CALL_INTRINSIC_2"):
            if ins.argrepr in _FREE_INTRINSICS:
                return frozenset(), frozenset()
            if ins.argrepr in _HEAP_READ_INTRINSICS:
                return frozenset({HEAP}), frozenset()
            return None
        if name in _SYNC_OPS:
            return self._cm_marker(i)
        if name in ("GET_AITER", "GET_ANEXT"):
            return self._aiter_marker(i)
        if name in _CALL_OPS:
            return self._classify_call(i)
        return None

    def _tests_aexit_result(self, i: int) -> bool:
        """Whether the truth test at ``i`` tests what an ``async with`` block's ``__aexit__``
        returned on the exception path (suppress or not). That call is judged as a whole by
        the with statement's marker (a library lock's, or unknown), so testing it adds nothing.
        """
        ins = self.instructions
        j = i - 1
        while j >= 0 and ins[j].opname in _AWAIT_LOOP:
            j -= 1
        if j < 1 or ins[j].opname != "GET_AWAITABLE" or ins[j].arg != 2:
            return False
        return ins[j - 1].opname == "WITH_EXCEPT_START"

    def _cm_marker(self, i: int) -> tuple[frozenset[str], frozenset[str]]:
        # Entering or leaving a with block runs the context manager's code: harmless only for
        # the library's own locks and events, told apart from user context managers at runtime.
        return frozenset(), frozenset({f"{_CM}{self._line_of(i)[0]}"})

    def _aiter_marker(self, i: int) -> tuple[frozenset[str], frozenset[str]] | None:
        # ``async for x in stream``: GET_AITER calls ``stream.__aiter__()``, GET_ANEXT (the loop
        # head, right after it) ``__anext__()`` of what that returned. For the library's memory
        # streams ``__aiter__`` returns the stream itself, so both touch the stream (resolved
        # at runtime: anything else iterated is unknown). Marked by the GET_AITER's index.
        ins = self.instructions
        first = i if ins[i].opname == "GET_AITER" else i - 1
        if first < 1 or ins[first].opname != "GET_AITER" or ins[first].is_jump_target:
            return None
        if _variable(ins[first - 1]) is None:
            return None
        return frozenset(), frozenset({f"{_AITER}{first}"})

    def cm_loaders(self, first_on_line: int) -> list[tuple[str, str]] | None:
        """How each context manager of the with statement on this line was loaded: ("global",
        name) or ("local", name) (a frame variable, closure cells included)."""
        loaders = []
        for i in self._line_of(first_on_line):
            if self.instructions[i].opname in ("BEFORE_ASYNC_WITH", "BEFORE_WITH"):
                loaded = _variable(self.instructions[i - 1])
                if loaded is None:
                    # ``async with trio.open_nursery() as n``: a call's result, by its callee.
                    callee = (
                        self._callee(i - 1)
                        if self.instructions[i - 1].opname in (_CALL_OPS)
                        else None
                    )
                    if callee is None or callee[0] != "global":
                        return None
                    loaded = ("call", ".".join(callee[1]))
                loaders.append(loaded)
        return loaders or None

    def _iterates_range(self, i: int) -> bool:
        # for _ in range(n): the iterator is private, so iterating reads nothing shared.
        ins = self.instructions
        j = i if ins[i].opname == "GET_ITER" else i - 1
        if ins[j].opname != "GET_ITER" or j < 1 or ins[j - 1].opname != "CALL":
            return False
        callee = self._callee(j - 1)
        return callee is not None and callee == ("global", ("range",))

    def _callee(self, i: int) -> tuple[str, tuple[str, ...]] | None:
        """How the callable of the CALL at index ``i`` was loaded: ("global", dotted path) for
        ``name`` / ``module.attr.name``, ("method", (name,)) for ``obj.name(...)``, ("with-exit",
        ()) for a ``with`` block's exit call; None when it cannot be told."""
        ins = self.instructions
        args = ins[i].arg or 0
        j = i - 1
        while j >= 0 and ins[j].opname in ("PRECALL", "KW_NAMES"):
            j -= 1
        if ins[i].opname == "CALL_KW":
            if j < 0 or ins[j].opname != "LOAD_CONST":
                return None
            j -= 1  # the tuple of keyword names, pushed after the arguments it names
        if args == 2 and j >= 2 and all(ins[k].opname == "LOAD_CONST" for k in (j, j - 1, j - 2)):
            if all(ins[k].argval is None for k in (j, j - 1, j - 2)):
                return ("with-exit", ())
        depth = 0
        while j >= 0 and depth < args:
            current = ins[j]
            if (
                current.is_jump_target
                or current.opcode in dis.hasjrel
                or current.opcode in dis.hasjabs
            ):
                return None
            depth += dis.stack_effect(
                current.opcode,
                current.arg if current.opcode >= dis.HAVE_ARGUMENT else None,
                jump=False,
            )
            j -= 1
        if depth != args or j < 0:
            return None
        if ins[j].opname == "PUSH_NULL" and PYTHON >= (3, 13) and not ins[j].is_jump_target:
            j -= 1  # 3.13 pushes the NULL after the callable (3.11 and 3.12: before it)
            if j < 0:
                return None
        loader = ins[j]
        if loader.opname in ("LOAD_METHOD", "LOAD_ATTR"):
            path = [str(loader.argval)]
            k = j - 1
            while k >= 0 and ins[k].opname == "LOAD_ATTR":
                path.insert(0, str(ins[k].argval))
                k -= 1
            base = _variable(ins[k]) if k >= 0 else None
            if base is not None:
                return (base[0], (base[1], *path))
            return None
        if loader.opname == "LOAD_GLOBAL":
            return ("global", (str(loader.argval),))
        variable = _variable(loader)
        if variable is not None:
            return ("local", (variable[1],))  # a closure's or local function: ``work()``
        return None

    def _classify_call(self, i: int) -> tuple[frozenset[str], frozenset[str]] | None:
        callee = self._callee(i)
        if callee is None:
            return None
        kind, path = callee
        if kind == "with-exit":
            return self._cm_marker(i)
        # Resolved against the frame's variables when a step's footprint is computed.
        return frozenset(), frozenset({f"{_UNKNOWN}{kind}:{'.'.join(path)}:{i}"})

    # -- ranges ---------------------------------------------------------------------------------

    def range_footprint(
        self, start: int | None, stop: int | None, frame: types.FrameType
    ) -> Footprint:
        """The footprint of everything on a path from offset ``start`` (None: entry) to ``stop``
        (None: any exit), including both whole lines, resolved against ``frame``."""
        template = self.range_template(start, stop, frame)
        if template is None:
            return None
        reads, writes, lates = template
        start = len(_labels)
        local = frame.f_locals
        places = [_compile(late, writes)(frame, local) for late in lates]
        return _resolve(reads, writes, places, lates, start, (reads, writes, lates))

    def range_template(
        self, start: int | None, stop: int | None, frame: types.FrameType
    ) -> _Template | None:
        """Like :meth:`range_footprint`, with the precise accesses left symbolic (cached)."""
        key = (-1 if start is None else start, -1 if stop is None else stop)
        if key in self._ranges:
            return self._ranges[key]
        first = 0 if start is None else self.index.get(start)
        if first is None:
            self._ranges[key] = None
            return None
        executed = self._reach(first, self.successors)
        last = None
        if stop is not None:
            last = self.index.get(stop)
            if last is None:
                self._ranges[key] = None
                return None
            executed &= self._reach(last, self.predecessors)
        # On some path from the resumption to the suspension: what this step ran for sure
        # (the whole lines added below may include what an earlier step ran).
        paths = frozenset(executed)
        if last is not None:
            executed.update(self._line_of(last))
        if start is not None:
            executed.update(self._line_of(first))
        result = self._combine(executed, frame, paths, last)
        self._ranges[key] = result
        return result

    def _line_of(self, i: int) -> list[int]:
        ins = self.instructions[i]
        return self.lines.get(ins.positions.lineno if ins.positions else None, [i])

    def _exceptional_exit(self, i: int) -> bool:
        """Whether instruction ``i`` (a with statement's marker) is its exit on an exception:
        WITH_EXCEPT_START, or the await of what it called."""
        ins = self.instructions
        if ins[i].opname == "WITH_EXCEPT_START":
            return True
        return _is(ins[i], "GET_AWAITABLE", 2) and ins[i - 1].opname == "WITH_EXCEPT_START"

    def _awaited_at(self, call: int, last: int | None) -> bool:
        """Whether the CALL at ``call`` is awaited at once and the frame stops in that await
        (index ``last``): the coroutine it made is then the one the frame waits on, whose own
        frame is next on the await chain (and analysed there)."""
        ins = self.instructions
        if last is None or not call + 4 <= last <= call + 5 or last >= len(ins):
            return False
        if not (_is(ins[call + 1], "GET_AWAITABLE", 0) and ins[call + 2].opname == "LOAD_CONST"):
            return False
        if ins[call + 1].is_jump_target or ins[call + 2].is_jump_target:
            return False
        return ins[call + 3].opname == "SEND" and all(
            ins[k].opname in ("YIELD_VALUE", "RESUME") for k in range(call + 4, last + 1)
        )

    def _on_cycle(self, i: int, within: frozenset[int]) -> bool:
        """Whether instruction ``i`` can run twice on a path inside ``within``."""
        seen: set[int] = set()
        stack = [n for n in self.successors[i] if n in within]
        while stack:
            current = stack.pop()
            if current == i:
                return True
            if current not in seen:
                seen.add(current)
                stack.extend(n for n in self.successors[current] if n in within)
        return False

    def _combine(
        self,
        executed: Iterable[int],
        frame: types.FrameType,
        paths: frozenset[int],
        last: int | None,
    ) -> _Template | None:
        reads: set[str] = set()
        writes: set[str] = set()
        lates: list[_Late] = []
        stores: collections.Counter[str] = collections.Counter()
        for i in sorted(executed):
            ins = self.instructions[i]
            if ins.opname in _LOCAL_STORES:
                stores[str(ins.argval)] += 1
            elif ins.opname in _FUSED_LOCAL_STORES:
                for stored in ins.argval[: _FUSED_LOCAL_STORES[ins.opname]]:
                    stores[str(stored)] += 1
            effect = self.effects[i]
            if effect is None:
                return None
            if isinstance(effect, _Late):
                module = _global_module(effect, frame)
                if module is None and effect.loc[1][0] == "modules":
                    reads |= effect.coarse[0]  # not a module's attribute after all
                elif module is None:
                    lates.append(effect)
                else:
                    reads.add(module)  # ``module.name`` is the global ``name``, as LOAD_GLOBAL
                continue
            reads |= effect[0]
            for written in effect[1]:
                if i not in paths:
                    # Only on the whole lines added around the range: an earlier step ran it
                    # (``async with trio.open_nursery()`` entered, the callee called).
                    if written.startswith((_CM, _AITER, _UNKNOWN)):
                        continue
                if written.startswith(_CM):
                    line = int(written[len(_CM) :])
                    if not _library_context_managers(self, line, frame):
                        return None
                    # Entering or leaving touches that primitive (resolved per step).
                    for kind, loaded in self.cm_loaders(line) or ():
                        if kind == "call":
                            # A task group: entering makes a private one; leaving normally
                            # waits for its children (their ends write JOIN). Leaving with an
                            # exception cancels them: unknown.
                            if self._exceptional_exit(i):
                                return None
                            writes.add(JOIN)
                            continue
                        spec = ("global" if kind == "global" else "fast", loaded)
                        lates.append(_Late("sync", ("sync", spec), None, _SYNC_COARSE))
                elif written.startswith(_AITER):
                    iterated = _aiter_spec(self, int(written[len(_AITER) :]), frame)
                    if iterated is None:
                        return None
                    lates.append(_Late("sync", ("sync", iterated), None, _SYNC_COARSE))
                elif written.startswith(_UNKNOWN):
                    resolved = _resolve_call(self, written, frame)
                    if resolved is None:
                        return None
                    if resolved is _COROUTINE_CALL:
                        # Making a coroutine runs none of its code; running it does. That code
                        # is seen only when the coroutine is the one this frame stops awaiting
                        # (it is next on the chain) and was made once: else it may have run to
                        # its end within the step, on neither chain. A call only on the whole
                        # lines added around the range ran in an earlier step.
                        if i not in paths:
                            continue
                        if not self._awaited_at(i, last) or self._on_cycle(i, paths):
                            return None
                        kind, dotted = written[len(_UNKNOWN) :].split(":")[:2]
                        if kind == "local" and "." not in dotted:
                            coro = _Late("coro", ("coro", ("fast", dotted)), None, _NO_EFFECT)
                            lates.append(coro)
                        continue
                    if isinstance(resolved, _Late):
                        lates.append(resolved)
                        continue
                    reads |= resolved[0]
                    writes |= resolved[1]
                else:
                    writes.add(written)
        kept: list[_Late] = []
        for late in lates:
            # A local rebound within the range may have held another object when it was used.
            if any(stores[name] > allowed for name, allowed in late.locals()):
                if late.kind == "coro":
                    return None  # which function was called cannot be told
                reads |= late.coarse[0]
                writes |= late.coarse[1]
            elif late.kind == "coro" and late.loc[1][1] in writes:
                return None  # a closure cell the step rebinds: likewise
            elif late not in kept:
                kept.append(late)
        # A read of what the range also writes adds nothing: the write conflicts with all the
        # read would (its resource, and its family for coarse accesses).
        written_places = {late.loc for late in kept if late.kind == "write"}
        kept = [late for late in kept if late.kind != "read" or late.loc not in written_places]
        return frozenset(reads), frozenset(writes), tuple(kept)


def _variable(ins: dis.Instruction) -> tuple[str, str] | None:
    """("global", name) or ("local", name) for an instruction that only pushes a variable."""
    if ins.opname == "LOAD_GLOBAL":
        return ("global", str(ins.argval))
    if ins.opname in _LOCAL_LOADS or ins.opname == "LOAD_DEREF":
        return ("local", str(ins.argval))
    if ins.opname in _FUSED_LOCAL_LOADS:
        return ("local", str(ins.argval[1]))  # pushed last: the one right below the next push
    return None


def _global_module(late: _Late, frame: types.FrameType) -> str | None:
    """The attribute name of a read ``module.name`` of a global module (resolved once, like the
    calls of a range: modules are not rebound while a scenario runs)."""
    if late.kind != "read" or late.loc[0] != "attr" or late.loc[1][0] not in ("global", "modules"):
        return None
    if late.loc[1][0] == "global":
        value = frame.f_globals.get(late.loc[1][1])
        return str(late.loc[2]) if isinstance(value, types.ModuleType) else None
    # ``package.module.name``: every step of the path a module (``anyio.lowlevel``).
    kind, first, *rest = late.loc[1][1]
    value = (frame.f_globals if kind == "global" else frame.f_locals).get(first)
    for attribute in rest:
        if not isinstance(value, types.ModuleType):
            return None
        value = getattr(value, attribute, None)
    return str(late.loc[2]) if isinstance(value, types.ModuleType) else None


def _spec(ins: dis.Instruction, constants: bool = False) -> _Spec | None:
    """Where the value an instruction pushes (its top one, for the fused loads) comes from."""
    name = ins.opname
    if name in _LOCAL_LOADS:
        return ("fast", str(ins.argval))
    if name in _FUSED_LOCAL_LOADS:
        return ("fast", str(ins.argval[1]))
    if name == "LOAD_DEREF":
        return ("deref", str(ins.argval))
    # 3.13 pushes a call's NULL after the global (3.11 and 3.12: before it, out of the way).
    if name == "LOAD_GLOBAL" and (PYTHON < (3, 13) or not (ins.arg or 0) & 1):
        return ("global", str(ins.argval))
    if constants and name == "LOAD_CONST":
        return ("const", ins.argval)
    return None


def _pair(code: _Code, j: int) -> tuple[_Spec, _Spec, int] | None:
    """The two values pushed by the instructions ending at ``j`` (container, then key), and the
    index of the first of those instructions."""
    ins = code.instructions
    if ins[j].opname == "LOAD_FAST_LOAD_FAST":
        return ("fast", str(ins[j].argval[0])), ("fast", str(ins[j].argval[1])), j
    key = _spec(ins[j], constants=True)
    if key is None or j < 1 or ins[j - 1].opname in _FUSED_LOCAL_LOADS:
        return None
    container = _spec(ins[j - 1])
    if container is None:
        return None
    return container, key, j - 1


def _is(ins: dis.Instruction, opname: str, arg: int | None = None) -> bool:
    return ins.opname == opname and (arg is None or ins.arg == arg)


def _inplace(ins: dis.Instruction) -> bool:
    return ins.opname == "BINARY_OP" and ins.arg in _INPLACE_BINARY_OPS


def _plain_load_attr(ins: dis.Instruction) -> bool:
    # 3.12+: LOAD_ATTR's low bit says it also pushes a method's NULL/self.
    return ins.opname == "LOAD_ATTR" and (PYTHON < (3, 12) or not (ins.arg or 0) & 1)


def _late_access(code: _Code, i: int) -> _Late | None:
    """The precise form of an attribute, subscript or in-place operation at ``i``, when the
    bytecode shows it applies to plain variables (see the patterns below); else None."""
    ins = code.instructions
    here = ins[i]
    name = here.opname
    found: tuple[_Late, int] | None = None
    if name in ("LOAD_ATTR", "LOAD_METHOD"):
        # obj.n          LOAD obj; LOAD_ATTR n
        # obj.n += v     LOAD obj; COPY 1; LOAD_ATTR n; ...
        j = i - 1
        if j >= 1 and _is(ins[j], "COPY", 1):
            j -= 1
        obj = _spec(ins[j]) if j >= 0 else None
        if obj is None and j == i - 1:
            # anyio.lowlevel.checkpoint   LOAD_GLOBAL anyio; LOAD_ATTR lowlevel; LOAD_ATTR ...
            k = j
            path: list[str] = []
            while k >= 0 and _plain_load_attr(ins[k]):
                path.insert(0, str(ins[k].argval))
                k -= 1
            base = _spec(ins[k]) if k >= 0 and path else None
            if base is not None and base[0] in ("global", "deref"):
                obj, j = ("modules", (base[0], base[1], *path)), k
        if obj is not None:
            attr = str(here.argval)
            found = (
                _Late("read", ("attr", obj, attr), None, (frozenset({attr, HEAP}), frozenset())),
                j,
            )
    elif name in ("STORE_ATTR", "DELETE_ATTR"):
        attr = str(here.argval)
        coarse: _Effect = (frozenset(), frozenset({attr, HEAP}))
        obj = _spec(ins[i - 1]) if i >= 1 else None
        if obj is not None:
            found = _Late("write", ("attr", obj, attr), None, coarse), i - 1
        elif (
            name == "STORE_ATTR"
            and i >= 6
            and _is(ins[i - 1], "SWAP", 2)
            and _inplace(ins[i - 2])
            and _spec(ins[i - 3], constants=True) is not None
            and _plain_load_attr(ins[i - 4])
            and ins[i - 4].argval == here.argval
            and _is(ins[i - 5], "COPY", 1)
        ):
            # obj.n += v     LOAD obj; COPY 1; LOAD_ATTR n; LOAD v; BINARY_OP +=; SWAP 2;
            #                STORE_ATTR n
            obj = _spec(ins[i - 6])
            if obj is not None:
                found = _Late("write", ("attr", obj, attr), None, coarse), i - 6
    elif name == "BINARY_SUBSCR":
        # d[k]           LOAD d; LOAD k; BINARY_SUBSCR
        # d[k] += v      LOAD d; LOAD k; COPY 2; COPY 2; BINARY_SUBSCR; ...
        j = i - 1
        if j >= 2 and _is(ins[j], "COPY", 2) and _is(ins[j - 1], "COPY", 2):
            j -= 2
        pair = _pair(code, j) if j >= 0 else None
        if pair is not None:
            coarse = (frozenset({HEAP}), frozenset())
            found = _Late("read", ("item", pair[0], pair[1]), None, coarse), pair[2]
    elif name in ("STORE_SUBSCR", "DELETE_SUBSCR"):
        coarse = (frozenset(), frozenset({HEAP}))
        pair = _pair(code, i - 1) if i >= 1 else None
        if pair is None and (
            name == "STORE_SUBSCR"
            and i >= 9
            and _is(ins[i - 1], "SWAP", 2)
            and _is(ins[i - 2], "SWAP", 3)
            and _inplace(ins[i - 3])
            and _spec(ins[i - 4], constants=True) is not None
            and _is(ins[i - 5], "BINARY_SUBSCR")
            and _is(ins[i - 6], "COPY", 2)
            and _is(ins[i - 7], "COPY", 2)
        ):
            # d[k] += v      LOAD d; LOAD k; COPY 2; COPY 2; BINARY_SUBSCR; LOAD v;
            #                BINARY_OP +=; SWAP 3; SWAP 2; STORE_SUBSCR
            pair = _pair(code, i - 8)
        if pair is not None:
            found = _Late("write", ("item", pair[0], pair[1]), None, coarse), pair[2]
    elif _inplace(here) and i >= 2:
        found = _late_inplace(code, i)
    if found is None:
        return None
    late, first = found
    # A jump landing inside the pattern could bring other values onto the stack.
    if any(ins[k].is_jump_target for k in range(first + 1, i + 1)):
        return None
    return late


def _late_inplace(code: _Code, i: int) -> tuple[_Late, int] | None:
    ins = code.instructions
    coarse = (frozenset({HEAP}), frozenset({HEAP}))
    count = len(ins)
    if ins[i - 1].opname == "LOAD_FAST_LOAD_FAST":
        # x += y (3.13)  LOAD_FAST_LOAD_FAST (x, y); BINARY_OP +=; STORE_FAST x
        left: _Spec = ("fast", str(ins[i - 1].argval[0]))
        right: _Spec = ("fast", str(ins[i - 1].argval[1]))
        if i + 1 < count and _is(ins[i + 1], "STORE_FAST") and ins[i + 1].argval == left[1]:
            return _Late("inplace", ("var", left), right, coarse, 1), i - 1
        return None
    right_spec = _spec(ins[i - 1], constants=True)
    if right_spec is None:
        return None
    below = ins[i - 2]
    after = ins[i + 1 : i + 4]
    if _plain_load_attr(below) and i >= 4 and _is(ins[i - 3], "COPY", 1):
        obj = _spec(ins[i - 4])
        if (
            obj is not None
            and len(after) >= 2
            and _is(after[0], "SWAP", 2)
            and _is(after[1], "STORE_ATTR")
            and after[1].argval == below.argval
        ):
            return _Late("inplace", ("attr", obj, str(below.argval)), right_spec, coarse), i - 4
        return None
    if _is(below, "BINARY_SUBSCR") and i >= 5:
        if not (_is(ins[i - 3], "COPY", 2) and _is(ins[i - 4], "COPY", 2)):
            return None
        pair = _pair(code, i - 5)
        if (
            pair is not None
            and len(after) == 3
            and _is(after[0], "SWAP", 3)
            and _is(after[1], "SWAP", 2)
            and _is(after[2], "STORE_SUBSCR")
        ):
            return _Late("inplace", ("item", pair[0], pair[1]), right_spec, coarse), pair[2]
        return None
    variable = _spec(below)
    if variable is None or variable[0] != "fast" or i + 1 >= count:
        return None
    # x += v         LOAD_FAST x; LOAD v; BINARY_OP +=; STORE_FAST x
    if _is(ins[i + 1], "STORE_FAST") and ins[i + 1].argval == variable[1]:
        return _Late("inplace", ("var", variable), right_spec, coarse, 1), i - 2
    return None


def _library_context_managers(code: _Code, line_start: int, frame: types.FrameType) -> bool:
    loaders = code.cm_loaders(line_start)
    if loaders is None:
        return False
    namespace = frame.f_locals
    for kind, name in loaders:
        if kind == "call":
            if _task_group_factory(name, frame):
                continue
            return False
        if kind == "global":
            value = frame.f_globals.get(name)
        else:
            value = namespace.get(name)
        module = type(value).__module__.split(".")[0]
        if module not in _SCHEDULING_MODULES or not type(value).__name__.endswith(
            _LIBRARY_SYNC_OWNERS
        ):
            return False
    return True


#: What makes a task group for ``async with``: (module, name) of the factory.
_TASK_GROUP_FACTORIES = {
    ("trio", "open_nursery"),
    ("anyio", "create_task_group"),
    ("asyncio", "TaskGroup"),
}
#: Task groups' classes (and trio's nursery manager), whose methods on a chain wait for or
#: start children: their effect is JOIN.
_TASK_GROUP_OWNERS = ("Nursery", "NurseryManager", "TaskGroup")
_TASK_GROUP_FRAMES = {"__aenter__", "__aexit__", "_nested_child_finished"}
_SPAWN_METHODS = {"start_soon", "create_task"}


def _task_group_factory(dotted: str, frame: types.FrameType) -> bool:
    """Whether the global path ``dotted`` (``trio.open_nursery``) names a task group's
    factory in this frame."""
    path = dotted.split(".")
    target: Any = frame.f_globals.get(path[0], _MISSING)
    for attribute in path[1:]:
        target = getattr(target, attribute, _MISSING)
    module = (getattr(target, "__module__", None) or "").split(".")[0]
    return (module, getattr(target, "__name__", "")) in _TASK_GROUP_FACTORIES


def _task_group(value: Any) -> bool:
    owner = type(value)
    return owner.__name__ in _TASK_GROUP_OWNERS and (
        owner.__module__.split(".")[0] in _SCHEDULING_MODULES
    )


def _resolve_call(code: _Code, marker: str, frame: types.FrameType) -> _Effect | _Late | None:
    """What a call does, judged from the object actually called (looked up in the frame)."""
    kind, dotted, index_text = marker[len(_UNKNOWN) :].split(":")
    path = dotted.split(".")
    if kind == "global":
        target: Any = frame.f_globals.get(path[0], getattr(builtins, path[0], _MISSING))
    else:
        target = frame.f_locals.get(path[0], _MISSING)
    owner: Any = _MISSING
    for attribute in path[1:]:
        owner = target
        target = getattr(target, attribute, _MISSING)
    if target is _MISSING:
        return None
    if kind == "local" and len(path) == 1:
        # A function in a variable may be another one at another step: only a coroutine
        # function's call is judged, and checked per step (``_combine``'s "coro" access).
        return _COROUTINE_CALL if _coroutine_function(target) else None
    if owner is _MISSING and target in _PURE_BUILTINS:
        return (frozenset({HEAP}) if _PURE_BUILTINS[target] else frozenset()), frozenset()
    if _builtin_exception(target):
        # ``raise OSError("reset")``: a builtin exception only keeps its arguments.
        return frozenset(), frozenset()
    name = path[-1]
    if owner is not _MISSING and name in _SPAWN_METHODS and _task_group(owner):
        # ``nursery.start_soon(work)``: a new child, which the group's exit waits for.
        return frozenset(), frozenset({JOIN})
    if owner is not _MISSING and type(owner) in _CONTAINERS:
        if name in _CONTAINER_WRITES:
            return frozenset({HEAP}), frozenset({HEAP})
        if name in _CONTAINER_READS:
            return frozenset({HEAP}), frozenset()
        return None
    module = getattr(target, "__module__", None) or ""
    if module.split(".")[0] not in _SCHEDULING_MODULES:
        return _COROUTINE_CALL if _coroutine_function(target) else None
    if name in _SCHEDULING_NAMES:
        if name == "sleep" and not _zero_argument(code, int(index_text)):
            return frozenset(), frozenset({TIMERS})
        return frozenset(), frozenset()
    if (
        owner is not _MISSING
        and name in _SYNC_METHODS
        and type(owner).__module__.split(".")[0] in _SCHEDULING_MODULES
        and type(owner).__name__.endswith(_LIBRARY_SYNC_OWNERS)
    ):
        if len(path) == 2:  # variable.method(): that primitive, resolved per step
            spec = ("global" if kind == "global" else "fast", path[0])
            return _Late("sync", ("sync", spec), None, _SYNC_COARSE)
        return _SYNC_COARSE
    return _COROUTINE_CALL if _coroutine_function(target) else None


#: What ``_resolve_call`` says of a call that only makes a coroutine (``work()``, before the
#: await runs it): judged by ``_Code._combine`` from where the frame stopped.
_COROUTINE_CALL: Any = object()


def _coroutine_function(target: Any) -> bool:
    """Whether calling ``target`` only makes a native coroutine (an ``async def`` function or a
    method of one): no code of its body runs until it is awaited."""
    function = target.__func__ if isinstance(target, types.MethodType) else target
    return isinstance(function, types.FunctionType) and bool(
        function.__code__.co_flags & inspect.CO_COROUTINE
    )


def _builtin_exception(target: Any) -> bool:
    """Whether ``target`` is one of Python's own exception classes (its constructor runs no
    code of anyone's)."""
    return (
        isinstance(target, type)
        and issubclass(target, BaseException)
        and target.__module__ == "builtins"
        and getattr(builtins, target.__name__, None) is target
    )


def _aiter_spec(code: _Code, first: int, frame: types.FrameType) -> _Spec | None:
    """The variable an ``async for`` iterates (its GET_AITER at ``first``) when it holds one of
    the library's memory streams, as a spec for a sync access; else None (unknown)."""
    loaded = _variable(code.instructions[first - 1])
    if loaded is None:
        return None
    kind, name = loaded
    value = frame.f_globals.get(name) if kind == "global" else frame.f_locals.get(name)
    owner = type(value)
    if owner.__module__.split(".")[0] not in _SCHEDULING_MODULES:
        return None
    if not owner.__name__.endswith(_STREAM_OWNERS):
        return None
    return ("global" if kind == "global" else "fast", name)


def _zero_argument(code: _Code, call: int) -> bool:
    """Whether the CALL at ``call`` passes exactly the constant 0 (``sleep(0)``)."""
    instructions = code.instructions
    if instructions[call].opname != "CALL" or instructions[call].arg != 1:
        return False
    before = call - 1
    if PYTHON < (3, 12):
        if before < 1 or instructions[before].opname != "PRECALL":
            return False
        before -= 1
    # A jump landing in between could bring another value (``sleep(1 if slow else 0)``).
    if before < 0 or any(ins.is_jump_target for ins in instructions[before + 1 : call + 1]):
        return False
    argument = instructions[before]
    return argument.opname == "LOAD_CONST" and argument.argval == 0


_CONTAINERS = (list, dict, set, collections.deque, bytearray)


_codes: dict[types.CodeType, _Code] = {}
#: Step footprints (or templates, see ``_StepTemplate``) by (finished, shared frames, both
#: chains' ``ids``). Each value keeps the two chains' ``key`` too: their code objects stay
#: alive, so no id in a key can be reused by another.
_steps: dict[tuple[object, ...], tuple[Any, tuple[object, ...], tuple[object, ...]]] = {}


def _analysis(code: types.CodeType) -> _Code:
    analysis = _codes.get(code)
    if analysis is None:
        analysis = _codes[code] = _Code(code)
    return analysis


#: One frame of an await chain: (frame, offset it stands at, or None if not started).
Position = tuple[types.FrameType, int | None]


_CoroutineType = types.CoroutineType
_GeneratorType = types.GeneratorType


class Chain(list[Position]):
    """A task's await chain, outermost frame first, with a hashable key of its code positions."""

    __slots__ = ("key", "ids")

    # No __init__: chain() is called on every step and sets both itself (an __init__ calling
    # list's costs two calls per step).
    key: tuple[object, ...]
    #: ``key`` with each code object replaced by its id(), for the footprint cache: a code
    #: object's hash is computed afresh every time (on 3.12+ over all of its bytecode).
    ids: tuple[int | None, ...]


EMPTY_CHAIN = Chain()
EMPTY_CHAIN.key = EMPTY_CHAIN.ids = ()


def chain(coro: Any) -> Chain:
    """Every frame on a task's await chain with its position (outermost first)."""
    positions = Chain()
    key: list[object] = []
    ids: list[int | None] = []
    obj = coro
    first = True
    depth = 0
    while obj is not None and depth < 200:
        kind = type(obj)
        if kind is _CoroutineType:
            frame = obj.cr_frame
            inner = obj.cr_await
            started = not first or obj.cr_suspended or obj.cr_running
        elif kind is _GeneratorType:
            frame = obj.gi_frame
            inner = obj.gi_yieldfrom
            started = True
        else:
            frame = getattr(obj, "ag_frame", None)
            inner = getattr(obj, "ag_await", None)
            started = True
        if frame is None:
            break
        offset = frame.f_lasti if started else None
        code = frame.f_code
        positions.append((frame, offset))
        key.append(code)
        key.append(offset)
        ids.append(id(code))
        ids.append(offset)
        obj = inner
        first = False
        depth += 1
    positions.key = tuple(key)
    positions.ids = tuple(ids)
    return positions


def _library_frame(frame: types.FrameType) -> Footprint:
    name = frame.f_code.co_name
    if (
        name in _LIBRARY_SCHEDULING_FRAMES
        or name in _LIBRARY_TASK_WRAPPERS
        or frame.f_code in TRANSPARENT_CODE
    ):
        return frozenset(), frozenset()
    if name in _LIBRARY_SYNC_FRAMES:
        owner = type(frame.f_locals.get("self")).__name__
        if owner.endswith(_LIBRARY_SYNC_OWNERS):
            return _SELF_SYNC
    if name in _TASK_GROUP_FRAMES and _task_group(frame.f_locals.get("self")):
        return _TASK_GROUP
    return None


def _left_acquisition(
    before: Sequence[Position], stops: dict[int, int | None]
) -> tuple[int, frozenset[int]]:
    """A capacity limiter's acquisition (anyio's, on asyncio) that the step resumed in and left:
    the index of its ``acquire_on_behalf_of`` frame in ``before`` and the ids of the frames it
    stands for (that one, the ``acquire``/``__aenter__`` above it, the ``wait`` of its private
    event below it); (-1, no ids) when there is none.

    After the awaits in ``acquire_on_behalf_of`` (the token taken at once, then a shielded
    checkpoint; or a wait for the event that whoever hands the token over sets, having added
    the borrower) a normal return touches nothing: the frames only return. Only the way out
    on an exception gives the token back or leaves the queue, and then the borrower holds no
    token when the step ends. (Its first await, ``checkpoint_if_cancelled``, sleeps again
    while the scope is cancelled: it is left by the cancellation only, before the token is
    asked for, touching nothing.) So the step touches the limiter only when its borrower holds no
    token of it at the end (``_ACQUIRED_LATE``, resolved per step); the event is the
    acquisition's own, set once by the one who popped it from the queue.
    """
    for index, (frame, _) in enumerate(before):
        code = frame.f_code
        if (
            code.co_name != "acquire_on_behalf_of"
            or id(frame) in stops
            or code.co_qualname != "CapacityLimiter.acquire_on_behalf_of"
            or not code.co_filename.replace("\\", "/").endswith("anyio/_backends/_asyncio.py")
        ):
            continue
        limiter = frame.f_locals.get("self")
        ids = {id(frame)}
        outer = index - 1
        while outer >= 0:
            caller = before[outer][0]
            if (
                caller.f_code.co_name not in ("acquire", "__aenter__")
                or id(caller) in stops
                or caller.f_locals.get("self") is not limiter
                or caller.f_code.co_filename != code.co_filename
            ):
                break
            ids.add(id(caller))
            outer -= 1
        if index + 1 < len(before):
            inner = before[index + 1][0]
            if (
                inner.f_code.co_qualname == "Event.wait"
                and id(inner) not in stops
                and inner.f_code.co_filename.replace("\\", "/").endswith("asyncio/locks.py")
            ):
                ids.add(id(inner))
        return index, frozenset(ids)
    return -1, _NO_FRAMES


_NO_FRAMES: frozenset[int] = frozenset()


#: A task group's (trio's nursery's) entry or exit on the chain: it waits for the group's
#: children, whose ends write JOIN, and makes or cancels no one else's state on the way (a
#: child's error ends that child's step with an unknown footprint; an error of the body is
#: seen in the user frame). The library frames it awaits below it are that wait.
_TASK_GROUP: Footprint = (frozenset(), frozenset({JOIN}))


def step_footprint(before: Chain, after: Chain, finished: bool, failed: bool) -> Footprint:
    """The footprint of a step, from the task's await chain when it resumed and when it stopped."""
    if LABELLING.roots:
        LABELLING.roots = False
        footprint = step_footprint(before, after, finished, failed)
        _label_roots(after)
        return footprint
    if failed:
        return None
    # The same code positions give the same footprint, so it is cached on them, with the
    # precise accesses symbolic (resolved here, per step, against the frames). Frames present
    # in both chains are their common outer part (a frame's callers cannot change).
    shared = 0
    for (frame_before, _), (frame_after, _) in zip(before, after, strict=False):
        if frame_before is not frame_after:
            break
        shared += 1
    key = (finished, shared, before.ids, after.ids)
    entry = _steps.get(key)
    if entry is None:
        entry = _steps[key] = (_step_footprint(before, after, finished), before.key, after.key)
    cached = entry[0]
    if type(cached) is not _StepTemplate:
        return cached  # type: ignore[return-value]
    # Each access resolves to a small part; the footprint built from a template's parts is
    # memoised (steps at one code position mostly touch the same few objects).
    start = len(_labels)
    frames = cached.frames
    if len(frames) == 1 and len(frames[0][2]) == 1:
        # One access (``total[0] += 1``...): no list of parts to build.
        resumed, index, resolvers, reads_locals = frames[0]
        frame = (before if resumed else after)[index][0]
        place = resolvers[0](frame, frame.f_locals if reads_locals else None)
        # The first label this step handed out, if any (see ``_labels``).
        memo_key: tuple[Any, ...] = (cached.token, start if len(_labels) > start else -1, place)
    else:
        places: list[Any] = [cached.token, -1]
        for resumed, index, resolvers, reads_locals in frames:
            frame = (before if resumed else after)[index][0]
            local = frame.f_locals if reads_locals else None
            for resolver in resolvers:
                places.append(resolver(frame, local))
        if len(_labels) > start:
            places[1] = start
        memo_key = tuple(places)
    found = _resolved.get(memo_key, _MISSING)
    if found is _MISSING:
        found = _resolved[memo_key] = _build(
            cached.reads, cached.writes, cached.every, memo_key[2:], memo_key[1]
        )
    return found  # type: ignore[no-any-return]


class _StepTemplate(NamedTuple):
    reads: frozenset[str]
    writes: frozenset[str]
    #: Per frame with precise accesses: (on the resumed chain?, index in that chain, the
    #: accesses' resolvers, whether any reads a local: ``f_locals`` costs a copy on 3.11/3.12).
    frames: tuple[tuple[bool, int, tuple[_Resolver, ...], bool], ...]
    #: Every precise access, in the order of the resolvers (a pair for an in-place update).
    every: tuple[Any, ...]
    #: Names this template in the memo of resolved footprints (cheaper to hash than itself).
    token: int


def _step_footprint(
    before: Sequence[Position], after: Sequence[Position], finished: bool
) -> Footprint | _StepTemplate:
    # User code is seen only through the frames on the two chains. A library frame at the
    # bottom of the chain when the task resumed, with nothing of the task left when it stopped,
    # ran code that is on neither chain: a task wrapper that started and finished the user's
    # coroutine in one step. That code is unknown.
    if not after and before and is_library(before[-1][0].f_code.co_filename):
        frame = before[-1][0]
        if frame.f_code.co_name not in _LIBRARY_SCHEDULING_FRAMES:
            return None
    reads: set[str] = set()
    writes: set[str] = set()
    lates: list[tuple[bool, int, tuple[_Late, ...]]] = []
    stops = {id(frame): offset for frame, offset in after}
    # Library wrappers (anyio's task runner...) that await the same inner coroutine before and
    # after the step ran none of their own code.
    inner_before = {id(frame) for frame, _ in before[:-1]}
    passing = {id(frame) for frame, _ in after[:-1] if id(frame) in inner_before}
    seen: set[int] = set()
    acquisition, covered = _left_acquisition(before, stops)
    for positions, resumed in ((before, True), (after, False)):
        waiting = False  # below a task group's entry or exit: its wait for the children
        for index, (frame, offset) in enumerate(positions):
            key = id(frame)
            if key in seen:
                continue
            seen.add(key)
            if is_library(frame.f_code.co_filename):
                if key in passing or waiting:
                    continue  # only forwarded a resumption to the coroutine it awaits
                if key in covered:
                    if index == acquisition:
                        lates.append((True, index, (_ACQUIRED_LATE,)))
                    continue
                effect = _library_frame(frame)
                if effect is None:
                    return None
                if effect is _TASK_GROUP:
                    waiting = True
                if effect is _SELF_SYNC:
                    lates.append((resumed, index, (_SELF_SYNC_LATE,)))
                    continue
                reads |= effect[0]
                writes |= effect[1]
                continue
            analysis = _analysis(frame.f_code)
            if resumed:
                template = analysis.range_template(offset, stops.get(key), frame)
            else:
                template = analysis.range_template(None, offset, frame)
            if template is None:
                return None
            reads |= template[0]
            writes |= template[1]
            if template[2]:
                lates.append((resumed, index, template[2]))
    if finished:
        writes.add(JOIN)
    if lates:
        written = frozenset(writes)
        frames = []
        every: list[Any] = []
        for resumed, index, found in lates:
            resolvers, accesses = _compile_frame(found, written)
            reads_locals = any(_reads_locals(late) for late in found)
            frames.append((resumed, index, resolvers, reads_locals))
            every.extend(accesses)
        return _StepTemplate(frozenset(reads), written, tuple(frames), tuple(every), next(_tokens))
    return frozenset(reads), frozenset(writes)


# -- precise accesses: the objects behind variables ------------------------------------------
#
# ``box.n``, ``table[key]`` and ``box.n += 1`` where ``box``/``table``/``key`` are plain variables
# (locals, closure cells, globals) not rebound within the step are resolved, per step, against the
# frame: the resource is (label of the object's dict, key). The label is not ``id()``: sleep sets
# compare footprints learnt in *earlier* runs of the scenario, where the same object has another
# address. Objects get labels 0, 1, 2... in the order the run's steps chosen at a decision first
# touch them (``LABELLING``), so a common prefix of two runs labels the same objects alike. A
# footprint learnt in another run after that prefix may name labels the current run gives to other
# objects; the first of those labels is the one the current run hands out next. A step that hands
# out labels therefore also writes ``(first label, _FRESH)``: the first step of the current run that
# labels anything new conflicts with every such footprint, whatever the objects (too cautious, never
# unsound), and until then the current run's steps name only labels both runs share. Labelled
# objects are kept alive for the run so that their addresses are not reused.
#
# With DPOR the run's first step (the scenario's, before any task is started or chosen: the same
# in every run) also labels what the scenario's frames hold when it ends, in the order of their
# variables' names (``_label_roots``): the limiter, lists and boxes the tasks share then have the
# same labels in every run whichever task touches them first, and no task's first touch of them
# hands out a label (which would conflict with every other such touch, see ``_FRESH``).

_labels: dict[int, tuple[int, object]] = {}
#: The current run's labels, by object id: its length is how many objects it labelled so far
#: (read-only outside this module; the dfs search's DPOR reads it per step).
OBJECT_LABELS = _labels
_FRESH = "<first new label>"


def begin_run() -> None:
    """Forget the object labels of the previous run (called when a schedule starts)."""
    _labels.clear()
    LABELLING.open = True
    LABELLING.roots = False
    if len(_resolved) > 100_000:
        _resolved.clear()


class _Labelling:
    """Whether the coming step may hand out new labels, and whether it is the run's first and
    labels what the scenario holds when it ends (both set by the dfs chooser per step)."""

    __slots__ = ("open", "roots")

    def __init__(self) -> None:
        self.open = True
        self.roots = False


def _label_roots(after: Sequence[Position]) -> None:
    """Label what the user frames of a chain hold: each variable's container, library
    primitive or instance dict, frames outermost first and variables by name (``_labels``)."""
    for frame, _ in after:
        if is_library(frame.f_code.co_filename):
            continue
        local = frame.f_locals
        for name in sorted(local):
            value = local[name]
            kind = type(value)
            if kind in _CONTAINERS:
                _label(value)
            elif kind.__module__.split(".")[0] in _SCHEDULING_MODULES:
                # A primitive; anything else of the event loop's (a task group) is touched as
                # a primitive or through JOIN, never by label.
                if _library_primitive(value):
                    _primitive_labels(value)
            elif not isinstance(value, _UNLABELLED):
                try:
                    namespace = object.__getattribute__(value, "__dict__")
                except AttributeError:
                    continue
                if type(namespace) is dict:
                    _label(namespace)


# Values whose attributes a step's precise accesses never key (``_compile_location``).
_UNLABELLED = (
    type,
    types.ModuleType,
    types.FunctionType,
    types.BuiltinFunctionType,
    types.MethodType,
    types.CoroutineType,
    *_IMMUTABLE,
)


#: Only the steps chosen at a decision hand out labels: which steps those are follows from the
#: schedule's decisions alone, so runs that share a prefix label the same objects alike. Other
#: steps whose footprint matters (while a task sleeps: whether it wakes up depends on what was
#: explored before) name only objects already labelled; an access to any other object counts
#: as coarse (its whole family), never unsound. Steps that matter for neither are not computed.
LABELLING = _Labelling()


def _label(obj: object) -> int | None:
    entry = _labels.get(id(obj))
    if entry is None:
        if not LABELLING.open:
            return None
        entry = _labels[id(obj)] = (len(_labels), obj)
    return entry[0]


def _plain_attributes(cls: type, name: str) -> bool:
    """Whether ``obj.name`` on instances of ``cls`` reads or writes the instance dict only
    (no ``__getattr__``/``__getattribute__``/``__setattr__`` of its own, no data descriptor)."""
    cached = _plain.get((cls, name))
    if cached is not None:
        return cached
    base: Any = object
    klass: Any = cls
    plain = (
        klass.__getattribute__ is base.__getattribute__
        and klass.__setattr__ is base.__setattr__
        and klass.__delattr__ is base.__delattr__
        and not hasattr(cls, "__getattr__")
    )
    if plain:
        for klass in cls.__mro__:
            if name in klass.__dict__:
                attribute = type(klass.__dict__[name])
                plain = not (hasattr(attribute, "__set__") or hasattr(attribute, "__delete__"))
                break
    _plain[(cls, name)] = plain
    return plain


_plain: dict[tuple[type, str], bool] = {}
_SYNC_COARSE: _Effect = (frozenset(), frozenset({SYNC}))
_NO_EFFECT: _Effect = (frozenset(), frozenset())
# A library frame of a primitive's method: it touches that primitive (its ``self``).
_SELF_SYNC: Footprint = (frozenset(), frozenset({SYNC}))
_SELF_SYNC_LATE = _Late("sync", ("sync", ("fast", "self")), None, _SYNC_COARSE)
# A limiter's acquisition the step left (see ``_left_acquisition``): nothing when its borrower
# holds a token at the end of the step, else every primitive (``SYNC``).
_ACQUIRED_LATE = _Late(
    "acquired", ("acquired", ("fast", "self"), ("fast", "borrower")), None, _SYNC_COARSE
)


def _library_primitive(value: Any) -> bool:
    """Whether ``value`` is one of the library's locks, events, streams... (by its class)."""
    owner = type(value)
    return owner.__name__.endswith(_LIBRARY_SYNC_OWNERS) and (
        owner.__module__.split(".")[0] in _SCHEDULING_MODULES
    )


def _primitive_labels(primitive: Any) -> tuple[tuple[int, str], ...] | None:
    """The resources of a library lock, event, semaphore, condition, limiter or parking lot:
    its own, and its lock's for a condition (which shares it with whoever else uses the lock).
    None for anything else (then every synchronisation step conflicts with it)."""
    if primitive is _MISSING or not type(primitive).__name__.endswith(_LIBRARY_SYNC_OWNERS):
        return None
    if type(primitive).__name__.endswith(_STREAM_OWNERS):
        # Both ends of a memory stream and their clones share one state: what a send changes
        # is what a receive (or a close of any end) reads. That state is the stream's resource.
        state = getattr(primitive, "_state", None)
        if state is None:
            return None
        label = _label(state)
        return None if label is None else ((label, SYNC),)
    label = _label(primitive)
    if label is None:
        return None
    keys: tuple[tuple[int, str], ...] = ((label, SYNC),)
    inner = getattr(primitive, "_lock", None)  # a library class: no code of the user's runs
    if inner is not None:
        inner_keys = _primitive_labels(inner)
        if inner_keys is None:
            return None
        keys += inner_keys
    return keys


_HEAP_FAMILY = (HEAP,)
_ATTRIBUTE_FAMILY: dict[str, tuple[str, str]] = {}


def _family(name: str) -> tuple[str, str]:
    family = _ATTRIBUTE_FAMILY[name] = (name, HEAP)
    return family


# -- compiled accesses ------------------------------------------------------------------------
#
# Each precise access of a template is compiled once into a resolver, a closure over what the
# template fixes (which variables, whether the step rebinds them, constant keys), so that a step
# only fetches its objects: the patterns are not re-interpreted per step. A resolver's part is
# small and cheap to hash (it keys the memo of built footprints with the template's token):
# None (unresolved), ``("name", attribute)`` for a module's attribute, ``(label, key)``, or a
# bool for an in-place operator (whether it only rebound its target).

#: (frame, the frame's locals or None when no access reads a local) -> the access's part.
_Resolver = Callable[[types.FrameType, Any], Any]
_LOCAL, _GLOBAL, _CONST = 0, 1, 2


def _origin(spec: _Spec, written: frozenset[str]) -> tuple[int, Any]:
    """(_LOCAL or _GLOBAL, name) for a variable, (_CONST, value) for a constant; a closure cell
    or global the step rebinds is the constant ``_MISSING`` (it may have held another object)."""
    kind, name = spec
    if kind == "const":
        return _CONST, name
    if name in written:
        return _CONST, _MISSING
    return (_GLOBAL if kind == "global" else _LOCAL), name


def _global(frame: types.FrameType, name: str) -> Any:
    value = frame.f_globals.get(name, _MISSING)
    return getattr(builtins, name, _MISSING) if value is _MISSING else value


def _reads_locals(late: _Late) -> bool:
    specs: list[Any] = [*late.loc[1:], late.right]
    return any(isinstance(spec, tuple) and spec[0] in ("fast", "deref") for spec in specs)


def _unresolved(frame: types.FrameType, local: Any) -> Any:
    return None


def _impure(frame: types.FrameType, local: Any) -> bool:
    return False


def _compile(late: _Late, written: frozenset[str]) -> _Resolver:
    """The resolver of one access, for a step that writes ``written`` (its coarse names)."""
    if late.kind == "coro":
        return _compile_coro(late.loc[1], written)
    if late.kind == "sync":
        return _compile_sync(late.loc[1], written)
    if late.kind == "acquired":
        return _holds_token
    if late.kind == "inplace":
        return _compile_inplace(late, written)
    return _compile_location(late.loc, written)


def _holds_token(frame: types.FrameType, local: Any) -> bool:
    """Whether the borrower of a limiter's ``acquire_on_behalf_of`` frame holds one of its
    tokens (compared by identity: a borrower's own ``__eq__`` is never run)."""
    borrower = local.get("borrower", _MISSING)
    borrowers = getattr(local.get("self"), "_borrowers", None)
    return type(borrowers) is set and any(held is borrower for held in borrowers)


def _compile_frame(
    lates: tuple[_Late, ...], written: frozenset[str]
) -> tuple[tuple[_Resolver, ...], list[Any]]:
    """The resolvers of one frame's accesses, and the accesses each resolves: ``x[k] += v``
    (an in-place operator and the write of the same item) is resolved by one resolver, which
    fetches the container once and gives both parts."""
    resolvers: list[_Resolver] = []
    accesses: list[Any] = []
    paired: set[int] = set()
    for i, late in enumerate(lates):
        if i in paired:
            continue
        if late.kind == "inplace" and late.loc[0] == "item":
            for j in range(i + 1, len(lates)):
                other = lates[j]
                if j not in paired and other.kind == "write" and other.loc == late.loc:
                    paired.add(j)
                    resolvers.append(_compile_item_update(late, written))
                    accesses.append((late, other))
                    break
            else:
                resolvers.append(_compile(late, written))
                accesses.append(late)
            continue
        resolvers.append(_compile(late, written))
        accesses.append(late)
    return tuple(resolvers), accesses


_NEITHER = (False, None)


def _compile_item_update(late: _Late, written: frozenset[str]) -> _Resolver:
    """(whether the in-place operator only rebound the item, the item's part), as
    ``_compile_inplace`` and ``_compile_location`` would give them apart."""
    assert late.right is not None
    right_mode, right_name = _origin(late.right, written)
    right_immutable = right_mode != _CONST or type(right_name) in _IMMUTABLE
    mode, target_name = _origin(late.loc[1], written)
    key_mode, key_name = _origin(late.loc[2], written)
    if mode == _CONST and target_name is _MISSING:
        return lambda frame, local: _NEITHER

    def update(frame: types.FrameType, local: Any) -> tuple[bool, Any]:
        if mode == _LOCAL:
            target = local.get(target_name, _MISSING)
        else:
            target = target_name if mode == _CONST else _global(frame, target_name)
        if key_mode == _CONST:
            key = key_name
        else:
            key = local.get(key_name, _MISSING) if key_mode == _LOCAL else _global(frame, key_name)
        kind = type(target)
        if kind is list:
            entry = _labels.get(id(target))
            label = _label(target) if entry is None else entry[0]
            place = None if label is None else (label, _ITEMS)
            if type(key) is not int:
                return False, place
            try:
                result = target[key]
            except IndexError:
                return False, place
        elif kind is dict and type(key) in _KEYS:
            entry = _labels.get(id(target))
            label = _label(target) if entry is None else entry[0]
            place = None if label is None else (label, key)
            result = target.get(key, _MISSING)
        else:
            return _NEITHER
        if not right_immutable:
            return False, place
        if right_mode != _CONST:
            right = (
                local.get(right_name, _MISSING)
                if right_mode == _LOCAL
                else _global(frame, right_name)
            )
            if type(right) not in _IMMUTABLE:
                return False, place
        return type(result) in _IMMUTABLE, place

    return update


def _compile_value(spec: _Spec, written: frozenset[str], judge: Callable[[Any], Any]) -> _Resolver:
    """A resolver giving ``judge`` of the value a variable holds when the step ends (a local,
    a constant or a global: see :func:`_origin`)."""
    mode, name = _origin(spec, written)

    def resolve(frame: types.FrameType, local: Any) -> Any:
        if mode == _LOCAL:
            value = local.get(name, _MISSING)
        else:
            value = name if mode == _CONST else _global(frame, name)
        return judge(value)

    return resolve


def _compile_coro(spec: _Spec, written: frozenset[str]) -> _Resolver:
    """Whether the function a variable holds, called in the step, is a coroutine function."""
    return _compile_value(spec, written, _coroutine_function)


def _compile_sync(spec: _Spec, written: frozenset[str]) -> _Resolver:
    """The labels of the library primitive a variable holds (None: not one)."""
    return _compile_value(spec, written, _primitive_labels)


def _compile_location(loc: tuple[Any, ...], written: frozenset[str]) -> _Resolver:
    """The resolver of ``obj.name`` or ``obj[key]``: None when the object cannot be told or may
    run code of its own for the access."""
    mode, target_name = _origin(loc[1], written)
    if mode == _CONST and target_name is _MISSING:
        return _unresolved
    if loc[0] == "attr":
        name = loc[2]
        module = ("name", name)

        def attribute(frame: types.FrameType, local: Any) -> Any:
            if mode == _LOCAL:
                target = local.get(target_name, _MISSING)
            else:
                target = target_name if mode == _CONST else _global(frame, target_name)
            if target is _MISSING:
                return None
            if isinstance(target, types.ModuleType):
                return module  # a module's attributes are its globals (one namespace)
            if _library_primitive(target):
                # ``limiter.total_tokens = 3``, ``limiter.available_tokens``: a property of the
                # library's, which reads or changes the primitive (waking its waiters...).
                return ("sync", _primitive_labels(target))
            if isinstance(target, type) or not _plain_attributes(type(target), name):
                return None
            try:
                namespace = object.__getattribute__(target, "__dict__")
            except AttributeError:
                return None
            if type(namespace) is not dict:
                return None
            # Keyed by the instance dict, so that ``vars(obj)["n"]`` is the same resource.
            entry = _labels.get(id(namespace))
            label = _label(namespace) if entry is None else entry[0]
            return None if label is None else (label, name)

        return attribute
    key_mode, key_name = _origin(loc[2], written)

    def item(frame: types.FrameType, local: Any) -> Any:
        if mode == _LOCAL:
            target = local.get(target_name, _MISSING)
        else:
            target = target_name if mode == _CONST else _global(frame, target_name)
        kind = type(target)
        if kind is list:
            entry = _labels.get(id(target))
            label = _label(target) if entry is None else entry[0]
            return None if label is None else (label, _ITEMS)
        if kind is dict:
            if key_mode == _CONST:
                key = key_name
            else:
                key = (
                    local.get(key_name, _MISSING)
                    if key_mode == _LOCAL
                    else _global(frame, key_name)
                )
            if type(key) in _KEYS:
                entry = _labels.get(id(target))
                label = _label(target) if entry is None else entry[0]
                return None if label is None else (label, key)
        return None

    return item


def _compile_inplace(late: _Late, written: frozenset[str]) -> _Resolver:
    """Whether an in-place operator only rebound its target: it stored a value of an immutable
    type there (so it ran ``__add__`` and the like of such values) from another such value."""
    assert late.right is not None
    right_mode, right_name = _origin(late.right, written)
    if right_mode == _CONST:
        if type(right_name) not in _IMMUTABLE:
            return _impure
        right_name = _CONST  # checked here, once
    loc = late.loc
    if loc[0] == "var":
        mode, target_name = _origin(loc[1], _NONE)

        def variable(frame: types.FrameType, local: Any) -> bool:
            if right_mode != _CONST:
                right = (
                    local.get(right_name, _MISSING)
                    if right_mode == _LOCAL
                    else _global(frame, right_name)
                )
                if type(right) not in _IMMUTABLE:
                    return False
            value = (
                local.get(target_name, _MISSING) if mode == _LOCAL else _global(frame, target_name)
            )
            return type(value) in _IMMUTABLE

        return variable
    mode, target_name = _origin(loc[1], written)
    if mode == _CONST and target_name is _MISSING:
        return _impure
    if loc[0] == "attr":
        name = loc[2]

        def attribute(frame: types.FrameType, local: Any) -> bool:
            if right_mode != _CONST:
                right = (
                    local.get(right_name, _MISSING)
                    if right_mode == _LOCAL
                    else _global(frame, right_name)
                )
                if type(right) not in _IMMUTABLE:
                    return False
            if mode == _LOCAL:
                target = local.get(target_name, _MISSING)
            else:
                target = target_name if mode == _CONST else _global(frame, target_name)
            if target is _MISSING:
                return False
            if isinstance(target, type) or not _plain_attributes(type(target), name):
                return False
            namespace = getattr(target, "__dict__", None)
            result = namespace.get(name, _MISSING) if type(namespace) is dict else _MISSING
            return type(result) in _IMMUTABLE

        return attribute
    key_mode, key_name = _origin(loc[2], written)

    def item(frame: types.FrameType, local: Any) -> bool:
        if right_mode != _CONST:
            right = (
                local.get(right_name, _MISSING)
                if right_mode == _LOCAL
                else _global(frame, right_name)
            )
            if type(right) not in _IMMUTABLE:
                return False
        if mode == _LOCAL:
            target = local.get(target_name, _MISSING)
        else:
            target = target_name if mode == _CONST else _global(frame, target_name)
        if key_mode == _CONST:
            key = key_name
        else:
            key = local.get(key_name, _MISSING) if key_mode == _LOCAL else _global(frame, key_name)
        kind = type(target)
        if kind is list and type(key) is int:
            try:
                result = target[key]
            except IndexError:
                return False
        elif kind is dict and type(key) in _KEYS:
            result = target.get(key, _MISSING)
        else:
            return False
        return type(result) in _IMMUTABLE

    return item


def _resolve(
    reads_in: frozenset[str],
    writes_in: frozenset[str],
    places: list[Any],
    every: tuple[_Late, ...],
    start: int,
    token: Hashable,
) -> Footprint:
    # Each access resolved to a small part (``places``, in the order of ``every``); the
    # footprint built from a template's parts is memoised (steps at one code position mostly
    # touch the same few objects). ``start`` is how many labels there were before resolving.
    # The first label this step handed out, if any (see the comment above ``_labels``).
    fresh = start if len(_labels) > start else -1
    key = (token, fresh, *places)
    found = _resolved.get(key, _MISSING)
    if found is _MISSING:
        found = _resolved[key] = _build(reads_in, writes_in, every, places, fresh)
    return found  # type: ignore[no-any-return]


_resolved: dict[tuple[Any, ...], Footprint] = {}
_tokens = itertools.count()


def _build(
    reads_in: frozenset[str],
    writes_in: frozenset[str],
    every: Sequence[Any],
    places: Sequence[Any],
    fresh: int,
) -> Footprint:
    reads: set[Any] = set(reads_in)
    writes: set[Any] = set(writes_in)
    if fresh >= 0:
        writes.add((fresh, _FRESH))
    family_reads: set[str] = set()
    family_writes: set[str] = set()
    parts: list[tuple[_Late, Any]] = []
    for access, place in zip(every, places, strict=True):
        if type(access) is tuple:
            parts.extend(zip(access, place, strict=True))  # an in-place update: see _compile_frame
        else:
            parts.append((access, place))
    for late, place in parts:
        kind = late.kind
        if kind == "coro":
            if not place:
                return None  # the call ran code that is on neither chain
            continue
        if kind == "acquired":
            if not place:
                writes.add(SYNC)
            continue
        if kind == "sync":
            if place is None:
                writes.add(SYNC)
            else:
                writes.update(place)
                family_writes.add(SYNC)
        elif kind == "inplace":
            if not place:
                reads |= late.coarse[0]
                writes |= late.coarse[1]
        elif place is None:
            reads |= late.coarse[0]
            writes |= late.coarse[1]
        elif place[0] == "sync":
            # An attribute of a library primitive: that primitive, as its methods touch it.
            if place[1] is None:
                writes.add(SYNC)
            else:
                writes.update(place[1])
                family_writes.add(SYNC)
        elif place[0] == "name":
            (writes if kind == "write" else reads).add(place[1])
        else:
            # An attribute's family is its name and the heap (``x.n`` on an unknown ``x``, the
            # instance dict's contents); an item's is the heap.
            name = late.loc[2]
            family = (
                (_ATTRIBUTE_FAMILY.get(name) or _family(name))
                if late.loc[0] == "attr"
                else _HEAP_FAMILY
            )
            if kind == "write":
                writes.add(place)
                family_writes.update(family)
            else:
                reads.add(place)
                family_reads.update(family)
    if family_reads or family_writes:
        return (
            frozenset(reads),
            frozenset(writes),
            frozenset(family_reads),
            frozenset(family_writes),
        )
    return frozenset(reads), frozenset(writes)


def independent(a: Footprint, b: Footprint) -> bool:
    """Whether two steps (of different tasks) commute.

    Resources are compared exactly; a step that touched ``(object, key)`` precisely also names
    the *family* of that access (the attribute name, or the heap) in its third and fourth sets,
    so that a coarse write of the family conflicts with it, and a precise write with a coarse
    read of the family (precise accesses of different objects in one family commute).
    """
    if a is None or b is None:
        return False
    reads_a = a[0]
    writes_a = a[1]
    reads_b = b[0]
    writes_b = b[1]
    # isdisjoint builds no set (a union would, hashing every resource again): DPOR calls this
    # at every new step.
    if not (
        writes_a.isdisjoint(reads_b)
        and writes_a.isdisjoint(writes_b)
        and writes_b.isdisjoint(reads_a)
    ):
        return False
    if len(a) == 2 and len(b) == 2:
        return True
    family_reads_a, family_writes_a = (a[2], a[3]) if len(a) > 2 else (_NONE, _NONE)
    family_reads_b, family_writes_b = (b[2], b[3]) if len(b) > 2 else (_NONE, _NONE)
    return (
        writes_a.isdisjoint(family_reads_b)
        and writes_a.isdisjoint(family_writes_b)
        and writes_b.isdisjoint(family_reads_a)
        and writes_b.isdisjoint(family_writes_a)
        and family_writes_a.isdisjoint(reads_b)
        and family_writes_b.isdisjoint(reads_a)
    )


_NONE: frozenset[Any] = frozenset()


# -- source lines of each access, for the race window of a reported schedule -----------------
#
# Computed only when a failing schedule is reported (never during the search), from the same
# await chains the footprints use: the instructions a step may have executed in each user frame,
# with the line and source text of every name or subscript read and written.


class Access(NamedTuple):
    """One read or write a step may have made in user code."""

    #: What conflicts: an attribute or global name, or ``[]`` and the container's source text.
    key: str
    #: The access's source text, e.g. ``self.balance``.
    text: str
    write: bool
    filename: str
    line: int


_SUBSCRIPT_READS = {"BINARY_SUBSCR"}
_SUBSCRIPT_WRITES = {"STORE_SUBSCR", "DELETE_SUBSCR"}
_ATTR_READS = {"LOAD_ATTR", "LOAD_METHOD"}
_ATTR_WRITES = {"STORE_ATTR", "DELETE_ATTR"}
_accesses: dict[tuple[types.CodeType, int | None, int | None], tuple[Access | int, ...]] = {}


def _source(filename: str, ins: dis.Instruction) -> str | None:
    import linecache

    positions = ins.positions
    if positions is None or positions.lineno is None or positions.lineno != positions.end_lineno:
        return None
    if positions.col_offset is None or positions.end_col_offset is None:
        return None
    line = linecache.getline(filename, positions.lineno)
    text = line.encode()[positions.col_offset : positions.end_col_offset].decode(errors="replace")
    return text.strip() or None


def _instruction_access(code: _Code, i: int) -> Access | None:
    ins = code.instructions[i]
    name = ins.opname
    filename = code.code.co_filename
    line = ins.positions.lineno if ins.positions and ins.positions.lineno else None
    if line is None:
        return None
    if name in _NAME_READS and name not in _ATTR_READS:
        return Access(*(str(ins.argval), str(ins.argval), False, filename, line))
    if name in _NAME_WRITES:
        return Access(*(str(ins.argval), str(ins.argval), True, filename, line))
    if name in _ATTR_READS or name in _ATTR_WRITES:
        text = _source(filename, ins) or f".{ins.argval}"
        if name in _ATTR_WRITES:
            # The store's position covers the whole assignment; keep only its target.
            text = text.split("=", 1)[0].strip() if "=" in text else text
        return Access(*(str(ins.argval), text, name in _ATTR_WRITES, filename, line))
    if name in _SUBSCRIPT_READS or name in _SUBSCRIPT_WRITES:
        subscript = _source(filename, ins)
        if subscript is None:
            return None
        text = subscript
        if name in _SUBSCRIPT_WRITES and "=" in text:
            text = text.split("=", 1)[0].strip()
        container = text.rsplit("[", 1)[0] if "[" in text else text
        return Access(*(f"[]{container}", text, name in _SUBSCRIPT_WRITES, filename, line))
    return None


def _range_accesses(code: _Code, start: int | None, stop: int | None) -> tuple[Access | int, ...]:
    """The accesses on some path from ``start`` to ``stop`` (both whole lines included: the set
    ``range_footprint`` classifies), in order, with the index of each call among them."""
    key = (code.code, start, stop)
    cached = _accesses.get(key)
    if cached is not None:
        return cached
    first = 0 if start is None else code.index.get(start)
    found: list[Access | int] = []
    if first is not None:
        executed = code._reach(first, code.successors)
        last = None if stop is None else code.index.get(stop)
        if stop is not None and last is None:
            executed = set()
        elif last is not None:
            executed &= code._reach(last, code.predecessors)
            executed.update(code._line_of(last))
        if start is not None:
            executed.update(code._line_of(first))
        for i in sorted(executed):
            if code.instructions[i].opname == "CALL":
                found.append(i)
                continue
            access = _instruction_access(code, i)
            if access is not None:
                found.append(access)
    result = tuple(found)
    _accesses[key] = result
    return result


#: How deep the window follows calls into user functions that ran inside a step.
_CALL_DEPTH = 3


def _called_function(
    code: _Code, call: int, local: dict[str, Any], global_: dict[str, Any]
) -> tuple[types.FunctionType, Any] | None:
    """The user function a CALL invokes, and the object it is a method of (or _MISSING).

    Looked up with ``getattr_static``: a property or ``__getattr__`` is never run for this."""
    import inspect

    callee = code._callee(call)
    if callee is None or callee[0] not in ("global", "local"):
        return None
    kind, path = callee
    if kind == "global":
        target: Any = global_.get(path[0], _MISSING)
    else:
        target = local.get(path[0], _MISSING)
    owner: Any = _MISSING
    for attribute in path[1:]:
        if target is _MISSING:
            return None
        owner = target
        try:
            target = inspect.getattr_static(target, attribute)
        except AttributeError:
            return None
    if isinstance(target, (staticmethod, classmethod)):
        target = target.__func__
        owner = _MISSING
    if isinstance(target, types.MethodType):
        owner, target = target.__self__, target.__func__
    if not isinstance(target, types.FunctionType) or is_library(target.__code__.co_filename):
        return None
    if isinstance(owner, types.ModuleType) or isinstance(owner, type):
        owner = _MISSING
    return target, owner


def _expand(
    code: _Code,
    items: tuple[Access | int, ...],
    local: dict[str, Any],
    global_: dict[str, Any],
    depth: int,
    found: list[Access],
) -> None:
    for item in items:
        if not isinstance(item, int):
            found.append(item)
            continue
        if depth >= _CALL_DEPTH:
            continue
        called = _called_function(code, item, local, global_)
        if called is None:
            continue
        function, owner = called
        inner = _analysis(function.__code__)
        names = function.__code__.co_varnames
        # Inside the callee only ``self`` (the object it was called on) is known.
        inner_local = {names[0]: owner} if owner is not _MISSING and names else {}
        body = _range_accesses(inner, None, None)
        _expand(inner, body, inner_local, function.__globals__, depth + 1, found)


def step_accesses(before: Sequence[Position], after: Sequence[Position]) -> tuple[Access, ...]:
    """The reads and writes of names and subscripts a step may have made in user code, in
    execution order per frame (outer frames first), with their lines; calls to user functions
    that ran inside the step are followed (``_CALL_DEPTH`` deep)."""
    stops = {id(frame): offset for frame, offset in after}
    seen: set[int] = set()
    found: list[Access] = []
    for positions, resumed in ((before, True), (after, False)):
        for frame, offset in positions:
            key = id(frame)
            if key in seen or is_library(frame.f_code.co_filename):
                continue
            seen.add(key)
            analysis = _analysis(frame.f_code)
            if resumed:
                items = _range_accesses(analysis, offset, stops.get(key))
            else:
                items = _range_accesses(analysis, None, offset)
            _expand(analysis, items, frame.f_locals, frame.f_globals, 0, found)
    return tuple(found)


def chain_key(coro: Any) -> tuple[object, ...]:
    """``chain(coro).key`` without building the chain: what the search's step sketches store."""
    key: list[object] = []
    obj = coro
    first = True
    while obj is not None and len(key) < 400:
        kind = type(obj)
        if kind is _CoroutineType:
            frame = obj.cr_frame
            if frame is None:
                break
            started = not first or obj.cr_suspended or obj.cr_running
            inner = obj.cr_await
        elif kind is _GeneratorType:
            frame = obj.gi_frame
            if frame is None:
                break
            started = True
            inner = obj.gi_yieldfrom
        else:
            frame = getattr(obj, "ag_frame", None)
            if frame is None:
                break
            started = True
            inner = getattr(obj, "ag_await", None)
        key.append(frame.f_code)
        key.append(frame.f_lasti if started else None)
        obj = inner
        first = False
    return tuple(key)
