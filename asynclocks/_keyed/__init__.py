"""KeyedLock: one mutual-exclusion lock per hashable key, for asyncio and trio.

The state is plain dicts instead of one lock object per key, so that an idle key costs
nothing: a key is present only while some task holds it (and then perhaps other tasks wait
for it). Ownership passes directly from the releasing task to the first waiter (FIFO, no
barging), which is also what keeps cancellation safe: a waiter never has to compete again
after being woken, so a wake-up cannot be lost (the bug class of CPython bpo-27585 /
gh-90155).

Modules:

- ``_lock``     the facade: ``KeyedLock`` (public API, the one backend detection, the
                uncontended asyncio paths) and its ``async with`` guards
- ``_asyncio``  waiting on futures, handing keys over, ``wait_idle`` on asyncio
- ``_trio``     everything on trio, with ``trio.Lock``'s semantics; imported only once a trio
                task uses a lock (trio is an optional extra)
- ``_common``   the state both backends share, the statistics snapshot, checks and messages
"""

from ._common import KeyedLockStatistics as KeyedLockStatistics
from ._lock import KeyedLock as KeyedLock

__all__ = ["KeyedLock", "KeyedLockStatistics"]
