"""Command line: ``python -m services.bank serve|hammer|showdown`` (also the ``bank`` script).

Exit codes: 0 success; 1 a run failed or a threshold given was broken; 2 bad command line, a
store that cannot be opened, an output file that cannot be written, or the ``service`` extra
not installed (each one line on stderr, before any load runs).
"""

from __future__ import annotations

import argparse
import math
import os
import random
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from asynclocks import __version__

from .domain import MAX_AMOUNT
from .locking import ALL_LOCK_MODES, LOCK_MODES
from .run.config import (
    ADMIN_TOKEN_ENV,
    API_KEY_ENV,
    DEFAULT_IDEMPOTENCY_QUOTA,
    DEFAULT_IDEMPOTENCY_RETENTION,
    DEFAULT_MAX_ACCOUNTS_PER_CLIENT,
    DEFAULT_MAX_OPENING_BALANCE,
    DEFAULT_REQUEST_TIMEOUT,
    UNSAFE_FLAG,
    BankConfig,
    read_token_file,
)

_LOOP_CHOICES = ("auto", "asyncio", "uvloop")
#: What every command needs from the ``service`` extra (the stores' drivers load with their URL).
_SERVICE_MODULES = ("aiohttp", "yarl", "pydantic", "rich")


def _missing_service_module() -> str | None:
    """The first module of the ``service`` extra that cannot be imported, if any."""
    import importlib

    for name in _SERVICE_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:
            return name
    return None


def _int_at_least(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            bound = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {value}")
        return value

    return parse


def _seconds(*, positive: bool) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number of seconds, got {text!r}") from None
        if not math.isfinite(value) or value < 0 or (positive and value == 0):
            kind = "> 0" if positive else ">= 0"
            raise argparse.ArgumentTypeError(
                f"must be a finite number of seconds {kind}, got {text}"
            )
        return value

    return parse


def _milliseconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be a number of milliseconds, got {text!r}"
        ) from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number of milliseconds > 0, got {text}")
    return value


def _base_url(text: str) -> str:
    from yarl import URL

    try:
        url = URL(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a URL: {text!r} ({exc})") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise argparse.ArgumentTypeError(f"must be an http:// or https:// URL, got {text!r}")
    if url.path not in ("", "/") or url.query_string or url.fragment:
        raise argparse.ArgumentTypeError(
            f"must be the service's base URL (scheme, host, port), got {text!r}"
        )
    return str(url.with_path("/"))


def _mix(text: str) -> dict[str, int]:
    from .tools.hammer import parse_mix

    try:
        return parse_mix(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


class _RefuseSecretInArgv(argparse.Action):
    """``--admin-token T``: refused in one line, before anything starts, since any user of the
    machine can read a process's argv (``ps``, ``/proc/PID/cmdline``)."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        print(
            f"{parser.prog}: error: {option_string} on the command line is visible to every "
            f"user of this machine; put the token in ${ADMIN_TOKEN_ENV} or in a file named by "
            "--admin-token-file",
            file=sys.stderr,
        )
        sys.exit(2)


def _store(text: str) -> str:
    from .stores import check_store_url

    try:
        check_store_url(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _add_loop(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--loop",
        choices=_LOOP_CHOICES,
        default="auto",
        help="event loop: uvloop when installed (auto, the default), or force one",
    )


def _register_serve(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    defaults = BankConfig()
    parser = subparsers.add_parser(
        "serve",
        help="run the bank service",
        description="Run the bank HTTP service until SIGINT or SIGTERM. Prints "
        "'listening on http://HOST:PORT' once it accepts connections.",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, loopback only)"
    )
    parser.add_argument(
        "--port",
        type=_int_at_least(0, 65535),
        default=8080,
        help="TCP port; 0 picks a free one (default: 8080)",
    )
    parser.add_argument(
        "--lock",
        choices=ALL_LOCK_MODES,
        default="none",
        help="starting lock mode: none loses money under concurrency, global and account do "
        "not within one process, db leaves it to the database (needs --store sqlite:/// or "
        "postgresql://; the only mode correct with --workers > 1) (default: none; switch at "
        "run time with PUT /admin/lock)",
    )
    parser.add_argument(
        "--store",
        type=_store,
        default="memory",
        metavar="URL",
        help="where balances live: memory, sqlite:///PATH (a file, WAL) or "
        "postgresql://USER@HOST:PORT/DATABASE (?search_path=SCHEMA, ?pool_size=N connections "
        "per worker, default 16); the tables are created on start (default: memory)",
    )
    parser.add_argument(
        "--workers",
        type=_int_at_least(1, 64),
        default=1,
        metavar="N",
        help="worker processes sharing the port (SO_REUSEPORT) under a supervisor that stops "
        "them all on SIGINT/SIGTERM and exits 1 if one dies; more than 1 needs a database "
        "--store (default: 1)",
    )
    parser.add_argument(
        "--io-delay",
        type=_seconds(positive=False),
        default=0.0,
        metavar="S",
        help="seconds the store awaits between reading and writing a balance (lock modes other "
        "than db), standing in for a database round trip on the memory store and widening the "
        "real one on the databases; 0 is a bare checkpoint (default: 0)",
    )
    parser.add_argument(
        "--admin-token",
        action=_RefuseSecretInArgv,
        metavar="T",
        help="refused: a token on the command line is visible to every user of the machine; "
        "use --admin-token-file or $" + ADMIN_TOKEN_ENV,
    )
    parser.add_argument(
        "--admin-token-file",
        metavar="PATH",
        default=None,
        help=f"file whose first line is the admin bearer token, for POST /clients, /audit and "
        f"/admin (default: ${ADMIN_TOKEN_ENV}; without either, those routes refuse every "
        "request)",
    )
    parser.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a host name clients may send in the Host header besides --host (repeatable); "
        "any other is refused with 421 (DNS rebinding)",
    )
    parser.add_argument(
        "--max-accounts-per-client",
        type=_int_at_least(1),
        default=DEFAULT_MAX_ACCOUNTS_PER_CLIENT,
        metavar="N",
        help=f"accounts one client may open (default: {DEFAULT_MAX_ACCOUNTS_PER_CLIENT})",
    )
    parser.add_argument(
        "--max-opening-balance",
        type=_int_at_least(0, MAX_AMOUNT),
        default=DEFAULT_MAX_OPENING_BALANCE,
        metavar="CENTS",
        help=f"largest opening balance (default: {DEFAULT_MAX_OPENING_BALANCE})",
    )
    parser.add_argument(
        "--idempotency-retention",
        type=_seconds(positive=True),
        default=DEFAULT_IDEMPOTENCY_RETENTION,
        metavar="S",
        help="seconds an Idempotency-Key record is kept; a retry within it replays "
        f"(default: {DEFAULT_IDEMPOTENCY_RETENTION:g})",
    )
    parser.add_argument(
        "--idempotency-quota",
        type=_int_at_least(1),
        default=DEFAULT_IDEMPOTENCY_QUOTA,
        metavar="N",
        help="live Idempotency-Key records per client; a new key beyond it is refused with "
        f"429, nothing is evicted (default: {DEFAULT_IDEMPOTENCY_QUOTA})",
    )
    parser.add_argument(
        "--handler-cancellation",
        action="store_true",
        help="cancel a request's handler when its client disconnects (aiohttp option; "
        "either way no transfer is ever half applied)",
    )
    parser.add_argument(
        "--body-timeout",
        type=_seconds(positive=True),
        default=defaults.body_timeout,
        metavar="S",
        help="seconds a client has to send a request's whole body; a slower one gets 408 and "
        f"its connection is closed (default: {defaults.body_timeout:g})",
    )
    parser.add_argument(
        "--request-timeout",
        type=_seconds(positive=True),
        default=DEFAULT_REQUEST_TIMEOUT,
        metavar="S",
        help="seconds a money-moving request may wait for its account locks and the database "
        "before it is answered 503 deadline_exceeded with nothing applied; PostgreSQL's "
        f"statement_timeout follows it (default: {DEFAULT_REQUEST_TIMEOUT:g})",
    )
    parser.add_argument(
        UNSAFE_FLAG,
        action="store_true",
        help="let --workers > 1 run lock mode none, global or account, which loses "
        "acknowledged money (each worker's lock orders only its own requests): for the "
        "showdown's demonstration only; without it such a server refuses to start",
    )
    parser.add_argument(
        "--header-timeout",
        type=_seconds(positive=True),
        default=defaults.header_timeout,
        metavar="S",
        help="seconds a client has from the first byte of a request's head to its last; a "
        f"slower one (slowloris) is disconnected (default: {defaults.header_timeout:g})",
    )
    parser.add_argument(
        "--keepalive-timeout",
        type=_seconds(positive=True),
        default=defaults.keepalive_timeout,
        metavar="S",
        help="seconds a connection may stay idle between requests, or before its first, "
        f"before the server closes it (default: {defaults.keepalive_timeout:g})",
    )
    parser.add_argument(
        "--max-connections",
        type=_int_at_least(1, 1_000_000),
        default=defaults.max_connections,
        metavar="N",
        help="connections each process serves at once; one more gets 503 "
        "too_many_connections and is closed while the others keep being served "
        f"(default: {defaults.max_connections})",
    )
    parser.add_argument(
        "--drain-timeout",
        type=_seconds(positive=True),
        default=defaults.drain_timeout,
        metavar="S",
        help="on SIGTERM/SIGINT, seconds the requests under way get to finish (their replies "
        "say Connection: close) before they are cancelled "
        f"(default: {defaults.drain_timeout:g})",
    )
    _add_loop(parser)
    parser.set_defaults(handler=_serve)


def _refuse(command: str, problem: object) -> int:
    """Print ``problem`` as the one-line error of ``command`` and return the exit code 2."""
    print(f"python -m services.bank {command}: error: {problem}", file=sys.stderr)
    return 2


def _unwritable(command: str, paths: Sequence[Path | None]) -> bool:
    """Print why an output path cannot be written (one line) and return True, or return False."""
    from .run.preflight import check_output_path

    for path in paths:
        problem = None if path is None else check_output_path(path)
        if problem is not None:
            _refuse(command, problem)
            return True
    return False


def _serve(args: argparse.Namespace) -> int:
    from .run.workers import serve_forever

    try:
        if args.admin_token_file is not None:
            token: str | None = read_token_file(args.admin_token_file)
        else:
            token = BankConfig.token_from_env()
        config = BankConfig(
            host=args.host,
            port=args.port,
            lock_mode=args.lock,
            store=args.store,
            io_delay=args.io_delay,
            admin_token=token,
            handler_cancellation=args.handler_cancellation,
            body_timeout=args.body_timeout,
            workers=args.workers,
            unsafe_in_process_locks=args.unsafe_in_process_locks,
            request_timeout=args.request_timeout,
            header_timeout=args.header_timeout,
            keepalive_timeout=args.keepalive_timeout,
            max_connections=args.max_connections,
            drain_timeout=args.drain_timeout,
            allowed_hosts=tuple(args.allowed_host),
            max_accounts_per_client=args.max_accounts_per_client,
            max_opening_balance=args.max_opening_balance,
            idempotency_retention=args.idempotency_retention,
            idempotency_quota=args.idempotency_quota,
        )
    except ValueError as exc:
        # Flags that are fine alone but not together (--workers 2 with the memory store, ...).
        return _refuse("serve", exc)
    return serve_forever(config, loop=args.loop)


def _register_hammer(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "hammer",
        help="load a running bank and check its books",
        description="Open fresh accounts on a running bank, send a seeded mix of deposits, "
        "withdrawals and transfers from many concurrent clients, then read the balances back "
        "and compare them with what the server acknowledged.",
        epilog="Exit code 1 when a threshold given (--fail-on-drift, --max-p99-ms) is broken or "
        "the server cannot be reached; 2 for a bad command line.",
    )
    parser.add_argument(
        "--url", type=_base_url, required=True, help="base URL, e.g. http://127.0.0.1:8080"
    )
    parser.add_argument(
        "--concurrency",
        type=_int_at_least(1, 10_000),
        default=64,
        help="concurrent clients (default: 64)",
    )
    amount = parser.add_mutually_exclusive_group()
    amount.add_argument(
        "--requests",
        type=_int_at_least(1),
        default=None,
        metavar="N",
        help="operations to send (default: 10000)",
    )
    amount.add_argument(
        "--duration",
        type=_seconds(positive=True),
        default=None,
        metavar="S",
        help="send for S seconds instead of a fixed count",
    )
    parser.add_argument(
        "--accounts",
        type=_int_at_least(2, 100_000),
        default=10,
        help="fresh accounts to open and share between clients; fewer means more contention "
        "(default: 10)",
    )
    parser.add_argument(
        "--opening-balance",
        type=_int_at_least(0, 10**12),
        default=1_000_000,
        metavar="CENTS",
        help="opening balance of each account in cents; amounts sent are 1 to 1%% of it "
        "(default: 1000000)",
    )
    parser.add_argument(
        "--mix",
        type=_mix,
        default=None,
        help="operation weights (default: deposit:1,withdraw:1,transfer:2)",
    )
    parser.add_argument(
        "--seed",
        type=_int_at_least(0),
        default=None,
        metavar="N",
        help="seed of the operation sequence (default: random, printed in the report)",
    )
    parser.add_argument(
        "--json", type=Path, default=None, metavar="PATH", help="also write the report as JSON"
    )
    parser.add_argument(
        "--fail-on-drift",
        action="store_true",
        help="exit 1 if the drift is not 0 or a balance is negative",
    )
    parser.add_argument(
        "--max-p99-ms",
        type=_milliseconds,
        default=None,
        metavar="X",
        help="exit 1 if the p99 latency is above X milliseconds",
    )
    parser.add_argument(
        "--client",
        choices=("raw", "aiohttp"),
        default="raw",
        help="HTTP client of the load phase: raw, a lean HTTP/1.1 keep-alive client (one "
        "connection per concurrent client, about a third of aiohttp's CPU per request, so "
        "more of the cores go to the server), or aiohttp's ClientSession (default: raw)",
    )
    parser.add_argument(
        "--api-key-file",
        metavar="PATH",
        default=None,
        help=f"file whose first line is the client API key to send (default: ${API_KEY_ENV}; "
        f"without either, the run registers a client of its own with ${ADMIN_TOKEN_ENV})",
    )
    parser.add_argument(
        "--no-progress", "--quiet", action="store_true", help="no live progress bar on stderr"
    )
    _add_loop(parser)
    parser.set_defaults(handler=_hammer)


def _hammer(args: argparse.Namespace) -> int:
    from .run.server import run
    from .tools.hammer import DEFAULT_MIX, HammerError, HammerSettings, format_report, run_hammer
    from .tools.hammer import write_json as write_hammer_json

    if args.accounts < 2 and (args.mix or DEFAULT_MIX).get("transfer", 0):
        print("error: transfers need at least 2 accounts", file=sys.stderr)
        return 2
    if _unwritable("hammer", [args.json]):
        return 2
    try:
        api_key = (
            read_token_file(args.api_key_file)
            if args.api_key_file is not None
            else os.environ.get(API_KEY_ENV) or None
        )
    except ValueError as exc:
        return _refuse("hammer", exc)
    admin_token = BankConfig.token_from_env()
    if api_key is None and admin_token is None:
        return _refuse(
            "hammer",
            f"no credential; put a client API key in ${API_KEY_ENV} (or a file named by "
            f"--api-key-file), or the admin token in ${ADMIN_TOKEN_ENV} to register a client "
            "for the run",
        )
    settings = HammerSettings(
        url=args.url,
        concurrency=args.concurrency,
        requests=None if args.duration is not None else (args.requests or 10_000),
        duration=args.duration,
        accounts=args.accounts,
        opening_balance=args.opening_balance,
        mix=args.mix or dict(DEFAULT_MIX),
        seed=args.seed if args.seed is not None else random.randrange(2**31),
        progress=not args.no_progress,
        client=args.client,
        api_key=api_key,
        admin_token=admin_token,
    )
    try:
        report = run(run_hammer(settings), loop=args.loop)
    except HammerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(format_report(report))
    if args.json is not None:
        write_hammer_json(report, args.json)
    broken = []
    if args.fail_on_drift and not report.correct:
        broken.append(
            f"drift {report.drift:+,} cents, {len(report.negative_accounts)} negative balances"
        )
    if args.max_p99_ms is not None and report.latency_ms["p99"] > args.max_p99_ms:
        broken.append(f"p99 {report.latency_ms['p99']:.2f} ms > {args.max_p99_ms:g} ms")
    for problem in broken:
        print(f"threshold broken: {problem}", file=sys.stderr)
    return 1 if broken else 0


def _register_showdown(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from .tools.showdown import ShowdownSettings

    defaults = ShowdownSettings()
    parser = subparsers.add_parser(
        "showdown",
        help="run every lock mode under the same load and compare",
        description="Start the service once per lock mode (--store, --workers, a free port), "
        "hammer each with the same seeded load, and print one table: throughput, p99, drift, "
        "negative balances, a verdict and why, per mode.",
        epilog="Exit code 1 if a mode that should keep the books loses money, which would be a "
        "bug: global and account with one worker, db always.",
    )
    parser.add_argument(
        "--requests",
        type=_int_at_least(1),
        default=defaults.requests,
        metavar="N",
        help=f"requests per mode (default: {defaults.requests})",
    )
    parser.add_argument(
        "--concurrency",
        type=_int_at_least(1, 10_000),
        default=defaults.concurrency,
        metavar="C",
        help=f"concurrent clients (default: {defaults.concurrency})",
    )
    parser.add_argument(
        "--accounts",
        type=_int_at_least(2, 100_000),
        default=defaults.accounts,
        help=f"accounts shared by the clients (default: {defaults.accounts})",
    )
    parser.add_argument(
        "--io-delay",
        type=_seconds(positive=False),
        default=defaults.io_delay,
        metavar="S",
        help="seconds between each read and write in the store, widening the race window "
        f"(default: {defaults.io_delay})",
    )
    parser.add_argument(
        "--seed",
        type=_int_at_least(0),
        default=defaults.seed,
        metavar="N",
        help=f"seed of the load, the same for every mode (default: {defaults.seed})",
    )
    parser.add_argument(
        "--store",
        type=_store,
        default="memory",
        metavar="URL",
        help="store of every server: memory, sqlite:///PATH or postgresql://...; a database "
        "store adds the db mode to the table (default: memory)",
    )
    parser.add_argument(
        "--workers",
        type=_int_at_least(1, 64),
        default=1,
        metavar="N",
        help="worker processes per server; with more than 1 (and a database --store) only db "
        "keeps the books (default: 1)",
    )
    parser.add_argument(
        "--plot", type=Path, default=None, metavar="PATH", help="save a PNG chart to PATH"
    )
    parser.add_argument(
        "--json", type=Path, default=None, metavar="PATH", help="also write the results as JSON"
    )
    parser.add_argument(
        "--no-progress", "--quiet", action="store_true", help="no live progress on stderr"
    )
    _add_loop(parser)
    parser.set_defaults(handler=_showdown)


def _showdown(args: argparse.Namespace) -> int:
    from rich.console import Console

    from .run.preflight import StoreUnavailable, check_store
    from .run.server import run
    from .tools.hammer import HammerError
    from .tools.showdown import (
        ShowdownSettings,
        ShowdownStopped,
        explain,
        plot,
        render_table,
        run_showdown,
        should_hold,
    )
    from .tools.showdown import write_json as write_showdown_json

    try:
        # The showdown runs the in-process modes over several workers on purpose.
        BankConfig(store=args.store, workers=args.workers, unsafe_in_process_locks=True)
    except ValueError as exc:
        return _refuse("showdown", exc)
    if _unwritable("showdown", [args.plot, args.json]):
        return 2
    if args.plot is not None:
        try:
            import matplotlib  # noqa: F401 - only whether it is there, before the load
        except ImportError:
            return _refuse("showdown", "--plot needs matplotlib: pip install 'asynclocks[service]'")
    try:
        run(check_store(args.store), loop=args.loop)
    except StoreUnavailable as exc:
        return _refuse("showdown", exc)
    settings = ShowdownSettings(
        store=args.store,
        workers=args.workers,
        modes=LOCK_MODES if args.store == "memory" else ALL_LOCK_MODES,
        requests=args.requests,
        concurrency=args.concurrency,
        accounts=args.accounts,
        io_delay=args.io_delay,
        seed=args.seed,
        progress=not args.no_progress,
        loop=args.loop,
    )
    try:
        rows = run_showdown(settings)
    except (RuntimeError, HammerError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except ShowdownStopped as stopped:
        # run_showdown stopped and waited for every server before it raised.
        print(f"{stopped}; its servers are stopped", file=sys.stderr)
        return 1
    console = Console(width=110)
    console.print(render_table(rows, settings))
    console.print(explain(rows, settings), soft_wrap=True)
    if args.plot is not None:
        plot(rows, args.plot)
        console.print(f"chart saved to {args.plot}")
    if args.json is not None:
        write_showdown_json(rows, settings, args.json)
    broken = [
        row.mode
        for row in rows
        if should_hold(row.mode, settings.workers) and not row.report.correct
    ]
    for mode in broken:
        print(f"error: lock mode {mode} lost money; that is a bug", file=sys.stderr)
    return 1 if broken else 0


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m services.bank`` parser."""
    parser = argparse.ArgumentParser(
        prog="python -m services.bank",
        description="The asynclocks bank: a service that loses money without a lock, the load "
        "that shows it, and the showdown of lock modes.",
    )
    # The bank ships in the asynclocks distribution: one version for both.
    parser.add_argument("--version", action="version", version=f"bank (asynclocks {__version__})")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _register_serve(subparsers)
    _register_hammer(subparsers)
    _register_showdown(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    missing = _missing_service_module()
    if missing is not None:
        print(
            f"python -m services.bank: the bank needs the service extra ({missing} is not "
            "installed): pip install 'asynclocks[service]'",
            file=sys.stderr,
        )
        return 2
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
