"""The exploration report as one self-contained HTML page: a lane per task on a time axis.

Each step is a box in its task's lane at its position in the schedule; a dot marks the await the
step stopped at, a diamond an event (a wake-up, a cancellation, a timeout, the clock); the race
window's steps are highlighted across every lane; hovering a step shows its source line, its
code locations and its events. Inline CSS and JavaScript only: the page loads nothing.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ._common import Step, format_event, source_line, step_after, step_resumed

if TYPE_CHECKING:
    from ._report import Report

#: Width of one step on the time axis, in CSS pixels: wide for a short schedule, never
#: narrower than ``MIN_STEP_WIDTH`` (a long one scrolls).
MAX_STEP_WIDTH = 64
MIN_STEP_WIDTH = 18
_CHART_WIDTH = 860

_CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #1d1d1f; background: #fff; }
h1 { font-size: 1.2em; margin: 0 0 .3em; }
h1.fail { color: #b3261e; } h1.pass { color: #1b7f3b; }
pre { background: #f5f5f7; padding: .6em .8em; overflow-x: auto; font-size: 12px; }
.meta { color: #555; margin: .2em 0 1em; }
.chart { display: grid; grid-template-columns: max-content 1fr; gap: 0; border: 1px solid #ddd; }
.labels div, .axis-label { height: 30px; line-height: 30px; padding: 0 .6em;
  white-space: nowrap; border-bottom: 1px solid #eee; font-family: ui-monospace, monospace; }
.tracks { overflow-x: auto; position: relative; }
.inner { position: relative; }
.axis { height: 30px; position: relative; border-bottom: 1px solid #ccc; font-size: 11px;
  color: #666; }
.tick { position: absolute; top: 8px; }
.clock { position: absolute; top: 0; font-size: 10px; color: #7a4d00; white-space: nowrap; }
.lane { height: 30px; position: relative; border-bottom: 1px solid #eee; }
.step { position: absolute; top: 6px; height: 18px; border-radius: 3px; background: #8fb3e8;
  border: 1px solid #4f7cc0; box-sizing: border-box; cursor: pointer; }
.step.preempted { background: #f0a35e; border-color: #b86a1f; }
.step.window { outline: 2px solid #d81b60; outline-offset: 1px; }
.step.end { background: #b9c2cc; border-color: #7b8794; }
.step.raised { background: #e8908f; border-color: #b3261e; }
.step:hover { filter: brightness(0.85); }
.await { position: absolute; right: -4px; top: 4px; width: 8px; height: 8px;
  border-radius: 50%; background: #1d1d1f; }
.event { position: absolute; left: -5px; top: -5px; width: 8px; height: 8px;
  background: #7a4d00; transform: rotate(45deg); }
.event.cancelled, .event.timeout { background: #b3261e; }
.window-band { position: absolute; top: 0; bottom: 0; background: rgba(255, 193, 7, 0.28);
  border-left: 2px solid #e0a800; border-right: 2px solid #e0a800; pointer-events: none; }
#tooltip { position: fixed; display: none; max-width: 46em; background: #1d1d1f; color: #fff;
  padding: .5em .7em; border-radius: 4px; font: 12px/1.4 ui-monospace, monospace;
  white-space: pre-wrap; pointer-events: none; z-index: 10; }
.legend span { margin-right: 1.2em; }
"""

_JS = """
(function () {
  var tip = document.getElementById('tooltip');
  document.querySelectorAll('.step').forEach(function (box) {
    box.addEventListener('mouseenter', function () {
      tip.textContent = box.getAttribute('data-tip');
      tip.style.display = 'block';
    });
    box.addEventListener('mousemove', function (e) {
      tip.style.left = Math.min(e.clientX + 14, window.innerWidth - tip.offsetWidth - 8) + 'px';
      tip.style.top = (e.clientY + 16) + 'px';
    });
    box.addEventListener('mouseleave', function () { tip.style.display = 'none'; });
  });
})();
"""


def _tip(number: int, step: Step, names: dict[int, str], first: bool) -> str:
    lines = [f"step {number}  {step.name}" + ("  (preemption)" if step.preempted else "")]
    for event in step.events:
        lines.append(format_event(event, names))
    lines.append(f"resumed at {step_resumed(step, first)}")
    source = source_line(step.resumed)
    if source:
        lines.append(f"   | {source}")
    if step.finished:
        lines.append(f"-> {step_after(step)}")
    else:
        lines.append(f"-> next await {step_after(step)}")
        source = source_line(step.suspended)
        if source:
            lines.append(f"   | {source}")
    return "\n".join(lines)


def _chart(steps: Sequence[Step], names: dict[int, str], window: Sequence[int]) -> str:
    order: list[int] = []
    for step in steps:
        if step.task not in order:
            order.append(step.task)
    order.sort()
    step_width = max(MIN_STEP_WIDTH, min(MAX_STEP_WIDTH, _CHART_WIDTH // max(len(steps), 1)))
    width = max(len(steps), 1) * step_width
    lanes: dict[int, list[str]] = {task: [] for task in order}
    ticks: list[str] = []
    started: set[int] = set()
    for index, step in enumerate(steps):
        number = index + 1
        first = step.task not in started
        started.add(step.task)
        classes = ["step"]
        if step.preempted:
            classes.append("preempted")
        if index in window:
            classes.append("window")
        if step.finished:
            classes.append("raised" if step.end.startswith("raised") else "end")
        marks = "".join(
            f'<span class="event {html.escape(event.kind.split()[0])}"></span>'
            for event in step.events[:1]
        )
        if not step.finished and step.suspended is not None:
            marks += '<span class="await"></span>'
        tip = html.escape(_tip(number, step, names, first), quote=True)
        lanes[step.task].append(
            f'<div class="{" ".join(classes)}" data-step="{number}" data-tip="{tip}" '
            f'style="left:{index * step_width + 2}px;width:{step_width - 4}px">{marks}</div>'
        )
        if number == 1 or number % 5 == 0:
            left = index * step_width + 4
            ticks.append(f'<span class="tick" style="left:{left}px">{number}</span>')
        for event in step.events:
            if event.kind == "time":
                text = html.escape(event.detail.replace("virtual time advanced to ", "t="))
                ticks.append(
                    f'<span class="clock" style="left:{index * step_width}px">{text}</span>'
                )
    band = ""
    if window:
        low, high = min(window), max(window)
        band = (
            f'<div class="window-band" title="race window" style="left:{low * step_width}px;'
            f'width:{(high - low + 1) * step_width}px"></div>'
        )
    labels = "".join(
        f'<div class="label">{html.escape(names.get(task, f"#{task}"))}</div>' for task in order
    )
    rows = "".join(
        f'<div class="lane" data-task="{task}">{"".join(lanes[task])}</div>' for task in order
    )
    return (
        '<div class="chart">'
        f'<div class="labels"><div class="axis-label">step</div>{labels}</div>'
        f'<div class="tracks"><div class="inner" style="width:{width}px">'
        f'<div class="axis">{"".join(ticks)}</div>{rows}{band}</div></div>'
        "</div>"
    )


def render_html(report: Report) -> str:
    """The report as a self-contained HTML page (see the module docstring)."""
    failed = report.failed
    head = html.escape(report.verdict)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>asynclocks explore: {head}</title>",
        f"<style>{_CSS}</style></head><body>",
        f'<h1 class="{"fail" if failed else "pass"}">{head}</h1>',
        f'<p class="meta">{html.escape(report.coverage)}'
        + (f" &middot; token <code>{html.escape(report.token)}</code>" if report.token else "")
        + "</p>",
    ]
    if report.window:
        parts.append(f'<pre class="window-text">{html.escape(report.window)}</pre>')
    traced = report._traced
    if traced is not None:
        outcome, steps, keep = traced
        parts.append(
            '<p class="legend"><span>&#9632; a step (box), in its task\'s lane</span>'
            "<span>&#9679; the await it stopped at</span>"
            "<span>&#9670; an event before it</span>"
            '<span style="color:#b86a1f">&#9632; a preemption</span>'
            '<span style="color:#e0a800">&#9646; the race window</span>'
            "<span>hover a step for its source line</span></p>"
        )
        parts.append(_chart(steps, outcome.task_names, keep))
        parts.append(f'<pre class="trace">{html.escape(report.format_trace(full=True))}</pre>')
    elif report.trace:
        parts.append(f'<pre class="trace">{html.escape(report.trace)}</pre>')
    for note in report.notes:
        parts.append(f'<p class="note">{html.escape(note)}</p>')
    parts.append('<div id="tooltip"></div>')
    parts.append(f"<script>{_JS}</script></body></html>")
    return "\n".join(parts) + "\n"
