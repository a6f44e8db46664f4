"""Every examples/*.py runs as a script, exits 0 and prints its verdict; its functions import."""

from __future__ import annotations

import asyncio
import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import anyio
import pytest
import trio

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

# The line(s) that carry each example's verdict; they hold on every run, by construction.
KEY_LINES = {
    # Threads lose a different number of updates each run; only the locked total is certain.
    "00_threads_lost_update.py": [
        "without a lock, run 1: expected 20, got ",
        "with threading.Lock: expected 20, got 20",
    ],
    "01_lost_update_asyncio.py": ["expected 100, got 1: lost 99 updates"],
    "02_fix_with_asyncio_lock.py": ["expected 100, got 100: no update lost"],
    "03_trio_race_and_lock.py": [
        "without a lock: expected 100, got 1: lost 99 updates",
        "with trio.Lock: expected 100, got 100: no update lost",
    ],
    "04_anyio_both_backends.py": [
        "asyncio: no lock -> 1 (lost 99); anyio.Lock -> 100",
        "   trio: no lock -> 1 (lost 99); anyio.Lock -> 100",
    ],
    "05_locks_lock_nothing.py": [
        "one coroutine skips the lock: expected 100, got 99: lost 1",
        "every coroutine takes the lock: expected 100, got 100: nothing lost",
    ],
    # Timing is printed, never asserted: only the totals and the shape of the report are checked.
    "06_wide_lock_serialises.py": [
        "wide lock (around the slow call):  total 20, ",
        "narrow lock (update only):         total 20, ",
        "speed-up of the narrow lock: ",
    ],
    "07_ordered_locking_keyed_lock.py": [
        "asyncio: sorted order (KeyedLock.many): 10 of 10 done, total 200 (expected 200)",
        "asyncio: source-then-destination: deadlock detected after 0.5 s, 0 of 10 done",
        "   trio: sorted order (KeyedLock.many): 10 of 10 done, total 200 (expected 200)",
        "   trio: source-then-destination: deadlock detected after 0.5 s, 0 of 10 done",
    ],
    "08_web_race_fastapi.py": [
        "asyncio: without a lock -> NOT LINEARIZABLE on asyncio after 1 schedule(s)",
        "asyncio: KeyedLock per coupon -> LINEARIZABLE on asyncio: every outcome matched",
        "   trio: without a lock -> NOT LINEARIZABLE on trio after 1 schedule(s)",
        "   trio: KeyedLock per coupon -> LINEARIZABLE on trio: every outcome matched",
        "  c2 status: 409, not 200",
    ],
}


def test_every_example_is_covered() -> None:
    assert sorted(path.name for path in EXAMPLES.glob("*.py")) == sorted(KEY_LINES)


@pytest.mark.parametrize("name", sorted(KEY_LINES))
def test_example_runs_as_a_script(name: str) -> None:
    completed = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        capture_output=True,
        text=True,
        cwd=EXAMPLES.parent,
        timeout=50,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stderr == ""
    lines = completed.stdout.splitlines()
    for key_line in KEY_LINES[name]:
        assert any(line.startswith(key_line) for line in lines), (key_line, completed.stdout)


def load(name: str) -> ModuleType:
    """Import an example by path (its name starts with a digit, so `import` cannot)."""
    path = EXAMPLES / name
    spec = importlib.util.spec_from_file_location(f"examples_{path.stem}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("tasks", [2, 3, 50])
def test_racy_and_locked_functions_import_and_are_deterministic(tasks: int) -> None:
    for _ in range(5):
        assert asyncio.run(load("01_lost_update_asyncio.py").lost_update(tasks)) == 1
        assert asyncio.run(load("02_fix_with_asyncio_lock.py").locked_update(tasks)) == tasks
        on_trio = load("03_trio_race_and_lock.py")
        assert trio.run(on_trio.lost_update, tasks) == 1
        assert trio.run(on_trio.locked_update, tasks) == tasks
        neutral = load("04_anyio_both_backends.py")
        rogue = load("05_locks_lock_nothing.py")
        assert asyncio.run(rogue.one_rogue(tasks)) == tasks - 1
        assert asyncio.run(rogue.all_locked(tasks)) == tasks
        transfers = load("07_ordered_locking_keyed_lock.py")
        for backend in ("asyncio", "trio"):
            assert anyio.run(neutral.lost_update, tasks, backend=backend) == 1
            assert anyio.run(neutral.locked_update, tasks, backend=backend) == tasks
            assert anyio.run(transfers.ordered_transfers, tasks, backend=backend) == (
                tasks,
                2 * tasks * transfers.AMOUNT,
            )


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_naive_order_always_deadlocks(backend: str) -> None:
    transfers = load("07_ordered_locking_keyed_lock.py")
    for tasks in (2, 3, 10):
        assert anyio.run(transfers.naive_transfers, tasks, 0.02, backend=backend) == (0, True)


def test_wide_and_narrow_locks_both_keep_the_total() -> None:
    # Correctness only; their speed is the script's printed figure, not a test assertion.
    example = load("06_wide_lock_serialises.py")
    for update in (example.wide, example.narrow):
        total, _seconds = asyncio.run(example.timed(update, 5, 0))
        assert total == 5
