"""How fast the explorer runs schedules, against running the same scenario on the stock loop.

Prints, for each backend:

- schedules per second that ``explore`` (dfs) runs for a two-task, ten-step scenario, and the
  ratio of one explored schedule's cost to one ``asyncio.run``/``trio.run`` of the same scenario
  (measured here, in the same process);
- how many schedules and seconds it takes to prove the three-task locked counter.

Targets (issue 5): >= 10,000 schedules/s on asyncio, >= 3,000 on trio (judged per CPU second of
the measuring process; the wall-clock rate is printed beside it), the proof in under 5 s.
Networked programs (issue 11; ``--network`` runs only this part), the tests' own
(``tests/asynclocks/explore/net_scenarios.py``, the handler's update locked):

- two concurrent requests to an aiohttp ``TestServer`` through a ``TestClient``: schedules/s that
  ``explore`` runs over the simulated loopback network, and the CPU time of one explored schedule
  over the CPU time of one stock run of the same program over real loopback sockets with the stock
  asyncio loop (one ``asyncio.Runner`` reused, as the explorer reuses its loop), in interleaved
  rounds; target <= 1.0x;
- the bank through HTTP (``services.bank.tools.race_scenarios``): schedules to find lock mode
  ``none``'s overdraft (target <= 10) and seconds to prove ``account`` (exhaustive within
  preemption bound 2; target < 60 s).

The bug suite (issue 13; ``--suite`` runs only this part, ``--seeds N``, ``--pct-depths 3,4,5``):
the library-heavy programs of ``tests/asynclocks/explore/library_programs.py``, buggy and fixed, on
each backend they run on: schedules to find each bug per strategy (dfs; random, pct and portfolio
over seeds: found/seeds and the median), whether dfs proves each fix without a preemption bound
and in how many schedules and CPU seconds (target < 30 s), and pct by depth. Targets: every bug
found by every strategy on every seed; every fix proved.

Run: ``python benchmarks/explore.py [--schedules N] [--network] [--suite] [--quiet]`` (a progress
display on stderr for the networked programs and the suite when it is a terminal, unless
``--quiet``).

``--instructions [--against REV]`` (issue 13; a few minutes, valgrind must be installed) counts
instructions instead of timing: the ten-step dfs of each backend under ``valgrind
--tool=callgrind``, for this tree and for REV (default 1b26797, the last tree with sleep sets
alone), ``git archive``-d into a temporary directory and run with it first on ``PYTHONPATH``.
Both trees explore the same trees of schedules (924 on asyncio, 64 on trio: every step touches
the shared counter, so sleep sets alone already run one schedule per Mazurkiewicz trace). Each
backend is explored once to warm up, then, between two ``os.getppid()`` calls that make
callgrind dump its counters (``--dump-before``, with ``PYTHONHASHSEED=0`` and the heap frozen
first), with ``max_schedules`` a quarter of its tree and then the whole tree: per schedule is
the difference of the two counts over the difference in schedules (what one explore costs once
cancels out), and per schedule of the whole explore (what the schedules/s figure measures) is
printed beside it. PASS/MISS: this tree / REV <= 1.05 on both.

``--trees`` (a few minutes) prints the dfs tree, without a preemption bound, of every program of
the suite (bug and fix), of issue 13's own-object/own-key example (``tests/.../test_dpor.py``) and
of the scenarios above: schedules (up to 30,000), exhaustive, failed. A change meant to keep the
reduction prints the same lines before and after.

``--pythons 3.11,3.12,3.13`` runs the measurements under each interpreter instead (a subprocess of
it, the project importable from this checkout) and prints one table: per version, dfs schedules/s
per backend against the targets (PASS/MISS) and the partial-order reduction ratio (reduced / full
schedules of the same scenario). A version is looked up as the running interpreter, then nox's
session venv (``.nox/tests-3-12``, made by ``make test-versions``), then ``python3.12`` on PATH; a
path to an interpreter works too. Issue 11's target: the rates hold on 3.11 and 3.12 at least.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import trio

import asynclocks
from asynclocks import Backend, Strategy
from asynclocks._progress import ProgressBar

STEPS_PER_TASK = 5  # two tasks x five awaits = ten steps
TARGETS = {"asyncio": 10_000, "trio": 3_000}  # dfs schedules/s on the ten-step scenario
ROOT = Path(__file__).resolve().parents[1]


async def asyncio_ten_steps() -> None:
    total = [0]

    async def worker() -> None:
        for _ in range(STEPS_PER_TASK):
            total[0] += 1
            await asyncio.sleep(0)

    async with asyncio.TaskGroup() as tg:
        tg.create_task(worker())
        tg.create_task(worker())
    assert total[0] == 2 * STEPS_PER_TASK


async def trio_ten_steps() -> None:
    total = [0]

    async def worker() -> None:
        for _ in range(STEPS_PER_TASK):
            total[0] += 1
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(worker)
        nursery.start_soon(worker)
    assert total[0] == 2 * STEPS_PER_TASK


async def asyncio_locked_counter() -> None:
    box = [0]
    lock = asyncio.Lock()

    async def increment() -> None:
        async with lock:
            value = box[0]
            await asyncio.sleep(0)
            box[0] = value + 1

    async with asyncio.TaskGroup() as tg:
        for _ in range(3):
            tg.create_task(increment())
    assert box[0] == 3


async def trio_locked_counter() -> None:
    box = [0]
    lock = trio.Lock()

    async def increment() -> None:
        async with lock:
            value = box[0]
            await trio.lowlevel.checkpoint()
            box[0] = value + 1

    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(increment)
    assert box[0] == 3


def idle_then_locked(tasks: int, idle: int) -> Callable[[], Awaitable[None]]:
    """Unshared awaits (I/O stand-ins) before a locked increment: what the reduction prunes."""

    async def scenario() -> None:
        box = [0]
        lock = asyncio.Lock()

        async def increment() -> None:
            for _ in range(idle):
                await asyncio.sleep(0)
            async with lock:
                value = box[0]
                await asyncio.sleep(0)
                box[0] = value + 1

        async with asyncio.TaskGroup() as tg:
            for _ in range(tasks):
                tg.create_task(increment())
        assert box[0] == tasks

    return scenario


def full_tree(scenario: Callable[[], Awaitable[None]], reduce: bool) -> tuple[int, float]:
    """Schedules and seconds for an exhaustive dfs, with or without the reduction (asyncio)."""
    from asynclocks._explore._api import drive
    from asynclocks._explore._schedulers import DepthFirst

    def plan():  # type: ignore[no-untyped-def]
        search = DepthFirst(None, reduce=reduce)
        count = 0
        while (chooser := search.next_chooser()) is not None:
            outcome = yield chooser, False
            assert outcome.kind is None
            count += 1
        return count

    started = time.perf_counter()
    schedules: int = drive(plan(), scenario, "asyncio")  # type: ignore[no-untyped-call]
    return schedules, time.perf_counter() - started


def stock_run_seconds(
    backend: Backend, scenario: Callable[[], Awaitable[None]], runs: int
) -> float:
    """Seconds for one run of the scenario on the stock event loop (best of three batches)."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(runs):
            if backend == "asyncio":
                asyncio.run(scenario())  # type: ignore[arg-type]
            else:
                trio.run(scenario)
        best = min(best, (time.perf_counter() - started) / runs)
    return best


def rate(
    backend: Backend, scenario: Callable[[], Awaitable[None]], strategy: Strategy, n: int
) -> float:
    """Best schedules/s over five explorations of ``n`` schedules."""
    return rate_and_cpu(backend, scenario, strategy, n)[0]


def rate_and_cpu(
    backend: Backend, scenario: Callable[[], Awaitable[None]], strategy: Strategy, n: int
) -> tuple[float, float]:
    """Best schedules per wall-clock second and per CPU second of this process, over five
    explorations of ``n`` schedules (the second leaves out time other processes took)."""
    best = best_cpu = 0.0
    for _ in range(5):
        cpu = time.process_time()
        report = asynclocks.explore(scenario, backend=backend, strategy=strategy, max_schedules=n)
        cpu = time.process_time() - cpu
        assert not report.failed
        best = max(best, report.schedules / report.seconds)
        best_cpu = max(best_cpu, report.schedules / cpu)
    return best, best_cpu


def rates(schedules: int) -> dict[str, Any]:
    """The ten-step figures per backend: dfs and random schedules/s, one stock run's seconds."""
    scenarios: dict[Backend, Callable[[], Awaitable[None]]] = {
        "asyncio": asyncio_ten_steps,
        "trio": trio_ten_steps,
    }
    result: dict[str, Any] = {}
    for backend, scenario in scenarios.items():
        asynclocks.explore(scenario, backend=backend, max_schedules=200)  # warm up
        tree = asynclocks.explore(scenario, backend=backend, max_schedules=100_000)
        assert tree.exhaustive
        dfs, dfs_cpu = rate_and_cpu(backend, scenario, "dfs", schedules)
        result[backend] = {
            "tree": tree.schedules,
            "dfs": dfs,
            "dfs_cpu": dfs_cpu,
            "random": rate(backend, scenario, "random", schedules),
            "stock": stock_run_seconds(backend, scenario, 200),
        }
    return result


def reduction() -> dict[str, Any]:
    """Full and reduced dfs trees of the reduction scenario, and whether the reduction is on."""
    from asynclocks._explore._footprint import reduction_unavailable

    pruned = idle_then_locked(3, 1)
    full, full_seconds = full_tree(pruned, reduce=False)
    reduced, reduced_seconds = full_tree(pruned, reduce=True)
    return {
        "full": full,
        "full_seconds": full_seconds,
        "reduced": reduced,
        "reduced_seconds": reduced_seconds,
        "off": reduction_unavailable(),
    }


def verdict(backend: str, dfs_cpu: float) -> str:
    """PASS/MISS against the target, judged on schedules per CPU second of this process.

    The explorer is single-threaded and CPU-bound, so on a quiet machine the two rates agree;
    on a loaded one the wall-clock rate measures the other processes, the CPU rate still the code.
    """
    return "PASS" if dfs_cpu >= TARGETS[backend] else "MISS"


def single(schedules: int) -> None:
    """This interpreter's figures, in full."""
    measured = rates(schedules)
    print(f"Python {sys.version.split()[0]}")
    print("two tasks x five awaits (ten steps); schedules/s, best of 5 (cpu: per CPU second,")
    print("what the target is judged on)")
    tree = measured["asyncio"]["tree"]
    print(f"  dfs explores the whole tree ({tree} schedules, reduction on); random never ends")
    print(
        f"{'backend':<8} {'dfs/s':>8} {'cpu':>8} {'random/s':>9} {'target':>7} {'':>4} "
        f"{'stock run':>10} {'dfs schedule / stock run':>25}"
    )
    for backend, figures in measured.items():
        dfs, stock = figures["dfs"], figures["stock"]
        ratio = (1 / dfs) / stock
        print(
            f"{backend:<8} {dfs:>8,.0f} {figures['dfs_cpu']:>8,.0f} {figures['random']:>9,.0f} "
            f"{TARGETS[backend]:>7,} "
            f"{verdict(backend, figures['dfs_cpu']):>4} {stock * 1e6:>8.0f}us {ratio:>24.2f}x"
        )
    print()
    print("three-task locked counter, dfs, no preemption bound (target: proved in < 5 s)")
    counters: tuple[tuple[Backend, Callable[[], Awaitable[None]]], ...] = (
        ("asyncio", asyncio_locked_counter),
        ("trio", trio_locked_counter),
    )
    for backend, locked in counters:
        started = time.perf_counter()
        proof = asynclocks.explore(locked, backend=backend)
        seconds = time.perf_counter() - started
        assert proof.exhaustive
        assert not proof.failed
        print(f"  {backend:<8} proved exhaustively: {proof.schedules} schedules in {seconds:.3f} s")
    print()
    print("partial-order reduction: three tasks, one unshared await each, then the locked counter")
    figures = reduction()
    if figures["off"]:
        print(f"  {figures['off']}")
    print(f"  without reduction:  {figures['full']} schedules in {figures['full_seconds']:.2f} s")
    print(
        f"  DPOR + sleep sets:  {figures['reduced']} schedules in "
        f"{figures['reduced_seconds']:.2f} s ({figures['full'] / figures['reduced']:.1f}x fewer)"
    )


def interpreter(wanted: str) -> str:
    """The interpreter for a ``--pythons`` entry: a version ("3.12") or a path."""
    if os.sep in wanted:
        return wanted
    if wanted == f"{sys.version_info[0]}.{sys.version_info[1]}":
        return sys.executable
    session = ROOT / ".nox" / f"tests-{wanted.replace('.', '-')}" / "bin" / "python"
    if session.exists():
        return str(session)
    found = shutil.which(f"python{wanted}")
    if found is None:
        raise SystemExit(
            f"--pythons: no interpreter for {wanted}: not this one, no {session}, no "
            f"python{wanted} on PATH (with pyenv: export PYENV_VERSION=3.11.7:3.12.1:3.13.0)"
        )
    return found


def across(pythons: list[str], schedules: int) -> None:
    """One table: each interpreter's dfs rates against the targets and its reduction ratio."""
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), *filter(None, [environment.get("PYTHONPATH")])]
    )
    rows = []
    for wanted in pythons:
        executable = interpreter(wanted)
        completed = subprocess.run(
            [executable, __file__, "--json", "--schedules", str(schedules)],
            capture_output=True,
            text=True,
            env=environment,
            check=False,
        )
        if completed.returncode != 0:
            raise SystemExit(
                f"{executable} ({wanted}) failed; it needs the project's trio extra "
                f"(make test-versions builds such venvs under .nox/):\n{completed.stderr}"
            )
        rows.append(json.loads(completed.stdout))
    print(f"dfs schedules/s on two tasks x five awaits (best of 5, {schedules} schedules each),")
    print("per wall-clock second and per CPU second of the measuring process (cpu);")
    print("reduction: reduced / full dfs schedules, three tasks, an unshared await, locked counter")
    print(
        f"{'python':<7} {'asyncio dfs/s':>13} {'cpu':>7} {'':>4}  {'trio dfs/s':>10} {'cpu':>7} "
        f"{'':>4}  {'reduced/full':>12} {'ratio':>6}"
    )
    for row in rows:
        cells = []
        for backend, width in (("asyncio", 13), ("trio", 10)):
            figures = row["rates"][backend]
            cells.append(
                f"{figures['dfs']:>{width},.0f} {figures['dfs_cpu']:>7,.0f} "
                f"{verdict(backend, figures['dfs_cpu'])}"
            )
        red = row["reduction"]
        fraction = f"{red['reduced']}/{red['full']}"
        ratio = red["reduced"] / red["full"]
        print(f"{row['python']:<7} {cells[0]}  {cells[1]}  {fraction:>12} {ratio:>6.3f}")
        if red["off"]:
            print(f"  {row['python']}: {red['off']}")
    print(
        f"targets (judged on cpu): asyncio >= {TARGETS['asyncio']:,}/s, "
        f"trio >= {TARGETS['trio']:,}/s (issue 11: on 3.11 and 3.12 at least)"
    )
    print(
        "cpu leaves out time other processes took from this one, not their slowing of it: on a "
        "busy machine both fall short of a quiet machine's figures"
    )


NETWORK_BOUND = 2


def explored_cpu_per_schedule(scenario: Callable[[], Awaitable[None]], n: int) -> float:
    """CPU seconds per schedule of a dfs exploration (bound 2) of up to ``n`` schedules."""
    started = time.process_time()
    report = asynclocks.explore(scenario, max_schedules=n, preemption_bound=NETWORK_BOUND)
    assert not report.failed, str(report)
    return (time.process_time() - started) / report.schedules


def stock_cpu_per_run(scenario: Callable[[], Awaitable[None]], runs: int) -> float:
    """CPU seconds per run on the stock asyncio loop, over real loopback sockets."""
    with asyncio.Runner() as runner:
        runner.run(scenario())  # type: ignore[arg-type]  # warm-up: imports, first connect
        started = time.process_time()
        for _ in range(runs):
            runner.run(scenario())  # type: ignore[arg-type]
        return (time.process_time() - started) / runs


def network_section(rounds: int, progress: bool = True) -> None:
    """The networked figures of issue 11: the aiohttp scenario and the bank through HTTP."""
    # Units: the aiohttp proof, each round, each trio bound, the bank's three modes.
    with ProgressBar("networked programs", rounds + 7, enabled=progress) as bar:
        _network_rows(rounds, bar)


def _network_rows(rounds: int, bar: ProgressBar) -> None:
    from services.bank.tools.race_scenarios import scenario as bank_scenario

    _tests_importable()
    # Imported here, not at the top: they import aiohttp, httpx and hypercorn.
    from tests.asynclocks.explore import net_scenarios

    # The tests' networked programs, with the handler's update locked: the same code the
    # tests prove, so the figures are of what the tests check.
    aiohttp_two_requests = net_scenarios.aiohttp_test_client_counter(True)
    trio_two_clients = net_scenarios.trio_counter(True)
    print("two concurrent requests, aiohttp TestServer + TestClient (the handler is locked)")
    asynclocks.explore(aiohttp_two_requests, max_schedules=20)  # warm up
    started = time.perf_counter()
    report = asynclocks.explore(aiohttp_two_requests, preemption_bound=NETWORK_BOUND)
    wall = time.perf_counter() - started
    assert report.exhaustive
    assert not report.failed
    bar.advance()
    print(
        f"  dfs, preemption bound {NETWORK_BOUND}: {report.schedules} schedules (exhaustive) in "
        f"{wall:.2f} s = {report.schedules / wall:,.0f} schedules/s"
    )
    explored: list[float] = []
    stock: list[float] = []
    for _ in range(rounds):  # interleaved, so machine load hits both alike
        explored.append(explored_cpu_per_schedule(aiohttp_two_requests, report.schedules))
        stock.append(stock_cpu_per_run(aiohttp_two_requests, 50))
        bar.advance()
    one_schedule = sorted(explored)[len(explored) // 2]
    one_run = sorted(stock)[len(stock) // 2]
    ratio = one_schedule / one_run
    verdict = "PASS" if ratio <= 1.0 else "MISS"
    print(
        f"  CPU per explored schedule (simulated network): {one_schedule * 1e6:,.0f} us; per stock "
        f"run (real loopback sockets): {one_run * 1e6:,.0f} us; median of {rounds} rounds"
    )
    print(f"  explored schedule / stock run: {ratio:.2f}x (target <= 1.0x) {verdict}")
    print()
    print("trio: serve_tcp + two open_tcp_stream clients (the handler is locked)")
    for bound in (None, 1, 2):
        started = time.perf_counter()
        # Unbounded: the budget of 2,000 schedules; bounded: until exhausted.
        budget = 2000 if bound is None else 100_000
        trio_report = asynclocks.explore(
            trio_two_clients, backend="trio", max_schedules=budget, preemption_bound=bound
        )
        seconds = time.perf_counter() - started
        assert not trio_report.failed
        bar.advance()
        coverage = "exhaustive" if trio_report.exhaustive else "not exhaustive"
        print(
            f"  preemption bound {bound if bound is not None else 'none'}: "
            f"{trio_report.schedules} schedules ({coverage}) in {seconds:.2f} s"
        )
    print()
    print("the bank through HTTP: two withdrawals of 60 from 100, create_app, memory store")
    started = time.perf_counter()
    found = asynclocks.explore(bank_scenario("none"), preemption_bound=NETWORK_BOUND)
    seconds = time.perf_counter() - started
    assert found.failed
    bar.advance()
    verdict = "PASS" if found.schedules <= 10 else "MISS"
    print(
        f"  lock mode none: overdraft found after {found.schedules} schedule(s) in "
        f"{seconds:.2f} s (target <= 10) {verdict}"
    )
    for mode in ("account", "global"):
        started = time.perf_counter()
        proof = asynclocks.explore(bank_scenario(mode), preemption_bound=NETWORK_BOUND)
        seconds = time.perf_counter() - started
        assert proof.exhaustive
        assert not proof.failed
        bar.advance()
        verdict = "PASS" if seconds < 60 else "MISS"
        print(
            f"  lock mode {mode}: proved, exhaustive within preemption bound {NETWORK_BOUND}: "
            f"{proof.schedules} schedules in {seconds:.2f} s (target < 60 s) {verdict}"
        )


# -- the bug suite (issue 13) -------------------------------------------------------------------

SUITE_SEEDS = 5  # seeds per sampling strategy: a median and a hit count, not one lucky run
SUITE_BUDGET = 2_000  # schedules per search for a bug
PROOF_TARGET = 30.0  # seconds for an unbounded proof of a fixed program


def _tests_importable() -> None:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))


def _suite_programs() -> list[Any]:
    _tests_importable()
    from tests.asynclocks.explore.library_programs import cases

    return cases()


def _to_find(
    scenario: Callable[[], Awaitable[None]],
    backend: Backend,
    strategy: Strategy,
    seeds: int,
    depth: int | None = None,
) -> list[int | None]:
    """Schedules each seed took to find the bug (None: not within the budget)."""
    found: list[int | None] = []
    for seed in range(1 if strategy == "dfs" else seeds):
        config = asynclocks.ExploreConfig(max_schedules=SUITE_BUDGET, seed=seed)
        if depth is not None:
            config = dataclasses.replace(config, pct_depth=depth)
        report = asynclocks.explore(scenario, backend, strategy, config=config)
        found.append(report.schedules if report.failed else None)
    return found


def _summary(found: list[int | None]) -> str:
    hits = sorted(n for n in found if n is not None)
    if not hits:
        return f"0/{len(found)}"
    median = hits[len(hits) // 2]
    return f"{len(hits)}/{len(found)} med {median}" if len(found) > 1 else str(median)


def suite(seeds: int, depths: list[int], progress: bool = True) -> None:
    """Per program and backend: schedules to find the bug per strategy; the fix's proof."""
    programs = _suite_programs()
    with ProgressBar("bug suite", len(programs), enabled=progress) as bar:
        missed, slow = _suite_rows(programs, seeds, bar)
    verdict = "PASS" if not missed else "MISS"
    print(
        f"  every bug found by every strategy on every seed: {verdict}"
        + (f" ({missed} strategy/program pairs missed on some seed)" if missed else "")
    )
    verdict = "PASS" if not slow else "MISS"
    print(f"  every fixed program proved without a bound in < {PROOF_TARGET:.0f} s: {verdict}")
    if depths:
        with ProgressBar("pct by depth", len(programs), enabled=progress) as bar:
            _pct_depth_rows(programs, seeds, depths, bar)


def _suite_rows(programs: list[Any], seeds: int, bar: ProgressBar) -> tuple[int, int]:
    """Print the suite's table, a row per program and backend; (misses, slow proofs)."""
    strategies: tuple[Strategy, ...] = ("dfs", "random", "pct", "portfolio")
    print(
        f"bug suite: schedules to find each bug (budget {SUITE_BUDGET}; random, pct and "
        f"portfolio over seeds 0-{seeds - 1}: found/seeds and the median), and the fixed "
        "version proved without a preemption bound (dfs)"
    )
    header = f"  {'program':28} {'backend':8}" + "".join(f"{s:>16}" for s in strategies)
    print(header + "   fixed: proof")
    missed = 0
    slow = 0
    for program, backend in programs:
        row = f"  {program.name:28} {backend:8}"
        for strategy in strategies:
            found = _to_find(program.buggy, backend, strategy, seeds)
            missed += any(n is None for n in found)
            row += f"{_summary(found):>16}"
        started = time.process_time()
        proof = asynclocks.explore(
            program.fixed,
            backend,
            config=asynclocks.ExploreConfig(max_schedules=1_000_000, time_limit=2 * PROOF_TARGET),
        )
        seconds = time.process_time() - started
        ok = proof.exhaustive and not proof.failed and seconds < PROOF_TARGET
        slow += not ok
        state = "exhaustive" if proof.exhaustive else "NOT exhaustive"
        if proof.failed:
            state = "FAILED"
        row += f"   {state}, {proof.schedules} schedules, {seconds:.2f} s CPU"
        print(row, flush=True)
        bar.advance()
    return missed, slow


def _pct_depth_rows(programs: list[Any], seeds: int, depths: list[int], bar: ProgressBar) -> None:
    print(f"pct by depth: found/seeds and median schedules (seeds 0-{seeds - 1})")
    print(f"  {'program':28} {'backend':8}" + "".join(f"{'d=' + str(d):>16}" for d in depths))
    totals = dict.fromkeys(depths, 0)
    for program, backend in programs:
        row = f"  {program.name:28} {backend:8}"
        for depth in depths:
            found = _to_find(program.buggy, backend, "pct", seeds, depth)
            totals[depth] += sum(n is not None for n in found)
            row += f"{_summary(found):>16}"
        print(row, flush=True)
        bar.advance()
    runs = len(programs) * seeds
    print(f"  {'hits':37}" + "".join(f"{f'{totals[d]}/{runs}':>16}" for d in depths))


# -- instructions per schedule (issue 13) -------------------------------------------------------

#: The revision ``--instructions`` compares with by default: the last tree with sleep sets alone.
INSTRUCTIONS_AGAINST = "1b26797"
#: This tree / the revision that still PASSes, in instructions per schedule.
INSTRUCTIONS_TARGET = 1.05
#: The C function of ``os.getppid()``: callgrind dumps its counters each time it is entered
#: (``--dump-before``), and nothing the explorer runs calls it.
_MARKER = "os_getppid"
TEN_STEPS: dict[Backend, Callable[[], Awaitable[None]]] = {
    "asyncio": asyncio_ten_steps,
    "trio": trio_ten_steps,
}


def instructions_worker() -> None:
    """Under callgrind: per backend, the ten-step dfs of a quarter of its tree, then of all of it,
    each between two markers.

    Prints one line per measured explore, ``backend<TAB>schedules<TAB>tree``, in the order of the
    explores, which is the order of callgrind's dumps.
    """
    for backend, scenario in TEN_STEPS.items():
        # Warm-up: imports, specialised bytecode, the footprint caches, free lists.
        tree = asynclocks.explore(scenario, backend=backend, max_schedules=100_000)
        assert tree.exhaustive
        for n in (tree.schedules // 4, tree.schedules):
            # A full collection costs the whole heap's worth and would land in one explore only:
            # frozen first, what is left is what the explore itself allocates.
            gc.collect()
            gc.freeze()
            os.getppid()
            report = asynclocks.explore(scenario, backend=backend, max_schedules=n)
            os.getppid()
            assert not report.failed
            print(f"{backend}\t{report.schedules}\t{tree.schedules}", flush=True)


@dataclasses.dataclass(frozen=True)
class Counted:
    """One backend's counts in one tree: its tree's size, and (schedules, instructions) of the
    shorter and of the whole explore."""

    tree: int
    short: tuple[int, int]
    whole: tuple[int, int]

    @property
    def per_schedule(self) -> float:
        """Instructions per schedule, what one explore costs once left out."""
        return (self.whole[1] - self.short[1]) / (self.whole[0] - self.short[0])

    @property
    def per_schedule_whole(self) -> float:
        """Instructions of the whole explore per schedule (what schedules/s measures)."""
        return self.whole[1] / self.whole[0]


def _dump_total(path: Path) -> int:
    for line in path.read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise RuntimeError(f"callgrind wrote no totals to {path}")


def count_instructions(root: Path) -> dict[str, Counted]:
    """The counts of the tree at ``root`` (its ``asynclocks`` first on the path), per backend."""
    with tempfile.TemporaryDirectory(prefix="asynclocks-callgrind-") as scratch:
        out = Path(scratch) / "cg.out"
        command = [
            "valgrind", "--tool=callgrind", "--dump-instr=no", f"--dump-before={_MARKER}",
            f"--callgrind-out-file={out}", sys.executable, str(Path(__file__).resolve()),
            "--instructions-worker",
        ]  # fmt: skip
        # Fixed hashes: dict and set layouts move counts a few percent from run to run.
        env = {**os.environ, "PYTHONHASHSEED": "0", "PYTHONPATH": str(root)}
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"the callgrind worker ({root}) failed:\n{done.stderr[-3000:]}")
        runs: dict[str, list[tuple[int, int]]] = {}
        trees: dict[str, int] = {}
        for index, line in enumerate(done.stdout.splitlines()):
            backend, schedules, tree = line.split("\t")
            # Dump 1 is the start-up; each explore is one dump (2, 4, ...), what came between
            # two explores the next.
            total = _dump_total(Path(f"{out}.{2 + 2 * index}"))
            runs.setdefault(backend, []).append((int(schedules), total))
            trees[backend] = int(tree)
    return {
        backend: Counted(trees[backend], short, whole) for backend, (short, whole) in runs.items()
    }


@contextlib.contextmanager
def revision_tree(revision: str) -> Iterator[Path]:
    """A temporary directory holding the files of ``revision`` (``git archive``: nothing is
    registered in the repository that an interrupted run would leave behind)."""
    found = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}"],
        capture_output=True,
        text=True,
        check=False,
    )
    if found.returncode != 0:
        raise SystemExit(f"--against {revision!r}: no such revision in {ROOT}")
    with tempfile.TemporaryDirectory(prefix="asynclocks-before-") as folder:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", "--format=tar", found.stdout.strip()],
            capture_output=True,
            check=True,
        )
        subprocess.run(["tar", "-x", "-C", folder], input=archive.stdout, check=True)
        yield Path(folder)


def instructions(against: str) -> bool:
    """Print instructions per schedule of this tree and ``against``; whether both backends PASS."""
    if shutil.which("valgrind") is None:
        raise SystemExit("--instructions needs valgrind, which is not installed")
    with revision_tree(against) as before, ThreadPoolExecutor(max_workers=2) as pool:
        # At the same time: an instruction count does not depend on what else runs.
        counting = {label: pool.submit(count_instructions, root) for label, root in
                    ((against, before), ("this tree", ROOT))}  # fmt: skip
        counts = {label: future.result() for label, future in counting.items()}
    print("two tasks x five awaits (ten steps), dfs: instructions per schedule (callgrind),")
    print("(I(tree) - I(tree / 4)) / (schedules between); in brackets I(tree) / tree, what one")
    print("explore of the whole tree costs per schedule")
    print(
        f"{'backend':<8} {'tree':>5} {against:>21} {'this tree':>21} {'ratio':>13}"
        f"  (target <= {INSTRUCTIONS_TARGET})"
    )
    passed = True
    for backend in TEN_STEPS:
        old, new = counts[against][backend], counts["this tree"][backend]
        if (old.tree, old.whole[0]) != (new.tree, new.whole[0]):
            raise SystemExit(
                f"{backend}: the trees differ ({old.tree} schedules at {against}, {new.tree} "
                "here): per schedule they measure different work"
            )
        ratio = new.per_schedule / old.per_schedule
        ratio_whole = new.per_schedule_whole / old.per_schedule_whole
        ok = ratio <= INSTRUCTIONS_TARGET and ratio_whole <= INSTRUCTIONS_TARGET
        passed &= ok
        cells = [f"{c.per_schedule:,.0f} ({c.per_schedule_whole:,.0f})" for c in (old, new)]
        print(
            f"{backend:<8} {new.tree:>5} {cells[0]:>21} {cells[1]:>21} "
            f"{ratio:>5.3f} ({ratio_whole:.3f})  {'PASS' if ok else 'MISS'}"
        )
    return passed


# -- tree sizes (issue 13's gate for changes to the search) -------------------------------------

#: Schedules per search in ``--trees``: deterministic where a proof would not end.
TREES_BUDGET = 30_000


def trees() -> None:
    """Print, per scenario and backend, the dfs tree (no preemption bound) as the search ran it:
    schedules, whether exhaustive, whether failed. A change that should keep the reduction prints
    the same lines before and after (diff the two outputs)."""
    _tests_importable()
    from tests.asynclocks.explore.test_dpor import own_state_then_counter

    runs: list[tuple[str, Backend, Callable[[], Awaitable[None]]]] = []
    for program, backend in _suite_programs():
        runs.append((f"{program.name} bug", backend, program.buggy))
        runs.append((f"{program.name} fix", backend, program.fixed))
    backends: tuple[Backend, ...] = ("asyncio", "trio")
    for backend in backends:
        for sleeps in (1, 2, 3):
            for keyed in (False, True):
                for locked in (True, False):
                    name = f"own {'key' if keyed else 'object'} x{sleeps}" + (
                        ", locked" if locked else ", unlocked"
                    )
                    runs.append(
                        (name, backend, own_state_then_counter(backend, sleeps, keyed, locked))
                    )
    runs += [
        ("ten steps", "asyncio", asyncio_ten_steps),
        ("ten steps", "trio", trio_ten_steps),
        ("locked counter", "asyncio", asyncio_locked_counter),
        ("locked counter", "trio", trio_locked_counter),
        ("idle then locked (3 tasks, 1 idle)", "asyncio", idle_then_locked(3, 1)),
        ("idle then locked (3 tasks, 2 idle)", "asyncio", idle_then_locked(3, 2)),
    ]
    config = asynclocks.ExploreConfig(max_schedules=TREES_BUDGET)
    for name, backend, scenario in runs:
        report = asynclocks.explore(scenario, backend, config=config)
        print(
            f"{name:40} {backend:8} {report.schedules:>6} schedules"
            f"{'  exhaustive' if report.exhaustive else ''}{'  failed' if report.failed else ''}",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schedules", type=int, default=3000, help="schedules per measurement")
    parser.add_argument(
        "--pythons",
        help="comma-separated versions or interpreter paths to measure each under, in one table",
    )
    parser.add_argument(
        "--network", action="store_true", help="only the networked programs (issue 11)"
    )
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (--network)")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--suite", action="store_true", help="only the bug suite: strategies and proofs (issue 13)"
    )
    parser.add_argument(
        "--seeds", type=int, default=SUITE_SEEDS, help="seeds per strategy (--suite)"
    )
    parser.add_argument(
        "--pct-depths", default="", help="comma-separated pct depths to compare (--suite)"
    )
    parser.add_argument(
        "--quiet", action="store_true", help="no progress display on stderr (--suite, --network)"
    )
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="count instructions per schedule (callgrind) against --against; a few minutes",
    )
    parser.add_argument(
        "--against",
        metavar="REV",
        default=INSTRUCTIONS_AGAINST,
        help=f"the revision --instructions compares with (default {INSTRUCTIONS_AGAINST})",
    )
    parser.add_argument("--instructions-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--trees",
        action="store_true",
        help=f"only the dfs tree of every suite program and scenario (up to {TREES_BUDGET:,} "
        "schedules): diff before and after a change to the search",
    )
    args = parser.parse_args()
    if args.trees:
        trees()
    elif args.instructions_worker:
        instructions_worker()
    elif args.instructions:
        sys.exit(0 if instructions(args.against) else 1)
    elif args.suite:
        depths = [int(d) for d in args.pct_depths.split(",") if d.strip()]
        suite(args.seeds, depths, progress=not args.quiet)
    elif args.network:
        network_section(args.rounds, progress=not args.quiet)
    elif args.json:  # a child of --pythons: the figures, machine-readable
        version = f"{sys.version_info[0]}.{sys.version_info[1]}"
        figures = {"python": version, "rates": rates(args.schedules), "reduction": reduction()}
        print(json.dumps(figures))
    elif args.pythons:
        pythons = [entry.strip() for entry in args.pythons.split(",") if entry.strip()]
        across(pythons, args.schedules)
    else:
        single(args.schedules)
        network_section(args.rounds, progress=not args.quiet)


if __name__ == "__main__":
    main()
