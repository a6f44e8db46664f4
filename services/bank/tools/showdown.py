"""Every lock mode under the same load, side by side.

For each mode the showdown starts a fresh server (``python -m services.bank serve`` on a free
port, memory store), hammers it with the same seeded load, stops it, and prints one row: throughput,
p99 latency, drift and negative balances, and a verdict.

Making the race show reliably: a few accounts (10) shared by 64 concurrent clients means nearly
every request has another one on the same account in flight; and a 1 ms ``--io-delay`` stands for
the database round trip between the read and the write, so that overlap is wide. Under ``none``
thousands of updates are then lost per run, each moving the books by a random amount, so a drift of
exactly 0 would take a miracle.
"""

from __future__ import annotations

import json
import os
import secrets
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from rich.console import Console
from rich.table import Table

from ..locking import LOCK_MODES
from ..run.config import ADMIN_TOKEN_ENV, UNSAFE_FLAG
from ..run.server import LoopKind, run
from .hammer import DEFAULT_MIX, HammerReport, HammerSettings, run_hammer

__all__ = [
    "ShowdownRow",
    "ShowdownSettings",
    "ServerProcess",
    "mode_note",
    "plot",
    "render_table",
    "run_showdown",
    "should_hold",
    "start_server",
    "store_label",
]

_START_TIMEOUT: Final = 30.0


@dataclass(frozen=True, slots=True)
class ShowdownSettings:
    """The load every mode gets.

    Attributes:
        requests: Requests per mode.
        concurrency: Concurrent clients.
        accounts: Accounts shared by all clients (few, for contention).
        io_delay: The memory store's await between read and write, in seconds.
        seed: Seed of the operation sequence (the same for every mode).
        modes: Lock modes to run, in order (add ``db`` for a database store).
        progress: Show hammer's live progress on stderr.
        store: The store URL every server gets (``memory``, ``sqlite:///PATH``,
            ``postgresql://...``); all modes share one database, each run on fresh accounts.
        workers: Worker processes per server (``serve --workers``).
    """

    requests: int = 3000
    concurrency: int = 64
    accounts: int = 10
    io_delay: float = 0.001
    seed: int = 1
    modes: tuple[str, ...] = LOCK_MODES
    progress: bool = True
    loop: LoopKind = "auto"
    store: str = "memory"
    workers: int = 1


def store_label(url: str) -> str:
    """The store of a URL without credentials: ``postgresql 127.0.0.1:5432/test``."""
    from urllib.parse import urlsplit

    if url == "memory":
        return "memory"
    if url.startswith("sqlite:"):
        return "sqlite " + url.partition(":///")[2]
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    port = f":{parts.port}" if parts.port else ""
    return f"postgresql {host}{port}{parts.path}"


def should_hold(mode: str, workers: int) -> bool:
    """Whether ``mode`` must keep the books with ``workers`` processes: the in-process locks
    only with one process, ``db`` always, ``none`` never."""
    return mode == "db" or (mode in ("global", "account") and workers == 1)


def mode_note(mode: str, store: str, workers: int) -> str:
    """Why a mode holds or not, for the table's note column."""
    if mode == "none":
        return "no lock: overlapping requests overwrite each other"
    if mode == "db":
        if store.startswith("sqlite"):
            return "BEGIN IMMEDIATE: SQLite's file lock spans processes"
        return "row locks in id order / conditional UPDATE, in PostgreSQL: span processes"
    what = "one lock for the process" if mode == "global" else "a KeyedLock per account"
    if workers == 1:
        return f"{what}; one process sees every request, so it is enough"
    return f"{what} in each of {workers} workers: the others' requests never see it"


@dataclass(frozen=True, slots=True)
class ShowdownRow:
    """One mode's result."""

    mode: str
    report: HammerReport

    @property
    def verdict(self) -> str:
        """``correct``, or what went wrong."""
        if self.report.correct:
            return "correct"
        if self.report.drift:
            return "LOSES MONEY"
        return "NEGATIVE BALANCES"

    def to_json(self) -> dict[str, Any]:
        """The row for ``--json``: the table's columns and the full hammer report."""
        return {
            "mode": self.mode,
            "rps": round(self.report.rps, 1),
            "p99_ms": self.report.latency_ms["p99"],
            "drift": self.report.drift,
            "negative_balances": len(self.report.negative_accounts),
            "verdict": self.verdict,
            "hammer": self.report.to_json(),
        }


@dataclass
class ServerProcess:
    """A bank server started as a child process."""

    process: subprocess.Popen[str]
    url: str

    def stop(self) -> int:
        """SIGTERM, then wait (SIGKILL after 10 s); return the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def _read_line(process: subprocess.Popen[str], timeout: float) -> str:
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            return ""
    return process.stdout.readline()


@contextmanager
def start_server(
    args: Sequence[str], *, env: Mapping[str, str] | None = None
) -> Iterator[ServerProcess]:
    """Start ``python -m services.bank serve --port 0 ARGS`` and yield it once it listens.

    ``env`` replaces the environment of the server (default: this process's).

    Raises:
        RuntimeError: The server exited or did not announce itself within 30 s.
    """
    command = [sys.executable, "-m", "services.bank", "serve", "--port", "0", *args]
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**(os.environ if env is None else env), "PYTHONUNBUFFERED": "1"},
    )
    server = ServerProcess(process, "")
    try:
        line = _read_line(process, _START_TIMEOUT)
        prefix = "listening on "
        if not line.startswith(prefix):
            server.stop()
            assert process.stderr is not None
            error = process.stderr.read().strip()[-2000:]
            reason = line.strip() or error or "no output"
            raise RuntimeError(f"server did not start ({' '.join(command)}): {reason}")
        server.url = line[len(prefix) :].strip()
        yield server
    finally:
        server.stop()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def run_showdown(
    settings: ShowdownSettings, *, console: Console | None = None
) -> list[ShowdownRow]:
    """Run every mode of ``settings.modes`` under the same load; return one row per mode.

    Raises:
        RuntimeError: A server could not be started.
        HammerError: A server stopped answering.
    """
    console = console or Console(stderr=True)
    rows = []
    for mode in settings.modes:
        server_args = [
            "--lock",
            mode,
            "--store",
            settings.store,
            "--io-delay",
            str(settings.io_delay),
        ]
        server_args += ["--workers", str(settings.workers)]
        if settings.workers > 1 and mode != "db":
            # The lesson is precisely that these modes lose money across workers.
            server_args.append(UNSAFE_FLAG)
        # A fresh admin token per server, in its environment (never its argv): the hammer
        # registers its own client with it.
        admin_token = secrets.token_urlsafe(24)
        env = {**os.environ, ADMIN_TOKEN_ENV: admin_token}
        with start_server(server_args, env=env) as server:
            hammer = HammerSettings(
                admin_token=admin_token,
                url=server.url,
                concurrency=settings.concurrency,
                requests=settings.requests,
                accounts=settings.accounts,
                mix=dict(DEFAULT_MIX),
                seed=settings.seed,
                progress=settings.progress,
            )
            if settings.progress and console.is_terminal:
                console.print(f"[bold]{mode}[/bold]: server {server.url}")
            report = run(run_hammer(hammer, console=console), loop=settings.loop)
        rows.append(ShowdownRow(mode, report))
    return rows


def render_table(rows: Sequence[ShowdownRow], settings: ShowdownSettings) -> Table:
    """The showdown table."""
    table = Table(
        title=(
            f"{settings.requests:,} requests per mode, {settings.concurrency} clients, "
            f"{settings.accounts} accounts, io-delay {settings.io_delay * 1000:g} ms, "
            f"store {store_label(settings.store)}, {settings.workers} "
            f"worker{'s' if settings.workers > 1 else ''}"
        ),
    )
    table.add_column("mode")
    table.add_column("rps", justify="right")
    table.add_column("p99 ms", justify="right")
    table.add_column("drift (cents)", justify="right")
    table.add_column("negative balances", justify="right")
    table.add_column("verdict")
    table.add_column("why")
    for row in rows:
        report = row.report
        style = "green" if report.correct else "bold red"
        table.add_row(
            row.mode,
            f"{report.rps:,.0f}",
            f"{report.latency_ms['p99']:.1f}",
            f"{report.drift:+,}" if report.drift else "0",
            str(len(report.negative_accounts)),
            f"[{style}]{row.verdict}[/{style}]",
            mode_note(row.mode, settings.store, settings.workers),
        )
    return table


def explain(rows: Sequence[ShowdownRow], settings: ShowdownSettings | None = None) -> str:
    """What the table shows, in a few sentences."""
    lines = [
        "Each request reads the balance, awaits (io-delay, a stand-in for the database round "
        "trip), then writes what it computed.",
        "With 64 clients on 10 accounts, two requests on one account are almost always in that "
        "window together; without a lock the second write erases the first.",
        "drift = balances held - (opening + acknowledged deposits - acknowledged withdrawals): "
        "< 0, deposits taken but not credited; > 0, withdrawals paid out but not debited.",
        "global serialises every request (correct, slow); account locks only the accounts a "
        "request touches (correct, concurrent).",
    ]
    workers = settings.workers if settings is not None else 1
    if workers > 1:
        # The line above holds for one process; say what changes with several.
        lines[-1] = (
            "global serialises every request of its process, account the requests of its "
            "process on the same accounts: neither sees the other worker's requests."
        )
        lines.append(
            f"With {workers} worker processes sharing the port, an asyncio lock only orders the "
            "requests of its own process: global and account still lose money. Only db, the "
            "database's own locking, holds across processes."
        )
    elif settings is not None and settings.store != "memory":
        lines.append(
            "One worker process: every request passes through its locks, so account is enough "
            "even on a database; db is what keeps holding with --workers > 1."
        )
    by_mode = {row.mode: row for row in rows}
    unlocked = by_mode.get("none")
    if unlocked is not None and unlocked.report.correct:
        lines.append(
            "Note: this run of `none` happened to lose nothing; raise --concurrency or "
            "--io-delay, or lower --accounts, to widen the race."
        )
    return "\n".join(lines)


def plot(rows: Sequence[ShowdownRow], path: Path) -> None:
    """Save a PNG: throughput and money lost (|drift|) per mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = [row.mode for row in rows]
    colors = ["tab:red" if not row.report.correct else "tab:green" for row in rows]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.bar(modes, [row.report.rps for row in rows], color=colors)
    left.set_title("throughput (requests/s)")
    right.bar(modes, [abs(row.report.drift) / 100 for row in rows], color=colors)
    right.set_title("money lost or invented, |drift| (dollars)")
    for axis in (left, right):
        axis.set_xlabel("lock mode")
    figure.suptitle("asynclocks bank: the same load under each lock mode")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def write_json(rows: Sequence[ShowdownRow], settings: ShowdownSettings, path: Path) -> None:
    """Write the settings and every row to ``path``."""
    document = {
        "settings": {
            "requests": settings.requests,
            "concurrency": settings.concurrency,
            "accounts": settings.accounts,
            "io_delay": settings.io_delay,
            "seed": settings.seed,
            "store": store_label(settings.store),
            "workers": settings.workers,
        },
        "modes": [row.to_json() for row in rows],
    }
    path.write_text(json.dumps(document, indent=2) + "\n")


def elapsed_since(start: float) -> float:
    """Seconds since ``start`` (a ``time.perf_counter()`` reading)."""
    return time.perf_counter() - start
