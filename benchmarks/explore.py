"""How fast the explorer runs schedules, against running the same scenario on the stock loop.

Prints, for each backend:

- schedules per second that ``explore`` (dfs) runs for a two-task, ten-step scenario, and the
  ratio of one explored schedule's cost to one ``asyncio.run``/``trio.run`` of the same scenario
  (measured here, in the same process);
- how many schedules and seconds it takes to prove the three-task locked counter.

Targets (issue 5): >= 10,000 schedules/s on asyncio, >= 3,000 on trio, the proof in under 5 s.
Run: ``python benchmarks/explore.py [--schedules N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable

import trio

import asynclocks
from asynclocks import Backend, Strategy

STEPS_PER_TASK = 5  # two tasks x five awaits = ten steps


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
    """Schedules and seconds for an exhaustive dfs, with or without sleep sets (asyncio)."""
    from asynclocks._explore._api import drive
    from asynclocks._explore._strategies import DepthFirst

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
    best = 0.0
    for _ in range(5):
        report = asynclocks.explore(scenario, backend=backend, strategy=strategy, max_schedules=n)
        assert not report.failed
        best = max(best, report.schedules / report.seconds)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schedules", type=int, default=3000, help="schedules per measurement")
    args = parser.parse_args()
    Case = tuple[Callable[[], Awaitable[None]], Callable[[], Awaitable[None]], int]
    cases: dict[Backend, Case] = {
        "asyncio": (asyncio_ten_steps, asyncio_locked_counter, 10_000),
        "trio": (trio_ten_steps, trio_locked_counter, 3_000),
    }
    print("two tasks x five awaits (ten steps); schedules/s, best of 5")
    print("  dfs explores the whole tree (252 interleavings, sleep sets on); random never ends")
    print(
        f"{'backend':<8} {'dfs/s':>8} {'random/s':>9} {'target':>7} {'stock run':>10} "
        f"{'dfs schedule / stock run':>25}"
    )
    proofs = []
    for backend, (scenario, locked, target) in cases.items():
        asynclocks.explore(scenario, backend=backend, max_schedules=200)  # warm up
        dfs = rate(backend, scenario, "dfs", args.schedules)
        random = rate(backend, scenario, "random", args.schedules)
        stock = stock_run_seconds(backend, scenario, 200)
        ratio = (1 / dfs) / stock
        print(
            f"{backend:<8} {dfs:>8,.0f} {random:>9,.0f} {target:>7,} {stock * 1e6:>8.0f}us "
            f"{ratio:>24.2f}x"
        )
        started = time.perf_counter()
        proof = asynclocks.explore(locked, backend=backend)
        seconds = time.perf_counter() - started
        assert proof.exhaustive
        assert not proof.failed
        proofs.append((backend, proof.schedules, seconds))
    print()
    print("three-task locked counter, dfs, no preemption bound (target: proved in < 5 s)")
    for backend, schedules, seconds in proofs:
        print(f"  {backend:<8} proved exhaustively: {schedules} schedules in {seconds:.3f} s")
    print()
    print("partial-order reduction: three tasks, one unshared await each, then the locked counter")
    pruned = idle_then_locked(3, 1)
    full, full_seconds = full_tree(pruned, reduce=False)
    reduced, reduced_seconds = full_tree(pruned, reduce=True)
    print(f"  without sleep sets: {full} schedules in {full_seconds:.2f} s")
    print(
        f"  with sleep sets:    {reduced} schedules in {reduced_seconds:.2f} s "
        f"({full / reduced:.1f}x fewer)"
    )


if __name__ == "__main__":
    main()
