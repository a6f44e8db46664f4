"""How fast ``asynclocks.web`` checks the bank's HTTP API for linearizability.

For the bank (aiohttp, memory store, io-delay 0) over the explorer's simulated network:

- CPU seconds to the first non-linearizable set in lock mode ``none``, from request sets generated
  from its ``/openapi.json`` with a fixed seed (target < 10 CPU-s);
- CPU seconds for the default count of generated sets (20) to pass in lock mode ``account``, each
  exhaustive within 2 preemptions (target < 120 CPU-s); sets and schedules per CPU-second;
- the CPU cost of one explored schedule of the concurrent run over one sequential run of the same
  requests (one at a time), measured on one fixed set in interleaved rounds (reported: the
  concurrent run carries the explorer's controlled scheduling; both run the same app on the same
  simulated network).

The targets judge CPU time of this process, not wall time: the machine is shared, and a neighbour
that takes the core slows the wall clock but not the work (wall seconds are printed beside them
as a check). Run:
``python benchmarks/web.py [--sets N] [--seed N] [--rounds N]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import asynclocks.web as web
from asynclocks._progress import ProgressBar
from asynclocks._web._check import check_explore_options, explore_concurrent, sequential_outcomes
from services.bank.tools import race_scenarios

FIRST_FAILURE_TARGET = 10.0
PASS_TARGET = 120.0
DEFAULT_SETS = 20


def bank(mode: str) -> Callable[[], Any]:
    """A factory of fresh bank apps in lock ``mode`` (the lessons' apps: memory store, io-delay
    0, anonymous money routes, so that the OpenAPI check generates requests for them)."""
    factory: Callable[[], Any] = getattr(race_scenarios, f"{mode}_app")
    return factory


def timed(call: Callable[[], Any]) -> tuple[Any, float, float]:
    """(result, wall seconds, CPU seconds of this process)."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = call()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def per_run_costs(rounds: int) -> tuple[float, float]:
    """Median CPU seconds of one sequential run and of one explored concurrent schedule."""
    requests = web.RequestSet.of(
        concurrent=[("POST", "/accounts/a/deposit", {"amount": 5})] * 2,
        setup=[("POST", "/accounts", {"id": "a", "balance": 100})],
        observe=[
            "GET /accounts/a",
            ("GET", "/audit", None, {"Authorization": f"Bearer {race_scenarios.ADMIN_TOKEN}"}),
        ],
    )
    factory = bank("account")
    check_explore_options("asyncio", "dfs", 10_000, 0, 2)
    sequential: list[float] = []
    concurrent: list[float] = []
    for _ in range(rounds):
        allowed, _, cpu = timed(lambda: sequential_outcomes(factory, requests))
        sequential.append(cpu / 2)  # two orders, one run each

        def explore_once(allowed: tuple[web.Allowed, ...] = allowed) -> web.WebReport:
            return explore_concurrent(
                factory,
                requests,
                allowed,
                backend="asyncio",
                ignore=(),
                lifespan=True,
                strategy="dfs",
                max_schedules=10_000,
                seed=0,
                preemption_bound=2,
            )

        report, _, cpu = timed(explore_once)
        assert not report.failed, str(report)
        concurrent.append(cpu / report.report.schedules)
    return statistics.median(sequential), statistics.median(concurrent)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sets", type=int, default=DEFAULT_SETS, help="generated sets (20)")
    parser.add_argument("--seed", type=int, default=0, help="the generator's seed (0)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of the per-run costs (5)")
    parser.add_argument("--quiet", action="store_true", help="no progress display on stderr")
    args = parser.parse_args(argv)
    if args.sets < 1 or args.rounds < 1:
        parser.error("--sets and --rounds must be >= 1")

    print(f"Python {sys.version.split()[0]}; the bank (aiohttp, memory store, io-delay 0)")
    with ProgressBar("lock mode none", args.sets, enabled=not args.quiet) as bar:
        racy, wall, cpu = timed(
            lambda: web.check_openapi(
                bank("none"),
                sets=args.sets,
                seed=args.seed,
                stop_on_failure=True,
                progress=lambda done, total, report: bar.advance(),
            )
        )
    found = bool(racy.failures)
    print(
        f"lock mode none: first non-linearizable set after {cpu:.1f} CPU-s ({wall:.1f} s wall), "
        f"{racy.summary}"
    )
    if found:
        print(f"  {racy.failures[0].verdict}")
    ok_first = found and cpu < FIRST_FAILURE_TARGET
    print(f"  {verdict(ok_first)}: found, in < {FIRST_FAILURE_TARGET:g} CPU-s ({cpu:.1f} CPU-s)")

    with ProgressBar("lock mode account", args.sets * 3, enabled=not args.quiet) as bar:
        fixed, wall, cpu = timed(
            lambda: web.check_openapi(
                bank("account"),
                sets=args.sets,
                seed=args.seed,
                progress=lambda done, total, report: bar.advance(),
            )
        )
    checked = len(fixed.reports)
    proved = sum(1 for report in fixed.reports if report.report.exhaustive)
    print(
        f"lock mode account: {fixed.summary}; {proved} of {checked} exhaustive within 2 preemptions"
    )
    print(
        f"  {checked / cpu:.2f} sets per CPU-s, {fixed.schedules / cpu:,.0f} schedules per CPU-s "
        f"({fixed.schedules / wall:,.0f} schedules/s wall)"
    )
    ok_pass = not fixed.failures and proved == checked and cpu < PASS_TARGET
    print(
        f"  {verdict(ok_pass)}: every set passes, in < {PASS_TARGET:g} CPU-s "
        f"({cpu:.1f} CPU-s, {wall:.1f} s wall)"
    )

    sequential, concurrent = per_run_costs(args.rounds)
    print(
        f"one sequential run {sequential * 1e3:.1f} ms CPU, one explored concurrent schedule "
        f"{concurrent * 1e3:.1f} ms CPU: ratio {concurrent / sequential:.2f}x "
        f"(median of {args.rounds} rounds)"
    )
    return 0 if ok_first and ok_pass else 1


if __name__ == "__main__":
    raise SystemExit(main())
