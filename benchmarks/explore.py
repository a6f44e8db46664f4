"""How fast the explorer runs schedules, against running the same scenario on the stock loop.

Prints, for each backend:

- schedules per second that ``explore`` (dfs) runs for a two-task, ten-step scenario, and the
  ratio of one explored schedule's cost to one ``asyncio.run``/``trio.run`` of the same scenario
  (measured here, in the same process);
- how many schedules and seconds it takes to prove the three-task locked counter.

Targets (issue 5): >= 10,000 schedules/s on asyncio, >= 3,000 on trio, the proof in under 5 s.

Networked programs (issue 11; ``--network`` runs only this part):

- two concurrent requests to an aiohttp ``TestServer`` through a ``TestClient``: schedules/s that
  ``explore`` runs over the simulated loopback network, and the CPU time of one explored schedule
  over the CPU time of one stock run of the same program over real loopback sockets with the stock
  asyncio loop (one ``asyncio.Runner`` reused, as the explorer reuses its loop), in interleaved
  rounds; target <= 1.0x;
- the bank through HTTP (``services.bank.race_scenarios``): schedules to find lock mode
  ``none``'s overdraft (target <= 10) and seconds to prove ``account`` (exhaustive within
  preemption bound 2; target < 60 s).

Run: ``python benchmarks/explore.py [--schedules N] [--network]``.
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


async def aiohttp_two_requests() -> None:
    """Two concurrent POSTs to a locked counter on an aiohttp TestServer, via a TestClient."""
    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    counter = [0]
    lock = asyncio.Lock()

    async def increment(request: web.Request) -> web.Response:
        async with lock:
            seen = counter[0]
            await asyncio.sleep(0)
            counter[0] = seen + 1
        return web.json_response({"counter": counter[0]})

    app = web.Application()
    app.router.add_post("/increment", increment)
    async with TestClient(TestServer(app)) as client:

        async def post() -> None:
            response = await client.post("/increment")
            assert response.status == 200
            await response.json()

        async with asyncio.TaskGroup() as tg:
            tg.create_task(post())
            tg.create_task(post())
    assert counter[0] == 2


NETWORK_BOUND = 2


async def trio_two_clients() -> None:
    """trio.serve_tcp + two trio.open_tcp_stream clients; the handler's update is locked."""
    import functools

    counter = [0]
    lock = trio.Lock()

    async def handler(stream: trio.SocketStream) -> None:
        await stream.receive_some(100)
        async with lock:
            seen = counter[0]
            await trio.lowlevel.checkpoint()
            counter[0] = seen + 1
        await stream.send_all(b"ok")
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        serve = functools.partial(trio.serve_tcp, handler, 0, host="127.0.0.1")
        listeners = await nursery.start(serve)
        port = listeners[0].socket.getsockname()[1]

        async def client() -> None:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            await stream.send_all(b"hi")
            assert await stream.receive_some(100) == b"ok"
            await stream.aclose()

        async with trio.open_nursery() as clients:
            clients.start_soon(client)
            clients.start_soon(client)
        nursery.cancel_scope.cancel()
    assert counter[0] == 2


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


def network_section(rounds: int) -> None:
    """The networked figures of issue 11: the aiohttp scenario and the bank through HTTP."""
    from services.bank.race_scenarios import scenario as bank_scenario

    print("two concurrent requests, aiohttp TestServer + TestClient (the handler is locked)")
    asynclocks.explore(aiohttp_two_requests, max_schedules=20)  # warm up
    started = time.perf_counter()
    report = asynclocks.explore(aiohttp_two_requests, preemption_bound=NETWORK_BOUND)
    wall = time.perf_counter() - started
    assert report.exhaustive
    assert not report.failed
    print(
        f"  dfs, preemption bound {NETWORK_BOUND}: {report.schedules} schedules (exhaustive) in "
        f"{wall:.2f} s = {report.schedules / wall:,.0f} schedules/s"
    )
    explored: list[float] = []
    stock: list[float] = []
    for _ in range(rounds):  # interleaved, so machine load hits both alike
        explored.append(explored_cpu_per_schedule(aiohttp_two_requests, report.schedules))
        stock.append(stock_cpu_per_run(aiohttp_two_requests, 50))
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
        verdict = "PASS" if seconds < 60 else "MISS"
        print(
            f"  lock mode {mode}: proved, exhaustive within preemption bound {NETWORK_BOUND}: "
            f"{proof.schedules} schedules in {seconds:.2f} s (target < 60 s) {verdict}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schedules", type=int, default=3000, help="schedules per measurement")
    parser.add_argument(
        "--network", action="store_true", help="only the networked programs (issue 11)"
    )
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (--network)")
    args = parser.parse_args()
    if args.network:
        network_section(args.rounds)
        return
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
    print()
    network_section(args.rounds)


if __name__ == "__main__":
    main()
