"""The command line's failures: one line on stderr and exit code 2, checked before any load
runs; and a showdown that is signalled stops the servers it started."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from services.bank.run.preflight import check_output_path

from ._postgres import postgres_dsn

BANK = [sys.executable, "-m", "services.bank"]


def _bank(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*BANK, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def _one_line_exit_2(result: subprocess.CompletedProcess[str], *fragments: str) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert "Traceback" not in result.stderr
    return lines[0]


# --- output paths, before the load ------------------------------------------------------------


def test_hammer_checks_its_json_path_before_the_load() -> None:
    # An unreachable URL: a check made after the load would report that instead (exit 1).
    result = _bank("hammer", "--url", "http://127.0.0.1:1", "--json", "/nonexistent/x.json")
    _one_line_exit_2(result, "cannot write /nonexistent/x.json", "/nonexistent does not exist")


@pytest.mark.parametrize("flag", ["--plot", "--json"])
def test_showdown_checks_its_output_paths_before_the_load(flag: str, tmp_path: Path) -> None:
    started = time.monotonic()
    result = _bank("showdown", "--requests", "100000", "--no-progress", flag, "/nonexistent/x.png")
    _one_line_exit_2(result, "cannot write /nonexistent/x.png")
    # No mode ran: 100,000 requests per mode take far longer than starting Python.
    assert time.monotonic() - started < 30


def test_output_path_checks(tmp_path: Path) -> None:
    assert check_output_path(tmp_path / "new.json") is None
    assert not (tmp_path / "new.json").exists()  # the check leaves nothing behind
    existing = tmp_path / "old.json"
    existing.write_text("kept")
    assert check_output_path(existing) is None
    assert existing.read_text() == "kept"
    assert check_output_path(tmp_path) == f"{tmp_path} is a directory"
    (tmp_path / "file").write_text("")
    problem = check_output_path(tmp_path / "file" / "x.json")
    assert problem is not None
    assert problem.endswith("is not a directory")


# --- stores, before listening -----------------------------------------------------------------


def test_serve_sqlite_in_a_missing_directory() -> None:
    result = _bank("serve", "--port", "0", "--store", "sqlite:////nonexistent/dir/x.db")
    _one_line_exit_2(
        result, "the SQLite database /nonexistent/dir/x.db", "/nonexistent/dir does not exist"
    )


def test_serve_workers_sqlite_in_a_missing_directory() -> None:
    result = _bank(
        "serve", "--port", "0", "--workers", "2", "--lock", "db", "--store",
        "sqlite:////nonexistent/dir/x.db",
    )  # fmt: skip
    _one_line_exit_2(result, "/nonexistent/dir does not exist")


def test_serve_unreachable_postgres_names_the_database() -> None:
    # Port 1 on loopback: nothing listens there, the connection is refused at once.
    result = _bank("serve", "--port", "0", "--store", "postgresql://postgres@127.0.0.1:1/bankdb")
    line = _one_line_exit_2(
        result, "the PostgreSQL database bankdb at 127.0.0.1:1", "connection refused"
    )
    assert "listen" not in line


def test_showdown_unreachable_postgres_before_any_server() -> None:
    result = _bank("showdown", "--no-progress", "--store", "postgresql://postgres@127.0.0.1:1/x")
    _one_line_exit_2(result, "showdown: error: cannot open the PostgreSQL database x")


def test_serve_unknown_postgres_role(postgres_url: str) -> None:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(postgres_dsn())
    netloc = f"no_such_role_14@{parts.hostname}:{parts.port or 5432}"
    url = urlunsplit(parts._replace(netloc=netloc))
    result = _bank("serve", "--port", "0", "--store", url)
    _one_line_exit_2(result, 'role "no_such_role_14" does not exist')


# --- the plain install ------------------------------------------------------------------------

BLOCKED_IMPORT = """
import runpy, sys

class Blocker:
    # Stands for an install without the service extra: these modules are not there.
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in {"aiohttp", "yarl", "multidict"}:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Blocker())
sys.argv = ["bank", *sys.argv[1:]]
runpy.run_module("services.bank", run_name="__main__", alter_sys=True)
"""


@pytest.mark.parametrize("argv", [["--help"], ["serve", "--port", "0"]])
def test_without_the_service_extra_a_hint(argv: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-c", BLOCKED_IMPORT, *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    _one_line_exit_2(result, "pip install 'asynclocks[service]'", "aiohttp is not installed")


# --- a signalled showdown ---------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The parent pid is the 2nd field after the command, which is in parentheses.
        fields = stat.rpartition(")")[2].split()
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads the process table from /proc")
@pytest.mark.parametrize("signum", [signal.SIGHUP, signal.SIGINT, signal.SIGTERM])
def test_signalled_showdown_stops_its_server(signum: signal.Signals) -> None:
    showdown = subprocess.Popen(
        [*BANK, "showdown", "--requests", "10000000", "--no-progress"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    servers: list[int] = []
    try:
        deadline = time.monotonic() + 30
        while not servers and time.monotonic() < deadline:
            servers = _children(showdown.pid)
            time.sleep(0.05)
        assert servers, "the showdown started no server"
        # The server is up once the showdown's load reaches it; a second is ample to start.
        time.sleep(1.0)
        showdown.send_signal(signum)
        assert showdown.wait(timeout=30) == 1
        assert showdown.stderr is not None
        stderr = showdown.stderr.read()
        assert f"showdown stopped by {signum.name}" in stderr
        assert "Traceback" not in stderr
        deadline = time.monotonic() + 15
        while any(_alive(pid) for pid in servers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(_alive(pid) for pid in servers), servers
    finally:
        if showdown.poll() is None:
            showdown.kill()
            showdown.wait()
        for pid in servers:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        if showdown.stderr is not None:
            showdown.stderr.close()
