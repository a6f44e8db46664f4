"""Instructions per bank operation on the lock/ledger/store side, this tree against a revision.

Run: ``.venv/bin/python benchmarks/ledger.py`` (a few minutes; ``--quick`` for a rougher,
shorter run). It needs valgrind and git.

What is measured: the bank's own ``Ledger`` and ``Locking`` on the memory store (no HTTP), in
lock modes ``account``, ``global`` and ``none``, with the request timeout on as the server has it
by default (``Locking(wait_timeout=BankConfig.request_timeout)``). 64 tasks each run the same
share of operations (deposits, every 16th a transfer), with no delay in the store's race window
(a bare checkpoint), so that every operation is a lock taken, a checkpoint and a lock released:

- ``contended``: the accounts are 64, each operation's drawn at random (seeded): with 64 tasks
  on 64 accounts, many acquisitions queue behind another task;
- ``uncontended``: the accounts are 4,096, taken in turn: no two tasks ever want one account at
  once (a transfer's second account is half the accounts further on).

The figure is valgrind's instruction count (``--tool=callgrind``), repeatable where CPU time on
this shared machine is not: each workload runs three times in one process, a warm-up, ``N``
operations, then ``2N``, and a marker call (``os.getppid()``, with
``--dump-before=os_getppid``) before and after each run makes callgrind dump a count per run;
the difference of the last two over ``N`` is the cost of one operation, start-up and set-up
cancelling out. ``PYTHONHASHSEED=0``, as dict layouts move the counts by a few percent, and the
heap is frozen (``gc.freeze()``) before each run, so that a full collection, whose cost is the
whole heap's, does not land in one run and not the other: run to run, the counts of one run
length agree within 0.3%.

The revisions compared (``--against``, by default ac3b791 and 46cd63c) are exported with
``git archive`` into a temporary directory and measured the same way, importing their own
modules; :func:`_bank` adapts to their API in one place (46cd63c has no ``Ledger`` and keeps
its store in ``services/bank/store.py``; neither has the request timeout, so they run without
it). Target (PASS/MISS): this tree within 5% of ac3b791, per mode and workload.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import os
import random
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MODES = ("account", "global", "none")
WORKLOADS = {"contended": 64, "uncontended": 4096}  # workload -> accounts
TASKS = 64
TRANSFER_EVERY = 16
TARGET = 1.05
BASELINE = "ac3b791"
DEFAULT_AGAINST = ("ac3b791", "46cd63c")
#: The server's default request timeout, for trees whose BankConfig cannot say.
FALLBACK_TIMEOUT = 10.0
MARKER = "os_getppid"  # the C function of os.getppid(), which nothing in the workload calls


# ---------------------------------------------------------------- the worker (under valgrind)

Deposit = Callable[[str, int], Awaitable[object]]
Transfer = Callable[[str, str, int], Awaitable[object]]


@dataclass(frozen=True)
class _Bank:
    deposit: Deposit
    transfer: Transfer
    create: Callable[[str, int], Awaitable[object]]
    timeout: float | None  # the request timeout the locks run with; None if the tree has none


def _bank(mode: str) -> _Bank:
    """The tree's ledger in ``mode`` on a fresh memory store: the one shim over the revisions."""
    from services.bank import locking as locking_module

    try:
        from services.bank.run.config import BankConfig

        timeout: float | None = getattr(BankConfig(), "request_timeout", FALLBACK_TIMEOUT)
    except ImportError:
        timeout = FALLBACK_TIMEOUT
    try:
        locking: Any = locking_module.Locking(mode, wait_timeout=timeout)
    except TypeError:  # before the request timeout: no deadline on the locks
        locking, timeout = locking_module.Locking(mode), None
    try:
        from services.bank.ledger import Ledger
        from services.bank.stores.memory import MemoryStore
    except ImportError:
        # 46cd63c: no Ledger; its request handlers entered the guard around the store call.
        store: Any = importlib.import_module("services.bank.store").MemoryStore()

        async def deposit(account: str, amount: int) -> object:
            async with locking.guard(account) as strategy:
                return await store.deposit(account, amount, atomic=strategy.atomic_store)

        async def transfer(source: str, target: str, amount: int) -> object:
            async with locking.guard(source, target) as strategy:
                return await store.transfer(source, target, amount, atomic=strategy.atomic_store)

        return _Bank(deposit, transfer, store.create_account, timeout)
    ledger = Ledger(MemoryStore(), locking)
    return _Bank(ledger.deposit, ledger.transfer, ledger.open_account, timeout)


def _plan(workload: str, operations: int, seed: int) -> list[list[tuple[str, ...]]]:
    """Each task's operations: ``(account,)`` for a deposit, ``(source, target)`` a transfer."""
    accounts = WORKLOADS[workload]
    rng = random.Random(seed)
    per_task = operations // TASKS
    plans: list[list[tuple[str, ...]]] = [[] for _ in range(TASKS)]
    for step in range(per_task):
        for task in range(TASKS):
            if workload == "contended":
                first = rng.randrange(accounts)
                second = (first + 1 + rng.randrange(accounts - 1)) % accounts
            else:
                # In turn: the 64 operations in flight at once are 64 consecutive accounts, and a
                # transfer's second account is half the ring away, so none is wanted twice.
                first = (step * TASKS + task) % accounts
                second = (first + accounts // 2) % accounts
            if (step * TASKS + task) % TRANSFER_EVERY == TRANSFER_EVERY - 1:
                plans[task].append((f"acct-{first}", f"acct-{second}"))
            else:
                plans[task].append((f"acct-{first}",))
    return plans


async def _run(mode: str, workload: str, plans: list[list[tuple[str, ...]]]) -> float | None:
    bank = _bank(mode)
    for number in range(WORKLOADS[workload]):
        await bank.create(f"acct-{number}", 1_000_000)
    deposit, transfer = bank.deposit, bank.transfer

    async def client(plan: list[tuple[str, ...]]) -> None:
        for operation in plan:
            if len(operation) == 1:
                await deposit(operation[0], 1)
            else:
                await transfer(operation[0], operation[1], 1)

    await asyncio.gather(*(client(plan) for plan in plans))
    return bank.timeout


def worker(operations: int) -> None:
    """Run every mode and workload: warm-up, ``operations``, twice that, between markers."""
    timeouts = set()
    for mode in MODES:
        for workload in WORKLOADS:
            for count in (operations, operations, 2 * operations):
                plans = _plan(workload, count, seed=1)
                # Out of the count: a full collection's cost is the whole heap's (the modules
                # loaded), which would land in whichever run it happens to fall; frozen, the
                # collections left are those of the objects the run itself makes.
                gc.collect()
                gc.freeze()
                os.getppid()  # callgrind dumps here what ran since the last marker...
                timeouts.add(asyncio.run(_run(mode, workload, plans)))
                os.getppid()  # ... and here the run
    print(f"timeout {timeouts.pop()}")


# ---------------------------------------------------------------- the driver


def _totals(path: Path) -> int:
    for line in path.read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise RuntimeError(f"callgrind wrote no totals in {path}")


def measure(tree: Path, operations: int) -> tuple[dict[tuple[str, str], float], str]:
    """Instructions per operation of every (mode, workload) in ``tree``, and its timeout."""
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "cg.out"
        command = [
            "valgrind", "--tool=callgrind", f"--dump-before={MARKER}",
            f"--callgrind-out-file={out}", sys.executable, str(Path(__file__).resolve()),
            "--worker", str(operations),
        ]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONHASHSEED": "0"}
        done = subprocess.run(
            command, env=env, cwd=tree, capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"the worker failed in {tree}:\n{done.stderr[-2000:]}")
        # Dump 1 is the start-up, up to the first marker; then each run is one dump (2, 4, ...)
        # and what came between two runs (the next run's plan, the collection) the next.
        runs = 3 * len(MODES) * len(WORKLOADS)
        counts = [_totals(Path(f"{out}.{2 + 2 * run}")) for run in range(runs)]
    figures = {}
    combos = [(mode, workload) for mode in MODES for workload in WORKLOADS]
    for index, combo in enumerate(combos):
        _warm, single, double = counts[3 * index : 3 * index + 3]
        figures[combo] = (double - single) / operations
    timeout = done.stdout.split()[-1]
    return figures, ("off" if timeout == "None" else f"{float(timeout):g} s")


def _export(revision: str, into: Path) -> Path:
    tree = into / revision
    tree.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", revision, "asynclocks", "services"],
        capture_output=True,
        check=True,
    )
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    return tree


def main(argv: list[str] | None = None) -> int:
    """Measure this tree and the revisions; print the table, the ratios and the verdicts."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer operations, rougher")
    parser.add_argument(
        "--against",
        nargs="*",
        default=list(DEFAULT_AGAINST),
        metavar="REV",
        help=f"git revisions to compare with (default: {' '.join(DEFAULT_AGAINST)}); "
        f"the target applies to {BASELINE}",
    )
    parser.add_argument("--worker", type=int, metavar="N", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker is not None:
        worker(args.worker)
        return 0
    for tool in ("valgrind", "git"):
        if shutil.which(tool) is None:
            print(f"ledger: {tool} is not installed; nothing measured", file=sys.stderr)
            return 2
    operations = TASKS * (8 if args.quick else 32)
    print(
        f"Instructions per operation (callgrind, difference of {operations:,} and "
        f"{2 * operations:,} operations), {TASKS} tasks, 1 transfer in {TRANSFER_EVERY}; "
        f"contended: {WORKLOADS['contended']} random accounts, "
        f"uncontended: {WORKLOADS['uncontended']:,} in turn"
    )
    columns: dict[str, dict[tuple[str, str], float]] = {}
    timeouts: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for revision in args.against:
            columns[revision], timeouts[revision] = measure(
                _export(revision, Path(scratch)), operations
            )
    columns["this tree"], timeouts["this tree"] = measure(ROOT, operations)
    names = list(columns)
    print("request timeout: " + ", ".join(f"{name} {timeouts[name]}" for name in names))
    header = f"{'mode':<8} {'workload':<12}" + "".join(f"{name:>12}" for name in names)
    baseline = BASELINE if BASELINE in columns else None
    if baseline:
        header += f"   {'ratio':>6}"
    print(header)
    missed = False
    for mode in MODES:
        for workload in WORKLOADS:
            combo = (mode, workload)
            line = f"{mode:<8} {workload:<12}" + "".join(
                f"{columns[name][combo]:12,.0f}" for name in names
            )
            if baseline:
                ratio = columns["this tree"][combo] / columns[baseline][combo]
                verdict = "PASS" if ratio <= TARGET else "MISS"
                missed |= ratio > TARGET
                line += f"   {ratio:5.2f}x {verdict}"
            print(line)
    if baseline:
        print(f"ratio: this tree / {baseline}, target <= {TARGET}x")
    return 1 if missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
