"""Step footprints from each supported CPython's bytecode (3.11, 3.12, 3.13), and the reduction
switched off, and said to be, on a version the analysis does not know.

The coroutines here are stepped by hand (``send``) with no event loop: ``asyncio.sleep(0)`` and an
uncontended ``asyncio.Lock`` never need one. Each test function is its own code object, because
footprints are cached per code position.
"""

from __future__ import annotations

import asyncio
import sys
from asyncio import sleep
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import pytest

from asynclocks import Backend, explore
from asynclocks.__main__ import main
from asynclocks._explore import _footprint
from asynclocks._explore._footprint import (
    EMPTY_CHAIN,
    HEAP,
    SUPPORTED_PYTHONS,
    SYNC,
    TIMERS,
    Footprint,
    chain,
    reduction_unavailable,
    step_footprint,
)

from .reduction_scenarios import independent_work_then_lock
from .test_reduction import count_schedules

COUNTER = 0
NOTHING: frozenset[str] = frozenset()


def steps(coro: Coroutine[Any, Any, Any]) -> list[Footprint]:
    """Run a coroutine to its end, one step per suspension; the footprint of each step."""
    result = []
    before = chain(coro)
    while True:
        try:
            coro.send(None)
        except StopIteration:
            result.append(step_footprint(before, EMPTY_CHAIN, True, False))
            return result
        after = chain(coro)
        result.append(step_footprint(before, after, False, False))
        before = after


class Account:
    def __init__(self) -> None:
        self.balance = 100


def test_this_interpreter_is_one_the_analysis_knows() -> None:
    # The version sessions (nox) run this suite on each version in SUPPORTED_PYTHONS.
    assert sys.version_info[:2] in SUPPORTED_PYTHONS
    assert reduction_unavailable() is None


def test_a_global_read_is_a_read_of_that_name() -> None:
    async def reader() -> int:
        value = COUNTER
        await sleep(0)
        return value

    first, last = steps(reader())
    assert first == (frozenset({"COUNTER", "sleep"}), NOTHING)
    assert last == (frozenset({"sleep"}), frozenset({_footprint.JOIN}))


def test_a_global_write_is_a_write_of_that_name() -> None:
    async def writer() -> None:
        global COUNTER
        await sleep(0)
        COUNTER = 1

    first, last = steps(writer())
    assert first == (frozenset({"sleep"}), NOTHING)
    assert last is not None
    assert last[1] == frozenset({"COUNTER", _footprint.JOIN})


def test_a_write_through_an_attribute_writes_that_object_s_attribute() -> None:
    async def withdraw(account: Account) -> None:
        await sleep(0)
        account.balance = 5
        await sleep(0)

    _footprint.begin_run()
    account = Account()
    _, middle, _ = steps(withdraw(account))
    assert middle is not None
    # Precise: (the label of the account's dict, the name); its family is named for coarse ones.
    label = _footprint._label(vars(account))
    assert (label, "balance") in middle[1]
    assert middle[1] - {(label, "balance")} <= {(label, _footprint._FRESH)}
    assert middle[3] == frozenset({HEAP, "balance"})


def test_sleep_zero_and_local_work_touch_nothing() -> None:
    async def local_only() -> None:
        await sleep(0)
        first = 1
        second = 2
        third = first
        first = second
        pair = (third, first)
        del pair
        await sleep(0)

    _, middle, _ = steps(local_only())
    assert middle == (frozenset({"sleep"}), NOTHING)


def test_a_non_zero_sleep_writes_the_timers() -> None:
    async def slow() -> None:
        await sleep(1)

    async def maybe(flag: bool) -> None:
        await sleep(1 if flag else 0)  # a jump lands among the arguments: not a constant 0

    # Classified without running (a real delay needs a loop); the frame resolves ``sleep``.
    frame = sys._getframe()
    assert _footprint._analysis(slow.__code__).range_footprint(None, None, frame) == (
        frozenset({"sleep"}),
        frozenset({TIMERS}),
    )
    assert _footprint._analysis(maybe.__code__).range_footprint(None, None, frame) is None


def test_container_methods_read_or_write_the_heap() -> None:
    async def fill(items: list[int], table: dict[str, int]) -> None:
        await sleep(0)
        items.append(1)
        await sleep(0)
        table.update(k=2)  # a keyword call: KW_NAMES (3.12), CALL_KW (3.13)
        await sleep(0)
        seen = table.get("k")
        await sleep(0)
        del seen

    _, append, update, get, _ = steps(fill([], {}))
    assert append == (frozenset({"sleep", "append", HEAP}), frozenset({HEAP}))
    assert update == (frozenset({"sleep", "update", HEAP}), frozenset({HEAP}))
    assert get == (frozenset({"sleep", "get", HEAP}), NOTHING)


def test_a_user_method_call_is_unknown() -> None:
    class Tally:
        def append(self, value: int) -> None:
            del value

    async def bump(tally: Tally) -> None:
        await sleep(0)
        tally.append(1)
        await sleep(0)

    _, middle, _ = steps(bump(Tally()))
    assert middle is None


def test_a_bare_truth_test_reads_the_heap() -> None:
    async def check(pending: list[int]) -> int:
        await sleep(0)
        empty = 0 if pending else 1  # 3.13: TO_BOOL; 3.11 and 3.12: the jump tests it
        await sleep(0)
        return empty

    _, middle, _ = steps(check([]))
    assert middle == (frozenset({"sleep", HEAP}), NOTHING)


def test_formatting_a_value_reads_the_heap() -> None:
    async def show(pending: list[int]) -> str:
        await sleep(0)
        text = f"{pending!r:>4}"  # 3.13: CONVERT_VALUE, FORMAT_WITH_SPEC; before: FORMAT_VALUE
        await sleep(0)
        return text

    _, middle, _ = steps(show([]))
    assert middle == (frozenset({"sleep", HEAP}), NOTHING)


def test_slices_read_and_write_the_heap() -> None:
    async def splice(items: list[int]) -> None:
        await sleep(0)
        head = items[:1]  # 3.12+: BINARY_SLICE
        await sleep(0)
        items[:1] = head  # 3.12+: STORE_SLICE
        await sleep(0)

    _, read, write, _ = steps(splice([1, 2]))
    assert read == (frozenset({"sleep", HEAP}), NOTHING)
    assert write is not None
    assert write[1] == frozenset({HEAP})


def test_a_comprehension_reads_the_heap_once_inlined() -> None:
    async def copy(items: list[int]) -> list[int]:
        await sleep(0)
        copied = [item for item in items]
        await sleep(0)
        return copied

    _, middle, _ = steps(copy([1]))
    if sys.version_info >= (3, 12):
        # PEP 709 inlines it (LOAD_FAST_AND_CLEAR, END_FOR): only the frame's own code runs.
        assert middle == (frozenset({"sleep", HEAP}), NOTHING)
    else:
        assert middle is None  # 3.11 calls a separate function object: unknown


def test_a_library_lock_writes_that_lock() -> None:
    async def locked(lock: asyncio.Lock, box: list[int]) -> None:
        await sleep(0)
        async with lock:
            value = box[0]
            await sleep(0)
            box[0] = value + 1
        await sleep(0)

    _footprint.begin_run()
    lock = asyncio.Lock()
    _, enter, leave, _ = steps(locked(lock, [0]))
    assert enter is not None
    assert leave is not None
    mine = (_footprint._label(lock), SYNC)
    assert mine in enter[1]
    assert mine in leave[1]
    # Precise accesses name their families: synchronisation, and the list's items in the heap.
    assert len(enter) == 4
    assert {SYNC, HEAP} <= enter[2] | enter[3]
    assert len(leave) == 4
    assert {SYNC, HEAP} <= leave[3]
    # Another lock's steps commute with these; a coarse synchronisation step does not.
    other: Footprint = (
        frozenset(),
        frozenset({(-1, SYNC)}),  # a label no object of this run has
        frozenset(),
        frozenset({SYNC}),
    )
    assert _footprint.independent(leave, other)
    assert not _footprint.independent(leave, (frozenset(), frozenset({SYNC})))


@pytest.mark.parametrize("version", [(3, 14), (3, 10)])
def test_an_unknown_python_turns_the_reduction_off_and_says_why(
    backend: Backend, version: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    scenario = independent_work_then_lock(2, 1)
    full = count_schedules(scenario, backend, reduce=False)
    monkeypatch.setattr(_footprint, "PYTHON", version)
    report = explore(scenario, backend=backend)
    assert not report.failed
    assert report.exhaustive
    assert not report.reduced
    assert report.schedules == full
    assert "partial-order reduction" not in report.coverage
    (note,) = report.notes
    assert note.startswith("sleep-set reduction off")
    assert f"Python {version[0]}.{version[1]}" in note
    assert "3.11, 3.12, 3.13" in note
    assert note in str(report)


def test_a_known_python_prunes_and_adds_no_note(backend: Backend) -> None:
    scenario = independent_work_then_lock(2, 1)
    report = explore(scenario, backend=backend)
    assert report.reduced
    assert report.notes == []
    assert report.schedules < count_schedules(scenario, backend, reduce=False)
    assert "partial-order reduction (DPOR + sleep sets)" in report.coverage


def test_a_preemption_bound_adds_no_note_on_an_unknown_python(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The bound switches the reduction off anyway; the version is not why.
    monkeypatch.setattr(_footprint, "PYTHON", (3, 14))
    report = explore(independent_work_then_lock(2, 1), backend=backend, preemption_bound=2)
    assert not report.reduced
    assert report.notes == []


def test_the_cli_prints_why_the_reduction_is_off(
    backend: Backend, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(_footprint, "PYTHON", (3, 14))
    target = f"tests.asynclocks.explore.scenarios:{backend}_locked_counter"
    code = main(["explore", target, "--backend", backend, "--quiet"])
    out = capsys.readouterr().out
    assert code == 0
    assert out.startswith(f"PASS on {backend}")
    assert "note: sleep-set reduction off" in out
    assert "this is Python 3.14" in out


def test_testing_what_aexit_returned_is_no_read_but_testing_an_awaited_value_is() -> None:
    async def body(lock: asyncio.Lock, fetch: Callable[[], Awaitable[list[int]]]) -> None:
        async with lock:  # on the exception path, __aexit__'s result decides: suppress or not
            pass
        if await fetch():  # the awaited list's length
            pass

    analysis = _footprint._analysis(body.__code__)
    tests = [
        effect
        for ins, effect in zip(analysis.instructions, analysis.effects, strict=True)
        if ins.opname in _footprint._TRUTH_TESTS
    ]
    assert sorted(tests, key=str) == [(NOTHING, NOTHING), (frozenset({HEAP}), NOTHING)]


class Guarded:
    def __init__(self) -> None:
        self._n = 0

    @property
    def n(self) -> int:
        return self._n

    @n.setter
    def n(self, value: int) -> None:
        self._n = value


def middle_step(coro: Coroutine[Any, Any, Any]) -> Footprint:
    _footprint.begin_run()
    _, middle, _ = steps(coro)
    return middle


async def bump(box: Any) -> None:
    await sleep(0)
    box.n += 1
    await sleep(0)


async def bump_key(table: dict[Any, int], key: Any) -> None:
    await sleep(0)
    table[key] += 1
    await sleep(0)


async def bump_through_vars(box: Any) -> None:
    await sleep(0)
    vars(box)["n"] = 1
    await sleep(0)


async def bump_rebound(box: Any, other: Any) -> None:
    await sleep(0)
    box.n += 1
    box = other
    await sleep(0)


def both(first: Coroutine[Any, Any, Any], second: Coroutine[Any, Any, Any]) -> bool:
    """Whether the middle steps of two coroutines commute (labels shared: one run)."""
    _footprint.begin_run()
    a = steps(first)[1]
    b = steps(second)[1]
    return _footprint.independent(a, b)


def test_own_objects_and_keys_commute_shared_ones_do_not() -> None:
    one, two = Account(), Account()
    one.n = two.n = 0  # type: ignore[attr-defined]
    assert both(bump(one), bump(two))
    assert not both(bump(one), bump(one))
    table = {"a": 0, "b": 0, 1: 0}
    assert both(bump_key(table, "a"), bump_key(table, "b"))
    assert not both(bump_key(table, "a"), bump_key(table, "a"))
    assert not both(bump_key(table, 1), bump_key(table, True))  # equal keys of a dict
    # Writing an instance dict (a call's result: the whole heap) conflicts with its attributes.
    assert not both(bump(one), bump_through_vars(one))


def test_what_precision_cannot_see_stays_coarse() -> None:
    guarded = Guarded()
    step = middle_step(bump(guarded))  # a property runs code: the name and the heap
    assert step is not None
    assert {"n", HEAP} <= step[1]
    one, two = Account(), Account()
    one.n = two.n = 0  # type: ignore[attr-defined]
    rebound = middle_step(bump_rebound(one, two))  # the local is rebound in the step
    assert rebound is not None
    assert {"n", HEAP} <= rebound[1]
