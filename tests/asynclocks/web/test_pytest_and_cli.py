"""The pytest helper and `python -m asynclocks web`: exit codes, one-line errors, real output."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import asynclocks
import asynclocks.web as web
from asynclocks.__main__ import main

from .apps import seats_app

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = ROOT / "examples" / "08_web_race_fastapi.py"

# The helper at work, on both backends: the racy app is expected to fail, the locked one to pass.
test_last_seat_is_a_race = web.linearizable(
    seats_app, concurrent=["POST /book"] * 2, observe=["GET /seats"], expect="fail"
)
test_last_seat_locked = web.linearizable(
    lambda: seats_app(locked=True), concurrent=["POST /book"] * 2, observe=["GET /seats"]
)


def test_a_failing_set_fails_its_test_with_the_report(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_seats=textwrap.dedent(
            """
            import asynclocks.web as web
            from tests.asynclocks.web.apps import seats_app

            test_seats = web.linearizable(
                seats_app, concurrent=["POST /book"] * 2, observe=["GET /seats"]
            )
            """
        )
    )
    result = pytester.runpytest("-p", "no:cacheprovider", "-q")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(
        [
            "*asynclocks.InterleavingFailure: NOT LINEARIZABLE on asyncio after 1 schedule(s)*",
            "*nearest sequential order, c1 then c2, would give instead:",
            "*c2 status: 409, not 200",
            "*token: al1:a:*",
        ]
    )


def test_bad_helper_arguments_are_refused_when_the_module_is_imported() -> None:
    with pytest.raises(ValueError, match="concurrent takes 2 to 4 requests"):
        web.linearizable(seats_app, concurrent=["POST /book"])
    with pytest.raises(ValueError, match="expect must be 'pass' or 'fail'"):
        web.linearizable(seats_app, concurrent=["POST /book"] * 2, expect="maybe")
    with pytest.raises(ValueError, match="unknown backend 'curio'"):
        web.linearizable(seats_app, concurrent=["POST /book"] * 2, backends="curio")  # type: ignore[arg-type]


def in_process(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run the command in this process (fast: no interpreter start-up): (status, out, err)."""
    try:
        status = main(["web", *args])
    except SystemExit as exit:  # argparse's own errors
        status = int(exit.code or 0)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "asynclocks", "web", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
        check=False,
    )


def test_cli_finds_the_coupon_race_from_the_openapi_document(
    capsys: pytest.CaptureFixture[str],
) -> None:
    racy = cli(f"{EXAMPLE}:make_app", "--openapi", "--sets", "3")
    assert racy.returncode == 1, racy.stderr
    assert racy.stdout.startswith("NOT LINEARIZABLE on asyncio after 1 schedule(s)")
    assert "c2 status: 409, not 200" in racy.stdout
    assert (
        racy.stdout.rstrip()
        .splitlines()[-1]
        .startswith(
            "1 of 1 generated request set(s) checked, 1 schedule(s) run, 1 not linearizable"
        )
    )
    status, out, err = in_process(capsys, f"{EXAMPLE}:locked_app", "--openapi", "--backend", "trio")
    assert status == 0, out + err
    assert " 0 not linearizable" in out


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_cli_reads_request_sets_from_a_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, suffix: str
) -> None:
    sets = {
        "sets": [
            {
                "concurrent": ["POST /coupons/WELCOME10/redeem"] * 2,
                "observe": [{"method": "GET", "path": "/coupons/WELCOME10"}],
            }
        ]
    }
    path = tmp_path / f"sets{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps(sets))
    else:
        path.write_text(
            "sets:\n"
            "  - concurrent: [POST /coupons/WELCOME10/redeem, POST /coupons/WELCOME10/redeem]\n"
            "    observe:\n"
            "      - {method: GET, path: /coupons/WELCOME10}\n"
        )
    status, out, err = in_process(capsys, f"{EXAMPLE}:make_app", "--requests", str(path))
    assert status == 1, err
    assert "1 of 1 request set(s) checked, 1 schedule(s) run, 1 not linearizable" in out
    status, out, _err = in_process(capsys, f"{EXAMPLE}:locked_app", "--requests", str(path))
    assert status == 0, out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "one of the arguments --openapi --requests is required"),
        (["--openapi", "--sets", "0"], "argument --sets: must be >= 1, got 0"),
        (["--openapi", "--concurrent", "5"], "argument --concurrent: must be 2 to 4, got 5"),
        (["--requests", "/nonexistent/sets.json"], "cannot read /nonexistent/sets.json"),
        (["--openapi", "--ignore", "a..b"], "ignore path 'a..b' is empty or has an empty part"),
    ],
)
def test_cli_bad_arguments_exit_2_with_one_line(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    status, out, err = in_process(capsys, f"{EXAMPLE}:make_app", *args)
    assert status == 2
    assert message in err
    assert "Traceback" not in err
    assert out == ""


def test_cli_refuses_an_app_instead_of_a_factory(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    module = tmp_path / "shared.py"
    module.write_text("from fastapi import FastAPI\napp = FastAPI()\n")
    status, _out, err = in_process(capsys, f"{module}:app", "--openapi")
    assert status == 2
    assert "is an app, not a factory" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{", "is not valid JSON"),
        ("[]", "must hold an object with setup/concurrent/observe, or sets"),
        ('{"concurrent": ["POST /x"], "extra": 1}', "unknown keys ['extra']"),
        ('{"concurrent": ["POST /x"]}', "set 1: concurrent takes 2 to 4 requests"),
    ],
)
def test_cli_bad_request_files_exit_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "sets.json"
    path.write_text(content)
    status, _out, err = in_process(capsys, f"{EXAMPLE}:make_app", "--requests", str(path))
    assert status == 2
    assert message in err


def test_the_web_names_are_public() -> None:
    assert web.__all__ == sorted(web.__all__)
    for name in web.__all__:
        assert getattr(web, name).__module__.startswith("asynclocks")
    assert asynclocks.web is web
