"""``python -m asynclocks web MODULE:FACTORY``: check an app's concurrent requests from a shell.

Exit codes: 0 when every set was linearizable, 1 when one was not (its report printed), 2 for bad
arguments (one line on stderr, before any request runs).
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
from collections.abc import Callable, Mapping
from typing import Any, TextIO

from .._explore._cli import UsageError, load_target, non_negative_int, positive_int
from .._explore._common import BACKENDS, STRATEGIES
from .._progress import ProgressBar
from ._check import RequestSet, WebReport, check_requests
from ._model import parse_ignore
from ._openapi import DEFAULT_PREEMPTION_BOUND, check_openapi

_EPILOG = """\
FACTORY is a function returning a fresh app: an aiohttp web.Application, or an ASGI app (Starlette,
FastAPI). It is called once per run so that no state outlives a run.

--openapi [PATH] generates request sets from the document the app serves at PATH (default
/openapi.json). --requests FILE reads them from JSON or YAML:
  setup:      [{method: POST, path: /accounts, json: {id: a, balance: 100}}]
  concurrent: [{method: POST, path: /accounts/a/withdraw, json: {amount: 80}}, ...]
  observe:    ["GET /accounts/a"]
  ignore:     [id]            # optional: body fields that differ by design
or {sets: [ ... ]} for several. The command stops at the first set that is not linearizable
(--keep-going checks them all). Exit status: 0 every set linearizable, 1 a set was not, 2 bad
arguments."""


def _bound(text: str) -> int | str:
    if text.strip().lower() == "none":
        return "none"
    return non_negative_int(text)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _concurrent(text: str) -> int:
    value = positive_int(text)
    if not 2 <= value <= 4:
        raise argparse.ArgumentTypeError(f"must be 2 to 4, got {value}")
    return value


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``web`` command."""
    parser = subparsers.add_parser(
        "web",
        help="check concurrent requests to a web app for linearizability",
        description="Run 2-4 requests together under the interleaving explorer and fail when\n"
        "the outcome is not one that some order of them, run one at a time, gives.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("target", help="module:factory or path/to/app.py:factory")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--openapi",
        nargs="?",
        const="/openapi.json",
        metavar="PATH",
        help="generate request sets from the app's OpenAPI document (default path /openapi.json)",
    )
    source.add_argument("--requests", metavar="FILE", help="request sets from a JSON or YAML file")
    parser.add_argument("--backend", choices=BACKENDS, default="asyncio", help="default: asyncio")
    parser.add_argument(
        "--sets", type=positive_int, default=20, metavar="N", help="with --openapi (default: 20)"
    )
    parser.add_argument("--seed", type=non_negative_int, default=0, metavar="N", help="default: 0")
    parser.add_argument(
        "--concurrent",
        type=_concurrent,
        default=2,
        metavar="N",
        help="with --openapi: at most N concurrent requests per set, 2 to 4 (default: 2)",
    )
    parser.add_argument(
        "--time-limit",
        type=_seconds,
        default=None,
        metavar="S",
        help="start no new set after S seconds (default: none)",
    )
    parser.add_argument("--strategy", choices=STRATEGIES, default="dfs", help="default: dfs")
    parser.add_argument(
        "--max-schedules",
        type=positive_int,
        default=10_000,
        metavar="N",
        help="per set (default 10000)",
    )
    parser.add_argument(
        "--preemption-bound",
        type=_bound,
        default=None,
        metavar="N",
        help="at most N preemptions per schedule, 'none' for no bound (default: 2 with --openapi, "
        "none with --requests)",
    )
    parser.add_argument(
        "--ignore",
        action="append",
        default=[],
        metavar="FIELD",
        help="a body field that differs by design (dotted path; repeat for more)",
    )
    parser.add_argument(
        "--keep-going",
        action="store_true",
        help="check every set even after one fails (default: stop at the first failure)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress display")
    parser.set_defaults(handler=_handle)


def load_factory(target: str) -> Callable[[], Any]:
    """The app factory named by ``target``.

    Raises:
        UsageError: it cannot be imported, or it is an app rather than a function returning one.
    """
    factory = load_target(target)
    if not callable(factory):
        raise UsageError(f"{target} is a {type(factory).__name__}, not a function returning an app")
    if type(factory).__module__.startswith("aiohttp") or _is_asgi_app(factory):
        raise UsageError(
            f"{target} is an app, not a factory: give a function that returns a fresh app, so "
            "that no state outlives a run"
        )
    return factory


def _is_asgi_app(obj: object) -> bool:
    if inspect.isfunction(obj) or inspect.ismethod(obj):
        return False
    try:
        parameters = inspect.signature(obj).parameters  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return len(parameters) == 3


def load_sets(path: str, ignore: list[str]) -> tuple[list[RequestSet], list[str]]:
    """Request sets (and ignored fields) from a JSON or YAML file.

    Raises:
        UsageError: the file cannot be read or parsed, or does not describe request sets.
    """
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    except OSError as error:
        raise UsageError(f"cannot read {path}: {error.strerror}") from None
    try:
        if path.endswith((".yaml", ".yml")):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as error:  # noqa: BLE001 - any parse error is the user's file
        kind = "YAML" if path.endswith(("yaml", "yml")) else "JSON"
        raise UsageError(f"{path} is not valid {kind}: {error}") from None
    if not isinstance(data, Mapping):
        raise UsageError(f"{path} must hold an object with setup/concurrent/observe, or sets")
    entries = data["sets"] if "sets" in data else [data]
    if not isinstance(entries, list) or not entries:
        raise UsageError(f"{path}: 'sets' must be a non-empty list")
    sets: list[RequestSet] = []
    ignored = list(ignore)
    for number, entry in enumerate(entries, 1):
        if not isinstance(entry, Mapping):
            raise UsageError(f"{path}: set {number} must be an object")
        unknown = set(entry) - {"setup", "concurrent", "observe", "ignore"}
        if unknown:
            raise UsageError(
                f"{path}: set {number} has unknown keys {sorted(unknown)}; "
                "use setup, concurrent, observe, ignore"
            )
        try:
            sets.append(
                RequestSet.of(
                    entry.get("concurrent", []), entry.get("setup", []), entry.get("observe", [])
                )
            )
            ignored += list(entry.get("ignore", []))
            parse_ignore(ignored)
        except (TypeError, ValueError) as error:
            raise UsageError(f"{path}: set {number}: {error}") from None
    return sets, ignored


def _describe(report: WebReport) -> str:
    concurrent = " | ".join(str(request) for request in report.requests.concurrent)
    return f"{report.verdict.split(':')[0]}: {concurrent}"


def run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """The command's body, separated from argparse for testing."""
    try:
        factory = load_factory(args.target)
        parse_ignore(args.ignore)
        bound = args.preemption_bound
        if bound is None:  # each source's own default
            bound = DEFAULT_PREEMPTION_BOUND if args.requests is None else None
        options: dict[str, Any] = {
            "strategy": args.strategy,
            "max_schedules": args.max_schedules,
            "preemption_bound": None if bound == "none" else bound,
        }
        if args.requests is not None:
            sets, ignored = load_sets(args.requests, args.ignore)
    except (UsageError, TypeError, ValueError) as error:
        err.write(f"python -m asynclocks web: error: {error}\n")
        return 2
    reports: list[WebReport] = []
    if args.requests is not None:
        with ProgressBar("request sets", len(sets), enabled=not args.quiet) as progress:
            for requests in sets:
                reports.append(
                    check_requests(
                        factory,
                        concurrent=requests.concurrent,
                        setup=requests.setup,
                        observe=requests.observe,
                        backend=args.backend,
                        ignore=ignored,
                        seed=args.seed,
                        **options,
                    )
                )
                progress.advance()
                if reports[-1].failed and not args.keep_going:
                    break
        summary = f"{len(reports)} of {len(sets)} request set(s) checked, " + (
            f"{sum(r.report.schedules for r in reports)} schedule(s) run, "
            f"{sum(1 for r in reports if r.failed)} not linearizable"
        )
    else:
        with ProgressBar("request sets", args.sets, enabled=not args.quiet) as progress:
            try:
                result = check_openapi(
                    factory,
                    openapi=args.openapi,
                    sets=args.sets,
                    seed=args.seed,
                    concurrent=args.concurrent,
                    backend=args.backend,
                    time_limit=args.time_limit,
                    stop_on_failure=not args.keep_going,
                    ignore=args.ignore,
                    progress=lambda done, total, report: progress.advance(),
                    **options,
                )
            except ValueError as error:
                err.write(f"python -m asynclocks web: error: {error}\n")
                return 2
        reports = result.reports
        summary = result.summary
    failures = [report for report in reports if report.failed]
    if failures:
        out.write(f"{failures[0]}\n\n")
        for report in failures[1:]:
            out.write(f"also {_describe(report)}\n")
    out.write(f"{summary}\n")
    return 1 if failures else 0


def _handle(args: argparse.Namespace) -> int:
    return run(args, sys.stdout, sys.stderr)
