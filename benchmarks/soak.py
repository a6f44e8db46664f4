"""Soak: a long mixed load against the bank, checking the books and the servers' memory.

Run the full size (about 1,000,000 requests per mode; several minutes per mode on 2 cores)::

    .venv/bin/python benchmarks/soak.py

or a smaller one, e.g. what CI runs (``tests/services/bank/test_soak.py``)::

    .venv/bin/python benchmarks/soak.py --requests 20000 --modes account

Per mode, the service is started as its own process(es) and loaded by ``python -m services.bank
hammer`` (another process, so the client's CPU and memory are not the server's) at 256
concurrent clients with the mix deposit:1, withdraw:1, transfer:2:

- ``account``: ``serve --lock account`` on the memory store, one process;
- ``db``: ``serve --workers 2 --lock db`` on PostgreSQL (a schema of its own, dropped after).

A warm-up load (5% of the requests, at least 2,000) runs first; the servers' resident memory
(the sum of ``VmRSS`` from ``/proc`` over the server's processes, the supervisor and its workers
for ``db``) is read after it as the baseline, sampled every half second during the main load,
and read again at the end. Printed per mode: requests, rps, latency p50/p99/max, statuses, drift
(the hammer's books and ``GET /audit``), negative balances, RSS baseline/peak/final, growth and
its ratio to the 50 MB budget; then the rps ratio of ``db`` to ``account``.

Exit code 1 when a mode breaks a promise: drift not 0, a negative balance, a 5xx, or memory
growth of 50 MB or more.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from services.bank.tools.showdown import ServerProcess, start_server

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"
GROWTH_BUDGET_MB = 50.0
MIX = "deposit:1,withdraw:1,transfer:2"
MODES = ("account", "db")


@dataclass
class ModeResult:
    """One mode's figures."""

    mode: str
    requests: int
    duration_s: float
    rps: float
    latency_ms: dict[str, float]
    status: dict[str, int]
    drift: int
    audit_drift: int
    negative_accounts: int
    rss_baseline_mb: float
    rss_peak_mb: float
    rss_final_mb: float
    problems: list[str] = field(default_factory=list)

    @property
    def growth_mb(self) -> float:
        return self.rss_final_mb - self.rss_baseline_mb

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["growth_mb"] = round(self.growth_mb, 2)
        data["growth_vs_budget"] = round(self.growth_mb / GROWTH_BUDGET_MB, 3)
        return data


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found += [int(child) for child in task.read_text().split()]
        except OSError:
            continue
    return found


def server_pids(root: int) -> list[int]:
    """The server process and all its descendants (the workers of a supervisor)."""
    pids, queue = [], [root]
    while queue:
        pid = queue.pop()
        pids.append(pid)
        queue.extend(_children(pid))
    return pids


def rss_mb(pids: list[int]) -> float:
    """Sum of ``VmRSS`` over ``pids``, in MB (processes that are gone count 0)."""
    total_kb = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
        except OSError:
            continue
    return total_kb / 1024


class RssSampler:
    """Samples the servers' RSS every ``interval`` seconds in a thread; keeps the peak."""

    def __init__(self, pids: list[int], interval: float = 0.5) -> None:
        self._pids = pids
        self._interval = interval
        self._stop = threading.Event()
        self.peak = rss_mb(pids)
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.peak = max(self.peak, rss_mb(self._pids))

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mb(self._pids))


#: The servers' admin token, given through the environment (never argv), which the hammer
#: also reads to register its client.
ADMIN_TOKEN = secrets.token_hex(16)
SERVER_ENV = {**os.environ, "BANK_ADMIN_TOKEN": ADMIN_TOKEN}


def hammer(
    url: str, requests: int, concurrency: int, seed: int, progress: bool = False
) -> dict[str, Any]:
    """Run ``python -m services.bank hammer`` in its own process; return its JSON report.

    With ``progress``, the hammer's own progress bar reaches the terminal (its stderr is ours).
    """
    with tempfile.TemporaryDirectory() as tmp:
        report_path = Path(tmp) / "report.json"
        command = [
            sys.executable,
            "-m",
            "services.bank",
            "hammer",
            "--url",
            url,
            "--requests",
            str(requests),
            "--concurrency",
            str(concurrency),
            "--accounts",
            "64",
            "--mix",
            MIX,
            "--seed",
            str(seed),
            "--json",
            str(report_path),
        ]
        if not progress:
            command.append("--no-progress")
        result = subprocess.run(
            command,
            # The hammer registers a client of its own with the admin token.
            env=SERVER_ENV,
            stdout=subprocess.DEVNULL,
            stderr=None if progress else subprocess.PIPE,
            text=True,
            check=False,
        )
        if not report_path.exists():
            said = (result.stderr or "")[-2000:] or "its messages are above"
            raise RuntimeError(f"hammer failed ({result.returncode}): {said}")
        report: dict[str, Any] = json.loads(report_path.read_text())
        return report


def _audit(url: str) -> dict[str, Any]:
    request = urllib.request.Request(
        f"{url}/audit", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        audit: dict[str, Any] = json.load(response)
        return audit


def soak(
    server: ServerProcess, mode: str, requests: int, concurrency: int, progress: bool = False
) -> ModeResult:
    """Warm up, read the baseline, run the main load under the sampler, read the books."""
    pids = server_pids(server.process.pid)
    warmup = max(2_000, requests // 20)
    if progress:
        print(f"mode {mode}: warm-up, {warmup:,} requests", file=sys.stderr, flush=True)
    hammer(server.url, warmup, concurrency, seed=1, progress=progress)
    baseline = rss_mb(pids)
    if progress:
        print(f"mode {mode}: the soak, {requests:,} requests", file=sys.stderr, flush=True)
    with RssSampler(pids) as sampler:
        report = hammer(server.url, requests, concurrency, seed=2, progress=progress)
    final = rss_mb(pids)
    audit = _audit(server.url)
    result = ModeResult(
        mode=mode,
        requests=report["requests"],
        duration_s=report["duration_s"],
        rps=report["rps"],
        latency_ms=report["latency_ms"],
        status=report["status"],
        drift=report["drift"],
        audit_drift=audit["drift"],
        negative_accounts=len(audit["negative_accounts"]),
        rss_baseline_mb=round(baseline, 2),
        rss_peak_mb=round(sampler.peak, 2),
        rss_final_mb=round(final, 2),
    )
    if result.drift or result.audit_drift:
        result.problems.append(f"drift {result.drift} (audit {result.audit_drift})")
    if result.negative_accounts:
        result.problems.append(f"{result.negative_accounts} negative balances")
    errors = {code: n for code, n in result.status.items() if not code.isdigit() or code >= "500"}
    if errors:
        result.problems.append(f"errors {errors}")
    if result.growth_mb >= GROWTH_BUDGET_MB:
        result.problems.append(f"memory grew {result.growth_mb:.1f} MB")
    return result


def _with_schema(dsn: str, schema: str) -> str:
    parts = urlsplit(dsn)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "search_path"]
    query.append(("search_path", schema))
    return urlunsplit(parts._replace(query=urlencode(query)))


def _psql(dsn: str, sql: str) -> None:
    import asyncio

    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run())


def run_mode(mode: str, args: argparse.Namespace) -> ModeResult:
    """Start the service for ``mode``, soak it, stop it."""
    # Progress only on a terminal, unless --quiet: captured output keeps just the figures.
    progress = not args.quiet and sys.stderr.isatty()
    if mode == "account":
        with start_server(["--lock", "account"], env=SERVER_ENV) as server:
            return soak(server, mode, args.requests, args.concurrency, progress)
    schema = f"soak_{secrets.token_hex(6)}"
    _psql(args.dsn, f'CREATE SCHEMA "{schema}"')
    try:
        store = _with_schema(args.dsn, schema)
        with start_server(
            ["--workers", "2", "--lock", "db", "--store", store], env=SERVER_ENV
        ) as server:
            return soak(server, mode, args.requests, args.concurrency, progress)
    finally:
        _psql(args.dsn, f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def format_result(result: ModeResult) -> str:
    lat = result.latency_ms
    verdict = "OK" if not result.problems else "FAIL: " + "; ".join(result.problems)
    return "\n".join(
        [
            f"mode {result.mode}: {verdict}",
            f"  requests {result.requests:,} in {result.duration_s:.1f} s = {result.rps:,.0f} rps",
            f"  latency ms p50 {lat['p50']:.2f}  p90 {lat['p90']:.2f}  p99 {lat['p99']:.2f}  "
            f"max {lat['max']:.2f}",
            f"  statuses {dict(sorted(result.status.items()))}",
            f"  drift {result.drift} (audit {result.audit_drift}), negative balances "
            f"{result.negative_accounts}",
            f"  server RSS MB: baseline {result.rss_baseline_mb:.1f}, peak "
            f"{result.rss_peak_mb:.1f}, final {result.rss_final_mb:.1f}; growth "
            f"{result.growth_mb:+.1f} MB = {result.growth_mb / GROWTH_BUDGET_MB:.2f} of the "
            f"{GROWTH_BUDGET_MB:.0f} MB budget",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1_000_000, help="per mode (1,000,000)")
    parser.add_argument("--concurrency", type=int, default=256, help="clients (256)")
    parser.add_argument(
        "--modes",
        default=",".join(MODES),
        help="comma-separated, from: account (memory store), db (PostgreSQL, 2 workers)",
    )
    parser.add_argument(
        "--dsn",
        default=os.environ.get("BANK_TEST_POSTGRES_DSN") or DEFAULT_DSN,
        help=f"PostgreSQL for the db mode (default: $BANK_TEST_POSTGRES_DSN or {DEFAULT_DSN})",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument(
        "--quiet", action="store_true", help="no progress (it is shown only on a terminal)"
    )
    args = parser.parse_args(argv)
    modes = [mode.strip() for mode in args.modes.split(",") if mode.strip()]
    unknown = [mode for mode in modes if mode not in MODES]
    if unknown or not modes:
        parser.error(f"--modes takes {', '.join(MODES)}; got {args.modes!r}")
    if args.requests < 1 or args.concurrency < 1:
        parser.error("--requests and --concurrency must be positive")

    results = []
    for mode in modes:
        started = time.perf_counter()
        result = run_mode(mode, args)
        results.append(result)
        print(format_result(result))
        print(f"  (mode took {time.perf_counter() - started:.0f} s with its warm-up)", flush=True)
    by_mode = {result.mode: result for result in results}
    summary: dict[str, Any] = {"modes": [result.to_json() for result in results]}
    if "account" in by_mode and "db" in by_mode:
        ratio = by_mode["db"].rps / by_mode["account"].rps
        summary["rps_db_vs_account"] = round(ratio, 3)
        print(
            f"rps db (PostgreSQL, 2 workers) / account (memory, 1 process): {ratio:.2f} "
            f"({by_mode['db'].rps:,.0f} / {by_mode['account'].rps:,.0f})"
        )
    if args.json is not None:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 1 if any(result.problems for result in results) else 0


if __name__ == "__main__":
    sys.exit(main())
