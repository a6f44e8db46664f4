"""Transfers per second of lock mode ``db`` with two workers on PostgreSQL, next to pgbench.

Run: ``.venv/bin/python benchmarks/postgres.py`` (about 40 s) or ``--quick`` (about 15 s).

Both figures come from one run, against the same server, with the same number of clients:

- the bank: ``python -m services.bank serve --workers 2 --lock db --store postgresql://...``
  (its own schema, dropped afterwards), loaded by ``python -m services.bank hammer --mix
  transfer:1`` (a separate process, uvloop) on many accounts; every transfer is one HTTP request,
  one call of the ``bank_transfer()`` function (two row locks in id order, two balance writes
  and a journal row, one transaction) and one commit;
- pgbench: the system's ``pgbench -b simple-update`` (per transaction: UPDATE one account, SELECT
  it, INSERT a history row, commit) in a database of its own, initialised here and dropped.

Printed: both rates, their ratio, and the drift (the hammer's books and ``GET /audit``), which
must be 0. Targets (PASS/MISS): >= 3,000 transfers/s and >= 0.5 of pgbench. Everything runs on
this machine: the Python server, the Python client and PostgreSQL share its cores, which pgbench
(written in C, no HTTP) does not have to.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

from services.bank.showdown import start_server

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"
TRANSFERS_TARGET = 3_000.0
RATIO_TARGET = 0.5


@dataclass(frozen=True)
class BankRun:
    transfers_per_s: float
    requests: int
    statuses: dict[str, int]
    p99_ms: float
    drift: int
    audit_drift: int


def _with_query(dsn: str, **params: str) -> str:
    parts = urlsplit(dsn)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k not in params]
    query += list(params.items())
    return urlunsplit(parts._replace(query=urlencode(query)))


def _with_database(dsn: str, database: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path=f"/{database}"))


async def _execute(dsn: str, *statements: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


def _hammer(url: str, clients: int, seconds: float, accounts: int, out: Path) -> dict[str, Any]:
    command = [sys.executable, "-m", "services.bank", "hammer", "--url", url]
    command += ["--concurrency", str(clients), "--duration", str(seconds)]
    command += ["--accounts", str(accounts), "--mix", "transfer:1", "--no-progress"]
    command += ["--seed", "1", "--json", str(out)]
    result = subprocess.run(command, check=False, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"hammer failed ({result.returncode}):\n{result.stdout}{result.stderr}")
    report: dict[str, Any] = json.loads(out.read_text())
    return report


def run_bank(dsn: str, clients: int, seconds: float, accounts: int, pool: int) -> BankRun:
    """Serve the bank on a fresh schema with two workers in db mode and hammer it."""
    schema = f"bench_{secrets.token_hex(6)}"
    asyncio.run(_execute(dsn, f'CREATE SCHEMA "{schema}"'))
    store = _with_query(dsn, search_path=schema, pool_size=str(pool))
    try:
        args = ["--workers", "2", "--lock", "db", "--store", store]
        with start_server(args) as server, tempfile.TemporaryDirectory() as folder:
            # Warm-up: connection pools filled, statements prepared, caches hot.
            _hammer(server.url, clients, min(3.0, seconds), accounts, Path(folder, "warm.json"))
            report = _hammer(server.url, clients, seconds, accounts, Path(folder, "run.json"))
            with urllib.request.urlopen(f"{server.url}/audit", timeout=30) as response:
                audit = json.load(response)
    finally:
        asyncio.run(_execute(dsn, f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    transfers = report["status"].get("200", 0)
    return BankRun(
        transfers_per_s=transfers / report["duration_s"],
        requests=report["requests"],
        statuses=report["status"],
        p99_ms=report["latency_ms"]["p99"],
        drift=report["drift"],
        audit_drift=audit["drift"],
    )


def run_pgbench(dsn: str, clients: int, seconds: float) -> float:
    """``pgbench -b simple-update`` in a database of its own; return its tps."""
    pgbench = shutil.which("pgbench")
    if pgbench is None:
        raise SystemExit("pgbench is not installed (apt-get install postgresql-client)")
    database = f"asynclocks_pgbench_{secrets.token_hex(4)}"
    parts = urlsplit(dsn)
    env = {**os.environ, "PGHOST": parts.hostname or "127.0.0.1", "PGPORT": str(parts.port or 5432)}
    env["PGUSER"] = parts.username or "postgres"
    if parts.password:
        env["PGPASSWORD"] = parts.password
    admin = _with_database(dsn, parts.path.lstrip("/") or "postgres")
    asyncio.run(_execute(admin, f'CREATE DATABASE "{database}"'))
    try:
        subprocess.run(
            [pgbench, "-i", "-q", "-s", "1", database], env=env, check=True, capture_output=True
        )
        command = [pgbench, "-b", "simple-update", "-c", str(clients), "-j", "2"]
        command += ["-T", str(max(1, round(seconds))), "-n", database]
        result = subprocess.run(command, env=env, check=True, capture_output=True, text=True)
    finally:
        asyncio.run(_execute(admin, f'DROP DATABASE IF EXISTS "{database}"'))
    match = re.search(r"tps = ([\d.]+)", result.stdout)
    if match is None:
        raise SystemExit(f"cannot read pgbench's tps from:\n{result.stdout}")
    return float(match[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--dsn",
        default=os.environ.get("BANK_BENCH_POSTGRES_DSN", DEFAULT_DSN),
        help=f"PostgreSQL server (default: $BANK_BENCH_POSTGRES_DSN or {DEFAULT_DSN})",
    )
    parser.add_argument("--clients", type=int, default=32, help="clients of both (default 32)")
    parser.add_argument("--seconds", type=float, default=15.0, help="each run (default 15)")
    parser.add_argument("--accounts", type=int, default=1000, help="bank accounts (default 1000)")
    parser.add_argument(
        "--pool", type=int, default=16, help="connections per bank worker (default 16)"
    )
    parser.add_argument("--quick", action="store_true", help="5 s runs")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    seconds = 5.0 if args.quick else args.seconds

    bank = run_bank(args.dsn, args.clients, seconds, args.accounts, args.pool)
    tps = run_pgbench(args.dsn, args.clients, seconds)
    ratio = bank.transfers_per_s / tps
    checks = [
        (
            f"db mode >= {TRANSFERS_TARGET:,.0f} transfers/s",
            bank.transfers_per_s >= TRANSFERS_TARGET,
        ),
        (f"db mode / pgbench >= {RATIO_TARGET}", ratio >= RATIO_TARGET),
        ("drift 0 (hammer and /audit)", bank.drift == 0 and bank.audit_drift == 0),
    ]
    print(f"clients {args.clients}, {seconds:g} s per run, {os.cpu_count()} CPUs, same server")
    print(
        f"bank db mode, 2 workers: {bank.transfers_per_s:9,.0f} transfers/s  "
        f"(p99 {bank.p99_ms:.1f} ms, {bank.requests:,} requests, statuses {bank.statuses})"
    )
    print(f"pgbench simple-update:   {tps:9,.0f} tps")
    print(f"ratio bank / pgbench:    {ratio:9.2f}")
    print(f"drift:                   {bank.drift:+} (hammer), {bank.audit_drift:+} (/audit)")
    for label, ok in checks:
        print(f"  {'PASS' if ok else 'MISS'}  {label}")
    if args.json is not None:
        document = {
            "clients": args.clients,
            "seconds": seconds,
            "bank_transfers_per_s": round(bank.transfers_per_s, 1),
            "bank_p99_ms": bank.p99_ms,
            "bank_statuses": bank.statuses,
            "pgbench_tps": round(tps, 1),
            "ratio": round(ratio, 3),
            "drift": bank.drift,
            "audit_drift": bank.audit_drift,
        }
        args.json.write_text(json.dumps(document, indent=2) + "\n")
    # Correctness is a failure; the speed targets are reported, not enforced.
    return 0 if bank.drift == 0 and bank.audit_drift == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
