"""Faults chosen by the search (issue 13): cancellation and timeout bugs found, their fixes proved.

For each bug of ``tests/asynclocks/explore/fault_scenarios.py`` on each backend it applies to:

- the baseline, in the same run: the search without faults (dfs, exhaustive) finds none of them,
  since no scenario has a canceller task or a timeout shorter than its work;
- schedules to find it with ``cancel="auto"`` (or ``timeouts="auto"``): dfs, and the median over
  five seeds of random and pct; target: found by each within 1,000 schedules;
- the fixed version: schedules and seconds until dfs has explored every schedule with one fault
  and no preemption bound; target: exhaustive in under 30 s.

Then the cost per schedule of offering faults, on the ten-step two-task scenario of
``benchmarks/explore.py`` (CPU time of one schedule with ``cancel="auto", timeouts="auto"`` over
one without, interleaved rounds; printed, no target: the fault tree is larger, and its schedules
do more). With faults off the explorer's own loops pay one test per step: callgrind counted
+0.9% (asyncio) and +0.7% (trio) instructions per schedule against the tree before faults.

Run: ``python benchmarks/faults.py [--quiet]`` (progress on stderr when it is a terminal, unless
``--quiet``).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, cast

import trio
import trio.lowlevel

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import asynclocks  # noqa: E402 - after the checkout is importable
from asynclocks import Backend, Strategy  # noqa: E402
from asynclocks._progress import ProgressBar  # noqa: E402
from tests.asynclocks.explore.fault_scenarios import CANCEL_BUGS, TIMEOUT_BUGS  # noqa: E402

Scenario = Callable[[], Awaitable[None]]

FIND_TARGET = 1_000
PROOF_SECONDS = 30.0
SEEDS = range(5)


async def asyncio_ten_steps() -> None:
    """Two tasks of five awaits each (``benchmarks/explore.py``'s scenario)."""

    async def worker() -> None:
        for _ in range(5):
            await asyncio.sleep(0)

    async with asyncio.TaskGroup() as tg:
        tg.create_task(worker())
        tg.create_task(worker())


async def trio_ten_steps() -> None:
    async def worker() -> None:
        for _ in range(5):
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(worker)
        nursery.start_soon(worker)


def _explore(scenario: Scenario, backend: str, options: dict[str, Any]) -> asynclocks.Report:
    return asynclocks.explore(scenario, cast(Backend, backend), **options)


def _find(
    make: Callable[[bool], Scenario], backend: str, strategy: str, seed: int, faults: dict[str, str]
) -> int:
    """Schedules the search ran until it failed; FIND_TARGET + 1 when it did not."""
    options = {"strategy": cast(Strategy, strategy), "max_schedules": FIND_TARGET, "seed": seed}
    report = _explore(make(False), backend, {**options, **faults})
    return report.schedules if report.failed else FIND_TARGET + 1


def _shown(count: int) -> str:
    return f"{count}" if count <= FIND_TARGET else "-"


def bugs(progress: bool = True) -> bool:
    print(
        f"{'bug':<22} {'backend':<8} {'no faults':>9} {'dfs':>5} {'random':>6} {'pct':>5} "
        f"{'fixed: schedules':>16} {'s':>6}  verdict"
    )
    ok = True
    tables = ((CANCEL_BUGS, {"cancel": "auto"}), (TIMEOUT_BUGS, {"timeouts": "auto"}))
    rows = sum(len(backends) for table, _ in tables for _, backends in table.values())
    with ProgressBar("bugs and fixes", rows, enabled=progress) as bar:
        ok = _bug_rows(tables, bar)
    return ok


def _bug_rows(tables: tuple[tuple[dict[str, Any], dict[str, str]], ...], bar: ProgressBar) -> bool:
    ok = True
    for table, faults in tables:
        for name, (make, backends) in table.items():
            for backend in backends:
                baseline = _explore(make(False), backend, {})
                dfs = _find(make, backend, "dfs", 0, faults)
                rnd = statistics.median(_find(make, backend, "random", s, faults) for s in SEEDS)
                pct = statistics.median(_find(make, backend, "pct", s, faults) for s in SEEDS)
                started = time.perf_counter()
                proof = _explore(make(True), backend, {"max_schedules": 200_000, **faults})
                seconds = time.perf_counter() - started
                found = max(dfs, rnd, pct) <= FIND_TARGET
                proved = proof.exhaustive and not proof.failed and seconds < PROOF_SECONDS
                passed = found and proved and not baseline.failed and baseline.exhaustive
                ok = ok and passed
                print(
                    f"{name:<22} {backend:<8} {'none' if not baseline.failed else 'FOUND':>9} "
                    f"{_shown(dfs):>5} {_shown(int(rnd)):>6} {_shown(int(pct)):>5} "
                    f"{proof.schedules:>16,} {seconds:>6.2f}  {'PASS' if passed else 'MISS'}"
                )
                bar.advance()
    return ok


def cost(rounds: int = 5, schedules: int = 2_000, progress: bool = True) -> None:
    print(f"\ncost of offering faults, ten-step scenario, best of {rounds} interleaved rounds:")
    with ProgressBar("cost rounds", 2 * rounds, enabled=progress) as bar:
        _cost_rows(rounds, schedules, bar)


def _cost_rows(rounds: int, schedules: int, bar: ProgressBar) -> None:
    for backend, scenario in (("asyncio", asyncio_ten_steps), ("trio", trio_ten_steps)):
        best = {"off": float("inf"), "on": float("inf")}
        modes: dict[str, dict[str, Any]] = {
            "off": {"max_schedules": schedules},
            "on": {"max_schedules": schedules, "cancel": "auto", "timeouts": "auto"},
        }
        for _ in range(rounds):
            for mode, options in modes.items():
                cpu = time.process_time()
                report = _explore(scenario, backend, options)
                cpu = time.process_time() - cpu
                best[mode] = min(best[mode], cpu / report.schedules)
            bar.advance()
        print(
            f"  {backend:<8} off {best['off'] * 1e6:7.1f} us/schedule, on "
            f"{best['on'] * 1e6:7.1f} us/schedule: {best['on'] / best['off']:.2f}x"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quiet", action="store_true", help="no progress display on stderr")
    args = parser.parse_args(argv)
    ok = bugs(progress=not args.quiet)
    cost(progress=not args.quiet)
    print(f"\nall bugs found by dfs, random and pct, every fix proved: {'PASS' if ok else 'MISS'}")


if __name__ == "__main__":
    main()
