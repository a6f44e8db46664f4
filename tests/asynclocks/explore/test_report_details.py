"""Report details: task names, the preemption legend, replay's backend, typed options, pipes."""

from __future__ import annotations

import os
import subprocess
import sys
import typing

import pytest

import asynclocks
from asynclocks import Backend, replay

from . import naming_scenarios, scenarios

TARGET = "tests.asynclocks.explore.scenarios"


@pytest.mark.parametrize(
    ("name", "backend"),
    [
        ("asyncio_task_group", "asyncio"),
        ("asyncio_create_task", "asyncio"),
        ("trio_nursery", "trio"),
        ("anyio_task_group", "asyncio"),
        ("anyio_task_group", "trio"),
    ],
)
def test_tasks_are_named_by_the_name_the_user_gave_else_by_function(
    name: str, backend: Backend
) -> None:
    report = asynclocks.explore(getattr(naming_scenarios, name), backend=backend)
    assert report.failed
    assert "#1 alice " in report.trace
    assert "#2 increment " in report.trace
    assert "#1 increment" not in report.trace


def test_the_preemption_legend_is_shown_only_with_a_preemption(backend: Backend) -> None:
    stock = asynclocks.explore(scenarios.lost_update, backend=backend)
    assert stock.preemptions == 0
    assert "(0 preemption(s))" in stock.trace
    assert "* = a preemption" not in stock.trace
    late = asynclocks.explore(scenarios.lost_update_late, backend=backend)
    assert late.preemptions == 1
    assert "* = a preemption" in late.trace


def test_replay_reads_the_backend_from_the_token(backend: Backend) -> None:
    report = asynclocks.explore(scenarios.lost_update_late, backend=backend)
    assert report.token is not None
    with pytest.raises(AssertionError, match="lost update"):
        replay(scenarios.lost_update_late, report.token)
    with pytest.raises(AssertionError, match="lost update"):
        replay(scenarios.lost_update_late, report.token, backend=backend)
    other: Backend = "trio" if backend == "asyncio" else "asyncio"
    with pytest.raises(ValueError, match=f"recorded on {backend}; replay it with"):
        replay(scenarios.lost_update_late, report.token, backend=other)
    with pytest.raises(ValueError, match="unknown backend 'curio'"):
        replay(scenarios.lost_update_late, report.token, backend="curio")  # type: ignore[arg-type]


def test_backend_strategy_and_kind_are_typed_literals() -> None:
    assert typing.get_args(asynclocks.Backend) == ("asyncio", "trio")
    assert typing.get_args(asynclocks.Strategy) == ("dfs", "fifo", "pct", "portfolio", "random")
    assert typing.get_args(asynclocks.FailureKind) == ("exception", "deadlock")
    hints = typing.get_type_hints(asynclocks.explore)
    assert hints["backend"] == asynclocks.Backend
    assert hints["strategy"] == asynclocks.Strategy | asynclocks.Scheduler
    assert typing.get_type_hints(asynclocks.Report)["kind"] == asynclocks.FailureKind | None
    for name in ("Backend", "Strategy", "FailureKind"):
        assert name in asynclocks.__all__


def test_a_closed_pipe_ends_quietly() -> None:
    # The reader is gone before the first write, as with `| head -2` on a long report.
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "asynclocks", "explore", f"{TARGET}:lost_update", "--quiet"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write_end)
    assert result.stderr == ""
    assert result.returncode == 1
