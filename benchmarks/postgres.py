"""Transfers per second of lock mode ``db`` with two workers on PostgreSQL, next to pgbench.

Run: ``.venv/bin/python benchmarks/postgres.py`` (about 40 s) or ``--quick`` (about 15 s); a
progress display on stderr when it is a terminal, unless ``--quiet``.

Both figures come from one run, against the same server, with the same number of clients:

- the bank: ``python -m services.bank serve --workers 2 --lock db --store postgresql://...``
  (its own schema, dropped afterwards), loaded by ``python -m services.bank hammer --mix
  transfer:1`` (a separate process) on many accounts; every transfer is one HTTP request, one
  call of the ``bank_transfer()`` function (two row locks in id order, two balance writes and a
  journal row, one transaction) and one commit. Workers and hammer run on uvloop when it is
  installed, or on the stock loop with ``--loop asyncio``;
- pgbench: the system's ``pgbench -b simple-update`` (per transaction: UPDATE one account, SELECT
  it, INSERT a history row, commit) in a database of its own, initialised here and dropped.

The bank is measured twice on the same server, one driver after the other:

- under the hammer (the issue's figure): the end-to-end rate with our Python client, which keeps
  its own books, so its drift is checked against what it was told;
- under wrk (C, one thread, a Lua script posting ``{"from","to","amount":1}`` between random
  accounts of its own): the server's own capacity, with far less of the machine spent on the
  client. The difference between the two is what the Python client costs.

Printed: every rate, its ratio to pgbench, the CPU time per transfer of the bank's worker
processes (read from /proc) and of the hammer client, the drift (the hammer's books and ``GET
/audit`` after both drivers), which must be 0, and PASS/MISS per target: >= 3,000 transfers/s
and >= 0.5 of pgbench, for each driver. Everything runs on this machine: the Python server,
its client and PostgreSQL share its cores, which pgbench (written in C, no HTTP, no JSON) does
not have to.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import secrets
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

from asynclocks._progress import ProgressBar
from services.bank.run.server import LoopKind
from services.bank.tools.showdown import start_server

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"
#: The server's admin token, given through its environment (never argv); the hammer registers a
#: client of its own with it, and wrk acts for a client registered with it.
ADMIN_TOKEN = secrets.token_urlsafe(24)
SERVER_ENV = {**os.environ, "BANK_ADMIN_TOKEN": ADMIN_TOKEN}
TRANSFERS_TARGET = 3_000.0
RATIO_TARGET = 0.5


WRK_LUA = """
local headers = {["Content-Type"] = "application/json", ["Authorization"] = "Bearer %s"}
local accounts = %d
request = function()
  local source = math.random(0, accounts - 1)
  local target = (source + math.random(1, accounts - 1)) %% accounts
  local body = '{"from":"%s' .. source .. '","to":"%s' .. target .. '","amount":1}'
  return wrk.format("POST", "/transfers", headers, body)
end
"""


@dataclass(frozen=True)
class WrkRun:
    transfers_per_s: float
    requests: int
    refused: int
    workers_cpu_us: float  # CPU of the bank's worker processes per transfer


def _workers_cpu(supervisor: int) -> float:
    """CPU seconds used so far by the children of ``supervisor`` (the bank's workers)."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[1]) == supervisor:
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def _children_cpu() -> float:
    """CPU seconds used by this process's waited-for children (the hammer runs)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass(frozen=True)
class BankRun:
    transfers_per_s: float
    requests: int
    statuses: dict[str, int]
    p99_ms: float
    drift: int
    audit_drift: int
    workers_cpu_us: float  # per transfer, under the hammer
    hammer_cpu_us: float  # the hammer process's CPU per transfer (setup included)
    wrk: WrkRun | None


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


def _hammer(
    url: str, clients: int, seconds: float, accounts: int, out: Path, loop: LoopKind
) -> dict[str, Any]:
    command = [sys.executable, "-m", "services.bank", "hammer", "--url", url, "--loop", loop]
    command += ["--concurrency", str(clients), "--duration", str(seconds)]
    command += ["--accounts", str(accounts), "--mix", "transfer:1", "--no-progress"]
    command += ["--seed", "1", "--json", str(out)]
    result = subprocess.run(command, check=False, capture_output=True, text=True, env=SERVER_ENV)
    if result.returncode != 0:
        raise SystemExit(f"hammer failed ({result.returncode}):\n{result.stdout}{result.stderr}")
    report: dict[str, Any] = json.loads(out.read_text())
    return report


def _ensure_wrk() -> str | None:
    """wrk's path; installed from the Debian package when missing and running as root."""
    path = shutil.which("wrk")
    if path is None and os.geteuid() == 0:
        print("installing wrk: apt-get install -y wrk", file=sys.stderr)
        subprocess.run(["apt-get", "update"], check=False, capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "wrk"], check=False, capture_output=True)
        path = shutil.which("wrk")
    return path


def _post_json(url: str, body: dict[str, Any], token: str) -> Any:
    """POST ``body`` as ``token``'s (a client key or the admin token); return the answer."""
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers)
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def _wrk(wrk: str, url: str, clients: int, seconds: float, script: Path, supervisor: int) -> WrkRun:
    command = [wrk, "-t1", f"-c{clients}", f"-d{max(1, round(seconds))}s", "-s", str(script), url]
    cpu = _workers_cpu(supervisor)
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    cpu = _workers_cpu(supervisor) - cpu
    match = re.search(r"(\d+) requests in ([\d.]+)(m?s)", out)
    if match is None:
        raise SystemExit(f"cannot read wrk's output:\n{out}")
    requests = int(match[1])
    elapsed = float(match[2]) / (1000 if match[3] == "ms" else 1)
    refused_match = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    refused = int(refused_match[1]) if refused_match else 0
    # Only acknowledged transfers count; a 503 retry_later (or any refusal) is not one.
    transfers = requests - refused
    return WrkRun(transfers / elapsed, requests, refused, cpu / max(transfers, 1) * 1e6)


def run_wrk(
    url: str, clients: int, seconds: float, accounts: int, folder: Path, supervisor: int
) -> WrkRun | None:
    """Open ``accounts`` accounts of wrk's own and drive transfers between them with wrk."""
    wrk = _ensure_wrk()
    if wrk is None:
        print("wrk is not installed (apt-get install wrk): skipping the wrk run", file=sys.stderr)
        return None
    prefix = f"w{secrets.token_hex(3)}-"
    key = _post_json(f"{url}/clients", {"id": f"wrk-{prefix}"}, ADMIN_TOKEN)["key"]
    for index in range(accounts):
        # Enough that amount-1 transfers never run out: every answer is a 200.
        _post_json(f"{url}/accounts", {"id": f"{prefix}{index}", "balance": 10**9}, key)
    script = folder / "transfer.lua"
    script.write_text(WRK_LUA % (key, accounts, prefix, prefix))
    _wrk(wrk, url, clients, min(2.0, seconds), script, supervisor)  # warm-up
    return _wrk(wrk, url, clients, seconds, script, supervisor)


def run_bank(
    dsn: str, clients: int, seconds: float, accounts: int, pool: int, loop: LoopKind
) -> BankRun:
    """Serve the bank on a fresh schema with two workers in db mode; hammer it, then wrk it."""
    schema = f"bench_{secrets.token_hex(6)}"
    asyncio.run(_execute(dsn, f'CREATE SCHEMA "{schema}"'))
    store = _with_query(dsn, search_path=schema, pool_size=str(pool))
    try:
        args = ["--workers", "2", "--lock", "db", "--store", store, "--loop", loop]
        with start_server(args, env=SERVER_ENV) as server, tempfile.TemporaryDirectory() as folder:
            # Warm-up: connection pools filled, statements prepared, caches hot.
            warm_up = Path(folder, "warm.json")
            _hammer(server.url, clients, min(3.0, seconds), accounts, warm_up, loop)
            supervisor = server.process.pid
            workers_cpu, hammer_cpu = _workers_cpu(supervisor), _children_cpu()
            report = _hammer(server.url, clients, seconds, accounts, Path(folder, "run.json"), loop)
            workers_cpu = _workers_cpu(supervisor) - workers_cpu
            hammer_cpu = _children_cpu() - hammer_cpu
            wrk = run_wrk(server.url, clients, seconds, accounts, Path(folder), supervisor)
            audit_request = urllib.request.Request(
                f"{server.url}/audit", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
            )
            with urllib.request.urlopen(audit_request, timeout=30) as response:
                audit = json.load(response)
    finally:
        asyncio.run(_execute(dsn, f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    transfers = report["status"].get("200", 0)
    per_transfer = 1e6 / max(transfers, 1)
    return BankRun(
        transfers_per_s=transfers / report["duration_s"],
        requests=report["requests"],
        statuses=report["status"],
        p99_ms=report["latency_ms"]["p99"],
        drift=report["drift"],
        audit_drift=audit["drift"],
        workers_cpu_us=workers_cpu * per_transfer,
        hammer_cpu_us=hammer_cpu * per_transfer,
        wrk=wrk,
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
    parser.add_argument(
        "--loop",
        choices=get_args(LoopKind),
        default="auto",
        help="event loop of the workers and hammer: uvloop when installed (auto), or force one",
    )
    parser.add_argument("--quick", action="store_true", help="5 s runs")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--quiet", action="store_true", help="no progress display on stderr")
    args = parser.parse_args()
    seconds = 5.0 if args.quick else args.seconds

    with ProgressBar("the bank, then pgbench", 2, enabled=not args.quiet) as bar:
        bank = run_bank(args.dsn, args.clients, seconds, args.accounts, args.pool, args.loop)
        bar.advance()
        tps = run_pgbench(args.dsn, args.clients, seconds)
        bar.advance()
    ratio = bank.transfers_per_s / tps
    drift_ok = bank.drift == 0 and bank.audit_drift == 0
    rows = [("hammer", bank.transfers_per_s, ratio)]
    if bank.wrk is not None:
        rows.append(("wrk", bank.wrk.transfers_per_s, bank.wrk.transfers_per_s / tps))
    checks: list[tuple[str, bool]] = []
    for driver, rate, driver_ratio in rows:
        checks.append(
            (
                f"db mode under {driver} >= {TRANSFERS_TARGET:,.0f} transfers/s",
                rate >= TRANSFERS_TARGET,
            )
        )
        checks.append(
            (f"db mode under {driver} / pgbench >= {RATIO_TARGET}", driver_ratio >= RATIO_TARGET)
        )
    checks.append(("drift 0 (hammer's books and /audit)", drift_ok))
    load = os.getloadavg()[0]
    print(
        f"clients {args.clients}, {seconds:g} s per run, {os.cpu_count()} CPUs, same server, "
        f"load average {load:.1f}"
    )
    print(
        f"bank db mode, 2 workers, hammer: {bank.transfers_per_s:9,.0f} transfers/s  "
        f"ratio {ratio:.2f}  (p99 {bank.p99_ms:.1f} ms, {bank.requests:,} requests, "
        f"statuses {bank.statuses})"
    )
    print(
        f"    CPU per transfer: bank workers {bank.workers_cpu_us:.0f} us, "
        f"hammer client {bank.hammer_cpu_us:.0f} us (its setup included)"
    )
    if bank.wrk is not None:
        print(
            f"bank db mode, 2 workers, wrk:    {bank.wrk.transfers_per_s:9,.0f} transfers/s  "
            f"ratio {bank.wrk.transfers_per_s / tps:.2f}  ({bank.wrk.requests:,} requests, "
            f"{bank.wrk.refused:,} not 200)"
        )
        print(f"    CPU per transfer: bank workers {bank.wrk.workers_cpu_us:.0f} us")
    print(f"pgbench simple-update:           {tps:9,.0f} tps")
    print(
        f"drift:                           {bank.drift:+} (hammer), {bank.audit_drift:+} (/audit)"
    )
    for label, ok in checks:
        print(f"  {'PASS' if ok else 'MISS'}  {label}")
    if args.json is not None:
        document = {
            "clients": args.clients,
            "seconds": seconds,
            "bank_transfers_per_s": round(bank.transfers_per_s, 1),
            "bank_p99_ms": bank.p99_ms,
            "bank_statuses": bank.statuses,
            "wrk_transfers_per_s": None if bank.wrk is None else round(bank.wrk.transfers_per_s, 1),
            "wrk_refused": None if bank.wrk is None else bank.wrk.refused,
            "workers_cpu_us_per_transfer": round(bank.workers_cpu_us, 1),
            "hammer_cpu_us_per_transfer": round(bank.hammer_cpu_us, 1),
            "wrk_workers_cpu_us_per_transfer": (
                None if bank.wrk is None else round(bank.wrk.workers_cpu_us, 1)
            ),
            "pgbench_tps": round(tps, 1),
            "ratio": round(ratio, 3),
            "wrk_ratio": None if bank.wrk is None else round(bank.wrk.transfers_per_s / tps, 3),
            "drift": bank.drift,
            "audit_drift": bank.audit_drift,
        }
        args.json.write_text(json.dumps(document, indent=2) + "\n")
    # Correctness is a failure; the speed targets are reported, not enforced.
    return 0 if bank.drift == 0 and bank.audit_drift == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
