"""CI's size of ``benchmarks/soak.py``: 20,000 mixed requests per mode at 256 concurrent clients
in ``make test-deep``, 5,000 in ``make test``.

The script is run as CI would run it by hand, in its own process (it starts the server and the
hammer as processes of their own); the test reads its ``--json`` figures and checks the promises,
not the speed: every request answered 200, drift 0, no negative balance, server memory growth
under the 50 MB budget. Both of the soak's modes run: ``account`` on the memory store and ``db``
on PostgreSQL with 2 workers.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.depth import by_depth

SCRIPT = Path(__file__).parents[3] / "benchmarks" / "soak.py"
#: Requests per mode: 20,000 in ``make test-deep`` (tests/depth.py), 5,000 in ``make test``.
REQUESTS = by_depth(5_000, deep=20_000)


def _soak(mode: str, tmp_path: Path) -> dict[str, object]:
    report = tmp_path / "soak.json"
    command = [
        sys.executable,
        str(SCRIPT),
        "--requests",
        str(REQUESTS),
        "--modes",
        mode,
        "--json",
        str(report),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=110, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"mode {mode}: OK" in result.stdout
    [figures] = json.loads(report.read_text())["modes"]
    assert isinstance(figures, dict)
    return figures


def _check(figures: dict[str, object]) -> None:
    assert figures["requests"] == REQUESTS
    assert figures["status"] == {"200": REQUESTS}
    assert figures["drift"] == 0
    assert figures["audit_drift"] == 0
    assert figures["negative_accounts"] == 0
    growth = figures["growth_mb"]
    assert isinstance(growth, float | int)
    assert growth < 50
    assert figures["problems"] == []


@pytest.mark.depth
@pytest.mark.timeout(120)
def test_soak_account_mode_on_memory(tmp_path: Path) -> None:
    _check(_soak("account", tmp_path))


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.depth
@pytest.mark.timeout(120)
def test_soak_db_mode_on_postgres_with_two_workers(tmp_path: Path, postgres_url: str) -> None:
    # postgres_url: skips (or, in CI, fails) when the server is unreachable; the script makes
    # a schema of its own on the same server.
    _check(_soak("db", tmp_path))
