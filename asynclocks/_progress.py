"""Progress of commands that run longer than a few seconds (the demo, benchmarks, the soak).

On a terminal: a rich progress bar when rich is installed, else one plain line rewritten in place.
Nothing at all when the stream is not a terminal (a pipe, a file, CI) or the user passed
``--quiet``, so captured output stays exactly the command's results.
"""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import Any, TextIO

#: The plain line is redrawn at most this often (seconds): a tight loop must not flood a terminal.
_PLAIN_INTERVAL = 0.2


class ProgressBar:
    """A progress display for ``total`` units of work (None: unknown), used as a context manager.

    Args:
        description: What is being done, a few words.
        total: How many units the work has, or None when unknown.
        stream: Where to draw (default: stderr, so stdout keeps only the results).
        enabled: False to draw nothing (``--quiet``).

    Raises:
        ValueError: ``total`` is negative.
    """

    def __init__(
        self,
        description: str,
        total: int | None,
        *,
        stream: TextIO | None = None,
        enabled: bool = True,
    ) -> None:
        if total is not None and total < 0:
            raise ValueError(f"total must be >= 0 or None, got {total}")
        self._description = description
        self._total = total
        self._stream = sys.stderr if stream is None else stream
        isatty = getattr(self._stream, "isatty", None)
        self.active = enabled and callable(isatty) and bool(isatty())
        self.done = 0
        self._rich: Any = None
        self._task: Any = None
        self._drawn = 0.0
        self._width = 0

    def __enter__(self) -> ProgressBar:
        if self.active:
            try:
                from rich.console import Console
                from rich.progress import Progress
            except ImportError:
                self._draw_plain(force=True)
            else:
                # No refresh thread: the bar is redrawn when work advances and at no other time,
                # so it never wakes up inside a benchmark's timed batch.
                self._rich = Progress(
                    console=Console(file=self._stream), transient=True, auto_refresh=False
                )
                self._rich.start()
                self._task = self._rich.add_task(self._description, total=self._total)
                self._rich.refresh()
        return self

    def advance(self, amount: int = 1) -> None:
        """Count ``amount`` more units of work as done."""
        self.done += amount
        if not self.active:
            return
        if self._rich is not None:
            self._rich.update(self._task, completed=self.done, refresh=True)
        else:
            self._draw_plain()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if not self.active:
            return
        if self._rich is not None:
            self._rich.stop()
        elif self._width:
            # Leave the terminal as it was: the results print where the line stood.
            self._stream.write("\r" + " " * self._width + "\r")
            self._stream.flush()

    def _draw_plain(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._drawn < _PLAIN_INTERVAL and self.done != self._total:
            return
        self._drawn = now
        if self._total:
            share = self.done / self._total
            line = f"{self._description}: {self.done:,}/{self._total:,} ({share:.0%})"
        else:
            line = f"{self._description}: {self.done:,}"
        self._stream.write("\r" + line.ljust(self._width))
        self._stream.flush()
        self._width = max(self._width, len(line))
