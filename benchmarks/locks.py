"""What a KeyedLock costs next to the locks it replaces, measured in one run.

Run: ``.venv/bin/python benchmarks/locks.py`` (about a minute) or ``--quick`` (a few seconds).

Uncontended: one task acquires and releases a lock in a loop (``async with lock: pass``); the
figure is ns per acquire+release, the best of many short batches, the kinds taking turns batch
by batch so that bursts of load on a noisy machine hit them all alike.

Contended: 100 tasks each take 1000 locks over 10 keys, yielding once inside every critical
section (read, yield, write), so most acquisitions queue behind another task. Baselines are the
usual hand-rolled alternative, a ``defaultdict`` of ``asyncio.Lock`` (or ``trio.Lock``), which
never forgets a key.

Times are the thread's CPU time (``time.thread_time_ns``), so that other processes on a busy
machine do not inflate them. ``--instructions`` counts instructions instead, under valgrind's
callgrind (``--dump-before=os_getppid``: an ``os.getppid()`` before and after each run dumps its
count): per operation, the difference between a run of ``N`` operations and one of ``2N``, so
that start-up and set-up cancel out, with ``PYTHONHASHSEED=0`` and the heap frozen before each
run (a full collection costs the whole heap's worth and would land in one run only). The counts
repeat from run to run within a fraction of a percent, where CPU times on a shared machine do
not; the contended workload is smaller there (50 acquisitions per task).

Targets (printed as PASS/MISS): KeyedLock on asyncio within 1.5x of asyncio.Lock uncontended,
and within 1.2x of the dict of asyncio.Lock contended.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import anyio
import trio

from asynclocks import KeyedLock
from asynclocks._progress import ProgressBar

# CPU time of this thread, not wall-clock time: the event loop runs in one thread, and time
# spent descheduled while other processes use the (shared, small) machine is not the lock's.
_clock = time.thread_time_ns

UNCONTENDED_TARGET = 1.5
CONTENDED_TARGET = 1.2

Timer = Callable[[int], Awaitable[int]]  # run n operations, return elapsed CPU ns


# ---------------------------------------------------------------- uncontended loops, asyncio


async def _asyncio_lock(n: int) -> int:
    lock = asyncio.Lock()
    start = _clock()
    for _ in range(n):
        async with lock:
            pass
    return _clock() - start


async def _anyio_lock(n: int) -> int:
    lock = anyio.Lock()
    start = _clock()
    for _ in range(n):
        async with lock:
            pass
    return _clock() - start


async def _keyed_lock(n: int) -> int:
    locks = KeyedLock()
    start = _clock()
    for _ in range(n):
        async with locks("account-1"):
            pass
    return _clock() - start


async def _dict_of_asyncio_locks(n: int) -> int:
    locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
    start = _clock()
    for _ in range(n):
        async with locks["account-1"]:
            pass
    return _clock() - start


# ---------------------------------------------------------------- uncontended loops, trio


async def _trio_lock(n: int) -> int:
    lock = trio.Lock()
    start = _clock()
    for _ in range(n):
        async with lock:
            pass
    return _clock() - start


async def _dict_of_trio_locks(n: int) -> int:
    locks: defaultdict[str, trio.Lock] = defaultdict(trio.Lock)
    start = _clock()
    for _ in range(n):
        async with locks["account-1"]:
            pass
    return _clock() - start


# ---------------------------------------------------------------- contended workload


@dataclass(frozen=True)
class Workload:
    tasks: int
    per_task: int
    keys: int

    @property
    def operations(self) -> int:
        return self.tasks * self.per_task


def _check(counts: dict[int, int], work: Workload) -> None:
    # A lock that let two tasks into the same key would lose increments; refuse to report a
    # speed for a broken lock.
    if sum(counts.values()) != work.operations:
        raise AssertionError(f"lost updates: {sum(counts.values())} != {work.operations}")


async def _contended_keyed_asyncio(work: Workload) -> int:
    locks = KeyedLock()
    counts = dict.fromkeys(range(work.keys), 0)

    async def worker(i: int) -> None:
        for j in range(work.per_task):
            key = (i + j) % work.keys
            async with locks(key):
                value = counts[key]
                await asyncio.sleep(0)
                counts[key] = value + 1

    start = _clock()
    await asyncio.gather(*(worker(i) for i in range(work.tasks)))
    elapsed = _clock() - start
    _check(counts, work)
    assert len(locks) == 0
    return elapsed


async def _contended_dict_asyncio(work: Workload) -> int:
    locks: defaultdict[int, asyncio.Lock] = defaultdict(asyncio.Lock)
    counts = dict.fromkeys(range(work.keys), 0)

    async def worker(i: int) -> None:
        for j in range(work.per_task):
            key = (i + j) % work.keys
            async with locks[key]:
                value = counts[key]
                await asyncio.sleep(0)
                counts[key] = value + 1

    start = _clock()
    await asyncio.gather(*(worker(i) for i in range(work.tasks)))
    elapsed = _clock() - start
    _check(counts, work)
    return elapsed


async def _contended_keyed_trio(work: Workload) -> int:
    locks = KeyedLock()
    counts = dict.fromkeys(range(work.keys), 0)

    async def worker(i: int) -> None:
        for j in range(work.per_task):
            key = (i + j) % work.keys
            async with locks(key):
                value = counts[key]
                await trio.lowlevel.checkpoint()
                counts[key] = value + 1

    start = _clock()
    async with trio.open_nursery() as nursery:
        for i in range(work.tasks):
            nursery.start_soon(worker, i)
    elapsed = _clock() - start
    _check(counts, work)
    assert len(locks) == 0
    return elapsed


async def _contended_dict_trio(work: Workload) -> int:
    locks: defaultdict[int, trio.Lock] = defaultdict(trio.Lock)
    counts = dict.fromkeys(range(work.keys), 0)

    async def worker(i: int) -> None:
        for j in range(work.per_task):
            key = (i + j) % work.keys
            async with locks[key]:
                value = counts[key]
                await trio.lowlevel.checkpoint()
                counts[key] = value + 1

    start = _clock()
    async with trio.open_nursery() as nursery:
        for i in range(work.tasks):
            nursery.start_soon(worker, i)
    elapsed = _clock() - start
    _check(counts, work)
    return elapsed


# ---------------------------------------------------------------- driver

ASYNCIO_UNCONTENDED: dict[str, Timer] = {
    "asyncio.Lock": _asyncio_lock,
    "anyio.Lock (asyncio)": _anyio_lock,
    "KeyedLock (asyncio, one key)": _keyed_lock,
    "dict of asyncio.Lock": _dict_of_asyncio_locks,
}
TRIO_UNCONTENDED: dict[str, Timer] = {
    "trio.Lock": _trio_lock,
    "anyio.Lock (trio)": _anyio_lock,
    "KeyedLock (trio, one key)": _keyed_lock,
    "dict of trio.Lock": _dict_of_trio_locks,
}
ASYNCIO_CONTENDED: dict[str, Callable[[Workload], Awaitable[int]]] = {
    "KeyedLock (asyncio)": _contended_keyed_asyncio,
    "dict of asyncio.Lock": _contended_dict_asyncio,
}
TRIO_CONTENDED: dict[str, Callable[[Workload], Awaitable[int]]] = {
    "KeyedLock (trio)": _contended_keyed_trio,
    "dict of trio.Lock": _contended_dict_trio,
}


def _record(best: dict[str, float], name: str, elapsed_ns: int, ops: int) -> None:
    per_op = elapsed_ns / ops
    best[name] = min(best.get(name, per_op), per_op)


def _nothing() -> None:
    pass


def measure_uncontended(
    n: int, repeats: int, batches: int, advance: Callable[[], None] = _nothing
) -> dict[str, float]:
    """Return the best ns per acquire+release of every kind.

    Each of ``repeats`` rounds starts a fresh event loop per backend and times ``batches``
    batches of ``n`` operations per kind, the kinds taking turns batch by batch, so that a
    burst of load from elsewhere on the machine hits them alike; the best batch counts.
    ``advance`` is called after each round (between timings, never inside one).
    """
    best: dict[str, float] = {}

    async def asyncio_round() -> None:
        for timer in ASYNCIO_UNCONTENDED.values():
            await timer(n)  # warm-up: specialise the bytecode, fill free lists
        for _ in range(batches):
            for name, timer in ASYNCIO_UNCONTENDED.items():
                _record(best, name, await timer(n), n)

    async def trio_round() -> None:
        for timer in TRIO_UNCONTENDED.values():
            await timer(n)
        for _ in range(batches):
            for name, timer in TRIO_UNCONTENDED.items():
                _record(best, name, await timer(n), n)

    for _ in range(repeats):
        asyncio.run(asyncio_round())
        advance()
        trio.run(trio_round)
        advance()
    return best


def measure_contended(
    work: Workload, repeats: int, advance: Callable[[], None] = _nothing
) -> dict[str, float]:
    """Return the best ns per acquisition of every kind under contention."""
    best: dict[str, float] = {}

    async def asyncio_round() -> None:
        for name, run in ASYNCIO_CONTENDED.items():
            _record(best, name, await run(work), work.operations)

    async def trio_round() -> None:
        for name, run in TRIO_CONTENDED.items():
            _record(best, name, await run(work), work.operations)

    for _ in range(repeats):
        asyncio.run(asyncio_round())
        advance()
        trio.run(trio_round)
        advance()
    return best


# ---------------------------------------------------------------- instruction counts

#: The C function of ``os.getppid()``: callgrind dumps its counts each time it is entered
#: (``--dump-before``), and nothing measured calls it.
_MARKER = "os_getppid"


def _between_markers(run: Callable[[], object]) -> None:
    # A full collection costs the whole heap's worth (every module loaded): frozen first, the
    # collections left in the count are those of the objects the run makes.
    gc.collect()
    gc.freeze()
    os.getppid()
    run()
    os.getppid()


def _uncontended_asyncio(timer: Timer, size: int) -> None:
    asyncio.run(timer(size))  # type: ignore[arg-type]


def _uncontended_trio(timer: Timer, size: int) -> None:
    trio.run(timer, size)


def _contended_asyncio(run: Callable[[Workload], Awaitable[int]], size: int) -> None:
    asyncio.run(run(_sized(size)))  # type: ignore[arg-type]


def _contended_trio(run: Callable[[Workload], Awaitable[int]], size: int) -> None:
    trio.run(run, _sized(size))


def _runners(n: int, per_task: int) -> list[tuple[str, str, Callable[[int], None], int]]:
    """(table, kind, run with a size, the size of ``n`` operations) for every kind measured."""
    runners: list[tuple[str, str, Callable[[int], None], int]] = []
    for name, timer in ASYNCIO_UNCONTENDED.items():
        runners.append(("uncontended", name, partial(_uncontended_asyncio, timer), n))
    for name, timer in TRIO_UNCONTENDED.items():
        runners.append(("uncontended", name, partial(_uncontended_trio, timer), n))
    for name, run in ASYNCIO_CONTENDED.items():
        runners.append(("contended", name, partial(_contended_asyncio, run), per_task))
    for name, run in TRIO_CONTENDED.items():
        runners.append(("contended", name, partial(_contended_trio, run), per_task))
    return runners


def _sized(per_task: int) -> Workload:
    return Workload(CALLGRIND_WORK.tasks, per_task, CALLGRIND_WORK.keys)


#: The contended workload under callgrind: 100 tasks over 10 keys as in the timed runs, with
#: fewer acquisitions per task (callgrind runs some fifty times slower).
CALLGRIND_WORK = Workload(100, 50, 10)


def instructions_worker(n: int, per_task: int) -> None:
    """Run each kind at its size and at twice that (after a warm-up), between markers.

    Prints one line per measured run, ``table<TAB>kind<TAB>operations``, in the order of the
    runs, which is the order of callgrind's dumps.
    """
    for table, name, run, size in _runners(n, per_task):
        run(size)  # warm-up: specialise the bytecode, fill free lists
        for scale in (1, 2):
            _between_markers(partial(run, size * scale))
            operations = size * scale * (CALLGRIND_WORK.tasks if table == "contended" else 1)
            print(f"{table}\t{name}\t{operations}", flush=True)


def measure_instructions(n: int, per_task: int) -> tuple[dict[str, float], dict[str, float]]:
    """Instructions per operation of every kind, uncontended and contended, under callgrind.

    The difference between the runs of ``n`` and ``2n`` operations (``per_task`` and twice
    that, contended), over the difference in operations: start-up and each run's set-up (a
    fresh loop, the tasks) cancel out.
    """
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "cg.out"
        command = [
            "valgrind", "--tool=callgrind", f"--dump-before={_MARKER}",
            f"--callgrind-out-file={out}", sys.executable, str(Path(__file__).resolve()),
            "--instructions-worker", str(n), str(per_task),
        ]  # fmt: skip
        env = {**os.environ, "PYTHONHASHSEED": "0"}  # dict layouts move counts a few percent
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"the callgrind worker failed:\n{done.stderr[-2000:]}")
        runs = [line.split("\t") for line in done.stdout.splitlines()]
        counts: dict[tuple[str, str], list[tuple[int, int]]] = {}
        for index, (table, name, operations) in enumerate(runs):
            # Dump 1 is the start-up; each run is one dump (2, 4, ...), what came between
            # two runs the next.
            text = Path(f"{out}.{2 + 2 * index}").read_text()
            total = next(
                int(line.split()[1])
                for line in text.splitlines()
                if line.startswith(("summary:", "totals:"))
            )
            counts.setdefault((table, name), []).append((int(operations), total))
    figures: dict[str, dict[str, float]] = {"uncontended": {}, "contended": {}}
    for (table, name), ((low_ops, low), (high_ops, high)) in counts.items():
        figures[table][name] = (high - low) / (high_ops - low_ops)
    return figures["uncontended"], figures["contended"]


def _verdict(ratio: float, target: float) -> str:
    return f"{'PASS' if ratio <= target else 'MISS'} (target <= {target}x)"


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the figures, the ratios and the verdicts."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a short, rougher run")
    parser.add_argument("--quiet", action="store_true", help="no progress display on stderr")
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="count instructions per operation under valgrind's callgrind instead of timing "
        "(repeatable on a busy machine; a few minutes)",
    )
    parser.add_argument("--instructions-worker", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.instructions_worker:
        instructions_worker(*args.instructions_worker)
        return 0
    # Many short repeats and the minimum: on a shared, noisy machine the best round is the one
    # least disturbed, and interleaving the kinds exposes them to the same disturbances.
    if args.quick:
        n, repeats, batches, work, contended_repeats = 5_000, 3, 6, Workload(100, 100, 10), 3
    else:
        n, repeats, batches, work, contended_repeats = 20_000, 5, 8, Workload(100, 1000, 10), 5

    print(f"Python {sys.version.split()[0]}, trio {trio.__version__}")
    if args.instructions:
        if shutil.which("valgrind") is None:
            print("locks: --instructions needs valgrind, which is not installed", file=sys.stderr)
            return 2
        n, work = 2_000, CALLGRIND_WORK
        print(
            f"\nUncontended acquire+release, instructions/op (callgrind: the difference of "
            f"{n:,} and {2 * n:,} operations):"
        )
        un, co = measure_instructions(n, work.per_task)
        unit = "instructions/acquisition (the same difference)"
    else:
        print(
            f"\nUncontended acquire+release, CPU ns/op "
            f"(best of {repeats * batches} interleaved batches of {n:,}):"
        )
        rounds = 2 * (repeats + contended_repeats)  # one per backend per repeat
        with ProgressBar("benchmark rounds", rounds, enabled=not args.quiet) as progress:
            un = measure_uncontended(n, repeats, batches, progress.advance)
            co = measure_contended(work, contended_repeats, progress.advance)
        unit = f"CPU ns/acquisition (best of {contended_repeats})"
    for name, value in un.items():
        print(f"  {name:<30} {value:8.0f}")

    print(
        f"\nContended: {work.tasks} tasks x {work.per_task} acquisitions over {work.keys} keys, "
        f"{unit}:"
    )
    for name, value in co.items():
        print(f"  {name:<30} {value:8.0f}")

    ratios = [
        (
            "KeyedLock / asyncio.Lock, uncontended (asyncio)",
            un["KeyedLock (asyncio, one key)"] / un["asyncio.Lock"],
            UNCONTENDED_TARGET,
        ),
        (
            "KeyedLock / dict of asyncio.Lock, contended",
            co["KeyedLock (asyncio)"] / co["dict of asyncio.Lock"],
            CONTENDED_TARGET,
        ),
        (
            "KeyedLock / dict of asyncio.Lock, uncontended",
            un["KeyedLock (asyncio, one key)"] / un["dict of asyncio.Lock"],
            None,
        ),
        (
            "KeyedLock / trio.Lock, uncontended (trio)",
            un["KeyedLock (trio, one key)"] / un["trio.Lock"],
            None,
        ),
        (
            "KeyedLock / dict of trio.Lock, contended",
            co["KeyedLock (trio)"] / co["dict of trio.Lock"],
            None,
        ),
    ]
    print(
        "  (anyio.Lock yields to the event loop on every acquire unless fast_acquire=True;\n"
        "   KeyedLock follows each backend's own lock: no yield on asyncio, a checkpoint on trio)"
    )
    print("\nRatios:")
    missed = False
    for label, ratio, target in ratios:
        verdict = "" if target is None else "  " + _verdict(ratio, target)
        missed |= target is not None and ratio > target
        print(f"  {label:<50} {ratio:5.2f}x{verdict}")
    return 1 if missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
