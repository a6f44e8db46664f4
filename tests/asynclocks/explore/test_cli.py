"""``python -m asynclocks explore``: verdicts, traces, tokens, replays and exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from asynclocks import Backend
from asynclocks.__main__ import main

TARGET = "tests.asynclocks.explore.scenarios"


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    try:
        code = main(["explore", *args])
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_a_racy_scenario_exits_1_with_trace_and_token(
    capsys: pytest.CaptureFixture[str], backend: Backend
) -> None:
    code, out, _ = run_cli(capsys, f"{TARGET}:lost_update", "--backend", backend)
    assert code == 1
    assert out.startswith(f"FAIL on {backend}")
    assert "#1 increment" in out
    assert "token: al1:" in out
    assert "--replay 'al1:" in out


def test_a_locked_scenario_exits_0_with_what_was_covered(
    capsys: pytest.CaptureFixture[str], backend: Backend
) -> None:
    code, out, err = run_cli(capsys, f"{TARGET}:{backend}_locked_counter", "--backend", backend)
    assert code == 0
    assert out.startswith(f"PASS on {backend}")
    assert "exhaustive)" in out
    assert f"exploring {TARGET}:{backend}_locked_counter on {backend} with dfs" in err


def test_replaying_a_token_reproduces_the_failure(
    capsys: pytest.CaptureFixture[str], backend: Backend
) -> None:
    code, out, _ = run_cli(capsys, f"{TARGET}:lost_update_late", "--backend", backend)
    token = out.rsplit("token: ", 1)[1].strip()
    for _ in range(2):
        code, replayed, _ = run_cli(capsys, f"{TARGET}:lost_update_late", "--replay", token)
        assert code == 1
        assert replayed.startswith(f"FAIL on {backend} (replayed): AssertionError")
        assert token in replayed


def test_a_deadlock_exits_1_and_names_the_cycle(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, f"{TARGET}:lock_order_deadlock", "--backend", "trio")
    assert code == 1
    assert out.startswith("DEADLOCK on trio")
    assert "wait-for cycle: #1 left -> #2 right -> #1 left" in out


def test_options_reach_the_explorer(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(
        capsys,
        f"{TARGET}:lost_update_late",
        "--strategy",
        "dfs",
        "--preemption-bound",
        "0",
        "--max-schedules",
        "50",
        "--seed",
        "4",
        "--quiet",
    )
    assert code == 0
    assert "at most 0 preemption(s)" in out


def test_a_file_path_target_works(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    script = tmp_path / "race.py"
    script.write_text(
        "import asyncio\n"
        "async def scenario():\n"
        "    box = [0]\n"
        "    async def inc():\n"
        "        v = box[0]\n"
        "        await asyncio.sleep(0)\n"
        "        box[0] = v + 1\n"
        "    async with asyncio.TaskGroup() as tg:\n"
        "        tg.create_task(inc())\n"
        "        tg.create_task(inc())\n"
        "    assert box[0] == 2\n"
    )
    code, out, _ = run_cli(capsys, f"{script}:scenario", "--quiet")
    assert code == 1
    assert "race.py:6 (inc)" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nocolon"], "must look like module:function"),
        (["no_such_module_xyz:f"], "cannot import module 'no_such_module_xyz'"),
        ([f"{TARGET}:missing"], "has no attribute 'missing'"),
        ([f"{TARGET}:needs_an_argument"], "scenario must take no arguments"),
        ([f"{TARGET}:lost_update", "--replay", "garbage"], "malformed token"),
        (["/no/such/file.py:f"], "no such file"),
        ([f"{TARGET}:lost_update", "--max-schedules", "0"], "must be >= 1"),
        ([f"{TARGET}:lost_update", "--seed", "x"], "must be an integer"),
        ([f"{TARGET}:lost_update", "--backend", "curio"], "invalid choice: 'curio'"),
        ([f"{TARGET}:lost_update", "--strategy", "bfs"], "invalid choice: 'bfs'"),
        ([f"{TARGET}:lost_update", "--preemption-bound", "-1"], "must be >= 0"),
    ],
)
def test_bad_arguments_exit_2_with_a_message(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    code, _, err = run_cli(capsys, *args)
    assert code == 2
    assert message in err


def test_the_module_entry_point_runs(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "asynclocks", "explore", f"{TARGET}:lost_update", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    assert "token: al1:a:" in result.stdout


def test_a_replayed_token_prints_the_same_trace(capsys: pytest.CaptureFixture[str]) -> None:
    _, found, _ = run_cli(capsys, f"{TARGET}:lost_update_late", "--backend", "trio", "--quiet")
    token = found.rsplit("token: ", 1)[1].strip()
    _, replayed, _ = run_cli(capsys, f"{TARGET}:lost_update_late", "--replay", token)
    trace = found.split("\n", 1)[1].split("replay:", 1)[0]
    assert trace in replayed


def test_long_runs_report_progress_on_stderr(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import types

    import asynclocks._explore._api as api

    ticks = iter(range(10**6))
    # Half a second passes between any two readings of the explorer's clock.
    fake_time = types.SimpleNamespace(perf_counter=lambda: next(ticks) * 0.5)
    monkeypatch.setattr(api, "time", fake_time)
    code, _, err = run_cli(capsys, f"{TARGET}:locked_counter_three", "--max-schedules", "20")
    assert code == 0
    assert " schedules in " in err
    assert "/s)" in err


def test_the_environment_sets_the_budget_and_a_bad_value_exits_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ASYNCLOCKS_MAX_SCHEDULES", "3")
    code, out, err = run_cli(capsys, f"{TARGET}:asyncio_locked_counter", "--strategy", "random")
    assert code == 0
    assert "(max 3 schedules)" in err
    assert "in 3 schedules" in out
    code, out, err = run_cli(capsys, f"{TARGET}:lost_update", "--max-schedules", "5", "--quiet")
    assert code == 1  # --max-schedules wins; dfs finds it in the first schedule anyway
    monkeypatch.setenv("ASYNCLOCKS_MAX_SCHEDULES", "lots")
    code, out, err = run_cli(capsys, f"{TARGET}:lost_update")
    assert code == 2
    assert out == ""
    assert err == (
        "python -m asynclocks explore: error: ASYNCLOCKS_MAX_SCHEDULES must be an integer, "
        "got 'lots'\n"
    )


def test_pct_depth_and_the_portfolio_from_the_command_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Depth 1 is priorities alone: a task runs until it blocks, which never loses this update.
    code, out, _ = run_cli(
        capsys,
        *(f"{TARGET}:lost_update_late", "--strategy", "pct", "--pct-depth", "1"),
        *("--max-schedules", "300", "--quiet"),
    )
    assert code == 0, out
    code, out, _ = run_cli(
        capsys, f"{TARGET}:lost_update_late", "--strategy", "portfolio", "--quiet"
    )
    assert code == 1
    code, _, err = run_cli(capsys, f"{TARGET}:lost_update", "--pct-depth", "0")
    assert code == 2
    assert "--pct-depth" in err


def test_html_writes_the_report_page(
    capsys: pytest.CaptureFixture[str], backend: Backend, tmp_path: Path
) -> None:
    page = tmp_path / "report.html"
    code, out, _ = run_cli(
        capsys, f"{TARGET}:lost_update", "--backend", backend, "--html", str(page), "--quiet"
    )
    assert code == 1
    text = page.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    assert out.splitlines()[0] in text
    assert text.count('<div class="lane" ') == 3


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("missing/report.html", "no such directory"),
        (".", "is a directory, not a file"),
    ],
)
def test_an_unwritable_html_file_exits_2_before_exploring(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, where: str, message: str
) -> None:
    code, out, err = run_cli(capsys, f"{TARGET}:lost_update", "--html", str(tmp_path / where))
    assert code == 2
    assert out == ""
    assert len(err.splitlines()) == 1
    assert err.startswith("python -m asynclocks explore: error: --html ")
    assert message in err


def test_html_is_refused_with_replay(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run_cli(
        capsys,
        f"{TARGET}:lost_update",
        "--replay",
        "al1:a:3::07ad:f79f",
        "--html",
        str(tmp_path / "x.html"),
    )
    assert code == 2
    assert "--html writes an exploration's report; drop it with --replay" in err
    assert not (tmp_path / "x.html").exists()
