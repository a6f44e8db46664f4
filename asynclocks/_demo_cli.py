"""``python -m asynclocks demo``: run the race demos and print what each protection does."""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from collections.abc import Sequence
from typing import TextIO

from ._demos import (
    BACKENDS,
    DEFAULT_DEADLOCK_TIMEOUT,
    MAX_TASKS,
    NAIVE_ORDER,
    SCENARIOS,
    DemoResult,
    locks_for,
    run_demo,
)
from ._progress import ProgressBar

_COLUMNS = ("scenario", "backend", "lock", "expected", "actual", "ok", "note")

_EPILOG = """\
Without a lock every run fails, on every backend, by construction: all tasks read before any task
writes. With any lock every run is correct. `naive-order` takes per-account locks
source-then-destination with the deadlocking interleaving forced; the demo detects the deadlock
with a timeout instead of hanging. Exit code 0 after a run (the failures are the point)."""


def _tasks(text: str) -> int:
    try:
        tasks = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
    if not 2 <= tasks <= MAX_TASKS:
        raise argparse.ArgumentTypeError(
            f"must be between 2 and {MAX_TASKS} (a race needs two tasks), got {tasks}"
        )
    return tasks


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``demo`` command."""
    parser = subparsers.add_parser(
        "demo",
        help="run the race demos with and without locks",
        description="Run the race demos (counter, withdraw, transfer) with N tasks started\n"
        "together, unprotected and with each lock, and print expected vs actual.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--backend",
        choices=[*BACKENDS, "all"],
        default="all",
        help="event loop to run on (default: all)",
    )
    parser.add_argument(
        "--tasks",
        type=_tasks,
        default=100,
        metavar="N",
        help=f"concurrent tasks per run, 2 to {MAX_TASKS} (default: 100)",
    )
    parser.add_argument(
        "--scenario",
        choices=[*SCENARIOS, "all"],
        default="all",
        help="run only this scenario (default: all)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print a JSON list of {scenario, backend, lock, expected, actual, ok} instead",
    )
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="no progress display (it is shown only on a terminal, on stderr)",
    )
    parser.set_defaults(handler=_handle, parser=parser)


def _trio_installed() -> bool:
    return importlib.util.find_spec("trio") is not None


def _handle(args: argparse.Namespace) -> int:
    parser: argparse.ArgumentParser = args.parser
    backends: list[str] = list(BACKENDS) if args.backend == "all" else [args.backend]
    if "trio" in backends and not _trio_installed():
        if args.backend == "trio":
            parser.error("trio is not installed (pip install 'asynclocks[trio]')")
        backends.remove("trio")
        print("trio is not installed; running asyncio only", file=sys.stderr)
    scenarios = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    runs = sum(len(locks_for(backend, name)) for backend in backends for name in scenarios)
    with ProgressBar(f"{args.tasks} tasks per run", runs, enabled=not args.quiet) as progress:
        results = run_demo(
            backends, args.tasks, scenarios, on_result=lambda _result: progress.advance()
        )
    if args.json:
        json.dump([as_json(result) for result in results], sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print_table(results)
    return 0


def as_json(result: DemoResult) -> dict[str, str | int | bool]:
    """The JSON object for one result: exactly scenario, backend, lock, expected, actual, ok."""
    return {
        "scenario": result.scenario,
        "backend": result.backend,
        "lock": result.lock,
        "expected": result.expected,
        "actual": result.actual,
        "ok": result.ok,
    }


def note(result: DemoResult, deadlock_timeout: float = DEFAULT_DEADLOCK_TIMEOUT) -> str:
    """A few words saying what went wrong in ``result`` (empty when it is correct)."""
    if result.ok:
        return ""
    if result.lock == NAIVE_ORDER:
        return (
            f"deadlock detected after {deadlock_timeout:g} s "
            f"({result.actual} of {result.expected} done)"
        )
    difference = result.actual - result.expected
    if result.scenario == "counter":
        return f"lost {-difference} updates"
    if result.scenario == "withdraw":
        return f"overdrawn by {-result.actual}" if result.actual < 0 else f"off by {difference}"
    if difference > 0:
        return f"created {difference} out of thin air"
    return f"lost {-difference}"


def _rows(results: Sequence[DemoResult]) -> list[tuple[str, ...]]:
    return [
        (
            result.scenario,
            result.backend,
            result.lock,
            str(result.expected),
            str(result.actual),
            "true" if result.ok else "false",
            note(result),
        )
        for result in results
    ]


def print_table(results: Sequence[DemoResult], file: TextIO | None = None) -> None:
    """Print the results as a table: with rich when it is installed, plain text otherwise."""
    out = sys.stdout if file is None else file
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        out.write(plain_table(results))
        return
    table = Table(title="Races at an await, with and without locks")
    for column in _COLUMNS:
        numeric = column in ("expected", "actual")
        table.add_column(column, justify="right" if numeric else "left", no_wrap=column != "note")
    for row, result in zip(_rows(results), results, strict=True):
        table.add_row(*row, style=None if result.ok else "red")
    console = Console(file=out)
    if not console.is_terminal:
        # A pipe or a file has no width; give the table room instead of rich's 80 columns.
        console = Console(file=out, width=120)
    console.print(table)


def plain_table(results: Sequence[DemoResult]) -> str:
    """The results as an aligned plain-text table (the fallback without rich)."""
    rows = [_COLUMNS, *_rows(results)]
    widths = [max(len(row[column]) for row in rows) for column in range(len(_COLUMNS))]
    lines = []
    for index, row in enumerate(rows):
        cells = [
            cell.rjust(width) if _COLUMNS[column] in ("expected", "actual") else cell.ljust(width)
            for column, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines) + "\n"
