"""``python -m asynclocks explore module:function``: explore or replay a scenario from a shell.

Exit codes: 0 when no schedule failed, 1 when one did (or a replay reproduced a failure, or the
scenario turned out nondeterministic), 2 for bad arguments and for a scenario the explorer cannot
run (:class:`~asynclocks.UnsupportedScenario`, printed in one line on stderr).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import importlib.util
import os
import sys
from collections.abc import Callable
from typing import Any, TextIO

from ._api import explore, make_config, replay_outcome
from ._common import BACKENDS, STRATEGIES, Backend, NondeterminismError, UnsupportedScenario
from ._faults import FAULT_MODES
from ._report import decode_token

_EPILOG = """\
The target is an importable module and a zero-argument async function in it,
`package.module:func`, or a file path, `path/to/race.py:scenario`. The scenario starts its own
tasks and raises (an assert) when an invariant breaks. A failure prints its race window (the
conflicting read, await and write) above the trace; a long trace is elided around it
(--full-trace prints every step).
Exit status: 0 no failure found, 1 a failure was found (trace and token printed), 2 bad
arguments or a scenario the explorer cannot run (threads, subprocesses, real sockets, code of
the other backend, a backend that is not installed)."""


class UsageError(Exception):
    """A command-line mistake: reported on stderr with exit status 2."""


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def positive_int(text: str) -> int:
    value = non_negative_int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``explore`` command."""
    parser = subparsers.add_parser(
        "explore",
        help="explore the interleavings of an async scenario, or replay a token",
        description="Run a zero-argument async function under many schedules (one task at a\n"
        "time, on virtual time) and report the first failing one with its trace and replay token.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("target", help="module:function or path/to/file.py:function")
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default=None,
        help="event loop to control (default: asyncio; with --replay, the token's backend)",
    )
    parser.add_argument("--strategy", choices=STRATEGIES, default="dfs", help="default: dfs")
    parser.add_argument(
        "--max-schedules",
        type=positive_int,
        default=None,
        metavar="N",
        help="default: 10000, or $ASYNCLOCKS_MAX_SCHEDULES",
    )
    parser.add_argument(
        "--seed",
        type=non_negative_int,
        default=None,
        metavar="N",
        help="default: 0, or $ASYNCLOCKS_SEED",
    )
    parser.add_argument(
        "--pct-depth",
        type=positive_int,
        default=None,
        metavar="D",
        help="pct's bug depth (default: 5, or $ASYNCLOCKS_PCT_DEPTH)",
    )
    parser.add_argument(
        "--preemption-bound",
        type=non_negative_int,
        default=None,
        metavar="N",
        help="at most N preemptions per schedule (default: unbounded)",
    )
    parser.add_argument(
        "--cancel",
        choices=FAULT_MODES,
        default="off",
        help="auto: cancelling a task at any await is a choice of the search (default: off)",
    )
    parser.add_argument(
        "--timeouts",
        choices=FAULT_MODES,
        default="off",
        help="auto: a pending timeout may fire at any await before its deadline (default: off)",
    )
    parser.add_argument(
        "--fault-budget",
        type=positive_int,
        default=1,
        metavar="N",
        help="at most N injected faults per schedule (default: 1)",
    )
    parser.add_argument("--replay", metavar="TOKEN", help="run only the schedule of this token")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    parser.add_argument(
        "--full-trace",
        action="store_true",
        help="print every step of the failing schedule (long traces are elided by default)",
    )
    parser.add_argument(
        "--html",
        metavar="FILE",
        help="also write the report as a self-contained HTML page (a lane per task, the race "
        "window highlighted, each step's source on hover)",
    )
    parser.set_defaults(handler=_handle)


def load_target(target: str) -> Callable[[], Any]:
    """Import ``module:function`` or ``path.py:function``.

    Raises:
        UsageError: The target is malformed, cannot be imported or has no such function.
    """
    module_name, sep, attribute = target.rpartition(":")
    if not sep or not module_name or not attribute:
        raise UsageError(
            f"target must look like module:function or file.py:function, not {target!r}"
        )
    if module_name.endswith(".py") or os.sep in module_name:
        if not os.path.isfile(module_name):
            raise UsageError(f"no such file: {module_name}")
        name = "_asynclocks_target_" + os.path.splitext(os.path.basename(module_name))[0]
        spec = importlib.util.spec_from_file_location(name, module_name)
        if spec is None or spec.loader is None:
            raise UsageError(f"cannot import {module_name}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as error:  # noqa: BLE001 - report any import-time failure as usage
            raise UsageError(f"importing {module_name} failed: {error!r}") from error
    else:
        if "" not in sys.path and os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:
            raise UsageError(f"cannot import module {module_name!r}: {error}") from error
    try:
        function: Callable[[], Any] = getattr(module, attribute)
    except AttributeError:
        raise UsageError(f"module {module_name!r} has no attribute {attribute!r}") from None
    return function


def _check_html_path(path: str) -> None:
    """Refuse an --html file that cannot be written, before the exploration runs."""
    if os.path.isdir(path):
        raise UsageError(f"--html {path}: is a directory, not a file")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise UsageError(f"--html {path}: no such directory: {folder}")
    if not os.access(folder, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise UsageError(f"--html {path}: not writable")


def _progress(stream: TextIO) -> Callable[[int, float], None]:
    def report(schedules: int, seconds: float) -> None:
        rate = schedules / seconds if seconds else 0.0
        stream.write(f"  ... {schedules} schedules in {seconds:.1f} s ({rate:,.0f}/s)\n")
        stream.flush()

    return report


def run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """The command's body, separated from argparse for testing."""
    try:
        scenario = load_target(args.target)
        if args.replay is not None:
            if getattr(args, "html", None) is not None:
                raise UsageError("--html writes an exploration's report; drop it with --replay")
            try:
                schedule = decode_token(args.replay)
            except ValueError as error:
                raise UsageError(str(error)) from None
            try:
                failed, verdict, trace = replay_outcome(
                    scenario, args.replay, args.backend or schedule.backend, full=args.full_trace
                )
            except (TypeError, ValueError) as error:
                raise UsageError(str(error)) from None
            except NondeterminismError as error:
                err.write(f"NONDETERMINISTIC: {error}\n")
                return 1
            out.write(f"{verdict}\n{trace}\n")
            return 1 if failed else 0
        html_path: str | None = getattr(args, "html", None)
        if html_path is not None:
            _check_html_path(html_path)
        backend: Backend = args.backend or "asyncio"
        try:  # the environment's defaults are checked before anything runs
            config = make_config(None, args.max_schedules, args.seed, args.preemption_bound)
            if args.pct_depth is not None:
                config = dataclasses.replace(config, pct_depth=args.pct_depth)
        except (TypeError, ValueError) as error:
            raise UsageError(str(error)) from None
        if not args.quiet:
            err.write(
                f"exploring {args.target} on {backend} with {args.strategy} "
                f"(max {config.max_schedules} schedules)\n"
            )
        try:
            report = explore(
                scenario,
                backend=backend,
                strategy=args.strategy,
                config=config,
                progress=None if args.quiet else _progress(err),
                cancel=args.cancel,
                timeouts=args.timeouts,
                fault_budget=args.fault_budget,
            )
        except (TypeError, ValueError) as error:
            raise UsageError(str(error)) from None
    except UsageError as error:
        err.write(f"python -m asynclocks explore: error: {error}\n")
        return 2
    except UnsupportedScenario as error:
        text = " ".join(str(error).split())
        err.write(f"python -m asynclocks explore: unsupported: {text}\n")
        return 2
    if html_path is not None:
        try:
            report.write_html(html_path)
        except OSError as error:
            err.write(f"python -m asynclocks explore: error: cannot write {html_path}: {error}\n")
            return 2
    out.write(f"{report.verdict}\n")
    if report.injected:
        out.write(f"faults injected by the explorer: {'; '.join(report.injected)}\n")
    if report.window:
        out.write(f"{report.window}\n")
    if report.failed:
        out.write(f"{report.format_trace(full=args.full_trace)}\n")
    for note in report.notes:
        out.write(f"note: {note}\n")
    if report.failed:
        out.write(f"replay: python -m asynclocks explore {args.target} --replay '{report.token}'\n")
        out.write(f"token: {report.token}\n")
    else:
        out.write(f"{report.schedules} schedules in {report.seconds:.3f} s\n")
    return 1 if report.failed or report.nondeterministic else 0


def _handle(args: argparse.Namespace) -> int:
    try:
        code = run(args, sys.stdout, sys.stderr)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (``| head``). As the CPython docs recommend: point stdout at
        # devnull so the flush at interpreter exit cannot raise again, and exit quietly with 1.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    return code
