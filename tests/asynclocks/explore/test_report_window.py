"""The race window above the trace, and long traces elided around it."""

from __future__ import annotations

import argparse
import io
import re
from pathlib import Path

import asynclocks
from asynclocks import Backend
from asynclocks._explore import _cli

from . import scenarios, window_scenarios

HELD = Path(window_scenarios.__file__)
INDENT = " " * len("race window: ")


def at(marker: str) -> str:
    for number, text in enumerate(HELD.read_text(encoding="utf-8").splitlines(), 1):
        if text.rstrip().endswith(f"# {marker}"):
            return f"{HELD.name}:{number}"
    raise LookupError(marker)


def step_lines(trace: str) -> list[str]:
    return [line for line in trace.splitlines() if re.match(r"^[ *]\s*\d+  ", line)]


def elided(trace: str) -> int:
    return sum(int(n.replace(",", "")) for n in re.findall(r"\.\.\. ([\d,]+) steps elided", trace))


def test_a_check_then_act_names_the_check_the_await_and_both_writes(backend: Backend) -> None:
    report = asynclocks.explore(window_scenarios.double_withdraw, backend=backend)
    assert report.window == (
        f"race window: #2 bob read `account.balance` at {at('CHECK')}, awaited at {at('AWAIT')};\n"
        f"{INDENT}#1 alice wrote `account.balance` at {at('DEBIT')} before #2 wrote it at "
        f"{at('DEBIT')}"
    )
    # One short block above the trace, in the report and on the command line.
    text = str(report)
    assert text.index(report.window) < text.index("schedule al1:")


def test_a_lost_update_through_a_subscript_names_the_item(backend: Backend) -> None:
    report = asynclocks.explore(window_scenarios.ledger_lost_update, backend=backend)
    assert report.window == (
        f'race window: #2 add read `ledger["total"]` at {at("LEDGER_READ")}, awaited at '
        f"{at('LEDGER_AWAIT')};\n"
        f'{INDENT}#1 add wrote `ledger["total"]` at {at("LEDGER_WRITE")} before #2 wrote it at '
        f"{at('LEDGER_WRITE')}"
    )


def test_a_read_inside_a_called_function_is_followed(backend: Backend) -> None:
    report = asynclocks.explore(window_scenarios.lost_update_through_a_helper, backend=backend)
    assert report.window == (
        f'race window: #2 add read `ledger["total"]` at {at("HELPER_READ")}, awaited at '
        f"{at('HELPER_AWAIT')};\n"
        f'{INDENT}#1 add wrote `ledger["total"]` at {at("HELPER_WRITE")} before #2 wrote it at '
        f"{at('HELPER_WRITE')}"
    )


def test_the_bank_window_points_at_the_store_read_and_write(backend: Backend) -> None:
    from .test_integration import bank_scenario

    store = Path(__file__).parents[3] / "services" / "bank" / "stores" / "memory.py"
    source = store.read_text(encoding="utf-8").splitlines()

    def line_of(text: str, within: str) -> str:
        # The line in the memory store's method (the last class in the file defining it).
        start = max(n for n, s in enumerate(source) if s.strip().startswith(within))
        found = next(n for n, s in enumerate(source[start:], start + 1) if s.strip() == text)
        return f"memory.py:{found}"

    report = asynclocks.explore(bank_scenario("none"), backend=backend)
    read = line_of("return self._balances[account_id]", within="def _read(")
    write = line_of("self._balances[account_id] = new", within="def _write(")
    assert report.window.startswith(
        f"race window: #3 withdraw read `self._balances[account_id]` at {read}, awaited at "
    )
    assert "#1 transfer wrote `self._balances[" in report.window
    assert report.window.endswith(f"before #3 wrote it at {write}")


def test_the_shared_scenarios_lost_update_has_its_window(backend: Backend) -> None:
    report = asynclocks.explore(scenarios.lost_update, backend=backend)
    opens = scenarios.marker_line("WINDOW_OPENS")
    stale = scenarios.marker_line("STALE_WRITE")
    assert report.window.startswith(
        f"race window: #2 increment read `box.value` at scenarios.py:{opens - 1}, awaited at "
        f"scenarios.py:{opens};"
    )
    assert report.window.endswith(f"before #2 wrote it at scenarios.py:{stale}")


def test_no_window_without_conflicting_accesses(backend: Backend) -> None:
    report = asynclocks.explore(window_scenarios.fails_without_sharing, backend=backend)
    assert report.failed
    assert report.window == ""
    deadlock = asynclocks.explore(scenarios.lock_order_deadlock, backend=backend)
    assert deadlock.kind == "deadlock"
    assert deadlock.window == ""


def test_a_long_trace_is_elided_around_the_window_and_the_end(backend: Backend) -> None:
    report = asynclocks.explore(window_scenarios.late_race, backend=backend)
    full = report.format_trace(full=True)
    total = len(step_lines(full))
    assert total > 250
    assert elided(full) == 0
    shown = step_lines(report.trace)
    assert len(shown) < 40
    assert len(shown) + elided(report.trace) == total
    # The window's read, write and stale write are among the steps shown.
    for marker in ("LATE_AWAIT",):
        assert any(f"{at(marker)} (increment) -> returned" in line for line in shown)
    assert report.trace.endswith("raised AssertionError: lost update: 1")


def test_the_busy_loop_trace_is_short_unless_asked_in_full(backend: Backend) -> None:
    report = asynclocks.explore(window_scenarios.busy_wait, backend=backend)
    assert "more than 20000 steps" in str(report.error)
    assert len(report.trace.splitlines()) < 30
    assert re.search(r"\.\.\. 19,9\d\d steps elided \.\.\.", report.trace)
    full = report.format_trace(full=True)
    assert len(step_lines(full)) == len(step_lines(report.trace)) + elided(report.trace)
    assert len(full.splitlines()) > 20_000


def _cli_out(*argv: str) -> tuple[int, str]:
    parser = argparse.ArgumentParser()
    _cli.register(parser.add_subparsers())
    out, err = io.StringIO(), io.StringIO()
    code = _cli.run(parser.parse_args(["explore", *argv]), out, err)
    return code, out.getvalue()


def test_the_cli_elides_and_full_trace_shows_every_step() -> None:
    # The option is the command line's, the same on both backends (Report's is tested on both).
    target = "tests.asynclocks.explore.window_scenarios:busy_wait"
    code, short = _cli_out(target, "--quiet")
    assert code == 1
    assert len(short.splitlines()) < 35
    code, full = _cli_out(target, "--quiet", "--full-trace")
    assert code == 1
    assert len(full.splitlines()) > 20_000
    assert "steps elided" not in full


def test_the_cli_prints_the_window_above_the_trace_and_on_replay() -> None:
    target = "tests.asynclocks.explore.window_scenarios:double_withdraw"
    _, out = _cli_out(target, "--quiet")
    window = out.split("\n", 1)[1].split("\nschedule ", 1)[0]
    assert window.startswith("race window: #2 bob read `account.balance`")
    token = out.rsplit("token: ", 1)[1].strip()
    code, replayed = _cli_out(target, "--replay", token)
    assert code == 1
    assert window in replayed
