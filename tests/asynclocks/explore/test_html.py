"""The HTML report: self-contained, one lane per task, the window marked, source in each step."""

from __future__ import annotations

import html
import re
from pathlib import Path

import pytest

from asynclocks import Backend, explore

from . import scenarios, trace_scenarios


def test_the_page_has_a_lane_per_task_and_marks_the_race_window(backend: Backend) -> None:
    report = explore(scenarios.lost_update, backend=backend)
    page = report.to_html()
    assert report._traced is not None
    outcome, steps, keep = report._traced
    assert keep, "the lost update has a race window"
    lanes = re.findall(r'<div class="lane" data-task="(\d+)">', page)
    assert sorted(map(int, lanes)) == sorted({step.task for step in steps})
    assert len(re.findall(r'class="step[^"]*"', page)) == len(steps)
    marked = re.findall(r'class="step[^"]* window[^"]*" data-step="(\d+)"', page)
    assert sorted(int(n) - 1 for n in marked) == sorted(set(keep))
    assert page.count('class="window-band"') == 1
    # Each step's tooltip carries its await's source line.
    source = "await anyio.lowlevel.checkpoint()  # WINDOW_OPENS"
    assert html.escape(f"| {source}", quote=True) in page


def test_the_page_loads_nothing(backend: Backend) -> None:
    page = explore(scenarios.lost_update, backend=backend).to_html()
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=", page)
    assert "http://" not in page
    assert "https://" not in page
    assert "@import" not in page
    assert "url(" not in page


def test_a_passing_report_is_a_page_without_lanes(tmp_path: Path) -> None:
    report = explore(scenarios.asyncio_locked_counter, backend="asyncio")
    assert not report.failed
    path = tmp_path / "pass.html"
    report.write_html(path)
    page = path.read_text(encoding="utf-8")
    assert report.verdict in html.unescape(page)
    assert 'class="lane"' not in page


def test_write_html_refuses_a_path_that_is_not_one() -> None:
    report = explore(trace_scenarios.leaked_semaphore, backend="asyncio", strategy="fifo")
    with pytest.raises(TypeError, match="path must be a str or os.PathLike, not int"):
        report.write_html(3)  # type: ignore[arg-type]


def test_a_deadlock_page_shows_the_report(tmp_path: Path) -> None:
    report = explore(trace_scenarios.leaked_semaphore, backend="asyncio", strategy="fifo")
    page = html.unescape(report.to_html())
    assert "held by #1 leak, which finished without releasing it" in page
    assert 'class="window-band"' not in page
