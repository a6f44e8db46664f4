from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from asynclocks import _demo_cli
from asynclocks.__main__ import main
from asynclocks._demos import NAIVE_ORDER, DemoResult, locks_for

ROOT = Path(__file__).resolve().parents[2]
KEYS = {"scenario", "backend", "lock", "expected", "actual", "ok"}
FAILING = {"none", NAIVE_ORDER}


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "asynclocks", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=50,
        check=False,
    )


def check_contract(rows: Any, tasks: int, backends: tuple[str, ...] = ("asyncio", "trio")) -> None:
    assert isinstance(rows, list)
    seen = []
    for row in rows:
        assert isinstance(row, dict)
        assert set(row) == KEYS
        assert isinstance(row["ok"], bool)
        assert isinstance(row["expected"], int)
        assert isinstance(row["actual"], int)
        # Every protection fails or succeeds by construction, never by luck.
        assert row["ok"] is (row["lock"] not in FAILING), row
        assert row["ok"] is (row["expected"] == row["actual"]), row
        if row["lock"] == NAIVE_ORDER:
            assert (row["expected"], row["actual"]) == (tasks, 0)
        seen.append((row["scenario"], row["backend"], row["lock"]))
    assert seen == [
        (scenario, backend, lock)
        for scenario in ("counter", "withdraw", "transfer")
        for backend in backends
        for lock in locks_for(backend, scenario)
    ]


def test_json_contract_three_runs_in_a_row_as_a_subprocess() -> None:
    outputs = []
    for _ in range(3):
        completed = run_cli("demo", "--json", "--tasks", "20")
        assert completed.returncode == 0, completed.stderr
        rows = json.loads(completed.stdout)
        check_contract(rows, 20)
        outputs.append(rows)
    # Deterministic: the same numbers every run.
    assert outputs[0] == outputs[1] == outputs[2]


def test_json_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--json", "--tasks", "7", "--backend", "trio"]) == 0
    rows = json.loads(capsys.readouterr().out)
    check_contract(rows, 7, ("trio",))
    counter_none = rows[0]
    assert counter_none == {
        "scenario": "counter",
        "backend": "trio",
        "lock": "none",
        "expected": 7,
        "actual": 1,
        "ok": False,
    }


def test_scenario_filter(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--json", "--scenario", "withdraw", "--backend", "asyncio"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(row["scenario"], row["lock"]) for row in rows] == [
        ("withdraw", lock) for lock in locks_for("asyncio")
    ]
    assert rows[0]["expected"] == 0
    assert rows[0]["actual"] == -500


def test_table_with_rich_as_a_subprocess() -> None:
    completed = run_cli("demo", "--tasks", "100")
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.splitlines()
    header = next(line for line in lines if "scenario" in line)
    for column in ("scenario", "backend", "lock", "expected", "actual", "ok", "note"):
        assert column in header
    counter_none = [line for line in lines if "counter" in line and " none " in line]
    assert len(counter_none) == 2
    for line in counter_none:
        assert "lost 99 updates" in line
        assert "false" in line
    deadlocks = [line for line in lines if NAIVE_ORDER in line]
    assert len(deadlocks) == 2
    assert all("deadlock detected after 0.5 s (0 of 100 done)" in line for line in deadlocks)
    assert sum(" true " in line for line in lines) == 18


def test_plain_table_without_rich(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A None entry in sys.modules makes `import rich...` raise ImportError, as if not installed.
    monkeypatch.setitem(sys.modules, "rich.console", None)
    assert main(["demo", "--backend", "asyncio", "--scenario", "counter", "--tasks", "10"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines() == [
        "scenario  backend  lock          expected  actual  ok     note",
        "--------  -------  ------------  --------  ------  -----  --------------",
        "counter   asyncio  none                10       1  false  lost 9 updates",
        "counter   asyncio  asyncio.Lock        10      10  true",
        "counter   asyncio  anyio.Lock          10      10  true",
        "counter   asyncio  KeyedLock           10      10  true",
    ]


@pytest.mark.parametrize(
    ("result", "text"),
    [
        (DemoResult("counter", "trio", "none", 100, 1, False), "lost 99 updates"),
        (DemoResult("withdraw", "trio", "none", 0, -500, False), "overdrawn by 500"),
        (DemoResult("withdraw", "trio", "none", 10, 5, False), "off by -5"),
        (DemoResult("transfer", "trio", "none", 2000, 2020, False), "created 20 out of thin air"),
        (DemoResult("transfer", "trio", "none", 2000, 1990, False), "lost 10"),
        (
            DemoResult("transfer", "trio", NAIVE_ORDER, 100, 0, False),
            "deadlock detected after 0.5 s (0 of 100 done)",
        ),
        (DemoResult("counter", "trio", "trio.Lock", 100, 100, True), ""),
    ],
)
def test_note(result: DemoResult, text: str) -> None:
    assert _demo_cli.note(result) == text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tasks", "1"], "demo: error: argument --tasks: must be between 2 and 10000"),
        (["--tasks", "0"], "got 0"),
        (["--tasks", "-4"], "got -4"),
        (["--tasks", "10001"], "got 10001"),
        (["--tasks", "many"], "argument --tasks: must be an integer, got 'many'"),
        (["--tasks", "2.5"], "must be an integer, got '2.5'"),
        (["--backend", "curio"], "argument --backend: invalid choice: 'curio'"),
        (["--scenario", "bank"], "argument --scenario: invalid choice: 'bank'"),
        (["--colour"], "asynclocks: error: unrecognized arguments: --colour"),
    ],
)
def test_bad_options_exit_2_with_a_message(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", *args])
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("usage: python -m asynclocks")
    assert message in captured.err


def test_bad_option_as_a_subprocess() -> None:
    completed = run_cli("demo", "--tasks", "1")
    assert completed.returncode == 2
    assert completed.stdout == ""
    assert "error: argument --tasks: must be between 2 and 10000" in completed.stderr


def test_trio_missing(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(_demo_cli, "_trio_installed", lambda: False)
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--backend", "trio"])
    assert exit_info.value.code == 2
    assert "trio is not installed" in capsys.readouterr().err
    assert main(["demo", "--json", "--tasks", "2", "--scenario", "counter"]) == 0
    captured = capsys.readouterr()
    assert {row["backend"] for row in json.loads(captured.out)} == {"asyncio"}
    assert "running asyncio only" in captured.err


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for option in ("--backend {asyncio,trio,all}", "--tasks N", "--json", "--scenario"):
        assert option in out
    assert "naive-order" in out


def test_demo_is_listed_in_the_top_level_help() -> None:
    completed = run_cli("--help")
    assert completed.returncode == 0
    assert "demo" in completed.stdout
    assert "run the race demos" in completed.stdout
