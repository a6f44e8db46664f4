"""The connection rules of ``serve`` (header read timeout, connection cap, half-close, drain):
what they cost per request, and what they do against a slowloris.

Run: ``.venv/bin/python benchmarks/connections.py`` (about 3 minutes), or one part with
``--part cost`` / ``--part slowloris``; a progress display on stderr when it is a terminal, unless
``--quiet``.

**cost**: instructions per request of the server process (valgrind's callgrind, repeatable on
a loaded machine), one keep-alive client (outside valgrind) sending deposits (memory store, lock
mode ``account``), the server run two ways in the same run: ``guarded``, ``serve()`` with its
``GuardedSite`` (the connection wrapper and its middleware), and ``plain``, the same app on
aiohttp's ``TCPSite``, as ``serve()`` did before. Each is run at two request counts and the
difference is divided by the difference in requests, so start-up and shutdown cancel out.
Target: guarded / plain <= 1.03 (issue 14 allows 5% of ``account`` mode's throughput for all of
its changes together).

**slowloris**: a ``serve`` process with its defaults except ``--header-timeout 2`` (to keep the
run short), and, as the same-run baseline, one whose limits are set out of reach
(``--header-timeout 3600 --keepalive-timeout 3600 --max-connections 100000``: what ``serve``
did before). Against each: 500 connections that send a request line and then one header line
every 0.5 s for 8 s, while one keep-alive client and one client opening a fresh connection per
request send ``GET /health`` every 20 ms. Then 1,500 connections at once, over the default cap
of 1,000: how many get the 503 ``too_many_connections`` reply. Targets: every slow connection
closed by the server, within the timeout plus a second; no legitimate request failed; every
connection over the cap answered 503.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from asynclocks._progress import ProgressBar  # noqa: E402 - after the checkout is importable

DEPOSIT = (
    b"POST /accounts/bench/deposit HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    b"Content-Type: application/json\r\nContent-Length: 13\r\n\r\n"
    b'{"amount": 1}'
)
SERVE = [sys.executable, "-m", "services.bank", "serve", "--port", "0", "--lock", "account"]
HEALTH = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
OPEN = (
    b"POST /accounts HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    b'Content-Length: 30\r\n\r\n{"id": "bench", "balance": 10}'
)


async def _read_reply(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    match = re.search(rb"content-length: *(\d+)", head, re.IGNORECASE)
    body = await reader.readexactly(int(match[1])) if match else b""
    return int(head.split(b" ", 2)[1]), body


# --- cost -------------------------------------------------------------------------------------


async def _serve_in_process(kind: str) -> None:
    """The server under measurement: print its port, serve until SIGTERM."""
    import signal

    from aiohttp import web

    from services.bank.http import create_app
    from services.bank.run.config import BankConfig
    from services.bank.run.server import serve

    config = BankConfig(port=0, lock_mode="account")
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)

    def announce(line: str) -> None:
        print(line.rsplit(":", 1)[1], flush=True)

    if kind == "guarded":
        await serve(config, stop=stop, announce=announce)
        return
    # As serve() was before the connection rules: the same app on aiohttp's TCPSite.
    runner = web.AppRunner(create_app(config), handle_signals=False, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        announce(f"port:{runner.addresses[0][1]}")
        await stop.wait()
    finally:
        await runner.cleanup()


async def _send(port: int, count: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(OPEN)
    assert (await _read_reply(reader))[0] == 201
    for _ in range(count):
        writer.write(DEPOSIT)
        status, _ = await _read_reply(reader)
        assert status == 200, status
    writer.close()


def _instructions(kind: str, count: int) -> int:
    """Instructions the server process ran to start, serve ``count`` deposits and stop."""
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "callgrind.out"
        command = [
            "valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
            sys.executable, __file__, "--serve", kind,
        ]  # fmt: skip
        server = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT
        )
        assert server.stdout is not None
        port = int(server.stdout.readline())
        asyncio.run(_send(port, count))
        server.terminate()
        server.wait(timeout=600)
        for line in out.read_text().splitlines():
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    raise RuntimeError("callgrind wrote no totals")


def cost(small: int, large: int, progress: bool = True) -> bool:
    if shutil.which("valgrind") is None:
        print("cost: valgrind is not installed (apt-get install valgrind); skipped")
        return True
    per_request = {}
    with ProgressBar("cost: servers under callgrind", 4, enabled=progress) as bar:
        for kind in ("plain", "guarded"):
            low = _instructions(kind, small)
            bar.advance()
            high = _instructions(kind, large)
            bar.advance()
            per_request[kind] = (high - low) / (large - small)
            print(f"cost {kind:8} {per_request[kind]:12,.0f} instructions per request")
    ratio = per_request["guarded"] / per_request["plain"]
    verdict = "PASS" if ratio <= 1.03 else "MISS"
    extra = per_request["guarded"] - per_request["plain"]
    print(f"cost guarded/plain {ratio:.3f} ({extra:+,.0f} per request; target <= 1.03) {verdict}")
    return ratio <= 1.03


# --- slowloris --------------------------------------------------------------------------------


async def _attack(port: int, header_timeout: float) -> dict[str, float]:
    slow, steps, step_s = 500, 16, 0.5
    closed_at: list[float] = []
    legit = {"ok": 0, "failed": 0}
    started = time.monotonic()

    async def slowloris() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        opened = time.monotonic()
        writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        try:
            for step in range(steps):
                await asyncio.sleep(step_s)
                if reader.at_eof():
                    break
                writer.write(f"X-Drip-{step}: a\r\n".encode())
                await writer.drain()
            else:
                return  # held for the whole attack
            closed_at.append(time.monotonic() - opened)
        except ConnectionError:
            closed_at.append(time.monotonic() - opened)
        finally:
            writer.close()

    async def keepalive_client() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while time.monotonic() - started < steps * step_s:
            try:
                writer.write(HEALTH)
                status, _ = await asyncio.wait_for(_read_reply(reader), 5)
                legit["ok" if status == 200 else "failed"] += 1
            except (OSError, asyncio.IncompleteReadError, TimeoutError):
                legit["failed"] += 1
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            await asyncio.sleep(0.02)
        writer.close()

    async def fresh_client() -> None:
        while time.monotonic() - started < steps * step_s:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(HEALTH)
                status, _ = await asyncio.wait_for(_read_reply(reader), 5)
                legit["ok" if status == 200 else "failed"] += 1
                writer.close()
            except (OSError, asyncio.IncompleteReadError, TimeoutError):
                legit["failed"] += 1
            await asyncio.sleep(0.02)

    await asyncio.gather(*(slowloris() for _ in range(slow)), keepalive_client(), fresh_client())
    return {
        "slow": slow,
        "closed": len(closed_at),
        "closed_within": sum(1 for t in closed_at if t <= header_timeout + 1.0 + step_s),
        "latest_close_s": max(closed_at, default=0.0),
        "legit_ok": legit["ok"],
        "legit_failed": legit["failed"],
    }


async def _flood(port: int, count: int) -> dict[str, int]:
    replies = {"503": 0, "other": 0, "no_reply": 0}
    writers = []

    async def first_bytes(reader: asyncio.StreamReader) -> None:
        try:
            head = await asyncio.wait_for(reader.read(4096), 2.0)
        except TimeoutError:
            return  # within the cap: served, waiting for a request
        except ConnectionError:
            head = b""
        if head.startswith(b"HTTP/1.1 503") and b"too_many_connections" in head:
            replies["503"] += 1
        elif head:
            replies["other"] += 1
        else:
            replies["no_reply"] += 1

    try:
        for _ in range(count):
            writers.append(await asyncio.open_connection("127.0.0.1", port))
        await asyncio.gather(*(first_bytes(reader) for reader, _ in writers))
    finally:
        for _, writer in writers:
            writer.close()
    return replies


def _start(extra: Sequence[str]) -> tuple[subprocess.Popen[str], int]:
    process = subprocess.Popen(
        [*SERVE, *extra],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    return process, int(line.rsplit(":", 1)[1])


def slowloris(progress: bool = True) -> bool:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))
    header_timeout = 2.0
    runs = {
        "guarded": ["--header-timeout", str(header_timeout)],
        "baseline": ["--header-timeout", "3600", "--keepalive-timeout", "3600",
                     "--max-connections", "100000"],
    }  # fmt: skip
    results = {}
    with ProgressBar("slowloris: servers attacked", len(runs), enabled=progress) as bar:
        for name, extra in runs.items():
            process, port = _start(extra)
            try:
                attack = asyncio.run(_attack(port, header_timeout))
                flood = asyncio.run(_flood(port, 1_500))
            finally:
                process.terminate()
                process.wait(timeout=30)
            results[name] = (attack, flood)
            bar.advance()
        print(
            f"slowloris {name:8} closed {attack['closed']:.0f} of {attack['slow']:.0f} slow "
            f"connections ({attack['closed_within']:.0f} within the timeout + 1 s, latest "
            f"{attack['latest_close_s']:.1f} s); legitimate requests {attack['legit_ok']:.0f} "
            f"served, {attack['legit_failed']:.0f} failed; flood of 1,500: {flood['503']} "
            f"answered 503, {flood['no_reply']} closed without a reply"
        )
    attack, flood = results["guarded"]
    passed = (
        attack["closed_within"] == attack["slow"]
        and attack["legit_failed"] == 0
        and flood["503"] == 500
        and flood["no_reply"] == 0
    )
    base = results["baseline"][0]
    print(
        f"slowloris closed guarded/baseline {attack['closed']:.0f}/{base['closed']:.0f} "
        f"(target: all {attack['slow']:.0f}, no legitimate failure, 500 of the flood 503) "
        f"{'PASS' if passed else 'MISS'}"
    )
    return passed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=("all", "cost", "slowloris"), default="all")
    parser.add_argument("--quiet", action="store_true", help="no progress display on stderr")
    parser.add_argument("--serve", choices=("plain", "guarded"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        asyncio.run(_serve_in_process(args.serve))
        return 0
    ok = True
    if args.part in ("all", "cost"):
        ok &= cost(300, 900, progress=not args.quiet)
    if args.part in ("all", "slowloris"):
        ok &= slowloris(progress=not args.quiet)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
