"""The command line end to end: real server processes on free ports, bounded loads."""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from services.bank.__main__ import build_parser, main
from services.bank.tools.showdown import start_server

JSON_KEYS = {
    "requests",
    "duration_s",
    "rps",
    "latency_ms",
    "status",
    "expected_total",
    "actual_total",
    "drift",
    "negative_accounts",
}


def _bank(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.bank", *args],
        capture_output=True,
        text=True,
        timeout=50,
        env=env,
        check=False,
    )


def _request(
    url: str, method: str = "GET", body: object = None, token: str | None = None
) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_serve_announces_binds_loopback_and_stops_cleanly(signum: int) -> None:
    with start_server(["--lock", "global"]) as server:
        assert server.url.startswith("http://127.0.0.1:")
        assert _request(server.url + "/health") == (
            200,
            {"status": "ok", "lock_mode": "global", "store": "memory"},
        )
        server.process.send_signal(signum)
        assert server.process.wait(timeout=10) == 0
        assert server.process.stderr is not None
        assert "Traceback" not in server.process.stderr.read()


def test_serve_admin_token_from_environment() -> None:
    with start_server([], env={**os.environ, "BANK_ADMIN_TOKEN": "from-env"}) as server:
        url = server.url + "/admin/lock"
        assert _request(url, token="from-env") == (200, {"mode": "none"})
        assert _request(url, "PUT", {"mode": "account"}, token="from-env") == (
            200,
            {"mode": "account"},
        )
        assert _request(url, token="wrong")[0] == 401
        assert _request(server.url + "/health")[1]["lock_mode"] == "account"


def test_serve_refuses_the_admin_token_in_argv() -> None:
    result = _bank("serve", "--port", "0", "--admin-token", "flag-token")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "python -m services.bank serve: error: --admin-token on the command line is visible "
        "to every user of this machine; put the token in $BANK_ADMIN_TOKEN or in a file named "
        "by --admin-token-file"
    ]
    assert result.stdout == ""


def test_serve_admin_token_file_wins_and_no_token_disables_admin(tmp_path: Path) -> None:
    token_file = tmp_path / "admin-token"
    token_file.write_text("from-file\n")
    env = {**os.environ, "BANK_ADMIN_TOKEN": "from-env"}
    with start_server(["--admin-token-file", str(token_file)], env=env) as server:
        assert _request(server.url + "/admin/lock", token="from-file") == (200, {"mode": "none"})
        assert _request(server.url + "/admin/lock", token="from-env")[0] == 401
    env.pop("BANK_ADMIN_TOKEN")
    with start_server([], env=env) as server:
        status, body = _request(server.url + "/admin/lock")
    assert (status, body["error"]) == (401, "unauthenticated")
    assert body["detail"].startswith("admin endpoints are disabled")


@pytest.mark.parametrize("content", [None, "", "  \n"])
def test_serve_refuses_a_missing_or_empty_token_file(tmp_path: Path, content: str | None) -> None:
    token_file = tmp_path / "admin-token"
    if content is not None:
        token_file.write_text(content)
    result = _bank("serve", "--port", "0", "--admin-token-file", str(token_file))
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith("python -m services.bank serve: error: ")
    assert str(token_file) in line
    assert ("cannot read" if content is None else "is empty") in line


def test_serve_port_in_use() -> None:
    with start_server([]) as server:
        port = server.url.rsplit(":", 1)[1]
        result = _bank("serve", "--port", port)
    assert result.returncode == 1
    assert f"error: cannot listen on 127.0.0.1:{port}:" in result.stderr


#: The admin token of the servers the hammer tests start, in their environment and the
#: hammer's (which registers a client of its own with it).
ADMIN_ENV = {**os.environ, "BANK_ADMIN_TOKEN": "cli-admin"}


def test_hammer_end_to_end(tmp_path: Path) -> None:
    path = tmp_path / "hammer.json"
    with start_server(["--lock", "account"], env=ADMIN_ENV) as server:
        result = _bank(
            "hammer",
            "--url",
            server.url,
            "--requests",
            "400",
            "--concurrency",
            "16",
            "--accounts",
            "4",
            "--seed",
            "9",
            "--json",
            str(path),
            "--fail-on-drift",
            env=ADMIN_ENV,
        )
        assert result.returncode == 0, result.stderr
        audit = _request(server.url + "/audit", token="cli-admin")[1]
    assert "verdict       OK" in result.stdout
    assert "seed 9" in result.stdout
    # Piped, not a terminal: no progress line (test_hammer.py draws it on a terminal).
    assert f"hammer {server.url}" not in result.stderr
    report = json.loads(path.read_text())
    assert set(report) == JSON_KEYS
    assert report["requests"] == 400
    assert report["drift"] == 0
    assert report["actual_total"] == audit["total"]
    assert audit["drift"] == 0


def test_hammer_thresholds_exit_1(tmp_path: Path) -> None:
    # 50 ms between each read and write, 8 clients on 2 accounts: the deposits overlap.
    with start_server(["--lock", "none", "--io-delay", "0.05"], env=ADMIN_ENV) as server:
        result = _bank(
            "hammer",
            "--url",
            server.url,
            "--requests",
            "32",
            "--concurrency",
            "8",
            "--accounts",
            "2",
            "--mix",
            "deposit:1",
            "--fail-on-drift",
            "--max-p99-ms",
            "0.001",
            "--no-progress",
            env=ADMIN_ENV,
        )
    assert result.returncode == 1
    assert "threshold broken: drift -" in result.stderr
    assert "threshold broken: p99 " in result.stderr
    assert "cents acknowledged to clients are missing" in result.stdout
    assert "hammer" not in result.stderr.replace("threshold broken", "")


def test_hammer_unreachable() -> None:
    result = _bank("hammer", "--url", "http://127.0.0.1:9", "--requests", "1", env=ADMIN_ENV)
    assert result.returncode == 1
    assert result.stderr.startswith("error: cannot talk to http://127.0.0.1:9/")


def test_hammer_without_a_credential_exits_2_before_any_load() -> None:
    env = {name: value for name, value in os.environ.items() if not name.startswith("BANK_")}
    result = _bank("hammer", "--url", "http://127.0.0.1:9", "--requests", "1", env=env)
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert "no credential; put a client API key in $BANK_API_KEY" in line


def test_hammer_sends_the_key_of_a_client_it_was_given(tmp_path: Path) -> None:
    with start_server(["--lock", "account"], env=ADMIN_ENV) as server:
        status, body = _request(server.url + "/clients", "POST", {"id": "ops"}, token="cli-admin")
        assert status == 201
        key_file = tmp_path / "key"
        key_file.write_text(body["key"])
        env = {name: value for name, value in os.environ.items() if not name.startswith("BANK_")}
        result = _bank(
            "hammer",
            "--url",
            server.url,
            "--requests",
            "50",
            "--accounts",
            "2",
            "--api-key-file",
            str(key_file),
            "--fail-on-drift",
            "--no-progress",
            env=env,
        )
        assert result.returncode == 0, result.stderr
        # The run's accounts are the client's: another client may not read them.
        status, other = _request(
            server.url + "/clients", "POST", {"id": "other"}, token="cli-admin"
        )
        prefix = re.search(r"accounts (h[0-9a-f]{8})-", result.stdout)
        assert prefix is not None, result.stdout
        status, _ = _request(f"{server.url}/accounts/{prefix.group(1)}-0", token=other["key"])
        assert status == 403
        status, _ = _request(f"{server.url}/accounts/{prefix.group(1)}-0", token=body["key"])
        assert status == 200


def test_showdown_end_to_end(tmp_path: Path) -> None:
    plot, report = tmp_path / "showdown.png", tmp_path / "showdown.json"
    result = _bank(
        "showdown",
        "--requests",
        "120",
        "--concurrency",
        "16",
        "--accounts",
        "2",
        "--io-delay",
        "0.01",
        "--plot",
        str(plot),
        "--json",
        str(report),
        "--no-progress",
    )
    assert result.returncode == 0, result.stderr
    for header in ("mode", "rps", "p99 ms", "drift", "negative", "verdict"):
        assert header in result.stdout
    assert "LOSES MONEY" in result.stdout
    assert plot.read_bytes().startswith(b"\x89PNG")
    document = json.loads(report.read_text())
    rows = {row["mode"]: row for row in document["modes"]}
    assert list(rows) == ["none", "global", "account"]
    assert rows["none"]["drift"] != 0
    assert rows["none"]["verdict"] == "LOSES MONEY"
    for mode in ("global", "account"):
        assert (rows[mode]["drift"], rows[mode]["negative_balances"]) == (0, 0)
        assert rows[mode]["verdict"] == "correct"
        assert set(rows[mode]["hammer"]) == JSON_KEYS
        assert rows[mode]["hammer"]["requests"] == 120


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["serve", "--port", "70000"], "argument --port: must be between 0 and 65535, got 70000"),
        (["serve", "--port", "x"], "argument --port: must be an integer, got 'x'"),
        (["serve", "--lock", "fast"], "argument --lock: invalid choice: 'fast'"),
        (["serve", "--store", "redis://x"], "unknown store 'redis://x'; expected 'memory'"),
        (["serve", "--io-delay", "-1"], "must be a finite number of seconds >= 0, got -1"),
        (["serve", "--io-delay", "nan"], "must be a finite number of seconds >= 0, got nan"),
        (["serve", "--admin-token", "t"], "--admin-token on the command line is visible"),
        (["hammer"], "the following arguments are required: --url"),
        (["hammer", "--url", "ftp://x"], "must be an http:// or https:// URL, got 'ftp://x'"),
        (["hammer", "--url", "http://h:1/api"], "must be the service's base URL"),
        (["hammer", "--url", "http://h:1", "--concurrency", "0"], "must be between 1 and 10000"),
        (["hammer", "--url", "http://h:1", "--requests", "0"], "must be >= 1, got 0"),
        (
            ["hammer", "--url", "http://h:1", "--requests", "5", "--duration", "1"],
            "argument --duration: not allowed with argument --requests",
        ),
        (["hammer", "--url", "http://h:1", "--duration", "0"], "seconds > 0, got 0"),
        (["hammer", "--url", "http://h:1", "--mix", "rob:1"], "unknown operation 'rob' in mix"),
        (["hammer", "--url", "http://h:1", "--accounts", "1"], "must be between 2 and 100000"),
        (["hammer", "--url", "http://h:1", "--opening-balance", "-5"], "must be between 0 and"),
        (["hammer", "--url", "http://h:1", "--max-p99-ms", "0"], "milliseconds > 0, got 0"),
        (["hammer", "--url", "http://h:1", "--seed", "-1"], "must be >= 0, got -1"),
        (["showdown", "--requests", "0"], "must be >= 1, got 0"),
        (["showdown", "--io-delay", "x"], "must be a number of seconds, got 'x'"),
        (["explode"], "invalid choice: 'explode'"),
    ],
)
def test_bad_command_lines_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("command", ["serve", "hammer", "showdown"])
def test_every_flag_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    (subparsers,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    subparser = subparsers.choices[command]
    flags = [action for action in subparser._actions if action.option_strings]
    assert len(flags) > 3
    for action in flags:
        assert action.help, action.option_strings
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for action in flags:
        assert action.option_strings[-1] in text
        assert " ".join((action.help or "").split()[:3]).replace("%%", "%") in text


@pytest.mark.parametrize("command", ["hammer", "showdown"])
def test_quiet_turns_the_progress_off_like_every_long_command(command: str) -> None:
    # The library's commands and the benchmarks say --quiet; the bank's tools take it too.
    required = ["--url", "http://127.0.0.1:1"] if command == "hammer" else []
    parser = build_parser()
    assert parser.parse_args([command, *required, "--quiet"]).no_progress is True
    assert parser.parse_args([command, *required, "--no-progress"]).no_progress is True
    assert parser.parse_args([command, *required]).no_progress is False


def test_console_script_is_declared() -> None:
    import tomllib

    pyproject = tomllib.loads((Path(__file__).parents[3] / "pyproject.toml").read_text())
    assert pyproject["project"]["scripts"]["bank"] == "services.bank.__main__:main"


def test_version_is_the_distributions() -> None:
    import subprocess
    import sys

    import asynclocks

    completed = subprocess.run(
        [sys.executable, "-m", "services.bank", "--version"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout == f"bank (asynclocks {asynclocks.__version__})\n"
