"""The HTML report in a real headless browser: Debian's chromium driven by playwright.

Never skipped silently: without the browser the test fails, unless ``ASYNCLOCKS_NO_BROWSER=1``
says to skip it (``make test`` and ``.ci/run`` install chromium when it is missing). With
``ASYNCLOCKS_UPDATE_DOCS=1`` it also saves the screenshot shown in docs/explorer.md.
"""

from __future__ import annotations

import importlib.util
import linecache
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from asynclocks import Backend, explore

from . import scenarios

CHROMIUM = os.environ.get("ASYNCLOCKS_CHROMIUM", "/usr/bin/chromium")
SCREENSHOT = Path(__file__).resolve().parents[3] / "docs" / "img" / "html-report.png"

if os.environ.get("ASYNCLOCKS_NO_BROWSER") == "1":
    pytest.skip("ASYNCLOCKS_NO_BROWSER=1: the browser test is skipped", allow_module_level=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail(
            "playwright is not installed: pip install -e '.[dev]' (or ASYNCLOCKS_NO_BROWSER=1)"
        )
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"no chromium at {CHROMIUM}: apt-get install -y chromium (make test does it), or "
            "set ASYNCLOCKS_NO_BROWSER=1 to skip the browser test"
        )
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM)
        try:
            yield launched
        finally:
            launched.close()


def _open(browser: Any, path: Path, errors: list[str], requests: list[str]) -> Any:
    page = browser.new_page(viewport={"width": 1100, "height": 640})
    page.on(
        "console", lambda message: errors.append(message.text) if message.type == "error" else None
    )
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("request", lambda request: requests.append(request.url))
    page.goto(path.as_uri())
    return page


def _late_update() -> Any:
    """The docs' example (examples/ is not a package): the screenshot shows it."""
    path = SCREENSHOT.parents[2] / "examples" / "explorer" / "late_update.py"
    spec = importlib.util.spec_from_file_location("_browser_late_update", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.late_lost_update


def test_the_report_in_a_browser(browser: Any, backend: Backend, tmp_path: Path) -> None:
    # On asyncio the docs' example (plain asyncio code), on trio the suite's anyio lost update.
    scenario = _late_update() if backend == "asyncio" else scenarios.lost_update
    report = explore(scenario, backend=backend)
    assert report._traced is not None
    outcome, steps, keep = report._traced
    path = tmp_path / "report.html"
    report.write_html(path)
    errors: list[str] = []
    requests: list[str] = []
    page = _open(browser, path, errors, requests)
    try:
        # One lane per task of the schedule.
        assert page.locator(".lane").count() == len({step.task for step in steps})
        # The race window is highlighted: a visible band, and its steps outlined.
        band = page.locator(".window-band")
        assert band.count() == 1
        box = band.bounding_box()
        assert box is not None
        assert box["width"] > 0
        assert box["height"] > 0
        color = band.evaluate("element => getComputedStyle(element).backgroundColor")
        assert color not in ("rgba(0, 0, 0, 0)", "transparent"), color
        assert page.locator(".step.window").count() == len(set(keep))
        # Hovering a step shows its source line.
        index = next(i for i in keep if not steps[i].finished and steps[i].suspended)
        suspended = steps[index].suspended
        assert suspended is not None
        source = linecache.getline(suspended[0][0], suspended[0][1]).strip()
        tooltip = page.locator("#tooltip")
        assert not tooltip.is_visible()
        page.hover(f'.step[data-step="{index + 1}"]')
        assert tooltip.is_visible()
        assert source in tooltip.inner_text()
        assert f"step {index + 1}  {steps[index].name}" in tooltip.inner_text()
        if backend == "asyncio" and os.environ.get("ASYNCLOCKS_UPDATE_DOCS") == "1":
            SCREENSHOT.parent.mkdir(exist_ok=True)
            page.screenshot(path=str(SCREENSHOT), full_page=True)
    finally:
        page.close()
    assert errors == []
    # Self-contained: the page itself is the only thing it loads.
    assert requests == [path.as_uri()]
