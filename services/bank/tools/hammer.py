"""The load generator: many concurrent clients on a few accounts, then the books.

``hammer`` opens its own fresh accounts (a random id prefix per run, so runs never mix), drives a
seeded mix of deposits, withdrawals and transfers at a fixed concurrency, and keeps its own books
from the answers it got: every 200 is an operation the server acknowledged. At the end it reads the
balances back and compares: ``drift = actual_total - expected_total`` is 0 on a correct server. The
op sequence depends only on the seed; which client sends which op, and so the interleaving, does
not.
"""

from __future__ import annotations

import asyncio
import json
import math
import secrets
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from random import Random
from typing import Any, Final

import aiohttp
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from yarl import URL

from ._raw_client import RawConnection, RawHTTPError, connect, encode_post

__all__ = [
    "CLIENTS",
    "DEFAULT_MIX",
    "OPERATIONS",
    "HammerError",
    "HammerReport",
    "HammerSettings",
    "format_report",
    "parse_mix",
    "percentile",
    "run_hammer",
]

OPERATIONS: Final = ("deposit", "withdraw", "transfer")
CLIENTS: Final = ("raw", "aiohttp")
DEFAULT_MIX: Final[Mapping[str, int]] = {"deposit": 1, "withdraw": 1, "transfer": 2}
_JSON_HEADERS: Final = {"Content-Type": "application/json"}


class HammerError(Exception):
    """The run could not be carried out (server unreachable, accounts not created, ...)."""


def parse_mix(text: str) -> dict[str, int]:
    """Parse ``deposit:1,withdraw:1,transfer:2`` into weights.

    Raises:
        ValueError: Unknown operation, repeated operation, weight not a non-negative integer,
            or all weights 0.
    """
    mix: dict[str, int] = {}
    for part in text.split(","):
        name, sep, weight_text = part.strip().partition(":")
        if not sep:
            raise ValueError(f"mix entry {part.strip()!r} is not NAME:WEIGHT")
        if name not in OPERATIONS:
            raise ValueError(f"unknown operation {name!r} in mix; expected {', '.join(OPERATIONS)}")
        if name in mix:
            raise ValueError(f"operation {name!r} appears twice in mix")
        if not weight_text.strip().isdigit():
            raise ValueError(
                f"weight of {name!r} must be a non-negative integer, got {weight_text!r}"
            )
        mix[name] = int(weight_text)
    if not any(mix.values()):
        raise ValueError("mix needs at least one operation with a weight above 0")
    return mix


@dataclass(frozen=True, slots=True)
class HammerSettings:
    """One hammer run.

    Attributes:
        url: Base URL of the service, e.g. ``http://127.0.0.1:8080``.
        concurrency: Clients sending at once.
        requests: Operations to send; ``None`` with ``duration`` set.
        duration: Seconds to keep sending; ``None`` with ``requests`` set.
        accounts: Fresh accounts to open and hit.
        opening_balance: Cents each account opens with.
        mix: Operation weights.
        seed: Seed of the operation sequence.
        progress: Show the live progress bar on stderr.
        stall_timeout: The run fails when the server answers nothing at all for this many
            seconds (a watchdog instead of a timer on every request, which would cost more
            than the rest of the client's bookkeeping).
        api_key: The client API key every request carries (``Authorization: Bearer``).
        admin_token: Without ``api_key``: the admin token with which the run registers a fresh
            client of its own first (``POST /clients``). With neither, requests are anonymous,
            which only a ``require_keys=False`` bank accepts.
        client: HTTP client of the load phase: ``"raw"`` (a lean HTTP/1.1 keep-alive client,
            one connection per concurrent client, so the load generator's own CPU leaves the
            server its share of the cores) or ``"aiohttp"`` (aiohttp's ClientSession). Opening
            the accounts and reading them back always go through aiohttp.
    """

    url: str
    concurrency: int = 64
    requests: int | None = 10_000
    duration: float | None = None
    accounts: int = 10
    opening_balance: int = 1_000_000
    mix: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_MIX))
    seed: int = 0
    progress: bool = True
    stall_timeout: float = 30.0
    client: str = "raw"
    api_key: str | None = field(default=None, repr=False)
    admin_token: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.client not in CLIENTS:
            raise ValueError(f"client must be one of {', '.join(CLIENTS)}, got {self.client!r}")
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {self.concurrency}")
        if (self.requests is None) == (self.duration is None):
            raise ValueError("give exactly one of requests and duration")
        if self.requests is not None and self.requests < 1:
            raise ValueError(f"requests must be at least 1, got {self.requests}")
        if self.duration is not None and not (0 < self.duration < math.inf):
            raise ValueError(f"duration must be a positive number of seconds, got {self.duration}")
        if self.accounts < 2 and self.mix.get("transfer", 0):
            raise ValueError("transfers need at least 2 accounts")
        if not 0 < self.stall_timeout < math.inf:
            raise ValueError(f"stall_timeout must be positive seconds, got {self.stall_timeout}")
        if self.accounts < 1:
            raise ValueError(f"accounts must be at least 1, got {self.accounts}")
        if not 0 <= self.opening_balance <= 10**12:
            raise ValueError(
                f"opening balance must be between 0 and 10**12 cents, got {self.opening_balance}"
            )

    @property
    def max_amount(self) -> int:
        """Largest amount sent: 1% of the opening balance, so most withdrawals are covered."""
        return max(10, self.opening_balance // 100)


@dataclass(slots=True)
class HammerReport:
    """What a run measured and found. :meth:`to_json` gives the ``--json`` document."""

    requests: int
    duration_s: float
    latency_ms: dict[str, float]
    status: dict[str, int]
    expected_total: int
    actual_total: int
    negative_accounts: list[dict[str, Any]]
    seed: int
    concurrency: int
    accounts: int
    prefix: str

    @property
    def rps(self) -> float:
        """Requests per second over the load phase."""
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def drift(self) -> int:
        """``actual_total - expected_total``; 0 when the server kept the books."""
        return self.actual_total - self.expected_total

    @property
    def correct(self) -> bool:
        """No drift and no negative balance."""
        return self.drift == 0 and not self.negative_accounts

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` document, with exactly the documented keys."""
        return {
            "requests": self.requests,
            "duration_s": round(self.duration_s, 6),
            "rps": round(self.rps, 1),
            "latency_ms": self.latency_ms,
            "status": self.status,
            "expected_total": self.expected_total,
            "actual_total": self.actual_total,
            "drift": self.drift,
            "negative_accounts": self.negative_accounts,
        }


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending list (0 for an empty one)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


@dataclass(frozen=True, slots=True)
class _Op:
    kind: str
    path: str
    body: bytes
    # The whole request as the raw client sends it
    wire: bytes
    # (account, signed cents) applied to the client's books when the server answers 200
    effects: tuple[tuple[str, int], ...]


def _operations(
    settings: HammerSettings, ids: list[str], host: str, token: str | None
) -> Iterator[_Op]:
    rng = Random(settings.seed)
    kinds = [kind for kind in OPERATIONS if settings.mix.get(kind, 0)]
    weights = [settings.mix[kind] for kind in kinds]
    count = 0
    while settings.requests is None or count < settings.requests:
        count += 1
        kind = rng.choices(kinds, weights)[0]
        amount = rng.randint(1, settings.max_amount)
        if kind == "transfer":
            source, target = rng.sample(ids, 2)
            body = _dumps({"from": source, "to": target, "amount": amount})
            path = "/transfers"
            effects: tuple[tuple[str, int], ...] = ((source, -amount), (target, amount))
        else:
            account = rng.choice(ids)
            sign = 1 if kind == "deposit" else -1
            path = f"/accounts/{account}/{kind}"
            body = _dumps({"amount": amount})
            effects = ((account, sign * amount),)
        yield _Op(kind, path, body, encode_post(host, path, body, token=token), effects)


def _dumps(body: object) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


async def _expect(response: aiohttp.ClientResponse, status: int, what: str) -> Any:
    body = await response.read()
    if response.status != status:
        raise HammerError(f"{what}: expected HTTP {status}, got {response.status}: {body[:200]!r}")
    return json.loads(body)


async def run_hammer(settings: HammerSettings, *, console: Console | None = None) -> HammerReport:
    """Run the load described by ``settings`` and return the report.

    Raises:
        HammerError: The server cannot be reached or refuses to open the accounts.
    """
    console = console or Console(stderr=True)
    prefix = f"h{secrets.token_hex(4)}-"
    ids = [f"{prefix}{index}" for index in range(settings.accounts)]
    connector = aiohttp.TCPConnector(limit=settings.concurrency, limit_per_host=0)
    # No per-request timer; a stalled server is caught by the watchdog (stall_timeout).
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=settings.stall_timeout)
    try:
        async with aiohttp.ClientSession(
            settings.url,
            connector=connector,
            timeout=timeout,
            skip_auto_headers=("User-Agent", "Accept-Encoding"),
            auto_decompress=False,
        ) as session:
            return await _hammer(session, settings, console, prefix, ids)
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise HammerError(f"cannot talk to {settings.url}: {exc or type(exc).__name__}") from exc


async def _hammer(
    session: aiohttp.ClientSession,
    settings: HammerSettings,
    console: Console,
    prefix: str,
    ids: list[str],
) -> HammerReport:
    token = settings.api_key
    headers = dict(_JSON_HEADERS)

    async def open_account(account_id: str) -> None:
        body = _dumps({"id": account_id, "balance": settings.opening_balance})
        async with session.post("/accounts", data=body, headers=headers) as response:
            await _expect(response, 201, f"opening account {account_id}")

    try:
        async with asyncio.timeout(settings.stall_timeout):
            async with session.get("/health") as response:
                await _expect(response, 200, "GET /health")
            if token is None and settings.admin_token is not None:
                # A client of its own, named after the run, owns the run's accounts.
                admin = {**_JSON_HEADERS, "Authorization": f"Bearer {settings.admin_token}"}
                body = _dumps({"id": prefix.rstrip("-")})
                async with session.post("/clients", data=body, headers=admin) as response:
                    token = (await _expect(response, 201, "registering a client"))["key"]
            if token is not None:
                headers["Authorization"] = f"Bearer {token}"
            await asyncio.gather(*(open_account(account_id) for account_id in ids))
    except TimeoutError:
        raise HammerError(
            f"no answer within {settings.stall_timeout:g} s while opening accounts"
        ) from None

    books = dict.fromkeys(ids, settings.opening_balance)
    statuses: Counter[str] = Counter()
    latencies: list[float] = []
    url = URL(settings.url)
    host, port = url.raw_host or "127.0.0.1", url.port or 80
    name = f"[{host}]" if ":" in host else host
    host_header = name if url.is_default_port() else f"{name}:{port}"
    operations = _operations(settings, ids, host_header, token)
    if settings.requests is not None:
        # Built before the clock starts, so the client measures the server, not json.dumps.
        operations = iter(list(operations))
    deadline = math.inf
    clock = time.perf_counter

    def record(op: _Op, started: float, code: int | None) -> None:
        """Count one answer (``None``: no answer, outcome unknown); book only what was a 200."""
        latencies.append(clock() - started)
        if code is None:
            statuses["error"] += 1
            return
        statuses[str(code)] += 1
        if code == 200:
            for account, cents in op.effects:
                books[account] += cents

    async def client() -> None:
        post = session.post
        for op in operations:
            if clock() >= deadline:
                return
            started = clock()
            try:
                async with post(op.path, data=op.body, headers=headers) as response:
                    await response.read()
                    code = response.status
            except (aiohttp.ClientError, TimeoutError):
                # The outcome is unknown; counted apart so a drift can be told from it.
                record(op, started, None)
                continue
            record(op, started, code)

    tls = url.scheme == "https"

    async def raw_client() -> None:
        connection: RawConnection | None = None
        try:
            for op in operations:
                if clock() >= deadline:
                    return
                started = clock()
                try:
                    if connection is None or connection.closed:
                        connection = await connect(host, port, ssl=tls)
                    code = await connection.request(op.wire)
                except (OSError, RawHTTPError):
                    # Refused, reset, closed before the answer, or a garbled answer: the
                    # outcome is unknown, so it is never booked as acknowledged.
                    record(op, started, None)
                    if connection is not None:
                        connection.close()
                        connection = None
                    continue
                record(op, started, code)
        finally:
            if connection is not None:
                connection.close()

    total = settings.requests if settings.requests is not None else settings.duration
    progress = Progress(
        TextColumn("[bold]hammer[/bold] {task.description}"),
        BarColumn(),
        TextColumn("{task.fields[done]:>9,} req  {task.fields[rate]:>8,.0f} rps"),
        TimeElapsedColumn(),
        console=console,
        # Off a terminal (a pipe, a file, CI) rich would still print the bar's last state:
        # the captured output keeps only the report.
        disable=not (settings.progress and console.is_terminal),
        transient=False,
    )
    start = clock()
    if settings.duration is not None:
        deadline = start + settings.duration
    with progress:
        bar = progress.add_task(settings.url, total=total, done=0, rate=0.0)
        run_client = raw_client if settings.client == "raw" else client
        clients = [asyncio.ensure_future(run_client()) for _ in range(settings.concurrency)]
        all_clients = asyncio.gather(*clients)
        last_done, last_progress = 0, start
        try:
            while not all_clients.done():
                await asyncio.wait([all_clients], timeout=0.2)
                now = clock()
                elapsed = now - start
                done = len(latencies)
                if done != last_done:
                    last_done, last_progress = done, now
                elif now - last_progress > settings.stall_timeout:
                    raise HammerError(
                        f"no answer from the server for {settings.stall_timeout:g} s "
                        f"after {done:,} requests"
                    )
                completed = done if settings.duration is None else min(elapsed, settings.duration)
                rate = done / elapsed if elapsed > 0 else 0.0
                progress.update(bar, completed=completed, done=done, rate=rate)
            await all_clients
        finally:
            for task in clients:
                task.cancel()
            # Cancelled (a stopped showdown) or stalled: let the clients finish cancelling, and
            # take the gather's outcome, so that nothing is left to log "never retrieved".
            pending: list[asyncio.Future[Any]] = [*clients, all_clients]
            await asyncio.wait(pending)
            if not all_clients.cancelled():
                all_clients.exception()
    duration = clock() - start

    async def read_back(account_id: str) -> int:
        async with session.get(f"/accounts/{account_id}", headers=headers) as response:
            balance: int = (await _expect(response, 200, f"reading {account_id}"))["balance"]
            return balance

    try:
        async with asyncio.timeout(settings.stall_timeout):
            balances = await asyncio.gather(*(read_back(account_id) for account_id in ids))
    except TimeoutError:
        raise HammerError(
            f"no answer within {settings.stall_timeout:g} s reading balances"
        ) from None
    latencies.sort()
    return HammerReport(
        requests=len(latencies),
        duration_s=duration,
        latency_ms={
            "p50": round(percentile(latencies, 0.50) * 1000, 3),
            "p90": round(percentile(latencies, 0.90) * 1000, 3),
            "p99": round(percentile(latencies, 0.99) * 1000, 3),
            "max": round((latencies[-1] if latencies else 0.0) * 1000, 3),
        },
        status=dict(sorted(statuses.items())),
        expected_total=sum(books.values()),
        actual_total=sum(balances),
        negative_accounts=[
            {"id": account_id, "balance": balance}
            for account_id, balance in zip(ids, balances, strict=True)
            if balance < 0
        ],
        seed=settings.seed,
        concurrency=settings.concurrency,
        accounts=settings.accounts,
        prefix=prefix,
    )


def format_report(report: HammerReport) -> str:
    """The human-readable report printed to stdout."""
    latency = report.latency_ms
    statuses = "  ".join(f"{code}: {count:,}" for code, count in report.status.items())
    negatives = (
        ", ".join(f"{entry['id']} ({entry['balance']:,})" for entry in report.negative_accounts)
        or "none"
    )
    if report.correct:
        verdict = "OK: every acknowledged cent is accounted for"
    elif report.drift < 0:
        verdict = f"WRONG: {-report.drift:,} cents acknowledged to clients are missing"
    elif report.drift > 0:
        verdict = f"WRONG: the server holds {report.drift:,} cents more than it acknowledged"
    else:
        verdict = "WRONG: negative balances"
    lines = [
        f"requests      {report.requests:,} in {report.duration_s:.2f} s "
        f"({report.concurrency} clients, {report.accounts} accounts {report.prefix}*, "
        f"seed {report.seed})",
        f"throughput    {report.rps:,.0f} requests/s",
        f"latency ms    p50 {latency['p50']:.2f}  p90 {latency['p90']:.2f}  "
        f"p99 {latency['p99']:.2f}  max {latency['max']:.2f}",
        f"responses     {statuses}",
        f"money         client expects {report.expected_total:,}, "
        f"server holds {report.actual_total:,}",
        f"drift         {report.drift:+,} cents",
        f"negative      {negatives}",
        f"verdict       {verdict}",
    ]
    return "\n".join(lines)


def write_json(report: HammerReport, path: Path) -> None:
    """Write :meth:`HammerReport.to_json` to ``path``."""
    path.write_text(json.dumps(report.to_json(), indent=2) + "\n")
