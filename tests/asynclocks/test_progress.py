"""The progress display: drawn on a terminal only, with rich or plain, gone when the work ends."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest

from asynclocks._progress import ProgressBar


class Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def test_nothing_is_drawn_when_the_stream_is_not_a_terminal() -> None:
    stream = io.StringIO()
    with ProgressBar("work", 3, stream=stream) as progress:
        for _ in range(3):
            progress.advance()
    assert progress.done == 3
    assert not progress.active
    assert stream.getvalue() == ""


def test_nothing_is_drawn_when_quiet() -> None:
    stream = Terminal()
    with ProgressBar("work", 3, stream=stream, enabled=False) as progress:
        progress.advance(3)
    assert stream.getvalue() == ""


def test_plain_line_without_rich_counts_and_is_erased_at_the_end(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "rich.progress", None)  # import fails: rich "not installed"
    stream = Terminal()
    with ProgressBar("runs", 4, stream=stream) as progress:
        for _ in range(4):
            progress.advance()
        drawn = stream.getvalue()
    assert "runs: 0/4 (0%)" in drawn
    assert "runs: 4/4 (100%)" in drawn  # the last unit is always drawn, however fast it came
    assert stream.getvalue().endswith("\r" + " " * len("runs: 4/4 (100%)") + "\r")


def test_plain_line_with_an_unknown_total(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "rich.progress", None)
    stream = Terminal()
    with ProgressBar("requests", None, stream=stream) as progress:
        progress.advance(1_500)
    assert "requests: 0" in stream.getvalue()


def test_rich_bar_on_a_terminal_is_transient() -> None:
    pytest.importorskip("rich")
    stream = Terminal()
    with ProgressBar("schedules", 10, stream=stream) as progress:
        progress.advance(10)
    assert progress.done == 10
    assert "schedules" in stream.getvalue()


def test_negative_total_is_refused() -> None:
    with pytest.raises(ValueError, match="total must be >= 0 or None, got -1"):
        ProgressBar("work", -1)


def test_demo_output_through_a_pipe_has_no_progress_and_quiet_is_accepted() -> None:
    for extra in ([], ["--quiet"]):
        completed = subprocess.run(
            [sys.executable, "-m", "asynclocks", "demo", "--tasks", "3", "--json", *extra],
            capture_output=True,
            text=True,
            check=False,
            timeout=50,
        )
        assert completed.returncode == 0, completed.stderr
        assert completed.stderr == ""
        assert completed.stdout.lstrip().startswith("[")
