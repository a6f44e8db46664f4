"""Traces show the whole race: source lines, wake-ups, cancellations, timeouts, the clock, how
each task ended; deadlock reports name the primitive, its state and its holder."""

from __future__ import annotations

import pytest

from asynclocks import Backend, DeadlockError, explore
from asynclocks._explore._common import TraceEvent, format_event

from . import trace_scenarios


def _line(marker: str) -> int:
    with open(trace_scenarios.__file__, encoding="utf-8") as source:
        for number, text in enumerate(source, 1):
            if text.rstrip().endswith(f"# {marker}"):
                return number
    raise LookupError(marker)


def _rows(trace: str) -> list[str]:
    return [line.strip() for line in trace.splitlines()]


def test_each_await_shows_its_source_line(backend: Backend) -> None:
    report = explore(trace_scenarios.handoff, backend=backend, strategy="fifo")
    lines = report.trace.splitlines()
    at = f"trace_scenarios.py:{_line('HOLDING')} (first)"
    index = next(i for i, line in enumerate(lines) if line.endswith(at) and " -> " in line)
    assert lines[index + 1].strip() == "| await anyio.sleep(0.25)  # HOLDING"


def test_wake_ups_and_the_clock_are_events_before_the_step_they_start(backend: Backend) -> None:
    report = explore(trace_scenarios.handoff, backend=backend, strategy="fifo")
    rows = _rows(report.trace)
    time = rows.index("~ virtual time advanced to 0.25 s")
    woke_lock = rows.index("~ #2 second woke: anyio.Lock acquired")
    woke_event = rows.index("~ #3 third woke: anyio.Event set")
    assert time < woke_lock < woke_event
    # Each wake-up line is followed by that task's step, resuming where it waited.
    assert f"trace_scenarios.py:{_line('WAITS_FOR_LOCK')} (second) ->" in rows[woke_lock + 1]
    assert f"trace_scenarios.py:{_line('WAITS_FOR_EVENT')} (third) ->" in rows[woke_event + 1]
    # A yield that never blocked (sleep(0), anyio's checkpoint after a free acquire) woke nothing.
    assert sum(1 for row in rows if " woke: " in row) == 2, report.trace


def test_each_task_ends_as_it_really_ended(backend: Backend) -> None:
    native = (
        trace_scenarios.asyncio_returns if backend == "asyncio" else trace_scenarios.trio_returns
    )
    rows = _rows(explore(native, backend=backend, strategy="fifo").trace)
    assert any(row.endswith("(answer) -> returned 42") for row in rows), rows
    assert any(row.endswith("(greeting) -> returned 'hello'") for row in rows), rows
    assert any(row.endswith(" -> raised Done: the end") for row in rows), rows
    # anyio's task wrapper returns None whatever the function returned: plain "returned".
    handoff = _rows(explore(trace_scenarios.handoff, backend=backend, strategy="fifo").trace)
    assert any(row.endswith("(first) -> returned") for row in handoff)
    assert any(row.endswith("(handoff) -> raised Done: the end") for row in handoff)
    assert not any(row.endswith("-> finished") for row in rows + handoff)
    cancelled = explore(trace_scenarios.cancel_and_timeout, backend=backend, strategy="fifo")
    rows = _rows(cancelled.trace)
    assert any(row.endswith(f":{_line('DOOMED')} (doomed) -> cancelled") for row in rows)
    impatient = f":{_line('IMPATIENT')} (impatient) -> raised TimeoutError"
    assert any(row.endswith(impatient) for row in rows)


def test_cancellations_and_timeouts_are_events(backend: Backend) -> None:
    report = explore(trace_scenarios.cancel_and_timeout, backend=backend, strategy="fifo")
    rows = _rows(report.trace)
    assert "~ #1 doomed cancelled: woke with a cancellation" in rows
    timeout = next(i for i, row in enumerate(rows) if row.startswith("~ #2 impatient timeout: "))
    assert rows[timeout - 1] == "~ virtual time advanced to 0.6 s"
    assert rows[timeout + 1] == "~ #2 impatient cancelled: woke with a cancellation"
    # trio ends a sleep by its own deadline: a sleep is never shown as a timeout.
    assert not any(row.startswith("~ #0 cancel_and_timeout timeout") for row in rows)
    if backend == "trio":
        assert not any(row.startswith("~ #0 ") for row in rows)


def test_an_event_kind_another_recorder_adds_is_shown_as_given() -> None:
    event = TraceEvent("cancelled by the explorer", "at its 2nd await", 1)
    assert format_event(event, {1: "#1 worker"}) == (
        "~ #1 worker cancelled by the explorer: at its 2nd await"
    )
    assert format_event(TraceEvent("time", "virtual time advanced to 1 s"), {}) == (
        "~ virtual time advanced to 1 s"
    )


def _deadlock(scenario: object, backend: Backend) -> str:
    report = explore(scenario, backend=backend, strategy="fifo")  # type: ignore[arg-type]
    assert report.kind == "deadlock", report
    assert isinstance(report.error, DeadlockError)
    return str(report.error)


def test_a_semaphore_names_the_holder_that_finished_without_releasing(backend: Backend) -> None:
    text = _deadlock(trace_scenarios.leaked_semaphore, backend)
    assert (
        f"#2 want at tests/asynclocks/explore/trace_scenarios.py:{_line('WANTS_PERMIT')} (want) "
        "waits on anyio.Semaphore, held by #1 leak, which finished without releasing it"
    ) in text


def test_a_permit_handed_over_by_release_names_its_new_holder(backend: Backend) -> None:
    # With fast_acquire=True anyio parks a waiter on trio's lot; release hands it the permit.
    text = _deadlock(trace_scenarios.handed_over_semaphore, backend)
    assert (
        f"#3 third at tests/asynclocks/explore/trace_scenarios.py:{_line('WANTS_HANDED_PERMIT')} "
        "(third) waits on anyio.Semaphore, held by #2 second, which finished without releasing it"
    ) in text


@pytest.mark.parametrize(
    ("scenario", "expected"),
    [
        (
            trace_scenarios.asyncio_leaked_semaphore,
            "waits on asyncio.Semaphore, held by #1 leak, which finished without releasing it",
        ),
        (
            trace_scenarios.asyncio_lock_held_by_finished,
            "waits on asyncio.Lock, held by #1 leak, which finished without releasing it",
        ),
        (
            trace_scenarios.lost_wakeup,
            "waits on trace_scenarios.PortedLock (a future in its _waiters queue), which is "
            "free: nobody holds it, yet no one woke this task",
        ),
    ],
)
def test_asyncio_primitives_name_their_state(scenario: object, expected: str) -> None:
    text = _deadlock(scenario, "asyncio")
    assert expected in text
    assert "outside the scenario" not in text


def test_each_primitive_says_what_keeps_it_shut(backend: Backend) -> None:
    text = _deadlock(trace_scenarios.many_primitives, backend)
    expected = [
        "#1 holder at ",
        "waits on anyio.Event, not set; no task set it",
        "#2 locker at ",
        "waits on anyio.Lock, held by #1 holder",
        "#3 borrower at ",
        "waits on anyio.streams.memory.MemoryObjectReceiveStream, empty; 1 send stream(s) "
        "still open, no task sending",
        "#4 limited at ",
        "waits on anyio.CapacityLimiter, all 1 token(s) borrowed by #3 borrower",
        "#5 waiter at ",
        "waits on anyio.Condition, waiting to be notified; no task notified it",
    ]
    lines = text.splitlines()
    for task, waits in zip(expected[::2], expected[1::2], strict=True):
        line = next(line for line in lines if line.strip().startswith(task))
        assert line.endswith(waits), line


def test_asyncio_timeouts_are_events() -> None:
    report = explore(trace_scenarios.asyncio_timeouts, backend="asyncio", strategy="fifo")
    rows = _rows(report.format_trace(full=True))
    wait_for = next(
        i for i, row in enumerate(rows) if "(with_wait_for) -> returned 'timed out'" in row
    )
    # wait_for's timer fires at 0.25 s (asyncio.timeout inside it from 3.12 on).
    fired = rows.index("~ virtual time advanced to 0.25 s")
    assert any(row.startswith("~ ") and " timeout: asyncio." in row for row in rows[fired:wait_for])
    assert "~ virtual time advanced to 0.5 s" in rows
    assert "~ #1 with_timeout timeout: asyncio.timeout expired" in rows
    assert any(row.endswith("(with_timeout) -> raised TimeoutError") for row in rows)


def test_a_lock_names_the_holder_that_finished_without_releasing() -> None:
    # asyncio only: trio itself breaks a lock whose owner exits (BrokenResourceError).
    text = _deadlock(trace_scenarios.lock_held_by_finished, "asyncio")
    assert (
        f"#2 want at tests/asynclocks/explore/trace_scenarios.py:{_line('WANTS_LOCK')} (want) "
        "waits on anyio.Lock, held by #1 leak, which finished without releasing it"
    ) in text
    # A holder that is gone cannot be part of a wait-for cycle.
    assert "wait-for cycle" not in text
