"""00: the classic lesson, with threads: a shared counter loses updates; a threading.Lock fixes it.

Twenty threads each add 1 to a shared counter, pausing between the read and the write (the OS may
switch threads anywhere; the pause just makes it likely). The total comes out short, and by a
different amount on each run: that randomness is why the threads lesson is hard to test. The same
code holding a ``threading.Lock`` around the read-modify-write always reaches 20.

The examples that follow carry this to coroutines, where the gap between read and write is an
``await`` and the lost update can be made certain by construction.
"""

from __future__ import annotations

import threading
import time

THREADS = 20


class Counter:
    def __init__(self) -> None:
        self.value = 0
        self.lock = threading.Lock()


def _increment(counter: Counter, use_lock: bool) -> None:
    if use_lock:
        with counter.lock:
            value = counter.value
            time.sleep(0.001)
            counter.value = value + 1
    else:
        value = counter.value
        time.sleep(0.001)  # the OS runs other threads here
        counter.value = value + 1


def count(threads: int = THREADS, *, use_lock: bool) -> int:
    """Run ``threads`` threads that each increment one counter; return the final value."""
    counter = Counter()
    # Started one after another, as the classic lesson does: how many overlap depends on how fast
    # the OS starts them, which is exactly the luck the coroutine examples take out of the picture.
    workers = [
        threading.Thread(target=_increment, args=(counter, use_lock)) for _ in range(threads)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return counter.value


if __name__ == "__main__":
    print(f"{THREADS} threads each added 1 to a shared counter, pausing between read and write")
    for run in range(1, 6):
        print(f"without a lock, run {run}: expected {THREADS}, got {count(use_lock=False)}")
    print(f"with threading.Lock: expected {THREADS}, got {count(use_lock=True)}")
