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

import asyncio
import json
import os
import secrets
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from rich.console import Console
from rich.table import Table

from ..locking import LOCK_MODES, SERIAL_STORES
from ..run.config import ADMIN_TOKEN_ENV, UNSAFE_FLAG
from ..run.server import LoopKind, run
from .hammer import DEFAULT_MIX, HammerReport, HammerSettings, run_hammer

__all__ = [
    "STOP_SIGNALS",
    "ShowdownRow",
    "ShowdownSettings",
    "ShowdownStopped",
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
_STOP_TIMEOUT: Final = 10.0
_GROUP_POLL: Final = 0.01

#: The signals that stop a showdown in order: its servers are stopped and waited for first.
STOP_SIGNALS: Final = (signal.SIGHUP, signal.SIGINT, signal.SIGTERM)


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
    if mode == "global":
        what = "one lock for the process"
    elif store.partition(":")[0] in SERIAL_STORES:
        # strategies_for: on a one-connection store, account is ArrivalOrderAccountLock.
        what = "account locks handed over in arrival order"
    else:
        what = "a KeyedLock per account"
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


def _serve_command(args: Sequence[str]) -> list[str]:
    return [sys.executable, "-m", "services.bank", "serve", "--port", "0", *args]


def _serve_env(env: Mapping[str, str] | None) -> dict[str, str]:
    return {**(os.environ if env is None else env), "PYTHONUNBUFFERED": "1"}


_LISTENING: Final = "listening on "


def _not_started(command: Sequence[str], line: str, stderr: str) -> RuntimeError:
    reason = line.strip() or stderr.strip()[-2000:] or "no output"
    return RuntimeError(f"server did not start ({' '.join(command)}): {reason}")


@contextmanager
def start_server(
    args: Sequence[str], *, env: Mapping[str, str] | None = None
) -> Iterator[ServerProcess]:
    """Start ``python -m services.bank serve --port 0 ARGS`` and yield it once it listens.

    ``env`` replaces the environment of the server (default: this process's).

    Raises:
        RuntimeError: The server exited or did not announce itself within 30 s.
    """
    command = _serve_command(args)
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_serve_env(env),
    )
    server = ServerProcess(process, "")
    try:
        line = _read_line(process, _START_TIMEOUT)
        if not line.startswith(_LISTENING):
            server.stop()
            assert process.stderr is not None
            raise _not_started(command, line, process.stderr.read())
        server.url = line[len(_LISTENING) :].strip()
        yield server
    finally:
        server.stop()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


class ShowdownStopped(Exception):  # noqa: N818 - an outcome the caller reports, not an error
    """A signal of :data:`STOP_SIGNALS` stopped the showdown; every server it started has exited.

    Attributes:
        signal_name: The signal's name (``SIGTERM``).
    """

    def __init__(self, signum: int) -> None:
        self.signal_name = signal.Signals(signum).name
        super().__init__(f"showdown stopped by {self.signal_name}")


@dataclass
class _Child:
    """A server of the showdown: the leader of its own process group (its workers are in it)."""

    process: asyncio.subprocess.Process

    def signal_group(self, signum: int) -> None:
        """Send ``signum`` to the server and every process of its group."""
        try:
            os.killpg(self.process.pid, signum)
        except ProcessLookupError:
            pass  # all of them have exited

    async def stop(self) -> None:
        """Stop the server and wait for it, even if the showdown is cancelled meanwhile."""
        try:
            await self._stop()
        except asyncio.CancelledError:
            # The stop signal landed while this server was stopping. The showdown is cancelled
            # once only, so this second wait runs to the end; then the cancellation goes on.
            await self._stop()
            raise

    async def _stop(self) -> None:
        if self.process.returncode is None:
            # SIGTERM to the server alone: a multi-worker server's supervisor stops its workers.
            self.process.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(_STOP_TIMEOUT):
                    await self.process.wait()
            except TimeoutError:
                self.signal_group(signal.SIGKILL)
                await self.process.wait()
        # Anything of the group that outlived its leader (a worker of a killed supervisor).
        # The group id stays reserved while a member lives, so this reaches no stranger.
        self.signal_group(signal.SIGKILL)
        # Those are not this process's children (it cannot wait for them): poll until the
        # group is empty, that is until they have died and init has reaped them.
        # Polling, as no event tells of a stranger's exit; bounded by _STOP_TIMEOUT.
        for _ in range(int(_STOP_TIMEOUT / _GROUP_POLL)):
            if not self._group_exists():
                break
            await asyncio.sleep(_GROUP_POLL)

    def _group_exists(self) -> bool:
        try:
            os.killpg(self.process.pid, 0)
        except ProcessLookupError:
            return False
        return True


class _Stopper:
    """The showdown's stop signals, turned into one cancellation of its main task.

    A signal handler that raised would raise inside whatever runs at that moment, and in an
    event loop that is often a callback (uvloop runs Python signal handlers from one), whose
    exceptions the loop logs and drops: the showdown then never stopped. Here the loop calls
    :meth:`on_signal` as an ordinary callback, which cancels the main task: the cancellation
    arrives at the task's next ``await``, and every ``finally`` on the way out stops its servers.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self.children: list[_Child] = []
        self._task: asyncio.Task[Any] | None = None

    def on_signal(self, signum: int) -> None:
        """The first signal cancels the showdown; a second one kills its servers' groups (they
        are still waited for by the stop under way)."""
        if self.signum is None:
            self.signum = signum
            if self._task is not None:
                self._task.cancel()
            return
        for child in self.children:
            child.signal_group(signal.SIGKILL)

    @contextmanager
    def installed(self) -> Iterator[None]:
        """Handle :data:`STOP_SIGNALS` on the running loop while the block runs (main thread
        only: elsewhere signals are not delivered to this thread's loop)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
        try:
            for signum in STOP_SIGNALS:
                loop.add_signal_handler(signum, self.on_signal, signum)
            yield
        finally:
            for signum, handler in previous.items():
                loop.remove_signal_handler(signum)
                signal.signal(signum, handler)

    @asynccontextmanager
    async def server(self, args: Sequence[str], *, env: Mapping[str, str]) -> AsyncIterator[str]:
        """Start a server like :func:`start_server` and yield its URL once it listens; stop it and
        wait for it on the way out, however the block ends.

        The server runs in a session of its own, so a Ctrl-C or a hang-up of the terminal
        reaches the showdown only, which stops its servers in order (and, with the process
        group, every worker of a multi-worker server).

        Raises:
            RuntimeError: The server exited or did not announce itself within 30 s.
        """
        command = _serve_command(args)
        process = await asyncio.create_subprocess_exec(
            *command,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=_serve_env(env),
            start_new_session=True,
        )
        child = _Child(process)
        self.children.append(child)
        try:
            assert process.stdout is not None
            assert process.stderr is not None
            try:
                async with asyncio.timeout(_START_TIMEOUT):
                    line = (await process.stdout.readline()).decode(errors="replace")
            except TimeoutError:
                line = ""
            if not line.startswith(_LISTENING):
                await child.stop()
                raise _not_started(command, line, (await process.stderr.read()).decode())
            yield line[len(_LISTENING) :].strip()
        finally:
            await child.stop()
            self.children.remove(child)


def run_showdown(
    settings: ShowdownSettings, *, console: Console | None = None
) -> list[ShowdownRow]:
    """Run every mode of ``settings.modes`` under the same load; return one row per mode.

    SIGHUP, SIGINT and SIGTERM stop it in order while it runs (in the main thread): the load is
    cancelled, each server is stopped and waited for, then :class:`ShowdownStopped` is raised.
    A second signal meanwhile kills the servers instead of waiting for them to drain.

    Raises:
        RuntimeError: A server could not be started.
        HammerError: A server stopped answering.
        ShowdownStopped: A stop signal arrived; no server of the showdown is left running.
    """
    stopper = _Stopper()
    try:
        rows = run(
            _showdown(settings, console or Console(stderr=True), stopper), loop=settings.loop
        )
    except BaseException:
        if stopper.signum is None:
            raise
        # Whatever surfaced (the cancellation, a request it cut short) is the signal's doing.
        raise ShowdownStopped(stopper.signum) from None
    if stopper.signum is not None:
        # The signal came after the last await: the servers are stopped, the run is not whole.
        raise ShowdownStopped(stopper.signum)
    return rows


async def _showdown(
    settings: ShowdownSettings, console: Console, stopper: _Stopper
) -> list[ShowdownRow]:
    rows = []
    with stopper.installed():
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
            async with stopper.server(server_args, env=env) as url:
                hammer = HammerSettings(
                    admin_token=admin_token,
                    url=url,
                    concurrency=settings.concurrency,
                    requests=settings.requests,
                    accounts=settings.accounts,
                    mix=dict(DEFAULT_MIX),
                    seed=settings.seed,
                    progress=settings.progress,
                )
                if settings.progress and console.is_terminal:
                    console.print(f"[bold]{mode}[/bold]: server {url}")
                report = await run_hammer(hammer, console=console)
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
